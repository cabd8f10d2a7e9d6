//! TLS on the listener, with rustls: the server certificate and key, and with `client_ca`,
//! mutual TLS (a client certificate signed by that CA is required), and the subject of a
//! client certificate, which a caller can be bound to.
//!
//! The subject is read with a small DER walker (RFC 5280 §4.1: Certificate → TBSCertificate
//! → subject Name → RDNs) rather than a full X.509 parser: only the names are needed, and
//! rustls has already verified the certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::secret::Secret;

/// The listener's rustls config. Errors say which file and why, never what a key holds.
pub fn server_config(
    cert: &Path,
    key: &Secret,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cert: {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("cert: {} holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
        .map_err(|_| "key: not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client_ca: {}: {e}", path.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("client_ca: {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "client_ca: {} holds no PEM certificate",
                    path.display()
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client_ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("key: does not go with the certificate ({e})"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A DER element: its tag and its content.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let bytes = usize::from(first & 0x7f);
        if bytes == 0 || bytes > 4 || rest.len() < bytes {
            return None;
        }
        let length = rest[..bytes]
            .iter()
            .fold(0usize, |n, &b| n << 8 | usize::from(b));
        (length, &rest[bytes..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// Short names of the usual attribute types (RFC 4514 §3).
fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".to_owned(),
        [0x55, 0x04, 0x06] => "C".to_owned(),
        [0x55, 0x04, 0x07] => "L".to_owned(),
        [0x55, 0x04, 0x08] => "ST".to_owned(),
        [0x55, 0x04, 0x0a] => "O".to_owned(),
        [0x55, 0x04, 0x0b] => "OU".to_owned(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".to_owned(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".to_owned(),
        other => {
            // Dotted form: the first byte holds two arcs, then base-128 numbers.
            let Some((&first, rest)) = other.split_first() else {
                return "?".to_owned();
            };
            let mut arcs = vec![u64::from(first / 40), u64::from(first % 40)];
            let mut n = 0u64;
            for &b in rest {
                n = n << 7 | u64::from(b & 0x7f);
                if b & 0x80 == 0 {
                    arcs.push(n);
                    n = 0;
                }
            }
            arcs.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(".")
        }
    }
}

/// The fields of a DER certificate's `tbsCertificate` after its version (when present) and the
/// next `skip` ones.
fn tbs_fields_after(cert: &[u8], skip: usize) -> Option<&[u8]> {
    let (SEQUENCE, certificate, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, mut rest, _) = element(certificate)? else {
        return None;
    };
    // [0] version, when present.
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    for _ in 0..skip {
        rest = element(rest)?.2;
    }
    Some(rest)
}

/// The subject of a DER certificate, `CN=crm-pusher,O=Example` in the certificate's order.
pub fn subject(cert: &[u8]) -> Option<String> {
    // serialNumber, signature, issuer, validity, then subject.
    let (SEQUENCE, mut name, _) = element(tbs_fields_after(cert, 4)?)? else {
        return None;
    };
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (SET, mut rdn, after) = element(name)? else {
            return None;
        };
        name = after;
        while !rdn.is_empty() {
            let (SEQUENCE, pair, after) = element(rdn)? else {
                return None;
            };
            rdn = after;
            let (OID, oid, value) = element(pair)? else {
                return None;
            };
            let (kind, text, _) = element(value)?;
            parts.push(format!(
                "{}={}",
                attribute_name(oid),
                escape_value(&decode_string(kind, text))
            ));
        }
    }
    Some(parts.join(","))
}

/// The DNS names and URIs of a DER certificate's subjectAltName, as `dns:name` and `uri:uri`;
/// empty when it has none (or cannot be read).
pub fn subject_alt_names(cert: &[u8]) -> Vec<String> {
    subject_alt_names_of(cert).unwrap_or_default()
}

fn subject_alt_names_of(cert: &[u8]) -> Option<Vec<String>> {
    const EXTENSIONS: u8 = 0xa3;
    const OCTET_STRING: u8 = 0x04;
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo.
    let mut rest = tbs_fields_after(cert, 6)?;
    // The optional unique identifiers ([1], [2]), then [3] extensions.
    while let Some((tag, content, after)) = element(rest) {
        rest = after;
        if tag != EXTENSIONS {
            continue;
        }
        let (SEQUENCE, mut extensions, _) = element(content)? else {
            return None;
        };
        while !extensions.is_empty() {
            let (SEQUENCE, extension, after) = element(extensions)? else {
                return None;
            };
            extensions = after;
            let (OID, oid, mut fields) = element(extension)? else {
                return None;
            };
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            // `critical`, when present, then the value.
            let (mut tag, mut value, after) = element(fields)?;
            if tag != OCTET_STRING {
                fields = after;
                (tag, value, _) = element(fields)?;
            }
            if tag != OCTET_STRING {
                return None;
            }
            let (SEQUENCE, mut names, _) = element(value)? else {
                return None;
            };
            let mut found = Vec::new();
            while !names.is_empty() {
                let (tag, name, after) = element(names)?;
                names = after;
                let kind = match tag {
                    0x82 => "dns",
                    0x86 => "uri",
                    _ => continue,
                };
                found.push(format!("{kind}:{}", String::from_utf8_lossy(name)));
            }
            return Some(found);
        }
    }
    Some(Vec::new())
}

/// Whether a presented `dns:`/`uri:` name is the configured one: DNS names in any case.
pub fn alt_names_match(configured: &str, presented: &str) -> bool {
    match (configured.split_once(':'), presented.split_once(':')) {
        (Some(("dns", want)), Some(("dns", have))) => want.eq_ignore_ascii_case(have),
        (Some(("uri", want)), Some(("uri", have))) => want == have,
        _ => false,
    }
}

/// A directory string's text: BMPString is UTF-16, the others are read as UTF-8.
fn decode_string(kind: u8, bytes: &[u8]) -> String {
    const BMP_STRING: u8 = 0x1e;
    match kind {
        BMP_STRING => char::decode_utf16(
            bytes
                .chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// An attribute value as RFC 4514 §2.4 writes it, and `/` escaped too (the separator of
/// OpenSSL's form): whatever the value holds, it reads back as one value.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' | '/')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The attribute=value pairs of a subject, whatever their order and spacing: RFC 4514
/// (`CN=crm,O=Example\, Inc.`, values escaped by `\` and a character or two hex digits, `+`
/// joining the values of one RDN), or OpenSSL's form when it starts with `/`
/// (`/O=Example, Inc./CN=crm`). Types in upper case; values as they read, compared as they are.
fn pairs(subject: &str) -> Vec<(String, String)> {
    let slash_form = subject.trim_start().starts_with('/');
    let is_separator = |c: char| {
        if slash_form {
            c == '/'
        } else {
            c == ',' || c == '+'
        }
    };
    let mut pairs = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut push = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        if let Some((name, value)) = text.split_once('=') {
            pairs.push((name.trim().to_ascii_uppercase(), value.trim().to_owned()));
        }
    };
    let mut chars = subject.chars().peekable();
    let mut buf = [0u8; 4];
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let hex: String = chars.clone().take(2).collect();
                // Two hex digits (not `+c`, which `from_str_radix` would take for a number).
                let digits = hex.len() == 2 && hex.chars().all(|c| c.is_ascii_hexdigit());
                match u8::from_str_radix(&hex, 16) {
                    Ok(byte) if digits => {
                        current.push(byte);
                        chars.next();
                        chars.next();
                    }
                    _ => {
                        if let Some(next) = chars.next() {
                            current.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
            }
            c if is_separator(c) => {
                push(&current);
                current.clear();
            }
            c => current.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
    push(&current);
    pairs.sort();
    pairs
}

/// Whether a certificate's subject is the one a caller is bound to: the same attributes and
/// values, in any order (OpenSSL and RFC 4514 print them in opposite orders).
pub fn subjects_match(configured: &str, presented: &str) -> bool {
    let configured = pairs(configured);
    !configured.is_empty() && configured == pairs(presented)
}

/// Whether a configured subject can be read at all.
pub fn is_subject(text: &str) -> bool {
    !pairs(text).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_subject_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["crm.example.com".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "FR");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "crm-pusher");
        let cert = params.self_signed(&key).unwrap();
        let subject = subject(cert.der()).unwrap();
        assert_eq!(subject, "C=FR,O=Example\\, Inc.,CN=crm-pusher");
        assert!(subjects_match(
            "CN=crm-pusher,O=Example\\2C Inc.,C=FR",
            &subject
        ));
        for configured in [
            "CN=crm-pusher,O=Example\\, Inc.,C=FR",
            "C = FR, O = Example\\, Inc., CN = crm-pusher",
            "/C=FR/O=Example\\, Inc./CN=crm-pusher",
        ] {
            assert!(subjects_match(configured, &subject), "{configured}");
        }
        for other in [
            "CN=crm-pusher",
            "CN=intruder,O=Example\\, Inc.,C=FR",
            "",
            "nonsense",
        ] {
            assert!(!subjects_match(other, &subject), "{other}");
        }
        assert!(subject_of_garbage_is_none());
    }

    /// A certificate whose subject is `pairs`, in that order.
    fn certificate(pairs: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x.example.com".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in pairs {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_value_holding_separators_is_one_value() {
        use rcgen::DnType::{CommonName, OrganizationName};
        // The attack: one CN that reads as two attributes when compared as text.
        for (value, configured) in [
            ("evil/O=Example", "CN=evil,O=Example"),
            ("evil/O=Example", "/CN=evil/O=Example"),
            ("evil,O=Example", "CN=evil,O=Example"),
            ("evil+O=Example", "CN=evil+O=Example"),
            ("evil\\,O=Example", "CN=evil,O=Example"),
        ] {
            let subject = subject(&certificate(&[(CommonName, value)])).unwrap();
            assert!(
                !subjects_match(configured, &subject),
                "CN `{value}` matched `{configured}` ({subject})"
            );
        }
        // Each such value still matches itself, escaped as RFC 4514 writes it.
        for (value, configured) in [
            ("evil/O=Example", "CN=evil\\/O\\=Example"),
            ("a,b+c", "CN=a\\,b\\+c"),
            ("a,b+c", "CN=a\\2Cb\\2Bc"),
            ("back\\slash", "CN=back\\\\slash"),
        ] {
            let subject = subject(&certificate(&[(CommonName, value)])).unwrap();
            assert!(subjects_match(configured, &subject), "{value}: {subject}");
        }
        // Two attributes are two, whichever form names them.
        let two = subject(&certificate(&[
            (OrganizationName, "Example"),
            (CommonName, "crm"),
        ]))
        .unwrap();
        for configured in ["CN=crm,O=Example", "/O=Example/CN=crm", "O=Example+CN=crm"] {
            assert!(subjects_match(configured, &two), "{configured}");
        }
    }

    #[test]
    fn reads_the_dns_names_and_uris_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["crm.example.com".to_owned()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.com/crm-pusher".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_alt_names(cert.der()),
            ["dns:crm.example.com", "uri:spiffe://example.com/crm-pusher"]
        );
        assert!(alt_names_match(
            "dns:CRM.example.com",
            "dns:crm.example.com"
        ));
        assert!(!alt_names_match(
            "dns:crm.example.com",
            "uri:crm.example.com"
        ));
        assert!(!alt_names_match(
            "uri:spiffe://example.com/A",
            "uri:spiffe://example.com/a"
        ));
        let bare = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(subject_alt_names(bare.der()).is_empty());
        assert!(subject_alt_names(b"\x30\x03\x30\x01\x02").is_empty());
    }

    fn subject_of_garbage_is_none() -> bool {
        [
            &b""[..],
            b"\x30",
            b"\x30\x82\xff\xff",
            b"\x30\x03\x30\x01\x02",
        ]
        .iter()
        .all(|bytes| subject(bytes).is_none())
    }
}
