//! Access tokens from Adobe IMS (`docs/architecture.md`, "Token providers").
//!
//! - `ims/oauth.rs`: the OAuth Server-to-Server source (`/ims/token/v3`);
//! - `ims/jwt.rs`: the Service Account (JWT) source (`/ims/exchange/jwt`), signing with the
//!   private key of `secret/key.rs`;
//! - `ims/cache.rs`: one cache per profile, kept fresh by one refresher task.
//!
//! A source only fetches; the cache decides when.

mod cache;
pub(crate) mod claims;
mod jwt;
mod oauth;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use serde::Deserialize;

pub(crate) use cache::{
    FetchCounters, NotReady, Readiness, Token, TokenCache, TokenStatus, fetch_histogram,
};
pub(crate) use jwt::{JwtCredential, JwtSource};
pub(crate) use oauth::OAuthSource;

use crate::config::{ImsSettings, Profile, ProfileKind};
use crate::connect::{EgressConnector, error_chain};
use crate::secret::Secret;

/// IMS answers are small JSON objects; anything larger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Lifetime assumed for a token whose answer and claims both fail to say it: short, so that a
/// wrong guess costs an early refresh, not a refused call.
pub(crate) const FALLBACK_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// A token as a source returns it.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub access_token: Secret,
    /// Lifetime announced by IMS, converted from the unit of the endpoint.
    pub expires_in: Duration,
}

/// Why no token came back. Texts carry IMS's `error` and `error_description`, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ImsError {
    #[error("IMS refused the request (HTTP {status}): {error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused {
        status: u16,
        error: String,
        description: Option<String>,
    },
    #[error("IMS could not be reached: {0}")]
    Unreachable(String),
    #[error("IMS did not answer within {0:?}")]
    Timeout(Duration),
    #[error("IMS answer is unusable: {0}")]
    Malformed(String),
}

/// Something that can fetch an access token.
pub(crate) trait TokenSource: Send + Sync + 'static {
    fn fetch(&self) -> impl Future<Output = Result<Fetched, ImsError>> + Send;
}

/// The source of a configured profile.
pub(crate) enum Source {
    OAuth(OAuthSource),
    Jwt(JwtSource),
}

impl Source {
    pub(crate) fn for_profile(profile: &Profile, ims: &ImsSettings, client: ImsClient) -> Source {
        match &profile.kind {
            ProfileKind::OAuth {
                client_id,
                client_secret,
                scopes,
            } => Source::OAuth(OAuthSource::new(
                client,
                ims.token_url.clone(),
                client_id.clone(),
                client_secret.clone(),
                scopes,
            )),
            ProfileKind::Jwt {
                client_id,
                client_secret,
                org_id,
                technical_account_id,
                private_key,
                metascopes,
            } => Source::Jwt(JwtSource::new(
                client,
                ims.exchange_url.clone(),
                JwtCredential {
                    ims_host: &ims.host,
                    client_id,
                    client_secret,
                    org_id,
                    technical_account_id,
                    key: private_key,
                    metascopes,
                },
            )),
        }
    }
}

impl TokenSource for Source {
    async fn fetch(&self) -> Result<Fetched, ImsError> {
        match self {
            Source::OAuth(source) => source.fetch().await,
            Source::Jwt(source) => source.fetch().await,
        }
    }
}

/// The HTTP client for IMS: pooled, rustls with the system roots.
#[derive(Clone)]
pub(crate) struct ImsClient {
    client: Client<HttpsConnector<EgressConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// The unit of `expires_in`: seconds at `/ims/token/v3`, milliseconds at `/ims/exchange/jwt`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ExpiresIn {
    Seconds,
    Milliseconds,
}

impl ImsClient {
    pub(crate) fn new(connector: HttpsConnector<EgressConnector>, timeout: Duration) -> ImsClient {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        ImsClient { client, timeout }
    }

