//! Cut-over evidence (`GET /cutover`, the page's cut-over column, `imsbridge cutover`): for
//! each configured caller, a verdict on its next step of the migration, with the numbers it
//! rests on, from the history the state store keeps (`state.rs`): day counts by way and outcome,
//! each login's last legacy-way call, the shadow comparisons.
//!
//! - `shadow`: ready once it has `cutover.min_comparisons` comparisons and no mismatch in the
//!   last `cutover.quiet_days` days; else not yet, saying which.
//! - `canary`: ready once it has `min_comparisons` ims-way calls and none refused (by
//!   imsbridge, or by Campaign refusing the token) or failed in the last `quiet_days` days.
//! - `ims`: its old operator is unused when no call carrying its login went the legacy way
//!   (passed through included) in the last `quiet_days` days; else the date of the last one.
//! - `legacy`: no evidence, and what would give some.
//!
//! Days are UTC. The history follows a caller's name: a reload that changes its mode keeps it;
//! a caller renamed starts a history of its own (the old name's is pruned with time).

pub(crate) mod command;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{CutoverSettings, Mode};
use crate::dates::day_of;
use crate::state::History;

/// Days of the bars of each caller.
pub(crate) const BAR_DAYS: u32 = 30;

/// `GET /cutover`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Report {
    /// When it was made, `YYYY-MM-DD HH:MM:SS UTC`.
    pub(crate) generated: String,
    /// Every date and day here is a UTC one.
    pub(crate) days_are: String,
    pub(crate) min_comparisons: u64,
    pub(crate) quiet_days: u32,
    /// The first day the history holds.
    pub(crate) history_since: String,
    pub(crate) callers: Vec<CallerVerdict>,
    /// Logins no caller owns, with their last call.
    pub(crate) unowned_logins: Vec<Unowned>,
    /// Why the history is not there, when it is not (the state store did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

/// A configured caller's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct CallerVerdict {
    pub(crate) caller: String,
    pub(crate) login: String,
    pub(crate) mode: String,
    /// `ready`, `not_yet`, `old_operator_unused`, `old_operator_used`, `no_evidence`.
    pub(crate) verdict: String,
    /// The verdict in words, with its numbers.
    pub(crate) summary: String,
    /// The numbers it rests on.
    pub(crate) numbers: BTreeMap<String, serde_json::Value>,
    /// Requests of the last [`BAR_DAYS`] days by way, oldest first: `(day, {way: requests})`.
    pub(crate) days: Vec<DayBar>,
}

/// A day of a caller's bars.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct DayBar {
    pub(crate) day: String,
    /// Way (`ims`, `canary`, `legacy`, `shadow`, `transparent`): requests (all outcomes).
    pub(crate) ways: BTreeMap<String, u64>,
    /// Requests refused or failed.
    pub(crate) refused_or_failed: u64,
}

/// A login no caller owns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Unowned {
    pub(crate) login: String,
    /// Its last call: seconds since the epoch, and the day.
    pub(crate) last_call: u64,
    pub(crate) last_call_day: String,
}

/// A configured caller, as the verdicts need it.
pub(crate) struct Caller<'a> {
    pub(crate) name: &'a str,
    pub(crate) login: &'a str,
    pub(crate) mode: Mode,
    pub(crate) shadow_actions: &'a [String],
}

/// The first day of the last `days` days to `now` (today included).
pub(crate) fn first_day(now: u64, days: u32) -> String {
    day_of(now.saturating_sub(u64::from(days.saturating_sub(1)) * 86_400))
}

/// The verdicts of `callers` on `history`, at `now` (seconds since the epoch); `unowned` are
/// the inventory's logins no caller owns, with their last call.
pub(crate) fn report(
    callers: &[Caller<'_>],
    history: &History,
    unowned: Vec<(String, u64)>,
    settings: CutoverSettings,
    history_days: u32,
    now: u64,
) -> Report {
    let quiet_since = first_day(now, settings.quiet_days);
    let bars_since = first_day(now, BAR_DAYS);
    let verdicts = callers
        .iter()
        .map(|caller| verdict(caller, history, settings, &quiet_since, &bars_since, now))
        .collect();
    let mut unowned: Vec<Unowned> = unowned
        .into_iter()
        .map(|(login, last_call)| Unowned {
            login,
            last_call,
            last_call_day: day_of(last_call),
        })
        .collect();
    unowned.sort_by(|a, b| {
        b.last_call
            .cmp(&a.last_call)
            .then_with(|| a.login.cmp(&b.login))
    });
    Report {
        generated: crate::dates::utc(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now)),
        days_are: "UTC".to_owned(),
        min_comparisons: settings.min_comparisons,
        quiet_days: settings.quiet_days,
        history_since: first_day(now, history_days),
        callers: verdicts,
        unowned_logins: unowned,
        note: None,
    }
}

