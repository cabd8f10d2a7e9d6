//! Finds Campaign's authentication string in the start of a SOAP body.
//!
//! Campaign reads the first child element of the method element (the first element inside
//! `SOAP-ENV:Body`) as the session token, whatever its name or prefix. Clients also copy the
//! token into `<Cookie>__sessiontoken=…</Cookie>` and `<X-Security-Token>` elements of
//! `SOAP-ENV:Header` (acc-js-sdk does). The [`Scanner`] reads the body with quick-xml as it
//! arrives, chunk after chunk, and stops at the end of that first parameter: nothing after it is
//! ever parsed.
//!
//! `xtk:session#Logon` carries its credential in its next parameters (login, password): for it,
//! the scanner reads the first three.
//!
//! The scanner resumes where it stopped: events are committed one by one, and an event that the
//! data so far cuts in two (`<urn:sessi`) is read again from its start once more data came. So
//! a token split across chunk boundaries at any offset is found, and each byte is parsed about
//! once.

use std::ops::Range;

use quick_xml::Reader;
use quick_xml::errors::{Error as XmlError, IllFormedError};
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::PrefixDeclaration;

use super::Charset;
use crate::secret::Secret;

const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const SESSION_NS: &str = "urn:xtk:session";

/// Why a body prefix is refused (HTTP 400). The texts never quote the body: a credential could
/// sit in the part that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("body is not well-formed XML ({0})")]
    NotXml(&'static str),
    #[error("body is not UTF-8")]
    NotUtf8,
    /// An encoding other than UTF-8, US-ASCII, ISO-8859-1, ISO-8859-15 and windows-1252,
    /// declared or detected (UTF-16, UTF-7, EBCDIC…), see `soap/charset.rs`.
    #[error("the declared encoding is not supported")]
    Encoding,
    /// The XML declaration and the `Content-Type` charset name different encodings, and a
    /// credential holds a byte over 0x7F: which password was meant depends on which of the two
    /// is believed.
    #[error(
        "the XML declaration and the Content-Type charset disagree, and the credential is not ASCII"
    )]
    EncodingMismatch,
    #[error("DOCTYPE and entity declarations are refused")]
    Doctype,
    #[error("root element is not a SOAP 1.1 or 1.2 Envelope")]
    NotSoap,
    #[error("envelope has no SOAP Body")]
    NoBody,
    #[error("SOAP Body holds no method element")]
    NoMethod,
    #[error("body ended inside the envelope")]
    Truncated,
    /// Readers could disagree on where the credential is.
    #[error("the envelope is ambiguous about where the credential is: {0}")]
    Ambiguous(&'static str),
    /// An element after the SOAP Body, or after the Envelope (`soap/tail.rs`).
    #[error("an element after the SOAP Body")]
    AfterBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    V11,
    V12,
}

/// What the scanner found: everything before [`Envelope::end`] is the prefix.
#[derive(Debug)]
pub struct Envelope {
    pub version: SoapVersion,
    /// Length of the prefix: just past the last parameter read (or past the method element
    /// when it has no parameter).
    pub end: usize,
    pub method: Method,
    /// The leading text parameters of the method: the first (the authentication string), and
    /// for `xtk:session#Logon` the login and password too.
    pub params: Vec<Param>,
    /// Copies of the token in `SOAP-ENV:Header`.
    pub carriers: Vec<Carrier>,
    /// Elements open at `end` (Envelope, Body, the method…): where the [`Tail`](super::Tail)
    /// watch of the rest starts.
    pub depth: usize,
    /// Where the SOAP Body's qualified name (`soapenv:Body`) is in the body: the watch of the
    /// rest looks for its end tag.
    pub body_name: Range<usize>,
}

impl Envelope {
    /// The first child element of the method element: Campaign's authentication string.
    pub fn credential(&self) -> Option<&Param> {
        self.params.first()
    }

    /// `xtk:session#Logon`.
    pub fn is_logon(&self) -> bool {
        self.method.is_session("Logon")
    }

    /// `xtk:session#Logoff`.
    pub fn is_logoff(&self) -> bool {
        self.method.is_session("Logoff")
    }
}

/// The method element: `<urn:PushEvent xmlns:urn="urn:nms:rtEvent">`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    pub name: String,
    /// Namespace URI the element's prefix resolves to.
    pub namespace: Option<String>,
}

