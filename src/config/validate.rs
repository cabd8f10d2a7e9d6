//! Raw config → validated [`Config`]: every problem is reported with the key it concerns, and
//! its value is never quoted (it could be a secret).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use http::uri::{Authority, Scheme};
use ipnet::IpNet;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::raw::{
    self, RawCaller, RawConfig, RawFaultStatus, RawMode, RawProfile, RawProfileType,
    RawUnknownCallers,
};
use super::*;
use crate::secret::SigningKey;

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A toml error, located by line and key.
pub(super) fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let start = error.span().map_or(0, |span| span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_text = text[line_start..].lines().next().unwrap_or_default();
    let key = line_text
        .split_once('=')
        .map(|(key, _)| key.trim().to_owned())
        .filter(|key| !key.is_empty() && !key.starts_with('#'))
        .or_else(|| {
            let table = line_text.trim();
            (table.starts_with('[')).then(|| table.to_owned())
        });
    let mut message = error.message().trim().replace('\n', " ");
    // A number where a duration goes: say how durations are written.
    if key
        .as_deref()
        .is_some_and(|key| DURATION_KEYS.contains(&key))
        && message.contains("expected a string")
    {
        message.push_str(
            "; durations are strings with a unit, such as \"60s\", \"250ms\", \"10m\" or \"24h\"",
        );
    }
    if let Some(nearest) = nearest_name(&message) {
        message.push_str(&format!("; did you mean `{nearest}`?"));
    }
    ConfigError::Syntax {
        line: text[..start].matches('\n').count() + 1,
        key,
        message,
    }
}

