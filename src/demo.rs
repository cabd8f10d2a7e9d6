//! `imsbridge demo`: the proxy on loopback with a stand-in IMS and a stand-in Campaign, and the
//! seed-002 call (Adobe's before/after example) going through it, shown as the caller sent it and
//! as Campaign received it. `imsbridge demo --stand-ins` starts the two stand-ins alone, with a
//! config for them, to try `check` and `run` by hand.
//!
//! The stand-ins (`demo/ims.rs`, `demo/campaign.rs`) are the ones the integration tests use:
//! the project has one fake IMS and one fake Campaign.

pub mod campaign;
pub mod ims;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub use campaign::{RT_EVENT_WSDL, Recorded, Refusal, StandInCampaign};
pub use ims::{ImsFailure, StandInIms, TokenCheck};

use crate::config::Config;
use crate::soap::SOAP_ROUTER_PATH;

/// The `PushEvent` call of Adobe's migration guide ("seed 002", `docs/architecture.md`)
/// before the migration, with `SESSION_TOKEN` in its token.
pub const SEED_002_BEFORE: &str = include_str!("../fixtures/seed-002-before.xml");
/// The same call after the migration: the token element is empty.
pub const SEED_002_AFTER: &str = include_str!("../fixtures/seed-002-after.xml");

const DEMO_CLIENT_ID: &str = "imsbridge-demo";
const DEMO_CLIENT_SECRET: &str = "demo-client-secret";
const DEMO_LOGIN: &str = "mc";
const DEMO_PASSWORD: &str = "demo-password";

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A socket or a file.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The config it wrote does not load.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The proxy's answer was not what the demo expected.
    #[error("{0}")]
    Http(String),
}

