//! The admin listener: `GET /healthz` (the process serves), `GET /readyz` (ready once every
//! profile an `ims` or `canary` caller uses has held a token since start; otherwise 503 naming
//! those that have not; each profile's token now in the body), `GET /metrics` (Prometheus
//! text, see `metrics.rs`), `GET /inventory` (every legacy login seen, JSON, see
//! `inventory.rs`), `GET /cutover` (each caller's cut-over verdict, JSON, see `cutover.rs`) and
//! `GET /` (the migration cockpit, a page for people, `admin/page.rs`).
//!
//! Readiness does not follow IMS after the first token: every replica shares IMS, so an outage
//! would take them all out of the load balancer at once, `legacy` callers included, while
//! tokens in hand still serve. Token health is in the body and in the metrics.

mod page;
mod views;

use std::fmt::Write;
use std::time::SystemTime;

use http::{Method, Request, Response, StatusCode, header};

use crate::body::ResponseBody;
use crate::ims::Readiness;
use crate::proxy::Proxy;
use crate::server::Connections;

pub(crate) async fn handle<B>(
    proxy: &Proxy,
    connections: &Connections,
    peer: std::net::IpAddr,
    request: &Request<B>,
) -> Response<ResponseBody> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_owned());
    }
    // What names logins, addresses and verdicts asks for `[admin] password`; what probes and
    // Prometheus read stays open.
    if matches!(request.uri().path(), "/" | "/inventory" | "/cutover")
        && proxy.callers().admin_protected()
    {
        let password = basic_password(request.headers());
        let allowed = match &password {
            Some(password) => proxy.callers().admin_allows(password.expose(), peer).await,
            None => false,
        };
        if !allowed {
            let mut refused = text(
                StatusCode::UNAUTHORIZED,
                "the admin listener asks for its password ([admin] password): HTTP Basic, any user name\n"
                    .to_owned(),
            );
            refused.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"imsbridge\", charset=\"UTF-8\""),
            );
            return refused;
        }
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/" => {
            let now = SystemTime::now();
            let inventory = inventory(proxy, now).await;
            let cutover = cutover(proxy, &inventory).await;
            let page = page::Page {
                profiles: views::profiles(proxy).collect(),
                callers: views::callers(proxy).collect(),
                inventory: &inventory,
                nodes: views::nodes(proxy).collect(),
                shadow: proxy.metrics().shadow_table(),
                store: proxy.state().status(),
                cutover: &cutover,
                now,
            };
            typed(
                text(StatusCode::OK, page.render()),
                "text/html; charset=utf-8",
            )
        }
        "/inventory" => {
            let inventory = inventory(proxy, SystemTime::now()).await;
            let json = serde_json::to_string_pretty(&inventory).expect("an inventory is JSON");
            typed(text(StatusCode::OK, json + "\n"), "application/json")
        }
        "/cutover" => {
            let inventory = inventory(proxy, SystemTime::now()).await;
            let report = cutover(proxy, &inventory).await;
            let json = serde_json::to_string_pretty(&report).expect("verdicts are JSON");
            typed(text(StatusCode::OK, json + "\n"), "application/json")
        }
        "/metrics" => {
            let body = proxy.metrics().render(
                views::readiness(proxy),
                views::nodes(proxy),
                connections,
                &crate::metrics::Busy {
                    password_checks: proxy.callers().pending_checks(),
                    shadow_copies: proxy.shadow_copies_in_flight(),
                },
            );
            typed(
                text(StatusCode::OK, body),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        }
        "/readyz" => {
            let mut waiting = String::new();
            let mut tokens = String::new();
            for profile in views::health(proxy) {
                let name = profile.name;
                if profile.needed && !profile.held_once {
                    let _ = writeln!(waiting, "profile {name}: no token yet");
                }
                let used = if profile.needed {
                    ""
                } else {
                    " (legacy callers only)"
                };
                let _ = match profile.readiness {
                    Readiness::Ready { expires_in } => writeln!(
                        tokens,
                        "profile {name}: token valid for {}s{used}",
                        expires_in.as_secs()
                    ),
                    Readiness::NotReady(why) => {
                        writeln!(tokens, "profile {name}: not ready: {why}{used}")
                    }
                };
            }
            if waiting.is_empty() {
                text(StatusCode::OK, format!("ready\n{tokens}"))
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready\n{waiting}{tokens}"),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

/// Each caller's cut-over verdict, on the history the state store keeps; the logins no caller
/// owns from `inventory`.
async fn cutover(proxy: &Proxy, inventory: &crate::inventory::Report) -> crate::cutover::Report {
    let state = proxy.state();
    let now = state
        .clock()
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let since = crate::cutover::first_day(now, state.history_days());
    let (history, note) = match state.history(&since).await {
        Ok(history) => (history, None),
        Err(error) => (
            crate::state::History::default(),
            Some(format!("no history: {error}")),
        ),
    };
    let callers: Vec<crate::cutover::Caller<'_>> = proxy
        .callers()
        .iter()
        .map(|c| crate::cutover::Caller {
            name: &c.name,
            login: &c.login,
            mode: c.mode,
            shadow_actions: c.shadow_actions(),
        })
        .collect();
    let unowned = inventory
        .logins
        .iter()
        .filter(|l| l.caller.is_none())
        .map(|l| (l.login.clone(), l.last_seen))
        .collect();
    let mut report = crate::cutover::report(
        &callers,
        &history,
        unowned,
        proxy.cutover_settings(),
        state.history_days(),
        now,
    );
    report.note = note;
    report
}

/// The inventory, with the profiles a caller skeleton may name: the fleet's, as the state store
/// keeps it (with this replica's last hour of its callers), or this process's own with the
/// store in memory, or when the store does not answer (said in `note`).
async fn inventory(proxy: &Proxy, now: SystemTime) -> crate::inventory::Report {
    let local = proxy.metrics().inventory.report(now);
    let mut report = if proxy.state().keeps_inventory() {
        match proxy.state().inventory(local.max_logins).await {
            Ok(mut stored) => {
                for login in &mut stored.logins {
                    login.last_hour = local
                        .logins
                        .iter()
                        .find(|l| l.login == login.login)
                        .and_then(|l| l.last_hour);
                }
                stored
            }
            Err(error) => crate::inventory::Report {
                note: Some(format!(
                    "this replica's own traffic since it started: {error}"
                )),
                ..local
            },
        }
    } else {
        local
    };
    report.profiles = views::profiles(proxy).map(|p| p.name.to_owned()).collect();
    report
}

/// The password of an `Authorization: Basic` header (RFC 7617: any user name).
fn basic_password(headers: &http::HeaderMap) -> Option<crate::secret::Secret> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(crate::secret::Secret::from(password))
}

fn typed(
    mut response: Response<ResponseBody>,
    content_type: &'static str,
) -> Response<ResponseBody> {
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
