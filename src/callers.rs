//! Who is calling: the legacy credential a request presents, the caller it belongs to, and the
//! way the request goes (design.md, "Callers").
//!
//! Campaign's `login/password` form of the session token is checked against the caller's argon2
//! hash. argon2 is slow on purpose, so a verdict is remembered for a while, keyed by a MAC of
//! what was presented (SipHash-2-4 with a 128-bit tag, a keyed pseudorandom function built for
//! short inputs, under a key that lives only in this process), and concurrent requests
//! with the same credential share one verification: argon2 runs once per caller, not once per
//! request.
//!
//! A caller that logs on (`xtk:session#Logon`) gets a session token of imsbridge's own
//! (`sessions.rs`) and presents it afterwards, in the first parameter, the `__sessiontoken`
//! cookie or `X-Session-Token`, with its security token beside it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use ring::rand::SecureRandom;
use siphasher::sip128::{Hasher128, SipHasher24};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use ipnet::IpNet;

use crate::config::{CallerSettings, Mode, SessionSettings, UnknownCallers};
use crate::secret::Secret;
use crate::sessions::{Issued, SessionError, Sessions};

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
    allow_from: Vec<IpNet>,
    /// Subject its client certificate must have.
    cert_subject: Option<String>,
}

impl Caller {
    /// Whether a request from `peer` may be this caller's.
    fn allows(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.allow_from.is_empty() || self.allow_from.iter().any(|net| net.contains(&peer))
    }
}

/// The credentials a request presents.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The first parameter of the method: `login/password`, or a session token.
    pub first: &'a str,
    /// The session token of the `__sessiontoken` cookie, `X-Session-Token` or the SOAP
    /// Header, taken when the first parameter is empty.
    pub session: Option<&'a str>,
    /// The security token (`X-Security-Token`), which must belong to an issued session.
    pub security: Option<&'a str>,
    /// The TCP peer.
    pub peer: IpAddr,
    /// The subject of the client certificate (mTLS).
    pub cert_subject: Option<&'a str>,
}

