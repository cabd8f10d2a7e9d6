//! Campaign: the pooled HTTP client that reaches it (`upstream/pool.rs`), and the header
//! policy of what is sent to it.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use rustls_pki_types::CertificateDer;

use crate::body::{BodyError, CampaignBody, MAX_BUF_SIZE, UpstreamBody};
use crate::config::UpstreamSettings;
use crate::connect::{Egress, TlsSetupError, error_chain, https_connector};
use crate::headers::{remove_all, strip_hop_by_hop};
use pool::Pool;

mod pool;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("Campaign unreachable: {0}")]
    Unreachable(String),
    #[error("Campaign did not answer within {0:?}")]
    Timeout(Duration),
    /// Campaign's answer (or that of something before it) holds the access token it was
    /// sent: never relayed.
    #[error("Campaign's answer echoes the access token; not relayed")]
    EchoedToken,
    /// The caller's body broke off or grew too large while it was being forwarded.
    #[error(transparent)]
    Body(BodyError),
}

impl UpstreamError {
    /// A failed exchange: the caller's own body, when that is what broke it.
    fn from_hyper(error: &hyper::Error) -> UpstreamError {
        match find_body_error(error) {
            Some(body_error) => UpstreamError::Body(body_error),
            None => UpstreamError::Unreachable(error_chain(error)),
        }
    }
}

/// The way to Campaign.
pub struct Upstream {
    pool: Pool,
    base_path: String,
    /// `Host` sent upstream: Campaign (and the load balancer before it) route on it.
    host: HeaderValue,
    timeout: Duration,
}

impl Upstream {
    /// The client to Campaign, trusting `system_roots` and the config's `ca_file`, through
    /// `egress`.
    pub fn new(
        settings: &UpstreamSettings,
        system_roots: &[CertificateDer<'static>],
        egress: &Egress,
    ) -> Result<Upstream, TlsSetupError> {
        let roots: Vec<_> = system_roots
            .iter()
            .chain(&settings.extra_roots)
            .cloned()
            .collect();
        if settings.scheme == Scheme::HTTPS && roots.is_empty() {
            return Err(TlsSetupError::NoRoots("upstream.url"));
        }
        let connector = https_connector(&roots, settings.connect_timeout, egress)?;
        let target = Uri::builder()
            .scheme(settings.scheme.clone())
            .authority(settings.authority.clone())
            .path_and_query("/")
            .build()
            .expect("scheme and authority are valid");
        let host = HeaderValue::from_str(settings.authority.as_str())
            .expect("an authority is a valid header value");
        Ok(Upstream {
            pool: Pool::new(connector, target, MAX_BUF_SIZE),
            base_path: settings.base_path.clone(),
            host,
            timeout: settings.timeout,
        })
    }

    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The request target Campaign gets (origin form): the base path of `upstream.url`, then
    /// the caller's path and query.
    pub fn uri(&self, original: &Uri) -> Uri {
        let path_and_query = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let path_and_query = if self.base_path.is_empty() {
            path_and_query
        } else {
            format!("{}{}", self.base_path, path_and_query)
                .parse()
                .unwrap_or(path_and_query)
        };
        Uri::from(path_and_query)
    }

    /// Sends a request; the timeout covers the connection and the wait for the head of the
    /// answer.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<CampaignBody>, UpstreamError> {
        tokio::time::timeout(self.timeout, self.pool.send(request))
            .await
            .unwrap_or(Err(UpstreamError::Timeout(self.timeout)))
    }
}

/// The caller's own body error, if that is what made the request fail.
fn find_body_error(error: &(dyn std::error::Error + 'static)) -> Option<BodyError> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(body_error) = cause.downcast_ref::<BodyError>() {
            return Some(body_error.clone());
        }
        source = cause.source();
    }
    None
}

