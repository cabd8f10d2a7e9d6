//! Applies edits to a body prefix (the credential's copies out, `carriers::body_edits`).
//!
//! The prefix is held once, in a `Bytes`; the spliced prefix is a list of slices of it with
//! the replaced ranges left out, so no body byte is copied, and every byte outside an edit is
//! forwarded as it came: namespaces, whitespace, CDATA, comments, declaration.

use std::ops::Range;

use bytes::Bytes;

/// The bytes of `range` in the prefix become `replacement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub range: Range<usize>,
    pub replacement: Bytes,
}

/// The prefix with the edits applied, as slices of it and the replacements, in order. Edits
/// must be sorted and must not overlap.
pub fn splice(prefix: &Bytes, edits: &[Edit]) -> Vec<Bytes> {
    let mut pieces = Vec::with_capacity(edits.len() * 2 + 1);
    let mut at = 0;
    for edit in edits {
        debug_assert!(edit.range.start >= at, "edits overlap or are unsorted");
        if edit.range.start > at {
            pieces.push(prefix.slice(at..edit.range.start));
        }
        if !edit.replacement.is_empty() {
            pieces.push(edit.replacement.clone());
        }
        at = edit.range.end;
    }
    if at < prefix.len() {
        pieces.push(prefix.slice(at..));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str, edits: &[Edit]) -> String {
        let pieces = splice(&Bytes::copy_from_slice(text.as_bytes()), edits);
        String::from_utf8(pieces.concat()).unwrap()
    }

    fn edit(range: Range<usize>, replacement: &'static str) -> Edit {
        Edit {
            range,
            replacement: Bytes::from_static(replacement.as_bytes()),
        }
    }

    #[test]
    fn applies_edits_in_order() {
        assert_eq!(apply("abcdef", &[]), "abcdef");
        assert_eq!(apply("abcdef", &[edit(1..3, "")]), "adef");
        assert_eq!(apply("abcdef", &[edit(0..1, "X"), edit(5..6, "")]), "Xbcde");
        assert_eq!(apply("abcdef", &[edit(2..2, "--")]), "ab--cdef");
        assert_eq!(apply("abcdef", &[edit(0..6, "")]), "");
    }
}