impl Method {
    fn is_session(&self, name: &str) -> bool {
        self.name == name && self.namespace.as_deref() == Some(SESSION_NS)
    }
}

/// An element whose text is a credential.
#[derive(Debug)]
pub struct Param {
    /// Byte range of the element's content, between its start and end tags.
    pub content: Range<usize>,
    /// The content unescaped (entities, character references, CDATA) and trimmed.
    pub value: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierKind {
    /// `<Cookie>__sessiontoken=…</Cookie>`
    Cookie,
    /// `<X-Security-Token>…</X-Security-Token>`
    SecurityToken,
    /// `<X-Session-Token>…</X-Session-Token>`
    SessionToken,
}

#[derive(Debug)]
pub struct Carrier {
    pub kind: CarrierKind,
    pub param: Param,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the root element.
    Prolog,
    /// Inside `Envelope`, outside `Header` and `Body`.
    Envelope,
    Header,
    /// Inside `Body`, before the method element.
    Body,
    /// Inside the method element, before its first child.
    Method,
    /// Inside the first parameter.
    Param,
}

/// A namespace declaration on the path Envelope > Body > method.
struct Binding {
    depth: usize,
    /// `None`: the default namespace.
    prefix: Option<String>,
    uri: String,
}

/// Reads a body prefix incrementally; see the module documentation.
pub struct Scanner {
    /// Everything before this offset has been read as complete events.
    pos: usize,
    stage: Stage,
    /// Byte ranges of the names of the open elements, for matching end tags.
    open: Vec<Range<usize>>,
    bindings: Vec<Binding>,
    version: Option<SoapVersion>,
    method: Option<Method>,
    /// Header carrier being read: its kind and where its content starts.
    carrier: Option<(CarrierKind, usize)>,
    carriers: Vec<Carrier>,
    /// Parameters read so far, and how many to read.
    params: Vec<Param>,
    wanted: usize,
    /// Where the content of the parameter being read starts.
    param_start: usize,
    /// The construct the data so far ends inside, if any: it is parsed again only once its
    /// end may have come.
    waiting: Option<Waiting>,
    /// How a credential's text is decoded: the declared encoding, else the `Content-Type`
    /// charset, else UTF-8.
    charset: Charset,
    /// The `Content-Type` charset.
    content_type: Option<Charset>,
    /// The XML declaration names another charset than `content_type`: the declaration is
    /// read, and a credential must be ASCII, which both read alike.
    disagree: bool,
    /// In a single-byte charset, the ASCII copy of the data so far (see [`Scanner::feed`]).
    masked: Vec<u8>,
    /// The first data is still to be offered to [`quick::read`].
    quick: bool,
}

/// An unfinished construct at `start`, and how far its end has been looked for: the search goes
/// on where it stopped, so that a construct sent a byte at a time costs each byte once.
struct Waiting {
    start: usize,
    end: End,
    /// Looked at up to here.
    searched: usize,
}

/// What ends a construct.
enum End {
    /// These bytes: `-->`, `]]>`, `?>`, `;`, `<`.
    Bytes(&'static [u8]),
    /// A `>` outside quoted attribute values; `quote` is the quote open at `searched`.
    Tag { quote: Option<u8> },
    /// Too little of it to tell: any new byte.
    Any,
}

impl Waiting {
    /// The construct at `data[start..]`, unfinished.
    fn new(data: &[u8], start: usize) -> Waiting {
        let rest = &data[start..];
        let (end, skip) = if rest.starts_with(b"<!--") {
            (End::Bytes(b"-->"), 4)
        } else if rest.starts_with(b"<![CDATA[") {
            (End::Bytes(b"]]>"), 9)
        } else if rest.starts_with(b"<?") {
            (End::Bytes(b"?>"), 2)
        } else if rest.starts_with(b"<!") || rest.len() < 2 {
            (End::Any, rest.len())
        } else if rest.starts_with(b"<") {
            (End::Tag { quote: None }, 1)
        } else if rest.starts_with(b"&") {
            (End::Bytes(b";"), 1)
        } else {
            (End::Any, rest.len())
        };
        Waiting {
            start,
            end,
            searched: start + skip,
        }
    }

