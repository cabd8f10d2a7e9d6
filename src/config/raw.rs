//! The config file exactly as serde reads it. Every table refuses unknown keys, so a typo is an
//! error naming the key, never a silently ignored setting. Validation into [`super::Config`]
//! happens in `config.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::source::SecretSource;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub unknown_callers: Option<RawUnknownCallers>,
    pub server: Option<RawServer>,
    pub upstream: Option<RawUpstream>,
    /// Campaign instances beside the default one, by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub ims: Option<RawIms>,
    #[serde(default)]
    pub profiles: BTreeMap<String, RawProfile>,
    pub sessions: Option<RawSessions>,
    pub wsdl: Option<RawWsdl>,
    pub egress: Option<RawEgress>,
    pub admin: Option<RawAdmin>,
    pub telemetry: Option<RawTelemetry>,
    pub state: Option<RawState>,
    pub cutover: Option<RawCutover>,
    #[serde(default)]
    pub callers: Vec<RawCaller>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCutover {
    pub min_comparisons: Option<u64>,
    pub quiet_days: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub path: Option<PathBuf>,
    pub redis: Option<SecretSource>,
    pub key_prefix: Option<String>,
    pub flush_interval: Option<String>,
    pub timeout: Option<String>,
    pub history_days: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub inventory_max_logins: Option<u64>,
    pub shadow_max_in_flight: Option<u64>,
    pub password: Option<SecretSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEgress {
    pub proxy: Option<SecretSource>,
    pub no_proxy: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWsdl {
    pub profile: Option<String>,
    pub allow_from: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawUnknownCallers {
    Reject,
    Legacy,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawFaultStatus {
    Soap,
    Http,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub tls: Option<RawTls>,
    pub max_body_bytes: Option<u64>,
    pub max_prefix_bytes: Option<u64>,
    pub workers: Option<u64>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<u64>,
    pub shutdown_grace: Option<String>,
    pub max_pending_password_checks: Option<u64>,
    pub prefix_timeout: Option<String>,
    pub max_prefix_memory: Option<u64>,
    pub http2_max_streams: Option<u64>,
    pub max_connections_per_ip: Option<u64>,
    pub fault_status: Option<RawFaultStatus>,
    pub linger: Option<String>,
    pub paths: Option<Vec<String>>,
    pub public_url: Option<String>,
    pub proxy_protocol: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
    pub password_failures: Option<RawPasswordFailures>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPasswordFailures {
    pub per_login: Option<String>,
    pub per_peer: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert: PathBuf,
    pub key: SecretSource,
    pub client_ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub url: Option<String>,
    pub urls: Option<Vec<String>>,
    pub cooldown: Option<String>,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub retry_buffer_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIms {
    pub host: Option<String>,
    pub token_url: Option<String>,
    pub exchange_url: Option<String>,
    pub timeout: Option<String>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawProfileType {
    Oauth,
    Jwt,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    #[serde(rename = "type")]
    pub kind: RawProfileType,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretSource>,
    pub scopes: Option<Vec<String>>,
    pub org_id: Option<String>,
    pub technical_account_id: Option<String>,
    pub private_key: Option<SecretSource>,
    pub metascopes: Option<Vec<String>>,
    pub upstream: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSessions {
    pub secret: SecretSource,
    pub ttl: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawMode {
    Ims,
    Legacy,
    Canary,
    Shadow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCaller {
    /// Spanned: errors about the caller name its line.
    pub name: toml::Spanned<String>,
    pub login: String,
    pub password: SecretSource,
    pub profile: String,
    pub mode: Option<RawMode>,
    pub canary_percent: Option<f64>,
    pub shadow_actions: Option<Vec<String>>,
    pub allow_from: Option<Vec<String>>,
    pub client_cert_subject: Option<String>,
    pub client_cert_san: Option<Vec<String>>,
    pub logon: Option<bool>,
}
