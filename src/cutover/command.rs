//! `imsbridge cutover --admin URL [--json]`: a replica's `GET /cutover`, as a table for people
//! or as the JSON itself for scripts. Exits 0 whatever the verdicts; non-zero only when the
//! replica cannot be read.

use std::io::Write;

use super::Report;
use crate::inventory::command::{InventoryError, admin_client, get};

/// Reads `admin`'s verdicts (with `password`, its `[admin] password`, if it asks for one) and
/// prints them to `out`.
pub async fn run(
    admin: &str,
    password: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), InventoryError> {
    let client = admin_client()?;
    let body = get(&client, admin, "/cutover", password).await?;
    let report: Report = serde_json::from_slice(&body).map_err(|e| InventoryError::Admin {
        url: admin.to_owned(),
        message: format!("not imsbridge's cut-over verdicts: {e}"),
    })?;
    if json {
        out.write_all(&body)?;
        return Ok(());
    }
    write_table(&report, out)?;
    Ok(())
}

/// The verdicts as a table, then the logins no caller owns.
pub(crate) fn write_table(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "Cut-over verdicts, {} (days are UTC; min_comparisons = {}, quiet_days = {}, history since {})",
        report.generated, report.min_comparisons, report.quiet_days, report.history_since
    )?;
    if let Some(note) = &report.note {
        writeln!(out, "note: {note}")?;
    }
    writeln!(out)?;
    let width = report
        .callers
        .iter()
        .map(|c| c.caller.len())
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        out,
        "{:width$}  {:7}  {:20}  summary",
        "caller", "mode", "verdict"
    )?;
    for caller in &report.callers {
        writeln!(
            out,
            "{:width$}  {:7}  {:20}  {}",
            caller.caller, caller.mode, caller.verdict, caller.summary
        )?;
    }
    if !report.unowned_logins.is_empty() {
        writeln!(out)?;
        writeln!(out, "Logins no caller owns (last call, UTC):")?;
        for login in &report.unowned_logins {
            writeln!(out, "  {:30}  {}", login.login, login.last_call_day)?;
        }
    }
    Ok(())
}
