//! `GET /` on the admin listener: the migration cockpit, for people. One server-rendered HTML
//! page without JavaScript that reloads itself: how far the migration has come, each caller
//! (mode, a bar of its last hour split into `ims`, legacy and refused, its traffic by way,
//! refusals, last seen), the profiles' tokens, the shadow comparisons, the inventory of logins,
//! and Campaign's nodes. Every name on it is escaped; no credential is on it.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::views::{CallerView, ProfileView};
use crate::config::Mode;
use crate::dates::utc;
use crate::ims::Readiness;
use crate::inventory::{LoginReport, Report, Shares};
use crate::metrics::{ShadowCounts, ShadowOutcome};
use crate::upstream::NodeHealth;

/// The page reloads itself this often.
pub(super) const REFRESH_SECONDS: u32 = 10;
/// Logins listed in the inventory table; the JSON has them all.
const LISTED_LOGINS: usize = 200;

const STYLE: &str = r#"
:root { --ims: #2e7d32; --legacy: #f9a825; --refused: #c62828; --fg: #1d1d1f; --muted: #6e6e73; --line: #e5e5ea; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); margin: 0; padding: 1rem; max-width: 1200px; margin-inline: auto; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .25rem 1rem; border-bottom: 2px solid var(--line); margin-bottom: 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .4rem; }
h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
.muted { color: var(--muted); font-size: .85rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: flex; height: .9rem; min-width: 8rem; border-radius: 3px; overflow: hidden; background: var(--line); }
.bar span { display: block; height: 100%; }
.ims { background: var(--ims); } .legacy { background: var(--legacy); } .refused { background: var(--refused); }
.legend span { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px; vertical-align: -1px; margin: 0 .2rem 0 .6rem; }
.mode { font-weight: 600; padding: .05rem .4rem; border-radius: 3px; background: var(--line); }
.mode-ims { background: #c8e6c9; } .mode-canary { background: #fff3c4; } .mode-shadow { background: #e1e8f5; } .mode-legacy { background: #ffe0b2; }
.bad { color: var(--refused); font-weight: 600; } .good { color: var(--ims); }
.small { font-size: .85em; } svg.days { display: block; margin-top: .2rem; }
.summary { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; }
.summary div { min-width: 9rem; }
.summary b { display: block; font-size: 1.5rem; }
@media (max-width: 640px) { body { padding: .5rem; font-size: 14px; } th, td { padding: .3rem; } }
"#;

/// What the page shows.
pub(super) struct Page<'a> {
    pub profiles: Vec<ProfileView<'a>>,
    pub callers: Vec<CallerView<'a>>,
    pub inventory: &'a Report,
    pub nodes: Vec<NodeHealth<'a>>,
    pub shadow: Vec<((String, String), ShadowCounts)>,
    /// The state store (`[state]`).
    pub store: crate::state::StoreStatus,
    /// Each caller's cut-over verdict (`GET /cutover`).
    pub cutover: &'a crate::cutover::Report,
    pub now: SystemTime,
}

fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

fn ago(now: SystemTime, seconds: u64) -> String {
    if seconds == 0 {
        return "never".to_owned();
    }
    let then = UNIX_EPOCH + Duration::from_secs(seconds);
    let elapsed = now.duration_since(then).unwrap_or_default().as_secs();
    match elapsed {
        0..60 => format!("{elapsed} s ago"),
        60..3600 => format!("{} min ago", elapsed / 60),
        3600..86_400 => format!("{} h ago", elapsed / 3600),
        _ => utc(then),
    }
}

/// A bar of `shares` (its parts in proportion), with the numbers in its title and beside it.
/// The ways of the day bars, bottom up, with their colours.
const WAYS: [(&str, &str); 5] = [
    ("ims", "#2e7d32"),
    ("canary", "#7cb342"),
    ("shadow", "#5c6bc0"),
    ("legacy", "#f9a825"),
    ("transparent", "#9e9e9e"),
];

/// A caller's verdict, its words, and a bar a day of its requests by way (an SVG, no script).
fn cutover_cell(out: &mut String, verdict: &crate::cutover::CallerVerdict) {
    let class = match verdict.verdict.as_str() {
        "ready" | "old_operator_unused" => "good",
        "old_operator_used" => "bad",
        _ => "muted",
    };
    let _ = write!(
        out,
        "<b class=\"verdict {class}\">{}</b><br><span class=\"muted small\">{}</span><br>",
        escape(&verdict.verdict.replace('_', " ")),
        escape(&verdict.summary),
    );
    let most = verdict
        .days
        .iter()
        .map(|d| d.ways.values().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    const WIDTH: usize = 6;
    const HEIGHT: f64 = 32.0;
    let _ = write!(
        out,
        "<svg class=\"days\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"requests a day by way, the last {} days\">",
        verdict.days.len() * WIDTH,
        HEIGHT + 3.0,
        verdict.days.len() * WIDTH,
        HEIGHT + 3.0,
        verdict.days.len()
    );
    for (i, day) in verdict.days.iter().enumerate() {
        let x = i * WIDTH;
        let mut top = HEIGHT;
        let mut told: Vec<String> = Vec::new();
        for (way, colour) in WAYS {
            let n = day.ways.get(way).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let h = n as f64 * HEIGHT / most as f64;
            top -= h;
            told.push(format!("{way} {n}"));
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{top:.1}\" width=\"{}\" height=\"{h:.1}\" fill=\"{colour}\"/>",
                WIDTH - 1
            );
        }
        if day.refused_or_failed > 0 {
            told.push(format!("refused or failed {}", day.refused_or_failed));
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"3\" fill=\"#c62828\"/>",
                HEIGHT,
                WIDTH - 1
            );
        }
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"0\" width=\"{WIDTH}\" height=\"{}\" fill=\"transparent\"><title>{}: {}</title></rect>",
            HEIGHT + 3.0,
            day.day,
            if told.is_empty() {
                "no request".to_owned()
            } else {
                escape(&told.join(", ")).into_owned()
            }
        );
    }
    out.push_str("</svg>");
}