    /// Looks at what came since the last call: true when the end may be there.
    fn may_end_in(&mut self, data: &[u8]) -> bool {
        let from = self.searched.min(data.len());
        self.searched = data.len();
        match &mut self.end {
            End::Any => from < data.len(),
            End::Bytes(end) => {
                // An end cut in two by the last call: look again at its first bytes.
                let from = from.saturating_sub(end.len() - 1).max(self.start);
                data[from..].windows(end.len()).any(|w| w == *end)
            }
            End::Tag { quote } => {
                for &byte in &data[from..] {
                    match (*quote, byte) {
                        (None, b'>') => return true,
                        (None, b'"' | b'\'') => *quote = Some(byte),
                        (Some(open), _) if byte == open => *quote = None,
                        _ => {}
                    }
                }
                false
            }
        }
    }
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new()
    }
}

impl Scanner {
    /// A scanner of a body whose `Content-Type` names no charset.
    pub fn new() -> Scanner {
        Scanner::with_charset(None)
    }

    /// A scanner of a body whose `Content-Type` names `content_type` as its charset.
    pub fn with_charset(content_type: Option<Charset>) -> Scanner {
        Scanner {
            charset: content_type.unwrap_or_default(),
            content_type,
            disagree: false,
            masked: Vec::new(),
            pos: 0,
            stage: Stage::Prolog,
            open: Vec::new(),
            bindings: Vec::new(),
            version: None,
            method: None,
            carrier: None,
            carriers: Vec::new(),
            params: Vec::new(),
            wanted: 1,
            param_start: 0,
            waiting: None,
            quick: true,
        }
    }

    /// A scanner that reads every body with quick-xml (the tests compare it with [`quick`]'s
    /// reading).
    pub fn without_shortcut(content_type: Option<Charset>) -> Scanner {
        Scanner {
            quick: false,
            ..Scanner::with_charset(content_type)
        }
    }

    /// Reads on from where the last call stopped. `data` is the whole prefix received so far
    /// (each call extends the previous one); `at_eof` says no more will come.
    ///
    /// Returns `Ok(None)` when more data is needed, the envelope when the first parameter is
    /// complete.
    ///
    /// quick-xml reads UTF-8 only. A body in a single-byte charset is read through a copy of
    /// the same length whose bytes over 0x7F are an ASCII letter: markup is ASCII in all of
    /// them, so the copy has the same structure at the same offsets, and a credential's text
    /// is decoded from the body itself.
    pub fn feed(&mut self, data: &[u8], at_eof: bool) -> Result<Option<Envelope>, ScanError> {
        if std::mem::take(&mut self.quick)
            && self.charset.reads_as_utf8()
            && let Some(envelope) = quick::read(data)
        {
            return Ok(Some(envelope));
        }
        if self.charset.reads_as_utf8() {
            return self.read(data, data, at_eof);
        }
        let mut masked = std::mem::take(&mut self.masked);
        let from = masked.len();
        masked.extend(
            data[from..]
                .iter()
                .map(|&b| if b < 0x80 { b } else { b'x' }),
        );
        let found = self.read(&masked, data, at_eof);
        self.masked = masked;
        found
    }

