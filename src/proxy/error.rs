//! Everything that can stop a request, and the one place that turns it into an answer
//! (`docs/architecture.md`, "Errors a caller can get"). The errors of the stages are wrapped,
//! not copied; [`ProxyError::answer`] matches every case, nested, without a catch-all arm, so a
//! new variant anywhere below forces a decision here. Callers get Campaign-shaped faults with
//! generic text; the log line gets the cause.

use std::borrow::Cow;

use http::{HeaderValue, Response, StatusCode, header};

use super::prefix::PrefixError;
use crate::body::{BodyError, ResponseBody};
use crate::callers::AuthError;
use crate::config::FaultStatus;
use crate::ims::NotReady;
use crate::soap::{Action, Fault, FaultCode, INVALID_LOGIN, SESSION_INVALID};
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no SOAP router at this path")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A page of `server.paths` asked without any credential.
    #[error("no credential")]
    Unauthorized,
    #[error("invalid Content-Length")]
    BadLength,
    /// The body prefix could not be read: not an envelope, the token too far in, or the body
    /// itself.
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    /// The body, refused before it was read (a declared length over the limit).
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no valid IMS token for profile {profile}: {reason}")]
    TokenUnavailable { profile: String, reason: NotReady },
    /// Campaign could not be reached, did not answer in time, or the caller's body broke the
    /// exchange.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// How an error is answered.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    /// The outcome, in the log line and the metrics.
    kind: &'static str,
    status: StatusCode,
    code: FaultCode,
    /// The fault's text: generic, never a secret.
    detail: Cow<'static, str>,
}

