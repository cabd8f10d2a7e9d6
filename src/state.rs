//! What imsbridge learns and must keep beyond one process (`[state]`, `docs/architecture.md`,
//! "State"): Logoff revocations, the failure counts of `server.password_failures`, the
//! inventory of logins, and the day-by-day counts the cut-over evidence rests on.
//!
//! Three backends behind one front, [`State`]:
//!
//! - memory (no `[state]`): SQLite in memory, held by the process and lost with it;
//! - SQLite (`state.path`, `state/sqlite.rs`): one file, one process, kept across restarts;
//! - Redis or Valkey (`state.redis`, `state/redis.rs`): shared by every replica; Logoffs are
//!   published to the others as they happen.
//!
//! The request path never waits for the store: what a request adds to the counts goes into a
//! batch in memory ([`State::count`]), written at least every `state.flush_interval` by one
//! task; revocations are checked against a mirror in memory, kept up to date from the store.
//! A store call takes at most `state.timeout`. When the store is down or slow, imsbridge serves
//! on: the revocations it knows still hold, failure limits fall back to the process's own
//! counters, and counts wait until it is back: each batch that could not be written is kept as
//! it is, with its id, and written again in order; the store writes a batch id once, so that a
//! batch whose write timed out but went through is not counted twice. Bounded: a batch holds at
//! most [`MAX_PENDING_LOGINS`] logins and [`MAX_PENDING_DAYS`] day counts, the batches waiting
//! at most [`MAX_WAITING_ENTRIES`] of them together; what does not fit is dropped and counted.

mod redis;
mod sqlite;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{Rate, StateBackend, StateSettings};
use crate::dates::{day_name, day_number, day_of};
use crate::inventory::{MAX_ACTIONS, MAX_PEERS, Report, Seen};
use crate::metrics::{Metrics, ShadowOutcome};

/// Logins whose counts wait in the batch at most, while the store is away.
pub(crate) const MAX_PENDING_LOGINS: usize = 10_000;
/// Day counts (a day, a caller or login, a way, an outcome) in a batch at most.
pub(crate) const MAX_PENDING_DAYS: usize = 50_000;
/// Logins and day counts of the batches waiting for the store, together, at most.
pub(crate) const MAX_WAITING_ENTRIES: usize = 100_000;
/// Batch ids the store remembers, to write each once.
const BATCH_IDS_KEPT: Duration = Duration::from_secs(24 * 3600);
/// Revocations remembered at most; past it, those that expire soonest are forgotten first (a
/// revocation forgotten still expires at its time).
pub(crate) const MAX_REVOKED: usize = 100_000;
/// How often the mirror of revocations is read again from a shared store, beside what is
/// published (a replica that missed a message, or a store restarted empty and filled again).
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// Why a store call failed. The texts never hold the Redis URL (it may hold a password).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StateError {
    #[error("the state store did not answer within state.timeout")]
    Timeout,
    #[error("the state store is not connected: {0}")]
    Unavailable(String),
    #[error("the state store failed: {0}")]
    Store(String),
}

/// Why the state store cannot be opened at start: the process does not start.
#[derive(Debug, thiserror::Error)]
pub enum StateOpenError {
    /// Another process holds the SQLite file.
    #[error("state.path: {0} is in use by another imsbridge process (one process per file)")]
    Locked(String),
    /// The file's schema is newer than this binary's.
    #[error(
        "state.path: {path} has schema version {found}, newer than this imsbridge's ({supported}): run the newer imsbridge, or move the file away"
    )]
    NewerSchema {
        /// The file.
        path: String,
        /// Its schema version.
        found: i64,
        /// The version this binary writes.
        supported: i64,
    },
    /// The file cannot be opened or read as a state store.
    #[error("state.path: {0}")]
    Sqlite(String),
}

/// A store operation, as `imsbridge_state_errors_total{op}` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    /// Writing a Logoff's revocation.
    Revoke,
    /// Reading the revocations again.
    Resync,
    /// Listening for other replicas' Logoffs.
    Subscribe,
    /// Reading or counting password failures.
    Failures,
    /// Writing the batch of counts.
    Flush,
    /// Reading the inventory or the history.
    Read,
}

