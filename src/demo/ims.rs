//! A stand-in for Adobe IMS on loopback: `POST /ims/token/v3` (OAuth Server-to-Server) and
//! `POST /ims/exchange/jwt` (Service Account: the JWT's RS256 signature is verified with the
//! credential's public key and every claim is checked) as IMS answers them, with IMS's error
//! shapes, and tokens shaped like IMS access tokens (a JWT whose claims carry `client_id`,
//! `scope`, `created_at` and `expires_in` in milliseconds). It counts the token requests it
//! gets, and the stand-in Campaign asks it which tokens are valid.

use std::collections::HashMap;
use std::io;
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

use crate::body::ResponseBody;
use crate::config::Limits;
use crate::server;

/// How the stand-in misbehaves, when told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImsFailure {
    /// Answers this HTTP status with an HTML page.
    Status(u16),
    /// A 200 whose body is not JSON.
    Garbage,
    /// A 200 with an empty body.
    EmptyOk,
    /// A good token, but the answer forgets `expires_in` (the token's claims still say it).
    NoExpiresIn,
    /// Never answers.
    Hang,
}

/// A Service Account (JWT) credential as IMS holds it.
struct JwtClient {
    secret: String,
    org_id: String,
    technical_account_id: String,
    /// DER `RSAPublicKey` of the credential's certificate.
    public_key: Vec<u8>,
    metascopes: Vec<String>,
}

/// What the stand-in knows and counts.
struct State {
    /// `http://127.0.0.1:PORT`: JWT audiences and metascopes are built on it.
    url: String,
    /// client_id → client_secret.
    clients: Mutex<HashMap<String, String>>,
    jwt_clients: Mutex<HashMap<String, JwtClient>>,
    /// Tokens issued, with their client and their expiry.
    issued: Mutex<Vec<Issued>>,
    token_requests: AtomicUsize,
    /// Path of every token request, in order.
    paths: Mutex<Vec<String>>,
    lifetime: Mutex<Duration>,
    /// Time taken before answering a token request.
    delay: Mutex<Duration>,
    failure: Mutex<Option<ImsFailure>>,
}

#[derive(Clone)]
struct Issued {
    token: String,
    /// The technical account the token stands for.
    user_id: String,
    expires: tokio::time::Instant,
}

/// Lets the stand-in Campaign check Bearer tokens the way Campaign asks IMS.
#[derive(Clone)]
pub struct TokenCheck(Arc<State>);

impl TokenCheck {
    /// True for a token this IMS issued and that has not expired.
    pub fn is_valid(&self, token: &str) -> bool {
        self.user_of(token).is_some()
    }

    /// The technical account a valid token stands for.
    pub fn user_of(&self, token: &str) -> Option<String> {
        let now = tokio::time::Instant::now();
        lock(&self.0.issued)
            .iter()
            .find(|issued| issued.token == token && now < issued.expires)
            .map(|issued| issued.user_id.clone())
    }
}

