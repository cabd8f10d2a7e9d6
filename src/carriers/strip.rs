//! Every copy of the legacy credential out, on the `ims` way: from the headers, and from the
//! envelope as edits of the body prefix (applied by `soap::splice`, which copies nothing).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use super::{SDK_AUTH_HEADER, SECURITY_TOKEN_HEADER, SESSION_COOKIE, SESSION_TOKEN_HEADER};
use super::{session_cookie, strip_session_cookie};
use crate::headers::remove_all;
use crate::soap::{CarrierKind, Edit, Envelope};

/// Drops every copy of the legacy credential in the headers: the `__sessiontoken` cookie (other
/// cookies stay), `X-Session-Token`, `X-Security-Token`, and acc-js-sdk's `ACC-SDK-Auth`
/// (which names the login).
pub(crate) fn strip_headers(headers: &mut HeaderMap) {
    remove_all(
        headers,
        &[
            SESSION_TOKEN_HEADER.clone(),
            SECURITY_TOKEN_HEADER.clone(),
            SDK_AUTH_HEADER.clone(),
        ],
    );
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    // HTTP/2 clients may split cookies over several fields (RFC 9113 §8.2.3).
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| match strip_session_cookie(value.as_bytes()) {
            None => Some(value.clone()),
            Some(kept) if kept.is_empty() => None,
            Some(kept) => HeaderValue::from_bytes(&kept).ok(),
        })
        .collect();
    headers.remove(header::COOKIE);
    for cookie in cookies {
        headers.append(header::COOKIE, cookie);
    }
}

/// Every copy of the credential out of a request's head: the headers and the query.
pub(crate) fn strip_request(parts: &mut http::request::Parts) {
    strip_headers(&mut parts.headers);
    if let Some(uri) = strip_query(&parts.uri) {
        parts.uri = uri;
    }
}

/// The request target without its `__sessiontoken` query parameters (name in any case); the
/// other parameters stay as they came, encoding included. `None`: there were none.
pub(super) fn strip_query(uri: &http::Uri) -> Option<http::Uri> {
    let query = uri.query()?;
    let is_session = |pair: &&str| {
        let name = pair.split('=').next().unwrap_or_default();
        form_urlencoded::parse(name.as_bytes())
            .next()
            .is_some_and(|(name, _)| name.eq_ignore_ascii_case(SESSION_COOKIE))
    };
    if !query.split('&').any(|pair| is_session(&pair)) {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !is_session(pair))
        .collect();
    let path = uri.path();
    let target = match kept.is_empty() {
        true => path.to_owned(),
        false => format!("{path}?{}", kept.join("&")),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = target.parse().ok();
    http::Uri::from_parts(parts).ok()
}

/// The edits of the `ims` way (`docs/architecture.md`, "Where the credential travels"): the
/// first parameter's content is emptied (the element stays, as in Adobe's own before/after
/// example: `<urn:sessiontoken></urn:sessiontoken>`), and so are the SOAP Header's
/// `<X-Security-Token>` copies and its `<Cookie>` copies that carry `__sessiontoken`. A
/// `<Cookie>` is emptied whole rather than picked apart: its raw text holds entity references
/// (`&amp;` has a `;`, the cookie separator), and a credential with a `;` in it would leave a
/// piece behind. Sorted by position.
pub fn body_edits(envelope: &Envelope) -> Vec<Edit> {
    let mut edits = Vec::new();
    for carrier in &envelope.carriers {
        let carries_session = match carrier.kind {
            CarrierKind::SecurityToken | CarrierKind::SessionToken => true,
            CarrierKind::Cookie => {
                session_cookie(carrier.param.value.expose().as_bytes()).is_some()
            }
        };
        if carries_session {
            edits.push(Edit {
                range: carrier.param.content.clone(),
                replacement: Bytes::new(),
            });
        }
    }
    if let Some(param) = envelope.credential() {
        edits.push(Edit {
            range: param.content.clone(),
            replacement: Bytes::new(),
        });
    }
    edits.retain(|e| !e.range.is_empty() || !e.replacement.is_empty());
    edits.sort_by_key(|e| e.range.start);
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::{Scanner, splice};

    #[test]
    fn every_header_copy_goes_and_nothing_else() {
        let mut map = crate::headers::map(&[
            ("cookie", "a=1; __sessiontoken=abc; b=2"),
            ("cookie", "__sessiontoken=abc"),
            ("cookie", "c=3"),
            ("x-session-token", "abc"),
            ("x-security-token", "def"),
            ("acc-sdk-auth", "UserPassword mc"),
            ("soapaction", "\"nms:rtEvent#PushEvent\""),
        ]);
        strip_headers(&mut map);
        let mut left: Vec<(String, String)> = map
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        left.sort();
        let expected = [
            ("cookie", "a=1; b=2"),
            ("cookie", "c=3"),
            ("soapaction", "\"nms:rtEvent#PushEvent\""),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()));
        assert_eq!(left, expected);
    }

    #[test]
    fn the_body_edits_empty_every_copy_in_the_envelope() {
        let body = concat!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>"#,
            r#"<Cookie>a=1; __sessiontoken=mc/pass</Cookie><Cookie>other=1</Cookie>"#,
            r#"<X-Security-Token>sec</X-Security-Token></s:Header><s:Body>"#,
            r#"<m:Write xmlns:m="urn:xtk:persist|xtk:session"><m:sessiontoken> mc/pass </m:sessiontoken>"#,
        );
        let envelope = Scanner::new()
            .feed(body.as_bytes(), false)
            .unwrap()
            .unwrap();
        let edits = body_edits(&envelope);
        let spliced = splice(&Bytes::from_static(body.as_bytes()), &edits).concat();
        assert_eq!(
            String::from_utf8(spliced).unwrap(),
            body.replace("a=1; __sessiontoken=mc/pass", "")
                .replace(">sec<", "><")
                .replace(" mc/pass ", "")
        );
    }
}
