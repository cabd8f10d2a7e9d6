//! Who a client certificate names, and whom a caller is bound to.
//!
//! A certificate's subject attributes and subjectAltNames are read with `x509-parser` (RFC 5280
//! §4.1.2.6, §4.2.1.6) once per connection, after rustls has verified the chain. A caller's
//! `client_cert_subject` (RFC 4514, or OpenSSL's `/`-separated form) and `client_cert_san` are
//! parsed once, when the config is loaded. Both sides meet as parsed values: attribute types as
//! encoded object identifiers, values as Unicode text after unescaping, never as printed text.

use std::fmt;
use std::net::IpAddr;

use x509_parser::asn1_rs::{Any, Class, FromDer, Tag};
use x509_parser::extensions::GeneralName;

/// The attribute type names a subject may use, each with its object identifier (RFC 4519 §2,
/// RFC 2985 §5.2.1 for `emailAddress`). Any other type is written as a numeric OID.
const NAMED_TYPES: [(&str, &str); 9] = [
    ("CN", "2.5.4.3"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("emailAddress", "1.2.840.113549.1.9.1"),
];

/// Why a configured subject or certificate name cannot be read. The texts quote the config
/// (a subject is no secret) so that the operator sees which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is empty")]
    Empty,
    #[error("holds an empty attribute (two separators in a row, or one at an end)")]
    EmptyAttribute,
    #[error("`{0}` is not TYPE=value (such as CN=crm-pusher)")]
    NoEquals(String),
    #[error(
        "`{0}` is not an attribute type: write CN, O, OU, C, L, ST, DC, UID or emailAddress, or a numeric OID such as 2.5.4.3"
    )]
    UnknownType(String),
    #[error(
        "`{0}` is not a numeric OID: arcs of digits without leading zeros, joined by dots, at least two, the first 0, 1 or 2 (and the second under 40 when the first is 0 or 1)"
    )]
    BadOid(String),
    #[error("the value of `{0}` {1}")]
    BadValue(String, &'static str),
    #[error(
        "`{0}` is not a name such as \"dns:crm.example.com\", \"uri:spiffe://example.com/crm\", \"email:crm@example.com\" or \"ip:10.1.2.3\""
    )]
    BadAltName(String),
}

/// An attribute type: the content octets of its DER OBJECT IDENTIFIER (X.690 §8.19), compared
/// as bytes. Turning them into dotted text is where readers go wrong: a first octet of 120 or
/// more holds arc 2 and a second arc of 40 or more (`2.40` is `0x78`), which a reader that
/// divides it by 40 prints as `3.0`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Oid(Box<[u8]>);

