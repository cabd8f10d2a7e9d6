//! The `__sessiontoken` pairs of a cookie string (RFC 6265 §4.2.1: `name=value; name=value`),
//! read and removed; the other pairs are left as they are. The name is matched whatever its case,
//! and pairs are split on `,` too (the separator of RFC 2965, which some servers still read):
//! whatever a reader of the cookie could take for the session token counts as a copy.

use super::SESSION_COOKIE;

/// Splits a cookie string into its pairs, each with its leading whitespace removed.
fn pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b';' || b == b',')
        .map(<[u8]>::trim_ascii_start)
}

fn is_session_pair(pair: &[u8]) -> bool {
    let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
    name.trim_ascii()
        .eq_ignore_ascii_case(SESSION_COOKIE.as_bytes())
}

/// The cookie string without its `__sessiontoken` pairs; `None` when it has none (leave it as
/// it is). The other cookies stay, in their order, joined with `"; "`.
pub(crate) fn strip_session_cookie(value: &[u8]) -> Option<Vec<u8>> {
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

/// The values of every `__sessiontoken` cookie in a cookie string.
pub(crate) fn session_cookies(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    pairs(value)
        .filter(|pair| is_session_pair(pair))
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(i) => pair[i + 1..].trim_ascii(),
            None => &[],
        })
}

/// The value of the first `__sessiontoken` cookie in a cookie string.
pub(crate) fn session_cookie(value: &[u8]) -> Option<&[u8]> {
    session_cookies(value).next()
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
    fn any_case_and_comma_separated_pairs_are_session_cookies() {
        assert_eq!(strip("a=1, __SessionToken=x"), Some("a=1".into()));
        assert_eq!(strip("__SESSIONTOKEN=x;b=2"), Some("b=2".into()));
        let found: Vec<&[u8]> =
            session_cookies(b"__sessiontoken=a, b=2; __SessionToken=c").collect();
        assert_eq!(found, [&b"a"[..], &b"c"[..]]);
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
