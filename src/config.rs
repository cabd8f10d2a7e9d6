//! The configuration: the TOML file (docs/configuration.md, "Config reference"; `docs/architecture.md`, the
//! `config` module), read into raw serde structs (`config/raw.rs`), then checked and turned into
//! the typed [`Config`] the proxy runs on (`config/validate.rs`). This file holds the typed
//! settings.
//!
//! Every problem is reported with the key it concerns, and unknown keys are refused: a proxy
//! that silently skipped a misspelt setting would do something other than what its operator
//! wrote.

mod duration;
mod raw;
mod source;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use http::uri::{Authority, Scheme};
use ipnet::IpNet;
use rustls_pki_types::CertificateDer;

pub use duration::parse as parse_duration;
pub use source::{Env, ProcessEnv, SecretSource};

use crate::secret::Secret;
use crate::secret::SigningKey;
use crate::tls::{AltName, SubjectName};
use raw::RawConfig;

/// `server.listen` when the file names none.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// `server.admin_listen` when the file names none: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// 64 MiB: a large `PushEvents` batch fits, an endless upload does not.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// The session token sits near the start of every envelope Campaign clients send; 64 KiB leaves
/// room for a large SOAP Header before it.
pub const DEFAULT_MAX_PREFIX_BYTES: u64 = 64 * 1024;
/// `upstream.timeout` when the file names none.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// A client gets this long to send a request's headers, and an idle keep-alive connection is
/// closed after it (slowloris, forgotten connections).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A client sending a body may pause this long between two pieces of it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; beyond it, new ones wait in the kernel's accept queue.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
/// Connections served at once from one address: one client cannot take every slot. A load
/// balancer without the PROXY protocol is one address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u64 = 1024;
/// Streams served at once on one HTTP/2 connection.
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 32;
/// The body prefix, up to the end of the session token, must come within this.
pub const DEFAULT_PREFIX_TIMEOUT: Duration = Duration::from_secs(10);
/// The prefixes being read hold at most this together: 1024 prefixes of the largest size.
pub const DEFAULT_MAX_PREFIX_MEMORY: u64 = 64 * 1024 * 1024;
/// Campaign's pages that carry session credentials, served by default: the SOAP router, the
/// WSDLs, the pings of acc-js-sdk and the upload page.
pub const DEFAULT_PATHS: [&str; 5] = [
    "/nl/jsp/soaprouter.jsp",
    "/nl/jsp/schemawsdl.jsp",
    "/nl/jsp/ping.jsp",
    "/nl/jsp/mcPing.jsp",
    "/nl/jsp/uploadFile.jsp",
];
/// The page that serves WSDLs.
pub const WSDL_PATH: &str = "/nl/jsp/schemawsdl.jsp";
/// The rest of a refused body is read for this long at most.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(5);
/// After SIGTERM, requests in flight get this long to finish.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// A body up to this size is kept while it is forwarded, so that a call whose token Campaign
/// refused can be sent again with a new one.
pub const DEFAULT_RETRY_BUFFER_BYTES: u64 = 1024 * 1024;
/// `upstream.connect_timeout` when the file names none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A node of Campaign that refused a connection or timed out is skipped this long.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(10);
/// Nodes one upstream may have.
pub const MAX_UPSTREAM_NODES: usize = 64;
/// The name of the `[upstream]` table's Campaign, in metrics and messages.
pub const DEFAULT_UPSTREAM: &str = "default";
/// `ims.host` when the file names none: Adobe's IMS.
pub const DEFAULT_IMS_HOST: &str = "https://ims-na1.adobelogin.com";
/// `ims.timeout` when the file names none.
pub const DEFAULT_IMS_TIMEOUT: Duration = Duration::from_secs(10);
/// The IMS paths (`docs/architecture.md`, "Token providers"), appended to `ims.host` unless
/// overridden.
pub const IMS_TOKEN_PATH: &str = "/ims/token/v3";
/// Where a JWT is exchanged for a token, under `ims.host`.
pub const IMS_EXCHANGE_PATH: &str = "/ims/exchange/jwt";
/// Life of the session tokens imsbridge issues at `xtk:session#Logon`, as Campaign's default.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// argon2 runs waiting or running at once. At about 40 ms a run, 16 queued behind 2 cores is
/// about a third of a second of wait for a caller's first check, whatever else is asked.
pub const DEFAULT_MAX_PENDING_PASSWORD_CHECKS: usize = 16;
/// A password check refused over `server.password_failures` is answered after this, and up to
/// half as long again, at random (so that a flood's refusals do not come back in waves).
pub const DEFAULT_REFUSAL_DELAY: Duration = Duration::from_secs(1);
/// Logins the inventory keeps; past it, the least recently seen is dropped.
pub const DEFAULT_INVENTORY_MAX_LOGINS: u64 = 10_000;
/// Shadow copies sent to Campaign at once; past it, a call gets no copy.
pub const DEFAULT_SHADOW_MAX_IN_FLIGHT: u64 = 8;
/// The session secret signs tokens every replica accepts: it must be hard to guess.
pub const MIN_SESSION_SECRET_BYTES: usize = 32;

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// TOML syntax, unknown keys and wrong types, on one line: where, the key, toml's message.
    /// The value is never quoted: it could be a secret.
    #[error("invalid config: line {line}{}: {message}", key.as_deref().map(|k| format!(", `{k}`")).unwrap_or_default())]
    Syntax {
        /// The line of the mistake.
        line: usize,
        /// The key on that line, when there is one.
        key: Option<String>,
        /// toml's description, without the value.
        message: String,
    },
    /// A value that is read but cannot be used: the key (`server.listen`, `callers[0].login`) and why.
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// The key, with its place: `callers[0].login`.
        key: String,
        /// What is wrong with its value, never the value itself when it could be a secret.
        message: String,
    },
}

