//! What a request leaves behind: one log line and its counts in the metrics, written when the
//! answer has gone to the caller (or was abandoned), so that they carry the whole latency and
//! the bytes both ways. Nothing here holds a secret: callers are named, credentials are not.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderValue, Method, StatusCode, Uri};
use tokio::time::Instant;

use super::Way;
use super::prefix::Prefix;
use crate::access::AccessLine;
use crate::body::{Finish, Lingering};
use crate::callers::{AuthError, Caller, Callers, Route};
use crate::carriers::Credential;
use crate::config::Mode;
use crate::inventory::Seen;
use crate::metrics::{Metrics, RequestLabels};
use crate::soap::Action;
use crate::state::State;

/// The way a request went, as far as its log line and counts tell it. With the mode of the
/// caller it went as, it gives both labels of the line ([`Record::labels`]) and the way the
/// inventory counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Went {
    /// Answered here (Logon, Logoff).
    Local,
    /// To Campaign unchanged, as a configured caller.
    Legacy,
    /// To Campaign unchanged, a credential no caller owns (or none).
    Transparent,
    /// Not read at all, with `unknown_callers = "legacy"`.
    PassedThrough,
    /// The `ims` way.
    Ims,
}

/// What the log line of a request says, filled in as the pipeline goes.
pub(super) struct Record {
    pub request_id: HeaderValue,
    pub peer: IpAddr,
    pub method: Method,
    /// The caller's URI (a shared copy: only its path is logged).
    pub uri: Uri,
    pub caller: Option<Arc<str>>,
    /// The legacy login the request presented (never more of its credential), for the
    /// inventory.
    pub login: Option<Arc<str>>,
    /// The place of the caller it was routed to, among the configured callers.
    pub caller_index: Option<usize>,
    pub profile: Option<Arc<str>>,
    /// The mode of the caller it went as.
    pub caller_mode: Option<Mode>,
    /// `None`: refused, or not routed yet.
    pub went: Option<Went>,
    pub action: Option<Action>,
    pub upstream_status: Option<StatusCode>,
    /// Campaign refused the token and the call was sent again.
    pub retried: bool,
    /// Campaign's last answer refused the token (after the replay, if any).
    pub campaign_refused: bool,
    /// Body bytes received from the caller, counted as they come.
    pub bytes_in: Arc<AtomicU64>,
    pub started: Instant,
}

impl Record {
    pub(super) fn new(request_id: HeaderValue, peer: IpAddr, method: Method, uri: Uri) -> Record {
        Record {
            request_id,
            peer,
            method,
            uri,
            caller: None,
            login: None,
            caller_index: None,
            profile: None,
            caller_mode: None,
            went: None,
            action: None,
            upstream_status: None,
            retried: false,
            campaign_refused: false,
            bytes_in: Arc::default(),
            started: Instant::now(),
        }
    }

    fn caller(&mut self, caller: &Caller, went: Went) {
        self.caller = Some(caller.name.clone());
        self.login = Some(caller.login.clone());
        self.caller_index = Some(caller.index);
        self.caller_mode = Some(caller.mode);
        self.went = Some(went);
    }

    /// The way a request went when it was not routed (passed through unread).
    pub(super) fn went(&mut self, went: Went) {
        self.went = Some(went);
    }

    /// The login of a credential no configured caller was found for (yet), for the inventory.
    pub(super) fn presented(&mut self, credential: Credential<'_>) {
        if let Some(login) = credential.login() {
            self.login = Some(Arc::from(login));
        }
    }

    /// The `mode` and `route` labels of the log line and the metrics.
    pub(super) fn labels(&self) -> (&'static str, &'static str) {
        let mode = match (self.went, self.caller_mode) {
            (Some(Went::Transparent | Went::PassedThrough), _) => "transparent",
            // Refused before a way was taken: no mode in the labels, as the way is none.
            (None, _) | (_, None) => "-",
            (Some(_), Some(mode)) => mode.as_str(),
        };
        let route = match self.went {
            None | Some(Went::PassedThrough) => "-",
            Some(Went::Local) => "local",
            Some(Went::Legacy | Went::Transparent) => "legacy",
            Some(Went::Ims) => "ims",
        };
        (mode, route)
    }