impl Op {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Revoke => "revoke",
            Op::Resync => "resync",
            Op::Subscribe => "subscribe",
            Op::Failures => "failures",
            Op::Flush => "flush",
            Op::Read => "read",
        }
    }
}

/// What one login did since the last flush.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct LoginDelta {
    pub(crate) login: String,
    /// The configured caller whose login it is.
    pub(crate) caller: Option<String>,
    /// Seconds since the epoch.
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) actions: HashMap<String, u64>,
    /// Actions past [`MAX_ACTIONS`] in this batch.
    pub(crate) other_actions: u64,
    pub(crate) peers: HashMap<IpAddr, u64>,
    pub(crate) other_peers: u64,
    pub(crate) counts: HashMap<WayOutcome, u64>,
}

/// A way and an outcome (`ims`, `ok`); written `way|outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct WayOutcome {
    pub(crate) way: &'static str,
    pub(crate) outcome: &'static str,
}

impl Serialize for WayOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}|{}", self.way, self.outcome))
    }
}

/// A day (UTC, counted from the epoch), a way and an outcome: what a subject's day counts are
/// kept by until they are written (the day's name, `YYYY-MM-DD`, made then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct DayWay {
    pub(crate) day: u32,
    pub(crate) way: &'static str,
    pub(crate) outcome: &'static str,
}

/// What the shadow copies of a caller's action gave on a day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Tally {
    /// Copies whose answers were compared.
    pub(crate) comparisons: u64,
    pub(crate) matches: u64,
    pub(crate) mismatches: u64,
}

/// A day (UTC), a shadow caller, one of its actions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ShadowKey {
    pub(crate) day: String,
    pub(crate) caller: String,
    pub(crate) action: String,
}

/// Requests of a day, as the store gives them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DayCount {
    pub(crate) day: String,
    /// `caller:NAME` or `login:LOGIN`.
    pub(crate) subject: String,
    pub(crate) way: String,
    pub(crate) outcome: String,
    pub(crate) requests: u64,
}

/// What the cut-over verdicts rest on, as the store keeps it (`cutover.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct History {
    /// From the first day asked for.
    pub(crate) days: Vec<DayCount>,
    /// Each login's first and last call that went the legacy way (`login:LOGIN`).
    pub(crate) legacy: HashMap<String, LegacySpan>,
    /// From the first day asked for.
    pub(crate) shadow: Vec<(ShadowKey, Tally)>,
    /// `(caller, action)`: the last mismatch, seconds since the epoch.
    pub(crate) last_mismatch: HashMap<(String, String), u64>,
}

/// The first and last call of a subject that went the legacy way (passed through included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct LegacySpan {
    pub(crate) first: u64,
    pub(crate) last: u64,
}

/// What waits to be written. Counting a request allocates nothing for a login, a caller, a
/// peer, an action and a day already in it (the request path's cost).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Random: the store writes a batch once, whatever times it is sent.
    pub(crate) id: u64,
    pub(crate) logins: HashMap<String, LoginDelta>,
    /// A configured caller's requests by day, way and outcome (the history follows a caller's
    /// name, whatever its mode): `caller:NAME` in the store.
    pub(crate) caller_days: HashMap<Arc<str>, HashMap<DayWay, u64>>,
    /// A login no caller owns, the same: `login:LOGIN` in the store.
    pub(crate) login_days: HashMap<String, HashMap<DayWay, u64>>,
    /// The entries of `caller_days` and `login_days`, for the bound.
    pub(crate) day_entries: usize,
    /// Each login's first and last call that went the legacy way: `login:LOGIN` in the store.
    pub(crate) legacy: HashMap<String, LegacySpan>,
    pub(crate) shadow: HashMap<ShadowKey, Tally>,
    /// `(caller, action)`: the last mismatch, seconds since the epoch.
    pub(crate) mismatches: HashMap<(String, String), u64>,
    /// Revocations whose write failed: written again with the next batch.
    pub(crate) revoked: Vec<(String, u64)>,
}

