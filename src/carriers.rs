//! Where a legacy credential travels, in one place (`docs/architecture.md`, "Where the
//! credential travels"): reading every copy a request carries, the choice of the one Campaign
//! would authenticate on, and taking every copy out on the `ims` way. A change to where a
//! credential is found touches this module and its tests only.
//!
//! Campaign reads the first parameter of the method (`<sessiontoken>`, found by the scanner of
//! `soap/scan.rs`). Clients also send the session token in the `__sessiontoken` cookie, the
//! `X-Session-Token` header and the SOAP Header's `<Cookie>`, and the security token in
//! `X-Security-Token`, as a header or a SOAP Header element. `xtk:session#Logon` carries a login
//! and a password in its second and third parameters.
//!
//! - this file: reading the copies ([`read`]) and choosing the token ([`Credential::token`]);
//! - `carriers/cookie.rs`: the `__sessiontoken` pair of a cookie string;
//! - `carriers/strip.rs`: removing every copy, from the headers and (as edits of the body
//!   prefix) from the envelope.

mod cookie;
mod strip;

use std::fmt;

use http::{HeaderMap, HeaderName, header};

pub use cookie::{session_cookie, strip_session_cookie};
pub use strip::{body_edits, strip_headers};

use crate::secret::Secret;
use crate::soap::{CarrierKind, Envelope};

/// The cookie Campaign's clients send the session token in.
pub const SESSION_COOKIE: &str = "__sessiontoken";
pub static SESSION_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-session-token");
pub static SECURITY_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-security-token");
/// acc-js-sdk names the legacy credential type and login in every call
/// (`ACC-SDK-Auth: UserPassword mc`): on the `ims` way it goes with the credential.
pub static SDK_AUTH_HEADER: HeaderName = HeaderName::from_static("acc-sdk-auth");

/// The credential a request presents, as the caller check reads it.
#[derive(Clone, Copy, Default)]
pub struct Credential<'a> {
    /// The first parameter of the method: `login/password`, or a session token.
    pub first: &'a str,
    /// The session token of the `__sessiontoken` cookie, `X-Session-Token` or the SOAP
    /// Header's `<Cookie>`.
    pub session: Option<&'a str>,
    /// The security token (`X-Security-Token`, header or SOAP Header element), which must
    /// belong to an issued session.
    pub security: Option<&'a str>,
}

impl Credential<'_> {
    /// The session token Campaign authenticates on: the first parameter, or the session copy
    /// of a cookie or header when the first parameter is empty.
    pub fn token(&self) -> &str {
        match self.first {
            "" => self.session.unwrap_or_default(),
            first => first,
        }
    }
}

/// Says which copies are there, never what they hold.
impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |present: bool| if present { "****" } else { "-" };
        f.debug_struct("Credential")
            .field("first", &shown(!self.first.is_empty()))
            .field("session", &shown(self.session.is_some()))
            .field("security", &shown(self.security.is_some()))
            .finish()
    }
}

/// Every copy of the credential a request carries outside the first parameter, read once.
#[derive(Debug, Default)]
pub struct Carried<'a> {
    first: &'a str,
    session: Option<Secret>,
    security: Option<Secret>,
}

impl Carried<'_> {
    pub fn credential(&self) -> Credential<'_> {
        Credential {
            first: self.first,
            session: self.session.as_ref().map(Secret::expose),
            security: self.security.as_ref().map(Secret::expose),
        }
    }
}

/// Reads the copies: the first parameter; the session token of `X-Session-Token`, the
/// `__sessiontoken` cookie, the SOAP Header's `<Cookie>`; the security token of
/// `X-Security-Token`, the header or the SOAP Header element. The first non-empty copy wins.
pub fn read<'a>(headers: &HeaderMap, envelope: &'a Envelope) -> Carried<'a> {
    let text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Secret::from)
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
    Carried {
        first: envelope
            .credential()
            .map_or("", |param| param.value.expose()),
        session,
        security,
    }
}

/// The login and password of `xtk:session#Logon`: its second and third parameters (the first
/// is the session token, empty at a logon).
pub fn logon(envelope: &Envelope) -> (&str, &str) {
    let param = |i: usize| envelope.params.get(i).map_or("", |p| p.value.expose());
    (param(1), param(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::Scanner;
    use http::HeaderValue;

    fn envelope(header: &str, first: &str) -> Envelope {
        let body = format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>{header}</s:Header><s:Body><m:PushEvent xmlns:m="urn:nms:rtEvent"><m:sessiontoken>{first}</m:sessiontoken></m:PushEvent></s:Body></s:Envelope>"#
        );
        Scanner::new().feed(body.as_bytes(), true).unwrap().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn the_first_parameter_wins_over_the_session_copies() {
        let envelope = envelope("", "mc/pass");
        let carried = read(&headers(&[("x-session-token", "ibs1.abc")]), &envelope);
        let credential = carried.credential();
        assert_eq!(credential.token(), "mc/pass");
        assert_eq!(credential.session, Some("ibs1.abc"));
    }

    #[test]
    fn an_empty_first_parameter_takes_the_first_copy_found() {
        let envelope = envelope(
            "<Cookie>a=1; __sessiontoken=from-soap-header</Cookie><X-Security-Token>sec-soap</X-Security-Token>",
            "",
        );
        // The header first, then the cookie, then the SOAP Header.
        for (pairs, session) in [
            (
                &[
                    ("x-session-token", "from-header"),
                    ("cookie", "__sessiontoken=from-cookie"),
                ][..],
                "from-header",
            ),
            (
                &[("cookie", "b=2; __sessiontoken=from-cookie ")][..],
                "from-cookie",
            ),
            (&[("x-session-token", "  ")][..], "from-soap-header"),
        ] {
            let carried = read(&headers(pairs), &envelope);
            let credential = carried.credential();
            assert_eq!(credential.token(), session, "{pairs:?}");
            assert_eq!(credential.security, Some("sec-soap"));
        }
        let carried = read(&headers(&[("x-security-token", "sec-header")]), &envelope);
        assert_eq!(carried.credential().security, Some("sec-header"));
    }

    #[test]
    fn nothing_anywhere_is_an_empty_token() {
        let envelope = envelope("", "");
        let carried = read(&HeaderMap::new(), &envelope);
        assert_eq!(carried.credential().token(), "");
        assert_eq!(carried.credential().security, None);
    }

    #[test]
    fn debug_shows_which_copies_not_what_they_hold() {
        let credential = Credential {
            first: "mc/hunter2",
            session: None,
            security: Some("sec-hunter2"),
        };
        let debug = format!("{credential:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(
            debug,
            r#"Credential { first: "****", session: "-", security: "****" }"#
        );
    }
}