impl ProxyError {
    /// Short name of the outcome, for logs and metrics.
    pub(crate) fn kind(&self) -> &'static str {
        self.answer().kind
    }

    /// The HTTP status of the answer: with [`FaultStatus::Soap`], 500 for every fault but the
    /// answers that are no SOAP call's: the 404 of a path that is no SOAP router, the 401 of a
    /// page asked without a credential.
    pub(crate) fn status(&self, statuses: FaultStatus) -> StatusCode {
        let status = self.answer().status;
        let soap_call = !matches!(status, StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED);
        match statuses {
            FaultStatus::Soap if soap_call => StatusCode::INTERNAL_SERVER_ERROR,
            _ => status,
        }
    }

    /// The answer to the caller.
    pub(crate) fn response(
        &self,
        action: Option<&Action>,
        statuses: FaultStatus,
    ) -> Response<ResponseBody> {
        let answer = self.answer();
        let body = Fault {
            code: answer.code,
            action,
            detail: &answer.detail,
        }
        .to_bytes();
        let status = self.status(statuses);
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

    /// The one mapping from cause to answer.
    fn answer(&self) -> Answer {
        use FaultCode::{Client, Server};
        let answer = |kind, status, code, detail: &'static str| Answer {
            kind,
            status,
            code,
            detail: Cow::Borrowed(detail),
        };
        match self {
            ProxyError::NotFound => answer(
                "not_found",
                StatusCode::NOT_FOUND,
                Client,
                "No SOAP router at this path.",
            ),
            ProxyError::Unauthorized => answer(
                "missing_credential",
                StatusCode::UNAUTHORIZED,
                Client,
                "This page needs a session token (cookie, X-Session-Token header or __sessiontoken parameter).",
            ),
            ProxyError::MethodNotAllowed => answer(
                "method_not_allowed",
                StatusCode::METHOD_NOT_ALLOWED,
                Client,
                "The SOAP router only accepts POST.",
            ),
            ProxyError::BadLength => answer(
                "bad_request",
                StatusCode::BAD_REQUEST,
                Client,
                "Invalid Content-Length.",
            ),
            // The scanner's texts never quote the body.
            ProxyError::Prefix(PrefixError::Scan(e)) => Answer {
                kind: "bad_request",
                status: StatusCode::BAD_REQUEST,
                code: Client,
                detail: Cow::Owned(format!("Invalid SOAP request: {e}.")),
            },
            ProxyError::Prefix(PrefixError::TooLong(_)) => answer(
                "bad_request",
                StatusCode::BAD_REQUEST,
                Client,
                "Invalid SOAP request: the session token is too far into the body.",
            ),
            ProxyError::Prefix(PrefixError::Deadline(_)) => answer(
                "client_slow",
                StatusCode::REQUEST_TIMEOUT,
                Client,
                "The start of the request body did not come in time.",
            ),
            // The proxy's own limit, as with password checks.
            ProxyError::Prefix(PrefixError::Busy(_)) => answer(
                "prefixes_busy",
                StatusCode::SERVICE_UNAVAILABLE,
                Server,
                "Too many requests are being read. Try again later.",
            ),
            ProxyError::Prefix(PrefixError::Body(e))
            | ProxyError::Body(e)
            | ProxyError::Upstream(UpstreamError::Body(e)) => match e {
                BodyError::TooLarge(_) => answer(
                    "body_too_large",
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Client,
                    "The request body is too large.",
                ),
                BodyError::Refused(reason) => Answer {
                    kind: "bad_request",
                    status: StatusCode::BAD_REQUEST,
                    code: Client,
                    detail: Cow::Owned(format!("Invalid SOAP request: {reason}.")),
                },
                BodyError::Client(_) => answer(
                    "client_body",
                    StatusCode::BAD_REQUEST,
                    Client,
                    "The request body could not be read.",
                ),
                BodyError::Idle(_) => answer(
                    "client_idle",
                    StatusCode::REQUEST_TIMEOUT,
                    Client,
                    "The request body stopped coming.",
                ),
            },
            ProxyError::Auth(e) => {
                let status = StatusCode::INTERNAL_SERVER_ERROR;
                match e {
                    AuthError::Missing => {
                        answer("missing_credential", status, Client, SESSION_INVALID)
                    }
                    AuthError::Session(_) | AuthError::SessionOfNoImsCaller(_) => {
                        answer("session_invalid", status, Client, SESSION_INVALID)
                    }
                    AuthError::Unknown => answer("unknown_caller", status, Client, INVALID_LOGIN),
                    AuthError::WrongPassword(_) => {
                        answer("wrong_password", status, Client, INVALID_LOGIN)
                    }
                    AuthError::NotAllowed { .. } => {
                        answer("not_allowed_from", status, Client, INVALID_LOGIN)
                    }
                    AuthError::WrongCertificate(_) => {
                        answer("wrong_certificate", status, Client, INVALID_LOGIN)
                    }
                    // Copies that disagree: as Campaign answers a credential it refuses.
                    AuthError::Conflict(_) => {
                        answer("conflicting_credentials", status, Client, INVALID_LOGIN)
                    }
                    // The proxy's own limit, not the caller's fault.
                    AuthError::Busy => answer(
                        "password_checks_busy",
                        StatusCode::SERVICE_UNAVAILABLE,
                        Server,
                        "Too many logins are being checked. Try again later.",
                    ),
                    AuthError::LogonNotEnabled(_) => answer(
                        "logon_not_enabled",
                        status,
                        Server,
                        "Logon is not enabled on this proxy.",
                    ),
                }
            }
            ProxyError::TokenUnavailable { .. } => answer(
                "no_token",
                StatusCode::SERVICE_UNAVAILABLE,
                Server,
                "The IMS access token of this caller's technical account is not available. Try again later.",
            ),
            ProxyError::Upstream(
                UpstreamError::Unreachable(_) | UpstreamError::ConnectTimeout(_),
            ) => answer(
                "upstream_unreachable",
                StatusCode::BAD_GATEWAY,
                Server,
                "Adobe Campaign could not be reached.",
            ),
            ProxyError::Upstream(UpstreamError::EchoedToken) => answer(
                "upstream_echoed_token",
                StatusCode::BAD_GATEWAY,
                Server,
                "Adobe Campaign's answer could not be relayed.",
            ),
            ProxyError::Upstream(UpstreamError::Timeout(_)) => answer(
                "upstream_timeout",
                StatusCode::GATEWAY_TIMEOUT,
                Server,
                "Adobe Campaign did not answer in time.",
            ),
        }
    }
}

#[cfg(test)]
mod tests;
