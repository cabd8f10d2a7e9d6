//! SOAP faults shaped like Campaign's own, so that legacy callers handle them as they always
//! have: SOAP 1.1, the `SOAP-ENV` prefix, `faultcode`, `faultstring`, `detail`.

use bytes::Bytes;

use super::action::Action;

/// Campaign's answer to a wrong login or password.
pub(crate) const INVALID_LOGIN: &str = "Invalid login or password. Connection denied.";
/// Campaign's answer to a missing or expired session; acc-js-sdk logs on again when it sees
/// `XSV-350008`.
pub(crate) const SESSION_INVALID: &str =
    "XSV-350008 Session has expired or is invalid. Please reconnect.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultCode {
    /// The request was wrong (credential, XML).
    Client,
    /// Something behind the proxy failed (IMS, Campaign).
    Server,
}

#[derive(Debug, Clone)]
pub(crate) struct Fault<'a> {
    pub code: FaultCode,
    /// The called method, when known: Campaign names it in `faultstring`.
    pub action: Option<&'a Action>,
    pub detail: &'a str,
}

impl Fault<'_> {
    pub(crate) fn to_bytes(&self) -> Bytes {
        let code = match self.code {
            FaultCode::Client => "SOAP-ENV:Client",
            FaultCode::Server => "SOAP-ENV:Server",
        };
        let string = match self.action {
            Some(action) => format!(
                "Error while executing the method '{}' of service '{}'.",
                action.method(),
                action.service()
            ),
            None => "Error while executing the request.".to_owned(),
        };
        let body = format!(
            "<?xml version='1.0'?>\n\
             <SOAP-ENV:Envelope xmlns:xsd='http://www.w3.org/2001/XMLSchema' \
             xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' \
             xmlns:SOAP-ENV='http://schemas.xmlsoap.org/soap/envelope/'>\n\
             <SOAP-ENV:Body>\n\
             <SOAP-ENV:Fault>\n\
             <faultcode>{code}</faultcode>\n\
             <faultstring xsi:type='xsd:string'>{string}</faultstring>\n\
             <detail xsi:type='xsd:string'>{detail}</detail>\n\
             </SOAP-ENV:Fault>\n\
             </SOAP-ENV:Body>\n\
             </SOAP-ENV:Envelope>\n",
            string = quick_xml::escape::partial_escape(&string),
            detail = quick_xml::escape::partial_escape(self.detail),
        );
        Bytes::from(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_shape_and_escaping() {
        let action = Action::parse("nms:rtEvent#Push<Event>").unwrap();
        let fault = Fault {
            code: FaultCode::Client,
            action: Some(&action),
            detail: INVALID_LOGIN,
        };
        let text = String::from_utf8(fault.to_bytes().to_vec()).unwrap();
        assert!(text.contains("<faultcode>SOAP-ENV:Client</faultcode>"));
        assert!(text.contains(
            "Error while executing the method 'Push&lt;Event&gt;' of service 'nms:rtEvent'."
        ));
        assert!(text.contains(
            "<detail xsi:type='xsd:string'>Invalid login or password. Connection denied.</detail>"
        ));
        // The fault is itself a SOAP envelope our scanner reads.
        let mut scanner = crate::soap::Scanner::new();
        let envelope = scanner.feed(text.as_bytes(), true).unwrap().unwrap();
        assert_eq!(envelope.method.name, "Fault");
    }
}
