//! The request pipeline of design.md ("Data path"), stage by stage in request order, in
//! [`Proxy::pipeline`]:
//!
//! 1. only `POST /nl/jsp/soaprouter.jsp` is read (anything else passes through unchanged when
//!    imsbridge stands transparently in front of Campaign, and is refused otherwise);
//! 2. a declared body over `max_body_bytes` is refused before any of it is read;
//! 3. the body prefix is read up to the end of the session token (`proxy/prefix.rs`);
//! 4. the credentials name the caller, or the request is refused: nothing has gone upstream;
//!    `xtk:session#Logon` of an `ims` caller, and `#Logoff` of a session imsbridge issued, are
//!    answered here;
//! 5. the caller's mode decides the way: `legacy` forwards unchanged, `ims` goes on, `canary`
//!    decides per request;
//! 6. the Bearer token of the caller's technical account comes from its cache;
//! 7. the credential is spliced out of the prefix and the headers;
//! 8. the request goes to Campaign; the answer streams back. A refused token is dropped, a
//!    new one fetched, and the call sent once more when its body was small enough to keep
//!    (`proxy/refusal.rs`).

pub mod body;
mod error;
mod prefix;
mod record;
mod refusal;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version, request};
use hyper::body::Incoming;

pub use error::ProxyError;

use crate::callers::{Callers, LogonWay, Presented, Route};
use crate::carriers;
use crate::config::{Config, UnknownCallers};
use crate::ims::{ImsClient, Readiness, Source, Token, TokenCache};
use crate::metrics::Metrics;
use crate::server::Peer;
use crate::soap::{Action, edits_for_ims, logoff_response, logon_response};
use crate::upstream::{
    Forwarding, TlsSetupError, Upstream, forward_headers, https_connector, strip_hop_by_hop,
    system_roots,
};
use body::{Replay, ResponseBody, UpstreamBody};
use prefix::Prefix;
use record::{Completion, Record};

/// The one path Campaign serves SOAP on.
pub const SOAP_ROUTER_PATH: &str = "/nl/jsp/soaprouter.jsp";

/// A technical account at run time.
struct Profile {
    name: Arc<str>,
    tokens: TokenCache,
}

impl Profile {
    /// A valid token, waiting up to `wait` when there is none (a cold start, a refetch).
    async fn token(&self, wait: Duration) -> Result<Arc<Token>, ProxyError> {
        self.tokens
            .get(wait)
            .await
            .map_err(|reason| ProxyError::TokenUnavailable {
                profile: self.name.to_string(),
                reason,
            })
    }
}

