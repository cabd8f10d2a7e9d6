//! The claims of an IMS access token, read without verification: IMS tokens are JWTs whose
//! claims say who they are for (`client_id`, `user_id`, `scope`) and for how long
//! (`created_at` and `expires_in`, milliseconds as strings). Only for display (`check`) and
//! for a lifetime the answer forgot; never for a security decision.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// The claims of a JWT-shaped token; `None` for an opaque token.
pub(crate) fn decode(token: &str) -> Option<Map<String, Value>> {
    let claims = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    serde_json::from_slice(&claims).ok()
}

/// A claim as text, whether IMS wrote it as a string or a number.
pub(crate) fn text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A claim counting milliseconds.
pub(crate) fn millis(claims: &Map<String, Value>, name: &str) -> Option<u64> {
    text(claims, name)?.parse().ok()
}