/// A stand-in IMS on `127.0.0.1`: it issues tokens to the clients it knows.
pub struct StandInIms {
    state: Arc<State>,
    _stop: oneshot::Sender<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StandInIms {
    /// Starts on `127.0.0.1`, on a port of the system's choosing.
    pub async fn start() -> io::Result<StandInIms> {
        StandInIms::start_with(None).await
    }

    /// [`StandInIms::start`] over TLS (as behind a TLS-inspecting proxy with a private CA).
    pub async fn start_tls(tls: tokio_rustls::TlsAcceptor) -> io::Result<StandInIms> {
        StandInIms::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> io::Result<StandInIms> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(State {
            url: format!("{scheme}://{addr}"),
            clients: Mutex::default(),
            jwt_clients: Mutex::default(),
            issued: Mutex::default(),
            token_requests: AtomicUsize::new(0),
            paths: Mutex::default(),
            lifetime: Mutex::new(Duration::from_secs(24 * 3600)),
            delay: Mutex::new(Duration::ZERO),
            failure: Mutex::new(None),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let handler_state = state.clone();
        let tls = tls.map(|acceptor| tokio::sync::watch::channel(acceptor).1);
        tokio::spawn(server::serve(
            listener,
            tls,
            Arc::default(),
            Limits::default(),
            move |_, request| answer(handler_state.clone(), request),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(StandInIms { state, _stop: stop })
    }

    /// `http://127.0.0.1:PORT`, the value of `ims.host`.
    pub fn url(&self) -> String {
        self.state.url.clone()
    }

    /// Registers an OAuth Server-to-Server credential.
    pub fn add_client(&self, client_id: &str, client_secret: &str) {
        lock(&self.state.clients).insert(client_id.to_owned(), client_secret.to_owned());
    }

    /// Registers a Service Account (JWT) credential: its public key (DER `RSAPublicKey`) and
    /// the metascopes its product profiles grant.
    pub fn add_jwt_client(
        &self,
        client_id: &str,
        client_secret: &str,
        org_id: &str,
        technical_account_id: &str,
        public_key: Vec<u8>,
        metascopes: &[&str],
    ) {
        lock(&self.state.jwt_clients).insert(
            client_id.to_owned(),
            JwtClient {
                secret: client_secret.to_owned(),
                org_id: org_id.to_owned(),
                technical_account_id: technical_account_id.to_owned(),
                public_key,
                metascopes: metascopes.iter().map(|m| (*m).to_owned()).collect(),
            },
        );
    }

    /// Token requests received, good or bad.
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// The path of every token request received, in order.
    pub fn paths(&self) -> Vec<String> {
        lock(&self.state.paths).clone()
    }

    /// Lifetime of the tokens issued from now on (24 hours by default, as IMS).
    pub fn set_lifetime(&self, lifetime: Duration) {
        *lock(&self.state.lifetime) = lifetime;
    }

    /// Time taken before each answer from now on.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// Misbehaves from now on (`None`: behaves again).
    pub fn set_failure(&self, failure: Option<ImsFailure>) {
        *lock(&self.state.failure) = failure;
    }

    /// Revokes every token issued so far: Campaign refuses them from now on.
    pub fn revoke_all(&self) {
        let now = tokio::time::Instant::now();
        for issued in lock(&self.state.issued).iter_mut() {
            issued.expires = issued.expires.min(now);
        }
    }

    /// Access tokens issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        lock(&self.state.issued)
            .iter()
            .map(|i| i.token.clone())
            .collect()
    }

    /// What a stand-in Campaign needs to check this IMS's tokens.
    pub fn token_check(&self) -> TokenCheck {
        TokenCheck(self.state.clone())
    }
}

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Response<ResponseBody> {
    // Endpoints may sit under a prefix (`ims.token_url` and `ims.exchange_url` can say so).
    let path = request.uri().path().to_owned();
    let oauth = path.ends_with("/ims/token/v3");
    if request.method() != Method::POST || !(oauth || path.ends_with("/ims/exchange/jwt")) {
        return json_answer(StatusCode::NOT_FOUND, json!({"error": "not_found"}));
    }
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    lock(&state.paths).push(path);
    let delay = *lock(&state.delay);
    tokio::time::sleep(delay).await;
    let failure = *lock(&state.failure);
    match failure {
        Some(ImsFailure::Status(status)) => {
            let mut response = Response::new(ResponseBody::full(Bytes::from_static(
                b"<html><body>Service Unavailable</body></html>",
            )));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return response;
        }
        Some(ImsFailure::Garbage) => {
            return Response::new(ResponseBody::full(Bytes::from_static(b"<html>oops")));
        }
        Some(ImsFailure::EmptyOk) => return Response::new(ResponseBody::full(Bytes::new())),
        Some(ImsFailure::Hang) => std::future::pending::<()>().await,
        Some(ImsFailure::NoExpiresIn) | None => {}
    }
    let Ok(body) = Limited::new(request.into_body(), 64 * 1024).collect().await else {
        return json_answer(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&body.to_bytes())
        .into_owned()
        .collect();
    let granted = if oauth {
        client_credentials(&state, &form)
    } else {
        jwt_exchange(&state, &form)
    };
    let (client_id, user_id, scope) = match granted {
        Ok(granted) => granted,
        Err((status, error, description)) => {
            return json_answer(
                status,
                json!({"error": error, "error_description": description}),
            );
        }
    };
    let lifetime = *lock(&state.lifetime);
    let token = access_token(&client_id, &user_id, &scope, lifetime);
    lock(&state.issued).push(Issued {
        token: token.clone(),
        user_id,
        expires: tokio::time::Instant::now() + lifetime,
    });
    // The two endpoints count `expires_in` in different units, as IMS does.
    let expires_in = if oauth {
        u128::from(lifetime.as_secs())
    } else {
        lifetime.as_millis()
    };
    if failure == Some(ImsFailure::NoExpiresIn) {
        return json_answer(
            StatusCode::OK,
            json!({"access_token": token, "token_type": "bearer"}),
        );
    }
    json_answer(
        StatusCode::OK,
        json!({"access_token": token, "token_type": "bearer", "expires_in": expires_in}),
    )
}

/// A refusal: HTTP status, IMS `error`, `error_description`.
type Refusal = (StatusCode, &'static str, &'static str);

/// `/ims/token/v3`: client id, user id and scope of the token to issue.
fn client_credentials(
    state: &State,
    form: &HashMap<String, String>,
) -> Result<(String, String, String), Refusal> {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "client_credentials" {
        return Err((
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        ));
    }
    let client_id = field("client_id");
    let Some(secret) = lock(&state.clients).get(client_id).cloned() else {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "invalid client_id parameter",
        ));
    };
    if field("client_secret") != secret {
        return Err((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "invalid client_secret parameter",
        ));
    }
    let scope = field("scope");
    if scope.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope is required",
        ));
    }
    let user_id = format!("{:024X}@techacct.adobe.com", fastrand::u128(..) >> 32);
    Ok((client_id.to_owned(), user_id, scope.to_owned()))
}

