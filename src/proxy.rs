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
//! Whatever stops a request is a [`ProxyError`], turned into an answer in one place
//! (`proxy/error.rs`); what the request did is written once its answer is done with
//! (`proxy/record.rs`).

mod error;
mod prefix;
mod record;
mod refusal;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version, request};
use hyper::body::Incoming;

pub use error::ProxyError;

use crate::body::{BodyError, Lingering, Replay, ResponseBody, Tee, UpstreamBody};
use crate::callers::{AuthError, Caller, Callers, LogonWay, Presented, Route};
use crate::carriers;
use crate::config::{Config, FaultStatus, UnknownCallers, WSDL_PATH, WsdlSettings};
use crate::connect::{Egress, TlsSetupError, https_connector, system_roots};
use crate::headers::strip_hop_by_hop;
use crate::ims::{ImsClient, Readiness, Source, Token, TokenCache, TokenStatus};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::server::Peer;
use crate::soap::{Charset, Edit, SOAP_ROUTER_PATH, logoff_response, logon_response};
use crate::telemetry::TARGET as TRACES;
use crate::upstream::{
    Forwarding, NodeHealth, Upstream, UpstreamError, X_FORWARDED_FOR, forward_headers, origin_form,
};
use prefix::{Prefix, PrefixBudget, PrefixError};
use record::{Completion, ModeLabel, Record};
use tracing::Instrument;

/// A technical account at run time.
struct Profile {
    name: Arc<str>,
    tokens: TokenCache,
    /// An `ims` or `canary` caller uses it: `/readyz` waits for its first token.
    needed: bool,
    /// Its Campaign: an index into [`Proxy::upstreams`].
    upstream: usize,
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

/// A WSDL answer is read whole (up to this) to point its addresses at the proxy.
const MAX_WSDL_BYTES: usize = 32 * 1024 * 1024;

/// `response`, a WSDL, with its `soap:address` locations at `public` (`soap::point_at`).
async fn relocated(
    response: Response<ResponseBody>,
    public: &str,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (mut parts, body) = response.into_parts();
    let wsdl = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_WSDL_BYTES))
        .await
        .map_err(|e| UpstreamError::Unreachable(format!("reading the WSDL: {e}")))?
        .to_bytes();
    let wsdl = match crate::soap::point_at(&wsdl, public) {
        Some(relocated) => Bytes::from(relocated),
        None => wsdl,
    };
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, wsdl.len().into());
    Ok(Response::from_parts(parts, ResponseBody::full(wsdl)))
}

/// A profile as `/readyz` sees it.
pub struct ProfileHealth<'a> {
    pub name: &'a str,
    /// An `ims` or `canary` caller uses it.
    pub needed: bool,
    /// It held a token since the process started.
    pub held_once: bool,
    pub readiness: Readiness,
}

/// A profile, as the admin page shows it.
pub struct ProfileView<'a> {
    pub name: &'a str,
    /// The name of its Campaign instance.
    pub upstream: &'a str,
    /// An `ims` or `canary` caller uses it.
    pub needed: bool,
    pub status: TokenStatus,
}

/// A configured caller, as the admin page shows it.
pub struct CallerView<'a> {
    pub name: &'a str,
    pub login: &'a str,
    pub mode: crate::config::Mode,
    pub profile: &'a str,
}