/// A day count as the stores write it: the day (`YYYY-MM-DD`), the subject (`caller:NAME`,
/// `login:LOGIN`), the way, the outcome, the requests.
pub(crate) type DayRow = (String, String, &'static str, &'static str, u64);

impl Batch {
    fn is_empty(&self) -> bool {
        self.logins.is_empty()
            && self.day_entries == 0
            && self.legacy.is_empty()
            && self.shadow.is_empty()
            && self.revoked.is_empty()
    }

    /// Logins and day counts: what the bounds count.
    fn entries(&self) -> usize {
        self.logins.len() + self.day_entries + self.shadow.len()
    }

    /// The requests it counts, for `imsbridge_state_dropped_total` when it is dropped.
    pub(crate) fn requests(&self) -> u64 {
        let sum = |days: &HashMap<DayWay, u64>| days.values().sum::<u64>();
        self.caller_days.values().map(sum).sum::<u64>()
            + self.login_days.values().map(sum).sum::<u64>()
    }

    /// Counts a request of `subject` (found in `days`, or added) on `key`; false when the
    /// bound leaves no room for a new entry.
    fn count_day<K, Q>(
        days: &mut HashMap<K, HashMap<DayWay, u64>>,
        entries: &mut usize,
        subject: &Q,
        key: DayWay,
    ) -> bool
    where
        K: std::borrow::Borrow<Q> + std::hash::Hash + Eq + for<'a> From<&'a Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let room = *entries < MAX_PENDING_DAYS;
        let counts = match days.get_mut(subject) {
            Some(counts) => counts,
            None if room => days.entry(K::from(subject)).or_default(),
            None => return false,
        };
        if let Some(n) = counts.get_mut(&key) {
            *n += 1;
        } else if room {
            counts.insert(key, 1);
            *entries += 1;
        } else {
            return false;
        }
        true
    }

    /// The day counts, as the stores write them.
    pub(crate) fn day_rows(&self) -> Vec<DayRow> {
        let mut names: HashMap<u32, String> = HashMap::new();
        let mut rows = Vec::with_capacity(self.day_entries);
        let subjects = self
            .caller_days
            .iter()
            .map(|(caller, days)| (format!("caller:{caller}"), days))
            .chain(
                self.login_days
                    .iter()
                    .map(|(login, days)| (format!("login:{login}"), days)),
            );
        for (subject, days) in subjects {
            for (key, n) in days {
                let day = names.entry(key.day).or_insert_with(|| day_name(key.day));
                rows.push((day.clone(), subject.clone(), key.way, key.outcome, *n));
            }
        }
        rows
    }

    /// The legacy-way spans, by their subject in the store (`login:LOGIN`).
    pub(crate) fn legacy_rows(&self) -> Vec<(String, LegacySpan)> {
        self.legacy
            .iter()
            .map(|(login, span)| (format!("login:{login}"), *span))
            .collect()
    }
}

impl LegacySpan {
    fn widen(&mut self, other: LegacySpan) {
        self.first = match (self.first, other.first) {
            (0, b) => b,
            (a, 0) => a,
            (a, b) => a.min(b),
        };
        self.last = self.last.max(other.last);
    }
}

impl LoginDelta {
    fn count(&mut self, seen: &Seen<'_>, now: u64) {
        if self.first == 0 || now < self.first {
            self.first = now;
        }
        self.last = self.last.max(now);
        if let Some(caller) = seen.caller
            && self.caller.as_deref() != Some(&**caller)
        {
            self.caller = Some(caller.to_string());
        }
        if let Some(action) = seen.action {
            let action = crate::inventory::cut(action);
            if let Some(n) = self.actions.get_mut(action) {
                *n += 1;
            } else if self.actions.len() >= MAX_ACTIONS {
                self.other_actions += 1;
            } else {
                self.actions.insert(action.to_owned(), 1);
            }
        }
        if let Some(n) = self.peers.get_mut(&seen.peer) {
            *n += 1;
        } else if self.peers.len() >= MAX_PEERS {
            self.other_peers += 1;
        } else {
            self.peers.insert(seen.peer, 1);
        }
        *self
            .counts
            .entry(WayOutcome {
                way: seen.way,
                outcome: seen.outcome,
            })
            .or_default() += 1;
    }
}

