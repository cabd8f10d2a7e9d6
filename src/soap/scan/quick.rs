//! The common envelope, read without quick-xml: what nearly every call of an event pusher or
//! a WSDL-driven client looks like, in one pass over the bytes.
//!
//! [`read`] takes a small part of XML: ASCII bytes; an optional `<?xml version="1.0"?>`
//! declaration (UTF-8 if it names an encoding); the Envelope with its namespace declarations;
//! an empty SOAP Header; the Body; the method; its first parameter, plain text or empty. Names
//! of letters, digits, `_`, `-`, `.` and one `:`; attribute values without `&`, `<` or line
//! breaks. Everything else (a comment, an entity, a Header holding copies of the token, a
//! Logon, a body cut before the token's end, a Latin-1 byte) and everything it would refuse
//! makes it answer `None`, and [`Scanner`](super::Scanner) reads the body with quick-xml from
//! its first byte, as it does every body it is not given whole. On what it takes, its answer
//! is the one quick-xml's reading gives: the property tests of `scan/tests` compare the two on
//! generated and mutated envelopes, and the fuzz target on whatever it makes.

use super::{Envelope, Method, Param, SESSION_NS, SOAP11_NS, SOAP12_NS, SoapVersion};
use crate::secret::Secret;

/// The declarations taken, byte for byte.
const DECLARATIONS: [&[u8]; 6] = [
    b"<?xml version=\"1.0\"?>",
    b"<?xml version='1.0'?>",
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    b"<?xml version=\"1.0\" encoding=\"utf-8\"?>",
    b"<?xml version='1.0' encoding='UTF-8'?>",
    b"<?xml version='1.0' encoding='utf-8'?>",
];

/// What a byte is in a name read here: letters, digits, `_`, `-`, `.`, and `:`.
const NAME: u8 = 1;
const COLON: u8 = 2;
const NAME_BYTES: [u8; 256] = {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' {
            table[byte] = NAME;
        }
        byte += 1;
    }
    table[b':' as usize] = COLON;
    table
};

/// XML white space.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// Namespace declarations on the path to the method, at most this many.
const MAX_BINDINGS: usize = 8;

/// A namespace declaration: its prefix (empty: the default namespace) and URI, as byte ranges.
#[derive(Clone, Copy, Default)]
struct Binding {
    prefix: (usize, usize),
    uri: (usize, usize),
}

/// A start tag read: where its name is, and whether it is empty (`<a/>`).
struct Tag {
    name: (usize, usize),
    empty: bool,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    bindings: [Binding; MAX_BINDINGS],
    bound: usize,
}

/// The envelope `data` starts with, when it is of the kind read here and whole up to the end
/// of the first parameter; see the module documentation.
pub(crate) fn read(data: &[u8]) -> Option<Envelope> {
    let mut reader = Reader {
        data,
        at: 0,
        bindings: [Binding::default(); MAX_BINDINGS],
        bound: 0,
    };
    reader.envelope()
}