/// `/ims/exchange/jwt`: checks the client, the JWT's signature and every claim.
fn jwt_exchange(
    state: &State,
    form: &HashMap<String, String>,
) -> Result<(String, String, String), Refusal> {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let client_id = field("client_id");
    let clients = lock(&state.jwt_clients);
    let Some(client) = clients.get(client_id) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "invalid client_id parameter",
        ));
    };
    if field("client_secret") != client.secret {
        return Err((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "invalid client_secret parameter",
        ));
    }
    let bad_token = |why| (StatusCode::BAD_REQUEST, "invalid_token", why);
    let parts: Vec<&str> = field("jwt_token").split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(bad_token("jwt_token is not a JWT"));
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
    let header: serde_json::Value = decode(header)
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(bad_token("JWT header is not JSON"))?;
    if header["alg"] != "RS256" {
        return Err(bad_token("JWT must be signed with RS256"));
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let public_key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &client.public_key,
    );
    let signature = decode(signature).ok_or(bad_token("JWT signature is not base64url"))?;
    if public_key.verify(signed.as_bytes(), &signature).is_err() {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_signature",
            "Could not match JWT signature to any of the bindings",
        ));
    }
    let claims: serde_json::Map<String, serde_json::Value> = decode(claims)
        .and_then(|c| serde_json::from_slice(&c).ok())
        .ok_or(bad_token("JWT claims are not a JSON object"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match claims.get("exp").and_then(serde_json::Value::as_u64) {
        Some(exp) if exp > now && exp <= now + 24 * 3600 => {}
        Some(exp) if exp <= now => return Err(bad_token("JWT expired")),
        _ => return Err(bad_token("JWT exp is missing or too far ahead")),
    }
    if claims.get("iss").and_then(|v| v.as_str()) != Some(client.org_id.as_str()) {
        return Err(bad_token(
            "JWT iss is not the organization of the credential",
        ));
    }
    if claims.get("sub").and_then(|v| v.as_str()) != Some(client.technical_account_id.as_str()) {
        return Err(bad_token(
            "JWT sub is not the technical account of the credential",
        ));
    }
    let audience = format!("{}/c/{client_id}", state.url);
    if claims.get("aud").and_then(|v| v.as_str()) != Some(audience.as_str()) {
        return Err(bad_token("JWT aud is not {ims}/c/{client_id}"));
    }
    let prefix = format!("{}/s/", state.url);
    let metascopes: Vec<&str> = claims
        .iter()
        .filter(|(name, value)| {
            name.starts_with(&prefix) && **value == serde_json::Value::Bool(true)
        })
        .map(|(name, _)| &name[prefix.len()..])
        .collect();
    if metascopes.is_empty()
        || metascopes
            .iter()
            .any(|m| !client.metascopes.iter().any(|c| c == m))
    {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid metascope.",
        ));
    }
    Ok((
        client_id.to_owned(),
        client.technical_account_id.clone(),
        metascopes.join(","),
    ))
}

/// A token shaped like an IMS access token: a JWT whose claims say who it is for.
fn access_token(client_id: &str, user_id: &str, scope: &str, lifetime: Duration) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let header = json!({"alg": "RS256", "x5u": "ims_na1-key-at-1.cer", "kid": "ims_na1-key-at-1", "itt": "at"});
    let claims = json!({
        "id": format!("{:016x}", fastrand::u64(..)),
        "type": "access_token",
        "client_id": client_id,
        "user_id": user_id,
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