/// What to do to a request's headers on the way to Campaign.
pub struct Forwarding<'a> {
    /// `ims` mode: this `Authorization` replaces any the caller sent (the legacy credential
    /// is taken out beforehand, `carriers::strip_headers`).
    pub bearer: Option<&'a HeaderValue>,
    /// The caller's address as a header value, appended to `X-Forwarded-For`.
    pub peer: &'a HeaderValue,
    pub host: &'a HeaderValue,
    /// Length of the body as forwarded; `None`: unknown, sent chunked.
    pub content_length: Option<u64>,
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Applies the header policy to a request about to go upstream.
pub fn forward_headers(headers: &mut HeaderMap, forwarding: &Forwarding<'_>) {
    strip_hop_by_hop(headers);
    // hyper's client does not wait for `100 Continue`; the proxy already answered it.
    remove_all(headers, std::slice::from_ref(&header::EXPECT));
    headers.insert(header::HOST, forwarding.host.clone());
    match forwarding.content_length {
        Some(length) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    if let Some(bearer) = forwarding.bearer {
        headers.insert(header::AUTHORIZATION, bearer.clone());
    }
    append_forwarded_for(headers, forwarding.peer);
}

/// `X-Forwarded-For: <what came>, <peer>`: Campaign's security zones find the real client there.
fn append_forwarded_for(headers: &mut HeaderMap, peer: &HeaderValue) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(&X_FORWARDED_FOR, peer.clone());
        return;
    }
    let mut value = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    if !value.is_empty() {
        value.push_str(", ");
    }
    value.push_str(peer.to_str().unwrap_or_default());
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(&X_FORWARDED_FOR, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(map: &HeaderMap, name: &str) -> Vec<String> {
        map.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// What the `ims` way does to the headers: the credential out (`carriers`), then the
    /// header policy with the Bearer token.
    #[test]
    fn ims_mode_strips_every_header_carrier() {
        let mut map = crate::headers::map(&[
            ("cookie", "a=1; __sessiontoken=abc; b=2"),
            ("cookie", "__sessiontoken=abc"),
            ("x-session-token", "abc"),
            ("x-security-token", "def"),
            ("acc-sdk-auth", "UserPassword mc"),
            ("authorization", "Basic bWM6cGFzcw=="),
            ("soapaction", "\"nms:rtEvent#PushEvent\""),
        ]);
        let bearer = HeaderValue::from_static("Bearer ims-token");
        let host = HeaderValue::from_static("campaign.example.com");
        crate::carriers::strip_headers(&mut map);
        forward_headers(
            &mut map,
            &Forwarding {
                bearer: Some(&bearer),
                peer: &HeaderValue::from_static("10.0.0.7"),
                host: &host,
                content_length: Some(42),
            },
        );
        assert_eq!(values(&map, "cookie"), ["a=1; b=2"]);
        assert!(map.get("x-session-token").is_none());
        assert!(map.get("x-security-token").is_none());
        assert!(map.get("acc-sdk-auth").is_none());
        assert_eq!(values(&map, "authorization"), ["Bearer ims-token"]);
        assert_eq!(values(&map, "host"), ["campaign.example.com"]);
        assert_eq!(values(&map, "content-length"), ["42"]);
        assert_eq!(values(&map, "x-forwarded-for"), ["10.0.0.7"]);
        assert_eq!(values(&map, "soapaction"), ["\"nms:rtEvent#PushEvent\""]);
    }

    #[test]
    fn legacy_mode_keeps_credentials() {
        let mut map = crate::headers::map(&[
            ("cookie", "__sessiontoken=abc"),
            ("x-security-token", "def"),
            ("authorization", "Basic x"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-for", "198.51.100.2"),
            ("content-length", "10"),
            ("transfer-encoding", "chunked"),
        ]);
        let host = HeaderValue::from_static("campaign.example.com");
        forward_headers(
            &mut map,
            &Forwarding {
                bearer: None,
                peer: &HeaderValue::from_static("2001:db8::1"),
                host: &host,
                content_length: None,
            },
        );
        assert_eq!(values(&map, "cookie"), ["__sessiontoken=abc"]);
        assert_eq!(values(&map, "x-security-token"), ["def"]);
        assert_eq!(values(&map, "authorization"), ["Basic x"]);
        assert_eq!(
            values(&map, "x-forwarded-for"),
            ["192.0.2.1, 198.51.100.2, 2001:db8::1"]
        );
        assert!(map.get("content-length").is_none());
        assert!(map.get("transfer-encoding").is_none());
    }
}