impl<'a> Reader<'a> {
    fn envelope(&mut self) -> Option<Envelope> {
        if self.data.starts_with(b"<?") {
            let declaration = DECLARATIONS.iter().find(|d| self.data.starts_with(d))?;
            self.at = declaration.len();
        }
        self.space();
        let envelope = self.start_tag(true)?;
        let (version, soap) = match self.resolve(envelope.name)? {
            (uri, b"Envelope") if uri == SOAP11_NS.as_bytes() => (SoapVersion::V11, uri),
            (uri, b"Envelope") if uri == SOAP12_NS.as_bytes() => (SoapVersion::V12, uri),
            _ => return None,
        };
        if envelope.empty {
            return None;
        }
        // An empty Header, then the Body.
        self.space();
        let outside = self.bound;
        let mut body = self.start_tag(true)?;
        if self.resolve(body.name)? == (soap, &b"Header"[..]) {
            if !body.empty {
                self.space();
                self.end_tag(body.name)?;
            }
            // The Header's declarations end with it.
            self.bound = outside;
            self.space();
            body = self.start_tag(true)?;
        }
        if self.resolve(body.name)? != (soap, &b"Body"[..]) || body.empty {
            return None;
        }
        self.space();
        let method = self.start_tag(true)?;
        let (namespace, name) = self.resolve(method.name)?;
        if namespace == SESSION_NS.as_bytes() && name == b"Logon" {
            return None; // three parameters: quick-xml's reading
        }
        // Names and values read here are ASCII.
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).ok();
        let method_name = Method {
            name: text(name)?,
            namespace: match namespace {
                b"" => None,
                uri => Some(text(uri)?),
            },
        };
        let finish = |end, params, depth| Envelope {
            version,
            end,
            method: method_name,
            params,
            carriers: Vec::new(),
            depth,
            body_name: body.name.0..body.name.1,
        };
        if method.empty {
            return Some(finish(self.at, Vec::new(), 2));
        }
        self.space();
        if self.data[self.at..].starts_with(b"</") {
            self.end_tag(method.name)?;
            return Some(finish(self.at, Vec::new(), 2));
        }
        let param = self.start_tag(false)?;
        if param.empty {
            let content = self.at..self.at;
            let value = Secret::default();
            return Some(finish(self.at, vec![Param { content, value }], 3));
        }
        let start = self.at;
        let length = self.data[start..].iter().position(|&b| {
            !matches!(b, b' ' | b'\t' | b'\n' | b'!'..=b'~') || b"<&>".contains(&b)
        })?;
        let content = start..start + length;
        self.at = content.end;
        self.end_tag(param.name)?;
        let text = std::str::from_utf8(&self.data[content.clone()]).ok()?;
        let value = Secret::from(text.trim().to_owned());
        Some(finish(self.at, vec![Param { content, value }], 3))
    }

    /// Steps over XML white space.
    fn space(&mut self) {
        while self.data.get(self.at).is_some_and(|&b| is_space(b)) {
            self.at += 1;
        }
    }

    /// A name at the reading position: `None` unless one of the names read here.
    fn name(&mut self) -> Option<(usize, usize)> {
        let start = self.at;
        let rest = &self.data[start..];
        let mut colons = 0;
        let mut length = 0;
        for &byte in rest {
            match NAME_BYTES[usize::from(byte)] {
                NAME => {}
                COLON => colons += 1,
                _ => break,
            }
            length += 1;
        }
        let name = &rest[..length];
        let first = *name.first()?;
        if !(first.is_ascii_alphabetic() || first == b'_') || name[length - 1] == b':' || colons > 1
        {
            return None;
        }
        self.at += length;
        Some((start, start + length))
    }

    /// A start tag; its namespace declarations are kept when `on_path` (Envelope, Header,
    /// Body, the method).
    fn start_tag(&mut self, on_path: bool) -> Option<Tag> {
        if self.data.get(self.at) != Some(&b'<') {
            return None;
        }
        self.at += 1;
        let name = self.name()?;
        let mut seen: [(usize, usize); MAX_BINDINGS] = [(0, 0); MAX_BINDINGS];
        let mut attributes = 0;
        loop {
            let spaced = self.data.get(self.at).is_some_and(|&b| is_space(b));
            self.space();
            match self.data.get(self.at)? {
                b'>' => {
                    self.at += 1;
                    return Some(Tag { name, empty: false });
                }
                b'/' if self.data.get(self.at + 1) == Some(&b'>') => {
                    self.at += 2;
                    return Some(Tag { name, empty: true });
                }
                _ if !spaced => return None,
                _ => {}
            }
            let key = self.name()?;
            let key_bytes = &self.data[key.0..key.1];
            // Each name once (quick-xml checks), among the few read here.
            if attributes == MAX_BINDINGS
                || seen[..attributes]
                    .iter()
                    .any(|other| &self.data[other.0..other.1] == key_bytes)
            {
                return None;
            }
            seen[attributes] = key;
            attributes += 1;
            if self.data.get(self.at) != Some(&b'=') {
                return None;
            }
            let quote = *self.data.get(self.at + 1)?;
            if quote != b'"' && quote != b'\'' {
                return None;
            }
            let start = self.at + 2;
            let mut end = start;
            loop {
                match *self.data.get(end)? {
                    byte if byte == quote => break,
                    b'<' | b'&' => return None,
                    b' '..=b'~' => end += 1,
                    _ => return None,
                }
            }
            let value = (start, end);
            self.at = end + 1;
            let prefix = if key_bytes == b"xmlns" {
                (key.1, key.1)
            } else if let Some(prefix) = key_bytes.strip_prefix(b"xmlns:") {
                (key.1 - prefix.len(), key.1)
            } else {
                continue;
            };
            if on_path {
                if self.bound == MAX_BINDINGS {
                    return None;
                }
                self.bindings[self.bound] = Binding { prefix, uri: value };
                self.bound += 1;
            }
        }
    }

    /// The end tag of the element named `name`, nothing else.
    fn end_tag(&mut self, name: (usize, usize)) -> Option<()> {
        let tag = &self.data[name.0..name.1];
        let rest = self.data[self.at..].strip_prefix(b"</")?;
        let rest = rest.strip_prefix(tag)?;
        if rest.first() != Some(&b'>') {
            return None;
        }
        self.at += 2 + tag.len() + 1;
        Some(())
    }

    /// A name's namespace URI (empty: none) and local part; `None` when its prefix is bound to
    /// nothing.
    fn resolve(&self, name: (usize, usize)) -> Option<(&'a [u8], &'a [u8])> {
        let data: &'a [u8] = self.data;
        let qname = &data[name.0..name.1];
        let (prefix, local): (&[u8], &[u8]) = match qname.iter().position(|&b| b == b':') {
            Some(colon) => (&qname[..colon], &qname[colon + 1..]),
            None => (b"", qname),
        };
        let binding = self.bindings[..self.bound]
            .iter()
            .rev()
            .find(|b| &data[b.prefix.0..b.prefix.1] == prefix);
        let uri = match binding {
            Some(binding) => &data[binding.uri.0..binding.uri.1],
            // A prefix bound to nothing is quick-xml's reading's to judge.
            None if !prefix.is_empty() => return None,
            None => b"",
        };
        if uri.is_empty() && !prefix.is_empty() {
            return None;
        }
        Some((uri, local))
    }
}