    /// The way the cut-over history counts the request under (`cutover.rs`).
    fn history_way(&self) -> &'static str {
        let mode = self.caller_mode.map(|mode| match mode {
            Mode::Ims => "ims",
            Mode::Legacy => "legacy",
            Mode::Canary { .. } => "canary",
            Mode::Shadow => "shadow",
        });
        match self.went {
            Some(Went::Ims | Went::Local) => match self.caller_mode {
                Some(Mode::Canary { .. }) => "canary",
                _ => "ims",
            },
            Some(Went::Legacy) => match self.caller_mode {
                Some(Mode::Shadow) => "shadow",
                _ => "legacy",
            },
            Some(Went::Transparent | Went::PassedThrough) => "transparent",
            // Refused before a way was taken: the way of the caller's mode, if it is known.
            None => mode.unwrap_or("transparent"),
        }
    }

    /// The way the inventory counts the request under.
    fn inventory_way(&self) -> &'static str {
        match self.went {
            Some(Went::Transparent | Went::PassedThrough) => "transparent",
            // Refused before any way was taken.
            None => "refused",
            Some(Went::Local) => "local",
            Some(Went::Legacy) => "legacy",
            Some(Went::Ims) => "ims",
        }
    }

    /// The body prefix was read: the action it calls.
    pub(super) fn read(&mut self, parts: &http::request::Parts, prefix: &Prefix<Lingering>) {
        self.action = Some(Action::of_request(
            &parts.headers,
            parts.uri.query(),
            &prefix.envelope.method,
        ));
    }

    /// The way the caller check chose.
    pub(super) fn took(&mut self, way: &Way<'_>) {
        match way {
            Way::Local(_, Some(caller)) => self.caller(caller, Went::Local),
            Way::Local(_, None) => self.went = Some(Went::Local),
            Way::Routed(Route::Legacy(caller)) | Way::Shadowed { caller, .. } => {
                self.caller(caller, Went::Legacy);
            }
            Way::Routed(Route::Transparent) => self.went = Some(Went::Transparent),
            Way::Routed(Route::Ims(caller)) => self.caller(caller, Went::Ims),
        }
    }

    /// The caller named by a refusal, if any.
    pub(super) fn refused(&mut self, error: &AuthError, callers: &Callers) {
        let caller = match error {
            AuthError::WrongPassword(caller)
            | AuthError::NotAllowed { caller, .. }
            | AuthError::WrongCertificate(caller)
            | AuthError::LogonNotEnabled(caller) => caller,
            // No caller, or (an issued session of a caller gone from `ims` mode) one that may
            // not be configured any more: no caller label.
            AuthError::Missing
            | AuthError::Unknown
            | AuthError::Session(_)
            | AuthError::SessionOfNoImsCaller(_)
            | AuthError::Conflict(_)
            | AuthError::Busy => return,
        };
        self.caller_mode = callers.mode_of(caller);
        self.caller = Some(caller.clone());
    }
}

const NO_CALLER: &str = "-";

thread_local! {
    /// The caller label of requests no caller owns, made once per thread.
    static NO_CALLER_LABEL: Arc<str> = Arc::from(NO_CALLER);
}

/// The end of a request, written when its answer is done with.
pub(super) struct Completion {
    /// Where the request's counts are batched for the store.
    pub state: Arc<State>,
    pub record: Record,
    pub status: StatusCode,
    /// `ok`, or the kind of error the proxy answered.
    pub outcome: &'static str,
    /// `ok`, `refused` or `failed`, as the cut-over history counts it.
    pub history_outcome: &'static str,
    pub error: Option<String>,
    pub metrics: Arc<Metrics>,
}

impl Finish for Completion {
    fn finish(self: Box<Self>, bytes_out: u64) {
        let Completion {
            state,
            record,
            status,
            outcome,
            history_outcome,
            error,
            metrics,
        } = *self;
        let elapsed = record.started.elapsed();
        let bytes_in = record.bytes_in.load(Ordering::Relaxed);
        let (mode, route) = record.labels();
        if let Some(login) = &record.login {
            let way = record.inventory_way();
            let seen = Seen {
                login,
                caller: record.caller.as_ref(),
                index: record.caller_index,
                action: Some(
                    record
                        .action
                        .as_ref()
                        .map_or(record.uri.path(), Action::as_str),
                ),
                peer: record.peer,
                way,
                outcome,
                history_way: record.history_way(),
                history_outcome,
                at: std::time::SystemTime::now(),
            };
            metrics.inventory.count(&seen);
            state.count(&seen);
        }
        metrics.bytes_in.inc_by(bytes_in);
        metrics.bytes_out.inc_by(bytes_out);
        metrics.request(
            &RequestLabels {
                caller: match &record.caller {
                    Some(caller) => caller.clone(),
                    None => NO_CALLER_LABEL.with(Arc::clone),
                },
                mode,
                route,
                outcome,
            },
            elapsed.as_secs_f64(),
            record.upstream_status.map(|s| s.as_u16()),
            record.retried,
        );
        // Last: the line takes the record's values.
        crate::access::log(&AccessLine {
            request_id: record.request_id,
            peer: record.peer,
            method: record.method,
            uri: record.uri,
            caller: record.caller,
            profile: record.profile,
            action: record.action,
            mode,
            route,
            status: status.as_u16(),
            upstream_status: record.upstream_status.map_or(0, |s| s.as_u16()),
            retried: record.retried,
            bytes_in,
            bytes_out,
            latency_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            outcome,
            error,
        });
    }
}