/// The proxy: what every request needs, built once from the config.
pub struct Proxy {
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
    /// To Campaign unchanged, which checks the credential itself: a `legacy` caller (or the
    /// legacy share of a `canary` one), or a credential no caller owns (`None`) with
    /// `unknown_callers = "legacy"`.
    Forward(Option<&'a Caller>),
    /// To Campaign as the caller's technical account: the credential out, its Bearer token in.
    Ims(&'a Caller),
}

impl<'a> From<Route<'a>> for Way<'a> {
    fn from(route: Route<'a>) -> Way<'a> {
        match route {
            Route::Ims(caller) => Way::Ims(caller),
            Route::Legacy(caller) => Way::Forward(Some(caller)),
            Route::Transparent => Way::Forward(None),
        }
    }
}

/// What a request from `peer` with `credential` presents to the caller check.
fn presented<'a>(credential: carriers::Credential<'a>, peer: &'a Peer) -> Presented<'a> {
    Presented {
        credential,
        peer: peer.addr.ip(),
        cert: peer.cert.as_deref(),
    }
}

impl Proxy {
    /// Builds the proxy and starts one token refresher per profile.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Proxy, TlsSetupError> {
        let system_roots = system_roots();
        let egress = Egress::new(
            config.egress.proxy.as_ref().map(|p| p.expose()),
            &config.egress.no_proxy,
        );
        let attempts = |upstream: &str, node: &str| metrics.attempts(upstream, node);
        let upstreams = config
            .all_upstreams()
            .map(|settings| {
                let first_byte = metrics.first_byte(&settings.name);
                Upstream::new(settings, &system_roots, &egress, &attempts, first_byte)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // IMS is trusted on the system's roots and `ims.ca_file`'s.
        let ims_roots = [system_roots.as_slice(), &config.ims.extra_roots].concat();
        if config.ims.token_url.scheme() == Some(&http::uri::Scheme::HTTPS) && ims_roots.is_empty()
        {
            return Err(TlsSetupError::NoRoots("ims.token_url".to_owned()));
        }
        let ims = ImsClient::new(
            https_connector(&ims_roots, Some(config.ims.timeout), &egress)?,
            config.ims.timeout,
        );
        let profiles = config
            .profiles
            .iter()
            .enumerate()
            .map(|(index, profile)| {
                let name: Arc<str> = profile.name.as_str().into();
                let source = Source::for_profile(profile, &config.ims, ims.clone());
                let counters = metrics.fetches(&name);
                let needed = config
                    .callers
                    .iter()
                    .any(|c| c.profile == index && c.mode != crate::config::Mode::Legacy);
                Profile {
                    tokens: TokenCache::spawn(name.clone(), source, counters),
                    name,
                    needed,
                    upstream: profile.upstream_index(),
                }
            })
            .collect();
        metrics.set_callers(
            config
                .callers
                .iter()
                .map(|c| (c.name.as_str(), c.mode.as_str())),
        );
        let callers = Callers::new(
            &config.callers,
            config.unknown_callers,
            config.sessions.as_ref(),
            config.canary_seed,
            config.server.password_limits,
        );
        metrics.inventory.configure(
            callers.iter().map(|c| (&*c.login, &c.name)),
            config.admin.inventory_max_logins,
        );
        Ok(Proxy {
            callers,
            profiles,
            upstreams,
            unknown_callers: config.unknown_callers,
            max_body_bytes: config.server.max_body_bytes,
            fault_status: config.server.fault_status,
            linger: config.server.linger,
            paths: config.server.paths.clone(),
            public_url: config.server.public_url.clone(),
            trusted_proxies: config.server.trusted_proxies.clone(),
            wsdl: config.wsdl.clone(),
            prefix_limits: prefix::Limits {
                max_prefix: config.server.max_prefix_bytes,
                max_body: config.server.max_body_bytes,
                idle: config.server.limits.idle_timeout,
                deadline: config.server.prefix_timeout,
            },
            prefix_budget: PrefixBudget::new(config.server.max_prefix_memory),
            idle_timeout: config.server.limits.idle_timeout,
            token_wait: config.ims.timeout,
            shadow_permits: Arc::new(tokio::sync::Semaphore::new(
                config.admin.shadow_max_in_flight,
            )),
            traces: config.otlp_endpoint.is_some(),
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

    /// Each profile with the state of its token, for the metrics.
    pub fn readiness(&self) -> impl Iterator<Item = (&str, Readiness)> {
        self.profiles
            .iter()
            .map(|p| (&*p.name, p.tokens.readiness()))
    }

    /// Each profile as the admin page shows it.
    pub fn profile_views(&self) -> impl Iterator<Item = ProfileView<'_>> {
        self.profiles.iter().map(|p| ProfileView {
            name: &p.name,
            upstream: self.upstreams[p.upstream].name(),
            needed: p.needed,
            status: p.tokens.status(),
        })
    }

    /// Each configured caller as the admin page shows it.
    pub fn caller_views(&self) -> impl Iterator<Item = CallerView<'_>> {
        self.callers.iter().map(|c| CallerView {
            name: &c.name,
            login: &c.login,
            mode: c.mode,
            profile: &self.profiles[c.profile].name,
        })
    }

    /// Each node of each Campaign instance, and its state now.
    pub fn nodes(&self) -> impl Iterator<Item = NodeHealth<'_>> {
        self.upstreams.iter().flat_map(Upstream::health)
    }

    /// The Campaign of a request: that of the caller's profile; `[upstream]` for a credential
    /// no caller owns.
    fn upstream_of(&self, caller: Option<&Caller>) -> &Upstream {
        let index = caller.map_or(0, |caller| self.profiles[caller.profile].upstream);
        &self.upstreams[index]
    }

    /// Each profile's part in `/readyz`: whether an `ims` or `canary` caller uses it, whether it
    /// held a token since start, and its token now.
    pub fn health(&self) -> impl Iterator<Item = ProfileHealth<'_>> {
        self.profiles.iter().map(|p| ProfileHealth {
            name: &p.name,
            needed: p.needed,
            held_once: p.tokens.held_once(),
            readiness: p.tokens.readiness(),
        })
    }

    /// The client of a request that came through trusted proxies: the right-most address of
    /// its `X-Forwarded-For` that is not one of them (whose chain is then dropped: Campaign gets
    /// that address alone). `None`: the peer is the client.
    fn forwarded_client(&self, peer: &Peer, headers: &mut http::HeaderMap) -> Option<Peer> {
        let trusted = |ip: &std::net::IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if self.trusted_proxies.is_empty() || !trusted(&peer.addr.ip()) {
            return None;
        }
        let chain: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = None;
        for entry in chain.iter().rev() {
            // An entry that is no address ends the chain that can be believed.
            let Ok(ip) = entry.parse::<std::net::IpAddr>() else {
                break;
            };
            client = Some(ip);
            if !trusted(&ip) {
                break;
            }
        }
        let client = client?;
        headers.remove(&X_FORWARDED_FOR);
        Some(Peer::new(
            std::net::SocketAddr::new(client, 0),
            peer.cert.clone(),
        ))
    }

    /// Answers one request; its log line and counts follow when the answer is done with.
    pub async fn handle(
        self: &Arc<Self>,
        mut peer: Arc<Peer>,
        mut request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        if let Some(client) = self.forwarded_client(&peer, request.headers_mut()) {
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
        let completion = Completion {
            status: response.status(),
            outcome: error.as_ref().map_or("ok", ProxyError::kind),
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
    ) -> impl Future<Output = Result<Response<crate::body::CampaignBody>, UpstreamError>> + 'a {
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
            Admitted::PassThrough => {
                record.mode = ModeLabel::Transparent;
                // Boxed, as every way but the `ims` one: their futures stay out of the state
                // that the `ims` way, the busiest, moves on every request.
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
        let way = way.inspect_err(|error| record.refused(error))?;
        record.took(&way);
        match way {
            Way::Local(response, _) => Ok(*response),
            // Boxed: not the `ims` way (see `PassThrough`).
            Way::Forward(Some(caller)) if shadowed(caller, record, &prefix) => {
                Box::pin(self.forward_shadowed(caller, parts, prefix, declared, peer, record)).await
            }
            Way::Forward(caller) => {
                let upstream = self.upstream_of(caller);
                Box::pin(self.forward_unchanged(upstream, parts, prefix, declared, peer, record))
                    .await
            }
            Way::Ims(caller) => {
                self.forward_ims(caller, parts, prefix, declared, peer, record)
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
        let presented = presented(carried.credential(), peer);
        if envelope.is_logon() {
            let (login, password) = carriers::logon(envelope);
            if !login.is_empty() {
                record.login = Some(Arc::from(login));
            }
            // Boxed: a Logon is rare, and its future carries a password check.
            return Ok(
                match Box::pin(self.callers.logon(login, password, presented)).await? {
                    LogonWay::Answer(caller, issued) => {
                        let ttl = self.callers.session_ttl().unwrap_or_default();
                        let body = logon_response(&caller.login, &issued, ttl, SystemTime::now());
                        Way::Local(Box::new(soap_answer(body)), Some(caller))
                    }
                    LogonWay::Forward(caller) => Way::Forward(caller),
                },
            );
        }
        if envelope.is_logoff() && self.callers.logoff(presented)? {
            return Ok(Way::Local(Box::new(soap_answer(logoff_response())), None));
        }
        let route = self.callers.route(presented).await;
        if !matches!(route, Ok(Route::Ims(_) | Route::Legacy(_))) {
            // No caller to name its login: the inventory takes it from the credential.
            record.presented(presented.credential.token());
        }
        Ok(route?.into())
    }

    /// Phase 4 of [`Way::Forward`]: sends the request to Campaign as it came (the
    /// pre-migration path), and streams the answer back.
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

    /// Phase 4 of [`Way::Forward`] for a call a `shadow` caller has copied (one of its
    /// `shadow_actions`): the call goes to Campaign as it came, and the caller gets that answer;
    /// once both the call and the answer went through whole (within `retry_buffer_bytes`), a copy
    /// goes the `ims` way, its answer is compared with the legacy one, and the result is
    /// counted ([`Proxy::shadow_copy`]). At most `admin.shadow_max_in_flight` copies at once:
    /// past it, a call is forwarded without one.
    async fn forward_shadowed(
        self: &Arc<Self>,
        caller: &Caller,
        parts: request::Parts,
        prefix: Prefix<Lingering>,
        declared: Option<u64>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let action = record
            .action
            .as_ref()
            .map_or("-", |a| a.as_str())
            .to_owned();
        let upstream_index = self.profiles[caller.profile].upstream;
        let upstream = &self.upstreams[upstream_index];
        let limit = upstream.retry_buffer_bytes();
        let permit = match self.shadow_permits.clone().try_acquire_owned() {
            Ok(permit) if declared.is_none_or(|length| length <= limit) => permit,
            other => {
                let why = if other.is_ok() { "too_large" } else { "busy" };
                self.metrics.shadow(&caller.name, &action, why);
                return self
                    .forward_unchanged(upstream, parts, prefix, declared, peer, record)
                    .await;
            }
        };
        // The copy: every copy of the credential out of its head and body (the technical
        // account's Bearer goes in once the password is checked).
        let carried = carriers::read(&parts.headers, parts.uri.query(), Some(&prefix.envelope))
            .map_err(AuthError::from)?;
        let credential = Secret::new(carried.credential().token());
        let edits = carriers::body_edits(&prefix.envelope);
        let copy_length = declared.map(|length| prefix::length_after(length, &edits));
        let copy = ShadowCopy {
            caller: caller.name.clone(),
            action,
            credential,
            peer: peer.addr.ip(),
            profile: caller.profile,
            head: {
                let mut head = parts.clone();
                carriers::strip_request(&mut head);
                self.prepare(head, None, peer, copy_length)
            },
            length: copy_length,
            prefix: prefix.chunks(&edits),
            prefix_received: prefix.received,
        };
        let kept = Replay::new(limit);
        let body = self
            .upstream_body(prefix, &[], declared, record)?
            .recording(kept.clone());
        let parts = self.prepare(parts, None, peer, declared);
        let response = self
            .to_campaign(upstream, Request::from_parts(parts, body))
            .await?;
        record.upstream_status = Some(response.status());
        let status = response.status();
        let (parts, body) = response.into_parts();
        let mut body = ResponseBody::upstream(None, body, self.idle_timeout);
        let (tee, answer) = Tee::new(limit);
        body.tee(tee);
        let proxy = self.clone();
        tokio::spawn(async move {
            let result = proxy.shadow_copy(&copy, kept, status, answer).await;
            proxy.metrics.shadow(&copy.caller, &copy.action, result);
            drop(permit);
        });
        Ok(finish(Response::from_parts(parts, body)))
    }

    /// The `ims` way's copy of a shadowed call, once the legacy call and its answer went through
    /// whole; what the comparison gave. A mismatch is logged with digests, never a body.
    async fn shadow_copy(
        &self,
        copy: &ShadowCopy,
        kept: Arc<std::sync::Mutex<Replay>>,
        status: http::StatusCode,
        answer: tokio::sync::oneshot::Receiver<Option<Vec<Bytes>>>,
    ) -> &'static str {
        let Ok(Some(legacy)) = answer.await else {
            return "incomplete";
        };
        let Some(sent) = Replay::lock(&kept).take() else {
            return "incomplete";
        };
        // Nothing unauthenticated goes the `ims` way, copies included.
        if !self
            .callers
            .verify_copy(&copy.caller, copy.credential.expose(), copy.peer)
            .await
        {
            return "unverified";
        }
        let profile = &self.profiles[copy.profile];
        let Ok(token) = self.token_of(profile).await else {
            return "failed";
        };
        let mut head = copy.head.clone();
        head.headers
            .insert(header::AUTHORIZATION, token.bearer().clone());
        let mut chunks = copy.prefix.clone();
        chunks.extend(skip_bytes(sent, copy.prefix_received));
        let body = UpstreamBody::new(chunks, None, 0, u64::MAX, copy.length, self.idle_timeout);
        let upstream = &self.upstreams[profile.upstream];
        let Ok(response) = self
            .to_campaign(upstream, Request::from_parts(head, body))
            .await
        else {
            return "failed";
        };
        let copy_status = response.status();
        let limit = upstream.retry_buffer_bytes() as usize;
        let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            response.into_body(),
            limit,
        ))
        .await;
        let Ok(answered) = read else {
            return "too_large";
        };
        let legacy: Vec<u8> = legacy.concat();
        let (same, legacy_digest, ims_digest) = crate::soap::agree(&legacy, &answered.to_bytes());
        if same && status == copy_status {
            return "match";
        }
        tracing::warn!(
            caller = %copy.caller,
            action = %copy.action,
            legacy_status = status.as_u16(),
            ims_status = copy_status.as_u16(),
            legacy_digest,
            ims_digest,
            "shadow copy: the ims way answered otherwise"
        );
        "mismatch"
    }

    /// Phase 4 of [`Way::Ims`]: the token of the caller's technical account (no wait while a
    /// valid one exists), every copy of the credential out of the prefix and the headers, the
    /// Bearer in, the request to Campaign. Its answer streams back, unless it refuses the
    /// token: then [`Proxy::replay`].
    async fn forward_ims(
        &self,
        caller: &Caller,
        mut parts: request::Parts,
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
        carriers::strip_request(&mut parts);
        let parts = self.prepare(parts, Some(token.bearer()), peer, length);
        let mut body = self.upstream_body(prefix, &edits, length, record)?;
        // A body that may fit the replay buffer is kept as it is sent.
        let replay = length
            .is_none_or(|length| length <= retry_buffer_bytes)
            .then(|| (Replay::new(retry_buffer_bytes), parts.clone()));
        if let Some((kept, _)) = &replay {
            body = body.recording(kept.clone());
        }

        let response = self
            .to_campaign(upstream, Request::from_parts(parts, body))
            .await?;
        record.upstream_status = Some(response.status());
        let judged = self.judge(response, &token).await?;
        if !judged.refused {
            return Ok(judged.response);
        }
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
            .to_campaign(upstream, Request::from_parts(parts, body))
            .await?;
        record.upstream_status = Some(response.status());
        // A second refusal is relayed: one replay per call.
        Ok(self.judge(response, &token).await?.response)
    }

    /// Campaign's answer to a call that carried `token`: whether it refuses the token, and
    /// the answer ready for the caller, without its hop-by-hop headers and without any header
    /// that echoes the token. An answer whose fault echoes it is not relayed at all.
    async fn judge(
        &self,
        response: Response<crate::body::CampaignBody>,
        token: &Token,
    ) -> Result<refusal::Judged, ProxyError> {
        let secret = token.access_token();
        let mut judged = refusal::judge(response, self.idle_timeout, secret)
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        if judged.echoes {
            return Err(UpstreamError::EchoedToken.into());
        }
        let headers = judged.response.headers_mut();
        strip_hop_by_hop(headers);
        let echoing: Vec<HeaderName> = headers
            .iter()
            .filter(|(_, value)| {
                !secret.is_empty() && value.as_bytes().windows(secret.len()).any(|w| w == secret)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in echoing {
            tracing::warn!(header = %name, "Campaign's answer echoes the access token in a header; dropped");
            headers.remove(&name);
        }
        Ok(judged)
    }

    /// Phase 4 of [`Admitted::PassThrough`]: a request the proxy does not read, to Campaign
    /// as it came, but without the credential of an `ims` caller (or copies that disagree):
    /// that never leaves the proxy, whatever the path.
    async fn pass_through(
        &self,
        request: Request<Lingering>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let (claimed, owner) = match carriers::read(&parts.headers, parts.uri.query(), None) {
            Ok(carried) => {
                let credential = carried.credential();
                let token = credential.token();
                record.presented(token);
                (self.callers.claims(token), self.callers.owner(token))
            }
            Err(_) => (true, None),
        };
        if claimed {
            carriers::strip_request(&mut parts);
        }
        // To the Campaign of the caller whose login the credential names (the credential
        // itself only when that caller is `legacy`: Campaign checks it).
        let upstream = self.upstream_of(owner);
        self.unread(upstream, parts, body, peer, record).await
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

    /// Phase 2 to 4 of [`Admitted::Page`]: the caller, from the credential of the cookie, the
    /// headers or the query; on the `ims` way every copy out and the Bearer in, the body
    /// streamed unchanged. A WSDL request without any credential takes the token of
    /// `[wsdl] profile` when it may; any other without one is refused (401), or passes through
    /// when unknown callers do.
    async fn forward_page(
        &self,
        request: Request<Lingering>,
        peer: &Peer,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let length = declared_length(&parts.headers)?;
        if length.is_some_and(|length| length > self.max_body_bytes) {
            return Err(BodyError::TooLarge(self.max_body_bytes).into());
        }
        let carried = carriers::read(&parts.headers, parts.uri.query(), None)
            .map_err(AuthError::from)
            .inspect_err(|error| record.refused(error))?;
        let credential = carried.credential();
        let profile = if credential.token().is_empty() {
            let wsdl = parts.method == Method::GET && parts.uri.path() == WSDL_PATH;
            let allowed = self.wsdl.allow_from.is_empty()
                || self
                    .wsdl
                    .allow_from
                    .iter()
                    .any(|net| net.contains(&peer.addr.ip()));
            match (self.wsdl.profile, self.unknown_callers) {
                (Some(profile), _) if wsdl && allowed => profile,
                (_, UnknownCallers::Legacy) => {
                    let upstream = self.upstream_of(None);
                    return Box::pin(self.unread(upstream, parts, body, peer, record)).await;
                }
                (_, UnknownCallers::Reject) => return Err(ProxyError::Unauthorized),
            }
        } else {
            let presented = presented(credential, peer);
            let route = self.callers.route(presented).await;
            if !matches!(route, Ok(Route::Ims(_) | Route::Legacy(_))) {
                record.presented(presented.credential.token());
            }
            let way: Way<'_> = route.inspect_err(|error| record.refused(error))?.into();
            record.took(&way);
            match way {
                Way::Ims(caller) => caller.profile,
                // Campaign checks the credential itself, as on the SOAP router.
                Way::Forward(caller) => {
                    let upstream = self.upstream_of(caller);
                    return Box::pin(self.unread(upstream, parts, body, peer, record)).await;
                }
                // (A page's route is never answered here.)
                Way::Local(response, _) => return Ok(*response),
            }
        };
        let profile = &self.profiles[profile];
        record.profile = Some(profile.name.clone());
        let token = self.token_of(profile).await?;
        let relocate = match &self.public_url {
            Some(public) if parts.uri.path() == WSDL_PATH => {
                // Its addresses are rewritten: as text, not compressed.
                parts.headers.remove(http::header::ACCEPT_ENCODING);
                Some(public)
            }
            _ => None,
        };
        carriers::strip_request(&mut parts);
        let body = self.unread_body(body, length, record);
        let parts = self.prepare(parts, Some(token.bearer()), peer, length);
        let upstream = &self.upstreams[profile.upstream];
        let response = self
            .to_campaign(upstream, Request::from_parts(parts, body))
            .await?;
        record.upstream_status = Some(response.status());
        let judged = self.judge(response, &token).await?;
        if judged.refused {
            // Not replayed (the body was not kept): the next request gets a new token.
            profile.tokens.invalidate(&token);
        }
        match relocate {
            Some(public) if judged.response.status() == http::StatusCode::OK => {
                relocated(judged.response, public).await
            }
            _ => Ok(judged.response),
        }
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

    /// Sends a prepared request to Campaign and streams the answer back.
    async fn send(
        &self,
        upstream: &Upstream,
        parts: request::Parts,
        body: UpstreamBody,
        record: &mut Record,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let response = self
            .to_campaign(upstream, Request::from_parts(parts, body))
            .await?;
        record.upstream_status = Some(response.status());
        let (parts, body) = response.into_parts();
        let body = ResponseBody::upstream(None, body, self.idle_timeout);
        Ok(finish(Response::from_parts(parts, body)))
    }
}

/// Whether a call of a `shadow` caller gets a copy: its action is one of the caller's
/// `shadow_actions`, named alike by its `SOAPAction` and its method element (whichever of
/// the two Campaign goes by, nothing but a listed action is sent twice).
fn shadowed(caller: &Caller, record: &Record, prefix: &Prefix<Lingering>) -> bool {
    let Some(action) = &record.action else {
        return false;
    };
    caller.shadows(action.as_str())
        && crate::soap::Action::of_method(&prefix.envelope.method).as_str() == action.as_str()
}

/// What a shadowed call's copy is made of, kept while the legacy call goes.
struct ShadowCopy {
    caller: Arc<str>,
    action: String,
    /// The `login/password` the call presented: checked before the copy goes.
    credential: Secret,
    peer: std::net::IpAddr,
    profile: usize,
    /// The request head as the `ims` way sends it, but for its Bearer.
    head: request::Parts,
    length: Option<u64>,
    /// The body prefix with the credential out.
    prefix: Vec<Bytes>,
    /// Bytes of the body the prefix stands for: the rest of the copy is what was sent past them.
    prefix_received: u64,
}

/// `chunks` less their first `skip` bytes.
fn skip_bytes(chunks: Vec<Bytes>, mut skip: u64) -> impl Iterator<Item = Bytes> {
    chunks.into_iter().filter_map(move |chunk| {
        let len = chunk.len() as u64;
        if skip >= len {
            skip -= len;
            return None;
        }
        let rest = chunk.slice(skip as usize..);
        skip = 0;
        Some(rest)
    })
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
