//! The argon2 check of a `login/password` credential, paid once per caller rather than once
//! per request: a verdict is remembered for a while, keyed by a MAC of what was presented
//! (SipHash-2-4 with a 128-bit tag, a keyed pseudorandom function built for short inputs,
//! under a key that lives only in this process), and concurrent requests with the same
//! credential share one verification.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use ring::rand::SecureRandom;
use siphasher::sip128::{Hasher128, SipHasher24};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use super::Caller;
use crate::secret::Secret;

/// How long a verified credential is accepted without running argon2 again.
pub const REMEMBER_VERIFIED: Duration = Duration::from_secs(10 * 60);
/// How long a refused one is refused without running argon2 again: a client retrying with a
/// wrong password costs one verification a minute, not one a request.
pub const REMEMBER_REFUSED: Duration = Duration::from_secs(60);
/// Bound on the remembered verdicts, so that a flood of made-up credentials cannot grow memory.
pub const MAX_REMEMBERED: usize = 10_000;

/// A remembered verdict; `outcome` is unset while the verification runs.
pub struct Verdict {
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

/// The remembered verdicts, and the argon2 runs behind them.
pub struct Verifier {
    /// The MAC key. SipHash rather than HMAC-SHA256: a tag is computed on every request, and
    /// SipHash is much cheaper on a short credential (`bench/README.md`), with the same
    /// use: without the key, nobody can find two credentials with one tag.
    key: [u8; 16],
    verdicts: Mutex<HashMap<[u8; 16], Verdict, TagHash>>,
    /// argon2 runs on the blocking pool, at most one per core at a time, so a burst of
    /// verifications cannot take every blocking thread or the whole CPU.
    slots: Arc<Semaphore>,
    /// argon2 runs so far.
    runs: Arc<AtomicU64>,
}

impl Verifier {
    pub fn new() -> Verifier {
        let mut key = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .expect("system random source");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier {
            key,
            verdicts: Mutex::new(HashMap::default()),
            slots: Arc::new(Semaphore::new(cores)),
            runs: Arc::default(),
        }
    }

    /// Whether `password` is the password of `caller` (the `index`-th).
    pub async fn verify(&self, index: usize, caller: &Caller, password: &str) -> bool {
        let mut mac = SipHasher24::new_with_key(&self.key);
        std::hash::Hasher::write(&mut mac, &(index as u64).to_le_bytes());
        std::hash::Hasher::write(&mut mac, password.as_bytes());
        let tag = mac.finish128().as_bytes();

        let outcome = {
            let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match verdicts.get(&tag) {
                Some(verdict) if verdict.is_fresh(now) => verdict.outcome.clone(),
                _ => {
                    if verdicts.len() >= MAX_REMEMBERED {
                        verdicts.retain(|_, v| v.is_fresh(now));
                        if verdicts.len() >= MAX_REMEMBERED {
                            verdicts.clear();
                        }
                    }
                    let outcome = Arc::new(OnceCell::new());
                    verdicts.insert(
                        tag,
                        Verdict {
                            created: now,
                            outcome: outcome.clone(),
                        },
                    );
                    outcome
                }
            }
        };
        *outcome
            .get_or_init(|| async {
                let Ok(_slot) = self.slots.acquire().await else {
                    return false;
                };
                let hash = caller.password.clone();
                let password = Secret::from(password);
                let runs = self.runs.clone();
                tokio::task::spawn_blocking(move || {
                    runs.fetch_add(1, Ordering::Relaxed);
                    check_password(password.expose(), &hash)
                })
                .await
                .unwrap_or(false)
            })
            .await
    }
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
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// The verdicts remembered now, with when each was made and its outcome (unset while its
    /// verification runs).
    #[cfg(test)]
    pub fn remembered(&self) -> Vec<(Instant, Option<bool>)> {
        let verdicts = self.verdicts.lock().unwrap();
        verdicts
            .values()
            .map(|v| (v.created, v.outcome.get().copied()))
            .collect()
    }
}
