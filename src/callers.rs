//! Who is calling: the legacy credential a request presents, the caller it belongs to, and the
//! way the request goes (`docs/architecture.md`, "Callers").
//!
//! Campaign's `login/password` form of the session token is checked against the caller's argon2
//! hash (`callers/verifier.rs`): argon2 is slow on purpose, so a verdict is remembered for a
//! while, and concurrent requests with the same credential share one verification.
//!
//! A caller that logs on (`xtk:session#Logon`) gets a session token of imsbridge's own
//! (`sessions.rs`) and presents it afterwards, in the first parameter, the `__sessiontoken`
//! cookie or `X-Session-Token`, with its security token beside it.

mod verifier;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use ipnet::IpNet;

pub use verifier::{check_password, hash_password};

use crate::carriers::{Conflict, Credential};
use crate::clock::Clock;
use crate::config::{CallerSettings, Mode, PasswordLimits, SessionSettings, UnknownCallers};
use crate::sessions::{Issued, SessionError, Sessions};
use crate::state::State;
use crate::tls::{AltName, CertIdentity, SubjectName};
use verifier::{Busy, Verifier};

/// A configured legacy integration.
#[derive(Debug)]
pub(crate) struct Caller {
    /// Its place in the config's list.
    pub index: usize,
    pub name: Arc<str>,
    pub login: Arc<str>,
    password: Arc<PasswordHash>,
    /// Index of its technical account in the profile list.
    pub profile: usize,
    pub mode: Mode,
    allow_from: Vec<IpNet>,
    /// Subject its client certificate must have, or one of these subjectAltNames.
    cert_subject: Option<SubjectName>,
    cert_sans: Vec<AltName>,
    /// `shadow` mode: the actions copied the `ims` way.
    shadow_actions: Vec<String>,
}

impl Caller {
    /// Its `shadow_actions`.
    pub(crate) fn shadow_actions(&self) -> &[String] {
        &self.shadow_actions
    }

    /// Whether a call of `action` is copied the `ims` way (`shadow` mode).
    pub(crate) fn shadows(&self, action: &str) -> bool {
        self.mode == Mode::Shadow && self.shadow_actions.iter().any(|a| a == action)
    }

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

/// What a request presents: its credential (read by `carriers`), and where it comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Presented<'a> {
    pub credential: Credential<'a>,
    /// The TCP peer.
    pub peer: IpAddr,
    /// What the client certificate names (mTLS).
    pub cert: Option<&'a CertIdentity>,
}

/// What a Logon leads to.
pub(crate) enum LogonWay<'a> {
    /// imsbridge answers: a caller in `ims` mode, verified.
    Answer(&'a Caller, Issued),
    /// Campaign answers: [`Route::Legacy`] for a caller in `legacy` or `canary` mode,
    /// [`Route::Transparent`] for a login no caller owns with `unknown_callers = "legacy"`.
    Forward(Route<'a>),
}

/// The way a request goes once its credential is known.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route<'a> {
    /// Verified caller in `ims` mode: strip the credential, add its Bearer token.
    Ims(&'a Caller),
    /// Caller in `legacy` mode: forward unchanged, Campaign checks the credential.
    Legacy(&'a Caller),
    /// A credential no caller owns, with `unknown_callers = "legacy"`: forward unchanged.
    Transparent,
}

impl<'a> Route<'a> {
    /// The caller it goes as, if any.
    pub(crate) fn caller(self) -> Option<&'a Caller> {
        match self {
            Route::Ims(caller) | Route::Legacy(caller) => Some(caller),
            Route::Transparent => None,
        }
    }
}

/// Why a credential is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
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
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error("too many password checks in progress (server.max_pending_password_checks)")]
    Busy,
}

impl From<Busy> for AuthError {
    fn from(_: Busy) -> AuthError {
        AuthError::Busy
    }
}