/// For toml's "unknown field `tiemout`, expected one of `timeout`, …" (and "unknown variant"):
/// the expected name nearest the one written, when one is near enough to be what was meant.
fn nearest_name(message: &str) -> Option<&str> {
    if !message.starts_with("unknown field") && !message.starts_with("unknown variant") {
        return None;
    }
    let mut quoted = message.split('`').skip(1).step_by(2);
    let written = quoted.next()?;
    quoted
        .map(|name| (strsim::jaro_winkler(written, name), name))
        .filter(|(likeness, _)| *likeness > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

/// The keys whose values are durations (`"30s"`).
const DURATION_KEYS: [&str; 10] = [
    "flush_interval",
    "timeout",
    "cooldown",
    "connect_timeout",
    "ttl",
    "header_read_timeout",
    "idle_timeout",
    "shutdown_grace",
    "prefix_timeout",
    "linger",
];

/// The whole config.
/// The whole config; `text` is the file it was read from (to name lines).
pub(super) fn config(
    raw: RawConfig,
    text: &str,
    base_dir: &Path,
    env: &dyn Env,
) -> Result<Config, ConfigError> {
    let unknown_callers = match raw.unknown_callers {
        None | Some(RawUnknownCallers::Reject) => UnknownCallers::Reject,
        Some(RawUnknownCallers::Legacy) => UnknownCallers::Legacy,
    };
    let server = validate_server(raw.server.unwrap_or_default(), base_dir, env)?;
    let upstream = raw
        .upstream
        .ok_or_else(|| invalid("upstream", "missing: say where Campaign is"))?;
    let upstream = validate_upstream("upstream", DEFAULT_UPSTREAM, upstream, base_dir)?;
    let upstreams = raw
        .upstreams
        .into_iter()
        .map(|(name, table)| {
            let key = format!("upstreams.{name}");
            if name == DEFAULT_UPSTREAM {
                return Err(invalid(
                    key,
                    "`default` is the name of the [upstream] table",
                ));
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(invalid(key, "a name is letters, digits, `-` and `_`"));
            }
            validate_upstream(&key, &name, table, base_dir)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ims = validate_ims(raw.ims.unwrap_or_default(), base_dir)?;
    let profiles = raw
        .profiles
        .into_iter()
        .map(|(name, profile)| validate_profile(name, profile, &upstreams, base_dir, env))
        .collect::<Result<Vec<_>, _>>()?;
    let sessions = raw
        .sessions
        .map(|raw| validate_sessions(raw, base_dir, env))
        .transpose()?;
    let mut names = HashSet::new();
    let mut logins = HashSet::new();
    // Where each caller is in the file: `(name, line)`, for the errors that concern it.
    let mut places = Vec::new();
    let callers = raw
        .callers
        .into_iter()
        .enumerate()
        .map(|(i, caller)| {
            let key = format!("callers[{i}]");
            let line = text[..caller.name.span().start.min(text.len())]
                .matches('\n')
                .count()
                + 1;
            let place = (caller.name.get_ref().clone(), line);
            let result = (|| {
                if !names.insert(caller.name.get_ref().clone()) {
                    return Err(invalid(
                        format!("{key}.name"),
                        format!("`{}` names two callers", caller.name.get_ref()),
                    ));
                }
                if !logins.insert(caller.login.clone()) {
                    return Err(invalid(
                        format!("{key}.login"),
                        format!("`{}` is the login of two callers", caller.login),
                    ));
                }
                validate_caller(&key, caller, &profiles, base_dir, env)
            })();
            let result = result.map_err(|error| about_caller(error, &place));
            places.push(place);
            result
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mutual_tls = server.tls.as_ref().is_some_and(|tls| tls.mutual);
    let bound =
        |c: &CallerSettings| c.client_cert_subject.is_some() || !c.client_cert_san.is_empty();
    if !mutual_tls && let Some(i) = callers.iter().position(bound) {
        let key = match callers[i].client_cert_subject {
            Some(_) => "client_cert_subject",
            None => "client_cert_san",
        };
        return Err(about_caller(
            invalid(
                format!("callers[{i}].{key}"),
                "needs client certificates: set server.tls with a client_ca",
            ),
            &places[i],
        ));
    }
    if sessions.is_none()
        && let Some(i) = callers.iter().position(|c| c.logon && c.mode == Mode::Ims)
    {
        let (name, line) = &places[i];
        return Err(invalid(
            "sessions",
            format!(
                "missing: callers[{i}] logs on (logon = true), and answering its Logon takes a [sessions] secret to sign the session tokens (caller `{name}`, line {line})"
            ),
        ));
    }
    let wsdl = match raw.wsdl {
        None => WsdlSettings::default(),
        Some(wsdl) => WsdlSettings {
            profile: wsdl
                .profile
                .map(|name| {
                    profiles.iter().position(|p| p.name == name).ok_or_else(|| {
                        invalid(
                            "wsdl.profile",
                            format!("no profile named `{name}` ([profiles.{name}] is missing)"),
                        )
                    })
                })
                .transpose()?,
            allow_from: allow_from("wsdl", wsdl.allow_from.unwrap_or_default())?,
        },
    };
    let egress = match raw.egress {
        None => EgressSettings::default(),
        Some(egress) => {
            let proxy = egress
                .proxy
                .map(|source| source.resolve(base_dir, env))
                .transpose()
                .map_err(|message| invalid("egress.proxy", message))?;
            if let Some(url) = &proxy {
                let parsed: Option<http::Uri> = url.expose().parse().ok();
                let fine = parsed.as_ref().is_some_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
                });
                if !fine {
                    // The value is never quoted: it may hold a password.
                    return Err(invalid(
                        "egress.proxy",
                        "is not a URL such as \"http://proxy.example.com:3128\"",
                    ));
                }
            }
            EgressSettings {
                proxy,
                no_proxy: egress.no_proxy.unwrap_or_default(),
            }
        }
    };
    let raw_admin = raw.admin.unwrap_or_default();
    let admin = AdminSettings {
        inventory_max_logins: count(
            "admin.inventory_max_logins",
            raw_admin.inventory_max_logins,
            DEFAULT_INVENTORY_MAX_LOGINS,
            1..=1_000_000,
        )? as usize,
        shadow_max_in_flight: count(
            "admin.shadow_max_in_flight",
            raw_admin.shadow_max_in_flight,
            DEFAULT_SHADOW_MAX_IN_FLIGHT,
            1..=10_000,
        )? as usize,
        password: raw_admin
            .password
            .map(|source| password_hash("admin", source, base_dir, env))
            .transpose()?,
    };
    let state = state(raw.state, base_dir, env)?;
    let raw_cutover = raw.cutover.unwrap_or_default();
    let cutover = CutoverSettings {
        min_comparisons: count(
            "cutover.min_comparisons",
            raw_cutover.min_comparisons,
            DEFAULT_MIN_COMPARISONS,
            1..=1_000_000_000,
        )?,
        quiet_days: count(
            "cutover.quiet_days",
            raw_cutover.quiet_days,
            DEFAULT_QUIET_DAYS,
            1..=365,
        )? as u32,
    };
    if u64::from(cutover.quiet_days) > u64::from(state.history_days) {
        return Err(invalid(
            "cutover.quiet_days",
            format!(
                "is longer than the history kept (state.history_days = {})",
                state.history_days
            ),
        ));
    }
    let telemetry = match raw.telemetry {
        Some(telemetry) => match telemetry.otlp_endpoint {
            Some(endpoint) => {
                http_url("telemetry.otlp_endpoint", &endpoint)?;
                Some(TelemetrySettings {
                    endpoint,
                    extra_roots: ca_file("telemetry.ca_file", telemetry.ca_file, base_dir)?,
                })
            }
            None if telemetry.ca_file.is_some() => {
                return Err(invalid(
                    "telemetry.ca_file",
                    "is for an https otlp_endpoint, and none is set",
                ));
            }
            None => None,
        },
        None => None,
    };
    Ok(Config {
        unknown_callers,
        server,
        upstream,
        upstreams,
        ims,
        profiles,
        sessions,
        wsdl,
        egress,
        admin,
        telemetry,
        state,
        cutover,
        callers,
        canary_seed: None,
        clock: crate::clock::Clock::system(),
    })
}

fn validate_sessions(
    raw: raw::RawSessions,
    base_dir: &Path,
    env: &dyn Env,
) -> Result<SessionSettings, ConfigError> {
    let secret = raw
        .secret
        .resolve(base_dir, env)
        .map_err(|message| invalid("sessions.secret", message))?;
    if secret.expose().len() < MIN_SESSION_SECRET_BYTES {
        return Err(invalid(
            "sessions.secret",
            format!(
                "must be at least {MIN_SESSION_SECRET_BYTES} characters (e.g. the output of `openssl rand -base64 48`)"
            ),
        ));
    }
    Ok(SessionSettings {
        secret,
        ttl: duration("sessions.ttl", raw.ttl.as_deref(), DEFAULT_SESSION_TTL)?,
    })
}

fn validate_server(
    raw: raw::RawServer,
    base_dir: &Path,
    env: &dyn Env,
) -> Result<ServerSettings, ConfigError> {
    let tls = match raw.tls {
        None => None,
        Some(tls) => {
            let key = tls
                .key
                .resolve(base_dir, env)
                .map_err(|message| invalid("server.tls.key", message))?;
            let client_ca = tls.client_ca.map(|path| base_dir.join(path));
            let config =
                crate::tls::server_config(&base_dir.join(&tls.cert), &key, client_ca.as_deref())
                    .map_err(|message| invalid("server.tls", message))?;
            Some(TlsSettings {
                config,
                mutual: client_ca.is_some(),
            })
        }
    };
    let address = |key: &str, value: Option<String>, default: &str| {
        let text = value.unwrap_or_else(|| default.to_owned());
        text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                key,
                format!("`{text}` is not an address with a port, such as \"0.0.0.0:8080\""),
            )
        })
    };
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        return Err(invalid("server.max_body_bytes", "must be more than 0"));
    }
    let max_prefix_bytes = raw.max_prefix_bytes.unwrap_or(DEFAULT_MAX_PREFIX_BYTES);
    if !(1024..=16 * 1024 * 1024).contains(&max_prefix_bytes) {
        return Err(invalid(
            "server.max_prefix_bytes",
            "must be between 1024 and 16777216 bytes",
        ));
    }
    let workers = match raw.workers {
        None => None,
        Some(n @ 1..=1024) => Some(n as usize),
        Some(_) => return Err(invalid("server.workers", "must be between 1 and 1024")),
    };
    let max_connections = count(
        "server.max_connections",
        raw.max_connections,
        DEFAULT_MAX_CONNECTIONS,
        1..=1_000_000,
    )? as usize;
    let max_connections_per_ip = count(
        "server.max_connections_per_ip",
        raw.max_connections_per_ip,
        DEFAULT_MAX_CONNECTIONS_PER_IP,
        1..=1_000_000,
    )? as usize;
    let http2_max_streams = count(
        "server.http2_max_streams",
        raw.http2_max_streams,
        DEFAULT_HTTP2_MAX_STREAMS.into(),
        1..=1000,
    )? as u32;
    let max_prefix_memory = raw.max_prefix_memory.unwrap_or(DEFAULT_MAX_PREFIX_MEMORY);
    if max_prefix_memory < max_prefix_bytes {
        return Err(invalid(
            "server.max_prefix_memory",
            format!(
                "must hold one prefix at least (`server.max_prefix_bytes`, {max_prefix_bytes})"
            ),
        ));
    }
    let limits = Limits {
        proxy_protocol: raw.proxy_protocol.unwrap_or(false),
        max_connections_per_ip,
        http2_max_streams,
        header_read_timeout: duration(
            "server.header_read_timeout",
            raw.header_read_timeout.as_deref(),
            DEFAULT_HEADER_READ_TIMEOUT,
        )?,
        idle_timeout: duration(
            "server.idle_timeout",
            raw.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
        )?,
        max_connections,
        shutdown_grace: duration(
            "server.shutdown_grace",
            raw.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
        )?,
    };
    let password_limits = password_limits(raw.max_pending_password_checks, raw.password_failures)?;
    Ok(ServerSettings {
        password_limits,
        linger: duration("server.linger", raw.linger.as_deref(), DEFAULT_LINGER)?,
        paths: paths(raw.paths)?,
        public_url: raw.public_url.map(public_url).transpose()?,
        trusted_proxies: allow_from("server", raw.trusted_proxies.unwrap_or_default()).map_err(
            |_| {
                invalid(
                    "server.trusted_proxies",
                    "must list addresses or CIDR networks such as \"10.0.0.0/8\"",
                )
            },
        )?,
        fault_status: match raw.fault_status {
            None | Some(RawFaultStatus::Soap) => FaultStatus::Soap,
            Some(RawFaultStatus::Http) => FaultStatus::Http,
        },
        listen: address("server.listen", raw.listen, DEFAULT_LISTEN)?,
        admin_listen: address(
            "server.admin_listen",
            raw.admin_listen,
            DEFAULT_ADMIN_LISTEN,
        )?,
        max_body_bytes,
        max_prefix_bytes: max_prefix_bytes as usize,
        prefix_timeout: duration(
            "server.prefix_timeout",
            raw.prefix_timeout.as_deref(),
            DEFAULT_PREFIX_TIMEOUT,
        )?,
        max_prefix_memory: usize::try_from(max_prefix_memory).unwrap_or(usize::MAX),
        workers,
        limits,
        tls,
    })
}