fn verdict(
    caller: &Caller<'_>,
    history: &History,
    settings: CutoverSettings,
    quiet_since: &str,
    bars_since: &str,
    now: u64,
) -> CallerVerdict {
    let subject = format!("caller:{}", caller.name);
    let mine = || history.days.iter().filter(|d| d.subject == subject);
    let mut numbers: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let quiet = settings.quiet_days;
    let min = settings.min_comparisons;
    let (verdict, summary) = match caller.mode {
        Mode::Shadow => {
            let tallies = history
                .shadow
                .iter()
                .filter(|(key, _)| key.caller == caller.name);
            let comparisons: u64 = tallies.clone().map(|(_, t)| t.comparisons).sum();
            let mismatches: u64 = tallies.clone().map(|(_, t)| t.mismatches).sum();
            let last = history
                .last_mismatch
                .iter()
                .filter(|((name, _), _)| name == caller.name)
                .max_by_key(|(_, at)| **at)
                .map(|((_, action), at)| (action.clone(), *at));
            let recent = last
                .as_ref()
                .filter(|(_, at)| day_of(*at).as_str() >= quiet_since);
            numbers.insert("comparisons".into(), comparisons.into());
            numbers.insert("mismatches".into(), mismatches.into());
            numbers.insert("min_comparisons".into(), min.into());
            if let Some((action, at)) = &last {
                numbers.insert("last_mismatch".into(), day_of(*at).into());
                numbers.insert("last_mismatch_action".into(), action.clone().into());
            }
            match recent {
                Some((action, at)) => (
                    "not_yet",
                    format!(
                        "not yet: a mismatch on {} (UTC) in {action}, within the last {quiet} days; {comparisons} comparisons",
                        day_of(*at)
                    ),
                ),
                None if comparisons < min => (
                    "not_yet",
                    format!(
                        "not yet: {comparisons} of {min} comparisons, no mismatch in the last {quiet} days"
                    ),
                ),
                None => (
                    "ready",
                    format!(
                        "ready: {comparisons} comparisons, no mismatch in the last {quiet} days: the caller can go canary or ims"
                    ),
                ),
            }
        }
        Mode::Canary { .. } => {
            let ims_way = mine().filter(|d| d.way == "canary");
            let calls: u64 = ims_way.clone().map(|d| d.requests).sum();
            let bad_recent: u64 = ims_way
                .clone()
                .filter(|d| d.day.as_str() >= quiet_since && d.outcome != "ok")
                .map(|d| d.requests)
                .sum();
            let last_bad = ims_way
                .filter(|d| d.outcome != "ok")
                .map(|d| d.day.clone())
                .max();
            numbers.insert("ims_way_calls".into(), calls.into());
            numbers.insert("refused_or_failed_recently".into(), bad_recent.into());
            numbers.insert("min_comparisons".into(), min.into());
            if let Some(day) = &last_bad {
                numbers.insert("last_refused_or_failed".into(), day.clone().into());
            }
            if bad_recent > 0 {
                (
                    "not_yet",
                    format!(
                        "not yet: {bad_recent} ims-way calls refused or failed in the last {quiet} days (the last on {} UTC); {calls} ims-way calls",
                        last_bad.unwrap_or_default()
                    ),
                )
            } else if calls < min {
                (
                    "not_yet",
                    format!(
                        "not yet: {calls} of {min} ims-way calls, none refused or failed in the last {quiet} days"
                    ),
                )
            } else {
                (
                    "ready",
                    format!(
                        "ready: {calls} ims-way calls, none refused or failed in the last {quiet} days: the caller can go ims"
                    ),
                )
            }
        }
        Mode::Ims => {
            let span = history
                .legacy
                .get(&format!("login:{}", crate::inventory::cut(caller.login)))
                .copied()
                .unwrap_or_default();
            let ims_calls: u64 = mine().filter(|d| d.way == "ims").map(|d| d.requests).sum();
            numbers.insert("ims_way_calls".into(), ims_calls.into());
            if span.last > 0 {
                numbers.insert("last_legacy_call".into(), day_of(span.last).into());
            }
            let used = span.last > 0 && day_of(span.last).as_str() >= quiet_since;
            if used {
                (
                    "old_operator_used",
                    format!(
                        "old operator used: a call with login {} went the legacy way on {} (UTC), within the last {quiet} days",
                        caller.login,
                        day_of(span.last)
                    ),
                )
            } else {
                let since = if span.last > 0 {
                    format!("the last on {} (UTC)", day_of(span.last))
                } else {
                    "none in the history".to_owned()
                };
                (
                    "old_operator_unused",
                    format!(
                        "old operator unused: no call with login {} went the legacy way in the last {quiet} days ({since}): its rights can be removed",
                        caller.login
                    ),
                )
            }
        }
        Mode::Legacy => {
            let calls: u64 = mine().map(|d| d.requests).sum();
            numbers.insert("legacy_way_calls".into(), calls.into());
            (
                "no_evidence",
                format!(
                    "no evidence: set mode = \"shadow\" with shadow_actions (its read-only calls compared the ims way), or mode = \"canary\" with canary_percent{}",
                    if caller.shadow_actions.is_empty() {
                        ""
                    } else {
                        " (its shadow_actions are read in shadow mode only)"
                    }
                ),
            )
        }
    };
    CallerVerdict {
        caller: caller.name.to_owned(),
        login: caller.login.to_owned(),
        mode: caller.mode.as_str().to_owned(),
        verdict: verdict.to_owned(),
        summary,
        numbers,
        days: bars(&subject, history, bars_since, now),
    }
}

/// A caller's requests of the last [`BAR_DAYS`] days, a bar a day (days without any included).
fn bars(subject: &str, history: &History, since: &str, now: u64) -> Vec<DayBar> {
    let mut by_day: BTreeMap<String, DayBar> = (0..BAR_DAYS)
        .rev()
        .map(|back| {
            let day = day_of(now.saturating_sub(u64::from(back) * 86_400));
            (
                day.clone(),
                DayBar {
                    day,
                    ways: BTreeMap::new(),
                    refused_or_failed: 0,
                },
            )
        })
        .collect();
    for count in history
        .days
        .iter()
        .filter(|d| d.subject == subject && d.day.as_str() >= since)
    {
        if let Some(bar) = by_day.get_mut(&count.day) {
            *bar.ways.entry(count.way.clone()).or_default() += count.requests;
            if count.outcome != "ok" {
                bar.refused_or_failed += count.requests;
            }
        }
    }
    by_day.into_values().collect()
}

#[cfg(test)]
mod tests;
