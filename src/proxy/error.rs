//! Everything that can stop a request, and the one place that turns it into an answer
//! (design.md, "Errors a caller can get"). The match is exhaustive on purpose: a new variant
//! forces a decision. Callers get Campaign-shaped faults with generic text; the log line gets
//! the cause.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::body::{BodyError, ResponseBody};
use super::prefix::PrefixError;
use crate::callers::AuthError;
use crate::ims::NotReady;
use crate::soap::{Action, Fault, FaultCode, INVALID_LOGIN, SESSION_INVALID, ScanError};
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no SOAP router at this path")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("invalid Content-Length")]
    BadLength,
    #[error(transparent)]
    BadEnvelope(#[from] ScanError),
    #[error("session token not within the first {0} bytes of the body")]
    PrefixTooLong(usize),
    #[error("request body over {0} bytes")]
    BodyTooLarge(u64),
    #[error("request body broke off: {0}")]
    ClientBody(String),
    #[error("the client paused for over {0:?} in its body")]
    ClientIdle(Duration),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no valid IMS token for profile {profile}: {reason}")]
    TokenUnavailable { profile: String, reason: NotReady },
    #[error("Campaign unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("Campaign did not answer within {0:?}")]
    UpstreamTimeout(Duration),
}

impl From<PrefixError> for ProxyError {
    fn from(error: PrefixError) -> Self {
        match error {
            PrefixError::Scan(e) => ProxyError::BadEnvelope(e),
            PrefixError::TooLong(limit) => ProxyError::PrefixTooLong(limit),
            PrefixError::BodyTooLarge(limit) => ProxyError::BodyTooLarge(limit),
            PrefixError::Client(e) => ProxyError::ClientBody(e),
            PrefixError::Idle(after) => ProxyError::ClientIdle(after),
        }
    }
}

impl From<UpstreamError> for ProxyError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::Unreachable(e) => ProxyError::UpstreamUnreachable(e),
            UpstreamError::Timeout(after) => ProxyError::UpstreamTimeout(after),
            UpstreamError::Body(BodyError::TooLarge(limit)) => ProxyError::BodyTooLarge(limit),
            UpstreamError::Body(BodyError::Client(e)) => ProxyError::ClientBody(e),
            UpstreamError::Body(BodyError::Idle(after)) => ProxyError::ClientIdle(after),
        }
    }
}

impl ProxyError {
    /// Short name of the outcome, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NotFound => "not_found",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::BadLength | ProxyError::BadEnvelope(_) | ProxyError::PrefixTooLong(_) => {
                "bad_request"
            }
            ProxyError::BodyTooLarge(_) => "body_too_large",
            ProxyError::ClientBody(_) => "client_body",
            ProxyError::ClientIdle(_) => "client_idle",
            ProxyError::Auth(AuthError::Missing) => "missing_credential",
            ProxyError::Auth(AuthError::Unknown) => "unknown_caller",
            ProxyError::Auth(AuthError::WrongPassword(_)) => "wrong_password",
            ProxyError::Auth(AuthError::NotAllowed { .. }) => "not_allowed_from",
            ProxyError::Auth(AuthError::WrongCertificate(_)) => "wrong_certificate",
            ProxyError::Auth(AuthError::Session(_) | AuthError::SessionOfNoImsCaller(_)) => {
                "session_invalid"
            }
            ProxyError::Auth(AuthError::LogonNotEnabled(_)) => "logon_not_enabled",
            ProxyError::TokenUnavailable { .. } => "no_token",
            ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
        }
    }

    /// The answer to the caller.
    pub fn response(&self, action: Option<&Action>) -> Response<ResponseBody> {
        use FaultCode::{Client, Server};
        let bad_request;
        let (status, code, detail) = match self {
            ProxyError::NotFound => (
                StatusCode::NOT_FOUND,
                Client,
                "No SOAP router at this path.",
            ),
            ProxyError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                Client,
                "The SOAP router only accepts POST.",
            ),
            ProxyError::BadLength => (StatusCode::BAD_REQUEST, Client, "Invalid Content-Length."),
            ProxyError::BadEnvelope(e) => {
                bad_request = format!("Invalid SOAP request: {e}.");
                (StatusCode::BAD_REQUEST, Client, bad_request.as_str())
            }
            ProxyError::PrefixTooLong(_) => (
                StatusCode::BAD_REQUEST,
                Client,
                "Invalid SOAP request: the session token is too far into the body.",
            ),
            ProxyError::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Client,
                "The request body is too large.",
            ),
            ProxyError::ClientBody(_) => (
                StatusCode::BAD_REQUEST,
                Client,
                "The request body could not be read.",
            ),
            ProxyError::ClientIdle(_) => (
                StatusCode::REQUEST_TIMEOUT,
                Client,
                "The request body stopped coming.",
            ),
            ProxyError::Auth(
                AuthError::Missing | AuthError::Session(_) | AuthError::SessionOfNoImsCaller(_),
            ) => (StatusCode::INTERNAL_SERVER_ERROR, Client, SESSION_INVALID),
            ProxyError::Auth(
                AuthError::Unknown
                | AuthError::WrongPassword(_)
                | AuthError::NotAllowed { .. }
                | AuthError::WrongCertificate(_),
            ) => (StatusCode::INTERNAL_SERVER_ERROR, Client, INVALID_LOGIN),
            ProxyError::Auth(AuthError::LogonNotEnabled(_)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Server,
                "Logon is not enabled on this proxy.",
            ),
            ProxyError::TokenUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                Server,
                "The IMS access token of this caller's technical account is not available. Try again later.",
            ),
            ProxyError::UpstreamUnreachable(_) => (
                StatusCode::BAD_GATEWAY,
                Server,
                "Adobe Campaign could not be reached.",
            ),
            ProxyError::UpstreamTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                Server,
                "Adobe Campaign did not answer in time.",
            ),
        };
        let body = Fault {
            code,
            action,
            detail,
        }
        .to_bytes();
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}