/// `[state]`: where what outlives a process is kept.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// Which store.
    pub backend: StateBackend,
    /// Counts are written at least this often.
    pub flush_interval: Duration,
    /// A store call takes at most this.
    pub timeout: Duration,
    /// Day counts are kept this many days.
    pub history_days: u32,
}

impl StateSettings {
    /// No `[state]`: in the process.
    pub fn memory() -> StateSettings {
        StateSettings {
            backend: StateBackend::Memory,
            flush_interval: DEFAULT_STATE_FLUSH_INTERVAL,
            timeout: DEFAULT_STATE_TIMEOUT,
            history_days: DEFAULT_HISTORY_DAYS as u32,
        }
    }
}

/// The store of `[state]`.
#[derive(Debug, Clone)]
pub enum StateBackend {
    /// No `[state]`: in the process, lost at restart.
    Memory,
    /// `state.path`: an SQLite file, one process.
    Sqlite {
        /// The file.
        path: PathBuf,
    },
    /// `state.redis`: a Redis or Valkey server shared by the replicas.
    Redis {
        /// `redis://` or `rediss://`, maybe with a password: a secret.
        url: Secret,
        /// `state.key_prefix`: several fleets can share a server.
        key_prefix: String,
    },
}

/// `state.flush_interval` when the file names none.
pub const DEFAULT_STATE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// `state.timeout` when the file names none.
pub const DEFAULT_STATE_TIMEOUT: Duration = Duration::from_millis(250);
/// `state.history_days` when the file names none.
pub const DEFAULT_HISTORY_DAYS: u64 = 90;
/// `state.key_prefix` when the file names none.
pub const DEFAULT_KEY_PREFIX: &str = "imsbridge:";

