//! Credentials that never print themselves.
//!
//! Client secrets, passwords, session tokens and Bearer tokens travel through the proxy inside a
//! [`Secret`]: its `Debug` and `Display` print `****`, so a secret that ends up in a log line or
//! an error message by accident shows nothing. The one secret with a structure, the private key
//! of a JWT service account, is a [`SigningKey`] (`secret/key.rs`), read and checked when the
//! config is loaded.

mod key;

pub use key::SigningKey;

use std::fmt;
use std::sync::Arc;

/// A secret string. Cloning is cheap (the text is shared), and the only way to read it is
/// [`Secret::expose`], which makes every use easy to find.
#[derive(Clone, Default)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: for the wire, never for a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{secret:?}"), "****");
        assert_eq!(format!("{secret}"), "****");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(****)");
        assert_eq!(secret.expose(), "hunter2");
    }
}