    /// POSTs a form and reads the token answer. `secrets` are masked in any text that comes back.
    pub(crate) async fn request_token(
        &self,
        url: &http::Uri,
        form: String,
        unit: ExpiresIn,
        secrets: &[&Secret],
    ) -> Result<Fetched, ImsError> {
        let request = http::Request::post(url.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| ImsError::Unreachable(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| ImsError::Unreachable(error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| ImsError::Unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ImsError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ImsError::Timeout(self.timeout))??;
        read_answer(status, &body, unit).map_err(|e| redact(e, secrets))
    }
}

#[derive(Deserialize)]
struct Answer {
    access_token: Option<Secret>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

fn read_answer(
    status: http::StatusCode,
    body: &[u8],
    unit: ExpiresIn,
) -> Result<Fetched, ImsError> {
    let parsed = serde_json::from_slice::<Answer>(body);
    if !status.is_success() {
        let (error, description) = match parsed {
            Ok(answer) => (answer.error, answer.error_description),
            Err(_) => (None, None),
        };
        return Err(ImsError::Refused {
            status: status.as_u16(),
            error: error.unwrap_or_else(|| "no error code given".to_owned()),
            description,
        });
    }
    let answer = parsed.map_err(|_| {
        ImsError::Malformed(if body.is_empty() {
            "empty answer".to_owned()
        } else {
            "not a JSON object".to_owned()
        })
    })?;
    if let Some(error) = answer.error {
        return Err(ImsError::Refused {
            status: status.as_u16(),
            error,
            description: answer.error_description,
        });
    }
    let access_token = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ImsError::Malformed("no access_token".to_owned()))?;
    if let Some(kind) = answer.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(ImsError::Malformed(format!(
            "token_type is `{kind}`, not bearer"
        )));
    }
    let expires_in = match answer.expires_in {
        None => lifetime_from_claims(access_token.expose(), SystemTime::now()),
        Some(value) => {
            let amount = match value {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse::<u64>().ok(),
                _ => None,
            }
            .filter(|n| *n > 0)
            .ok_or_else(|| ImsError::Malformed("expires_in is not a positive number".to_owned()))?;
            match unit {
                ExpiresIn::Seconds => Duration::from_secs(amount),
                ExpiresIn::Milliseconds => Duration::from_millis(amount),
            }
        }
    };
    Ok(Fetched {
        access_token,
        expires_in,
    })
}

/// The life left to an IMS access token by its own claims (`created_at` + `expires_in`, both
/// in milliseconds), when the answer did not say; [`FALLBACK_LIFETIME`] when they do not
/// either.
fn lifetime_from_claims(token: &str, now: SystemTime) -> Duration {
    let claims = claims::decode(token);
    let millis = |name| claims.as_ref().and_then(|c| claims::millis(c, name));
    match (millis("created_at"), millis("expires_in")) {
        (Some(created), Some(lifetime)) => {
            let expiry =
                UNIX_EPOCH + Duration::from_millis(created) + Duration::from_millis(lifetime);
            expiry
                .duration_since(now)
                .ok()
                .filter(|left| !left.is_zero())
                .unwrap_or(FALLBACK_LIFETIME)
                .min(Duration::from_millis(lifetime))
        }
        _ => FALLBACK_LIFETIME,
    }
}

/// Masks secrets in an error's texts, in case an endpoint echoes what it was sent.
fn redact(error: ImsError, secrets: &[&Secret]) -> ImsError {
    let mask = |text: String| {
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text, |text, s| text.replace(s.expose(), "****"))
    };
    match error {
        ImsError::Refused {
            status,
            error,
            description,
        } => ImsError::Refused {
            status,
            error: mask(error),
            description: description.map(mask),
        },
        ImsError::Unreachable(text) => ImsError::Unreachable(mask(text)),
        ImsError::Malformed(text) => ImsError::Malformed(mask(text)),
        timeout @ ImsError::Timeout(_) => timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn reads_a_good_answer_in_either_unit() {
        let body = br#"{"access_token":"eyJ.x.y","token_type":"bearer","expires_in":86399}"#;
        let fetched = read_answer(StatusCode::OK, body, ExpiresIn::Seconds).unwrap();
        assert_eq!(fetched.access_token.expose(), "eyJ.x.y");
        assert_eq!(fetched.expires_in, Duration::from_secs(86399));
        let fetched = read_answer(StatusCode::OK, body, ExpiresIn::Milliseconds).unwrap();
        assert_eq!(fetched.expires_in, Duration::from_millis(86399));
        let text = br#"{"access_token":"t","expires_in":"3000"}"#;
        let fetched = read_answer(StatusCode::OK, text, ExpiresIn::Milliseconds).unwrap();
        assert_eq!(fetched.expires_in, Duration::from_secs(3));
    }

    #[test]
    fn malformed_answers_are_errors() {
        for (body, why) in [
            (&b""[..], "empty answer"),
            (b"<html>", "not a JSON object"),
            (
                br#"{"token_type":"bearer","expires_in":10}"#,
                "no access_token",
            ),
            (br#"{"access_token":"","expires_in":10}"#, "no access_token"),
            (
                br#"{"access_token":"t","expires_in":0}"#,
                "not a positive number",
            ),
            (
                br#"{"access_token":"t","expires_in":10,"token_type":"mac"}"#,
                "not bearer",
            ),
        ] {
            match read_answer(StatusCode::OK, body, ExpiresIn::Seconds) {
                Err(ImsError::Malformed(text)) => assert!(text.contains(why), "{text} / {why}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_expires_in_falls_back_to_the_tokens_claims() {
        use base64::Engine;
        let now = SystemTime::now();
        let created = now.duration_since(UNIX_EPOCH).unwrap() - Duration::from_secs(600);
        let claims = format!(
            r#"{{"created_at":"{}","expires_in":"3600000"}}"#,
            created.as_millis()
        );
        let token = format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims)
        );
        let left = lifetime_from_claims(&token, now);
        assert!(
            (Duration::from_secs(2999)..=Duration::from_secs(3000)).contains(&left),
            "{left:?}"
        );
        let body = format!(r#"{{"access_token":"{token}","token_type":"bearer"}}"#);
        let fetched = read_answer(StatusCode::OK, body.as_bytes(), ExpiresIn::Seconds).unwrap();
        assert!(fetched.expires_in <= Duration::from_secs(3000));
        // Neither the answer nor the token says: a short, conservative life.
        assert_eq!(lifetime_from_claims("opaque", now), FALLBACK_LIFETIME);
        let expired = format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(r#"{"created_at":"1000","expires_in":"3600000"}"#)
        );
        assert_eq!(lifetime_from_claims(&expired, now), FALLBACK_LIFETIME);
    }

    #[test]
    fn ims_errors_are_reported_without_secrets() {
        let body = br#"{"error":"invalid_client","error_description":"invalid client_secret parameter: hunter2"}"#;
        let error = read_answer(StatusCode::UNAUTHORIZED, body, ExpiresIn::Seconds).unwrap_err();
        let secret = Secret::from("hunter2");
        let text = redact(error, &[&secret]).to_string();
        assert_eq!(
            text,
            "IMS refused the request (HTTP 401): invalid_client: invalid client_secret parameter: ****"
        );
        let error =
            read_answer(StatusCode::BAD_GATEWAY, b"<html>", ExpiresIn::Seconds).unwrap_err();
        assert_eq!(
            error.to_string(),
            "IMS refused the request (HTTP 502): no error code given"
        );
    }
}