fn bar(out: &mut String, shares: Shares) {
    let total = shares.total();
    let percent = |n: u64| {
        if total == 0 {
            0.0
        } else {
            n as f64 * 100.0 / total as f64
        }
    };
    let _ = write!(
        out,
        "<div class=\"bar\" role=\"img\" aria-label=\"{ims} ims, {legacy} legacy, {refused} refused\" title=\"{ims} ims, {legacy} legacy, {refused} refused\">",
        ims = shares.ims,
        legacy = shares.legacy,
        refused = shares.refused
    );
    for (class, n) in [
        ("ims", shares.ims),
        ("legacy", shares.legacy),
        ("refused", shares.refused),
    ] {
        if n > 0 {
            let _ = write!(
                out,
                "<span class=\"{class}\" style=\"width:{:.1}%\"></span>",
                percent(n)
            );
        }
    }
    let _ = write!(
        out,
        "</div><span class=\"muted\">{} ims · {} legacy · {} refused</span>",
        shares.ims, shares.legacy, shares.refused
    );
}

fn mode_name(mode: Mode) -> String {
    match mode {
        Mode::Canary { percent } => format!("canary {percent}%"),
        other => other.as_str().to_owned(),
    }
}

impl Page<'_> {
    pub(super) fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
             <title>imsbridge: migration</title><style>{STYLE}</style></head><body>\
             <header><h1>imsbridge</h1><span class=\"muted\">migration cockpit · {} · reloads every {REFRESH_SECONDS} s · \
             <a href=\"/inventory\">inventory (JSON)</a> · <a href=\"/metrics\">metrics</a> · <a href=\"/readyz\">readiness</a></span></header>",
            utc(self.now)
        );
        self.summary(&mut out);
        self.callers(&mut out);
        self.profiles(&mut out);
        self.shadow(&mut out);
        self.inventory(&mut out);
        self.nodes(&mut out);
        self.store(&mut out);
        out.push_str("</body></html>\n");
        out
    }

    fn login(&self, login: &str) -> Option<&LoginReport> {
        self.inventory.logins.iter().find(|l| l.login == login)
    }

    fn summary(&self, out: &mut String) {
        let count = |wanted: &str| {
            self.callers
                .iter()
                .filter(|c| c.mode.as_str() == wanted)
                .count()
        };
        let unowned = self
            .inventory
            .logins
            .iter()
            .filter(|l| l.caller.is_none())
            .count();
        let mut hour = Shares::default();
        for caller in &self.callers {
            if let Some(shares) = self.login(caller.login).and_then(|l| l.last_hour) {
                hour.ims += shares.ims;
                hour.legacy += shares.legacy;
                hour.refused += shares.refused;
            }
        }
        let _ = write!(
            out,
            "<section id=\"migration\"><h2>Migration</h2><div class=\"summary\">\
             <div><b>{}</b>callers on ims</div><div><b>{}</b>canary</div><div><b>{}</b>shadow</div>\
             <div><b>{}</b>legacy</div><div><b>{unowned}</b>logins no caller owns</div></div>\
             <p>Callers' requests over the last hour:</p>",
            count("ims"),
            count("canary"),
            count("shadow"),
            count("legacy"),
        );
        bar(out, hour);
        out.push_str(
            "<p class=\"legend muted\"><span class=\"ims\"></span>ims<span class=\"legacy\"></span>legacy\
             <span class=\"refused\"></span>refused or failed</p></section>",
        );
    }

    fn callers(&self, out: &mut String) {
        out.push_str(
            "<section id=\"callers\"><h2>Callers</h2><div class=\"scroll\"><table><thead><tr>\
             <th>caller</th><th>mode</th><th>profile</th><th>last hour</th><th>requests by way</th>\
             <th>refused</th><th>last seen</th><th>cut-over (last 30 days, UTC)</th></tr></thead><tbody>",
        );
        if self.callers.is_empty() {
            out.push_str("<tr><td colspan=\"8\" class=\"muted\">No caller is configured: every credential goes as unknown_callers says. The inventory below names the logins seen.</td></tr>");
        }
        for caller in &self.callers {
            let seen = self.login(caller.login);
            let _ = write!(
                out,
                "<tr id=\"caller-{name}\"><td><b>{name}</b><br><span class=\"muted\">login {login}</span></td>\
                 <td><span class=\"mode mode-{mode_class}\">{mode}</span></td><td>{profile}</td><td>",
                name = escape(caller.name),
                login = escape(caller.login),
                mode_class = caller.mode.as_str(),
                mode = escape(&mode_name(caller.mode)),
                profile = escape(caller.profile),
            );
            bar(out, seen.and_then(|s| s.last_hour).unwrap_or_default());
            out.push_str("</td><td>");
            let mut refused = 0;
            if let Some(seen) = seen {
                let mut ways: Vec<(&str, u64)> = Vec::new();
                for count in &seen.counts {
                    if count.outcome == "ok" {
                        match ways.iter_mut().find(|(w, _)| *w == count.way) {
                            Some((_, n)) => *n += count.requests,
                            None => ways.push((&count.way, count.requests)),
                        }
                    } else {
                        refused += count.requests;
                    }
                }
                let listed: Vec<String> = ways
                    .iter()
                    .map(|(way, n)| format!("{} {n}", escape(way)))
                    .collect();
                out.push_str(&listed.join(" · "));
            }
            let _ = write!(
                out,
                "</td><td class=\"num{}\">{refused}</td><td>{}</td><td>",
                if refused > 0 { " bad" } else { "" },
                seen.map_or("never".to_owned(), |s| ago(self.now, s.last_seen)),
            );
            if let Some(verdict) = self
                .cutover
                .callers
                .iter()
                .find(|v| v.caller == caller.name)
            {
                cutover_cell(out, verdict);
            }
            out.push_str("</td></tr>");
        }
        out.push_str("</tbody></table></div></section>");
    }

    fn profiles(&self, out: &mut String) {
        out.push_str(
            "<section id=\"profiles\"><h2>Profiles (technical accounts)</h2><div class=\"scroll\"><table><thead><tr>\
             <th>profile</th><th>Campaign</th><th>token</th><th>last token</th><th>last fetch</th>\
             <th>fetched</th><th>failed</th></tr></thead><tbody>",
        );
        for profile in &self.profiles {
            let status = &profile.status;
            let token = match &status.readiness {
                Readiness::Ready { expires_in } => format!(
                    "<span class=\"good\">valid for {} min</span>",
                    expires_in.as_secs() / 60
                ),
                Readiness::NotReady(why) => {
                    format!("<span class=\"bad\">none: {}</span>", escape(why))
                }
            };
            let when = |at: Option<SystemTime>| {
                at.map_or("never".to_owned(), |at| {
                    ago(
                        self.now,
                        at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                    )
                })
            };
            let _ = write!(
                out,
                "<tr id=\"profile-{name}\"><td><b>{name}</b>{used}</td><td>{upstream}</td><td>{token}</td>\
                 <td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num{}\">{}</td></tr>",
                when(status.last_token),
                when(status.last_fetch),
                status.fetched,
                if status.failed > 0 { " bad" } else { "" },
                status.failed,
                name = escape(profile.name),
                used = if profile.needed {
                    ""
                } else {
                    "<br><span class=\"muted\">no ims or canary caller</span>"
                },
                upstream = escape(profile.upstream),
            );
        }
        out.push_str("</tbody></table></div></section>");
    }

    fn shadow(&self, out: &mut String) {
        out.push_str("<section id=\"shadow\"><h2>Shadow comparisons</h2>");
        if self.shadow.is_empty() {
            out.push_str("<p class=\"muted\">None yet: a caller in mode = \"shadow\" has its read-only calls copied the ims way and the answers compared.</p></section>");
            return;
        }
        out.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>caller</th><th>action</th><th>agree</th>\
             <th>differ</th><th>not compared</th></tr></thead><tbody>",
        );
        for ((caller, action), counts) in &self.shadow {
            let get = |outcome| counts.get(&outcome).copied().unwrap_or(0);
            let others: Vec<String> = counts
                .iter()
                .filter(|(outcome, _)| {
                    !matches!(outcome, ShadowOutcome::Match | ShadowOutcome::Mismatch)
                })
                .map(|(outcome, n)| format!("{} {n}", outcome.as_str()))
                .collect();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"num good\">{}</td><td class=\"num{}\">{}</td><td>{}</td></tr>",
                escape(caller),
                escape(action),
                get(ShadowOutcome::Match),
                if get(ShadowOutcome::Mismatch) > 0 {
                    " bad"
                } else {
                    ""
                },
                get(ShadowOutcome::Mismatch),
                others.join(" · ")
            );
        }
        out.push_str("</tbody></table></div></section>");
    }

    fn inventory(&self, out: &mut String) {
        let logins = &self.inventory.logins;
        let _ = write!(
            out,
            "<section id=\"inventory\"><h2>Inventory: every login seen</h2><p class=\"muted\">{} logins{}; \
             <code>imsbridge inventory --admin URL</code> prints a <code>[[callers]]</code> skeleton for those no caller owns.</p>\
             <div class=\"scroll\"><table><thead><tr><th>login</th><th>caller</th><th>requests</th><th>by way and outcome</th>\
             <th>actions</th><th>from</th><th>first seen</th><th>last seen</th></tr></thead><tbody>",
            logins.len(),
            if self.inventory.dropped > 0 {
                format!(
                    " ({} dropped past admin.inventory_max_logins)",
                    self.inventory.dropped
                )
            } else {
                String::new()
            },
        );
        for login in logins.iter().take(LISTED_LOGINS) {
            let counts: Vec<String> = login
                .counts
                .iter()
                .map(|c| format!("{} {} {}", escape(&c.way), escape(&c.outcome), c.requests))
                .collect();
            let named = |list: &[crate::inventory::Named], other: u64| {
                let mut listed: Vec<String> = list
                    .iter()
                    .take(5)
                    .map(|n| format!("{} ({})", escape(&n.name), n.requests))
                    .collect();
                let more = list.len().saturating_sub(5) as u64 + u64::from(other > 0);
                if more > 0 {
                    listed.push(format!("and more ({more})"));
                }
                listed.join("<br>")
            };
            let _ = write!(
                out,
                "<tr id=\"login-{login_id}\"><td><b>{login_name}</b></td><td>{caller}</td><td class=\"num\">{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                login.requests,
                counts.join("<br>"),
                named(&login.actions, login.other_actions),
                named(&login.peers, login.other_peers),
                ago(self.now, login.first_seen),
                ago(self.now, login.last_seen),
                login_id = escape(&login.login),
                login_name = escape(&login.login),
                caller = login
                    .caller
                    .as_deref()
                    .map_or("<span class=\"bad\">none</span>".to_owned(), |c| escape(c)
                        .into_owned()),
            );
        }
        out.push_str("</tbody></table></div></section>");
    }

    fn store(&self, out: &mut String) {
        let store = &self.store;
        let _ = write!(
            out,
            "<section id=\"store\"><h2>State store</h2><div class=\"scroll\"><table><thead><tr>\
             <th>store</th><th>where</th><th>state</th><th>last written</th><th>dropped</th><th>Logoffs known</th>\
             </tr></thead><tbody><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num{}\">{}</td><td class=\"num\">{}</td></tr></tbody></table></div>{}</section>",
            store.kind,
            escape(&store.location),
            if store.up {
                "<span class=\"good\">answering</span>".to_owned()
            } else {
                format!(
                    "<span class=\"bad\">down: serving on, counts wait</span><br><span class=\"muted\">{}</span>",
                    escape(store.error.as_deref().unwrap_or_default())
                )
            },
            ago(self.now, store.last_flush),
            if store.dropped > 0 { " bad" } else { "" },
            store.dropped,
            store.revocations,
            if store.kind == "memory" {
                "<p class=\"muted\">In this process only: a restart forgets the inventory, the history and the Logoffs, and other replicas do not see them. Set <code>[state] path</code> (one machine) or <code>redis</code> (replicas).</p>"
            } else {
                ""
            }
        );
    }

    fn nodes(&self, out: &mut String) {
        out.push_str(
            "<section id=\"upstreams\"><h2>Campaign nodes</h2><div class=\"scroll\"><table><thead><tr>\
             <th>upstream</th><th>node</th><th>state</th><th>waiting</th></tr></thead><tbody>",
        );
        for node in &self.nodes {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                escape(node.upstream),
                escape(node.node),
                if node.cooling {
                    "<span class=\"bad\">skipped after a failure</span>"
                } else {
                    "<span class=\"good\">taking requests</span>"
                },
                node.in_flight
            );
        }
        out.push_str("</tbody></table></div></section>");
    }
}