/// `server.max_pending_password_checks` and `server.password_failures`.
fn password_limits(
    max_pending: Option<u64>,
    failures: Option<raw::RawPasswordFailures>,
) -> Result<PasswordLimits, ConfigError> {
    let defaults = PasswordLimits::default();
    let max_pending = match max_pending {
        None => defaults.max_pending,
        Some(n @ 1..=100_000) => n as usize,
        Some(_) => {
            return Err(invalid(
                "server.max_pending_password_checks",
                "must be between 1 and 100000",
            ));
        }
    };
    let (per_login, per_peer) = match failures {
        None => (None, None),
        Some(raw) => (raw.per_login, raw.per_peer),
    };
    let rate = |key: &str, text: Option<String>, default: Rate| match text {
        None => Ok(default),
        Some(text) => parse_rate(&text).ok_or_else(|| {
            invalid(
                key,
                format!("`{text}` is not a rate such as \"10/m\" (a count per s, m or h)"),
            )
        }),
    };
    Ok(PasswordLimits {
        max_pending,
        per_login: rate(
            "server.password_failures.per_login",
            per_login,
            defaults.per_login,
        )?,
        per_peer: rate(
            "server.password_failures.per_peer",
            per_peer,
            defaults.per_peer,
        )?,
        ..defaults
    })
}