impl Oid {
    /// Encodes a dotted OID (`2.5.4.3`): `None` when it is not one. Arcs up to 2^128 - 1 (the
    /// UUID arcs under `2.25` are 128 bits).
    fn parse(dotted: &str) -> Option<Oid> {
        let arcs = dotted
            .split('.')
            .map(|arc| {
                let digits = !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit());
                let canonical = arc == "0" || !arc.starts_with('0');
                if !digits || !canonical {
                    return None;
                }
                arc.parse::<u128>().ok()
            })
            .collect::<Option<Vec<u128>>>()?;
        let [first, second, rest @ ..] = arcs.as_slice() else {
            return None;
        };
        if *first > 2 || (*first < 2 && *second >= 40) {
            return None;
        }
        let joined = first.checked_mul(40)?.checked_add(*second)?;
        let mut bytes = Vec::new();
        for arc in std::iter::once(joined).chain(rest.iter().copied()) {
            // Base 128, most significant group first, every group but the last with bit 8 set.
            let groups = (128 - arc.leading_zeros()).div_ceil(7).max(1);
            for group in (0..groups).rev() {
                let seven = u8::try_from((arc >> (7 * group)) & 0x7f).expect("seven bits");
                bytes.push(if group == 0 { seven } else { seven | 0x80 });
            }
        }
        Some(Oid(bytes.into()))
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid(")?;
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

/// A subjectAltName a caller can be bound to, normalized so that equal names are equal values:
/// DNS names in lower case, e-mail domains in lower case (RFC 5280 §4.2.1.6, §7.5), URIs and
/// local parts exactly as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AltName {
    Dns(String),
    Uri(String),
    Email(String),
    Ip(IpAddr),
}

impl AltName {
    /// A configured name: `dns:crm.example.com`, `uri:spiffe://example.com/crm`,
    /// `email:crm@example.com`, `ip:10.1.2.3`.
    pub fn parse(text: &str) -> Result<AltName, NameError> {
        let bad = || NameError::BadAltName(text.to_owned());
        let (kind, name) = text.split_once(':').ok_or_else(bad)?;
        if name.is_empty() || name.trim() != name {
            return Err(bad());
        }
        match kind {
            "dns" => Ok(AltName::dns(name)),
            "uri" => Ok(AltName::Uri(name.to_owned())),
            "email" => AltName::email(name).ok_or_else(bad),
            "ip" => name.parse().map(AltName::Ip).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    fn dns(name: &str) -> AltName {
        AltName::Dns(name.to_ascii_lowercase())
    }

    fn email(address: &str) -> Option<AltName> {
        let (local, domain) = address.rsplit_once('@')?;
        (!local.is_empty() && !domain.is_empty())
            .then(|| AltName::Email(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    /// The name of a certificate's subjectAltName entry, if it is of a kind callers are bound
    /// to.
    fn of_general_name(name: &GeneralName<'_>) -> Option<AltName> {
        match name {
            GeneralName::DNSName(dns) => Some(AltName::dns(dns)),
            GeneralName::URI(uri) => Some(AltName::Uri((*uri).to_owned())),
            GeneralName::RFC822Name(email) => AltName::email(email),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                _ => None,
            }
            .map(AltName::Ip),
            _ => None,
        }
    }
}

impl fmt::Display for AltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AltName::Dns(name) => write!(f, "dns:{name}"),
            AltName::Uri(uri) => write!(f, "uri:{uri}"),
            AltName::Email(address) => write!(f, "email:{address}"),
            AltName::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// What a verified client certificate says of its holder.
#[derive(Debug, Default)]
pub struct CertIdentity {
    /// The attributes of every RDN of the subject, sorted. `None`: a value that is not one of
    /// the string types of X.520's DirectoryString (or IA5String), which no configured value
    /// equals.
    subject: Vec<(Oid, Option<String>)>,
    alt_names: Vec<AltName>,
}

impl CertIdentity {
    /// Reads a DER certificate; `None` when x509-parser cannot read it (no caller bound to a
    /// certificate is then matched).
    pub fn from_der(der: &[u8]) -> Option<CertIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut subject: Vec<_> = cert
            .subject()
            .iter_attributes()
            .map(|attribute| {
                let oid = Oid(attribute.attr_type().as_bytes().into());
                (oid, directory_string(attribute.attr_value()))
            })
            .collect();
        subject.sort();
        // A certificate with two subjectAltName extensions is refused by the reader: then no
        // name is believed, rather than one of them.
        let alt_names = match cert.subject_alternative_name().ok()? {
            Some(extension) => extension
                .value
                .general_names
                .iter()
                .filter_map(AltName::of_general_name)
                .collect(),
            None => Vec::new(),
        };
        Some(CertIdentity { subject, alt_names })
    }

    /// Whether one of the certificate's subjectAltNames is `name`.
    pub fn has_alt_name(&self, name: &AltName) -> bool {
        self.alt_names.contains(name)
    }

    /// The certificate's subjectAltNames of the kinds callers are bound to, in its order.
    pub fn alt_names(&self) -> &[AltName] {
        &self.alt_names
    }
}

/// The text of an attribute value of one of X.520's string types (UTF8String, PrintableString,
/// TeletexString read as ISO-8859-1 as OpenSSL reads it, BMPString as UTF-16,
/// UniversalString as UTF-32) or IA5String, NumericString and VisibleString.
fn directory_string(value: &Any<'_>) -> Option<String> {
    if value.class() != Class::Universal || value.header.is_constructed() {
        return None;
    }
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::TeletexString => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString if data.len() % 2 == 0 => char::decode_utf16(
            data.chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        Tag::UniversalString if data.len() % 4 == 0 => data
            .chunks(4)
            .map(|quad| char::from_u32(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]])))
            .collect(),
        _ => None,
    }
}

/// The subject a caller's certificate must have: its attributes, each type and value, in any
/// order and however they are grouped into RDNs (OpenSSL and RFC 4514 print them in opposite
/// orders). `Debug` and `Display` show it as configured.
#[derive(Clone)]
pub struct SubjectName {
    text: String,
    /// Sorted, as [`CertIdentity::subject`] is.
    attributes: Vec<(Oid, String)>,
}

impl SubjectName {
    /// Parses a configured subject: RFC 4514 (`CN=crm,O=Example\, Inc.`: attributes joined by
    /// `,`, or `+` within one RDN; values escaped by `\` and a character or two hex digits, or
    /// written `#` and the hex of their BER encoding), or OpenSSL's form when it starts with `/`
    /// (`/O=Example, Inc./CN=crm`). White space around types and values is not part of them
    /// unless escaped.
    pub fn parse(text: &str) -> Result<SubjectName, NameError> {
        if text.trim().is_empty() {
            return Err(NameError::Empty);
        }
        // Not trimmed at the end: an escaped space there is part of the last value.
        let text_start = text.trim_start();
        let (body, separators): (&str, &[char]) = match text_start.strip_prefix('/') {
            Some(body) => (body, &['/']),
            None => (text_start, &[',', '+']),
        };
        let mut attributes = split_unescaped(body, separators)
            .into_iter()
            .map(attribute)
            .collect::<Result<Vec<_>, _>>()?;
        attributes.sort();
        Ok(SubjectName {
            text: text.to_owned(),
            attributes,
        })
    }

