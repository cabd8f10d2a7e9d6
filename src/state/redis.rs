//! The Redis or Valkey store (`state.redis`), shared by every replica: redis-rs on tokio, one
//! multiplexed connection that reconnects by itself (`ConnectionManager`), and one pub/sub
//! connection on which a replica hears of the others' Logoffs as they happen.
//!
//! Keys, under `state.key_prefix` (docs/operations.md, "State"): `revoked` (a sorted set of nonces by
//! expiry, and the channel Logoffs are published on), `fail:login:…` and `fail:peer:…`
//! (failure counts, expiring with their window), `inv:LOGIN` (a hash per login),
//! `inv:callers` and `inv:others` (logins by last seen), `inv:dropped`, `day:YYYY-MM-DD`
//! (hashes of `subject|way|outcome`, expiring after `history_days`), `legacy` and `batch:ID`
//! (the batches written, for a day). A batch is written by one Lua script, so that a flush is
//! one command, whatever it holds. A standalone server (or a primary) is expected: the script
//! names keys it is not given, which Redis Cluster refuses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::watch;

use super::{Batch, DayCount, History, Revocations, ShadowKey, StateError, Tally};
use crate::clock::Clock;
use crate::inventory::{LoginReport, MAX_ACTIONS, MAX_PEERS, Named, Report, WayCount};
use crate::metrics::Metrics;

/// Writes a batch; see the module documentation.
const FLUSH: &str = r"
local p = ARGV[1]
if redis.call('SET', p .. 'batch:' .. ARGV[7], '1', 'NX', 'EX', ARGV[8]) == false then
  return 0
end
local batch = cjson.decode(ARGV[2])
local max_logins = tonumber(ARGV[3])
local max_actions = tonumber(ARGV[4])
local max_peers = tonumber(ARGV[5])
local day_ttl = tonumber(ARGV[6])
local function bounded(key, prefix, held, other, name, n, max)
  local field = prefix .. name
  if redis.call('HEXISTS', key, field) == 1 then
    redis.call('HINCRBY', key, field, n)
  elseif tonumber(redis.call('HGET', key, held) or 0) < max then
    redis.call('HINCRBY', key, field, n)
    redis.call('HINCRBY', key, held, 1)
  else
    redis.call('HINCRBY', key, other, n)
  end
end
for _, l in ipairs(batch.logins) do
  local key = p .. 'inv:' .. l.login
  local first = tonumber(redis.call('HGET', key, 'first') or 0)
  if first == 0 or l.first < first then redis.call('HSET', key, 'first', l.first) end
  local last = tonumber(redis.call('HGET', key, 'last') or 0)
  if l.last > last then
    last = l.last
    redis.call('HSET', key, 'last', last)
  end
  if type(l.caller) == 'string' then redis.call('HSET', key, 'caller', l.caller) end
  for name, n in pairs(l.actions) do bounded(key, 'a:', 'na', 'oa', name, n, max_actions) end
  if l.other_actions > 0 then redis.call('HINCRBY', key, 'oa', l.other_actions) end
  for name, n in pairs(l.peers) do bounded(key, 'p:', 'np', 'op', name, n, max_peers) end
  if l.other_peers > 0 then redis.call('HINCRBY', key, 'op', l.other_peers) end
  for wo, n in pairs(l.counts) do redis.call('HINCRBY', key, 'c:' .. wo, n) end
  if redis.call('HEXISTS', key, 'caller') == 1 then
    redis.call('ZADD', p .. 'inv:callers', last, l.login)
    redis.call('ZREM', p .. 'inv:others', l.login)
  else
    redis.call('ZADD', p .. 'inv:others', last, l.login)
  end
end
local excess = redis.call('ZCARD', p .. 'inv:others') - max_logins
if excess > 0 then
  local gone = redis.call('ZPOPMIN', p .. 'inv:others', excess)
  for i = 1, #gone, 2 do redis.call('DEL', p .. 'inv:' .. gone[i]) end
  redis.call('INCRBY', p .. 'inv:dropped', excess)
