//! The WSDLs Campaign serves name Campaign in their `soap:address` (and `soap12:address`)
//! `location`: a client that follows it goes around the proxy. With `server.public_url`, the
//! proxy points them at itself.

use std::borrow::Cow;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

const WSDL_SOAP11_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
const WSDL_SOAP12_NS: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";

/// `wsdl` with the `location` of each `soap:address` and `soap12:address` made `public` (a
/// scheme, a host and port, maybe a path) followed by the location's own path and query.
/// `None` when there is no such address, or the WSDL cannot be read (it is then sent as it
/// came).
pub(crate) fn point_at(wsdl: &[u8], public: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(wsdl).ok()?;
    let mut reader = NsReader::from_str(text);
    // Byte ranges of the location values, and what goes there.
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    loop {
        let (namespace, event) = reader.read_resolved_event().ok()?;
        let element = match event {
            Event::Start(element) | Event::Empty(element) => element,
            Event::Eof => break,
            _ => continue,
        };
        let soap = matches!(namespace, ResolveResult::Bound(ns)
            if ns.as_ref() == WSDL_SOAP11_NS || ns.as_ref() == WSDL_SOAP12_NS);
        if !soap || element.local_name().as_ref() != "address" {
            continue;
        }
        for attribute in element.attributes() {
            let attribute = attribute.ok()?;
            if attribute.key.as_ref() != "location" {
                continue;
            }
            // The raw value, a slice of `text`: its place is where it lies.
            let Cow::Borrowed(value) = attribute.value else {
                return None;
            };
            let start = value.as_ptr() as usize - text.as_ptr() as usize;
            edits.push((start..start + value.len(), relocated(value, public)?));
        }
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(wsdl.len());
    let mut at = 0;
    for (range, location) in edits {
        out.extend_from_slice(&wsdl[at..range.start]);
        out.extend_from_slice(location.as_bytes());
        at = range.end;
    }
    out.extend_from_slice(&wsdl[at..]);
    Some(out)
}

/// `location` (an absolute URL, as written in the WSDL) with `public` for its scheme and
/// authority.
fn relocated(location: &str, public: &str) -> Option<String> {
    let url: http::Uri = location.parse().ok()?;
    url.authority()?;
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    Some(format!("{}{path}", public.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WSDL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:s12="http://schemas.xmlsoap.org/wsdl/soap12/" xmlns:tns="urn:nms:rtEvent">
  <wsdl:service name="XtkService">
    <wsdl:port binding="tns:rtEventMethodsSoapBinding" name="rtEventMethodsSoap">
      <soap:address location="https://campaign.example.com/nl/jsp/soaprouter.jsp"/>
    </wsdl:port>
    <wsdl:port binding="tns:rtEventMethodsSoap12Binding" name="rtEventMethodsSoap12">
      <s12:address location='https://campaign.example.com:8443/nl/jsp/soaprouter.jsp?x=1'/>
    </wsdl:port>
    <wsdl:documentation><address location="https://campaign.example.com/kept"/></wsdl:documentation>
  </wsdl:service>
</wsdl:definitions>"#;

    #[test]
    fn soap_and_soap12_addresses_point_at_the_public_url_and_nothing_else_changes() {
        let out = point_at(WSDL.as_bytes(), "https://imsbridge.example.com/").unwrap();
        let expected = WSDL
            .replace(
                "\"https://campaign.example.com/nl/jsp/soaprouter.jsp\"",
                "\"https://imsbridge.example.com/nl/jsp/soaprouter.jsp\"",
            )
            .replace(
                "'https://campaign.example.com:8443/nl/jsp/soaprouter.jsp?x=1'",
                "'https://imsbridge.example.com/nl/jsp/soaprouter.jsp?x=1'",
            );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        // With a path of its own.
        let out = point_at(WSDL.as_bytes(), "https://gw.example.com/campaign").unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("\"https://gw.example.com/campaign/nl/jsp/soaprouter.jsp\"")
        );
    }

    #[test]
    fn a_wsdl_without_soap_addresses_or_not_xml_is_left_alone() {
        let other = WSDL
            .replace("soap:address", "soap:other")
            .replace("s12:address", "s12:other");
        assert_eq!(point_at(other.as_bytes(), "https://p.example.com"), None);
        assert_eq!(point_at(b"not xml <", "https://p.example.com"), None);
    }
}
