//! The private key of a JWT service account, read in the forms operators have it: a PEM file
//! (`-----BEGIN PRIVATE KEY-----`, PKCS#8 as the Developer Console generates it, or
//! `-----BEGIN RSA PRIVATE KEY-----`, PKCS#1), or base64 of that PEM (Adobe's
//! "Adobe Analytics connector provisioning" stores it so:
//! `base64 ./private.key > private.key.base64`), with stray blank lines, CRLF line ends and
//! wrapped base64 tolerated. Errors say what is wrong, never what the key holds.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

/// Why a private key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is empty")]
    Empty,
    #[error("is neither a PEM private key nor base64 of one")]
    NotAKey,
    #[error("is a PEM `{0}`, not a private key")]
    WrongPem(String),
    #[error(
        "is an encrypted private key; decrypt it first (openssl pkey -in key.pem -out plain.pem)"
    )]
    Encrypted,
    #[error("has a `-----BEGIN {0}-----` line without its END line")]
    Unterminated(String),
    #[error("holds invalid base64 inside its PEM lines")]
    BadPemBase64,
    #[error("is not a usable RSA private key ({0})")]
    Rejected(String),
}

/// An RSA key that signs RS256 JWTs. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SigningKey(Arc<RsaKeyPair>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(****)")
    }
}

impl SigningKey {
    /// Reads a key in any of the forms of the module documentation.
    pub fn read(text: &[u8]) -> Result<SigningKey, KeyError> {
        let text = text.trim_ascii();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if contains(text, b"-----BEGIN ") {
            return from_pem(text);
        }
        // Base64 of a PEM file (or of a DER key), wrapped or not, padded or not.
        let decoded = decode_base64(text).ok_or(KeyError::NotAKey)?;
        if contains(&decoded, b"-----BEGIN ") {
            from_pem(&decoded)
        } else {
            from_der(&decoded).map_err(|_| KeyError::NotAKey)
        }
    }

    /// The RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message,
                &mut signature,
            )
            .expect("a buffer of the modulus length");
        signature
    }

    /// The public key, DER `RSAPublicKey`, as IMS holds it in the credential's certificate.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.0.public().as_ref().to_vec()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Standard base64 with any whitespace (line wraps, CRLF, blank lines) and padding ignored.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    STANDARD_NO_PAD.decode(compact).ok()
}

/// The first PEM block of `text`.
fn from_pem(text: &[u8]) -> Result<SigningKey, KeyError> {
    let text = String::from_utf8_lossy(text);
    let begin = text.find("-----BEGIN ").ok_or(KeyError::NotAKey)?;
    let after_begin = &text[begin + "-----BEGIN ".len()..];
    let label_end = after_begin.find("-----").ok_or(KeyError::NotAKey)?;
    let label = after_begin[..label_end].trim().to_owned();
    let body_and_rest = &after_begin[label_end + "-----".len()..];
    let end_line = format!("-----END {label}-----");
    let body = body_and_rest
        .find(&end_line)
        .map(|end| &body_and_rest[..end])
        .ok_or_else(|| KeyError::Unterminated(label.clone()))?;
    // PEM headers (`Proc-Type:`, `DEK-Info:`) only come with encrypted keys.
    if label == "ENCRYPTED PRIVATE KEY" || body.contains("ENCRYPTED") {
        return Err(KeyError::Encrypted);
    }
    let der = decode_base64(body.as_bytes()).ok_or(KeyError::BadPemBase64)?;
    match label.as_str() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        _ => return Err(KeyError::WrongPem(label)),
    }
    .map(|pair| SigningKey(Arc::new(pair)))
    .map_err(|rejected| KeyError::Rejected(rejected.to_string()))
}

fn from_der(der: &[u8]) -> Result<SigningKey, KeyError> {
    RsaKeyPair::from_pkcs8(der)
        .or_else(|_| RsaKeyPair::from_der(der))
        .map(|pair| SigningKey(Arc::new(pair)))
        .map_err(|rejected| KeyError::Rejected(rejected.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    const PKCS8: &str = include_str!("../../fixtures/keys/test-service-account.key");
    const PKCS1: &str = include_str!("../../fixtures/keys/test-service-account.pkcs1.key");
    const OTHER: &str = include_str!("../../fixtures/keys/another-service-account.key");

    fn public(text: &str) -> Vec<u8> {
        SigningKey::read(text.as_bytes()).unwrap().public_key_der()
    }

    /// `base64 ./private.key`: wrapped at 76 columns.
    fn wrapped_base64(pem: &str) -> String {
        let encoded = STANDARD.encode(pem);
        encoded
            .as_bytes()
            .chunks(76)
            .map(|line| format!("{}\n", std::str::from_utf8(line).unwrap()))
            .collect()
    }

    #[test]
    fn every_form_gives_the_same_key() {
        let expected = public(PKCS8);
        let forms = [
            PKCS1.to_owned(),
            PKCS8.replace('\n', "\r\n"),
            format!(
                "\n\n  {}\n\n",
                PKCS8.replace("-----\n", "-----\n\n").replace('\n', "\n\n")
            ),
            STANDARD.encode(PKCS8),
            wrapped_base64(PKCS8),
            wrapped_base64(&PKCS8.replace('\n', "\r\n")).replace('\n', "\r\n"),
            STANDARD.encode(PKCS8).trim_end_matches('=').to_owned(),
            wrapped_base64(PKCS1),
        ];
        for form in forms {
            assert_eq!(public(&form), expected, "{}", &form[..40.min(form.len())]);
        }
        assert_ne!(public(OTHER), expected);
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        let key = SigningKey::read(PKCS8.as_bytes()).unwrap();
        let signature = key.sign(b"header.claims");
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public_key_der(),
        );
        assert!(public.verify(b"header.claims", &signature).is_ok());
        assert!(public.verify(b"header.claimz", &signature).is_err());
    }

    #[test]
    fn unusable_keys_say_why_without_showing_the_key() {
        let body_line = PKCS8.lines().nth(1).unwrap();
        let cases = [
            ("".to_owned(), KeyError::Empty),
            ("not a key at all!".to_owned(), KeyError::NotAKey),
            (STANDARD.encode("hello, not a key"), KeyError::NotAKey),
            (
                PKCS8.replace("-----END PRIVATE KEY-----", ""),
                KeyError::Unterminated("PRIVATE KEY".into()),
            ),
            (
                PKCS8.replace("PRIVATE KEY", "CERTIFICATE"),
                KeyError::WrongPem("CERTIFICATE".into()),
            ),
            (
                PKCS8.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
                KeyError::Encrypted,
            ),
            (PKCS8.replace(body_line, "!!!!"), KeyError::BadPemBase64),
            (
                PKCS8.replace(body_line, &body_line[..body_line.len() - 7]),
                KeyError::BadPemBase64,
            ),
        ];
        for (text, expected) in cases {
            let error = SigningKey::read(text.as_bytes()).unwrap_err();
            assert_eq!(error, expected);
            assert!(!error.to_string().contains(&body_line[10..30]));
        }
        // A truncated key that is still valid base64 is rejected by the RSA parser.
        let lines: Vec<&str> = PKCS8.lines().collect();
        let truncated = format!(
            "{}\n{}\n{}\n",
            lines[0],
            lines[1..5].join("\n"),
            lines.last().unwrap()
        );
        assert!(matches!(
            SigningKey::read(truncated.as_bytes()),
            Err(KeyError::Rejected(_))
        ));
        let key = SigningKey::read(PKCS8.as_bytes()).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(****)");
    }
}
