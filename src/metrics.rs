//! What `/metrics` shows, in the Prometheus text format (OpenMetrics), with the
//! `prometheus-client` crate: requests by caller, mode, route and outcome; latency; Campaign's
//! status classes; retries; token fetches and failures by profile; seconds until each token
//! expires; bytes in and out; connections; and one series per caller naming its mode, so that a
//! dashboard can follow a migration.
//!
//! One [`Metrics`] lives for the whole process: a reload makes a new proxy, not new counters.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ims::{FetchCounters, Readiness};
use crate::inventory::Inventory;
use crate::server::Connections;
use crate::upstream::{AttemptCounters, NodeHealth};

/// The labels of a finished request. Counted on every request: nothing here allocates but the
/// caller's name, which is shared.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The caller's name; `-` when no caller owns the credential.
    pub caller: Arc<str>,
    /// Its configured mode: `ims`, `legacy`, `canary`; `transparent`; `-` when refused early.
    pub mode: &'static str,
    /// The way taken: `ims`, `legacy`, `local`, `-`.
    pub route: &'static str,
    /// `ok`, or why the proxy answered itself (`wrong_password`, `no_token`, …).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    /// `2xx`, `4xx`, `5xx`…
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    profile: String,
    /// `ok` or `failed`.
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileLabels {
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    upstream: String,
    /// The node's URL.
    node: String,
    /// `ok`, `connect_error`, `connect_timeout`, `timeout`, `error`, `body_error`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    caller: String,
    action: String,
    /// `match`, `mismatch`, or why there was no comparison ([`ShadowOutcome`]).
    result: &'static str,
}

/// What the shadow copy of a call gave: a comparison, or why there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ShadowOutcome {
    /// The `ims` way answered as the legacy way did (as XML, white space between elements
    /// aside, and with the same status).
    Match,
    /// It answered otherwise.
    Mismatch,
    /// `admin.shadow_max_in_flight` copies were on their way.
    Busy,
    /// The body or an answer was over `retry_buffer_bytes`.
    TooLarge,
    /// The call presented another password than the caller's.
    Unverified,
    /// No token, or Campaign unreachable, on the `ims` way.
    Failed,
    /// The call or the legacy answer was cut off.
    Incomplete,
}

impl ShadowOutcome {
    /// Its `result` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ShadowOutcome::Match => "match",
            ShadowOutcome::Mismatch => "mismatch",
            ShadowOutcome::Busy => "busy",
            ShadowOutcome::TooLarge => "too_large",
            ShadowOutcome::Unverified => "unverified",
            ShadowOutcome::Failed => "failed",
            ShadowOutcome::Incomplete => "incomplete",
        }
    }
}

/// What the shadow copies of a caller's action gave, by outcome.
pub(crate) type ShadowCounts = std::collections::BTreeMap<ShadowOutcome, u64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// The process's own gauges, read from `/proc` when `/metrics` is asked for.
#[derive(Default)]
struct Process {
    resident_memory: Gauge,
    cpu_seconds: Gauge<f64, AtomicU64>,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge,
}

