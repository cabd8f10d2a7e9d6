//! The request pipeline of `docs/architecture.md` ("Data path"): [`Proxy::pipeline`] is the
//! list of its phases, in request order. Each phase is a method documented by when it runs and
//! what its result means (as pingora documents its `ProxyHttp` phases):
//!
//! 1. [`Proxy::admit`], on every request: is the body read at all?
//! 2. [`Proxy::read_prefix`], on a SOAP call: the body prefix, up to the end of the session
//!    token (`proxy/prefix.rs`);
//! 3. [`Proxy::identify`]: the caller, from every credential the request carries, and the
//!    [`Way`] the request goes: answered here, to Campaign unchanged, or the `ims` way.
//!    Refusals end here, before anything is sent upstream;
//! 4. [`Proxy::forward_unchanged`], or [`Proxy::forward_ims`]: the Bearer token of the
//!    caller's technical account, every copy of the credential out, the request to Campaign,
//!    its answer judged (`proxy/refusal.rs`), and [`Proxy::replay`] once when Campaign refused
//!    the token.
//!
//! The side roads have rooms of their own: a `shadow` caller's copied calls
//! (`proxy/shadow.rs`), Campaign's other pages and what passes through unread
//! (`proxy/pages.rs`), the client behind trusted proxies (`proxy/forwarded.rs`).
//!
//! Whatever stops a request is a [`ProxyError`], turned into an answer in one place
//! (`proxy/error.rs`); what the request did is written once its answer is done with
//! (`proxy/record.rs`).

mod build;
mod error;
mod forwarded;
mod pages;
mod prefix;
mod record;
mod refusal;
mod shadow;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version, request};
use hyper::body::Incoming;

pub(crate) use build::Profile;
pub(crate) use error::ProxyError;

use crate::body::{BodyError, CampaignBody, Lingering, Replay, ResponseBody, UpstreamBody};
use crate::callers::{AuthError, Caller, Callers, LogonWay, Presented, Route};
use crate::carriers::{self, Credential};
use crate::config::{FaultStatus, UnknownCallers, WsdlSettings};
use crate::headers::strip_hop_by_hop;
use crate::ims::Token;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::server::Peer;
use crate::soap::{Charset, Edit, SOAP_ROUTER_PATH, logoff_response, logon_response};
use crate::state::State;
use crate::telemetry::TARGET as TRACES;
use crate::upstream::{Forwarding, Upstream, UpstreamError, forward_headers, origin_form};
use prefix::{Prefix, PrefixBudget, PrefixError};
use record::{Completion, Record};
use tracing::Instrument;

