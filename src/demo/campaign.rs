//! A stand-in for Adobe Campaign's `/nl/jsp/soaprouter.jsp` on loopback.
//!
//! It reads every request to the end (as Campaign does), records what it got (headers, length
//! and SHA-256 of the body, the first MiB of it), checks the Bearer token with the stand-in IMS,
//! and answers the called method in Campaign's shape. A request with no Bearer token and a
//! non-empty session token is taken as a legacy call, as Campaign still accepts them from its
//! old operators; a Logon with a login and password gets a session of Campaign's own
//! (`___…` tokens).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use ring::digest;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::ims::TokenCheck;
use crate::config::Limits;
use crate::config::WSDL_PATH;
use crate::secret::Secret;
use crate::server::{self, Connections};
use crate::sessions::Issued;
use crate::soap::SOAP_ROUTER_PATH;
use crate::soap::{
    Action, Fault, FaultCode, INVALID_LOGIN, SESSION_INVALID, Scanner, logon_response,
};

/// How Campaign refuses a Bearer token IMS does not vouch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// HTTP 401.
    Unauthorized,
    /// HTTP 500, fault `XSV-350114` (Campaign's IMS check answered 401): the default.
    Fault350114,
    /// HTTP 500, fault `XSV-350008` (session expired or invalid).
    Fault350008,
}

/// Bytes of each body kept for inspection; longer bodies are known by length and hash.
pub const KEPT_BODY_BYTES: usize = 1024 * 1024;

/// One request as Campaign received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The request's method.
    pub method: Method,
    /// Its target.
    pub uri: Uri,
    /// Its headers, as they arrived.
    pub headers: HeaderMap,
    /// The first [`KEPT_BODY_BYTES`] of the body.
    pub body: Bytes,
    /// Its body's length.
    pub body_len: u64,
    /// Its body's SHA-256.
    pub body_sha256: Vec<u8>,
}

impl Recorded {
    /// The body as text (the kept part).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct State {
    tokens: Option<TokenCheck>,
    requests: Mutex<Vec<Recorded>>,
    /// Time taken before answering.
    delay: Mutex<Duration>,
    refusal: Mutex<Refusal>,
    /// Calls whose Bearer token was refused.
    refused: std::sync::atomic::AtomicUsize,
    /// Every accepted call is answered with this fault.
    fault: Mutex<Option<String>>,
    /// Every accepted call gets its head and a first piece of body, then nothing.
    stall: Mutex<bool>,
}