/// Whether a way is the legacy one, for the last-legacy-call evidence: to Campaign with the
/// caller's own credential (a `legacy` or `canary` caller's share, a shadow caller's call, a
/// credential no caller owns, a request passed through unread).
fn is_legacy_way(way: &str) -> bool {
    matches!(way, "legacy" | "transparent")
}

/// The revocations this process knows: its own Logoffs and, with a shared store, the other
/// replicas'. Checked on every request that presents an issued session, without a store call.
#[derive(Default)]
pub(crate) struct Revocations {
    /// Nonce: expiry, seconds since the epoch.
    known: Mutex<HashMap<String, u64>>,
}

impl Revocations {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the session of `nonce` was ended by a Logoff.
    pub(crate) fn contains(&self, nonce: &str) -> bool {
        self.lock().contains_key(nonce)
    }

    /// Adds one revocation, as of `now`.
    #[cfg(test)]
    pub(crate) fn insert(&self, nonce: String, expires: u64, now: SystemTime) {
        self.add([(nonce, expires)], seconds(now));
    }

    /// Adds revocations (its own, or read from the store), bounded: past [`MAX_REVOKED`], the
    /// expired ones go, then those that expire soonest.
    fn add(&self, revoked: impl IntoIterator<Item = (String, u64)>, now: u64) {
        let mut known = self.lock();
        for (nonce, expires) in revoked {
            if expires <= now {
                continue;
            }
            if known.len() >= MAX_REVOKED && !known.contains_key(&nonce) {
                known.retain(|_, expiry| *expiry > now);
                while known.len() >= MAX_REVOKED {
                    let soonest = known
                        .iter()
                        .min_by_key(|(_, expiry)| **expiry)
                        .map(|(nonce, _)| nonce.clone());
                    match soonest {
                        Some(nonce) => known.remove(&nonce),
                        None => break,
                    };
                }
            }
            known.insert(nonce, expires);
        }
    }

    /// How many are known (the page).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// What the page and `/metrics` say of the store.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreStatus {
    /// `memory`, `sqlite`, `redis`.
    pub(crate) kind: &'static str,
    /// The file, or the Redis host and port (never its password).
    pub(crate) location: String,
    pub(crate) up: bool,
    /// Seconds since the epoch of the last batch written; 0: none yet.
    pub(crate) last_flush: u64,
    /// The last error, when it is down.
    pub(crate) error: Option<String>,
    /// Counts dropped while the store was away, since start.
    pub(crate) dropped: u64,
    /// Revocations known to this process.
    pub(crate) revocations: usize,
}

/// The backends.
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Redis(redis::RedisStore),
}

/// The front of the state store; see the module documentation.
pub(crate) struct State {
    backend: Backend,
    kind: &'static str,
    location: String,
    timeout: Duration,
    flush_interval: Duration,
    history_days: u32,
    clock: Clock,
    revocations: Arc<Revocations>,
    /// The batch being counted into.
    pending: Mutex<Batch>,
    /// Batches that could not be written yet, oldest first.
    waiting: tokio::sync::Mutex<std::collections::VecDeque<Arc<Batch>>>,
    /// `admin.inventory_max_logins`: logins no caller owns kept in the store.
    max_logins: usize,
    up: AtomicBool,
    last_flush: AtomicU64,
    last_error: Mutex<Option<String>>,
    dropped: AtomicU64,
    metrics: Arc<Metrics>,
    /// Ends the flush task and the subscriber.
    stop: watch::Sender<bool>,
}