end
for _, d in ipairs(batch.days) do
  local key = p .. 'day:' .. d[1]
  redis.call('HINCRBY', key, d[2] .. '|' .. d[3] .. '|' .. d[4], d[5])
  redis.call('EXPIRE', key, day_ttl)
end
for _, g in ipairs(batch.legacy) do
  local key = p .. 'legacy'
  local first = tonumber(redis.call('HGET', key, g[1] .. '|first') or 0)
  if first == 0 or g[2] < first then redis.call('HSET', key, g[1] .. '|first', g[2]) end
  local last = tonumber(redis.call('HGET', key, g[1] .. '|last') or 0)
  if g[3] > last then redis.call('HSET', key, g[1] .. '|last', g[3]) end
end
for _, t in ipairs(batch.shadow) do
  local key = p .. 'shadow:' .. t[1]
  local field = t[2] .. '\31' .. t[3] .. '\31'
  redis.call('HINCRBY', key, field .. 'c', t[4])
  redis.call('HINCRBY', key, field .. 'm', t[5])
  redis.call('HINCRBY', key, field .. 'x', t[6])
  redis.call('EXPIRE', key, day_ttl)
end
for _, m in ipairs(batch.mismatches) do
  local key = p .. 'shadow:last'
  local field = m[1] .. '\31' .. m[2]
  local last = tonumber(redis.call('HGET', key, field) or 0)
  if m[3] > last then redis.call('HSET', key, field, m[3]) end
end
for _, r in ipairs(batch.revoked) do
  redis.call('ZADD', p .. 'revoked', r[2], r[1])
  redis.call('PUBLISH', p .. 'revoked', r[1] .. ' ' .. r[2])
end
return 1
";

