//! The argon2 check of a `login/password` credential, paid once per caller rather than once
//! per request: a verdict is remembered for a while, keyed by a MAC of what was presented
//! (SipHash-2-4 with a 128-bit tag, a keyed pseudorandom function built for short inputs,
//! under a key that lives only in this process), and concurrent requests with the same
//! credential share one verification.
//!
//! argon2 is also what an attacker can make the proxy spend: runs wait in a bounded queue
//! ([`PasswordLimits::max_pending`]; when it is full, a check is refused at once), and failed
//! checks are counted per login and per peer, over their limits refused without running argon2.
//! A remembered good verdict is honoured whatever the limits, and never evicted to make room
//! for refusals. An unknown login costs an argon2 run like a wrong password, so that timing does
//! not tell which logins exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use ring::rand::SecureRandom;
use siphasher::sip128::{Hasher128, SipHasher24};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use super::Caller;
use crate::config::{PasswordLimits, Rate};
use crate::secret::Secret;
use crate::state::State;

/// How long a verified credential is accepted without running argon2 again.
pub(crate) const REMEMBER_VERIFIED: Duration = Duration::from_secs(10 * 60);
/// How long a refused one is refused without running argon2 again: a client retrying with a
/// wrong password costs one verification a minute, not one a request.
pub(crate) const REMEMBER_REFUSED: Duration = Duration::from_secs(60);
/// Bound on the remembered verdicts, so that a flood of made-up credentials cannot grow memory.
pub(crate) const MAX_REMEMBERED: usize = 10_000;

/// A remembered verdict; `outcome` is unset while the verification runs.
pub(super) struct Verdict {
    pub created: Instant,
    pub outcome: Arc<OnceCell<bool>>,
}

impl Verdict {
    fn is_fresh(&self, now: Instant) -> bool {
        match self.outcome.get() {
            None => true,
            Some(true) => now < self.created + REMEMBER_VERIFIED,
            Some(false) => now < self.created + REMEMBER_REFUSED,
        }
    }
}

/// Hashes a MAC tag by its first bytes: a tag is already uniformly random to anyone without
/// the key, so hashing it again (SipHash, the default) would only cost time.
#[derive(Default, Clone, Copy)]
struct TagHash;

impl std::hash::BuildHasher for TagHash {
    type Hasher = TagHasher;
    fn build_hasher(&self) -> TagHasher {
        TagHasher(0)
    }
}

struct TagHasher(u64);

impl std::hash::Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(word);
    }

    /// The length prefix of the slice: the same for every tag.
    fn write_usize(&mut self, _: usize) {}
}

/// The queue of argon2 runs is full: the check is refused without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Busy;

/// Whose failures a count is of.
#[derive(Clone, PartialEq, Eq, Hash)]
enum FailureKey {
    Login(Box<str>),
    Peer(IpAddr),
}

impl FailureKey {
    /// Its name in the state store.
    fn store_key(&self) -> String {
        match self {
            FailureKey::Login(login) => crate::state::login_key(login),
            FailureKey::Peer(peer) => crate::state::peer_key(*peer),
        }
    }
}

/// Failures in the current window of each login and peer.
#[derive(Default)]
struct Failures(Mutex<HashMap<FailureKey, (Instant, u32)>>);

/// At most this many logins and peers are counted; past it, stale windows go, then all.
const MAX_COUNTED: usize = 100_000;

impl Failures {
    fn over(&self, key: &FailureKey, rate: Rate, now: Instant) -> bool {
        let counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts
            .get(key)
            .is_some_and(|(start, count)| now < *start + rate.window && *count >= rate.count)
    }

    fn record(&self, key: FailureKey, rate: Rate, now: Instant) {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() >= MAX_COUNTED && !counts.contains_key(&key) {
            counts.retain(|_, (start, _)| now < *start + rate.window);
            if counts.len() >= MAX_COUNTED {
                counts.clear();
            }
        }
        let (start, count) = counts.entry(key).or_insert((now, 0));
        if now >= *start + rate.window {
            (*start, *count) = (now, 0);
        }
        *count += 1;
    }
}