/// `"10/m"`: a count of at least 1 per second, minute or hour.
fn parse_rate(text: &str) -> Option<Rate> {
    let (count, unit) = text.trim().split_once('/')?;
    let count: u32 = count.trim().parse().ok().filter(|n| *n > 0)?;
    let window = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return None,
    };
    Some(Rate { count, window })
}

fn duration(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let parsed = parse_duration(text).map_err(|message| invalid(key, message))?;
    if parsed.is_zero() {
        return Err(invalid(key, "must be more than 0"));
    }
    Ok(parsed)
}

/// An `http` or `https` URL with a host. Returns scheme, authority and path without its
/// trailing slash.
fn http_url(key: &str, text: &str) -> Result<(Scheme, Authority, String), ConfigError> {
    let bad = |why: &str| invalid(key, format!("`{text}` {why}"));
    let uri: http::Uri = text.parse().map_err(|_| bad("is not a URL"))?;
    let parts = uri.into_parts();
    let scheme = parts
        .scheme
        .ok_or_else(|| bad("has no scheme (http:// or https://)"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(bad("must start with http:// or https://"));
    }
    let authority = parts.authority.ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry a user or password"));
    }
    let path = match parts.path_and_query {
        None => String::new(),
        Some(pq) if pq.query().is_some() => return Err(bad("must not have a query")),
        Some(pq) => pq.path().trim_end_matches('/').to_owned(),
    };
    Ok((scheme, authority, path))
}

/// `[upstream]` or `[upstreams.NAME]` (`key`): its nodes from `url` or `urls`, and its limits.
fn validate_upstream(
    key: &str,
    name: &str,
    raw: raw::RawUpstream,
    base_dir: &Path,
) -> Result<UpstreamSettings, ConfigError> {
    let field = |field: &str| format!("{key}.{field}");
    let (urls, urls_key) = match (raw.url, raw.urls) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                field("urls"),
                "give either `url` or `urls`, not both",
            ));
        }
        (Some(url), None) => (vec![url], field("url")),
        (None, Some(urls)) if urls.is_empty() => {
            return Err(invalid(field("urls"), "is empty: give at least one URL"));
        }
        (None, Some(urls)) => (urls, field("urls")),
        (None, None) => {
            return Err(invalid(
                field("url"),
                "missing: give `url`, or `urls` for several nodes",
            ));
        }
    };
    if urls.len() > MAX_UPSTREAM_NODES {
        return Err(invalid(
            urls_key,
            format!("{} nodes; at most {MAX_UPSTREAM_NODES}", urls.len()),
        ));
    }
    let mut nodes: Vec<NodeSettings> = Vec::with_capacity(urls.len());
    for url in &urls {
        let (scheme, authority, base_path) = http_url(&urls_key, url)?;
        let node = NodeSettings {
            scheme,
            authority,
            base_path,
        };
        if nodes.iter().any(|other| other.url() == node.url()) {
            return Err(invalid(&urls_key, format!("`{url}` is named twice")));
        }
        nodes.push(node);
    }
    let positive = |field_name: &str, value: Option<String>, default: Duration| {
        duration(&field(field_name), value.as_deref(), default)
    };
    Ok(UpstreamSettings {
        name: name.to_owned(),
        nodes,
        timeout: positive("timeout", raw.timeout, DEFAULT_UPSTREAM_TIMEOUT)?,
        connect_timeout: positive(
            "connect_timeout",
            raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        extra_roots: ca_file(&field("ca_file"), raw.ca_file, base_dir)?,
        retry_buffer_bytes: raw.retry_buffer_bytes.unwrap_or(DEFAULT_RETRY_BUFFER_BYTES),
        cooldown: positive("cooldown", raw.cooldown, DEFAULT_COOLDOWN)?,
    })
}