/// A batch as the script reads it.
#[derive(Serialize)]
struct Written<'a> {
    logins: Vec<&'a super::LoginDelta>,
    days: Vec<(&'a str, &'a str, &'a str, &'a str, u64)>,
    legacy: Vec<(&'a str, u64, u64)>,
    shadow: Vec<(&'a str, &'a str, &'a str, u64, u64, u64)>,
    mismatches: Vec<(&'a str, &'a str, u64)>,
    revoked: Vec<(&'a str, u64)>,
}

/// Separates a shadow field's caller, action and count (`\x1f`: actions hold `|`, as in
/// `xtk:persist|xtk:session#Write`).
const UNIT: char = '\u{1f}';

/// The pub/sub connection is tried again after this, doubling up to [`MAX_RETRY`].
const MIN_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(super) struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    prefix: String,
    /// The multiplexed connection, once made.
    connection: Mutex<Option<ConnectionManager>>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    flush: redis::Script,
    /// The URL's password, taken out of any error text.
    password: Option<String>,
}

impl RedisStore {
    /// The store at `url` (`redis://` or `rediss://`); nothing is connected yet.
    pub(super) fn new(url: &str, prefix: &str) -> Result<RedisStore, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("state.redis: not a Redis URL ({:?})", e.kind()))?;
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_owned);
        if matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { .. }
        ) {
            // redis-rs asks rustls for the process's provider: ring, as everywhere else here.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                prefix: prefix.to_owned(),
                connection: Mutex::default(),
                connecting: tokio::sync::Mutex::default(),
                flush: redis::Script::new(FLUSH),
                password,
            }),
        })
    }

    /// The server's address, without user or password.
    pub(super) fn location(&self) -> String {
        self.inner.client.get_connection_info().addr().to_string()
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.inner.prefix)
    }

    /// An error's text without the password.
    fn error(&self, error: &redis::RedisError) -> StateError {
        let mut text = error.to_string();
        if let Some(password) = self.inner.password.as_deref().filter(|p| !p.is_empty()) {
            text = text.replace(password, "****");
        }
        if error.is_connection_refusal() || error.is_io_error() || error.is_connection_dropped() {
            StateError::Unavailable(text)
        } else {
            StateError::Store(text)
        }
    }

    /// The multiplexed connection, made on first use (and again after a failed start).
    async fn connection(&self) -> Result<ConnectionManager, StateError> {
        if let Some(connection) = self.cached() {
            return Ok(connection);
        }
        let _one = self.inner.connecting.lock().await;
        if let Some(connection) = self.cached() {
            return Ok(connection);
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(MAX_RETRY);
        let connection = ConnectionManager::new_with_config(self.inner.client.clone(), config)
            .await
            .map_err(|e| self.error(&e))?;
        *self
            .inner
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(connection.clone());
        Ok(connection)
    }

    fn cached(&self) -> Option<ConnectionManager> {
        self.inner
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) async fn revoke(&self, nonce: &str, expires: u64) -> Result<(), StateError> {
        let mut connection = self.connection().await?;
        let key = self.key("revoked");
        redis::pipe()
            .zadd(&key, nonce, expires)
            .ignore()
            .publish(&key, format!("{nonce} {expires}"))
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| self.error(&e))
    }

    pub(super) async fn revocations(&self, now: u64) -> Result<Vec<(String, u64)>, StateError> {
        let mut connection = self.connection().await?;
        let key = self.key("revoked");
        let (_, known): ((), Vec<(String, u64)>) = redis::pipe()
            .zrembyscore(&key, "-inf", now)
            .zrangebyscore_withscores(&key, format!("({now}"), "+inf")
            .query_async(&mut connection)
            .await
            .map_err(|e| self.error(&e))?;
        Ok(known)
    }

    /// Failures of `key` (`login:…`, `peer:…`) in its current window.
    pub(super) async fn failures(&self, key: &str) -> Result<u64, StateError> {
        let mut connection = self.connection().await?;
        let count: Option<u64> = redis::cmd("GET")
            .arg(self.key(&format!("fail:{key}")))
            .query_async(&mut connection)
            .await
            .map_err(|e| self.error(&e))?;
        Ok(count.unwrap_or(0))
    }

    /// Counts a failure of `key`; its window starts with its first failure.
    pub(super) async fn count_failure(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<(), StateError> {
        let mut connection = self.connection().await?;
        let key = self.key(&format!("fail:{key}"));
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        redis::pipe()
            .incr(&key, 1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window)
            .arg("NX")
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| self.error(&e))
    }

    /// Writes a batch (`None`: only whether the server answers).
    pub(super) async fn flush(
        &self,
        batch: Option<Arc<Batch>>,
        _now: u64,
        history_days: u32,
        max_logins: usize,
    ) -> Result<(), StateError> {
        let mut connection = self.connection().await?;
        let Some(batch) = batch else {
            return redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await
                .map_err(|e| self.error(&e));
        };
        let days = batch.day_rows();
        let legacy = batch.legacy_rows();
        let written = Written {
            logins: batch.logins.values().collect(),
            days: days
                .iter()
                .map(|(day, subject, way, outcome, n)| {
                    (day.as_str(), subject.as_str(), *way, *outcome, *n)
                })
                .collect(),
            legacy: legacy
                .iter()
                .map(|(subject, span)| (subject.as_str(), span.first, span.last))
                .collect(),
            shadow: batch
                .shadow
                .iter()
                .map(|(k, t)| {
                    (
                        k.day.as_str(),
                        k.caller.as_str(),
                        k.action.as_str(),
                        t.comparisons,
                        t.matches,
                        t.mismatches,
                    )
                })
                .collect(),
            mismatches: batch
                .mismatches
                .iter()
                .map(|((caller, action), last)| (caller.as_str(), action.as_str(), *last))
                .collect(),
            revoked: batch
                .revoked
                .iter()
                .map(|(nonce, expires)| (nonce.as_str(), *expires))
                .collect(),
        };
        let json = serde_json::to_string(&written).map_err(|e| StateError::Store(e.to_string()))?;
        self.inner
            .flush
            .arg(&self.inner.prefix)
            .arg(json)
            .arg(max_logins)
            .arg(MAX_ACTIONS)
            .arg(MAX_PEERS)
            .arg((u64::from(history_days) + 1) * 86_400)
            .arg(batch.id)
            .arg(super::BATCH_IDS_KEPT.as_secs())
            .invoke_async::<i64>(&mut connection)
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    /// The history of `days` (UTC, `YYYY-MM-DD`), and the legacy calls and last mismatches.
    pub(super) async fn history(&self, days: &[String]) -> Result<History, StateError> {
        let mut connection = self.connection().await?;
        let mut read = redis::pipe();
        for day in days {
            read.hgetall(self.key(&format!("day:{day}")));
            read.hgetall(self.key(&format!("shadow:{day}")));
        }
        read.hgetall(self.key("legacy"));
        read.hgetall(self.key("shadow:last"));
        let mut hashes: Vec<Vec<(String, String)>> = read
            .query_async(&mut connection)
            .await
            .map_err(|e| self.error(&e))?;
        let last_mismatch = hashes.pop().unwrap_or_default();
        let legacy = hashes.pop().unwrap_or_default();
        let number = |value: &str| value.parse::<u64>().unwrap_or(0);
        let mut history = History::default();
        for (day, pair) in days.iter().zip(hashes.chunks(2)) {
            for (field, value) in &pair[0] {
                // `subject|way|outcome`: a subject may hold `|`, a way and an outcome not.
                let mut parts = field.rsplitn(3, '|');
                let (Some(outcome), Some(way), Some(subject)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                history.days.push(DayCount {
                    day: day.clone(),
                    subject: subject.to_owned(),
                    way: way.to_owned(),
                    outcome: outcome.to_owned(),
                    requests: number(value),
                });
            }
            let mut tallies: std::collections::BTreeMap<(String, String), Tally> =
                std::collections::BTreeMap::new();
            for (field, value) in pair.get(1).into_iter().flatten() {
                let mut parts = field.splitn(3, UNIT);
                let (Some(caller), Some(action), Some(kind)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let tally = tallies
                    .entry((caller.to_owned(), action.to_owned()))
                    .or_default();
                match kind {
                    "c" => tally.comparisons = number(value),
                    "m" => tally.matches = number(value),
                    "x" => tally.mismatches = number(value),
                    _ => {}
                }
            }
            history
                .shadow
                .extend(tallies.into_iter().map(|((caller, action), tally)| {
                    (
                        ShadowKey {
                            day: day.clone(),
                            caller,
                            action,
                        },
                        tally,
                    )
                }));
        }
        history.days.sort_by(|a, b| {
            (&a.day, &a.subject, &a.way, &a.outcome).cmp(&(&b.day, &b.subject, &b.way, &b.outcome))
        });
        for (field, value) in legacy {
            let Some((subject, end)) = field.rsplit_once('|') else {
                continue;
            };
            let span = history.legacy.entry(subject.to_owned()).or_default();
            match end {
                "first" => span.first = number(&value),
                "last" => span.last = number(&value),
                _ => {}
            }
        }
        for (field, value) in last_mismatch {
            if let Some((caller, action)) = field.split_once(UNIT) {
                history
                    .last_mismatch
                    .insert((caller.to_owned(), action.to_owned()), number(&value));
            }
        }
        Ok(history)
    }

    pub(super) async fn inventory(&self, max_logins: usize) -> Result<Report, StateError> {
        let mut connection = self.connection().await?;
        let (callers, others, dropped): (Vec<String>, Vec<String>, Option<u64>) = redis::pipe()
            .zrevrange(self.key("inv:callers"), 0, -1)
            .zrevrange(self.key("inv:others"), 0, max_logins as isize - 1)
            .get(self.key("inv:dropped"))
            .query_async(&mut connection)
            .await
            .map_err(|e| self.error(&e))?;
        let logins: Vec<String> = callers.into_iter().chain(others).collect();
        let mut read = redis::pipe();
        for login in &logins {
            read.hgetall(self.key(&format!("inv:{login}")));
        }
        let hashes: Vec<Vec<(String, String)>> = if logins.is_empty() {
            Vec::new()
        } else {
            read.query_async(&mut connection)
                .await
                .map_err(|e| self.error(&e))?
        };
        let mut reports: Vec<LoginReport> = logins
            .into_iter()
            .zip(hashes)
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(login, fields)| login_report(login, &fields))
            .collect();
        reports.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.login.cmp(&b.login))
        });
        Ok(Report {
            profiles: Vec::new(),
            max_logins,
            dropped: dropped.unwrap_or(0),
            logins: reports,
            note: None,
        })
    }

    /// Listens for the other replicas' Logoffs until `stop`: on every (re)connection, the
    /// revocations are read again, then each one published is added as it comes.
    pub(super) async fn listen(
        self,
        revocations: Arc<Revocations>,
        clock: Clock,
        mut stop: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) {
        let channel = self.key("revoked");
        let mut retry = MIN_RETRY;
        loop {
            let connected = async {
                let mut pubsub = self
                    .inner
                    .client
                    .get_async_pubsub()
                    .await
                    .map_err(|e| self.error(&e))?;
                pubsub
                    .subscribe(&channel)
                    .await
                    .map_err(|e| self.error(&e))?;
                Ok::<_, StateError>(pubsub)
            };
            let pubsub = tokio::select! {
                pubsub = tokio::time::timeout(Duration::from_secs(2), connected) => pubsub,
                _ = stop.changed() => return,
            };
            let Ok(Ok(mut pubsub)) = pubsub else {
                metrics.state_error(super::Op::Subscribe.as_str());
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    _ = stop.changed() => return,
                }
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            };
            retry = MIN_RETRY;
            // What was published while this replica was not listening.
            let now = super::seconds(clock.now());
            if let Ok(Ok(known)) =
                tokio::time::timeout(Duration::from_secs(2), self.revocations(now)).await
            {
                revocations.add(known, now);
            }
            let mut messages = pubsub.on_message();
            loop {
                let message = tokio::select! {
                    message = messages.next() => message,
                    _ = stop.changed() => return,
                };
                let Some(message) = message else {
                    metrics.state_error(super::Op::Subscribe.as_str());
                    break;
                };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some((nonce, expires)) = payload.split_once(' ')
                    && let Ok(expires) = expires.parse::<u64>()
                {
                    revocations.add([(nonce.to_owned(), expires)], super::seconds(clock.now()));
                }
            }
        }
    }
}

