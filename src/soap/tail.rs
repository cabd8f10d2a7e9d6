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
//! markup), byte by byte, whatever the chunking. Well-formedness is Campaign's to judge.

use super::ScanError;

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

/// The watch of an envelope's remaining bytes.
#[derive(Debug)]
pub struct Tail {
    /// Elements open: the Envelope is 1, the Body 2.
    depth: usize,
    state: State,
}

impl Tail {
    /// A watch that starts where the prefix ended, with `depth` elements open there
    /// ([`Envelope::depth`](super::Envelope::depth)).
    pub fn new(depth: usize) -> Tail {
        Tail {
            depth,
            state: State::Text,
        }
    }

    /// Reads the next bytes of the body.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), ScanError> {
        let mut at = 0;
        while at < data.len() {
            if self.state == State::Text {
                match memchr::memchr(b'<', &data[at..]) {
                    Some(lt) => {
                        at += lt + 1;
                        self.state = State::Open;
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            at += self.skip(&data[at..]);
            let byte = data[at];
            at += 1;
            self.state = self.step(byte)?;
        }
        Ok(())
    }

    /// How many bytes at the start of `rest` cannot change the state but through the few
    /// bytes before the next one that may (a `>`, a quote): those are left to [`Tail::step`],
    /// the run before them is skipped in one search. At least one byte is always left.
    fn skip(&mut self, rest: &[u8]) -> usize {
        // The next byte that matters, and how many before it `step` must see.
        let (next, context) = match self.state {
            State::Tag {
                quote: Some(quote), ..
            } => (memchr::memchr(quote, rest), 0),
            // `slash` needs the byte before `>`.
            State::Tag { quote: None, .. } => (memchr::memchr3(b'>', b'"', b'\'', rest), 1),
            // `-->` and `]]>` need two bytes before `>`, `?>` one.
            State::Comment { .. } | State::Cdata { .. } => (memchr::memchr(b'>', rest), 2),
            State::Pi { .. } => (memchr::memchr(b'>', rest), 1),
            State::Text | State::Open | State::Bang { .. } => return 0,
        };
        let skip = next
            .unwrap_or(rest.len())
            .saturating_sub(context)
            .min(rest.len() - 1);
        if skip > 0 {
            // What the skipped bytes leave: no `/`, dash, bracket or `?` just before what
            // `step` sees next (it sees the bytes that count).
            self.state = match self.state {
                State::Tag { end, quote, .. } => State::Tag {
                    end,
                    quote,
                    slash: false,
                },
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
            let body: Vec<u8> = (0..random.usize(0..24))
                .flat_map(|_| pieces[random.usize(..pieces.len())].iter().copied())
                .collect();
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

    #[test]
    fn a_declaration_inside_the_envelope_is_refused() {
        assert!(matches!(
            verdict("<!DOCTYPE x></m></s:Body></s:Envelope>"),
            Err(ScanError::NotXml(_))
        ));
    }
}