/// The proxy: what every request needs, built once from the config.
pub(crate) struct Proxy {
    callers: Callers,
    /// Same order as the config's profiles: callers refer to them by index.
    profiles: Vec<Profile>,
    /// The Campaign instances: `[upstream]` first, then `[upstreams.NAME]` in name order.
    upstreams: Vec<Upstream>,
    unknown_callers: UnknownCallers,
    max_body_bytes: u64,
    /// How long the rest of a refused body is read, so that its client reads the answer.
    linger: Duration,
    /// Campaign's pages served beside the SOAP router.
    paths: Vec<String>,
    /// How a WSDL request without a credential is served.
    wsdl: WsdlSettings,
    /// Where callers reach the proxy, for the `soap:address` of WSDL answers.
    public_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` names the client.
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The HTTP status of the faults answered here.
    fault_status: FaultStatus,
    /// What reading one body prefix may take.
    prefix_limits: prefix::Limits,
    /// The bytes all prefixes being read may hold together.
    prefix_budget: PrefixBudget,
    /// Longest pause of a caller in its body, and of Campaign in its answer.
    idle_timeout: Duration,
    /// How long a request waits for a token when no valid one exists (a cold start): one IMS
    /// request's worth.
    token_wait: Duration,
    /// Shadow copies on their way (`admin.shadow_max_in_flight`).
    shadow_permits: Arc<tokio::sync::Semaphore>,
    shadow_max_in_flight: usize,
    /// What the cut-over verdicts ask for.
    cutover: crate::config::CutoverSettings,
    /// What outlives the process and spans the replicas: revocations, counts, the inventory.
    state: Arc<State>,
    /// Spans go out over OTLP (`[telemetry] otlp_endpoint`).
    traces: bool,
    metrics: Arc<Metrics>,
}

/// What [`Proxy::admit`] decides of a request.
enum Admitted {
    /// A SOAP call, whose prefix is read; `declared` is its `Content-Length`.
    Soap { declared: Option<u64> },
    /// One of Campaign's other pages (`server.paths`): the credential is in the headers or the
    /// query, the body is not read.
    Page,
    /// Anything else, with `unknown_callers = "legacy"`: to Campaign as it came.
    PassThrough,
}

/// The way a request goes, once its caller is known.
enum Way<'a> {
    /// Answered here: the Logon of an `ims` caller (named), or the Logoff of a session
    /// imsbridge issued.
    /// Boxed: the other ways carry a reference only.
    Local(Box<Response<ResponseBody>>, Option<&'a Caller>),
    /// To Campaign as the callers' check decided: unchanged (a `legacy` caller, the legacy
    /// share of a `canary` one, a credential no caller owns with `unknown_callers =
    /// "legacy"`), or the `ims` way.
    Routed(Route<'a>),
    /// A `shadow` caller's call of one of its `shadow_actions`: to Campaign unchanged, and a
    /// copy the `ims` way once `password` is checked (`proxy/shadow.rs`).
    Shadowed {
        caller: &'a Caller,
        password: Secret,
    },
}

/// What a request from `peer` with `credential` presents to the caller check.
fn presented<'a>(credential: Credential<'a>, peer: &'a Peer) -> Presented<'a> {
    Presented {
        credential,
        peer: peer.addr.ip(),
        cert: peer.cert.as_deref(),
    }
}

impl Proxy {
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Waits, up to `wait`, for every profile to hold a token (after a reload, before the new
    /// config takes the traffic).
    pub(crate) async fn warm_up(&self, wait: Duration) {
        for profile in &self.profiles {
            let _ = profile.tokens.get(wait).await;
        }
    }

    /// What the cut-over verdicts ask for.
    pub(crate) fn cutover_settings(&self) -> crate::config::CutoverSettings {
        self.cutover
    }

    /// The state store.
    pub(crate) fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Shadow copies on their way now.
    pub(crate) fn shadow_copies_in_flight(&self) -> usize {
        self.shadow_max_in_flight - self.shadow_permits.available_permits()
    }

    /// The technical accounts, in the config's order.
    pub(crate) fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// The configured callers.
    pub(crate) fn callers(&self) -> &Callers {
        &self.callers
    }

    /// The Campaign instances: `[upstream]` first, then `[upstreams.NAME]` in name order.
    pub(crate) fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// The Campaign of a request: that of the caller's profile; `[upstream]` for a credential
    /// no caller owns.
    fn upstream_of(&self, caller: Option<&Caller>) -> &Upstream {
        let index = caller.map_or(0, |caller| self.profiles[caller.profile].upstream);
        &self.upstreams[index]
    }

    /// Answers one request; its log line and counts follow when the answer is done with.
    pub(crate) async fn handle(
        self: &Arc<Self>,
        mut peer: Arc<Peer>,
        mut request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        if let Some(client) = forwarded::client(&self.trusted_proxies, &peer, request.headers_mut())
        {
            peer = Arc::new(client);
        }
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
        // A body refused before its end is drained (`body/linger.rs`).
        let request = request.map(|body| Lingering::new(body, self.linger, self.max_body_bytes));
        let span = self.trace_of(&request);
        let (mut response, error) = match self
            .pipeline(&peer, request, &mut record)
            .instrument(span)
            .await
        {
            Ok(response) => (response, None),
            Err(error) => (
                error.response(record.action.as_ref(), self.fault_status),
                Some(error),
            ),
        };
        response.headers_mut().insert(&X_REQUEST_ID, request_id);
        let history_outcome = match &error {
            None if record.campaign_refused => "refused",
            None => "ok",
            Some(ProxyError::Auth(_)) => "refused",
            Some(_) => "failed",
        };
        let completion = Completion {
            state: self.state.clone(),
            status: response.status(),
            outcome: error.as_ref().map_or("ok", ProxyError::kind),
            history_outcome,
            error: error.map(|e| e.to_string()),
            record,
            metrics: self.metrics.clone(),
        };
        response.body_mut().finish_with(Box::new(completion));
        response
    }

    /// The span of a request, continuing the trace its `traceparent` names; none (at no cost)
    /// unless `[telemetry] otlp_endpoint` is set.
    fn trace_of<B>(&self, request: &Request<B>) -> tracing::Span {
        if !self.traces {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            target: TRACES,
            "request",
            http.request.method = %request.method(),
            url.path = request.uri().path(),
        );
        crate::telemetry::continue_trace(&span, request.headers());
        span
    }

    /// A stage's span when traces are sent; else none, made at no cost (a span of a target no
    /// layer listens to still costs a look at every layer's filter, at `info` level).
    fn traced(&self, span: impl FnOnce() -> tracing::Span) -> tracing::Span {
        if self.traces {
            span()
        } else {
            tracing::Span::none()
        }
    }

    /// The `token` stage: a valid token of `profile`, waiting when there is none.
    fn token_of<'a>(
        &self,
        profile: &'a Profile,
    ) -> impl Future<Output = Result<Arc<Token>, ProxyError>> + 'a {
        let span =
            self.traced(|| tracing::info_span!(target: TRACES, "token", profile = &*profile.name));
        profile.token(self.token_wait).instrument(span)
    }