/// `[telemetry]`: where traces go.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `otlp_endpoint`: the collector, `http://` or `https://` (traces go to its `/v1/traces`).
    pub endpoint: String,
    /// `ca_file`'s roots, trusted beside the system's for an `https` collector.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// What happens to a credential no caller owns.
    pub unknown_callers: UnknownCallers,
    /// `[server]`: the listeners and their limits.
    pub server: ServerSettings,
    /// `[upstream]`: the Campaign of profiles that name none, and of requests no caller owns.
    pub upstream: UpstreamSettings,
    /// `[upstreams.NAME]`, in name order; a profile refers to one by index.
    pub upstreams: Vec<UpstreamSettings>,
    /// `[ims]`: where tokens come from.
    pub ims: ImsSettings,
    /// Technical accounts, in name order; a caller refers to one by index.
    pub profiles: Vec<Profile>,
    /// Session tokens issued for emulated `xtk:session#Logon`; `None`: Logon is not emulated.
    pub sessions: Option<SessionSettings>,
    /// WSDL requests without a credential.
    pub wsdl: WsdlSettings,
    /// The HTTP proxy outgoing connections go through.
    pub egress: EgressSettings,
    /// The migration cockpit of the admin listener: inventory and shadow copies.
    pub admin: AdminSettings,
    /// Where traces go (`[telemetry]`, OTLP/HTTP); `None`: no traces.
    pub telemetry: Option<TelemetrySettings>,
    /// `[state]`.
    pub state: StateSettings,
    /// `[cutover]`: what a caller's verdict asks for.
    pub cutover: CutoverSettings,
    /// `[[callers]]`, in the file's order.
    pub callers: Vec<CallerSettings>,
    /// Seed of the draws that send a `canary` caller's share of requests the `ims` way;
    /// `None` (what the file gives): a random one. Set by tests, for splits they can predict.
    pub canary_seed: Option<u64>,
    /// The time of day issued sessions are checked against; the system's (what the file
    /// gives), or one a test moves forward.
    pub clock: crate::clock::Clock,
}

impl Config {
    /// Every Campaign instance: `[upstream]` first, then `[upstreams.NAME]` in name order (the
    /// order [`Profile::upstream_index`] counts in).
    pub fn all_upstreams(&self) -> impl Iterator<Item = &UpstreamSettings> {
        std::iter::once(&self.upstream).chain(&self.upstreams)
    }
}

/// The HTTP proxy connections to IMS and Campaign go through, from `[egress]`; without it, the
/// environment's `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
#[derive(Default)]
pub struct EgressSettings {
    /// `http://user:password@host:port`; a secret, for its password.
    pub proxy: Option<Secret>,
    /// Hosts, domains and networks reached straight.
    pub no_proxy: Vec<String>,
}

impl fmt::Debug for EgressSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressSettings")
            .field("proxy", &self.proxy.as_ref().map(|_| "****"))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// `[cutover]`: what a caller's cut-over verdict rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutoverSettings {
    /// Comparisons a shadow caller needs, and ims-way calls a canary caller needs, to be ready.
    pub min_comparisons: u64,
    /// Days without a mismatch, a refusal or a failure (a shadow or canary caller), or without a
    /// legacy-way call of its login (an ims caller), for its verdict.
    pub quiet_days: u32,
}

/// `[cutover] min_comparisons` when the file names none.
pub const DEFAULT_MIN_COMPARISONS: u64 = 100;
/// `[cutover] quiet_days` when the file names none.
pub const DEFAULT_QUIET_DAYS: u64 = 7;

/// `[admin]`: what the inventory and the shadow copies may hold, and who may read the page.
#[derive(Clone, PartialEq)]
pub struct AdminSettings {
    /// Logins the inventory keeps (the least recently seen dropped past it).
    pub inventory_max_logins: usize,
    /// Shadow copies on their way at once; past it, a call gets none.
    pub shadow_max_in_flight: usize,
    /// argon2 hash of the password `GET /`, `/inventory` and `/cutover` ask for (HTTP Basic);
    /// `None`: they are open.
    pub password: Option<PasswordHash>,
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("inventory_max_logins", &self.inventory_max_logins)
            .field("shadow_max_in_flight", &self.shadow_max_in_flight)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .finish()
    }
}

impl Default for AdminSettings {
    fn default() -> AdminSettings {
        AdminSettings {
            inventory_max_logins: DEFAULT_INVENTORY_MAX_LOGINS as usize,
            shadow_max_in_flight: DEFAULT_SHADOW_MAX_IN_FLIGHT as usize,
            password: None,
        }
    }
}

