//! One access token per profile, kept fresh.
//!
//! Exactly one task per profile talks to IMS: it fetches at start, sleeps until
//! [`REFRESH_MARGIN`] before expiry (or a tenth of a short token's life), fetches again, and on
//! failure retries with capped exponential backoff and jitter while the current token stays in
//! use until it really expires. Requests read the latest token from a `watch` channel: while a
//! valid token exists they never wait; without one (cold start) they wait for the fetch in
//! flight, all of them for the same one, so IMS never sees a stampede.
//!
//! When Campaign refuses a token, [`TokenCache::invalidate`] drops it and wakes the refresher;
//! however many requests saw the refusal, only the first drop counts (the others name a token
//! that is no longer current), so IMS gets one request.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ImsError, TokenSource};

/// A token is refreshed this long before it expires...
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// ... or, for a short-lived token, when this share of its life is left (1/10).
const SHORT_TOKEN_MARGIN_DIVISOR: u32 = 10;
/// First wait after a failed fetch; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What a cache counts of its fetches (shared handles on the `/metrics` counters of its
/// profile).
#[derive(Clone)]
pub(crate) struct FetchCounters {
    pub ok: Counter,
    pub failed: Counter,
    /// How long each request to IMS took, whatever it gave.
    pub seconds: Histogram,
}

impl Default for FetchCounters {
    fn default() -> FetchCounters {
        FetchCounters {
            ok: Counter::default(),
            failed: Counter::default(),
            seconds: fetch_histogram(),
        }
    }
}

/// 5 ms to about 20 s.
pub(crate) fn fetch_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 12,
    ))
}

/// An access token, ready to be sent.
pub(crate) struct Token {
    /// `Bearer <token>`, marked sensitive so that HTTP/2 never indexes it.
    bearer: HeaderValue,
    expires_at: Instant,
}

impl Token {
    pub(crate) fn new(access_token: &str, expires_at: Instant) -> Result<Token, ImsError> {
        let mut bearer = HeaderValue::try_from(format!("Bearer {access_token}")).map_err(|_| {
            ImsError::Malformed("access_token holds characters a header cannot carry".to_owned())
        })?;
        bearer.set_sensitive(true);
        Ok(Token { bearer, expires_at })
    }

    /// The `Authorization` header value.
    pub(crate) fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    /// The access token alone (the bearer value without `Bearer `): to recognise it where it
    /// must never be, such as an answer going back to a caller.
    pub(crate) fn access_token(&self) -> &[u8] {
        &self.bearer.as_bytes()["Bearer ".len()..]
    }

    fn is_valid(&self) -> bool {
        Instant::now() < self.expires_at
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("bearer", &"****")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What the refresher publishes.
#[derive(Clone)]
struct State {
    token: Option<Arc<Token>>,
    /// A fetch is in flight.
    fetching: bool,
    /// Why the last fetch failed; cleared by a success.
    last_error: Option<Arc<str>>,
    /// When the last fetch ended, and the last one that gave a token.
    last_fetch: Option<SystemTime>,
    last_token: Option<SystemTime>,
}

/// A profile's token and fetches, as the admin page shows them.
#[derive(Debug, Clone)]
pub(crate) struct TokenStatus {
    pub readiness: Readiness,
    pub last_fetch: Option<SystemTime>,
    pub last_token: Option<SystemTime>,
    /// Fetches that gave a token, and that failed, since the process started.
    pub fetched: u64,
    pub failed: u64,
}

/// Why a request gets no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotReady {
    #[error("{0}")]
    Failing(Arc<str>),
    #[error("no token yet: IMS did not answer within {0:?}")]
    Waited(Duration),
    #[error("token refresher stopped")]
    Stopped,
}

/// What `/readyz` says of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready { expires_in: Duration },
    NotReady(String),
}

/// The token cache of one profile; dropping it stops its refresher.
pub(crate) struct TokenCache {
    /// The token of `state`, for the request path: reading it is a lock-free clone of an
    /// `Arc`. Written under the lock of `state`, so the two always agree.
    current: Arc<ArcSwapOption<Token>>,
    state: watch::Receiver<State>,
    /// To drop a refused token.
    publish: watch::Sender<State>,
    /// Wakes the refresher when a token was dropped.
    wake: Arc<Notify>,
    refresher: JoinHandle<()>,
    /// Tokens fetched for this profile since the process started (across reloads: the counter
    /// lives in the metrics), and fetches that failed.
    fetched: Counter,
    failed: Counter,
}

impl Drop for TokenCache {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl TokenCache {
    /// Starts the refresher, which fetches a first token at once.
    pub(crate) fn spawn<S: TokenSource>(
        profile: Arc<str>,
        source: S,
        counters: FetchCounters,
    ) -> TokenCache {
        let (tx, rx) = watch::channel(State {
            token: None,
            fetching: true,
            last_error: None,
            last_fetch: None,
            last_token: None,
        });
        let wake = Arc::new(Notify::new());
        let current = Arc::new(ArcSwapOption::empty());
        let fetched = counters.ok.clone();
        let failed = counters.failed.clone();
        let refresher = tokio::spawn(refresh(
            profile,
            source,
            Publisher {
                state: tx.clone(),
                current: current.clone(),
            },
            wake.clone(),
            counters,
        ));
        TokenCache {
            current,
            state: rx,
            publish: tx,
            wake,
            refresher,
            fetched,
            failed,
        }
    }