fn validate_ims(raw: raw::RawIms, base_dir: &Path) -> Result<ImsSettings, ConfigError> {
    let host_text = raw.host.unwrap_or_else(|| DEFAULT_IMS_HOST.to_owned());
    let (scheme, authority, path) = http_url("ims.host", &host_text)?;
    let host = format!("{scheme}://{authority}{path}");
    let endpoint = |key: &str, value: Option<String>, default_path: &str| {
        let url = value.unwrap_or_else(|| format!("{host}{default_path}"));
        http_url(key, &url)?;
        url.parse::<http::Uri>()
            .map_err(|_| invalid(key, format!("`{url}` is not a URL")))
    };
    Ok(ImsSettings {
        token_url: endpoint("ims.token_url", raw.token_url, IMS_TOKEN_PATH)?,
        exchange_url: endpoint("ims.exchange_url", raw.exchange_url, IMS_EXCHANGE_PATH)?,
        timeout: duration("ims.timeout", raw.timeout.as_deref(), DEFAULT_IMS_TIMEOUT)?,
        extra_roots: ca_file("ims.ca_file", raw.ca_file, base_dir)?,
        host,
    })
}

fn validate_profile(
    name: String,
    raw: RawProfile,
    upstreams: &[UpstreamSettings],
    base_dir: &Path,
    env: &dyn Env,
) -> Result<Profile, ConfigError> {
    let key = |field: &str| format!("profiles.{name}.{field}");
    // Keys of the other kind are refused: they would be silently ignored.
    let (kind_name, foreign) = match raw.kind {
        RawProfileType::Oauth => (
            "oauth",
            vec![
                ("org_id", raw.org_id.is_some()),
                ("technical_account_id", raw.technical_account_id.is_some()),
                ("private_key", raw.private_key.is_some()),
                ("metascopes", raw.metascopes.is_some()),
            ],
        ),
        RawProfileType::Jwt => ("jwt", vec![("scopes", raw.scopes.is_some())]),
    };
    for (field, present) in foreign {
        if present {
            return Err(invalid(
                key(field),
                format!("does not belong to `type = \"{kind_name}\"` profiles"),
            ));
        }
    }
    let required = |field: &str, value: Option<String>| {
        value
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| invalid(key(field), "missing"))
    };
    let secret = |field: &str, value: Option<SecretSource>| {
        value
            .ok_or_else(|| invalid(key(field), "missing"))?
            .resolve(base_dir, env)
            .map_err(|message| invalid(key(field), message))
    };
    let names = |field: &str, value: Option<Vec<String>>, example: &str| {
        let list = value.unwrap_or_default();
        if list.is_empty() || list.iter().any(|s| s.trim().is_empty() || s.contains(',')) {
            return Err(invalid(
                key(field),
                format!("give a list of names, e.g. {example}"),
            ));
        }
        Ok(list)
    };
    let client_id = required("client_id", raw.client_id)?;
    let client_secret = secret("client_secret", raw.client_secret)?;
    let kind = match raw.kind {
        RawProfileType::Oauth => ProfileKind::OAuth {
            client_id,
            client_secret,
            scopes: names("scopes", raw.scopes, r#"["openid", "AdobeID"]"#)?,
        },
        RawProfileType::Jwt => {
            let private_key = secret("private_key", raw.private_key)?;
            let private_key = SigningKey::read(private_key.expose().as_bytes())
                .map_err(|error| invalid(key("private_key"), error.to_string()))?;
            ProfileKind::Jwt {
                client_id,
                client_secret,
                org_id: required("org_id", raw.org_id)?,
                technical_account_id: required("technical_account_id", raw.technical_account_id)?,
                private_key,
                metascopes: names("metascopes", raw.metascopes, r#"["ent_campaign_sdk"]"#)?,
            }
        }
    };
    let upstream = raw
        .upstream
        .map(|wanted| {
            if wanted == DEFAULT_UPSTREAM {
                return Ok(None);
            }
            upstreams
                .iter()
                .position(|u| u.name == wanted)
                .map(Some)
                .ok_or_else(|| {
                    invalid(
                        key("upstream"),
                        format!("no upstream named `{wanted}` ([upstreams.{wanted}] is missing)"),
                    )
                })
        })
        .transpose()?
        .flatten();
    Ok(Profile {
        name,
        kind,
        upstream,
    })
}

/// An error about a key, with the line the key is on (unless it names one already).
pub(super) fn with_line(error: ConfigError, text: &str) -> ConfigError {
    match error {
        ConfigError::Invalid { key, message } if !message.contains("line ") => {
            let message = match line_of(text, &key) {
                Some(line) => format!("{message} (line {line})"),
                None => message,
            };
            ConfigError::Invalid { key, message }
        }
        other => other,
    }
}

/// The line of `key` (`profiles.mc.client_secret`, `callers[1].password`, `server.tls.key`)
/// in the TOML `text`: the line of its table's key that holds it.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let parts: Vec<&str> = key.split('.').collect();
    (0..parts.len()).rev().find_map(|split| {
        let table = parts[..split].join(".");
        let wanted = parts.get(split)?;
        let wanted = wanted.split('[').next().unwrap_or(wanted);
        let mut current = String::new();
        let mut arrays: HashMap<String, usize> = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
                let name = unquoted(name);
                let index = arrays.entry(name.clone()).or_insert(0);
                current = format!("{name}[{index}]");
                *index += 1;
            } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
                current = unquoted(name);
            } else if current == table
                && line
                    .split_once('=')
                    .is_some_and(|(name, _)| unquoted(name) == wanted)
            {
                return Some(number + 1);
            }
        }
        None
    })
}

