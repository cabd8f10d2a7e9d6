//! Where a legacy session token travels besides the first parameter of the method: the
//! `__sessiontoken` cookie, and the `X-Session-Token` and `X-Security-Token` headers (the same
//! names are used as elements of `SOAP-ENV:Header`, see `soap/scan.rs`).

use http::{HeaderMap, HeaderName, header};

use crate::soap::{CarrierKind, Envelope};

/// The cookie Campaign's clients send the session token in.
pub const SESSION_COOKIE: &str = "__sessiontoken";
pub static SESSION_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-session-token");
pub static SECURITY_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-security-token");

/// acc-js-sdk names the legacy credential type and login in every call
/// (`ACC-SDK-Auth: UserPassword mc`): in `ims` mode it goes with the credential.
pub static SDK_AUTH_HEADER: HeaderName = HeaderName::from_static("acc-sdk-auth");

/// The session and security tokens a request carries outside the first parameter.
#[derive(Debug, Default)]
pub struct Carried {
    pub session: Option<String>,
    pub security: Option<String>,
}

/// Reads the copies of the tokens: `X-Session-Token`, the `__sessiontoken` cookie, the SOAP
/// Header's `<Cookie>`; `X-Security-Token`, the header or the SOAP Header element. The first
/// non-empty copy wins.
pub fn carried(headers: &HeaderMap, envelope: &Envelope) -> Carried {
    let text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    let header = |name: &HeaderName| headers.get(name).and_then(|v| text(v.as_bytes()));
    let carrier = |kind: CarrierKind| {
        envelope
            .carriers
            .iter()
            .filter(move |c| c.kind == kind)
            .map(|c| c.param.value.expose())
    };
    let session = header(&SESSION_TOKEN_HEADER)
        .or_else(|| {
            headers
                .get_all(header::COOKIE)
                .iter()
                .find_map(|v| session_cookie(v.as_bytes()).and_then(text))
        })
        .or_else(|| {
            carrier(CarrierKind::Cookie).find_map(|c| session_cookie(c.as_bytes()).and_then(text))
        });
    let security = header(&SECURITY_TOKEN_HEADER)
        .or_else(|| carrier(CarrierKind::SecurityToken).find_map(|s| text(s.as_bytes())));
    Carried { session, security }
}

/// Splits a cookie string into its pairs (RFC 6265 §4.2.1: `name=value; name=value`), each
/// with its leading whitespace removed.
fn pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b';')
        .map(|pair| pair.trim_ascii_start())
}

fn is_session_pair(pair: &[u8]) -> bool {
    let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
    name.trim_ascii() == SESSION_COOKIE.as_bytes()
}

/// The cookie string without its `__sessiontoken` pairs; `None` when it has none (leave it as
/// it is). The other cookies stay, in their order, joined with `"; "`.
pub fn strip_session_cookie(value: &[u8]) -> Option<Vec<u8>> {
    if !pairs(value).any(is_session_pair) {
        return None;
    }
    let mut kept = Vec::with_capacity(value.len());
    for pair in pairs(value).filter(|p| !is_session_pair(p) && !p.trim_ascii().is_empty()) {
        if !kept.is_empty() {
            kept.extend_from_slice(b"; ");
        }
        kept.extend_from_slice(pair);
    }
    Some(kept)
}

/// The value of the first `__sessiontoken` cookie in a cookie string.
pub fn session_cookie(value: &[u8]) -> Option<&[u8]> {
    pairs(value).find(|pair| is_session_pair(pair)).map(|pair| {
        match pair.iter().position(|&b| b == b'=') {
            Some(i) => pair[i + 1..].trim_ascii(),
            None => &[],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(value: &str) -> Option<String> {
        strip_session_cookie(value.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn only_the_session_cookie_goes() {
        assert_eq!(strip("__sessiontoken=abc"), Some(String::new()));
        assert_eq!(
            strip("a=1; __sessiontoken=abc; b=2"),
            Some("a=1; b=2".into())
        );
        assert_eq!(strip("__sessiontoken=abc;b=2"), Some("b=2".into()));
        assert_eq!(strip("a=1;  __sessiontoken = abc"), Some("a=1".into()));
        assert_eq!(
            strip("a=1; __sessiontoken=x; __sessiontoken=y"),
            Some("a=1".into())
        );
    }

    #[test]
    fn other_cookies_are_left_alone() {
        assert_eq!(strip("a=1; b=2"), None);
        assert_eq!(strip("x__sessiontoken=1; __sessiontokens=2"), None);
        assert_eq!(strip(""), None);
    }

    #[test]
    fn reads_the_session_cookie() {
        assert_eq!(
            session_cookie(b"a=1; __sessiontoken=abc "),
            Some(&b"abc"[..])
        );
        assert_eq!(session_cookie(b"a=1"), None);
    }
}
