//! Cuts the legacy credential out of a body prefix.
//!
//! The prefix is held once, in a `Bytes`; the spliced prefix is a list of slices of it with
//! the replaced ranges left out, so no body byte is copied, and every byte outside an edit is
//! forwarded as it came (design.md: namespaces, whitespace, CDATA, comments, declaration).

use std::ops::Range;

use bytes::Bytes;

use super::scan::{CarrierKind, Envelope};
use crate::carriers::session_cookie;

/// The bytes of `range` in the prefix become `replacement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub range: Range<usize>,
    pub replacement: Bytes,
}

/// The edits of `ims` mode (design.md, "Where the session token travels"): the first
/// parameter's content is emptied (the element stays, as in seed 002), and so are the SOAP
/// Header's `<X-Security-Token>` copies and its `<Cookie>` copies that carry
/// `__sessiontoken`. A `<Cookie>` is emptied whole rather than picked apart: its raw text
/// holds entity references (`&amp;` has a `;`, the cookie separator), and a credential with a
/// `;` in it would leave a piece behind. Sorted by position.
pub fn edits_for_ims(envelope: &Envelope) -> Vec<Edit> {
    let mut edits = Vec::new();
    for carrier in &envelope.carriers {
        let carries_session = match carrier.kind {
            CarrierKind::SecurityToken => true,
            CarrierKind::Cookie => {
                session_cookie(carrier.param.value.expose().as_bytes()).is_some()
            }
        };
        if carries_session {
            edits.push(Edit {
                range: carrier.param.content.clone(),
                replacement: Bytes::new(),
            });
        }
    }
    if let Some(param) = envelope.credential() {
        edits.push(Edit {
            range: param.content.clone(),
            replacement: Bytes::new(),
        });
    }
    edits.retain(|e| !e.range.is_empty() || !e.replacement.is_empty());
    edits.sort_by_key(|e| e.range.start);
    edits
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
