//! Fuzzes the body-prefix scanner, the splice and the watch of the rest: any bytes, cut into
//! chunks where the input says, must give the same verdict as the whole body, a spliced prefix
//! must be the input with exactly the reported credential ranges replaced, and the watch of
//! what follows the prefix must judge it the same in chunks as whole. Where the quick reading
//! of common envelopes answers, quick-xml's reading answers the same.
//!
//! The input's first byte says how many chunk sizes follow (0 to 7, its low bits) and the
//! `Content-Type` charset (none, ISO-8859-1, ISO-8859-15, windows-1252, UTF-8, US-ASCII: the
//! rest of its bits, modulo 6; a declaration may contradict it), then
//! those sizes (1 to 64 bytes each, used in turn); the rest is the body. With no size, chunks
//! of one byte.
//!
//! RUSTC_BOOTSTRAP=1 cargo fuzz run prefix -- -max_total_time=600

#![no_main]

use bytes::Bytes;
use imsbridge::fuzzing::{Charset, Scanner, Tail, body_edits, splice};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The chunk sizes, then the body.
    let Some((&count, rest)) = input.split_first() else {
        return;
    };
    let charset = match (count >> 3) % 6 {
        0 => None,
        1 => Some(Charset::Latin1),
        2 => Some(Charset::Latin9),
        3 => Some(Charset::Windows1252),
        4 => Some(Charset::Utf8),
        _ => Some(Charset::Ascii),
    };
    let count = usize::from(count % 8).min(rest.len());
    let (sizes, body) = rest.split_at(count);
    let sizes: Vec<usize> = match sizes.is_empty() {
        true => vec![1],
        false => sizes.iter().map(|&s| usize::from(s % 64) + 1).collect(),
    };

    let whole = Scanner::with_charset(charset).feed(body, true);

    let mut scanner = Scanner::with_charset(charset);
    let mut chunked = None;
    let mut at = 0;
    let mut turn = 0;
    while at < body.len() {
        at = (at + sizes[turn % sizes.len()]).min(body.len());
        turn += 1;
        match scanner.feed(&body[..at], at == body.len()) {
            Ok(None) if at < body.len() => continue,
            other => {
                chunked = Some(other);
                break;
            }
        }
    }
    let chunked = chunked.unwrap_or_else(|| scanner.feed(body, true));
    match (&whole, &chunked) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(a.end, b.end, "chunked and whole end differently");
            assert_eq!(a.params.len(), b.params.len());
            for (x, y) in a.params.iter().zip(&b.params) {
                assert_eq!(x.content, y.content);
                assert_eq!(x.value.expose(), y.value.expose());
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "chunked and whole fail differently"),
        (a, b) => panic!("whole {:?} but chunked {:?}", a.as_ref().map(|_| ()), b.as_ref().map(|_| ())),
    }

    // The first feed may be the quick reading of a common envelope (`soap::scan::quick`):
    // quick-xml's reading of the same bytes finds the very same.
    if let Ok(Some(quick)) = &whole {
        let Ok(Some(general)) = Scanner::without_shortcut(charset).feed(body, true) else {
            panic!("read whole, refused by quick-xml's reading");
        };
        assert_eq!(
            (quick.end, quick.depth, &quick.method, &quick.body_name, quick.version),
            (general.end, general.depth, &general.method, &general.body_name, general.version)
        );
        assert_eq!(quick.params.len(), general.params.len());
        for (x, y) in quick.params.iter().zip(&general.params) {
            assert_eq!((&x.content, x.value.expose()), (&y.content, y.value.expose()));
        }
        assert_eq!(quick.carriers.len(), general.carriers.len());
    }

    let Ok(Some(envelope)) = whole else {
        return;
    };
    assert!(envelope.end <= body.len());
    let prefix = Bytes::copy_from_slice(&body[..envelope.end]);
    let edits = body_edits(&envelope);
    let mut expected = Vec::with_capacity(prefix.len());
    let mut from = 0;
    for edit in &edits {
        assert!(edit.range.start >= from && edit.range.end <= prefix.len(), "edits overlap or overrun");
        expected.extend_from_slice(&prefix[from..edit.range.start]);
        expected.extend_from_slice(&edit.replacement);
        from = edit.range.end;
    }
    expected.extend_from_slice(&prefix[from..]);
    assert_eq!(splice(&prefix, &edits).concat(), expected);
    if let Some(credential) = envelope.credential() {
        assert!(credential.content.end <= envelope.end);
    }
    // A SOAP Header copy is plain text: an element, a comment, a CDATA section or a PI in one
    // is refused.
    for carrier in &envelope.carriers {
        assert!(!body[carrier.param.content.clone()].contains(&b'<'), "markup in a SOAP Header copy");
    }

    let rest = &body[envelope.end..];
    // As the proxy watches it: the search for the Body's end, then the count of elements.
    let whole = Tail::after(&envelope, &body[..envelope.end]).feed(rest);
    let mut tail = Tail::after(&envelope, &body[..envelope.end]);
    let mut chunked = Ok(());
    let mut at = 0;
    let mut turn = 0;
    while at < rest.len() && chunked.is_ok() {
        let next = (at + sizes[turn % sizes.len()]).min(rest.len());
        turn += 1;
        chunked = tail.feed(&rest[at..next]);
        at = next;
    }
    assert_eq!(whole, chunked, "the watch of the rest judges chunks and the whole differently");
});
