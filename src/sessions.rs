//! The session and security tokens imsbridge issues when it answers `xtk:session#Logon`
//! (`docs/architecture.md`, "Callers").
//!
//! They are stateless: each carries the caller and an expiry, signed with HMAC-SHA256 under
//! `[sessions].secret`, so every replica that shares the secret accepts the tokens any other
//! issued. The security token is a second MAC over the same claims: it belongs to its session
//! token and to no other. A Logoff revokes its session: the session's nonce is kept, bounded,
//! until the session would have expired anyway, in the state store (`state.rs`), so that every
//! replica refuses it, and after a restart.
//!
//! `ibs1.<claims>.<mac>` and `ibx1.<mac>`, base64url: safe in a cookie, a header and XML.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::config::SessionSettings;
use crate::secret::Secret;
use crate::state::Revocations;

const SESSION_PREFIX: &str = "ibs1.";
const SECURITY_PREFIX: &str = "ibx1.";

/// Why a presented session is refused. Every one ends in Campaign's XSV-350008 fault, on which
/// clients log on again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("session token not signed with this proxy's session secret")]
    BadSignature,
    #[error("session token malformed")]
    Malformed,
    #[error("session expired")]
    Expired,
    #[error("security token does not belong to the session token")]
    SecurityMismatch,
    #[error("a session token in a cookie or header comes without its security token")]
    SecurityMissing,
    #[error("session ended by a Logoff")]
    Revoked,
}

/// What a session token says.
#[derive(Serialize, Deserialize)]
struct Claims {
    /// The caller's name.
    c: String,
    /// Expiry, seconds since the epoch.
    e: u64,
    /// A nonce, so that two sessions of a caller never share a token.
    n: String,
}

/// A pair of tokens, as `LogonResponse` returns them.
pub(crate) struct Issued {
    pub session: Secret,
    pub security: Secret,
}

/// Issues and checks session tokens.
pub(crate) struct Sessions {
    key: hmac::Key,
    ttl: Duration,
    /// The sessions ended by a Logoff, here or on another replica.
    revoked: Arc<Revocations>,
}

impl Sessions {
    pub(crate) fn new(settings: &SessionSettings, revoked: Arc<Revocations>) -> Sessions {
        Sessions {
            key: hmac::Key::new(hmac::HMAC_SHA256, settings.secret.expose().as_bytes()),
            ttl: settings.ttl,
            revoked,
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// True for a token shaped like ours (the signature is not checked).
    pub(crate) fn looks_issued(token: &str) -> bool {
        token.starts_with(SESSION_PREFIX)
    }

    /// A new pair of tokens for `caller`, valid for the configured time from `now`.
    pub(crate) fn issue(&self, caller: &str, now: SystemTime) -> Issued {
        let expires = (now + self.ttl)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            c: caller.to_owned(),
            e: expires,
            n: format!("{:032x}", fastrand::u128(..)),
        };
        let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("plain claims"));
        let session = format!("{SESSION_PREFIX}{claims}.{}", self.mac("session", &claims));
        let security = format!("{SECURITY_PREFIX}{}", self.mac("security", &claims));
        Issued {
            session: Secret::from(session),
            security: Secret::from(security),
        }
    }

    /// The caller a session token was issued to, if it is ours, intact and unexpired; a
    /// security token, when presented, must be its own.
    pub(crate) fn verify(
        &self,
        session: &str,
        security: Option<&str>,
        now: SystemTime,
    ) -> Result<String, SessionError> {
        let rest = session
            .strip_prefix(SESSION_PREFIX)
            .ok_or(SessionError::Malformed)?;
        let (claims, mac) = rest.split_once('.').ok_or(SessionError::Malformed)?;
        self.check("session", claims, mac)
            .map_err(|_| SessionError::BadSignature)?;
        if let Some(security) = security.filter(|s| !s.is_empty()) {
            let mac = security
                .strip_prefix(SECURITY_PREFIX)
                .ok_or(SessionError::SecurityMismatch)?;
            self.check("security", claims, mac)
                .map_err(|_| SessionError::SecurityMismatch)?;
        }
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(claims)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(SessionError::Malformed)?;
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now >= claims.e {
            return Err(SessionError::Expired);
        }
        if self.revoked.contains(&claims.n) {
            return Err(SessionError::Revoked);
        }
        Ok(claims.c)
    }

