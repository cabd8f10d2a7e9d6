//! The access line written by hand is the line `tracing-subscriber` writes for the same event,
//! in both formats, byte for byte but for the time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use super::*;

/// A writer that keeps what it is given.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Kept {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn line(error: Option<&str>, path: &str, caller: &str) -> AccessLine {
    AccessLine {
        request_id: HeaderValue::from_static("6beabdb465a94e1d293e13125409e997"),
        peer: "2001:db8::7".parse().unwrap(),
        method: Method::POST,
        uri: path.parse().unwrap(),
        caller: Some(Arc::from(caller)),
        profile: None,
        action: Action::parse("nms:rtEvent#PushEvent"),
        mode: "ims",
        route: "ims",
        status: if error.is_some() { 500 } else { 200 },
        upstream_status: 200,
        retried: false,
        bytes_in: 483,
        bytes_out: 462,
        latency_ms: 38.613,
        outcome: if error.is_some() {
            "wrong_password"
        } else {
            "ok"
        },
        error: error.map(str::to_owned),
    }
}

/// What `tracing-subscriber` writes for `line`, in `format`.
fn by_tracing(line: &AccessLine, format: Format) -> String {
    use tracing_subscriber::prelude::*;
    let kept = Kept::default();
    let writer = {
        let kept = kept.clone();
        move || kept.clone()
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    let subscriber: Box<dyn tracing::Subscriber + Send + Sync> = match format {
        Format::Text => Box::new(tracing_subscriber::registry().with(layer)),
        Format::Json => {
            Box::new(tracing_subscriber::registry().with(layer.json().flatten_event(true)))
        }
    };
    tracing::subscriber::with_default(subscriber, || event(line));
    String::from_utf8(kept.0.lock().unwrap().clone()).unwrap()
}

/// `text` without its time: the 27 characters of it, at the start or after `"timestamp":"`.
fn timeless(text: &str) -> String {
    match text.find("\"timestamp\":\"") {
        Some(at) => format!("{}{}", &text[..at + 13], &text[at + 13 + 27..]),
        None => text[27..].to_owned(),
    }
}

#[test]
fn the_lines_are_tracing_subscribers_own() {
    let at = UNIX_EPOCH + Duration::from_micros(1_764_564_406_216_233);
    for line in [
        line(None, "/nl/jsp/soaprouter.jsp", "crm-events"),
        line(
            Some("wrong password for caller crm-events"),
            "/nl/jsp/soaprouter.jsp",
            "crm-events",
        ),
        // What needs escaping, both ways.
        line(
            Some("a \"quoted\" error\twith\\a tab"),
            "/nl/jsp/a%22b",
            "caller \"é\"\u{7}",
        ),
    ] {
        for format in [Format::Text, Format::Json] {
            let ours = match format {
                Format::Text => text(&line, at),
                Format::Json => json(&line, at),
            };
            let theirs = by_tracing(&line, format);
            assert_eq!(timeless(&ours), timeless(&theirs), "{format:?}");
        }
    }
    // The numbers written by hand, as the formatter writes them.
    for micros in [
        38_613_u64,
        38_610,
        38_600,
        38_000,
        1,
        0,
        50,
        12_345_678,
        999_999_999,
    ] {
        // As the record keeps it.
        let latency_ms = micros as f64 / 1e3;
        let line = AccessLine {
            latency_ms,
            bytes_in: 0,
            bytes_out: u64::MAX,
            ..line(None, "/", "x")
        };
        for format in [Format::Text, Format::Json] {
            let ours = match format {
                Format::Text => text(&line, at),
                Format::Json => json(&line, at),
            };
            assert_eq!(
                timeless(&ours),
                timeless(&by_tracing(&line, format)),
                "{micros}"
            );
        }
    }
    // An IPv4 peer, written by hand too.
    let v4 = AccessLine {
        peer: "10.0.255.7".parse().unwrap(),
        ..line(None, "/", "x")
    };
    for format in [Format::Text, Format::Json] {
        let ours = match format {
            Format::Text => text(&v4, at),
            Format::Json => json(&v4, at),
        };
        assert_eq!(timeless(&ours), timeless(&by_tracing(&v4, format)));
    }
    // Not kept to the microsecond: the formatter's own way.
    let odd = AccessLine {
        latency_ms: 1.0e-4,
        ..line(None, "/", "x")
    };
    assert_eq!(
        timeless(&text(&odd, at)),
        timeless(&by_tracing(&odd, Format::Text))
    );
    let early = UNIX_EPOCH + Duration::from_micros(1_764_564_406_000_007);
    assert!(text(&line(None, "/", "x"), early).starts_with("2025-12-01T04:46:46.000007Z"));
    assert!(text(&line(None, "/", "x"), at).starts_with("2025-12-01T04:46:46.216233Z  INFO "));
    assert!(
        json(&line(None, "/", "x"), at)
            .starts_with("{\"timestamp\":\"2025-12-01T04:46:46.216233Z\"")
    );
}