/// How a WSDL request without a credential is served.
#[derive(Debug, Default, Clone)]
pub struct WsdlSettings {
    /// With this profile's token (an index into [`Config::profiles`]); `None`: refused (401).
    pub profile: Option<usize>,
    /// Networks it may come from; empty: anywhere.
    pub allow_from: Vec<IpNet>,
}

/// `[sessions]`: the tokens imsbridge issues when it answers a Logon.
#[derive(Debug)]
pub struct SessionSettings {
    /// HMAC key of issued tokens: shared by the replicas, and by nothing else.
    pub secret: Secret,
    /// How long an issued session lasts.
    pub ttl: Duration,
}

/// `unknown_callers`: what happens to a credential no caller owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownCallers {
    /// Refused with a SOAP fault: the end state of a migration.
    Reject,
    /// Forwarded unchanged: imsbridge in front of Campaign before any caller moves.
    Legacy,
}

impl UnknownCallers {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownCallers::Reject => "reject",
            UnknownCallers::Legacy => "legacy",
        }
    }
}

/// The HTTP status of the SOAP faults imsbridge answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultStatus {
    /// 500 for every fault, as SOAP 1.1 §6.2 and Campaign do: what SOAP libraries read as a
    /// fault rather than a transport error.
    #[default]
    Soap,
    /// The status that says what happened: 400, 405, 408, 413, 502, 503, 504.
    Http,
}

/// `[server]`.
#[derive(Debug)]
pub struct ServerSettings {
    /// Where callers connect.
    pub listen: SocketAddr,
    /// Where `/healthz`, `/readyz`, `/metrics`, the inventory and the page are served.
    pub admin_listen: SocketAddr,
    /// Largest request body; a larger one is refused (413).
    pub max_body_bytes: u64,
    /// Bound on the buffered start of a body, up to the end of the session token.
    pub max_prefix_bytes: usize,
    /// The whole prefix must come within this, however it trickles.
    pub prefix_timeout: Duration,
    /// Bytes that the prefixes being read may hold together.
    pub max_prefix_memory: usize,
    /// Workers, each a current-thread runtime on a thread of its own with its own listening
    /// socket (`SO_REUSEPORT`); `None`: one per core.
    pub workers: Option<usize>,
    /// What a client may hold of the listener: connections, time, HTTP/2 streams.
    pub limits: Limits,
    /// How much argon2 work requests may ask for.
    pub password_limits: PasswordLimits,
    /// The HTTP status faults are sent with.
    pub fault_status: FaultStatus,
    /// How long the rest of a refused body is read (and at most `max_body_bytes` of it), so
    /// that its client reads the answer rather than a reset.
    pub linger: Duration,
    /// Campaign's pages served beside the SOAP router, whose credential is read from the
    /// cookie, the headers or the query.
    pub paths: Vec<String>,
    /// Where callers reach the proxy (`https://imsbridge.example.com`): WSDL answers name it in
    /// their `soap:address` rather than Campaign.
    pub public_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed: the client is the right-most address of
    /// it not among them.
    pub trusted_proxies: Vec<IpNet>,
    /// TLS on the listener; `None`: plain HTTP.
    pub tls: Option<TlsSettings>,
}

impl ServerSettings {
    /// The workers to run: `workers`, or the number of cores.
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
    }
}

/// `server.tls`: the listener's certificate, and with `client_ca` mutual TLS.
#[derive(Clone)]
pub struct TlsSettings {
    /// rustls' config, built from the files.
    pub config: Arc<rustls::ServerConfig>,
    /// Client certificates are required (`client_ca` is set).
    pub mutual: bool,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("mutual", &self.mutual)
            .finish()
    }
}