    /// What ends an issued session (a Logoff): its nonce and expiry, for the state store to
    /// remember. Only a session token that is ours and intact names one.
    pub(crate) fn revocation(&self, session: &str) -> Option<(String, u64)> {
        let claims = session
            .strip_prefix(SESSION_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .filter(|(claims, mac)| self.check("session", claims, mac).is_ok())
            .and_then(|(claims, _)| URL_SAFE_NO_PAD.decode(claims).ok())
            .and_then(|json| serde_json::from_slice::<Claims>(&json).ok())?;
        Some((claims.n, claims.e))
    }

    fn mac(&self, purpose: &str, claims: &str) -> String {
        let tag = hmac::sign(&self.key, format!("{purpose}.{claims}").as_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Constant-time check of a MAC.
    fn check(&self, purpose: &str, claims: &str, mac: &str) -> Result<(), ()> {
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| ())?;
        hmac::verify(&self.key, format!("{purpose}.{claims}").as_bytes(), &mac).map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(secret: &str, ttl: Duration) -> Sessions {
        sessions_with(secret, ttl, Arc::default())
    }

    fn sessions_with(secret: &str, ttl: Duration, revoked: Arc<Revocations>) -> Sessions {
        Sessions::new(
            &SessionSettings {
                secret: Secret::from(secret),
                ttl,
            },
            revoked,
        )
    }

    const SECRET: &str = "a-session-secret-of-thirty-two-bytes-or-more";
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_token_is_accepted_by_any_replica_with_the_secret() {
        let now = SystemTime::now();
        let issued = sessions(SECRET, HOUR).issue("crm-events", now);
        let replica = sessions(SECRET, HOUR);
        let caller = replica.verify(issued.session.expose(), Some(issued.security.expose()), now);
        assert_eq!(caller.as_deref(), Ok("crm-events"));
        assert_eq!(
            replica
                .verify(issued.session.expose(), None, now)
                .as_deref(),
            Ok("crm-events")
        );
        let stranger = sessions("another-secret-of-thirty-two-bytes-or-more!", HOUR);
        assert_eq!(
            stranger.verify(issued.session.expose(), None, now),
            Err(SessionError::BadSignature)
        );
    }

    #[test]
    fn expired_tampered_and_mismatched_tokens_are_refused() {
        let sessions = sessions(SECRET, HOUR);
        let now = SystemTime::now();
        let issued = sessions.issue("crm-events", now);
        let session = issued.session.expose();
        assert_eq!(
            sessions.verify(session, None, now + HOUR),
            Err(SessionError::Expired)
        );
        assert!(
            sessions
                .verify(session, None, now + HOUR - Duration::from_secs(1))
                .is_ok()
        );

        // Another caller's name in the claims, the MAC kept: the signature no longer matches.
        let (claims, mac) = session
            .strip_prefix(SESSION_PREFIX)
            .unwrap()
            .split_once('.')
            .unwrap();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        let forged = URL_SAFE_NO_PAD.encode(json.replace("crm-events", "admin-caller"));
        let tampered = format!("{SESSION_PREFIX}{forged}.{mac}");
        assert_eq!(
            sessions.verify(&tampered, None, now),
            Err(SessionError::BadSignature)
        );
        let mut flipped = session.to_owned().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(
            sessions
                .verify(std::str::from_utf8(&flipped).unwrap(), None, now)
                .is_err()
        );

        let other = sessions.issue("crm-events", now);
        assert_eq!(
            sessions.verify(session, Some(other.security.expose()), now),
            Err(SessionError::SecurityMismatch),
            "a security token belongs to one session"
        );
        assert_eq!(
            sessions.verify("ibs1.x", None, now),
            Err(SessionError::Malformed)
        );
        assert_eq!(
            sessions.verify("mc/password", None, now),
            Err(SessionError::Malformed)
        );
    }

    #[test]
    fn two_logons_get_different_tokens() {
        let sessions = sessions(SECRET, HOUR);
        let now = SystemTime::now();
        let a = sessions.issue("crm-events", now);
        let b = sessions.issue("crm-events", now);
        assert_ne!(a.session.expose(), b.session.expose());
        assert!(Sessions::looks_issued(a.session.expose()));
        assert!(!Sessions::looks_issued("___D5E1C3A2"));
        assert!(a.security.expose().starts_with(SECURITY_PREFIX));
    }

    #[test]
    fn a_revoked_session_is_refused_until_it_would_expire() {
        let now = SystemTime::now();
        let revoked = Arc::new(Revocations::default());
        let here = sessions_with(SECRET, HOUR, revoked.clone());
        let issued = here.issue("crm-events", now);
        let other = here.issue("crm-events", now);
        let (nonce, expires) = here.revocation(issued.session.expose()).unwrap();
        revoked.insert(nonce, expires, now);
        assert_eq!(
            here.verify(issued.session.expose(), None, now),
            Err(SessionError::Revoked)
        );
        // Another session of the caller goes on; a replica that does not know of the Logoff
        // too (the state store tells it).
        assert!(here.verify(other.session.expose(), None, now).is_ok());
        assert!(
            sessions(SECRET, HOUR)
                .verify(issued.session.expose(), None, now)
                .is_ok()
        );
        // After its expiry it is expired, revoked or not; a forged token names nothing.
        let later = now + HOUR + Duration::from_secs(1);
        assert_eq!(
            here.verify(issued.session.expose(), None, later),
            Err(SessionError::Expired)
        );
        let forged = format!("{}x", other.session.expose());
        assert_eq!(here.revocation(&forged), None);
        assert_eq!(revoked.len(), 1);
    }
}
