//! `imsbridge inventory --admin URL [--admin URL …]`: the inventories of one or several
//! replicas (each admin listener's `GET /inventory`), merged, printed as a table; then, for the
//! logins no caller owns, a `[[callers]]` entry each, ready for the config once its password
//! hash is filled in.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;

use super::{LoginReport, Report};
use crate::connect::{Egress, https_connector, system_roots};
use crate::dates::utc;

/// Bound on one admin listener's answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// An inventory is at most this large (10000 logins are about 10 MB of JSON).
const MAX_REPORT_BYTES: usize = 256 * 1024 * 1024;
/// The environment variable `imsbridge inventory` and `cutover` read the admin listener's
/// password from (unless `--admin-password-file` names a file).
pub const PASSWORD_ENV: &str = "IMSBRIDGE_ADMIN_PASSWORD";
/// What the printed `[[callers]]` entries hold until it is replaced.
pub const HASH_PLACEHOLDER: &str = "PASTE THE ARGON2 HASH HERE";

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{url}: {message}")]
    Admin { url: String, message: String },
    #[error("writing: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the inventory of each admin listener (`http://host:9090`), merged; `password`: the
/// listeners' `[admin] password`, if they ask for one.
pub(crate) async fn fetch(
    admins: &[String],
    password: Option<&str>,
) -> Result<Report, InventoryError> {
    let client = admin_client()?;
    let mut reports = Vec::new();
    for admin in admins {
        let body = get(&client, admin, "/inventory", password).await?;
        let report: Report = serde_json::from_slice(&body).map_err(|e| InventoryError::Admin {
            url: admin.clone(),
            message: format!("not an imsbridge inventory: {e}"),
        })?;
        reports.push(report);
    }
    Ok(Report::merge(reports))
}

/// A client of admin listeners (`http://`, or `https://` trusted on the system's roots).
pub(crate) type AdminClient =
    Client<hyper_rustls::HttpsConnector<crate::connect::EgressConnector>, Empty<Bytes>>;

pub(crate) fn admin_client() -> Result<AdminClient, InventoryError> {
    let connector =
        https_connector(&system_roots(), Some(TIMEOUT), &Egress::default()).map_err(|e| {
            InventoryError::Admin {
                url: String::new(),
                message: e.to_string(),
            }
        })?;
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector))
}

