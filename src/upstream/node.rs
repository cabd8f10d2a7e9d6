//! One node of a Campaign instance: its pool of connections, where requests to it go (`Host`
//! and base path), and its health as the requests sent to it found it: skipped for the
//! upstream's `cooldown` after it refused a connection or timed out, and how many requests are
//! waiting on it now.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri};
use prometheus_client::metrics::counter::Counter;

use super::pool::Pool;
use crate::body::UpstreamBody;

/// The counts of a node's attempts, by outcome (`imsbridge_upstream_attempts_total`).
#[derive(Clone, Default)]
pub(crate) struct AttemptCounters {
    /// Campaign answered (whatever its status).
    pub ok: Counter,
    /// No connection: refused, unreachable, TLS refused, a proxy's `CONNECT` refused.
    pub connect_error: Counter,
    /// No connection within `connect_timeout`.
    pub connect_timeout: Counter,
    /// The request went out; no answer within `timeout`.
    pub timeout: Counter,
    /// The request went out; the connection broke before the answer.
    pub error: Counter,
    /// The caller's body broke off or was too large: not the node's doing.
    pub body_error: Counter,
}

/// How an attempt on a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Ok,
    ConnectError,
    ConnectTimeout,
    Timeout,
    Error,
    BodyError,
}

impl Outcome {
    /// Whether the node is skipped for a while after it.
    fn cools(self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::BodyError)
    }
}

pub(super) struct Node {
    pub(super) pool: Pool,
    /// Its URL, as the config wrote it: the `node` label and what errors name.
    url: String,
    /// `Host` sent to it: Campaign (and the load balancer before it) route on it.
    host: HeaderValue,
    /// Path the caller's path is appended to; empty when its URL has none.
    base_path: String,
    /// Until when (milliseconds on [`clock`]) it is skipped; 0: never failed, or answered since.
    cool_until: AtomicU64,
    /// Requests sent to it and not yet answered (only counted when there is a choice).
    in_flight: AtomicUsize,
    attempts: AttemptCounters,
}

impl Node {
    pub(super) fn new(
        pool: Pool,
        url: String,
        host: HeaderValue,
        base_path: String,
        attempts: AttemptCounters,
    ) -> Node {
        Node {
            pool,
            url,
            host,
            base_path,
            cool_until: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            attempts,
        }
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The request target it gets (origin form): its base path, then the caller's path and
    /// query.
    pub(super) fn uri(&self, original: &Uri) -> Uri {
        if self.base_path.is_empty() {
            return super::origin_form(original);
        }
        let path_and_query = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let joined = format!("{}{}", self.base_path, path_and_query);
        Uri::from(joined.parse().unwrap_or(path_and_query))
    }

    /// Points `request` at this node: its `Host`, and its base path before `original` (the
    /// caller's target) when it has one.
    pub(super) fn aim(&self, request: &mut Request<UpstreamBody>, original: Option<&Uri>) {
        if let Some(original) = original {
            *request.uri_mut() = self.uri(original);
        }
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
    }

    /// Whether it is being skipped at `now` (milliseconds on [`clock`]).
    pub(super) fn cooling(&self, now: u64) -> bool {
        now < self.cool_until.load(Ordering::Relaxed)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request waiting on it, until the guard is dropped.
    pub(super) fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Counts an attempt; one that failed it skips the node for `cooldown`, one answered ends
    /// any cooldown (a caller's broken body does neither).
    pub(super) fn record(&self, outcome: Outcome, cooldown: Duration) {
        let counter = match outcome {
            Outcome::Ok => &self.attempts.ok,
            Outcome::ConnectError => &self.attempts.connect_error,
            Outcome::ConnectTimeout => &self.attempts.connect_timeout,
            Outcome::Timeout => &self.attempts.timeout,
            Outcome::Error => &self.attempts.error,
            Outcome::BodyError => &self.attempts.body_error,
        };
        counter.inc();
        if outcome.cools() {
            let until = clock().saturating_add(cooldown.as_millis() as u64).max(1);
            self.cool_until.store(until, Ordering::Relaxed);
            tracing::warn!(node = %self.url, ?outcome, cooldown = ?cooldown, "Campaign node failed; skipped while others answer");
        } else if outcome == Outcome::Ok && self.cool_until.load(Ordering::Relaxed) != 0 {
            // Read first: the common case writes nothing that other cores share.
            self.cool_until.store(0, Ordering::Relaxed);
        }
    }
}

/// A request counted as waiting on a node.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Milliseconds since the first call: the clock of cooldowns.
pub(super) fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
