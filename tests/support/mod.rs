//! What the integration tests share: the stand-ins of `imsbridge::demo` wired to a proxy
//! started in-process on `127.0.0.1:0`, and small HTTP clients.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::{Body, Frame};
use imsbridge::config::Config;
use imsbridge::demo::{StandInCampaign, StandInIms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub(crate) const CLIENT_ID: &str = "mc-technical-account";
pub(crate) const CLIENT_SECRET: &str = "client-secret-7f3a9c";
pub(crate) const LOGIN: &str = "mc";
pub(crate) const PASSWORD: &str = "mc-password-41d2";
pub(crate) const LEGACY_LOGIN: &str = "crm";
pub(crate) const SOAP_PATH: &str = "/nl/jsp/soaprouter.jsp";

/// An argon2id hash with a tiny cost, so tests stay fast (the cost is in the PHC string).
pub(crate) fn cheap_hash(password: &str) -> String {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
    let params = Params::new(64, 1, 1, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string()
}

/// The config the tests run with: one `ims` caller (`mc`) and one `legacy` caller (`crm`) on
/// the `messagecenter` profile. `extra` is appended (more tables, or keys for the last caller).
pub(crate) fn config_text(ims: &str, campaign: &str, top: &str, extra: &str) -> String {
    format!(
        r#"{top}
[server]
admin_listen = "127.0.0.1:0"

[upstream]
url = "{campaign}"
timeout = "5s"
connect_timeout = "2s"

[ims]
host = "{ims}"
timeout = "5s"

[profiles.messagecenter]
type = "oauth"
client_id = "{CLIENT_ID}"
client_secret = {{ env = "MC_CLIENT_SECRET" }}
scopes = ["openid", "AdobeID", "additional_info.projectedProductContext"]

[[callers]]
name = "old-crm"
login = "{LEGACY_LOGIN}"
password = "{legacy_hash}"
profile = "messagecenter"
mode = "legacy"

[[callers]]
name = "crm-events"
login = "{LOGIN}"
password = "{hash}"
profile = "messagecenter"
{extra}
"#,
        hash = cheap_hash(PASSWORD),
        legacy_hash = cheap_hash("legacy-password"),
    )
}

pub(crate) fn env() -> HashMap<String, String> {
    HashMap::from([("MC_CLIENT_SECRET".to_owned(), CLIENT_SECRET.to_owned())])
}

/// A proxy running in-process.
pub(crate) struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(config_text: &str) -> Proxy {
        let config = Config::parse(config_text, Path::new("."), &env()).expect("valid config");
        Proxy::start_config(config).await
    }

    pub(crate) async fn start_config(config: Config) -> Proxy {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Proxy::start_on(proxy, config).await
    }

    /// [`Proxy::start_config`] on a listener bound already (to know its address before).
    pub(crate) async fn start_on(proxy: TcpListener, config: Config) -> Proxy {
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            imsbridge::run(
                imsbridge::Listeners {
                    proxy: proxy.into(),
                    admin: Some(admin),
                },
                config,
                async move {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("proxy runs");
        });
        Proxy {
            addr,
            admin: admin_addr,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// IMS, Campaign and the proxy between them.
pub(crate) struct Stack {
    pub ims: StandInIms,
    pub campaign: StandInCampaign,
    pub proxy: Proxy,
}

/// A stand-in IMS that knows the default client, and a stand-in Campaign that accepts only
/// tokens that IMS issued.
pub(crate) async fn stand_ins() -> (StandInIms, StandInCampaign) {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    (ims, campaign)
}

impl Stack {
    /// The default stack; `top` goes before the tables, `extra` after the `mc` caller.
    pub(crate) async fn start(top: &str, extra: &str) -> Stack {
        Stack::start_with(top, extra, |_| {}).await
    }

    /// [`Stack::start`], with `edit` applied to the parsed config (settings the file has no key
    /// for, such as the canary seed).
    pub(crate) async fn start_with(
        top: &str,
        extra: &str,
        edit: impl FnOnce(&mut Config),
    ) -> Stack {
        let (ims, campaign) = stand_ins().await;
        let text = config_text(&ims.url(), &campaign.url(), top, extra);
        let mut config = Config::parse(&text, Path::new("."), &env()).expect("valid config");
        edit(&mut config);
        let proxy = Proxy::start_config(config).await;
        Stack {
            ims,
            campaign,
            proxy,
        }
    }

    /// [`Stack::start_with`], the proxy's address its `server.public_url`: the WSDLs it
    /// relays name it.
    pub(crate) async fn start_public(
        top: &str,
        extra: &str,
        edit: impl FnOnce(&mut Config),
    ) -> Stack {
        let (ims, campaign) = stand_ins().await;
        let text = config_text(&ims.url(), &campaign.url(), top, extra);
        let mut config = Config::parse(&text, Path::new("."), &env()).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        config.server.public_url = Some(format!("http://{}", listener.local_addr().unwrap()));
        edit(&mut config);
        let proxy = Proxy::start_on(listener, config).await;
        Stack {
            ims,
            campaign,
            proxy,
        }
    }

    pub(crate) async fn default() -> Stack {
        Stack::start("", "").await
    }

    pub(crate) fn url(&self) -> SocketAddr {
        self.proxy.addr
    }
}

/// An answer, read to the end.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// A Campaign-shaped fault with this code and detail.
    pub(crate) fn assert_fault(&self, status: u16, code: &str, detail: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(self.body.contains("<SOAP-ENV:Fault>"), "{}", self.body);
        assert!(
            self.body
                .contains(&format!("<faultcode>SOAP-ENV:{code}</faultcode>")),
            "{}",
            self.body
        );
        assert!(
            self.body.contains(detail),
            "`{detail}` not in {}",
            self.body
        );
    }
}

/// A body sent in the given chunks, without a length: hyper sends it chunked.
pub(crate) struct Chunks(pub VecDeque<Bytes>);

impl Chunks {
    pub(crate) fn new(chunks: impl IntoIterator<Item = Bytes>) -> Chunks {
        Chunks(chunks.into_iter().collect())
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A SOAP POST of `body` in pieces of `piece` bytes, without a length: sent chunked.
pub(crate) fn chunked_request(body: &Bytes, piece: usize) -> Request<Chunks> {
    let chunks = (0..body.len())
        .step_by(piece)
        .map(|i| body.slice(i..(i + piece).min(body.len())));
    Request::post(SOAP_PATH)
        .header("host", "x")
        .header("content-type", "text/xml; charset=utf-8")
        .body(Chunks::new(chunks))
        .unwrap()
}

/// Sends one request over HTTP/1.1 on a new connection.
pub(crate) async fn send<B>(addr: SocketAddr, request: Request<B>) -> Answer
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let response = imsbridge::demo::send(addr, request).await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: String::from_utf8_lossy(response.body()).into_owned(),
    }
}

/// A SOAP POST with a Content-Length.
pub(crate) fn soap_request(
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Request<http_body_util::Full<Bytes>> {
    let body = body.into();
    let mut builder = Request::post(SOAP_PATH)
        .header("host", "campaign.example.com")
        .header("content-length", body.len());
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        builder = builder.header("content-type", "text/xml; charset=utf-8");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(http_body_util::Full::new(body)).unwrap()
}

pub(crate) async fn post(
    addr: SocketAddr,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Answer {
    send(addr, soap_request(body, headers)).await
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Answer {
    let request = Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    send(addr, request).await
}

/// Writes raw bytes, a write per piece, then reads the whole answer of a `Connection: close`
/// request. (Where the pieces are chunks of a chunked body, hyper hands each chunk over as a
/// frame of its own however the reads fall.)
pub(crate) async fn raw_exchange(addr: SocketAddr, pieces: &[&[u8]]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for piece in pieces {
        stream.write_all(piece).await.unwrap();
        stream.flush().await.unwrap();
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends a SOAP call from the address `local`, on a connection of its own; the status code.
pub(crate) async fn post_from(local: &str, proxy: std::net::SocketAddr, body: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(proxy).await.unwrap();
    exchange_on(stream, body).await
}

/// Sends a SOAP call with `Connection: close` on `stream`; the status code.
pub(crate) async fn exchange_on(mut stream: tokio::net::TcpStream, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "POST {SOAP_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer[9..12].parse().unwrap()
}

/// The seed-002 call with `credential` in its session token.
pub(crate) fn seed_002(credential: &str) -> String {
    imsbridge::demo::SEED_002_BEFORE.replace("SESSION_TOKEN", credential)
}

pub(crate) fn credential() -> String {
    format!("{LOGIN}/{PASSWORD}")
}

/// A `PushEvents` batch of about `size` bytes, the token first.
pub(crate) fn push_events(credential: &str, size: usize) -> Vec<u8> {
    let head = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:nms:rtEvent"><soapenv:Header/><soapenv:Body><urn:PushEvents><urn:sessiontoken>{credential}</urn:sessiontoken><urn:domEventCollection><eventCollection>"#
    );
    let tail = "</eventCollection></urn:domEventCollection></urn:PushEvents></soapenv:Body></soapenv:Envelope>";
    let mut body = Vec::with_capacity(size + 200);
    body.extend_from_slice(head.as_bytes());
    let mut i = 0u64;
    while body.len() + tail.len() < size {
        body.extend_from_slice(
            format!(r#"<rtEvent type="order" email="name{i:07}@domain.com"><ctx><order id="{i:07}" amount="{:05}.00"/></ctx></rtEvent>"#, i % 100_000)
                .as_bytes(),
        );
        i += 1;
    }
    body.extend_from_slice(tail.as_bytes());
    body
}

pub(crate) fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

pub(crate) const JWT_CLIENT_ID: &str = "0123456789abcdef0123456789abcdef";
pub(crate) const JWT_CLIENT_SECRET: &str = "p8e-jwt-client-secret-2c4e";
pub(crate) const ORG_ID: &str = "1234ABCD5678EFGH@AdobeOrg";
pub(crate) const TECHNICAL_ACCOUNT_ID: &str = "90ABCDEF12345678@techacct.adobe.com";
pub(crate) const TEST_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/keys/test-service-account.key"
);
pub(crate) const OTHER_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/keys/another-service-account.key"
);

/// Registers the test service account at the stand-in IMS, with the public key of `TEST_KEY`.
pub(crate) fn add_jwt_client(ims: &StandInIms, metascopes: &[&str]) {
    let key = imsbridge::SigningKey::read(&std::fs::read(TEST_KEY).unwrap()).unwrap();
    ims.add_jwt_client(
        JWT_CLIENT_ID,
        JWT_CLIENT_SECRET,
        ORG_ID,
        TECHNICAL_ACCOUNT_ID,
        key.public_key_der(),
        metascopes,
    );
}

/// A `jwt` profile named `messagecenter`, in place of the oauth one of `config_text`.
pub(crate) fn jwt_profile(private_key: &str, metascopes: &str) -> String {
    format!(
        "type = \"jwt\"\nclient_id = \"{JWT_CLIENT_ID}\"\nclient_secret = \"{JWT_CLIENT_SECRET}\"\norg_id = \"{ORG_ID}\"\ntechnical_account_id = \"{TECHNICAL_ACCOUNT_ID}\"\nprivate_key = {private_key}\nmetascopes = {metascopes}"
    )
}

/// `config_text` with its `messagecenter` profile replaced by `profile`.
pub(crate) fn with_profile(config: &str, profile: &str) -> String {
    let start = config.find("type = \"oauth\"").unwrap();
    let end = config[start..].find("\n\n").unwrap() + start;
    format!("{}{profile}{}", &config[..start], &config[end..])
}

/// `http://127.0.0.1:PORT` where connections are refused, and what keeps it so: a socket
/// bound to the port and never listening, so that no other test can take the port while the
/// guard lives.
pub(crate) fn closed_port_url() -> (String, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = socket.local_addr().unwrap();
    (format!("http://{addr}"), socket)
}

/// Polls `probe` every 20 ms until it gives a value, for at most `deadline`; then fails,
/// saying what never came.
pub(crate) async fn eventually<T, F, Fut>(
    what: &str,
    deadline: std::time::Duration,
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The value of the first sample of `name` (with its labels, if any) in a Prometheus text.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// `config` with `lines` added to its `[server]` table.
pub(crate) fn with_server(config: &str, lines: &str) -> String {
    config.replacen("[server]\n", &format!("[server]\n{lines}\n"), 1)
}

/// Set by `.ci/run`: a test that needs a tool from outside the Rust toolchain (Node.js and npm,
/// Python with pip, systemd-analyze, a package registry) fails without it instead of skipping.
pub(crate) const REQUIRE_ALL_TESTS: &str = "IMSBRIDGE_REQUIRE_ALL_TESTS";

/// A test that cannot run here. Under `IMSBRIDGE_REQUIRE_ALL_TESTS=1` (CI) it fails; otherwise it
/// says why on the terminal (written to stderr directly, past the test harness's capture, so a
/// plain `cargo test` shows it) and returns, and the test passes having checked nothing.
pub(crate) fn skip(test: &str, why: &str) {
    if std::env::var_os(REQUIRE_ALL_TESTS).is_some_and(|v| v == "1") {
        panic!("{test} cannot run: {why} ({REQUIRE_ALL_TESTS}=1 requires every test)");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\nSKIPPED {test}: {why}");
}

/// Runs `command args` to see that the tool is there: `Err` says why not.
pub(crate) fn tool(command: &str, args: &[&str]) -> Result<(), String> {
    match std::process::Command::new(command).args(args).output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "`{command} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Err(format!("`{command}` is not installed ({error})")),
    }
}

/// Runs a command that installs what a test needs: `Err` has what it said.
pub(crate) fn install(command: &mut std::process::Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|error| format!("{command:?} could not start: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{command:?} failed (no network to the package registry?):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// `package` from PyPI in a virtualenv `target/tools/NAME`, installed once (when `ready` says
/// the one there is not); the virtualenv, or why it cannot be.
pub(crate) fn python_tool(
    name: &str,
    package: &str,
    ready: impl Fn(&Path) -> bool,
) -> Result<std::path::PathBuf, String> {
    // Tests of one binary run at once: one installs, the others wait and find it there.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools")
        .join(name);
    if ready(&venv) {
        return Ok(venv);
    }
    tool("python3", &["-m", "venv", "--help"])?;
    install(
        std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv),
    )?;
    let installed = install(std::process::Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        package,
    ]));
    if let Err(error) = installed {
        // No half-made virtualenv left to look installed next time.
        let _ = std::fs::remove_dir_all(&venv);
        return Err(error);
    }
    Ok(venv)
}

/// Runs `command` (a client library's script, off the runtime's threads) to its end; the JSON
/// line it prints. It must succeed.
/// A process a test started: killed and waited for when the guard is dropped, so that a test
/// that ends, passing or failing, leaves nothing running.
pub(crate) struct ChildGuard(Option<std::process::Child>);

impl ChildGuard {
    pub(crate) fn spawn(command: &mut std::process::Command) -> ChildGuard {
        ChildGuard(Some(command.spawn().expect("the test's process starts")))
    }

    /// Waits for the process to end by itself, with what it wrote.
    pub(crate) fn wait_with_output(mut self) -> std::process::Output {
        let child = self.0.take().expect("the guard holds its child");
        child
            .wait_with_output()
            .expect("the test's process is waited for")
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;

    fn deref(&self) -> &std::process::Child {
        self.0.as_ref().expect("the guard holds its child")
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("the guard holds its child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

pub(crate) async fn json_report(mut command: std::process::Command) -> serde_json::Value {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

/// An HTTP/1.1 server on `127.0.0.1:0` that answers every request with `answer(head)` (the
/// request head as text, names in lower case as hyper sends them), on keep-alive connections
/// unless the answer says `connection: close`. Request bodies are read by their
/// `content-length`. Returns its URL.
pub(crate) async fn scripted_http<F>(answer: F) -> String
where
    F: Fn(&str) -> String + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&read[..end]).to_string();
                    let length: usize = header_of(&head, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while read.len() < end + 4 + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read.extend_from_slice(&chunk[..n]),
                        }
                    }
                    read.drain(..end + 4 + length);
                    let reply = answer(&head);
                    if stream.write_all(reply.as_bytes()).await.is_err()
                        || reply.contains("connection: close")
                    {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// The value of a header in a request head written by hyper (names in lower case).
pub(crate) fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// A `redis-server` of a test's own, on a free loopback port, without persistence, stopped
/// (killed by its PID) when dropped. `None` when there is none here (the test is skipped, or
/// fails under `IMSBRIDGE_REQUIRE_ALL_TESTS=1`).
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    password: Option<String>,
    child: Option<ChildGuard>,
}

impl RedisServer {
    pub(crate) async fn start(test: &str) -> Option<RedisServer> {
        RedisServer::start_with(test, None).await
    }

    /// A server that asks for `password`.
    pub(crate) async fn start_with(test: &str, password: Option<&str>) -> Option<RedisServer> {
        if let Err(why) = tool("redis-server", &["--version"]) {
            skip(test, &format!("{why} (Debian package `redis-server`)"));
            return None;
        }
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let mut server = RedisServer {
            port,
            password: password.map(str::to_owned),
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    /// `redis://` URL of the server (with its password, if any).
    pub(crate) fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// Starts it (again), on the same port, empty; waits until it answers.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        let mut command = std::process::Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        self.child = Some(ChildGuard::spawn(&mut command));
        let url = self.url();
        eventually(
            "redis-server answers",
            std::time::Duration::from_secs(10),
            || {
                let url = url.clone();
                async move {
                    let client = redis::Client::open(url).ok()?;
                    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut connection)
                        .await
                        .ok()
                }
            },
        )
        .await;
    }

    /// Kills it (its data is gone: no persistence).
    pub(crate) fn kill(&mut self) {
        drop(self.child.take());
    }

    /// Its PID.
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGSTOP: it answers nothing until [`RedisServer::thaw`].
    pub(crate) fn freeze(&self) {
        signal(self.pid(), "STOP");
    }

    pub(crate) fn thaw(&self) {
        signal(self.pid(), "CONT");
    }

    /// A command to it, as a client.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, command: &mut redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        command.query_async(&mut connection).await.unwrap()
    }

    /// Commands it processed since it started (`INFO stats`).
    pub(crate) async fn commands_processed(&self) -> u64 {
        let info: String = self.query(redis::cmd("INFO").arg("stats")).await;
        info.lines()
            .find_map(|line| line.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("total_commands_processed in INFO stats")
    }
}

fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Copies the file or folder `from` to `to`, folders and all.
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}