/// The proxy: what every request needs, built once from the config.
pub struct Proxy {
    callers: Callers,
    /// Same order as the config's profiles: callers refer to them by index.
    profiles: Vec<Profile>,
    upstream: Upstream,
    unknown_callers: UnknownCallers,
    max_body_bytes: u64,
    max_prefix_bytes: usize,
    /// Longest pause of a caller in its body, and of Campaign in its answer.
    idle_timeout: Duration,
    /// Bodies up to this size are kept for a replay when Campaign refuses the token.
    retry_buffer_bytes: u64,
    /// How long a request waits for a token when no valid one exists (a cold start): one IMS
    /// request's worth.
    token_wait: Duration,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// Builds the proxy and starts one token refresher per profile.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Proxy, TlsSetupError> {
        let system_roots = system_roots();
        let upstream = Upstream::new(&config.upstream, &system_roots)?;
        if config.ims.token_url.scheme() == Some(&http::uri::Scheme::HTTPS)
            && system_roots.is_empty()
        {
            return Err(TlsSetupError::NoRoots("ims.token_url"));
        }
        let ims = ImsClient::new(
            https_connector(&system_roots, config.ims.timeout)?,
            config.ims.timeout,
        );
        let profiles = config
            .profiles
            .iter()
            .map(|profile| {
                let name: Arc<str> = profile.name.as_str().into();
                let source = Source::for_profile(profile, &config.ims, ims.clone());
                let counters = metrics.fetches(&name);
                Profile {
                    tokens: TokenCache::spawn(name.clone(), source, counters),
                    name,
                }
            })
            .collect();
        metrics.set_callers(
            config
                .callers
                .iter()
                .map(|c| (c.name.as_str(), c.mode.as_str())),
        );
        Ok(Proxy {
            callers: Callers::new(
                &config.callers,
                config.unknown_callers,
                config.sessions.as_ref(),
            ),
            profiles,
            upstream,
            unknown_callers: config.unknown_callers,
            max_body_bytes: config.server.max_body_bytes,
            max_prefix_bytes: config.server.max_prefix_bytes,
            idle_timeout: config.server.limits.idle_timeout,
            retry_buffer_bytes: config.upstream.retry_buffer_bytes,
            token_wait: config.ims.timeout,
            metrics,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits, up to `wait`, for every profile to hold a token (after a reload, before the new
    /// config takes the traffic).
    pub async fn warm_up(&self, wait: Duration) {
        for profile in &self.profiles {
            let _ = profile.tokens.get(wait).await;
        }
    }

    /// Each profile with the state of its token, for `/readyz`.
    pub fn readiness(&self) -> impl Iterator<Item = (&str, Readiness)> {
        self.profiles
            .iter()
            .map(|p| (&*p.name, p.tokens.readiness()))
    }

    /// Answers one request; its log line and counts follow when the answer is done with.
    pub async fn handle(
        &self,
        peer: Arc<Peer>,
        mut request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        // The caller's request id, or a new one; Campaign and the caller see it too.
        let request_id = request
            .headers()
            .get(&X_REQUEST_ID)
            .filter(|id| id.len() <= 128 && !id.is_empty())
            .cloned()
            .unwrap_or_else(new_request_id);
        request
            .headers_mut()
            .insert(&X_REQUEST_ID, request_id.clone());
        let mut record = Record::new(
            request_id.clone(),
            peer.addr.ip(),
            request.method().clone(),
            request.uri().clone(),
        );
        let (mut response, error) = match self.pipeline(&peer, request, &mut record).await {
            Ok(response) => (response, None),
            Err(error) => (error.response(record.action.as_ref()), Some(error)),
        };
        response.headers_mut().insert(&X_REQUEST_ID, request_id);
        let completion = Completion {
            status: response.status(),
            outcome: error.as_ref().map_or("ok", ProxyError::kind),
            error: error.map(|e| e.to_string()),
            record,
            metrics: self.metrics.clone(),
            bytes_out: 0,
        };
        response.body_mut().complete_with(completion);
        response
    }

    async fn pipeline(
        &self,
        peer: &Peer,
        request: Request<Incoming>,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        // 1. Only the SOAP router is read. Anything else passes through unchanged when
        //    unknown callers do, as Campaign would see it without imsbridge.
        let soap_router = request.uri().path() == SOAP_ROUTER_PATH;
        if !soap_router || request.method() != Method::POST {
            if self.unknown_callers == UnknownCallers::Legacy {
                record.mode = "transparent";
                let (parts, body) = request.into_parts();
                let length = declared_length(&parts.headers)?;
                let body = UpstreamBody::new(
                    [],
                    Some(body),
                    0,
                    self.max_body_bytes,
                    length,
                    self.idle_timeout,
                )
                .counting(record.bytes_in.clone());
                let parts = self.prepare(parts, None, peer, length);
                return Box::pin(self.send(parts, body, record)).await;
            }
            return Err(if soap_router {
                ProxyError::MethodNotAllowed
            } else {
                ProxyError::NotFound
            });
        }

        // 2. A body declared too large is refused before any of it is read.
        let declared = declared_length(request.headers())?;
        if declared.is_some_and(|length| length > self.max_body_bytes) {
            return Err(ProxyError::BodyTooLarge(self.max_body_bytes));
        }

        // 3. The prefix, up to the end of the first parameter of the method element.
        let (parts, body) = request.into_parts();
        let prefix = prefix::read(
            body,
            self.max_prefix_bytes,
            self.max_body_bytes,
            self.idle_timeout,
        )
        .await?;
        record.bytes_in.store(prefix.received, Ordering::Relaxed);
        record.action = Some(Action::of_request(
            &parts.headers,
            parts.uri.query(),
            &prefix.envelope.method,
        ));

        // 4. The caller, from the credentials presented. Refusals end here, before anything
        //    is sent upstream.
        let envelope = &prefix.envelope;
        let carried = carriers::carried(&parts.headers, envelope);
        let presented = Presented {
            first: envelope
                .credential()
                .map_or("", |param| param.value.expose()),
            session: carried.session.as_deref(),
            security: carried.security.as_deref(),
            peer: peer.addr.ip(),
            cert_subject: peer.cert_subject.as_deref(),
        };
        //    Logon of an `ims` caller, and Logoff of a session of ours, are answered here.
        if envelope.is_logon() {
            let param = |i: usize| envelope.params.get(i).map_or("", |p| p.value.expose());
            let way = Box::pin(self.callers.logon(param(1), param(2), presented))
                .await
                .inspect_err(|error| record.refused(error))?;
            return match way {
                LogonWay::Answer(caller, issued) => {
                    record.caller(caller, "local");
                    let ttl = self.callers.session_ttl().unwrap_or_default();
                    let body = logon_response(&caller.login, &issued, ttl, SystemTime::now());
                    Ok(soap_answer(body))
                }
                LogonWay::Forward(caller) => {
                    match caller {
                        Some(caller) => record.caller(caller, "legacy"),
                        None => record.mode = "transparent",
                    }
                    Box::pin(self.forward_unchanged(parts, prefix, declared, peer, record)).await
                }
            };
        }
        if envelope.is_logoff()
            && self
                .callers
                .logoff(presented)
                .inspect_err(|error| record.refused(error))?
        {
            record.route = "local";
            return Ok(soap_answer(logoff_response()));
        }
        let route = self
            .callers
            .route(presented)
            .await
            .inspect_err(|error| record.refused(error))?;

        // 5. The caller's way.
        let caller = match route {
            Route::Transparent => {
                record.mode = "transparent";
                record.route = "legacy";
                return Box::pin(self.forward_unchanged(parts, prefix, declared, peer, record))
                    .await;
            }
            Route::Legacy(caller) => {
                record.caller(caller, "legacy");
                return Box::pin(self.forward_unchanged(parts, prefix, declared, peer, record))
                    .await;
            }
            Route::Ims(caller) => caller,
        };
        record.caller(caller, "ims");
        let profile = &self.profiles[caller.profile];
        record.profile = Some(profile.name.clone());

        // 6. The technical account's token: no wait while a valid one exists.
        let token = profile.token(self.token_wait).await?;

        // 7. Every copy of the credential out of the prefix and the headers.
        let edits = edits_for_ims(&prefix.envelope);
        let length = declared.map(|length| prefix::length_after(length, &edits));
        let parts = self.prepare(parts, Some(token.bearer()), peer, length);
        // A body that may fit the replay buffer is kept as it is sent.
        let replayable = length.is_none_or(|length| length <= self.retry_buffer_bytes);
        let replay = Replay::new(self.retry_buffer_bytes);
        let mut body = UpstreamBody::new(
            prefix.chunks(&edits),
            Some(prefix.rest),
            prefix.received,
            self.max_body_bytes,
            length,
            self.idle_timeout,
        )
        .counting(record.bytes_in.clone());
        let mut retry_parts = None;
        if replayable {
            body = body.recording(replay.clone());
            retry_parts = Some(parts.clone());
        }

        // 8. To Campaign. A refused token is dropped (one new fetch, however many requests
        //    saw the refusal) and the call goes once more, with the body kept, if it was kept
        //    whole; otherwise Campaign's refusal is relayed.
        let response = self.upstream.send(Request::from_parts(parts, body)).await?;
        record.upstream_status = Some(response.status());
        let judged = refusal::judge(response, self.idle_timeout)
            .await
            .map_err(|e| ProxyError::UpstreamUnreachable(e.to_string()))?;
        if !judged.refused {
            return Ok(finish(judged.response));
        }
        profile.tokens.invalidate(&token);
        let kept = replay.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (Some(mut parts), Some(kept)) = (retry_parts, kept) else {
            tracing::warn!(caller = %caller.name, "token refused by Campaign; the body was not kept whole, so the refusal goes back to the caller");
            return Ok(finish(judged.response));
        };
        let token = profile.token(self.token_wait).await?;
        parts
            .headers
            .insert(header::AUTHORIZATION, token.bearer().clone());
        record.retried = true;
        let body = UpstreamBody::new(kept, None, 0, u64::MAX, length, self.idle_timeout);
        Box::pin(self.send(parts, body, record)).await
    }

    /// Sends the request to Campaign as it came (the pre-migration path).
    async fn forward_unchanged(
        &self,
        parts: request::Parts,
        prefix: Prefix<Incoming>,
        declared: Option<u64>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let body = UpstreamBody::new(
            prefix.chunks(&[]),
            Some(prefix.rest),
            prefix.received,
            self.max_body_bytes,
            declared,
            self.idle_timeout,
        )
        .counting(record.bytes_in.clone());
        let parts = self.prepare(parts, None, peer, declared);
        self.send(parts, body, record).await
    }

    /// The request as Campaign gets it: its URL, HTTP/1.1, the header policy applied.
    fn prepare(
        &self,
        mut parts: request::Parts,
        bearer: Option<&HeaderValue>,
        peer: &Peer,
        content_length: Option<u64>,
    ) -> request::Parts {
        parts.uri = self.upstream.uri(&parts.uri);
        parts.version = Version::HTTP_11;
        forward_headers(
            &mut parts.headers,
            &Forwarding {
                bearer,
                peer: &peer.forwarded_for,
                host: self.upstream.host(),
                content_length,
            },
        );
        parts
    }

    /// Sends a prepared request to Campaign and streams the answer back.
    async fn send(
        &self,
        parts: request::Parts,
        body: UpstreamBody,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let response = self.upstream.send(Request::from_parts(parts, body)).await?;
        record.upstream_status = Some(response.status());
        let (parts, body) = response.into_parts();
        let body = ResponseBody::upstream(None, body, self.idle_timeout);
        Ok(finish(Response::from_parts(parts, body)))
    }
}

/// Campaign's answer, without its hop-by-hop headers.
fn finish(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    strip_hop_by_hop(response.headers_mut());
    response
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// 32 random hex digits.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    let mut bits = fastrand::u128(..);
    for digit in &mut digits {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    HeaderValue::from_bytes(&digits).expect("hex is a header value")
}

/// A SOAP answer of our own (Logon, Logoff).
fn soap_answer(body: bytes::Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

/// The `Content-Length` a request declares (hyper has already refused malformed framing).
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(ProxyError::BadLength)
        })
        .transpose()
}
