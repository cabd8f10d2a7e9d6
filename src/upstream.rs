//! Campaign: the instances of the config (`[upstream]`, `[upstreams.NAME]`), each with its
//! nodes (`upstream/node.rs`) and their pooled connections (`upstream/pool.rs`), and the header
//! policy of what is sent to them.
//!
//! A request goes to the node of its instance with the fewest requests waiting, taking turns
//! among equals; nodes that refused a connection or timed out are skipped for `cooldown` while
//! any other is not. A request none of which went out (no connection, or one closed before it
//! was written) goes to the next node; one that went out is never sent twice: Campaign may
//! have run it (a `PushEvent` sent twice is two messages).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Request, Response, Uri};
use prometheus_client::metrics::histogram::Histogram;
use rustls_pki_types::CertificateDer;

use crate::body::{BodyError, CampaignBody, MAX_BUF_SIZE, UpstreamBody};
use crate::config::{DEFAULT_UPSTREAM, UpstreamSettings};
use crate::connect::{Egress, TlsSetupError, error_chain, https_connector};
use crate::headers::strip_hop_by_hop_and_expect;
use node::{Node, Outcome};
use pool::{Failed, Pool};

pub(crate) use node::AttemptCounters;

mod node;
mod pool;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("Campaign unreachable: {0}")]
    Unreachable(String),
    #[error("no connection to Campaign within {0:?}")]
    ConnectTimeout(Duration),
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
    fn from_h1(error: crate::h1::Error) -> UpstreamError {
        match error {
            crate::h1::Error::Body(body) => match find_body_error(&*body) {
                Some(body_error) => UpstreamError::Body(body_error),
                None => UpstreamError::Unreachable(error_chain(&*body)),
            },
            other => UpstreamError::Unreachable(error_chain(&other)),
        }
    }

    /// How an attempt that failed with it ended, for the node's counts.
    fn outcome(&self, sent: bool) -> Outcome {
        match self {
            UpstreamError::Body(_) => Outcome::BodyError,
            UpstreamError::ConnectTimeout(_) => Outcome::ConnectTimeout,
            UpstreamError::Timeout(_) => Outcome::Timeout,
            _ if sent => Outcome::Error,
            _ => Outcome::ConnectError,
        }
    }

    /// The same error, saying which node it came from.
    fn at(self, node: &str) -> UpstreamError {
        match self {
            UpstreamError::Unreachable(text) => {
                UpstreamError::Unreachable(format!("{node}: {text}"))
            }
            other => other,
        }
    }
}

/// A node's state, as `/metrics` shows it.
pub(crate) struct NodeHealth<'a> {
    pub upstream: &'a str,
    pub node: &'a str,
    /// Skipped now, after a failure.
    pub cooling: bool,
    pub in_flight: usize,
}

/// One Campaign instance: its nodes, and how long they get.
pub(crate) struct Upstream {
    name: String,
    nodes: Box<[Node]>,
    /// Whether a node has a base path: then the caller's target is kept to aim each attempt.
    base_paths: bool,
    /// Whose turn it is among nodes equally busy.
    turn: AtomicUsize,
    timeout: Duration,
    cooldown: Duration,
    retry_buffer_bytes: u64,
    /// Time to the head of an answer.
    first_byte: Histogram,
}

