//! A stand-in for Adobe IMS on loopback: `POST /ims/token/v3` (OAuth Server-to-Server) as IMS
//! answers it, with IMS's error shapes, and tokens shaped like IMS access tokens (a JWT whose
//! claims carry `client_id`, `scope`, `created_at` and `expires_in` in milliseconds). It counts
//! the token requests it gets, and the stand-in Campaign asks it which tokens are valid.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::proxy::body::ResponseBody;
use crate::server;

/// What the stand-in knows and counts.
struct State {
    /// client_id → client_secret.
    clients: Mutex<HashMap<String, String>>,
    /// Tokens issued, with their client and their expiry.
    issued: Mutex<Vec<Issued>>,
    token_requests: AtomicUsize,
    lifetime: Mutex<Duration>,
    /// Time taken before answering a token request.
    delay: Mutex<Duration>,
}

#[derive(Clone)]
struct Issued {
    token: String,
    expires: tokio::time::Instant,
}

/// Lets the stand-in Campaign check Bearer tokens the way Campaign asks IMS.
#[derive(Clone)]
pub struct TokenCheck(Arc<State>);

impl TokenCheck {
    /// True for a token this IMS issued and that has not expired.
    pub fn is_valid(&self, token: &str) -> bool {
        let now = tokio::time::Instant::now();
        lock(&self.0.issued)
            .iter()
            .any(|issued| issued.token == token && now < issued.expires)
    }
}

pub struct StandInIms {
    addr: SocketAddr,
    state: Arc<State>,
    _stop: oneshot::Sender<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl StandInIms {
    /// Starts on `127.0.0.1`, on a port of the system's choosing.
    pub async fn start() -> io::Result<StandInIms> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            clients: Mutex::default(),
            issued: Mutex::default(),
            token_requests: AtomicUsize::new(0),
            lifetime: Mutex::new(Duration::from_secs(24 * 3600)),
            delay: Mutex::new(Duration::ZERO),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let handler_state = state.clone();
        tokio::spawn(server::serve(
            listener,
            None,
            Arc::default(),
            move |_, request| answer(handler_state.clone(), request),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(StandInIms {
            addr,
            state,
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:PORT`, the value of `ims.host`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers an OAuth Server-to-Server credential.
    pub fn add_client(&self, client_id: &str, client_secret: &str) {
        lock(&self.state.clients).insert(client_id.to_owned(), client_secret.to_owned());
    }

    /// Token requests received, good or bad.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Lifetime of the tokens issued from now on (24 hours by default, as IMS).
    pub fn set_lifetime(&self, lifetime: Duration) {
        *lock(&self.state.lifetime) = lifetime;
    }

    /// Time taken before each answer from now on.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// Access tokens issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        lock(&self.state.issued)
            .iter()
            .map(|i| i.token.clone())
            .collect()
    }

    pub fn token_check(&self) -> TokenCheck {
        TokenCheck(self.state.clone())
    }
}

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Response<ResponseBody> {
    if request.method() != Method::POST || request.uri().path() != "/ims/token/v3" {
        return json_answer(StatusCode::NOT_FOUND, json!({"error": "not_found"}));
    }
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let delay = *lock(&state.delay);
    tokio::time::sleep(delay).await;
    let Ok(body) = Limited::new(request.into_body(), 64 * 1024).collect().await else {
        return json_answer(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body.to_bytes())
        .into_owned()
        .collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "client_credentials" {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"}),
        );
    }
    let client_id = field("client_id");
    let known_secret = lock(&state.clients).get(client_id).cloned();
    let Some(secret) = known_secret else {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_client", "error_description": "invalid client_id parameter"}),
        );
    };
    if field("client_secret") != secret {
        return json_answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "invalid client_secret parameter"}),
        );
    }
    let scope = field("scope");
    if scope.is_empty() {
        return json_answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_scope", "error_description": "scope is required"}),
        );
    }
    let lifetime = *lock(&state.lifetime);
    let token = access_token(client_id, scope, lifetime);
    lock(&state.issued).push(Issued {
        token: token.clone(),
        expires: tokio::time::Instant::now() + lifetime,
    });
    json_answer(
        StatusCode::OK,
        json!({"access_token": token, "token_type": "bearer", "expires_in": lifetime.as_secs()}),
    )
}

/// A token shaped like an IMS access token: a JWT whose claims say who it is for.
fn access_token(client_id: &str, scope: &str, lifetime: Duration) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let header = json!({"alg": "RS256", "x5u": "ims_na1-key-at-1.cer", "kid": "ims_na1-key-at-1", "itt": "at"});
    let claims = json!({
        "id": format!("{:016x}", fastrand::u64(..)),
        "type": "access_token",
        "client_id": client_id,
        "user_id": format!("{:024X}@techacct.adobe.com", fastrand::u128(..) >> 32),
        "as": "ims-na1",
        "created_at": now_ms.to_string(),
        "expires_in": lifetime.as_millis().to_string(),
        "scope": scope,
    });
    let signature: Vec<u8> = (0..256).map(|_| fastrand::u8(..)).collect();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn json_answer(status: StatusCode, value: serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json;charset=utf-8"),
    );
    response
}
