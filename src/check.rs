//! `imsbridge check`: before cutting over (step 7 of Adobe's "Migration of technical users to
//! Adobe Developer console"), show that the config is valid,
//! that IMS gives every profile a token, and, with `--probe`, that Campaign accepts it.
//!
//! For each profile it prints a table: the kind, the result, the expiry, and the access token's
//! own claims decoded without verification (client id, technical account, scopes, created,
//! expires): never the token itself. IMS's `error` and `error_description` are shown when it
//! refuses. The probe sends one harmless authenticated call, `xtk:session#GetUserInfo`; that
//! first call is also what makes the technical operator appear in Campaign (step 9 there).

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Limited};

use crate::body::UpstreamBody;
use crate::config::{Config, Profile, ProfileKind, UpstreamSettings};
use crate::connect::{Egress, TlsSetupError, https_connector, system_roots};
use crate::dates::utc;
use crate::ims::{ImsClient, ImsError, Source, Token, TokenSource};
use crate::soap::SOAP_ROUTER_PATH;
use crate::upstream::{AttemptCounters, Upstream};
use prometheus_client::metrics::histogram::Histogram;

/// The harmless call of `--probe`: who am I?
const PROBE_ACTION: &str = "xtk:session#GetUserInfo";
const PROBE_ENVELOPE: &str = "<?xml version='1.0' encoding='utf-8'?>\n\
    <SOAP-ENV:Envelope xmlns:SOAP-ENV='http://schemas.xmlsoap.org/soap/envelope/' \
    xmlns:ns='urn:xtk:session'>\n\
    <SOAP-ENV:Body><ns:GetUserInfo><ns:sessiontoken></ns:sessiontoken></ns:GetUserInfo>\
    </SOAP-ENV:Body>\n</SOAP-ENV:Envelope>\n";
/// Campaign's answer to the probe is small; more is not read.
const MAX_PROBE_ANSWER: usize = 1024 * 1024;

/// The warning every `jwt` profile gets.
pub const JWT_RETIRED: &str = "JWT (Service Account) credentials are retired by Adobe: none are \
created since June 2024, and Adobe converts them to OAuth Server-to-Server by March 2026. To \
move this profile, add an OAuth Server-to-Server credential to its Developer Console project \
(or use the one Adobe converted), then set type = \"oauth\", that credential's client_id and \
client_secret, and its scopes (e.g. [\"openid\", \"AdobeID\", \
\"additional_info.projectedProductContext\"]); remove org_id, technical_account_id, \
private_key and metascopes, and run `imsbridge check --probe` again.";