/// Runs the demo, writing what it shows to `out`. With `once`, stops after showing the call;
/// otherwise serves until Ctrl-C.
pub async fn run(
    listen: SocketAddr,
    once: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), DemoError> {
    let (ims, campaign) = start_stand_ins().await?;

    let proxy = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => {
            TcpListener::bind((listen.ip(), 0)).await?
        }
        Err(error) => return Err(error.into()),
    };
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = proxy.local_addr()?;
    let admin_addr = admin.local_addr()?;

    let config_text = demo_config(
        &ims.url(),
        &campaign.url(),
        "",
        "{ env = \"DEMO_CLIENT_SECRET\" }",
    );
    let env = HashMap::from([(
        "DEMO_CLIENT_SECRET".to_owned(),
        DEMO_CLIENT_SECRET.to_owned(),
    )]);
    let config = Config::parse(&config_text, Path::new("."), &env)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(crate::run(
        crate::Listeners {
            proxy: proxy.into(),
            admin: Some(admin),
        },
        config,
        async move {
            let _ = stopped.await;
        },
    ));

    writeln!(
        out,
        "imsbridge demo: the proxy, a stand-in IMS and a stand-in Campaign on loopback\n"
    )?;
    writeln!(
        out,
        "  proxy              http://{proxy_addr}{SOAP_ROUTER_PATH}"
    )?;
    writeln!(out, "  admin              http://{admin_addr}/readyz")?;
    writeln!(out, "  stand-in IMS       {}", ims.url())?;
    writeln!(out, "  stand-in Campaign  {}\n", campaign.url())?;
    writeln!(
        out,
        "The config it runs with (the client secret comes from the environment):\n"
    )?;
    writeln!(out, "{}", indent(&config_text))?;

    let body = SEED_002_BEFORE.replace("SESSION_TOKEN", &format!("{DEMO_LOGIN}/{DEMO_PASSWORD}"));
    let request = seed_request(&body);
    writeln!(
        out,
        "── 1. Adobe's example call (the migration guide's \"before\"), as the legacy caller sends it ──\n"
    )?;
    writeln!(out, "{}", indent(&show_request(&request, &body)))?;
    let (status, answer) = exchange(proxy_addr, request).await?;
    writeln!(
        out,
        "── 2. As Campaign received it (credential gone, Bearer token added) ──\n"
    )?;
    match campaign.requests().last() {
        Some(seen) => writeln!(out, "{}", indent(&show_recorded(seen)))?,
        None => writeln!(out, "  (Campaign received nothing)\n")?,
    }
    writeln!(out, "── 3. The answer the caller got: HTTP {status} ──\n")?;
    writeln!(out, "{}", indent(&answer))?;

    let wrong = SEED_002_BEFORE.replace("SESSION_TOKEN", &format!("{DEMO_LOGIN}/not-the-password"));
    let before = campaign.requests().len();
    let (status, answer) = exchange(proxy_addr, seed_request(&wrong)).await?;
    writeln!(
        out,
        "── 4. The same call with a wrong password: HTTP {status}, and Campaign received {} request(s) ──\n",
        campaign.requests().len() - before
    )?;
    writeln!(out, "{}", indent(&answer))?;

    writeln!(out, "── Try it ──\n")?;
    writeln!(
        out,
        "  curl -sS http://{proxy_addr}{SOAP_ROUTER_PATH} \\\n    -H 'Content-Type: application/soap+xml;charset=utf-8' \\\n    -H 'SOAPAction: \"nms:rtEvent#PushEvent\"' \\\n    --data-binary @- <<'EOF'\n{}EOF\n",
        SEED_002_BEFORE.replace("SESSION_TOKEN", &format!("{DEMO_LOGIN}/{DEMO_PASSWORD}"))
    )?;
    writeln!(out, "  curl -sS http://{admin_addr}/readyz\n")?;
    out.flush()?;

    if !once {
        writeln!(out, "Serving until Ctrl-C.")?;
        out.flush()?;
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

/// Starts the stand-in IMS and Campaign alone and says how to try imsbridge against them: their
/// URLs, a config (written to `write_config` too, when given) whose proxy listens on `listen`,
/// and the commands. Serves until Ctrl-C, or stops at once with `once`.
pub async fn stand_ins(
    listen: SocketAddr,
    write_config: Option<&Path>,
    once: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), DemoError> {
    let (ims, campaign) = start_stand_ins().await?;
    // Beside the proxy: a fixed port to type, or any free one when the proxy takes any.
    let admin = match listen.port() {
        0 => SocketAddr::new(listen.ip(), 0),
        _ => SocketAddr::from(([127, 0, 0, 1], 9090)),
    };
    let server = format!("[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n\n");
    let config = demo_config(
        &ims.url(),
        &campaign.url(),
        &server,
        &format!(
            "\"{DEMO_CLIENT_SECRET}\"   # the stand-in's; a real one goes in {{ env = \"…\" }} or {{ file = \"…\" }}"
        ),
    );
    let file = match write_config {
        Some(path) => {
            std::fs::write(path, &config)?;
            path.display().to_string()
        }
        None => "imsbridge-try.toml".to_owned(),
    };
    writeln!(
        out,
        "imsbridge stand-ins: a stand-in IMS and a stand-in Campaign on loopback\n"
    )?;
    writeln!(
        out,
        "  stand-in IMS       {}   (OAuth client `{DEMO_CLIENT_ID}`)",
        ims.url()
    )?;
    writeln!(
        out,
        "  stand-in Campaign  {}   (accepts the stand-in IMS's tokens only)\n",
        campaign.url()
    )?;
    match write_config {
        Some(_) => writeln!(out, "The config, written to {file}:\n")?,
        None => writeln!(out, "A config for them; save it as {file}:\n")?,
    }
    writeln!(out, "{}", indent(&config))?;
    writeln!(out, "In another terminal, check it, then run the proxy:\n")?;
    writeln!(out, "  imsbridge check --config {file} --probe")?;
    writeln!(out, "  imsbridge run --config {file}\n")?;
    writeln!(
        out,
        "and call it as the legacy caller `{DEMO_LOGIN}` (password `{DEMO_PASSWORD}`) would:\n"
    )?;
    writeln!(
        out,
        "  curl -sS http://{listen}{SOAP_ROUTER_PATH} \\\n    -H 'Content-Type: text/xml; charset=utf-8' \\\n    -H 'SOAPAction: \"nms:rtEvent#PushEvent\"' \\\n    --data-binary @- <<'EOF'\n{}EOF\n",
        SEED_002_BEFORE.replace("SESSION_TOKEN", &format!("{DEMO_LOGIN}/{DEMO_PASSWORD}"))
    )?;
    if !once {
        writeln!(out, "Serving until Ctrl-C.")?;
        out.flush()?;
        let _ = tokio::signal::ctrl_c().await;
    }
    out.flush()?;
    Ok(())
}

/// The stand-in IMS, knowing the demo's client, and a stand-in Campaign that accepts only the
/// tokens that IMS issued.
async fn start_stand_ins() -> io::Result<(StandInIms, StandInCampaign)> {
    let ims = StandInIms::start().await?;
    ims.add_client(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET);
    let campaign = StandInCampaign::start(Some(ims.token_check())).await?;
    Ok((ims, campaign))
}

/// The demo's config: `server` (a `[server]` table, or nothing), the stand-ins, one `ims`
/// caller; `secret` is the value of the profile's `client_secret`.
fn demo_config(ims_url: &str, campaign_url: &str, server: &str, secret: &str) -> String {
    format!(
        r#"unknown_callers = "reject"

{server}[upstream]
url = "{campaign_url}"
timeout = "10s"

[ims]
host = "{ims_url}"

[profiles.messagecenter]
type = "oauth"
client_id = "{DEMO_CLIENT_ID}"
client_secret = {secret}
scopes = ["openid", "AdobeID", "additional_info.projectedProductContext"]

[[callers]]
name = "crm-events"
login = "{DEMO_LOGIN}"
password = "{hash}"   # imsbridge hash-password <<< '{DEMO_PASSWORD}'
profile = "messagecenter"
mode = "ims"
"#,
        hash = crate::callers::hash_password(DEMO_PASSWORD),
    )
}

fn seed_request(body: &str) -> Request<Full<Bytes>> {
    Request::post(SOAP_ROUTER_PATH)
        .header("host", "localhost:8080")
        .header("content-type", "application/soap+xml;charset=utf-8")
        .header("soapaction", "\"nms:rtEvent#PushEvent\"")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid request")
}

/// Sends one request over HTTP/1.1 on a connection of its own and reads the whole answer: the
/// client of the demo, and of the integration tests.
pub async fn send<B>(addr: SocketAddr, request: Request<B>) -> Result<Response<Bytes>, DemoError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let http = |e: hyper::Error| DemoError::Http(e.to_string());
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(connection);
    let (parts, body) = sender
        .send_request(request)
        .await
        .map_err(http)?
        .into_parts();
    let body = body.collect().await.map_err(http)?.to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// The status of an answer and its body as text.
async fn exchange(
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> Result<(u16, String), DemoError> {
    let response = send(addr, request).await?;
    Ok((
        response.status().as_u16(),
        String::from_utf8_lossy(response.body()).into_owned(),
    ))
}

fn show_request(request: &Request<Full<Bytes>>, body: &str) -> String {
    let mut text = format!("{} {} HTTP/1.1\n", request.method(), request.uri());
    for (name, value) in request.headers() {
        let _ = writeln!(text, "{}: {}", name, value.to_str().unwrap_or("?"));
    }
    text.push('\n');
    text.push_str(body);
    text
}

/// A recorded request, with the Bearer token shortened: it is a credential, even a stand-in's.
fn show_recorded(seen: &Recorded) -> String {
    let mut text = format!("{} {} HTTP/1.1\n", seen.method, seen.uri);
    for (name, value) in &seen.headers {
        let value = value.to_str().unwrap_or("?");
        let shown = match value.strip_prefix("Bearer ") {
            Some(token) => format!(
                "Bearer {}… (access token of the stand-in IMS, {} characters)",
                &token[..token.len().min(10)],
                token.len()
            ),
            None => value.to_owned(),
        };
        let _ = writeln!(text, "{name}: {shown}");
    }
    text.push('\n');
    text.push_str(&seen.text());
    text
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}