/// A login's report from its hash.
fn login_report(login: String, fields: &[(String, String)]) -> LoginReport {
    let number = |value: &str| value.parse::<f64>().map_or(0, |n| n as u64);
    let mut report = LoginReport {
        login,
        ..LoginReport::default()
    };
    for (field, value) in fields {
        match field.as_str() {
            "caller" => report.caller = Some(value.clone()),
            "first" => report.first_seen = number(value),
            "last" => report.last_seen = number(value),
            "oa" => report.other_actions = number(value),
            "op" => report.other_peers = number(value),
            _ => {
                if let Some(action) = field.strip_prefix("a:") {
                    report.actions.push(Named {
                        name: action.to_owned(),
                        requests: number(value),
                    });
                } else if let Some(peer) = field.strip_prefix("p:") {
                    report.peers.push(Named {
                        name: peer.to_owned(),
                        requests: number(value),
                    });
                } else if let Some(count) = field.strip_prefix("c:")
                    && let Some((way, outcome)) = count.split_once('|')
                {
                    report.counts.push(WayCount {
                        way: way.to_owned(),
                        outcome: outcome.to_owned(),
                        requests: number(value),
                    });
                }
            }
        }
    }
    let by_requests = |a: &Named, b: &Named| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.name.cmp(&b.name))
    };
    report.actions.sort_by(by_requests);
    report.peers.sort_by(by_requests);
    report
        .counts
        .sort_by(|a, b| (&a.way, &a.outcome).cmp(&(&b.way, &b.outcome)));
    report.requests = report.counts.iter().map(|c| c.requests).sum();
    report
}
