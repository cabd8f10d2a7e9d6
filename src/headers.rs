//! Header fields that concern one connection only, removed in both directions (RFC 9110
//! §7.6.1), and removing a set of fields in one pass over those present.

use http::header::{self, HeaderMap, HeaderName};

/// The hop-by-hop fields of RFC 9110 §7.6.1 and their old companions, plus the proxy's own
/// credential: never forwarded in either direction (the first seven); then `Expect`, which a
/// request loses too (hyper's client does not wait for `100 Continue`; the proxy answered it).
static HOP_BY_HOP_AND_EXPECT: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

/// Removes the hop-by-hop fields, and those the `Connection` field names (RFC 9110 §7.6.1).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, &HOP_BY_HOP_AND_EXPECT[..7]);
}

/// [`strip_hop_by_hop`] and `Expect`, in the same pass: a request going to Campaign.
pub(crate) fn strip_hop_by_hop_and_expect(headers: &mut HeaderMap) {
    strip(headers, &HOP_BY_HOP_AND_EXPECT);
}

fn strip(headers: &mut HeaderMap, fixed: &[HeaderName]) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // The usual options: `close` names no field, `keep-alive` goes below anyway.
            .filter(|name| {
                !name.eq_ignore_ascii_case("keep-alive") && !name.eq_ignore_ascii_case("close")
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    remove_all(headers, fixed);
}

/// Removes every field named in `names` (16 at most). Most messages carry none of them: one
/// pass over the names present finds those to remove, where a `remove` per name would hash
/// every name.
pub(crate) fn remove_all(headers: &mut HeaderMap, names: &[HeaderName]) {
    debug_assert!(names.len() <= 16);
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(at) = names.iter().position(|n| n == name) {
            present |= 1 << at;
        }
    }
    for (at, name) in names.iter().enumerate() {
        if present & (1 << at) != 0 {
            headers.remove(name);
        }
    }
}

/// A header map of `(name, value)` pairs, in order, for tests.
#[cfg(test)]
pub(crate) fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut map = map(&[
            ("connection", "keep-alive, X-Internal"),
            ("keep-alive", "timeout=5"),
            ("x-internal", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut map);
        let names: Vec<_> = map.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn a_request_loses_expect_too() {
        let fields = [
            ("expect", "100-continue"),
            ("te", "trailers"),
            ("x-kept", "1"),
        ];
        let mut map = map(&fields);
        strip_hop_by_hop(&mut map);
        let names: Vec<_> = map.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, ["expect", "x-kept"]);
        let mut map = super::map(&fields);
        strip_hop_by_hop_and_expect(&mut map);
        let names: Vec<_> = map.keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn remove_all_takes_every_value_of_the_named_fields_only() {
        let mut map = map(&[("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")]);
        remove_all(
            &mut map,
            &[HeaderName::from_static("a"), HeaderName::from_static("z")],
        );
        let mut names: Vec<_> = map.keys().map(http::HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["b", "c"]);
    }
}