    /// [`Scanner::feed`] on `data`, UTF-8 (the body, or its ASCII copy); `original` is the
    /// body, for the text of credentials.
    fn read(
        &mut self,
        data: &[u8],
        original: &[u8],
        at_eof: bool,
    ) -> Result<Option<Envelope>, ScanError> {
        if self.pos == 0 {
            match not_ascii_based(data, at_eof) {
                Some(true) => return Err(ScanError::Encoding),
                Some(false) => {}
                None => return Ok(None),
            }
        }
        // The data ended inside a construct last time: parse it again only once its end may
        // have come (or the body has ended), not at every chunk.
        if let Some(waiting) = &mut self.waiting
            && !at_eof
            && !waiting.may_end_in(data)
        {
            return Ok(None);
        }
        loop {
            // quick-xml drops a leading UTF-8 BOM without counting it in its positions, so we
            // step over them ourselves (at the start of a document, or U+FEFF in text), every
            // one: a second would shift every position after it.
            while data[self.pos..].starts_with(UTF8_BOM) {
                self.pos += UTF8_BOM.len();
            }
            let base = self.pos;
            let mut reader = Reader::from_reader(&data[base..]);
            let config = reader.config_mut();
            // End tags are matched here (the reader forgets its stack when we resume), and
            // nothing is trimmed: positions must be exact.
            config.check_end_names = false;
            config.allow_unmatched_ends = true;
            config.trim_text(false);
            loop {
                let before = base + reader.buffer_position() as usize;
                // Refused as soon as it starts, whole or in pieces (an internal subset can be
                // long, and is never read).
                if data[before..].starts_with(b"<!DOCTYPE") {
                    return Err(ScanError::Doctype);
                }
                let event = match reader.read_event() {
                    Ok(event) => event,
                    Err(e) if !at_eof && is_incomplete(&e) => {
                        self.wait(data, before);
                        return Ok(None);
                    }
                    Err(e) => return Err(describe(&e)),
                };
                let after = base + reader.buffer_position() as usize;
                let done = match event {
                    Event::Eof if at_eof => return Err(ScanError::Truncated),
                    Event::Eof => return Ok(None),
                    Event::DocType(_) => return Err(ScanError::Doctype),
                    Event::Start(e) => self.open_element(&e, before, after, false)?,
                    Event::Empty(e) => self.open_element(&e, before, after, true)?,
                    Event::End(e) => {
                        self.close_element(data, original, e.name().0, before, after)?
                    }
                    // XML allows nothing but markup and white space around the root
                    // element: `hello` is not a document whose end is missing.
                    Event::Text(text)
                        if self.stage == Stage::Prolog
                            && text
                                .as_ref()
                                .chars()
                                .any(|c| !c.is_ascii_whitespace() && c != '\u{feff}') =>
                    {
                        // Text that runs to the end of the data so far is judged once it is
                        // whole: its next bytes may not be UTF-8, and that error comes first.
                        if !at_eof && after == data.len() {
                            self.waiting = Some(Waiting {
                                start: before,
                                end: End::Bytes(b"<"),
                                searched: after,
                            });
                            return Ok(None);
                        }
                        return Err(ScanError::NotXml("text before the root element"));
                    }
                    Event::CData(_) | Event::GeneralRef(_) if self.stage == Stage::Prolog => {
                        return Err(ScanError::NotXml("text before the root element"));
                    }
                    Event::Decl(declaration) => {
                        if let Some(declared) = declared_charset(&declaration)? {
                            // Campaign's XML parser reads a body by its declaration, whatever
                            // the Content-Type says (both are among the five read here, or
                            // one was refused already).
                            self.disagree = self.content_type.is_some_and(|c| c != declared);
                            if declared != self.charset {
                                // Read on in the declared charset.
                                self.charset = declared;
                                self.pos = after;
                                return self.feed(original, at_eof);
                            }
                        }
                        None
                    }
                    Event::Text(_)
                    | Event::CData(_)
                    | Event::GeneralRef(_)
                    | Event::Comment(_)
                    | Event::PI(_) => None,
                };
                self.pos = after;
                self.waiting = None;
                if let Some(envelope) = done {
                    return Ok(Some(envelope));
                }
                if data[self.pos..].starts_with(UTF8_BOM) {
                    break; // restart the reader past it
                }
            }
        }
    }

    /// The data so far ends inside the construct at `start`. Still the same one as last time:
    /// the search for its end goes on from where it stopped.
    fn wait(&mut self, data: &[u8], start: usize) {
        match &self.waiting {
            // Known, and still unfinished: go on where the search stopped.
            Some(waiting) if waiting.start == start && !matches!(waiting.end, End::Any) => {}
            // New, or too short to tell what it was: look at it (again) now.
            _ => self.waiting = Some(Waiting::new(data, start)),
        }
    }

    fn open_element(
        &mut self,
        e: &BytesStart<'_>,
        before: usize,
        after: usize,
        empty: bool,
    ) -> Result<Option<Envelope>, ScanError> {
        let depth = self.open.len();
        let name = e.name().0;
        // Namespace declarations matter on the path Envelope > Header or Body > method only.
        let on_path = match self.stage {
            Stage::Prolog => depth == 0,
            Stage::Envelope => depth == 1,
            Stage::Body => depth == 2,
            _ => false,
        };
        self.attributes(e, depth, on_path)?;
        let found = self.enter(e, depth, after, empty)?;
        if empty {
            // No end tag will come to take the element's declarations out of scope.
            self.bindings.retain(|b| b.depth < depth);
        } else {
            // `before` is the `<`; the name follows it directly (XML allows no space there).
            self.open.push(before + 1..before + 1 + name.len());
        }
        Ok(found)
    }

