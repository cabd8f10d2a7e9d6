//! Watches the rest of an envelope, past the prefix the [`Scanner`](super::Scanner) read, as
//! it streams to Campaign: once the SOAP Body has ended, no element may start.
//!
//! A reader that takes the SOAP Header, or a method, wherever it is among the envelope's
//! children could otherwise find a second credential after the Body (`</Body><Header>…`),
//! where the prefix scan never looks. SOAP 1.2 allows nothing there; SOAP 1.1 allows
//! namespace-qualified extensions, which no Campaign client sends. So the rule is strict: an
//! element after the Body, or after the Envelope, ends the request.
//!
//! The watch is not a parser: it counts open elements, and steps over comments, CDATA
//! sections, processing instructions and quoted attribute values (where a `<` or `>` is not
//! markup), whatever the chunking.
//!
//! Counting every element costs a few nanoseconds a byte, more than the whole of the rest of
//! the proxy's work on a large batch of events. So while the SOAP Body is open, the watch reads
//! only the markup that can end it: comments, CDATA sections and processing instructions (a
//! `</s:Body>` inside them is text), and start and end tags of the Body's own qualified name
//! (an element of that name nested in the Body). Everything else is skipped with `memchr`'s
//! searches. In a well-formed document `<` is markup wherever it is outside those three (never
//! in an attribute value, never in text), and the first `</s:Body>` that closes no nested
//! `<s:Body>` is the Body's end: the same place the count of every element finds. From there
//! on, every byte is read, counting elements. Where the two could differ, the document is not
//! well-formed XML (a mismatched end tag, a `<` in an attribute value), and Campaign, an XML
//! reader, refuses it whole; an early `</s:Body>` only makes the watch stricter.

use memchr::{memchr3, memrchr};

use super::{Envelope, ScanError};

/// Where the bytes so far have left the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Character data.
    Text,
    /// Just after a `<`.
    Open,
    /// Inside a start tag (`end: false`) or an end tag; `quote` is the quote of an attribute
    /// value being read; `slash` is true when the last byte was a `/` outside quotes.
    Tag {
        end: bool,
        quote: Option<u8>,
        slash: bool,
    },
    /// After `<!`, `matched` bytes of `--` or `[CDATA[` read.
    Bang { cdata: Option<bool>, matched: u8 },
    /// Inside a comment; `dashes` ending the data so far (2 at most: all `-->` needs).
    Comment { dashes: u8 },
    /// Inside a CDATA section; `brackets` ending the data so far (2 at most).
    Cdata { brackets: u8 },
    /// Inside a processing instruction; `question` is true after a `?`.
    Pi { question: bool },
}

const CDATA: &[u8] = b"[CDATA[";

/// Where the first byte of `rest` that `matches` is. Runs are short in an envelope (a tag, an
/// attribute value): the first bytes are looked at in a plain loop, which the compiler keeps
/// inline, and only a longer run (a text of some size) is handed to `search`, `memchr`'s, whose
/// call costs more than such a run.
#[inline(always)]
fn find(
    rest: &[u8],
    matches: impl Fn(u8) -> bool,
    search: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    const SHORT: usize = 32;
    let short = rest.len().min(SHORT);
    match rest[..short].iter().position(|&b| matches(b)) {
        Some(at) => Some(at),
        None if short < rest.len() => search(&rest[short..]).map(|at| at + short),
        None => None,
    }
}

/// The watch of an envelope's remaining bytes.
#[derive(Debug)]
pub struct Tail {
    /// Elements open: the Envelope is 1, the Body 2. While [`Tail::body`] is set, only the
    /// Body and the elements of its name nested in it are counted.
    depth: usize,
    state: State,
    /// While the SOAP Body is open: its name, searched for (see the module documentation).
    body: Option<BodyEnd>,
}

/// The longest Body name searched for: a longer one (legal, never seen) is watched by counting
/// every element.
const MAX_BODY_NAME: usize = 64;

/// The search for the end of the SOAP Body.
#[derive(Debug)]
struct BodyEnd {
    name: [u8; MAX_BODY_NAME],
    name_len: usize,
    /// Markup the last chunk ended inside of that may be one the watch reads (`</s:Bo`): at most
    /// `</`, the name and one byte more.
    cut: [u8; MAX_BODY_NAME + 3],
    cut_len: usize,
    /// The byte of the name searched for, and where it is in the name.
    rare: u8,
    rare_at: usize,
}

