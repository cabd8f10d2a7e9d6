use super::*;
use std::collections::HashMap;

const HASH: &str =
    "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$Yh3lC1/lPE0Fl8f+FEybn+lCBjgnG1H5Bx1RERCWxRw";

fn env() -> HashMap<String, String> {
    HashMap::from([("MC_SECRET".to_owned(), "from-env".to_owned())])
}

fn config(extra: &str) -> String {
    format!(
        r#"
[upstream]
url = "https://campaign.example.com"

[profiles.marketing]
type = "oauth"
client_id = "abc"
client_secret = {{ env = "MC_SECRET" }}
scopes = ["openid", "AdobeID"]

[[callers]]
name = "crm-events"
login = "mc"
password = "{HASH}"
profile = "marketing"
{extra}
"#
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("."), &env())
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

/// Each config is refused with a message holding its expected text.
fn assert_refused(cases: &[(String, &str)]) {
    for (text, expected) in cases {
        let message = error(text);
        assert!(
            message.contains(expected),
            "expected `{expected}` in: {message}"
        );
    }
}

#[test]
fn defaults() {
    let config = parse(&config("")).unwrap();
    assert_eq!(config.unknown_callers, UnknownCallers::Reject);
    assert_eq!(config.server.listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(
        config.server.admin_listen,
        DEFAULT_ADMIN_LISTEN.parse().unwrap()
    );
    assert_eq!(config.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(config.server.max_prefix_bytes, 64 * 1024);
    assert_eq!(config.server.workers, None);
    assert_eq!(
        config.server.limits.header_read_timeout,
        Duration::from_secs(30)
    );
    assert_eq!(config.server.limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.server.limits.max_connections, 10_000);
    assert_eq!(config.server.limits.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.upstream.retry_buffer_bytes, 1024 * 1024);
    assert_eq!(config.upstream.timeout, DEFAULT_UPSTREAM_TIMEOUT);
    assert_eq!(
        config.upstream.nodes[0].authority.as_str(),
        "campaign.example.com"
    );
    assert_eq!(config.upstream.nodes[0].base_path, "");
    assert_eq!(config.ims.host, DEFAULT_IMS_HOST);
    assert_eq!(
        config.ims.token_url,
        "https://ims-na1.adobelogin.com/ims/token/v3"
    );
    assert_eq!(
        config.ims.exchange_url,
        "https://ims-na1.adobelogin.com/ims/exchange/jwt"
    );
    let ProfileKind::OAuth {
        client_secret,
        scopes,
        ..
    } = &config.profiles[0].kind
    else {
        panic!("an oauth profile")
    };
    assert_eq!(client_secret.expose(), "from-env");
    assert_eq!(scopes, &["openid", "AdobeID"]);
    assert_eq!(config.callers[0].mode, Mode::Ims);
    assert_eq!(config.callers[0].profile, 0);
}

#[test]
fn the_documented_example_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/imsbridge.toml"
    ))
    .unwrap();
    let env = HashMap::from([
        ("MC_CLIENT_SECRET".to_owned(), "x".to_owned()),
        (
            "SESSION_SECRET".to_owned(),
            "0123456789abcdef0123456789abcdef".to_owned(),
        ),
    ]);
    let config = Config::parse(&text, Path::new(env!("CARGO_MANIFEST_DIR")), &env).unwrap();
    assert_eq!(config.callers.len(), 4);
    assert_eq!(config.callers[1].mode, Mode::Canary { percent: 10.0 });
    assert_eq!(config.callers[3].mode, Mode::Shadow);
    assert!(config.callers[0].logon);
    assert_eq!(config.server.workers, Some(2));
    assert_eq!(config.upstream.timeout, Duration::from_secs(60));
}

