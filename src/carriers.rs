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

pub(crate) use cookie::{session_cookie, session_cookies, strip_session_cookie};
pub use strip::body_edits;
#[cfg(test)]
pub(crate) use strip::strip_headers;
pub(crate) use strip::strip_request;

use crate::secret::Secret;
use crate::sessions::Sessions;
use crate::soap::{CarrierKind, Envelope};

/// The cookie Campaign's clients send the session token in.
pub(crate) const SESSION_COOKIE: &str = "__sessiontoken";
pub(crate) static SESSION_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-session-token");
pub(crate) static SECURITY_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-security-token");
/// acc-js-sdk names the legacy credential type and login in every call
/// (`ACC-SDK-Auth: UserPassword mc`): on the `ims` way it goes with the credential.
pub(crate) static SDK_AUTH_HEADER: HeaderName = HeaderName::from_static("acc-sdk-auth");

/// The credential a request presents: read from its copies and parsed here, once. The caller
/// check, the inventory and the shadow copy take it as it is, and none of them parses a token
/// again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credential<'a> {
    /// No credential in any copy.
    Empty,
    /// Campaign's `login/password` form of the session token, split at the first `/` as
    /// Campaign splits it (a login holds no `/`).
    Password { login: &'a str, password: &'a str },
    /// A session token imsbridge issued at a Logon, shaped like one (its signature is checked
    /// by `sessions`), with the security token that came beside it. `in_body`: it came in the
    /// first parameter; from a cookie, a header or a SOAP Header copy it needs its security
    /// token, as Campaign asks.
    Session {
        token: &'a str,
        security: Option<&'a str>,
        in_body: bool,
    },
    /// Any other token (one of Campaign's own sessions): no caller of imsbridge's owns it.
    Other(&'a str),
}

impl<'a> Credential<'a> {
    /// The credential of a request whose first parameter is `first` (empty when there is none)
    /// and whose other copies, found to agree, hold `session` and `security`: Campaign
    /// authenticates on the first parameter, or on the session copies when it is empty.
    pub(crate) fn from_copies(
        first: &'a str,
        session: Option<&'a str>,
        security: Option<&'a str>,
    ) -> Credential<'a> {
        let (token, in_body) = match first {
            "" => (session.unwrap_or_default(), false),
            first => (first, true),
        };
        if token.is_empty() {
            Credential::Empty
        } else if Sessions::looks_issued(token) {
            Credential::Session {
                token,
                security,
                in_body,
            }
        } else if let Some((login, password)) = token.split_once('/') {
            Credential::Password { login, password }
        } else {
            Credential::Other(token)
        }
    }

    /// The login of a `login/password`, when it names one.
    pub(crate) fn login(&self) -> Option<&'a str> {
        match *self {
            Credential::Password { login, .. } if !login.is_empty() => Some(login),
            _ => None,
        }
    }
}

/// Says what kind of credential it is and its login, never a password or a token.
impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Empty => f.write_str("Empty"),
            Credential::Password { login, .. } => f
                .debug_struct("Password")
                .field("login", login)
                .field("password", &"****")
                .finish(),
            Credential::Session {
                security, in_body, ..
            } => f
                .debug_struct("Session")
                .field("token", &"****")
                .field("security", &security.map(|_| "****"))
                .field("in_body", in_body)
                .finish(),
            Credential::Other(_) => f.write_str("Other(****)"),
        }
    }
}

/// Why the copies of a request's credential cannot be taken as one: readers of the request
/// (imsbridge, Campaign, a load balancer) could each take another for the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Conflict {
    #[error("the copies of the session token name different credentials")]
    Session,
    #[error("the copies of the security token differ")]
    Security,
}

/// Every copy of the credential a request carries, read once and found to agree.
#[derive(Debug, Default)]
pub(crate) struct Carried<'a> {
    first: &'a str,
    session: Option<Secret>,
    security: Option<Secret>,
}

impl Carried<'_> {
    pub(crate) fn credential(&self) -> Credential<'_> {
        Credential::from_copies(
            self.first,
            self.session.as_ref().map(Secret::expose),
            self.security.as_ref().map(Secret::expose),
        )
    }
}

/// The one value that copies must all have; empty copies say nothing.
#[derive(Default)]
struct Agreed(Option<Secret>);