/// What the markup at a `<` is, as far as the Body's watch goes.
#[derive(Debug, PartialEq, Eq)]
enum Markup {
    /// A comment, CDATA section or processing instruction, or a tag of the Body's name: read.
    Read,
    /// Another tag: skipped.
    Skip,
    /// Too little of it to tell.
    Unknown,
}

impl BodyEnd {
    fn name(&self) -> &[u8] {
        &self.name[..self.name_len]
    }

    /// The markup `data` starts with (at a `<`).
    fn markup(&self, data: &[u8]) -> Markup {
        let name = self.name();
        let (rest, end_tag) = match data {
            [b'<'] => return Markup::Unknown,
            [b'<', b'!' | b'?', ..] => return Markup::Read,
            [b'<', b'/', rest @ ..] => (rest, true),
            [b'<', rest @ ..] => (rest, false),
            _ => return Markup::Skip,
        };
        if rest.len() <= name.len() {
            return if name.starts_with(rest) {
                Markup::Unknown
            } else {
                Markup::Skip
            };
        }
        match rest[name.len()] {
            _ if &rest[..name.len()] != name => Markup::Skip,
            b'>' | b' ' | b'\t' | b'\r' | b'\n' => Markup::Read,
            b'/' if !end_tag => Markup::Read,
            _ => Markup::Skip,
        }
    }

    /// The next `<` in `data[from..]` that starts markup the watch reads. When there is none,
    /// markup cut by the end of `data` that may be one is kept for the next chunk.
    ///
    /// One search over the chunk, for three bytes: the `!` and `?` that follow the `<` of a
    /// comment, a CDATA section or a processing instruction, and one byte of the Body's name
    /// (its `:`, or its last byte), every hit of which is looked at.
    fn next(&mut self, data: &[u8], mut from: usize) -> Option<usize> {
        while let Some(at) = memchr3(b'!', b'?', self.rare, &data[from..]).map(|at| at + from) {
            let lt = match data[at] {
                b'!' | b'?' => at.checked_sub(1),
                // Where the name would start, then its `<` or `</`.
                _ => at.checked_sub(self.rare_at).and_then(|start| match start {
                    2.. if data[start - 1] == b'/' => Some(start - 2),
                    _ => start.checked_sub(1),
                }),
            };
            // A `<` just before, in this chunk (one in the last chunk was kept as cut markup).
            if let Some(lt) = lt.filter(|&lt| lt >= from && data[lt] == b'<') {
                match self.markup(&data[lt..]) {
                    Markup::Read => return Some(lt),
                    Markup::Unknown => {
                        self.keep(&data[lt..]);
                        return None;
                    }
                    Markup::Skip => {}
                }
            }
            from = at + 1;
        }
        // Markup of the Body's name cut by the end of the chunk: it is found again above only
        // once whole, and the search goes on past it.
        let window = data
            .len()
            .saturating_sub(self.name_len + 2)
            .max(from.min(data.len()));
        if let Some(lt) = memrchr(b'<', &data[window..]).map(|at| at + window)
            && self.markup(&data[lt..]) == Markup::Unknown
        {
            self.keep(&data[lt..]);
        }
        None
    }

    fn keep(&mut self, markup: &[u8]) {
        self.cut[..markup.len()].copy_from_slice(markup);
        self.cut_len = markup.len();
    }
}

impl Tail {
    /// A watch that starts where the prefix ended, with `depth` elements open there
    /// ([`Envelope::depth`](super::Envelope::depth)), counting every element.
    pub fn new(depth: usize) -> Tail {
        Tail {
            depth,
            state: State::Text,
            body: None,
        }
    }

    /// The watch of what follows `envelope`'s prefix in `body` (the bytes read so far): it
    /// searches for the end of the SOAP Body, then counts elements.
    pub fn after(envelope: &Envelope, body: &[u8]) -> Tail {
        let name = body.get(envelope.body_name.clone()).unwrap_or_default();
        if name.is_empty() || name.len() > MAX_BODY_NAME {
            return Tail::new(envelope.depth);
        }
        // A prefix's `:` is rare in an envelope's payload (one `:` in a qualified name); else
        // the last byte.
        let rare_at = memchr::memchr(b':', name).unwrap_or(name.len() - 1);
        let mut end = BodyEnd {
            name: [0; MAX_BODY_NAME],
            name_len: name.len(),
            cut: [0; MAX_BODY_NAME + 3],
            cut_len: 0,
            rare: name[rare_at],
            rare_at,
        };
        end.name[..name.len()].copy_from_slice(name);
        Tail {
            // The Envelope and the Body: the elements inside are not counted.
            depth: 2,
            state: State::Text,
            body: Some(end),
        }
    }