#[test]
fn every_setting() {
    let text = format!(
        r#"unknown_callers = "legacy"
[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:19090"
max_body_bytes = 1000000
max_prefix_bytes = 4096
workers = 1
header_read_timeout = "5s"
idle_timeout = "2s"
max_connections = 64
shutdown_grace = "3s"
{}
[ims]
host = "https://ims-eu1.adobelogin.com/"
token_url = "http://127.0.0.1:1/token"
timeout = "250ms"
"#,
        config("mode = \"legacy\"")
            .replace(
                "https://campaign.example.com",
                "http://10.0.0.1:8080/campaign/"
            )
            .replace(
                "[upstream]",
                "[upstream]\ntimeout = \"30s\"\nconnect_timeout = \"2s\"\nretry_buffer_bytes = 0"
            )
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.unknown_callers, UnknownCallers::Legacy);
    assert_eq!(config.server.listen.port(), 18080);
    assert_eq!(config.server.max_body_bytes, 1_000_000);
    assert_eq!(config.server.max_prefix_bytes, 4096);
    assert_eq!(config.server.workers, Some(1));
    assert_eq!(
        config.server.limits.header_read_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(config.server.limits.idle_timeout, Duration::from_secs(2));
    assert_eq!(config.server.limits.max_connections, 64);
    assert_eq!(config.server.limits.shutdown_grace, Duration::from_secs(3));
    assert_eq!(config.upstream.retry_buffer_bytes, 0);
    assert_eq!(config.upstream.nodes[0].scheme, Scheme::HTTP);
    assert_eq!(config.upstream.nodes[0].base_path, "/campaign");
    assert_eq!(config.upstream.timeout, Duration::from_secs(30));
    assert_eq!(config.upstream.connect_timeout, Duration::from_secs(2));
    assert_eq!(config.ims.host, "https://ims-eu1.adobelogin.com");
    assert_eq!(config.ims.token_url, "http://127.0.0.1:1/token");
    assert_eq!(
        config.ims.exchange_url,
        "https://ims-eu1.adobelogin.com/ims/exchange/jwt"
    );
    assert_eq!(config.ims.timeout, Duration::from_millis(250));
    assert_eq!(config.callers[0].mode, Mode::Legacy);
}

#[test]
fn unknown_keys_are_named() {
    let text = config("").replace("[upstream]", "[upstream]\nurll = \"x\"");
    let message = error(&text);
    assert!(message.contains("unknown field `urll`"), "{message}");
    let message = error(&format!("listen = \"x\"\n{}", config("")));
    assert!(message.contains("unknown field `listen`"), "{message}");
    let message = error(&config("colour = \"blue\""));
    assert!(message.contains("unknown field `colour`"), "{message}");
}

#[test]
fn syntax_errors_fit_on_one_line_and_never_quote_the_value() {
    let text = config("").replace("url = \"https://campaign.example.com\"", "url = 42");
    let message = error(&text);
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.starts_with("invalid config: line 3, `url`: invalid type: integer"),
        "{message}"
    );
    let secret = config("").replace("{ env = \"MC_SECRET\" }", "[\"very-secret-value\"]");
    let message = error(&secret);
    assert!(message.contains("`client_secret`"), "{message}");
    assert!(!message.contains("very-secret-value"), "{message}");
}

#[test]
fn invalid_values_are_named() {
    let cases = [
        (
            config("").replace("https://campaign.example.com", "ftp://x"),
            "upstream.url",
        ),
        (
            config("").replace("https://campaign.example.com", "https://u:p@x"),
            "upstream.url",
        ),
        (
            config("").replace("[upstream]", "[upstream]\ntimeout = \"60\""),
            "upstream.timeout: `60` has no unit",
        ),
        (
            config("").replace("[upstream]", "[upstream]\ntimeout = \"0s\""),
            "upstream.timeout: must be more than 0",
        ),
        (
            format!("[server]\nlisten = \"8080\"\n{}", config("")),
            "server.listen",
        ),
        (
            format!("[server]\nworkers = 0\n{}", config("")),
            "server.workers",
        ),
        (
            format!("[server]\nmax_prefix_bytes = 10\n{}", config("")),
            "server.max_prefix_bytes",
        ),
        (
            config("").replace("marketing\"\n", "nope\"\n"),
            "callers[0].profile: no profile named `nope`",
        ),
        (
            config("").replace(HASH, "plain-text-password"),
            "callers[0].password: is not an argon2 hash",
        ),
        (
            config("").replace("login = \"mc\"", "login = \"m/c\""),
            "callers[0].login",
        ),
        (
            config("").replace("MC_SECRET", "UNSET_VAR"),
            "profiles.marketing.client_secret: environment variable UNSET_VAR is not set",
        ),
        (
            config("").replace("{ env = \"MC_SECRET\" }", "\"\""),
            "profiles.marketing.client_secret: is empty",
        ),
        (
            config("").replace(
                "{ env = \"MC_SECRET\" }",
                "{ file = \"/nonexistent/secret\" }",
            ),
            "profiles.marketing.client_secret: cannot read /nonexistent/secret",
        ),
        (
            config("").replace("scopes = [\"openid\", \"AdobeID\"]", "scopes = []"),
            "profiles.marketing.scopes",
        ),
        (
            config("").replace("client_id = \"abc\"\n", ""),
            "profiles.marketing.client_id: missing",
        ),
        (
            config("").replace("[upstream]\nurl = \"https://campaign.example.com\"", ""),
            "upstream: missing",
        ),
        (
            format!(
                "{}\n{}",
                config(""),
                "[[callers]]\nname = \"crm-events\"\nlogin = \"x\"\npassword = \"p\"\nprofile = \"marketing\""
            ),
            "callers[1].name: `crm-events` names two callers",
        ),
        (
            config("mode = \"sometimes\""),
            "unknown variant `sometimes`",
        ),
        (
            format!("unknown_callers = \"maybe\"\n{}", config("")),
            "unknown variant `maybe`",
        ),
    ];
    assert_refused(&cases);
}

/// A CA, a server certificate for 127.0.0.1 and its key, written as PEM files in `dir`.
fn write_tls_files(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("clients.pem"), ca.pem()).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("other.key"), other.serialize_pem()).unwrap();
}