impl State {
    /// Opens the store of `settings` and starts its flush task (and, with Redis, the listener
    /// of other replicas' Logoffs). A Redis server that cannot be reached is not an error:
    /// imsbridge serves on, and connects when it can.
    pub(crate) async fn start(
        settings: &StateSettings,
        max_logins: usize,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<State>, StateOpenError> {
        let state = State::open(settings, max_logins, clock, metrics)?;
        // What the store already knows: a restart keeps its revocations.
        state.resync().await;
        tokio::spawn(Arc::clone(&state).flush_loop());
        if let Backend::Redis(store) = &state.backend {
            tokio::spawn(store.clone().listen(
                Arc::clone(&state.revocations),
                state.clock.clone(),
                state.stop.subscribe(),
                state.metrics.clone(),
            ));
        }
        Ok(state)
    }

    /// The store of `settings`, opened, with nothing started (tests flush by hand).
    pub(crate) fn open(
        settings: &StateSettings,
        max_logins: usize,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<State>, StateOpenError> {
        let (backend, kind, location) = match &settings.backend {
            StateBackend::Memory => (
                Backend::Sqlite(sqlite::SqliteStore::open(None)?),
                "memory",
                "this process".to_owned(),
            ),
            StateBackend::Sqlite { path } => (
                Backend::Sqlite(sqlite::SqliteStore::open(Some(path))?),
                "sqlite",
                path.display().to_string(),
            ),
            StateBackend::Redis { url, key_prefix } => {
                let store = redis::RedisStore::new(url.expose(), key_prefix)
                    .map_err(StateOpenError::Sqlite)?;
                let location = store.location();
                (Backend::Redis(store), "redis", location)
            }
        };
        let (stop, _) = watch::channel(false);
        metrics.state_up(true);
        Ok(Arc::new(State {
            backend,
            kind,
            location,
            timeout: settings.timeout,
            flush_interval: settings.flush_interval,
            history_days: settings.history_days,
            clock,
            revocations: Arc::default(),
            pending: Mutex::default(),
            waiting: tokio::sync::Mutex::default(),
            max_logins,
            up: AtomicBool::new(true),
            last_flush: AtomicU64::new(0),
            last_error: Mutex::default(),
            dropped: AtomicU64::new(0),
            metrics,
            stop,
        }))
    }

    /// The revocations known here, which issued sessions are checked against.
    pub(crate) fn revocations(&self) -> Arc<Revocations> {
        Arc::clone(&self.revocations)
    }

    /// The store keeps the fleet's failure counts (Redis): the process's own are not all.
    pub(crate) fn counts_failures(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// The store keeps the inventory beyond this process (SQLite, Redis).
    pub(crate) fn keeps_inventory(&self) -> bool {
        self.kind != "memory"
    }

    fn now(&self) -> u64 {
        seconds(self.clock.now())
    }

    /// A store call, within `state.timeout`; its failure counted and remembered.
    async fn call<T>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StateError::Timeout),
        };
        match &result {
            Ok(_) => self.healthy(),
            Err(error) => self.failed(op, error),
        }
        result
    }