impl Process {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            self.resident_memory.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time of the process, user and system (a counter, read at each scrape)",
            self.cpu_seconds.clone(),
        );
        registry.register(
            "process_open_fds",
            "File descriptors the process has open (sockets included)",
            self.open_fds.clone(),
        );
        registry.register(
            "process_max_fds",
            "The process's limit of open file descriptors",
            self.max_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch",
            self.start_time.clone(),
        );
        self.start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
    }

    /// Reads the process's state now (Linux's `/proc`; elsewhere the gauges stay at 0).
    fn read(&self) {
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(pages) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<i64>().ok())
        {
            self.resident_memory
                .set(pages * rustix::param::page_size() as i64);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // After the command's closing parenthesis: field 3 on; utime and stime are 14 and 15.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
            let ticks = |i: usize| fields.get(i).and_then(|t| t.parse::<u64>().ok());
            if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
                let per_second = rustix::param::clock_ticks_per_second() as f64;
                self.cpu_seconds.set((user + system) as f64 / per_second);
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        if let Some(max) = limit.current {
            self.max_fds.set(max.min(i64::MAX as u64) as i64);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// `ok` or `failed`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    upstream: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerLabels {
    caller: String,
    mode: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    upstream: Family<ClassLabels, Counter>,
    retries: Counter,
    fetches: Family<FetchLabels, Counter>,
    expiry: Family<ProfileLabels, Gauge<f64, AtomicU64>>,
    callers: Family<CallerLabels, Gauge>,
    attempts: Family<AttemptLabels, Counter>,
    nodes_up: Family<NodeLabels, Gauge>,
    nodes_in_flight: Family<NodeLabels, Gauge>,
    /// Every legacy login seen (`GET /inventory`, the admin page).
    pub inventory: Inventory,
    shadow: Family<ShadowLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    fetch_seconds: Family<ProfileLabels, Histogram, fn() -> Histogram>,
    first_byte: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    process: Process,
    /// The same counts, for the admin page: by caller and action.
    shadow_table: Mutex<BTreeMap<(String, String), ShadowCounts>>,
    /// Body bytes received from callers, and sent to them.
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    connections_open: Gauge,
    connections_accepted: Counter,
    worker_connections: Family<WorkerLabels, Counter>,
    connections_refused_per_ip: Counter,
    password_checks_pending: Gauge,
    shadow_copies_in_flight: Gauge,
    state_up: Gauge,
    state_errors: Family<OpLabels, Counter>,
    state_dropped: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    /// `revoke`, `resync`, `subscribe`, `failures`, `flush`, `read`.
    op: &'static str,
}

/// What the proxy is busy with at the moment of a scrape.
pub(crate) struct Busy {
    /// argon2 checks waiting or running.
    pub(crate) password_checks: usize,
    /// Shadow copies on their way.
    pub(crate) shadow_copies: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("imsbridge");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests, by caller, mode, route taken and outcome",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to the last byte of its answer, by route",
            latency.clone(),
        );
        let upstream = Family::<ClassLabels, Counter>::default();
        registry.register(
            "upstream_responses",
            "Campaign's answers, by status class",
            upstream.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "retries",
            "Calls sent again with a new token after Campaign refused the first",
            retries.clone(),
        );
        let fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "token_fetches",
            "IMS token requests, by profile and result",
            fetches.clone(),
        );
        let expiry = Family::<ProfileLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "token_expiry_seconds",
            "Seconds until the profile's token expires (0: no valid token)",
            expiry.clone(),
        );
        let callers = Family::<CallerLabels, Gauge>::default();
        registry.register(
            "caller",
            "One series per configured caller, naming its mode (value 1)",
            callers.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Requests sent to a Campaign node (each node tried counts), by upstream, node and outcome",
            attempts.clone(),
        );
        let nodes_up = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "upstream_node_up",
            "1 when the Campaign node takes requests, 0 while it is skipped after a failure (cooldown)",
            nodes_up.clone(),
        );
        let nodes_in_flight = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "upstream_node_in_flight",
            "Requests waiting on the Campaign node's answer now (counted when the upstream has several nodes)",
            nodes_in_flight.clone(),
        );
        let shadow = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "shadow_comparisons",
            "Shadow copies of a caller's calls, by caller, action and result: match, mismatch, or why none was compared (busy, too_large, unverified, failed, incomplete)",
            shadow.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP or a change to the file), by result: ok, or failed (the running config stays)",
            reloads.clone(),
        );
        for result in ["ok", "failed"] {
            let _ = reloads.get_or_create(&ResultLabels { result });
        }
        let fetch_seconds =
            Family::<ProfileLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                crate::ims::fetch_histogram as fn() -> Histogram,
            );
        registry.register(
            "ims_fetch_duration_seconds",
            "Time of each token request to IMS, by profile (failed ones included)",
            fetch_seconds.clone(),
        );
        let first_byte =
            Family::<UpstreamLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            "upstream_first_byte_seconds",
            "Time from sending a request to Campaign to the head of its answer, by upstream (every node tried included)",
            first_byte.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The version and commit of this binary (value 1)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("IMSBRIDGE_COMMIT"),
            })
            .set(1);
        let process = Process::default();
        process.register(&mut registry);
        let bytes_in = Counter::default();
        registry.register(
            "request_bytes",
            "Body bytes received from callers",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "response_bytes",
            "Body bytes sent to callers",
            bytes_out.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Connections from callers open now",
            connections_open.clone(),
        );
        let connections_accepted = Counter::default();
        registry.register(
            "connections_accepted",
            "Connections from callers accepted",
            connections_accepted.clone(),
        );
        let worker_connections = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "worker_connections_accepted",
            "Connections from callers accepted by each worker (server.workers): how the kernel spread them over their sockets",
            worker_connections.clone(),
        );
        let connections_refused_per_ip = Counter::default();
        registry.register(
            "connections_refused_per_ip",
            "Connections closed at once: their address had server.max_connections_per_ip open",
            connections_refused_per_ip.clone(),
        );
        let password_checks_pending = Gauge::default();
        registry.register(
            "password_checks_pending",
            "argon2 password checks waiting or running now (at most server.max_pending_password_checks)",
            password_checks_pending.clone(),
        );
        let shadow_copies_in_flight = Gauge::default();
        registry.register(
            "shadow_copies_in_flight",
            "Shadow copies on their way now (at most admin.shadow_max_in_flight)",
            shadow_copies_in_flight.clone(),
        );
        let state_up = Gauge::default();
        registry.register(
            "state_up",
            "1 while the state store ([state]) answers, 0 while it is down (imsbridge serves on)",
            state_up.clone(),
        );
        let state_errors = Family::<OpLabels, Counter>::default();
        registry.register(
            "state_errors",
            "Failed calls to the state store, by operation",
            state_errors.clone(),
        );
        let state_dropped = Counter::default();
        registry.register(
            "state_dropped",
            "Requests whose counts were dropped while the state store was away (past the bound of what waits)",
            state_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            upstream,
            retries,
            fetches,
            expiry,
            callers,
            attempts,
            nodes_up,
            nodes_in_flight,
            inventory: Inventory::default(),
            shadow,
            shadow_table: Mutex::default(),
            reloads,
            fetch_seconds,
            first_byte,
            process,
            bytes_in,
            bytes_out,
            connections_open,
            connections_accepted,
            worker_connections,
            connections_refused_per_ip,
            password_checks_pending,
            shadow_copies_in_flight,
            state_up,
            state_errors,
            state_dropped,
        }
    }

    /// Whether the state store answers.
    pub(crate) fn state_up(&self, up: bool) {
        self.state_up.set(i64::from(up));
    }

    /// Counts a failed call to the state store.
    pub(crate) fn state_error(&self, op: &'static str) {
        self.state_errors.get_or_create(&OpLabels { op }).inc();
    }

    /// Counts requests whose counts were dropped.
    pub(crate) fn state_dropped(&self, requests: u64) {
        self.state_dropped.inc_by(requests);
    }

    /// Counts a finished request.
    pub(crate) fn request(
        &self,
        labels: &RequestLabels,
        seconds: f64,
        upstream_status: Option<u16>,
        retried: bool,
    ) {
        self.requests.get_or_create(labels).inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: labels.route,
            })
            .observe(seconds);
        if let Some(status) = upstream_status {
            let class = match status / 100 {
                1 => "1xx",
                2 => "2xx",
                3 => "3xx",
                4 => "4xx",
                5 => "5xx",
                _ => "other",
            };
            self.upstream.get_or_create(&ClassLabels { class }).inc();
        }
        if retried {
            self.retries.inc();
        }
    }

    /// The counters of a profile's token fetches.
    pub(crate) fn fetches(&self, profile: &str) -> FetchCounters {
        let counter = |result: &str| {
            self.fetches
                .get_or_create(&FetchLabels {
                    profile: profile.to_owned(),
                    result: result.to_owned(),
                })
                .clone()
        };
        FetchCounters {
            ok: counter("ok"),
            failed: counter("failed"),
            seconds: self
                .fetch_seconds
                .get_or_create(&ProfileLabels {
                    profile: profile.to_owned(),
                })
                .clone(),
        }
    }

    /// The histogram of Campaign's time to the head of its answer, for an upstream.
    pub(crate) fn first_byte(&self, upstream: &str) -> Histogram {
        self.first_byte
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .clone()
    }

    /// Counts what the shadow copy of a call of `caller`'s `action` gave.
    pub(crate) fn shadow(&self, caller: &str, action: &str, result: ShadowOutcome) {
        self.shadow
            .get_or_create(&ShadowLabels {
                caller: caller.to_owned(),
                action: action.to_owned(),
                result: result.as_str(),
            })
            .inc();
        let mut table = self
            .shadow_table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *table
            .entry((caller.to_owned(), action.to_owned()))
            .or_default()
            .entry(result)
            .or_default() += 1;
    }

    /// The shadow counts by caller and action, for the admin page.
    pub(crate) fn shadow_table(&self) -> Vec<((String, String), ShadowCounts)> {
        let table = self
            .shadow_table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Counts a reload attempt.
    pub(crate) fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// The counters of the attempts on a node of an upstream.
    pub(crate) fn attempts(&self, upstream: &str, node: &str) -> AttemptCounters {
        let counter = |outcome: &'static str| {
            self.attempts
                .get_or_create(&AttemptLabels {
                    upstream: upstream.to_owned(),
                    node: node.to_owned(),
                    outcome,
                })
                .clone()
        };
        AttemptCounters {
            ok: counter("ok"),
            connect_error: counter("connect_error"),
            connect_timeout: counter("connect_timeout"),
            timeout: counter("timeout"),
            error: counter("error"),
            body_error: counter("body_error"),
        }
    }

    /// Names the callers of the running config and their modes (after a start or a reload).
    pub(crate) fn set_callers<'a>(&self, callers: impl Iterator<Item = (&'a str, &'a str)>) {
        self.callers.clear();
        for (caller, mode) in callers {
            self.callers
                .get_or_create(&CallerLabels {
                    caller: caller.to_owned(),
                    mode: mode.to_owned(),
                })
                .set(1);
        }
    }

    /// The text exposition; gauges read at this moment.
    pub(crate) fn render<'a>(
        &self,
        profiles: impl Iterator<Item = (&'a str, Readiness)>,
        nodes: impl Iterator<Item = NodeHealth<'a>>,
        connections: &Connections,
        busy: &Busy,
    ) -> String {
        // The nodes of the running config only: a reload may have removed some.
        self.nodes_up.clear();
        self.nodes_in_flight.clear();
        for node in nodes {
            let labels = NodeLabels {
                upstream: node.upstream.to_owned(),
                node: node.node.to_owned(),
            };
            self.nodes_up
                .get_or_create(&labels)
                .set(i64::from(!node.cooling));
            self.nodes_in_flight
                .get_or_create(&labels)
                .set(node.in_flight as i64);
        }
        self.expiry.clear();
        for (profile, readiness) in profiles {
            let seconds = match readiness {
                Readiness::Ready { expires_in } => expires_in.as_secs_f64(),
                Readiness::NotReady(_) => 0.0,
            };
            self.expiry
                .get_or_create(&ProfileLabels {
                    profile: profile.to_owned(),
                })
                .set(seconds);
        }
        self.process.read();
        self.connections_open.set(connections.open());
        self.password_checks_pending
            .set(i64::try_from(busy.password_checks).unwrap_or(i64::MAX));
        self.shadow_copies_in_flight
            .set(i64::try_from(busy.shadow_copies).unwrap_or(i64::MAX));
        let accepted = connections.accepted();
        let counted = self.connections_accepted.get();
        self.connections_accepted
            .inc_by(accepted.saturating_sub(counted));
        for (worker, accepted) in connections.by_worker().into_iter().enumerate() {
            let counter = self.worker_connections.get_or_create(&WorkerLabels {
                worker: worker.to_string(),
            });
            counter.inc_by(accepted.saturating_sub(counter.get()));
        }
        let refused = connections.refused_per_ip();
        let counted = self.connections_refused_per_ip.get();
        self.connections_refused_per_ip
            .inc_by(refused.saturating_sub(counted));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