/// The remembered verdicts, and the argon2 runs behind them.
pub(super) struct Verifier {
    /// The MAC key. SipHash rather than HMAC-SHA256: a tag is computed on every request, and
    /// SipHash is much cheaper on a short credential (`bench/README.md`), with the same
    /// use: without the key, nobody can find two credentials with one tag.
    key: [u8; 16],
    verdicts: Mutex<HashMap<[u8; 16], Verdict, TagHash>>,
    /// argon2 runs on [`Workers`], at most one per core at a time.
    slots: Arc<Semaphore>,
    workers: Workers,
    /// argon2 runs so far.
    runs: Arc<AtomicU64>,
    limits: PasswordLimits,
    /// argon2 runs waiting for a slot or running, in all and per peer: one peer may hold at
    /// most a quarter of the queue, so that a flood from one address leaves room for others.
    pending: AtomicUsize,
    pending_by_peer: Mutex<HashMap<IpAddr, usize>>,
    failures: Failures,
    /// With a store shared by the replicas (`[state] redis`): the fleet's failure counts, beside
    /// the process's own (which decide alone while the store cannot answer).
    fleet: Option<Arc<State>>,
    /// What an unknown login's password is checked against: a hash of the default cost, so
    /// that the check costs what a real one does.
    decoy: Arc<PasswordHash>,
}

impl Verifier {
    /// argon2 checks waiting for a slot or running now.
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub(super) fn new(limits: PasswordLimits, fleet: Option<Arc<State>>) -> Verifier {
        let mut key = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .expect("system random source");
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Verifier {
            key,
            verdicts: Mutex::new(HashMap::default()),
            slots: Arc::new(Semaphore::new(cores)),
            workers: Workers::start(cores),
            runs: Arc::default(),
            limits,
            pending: AtomicUsize::new(0),
            pending_by_peer: Mutex::default(),
            failures: Failures::default(),
            fleet,
            decoy: Arc::new(decoy()),
        }
    }

    /// Whether `password` is the password of `caller` (the `index`-th), asked from `peer`.
    /// `Ok(false)` also when the login or the peer failed too often of late.
    pub(super) async fn verify(
        &self,
        index: usize,
        caller: &Caller,
        password: &str,
        peer: IpAddr,
    ) -> Result<bool, Busy> {
        let mut mac = SipHasher24::new_with_key(&self.key);
        std::hash::Hasher::write(&mut mac, &(index as u64).to_le_bytes());
        std::hash::Hasher::write(&mut mac, password.as_bytes());
        let tag = mac.finish128().as_bytes();

        let now = Instant::now();
        // Made only when counted: the remembered path allocates nothing.
        let login = || FailureKey::Login((*caller.login).into());
        let remembered = {
            let verdicts = self
                .verdicts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            verdicts
                .get(&tag)
                .filter(|verdict| verdict.is_fresh(now))
                .map(|verdict| verdict.outcome.clone())
        };
        // Remembered, or being made: whatever the limits (and without a store call).
        let outcome = match remembered {
            Some(outcome) => outcome,
            None => {
                if self.limited(&login(), peer, now).await {
                    self.refusal_delay().await;
                    return Ok(false);
                }
                let mut verdicts = self
                    .verdicts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match verdicts.get(&tag) {
                    Some(verdict) if verdict.is_fresh(now) => verdict.outcome.clone(),
                    _ => {
                        let outcome = Arc::new(OnceCell::new());
                        if make_room(&mut verdicts, now) {
                            verdicts.insert(
                                tag,
                                Verdict {
                                    created: now,
                                    outcome: outcome.clone(),
                                },
                            );
                        }
                        outcome
                    }
                }
            }
        };
        let hash = caller.password.clone();
        let ran = std::sync::atomic::AtomicBool::new(false);
        let verified = outcome
            .get_or_try_init(|| async {
                ran.store(true, Ordering::Relaxed);
                self.run(hash, password, peer).await
            })
            .await
            .copied();
        match verified {
            Ok(false) if ran.load(Ordering::Relaxed) => self.failed(login(), peer, now).await,
            // Not checked: forget the verdict, so that the next request checks.
            Err(Busy) => {
                let mut verdicts = self
                    .verdicts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if verdicts
                    .get(&tag)
                    .is_some_and(|v| Arc::ptr_eq(&v.outcome, &outcome) && v.outcome.get().is_none())
                {
                    verdicts.remove(&tag);
                }
            }
            _ => {}
        }
        verified
    }