/// A TOML key or table name as written, its spaces and quotes taken off.
fn unquoted(name: &str) -> String {
    name.split('.')
        .map(|part| part.trim().trim_matches('"'))
        .collect::<Vec<_>>()
        .join(".")
}

/// Names the caller an error is about, and its line, after the message.
fn about_caller(error: ConfigError, (name, line): &(String, usize)) -> ConfigError {
    match error {
        ConfigError::Invalid { key, message } => ConfigError::Invalid {
            key,
            message: format!("{message} (caller `{name}`, line {line})"),
        },
        other => other,
    }
}

/// One `[[callers]]` entry, `key` being `callers[i]`.
fn validate_caller(
    key: &str,
    raw: RawCaller,
    profiles: &[Profile],
    base_dir: &Path,
    env: &dyn Env,
) -> Result<CallerSettings, ConfigError> {
    if raw.name.get_ref().trim().is_empty() {
        return Err(invalid(format!("{key}.name"), "is empty"));
    }
    // Campaign splits `login/password` at the first slash, so a login cannot hold one.
    if raw.login.is_empty() || raw.login.contains('/') || raw.login.contains(char::is_whitespace) {
        return Err(invalid(
            format!("{key}.login"),
            "must be a non-empty operator login without `/` or spaces",
        ));
    }
    let profile = profiles
        .iter()
        .position(|p| p.name == raw.profile)
        .ok_or_else(|| {
            invalid(
                format!("{key}.profile"),
                format!(
                    "no profile named `{}` ([profiles.{}] is missing)",
                    raw.profile, raw.profile
                ),
            )
        })?;
    let logon = raw.logon.unwrap_or(false);
    let mode = caller_mode(key, raw.mode, raw.canary_percent, logon)?;
    let shadow_actions = shadow_actions(key, mode, raw.shadow_actions)?;
    let client_cert_san = raw
        .client_cert_san
        .unwrap_or_default()
        .iter()
        .map(|name| AltName::parse(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(format!("{key}.client_cert_san"), error.to_string()))?;
    let client_cert_subject = raw
        .client_cert_subject
        .as_deref()
        .map(SubjectName::parse)
        .transpose()
        .map_err(|error| invalid(format!("{key}.client_cert_subject"), error.to_string()))?;
    let allow_from = allow_from(key, raw.allow_from.unwrap_or_default())?;
    let password = password_hash(key, raw.password, base_dir, env)?;
    Ok(CallerSettings {
        name: raw.name.into_inner(),
        login: raw.login,
        password,
        profile,
        mode,
        allow_from,
        logon,
        client_cert_subject,
        client_cert_san,
        shadow_actions,
    })
}

/// Method names of calls that change something in Campaign, or that imsbridge answers itself:
/// never copied, however they are listed. A copy runs the call a second time.
const NOT_SHADOWED: [&str; 20] = [
    "Write",
    "Push",
    "Delete",
    "Insert",
    "Update",
    "Send",
    "Submit",
    "Post",
    "Start",
    "Stop",
    "Pause",
    "Resume",
    "Import",
    "Create",
    "Remove",
    "Logon",
    "Logoff",
    "Execute",
    "Prepare",
    "Duplicate",
];

/// The actions a `shadow` caller has copied the `ims` way: `ns:schema#Method`, read-only.
fn shadow_actions(
    key: &str,
    mode: Mode,
    actions: Option<Vec<String>>,
) -> Result<Vec<String>, ConfigError> {
    let key = format!("{key}.shadow_actions");
    let actions = match (mode, actions) {
        (Mode::Shadow, Some(actions)) if !actions.is_empty() => actions,
        (Mode::Shadow, _) => {
            return Err(invalid(
                key,
                "missing: mode = \"shadow\" copies these read-only actions the ims way, e.g. [\"xtk:queryDef#ExecuteQuery\", \"xtk:session#GetUserInfo\"]",
            ));
        }
        (_, None) => return Ok(Vec::new()),
        (_, Some(_)) => return Err(invalid(key, "only goes with mode = \"shadow\"")),
    };
    for action in &actions {
        let method = action
            .split_once('#')
            .filter(|(schema, method)| {
                schema.contains(':') && !method.is_empty() && !action.contains(char::is_whitespace)
            })
            .map(|(_, method)| method)
            .ok_or_else(|| {
                invalid(
                    &key,
                    format!("`{action}` is not an action such as \"xtk:queryDef#ExecuteQuery\""),
                )
            })?;
        // `ExecuteQuery` reads; any other `Execute…` may not.
        let reads = method == "ExecuteQuery";
        if !reads && let Some(verb) = NOT_SHADOWED.iter().find(|verb| method.starts_with(*verb)) {
            return Err(invalid(
                &key,
                format!(
                    "`{action}` may change Campaign (`{verb}…`): a copy would run it twice; only read-only actions are shadowed"
                ),
            ));
        }
    }
    Ok(actions)
}

/// `mode` and `canary_percent` of a caller, which go together.
fn caller_mode(
    key: &str,
    mode: Option<RawMode>,
    canary_percent: Option<f64>,
    logon: bool,
) -> Result<Mode, ConfigError> {
    match (mode, canary_percent) {
        (None | Some(RawMode::Ims), None) => Ok(Mode::Ims),
        (Some(RawMode::Legacy), None) => Ok(Mode::Legacy),
        (Some(RawMode::Shadow), None) if logon => Err(invalid(
            format!("{key}.mode"),
            "a caller that logs on (logon = true) sends Campaign's own session tokens on the legacy way, which name no technical account: use mode = \"ims\" or \"legacy\"",
        )),
        (Some(RawMode::Shadow), None) => Ok(Mode::Shadow),
        (Some(RawMode::Canary), _) if logon => Err(invalid(
            format!("{key}.mode"),
            "a caller that logs on (logon = true) sends session tokens imsbridge issued, which Campaign does not know, so its requests cannot be split: use mode = \"ims\" or \"legacy\"",
        )),
        (Some(RawMode::Canary), Some(percent)) if (0.0..=100.0).contains(&percent) => {
            Ok(Mode::Canary { percent })
        }
        (Some(RawMode::Canary), Some(_)) => Err(invalid(
            format!("{key}.canary_percent"),
            "must be between 0 and 100",
        )),
        (Some(RawMode::Canary), None) => Err(invalid(
            format!("{key}.canary_percent"),
            "missing: mode = \"canary\" sends this share of requests (0 to 100) the ims way",
        )),
        (_, Some(_)) => Err(invalid(
            format!("{key}.canary_percent"),
            "only goes with mode = \"canary\"",
        )),
    }
}

/// `[state]`.
fn state(
    raw: Option<raw::RawState>,
    base_dir: &Path,
    env: &dyn Env,
) -> Result<StateSettings, ConfigError> {
    let raw = raw.unwrap_or_default();
    let backend = match (raw.path, raw.redis) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "state",
                "path and redis are two stores: set one (path for one machine, redis for replicas)",
            ));
        }
        (Some(path), None) => StateBackend::Sqlite {
            path: base_dir.join(path),
        },
        (None, Some(source)) => {
            let url = source
                .resolve(base_dir, env)
                .map_err(|message| invalid("state.redis", message))?;
            let text = url.expose();
            // The value is never quoted: it may hold a password.
            if !(text.starts_with("redis://") || text.starts_with("rediss://"))
                || redis_url_invalid(text)
            {
                return Err(invalid(
                    "state.redis",
                    "is not a Redis URL such as \"redis://redis:6379/0\" or \"rediss://:PASSWORD@redis.example.com:6380/0\"",
                ));
            }
            let key_prefix = raw
                .key_prefix
                .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
            if key_prefix.is_empty() || key_prefix.contains(char::is_whitespace) {
                return Err(invalid(
                    "state.key_prefix",
                    "must be non-empty, without spaces (such as \"imsbridge:\")",
                ));
            }
            StateBackend::Redis { url, key_prefix }
        }
        (None, None) => StateBackend::Memory,
    };
    Ok(StateSettings {
        backend,
        flush_interval: duration(
            "state.flush_interval",
            raw.flush_interval.as_deref(),
            DEFAULT_STATE_FLUSH_INTERVAL,
        )?,
        timeout: duration(
            "state.timeout",
            raw.timeout.as_deref(),
            DEFAULT_STATE_TIMEOUT,
        )?,
        history_days: count(
            "state.history_days",
            raw.history_days,
            DEFAULT_HISTORY_DAYS,
            1..=3650,
        )? as u32,
    })
}