    /// Whether a certificate's subject has exactly these attributes.
    pub fn matches(&self, cert: &CertIdentity) -> bool {
        self.attributes.len() == cert.subject.len()
            && self.attributes.iter().zip(&cert.subject).all(
                |((oid, value), (their_oid, their_value))| {
                    oid == their_oid && their_value.as_deref() == Some(value.as_str())
                },
            )
    }
}

impl fmt::Debug for SubjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for SubjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The pieces of `text` between separators that no `\` escapes.
fn split_unescaped<'a>(text: &'a str, separators: &[char]) -> Vec<&'a str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        if c == '\\' {
            chars.next();
        } else if separators.contains(&c) {
            pieces.push(&text[start..at]);
            start = at + c.len_utf8();
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// One `TYPE=value` of a configured subject.
fn attribute(piece: &str) -> Result<(Oid, String), NameError> {
    if piece.trim().is_empty() {
        return Err(NameError::EmptyAttribute);
    }
    let (name, value) = piece
        .split_once('=')
        .ok_or_else(|| NameError::NoEquals(piece.trim().to_owned()))?;
    let name = name.trim();
    let oid = attribute_type(name)?;
    let value = attribute_value(value).map_err(|why| NameError::BadValue(name.to_owned(), why))?;
    Ok((oid, value))
}

/// An attribute type by name (in any case, RFC 4512 §2.5) or as a numeric OID, with or
/// without RFC 2253's `OID.` before it.
fn attribute_type(name: &str) -> Result<Oid, NameError> {
    let numeric = name
        .get(..4)
        .filter(|prefix| prefix.eq_ignore_ascii_case("oid."))
        .map_or(name, |_| &name[4..]);
    if numeric.starts_with(|c: char| c.is_ascii_digit()) {
        return Oid::parse(numeric).ok_or_else(|| NameError::BadOid(numeric.to_owned()));
    }
    NAMED_TYPES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, dotted)| Oid::parse(dotted).expect("the named types' OIDs are well-formed"))
        .ok_or_else(|| NameError::UnknownType(name.to_owned()))
}

/// An attribute value, unescaped (RFC 4514 §2.4, §3).
fn attribute_value(raw: &str) -> Result<String, &'static str> {
    let raw = raw.trim_start();
    if let Some(hex) = raw.strip_prefix('#') {
        return hex_value(hex.trim_end());
    }
    let mut out = Vec::with_capacity(raw.len());
    // Trailing white space that was escaped stays: nothing before `kept` is trimmed.
    let mut kept = 0;
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let pair = rest
            .get(..2)
            .filter(|pair| pair.bytes().all(|b| b.is_ascii_hexdigit()));
        if let Some(pair) = pair {
            out.push(u8::from_str_radix(pair, 16).expect("two hex digits"));
            rest = &rest[2..];
        } else {
            let escaped = rest.chars().next().ok_or("ends with a lone `\\`")?;
            let mut buf = [0; 4];
            out.extend_from_slice(escaped.encode_utf8(&mut buf).as_bytes());
            rest = &rest[escaped.len_utf8()..];
        }
        kept = out.len();
    }
    while out.len() > kept && out.last().is_some_and(u8::is_ascii_whitespace) {
        out.pop();
    }
    String::from_utf8(out).map_err(|_| "holds `\\` hex escapes that are not UTF-8")
}

/// A value written `#` and the hex of its BER encoding: one of the string types.
fn hex_value(hex: &str) -> Result<String, &'static str> {
    const NOT_HEX: &str = "after `#` is not the hex of an encoded string";
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NOT_HEX);
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("two hex digits"))
        .collect();
    match Any::from_der(&bytes) {
        Ok(([], any)) => directory_string(&any).ok_or(NOT_HEX),
        _ => Err(NOT_HEX),
    }
}

#[cfg(test)]
pub(crate) mod tests;
