//! Two answers compared as XML, for a shadow caller: the legacy way's and the `ims` way's copy.
//! Elements, their attributes (in any order) and text must agree; whitespace between elements,
//! comments, processing instructions and the XML declaration do not count. An answer that is not
//! XML is compared byte for byte. Nothing here keeps or prints a body: a mismatch is told by
//! digests.

use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// `answer` in a form where two answers that agree as XML are the same bytes: one line per
/// element start (`<name a="v" …>`, attributes sorted), text (trimmed, as it came, escapes
/// and all) and element end. `None`: not XML (no element, or not well-formed).
pub(crate) fn canonical(answer: &[u8]) -> Option<Vec<u8>> {
    let mut reader = Reader::from_reader(answer);
    let config = reader.config_mut();
    config.check_end_names = true;
    let mut out = Vec::with_capacity(answer.len());
    let mut depth = 0usize;
    let mut elements = 0usize;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(element) => {
                depth += 1;
                elements += 1;
                start(&mut out, &element)?;
            }
            Event::Empty(element) => {
                elements += 1;
                start(&mut out, &element)?;
                end(&mut out, element.name().0.as_bytes());
            }
            Event::End(element) => {
                depth = depth.checked_sub(1)?;
                end(&mut out, element.name().0.as_bytes());
            }
            Event::Text(text) => {
                let text = text.as_bytes().trim_ascii();
                if !text.is_empty() {
                    out.extend_from_slice(b"T ");
                    out.extend_from_slice(text);
                    out.push(b'\n');
                }
            }
            Event::GeneralRef(reference) => {
                out.extend_from_slice(b"R ");
                out.extend_from_slice(reference.as_bytes());
                out.push(b'\n');
            }
            Event::CData(text) => {
                out.extend_from_slice(b"C ");
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    (depth == 0 && elements > 0).then_some(out)
}

fn start(out: &mut Vec<u8>, element: &quick_xml::events::BytesStart<'_>) -> Option<()> {
    let mut attributes = Vec::new();
    for attribute in element.attributes() {
        let attribute = attribute.ok()?;
        attributes.push((
            attribute.key.0.as_bytes().to_vec(),
            attribute.value.as_bytes().to_vec(),
        ));
    }
    attributes.sort();
    out.extend_from_slice(b"< ");
    out.extend_from_slice(element.name().0.as_bytes());
    for (key, value) in attributes {
        out.push(b' ');
        out.extend_from_slice(&key);
        out.extend_from_slice(b"=\"");
        out.extend_from_slice(&value);
        out.push(b'"');
    }
    out.push(b'\n');
    Some(())
}

fn end(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(b"> ");
    out.extend_from_slice(name);
    out.push(b'\n');
}

/// Whether two answers agree (as XML when both are, else byte for byte), and the digest of
/// each (the first 16 hex digits of the SHA-256 of what was compared).
pub(crate) fn agree(one: &[u8], other: &[u8]) -> (bool, String, String) {
    let (one, other) = match (canonical(one), canonical(other)) {
        (Some(one), Some(other)) => (one, other),
        _ => (one.to_vec(), other.to_vec()),
    };
    let digest = |bytes: &[u8]| {
        ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    (one == other, digest(&one), digest(&other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_between_elements_and_attribute_order_do_not_count() {
        let one = br#"<?xml version="1.0"?>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="urn:e" a="1" b="2">
  <SOAP-ENV:Body>
    <!-- a comment -->
    <r>  text  </r><e/>
  </SOAP-ENV:Body>
</SOAP-ENV:Envelope>"#;
        let other = br#"<SOAP-ENV:Envelope b="2" xmlns:SOAP-ENV="urn:e" a="1"><SOAP-ENV:Body><r>text</r><e></e></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;
        let (same, a, b) = agree(one, other);
        assert!(same);
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn values_text_names_and_structure_count() {
        let base = br#"<a x="1"><b>t</b></a>"#;
        for other in [
            &br#"<a x="2"><b>t</b></a>"#[..],
            br#"<a x="1"><b>u</b></a>"#,
            br#"<a x="1"><c>t</c></a>"#,
            br#"<a x="1"><b>t</b><b/></a>"#,
            br#"<a x="1" y="0"><b>t</b></a>"#,
        ] {
            let (same, a, b) = agree(base, other);
            assert!(!same, "{}", String::from_utf8_lossy(other));
            assert_ne!(a, b);
        }
    }

    #[test]
    fn what_is_not_xml_is_compared_as_bytes() {
        assert_eq!(canonical(b"<a><b></a>"), None);
        assert_eq!(canonical(b"plain text"), None);
        assert_eq!(canonical(b""), None);
        assert!(agree(b"Service Unavailable", b"Service Unavailable").0);
        assert!(!agree(b"<a/>", b"Service Unavailable").0);
    }
}