    /// Whether this profile has held a token since the process started.
    pub(crate) fn held_once(&self) -> bool {
        self.fetched.get() > 0
    }

    /// Drops `token` because Campaign refused it, and has a new one fetched. A no-op unless
    /// `token` is the current one: many requests can report the same refusal, one fetch
    /// follows.
    pub(crate) fn invalidate(&self, token: &Arc<Token>) {
        let dropped = self.publish.send_if_modified(|state| match &state.token {
            Some(current) if Arc::ptr_eq(current, token) => {
                state.token = None;
                self.current.store(None);
                true
            }
            _ => false,
        });
        if dropped {
            self.wake.notify_one();
        }
    }

    /// The current token if it is valid: never waits.
    pub(crate) fn current(&self) -> Option<Arc<Token>> {
        self.current.load_full().filter(|t| t.is_valid())
    }

    /// A valid token; without one, waits up to `wait` for the fetch in flight. Fails at once
    /// when IMS is failing and the last token has expired.
    pub(crate) async fn get(&self, wait: Duration) -> Result<Arc<Token>, NotReady> {
        if let Some(token) = self.current() {
            return Ok(token);
        }
        let deadline = Instant::now() + wait;
        let mut state = self.state.clone();
        loop {
            {
                let current = state.borrow_and_update();
                if let Some(token) = current.token.as_ref().filter(|t| t.is_valid()) {
                    return Ok(token.clone());
                }
                if !current.fetching
                    && let Some(error) = &current.last_error
                {
                    return Err(NotReady::Failing(error.clone()));
                }
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(NotReady::Stopped),
                Err(_) => return Err(NotReady::Waited(wait)),
            }
        }
    }

    /// Its token and fetches now.
    pub(crate) fn status(&self) -> TokenStatus {
        let (last_fetch, last_token) = {
            let state = self.state.borrow();
            (state.last_fetch, state.last_token)
        };
        TokenStatus {
            readiness: self.readiness(),
            last_fetch,
            last_token,
            fetched: self.fetched.get(),
            failed: self.failed.get(),
        }
    }

    pub(crate) fn readiness(&self) -> Readiness {
        let state = self.state.borrow();
        match (&state.token, &state.last_error) {
            (Some(token), _) if token.is_valid() => Readiness::Ready {
                expires_in: token.expires_at - Instant::now(),
            },
            (_, Some(error)) => Readiness::NotReady(error.to_string()),
            (Some(_), None) => Readiness::NotReady("token expired, fetching a new one".into()),
            (None, None) => Readiness::NotReady("fetching the first token".into()),
        }
    }
}

/// When to refresh a token that lives `lifetime`: [`REFRESH_MARGIN`] before it expires, or a
/// tenth of its life before, whichever is later.
fn refresh_after(lifetime: Duration) -> Duration {
    lifetime - REFRESH_MARGIN.min(lifetime / SHORT_TOKEN_MARGIN_DIVISOR)
}

/// Where the refresher publishes.
struct Publisher {
    state: watch::Sender<State>,
    current: Arc<ArcSwapOption<Token>>,
}

/// The refresher: the only code that calls the source.
async fn refresh<S: TokenSource>(
    profile: Arc<str>,
    source: S,
    publisher: Publisher,
    wake: Arc<Notify>,
    counters: FetchCounters,
) {
    let tx = &publisher.state;
    let mut backoff = BACKOFF_START;
    loop {
        tx.send_modify(|s| s.fetching = true);
        // Expiry counts from before the request: the token cannot outlive what IMS said.
        let asked_at = Instant::now();
        let fetched = source.fetch().await.and_then(|fetched| {
            let token = Token::new(fetched.access_token.expose(), asked_at + fetched.expires_in)?;
            Ok((token, fetched.expires_in))
        });
        counters.seconds.observe(asked_at.elapsed().as_secs_f64());
        match fetched {
            Ok((token, lifetime)) => {
                counters.ok.inc();
                tracing::info!(profile = %profile, expires_in_s = lifetime.as_secs(), "IMS token fetched");
                let token = Arc::new(token);
                tx.send_modify(|state| {
                    let now = Some(SystemTime::now());
                    *state = State {
                        token: Some(token.clone()),
                        fetching: false,
                        last_error: None,
                        last_fetch: now,
                        last_token: now,
                    };
                    publisher.current.store(Some(token));
                });
                backoff = BACKOFF_START;
                let refresh_at = asked_at + refresh_after(lifetime);
                // Until it is time to refresh, or the token was dropped (a stale wake-up,
                // with the token still in place, changes nothing).
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(refresh_at) => break,
                        () = wake.notified() => {
                            if tx.borrow().token.is_none() {
                                tracing::info!(profile = %profile, "token refused by Campaign: fetching a new one");
                                break;
                            }
                        }
                    }
                }
            }
            Err(error) => {
                counters.failed.inc();
                let wait = jitter(backoff);
                tracing::warn!(profile = %profile, error = %error, retry_in_ms = wait.as_millis() as u64, "IMS token request failed");
                tx.send_modify(|s| {
                    s.fetching = false;
                    s.last_error = Some(error.to_string().into());
                    s.last_fetch = Some(SystemTime::now());
                });
                backoff = (backoff * 2).min(BACKOFF_MAX);
                // Drops during a backoff wait for it: IMS is failing already.
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A wait between half and all of `backoff`, so that replicas do not retry in step.
fn jitter(backoff: Duration) -> Duration {
    backoff / 2 + backoff.mul_f64(fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests;
