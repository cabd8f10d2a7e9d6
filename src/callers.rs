//! Who is calling: the legacy credential a request presents, the caller it belongs to, and the
//! way the request goes (design.md, "Callers").
//!
//! Campaign's `login/password` form of the session token is checked against the caller's argon2
//! hash. argon2 is slow on purpose, so a verdict is remembered for a while, keyed by an HMAC of
//! what was presented (under a key that lives only in this process), and concurrent requests
//! with the same credential share one verification: argon2 runs once per caller, not once per
//! request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use ring::hmac;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use crate::config::{CallerSettings, Mode, UnknownCallers};
use crate::secret::Secret;

/// How long a verified credential is accepted without running argon2 again.
pub const REMEMBER_VERIFIED: Duration = Duration::from_secs(10 * 60);
/// How long a refused one is refused without running argon2 again: a client retrying with a
/// wrong password costs one verification a minute, not one a request.
pub const REMEMBER_REFUSED: Duration = Duration::from_secs(60);
/// Bound on the remembered verdicts, so that a flood of made-up credentials cannot grow memory.
pub const MAX_REMEMBERED: usize = 10_000;

/// A configured legacy integration.
#[derive(Debug)]
pub struct Caller {
    pub name: Arc<str>,
    pub login: String,
    password: Arc<PasswordHash>,
    /// Index of its technical account in the profile list.
    pub profile: usize,
    pub mode: Mode,
}

/// The way a request goes once its credential is known.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    /// Verified caller in `ims` mode: strip the credential, add its Bearer token.
    Ims(&'a Caller),
    /// Caller in `legacy` mode: forward unchanged, Campaign checks the credential.
    Legacy(&'a Caller),
    /// A credential no caller owns, with `unknown_callers = "legacy"`: forward unchanged.
    Transparent,
}

/// Why a credential is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential in the session token")]
    Missing,
    #[error("credential of no configured caller")]
    Unknown,
    #[error("wrong password for caller {0}")]
    WrongPassword(Arc<str>),
}

pub struct Callers {
    callers: Vec<Caller>,
    by_login: HashMap<String, usize>,
    unknown: UnknownCallers,
    verifier: Verifier,
}