    /// Moves through the stages as elements open.
    fn enter(
        &mut self,
        e: &BytesStart<'_>,
        depth: usize,
        after: usize,
        empty: bool,
    ) -> Result<Option<Envelope>, ScanError> {
        let (prefix, local) = split_qname(e.name().0);
        match (self.stage, depth) {
            (Stage::Prolog, _) => {
                self.version = match self.resolve(prefix) {
                    Some(SOAP11_NS) if local == "Envelope" => Some(SoapVersion::V11),
                    Some(SOAP12_NS) if local == "Envelope" => Some(SoapVersion::V12),
                    _ => return Err(ScanError::NotSoap),
                };
                if empty {
                    return Err(ScanError::NoBody);
                }
                self.stage = Stage::Envelope;
            }
            (Stage::Envelope, 1) => {
                let soap = self.resolve(prefix) == Some(self.envelope_ns());
                match local {
                    "Header" if soap && !empty => self.stage = Stage::Header,
                    "Body" if soap && empty => return Err(ScanError::NoMethod),
                    "Body" if soap => self.stage = Stage::Body,
                    // A reader that ignores namespaces takes this one for the SOAP Body.
                    "Body" => {
                        return Err(ScanError::Ambiguous(
                            "a Body outside the SOAP envelope namespace",
                        ));
                    }
                    _ => {}
                }
            }
            (Stage::Header, 2) if !empty => {
                self.carrier = match local {
                    "Cookie" => Some((CarrierKind::Cookie, after)),
                    "X-Security-Token" => Some((CarrierKind::SecurityToken, after)),
                    "X-Session-Token" => Some((CarrierKind::SessionToken, after)),
                    _ => None,
                };
            }
            (Stage::Body, 2) => {
                let method = Method {
                    name: local.to_owned(),
                    namespace: self.resolve(prefix).map(str::to_owned),
                };
                // Logon: session token, login, password.
                self.wanted = if method.is_session("Logon") { 3 } else { 1 };
                self.method = Some(method);
                if empty {
                    return Ok(Some(self.finish(after)));
                }
                self.stage = Stage::Method;
            }
            (Stage::Method, 3) => {
                if empty {
                    self.params.push(Param {
                        content: after..after,
                        value: Secret::default(),
                    });
                    if self.params.len() == self.wanted {
                        return Ok(Some(self.finish(after)));
                    }
                } else {
                    self.param_start = after;
                    self.stage = Stage::Param;
                }
            }
            // The first parameter is the authentication string: text, never markup (a reader
            // could take the text before the markup, or after it, or all of it).
            (Stage::Param, _) if self.params.is_empty() => {
                return Err(ScanError::Ambiguous("markup inside the first parameter"));
            }
            // A later parameter holding elements (`<domEvent>`) is no credential: the
            // parameters end before it. Nothing past here needs reading.
            (Stage::Param, _) => return Ok(Some(self.finish(self.param_start))),
            // A SOAP Header copy of the credential is text, never markup: a reader could take
            // the text before the markup, after it, or none (one credential per request).
            (Stage::Header, _) if depth > 2 && self.carrier.is_some() => {
                return Err(ScanError::Ambiguous(MARKUP_IN_HEADER_COPY));
            }
            // Anything else (extensions under Envelope, Header blocks and their children) is
            // left as it is.
            _ => {}
        }
        Ok(None)
    }

    fn close_element(
        &mut self,
        data: &[u8],
        original: &[u8],
        name: &str,
        before: usize,
        after: usize,
    ) -> Result<Option<Envelope>, ScanError> {
        let Some(open) = self.open.pop() else {
            return Err(ScanError::NotXml("end tag without a start tag"));
        };
        if &data[open] != name.as_bytes() {
            return Err(ScanError::NotXml("end tag does not match its start tag"));
        }
        let depth = self.open.len();
        self.bindings.retain(|b| b.depth < depth);
        match (self.stage, depth) {
            (Stage::Param, 3) => {
                let content = self.param_start..before;
                self.check_agreement(original, &content)?;
                self.params.push(param(
                    data,
                    original,
                    content,
                    self.charset,
                    Text::AsXmlReadsIt,
                )?);
                if self.params.len() == self.wanted {
                    return Ok(Some(self.finish(after)));
                }
                self.stage = Stage::Method;
            }
            (Stage::Method, 2) => return Ok(Some(self.finish(after))),
            (Stage::Body, 1) => return Err(ScanError::NoMethod),
            (Stage::Header, 2) => {
                if let Some((kind, start)) = self.carrier.take() {
                    self.check_agreement(original, &(start..before))?;
                    let param = param(data, original, start..before, self.charset, Text::Only)?;
                    self.carriers.push(Carrier { kind, param });
                }
            }
            (Stage::Header, 1) => self.stage = Stage::Envelope,
            (Stage::Envelope, 0) => return Err(ScanError::NoBody),
            _ => {}
        }
        Ok(None)
    }