/// How much argon2 work requests may ask for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PasswordLimits {
    /// argon2 runs waiting or running at once; past it, checks are refused at once.
    pub max_pending: usize,
    /// Failed checks of one login, and from one peer, before further checks of it are refused
    /// without running argon2 until the window ends.
    pub per_login: Rate,
    /// Failed checks from one peer address.
    pub per_peer: Rate,
    /// How long a check refused over those limits waits at least before its answer (and up to
    /// half as long again, at random): an attacker that sends its next guess when the last is
    /// answered sends one a second at most, not thousands.
    pub refusal_delay: Duration,
}

/// `count` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many.
    pub count: u32,
    /// In how long.
    pub window: Duration,
}

impl Default for PasswordLimits {
    fn default() -> PasswordLimits {
        PasswordLimits {
            max_pending: DEFAULT_MAX_PENDING_PASSWORD_CHECKS,
            per_login: Rate {
                count: 10,
                window: Duration::from_secs(60),
            },
            per_peer: Rate {
                count: 30,
                window: Duration::from_secs(60),
            },
            refusal_delay: DEFAULT_REFUSAL_DELAY,
        }
    }
}

/// How much a client may take of the proxy, and how long.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For a request's head; also how long a connection may stay with no request open.
    pub header_read_timeout: Duration,
    /// Longest pause in a request body, and in Campaign's answer.
    pub idle_timeout: Duration,
    /// Connections served at once; past it, new ones wait in the kernel's queue.
    pub max_connections: usize,
    /// Connections served at once from one address.
    pub max_connections_per_ip: usize,
    /// Streams open at once on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// Every connection starts with a PROXY protocol header (v1 or v2), whose source address is
    /// the client's.
    pub proxy_protocol: bool,
    /// How long in-flight requests may take to finish after `SIGTERM`.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP as usize,
            http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
            proxy_protocol: false,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// One Campaign instance: `[upstream]` or one of `[upstreams.NAME]`.
#[derive(Debug)]
pub struct UpstreamSettings {
    /// [`DEFAULT_UPSTREAM`] for `[upstream]`, else the table's name.
    pub name: String,
    /// Its nodes (`url`, or `urls` in order): requests are spread over them.
    pub nodes: Vec<NodeSettings>,
    /// Time allowed from sending a request to receiving the head of Campaign's answer.
    pub timeout: Duration,
    /// For a connection to a node, its TLS handshake and any proxy's `CONNECT` included.
    pub connect_timeout: Duration,
    /// Extra trusted roots, beside the system's.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Bodies up to this size are replayed when Campaign refuses the token.
    pub retry_buffer_bytes: u64,
    /// A node that refused a connection or timed out is skipped this long.
    pub cooldown: Duration,
}

/// One node of a Campaign instance, from its URL.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
    /// Path the caller's path is appended to; empty when the URL has none.
    pub base_path: String,
}

impl NodeSettings {
    /// The URL it was written as (less a trailing slash): never holds a secret, as a user or
    /// password is refused in it.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// `[ims]`.
#[derive(Debug)]
pub struct ImsSettings {
    /// Without a trailing slash; JWT claims are built on it.
    pub host: String,
    /// Where OAuth Server-to-Server tokens are asked for.
    pub token_url: http::Uri,
    /// Where JWTs are exchanged for tokens.
    pub exchange_url: http::Uri,
    /// Bound on one token request.
    pub timeout: Duration,
    /// Extra trusted roots for IMS (a TLS-inspecting proxy's CA), beside the system's.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// `[profiles.NAME]`: one technical account.
#[derive(Debug)]
pub struct Profile {
    /// `NAME`.
    pub name: String,
    /// How its tokens are obtained.
    pub kind: ProfileKind,
    /// Its Campaign: an index into [`Config::upstreams`]; `None`: `[upstream]`.
    pub upstream: Option<usize>,
}

impl Profile {
    /// Its Campaign's place in [`Config::all_upstreams`].
    pub fn upstream_index(&self) -> usize {
        self.upstream.map_or(0, |named| named + 1)
    }
}

/// The kinds of technical account.
#[derive(Debug)]
pub enum ProfileKind {
    /// OAuth Server-to-Server (client credentials).
    OAuth {
        /// Its client id.
        client_id: String,
        /// Its client secret.
        client_secret: Secret,
        /// The scopes asked for.
        scopes: Vec<String>,
    },
    /// Service Account (JWT), retired by Adobe: see `ims/jwt.rs`.
    Jwt {
        /// Its client id.
        client_id: String,
        /// Its client secret.
        client_secret: Secret,
        /// Its organization (`…@AdobeOrg`): the JWT's `iss`.
        org_id: String,
        /// Its technical account (`…@techacct.adobe.com`): the JWT's `sub`.
        technical_account_id: String,
        /// The key the JWT is signed with (RS256).
        private_key: SigningKey,
        /// The metascopes claimed (`ent_campaign_sdk`).
        metascopes: Vec<String>,
    },
}

impl ProfileKind {
    /// `oauth` or `jwt`, as the file writes it.
    pub fn name(&self) -> &'static str {
        match self {
            ProfileKind::OAuth { .. } => "oauth",
            ProfileKind::Jwt { .. } => "jwt",
        }
    }