#[test]
fn tls_and_client_certificates() {
    let dir = std::env::temp_dir().join(format!("imsbridge-config-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_tls_files(&dir);
    let tls = |table: &str, caller: &str| format!("[server]\ntls = {table}\n{}", config(caller));
    let parse_in = |text: &str| Config::parse(text, &dir, &env());
    let plain = parse_in(&tls(
        r#"{ cert = "server.pem", key = { file = "server.key" } }"#,
        "",
    ))
    .unwrap();
    assert!(!plain.server.tls.unwrap().mutual);
    let mutual = parse_in(&tls(
        r#"{ cert = "server.pem", key = { file = "server.key" }, client_ca = "clients.pem" }"#,
        "client_cert_subject = \"CN=crm-pusher,O=Example\"",
    ))
    .unwrap();
    assert!(mutual.server.tls.unwrap().mutual);
    assert_eq!(
        mutual.callers[0]
            .client_cert_subject
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("CN=crm-pusher,O=Example")
    );

    let refused = |text: String, expected: &str| {
        let message = parse_in(&text).unwrap_err().to_string();
        assert!(message.contains(expected), "`{expected}` not in: {message}");
    };
    refused(
        tls(
            r#"{ cert = "missing.pem", key = { file = "server.key" } }"#,
            "",
        ),
        "server.tls: cert: ",
    );
    refused(
        tls(
            r#"{ cert = "server.pem", key = { file = "other.key" } }"#,
            "",
        ),
        "server.tls: key: does not go with the certificate",
    );
    refused(
        tls(r#"{ cert = "server.pem", key = "not a key" }"#, ""),
        "server.tls: key: not a PEM private key",
    );
    refused(
        tls(
            r#"{ cert = "server.pem", key = { file = "server.key" } }"#,
            "client_cert_subject = \"CN=x\"",
        ),
        "callers[0].client_cert_subject: needs client certificates",
    );
    // A subject or a name that cannot be read is refused at load, naming the caller and its
    // line (its `name` is on line 14 of this text).
    let mutual_with = |caller: &str| {
        tls(
            r#"{ cert = "server.pem", key = { file = "server.key" }, client_ca = "clients.pem" }"#,
            caller,
        )
    };
    for (caller, expected) in [
        (
            "client_cert_subject = \"nonsense\"",
            "callers[0].client_cert_subject: `nonsense` is not TYPE=value",
        ),
        (
            "client_cert_subject = \"CN=crm,Org=Example\"",
            "callers[0].client_cert_subject: `Org` is not an attribute type",
        ),
        (
            "client_cert_subject = \"CN=crm,2.5.4.=Example\"",
            "callers[0].client_cert_subject: `2.5.4.` is not a numeric OID",
        ),
        (
            "client_cert_subject = \"CN=crm,1.40.3=x\"",
            "`1.40.3` is not a numeric OID",
        ),
        (
            "client_cert_subject = \"CN=crm,02.5.4.3=x\"",
            "`02.5.4.3` is not a numeric OID",
        ),
        (
            "client_cert_subject = \"\"",
            "client_cert_subject: is empty",
        ),
        (
            "client_cert_subject = \"CN=crm,,O=x\"",
            "client_cert_subject: holds an empty attribute",
        ),
        (
            "client_cert_subject = \"CN=crm\\\\\"",
            "client_cert_subject: the value of `CN` ends with a lone `\\`",
        ),
        (
            "client_cert_subject = \"CN=#0c\"",
            "the value of `CN` after `#` is not the hex of an encoded string",
        ),
        (
            "client_cert_san = [\"dns:crm.example.com\", \"spiffe://x\"]",
            "callers[0].client_cert_san: `spiffe://x` is not a name such as",
        ),
        (
            "client_cert_san = [\"ip:10.1.2\"]",
            "`ip:10.1.2` is not a name",
        ),
        (
            "client_cert_san = [\"email:crm\"]",
            "`email:crm` is not a name",
        ),
        ("client_cert_san = [\"dns:\"]", "`dns:` is not a name"),
    ] {
        refused(mutual_with(caller), expected);
        refused(mutual_with(caller), "(caller `crm-events`, line 14)");
    }
    let debug = format!(
        "{mutual:?}",
        mutual = parse_in(&tls(
            r#"{ cert = "server.pem", key = { file = "server.key" } }"#,
            ""
        ))
        .unwrap()
    );
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    std::fs::remove_dir_all(&dir).unwrap();
}

const SESSIONS: &str = "[sessions]\nsecret = \"0123456789abcdef0123456789abcdef\"\n";

#[test]
fn modes_networks_and_sessions() {
    let config_of = |top: &str, caller: &str| parse(&format!("{top}\n{}", config(caller))).unwrap();
    let canary = config_of("", "mode = \"canary\"\ncanary_percent = 12.5");
    assert_eq!(canary.callers[0].mode, Mode::Canary { percent: 12.5 });
    let whole = config_of("", "mode = \"canary\"\ncanary_percent = 10");
    assert_eq!(whole.callers[0].mode, Mode::Canary { percent: 10.0 });
    let networks = config_of(
        "",
        "allow_from = [\"10.20.0.0/16\", \"192.0.2.7\", \"2001:db8::/32\"]",
    );
    assert_eq!(networks.callers[0].allow_from.len(), 3);
    assert_eq!(
        networks.callers[0].allow_from[1].to_string(),
        "192.0.2.7/32"
    );
    let sessions = config_of(&format!("{SESSIONS}ttl = \"8h\""), "logon = true");
    assert!(sessions.callers[0].logon);
    let settings = sessions.sessions.unwrap();
    assert_eq!(settings.ttl, Duration::from_secs(8 * 3600));
    assert_eq!(settings.secret.expose().len(), 32);
    assert_eq!(
        config_of(SESSIONS, "").sessions.unwrap().ttl,
        DEFAULT_SESSION_TTL
    );
    // A caller that logs on may stay legacy without [sessions]: Campaign answers its Logon.
    assert!(
        !config_of("", "logon = true\nmode = \"legacy\"").callers[0]
            .mode
            .eq(&Mode::Ims)
    );
}

#[test]
fn modes_networks_and_sessions_are_checked() {
    let cases = [
        (
            config("mode = \"canary\""),
            "callers[0].canary_percent: missing",
        ),
        (
            config("mode = \"canary\"\ncanary_percent = 120"),
            "callers[0].canary_percent: must be between 0 and 100",
        ),
        (
            config("canary_percent = 10"),
            "callers[0].canary_percent: only goes with mode = \"canary\"",
        ),
        (
            format!(
                "{SESSIONS}{}",
                config("mode = \"canary\"\ncanary_percent = 10\nlogon = true")
            ),
            "callers[0].mode: a caller that logs on (logon = true) sends session tokens imsbridge issued",
        ),
        (
            config("allow_from = [\"10.0.0.0/33\"]"),
            "callers[0].allow_from: `10.0.0.0/33` is not an address or a CIDR",
        ),
        (
            config("allow_from = [\"crm.example.com\"]"),
            "callers[0].allow_from",
        ),
        (
            config("logon = true"),
            "sessions: missing: callers[0] logs on (logon = true)",
        ),
        (
            format!("[sessions]\nsecret = \"too-short\"\n{}", config("")),
            "sessions.secret: must be at least 32 characters",
        ),
        (
            format!("[sessions]\nsecret = {{ env = \"NOPE\" }}\n{}", config("")),
            "sessions.secret: environment variable NOPE is not set",
        ),
        (
            format!("{SESSIONS}ttl = \"forever\"\n{}", config("")),
            "sessions.ttl",
        ),
    ];
    assert_refused(&cases);
}

#[test]
fn secrets_from_files_and_literals() {
    let dir = std::env::temp_dir().join(format!("imsbridge-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret.txt"), "from-file\r\n").unwrap();
    std::fs::write(dir.join("hash.txt"), format!("{HASH}\n")).unwrap();
    let text = config("")
        .replace("{ env = \"MC_SECRET\" }", "{ file = \"secret.txt\" }")
        .replace(&format!("\"{HASH}\""), "{ file = \"hash.txt\" }");
    let parsed = Config::parse(&text, &dir, &env()).unwrap();
    let ProfileKind::OAuth { client_secret, .. } = &parsed.profiles[0].kind else {
        panic!("an oauth profile")
    };
    assert_eq!(client_secret.expose(), "from-file");
    let literal = config("").replace("{ env = \"MC_SECRET\" }", "\"literal\"");
    let parsed = parse(&literal).unwrap();
    let ProfileKind::OAuth { client_secret, .. } = &parsed.profiles[0].kind else {
        panic!("an oauth profile")
    };
    assert_eq!(client_secret.expose(), "literal");
    let bad = config("").replace("{ env = \"MC_SECRET\" }", "{ vault = \"x\" }");
    assert!(
        error(&bad).contains("unknown field `vault`"),
        "{}",
        error(&bad)
    );
    let both = config("").replace("{ env = \"MC_SECRET\" }", "{ env = \"A\", file = \"b\" }");
    assert!(
        error(&both).contains("exactly one of `env` or `file`"),
        "{}",
        error(&both)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn debug_output_holds_no_secret() {
    let text = config("").replace("{ env = \"MC_SECRET\" }", "\"very-secret-value\"");
    let config = parse(&text).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("very-secret-value"), "{debug}");
    assert!(!debug.contains(HASH), "{debug}");
    assert!(debug.contains("****"));
}

const TEST_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/keys/test-service-account.key"
);

fn jwt_config(profile_lines: &str) -> String {
    config("").replace(
        "type = \"oauth\"\nclient_id = \"abc\"\nclient_secret = { env = \"MC_SECRET\" }\nscopes = [\"openid\", \"AdobeID\"]",
        &format!("type = \"jwt\"\n{profile_lines}"),
    )
}

const JWT_LINES: &str = "client_id = \"abc\"\nclient_secret = { env = \"MC_SECRET\" }\norg_id = \"1234ABCD@AdobeOrg\"\ntechnical_account_id = \"5678EFGH@techacct.adobe.com\"\nmetascopes = [\"ent_campaign_sdk\"]";

#[test]
fn jwt_profiles() {
    let text = jwt_config(&format!(
        "{JWT_LINES}\nprivate_key = {{ file = \"{TEST_KEY}\" }}"
    ));
    let config = parse(&text).unwrap();
    let ProfileKind::Jwt {
        org_id,
        technical_account_id,
        metascopes,
        ..
    } = &config.profiles[0].kind
    else {
        panic!("a jwt profile")
    };
    assert_eq!(org_id, "1234ABCD@AdobeOrg");
    assert_eq!(technical_account_id, "5678EFGH@techacct.adobe.com");
    assert_eq!(metascopes, &["ent_campaign_sdk"]);
    assert_eq!(config.profiles[0].kind.name(), "jwt");
    // Base64 of the PEM, from the environment, as seed 000 keeps it.
    use base64::Engine;
    let pem = std::fs::read(TEST_KEY).unwrap();
    let mut env = env();
    env.insert(
        "KEY_B64".into(),
        base64::engine::general_purpose::STANDARD.encode(&pem),
    );
    let text = jwt_config(&format!(
        "{JWT_LINES}\nprivate_key = {{ env = \"KEY_B64\" }}"
    ));
    assert!(Config::parse(&text, Path::new("."), &env).is_ok());
}

#[test]
fn jwt_profiles_are_checked() {
    let key = format!("\nprivate_key = {{ file = \"{TEST_KEY}\" }}");
    let cases = [
        (
            jwt_config(&(JWT_LINES.replace("org_id = \"1234ABCD@AdobeOrg\"\n", "") + &key)),
            "profiles.marketing.org_id: missing",
        ),
        (
            jwt_config(&JWT_LINES.replace("technical_account_id", "tech")),
            "unknown field `tech`",
        ),
        (
            jwt_config(
                &(JWT_LINES.replace("metascopes = [\"ent_campaign_sdk\"]", "metascopes = []")
                    + &key),
            ),
            "profiles.marketing.metascopes: give a list",
        ),
        (
            jwt_config(JWT_LINES),
            "profiles.marketing.private_key: missing",
        ),
        (
            jwt_config(&format!("{JWT_LINES}\nprivate_key = \"not a key\"")),
            "profiles.marketing.private_key: is neither a PEM private key nor base64 of one",
        ),
        (
            jwt_config(&format!("{JWT_LINES}\nscopes = [\"openid\"]{key}")),
            "profiles.marketing.scopes: does not belong to `type = \"jwt\"` profiles",
        ),
        (
            config("").replace("scopes = [", "metascopes = [\"x\"]\nscopes = ["),
            "profiles.marketing.metascopes: does not belong to `type = \"oauth\"` profiles",
        ),
    ];
    assert_refused(&cases);
}

#[test]
fn a_hash_that_cannot_verify_anything_is_refused_naming_its_caller() {
    // The hash part cut off: it parses as PHC, and would refuse every password.
    let salt_only = "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ";
    let bad_cost =
        "$argon2id$v=19$m=1,t=1,p=1$c29tZXNhbHQ$Yh3lC1/lPE0Fl8f+FEybn+lCBjgnG1H5Bx1RERCWxRw";
    let bad_version =
        "$argon2id$v=7$m=64,t=1,p=1$c29tZXNhbHQ$Yh3lC1/lPE0Fl8f+FEybn+lCBjgnG1H5Bx1RERCWxRw";
    for (hash, why) in [
        (
            salt_only,
            "it has no hash after the salt (it looks cut short)",
        ),
        (
            bad_cost,
            "its cost parameters (m=, t=, p=) are out of range",
        ),
        (bad_version, "the version (v=) is not one argon2 knows"),
    ] {
        let text = config("").replace(HASH, hash);
        let message = error(&text);
        assert!(
            message.contains(&format!(
                "callers[0].password: is an argon2 hash that cannot verify any password: {why}"
            )),
            "{hash}: {message}"
        );
        let line = text
            .lines()
            .position(|l| l == "name = \"crm-events\"")
            .unwrap()
            + 1;
        assert!(
            message.ends_with(&format!("(caller `crm-events`, line {line})")),
            "{message}"
        );
    }
    // A salt too short for argon2 is refused as PHC already.
    let short_salt =
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$Yh3lC1/lPE0Fl8f+FEybn+lCBjgnG1H5Bx1RERCWxRw";
    assert!(
        error(&config("").replace(HASH, short_salt))
            .contains("callers[0].password: is not an argon2 hash")
    );
    // The full hash passes.
    assert!(parse(&config("")).is_ok());
}

#[test]
fn errors_about_a_caller_name_it_and_its_line() {
    let text = format!(
        "{}\n[[callers]]\nname = \"second\"\nlogin = \"mc\"\npassword = \"{HASH}\"\nprofile = \"marketing\"\n",
        config("")
    );
    let message = error(&text);
    assert!(
        message.contains("callers[1].login: `mc` is the login of two callers"),
        "{message}"
    );
    let line = text.lines().position(|l| l == "name = \"second\"").unwrap() + 1;
    assert!(
        message.ends_with(&format!("(caller `second`, line {line})")),
        "{message}"
    );
}

#[test]
fn a_duration_written_as_a_number_gets_the_form_to_use() {
    let message = error(&format!("[ims]\ntimeout = 60\n{}", config("")));
    assert!(message.contains("line 2, `timeout`"), "{message}");
    assert!(
        message.contains("durations are strings with a unit, such as \"60s\""),
        "{message}"
    );
    // Other numbers keep toml's own message.
    let message = error(&format!("[server]\nworkers = \"two\"\n{}", config("")));
    assert!(!message.contains("durations"), "{message}");
}

/// The keys a raw table accepts, as serde lists them when it refuses an unknown one: taken
/// from the types the parser reads, so a key added there cannot be forgotten here.
fn keys_of<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let message = match toml::from_str::<T>("imsbridge_no_such_key = 1\n") {
        Ok(_) => panic!("an unknown key was accepted"),
        Err(error) => error.message().to_owned(),
    };
    let expected = message
        .split_once("expected ")
        .unwrap_or_else(|| panic!("{message}"))
        .1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_documented_example_names_every_key() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/imsbridge.toml"
    ))
    .unwrap();
    // A key is there when a line (maybe commented out) sets it, or opens its table.
    let named = |key: &str| {
        text.lines().any(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            // Without a comment after it.
            let line = line.split('#').next().unwrap_or_default().trim();
            line.split('=').next().is_some_and(|k| k.trim() == key)
                || (line.starts_with('[')
                    && line
                        .trim_matches(|c| c == '[' || c == ']')
                        .split('.')
                        .any(|part| part == key))
        })
    };
    let tables = [
        ("", keys_of::<raw::RawConfig>()),
        ("server.", keys_of::<raw::RawServer>()),
        ("server.tls.", keys_of::<raw::RawTls>()),
        (
            "server.password_failures.",
            keys_of::<raw::RawPasswordFailures>(),
        ),
        ("upstream.", keys_of::<raw::RawUpstream>()),
        ("upstreams.NAME.", keys_of::<raw::RawUpstream>()),
        ("ims.", keys_of::<raw::RawIms>()),
        ("profiles.NAME.", keys_of::<raw::RawProfile>()),
        ("sessions.", keys_of::<raw::RawSessions>()),
        ("wsdl.", keys_of::<raw::RawWsdl>()),
        ("egress.", keys_of::<raw::RawEgress>()),
        ("admin.", keys_of::<raw::RawAdmin>()),
        ("telemetry.", keys_of::<raw::RawTelemetry>()),
        ("state.", keys_of::<raw::RawState>()),
        ("cutover.", keys_of::<raw::RawCutover>()),
        ("callers.", keys_of::<raw::RawCaller>()),
    ];
    let mut missing = Vec::new();
    for (table, keys) in &tables {
        assert!(!keys.is_empty(), "no keys read for {table}");
        missing.extend(
            keys.iter()
                .filter(|key| !named(key))
                .map(|key| format!("{table}{key}")),
        );
    }
    assert!(
        missing.is_empty(),
        "fixtures/imsbridge.toml does not name: {missing:?}"
    );
    // The check can fail.
    assert!(!named("imsbridge_no_such_key"));
    assert!(keys_of::<raw::RawServer>().contains(&"shutdown_grace".to_owned()));
}