    fn healthy(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(store = self.kind, "the state store is back");
            self.metrics.state_up(true);
        }
    }

    fn failed(&self, op: Op, error: &StateError) {
        self.metrics.state_error(op.as_str());
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.to_string());
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(store = self.kind, op = op.as_str(), %error, "the state store is down: serving on, counts wait");
            self.metrics.state_up(false);
        }
    }

    /// Ends the session of `nonce` here at once, and in the store (every replica, with Redis);
    /// a write that fails is tried again with the next flush.
    pub(crate) async fn revoke(&self, nonce: String, expires: u64) {
        let now = self.now();
        self.revocations.add([(nonce.clone(), expires)], now);
        let written = match &self.backend {
            Backend::Sqlite(store) => self.call(Op::Revoke, store.revoke(&nonce, expires)).await,
            Backend::Redis(store) => self.call(Op::Revoke, store.revoke(&nonce, expires)).await,
        };
        if written.is_err() {
            let mut pending = self.lock_pending();
            if pending.revoked.len() < MAX_REVOKED {
                pending.revoked.push((nonce, expires));
            }
        }
    }

    /// Reads the store's revocations into the mirror.
    async fn resync(&self) {
        let now = self.now();
        let read = match &self.backend {
            Backend::Sqlite(store) => self.call(Op::Resync, store.revocations(now)).await,
            Backend::Redis(store) => self.call(Op::Resync, store.revocations(now)).await,
        };
        if let Ok(revoked) = read {
            self.revocations.add(revoked, now);
        }
    }

    /// Whether `key`'s failures in the fleet reached `rate` in its window; `None` when the
    /// store does not count them (or cannot say now): the process's own counts decide.
    pub(crate) async fn failures_over(&self, key: &str, rate: Rate) -> Option<bool> {
        let Backend::Redis(store) = &self.backend else {
            return None;
        };
        let count = self.call(Op::Failures, store.failures(key)).await.ok()?;
        Some(count >= u64::from(rate.count))
    }

    /// Counts a failure of `key` in the fleet, in a window of `rate`'s.
    pub(crate) async fn failed_check(&self, key: &str, rate: Rate) {
        if let Backend::Redis(store) = &self.backend {
            let _ = self
                .call(Op::Failures, store.count_failure(key, rate.window))
                .await;
        }
    }

    fn lock_pending(&self) -> MutexGuard<'_, Batch> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a finished request in the batch: no store call.
    pub(crate) fn count(&self, seen: &Seen<'_>) {
        // The store's clock: a test moves it to the next day.
        let now = self.now();
        let login = crate::inventory::cut(seen.login);
        let mut pending = self.lock_pending();
        let pending = &mut *pending;
        let mut counted = true;
        if let Some(delta) = pending.logins.get_mut(login) {
            delta.count(seen, now);
        } else if pending.logins.len() < MAX_PENDING_LOGINS {
            let mut delta = LoginDelta {
                login: login.to_owned(),
                ..LoginDelta::default()
            };
            delta.count(seen, now);
            pending.logins.insert(login.to_owned(), delta);
        } else {
            counted = false;
        }
        if is_legacy_way(seen.way) {
            let span = LegacySpan {
                first: now,
                last: now,
            };
            if let Some(known) = pending.legacy.get_mut(login) {
                known.widen(span);
            } else {
                pending.legacy.insert(login.to_owned(), span);
            }
        }
        let key = DayWay {
            day: day_number(now),
            way: seen.history_way,
            outcome: seen.history_outcome,
        };
        counted &= match seen.caller {
            Some(caller) => Batch::count_day(
                &mut pending.caller_days,
                &mut pending.day_entries,
                &**caller,
                key,
            ),
            None => Batch::count_day(
                &mut pending.login_days,
                &mut pending.day_entries,
                login,
                key,
            ),
        };
        if !counted {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.state_dropped(1);
        }
    }

    /// Counts what a shadow copy of `caller`'s `action` gave: no store call.
    pub(crate) fn shadow(&self, caller: &str, action: &str, outcome: ShadowOutcome) {
        let (matched, mismatched) = match outcome {
            ShadowOutcome::Match => (1, 0),
            ShadowOutcome::Mismatch => (0, 1),
            // Not compared: no evidence either way.
            ShadowOutcome::Busy
            | ShadowOutcome::TooLarge
            | ShadowOutcome::Unverified
            | ShadowOutcome::Failed
            | ShadowOutcome::Incomplete => return,
        };
        let now = self.now();
        let key = ShadowKey {
            day: day_of(now),
            caller: caller.to_owned(),
            action: crate::inventory::cut(action).to_owned(),
        };
        let mut pending = self.lock_pending();
        if mismatched > 0 {
            let last = pending
                .mismatches
                .entry((key.caller.clone(), key.action.clone()))
                .or_default();
            *last = (*last).max(now);
        }
        let room = pending.shadow.len() < MAX_PENDING_DAYS;
        if let Some(tally) = pending.shadow.get_mut(&key) {
            tally.comparisons += 1;
            tally.matches += matched;
            tally.mismatches += mismatched;
        } else if room {
            pending.shadow.insert(
                key,
                Tally {
                    comparisons: 1,
                    matches: matched,
                    mismatches: mismatched,
                },
            );
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.state_dropped(1);
        }
    }

    /// What the cut-over verdicts rest on, from the UTC day `since` (`YYYY-MM-DD`).
    pub(crate) async fn history(&self, since: &str) -> Result<History, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => self.call(Op::Read, store.history(since)).await,
            Backend::Redis(store) => {
                let today = day_of(self.now());
                let mut days = Vec::new();
                let mut at = self.now();
                loop {
                    let day = day_of(at);
                    if day.as_str() < since || days.len() > self.history_days as usize {
                        break;
                    }
                    days.push(day);
                    at = at.saturating_sub(86_400);
                }
                days.reverse();
                debug_assert!(days.last().is_none_or(|last| *last == today));
                self.call(Op::Read, store.history(&days)).await
            }
        }
    }

    /// The store's time of day.
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// How many days the history keeps.
    pub(crate) fn history_days(&self) -> u32 {
        self.history_days
    }

    /// Writes what waits, every `flush_interval`, until the process stops; then once more.
    async fn flush_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut resynced = tokio::time::Instant::now();
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(self.flush_interval) => false,
                _ = stop.changed() => true,
            };
            self.flush().await;
            if stopping || *stop.borrow() {
                return;
            }
            if self.kind == "redis" && resynced.elapsed() >= RESYNC_EVERY {
                resynced = tokio::time::Instant::now();
                self.resync().await;
            }
        }
    }

    /// Writes the batch counted since the last flush, after the batches still waiting, oldest
    /// first; stops at the first that cannot be written (it waits for the next flush).
    pub(crate) async fn flush(&self) {
        let batch = std::mem::take(&mut *self.lock_pending());
        let mut waiting = self.waiting.lock().await;
        if !batch.is_empty() {
            waiting.push_back(Arc::new(Batch {
                id: fastrand::u64(..),
                ..batch
            }));
        }
        // Within the bound: the oldest go first.
        let mut entries: usize = waiting.iter().map(|b| b.entries()).sum();
        while entries > MAX_WAITING_ENTRIES {
            let Some(oldest) = waiting.pop_front() else {
                break;
            };
            entries -= oldest.entries();
            let dropped = oldest.requests();
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            self.metrics.state_dropped(dropped);
        }
        let now = self.now();
        if waiting.is_empty() {
            // Nothing to write: a look at the store says whether it is up.
            let _ = self.write(None, now).await;
            return;
        }
        while let Some(batch) = waiting.front().cloned() {
            if self.write(Some(batch), now).await.is_err() {
                return;
            }
            waiting.pop_front();
            self.last_flush.store(now, Ordering::Relaxed);
        }
    }

    /// Writes one batch (`None`: only looks whether the store answers).
    async fn write(&self, batch: Option<Arc<Batch>>, now: u64) -> Result<(), StateError> {
        let (history_days, max_logins) = (self.history_days, self.max_logins);
        match &self.backend {
            Backend::Sqlite(store) => {
                self.call(Op::Flush, store.flush(batch, now, history_days, max_logins))
                    .await
            }
            Backend::Redis(store) => {
                self.call(Op::Flush, store.flush(batch, now, history_days, max_logins))
                    .await
            }
        }
    }

    /// The fleet's inventory as the store keeps it, for `GET /inventory` and the page.
    pub(crate) async fn inventory(&self, max_logins: usize) -> Result<Report, StateError> {
        match &self.backend {
            Backend::Sqlite(store) => self.call(Op::Read, store.inventory(max_logins)).await,
            Backend::Redis(store) => self.call(Op::Read, store.inventory(max_logins)).await,
        }
    }

    /// The store as the page shows it.
    pub(crate) fn status(&self) -> StoreStatus {
        let up = self.up.load(Ordering::Relaxed);
        StoreStatus {
            kind: self.kind,
            location: self.location.clone(),
            up,
            last_flush: self.last_flush.load(Ordering::Relaxed),
            error: if up {
                None
            } else {
                self.last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            },
            dropped: self.dropped.load(Ordering::Relaxed),
            revocations: self.revocations.len(),
        }
    }

    /// Writes what is left, stops the flush task and the listener, and closes the store (an
    /// SQLite file is then free for another process).
    pub(crate) async fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.flush().await;
        if let Backend::Sqlite(store) = &self.backend {
            store.close().await;
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `peer` as the failure counts name it.
pub(crate) fn peer_key(peer: IpAddr) -> String {
    format!("peer:{peer}")
}

/// `login` as the failure counts name it.
pub(crate) fn login_key(login: &str) -> String {
    format!("login:{}", crate::inventory::cut(login))
}

#[cfg(test)]
mod tests;