impl Upstream {
    /// The client to a Campaign instance, trusting `system_roots` and its `ca_file`, through
    /// `egress`; `attempts` gives the counters of each node (by upstream and node URL). Each
    /// of `workers` keeps connections of its own.
    pub(crate) fn new(
        settings: &UpstreamSettings,
        system_roots: &[CertificateDer<'static>],
        egress: &Egress,
        attempts: &dyn Fn(&str, &str) -> AttemptCounters,
        first_byte: Histogram,
        workers: usize,
    ) -> Result<Upstream, TlsSetupError> {
        let roots: Vec<_> = system_roots
            .iter()
            .chain(&settings.extra_roots)
            .cloned()
            .collect();
        if settings.nodes.iter().any(|n| n.scheme == Scheme::HTTPS) && roots.is_empty() {
            let key = match settings.name.as_str() {
                DEFAULT_UPSTREAM => "upstream".to_owned(),
                name => format!("upstreams.{name}"),
            };
            return Err(TlsSetupError::NoRoots(key));
        }
        // Each pool bounds the whole of connecting, TLS included.
        let connector = https_connector(&roots, None, egress)?;
        let nodes = settings
            .nodes
            .iter()
            .map(|node| {
                let target = Uri::builder()
                    .scheme(node.scheme.clone())
                    .authority(node.authority.clone())
                    .path_and_query("/")
                    .build()
                    .expect("scheme and authority are valid");
                let host = HeaderValue::from_str(node.authority.as_str())
                    .expect("an authority is a valid header value");
                let pool = Pool::new(
                    connector.clone(),
                    target,
                    settings.connect_timeout,
                    MAX_BUF_SIZE,
                    workers,
                );
                let url = node.url();
                let counters = attempts(&settings.name, &url);
                Node::new(pool, url, host, node.base_path.clone(), counters)
            })
            .collect();
        Ok(Upstream {
            name: settings.name.clone(),
            nodes,
            base_paths: settings.nodes.iter().any(|n| !n.base_path.is_empty()),
            turn: AtomicUsize::new(0),
            timeout: settings.timeout,
            cooldown: settings.cooldown,
            retry_buffer_bytes: settings.retry_buffer_bytes,
            first_byte,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Bodies up to this size are kept for a replay when Campaign refuses the token.
    pub(crate) fn retry_buffer_bytes(&self) -> u64 {
        self.retry_buffer_bytes
    }

    /// Each node and its state now.
    pub(crate) fn health(&self) -> impl Iterator<Item = NodeHealth<'_>> {
        let now = node::clock();
        self.nodes.iter().map(move |node| NodeHealth {
            upstream: &self.name,
            node: node.url(),
            cooling: node.cooling(now),
            in_flight: node.in_flight(),
        })
    }

    /// Sends a request whose target is the caller's (origin form) to a node, aimed at it (its
    /// `Host` and base path); if none of it went out, to the next node, until each was tried.
    /// `timeout` bounds it all, from the first connection to the head of the answer.
    pub(crate) async fn send(
        &self,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<CampaignBody>, UpstreamError> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.timeout;
        let original = self.base_paths.then(|| request.uri().clone());
        let mut tried = 0u64;
        let mut errors = Vec::new();
        loop {
            let index = self.choose(tried);
            tried |= 1 << index;
            let node = &self.nodes[index];
            node.aim(&mut request, original.as_ref());
            let in_flight = (self.nodes.len() > 1).then(|| node.enter());
            let attempt = tokio::time::timeout_at(deadline, node.pool.send(request)).await;
            drop(in_flight);
            let (error, unsent) = match attempt {
                Ok(Ok(response)) => {
                    node.record(Outcome::Ok, self.cooldown);
                    self.first_byte.observe(started.elapsed().as_secs_f64());
                    return Ok(response);
                }
                Err(_elapsed) => (UpstreamError::Timeout(self.timeout), None),
                Ok(Err(Failed { error, unsent })) => (error, unsent),
            };
            node.record(error.outcome(unsent.is_none()), self.cooldown);
            let error = error.at(node.url());
            match unsent {
                Some(back) if tried.count_ones() < self.nodes.len() as u32 => {
                    tracing::warn!(upstream = %self.name, %error, "no connection to a Campaign node; the request goes to the next");
                    errors.push(error.to_string());
                    request = back;
                }
                _ if errors.is_empty() => return Err(error),
                _ => {
                    errors.push(error.to_string());
                    return Err(UpstreamError::Unreachable(format!(
                        "no node of upstream `{}` took the request: {}",
                        self.name,
                        errors.join("; ")
                    )));
                }
            }
        }
    }

    /// The node a request tries next, among those not `tried` yet: one not cooling down if
    /// any, with the fewest requests waiting, taking turns among equals.
    fn choose(&self, tried: u64) -> usize {
        let count = self.nodes.len();
        if count == 1 {
            return 0;
        }
        let now = node::clock();
        let rank = |index: usize| {
            let node = &self.nodes[index];
            (node.cooling(now), node.in_flight())
        };
        let untried = || (0..count).filter(|index| tried & (1 << index) == 0);
        let Some(best) = untried().map(rank).min() else {
            return 0;
        };
        let equals = untried().filter(|&index| rank(index) == best).count();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % equals;
        untried()
            .filter(|&index| rank(index) == best)
            .nth(turn)
            // Ranks can change under other requests between the two looks.
            .or_else(|| untried().next())
            .unwrap_or(0)
    }
}

/// `uri`'s path and query alone, as a request to Campaign names its target (an HTTP/2
/// caller's has its scheme and authority too).
pub(crate) fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri.clone();
    }
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    Uri::from(path_and_query)
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
pub(crate) struct Forwarding<'a> {
    /// `ims` mode: this `Authorization` replaces any the caller sent (the legacy credential
    /// is taken out beforehand, `carriers::strip_headers`).
    pub bearer: Option<&'a HeaderValue>,
    /// The caller's address as a header value, appended to `X-Forwarded-For`.
    pub peer: &'a HeaderValue,
    /// Length of the body as forwarded; `None`: unknown, sent chunked.
    pub content_length: Option<u64>,
}

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Applies the header policy to a request about to go upstream (`Host` is the node's, set as
/// it is sent).
pub(crate) fn forward_headers(headers: &mut HeaderMap, forwarding: &Forwarding<'_>) {
    strip_hop_by_hop_and_expect(headers);
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
        crate::carriers::strip_headers(&mut map);
        forward_headers(
            &mut map,
            &Forwarding {
                bearer: Some(&bearer),
                peer: &HeaderValue::from_static("10.0.0.7"),
                content_length: Some(42),
            },
        );
        assert_eq!(values(&map, "cookie"), ["a=1; b=2"]);
        assert!(map.get("x-session-token").is_none());
        assert!(map.get("x-security-token").is_none());
        assert!(map.get("acc-sdk-auth").is_none());
        assert_eq!(values(&map, "authorization"), ["Bearer ims-token"]);
        assert_eq!(values(&map, "content-length"), ["42"]);
        assert_eq!(values(&map, "x-forwarded-for"), ["10.0.0.7"]);
        assert_eq!(values(&map, "soapaction"), ["\"nms:rtEvent#PushEvent\""]);
    }

    fn upstream(urls: &[&str]) -> Upstream {
        let nodes = urls
            .iter()
            .map(|url| {
                let uri: Uri = url.parse().unwrap();
                crate::config::NodeSettings {
                    scheme: uri.scheme().unwrap().clone(),
                    authority: uri.authority().unwrap().clone(),
                    base_path: uri.path().trim_end_matches('/').to_owned(),
                }
            })
            .collect();
        let settings = UpstreamSettings {
            name: "test".to_owned(),
            nodes,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            extra_roots: Vec::new(),
            retry_buffer_bytes: 0,
            cooldown: Duration::from_secs(60),
        };
        let attempts = |_: &str, _: &str| AttemptCounters::default();
        let first_byte = Histogram::new([1.0]);
        Upstream::new(&settings, &[], &Egress::default(), &attempts, first_byte, 1).unwrap()
    }

    #[test]
    fn each_node_gets_its_host_and_base_path_before_the_callers_target() {
        let upstream = upstream(&[
            "http://a.example.com:8080/",
            "http://b.example.com/campaign/",
        ]);
        let caller: Uri = "http://proxy.example.com/nl/jsp/soaprouter.jsp?x=1"
            .parse()
            .unwrap();
        assert_eq!(origin_form(&caller), "/nl/jsp/soaprouter.jsp?x=1");
        let mut request = Request::new(UpstreamBody::new(
            [],
            None,
            0,
            0,
            Some(0),
            Duration::from_secs(1),
        ));
        let original = origin_form(&caller);
        for (node, host, target) in [
            (0, "a.example.com:8080", "/nl/jsp/soaprouter.jsp?x=1"),
            (1, "b.example.com", "/campaign/nl/jsp/soaprouter.jsp?x=1"),
            // Back to the first: from the caller's target, not the last node's.
            (0, "a.example.com:8080", "/nl/jsp/soaprouter.jsp?x=1"),
        ] {
            upstream.nodes[node].aim(&mut request, Some(&original));
            assert_eq!(request.uri(), target);
            assert_eq!(values(request.headers(), "host"), [host]);
        }
    }

    #[test]
    fn the_choice_skips_failed_and_busy_nodes_and_takes_turns_among_equals() {
        let upstream = upstream(&["http://a", "http://b", "http://c"]);
        let turns: Vec<usize> = (0..6).map(|_| upstream.choose(0)).collect();
        assert_eq!(turns, [0, 1, 2, 0, 1, 2]);
        // Not one already tried for this request.
        assert_eq!(upstream.choose(0b011), 2);
        // Not one cooling down, while another is not.
        upstream.nodes[1].record(Outcome::ConnectError, upstream.cooldown);
        let mut turns: Vec<usize> = (0..4).map(|_| upstream.choose(0)).collect();
        turns.sort();
        assert_eq!(turns, [0, 0, 2, 2], "shared evenly by the others");
        // The one with fewest requests waiting.
        let _waiting = upstream.nodes[0].enter();
        assert_eq!(upstream.choose(0), 2);
        // Every node cooling down: all are tried rather than none.
        upstream.nodes[0].record(Outcome::Timeout, upstream.cooldown);
        upstream.nodes[2].record(Outcome::Error, upstream.cooldown);
        assert_eq!(upstream.choose(0b100), 1, "the least busy of those cooling");
        // An answer ends a cooldown; a caller's broken body does not start one.
        upstream.nodes[2].record(Outcome::Ok, upstream.cooldown);
        upstream.nodes[1].record(Outcome::BodyError, upstream.cooldown);
        assert_eq!(upstream.choose(0), 2);
        assert!(upstream.health().all(|node| node.upstream == "test"));
        let cooling: Vec<bool> = upstream.health().map(|node| node.cooling).collect();
        assert_eq!(cooling, [true, true, false]);
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
        forward_headers(
            &mut map,
            &Forwarding {
                bearer: None,
                peer: &HeaderValue::from_static("2001:db8::1"),
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