#[test]
fn password_limits_have_defaults_and_are_checked() {
    let defaults = parse(&config("")).unwrap();
    assert_eq!(defaults.server.password_limits, PasswordLimits::default());
    let text = format!(
        "[server]\nmax_pending_password_checks = 4\npassword_failures = {{ per_login = \"3/s\", per_peer = \"100/h\" }}\n{}",
        config("")
    );
    let limits = parse(&text).unwrap().server.password_limits;
    assert_eq!(limits.max_pending, 4);
    assert_eq!(
        (limits.per_login.count, limits.per_login.window),
        (3, Duration::from_secs(1))
    );
    assert_eq!(
        (limits.per_peer.count, limits.per_peer.window),
        (100, Duration::from_secs(3600))
    );
    assert_refused(&[
        (
            format!("[server]\nmax_pending_password_checks = 0\n{}", config("")),
            "server.max_pending_password_checks: must be between 1 and 100000",
        ),
        (
            format!(
                "[server]\npassword_failures = {{ per_login = \"ten\" }}\n{}",
                config("")
            ),
            "server.password_failures.per_login: `ten` is not a rate",
        ),
        (
            format!(
                "[server]\npassword_failures = {{ per_peer = \"0/m\" }}\n{}",
                config("")
            ),
            "server.password_failures.per_peer",
        ),
    ]);
}