    /// An unknown login's check: refused, at the cost of a real one, within the same limits.
    pub(super) async fn verify_unknown(
        &self,
        login: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<(), Busy> {
        let now = Instant::now();
        let login = FailureKey::Login(login.into());
        if self.limited(&login, peer, now).await {
            self.refusal_delay().await;
            return Ok(());
        }
        self.run(self.decoy.clone(), password, peer).await?;
        self.failed(login, peer, now).await;
        Ok(())
    }

    /// The login or the peer failed too often in the current window: here, or in the fleet.
    async fn limited(&self, login: &FailureKey, peer: IpAddr, now: Instant) -> bool {
        let peer_key = FailureKey::Peer(peer);
        if self.failures.over(login, self.limits.per_login, now)
            || self.failures.over(&peer_key, self.limits.per_peer, now)
        {
            return true;
        }
        let Some(fleet) = &self.fleet else {
            return false;
        };
        fleet
            .failures_over(&login.store_key(), self.limits.per_login)
            .await
            == Some(true)
            || fleet
                .failures_over(&peer_key.store_key(), self.limits.per_peer)
                .await
                == Some(true)
    }

    /// Waits before a refusal: the refusal delay and up to half as long again, at random. A
    /// flood whose callers each send their next guess when the last is answered would
    /// otherwise come back in waves, all its refusals answered in the same millisecond a
    /// second apart, and each wave takes the cores from the callers being served at that
    /// moment (`tests/flood.rs`: its known caller's slowest calls were all in those waves).
    async fn refusal_delay(&self) {
        let mut random = [0u8; 2];
        // Without randomness (it does not fail on Linux), the plain delay.
        let _ = ring::rand::SystemRandom::new().fill(&mut random);
        let spread = self.limits.refusal_delay / 2;
        let extra = spread.mul_f64(f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX));
        tokio::time::sleep(self.limits.refusal_delay + extra).await;
    }

    async fn failed(&self, login: FailureKey, peer: IpAddr, now: Instant) {
        let peer = FailureKey::Peer(peer);
        if let Some(fleet) = &self.fleet {
            fleet
                .failed_check(&login.store_key(), self.limits.per_login)
                .await;
            fleet
                .failed_check(&peer.store_key(), self.limits.per_peer)
                .await;
        }
        self.failures.record(login, self.limits.per_login, now);
        self.failures.record(peer, self.limits.per_peer, now);
    }

    /// One argon2 run on [`Workers`], when the queue has room: `Err(Busy)` at once when it is
    /// full, and after the refusal delay when `peer` holds its share of it already.
    async fn run(
        &self,
        hash: Arc<PasswordHash>,
        password: &str,
        peer: IpAddr,
    ) -> Result<bool, Busy> {
        let pending = self.pending.fetch_add(1, Ordering::AcqRel);
        let _pending = Pending(&self.pending);
        if pending >= self.limits.max_pending {
            return Err(Busy);
        }
        let share = (self.limits.max_pending / 4).max(1);
        let over_share = {
            let mut by_peer = self
                .pending_by_peer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let held = by_peer.entry(peer).or_insert(0);
            let over = *held >= share;
            if !over {
                *held += 1;
            }
            over
        };
        if over_share {
            // Not checked, so not a verdict: checked when asked again. Answered after the
            // refusal delay, out of the queue meanwhile, as a check over the failure limits
            // is: an address that keeps its share full asks once a delay, not at will.
            drop(_pending);
            self.refusal_delay().await;
            return Err(Busy);
        }
        let _held = PeerPending(&self.pending_by_peer, peer);
        let Ok(_slot) = self.slots.acquire().await else {
            return Ok(false);
        };
        let password = Secret::from(password);
        let runs = self.runs.clone();
        let (verdict, verdict_rx) = tokio::sync::oneshot::channel();
        self.workers.run(Box::new(move || {
            runs.fetch_add(1, Ordering::Relaxed);
            let _ = verdict.send(check_password(password.expose(), &hash));
        }));
        Ok(verdict_rx.await.unwrap_or(false))
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The threads that run argon2, at the lowest priority (nice 19 on Linux):
/// when a flood of made-up passwords keeps them busy, the requests of callers already verified
/// still get the CPU first (`tests/flood.rs`). They end when the [`Verifier`] does.
struct Workers {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Workers {
    /// Nice value of the argon2 threads: when a thread at nice 0 (the proxy's) wants the CPU,
    /// the scheduler gives it about 98% of a core they share. (At nice 10, 90%: the known
    /// caller's p99 under the flood of `tests/flood.rs` rose by 1.6-1.8× rather than 1.2-1.6×.)
    const NICE: i32 = 19;

    fn start(threads: usize) -> Workers {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name("argon2".into())
                .spawn(move || {
                    lower_priority(Workers::NICE);
                    loop {
                        let job = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("an argon2 thread starts");
        }
        Workers { jobs }
    }

    fn run(&self, job: Job) {
        // The threads live as long as the sender: a send cannot fail.
        let _ = self.jobs.send(job);
    }
}

/// Lowers the calling thread's priority to `nice`. Best effort: where it fails, argon2 runs at
/// the proxy's priority, as it would anywhere else.
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    // On Linux, the nice value of a thread id is that thread's own, and raising it needs no
    // privilege.
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), nice) {
        tracing::debug!(%error, "argon2 threads keep the proxy's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_: i32) {}

/// A hash of the default cost that no password matches, made without running argon2 (a run
/// at start would leave its memory with the allocator): random salt, random output.
fn decoy() -> PasswordHash {
    use base64::Engine;
    let mut random = [0u8; 48];
    ring::rand::SystemRandom::new()
        .fill(&mut random)
        .expect("system random source");
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let (salt, output) = random.split_at(16);
    let text = format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        argon2::Params::DEFAULT_M_COST,
        argon2::Params::DEFAULT_T_COST,
        argon2::Params::DEFAULT_P_COST,
        b64.encode(salt),
        b64.encode(output)
    );
    PasswordHash::new(&text).expect("a well-formed PHC string")
}

/// Counts a run as pending while it lives.
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a run as one of its peer's while it lives.
struct PeerPending<'a>(&'a Mutex<HashMap<IpAddr, usize>>, IpAddr);

impl Drop for PeerPending<'_> {
    fn drop(&mut self) {
        let mut by_peer = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = by_peer.get_mut(&self.1) {
            *held -= 1;
            if *held == 0 {
                by_peer.remove(&self.1);
            }
        }
    }
}

/// Room for one more verdict, within [`MAX_REMEMBERED`]: stale verdicts go first, then
/// refusals and checks in flight; good verdicts are never evicted. False when every place
/// holds a good verdict: the new one is then not remembered.
fn make_room(verdicts: &mut HashMap<[u8; 16], Verdict, TagHash>, now: Instant) -> bool {
    if verdicts.len() < MAX_REMEMBERED {
        return true;
    }
    verdicts.retain(|_, v| v.is_fresh(now));
    if verdicts.len() >= MAX_REMEMBERED {
        verdicts.retain(|_, v| v.outcome.get() == Some(&true));
    }
    verdicts.len() < MAX_REMEMBERED
}

/// Checks a password against an argon2 hash in PHC form.
pub fn check_password(password: &str, hash: &PasswordHash) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// An argon2id hash of `password` in PHC form (`$argon2id$v=19$m=19456,t=2,p=1$…`), with the
/// argon2 crate's default cost (OWASP's recommendation) and a random salt.
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters and a random salt")
        .to_string()
}

impl Verifier {
    /// argon2 runs so far.
    #[cfg(test)]
    pub(super) fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Takes every place where argon2 runs: checks wait until the permit is dropped.
    #[cfg(test)]
    pub(super) fn hold_the_runs(&self) -> tokio::sync::OwnedSemaphorePermit {
        let all = self.slots.available_permits() as u32;
        self.slots
            .clone()
            .try_acquire_many_owned(all)
            .expect("no check runs")
    }