    /// Reads the next bytes of the body.
    ///
    /// Character data and tags, nearly all of the bytes, are read here in tight loops (the
    /// runs between the bytes that matter are short in an envelope: a tag, an attribute value);
    /// the rest, byte by byte, through [`Tail::step`].
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ScanError> {
        let mut at = 0;
        if self.state == State::Text
            && let Some(body) = &mut self.body
            && body.cut_len > 0
        {
            // The last chunk ended inside markup: this one tells what it is.
            let mut joined = [0; MAX_BODY_NAME + 3];
            let cut = body.cut_len;
            let more = data.len().min(joined.len() - cut);
            joined[..cut].copy_from_slice(&body.cut[..cut]);
            joined[cut..cut + more].copy_from_slice(&data[..more]);
            match body.markup(&joined[..cut + more]) {
                Markup::Unknown => {
                    body.keep(&joined[..cut + more]);
                    return Ok(());
                }
                Markup::Skip => body.cut_len = 0,
                Markup::Read => {
                    body.cut_len = 0;
                    self.state = State::Open;
                    for &byte in &joined[1..cut] {
                        self.state = self.step(byte)?;
                    }
                }
            }
        }
        while at < data.len() {
            match self.state {
                State::Text if let Some(body) = &mut self.body => match body.next(data, at) {
                    Some(lt) => {
                        at = lt + 1;
                        self.state = State::Open;
                    }
                    None => return Ok(()),
                },
                State::Text => match find(
                    &data[at..],
                    |b| b == b'<',
                    |rest| memchr::memchr(b'<', rest),
                ) {
                    Some(lt) => {
                        at += lt + 1;
                        self.state = State::Open;
                    }
                    None => return Ok(()),
                },
                State::Tag {
                    end,
                    quote: Some(quote),
                    ..
                } => match find(
                    &data[at..],
                    |b| b == quote,
                    |rest| memchr::memchr(quote, rest),
                ) {
                    Some(closing) => {
                        at += closing + 1;
                        self.state = State::Tag {
                            end,
                            quote: None,
                            slash: false,
                        };
                    }
                    None => return Ok(()),
                },
                State::Tag {
                    end,
                    quote: None,
                    slash,
                } => {
                    let rest = &data[at..];
                    let Some(next) = find(
                        rest,
                        |b| matches!(b, b'>' | b'"' | b'\''),
                        |rest| memchr::memchr3(b'>', b'"', b'\'', rest),
                    ) else {
                        // `slash` is the last byte's.
                        let slash = rest.last().map_or(slash, |&b| b == b'/');
                        self.state = State::Tag {
                            end,
                            quote: None,
                            slash,
                        };
                        return Ok(());
                    };
                    let slash = if next > 0 {
                        rest[next - 1] == b'/'
                    } else {
                        slash
                    };
                    self.state = State::Tag {
                        end,
                        quote: None,
                        slash,
                    };
                    at += next + 1;
                    self.state = self.step(rest[next])?;
                    if self.depth < 2 {
                        // The Body has ended: every element counts from here.
                        self.body = None;
                    }
                }
                _ => {
                    at += self.skip(&data[at..]);
                    let byte = data[at];
                    at += 1;
                    self.state = self.step(byte)?;
                }
            }
        }
        Ok(())
    }

    /// How many bytes at the start of `rest` cannot change the state of a comment, CDATA
    /// section or processing instruction but through the few bytes before its next `>`: those
    /// are left to [`Tail::step`], the run before them is skipped in one search. At least one
    /// byte is always left.
    fn skip(&mut self, rest: &[u8]) -> usize {
        // The next byte that matters, and how many before it `step` must see.
        let (next, context) = match self.state {
            // `-->` and `]]>` need two bytes before `>`, `?>` one.
            State::Comment { .. } | State::Cdata { .. } => (memchr::memchr(b'>', rest), 2),
            State::Pi { .. } => (memchr::memchr(b'>', rest), 1),
            State::Text | State::Open | State::Tag { .. } | State::Bang { .. } => return 0,
        };
        let skip = next
            .unwrap_or(rest.len())
            .saturating_sub(context)
            .min(rest.len() - 1);
        if skip > 0 {
            // What the skipped bytes leave: no dash, bracket or `?` just before what `step`
            // sees next (it sees the bytes that count).
            self.state = match self.state {
                State::Comment { .. } => State::Comment { dashes: 0 },
                State::Cdata { .. } => State::Cdata { brackets: 0 },
                State::Pi { .. } => State::Pi { question: false },
                other => other,
            };
        }
        skip
    }