/// A stand-in Campaign on `127.0.0.1`: it records what reaches it and answers as told.
pub struct StandInCampaign {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    connections: Arc<Connections>,
    _stop: oneshot::Sender<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StandInCampaign {
    /// Starts on `127.0.0.1` over plain HTTP. With `tokens`, Bearer tokens are checked.
    pub async fn start(tokens: Option<TokenCheck>) -> io::Result<StandInCampaign> {
        StandInCampaign::start_with(tokens, None).await
    }

    /// Starts on `127.0.0.1` over TLS.
    pub async fn start_tls(
        tokens: Option<TokenCheck>,
        tls: TlsAcceptor,
    ) -> io::Result<StandInCampaign> {
        StandInCampaign::start_with(tokens, Some(tls)).await
    }

    async fn start_with(
        tokens: Option<TokenCheck>,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<StandInCampaign> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(State {
            tokens,
            requests: Mutex::default(),
            delay: Mutex::new(Duration::ZERO),
            refusal: Mutex::new(Refusal::Fault350114),
            refused: std::sync::atomic::AtomicUsize::new(0),
            fault: Mutex::new(None),
            stall: Mutex::new(false),
        });
        let connections = Arc::new(Connections::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let handler_state = state.clone();
        let tls = tls.map(|acceptor| tokio::sync::watch::channel(acceptor).1);
        tokio::spawn(server::serve(
            listener,
            tls,
            connections.clone(),
            Limits::default(),
            move |_, request| answer(handler_state.clone(), request),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(StandInCampaign {
            addr,
            scheme,
            state,
            connections,
            _stop: stop,
        })
    }

    /// The value of `upstream.url`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.accepted()
    }

    /// Time taken before each answer from now on.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// Calls refused so far because of their Bearer token.
    pub fn refused(&self) -> usize {
        self.state.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How tokens IMS does not vouch for are refused from now on.
    pub fn set_refusal(&self, refusal: Refusal) {
        *lock(&self.state.refusal) = refusal;
    }

    /// Answers every accepted call with a fault with this detail (`None`: normally).
    pub fn set_fault(&self, detail: Option<&str>) {
        *lock(&self.state.fault) = detail.map(str::to_owned);
    }

    /// Stalls every answer after its first bytes (`false`: answers whole).
    pub fn set_stall(&self, stall: bool) {
        *lock(&self.state.stall) = stall;
    }
}

/// The stand-in's answer body: whole, or stalled after its first piece.
pub enum AnswerBody {
    /// This answer (or the default one), whole.
    Whole(Option<Bytes>),
    /// The head and this much of the body, then nothing more.
    Stalled(Option<Bytes>),
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        match &mut *self {
            AnswerBody::Whole(bytes) => {
                Poll::Ready(bytes.take().map(|b| Ok(http_body::Frame::data(b))))
            }
            AnswerBody::Stalled(first) => match first.take() {
                Some(bytes) => Poll::Ready(Some(Ok(http_body::Frame::data(bytes)))),
                None => Poll::Pending,
            },
        }
    }
}

/// The WSDLs of `nms:rtEvent` and `xtk:session`, as Campaign serves them (document/literal):
/// their `soap:address` names Campaign.
pub const RT_EVENT_WSDL: &str = include_str!("../../fixtures/rtEvent.wsdl");
/// The WSDL of `xtk:session`, as Campaign serves it.
pub const XTK_SESSION_WSDL: &str = include_str!("../../fixtures/xtkSession.wsdl");

/// `GET /nl/jsp/schemawsdl.jsp?schema=…`: the WSDL of `xtk:session`, or of `nms:rtEvent` for
/// any other schema, for a Bearer token IMS issued (as Campaign after the cut-over), its
/// address this stand-in's.
fn wsdl(state: &State, recorded: &Recorded) -> Response<AnswerBody> {
    let bearer = recorded
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = match (&state.tokens, bearer) {
        (None, _) => true,
        (Some(tokens), Some(token)) => tokens.is_valid(token),
        (Some(_), None) => false,
    };
    if !valid {
        return soap_answer(
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(b"unauthorized"),
        );
    }
    let host = recorded.header("host").unwrap_or("localhost");
    let schema = form_urlencoded::parse(recorded.uri.query().unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "schema")
        .map(|(_, value)| value.into_owned());
    let wsdl = match schema.as_deref() {
        Some("xtk:session") => XTK_SESSION_WSDL,
        _ => RT_EVENT_WSDL,
    };
    let body = wsdl.replace(
        "SOAP_ROUTER_URL",
        &format!("http://{host}{SOAP_ROUTER_PATH}"),
    );
    soap_answer(StatusCode::OK, Bytes::from(body))
}

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Response<AnswerBody> {
    let (parts, mut body) = request.into_parts();
    let mut kept = BytesMut::new();
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return soap_answer(StatusCode::BAD_REQUEST, Bytes::from_static(b"broken body"));
        };
        if let Ok(data) = frame.into_data() {
            hash.update(&data);
            length += data.len() as u64;
            let room = KEPT_BODY_BYTES.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    let recorded = Recorded {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: kept.freeze(),
        body_len: length,
        body_sha256: hash.finish().as_ref().to_vec(),
    };
    lock(&state.requests).push(recorded.clone());
    let delay = *lock(&state.delay);
    tokio::time::sleep(delay).await;

    if parts.uri.path() == WSDL_PATH {
        return wsdl(&state, &recorded);
    }
    if parts.uri.path() != SOAP_ROUTER_PATH {
        return soap_answer(StatusCode::NOT_FOUND, Bytes::from_static(b"not found"));
    }
    let envelope = Scanner::new().feed(&recorded.body, true).ok().flatten();
    let Some(envelope) = envelope else {
        let fault = Fault {
            code: FaultCode::Client,
            action: None,
            detail: "XSV-350002 Invalid SOAP request.",
        };
        return soap_answer(StatusCode::INTERNAL_SERVER_ERROR, fault.to_bytes());
    };
    let action = Action::of_request(&parts.headers, parts.uri.query(), &envelope.method);
    if envelope.is_logon() {
        let param = |i: usize| envelope.params.get(i).map_or("", |p| p.value.expose());
        if param(1).is_empty() || param(2).is_empty() {
            let fault = Fault {
                code: FaultCode::Client,
                action: Some(&action),
                detail: INVALID_LOGIN,
            };
            return soap_answer(StatusCode::INTERNAL_SERVER_ERROR, fault.to_bytes());
        }
        let issued = Issued {
            session: Secret::from(format!("___{:032X}", fastrand::u128(..))),
            security: Secret::from(format!("@{:032x}==", fastrand::u128(..))),
        };
        let body = logon_response(
            param(1),
            &issued,
            Duration::from_secs(86_400),
            SystemTime::now(),
        );
        return soap_answer(StatusCode::OK, body);
    }
    let bearer = recorded
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "));
    let session = envelope.credential().map(|p| !p.value.is_empty());
    let refusal = *lock(&state.refusal);
    let bad_token =
        matches!((bearer, &state.tokens), (Some(token), Some(tokens)) if !tokens.is_valid(token));
    if bad_token {
        state
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let detail = match (bearer, &state.tokens) {
        (Some(token), Some(tokens)) if !tokens.is_valid(token) => match refusal {
            Refusal::Unauthorized => {
                let mut response = soap_answer(
                    StatusCode::UNAUTHORIZED,
                    Bytes::from_static(b"Unauthorized"),
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return response;
            }
            Refusal::Fault350114 => {
                Some("XSV-350114 IMS token validation failed (HTTP 401).".to_owned())
            }
            Refusal::Fault350008 => Some(SESSION_INVALID.to_owned()),
        },
        (Some(_), _) => lock(&state.fault).clone(),
        (None, _) if session == Some(true) => lock(&state.fault).clone(),
        (None, _) => Some(SESSION_INVALID.to_owned()),
    };
    if let Some(detail) = detail {
        let fault = Fault {
            code: FaultCode::Client,
            action: Some(&action),
            detail: &detail,
        };
        return soap_answer(StatusCode::INTERNAL_SERVER_ERROR, fault.to_bytes());
    }
    let user = bearer.and_then(|token| state.tokens.as_ref()?.user_of(token));
    let body = method_response(&envelope.method.name, &action, user.as_deref());
    if *lock(&state.stall) {
        let mut response = Response::new(AnswerBody::Stalled(Some(body.slice(..body.len() / 2))));
        response.headers_mut().insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from(body.len()),
        );
        return response;
    }
    soap_answer(StatusCode::OK, body)
}

/// `<PushEventResponse xmlns='urn:nms:rtEvent'>`, as Campaign writes a method's answer;
/// `GetUserInfo` names the operator the call ran as (`user`: the technical account).
fn method_response(method: &str, action: &Action, user: Option<&str>) -> Bytes {
    let result = match method {
        "PushEvent" => "<plId xsi:type='xsd:long'>72057594037927936</plId>".to_owned(),
        "GetUserInfo" => format!(
            "<pUserInfo xsi:type='ns:Element'><userInfo login='{login}' loginId='1234' \
             locale='en_US' timezone='Europe/Paris' instanceLocale='en_US'/></pUserInfo>",
            login = quick_xml::escape::escape(user.unwrap_or("legacy-operator")),
        ),
        _ => String::new(),
    };
    Bytes::from(format!(
        "<?xml version='1.0'?>\n\
         <SOAP-ENV:Envelope xmlns:xsd='http://www.w3.org/2001/XMLSchema' \
         xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' \
         xmlns:ns='urn:{service}' \
         xmlns:SOAP-ENV='http://schemas.xmlsoap.org/soap/envelope/'>\n\
         <SOAP-ENV:Body>\n\
         <{method}Response xmlns='urn:{service}' \
         SOAP-ENV:encodingStyle='http://schemas.xmlsoap.org/soap/encoding/'>{result}</{method}Response>\n\
         </SOAP-ENV:Body>\n\
         </SOAP-ENV:Envelope>\n",
        service = quick_xml::escape::escape(action.service()),
    ))
}

fn soap_answer(status: StatusCode, body: Bytes) -> Response<AnswerBody> {
    let mut response = Response::new(AnswerBody::Whole(Some(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/xml;charset=utf-8"),
    );
    response
}