#[test]
fn named_upstreams_have_nodes_and_profiles_choose_them() {
    let text = format!(
        r#"{}
[upstreams.execution]
urls = ["http://10.0.0.1:8080/", "http://10.0.0.2:8080/nl"]
cooldown = "3s"
retry_buffer_bytes = 0

[profiles.events]
type = "oauth"
client_id = "def"
client_secret = {{ env = "MC_SECRET" }}
scopes = ["openid"]
upstream = "execution"
"#,
        config("")
    );
    let parsed = parse(&text).unwrap();
    assert_eq!(parsed.upstream.name, DEFAULT_UPSTREAM);
    assert_eq!(parsed.upstream.cooldown, DEFAULT_COOLDOWN);
    assert_eq!(parsed.upstreams.len(), 1);
    let execution = &parsed.upstreams[0];
    assert_eq!(execution.name, "execution");
    let urls: Vec<String> = execution.nodes.iter().map(NodeSettings::url).collect();
    assert_eq!(urls, ["http://10.0.0.1:8080", "http://10.0.0.2:8080/nl"]);
    assert_eq!(execution.cooldown, Duration::from_secs(3));
    assert_eq!(execution.retry_buffer_bytes, 0);
    assert_eq!(execution.timeout, DEFAULT_UPSTREAM_TIMEOUT);
    let profile = |name: &str| parsed.profiles.iter().find(|p| p.name == name).unwrap();
    assert_eq!(profile("events").upstream, Some(0));
    assert_eq!(profile("marketing").upstream, None);

    // `[upstream]` may list its nodes too.
    let several = config("").replace(
        "url = \"https://campaign.example.com\"",
        "urls = [\"https://a.example.com\", \"https://b.example.com\"]",
    );
    assert_eq!(parse(&several).unwrap().upstream.nodes.len(), 2);
}

