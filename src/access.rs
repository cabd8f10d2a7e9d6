//! The access log: one line per request. Once the binary has set the log's output
//! ([`write_to`]), the request path writes the line itself, in the format of the other log
//! lines (`tracing-subscriber`'s text, or its JSON with `--log-format json`), with a formatter
//! of its own (a fifth of the instructions of `tracing`'s, which showed in the profile), and
//! adds it to the log's buffer (`logbuf.rs`): no system call on the request path, one write
//! for the lines of every 50 ms, no line dropped. Without an output (the
//! library in tests), the line is a `tracing` event of target `imsbridge::access` as before.
//! `RUST_LOG` applies either way.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::logbuf::LogBuffer;
use http::{HeaderValue, Method, Uri};

use crate::soap::Action;

/// How the log's lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line of `key=value` pairs, as `tracing-subscriber` writes text.
    Text,
    /// One JSON object a line.
    Json,
}

static OUTPUT: OnceLock<(LogBuffer, Format)> = OnceLock::new();

/// Writes the access lines to `writer`, as `format` (once, at start).
pub fn write_to(writer: LogBuffer, format: Format) {
    let _ = OUTPUT.set((writer, format));
}

/// What one access line says.
pub(crate) struct AccessLine {
    pub request_id: HeaderValue,
    pub peer: IpAddr,
    pub method: Method,
    pub uri: Uri,
    pub caller: Option<Arc<str>>,
    pub profile: Option<Arc<str>>,
    pub action: Option<Action>,
    pub mode: &'static str,
    pub route: &'static str,
    pub status: u16,
    pub upstream_status: u16,
    pub retried: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency_ms: f64,
    /// `ok`, or why the proxy answered itself.
    pub outcome: &'static str,
    pub error: Option<String>,
}

/// Logs a request's line, if lines of its level are logged.
pub(crate) fn log(line: &AccessLine) {
    let refused = line.error.is_some();
    let wanted = if refused {
        tracing::enabled!(target: "imsbridge::access", tracing::Level::WARN)
    } else {
        tracing::enabled!(target: "imsbridge::access", tracing::Level::INFO)
    };
    if !wanted {
        return;
    }
    match OUTPUT.get() {
        Some((writer, format)) => LINE.with_borrow_mut(|out| {
            // The thread's line buffer, reused: no allocation per line.
            out.clear();
            let at = SystemTime::now();
            match format {
                Format::Text => write_text(out, line, at),
                Format::Json => write_json(out, line, at),
            }
            writer.add(out.as_bytes());
            if out.capacity() > MAX_KEPT_LINE {
                *out = String::new(); // a very long line is not kept
            }
        }),
        None => event(line),
    }
}

/// The capacity of a thread's line buffer kept between lines.
const MAX_KEPT_LINE: usize = 4096;

thread_local! {
    /// The line being made, reused from line to line.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    /// The second last written, and its `2026-12-01T04:46:46` (a date is dear to make).
    static SECOND: std::cell::RefCell<(u64, String)> = const {
        std::cell::RefCell::new((u64::MAX, String::new()))
    };
}

/// `2026-12-01T04:46:46.216233Z`, as `tracing-subscriber` writes its time.
fn timestamp(out: &mut String, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != since.as_secs() {
            let date = crate::dates::utc(at);
            *second = since.as_secs();
            *text = format!("{}T{}", &date[..10], &date[11..19]);
        }
        out.push_str(text);
    });
    out.push('.');
    let micros = since.subsec_micros();
    let start = out.len();
    number(out, u64::from(micros));
    // Six digits, zeros first.
    let digits = out.len() - start;
    for _ in digits..6 {
        out.insert(start, '0');
    }
    out.push('Z');
}