    /// The verdicts remembered now, with when each was made and its outcome (unset while its
    /// verification runs).
    #[cfg(test)]
    pub(super) fn remembered(&self) -> Vec<(Instant, Option<bool>)> {
        let verdicts = self.verdicts.lock().unwrap();
        verdicts
            .values()
            .map(|v| (v.created, v.outcome.get().copied()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(outcome: Option<bool>, created: Instant) -> Verdict {
        Verdict {
            created,
            outcome: Arc::new(OnceCell::new_with(outcome)),
        }
    }

    #[test]
    fn the_decoy_costs_what_a_real_hash_does_and_matches_nothing() {
        let decoy = decoy();
        let params = argon2::Params::try_from(&decoy).unwrap();
        let real = PasswordHash::new(&hash_password("x")).unwrap();
        assert_eq!(params, argon2::Params::try_from(&real).unwrap());
        assert!(!check_password("", &decoy));
        assert_ne!(decoy.to_string(), super::decoy().to_string(), "random");
    }

    #[test]
    fn good_verdicts_are_never_evicted_for_refusals() {
        let now = Instant::now();
        let mut verdicts: HashMap<[u8; 16], Verdict, TagHash> = HashMap::default();
        let mut tag = 0u128;
        let mut next = || {
            tag += 1;
            tag.to_le_bytes()
        };
        let good = next();
        verdicts.insert(good, verdict(Some(true), now));
        while verdicts.len() < MAX_REMEMBERED {
            verdicts.insert(next(), verdict(Some(false), now));
        }
        assert!(make_room(&mut verdicts, now));
        assert!(verdicts.contains_key(&good), "the good verdict stays");
        assert_eq!(verdicts.len(), 1, "the refusals made room");
        // Full of good verdicts: a new one is not remembered, none is evicted.
        while verdicts.len() < MAX_REMEMBERED {
            verdicts.insert(next(), verdict(Some(true), now));
        }
        assert!(!make_room(&mut verdicts, now));
        assert_eq!(verdicts.len(), MAX_REMEMBERED);
    }
}