impl Agreed {
    fn add(&mut self, copy: &[u8], conflict: Conflict) -> Result<(), Conflict> {
        // A copy that is not UTF-8 cannot be compared as text: it names nobody we know, so it
        // disagrees with any other.
        let text = std::str::from_utf8(copy).map_err(|_| conflict)?.trim();
        if text.is_empty() {
            return Ok(());
        }
        match &self.0 {
            None => self.0 = Some(Secret::from(text)),
            Some(agreed) if agreed.expose() == text => {}
            Some(_) => return Err(conflict),
        }
        Ok(())
    }
}

/// Reads every copy: the first parameter; the session token of each `X-Session-Token` header,
/// each `__sessiontoken` cookie, the SOAP Header's `<Cookie>` and `<X-Session-Token>`, and a
/// `__sessiontoken` query parameter; the security token of each `X-Security-Token` header and
/// SOAP Header element. All copies of a token must be the same, and the session copies the
/// same as a non-empty first parameter: what imsbridge routes on is then what Campaign sees,
/// wherever it looks. Without an envelope (Campaign's other pages), the headers and the query.
pub(crate) fn read<'a>(
    headers: &HeaderMap,
    query: Option<&str>,
    envelope: Option<&'a Envelope>,
) -> Result<Carried<'a>, Conflict> {
    let first = envelope
        .and_then(Envelope::credential)
        .map_or("", |param| param.value.expose());
    let mut session = Agreed::default();
    let mut security = Agreed::default();
    for value in headers.get_all(&SESSION_TOKEN_HEADER) {
        session.add(value.as_bytes(), Conflict::Session)?;
    }
    for value in headers.get_all(header::COOKIE) {
        for copy in session_cookies(value.as_bytes()) {
            session.add(copy, Conflict::Session)?;
        }
    }
    for carrier in envelope.iter().flat_map(|envelope| &envelope.carriers) {
        let value = carrier.param.value.expose().as_bytes();
        match carrier.kind {
            CarrierKind::Cookie => {
                for copy in session_cookies(value) {
                    session.add(copy, Conflict::Session)?;
                }
            }
            CarrierKind::SessionToken => session.add(value, Conflict::Session)?,
            CarrierKind::SecurityToken => security.add(value, Conflict::Security)?,
        }
    }
    for copy in query_sessions(query) {
        session.add(copy.as_bytes(), Conflict::Session)?;
    }
    if let Some(agreed) = &session.0
        && !first.is_empty()
        && agreed.expose() != first
    {
        return Err(Conflict::Session);
    }
    for value in headers.get_all(&SECURITY_TOKEN_HEADER) {
        security.add(value.as_bytes(), Conflict::Security)?;
    }
    Ok(Carried {
        first,
        session: session.0,
        security: security.0,
    })
}

/// The values of the `__sessiontoken` query parameters (name in any case), decoded.
fn query_sessions(query: Option<&str>) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name.eq_ignore_ascii_case(SESSION_COOKIE))
        .map(|(_, value)| value)
}