#[test]
fn upstream_mistakes_are_named() {
    let with = |table: &str, profile_upstream: &str| {
        config("").replace(
            "scopes = [\"openid\", \"AdobeID\"]",
            &format!("scopes = [\"openid\", \"AdobeID\"]\n{profile_upstream}\n{table}"),
        )
    };
    assert_refused(&[
        (
            with("", "upstream = \"execution\""),
            "profiles.marketing.upstream: no upstream named `execution`",
        ),
        (
            with("[upstreams.execution]\nurls = []", ""),
            "upstreams.execution.urls: is empty",
        ),
        (
            with("[upstreams.execution]\ntimeout = \"5s\"", ""),
            "upstreams.execution.url: missing",
        ),
        (
            with(
                "[upstreams.execution]\nurl = \"http://a\"\nurls = [\"http://b\"]",
                "",
            ),
            "give either `url` or `urls`",
        ),
        (
            with(
                "[upstreams.execution]\nurls = [\"http://a:1\", \"http://a:1/\"]",
                "",
            ),
            "upstreams.execution.urls: `http://a:1/` is named twice",
        ),
        (
            with("[upstreams.execution]\nurls = [\"ftp://a\"]", ""),
            "upstreams.execution.urls",
        ),
        (
            with(
                "[upstreams.execution]\nurls = [\"http://a\"]\ncooldown = \"0s\"",
                "",
            ),
            "upstreams.execution.cooldown: must be more than 0",
        ),
        (
            with("[upstreams.default]\nurls = [\"http://a\"]", ""),
            "upstreams.default: `default` is the name of the [upstream] table",
        ),
        (
            with("[upstreams.\"a b\"]\nurls = [\"http://a\"]", ""),
            "upstreams.a b: a name is letters",
        ),
        (
            with("[upstreams.execution]\nurls = [\"http://a\"]\nurll = 1", ""),
            "unknown field `urll`",
        ),
    ]);
    let many: Vec<String> = (0..=MAX_UPSTREAM_NODES)
        .map(|i| format!("\"http://10.0.0.{i}\""))
        .collect();
    assert_refused(&[(
        with(
            &format!("[upstreams.execution]\nurls = [{}]", many.join(", ")),
            "",
        ),
        "upstreams.execution.urls: 65 nodes; at most 64",
    )]);
}

