//! What a request leaves behind: one log line and its counts in the metrics, written when the
//! answer has gone to the caller (or was abandoned), so that they carry the whole latency and
//! the bytes both ways. Nothing here holds a secret: callers are named, credentials are not.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderValue, Method, StatusCode, Uri};
use tokio::time::Instant;

use crate::callers::{AuthError, Caller};
use crate::metrics::{Metrics, RequestLabels};
use crate::soap::Action;

/// What the log line of a request says, filled in as the pipeline goes.
pub struct Record {
    pub request_id: HeaderValue,
    pub peer: IpAddr,
    pub method: Method,
    /// The caller's URI (a shared copy: only its path is logged).
    pub uri: Uri,
    pub caller: Option<Arc<str>>,
    pub profile: Option<Arc<str>>,
    /// The caller's mode (`ims`, `legacy`, `canary`), or `transparent` for a credential no
    /// caller owns.
    pub mode: &'static str,
    /// The way this request took: `ims`, `legacy`, or `local` (answered here).
    pub route: &'static str,
    pub action: Option<Action>,
    pub upstream_status: Option<StatusCode>,
    /// Campaign refused the token and the call was sent again.
    pub retried: bool,
    /// Body bytes received from the caller, counted as they come.
    pub bytes_in: Arc<AtomicU64>,
    pub started: Instant,
}

impl Record {
    pub fn new(request_id: HeaderValue, peer: IpAddr, method: Method, uri: Uri) -> Record {
        Record {
            request_id,
            peer,
            method,
            uri,
            caller: None,
            profile: None,
            mode: "-",
            route: "-",
            action: None,
            upstream_status: None,
            retried: false,
            bytes_in: Arc::default(),
            started: Instant::now(),
        }
    }

    pub fn caller(&mut self, caller: &Caller, route: &'static str) {
        self.caller = Some(caller.name.clone());
        self.mode = caller.mode.as_str();
        self.route = route;
    }

    /// The caller named by a refusal, if any.
    pub fn refused(&mut self, error: &AuthError) {
        if let AuthError::WrongPassword(caller)
        | AuthError::NotAllowed { caller, .. }
        | AuthError::WrongCertificate(caller)
        | AuthError::LogonNotEnabled(caller) = error
        {
            self.caller = Some(caller.clone());
        }
    }
}

const NO_CALLER: &str = "-";

thread_local! {
    /// The caller label of requests no caller owns, made once per thread.
    static NO_CALLER_LABEL: Arc<str> = Arc::from(NO_CALLER);
}

/// The end of a request: written when dropped, that is when its answer is done with.
pub struct Completion {
    pub record: Record,
    pub status: StatusCode,
    /// `ok`, or the kind of error the proxy answered.
    pub outcome: &'static str,
    pub error: Option<String>,
    pub metrics: Arc<Metrics>,
    /// Body bytes sent to the caller.
    pub bytes_out: u64,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let record = &self.record;
        let elapsed = record.started.elapsed();
        let latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
        let bytes_in = record.bytes_in.load(Ordering::Relaxed);
        let caller = record.caller.as_deref().unwrap_or(NO_CALLER);
        let profile = record.profile.as_deref().unwrap_or("-");
        let action = record.action.as_ref().map_or("-", Action::as_str);
        let request_id = record.request_id.to_str().unwrap_or("-");
        let upstream_status = record.upstream_status.map_or(0, |s| s.as_u16());
        let status = self.status.as_u16();
        match &self.error {
            None => tracing::info!(
                target: "imsbridge::access",
                request_id, peer = %record.peer, method = %record.method, path = record.uri.path(),
                caller, profile, action, mode = record.mode, route = record.route,
                status, upstream_status, retried = record.retried, bytes_in,
                bytes_out = self.bytes_out, latency_ms, "request"
            ),
            Some(error) => tracing::warn!(
                target: "imsbridge::access",
                request_id, peer = %record.peer, method = %record.method, path = record.uri.path(),
                caller, profile, action, mode = record.mode, route = record.route,
                status, upstream_status, retried = record.retried, bytes_in,
                bytes_out = self.bytes_out, latency_ms, outcome = self.outcome, error = %error,
                "request refused"
            ),
        }
        self.metrics.bytes_in.inc_by(bytes_in);
        self.metrics.bytes_out.inc_by(self.bytes_out);
        self.metrics.request(
            &RequestLabels {
                caller: match &record.caller {
                    Some(caller) => caller.clone(),
                    None => NO_CALLER_LABEL.with(Arc::clone),
                },
                mode: record.mode,
                route: record.route,
                outcome: self.outcome,
            },
            elapsed.as_secs_f64(),
            record.upstream_status.map(|s| s.as_u16()),
            record.retried,
        );
    }
}
