//! Which method a request calls, for logs and faults: `nms:rtEvent#PushEvent`.
//!
//! Clients say it in the `SOAPAction` header (quoted or not), in the `action` parameter of an
//! `application/soap+xml` content type (SOAP 1.2), or as `?soapAction=` in the URL; the method
//! element's namespace and name say it in every case (`urn:nms:rtEvent` + `PushEvent`).

use std::fmt;

use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderName};

use super::scan::Method;

static SOAP_ACTION: HeaderName = HeaderName::from_static("soapaction");

/// `service#method`, kept as one string: it is logged with every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Action {
    text: String,
    /// Where the `#` is.
    hash: usize,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Action {
    fn new(service: &str, method: &str) -> Action {
        Action {
            text: format!("{service}#{method}"),
            hash: service.len(),
        }
    }

    /// `nms:rtEvent`, or an interface with a pipe: `xtk:persist|xtk:session`.
    pub(crate) fn service(&self) -> &str {
        &self.text[..self.hash]
    }

    /// `PushEvent`.
    pub(crate) fn method(&self) -> &str {
        &self.text[self.hash + 1..]
    }

    /// `nms:rtEvent#PushEvent`.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The action a request names, falling back to its method element.
    pub(crate) fn of_request(headers: &HeaderMap, query: Option<&str>, method: &Method) -> Action {
        headers
            .get(&SOAP_ACTION)
            .and_then(|v| v.to_str().ok())
            .and_then(Action::parse)
            .or_else(|| {
                let content_type = headers.get(CONTENT_TYPE)?.to_str().ok()?;
                content_type
                    .split(';')
                    .filter_map(|p| p.trim().split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("action"))
                    .and_then(|(_, value)| Action::parse(value))
            })
            .or_else(|| {
                form_urlencoded::parse(query?.as_bytes())
                    .find(|(name, _)| name.eq_ignore_ascii_case("soapaction"))
                    .and_then(|(_, value)| Action::parse(&value))
            })
            .unwrap_or_else(|| Action::of_method(method))
    }

    /// `"nms:rtEvent#PushEvent"`, `nms:rtEvent#PushEvent` or `urn:nms:rtEvent#PushEvent`.
    pub(crate) fn parse(text: &str) -> Option<Action> {
        let text = text.trim().trim_matches('"').trim();
        let (service, method) = text.rsplit_once('#')?;
        let service = service.strip_prefix("urn:").unwrap_or(service);
        if method.is_empty() {
            return None;
        }
        Some(Action::new(service, method))
    }

    /// From the method element: namespace `urn:nms:rtEvent` and name `PushEvent`.
    pub(crate) fn of_method(method: &Method) -> Action {
        let namespace = method.namespace.as_deref().unwrap_or_default();
        Action::new(
            namespace.strip_prefix("urn:").unwrap_or(namespace),
            &method.name,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn method() -> Method {
        Method {
            name: "PushEvent".into(),
            namespace: Some("urn:nms:rtEvent".into()),
        }
    }

    #[test]
    fn header_quoted_or_not() {
        for value in [
            "\"nms:rtEvent#PushEvent\"",
            "nms:rtEvent#PushEvent",
            "urn:nms:rtEvent#PushEvent",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("SOAPAction", HeaderValue::from_str(value).unwrap());
            let action = Action::of_request(&headers, None, &method());
            assert_eq!(action.to_string(), "nms:rtEvent#PushEvent", "{value}");
        }
    }

    #[test]
    fn interface_with_a_pipe() {
        let action = Action::parse("\"xtk:persist|xtk:session#Write\"").unwrap();
        assert_eq!(action.service(), "xtk:persist|xtk:session");
        assert_eq!(action.method(), "Write");
    }

    #[test]
    fn soap12_content_type_and_query() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(
                "application/soap+xml;charset=UTF-8;action=\"xtk:session#Logon\"",
            ),
        );
        assert_eq!(
            Action::of_request(&headers, None, &method()).to_string(),
            "xtk:session#Logon"
        );
        let empty = HeaderMap::new();
        assert_eq!(
            Action::of_request(
                &empty,
                Some("soapAction=xtk%3Aworkflow%23PostEvent"),
                &method()
            )
            .to_string(),
            "xtk:workflow#PostEvent"
        );
    }

    #[test]
    fn falls_back_to_the_method_element() {
        let empty = HeaderMap::new();
        assert_eq!(
            Action::of_request(&empty, None, &method()).to_string(),
            "nms:rtEvent#PushEvent"
        );
        let mut headers = HeaderMap::new();
        headers.insert("soapaction", HeaderValue::from_static("\"\""));
        assert_eq!(
            Action::of_request(&headers, None, &method()).to_string(),
            "nms:rtEvent#PushEvent"
        );
    }
}