impl Callers {
    pub fn new(settings: &[CallerSettings], unknown: UnknownCallers) -> Callers {
        let callers: Vec<Caller> = settings
            .iter()
            .map(|c| Caller {
                name: c.name.as_str().into(),
                login: c.login.clone(),
                password: Arc::new(c.password.clone()),
                profile: c.profile,
                mode: c.mode,
            })
            .collect();
        let by_login = callers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.login.clone(), i))
            .collect();
        Callers {
            callers,
            by_login,
            unknown,
            verifier: Verifier::new(),
        }
    }

    /// Decides the way of a request from the credential in its session token.
    pub async fn route(&self, credential: &Secret) -> Result<Route<'_>, AuthError> {
        let value = credential.expose();
        let owner = value
            .split_once('/')
            .and_then(|(login, password)| Some((*self.by_login.get(login)?, password)));
        let Some((index, password)) = owner else {
            return match (self.unknown, value.is_empty()) {
                (UnknownCallers::Legacy, _) => Ok(Route::Transparent),
                (UnknownCallers::Reject, true) => Err(AuthError::Missing),
                (UnknownCallers::Reject, false) => Err(AuthError::Unknown),
            };
        };
        let caller = &self.callers[index];
        match caller.mode {
            Mode::Legacy => Ok(Route::Legacy(caller)),
            Mode::Ims => {
                if self.verifier.verify(index, caller, password).await {
                    Ok(Route::Ims(caller))
                } else {
                    Err(AuthError::WrongPassword(caller.name.clone()))
                }
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Caller> {
        self.callers.iter()
    }
}

/// A remembered verdict; `outcome` is unset while the verification runs.
struct Verdict {
    created: Instant,
    outcome: Arc<OnceCell<bool>>,
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

struct Verifier {
    key: hmac::Key,
    verdicts: Mutex<HashMap<[u8; 32], Verdict>>,
    /// argon2 runs on the blocking pool, at most one per core at a time, so a burst of
    /// verifications cannot take every blocking thread or the whole CPU.
    slots: Arc<Semaphore>,
}

impl Verifier {
    fn new() -> Verifier {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system random source");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier {
            key,
            verdicts: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(cores)),
        }
    }

    async fn verify(&self, index: usize, caller: &Caller, password: &str) -> bool {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(&(index as u64).to_le_bytes());
        context.update(password.as_bytes());
        let mut tag = [0u8; 32];
        tag.copy_from_slice(context.sign().as_ref());

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
                tokio::task::spawn_blocking(move || check_password(password.expose(), &hash))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CallerSettings;

    /// A cheap hash (m=64 KiB, t=1) so tests stay fast; the cost is part of the PHC string.
    fn cheap_hash(password: &str) -> PasswordHash {
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let argon2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        argon2.hash_password(password.as_bytes()).unwrap()
    }

    fn callers(unknown: UnknownCallers) -> Callers {
        let settings = vec![
            CallerSettings {
                name: "crm-events".into(),
                login: "mc".into(),
                password: cheap_hash("s3cret/with/slashes"),
                profile: 0,
                mode: Mode::Ims,
            },
            CallerSettings {
                name: "old-crm".into(),
                login: "crm".into(),
                password: cheap_hash("whatever"),
                profile: 0,
                mode: Mode::Legacy,
            },
        ];
        Callers::new(&settings, unknown)
    }

    fn cred(text: &str) -> Secret {
        Secret::from(text)
    }

    #[tokio::test]
    async fn routes_by_credential() {
        let callers = callers(UnknownCallers::Reject);
        // The password is everything after the first slash.
        match callers.route(&cred("mc/s3cret/with/slashes")).await {
            Ok(Route::Ims(c)) => assert_eq!(&*c.name, "crm-events"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            callers.route(&cred("mc/wrong")).await.unwrap_err(),
            AuthError::WrongPassword("crm-events".into())
        );
        // A legacy caller is not checked here: Campaign checks it.
        assert!(matches!(
            callers.route(&cred("crm/anything")).await,
            Ok(Route::Legacy(_))
        ));
        assert_eq!(
            callers.route(&cred("")).await.unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            callers.route(&cred("nobody/x")).await.unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(
            callers
                .route(&cred("a-campaign-session-token"))
                .await
                .unwrap_err(),
            AuthError::Unknown
        );
    }

    #[tokio::test]
    async fn unknown_credentials_pass_through_in_legacy() {
        let callers = callers(UnknownCallers::Legacy);
        assert!(matches!(
            callers.route(&cred("")).await,
            Ok(Route::Transparent)
        ));
        assert!(matches!(
            callers.route(&cred("nobody/x")).await,
            Ok(Route::Transparent)
        ));
        // A known caller with a wrong password is still refused: the login is one we own.
        assert!(callers.route(&cred("mc/wrong")).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_verification() {
        let callers = Arc::new(callers(UnknownCallers::Reject));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let callers = callers.clone();
                tokio::spawn(async move {
                    matches!(
                        callers.route(&cred("mc/s3cret/with/slashes")).await,
                        Ok(Route::Ims(_))
                    )
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap());
        }
        let verdicts = callers.verifier.verdicts.lock().unwrap();
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts.values().next().unwrap().outcome.get(), Some(&true));
    }

    /// When the one remembered verdict was made.
    fn remembered_at(callers: &Callers) -> Instant {
        let verdicts = callers.verifier.verdicts.lock().unwrap();
        assert_eq!(verdicts.len(), 1);
        verdicts.values().next().unwrap().created
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_expire() {
        let callers = callers(UnknownCallers::Reject);
        let good = cred("mc/s3cret/with/slashes");
        assert!(callers.route(&good).await.is_ok());
        let first = remembered_at(&callers);
        tokio::time::advance(REMEMBER_VERIFIED - Duration::from_secs(1)).await;
        assert!(callers.route(&good).await.is_ok());
        let same = remembered_at(&callers);
        assert_eq!(first, same, "still remembered");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(callers.route(&good).await.is_ok());
        let renewed = remembered_at(&callers);
        assert!(
            renewed > first,
            "verified again after {REMEMBER_VERIFIED:?}"
        );
    }

    #[test]
    fn hashes_verify() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$v=19$"));
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(check_password("correct horse", &parsed));
        assert!(!check_password("correct horse battery", &parsed));
    }
}