/// Whether redis-rs cannot read `url` as a server's address.
fn redis_url_invalid(url: &str) -> bool {
    redis::Client::open(url).is_err()
}

/// A count of `key` (`default` when unset) within `range`.
fn count(
    key: &str,
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let value = value.unwrap_or(default);
    if !range.contains(&value) {
        return Err(invalid(
            key,
            format!("must be between {} and {}", range.start(), range.end()),
        ));
    }
    Ok(value)
}

/// A `ca_file`: PEM certificates trusted beside the system's roots (none when unset).
fn ca_file(
    key: &str,
    path: Option<PathBuf>,
    base_dir: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let path = base_dir.join(path);
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(std::iter::Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// `server.public_url`: an `http` or `https` URL, maybe with a path, without a query.
fn public_url(text: String) -> Result<String, ConfigError> {
    let url: Option<http::Uri> = text.parse().ok();
    let fine = url.as_ref().is_some_and(|url| {
        matches!(url.scheme_str(), Some("http" | "https"))
            && url.authority().is_some()
            && url.query().is_none()
    });
    if !fine {
        return Err(invalid(
            "server.public_url",
            format!("`{text}` is not a URL such as \"https://imsbridge.example.com\""),
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// `server.paths`: absolute paths, the SOAP router among them.
fn paths(raw: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let Some(paths) = raw else {
        return Ok(DEFAULT_PATHS.iter().map(|p| (*p).to_owned()).collect());
    };
    if let Some(bad) = paths
        .iter()
        .find(|p| !p.starts_with('/') || p.contains(['?', '#', ' ']))
    {
        return Err(invalid(
            "server.paths",
            format!("`{bad}` is not a path such as \"/nl/jsp/ping.jsp\""),
        ));
    }
    if !paths.iter().any(|p| p == DEFAULT_PATHS[0]) {
        return Err(invalid(
            "server.paths",
            format!("must list the SOAP router, `{}`", DEFAULT_PATHS[0]),
        ));
    }
    Ok(paths)
}

/// A caller's `allow_from`: addresses or CIDR networks.
fn allow_from(key: &str, list: Vec<String>) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        format!("{key}.allow_from"),
                        format!(
                            "`{text}` is not an address or a CIDR network such as \"10.20.0.0/16\""
                        ),
                    )
                })
        })
        .collect()
}