    /// The state after `byte`, outside character data.
    fn step(&mut self, byte: u8) -> Result<State, ScanError> {
        Ok(match self.state {
            State::Text => unreachable!("character data is skipped in `feed`"),
            State::Open => match byte {
                b'/' => State::Tag {
                    end: true,
                    quote: None,
                    slash: false,
                },
                b'!' => State::Bang {
                    cdata: None,
                    matched: 0,
                },
                b'?' => State::Pi { question: false },
                _ if self.depth <= 1 => return Err(ScanError::AfterBody),
                _ => State::Tag {
                    end: false,
                    quote: None,
                    slash: false,
                },
            },
            State::Tag {
                end,
                quote: Some(quote),
                ..
            } => State::Tag {
                end,
                quote: (byte != quote).then_some(quote),
                slash: false,
            },
            State::Tag {
                end,
                quote: None,
                slash,
            } => match byte {
                b'>' => {
                    if end {
                        self.depth = self.depth.saturating_sub(1);
                    } else if !slash {
                        self.depth += 1;
                    }
                    State::Text
                }
                b'"' | b'\'' => State::Tag {
                    end,
                    quote: Some(byte),
                    slash: false,
                },
                _ => State::Tag {
                    end,
                    quote: None,
                    slash: byte == b'/',
                },
            },
            State::Bang { cdata, matched } => {
                let cdata = cdata.unwrap_or(byte == b'[');
                let expected = if cdata { CDATA } else { b"--" };
                if byte != expected[usize::from(matched)] {
                    // `<!DOCTYPE` and the like have no place inside an element.
                    return Err(ScanError::NotXml("markup declaration inside the envelope"));
                }
                if usize::from(matched) + 1 == expected.len() {
                    if cdata {
                        State::Cdata { brackets: 0 }
                    } else {
                        State::Comment { dashes: 0 }
                    }
                } else {
                    State::Bang {
                        cdata: Some(cdata),
                        matched: matched + 1,
                    }
                }
            }
            State::Comment { dashes } => match byte {
                b'-' => State::Comment {
                    dashes: (dashes + 1).min(2),
                },
                b'>' if dashes >= 2 => State::Text,
                _ => State::Comment { dashes: 0 },
            },
            State::Cdata { brackets } => match byte {
                b']' => State::Cdata {
                    brackets: (brackets + 1).min(2),
                },
                b'>' if brackets >= 2 => State::Text,
                _ => State::Cdata { brackets: 0 },
            },
            State::Pi { question } => match byte {
                b'>' if question => State::Text,
                _ => State::Pi {
                    question: byte == b'?',
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watch over `tail` (which starts inside the method element, 3 deep), in every
    /// two-chunk split and byte by byte: one verdict whatever the chunking.
    fn verdict(tail: &str) -> Result<(), ScanError> {
        let bytes = tail.as_bytes();
        let whole = {
            let mut watch = Tail::new(3);
            watch.feed(bytes)
        };
        for cut in 0..=bytes.len() {
            let mut watch = Tail::new(3);
            let split = watch
                .feed(&bytes[..cut])
                .and_then(|()| watch.feed(&bytes[cut..]));
            assert_eq!(split, whole, "cut at {cut} of {tail}");
        }
        let mut watch = Tail::new(3);
        let bytewise = bytes.iter().try_for_each(|b| watch.feed(&[*b]));
        assert_eq!(bytewise, whole, "byte by byte: {tail}");
        whole
    }

    #[test]
    fn the_rest_of_an_ordinary_envelope_passes() {
        for tail in [
            "<m:domEvent><rtEvent type=\"a>b\" x='<'/></m:domEvent></m:PushEvent></s:Body></s:Envelope>",
            "<p><![CDATA[</s:Body><s:Header>]]></p><!-- </s:Body><h> --><?pi </s:Body><x> ?></m></s:Body>\n</s:Envelope>\n",
            "</m></s:Body><!-- a comment after the Body --><?pi after?></s:Envelope>  ",
            "<a/><b></b></m></s:Body></s:Envelope>",
        ] {
            assert_eq!(verdict(tail), Ok(()), "{tail}");
        }
    }

    #[test]
    fn an_element_after_the_body_or_the_envelope_is_refused() {
        for tail in [
            "</m></s:Body><s:Header><X-Session-Token>op/x</X-Session-Token></s:Header></s:Envelope>",
            "</m></s:Body><s:Body><m><sessiontoken>op/x</sessiontoken></m></s:Body></s:Envelope>",
            "</m></s:Body></s:Envelope><s:Envelope>",
            "</m></s:Body><!-- --><Header/></s:Envelope>",
        ] {
            assert_eq!(verdict(tail), Err(ScanError::AfterBody), "{tail}");
        }
    }

    /// The watch without its skips: every byte through `step`.
    fn feed_byte_by_byte(watch: &mut Tail, data: &[u8]) -> Result<(), ScanError> {
        for &byte in data {
            watch.state = match watch.state {
                State::Text if byte == b'<' => State::Open,
                State::Text => State::Text,
                _ => watch.step(byte)?,
            };
        }
        Ok(())
    }

    /// Up to 24 of `pieces`, picked at random, one after the other.
    fn pieces_joined(random: &mut fastrand::Rng, pieces: &[&[u8]]) -> Vec<u8> {
        (0..random.usize(0..24))
            .flat_map(|_| pieces[random.usize(..pieces.len())].iter().copied())
            .collect()
    }

    #[test]
    fn skipping_runs_changes_no_verdict() {
        // Random bodies of the bytes that matter, and a few that do not, against the watch
        // that looks at every byte; in two chunks, where a skip may end at a chunk's end.
        let pieces: [&[u8]; 20] = [
            b"<!--",
            b"-->",
            b"<![CDATA[",
            b"]]>",
            b"<?",
            b"?>",
            b"<a",
            b"</a>",
            b"/>",
            b">",
            b"\"",
            b"'",
            b"x",
            b"-",
            b"]",
            b"?",
            b"/",
            b"<",
            b"<!",
            b" a='>'",
        ];
        let mut random = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let body = pieces_joined(&mut random, &pieces);
            let len = body.len();
            let cut = random.usize(0..=len);
            let depth = random.usize(1..5);
            let (mut fast, mut slow) = (Tail::new(depth), Tail::new(depth));
            let fast_verdict = fast
                .feed(&body[..cut])
                .and_then(|()| fast.feed(&body[cut..]));
            let slow_verdict = feed_byte_by_byte(&mut slow, &body);
            assert_eq!(
                fast_verdict,
                slow_verdict,
                "{}",
                String::from_utf8_lossy(&body)
            );
            if fast_verdict.is_ok() {
                assert_eq!((fast.depth, fast.state), (slow.depth, slow.state));
            }
        }
    }

    /// The watch that searches for the Body's end, over `rest` in the chunks `cuts` make.
    fn body_watch(name: &str, rest: &[u8], cuts: &[usize]) -> Result<(), ScanError> {
        let envelope = Envelope {
            version: crate::soap::scan::SoapVersion::V11,
            end: 0,
            method: crate::soap::scan::Method {
                name: String::new(),
                namespace: None,
            },
            params: Vec::new(),
            carriers: Vec::new(),
            depth: 3,
            body_name: 0..name.len(),
        };
        let mut watch = Tail::after(&envelope, name.as_bytes());
        assert!(watch.body.is_some());
        let mut from = 0;
        for &cut in cuts.iter().chain([&rest.len()]) {
            watch.feed(&rest[from..cut])?;
            from = cut;
        }
        Ok(())
    }

    /// Random well-formed content of an element named `body` (`s:Body`), from after the first
    /// parameter to the end of the document, with the markup that could hide or fake its end:
    /// comments, CDATA and processing instructions holding `</s:Body>`, elements of the Body's
    /// name nested in it, names it begins, `>` and `/>` in text and attribute values; then what
    /// follows the Body, allowed or not.
    fn envelope_rest(random: &mut fastrand::Rng, body: &str) -> String {
        fn content(random: &mut fastrand::Rng, body: &str, out: &mut String, depth: usize) {
            for _ in 0..random.usize(0..5) {
                match random.usize(0..10) {
                    0 => out.push_str(&format!("<!-- </{body}><{body}> - -->")),
                    1 => out.push_str(&format!("<![CDATA[</{body}><h>]]]]>")),
                    2 => out.push_str(&format!("<?pi </{body}> ?>")),
                    3 => out.push_str(" a > b /> c ! ? s:Bod "),
                    4 => out.push_str(&format!("{body} </{body}X>")[..body.len() + 1]),
                    _ if depth > 4 => out.push_str("<e/>"),
                    choice => {
                        let name = match choice {
                            5 => body.to_owned(),
                            6 => format!("{body}X"),
                            7 => body[..body.len() - 1].to_owned(),
                            _ => "x:e".to_owned(),
                        };
                        let attributes = match random.usize(0..3) {
                            0 => String::new(),
                            1 => " a=\"/>'\" b='\">/'".to_owned(),
                            _ => format!(" n=\"</{body}\" "),
                        };
                        if random.bool() {
                            out.push_str(&format!("<{name}{attributes}/>"));
                        } else {
                            out.push_str(&format!("<{name}{attributes}>"));
                            content(random, body, out, depth + 1);
                            out.push_str(&format!("</{name}\n>"));
                        }
                    }
                }
            }
        }
        let mut out = String::new();
        content(random, body, &mut out, 0);
        out.push_str("</m>");
        content(random, body, &mut out, 0);
        out.push_str(&format!("</{body}>"));
        out.push_str(match random.usize(0..6) {
            0 => "<s:Header><X-Session-Token>op/x</X-Session-Token></s:Header></s:Envelope>",
            1 => "<!-- c --><s:Body><m><t>op/x</t></m></s:Body></s:Envelope>",
            2 => "</s:Envelope><s:Envelope/>",
            3 => "<?pi?>\n</s:Envelope>\n<!-- end -->",
            _ => "</s:Envelope>",
        });
        out
    }

    #[test]
    fn the_search_for_the_body_end_judges_as_the_count_of_every_element() {
        // On well-formed envelopes, against the watch that counts every element from the
        // prefix's depth (Envelope, Body, method); in random chunks, and byte by byte.
        let mut random = fastrand::Rng::with_seed(18);
        let mut refused = 0;
        for round in 0..3_000 {
            let body = ["s:Body", "SOAP-ENV:Body", "Body"][round % 3];
            let rest = envelope_rest(&mut random, body);
            let bytes = rest.as_bytes();
            let counted = Tail::new(3).feed(bytes);
            refused += usize::from(counted.is_err());
            assert_eq!(body_watch(body, bytes, &[]), counted, "{rest}");
            let mut cuts: Vec<usize> = (0..random.usize(0..6))
                .map(|_| random.usize(0..=bytes.len()))
                .collect();
            cuts.sort_unstable();
            assert_eq!(body_watch(body, bytes, &cuts), counted, "{cuts:?} {rest}");
            if round % 10 == 0 {
                let every: Vec<usize> = (1..bytes.len()).collect();
                assert_eq!(body_watch(body, bytes, &every), counted, "bytewise {rest}");
            }
        }
        // Both verdicts were met often.
        assert!((1_000..2_000).contains(&refused), "{refused} refused");
    }

    #[test]
    fn the_search_for_the_body_end_judges_any_chunking_alike() {
        // Whatever the bytes, well-formed or not: one verdict whatever the chunking.
        let pieces: [&[u8]; 14] = [
            b"<s:Body",
            b"</s:Body",
            b"</s:Bo",
            b">",
            b"/>",
            b"<!--",
            b"-->",
            b"<![CDATA[",
            b"]]>",
            b"<?",
            b"?>",
            b"\"",
            b" ",
            b"<x>",
        ];
        let mut random = fastrand::Rng::with_seed(19);
        for _ in 0..20_000 {
            let rest = pieces_joined(&mut random, &pieces);
            let whole = body_watch("s:Body", &rest, &[]);
            let cut = random.usize(0..=rest.len());
            assert_eq!(
                body_watch("s:Body", &rest, &[cut]),
                whole,
                "{cut} {}",
                String::from_utf8_lossy(&rest)
            );
            let every: Vec<usize> = (1..rest.len()).collect();
            assert_eq!(body_watch("s:Body", &rest, &every), whole);
        }
    }

    #[test]
    fn a_declaration_inside_the_envelope_is_refused() {
        assert!(matches!(
            verdict("<!DOCTYPE x></m></s:Body></s:Envelope>"),
            Err(ScanError::NotXml(_))
        ));
    }
}