/// An address as `Display` writes it; an IPv4 one without the formatter.
fn address(out: &mut String, address: IpAddr) {
    match address {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                number(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `n` in decimal, without the formatter (`itoa`, two digits at a time).
fn number(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Milliseconds kept to the microsecond (`38.613`, `38.61`, `38.0`), as `f64`'s `Debug` (and
/// serde_json) write the value rounded so.
fn milliseconds(out: &mut String, ms: f64) {
    // Anything else (not kept to the microsecond) goes through the formatter.
    if !(0.0..1e12).contains(&ms) || (ms * 1e3).round() / 1e3 != ms {
        let _ = write!(out, "{ms:?}");
        return;
    }
    let micros = (ms * 1e3).round() as u64;
    number(out, micros / 1000);
    let mut fraction = micros % 1000;
    if fraction == 0 {
        out.push_str(".0");
    } else {
        out.push('.');
        let mut width = 3;
        while fraction % 10 == 0 {
            fraction /= 10;
            width -= 1;
        }
        let start = out.len();
        number(out, fraction);
        for _ in out.len() - start..width {
            out.insert(start, '0');
        }
    }
}

/// `text` as `{:?}` writes it, without the formatter for the common case.
fn quoted(out: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        let _ = write!(out, "{text:?}");
    }
}

/// A line as `tracing-subscriber`'s text format writes the event of [`event`].
#[cfg(test)]
pub(crate) fn text(line: &AccessLine, at: SystemTime) -> String {
    let mut out = String::new();
    write_text(&mut out, line, at);
    out
}

/// [`text`], into `out`.
fn write_text(out: &mut String, line: &AccessLine, at: SystemTime) {
    timestamp(out, at);
    out.push_str(if line.error.is_some() {
        "  WARN imsbridge::access: request refused request_id="
    } else {
        "  INFO imsbridge::access: request request_id="
    });
    quoted(out, line.request_id.to_str().unwrap_or("-"));
    out.push_str(" peer=");
    address(out, line.peer);
    out.push_str(" method=");
    out.push_str(line.method.as_str());
    out.push_str(" path=");
    quoted(out, line.uri.path());
    for (name, value) in [
        (" caller=", line.caller.as_deref().unwrap_or("-")),
        (" profile=", line.profile.as_deref().unwrap_or("-")),
        (" action=", line.action.as_ref().map_or("-", Action::as_str)),
        (" mode=", line.mode),
        (" route=", line.route),
    ] {
        out.push_str(name);
        quoted(out, value);
    }
    for (name, value) in [
        (" status=", u64::from(line.status)),
        (" upstream_status=", u64::from(line.upstream_status)),
    ] {
        out.push_str(name);
        number(out, value);
    }
    out.push_str(if line.retried {
        " retried=true bytes_in="
    } else {
        " retried=false bytes_in="
    });
    number(out, line.bytes_in);
    out.push_str(" bytes_out=");
    number(out, line.bytes_out);
    out.push_str(" latency_ms=");
    milliseconds(out, line.latency_ms);
    if let Some(error) = &line.error {
        out.push_str(" outcome=");
        quoted(out, line.outcome);
        let _ = write!(out, " error={error}");
    }
    out.push('\n');
}

/// `text` as a JSON string.
fn json_string(out: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
    {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(text).to_string());
    }
}

/// A line as `tracing-subscriber`'s JSON format (flattened) writes the event of [`event`].
#[cfg(test)]
pub(crate) fn json(line: &AccessLine, at: SystemTime) -> String {
    let mut out = String::new();
    write_json(&mut out, line, at);
    out
}

/// [`json`], into `out`.
fn write_json(out: &mut String, line: &AccessLine, at: SystemTime) {
    out.push_str("{\"timestamp\":\"");
    timestamp(out, at);
    out.push_str(if line.error.is_some() {
        "\",\"level\":\"WARN\",\"message\":\"request refused\",\"request_id\":"
    } else {
        "\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":"
    });
    json_string(out, line.request_id.to_str().unwrap_or("-"));
    out.push_str(",\"peer\":\"");
    address(out, line.peer);
    out.push('"');
    out.push_str(",\"method\":");
    json_string(out, line.method.as_str());
    out.push_str(",\"path\":");
    json_string(out, line.uri.path());
    for (name, value) in [
        (",\"caller\":", line.caller.as_deref().unwrap_or("-")),
        (",\"profile\":", line.profile.as_deref().unwrap_or("-")),
        (
            ",\"action\":",
            line.action.as_ref().map_or("-", Action::as_str),
        ),
        (",\"mode\":", line.mode),
        (",\"route\":", line.route),
    ] {
        out.push_str(name);
        json_string(out, value);
    }
    for (name, value) in [
        (",\"status\":", u64::from(line.status)),
        (",\"upstream_status\":", u64::from(line.upstream_status)),
    ] {
        out.push_str(name);
        number(out, value);
    }
    out.push_str(if line.retried {
        ",\"retried\":true,\"bytes_in\":"
    } else {
        ",\"retried\":false,\"bytes_in\":"
    });
    number(out, line.bytes_in);
    out.push_str(",\"bytes_out\":");
    number(out, line.bytes_out);
    out.push_str(",\"latency_ms\":");
    milliseconds(out, line.latency_ms);
    if let Some(error) = &line.error {
        out.push_str(",\"outcome\":");
        json_string(out, line.outcome);
        out.push_str(",\"error\":");
        json_string(out, error);
    }
    out.push_str(",\"target\":\"imsbridge::access\"}\n");
}

/// The line as a `tracing` event (no output set: the library on its own).
fn event(line: &AccessLine) {
    let caller = line.caller.as_deref().unwrap_or("-");
    let profile = line.profile.as_deref().unwrap_or("-");
    let action = line.action.as_ref().map_or("-", Action::as_str);
    let request_id = line.request_id.to_str().unwrap_or("-");
    let (mode, route, status, upstream_status) =
        (line.mode, line.route, line.status, line.upstream_status);
    let (retried, bytes_in, bytes_out, latency_ms) =
        (line.retried, line.bytes_in, line.bytes_out, line.latency_ms);
    match &line.error {
        None => tracing::info!(
            target: "imsbridge::access",
            request_id, peer = %line.peer, method = %line.method, path = line.uri.path(),
            caller, profile, action, mode, route,
            status, upstream_status, retried, bytes_in,
            bytes_out, latency_ms, "request"
        ),
        Some(error) => tracing::warn!(
            target: "imsbridge::access",
            request_id, peer = %line.peer, method = %line.method, path = line.uri.path(),
            caller, profile, action, mode, route,
            status, upstream_status, retried, bytes_in,
            bytes_out, latency_ms, outcome = line.outcome, error = %error,
            "request refused"
        ),
    }
}

#[cfg(test)]
mod tests;