/// `GET admin + path`, with `password` as HTTP Basic credentials when there is one: the body of
/// a successful answer.
pub(crate) async fn get(
    client: &AdminClient,
    admin: &str,
    path: &str,
    password: Option<&str>,
) -> Result<Bytes, InventoryError> {
    let failed = |message: String| InventoryError::Admin {
        url: admin.to_owned(),
        message,
    };
    let url: http::Uri = format!("{}{path}", admin.trim_end_matches('/'))
        .parse()
        .map_err(|_| failed("not a URL such as http://127.0.0.1:9090".to_owned()))?;
    let mut request = http::Request::get(url);
    if let Some(password) = password {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"));
        let mut value = http::HeaderValue::try_from(format!("Basic {encoded}"))
            .map_err(|_| failed("the admin password cannot be sent".to_owned()))?;
        value.set_sensitive(true);
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = tokio::time::timeout(TIMEOUT, client.request(request))
        .await
        .map_err(|_| failed(format!("no answer within {TIMEOUT:?}")))?
        .map_err(|e| failed(crate::connect::error_chain(&e)))?;
    let status = response.status();
    let body = tokio::time::timeout(
        TIMEOUT,
        Limited::new(response.into_body(), MAX_REPORT_BYTES).collect(),
    )
    .await
    .map_err(|_| failed(format!("no whole answer within {TIMEOUT:?}")))?
    .map_err(|e| failed(e.to_string()))?
    .to_bytes();
    if status == http::StatusCode::UNAUTHORIZED {
        return Err(failed(if password.is_some() {
            "refused the admin password (HTTP 401): check it against [admin] password".to_owned()
        } else {
            format!(
                "asks for its password ([admin] password, HTTP 401): put it in the environment variable {PASSWORD_ENV} or in a file named by --admin-password-file"
            )
        }));
    }
    if !status.is_success() {
        return Err(failed(format!(
            "answered HTTP {status} (is it imsbridge's admin listener?)"
        )));
    }
    Ok(body)
}

fn when(seconds: u64) -> String {
    if seconds == 0 {
        return "-".to_owned();
    }
    utc(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// The requests of a login by way and outcome, `ims ok 10, legacy ok 2`.
fn ways(login: &LoginReport) -> String {
    let listed: Vec<String> = login
        .counts
        .iter()
        .map(|c| format!("{} {} {}", c.way, c.outcome, c.requests))
        .collect();
    listed.join(", ")
}

/// The first few names of a list, and how many more.
fn some(names: &[super::Named], others: u64, shown: usize) -> String {
    let mut listed: Vec<String> = names
        .iter()
        .take(shown)
        .map(|n| format!("{} ({})", n.name, n.requests))
        .collect();
    let more = names.len().saturating_sub(shown) as u64 + others;
    if more > 0 {
        listed.push(format!("+{more} more"));
    }
    listed.join(", ")
}

/// Prints the table, then the `[[callers]]` entries of the logins no caller owns.
pub(crate) fn write(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    if report.logins.is_empty() {
        writeln!(out, "no login seen yet")?;
        return Ok(());
    }
    let rows: Vec<[String; 7]> = report
        .logins
        .iter()
        .map(|login| {
            [
                login.login.clone(),
                login.caller.clone().unwrap_or_else(|| "-".to_owned()),
                login.requests.to_string(),
                ways(login),
                when(login.last_seen),
                some(&login.peers, login.other_peers, 3),
                some(&login.actions, login.other_actions, 3),
            ]
        })
        .collect();
    let header = [
        "LOGIN",
        "CALLER",
        "REQUESTS",
        "BY WAY AND OUTCOME",
        "LAST SEEN",
        "FROM",
        "ACTIONS",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text
    };
    writeln!(out, "{}", line(&header))?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    if report.dropped > 0 {
        writeln!(
            out,
            "\n{} logins were dropped past admin.inventory_max_logins ({}): the least recently seen",
            report.dropped, report.max_logins
        )?;
    }
    let unowned: Vec<&LoginReport> = report
        .logins
        .iter()
        .filter(|l| l.caller.is_none())
        .collect();
    if !unowned.is_empty() {
        writeln!(out)?;
        write_skeletons(&unowned, &report.profiles, out)?;
    }
    Ok(())
}

/// A TOML string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A caller name made of the login: letters, digits, `-`, `_`, `.`.
fn caller_name(login: &str) -> String {
    let name: String = login
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("legacy-{name}")
}

fn write_skeletons(
    logins: &[&LoginReport],
    profiles: &[String],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "# Logins no caller owns: one [[callers]] entry each for the config. Replace the password\n\
         # with the argon2 hash of the operator's password (imsbridge hash-password), check the\n\
         # profile, and move the caller on from \"legacy\" (docs/migration.md, \"Migrating step by step\")."
    )?;
    let profile = match profiles {
        [] => None,
        [first, ..] => Some(first),
    };
    let mut names: Vec<String> = Vec::new();
    for login in logins {
        if login.login.is_empty()
            || login.login.contains('/')
            || login.login.contains(char::is_whitespace)
        {
            writeln!(
                out,
                "\n# login {} cannot be configured: a login has no `/` and no spaces",
                quoted(&login.login)
            )?;
            continue;
        }
        let mut name = caller_name(&login.login);
        while names.contains(&name) {
            name.push('_');
        }
        names.push(name.clone());
        writeln!(out, "\n[[callers]]")?;
        writeln!(out, "name = {}", quoted(&name))?;
        writeln!(out, "login = {}", quoted(&login.login))?;
        writeln!(
            out,
            "password = {}   # imsbridge hash-password <<< 'the operator password'",
            quoted(HASH_PLACEHOLDER)
        )?;
        match profile {
            Some(profile) if profiles.len() == 1 => writeln!(out, "profile = {}", quoted(profile))?,
            Some(profile) => writeln!(
                out,
                "profile = {}   # or one of: {}",
                quoted(profile),
                profiles[1..].join(", ")
            )?,
            None => writeln!(
                out,
                "profile = \"FILL IN\"   # the [profiles.NAME] of its technical account (none is configured yet)"
            )?,
        }
        writeln!(
            out,
            "mode = \"legacy\"   # then \"shadow\", \"canary\", \"ims\""
        )?;
        let peers: Vec<String> = login.peers.iter().map(|p| quoted(&p.name)).collect();
        let seen = format!(
            "# seen {} times, last {}, calling {}",
            login.requests,
            when(login.last_seen),
            some(&login.actions, login.other_actions, 5)
        );
        if login.other_peers == 0 && !peers.is_empty() {
            writeln!(
                out,
                "allow_from = [{}]   # where it called from",
                peers.join(", ")
            )?;
        } else {
            writeln!(
                out,
                "# allow_from: it called from more addresses than the inventory keeps"
            )?;
        }
        writeln!(out, "{seen}")?;
    }
    Ok(())
}

/// `imsbridge inventory`: fetch, merge, print.
pub async fn run(
    admins: &[String],
    password: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), InventoryError> {
    let report = fetch(admins, password).await?;
    write(&report, out)?;
    Ok(())
}