    /// The `upstream` stage: `request` to Campaign, carrying the stage's `traceparent` when
    /// traces are sent.
    fn to_campaign<'a>(
        &self,
        upstream: &'a Upstream,
        mut request: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<CampaignBody>, UpstreamError>> + 'a {
        let span = self
            .traced(|| tracing::info_span!(target: TRACES, "upstream", upstream = upstream.name()));
        if self.traces {
            crate::telemetry::send_trace(&span, request.headers_mut());
        }
        upstream.send(request).instrument(span)
    }

    /// The phases, in request order (see the module documentation). The request's parts and
    /// prefix are handed from phase to phase, never copied.
    async fn pipeline(
        self: &Arc<Self>,
        peer: &Peer,
        request: Request<Lingering>,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let declared = match self.admit(&request)? {
            Admitted::Soap { declared } => declared,
            // Boxed: not the `ims` way of the SOAP router (see `PassThrough`).
            Admitted::Page => return Box::pin(self.forward_page(request, peer, record)).await,
            // Boxed, as every way but the `ims` one: their futures stay out of the state that
            // the `ims` way, the busiest, moves on every request.
            Admitted::PassThrough => {
                return Box::pin(self.pass_through(request, peer, record)).await;
            }
        };
        let (parts, body) = request.into_parts();
        let charset = match parts.headers.get(http::header::CONTENT_TYPE) {
            Some(value) => Charset::of_content_type(value.as_bytes()).map_err(PrefixError::Scan)?,
            None => None,
        };
        // Each phase's future is awaited where it is made when no trace is sent: wrapped in
        // `instrument`, it would be moved into the wrapper, a copy of its whole state.
        let prefix = if self.traces {
            self.read_prefix(body, charset, record)
                .instrument(tracing::info_span!(target: TRACES, "prefix"))
                .await?
        } else {
            self.read_prefix(body, charset, record).await?
        };
        record.read(&parts, &prefix);
        let way = if self.traces {
            self.identify(&parts, &prefix, peer, record)
                .instrument(tracing::info_span!(target: TRACES, "caller check"))
                .await
        } else {
            self.identify(&parts, &prefix, peer, record).await
        };
        let way = way.inspect_err(|error| record.refused(error, &self.callers))?;
        record.took(&way);
        match way {
            Way::Local(response, _) => Ok(*response),
            Way::Routed(Route::Ims(caller)) => {
                self.forward_ims(caller, parts, prefix, declared, peer, record)
                    .await
            }
            // Boxed: not the `ims` way (see `PassThrough`).
            Way::Routed(route @ (Route::Legacy(_) | Route::Transparent)) => {
                let upstream = self.upstream_of(route.caller());
                Box::pin(self.forward_unchanged(upstream, parts, prefix, declared, peer, record))
                    .await
            }
            Way::Shadowed { caller, password } => {
                Box::pin(
                    self.forward_shadowed(caller, password, parts, prefix, declared, peer, record),
                )
                .await
            }
        }
    }

    /// Phase 1, on every request: decides whether its body is read at all. Only a `POST` to
    /// the SOAP router is ([`Admitted::Soap`]); Campaign's other pages of `server.paths` are
    /// served without it ([`Admitted::Page`]); anything else passes through when unknown
    /// callers do, as Campaign would see it without imsbridge but for an `ims` caller's
    /// credential ([`Admitted::PassThrough`]), and is refused otherwise. A SOAP call that declares a body
    /// over `max_body_bytes` is refused here, before any of it is read.
    fn admit(&self, request: &Request<Lingering>) -> Result<Admitted, ProxyError> {
        let path = request.uri().path();
        let soap_router = path == SOAP_ROUTER_PATH;
        if !soap_router && self.paths.iter().any(|page| page == path) {
            return Ok(Admitted::Page);
        }
        if !soap_router || request.method() != Method::POST {
            return match self.unknown_callers {
                UnknownCallers::Legacy => Ok(Admitted::PassThrough),
                UnknownCallers::Reject if soap_router => Err(ProxyError::MethodNotAllowed),
                UnknownCallers::Reject => Err(ProxyError::NotFound),
            };
        }
        let declared = declared_length(request.headers())?;
        if declared.is_some_and(|length| length > self.max_body_bytes) {
            return Err(BodyError::TooLarge(self.max_body_bytes).into());
        }
        Ok(Admitted::Soap { declared })
    }

    /// Phase 2, on a SOAP call: reads the body up to the end of the first parameter of the
    /// method element, and no further (bounded by `max_prefix_bytes`, `max_body_bytes`, the idle
    /// timeout, `prefix_timeout` and, with every other prefix, `max_prefix_memory`), counting the
    /// bytes in the record as they come. An error means the body is not an envelope imsbridge
    /// can read, or did not come in time: nothing has gone upstream. (Not an `async fn`: a future around
    /// `prefix::read`'s would be one more move of the prefix on every request.)
    fn read_prefix<'a>(
        &'a self,
        body: Lingering,
        charset: Option<Charset>,
        record: &'a Record,
    ) -> impl Future<Output = Result<Prefix<Lingering>, PrefixError>> + 'a {
        prefix::read(
            body,
            charset,
            self.prefix_limits,
            &self.prefix_budget,
            &record.bytes_in,
        )
    }

    /// Phase 3: the caller, from every credential the request carries (`carriers`), and its
    /// [`Way`]. `xtk:session#Logon` of an `ims` caller, and `#Logoff` of a session imsbridge
    /// issued, are answered here ([`Way::Local`]). An error is a refusal: nothing has gone
    /// upstream.
    async fn identify(
        &self,
        parts: &request::Parts,
        prefix: &Prefix<Lingering>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Way<'_>, AuthError> {
        let envelope = &prefix.envelope;
        let carried = carriers::read(&parts.headers, parts.uri.query(), Some(envelope))?;
        let credential = carried.credential();
        if envelope.is_logon() {
            let (login, password) = carriers::logon(envelope);
            if !login.is_empty() {
                record.login = Some(Arc::from(login));
            }
            let presented = presented(credential, peer);
            // Boxed: a Logon is rare, and its future carries a password check.
            return Ok(
                match Box::pin(self.callers.logon(login, password, presented)).await? {
                    LogonWay::Answer(caller, issued) => {
                        let ttl = self.callers.session_ttl().unwrap_or_default();
                        let now = self.callers.now();
                        let body = logon_response(&caller.login, &issued, ttl, now);
                        Way::Local(Box::new(soap_answer(body)), Some(caller))
                    }
                    LogonWay::Forward(route) => Way::Routed(route),
                },
            );
        }
        if envelope.is_logoff() && self.callers.logoff(presented(credential, peer)).await? {
            return Ok(Way::Local(Box::new(soap_answer(logoff_response())), None));
        }
        let route = self.route(credential, peer, record).await?;
        if let (Route::Legacy(caller), Credential::Password { password, .. }) = (route, credential)
            && shadow::shadowed(caller, record, prefix)
        {
            let password = Secret::from(password);
            return Ok(Way::Shadowed { caller, password });
        }
        Ok(Way::Routed(route))
    }

    /// The callers' check of `credential` from `peer`, shared by the SOAP router and the
    /// pages: its route, and when it names no caller, the login it presents, for the
    /// inventory.
    async fn route(
        &self,
        credential: Credential<'_>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Route<'_>, AuthError> {
        let route = self.callers.route(presented(credential, peer)).await;
        if !matches!(route, Ok(Route::Ims(_) | Route::Legacy(_))) {
            record.presented(credential);
        }
        route
    }

    /// Phase 4 of a [`Way::Routed`] request that goes unchanged: to Campaign as it came (the
    /// pre-migration path), and its answer streamed back.
    async fn forward_unchanged(
        &self,
        upstream: &Upstream,
        parts: request::Parts,
        prefix: Prefix<Lingering>,
        declared: Option<u64>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let body = self.upstream_body(prefix, &[], declared, record)?;
        let parts = self.prepare(parts, None, peer, declared);
        self.send(upstream, parts, body, record).await
    }

    /// Phase 4 of a [`Way::Routed`] request the `ims` way: the token of the caller's technical account (no wait while a
    /// valid one exists), every copy of the credential out of the prefix and the headers, the
    /// Bearer in, the request to Campaign. Its answer streams back, unless it refuses the
    /// token: then [`Proxy::replay`].
    async fn forward_ims(
        &self,
        caller: &Caller,
        parts: request::Parts,
        prefix: Prefix<Lingering>,
        declared: Option<u64>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let profile = &self.profiles[caller.profile];
        record.profile = Some(profile.name.clone());
        let token = self.token_of(profile).await?;
        let upstream = &self.upstreams[profile.upstream];
        let retry_buffer_bytes = upstream.retry_buffer_bytes();

        let edits = carriers::body_edits(&prefix.envelope);
        let length = declared.map(|length| prefix::length_after(length, &edits));
        let parts = self.ims_head(parts, &token, peer, length);
        let mut body = self.upstream_body(prefix, &edits, length, record)?;
        // A body that may fit the replay buffer is kept as it is sent.
        let replay = length
            .is_none_or(|length| length <= retry_buffer_bytes)
            .then(|| (Replay::new(retry_buffer_bytes), parts.clone()));
        if let Some((kept, _)) = &replay {
            body = body.recording(kept.clone());
        }

        let response = self
            .campaign(upstream, Request::from_parts(parts, body), record)
            .await?;
        let judged = self.judge(response, &token).await?;
        if !judged.refused {
            return Ok(judged.response);
        }
        record.campaign_refused = true;
        profile.tokens.invalidate(&token);
        let kept = replay.and_then(|(kept, parts)| Some((Replay::lock(&kept).take()?, parts)));
        let Some((kept, parts)) = kept else {
            tracing::warn!(caller = %caller.name, "token refused by Campaign; the body was not kept whole, so the refusal goes back to the caller");
            return Ok(judged.response);
        };
        // Boxed: a replay is rare.
        Box::pin(self.replay(profile, parts, kept, length, record)).await
    }

    /// Phase 5, only when Campaign refused the token of an `ims` call whose body was kept
    /// whole: the token has been dropped (one new fetch, however many requests saw the
    /// refusal); the call goes once more with the new one, and that answer is the caller's.
    async fn replay(
        &self,
        profile: &Profile,
        mut parts: request::Parts,
        kept: Vec<Bytes>,
        length: Option<u64>,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let token = self.token_of(profile).await?;
        parts
            .headers
            .insert(header::AUTHORIZATION, token.bearer().clone());
        record.retried = true;
        // The kept body was counted and checked against the limits as it first came.
        let body = UpstreamBody::new(kept, None, 0, u64::MAX, length, self.idle_timeout);
        let upstream = &self.upstreams[profile.upstream];
        let response = self
            .campaign(upstream, Request::from_parts(parts, body), record)
            .await?;
        // A second refusal is relayed: one replay per call.
        let judged = self.judge(response, &token).await?;
        record.campaign_refused = judged.refused;
        Ok(judged.response)
    }

    /// A request whose body the proxy does not read, to Campaign with the headers it has.
    async fn unread(
        &self,
        upstream: &Upstream,
        parts: request::Parts,
        body: Lingering,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let length = declared_length(&parts.headers)?;
        let body = self.unread_body(body, length, record);
        let parts = self.prepare(parts, None, peer, length);
        self.send(upstream, parts, body, record).await
    }

    /// A body the proxy does not read, streamed to Campaign as it comes, counted in the record,
    /// within `max_body_bytes` and the idle timeout.
    fn unread_body(&self, body: Lingering, length: Option<u64>, record: &Record) -> UpstreamBody {
        UpstreamBody::new(
            [],
            Some(body),
            0,
            self.max_body_bytes,
            length,
            self.idle_timeout,
        )
        .counting(record.bytes_in.clone())
    }

    /// The caller's body on its way to Campaign: what was read of it with `edits` applied, then
    /// the rest as it comes, counted in the record, within `max_body_bytes` and the idle
    /// timeout, and watched for an element after the SOAP Body (`soap/tail.rs`): one already
    /// read is refused here, before anything is sent; one still to come ends the body before
    /// Campaign has it whole.
    fn upstream_body(
        &self,
        prefix: Prefix<Lingering>,
        edits: &[Edit],
        length: Option<u64>,
        record: &Record,
    ) -> Result<UpstreamBody, ProxyError> {
        // What was read past the prefix is looked at now, the rest as it comes.
        let tail = prefix.tail().map_err(PrefixError::Scan)?;
        let body = UpstreamBody::new(
            prefix.chunks(edits),
            Some(prefix.rest),
            prefix.received,
            self.max_body_bytes,
            length,
            self.idle_timeout,
        )
        .counting(record.bytes_in.clone())
        .inspecting(tail);
        Ok(body)
    }

    /// The request as Campaign gets it: its target in origin form, HTTP/1.1, the header
    /// policy applied (the node it goes to sets `Host` and any base path).
    fn prepare(
        &self,
        mut parts: request::Parts,
        bearer: Option<&HeaderValue>,
        peer: &Peer,
        content_length: Option<u64>,
    ) -> request::Parts {
        parts.uri = origin_form(&parts.uri);
        parts.version = Version::HTTP_11;
        forward_headers(
            &mut parts.headers,
            &Forwarding {
                bearer,
                peer: &peer.forwarded_for,
                content_length,
            },
        );
        parts
    }

    /// The head of a request on the `ims` way: every copy of the credential out of it, the
    /// Bearer of `token` in, prepared for Campaign.
    fn ims_head(
        &self,
        mut parts: request::Parts,
        token: &Token,
        peer: &Peer,
        content_length: Option<u64>,
    ) -> request::Parts {
        carriers::strip_request(&mut parts);
        self.prepare(parts, Some(token.bearer()), peer, content_length)
    }

    /// The `upstream` stage, its answer's status recorded.
    async fn campaign(
        &self,
        upstream: &Upstream,
        request: Request<UpstreamBody>,
        record: &mut Record,
    ) -> Result<Response<CampaignBody>, ProxyError> {
        let response = self.to_campaign(upstream, request).await?;
        record.upstream_status = Some(response.status());
        Ok(response)
    }

    /// Sends a prepared request to Campaign and streams the answer back.
    async fn send(
        &self,
        upstream: &Upstream,
        parts: request::Parts,
        body: UpstreamBody,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let response = self
            .campaign(upstream, Request::from_parts(parts, body), record)
            .await?;
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
fn soap_answer(body: Bytes) -> Response<ResponseBody> {
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