/// A caller's `password`: an argon2 hash in PHC form (the value itself is never quoted).
fn password_hash(
    key: &str,
    source: SecretSource,
    base_dir: &Path,
    env: &dyn Env,
) -> Result<PasswordHash, ConfigError> {
    let text = source
        .resolve(base_dir, env)
        .map_err(|message| invalid(format!("{key}.password"), message))?;
    let not_argon2 = || {
        invalid(
            format!("{key}.password"),
            "is not an argon2 hash; make one with `imsbridge hash-password`",
        )
    };
    let hash = PasswordHash::new(text.expose())
        .ok()
        .filter(|hash| hash.algorithm.as_str().starts_with("argon2"))
        .ok_or_else(not_argon2)?;
    unusable(&hash).map_or(Ok(hash), |why| {
        Err(invalid(
            format!("{key}.password"),
            format!(
                "is an argon2 hash that cannot verify any password: {why}; paste the whole line `imsbridge hash-password` printed"
            ),
        ))
    })
}

/// Why an argon2 hash in PHC form could never verify a password (every call of its caller
/// would be refused as a wrong password), if it could not.
fn unusable(hash: &PasswordHash) -> Option<&'static str> {
    if argon2::Algorithm::try_from(hash.algorithm.as_str()).is_err() {
        return Some("the algorithm is not argon2id, argon2i or argon2d");
    }
    if hash
        .version
        .is_some_and(|version| argon2::Version::try_from(version).is_err())
    {
        return Some("the version (v=) is not one argon2 knows");
    }
    if argon2::Params::try_from(hash).is_err() {
        return Some("its cost parameters (m=, t=, p=) are out of range");
    }
    match (&hash.salt, &hash.hash) {
        (None, _) => Some("it has no salt (it looks cut short)"),
        (_, None) => Some("it has no hash after the salt (it looks cut short)"),
        (_, Some(output)) if output.len() < 4 => Some("its hash part is too short"),
        _ => None,
    }
}