/// The login and password of `xtk:session#Logon`: its second and third parameters (the first
/// is the session token, empty at a logon).
pub(crate) fn logon(envelope: &Envelope) -> (&str, &str) {
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
    fn copies_that_agree_are_one_credential() {
        let envelope = envelope("<Cookie>a=1; __sessiontoken=mc/pass</Cookie>", "mc/pass");
        let pairs = [
            ("x-session-token", "mc/pass"),
            ("x-session-token", " mc/pass "),
            ("cookie", "b=2, __SessionToken=mc/pass"),
        ];
        let carried = read(
            &headers(&pairs),
            Some("__sessiontoken=mc%2Fpass&x=1"),
            Some(&envelope),
        )
        .unwrap();
        assert_eq!(
            carried.credential(),
            Credential::Password {
                login: "mc",
                password: "pass"
            }
        );
    }

    #[test]
    fn an_empty_first_parameter_takes_the_session_copies() {
        let envelope = envelope(
            "<Cookie>__sessiontoken=ibs1.abc</Cookie><X-Session-Token>ibs1.abc</X-Session-Token><X-Security-Token>sec</X-Security-Token>",
            "",
        );
        let carried = read(
            &headers(&[("x-security-token", "sec")]),
            None,
            Some(&envelope),
        )
        .unwrap();
        let session = Credential::Session {
            token: "ibs1.abc",
            security: Some("sec"),
            in_body: false,
        };
        assert_eq!(carried.credential(), session);
        // Empty copies say nothing.
        let carried = read(
            &headers(&[("x-session-token", "  ")]),
            Some("__sessiontoken="),
            Some(&envelope),
        )
        .unwrap();
        assert_eq!(carried.credential(), session);
    }

    #[test]
    fn copies_that_disagree_are_a_conflict() {
        let with_first = envelope("", "crm/WRONG");
        let empty_first = envelope("", "");
        let soap_cookie = envelope("<Cookie>__sessiontoken=oldop/pw</Cookie>", "crm/pw");
        let soap_session = envelope("<X-Session-Token>oldop/pw</X-Session-Token>", "");
        let soap_security = envelope("<X-Security-Token>one</X-Security-Token>", "");
        for (envelope, pairs, query, conflict) in [
            (
                &with_first,
                &[("cookie", "__sessiontoken=oldop/pw")][..],
                None,
                Conflict::Session,
            ),
            (
                &empty_first,
                &[
                    ("x-session-token", "crm/WRONG"),
                    ("cookie", "__sessiontoken=oldop/pw"),
                ][..],
                None,
                Conflict::Session,
            ),
            (
                &empty_first,
                &[
                    ("x-session-token", "crm/pw"),
                    ("x-session-token", "oldop/pw"),
                ][..],
                None,
                Conflict::Session,
            ),
            (
                &empty_first,
                &[("cookie", "__SESSIONTOKEN=a, __sessiontoken=b")][..],
                None,
                Conflict::Session,
            ),
            (&soap_cookie, &[][..], None, Conflict::Session),
            (
                &soap_session,
                &[("x-session-token", "crm/pw")][..],
                None,
                Conflict::Session,
            ),
            (
                &with_first,
                &[][..],
                Some("__sessiontoken=oldop%2Fpw"),
                Conflict::Session,
            ),
            (
                &soap_security,
                &[("x-security-token", "two")][..],
                None,
                Conflict::Security,
            ),
        ] {
            assert_eq!(
                read(&headers(pairs), query, Some(envelope)).unwrap_err(),
                conflict,
                "{pairs:?} {query:?}"
            );
        }
    }

    #[test]
    fn nothing_anywhere_is_an_empty_token() {
        let envelope = envelope("", "");
        let carried = read(&HeaderMap::new(), None, Some(&envelope)).unwrap();
        assert_eq!(carried.credential(), Credential::Empty);
        let carried = read(&HeaderMap::new(), None, None).unwrap();
        assert_eq!(carried.credential(), Credential::Empty);
    }

    #[test]
    fn a_token_is_parsed_once_into_its_kind() {
        let of = |first, session, security| Credential::from_copies(first, session, security);
        assert_eq!(
            of("mc/pa/ss", None, Some("sec")),
            Credential::Password {
                login: "mc",
                password: "pa/ss"
            },
            "split at the first slash, a security token beside it names nobody"
        );
        assert_eq!(of("mc/pw", None, None).login(), Some("mc"));
        assert_eq!(of("/pw", None, None).login(), None);
        assert_eq!(
            of("ibs1.abc", None, None),
            Credential::Session {
                token: "ibs1.abc",
                security: None,
                in_body: true
            }
        );
        assert_eq!(
            of("", Some("___D5E1C3A2"), None),
            Credential::Other("___D5E1C3A2")
        );
        assert_eq!(of("", None, Some("sec")), Credential::Empty);
        assert_eq!(of("ibs1.abc", None, None).login(), None);
    }

    #[test]
    fn debug_shows_the_kind_and_login_not_what_they_hold() {
        let shown = |credential: Credential<'_>| format!("{credential:?}");
        let password = shown(Credential::from_copies("mc/hunter2", None, None));
        assert_eq!(password, r#"Password { login: "mc", password: "****" }"#);
        let session = shown(Credential::from_copies(
            "",
            Some("ibs1.hunter2"),
            Some("sec-hunter2"),
        ));
        assert!(!session.contains("hunter2"), "{session}");
        assert!(!shown(Credential::Other("hunter2")).contains("hunter2"));
    }
}