/// What a Logon leads to.
pub enum LogonWay<'a> {
    /// imsbridge answers: a caller in `ims` mode, verified.
    Answer(&'a Caller, Issued),
    /// Campaign answers: a caller in `legacy` or `canary` mode, or a login no caller owns
    /// with `unknown_callers = "legacy"`.
    Forward(Option<&'a Caller>),
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
    #[error("caller {caller} may not call from {peer} (allow_from)")]
    NotAllowed { caller: Arc<str>, peer: IpAddr },
    #[error("caller {0} presented no client certificate, or another's")]
    WrongCertificate(Arc<str>),
    #[error("{0}")]
    Session(SessionError),
    #[error("session issued to {0}, which is not in ims mode (or not configured) any more")]
    SessionOfNoImsCaller(String),
    #[error("caller {0} logs on, but [sessions] is not configured")]
    LogonNotEnabled(Arc<str>),
}

pub struct Callers {
    callers: Vec<Caller>,
    by_login: HashMap<String, usize>,
    unknown: UnknownCallers,
    verifier: Verifier,
    /// Issues and checks session tokens; `None` without `[sessions]`.
    sessions: Option<Sessions>,
}

impl Callers {
    pub fn new(
        settings: &[CallerSettings],
        unknown: UnknownCallers,
        sessions: Option<&SessionSettings>,
    ) -> Callers {
        let callers: Vec<Caller> = settings
            .iter()
            .map(|c| Caller {
                name: c.name.as_str().into(),
                login: c.login.clone(),
                password: Arc::new(c.password.clone()),
                profile: c.profile,
                mode: c.mode,
                allow_from: c.allow_from.clone(),
                cert_subject: c.client_cert_subject.clone(),
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
            sessions: sessions.map(Sessions::new),
        }
    }

    /// Decides the way of a request from the credentials it presents.
    pub async fn route(&self, presented: Presented<'_>) -> Result<Route<'_>, AuthError> {
        let token = match presented.first {
            "" => presented.session.unwrap_or_default(),
            first => first,
        };
        if Sessions::looks_issued(token)
            && let Some(sessions) = &self.sessions
        {
            let name = sessions
                .verify(token, presented.security, SystemTime::now())
                .map_err(AuthError::Session)?;
            // A caller moved out of `ims` mode ends its imsbridge sessions: the client logs on
            // again, and its Logon goes the caller's new way.
            let caller = self
                .callers
                .iter()
                .find(|c| *c.name == *name && c.mode == Mode::Ims)
                .ok_or(AuthError::SessionOfNoImsCaller(name))?;
            self.check_origin(caller, presented)?;
            return Ok(Route::Ims(caller));
        }
        let owner = token
            .split_once('/')
            .and_then(|(login, password)| Some((*self.by_login.get(login)?, password)));
        let Some((index, password)) = owner else {
            return match (self.unknown, token.is_empty()) {
                (UnknownCallers::Legacy, _) => Ok(Route::Transparent),
                (UnknownCallers::Reject, true) => Err(AuthError::Missing),
                (UnknownCallers::Reject, false) => Err(AuthError::Unknown),
            };
        };
        let caller = &self.callers[index];
        self.check_origin(caller, presented)?;
        let ims = match caller.mode {
            Mode::Legacy => false,
            Mode::Ims => true,
            // Decided per request.
            Mode::Canary { percent } => fastrand::f64() * 100.0 < percent,
        };
        if !ims {
            // Campaign checks the credential on the legacy way.
            return Ok(Route::Legacy(caller));
        }
        if self.verifier.verify(index, caller, password).await {
            Ok(Route::Ims(caller))
        } else {
            Err(AuthError::WrongPassword(caller.name.clone()))
        }
    }

    /// Decides what to do with `xtk:session#Logon` for `login`: answer it (an `ims` caller
    /// with the right password gets a session of imsbridge's own) or let Campaign answer.
    pub async fn logon(
        &self,
        login: &str,
        password: &str,
        presented: Presented<'_>,
    ) -> Result<LogonWay<'_>, AuthError> {
        let Some(&index) = self.by_login.get(login) else {
            return match (self.unknown, login.is_empty()) {
                (UnknownCallers::Legacy, _) => Ok(LogonWay::Forward(None)),
                (UnknownCallers::Reject, true) => Err(AuthError::Missing),
                (UnknownCallers::Reject, false) => Err(AuthError::Unknown),
            };
        };
        let caller = &self.callers[index];
        self.check_origin(caller, presented)?;
        if caller.mode != Mode::Ims {
            return Ok(LogonWay::Forward(Some(caller)));
        }
        let Some(sessions) = &self.sessions else {
            return Err(AuthError::LogonNotEnabled(caller.name.clone()));
        };
        if !self.verifier.verify(index, caller, password).await {
            return Err(AuthError::WrongPassword(caller.name.clone()));
        }
        Ok(LogonWay::Answer(
            caller,
            sessions.issue(&caller.name, SystemTime::now()),
        ))
    }

    /// Checks a Logoff's session token: true when it is one of ours, whoever it was issued to
    /// and even expired (Logoff ends it anyway); an issued-looking token that fails the check is
    /// an error. False when it is not ours: Campaign's business.
    pub fn logoff(&self, presented: Presented<'_>) -> Result<bool, AuthError> {
        let token = match presented.first {
            "" => presented.session.unwrap_or_default(),
            first => first,
        };
        let Some(sessions) = self
            .sessions
            .as_ref()
            .filter(|_| Sessions::looks_issued(token))
        else {
            return Ok(false);
        };
        match sessions.verify(token, presented.security, SystemTime::now()) {
            Ok(_) | Err(SessionError::Expired) => Ok(true),
            Err(error) => Err(AuthError::Session(error)),
        }
    }

    /// How long issued sessions last, when Logon is emulated.
    pub fn session_ttl(&self) -> Option<Duration> {
        self.sessions.as_ref().map(Sessions::ttl)
    }

    /// The network (`allow_from`) and the client certificate (`client_cert_subject`) a
    /// caller's requests must come with.
    fn check_origin(&self, caller: &Caller, presented: Presented<'_>) -> Result<(), AuthError> {
        if !caller.allows(presented.peer) {
            return Err(AuthError::NotAllowed {
                caller: caller.name.clone(),
                peer: presented.peer,
            });
        }
        if let Some(subject) = &caller.cert_subject {
            let matches = presented
                .cert_subject
                .is_some_and(|presented| crate::tls::subjects_match(subject, presented));
            if !matches {
                return Err(AuthError::WrongCertificate(caller.name.clone()));
            }
        }
        Ok(())
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

struct Verifier {
    /// The MAC key. SipHash rather than HMAC-SHA256: a tag is computed on every request, and
    /// SipHash costs a tenth of it on a short credential, with the same use: without the key,
    /// nobody can find two credentials with one tag.
    key: [u8; 16],
    verdicts: Mutex<HashMap<[u8; 16], Verdict, TagHash>>,
    /// argon2 runs on the blocking pool, at most one per core at a time, so a burst of
    /// verifications cannot take every blocking thread or the whole CPU.
    slots: Arc<Semaphore>,
}

impl Verifier {
    fn new() -> Verifier {
        let mut key = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .expect("system random source");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier {
            key,
            verdicts: Mutex::new(HashMap::default()),
            slots: Arc::new(Semaphore::new(cores)),
        }
    }

    async fn verify(&self, index: usize, caller: &Caller, password: &str) -> bool {
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

    fn caller(name: &str, login: &str, password: &str, mode: Mode) -> CallerSettings {
        CallerSettings {
            name: name.into(),
            login: login.into(),
            password: cheap_hash(password),
            profile: 0,
            mode,
            allow_from: Vec::new(),
            logon: false,
            client_cert_subject: None,
        }
    }

    const SESSION_SECRET: &str = "a-session-secret-of-thirty-two-bytes-or-more";

    fn with(settings: &[CallerSettings], unknown: UnknownCallers) -> Callers {
        let sessions = SessionSettings {
            secret: Secret::from(SESSION_SECRET),
            ttl: Duration::from_secs(3600),
        };
        Callers::new(settings, unknown, Some(&sessions))
    }

    fn callers(unknown: UnknownCallers) -> Callers {
        let settings = [
            caller("crm-events", "mc", "s3cret/with/slashes", Mode::Ims),
            caller("old-crm", "crm", "whatever", Mode::Legacy),
        ];
        with(&settings, unknown)
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// The credential in the first parameter, from loopback.
    fn cred(first: &str) -> Presented<'_> {
        Presented {
            first,
            session: None,
            security: None,
            peer: LOCAL,
            cert_subject: None,
        }
    }

    #[tokio::test]
    async fn routes_by_credential() {
        let callers = callers(UnknownCallers::Reject);
        // The password is everything after the first slash.
        match callers.route(cred("mc/s3cret/with/slashes")).await {
            Ok(Route::Ims(c)) => assert_eq!(&*c.name, "crm-events"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            callers.route(cred("mc/wrong")).await.unwrap_err(),
            AuthError::WrongPassword("crm-events".into())
        );
        // A legacy caller is not checked here: Campaign checks it.
        assert!(matches!(
            callers.route(cred("crm/anything")).await,
            Ok(Route::Legacy(_))
        ));
        assert_eq!(
            callers.route(cred("")).await.unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            callers.route(cred("nobody/x")).await.unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(
            callers
                .route(cred("a-campaign-session-token"))
                .await
                .unwrap_err(),
            AuthError::Unknown
        );
    }

    #[tokio::test]
    async fn unknown_credentials_pass_through_in_legacy() {
        let callers = callers(UnknownCallers::Legacy);
        assert!(matches!(
            callers.route(cred("")).await,
            Ok(Route::Transparent)
        ));
        assert!(matches!(
            callers.route(cred("nobody/x")).await,
            Ok(Route::Transparent)
        ));
        // A known caller with a wrong password is still refused: the login is one we own.
        assert!(callers.route(cred("mc/wrong")).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_verification() {
        let callers = Arc::new(callers(UnknownCallers::Reject));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let callers = callers.clone();
                tokio::spawn(async move {
                    matches!(
                        callers.route(cred("mc/s3cret/with/slashes")).await,
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
        let good = "mc/s3cret/with/slashes";
        assert!(callers.route(cred(good)).await.is_ok());
        let first = remembered_at(&callers);
        tokio::time::advance(REMEMBER_VERIFIED - Duration::from_secs(1)).await;
        assert!(callers.route(cred(good)).await.is_ok());
        let same = remembered_at(&callers);
        assert_eq!(first, same, "still remembered");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(callers.route(cred(good)).await.is_ok());
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

    #[tokio::test]
    async fn a_caller_bound_to_a_certificate_needs_it() {
        let mut bound = caller("crm-events", "mc", "pw", Mode::Ims);
        bound.client_cert_subject = Some("CN=crm-pusher,O=Example".into());
        let callers = with(&[bound], UnknownCallers::Reject);
        let with_cert = |subject| Presented {
            cert_subject: subject,
            ..cred("mc/pw")
        };
        assert!(
            callers
                .route(with_cert(Some("O=Example,CN=crm-pusher")))
                .await
                .is_ok()
        );
        for wrong in [None, Some("CN=intruder,O=Example")] {
            assert_eq!(
                callers.route(with_cert(wrong)).await.unwrap_err(),
                AuthError::WrongCertificate("crm-events".into())
            );
        }
    }

    #[tokio::test]
    async fn canary_sends_its_share_the_ims_way() {
        let settings = [caller(
            "crm-events",
            "mc",
            "pw",
            Mode::Canary { percent: 30.0 },
        )];
        let callers = with(&settings, UnknownCallers::Reject);
        let mut ims = 0;
        for _ in 0..2000 {
            match callers.route(cred("mc/pw")).await {
                Ok(Route::Ims(_)) => ims += 1,
                Ok(Route::Legacy(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        // Binomial(2000, 0.3): mean 600, sd 20.5; five sd either side.
        assert!((497..=703).contains(&ims), "{ims} of 2000 went the ims way");
        // The legacy share is not checked here (Campaign checks it); the ims share is.
        let mut refused = 0;
        for _ in 0..200 {
            if callers.route(cred("mc/wrong")).await.is_err() {
                refused += 1;
            }
        }
        assert!((20..=100).contains(&refused), "{refused}");
    }

    #[tokio::test]
    async fn allow_from_is_checked_on_every_way() {
        let mut ims = caller("crm-events", "mc", "pw", Mode::Ims);
        ims.allow_from = vec![
            "10.20.0.0/16".parse().unwrap(),
            "192.0.2.7/32".parse().unwrap(),
        ];
        let mut legacy = caller("old-crm", "crm", "pw", Mode::Legacy);
        legacy.allow_from = vec!["10.20.0.0/16".parse().unwrap()];
        let callers = with(&[ims, legacy], UnknownCallers::Reject);
        let from = |peer: &str, first| Presented {
            peer: peer.parse().unwrap(),
            ..cred(first)
        };
        assert!(callers.route(from("10.20.3.4", "mc/pw")).await.is_ok());
        assert!(callers.route(from("192.0.2.7", "mc/pw")).await.is_ok());
        assert!(
            callers
                .route(from("::ffff:10.20.3.4", "mc/pw"))
                .await
                .is_ok()
        );
        assert!(matches!(
            callers.route(from("10.21.0.1", "mc/pw")).await,
            Err(AuthError::NotAllowed { .. })
        ));
        assert!(matches!(
            callers.route(from("127.0.0.1", "crm/pw")).await,
            Err(AuthError::NotAllowed { .. })
        ));
        assert!(matches!(
            callers.logon("mc", "pw", from("10.99.0.1", "")).await,
            Err(AuthError::NotAllowed { .. })
        ));
    }

    #[tokio::test]
    async fn logon_issues_sessions_that_route_the_ims_way() {
        let callers = callers(UnknownCallers::Reject);
        let LogonWay::Answer(caller, issued) = callers
            .logon("mc", "s3cret/with/slashes", cred(""))
            .await
            .unwrap()
        else {
            panic!("an ims caller's Logon is answered here");
        };
        assert_eq!(&*caller.name, "crm-events");
        let session = issued.session.expose();
        let security = issued.security.expose();
        // In the first parameter, or only in the cookie / header copies.
        for presented in [
            Presented {
                security: Some(security),
                ..cred(session)
            },
            Presented {
                session: Some(session),
                security: Some(security),
                ..cred("")
            },
            Presented {
                session: Some(session),
                ..cred("")
            },
        ] {
            assert!(
                matches!(callers.route(presented).await, Ok(Route::Ims(c)) if &*c.name == "crm-events")
            );
        }
        let other = callers
            .logon("mc", "s3cret/with/slashes", cred(""))
            .await
            .unwrap();
        let LogonWay::Answer(_, other) = other else {
            panic!()
        };
        assert_eq!(
            callers
                .route(Presented {
                    security: Some(other.security.expose()),
                    ..cred(session)
                })
                .await
                .unwrap_err(),
            AuthError::Session(SessionError::SecurityMismatch)
        );
        assert!(callers.logoff(cred(session)).unwrap());
        assert!(!callers.logoff(cred("mc/s3cret/with/slashes")).unwrap());
        assert_eq!(
            callers.logon("mc", "wrong", cred("")).await.err(),
            Some(AuthError::WrongPassword("crm-events".into()))
        );
        // A legacy caller's Logon is Campaign's; an unknown login is refused.
        assert!(matches!(
            callers.logon("crm", "x", cred("")).await,
            Ok(LogonWay::Forward(Some(_)))
        ));
        assert_eq!(
            callers.logon("nobody", "x", cred("")).await.err(),
            Some(AuthError::Unknown)
        );
        // Tokens of another proxy's secret are refused.
        let stranger = Sessions::new(&SessionSettings {
            secret: Secret::from("another-session-secret-of-thirty-two-bytes"),
            ttl: Duration::from_secs(60),
        })
        .issue("crm-events", SystemTime::now());
        assert_eq!(
            callers
                .route(cred(stranger.session.expose()))
                .await
                .unwrap_err(),
            AuthError::Session(SessionError::BadSignature)
        );
    }

    #[tokio::test]
    async fn sessions_end_when_the_caller_leaves_ims_mode() {
        let settings = [caller("crm-events", "mc", "pw", Mode::Ims)];
        let before = with(&settings, UnknownCallers::Reject);
        let LogonWay::Answer(_, issued) = before.logon("mc", "pw", cred("")).await.unwrap() else {
            panic!()
        };
        let after = with(
            &[caller("crm-events", "mc", "pw", Mode::Legacy)],
            UnknownCallers::Reject,
        );
        assert!(matches!(
            after.route(cred(issued.session.expose())).await,
            Err(AuthError::SessionOfNoImsCaller(_))
        ));
        // Its next Logon goes to Campaign.
        assert!(matches!(
            after.logon("mc", "pw", cred("")).await,
            Ok(LogonWay::Forward(Some(_)))
        ));
    }
}