#[test]
fn shadow_callers_list_read_only_actions() {
    let shadow = |lines: &str| config(&format!("mode = \"shadow\"\n{lines}"));
    let parsed = parse(&shadow(
        "shadow_actions = [\"xtk:queryDef#ExecuteQuery\", \"xtk:session#GetUserInfo\"]",
    ))
    .unwrap();
    assert_eq!(parsed.callers[0].mode, Mode::Shadow);
    assert_eq!(
        parsed.callers[0].shadow_actions,
        ["xtk:queryDef#ExecuteQuery", "xtk:session#GetUserInfo"]
    );
    assert_eq!(parsed.admin, AdminSettings::default());
    assert_refused(&[
        (shadow(""), "callers[0].shadow_actions: missing"),
        (
            shadow("shadow_actions = []"),
            "callers[0].shadow_actions: missing",
        ),
        (
            shadow("shadow_actions = [\"nms:rtEvent#PushEvent\"]"),
            "`nms:rtEvent#PushEvent` may change Campaign (`Push…`)",
        ),
        (
            shadow("shadow_actions = [\"xtk:session#Write\"]"),
            "may change Campaign (`Write…`)",
        ),
        (
            shadow("shadow_actions = [\"xtk:workflow#Execute\"]"),
            "may change Campaign (`Execute…`)",
        ),
        (
            shadow("shadow_actions = [\"GetUserInfo\"]"),
            "`GetUserInfo` is not an action",
        ),
        (
            shadow("shadow_actions = [\"xtk:session#GetUserInfo\"]\nlogon = true"),
            "callers[0].mode: a caller that logs on",
        ),
        (
            config("shadow_actions = [\"xtk:session#GetUserInfo\"]"),
            "callers[0].shadow_actions: only goes with mode = \"shadow\"",
        ),
    ]);
}

#[test]
fn the_admin_table_bounds_the_cockpit() {
    let parsed = parse(&format!(
        "[admin]\ninventory_max_logins = 50\nshadow_max_in_flight = 2\n{}",
        config("")
    ))
    .unwrap();
    assert_eq!(
        parsed.admin,
        AdminSettings {
            inventory_max_logins: 50,
            shadow_max_in_flight: 2,
            password: None,
        }
    );
    assert_refused(&[
        (
            format!("[admin]\ninventory_max_logins = 0\n{}", config("")),
            "admin.inventory_max_logins: must be between 1 and 1000000",
        ),
        (
            format!("[admin]\nshadow_max_in_flight = 0\n{}", config("")),
            "admin.shadow_max_in_flight: must be between 1 and 10000",
        ),
        (
            format!("[admin]\nshadow_max = 1\n{}", config("")),
            "unknown field `shadow_max`",
        ),
    ]);
}