/// Checks every profile; writes the tables to `out`. True when every profile passed.
pub async fn run(
    config: &Config,
    probe: bool,
    out: &mut (dyn Write + Send),
) -> Result<bool, CheckError> {
    let roots = system_roots();
    let egress = Egress::new(
        config
            .egress
            .proxy
            .as_ref()
            .map(super::secret::Secret::expose),
        &config.egress.no_proxy,
    );
    let ims_roots = [roots.as_slice(), &config.ims.extra_roots].concat();
    let ims = ImsClient::new(
        https_connector(&ims_roots, Some(config.ims.timeout), &egress)?,
        config.ims.timeout,
    );
    let upstreams = if probe {
        // The counts of a check are not kept anywhere.
        let attempts = |_: &str, _: &str| AttemptCounters::default();
        config
            .all_upstreams()
            .map(|settings| {
                let first_byte = Histogram::new([1.0]);
                Upstream::new(settings, &roots, &egress, &attempts, first_byte, 1)
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    writeln!(
        out,
        "config: valid ({}, {}, unknown_callers = \"{}\")\n",
        count(config.profiles.len(), "profile"),
        count(config.callers.len(), "caller"),
        config.unknown_callers.as_str()
    )?;
    write_routes(config, &egress, out)?;
    let mut failed = 0;
    for profile in &config.profiles {
        let upstream = upstreams.get(profile.upstream_index());
        let rows = check_profile(profile, config, &ims, upstream).await;
        if rows.iter().any(|(name, _)| *name == "FAILED") {
            failed += 1;
        }
        writeln!(out, "profile {}", profile.name)?;
        for (name, value) in rows {
            writeln!(out, "  {name:<11} {value}")?;
        }
        writeln!(out)?;
    }
    if failed == 0 {
        match config.profiles.len() {
            1 => writeln!(out, "the profile passed")?,
            n => writeln!(out, "all {n} profiles passed")?,
        }
    } else {
        writeln!(
            out,
            "{failed} of {} FAILED",
            count(config.profiles.len(), "profile")
        )?;
    }
    Ok(failed == 0)
}

/// The way out to IMS and to each node of each Campaign: straight, or through which proxy
/// (without its credentials); then each upstream's nodes.
fn write_routes(config: &Config, egress: &Egress, out: &mut dyn Write) -> io::Result<()> {
    let route = |url: &http::Uri| {
        egress
            .route(url)
            .map_or("direct".to_owned(), |proxy| format!("through {proxy}"))
    };
    writeln!(out, "route to IMS: {}", route(&config.ims.token_url))?;
    let upstreams: Vec<&UpstreamSettings> = config.all_upstreams().collect();
    let nodes: Vec<Vec<(String, String)>> = upstreams
        .iter()
        .map(|upstream| {
            upstream
                .nodes
                .iter()
                .map(|node| {
                    let url = http::Uri::builder()
                        .scheme(node.scheme.clone())
                        .authority(node.authority.clone())
                        .path_and_query("/")
                        .build()
                        .map_or_else(|_| "direct".to_owned(), |url| route(&url));
                    (node.url(), url)
                })
                .collect()
        })
        .collect();
    let first = &nodes[0][0].1;
    let uniform = nodes.iter().flatten().all(|(_, route)| route == first);
    if uniform {
        writeln!(out, "route to Campaign: {first}")?;
    } else {
        writeln!(out, "route to Campaign: by node, below")?;
    }
    for (upstream, nodes) in upstreams.iter().zip(&nodes) {
        let listed: Vec<String> = nodes
            .iter()
            .map(|(url, route)| match uniform {
                true => url.clone(),
                false => format!("{url} ({route})"),
            })
            .collect();
        let spread = match nodes.len() {
            1 => String::new(),
            n => format!(
                "; {n} nodes, a failed one skipped for {}",
                human(upstream.cooldown)
            ),
        };
        writeln!(
            out,
            "upstream {}: {}{spread}",
            upstream.name,
            listed.join(", ")
        )?;
    }
    writeln!(out)
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("writing the report: {0}")]
    Io(#[from] io::Error),
}

type Rows = Vec<(&'static str, String)>;

async fn check_profile(
    profile: &Profile,
    config: &Config,
    ims: &ImsClient,
    upstream: Option<&Upstream>,
) -> Rows {
    let kind = match &profile.kind {
        ProfileKind::OAuth { .. } => "oauth (OAuth Server-to-Server)",
        ProfileKind::Jwt { .. } => "jwt (Service Account, retired by Adobe)",
    };
    let mut rows: Rows = vec![("kind", kind.to_owned())];
    if let Some(named) = profile.upstream {
        rows.push(("upstream", config.upstreams[named].name.clone()));
    }
    let source = Source::for_profile(profile, &config.ims, ims.clone());
    let asked_at = tokio::time::Instant::now();
    match source.fetch().await {
        Err(error) => {
            rows.push(("FAILED", error.to_string()));
            if let Some(hint) = hint(&error, &profile.kind) {
                rows.push(("hint", hint.to_owned()));
            }
        }
        Ok(fetched) => {
            rows.push((
                "token",
                format!(
                    "ok, expires in {} (at {})",
                    human(fetched.expires_in),
                    utc(SystemTime::now() + fetched.expires_in)
                ),
            ));
            rows.extend(claims(fetched.access_token.expose()));
            if let Some(upstream) = upstream {
                match Token::new(fetched.access_token.expose(), asked_at + fetched.expires_in) {
                    Ok(token) => match probe_campaign(upstream, token.bearer()).await {
                        Ok(said) => rows.push(("probe", said)),
                        Err(said) => rows.push(("FAILED", format!("probe: {said}"))),
                    },
                    Err(error) => rows.push(("FAILED", error.to_string())),
                }
            }
        }
    }
    if matches!(profile.kind, ProfileKind::Jwt { .. }) {
        rows.push(("warning", JWT_RETIRED.to_owned()));
    }
    rows
}

/// What to look at when IMS refuses.
fn hint(error: &ImsError, kind: &ProfileKind) -> Option<&'static str> {
    let jwt = matches!(kind, ProfileKind::Jwt { .. });
    match error {
        ImsError::Refused { error, .. } => match error.as_str() {
            "invalid_client" => Some("check client_id and client_secret (was the secret rotated?)"),
            "invalid_scope" if jwt => {
                Some("the metascopes are not granted to the credential's product profiles")
            }
            "invalid_scope" => {
                Some("the scopes are not those of the credential in the Developer Console")
            }
            "invalid_signature" => Some(
                "the private key does not match the public key (certificate) of the credential",
            ),
            "invalid_token" => Some(
                "IMS refused the JWT: check org_id, technical_account_id and this machine's clock",
            ),
            _ => None,
        },
        ImsError::Unreachable(_) | ImsError::Timeout(_) => Some(
            "check ims.host (and ims.token_url / ims.exchange_url) and the network path to IMS",
        ),
        ImsError::Malformed(_) => {
            Some("the endpoint answered, but not as IMS does: check the IMS URLs")
        }
    }
}

/// The access token's claims, decoded without verification: who it is for, what it allows,
/// when it was made and until when.
fn claims(token: &str) -> Rows {
    let Some(claims) = crate::ims::claims::decode(token) else {
        return vec![("claims", "none readable (not a JWT)".to_owned())];
    };
    let text = |name: &str| crate::ims::claims::text(&claims, name);
    let millis = |name: &str| crate::ims::claims::millis(&claims, name);
    let mut rows: Rows = Vec::new();
    for (row, claim) in [
        ("client_id", "client_id"),
        ("account", "user_id"),
        ("type", "type"),
    ] {
        if let Some(value) = text(claim) {
            rows.push((row, value));
        }
    }
    if let Some(scope) = text("scope") {
        rows.push(("scopes", scope.split(',').collect::<Vec<_>>().join(", ")));
    }
    if let Some(created) = millis("created_at") {
        let created = UNIX_EPOCH + Duration::from_millis(created);
        rows.push(("created", utc(created)));
        if let Some(lifetime) = millis("expires_in") {
            rows.push(("expires", utc(created + Duration::from_millis(lifetime))));
        }
    }
    rows
}

/// Sends `xtk:session#GetUserInfo` with the token; says what Campaign answered.
async fn probe_campaign(upstream: &Upstream, bearer: &HeaderValue) -> Result<String, String> {
    let body = Bytes::from_static(PROBE_ENVELOPE.as_bytes());
    let length = body.len() as u64;
    let request = Request::post(SOAP_ROUTER_PATH)
        .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .header("soapaction", PROBE_ACTION)
        .header(header::AUTHORIZATION, bearer)
        .header(header::CONTENT_LENGTH, length)
        .body(UpstreamBody::new(
            [body],
            None,
            0,
            length,
            Some(length),
            Duration::from_secs(10),
        ))
        .map_err(|e| e.to_string())?;
    let response = upstream.send(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_owned();
    let answer = Limited::new(response.into_body(), MAX_PROBE_ANSWER)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    if !status.is_success() {
        let detail = element_text(&answer, "detail")
            .or_else(|| element_text(&answer, "faultstring"))
            .unwrap_or_else(|| "no SOAP fault in the answer".to_owned());
        let mut said = format!("{} answered HTTP {status}: {detail}", called(upstream));
        if status == http::StatusCode::NOT_FOUND {
            said.push_str(&not_found_hint(upstream));
        }
        return Err(said);
    }
    // Any server says 200: Campaign says who the call ran as.
    match attribute(&answer, "userInfo", "login").filter(|_| answer.contains("GetUserInfoResponse"))
    {
        Some(login) => Ok(format!(
            "Campaign answered {PROBE_ACTION} (HTTP {status}): the call ran as operator \"{login}\""
        )),
        None => Err(format!(
            "HTTP {status}, but not Campaign's answer to {PROBE_ACTION} (no GetUserInfoResponse naming an operator): {}",
            glimpse(&content_type, &answer, bearer)
        )),
    }
}

/// The URL the probe was sent to: `POST URL`, or the URLs of the nodes it could have gone to.
fn called(upstream: &Upstream) -> String {
    let urls: Vec<String> = upstream
        .health()
        .map(|node| format!("{}{SOAP_ROUTER_PATH}", node.node))
        .collect();
    match urls.as_slice() {
        [url] => format!("POST {url}"),
        _ => format!("POST to one of {}", urls.join(", ")),
    }
}

/// Why Campaign's SOAP router may not be where the probe went: the usual cause named.
fn not_found_hint(upstream: &Upstream) -> String {
    let doubled = upstream
        .health()
        .any(|node| node.node.trim_end_matches('/').ends_with(SOAP_ROUTER_PATH));
    if doubled {
        format!(
            "; the upstream URL already ends in {SOAP_ROUTER_PATH}, which imsbridge adds to it: give Campaign's address alone (upstream.url = \"https://mycompany-mc.campaign.adobe.com\")"
        )
    } else {
        format!(
            "; is this Campaign's address? imsbridge adds {SOAP_ROUTER_PATH} to upstream.url, which holds the scheme, the host and the path before /nl/jsp only"
        )
    }
}

/// What came back instead, in a line: its type, its size and its start, never the token (a
/// server that echoes requests would show it).
fn glimpse(content_type: &str, answer: &str, bearer: &HeaderValue) -> String {
    let token = bearer
        .to_str()
        .ok()
        .and_then(|b| b.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty());
    let shown = match token {
        Some(token) => answer.replace(token, "****"),
        None => answer.to_owned(),
    };
    let start: String = shown
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect();
    format!(
        "{content_type}, {} bytes: `{}`{}",
        answer.len(),
        start.trim(),
        if shown.chars().count() > 120 {
            "…"
        } else {
            ""
        }
    )
}

/// The value of `attribute` on the first `<element …>` of a small answer.
fn attribute(xml: &str, element: &str, attribute: &str) -> Option<String> {
    let start = xml.find(&format!("<{element} "))?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    let at = tag.find(&format!(" {attribute}="))? + attribute.len() + 2;
    let quote = tag[at..].chars().next()?;
    let value = &tag[at + 1..];
    Some(value[..value.find(quote)?].to_owned())
}

/// The text of the first `<element …>…</element>` of a small answer.
fn element_text(xml: &str, element: &str) -> Option<String> {
    let start = xml.find(&format!("<{element}"))?;
    let open_end = start + xml[start..].find('>')? + 1;
    let close = open_end + xml[open_end..].find(&format!("</{element}>"))?;
    Some(xml[open_end..close].trim().to_owned())
}

/// `1 profile`, `2 profiles`.
fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// `23h 59m 59s`.
fn human(duration: Duration) -> String {
    let s = duration.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, s) => format!("{h}h {m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn durations() {
        assert_eq!(human(Duration::from_secs(86_399)), "23h 59m 59s");
        assert_eq!(human(Duration::from_secs(61)), "1m 1s");
        assert_eq!(human(Duration::from_millis(3000)), "3s");
    }

    #[test]
    fn reads_campaign_answers() {
        let ok = "<GetUserInfoResponse><pUserInfo><userInfo login='tech@techacct.adobe.com' loginId='1'/></pUserInfo></GetUserInfoResponse>";
        assert_eq!(
            attribute(ok, "userInfo", "login").as_deref(),
            Some("tech@techacct.adobe.com")
        );
        assert_eq!(attribute(ok, "userInfo", "locale"), None);
        let fault = "<SOAP-ENV:Fault><faultcode>SOAP-ENV:Client</faultcode><detail xsi:type='xsd:string'>XSV-350114 no</detail></SOAP-ENV:Fault>";
        assert_eq!(
            element_text(fault, "detail").as_deref(),
            Some("XSV-350114 no")
        );
    }

    #[test]
    fn claims_of_an_ims_token() {
        let claims_json = r#"{"client_id":"abc","user_id":"X@techacct.adobe.com","type":"access_token","scope":"openid,AdobeID","created_at":"1795316706000","expires_in":"86400000"}"#;
        let token = format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(claims_json));
        let rows = claims(&token);
        assert_eq!(
            rows,
            vec![
                ("client_id", "abc".to_owned()),
                ("account", "X@techacct.adobe.com".to_owned()),
                ("type", "access_token".to_owned()),
                ("scopes", "openid, AdobeID".to_owned()),
                ("created", "2026-11-22 03:05:06 UTC".to_owned()),
                ("expires", "2026-11-23 03:05:06 UTC".to_owned()),
            ]
        );
        assert_eq!(claims("opaque-token")[0].1, "none readable (not a JWT)");
    }
}