    /// Its client id, whatever its kind.
    pub fn client_id(&self) -> &str {
        match self {
            ProfileKind::OAuth { client_id, .. } | ProfileKind::Jwt { client_id, .. } => client_id,
        }
    }
}

/// `callers[].mode`: the way a caller's requests go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Strip the legacy credential, send the technical account's Bearer token.
    Ims,
    /// Forward unchanged: the pre-migration path.
    Legacy,
    /// This share of requests (0 to 100), decided per request, goes the `ims` way; the rest
    /// goes `legacy`.
    Canary {
        /// `canary_percent`.
        percent: f64,
    },
    /// Every call goes `legacy`, and the caller gets that answer; a call of one of its
    /// `shadow_actions` also goes the `ims` way, as a copy whose answer is compared with it.
    Shadow,
}

impl Mode {
    /// As the file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ims => "ims",
            Mode::Legacy => "legacy",
            Mode::Canary { .. } => "canary",
            Mode::Shadow => "shadow",
        }
    }
}

/// One `[[callers]]` entry.
pub struct CallerSettings {
    /// Its name, in logs, metrics and the page.
    pub name: String,
    /// The Campaign operator login it presents.
    pub login: String,
    /// argon2 hash of the password, in PHC form.
    pub password: PasswordHash,
    /// Index into [`Config::profiles`].
    pub profile: usize,
    /// The way its requests go.
    pub mode: Mode,
    /// Networks the caller may come from (its TCP peer address); empty: anywhere.
    pub allow_from: Vec<IpNet>,
    /// The caller logs on (`xtk:session#Logon`) and sends the session token it gets.
    pub logon: bool,
    /// Subject its client certificate must have (mTLS).
    pub client_cert_subject: Option<SubjectName>,
    /// Or one of these subjectAltNames of its certificate (`dns:…`, `uri:…`, `email:…`,
    /// `ip:…`).
    pub client_cert_san: Vec<AltName>,
    /// With `mode = "shadow"`: the read-only actions (`xtk:queryDef#ExecuteQuery`) copied the
    /// `ims` way.
    pub shadow_actions: Vec<String>,
}

impl fmt::Debug for CallerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerSettings")
            .field("name", &self.name)
            .field("login", &self.login)
            .field("password", &"****")
            .field("profile", &self.profile)
            .field("mode", &self.mode)
            .field("allow_from", &self.allow_from)
            .field("logon", &self.logon)
            .field("client_cert_subject", &self.client_cert_subject)
            .field("client_cert_san", &self.client_cert_san)
            .finish()
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths in it are taken from its folder.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base_dir, env)
    }

    /// Validates config text; `base_dir` anchors relative paths.
    pub fn parse(text: &str, base_dir: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| validate::syntax_error(text, &e))?;
        validate::config(raw, text, base_dir, env).map_err(|error| validate::with_line(error, text))
    }
}

#[cfg(test)]
mod tests;