#[test]
fn the_admin_password_is_an_argon2_hash_in_any_secret_form() {
    let parsed = parse(&format!("[admin]\npassword = \"{HASH}\"\n{}", config(""))).unwrap();
    assert_eq!(parsed.admin.password.as_ref().unwrap().to_string(), HASH);
    // Debug shows that there is one, never what it is.
    let shown = format!("{:?}", parsed.admin);
    assert!(shown.contains("password: Some(\"****\")"), "{shown}");
    assert!(!shown.contains("argon2"), "{shown}");
    let from_env = Config::parse(
        &format!(
            "[admin]\npassword = {{ env = \"ADMIN_HASH\" }}\n{}",
            config("")
        ),
        Path::new("."),
        &HashMap::from([
            ("MC_SECRET".to_owned(), "from-env".to_owned()),
            ("ADMIN_HASH".to_owned(), HASH.to_owned()),
        ]),
    )
    .unwrap();
    assert_eq!(from_env.admin.password, parsed.admin.password);
    assert_refused(&[
        (
            format!("[admin]\npassword = \"plain-text\"\n{}", config("")),
            "admin.password: is not an argon2 hash; make one with `imsbridge hash-password`",
        ),
        (
            format!(
                "[admin]\npassword = {{ env = \"NO_SUCH_VARIABLE\" }}\n{}",
                config("")
            ),
            "admin.password",
        ),
    ]);
    // Neither the plain text nor the variable's name is the hash's: the message names the key.
    assert!(
        !error(&format!(
            "[admin]\npassword = \"plain-text\"\n{}",
            config("")
        ))
        .contains("plain-text")
    );
}

#[test]
fn a_missing_secret_names_its_line_and_the_three_forms() {
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let text = config("").replace("MC_SECRET", "UNSET_VAR");
    let message = error(&text);
    assert!(
        message.contains(&format!(
            "profiles.marketing.client_secret: environment variable UNSET_VAR is not set; a secret is given as the value itself (\"…\"), as {{ env = \"VAR\" }} or as {{ file = \"PATH\" }} (line {})",
            line_of(&text, "client_secret")
        )),
        "{message}"
    );
    // In a table after others, in an array of tables, in an inline table.
    let text = format!(
        "[sessions]\nsecret = {{ file = \"/nonexistent/session\" }}\n{}",
        config("")
    );
    let message = error(&text);
    assert!(
        message.contains("sessions.secret: cannot read /nonexistent/session"),
        "{message}"
    );
    assert!(message.ends_with("(line 2)"), "{message}");
    let text = format!(
        "{}\n[[callers]]\nname = \"second\"\nlogin = \"two\"\npassword = {{ env = \"NOPE\" }}\nprofile = \"marketing\"\n",
        config("")
    );
    let message = error(&text);
    assert!(message.contains("callers[1].password"), "{message}");
    assert!(
        message.contains(&format!("line {}", line_of(&text, "name = \"second\""))),
        "{message}"
    );
    assert!(message.contains("{ file = \"PATH\" }"), "{message}");
}

#[test]
fn an_unknown_key_or_value_names_the_nearest_one() {
    for (text, nearest) in [
        (
            format!("[admin]\nshadow_max = 1\n{}", config("")),
            "shadow_max_in_flight",
        ),
        (
            format!("[server]\nadmin_lisen = \"127.0.0.1:9090\"\n{}", config("")),
            "admin_listen",
        ),
        (
            format!("unknown_caller = \"legacy\"\n{}", config("")),
            "unknown_callers",
        ),
        (config("mode = \"canery\""), "canary"),
    ] {
        let message = error(&text);
        assert!(
            message.contains(&format!("; did you mean `{nearest}`?")),
            "{message}"
        );
    }
    // Nothing near: no guess.
    let message = error(&format!("[admin]\nzzzz = 1\n{}", config("")));
    assert!(message.contains("unknown field `zzzz`"), "{message}");
    assert!(!message.contains("did you mean"), "{message}");
}

#[test]
fn traces_go_to_an_http_or_https_collector() {
    let endpoint = |parsed: &Config| parsed.telemetry.as_ref().map(|t| t.endpoint.clone());
    let parsed = parse(&format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n{}",
        config("")
    ))
    .unwrap();
    assert_eq!(endpoint(&parsed).as_deref(), Some("http://127.0.0.1:4318"));
    let parsed = parse(&format!(
        "[telemetry]\notlp_endpoint = \"https://collector:4318\"\n{}",
        config("")
    ))
    .unwrap();
    assert_eq!(endpoint(&parsed).as_deref(), Some("https://collector:4318"));
    assert!(parse(&config("")).unwrap().telemetry.is_none());
    assert_refused(&[
        (
            format!("[telemetry]\notlp_endpoint = \"collector\"\n{}", config("")),
            "telemetry.otlp_endpoint",
        ),
        (
            format!("[telemetry]\nca_file = \"ca.pem\"\n{}", config("")),
            "telemetry.ca_file: is for an https otlp_endpoint, and none is set",
        ),
        (
            format!(
                "[telemetry]\notlp_endpoint = \"https://collector:4318\"\nca_file = \"missing.pem\"\n{}",
                config("")
            ),
            "telemetry.ca_file: ",
        ),
    ]);
}