    /// With a declaration and a Content-Type that disagree, a credential's bytes (`range` of
    /// the body) must be ASCII, read alike by every charset taken here.
    fn check_agreement(&self, original: &[u8], range: &Range<usize>) -> Result<(), ScanError> {
        if self.disagree && !original[range.clone()].is_ascii() {
            return Err(ScanError::EncodingMismatch);
        }
        Ok(())
    }

    fn finish(&mut self, end: usize) -> Envelope {
        Envelope {
            version: self.version.unwrap_or(SoapVersion::V11),
            end,
            method: self.method.take().unwrap_or_else(|| Method {
                name: String::new(),
                namespace: None,
            }),
            params: std::mem::take(&mut self.params),
            carriers: std::mem::take(&mut self.carriers),
            depth: self.open.len(),
            // The stages past `Body` are reached only with the Envelope and the Body open.
            body_name: self.open.get(1).cloned().unwrap_or_default(),
        }
    }

    /// Checks an element's attributes (the prefix must be well-formed), and records its
    /// `xmlns` declarations when it is on the path to the method.
    fn attributes(
        &mut self,
        e: &BytesStart<'_>,
        depth: usize,
        on_path: bool,
    ) -> Result<(), ScanError> {
        for attribute in e.attributes() {
            let attribute = attribute.map_err(|_| ScanError::NotXml("malformed attribute"))?;
            if !on_path {
                continue;
            }
            let prefix = match attribute.key.as_namespace_binding() {
                Some(PrefixDeclaration::Default) => None,
                Some(PrefixDeclaration::Named(prefix)) => Some(prefix.to_owned()),
                None => continue,
            };
            let uri = attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|_| ScanError::NotXml("malformed namespace declaration"))?;
            self.bindings.push(Binding {
                depth,
                prefix,
                uri: uri.into_owned(),
            });
        }
        Ok(())
    }

    /// The namespace URI a prefix (`None`: no prefix) is bound to by the declarations in scope.
    fn resolve(&self, prefix: Option<&str>) -> Option<&str> {
        self.bindings
            .iter()
            .rev()
            .find(|b| b.prefix.as_deref() == prefix)
            .map(|b| b.uri.as_str())
            .filter(|uri| !uri.is_empty())
    }

    fn envelope_ns(&self) -> &'static str {
        match self.version {
            Some(SoapVersion::V12) => SOAP12_NS,
            _ => SOAP11_NS,
        }
    }
}

/// Refuses a declared encoding whose bytes are not read as ASCII is: the body would be scanned
/// as UTF-8 and the credential found in the wrong place, or not at all. UTF-8 and the 8-bit
/// encodings that share ASCII's bytes (ISO-8859-*, windows-125*) pass as they always have.
fn declared_charset(
    declaration: &quick_xml::events::BytesDecl<'_>,
) -> Result<Option<Charset>, ScanError> {
    let Some(encoding) = declaration.encoding() else {
        return Ok(None);
    };
    let encoding = encoding.map_err(|_| ScanError::NotXml("bad XML declaration"))?;
    Charset::from_label(&encoding).map(Some)
}

/// How a body in an encoding that does not write `<` as ASCII does begins: UTF-16 and UTF-32
/// (with a byte-order mark or without), EBCDIC (`<?xm`).
const NOT_ASCII_BASED: [&[u8]; 6] = [
    b"\xFE\xFF",
    b"\xFF\xFE",
    b"\x00\x00\xFE\xFF",
    b"\x00<",
    b"<\x00",
    b"\x4C\x6F\xA7\x94",
];

/// Whether `data` starts as a body in such an encoding does: `None` while too short to tell.
fn not_ascii_based(data: &[u8], at_eof: bool) -> Option<bool> {
    if NOT_ASCII_BASED.iter().any(|start| data.starts_with(start)) {
        return Some(true);
    }
    let undecided = NOT_ASCII_BASED
        .iter()
        .any(|start| data.len() < start.len() && start.starts_with(data));
    (!undecided || at_eof).then_some(false)
}

