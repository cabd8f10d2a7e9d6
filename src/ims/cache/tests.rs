//! The cache against a scripted source, on paused time.

use super::*;
use crate::ims::Fetched;
use crate::secret::Secret;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A source that answers from a script, each answer after `delay`, and counts its fetches.
#[derive(Clone)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Result<Duration, ImsError>>>>,
    fetches: Arc<AtomicUsize>,
    delay: Duration,
}

impl Scripted {
    fn new(
        delay: Duration,
        answers: impl IntoIterator<Item = Result<Duration, ImsError>>,
    ) -> Scripted {
        Scripted {
            answers: Arc::new(Mutex::new(answers.into_iter().collect())),
            fetches: Arc::new(AtomicUsize::new(0)),
            delay,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl TokenSource for Scripted {
    async fn fetch(&self) -> Result<Fetched, ImsError> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.delay).await;
        let answer = self.answers.lock().unwrap().pop_front();
        match answer {
            Some(Ok(expires_in)) => Ok(Fetched {
                access_token: Secret::from(format!("token-{n}")),
                expires_in,
            }),
            Some(Err(error)) => Err(error),
            None => Err(ImsError::Unreachable("script exhausted".into())),
        }
    }
}

fn bearer(token: &Token) -> &str {
    token.bearer().to_str().unwrap()
}

fn malformed() -> ImsError {
    ImsError::Malformed("empty answer".into())
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_on_a_cold_start_cause_one_fetch() {
    let source = Scripted::new(Duration::from_secs(2), [Ok(HOUR)]);
    let cache = Arc::new(TokenCache::spawn(
        "p".into(),
        source.clone(),
        FetchCounters::default(),
    ));
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(Duration::from_secs(10)).await })
        })
        .collect();
    for caller in callers {
        let token = caller.await.unwrap().unwrap();
        assert_eq!(bearer(&token), "Bearer token-1");
    }
    assert_eq!(source.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn refreshed_ahead_of_expiry_without_making_callers_wait() {
    let source = Scripted::new(Duration::from_secs(1), [Ok(HOUR), Ok(HOUR)]);
    let cache = TokenCache::spawn("p".into(), source.clone(), FetchCounters::default());
    let first = cache.get(Duration::from_secs(10)).await.unwrap();
    assert_eq!(bearer(&first), "Bearer token-1");
    // Asked at t=0, valid for an hour: refreshed REFRESH_MARGIN before the end.
    let refresh_at = HOUR - REFRESH_MARGIN;
    tokio::time::sleep(refresh_at - Duration::from_secs(2)).await;
    assert_eq!(source.fetches(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(source.fetches(), 2, "refresh started");
    // While the refresh is in flight, callers get the current token at once.
    let during = tokio::time::timeout(Duration::ZERO, cache.get(Duration::from_secs(10)))
        .await
        .expect("no wait while a valid token exists")
        .unwrap();
    assert_eq!(bearer(&during), "Bearer token-1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bearer(&cache.current().unwrap()), "Bearer token-2");
}

#[tokio::test(start_paused = true)]
async fn short_lived_tokens_are_refreshed_at_nine_tenths() {
    let three = Duration::from_secs(3);
    let source = Scripted::new(Duration::ZERO, [Ok(three), Ok(three), Ok(three)]);
    let cache = TokenCache::spawn("p".into(), source.clone(), FetchCounters::default());
    cache.get(Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(source.fetches(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(source.fetches(), 2, "refreshed at 2.7 s of 3 s");
}

#[tokio::test(start_paused = true)]
async fn malformed_answers_are_retried_with_backoff() {
    let source = Scripted::new(
        Duration::ZERO,
        [Err(malformed()), Err(malformed()), Ok(HOUR)],
    );
    let cache = TokenCache::spawn("p".into(), source.clone(), FetchCounters::default());
    tokio::task::yield_now().await;
    assert_eq!(source.fetches(), 1);
    // IMS failing and no token: callers are told at once, with IMS's reason.
    let refused = cache.get(Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(refused.to_string(), "IMS answer is unusable: empty answer");
    assert!(matches!(cache.readiness(), Readiness::NotReady(why) if why.contains("empty answer")));
    // First retry within BACKOFF_START, second within twice that.
    tokio::time::sleep(BACKOFF_START + Duration::from_millis(1)).await;
    assert_eq!(source.fetches(), 2);
    tokio::time::sleep(BACKOFF_START * 2 + Duration::from_millis(1)).await;
    assert_eq!(source.fetches(), 3);
    let token = cache.get(Duration::from_secs(10)).await.unwrap();
    assert_eq!(bearer(&token), "Bearer token-3");
    assert!(matches!(cache.readiness(), Readiness::Ready { .. }));
}

#[tokio::test(start_paused = true)]
async fn the_current_token_serves_until_it_really_expires() {
    let ten = Duration::from_secs(100);
    let failures = (0..50).map(|_| Err(ImsError::Timeout(Duration::from_secs(10))));
    let source = Scripted::new(Duration::ZERO, std::iter::once(Ok(ten)).chain(failures));
    let cache = TokenCache::spawn("p".into(), source.clone(), FetchCounters::default());
    let token = cache.get(Duration::from_secs(1)).await.unwrap();
    // Refresh starts at 90 s and fails; the token is still used until 100 s.
    tokio::time::sleep(Duration::from_secs(99)).await;
    assert!(source.fetches() > 2, "retried: {}", source.fetches());
    let still = cache.get(Duration::from_secs(1)).await.unwrap();
    assert!(Arc::ptr_eq(&token, &still));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cache.current().is_none(), "never used after it expires");
    assert!(matches!(
        cache.get(Duration::from_secs(1)).await,
        Err(NotReady::Failing(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped() {
    let failures: Vec<_> = (0..100).map(|_| Err(malformed())).collect();
    let source = Scripted::new(Duration::ZERO, failures);
    let _cache = TokenCache::spawn("p".into(), source.clone(), FetchCounters::default());
    // 0.5 + 1 + 2 + ... reaches the 60 s cap after 8 retries; then one retry a minute at most.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let after_ten_minutes = source.fetches();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let in_the_next_ten = source.fetches() - after_ten_minutes;
    assert!(
        (10..=20).contains(&in_the_next_ten),
        "{in_the_next_ten} retries in 10 minutes"
    );
}

#[test]
fn refresh_points() {
    assert_eq!(
        refresh_after(Duration::from_secs(86_400)),
        Duration::from_secs(86_400) - REFRESH_MARGIN
    );
    assert_eq!(
        refresh_after(Duration::from_secs(3)),
        Duration::from_millis(2700)
    );
    assert_eq!(
        refresh_after(Duration::from_secs(60)),
        Duration::from_secs(54)
    );
}

#[test]
fn jitter_stays_within_half_and_whole() {
    for _ in 0..1000 {
        let wait = jitter(Duration::from_secs(10));
        assert!(
            wait >= Duration::from_secs(5) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
    }
}

#[test]
fn debug_hides_the_token() {
    let token = Token::new("secret-token", Instant::now()).unwrap();
    assert!(!format!("{token:?}").contains("secret-token"));
    assert!(token.bearer().is_sensitive());
}

#[tokio::test(start_paused = true)]
async fn fifty_refusals_of_a_token_cause_one_fetch() {
    let source = Scripted::new(Duration::from_millis(200), [Ok(HOUR), Ok(HOUR), Ok(HOUR)]);
    let cache = Arc::new(TokenCache::spawn(
        "p".into(),
        source.clone(),
        FetchCounters::default(),
    ));
    let refused = cache.get(Duration::from_secs(10)).await.unwrap();
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            let refused = refused.clone();
            tokio::spawn(async move {
                cache.invalidate(&refused);
                cache.get(Duration::from_secs(10)).await.unwrap()
            })
        })
        .collect();
    for caller in callers {
        let token = caller.await.unwrap();
        assert_eq!(
            bearer(&token),
            "Bearer token-2",
            "never the refused token again"
        );
    }
    assert_eq!(source.fetches(), 2);
    // A late report of the old token changes nothing.
    cache.invalidate(&refused);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(source.fetches(), 2);
    assert_eq!(bearer(&cache.current().unwrap()), "Bearer token-2");
}

#[tokio::test(start_paused = true)]
async fn a_drop_during_an_ims_outage_waits_for_the_backoff() {
    let source = Scripted::new(
        Duration::ZERO,
        [Ok(HOUR), Err(malformed()), Err(malformed()), Ok(HOUR)],
    );
    let cache = TokenCache::spawn("p".into(), source.clone(), FetchCounters::default());
    let first = cache.get(Duration::from_secs(1)).await.unwrap();
    cache.invalidate(&first);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(source.fetches(), 2, "the drop started a fetch at once");
    assert!(matches!(
        cache.get(Duration::from_secs(1)).await,
        Err(NotReady::Failing(_))
    ));
    // Retries follow the backoff; the third answer succeeds.
    tokio::time::sleep(BACKOFF_START * 4).await;
    assert_eq!(
        bearer(&cache.get(Duration::from_secs(1)).await.unwrap()),
        "Bearer token-4"
    );
}