pub(crate) struct Callers {
    callers: Vec<Caller>,
    by_login: HashMap<String, usize>,
    unknown: UnknownCallers,
    verifier: Verifier,
    /// Issues and checks session tokens; `None` without `[sessions]`.
    sessions: Option<Sessions>,
    /// Draws the share of a `canary` caller's requests that go the `ims` way.
    canary: Mutex<fastrand::Rng>,
    /// The time issued sessions are checked against.
    clock: Clock,
    /// Where a Logoff's revocation is written, for every replica.
    state: Arc<State>,
    /// `[admin] password`: the page's password, checked as a caller's is (the same queue, the
    /// same remembered verdicts and failure limits, under the login [`ADMIN_LOGIN`]).
    admin: Option<Caller>,
}

/// The place of the admin listener's password among the callers' (for the verdicts' keys).
const ADMIN_INDEX: usize = usize::MAX;
/// The login the failure limits count the admin listener's password guesses under.
const ADMIN_LOGIN: &str = "[admin]";

impl Callers {
    /// The callers of the config. `canary_seed` fixes the canary draws (tests); `None`: a
    /// random seed.
    pub(crate) fn new(
        settings: &[CallerSettings],
        unknown: UnknownCallers,
        sessions: Option<&SessionSettings>,
        canary_seed: Option<u64>,
        limits: PasswordLimits,
        clock: Clock,
        state: &Arc<State>,
    ) -> Callers {
        let callers: Vec<Caller> = settings
            .iter()
            .enumerate()
            .map(|(index, c)| Caller {
                index,
                name: c.name.as_str().into(),
                login: c.login.as_str().into(),
                password: Arc::new(c.password.clone()),
                profile: c.profile,
                mode: c.mode,
                allow_from: c.allow_from.clone(),
                cert_subject: c.client_cert_subject.clone(),
                cert_sans: c.client_cert_san.clone(),
                shadow_actions: c.shadow_actions.clone(),
            })
            .collect();
        let by_login = callers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.login.to_string(), i))
            .collect();
        Callers {
            callers,
            by_login,
            unknown,
            verifier: Verifier::new(limits, state.counts_failures().then(|| Arc::clone(state))),
            sessions: sessions.map(|settings| Sessions::new(settings, state.revocations())),
            state: Arc::clone(state),
            admin: None,
            canary: Mutex::new(
                canary_seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            ),
            clock,
        }
    }

    /// These callers, with the admin listener's `[admin] password` (none: its page is open).
    #[must_use]
    pub(crate) fn with_admin_password(mut self, hash: Option<&PasswordHash>) -> Callers {
        self.admin = hash.map(|hash| Caller {
            index: ADMIN_INDEX,
            name: Arc::from("admin listener"),
            login: Arc::from(ADMIN_LOGIN),
            password: Arc::new(hash.clone()),
            profile: 0,
            mode: Mode::Legacy,
            allow_from: Vec::new(),
            cert_subject: None,
            cert_sans: Vec::new(),
            shadow_actions: Vec::new(),
        });
        self
    }

    /// Decides the way of a request from the credentials it presents.
    pub(crate) async fn route(&self, presented: Presented<'_>) -> Result<Route<'_>, AuthError> {
        let owner = match presented.credential {
            Credential::Session {
                token,
                security,
                in_body,
            } if self.sessions.is_some() => {
                return self.route_session(token, security, in_body, presented);
            }
            Credential::Password { login, password } => {
                self.by_login.get(login).map(|&index| (index, password))
            }
            Credential::Empty | Credential::Session { .. } | Credential::Other(_) => None,
        };
        let Some((index, password)) = owner else {
            return match (self.unknown, presented.credential) {
                (UnknownCallers::Legacy, _) => Ok(Route::Transparent),
                (UnknownCallers::Reject, Credential::Empty) => Err(AuthError::Missing),
                (UnknownCallers::Reject, credential) => {
                    // A `login/password` of no caller costs what a wrong password does.
                    if let Credential::Password { login, password } = credential {
                        self.verifier
                            .verify_unknown(login, password, presented.peer)
                            .await?;
                    }
                    Err(AuthError::Unknown)
                }
            };
        };
        let caller = &self.callers[index];
        self.check_origin(caller, presented)?;
        let ims = match caller.mode {
            // A shadow copy goes the `ims` way only once the password is checked (`proxy`).
            Mode::Legacy | Mode::Shadow => false,
            Mode::Ims => true,
            // Decided per request.
            Mode::Canary { percent } => {
                let draw = self
                    .canary
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .f64();
                draw * 100.0 < percent
            }
        };
        if !ims {
            // Campaign checks the credential on the legacy way.
            return Ok(Route::Legacy(caller));
        }
        if self
            .verifier
            .verify(index, caller, password, presented.peer)
            .await?
        {
            Ok(Route::Ims(caller))
        } else {
            Err(AuthError::WrongPassword(caller.name.clone()))
        }
    }

    /// [`Callers::route`] for a session imsbridge issued: the `ims` way of the caller it was
    /// issued to, while that caller is in `ims` mode.
    fn route_session(
        &self,
        token: &str,
        security: Option<&str>,
        in_body: bool,
        presented: Presented<'_>,
    ) -> Result<Route<'_>, AuthError> {
        let sessions = self.sessions.as_ref().ok_or(AuthError::Unknown)?;
        Self::check_security_copy(security, in_body)?;
        let name = sessions
            .verify(token, security, self.clock.now())
            .map_err(AuthError::Session)?;
        // A caller moved out of `ims` mode ends its imsbridge sessions: the client logs on
        // again, and its Logon goes the caller's new way.
        let caller = self
            .callers
            .iter()
            .find(|c| *c.name == *name && c.mode == Mode::Ims)
            .ok_or(AuthError::SessionOfNoImsCaller(name))?;
        self.check_origin(caller, presented)?;
        Ok(Route::Ims(caller))
    }

    /// Decides what to do with `xtk:session#Logon` for `login`: answer it (an `ims` caller
    /// with the right password gets a session of imsbridge's own) or let Campaign answer.
    pub(crate) async fn logon(
        &self,
        login: &str,
        password: &str,
        presented: Presented<'_>,
    ) -> Result<LogonWay<'_>, AuthError> {
        let Some(&index) = self.by_login.get(login) else {
            return match (self.unknown, login.is_empty()) {
                (UnknownCallers::Legacy, _) => Ok(LogonWay::Forward(Route::Transparent)),
                (UnknownCallers::Reject, true) => Err(AuthError::Missing),
                (UnknownCallers::Reject, false) => {
                    self.verifier
                        .verify_unknown(login, password, presented.peer)
                        .await?;
                    Err(AuthError::Unknown)
                }
            };
        };
        let caller = &self.callers[index];
        self.check_origin(caller, presented)?;
        if caller.mode != Mode::Ims {
            return Ok(LogonWay::Forward(Route::Legacy(caller)));
        }
        let Some(sessions) = &self.sessions else {
            return Err(AuthError::LogonNotEnabled(caller.name.clone()));
        };
        if !self
            .verifier
            .verify(index, caller, password, presented.peer)
            .await?
        {
            return Err(AuthError::WrongPassword(caller.name.clone()));
        }
        Ok(LogonWay::Answer(
            caller,
            sessions.issue(&caller.name, self.clock.now()),
        ))
    }

    /// Checks a Logoff's session token: true when it is one of ours, whoever it was issued to
    /// and even expired (Logoff ends it anyway); an issued-looking token that fails the check is
    /// an error. False when it is not ours: Campaign's business.
    pub(crate) async fn logoff(&self, presented: Presented<'_>) -> Result<bool, AuthError> {
        let Credential::Session {
            token,
            security,
            in_body,
        } = presented.credential
        else {
            return Ok(false);
        };
        let Some(sessions) = &self.sessions else {
            return Ok(false);
        };
        Self::check_security_copy(security, in_body)?;
        let now = self.clock.now();
        match sessions.verify(token, security, now) {
            Ok(_) => {
                if let Some((nonce, expires)) = sessions.revocation(token) {
                    self.state.revoke(nonce, expires).await;
                }
                Ok(true)
            }
            Err(SessionError::Expired | SessionError::Revoked) => Ok(true),
            Err(error) => Err(AuthError::Session(error)),
        }
    }

    /// A session token that came in a cookie or a header, not in the first parameter, must
    /// come with its security token (as Campaign asks, against cross-site requests).
    fn check_security_copy(security: Option<&str>, in_body: bool) -> Result<(), AuthError> {
        if !in_body && security.is_none() {
            return Err(AuthError::Session(SessionError::SecurityMissing));
        }
        Ok(())
    }

    /// Whether `credential` is meant for a caller that must not reach Campaign with it: the
    /// `login/password` of an `ims` or `canary` caller (right password or not), or a session
    /// imsbridge issued. Nothing is checked: a cheap test, for requests that are not routed.
    pub(crate) fn claims(&self, credential: Credential<'_>) -> bool {
        if matches!(credential, Credential::Session { .. }) {
            return true;
        }
        self.owner(credential)
            .is_some_and(|caller| matches!(caller.mode, Mode::Ims | Mode::Canary { .. }))
    }

    /// Whether `password` is the right one of the `shadow` caller `name`: checked before its
    /// call is copied the `ims` way (its own call went the legacy way unchecked).
    pub(crate) async fn verify_copy(&self, name: &str, password: &str, peer: IpAddr) -> bool {
        let Some(caller) = self.callers.iter().find(|c| *c.name == *name) else {
            return false;
        };
        if caller.mode != Mode::Shadow {
            return false;
        }
        self.verifier
            .verify(caller.index, caller, password, peer)
            .await
            .unwrap_or(false)
    }

    /// The caller whose login a `login/password` names, right password or not.
    pub(crate) fn owner(&self, credential: Credential<'_>) -> Option<&Caller> {
        let login = credential.login()?;
        self.by_login.get(login).map(|&index| &self.callers[index])
    }

    /// Whether the admin listener asks for a password (`[admin] password`).
    pub(crate) fn admin_protected(&self) -> bool {
        self.admin.is_some()
    }

    /// Whether `password` is the admin listener's, asked from `peer`: as a caller's password is
    /// checked (argon2 off the request's thread, the verdict remembered, failures limited per
    /// login and address). True when none is configured.
    pub(crate) async fn admin_allows(&self, password: &str, peer: IpAddr) -> bool {
        match &self.admin {
            None => true,
            Some(admin) => self
                .verifier
                .verify(ADMIN_INDEX, admin, password, peer)
                .await
                .unwrap_or(false),
        }
    }

    /// The mode of the caller named `name`.
    pub(crate) fn mode_of(&self, name: &str) -> Option<Mode> {
        self.callers
            .iter()
            .find(|c| *c.name == *name)
            .map(|c| c.mode)
    }

    /// argon2 checks waiting or running now.
    pub(crate) fn pending_checks(&self) -> usize {
        self.verifier.pending()
    }

    /// The time issued sessions are checked against.
    pub(crate) fn now(&self) -> std::time::SystemTime {
        self.clock.now()
    }

    /// How long issued sessions last, when Logon is emulated.
    pub(crate) fn session_ttl(&self) -> Option<Duration> {
        self.sessions.as_ref().map(Sessions::ttl)
    }

    /// The network (`allow_from`) and the client certificate (`client_cert_subject`, or one of
    /// `client_cert_san`) a caller's requests must come with.
    fn check_origin(&self, caller: &Caller, presented: Presented<'_>) -> Result<(), AuthError> {
        if !caller.allows(presented.peer) {
            return Err(AuthError::NotAllowed {
                caller: caller.name.clone(),
                peer: presented.peer,
            });
        }
        if caller.cert_subject.is_none() && caller.cert_sans.is_empty() {
            return Ok(());
        }
        let bound = presented.cert.is_some_and(|cert| {
            caller
                .cert_subject
                .as_ref()
                .is_some_and(|subject| subject.matches(cert))
                || caller.cert_sans.iter().any(|name| cert.has_alt_name(name))
        });
        if !bound {
            return Err(AuthError::WrongCertificate(caller.name.clone()));
        }
        Ok(())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Caller> {
        self.callers.iter()
    }
}

#[cfg(test)]
mod tests;