/// A qualified name's prefix and local name. Names are short: a plain loop over the bytes
/// beats `str::split_once`'s general search. `:` is ASCII, so never part of a longer character.
fn split_qname(qname: &str) -> (Option<&str>, &str) {
    match qname.bytes().position(|b| b == b':') {
        Some(at) => (Some(&qname[..at]), &qname[at + 1..]),
        None => (None, qname),
    }
}

/// What an element holding a credential may hold besides text and references.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Text {
    /// The first parameter and Logon's: CDATA sections are read as their text, comments and
    /// processing instructions skipped, as an XML reader reads them (the first stage took them
    /// so, and callers may write a password as CDATA).
    AsXmlReadsIt,
    /// A SOAP Header copy: clients write plain text there, so a comment, a CDATA section or a
    /// processing instruction can only be there to make two readers disagree.
    Only,
}

const MARKUP_IN_HEADER_COPY: &str = "markup inside a SOAP Header copy of the credential";

/// Unescapes an element's content: text, entity and character references, and (as `text`
/// allows) CDATA; comments and processing instructions are skipped or refused. The result is
/// trimmed, as Campaign trims it.
/// The parameter at `content`, read in `data` (UTF-8), its text decoded from the same bytes of
/// `original` in `charset`.
fn param(
    data: &[u8],
    original: &[u8],
    content: Range<usize>,
    charset: Charset,
    text: Text,
) -> Result<Param, ScanError> {
    let mut reader = Reader::from_reader(&data[content.clone()]);
    reader.config_mut().trim_text(false);
    let mut value = String::new();
    loop {
        let start = content.start + reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| describe(&e))?;
        let source = &original[start..content.start + reader.buffer_position() as usize];
        if text == Text::Only && matches!(event, Event::CData(_) | Event::Comment(_) | Event::PI(_))
        {
            return Err(ScanError::Ambiguous(MARKUP_IN_HEADER_COPY));
        }
        match event {
            // Line ends normalized, as an XML reader does (XML 1.0 §2.11).
            Event::Text(_) => value.push_str(
                &charset
                    .decode(source)?
                    .replace("\r\n", "\n")
                    .replace('\r', "\n"),
            ),
            // `<![CDATA[` … `]]>`
            Event::CData(_) => value.push_str(&charset.decode(&source[9..source.len() - 3])?),
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => quick_xml::escape::resolve_predefined_entity(&reference)
                        .ok_or(ScanError::NotXml("unknown entity reference"))?
                        .to_owned(),
                    Err(_) => return Err(ScanError::NotXml("invalid character reference")),
                };
                value.push_str(&resolved);
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
            // Elements end a parameter's scan before its content is read.
            Event::Start(_) | Event::Empty(_) | Event::End(_) => {
                return Err(ScanError::NotXml("element inside a credential"));
            }
            Event::Decl(_) => return Err(ScanError::NotXml("misplaced XML declaration")),
            Event::DocType(_) => return Err(ScanError::Doctype),
        }
    }
    let trimmed = value.trim();
    let value = if trimmed.len() == value.len() {
        value
    } else {
        trimmed.to_owned()
    };
    Ok(Param {
        content,
        value: Secret::from(value),
    })
}

/// True when the error only says the data so far ends inside a construct: more data may
/// complete it.
fn is_incomplete(e: &XmlError) -> bool {
    match e {
        XmlError::Syntax(_) => true,
        XmlError::IllFormed(IllFormedError::UnclosedReference) => true,
        XmlError::Encoding(quick_xml::encoding::EncodingError::Utf8(e)) => e.error_len().is_none(),
        _ => false,
    }
}

/// A fixed description of a parse error: quick-xml's own messages can quote the input.
fn describe(e: &XmlError) -> ScanError {
    ScanError::NotXml(match e {
        XmlError::Syntax(_) => "unclosed markup",
        XmlError::IllFormed(IllFormedError::UnclosedReference) => "unescaped `&`",
        XmlError::IllFormed(
            IllFormedError::MissingDeclVersion(_) | IllFormedError::UnknownVersion,
        ) => "bad XML declaration",
        XmlError::IllFormed(_) => "ill-formed document",
        XmlError::InvalidAttr(_) => "malformed attribute",
        XmlError::Encoding(_) => return ScanError::NotUtf8,
        XmlError::Escape(_) => "bad entity or character reference",
        XmlError::Namespace(_) => "bad namespace",
        XmlError::Io(_) => "read error",
    })
}

pub(super) mod quick;

#[cfg(test)]
mod tests;
