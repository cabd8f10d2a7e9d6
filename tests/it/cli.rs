//! The `imsbridge` binary as an operator runs it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::*;
use imsbridge::demo::{StandInCampaign, StandInIms};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_imsbridge");

pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("imsbridge-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `imsbridge run` in a process of its own, its log read line by line.
pub(crate) struct Running {
    /// Killed and waited for when it is dropped (a test that fails half-way leaves no proxy
    /// running).
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Every line read so far.
    log: Vec<String>,
    pub(crate) addr: SocketAddr,
    pub(crate) admin: SocketAddr,
}

impl Running {
    /// Starts the binary and waits for it to say where it listens.
    pub(crate) fn start(config: &Path, rust_log: &str) -> Running {
        Running::start_with(config, rust_log, &[])
    }

    /// [`Running::start`], with more arguments.
    pub(crate) fn start_with(config: &Path, rust_log: &str, args: &[&str]) -> Running {
        Running::start_env(config, rust_log, args, &[])
    }

    /// [`Running::start_with`], with more environment variables.
    pub(crate) fn start_env(
        config: &Path,
        rust_log: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Running {
        Running::spawn(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(config)
                .args(args)
                .envs(env.iter().copied())
                .env("RUST_LOG", rust_log),
        )
    }

    /// Starts `command`, an `imsbridge run`, and waits for it to say where it listens.
    /// `MC_CLIENT_SECRET` is the stand-in IMS's client's unless `command` sets it.
    pub(crate) fn spawn(command: &mut Command) -> Running {
        if !command
            .get_envs()
            .any(|(name, _)| name == "MC_CLIENT_SECRET")
        {
            command.env("MC_CLIENT_SECRET", CLIENT_SECRET);
        }
        let mut child = ChildGuard::spawn(command.stdout(Stdio::piped()).stderr(Stdio::piped()));
        let (lines_tx, lines) = mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = lines_tx.send(line);
            }
        });
        let mut running = Running {
            child,
            lines,
            reader: Some(reader),
            log: Vec::new(),
            addr: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
        };
        let listening = running.wait_for("listening");
        // `proxy=ADDR` in text, `"proxy":"ADDR"` in JSON.
        let field = |name: &str| {
            let at = listening
                .find(&format!(" {name}="))
                .map(|at| at + name.len() + 2)
                .or_else(|| {
                    listening
                        .find(&format!("\"{name}\":\""))
                        .map(|at| at + name.len() + 4)
                })
                .unwrap_or_else(|| panic!("no {name} in {listening}"));
            listening[at..]
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        running.addr = field("proxy");
        running.admin = field("admin");
        running
    }

    /// Reads the log until a line holds `text`; returns that line.
    pub(crate) fn wait_for(&mut self, text: &str) -> String {
        tokio::task::block_in_place(|| {
            loop {
                let line = self
                    .lines
                    .recv_timeout(Duration::from_secs(20))
                    .unwrap_or_else(|_| {
                        panic!("no log line with `{text}`:\n{}", self.log.join("\n"))
                    });
                self.log.push(line.clone());
                if line.contains(text) {
                    return line;
                }
            }
        })
    }

    /// Waits for `count` lines, seen so far or to come, that hold every one of `texts`.
    pub(crate) fn wait_for_lines(&mut self, texts: &[&str], count: usize) {
        let matches = |line: &str| texts.iter().all(|text| line.contains(text));
        let mut seen = self.log.iter().filter(|line| matches(line)).count();
        while seen < count {
            let line = self.wait_for(texts[0]);
            if matches(&line) {
                seen += 1;
            }
        }
    }

    pub(crate) fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// SIGTERM, then waits for the exit; returns the status and the whole output.
    pub(crate) fn stop(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        tokio::task::block_in_place(|| {
            let status = self.child.wait().unwrap();
            if let Some(reader) = self.reader.take() {
                reader.join().unwrap();
            }
            self.log.extend(self.lines.try_iter());
            let mut stdout = String::new();
            std::io::Read::read_to_string(&mut self.child.stdout.take().unwrap(), &mut stdout)
                .unwrap();
            (status, format!("{}\n{stdout}", self.log.join("\n")))
        })
    }
}

/// The secrets of the run below: none may show in its output.
const BROKEN_SECRET: &str = "broken-profile-secret-0b1c";
const WRONG_PASSWORD: &str = "wrong-pass-9x7q";
const GHOST_PASSWORD: &str = "ghost-pass-3y5r";
const LEGACY_PASSWORD: &str = "legacy-pass-8w2e";
const SECURITY_TOKEN: &str = "sec-tok-5z1k";
const BASIC: &str = "c2VjcmV0LWJhc2ljLWF1dGg=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_in_text() {
    every_path_with_known_secrets("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_in_json() {
    every_path_with_known_secrets("json").await;
}

const SESSION_SECRET: &str = "session-secret-for-the-log-test-0123456789";

/// Runs the binary through every path (good calls, each refusal, Logon and issued sessions, a
/// JWT profile, IMS failing, a token Campaign refuses and its replay) with known secrets, then
/// searches the whole output for them.
async fn every_path_with_known_secrets(format: &str) {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    ims.add_client("broken-client", "what-ims-expects");
    add_jwt_client(&ims, &["ent_campaign_sdk"]);
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let dir = temp_dir(&format!("logs-{format}"));
    let config = with_server(
        &config_text(
            &ims.url(),
            &campaign.url(),
            &format!("[sessions]\nsecret = \"{SESSION_SECRET}\"\n"),
            "logon = true",
        ),
        "listen = \"127.0.0.1:0\"",
    ) + &format!(
        "\n[profiles.broken]\ntype = \"oauth\"\nclient_id = \"broken-client\"\nclient_secret = \"{BROKEN_SECRET}\"\nscopes = [\"openid\"]\n\n[profiles.analytics]\n{}\n",
        jwt_profile(
            &format!("{{ file = \"{TEST_KEY}\" }}"),
            "[\"ent_campaign_sdk\"]"
        )
    );
    let path = dir.join("imsbridge.toml");
    std::fs::write(&path, config).unwrap();

    let mut running = Running::start_with(&path, "debug", &["--log-format", format]);
    let proxy_addr = running.addr;

    let cookie = format!("a=1; __sessiontoken={}", credential());
    let good = post(
        proxy_addr,
        seed_002(&credential()),
        &[
            ("cookie", cookie.as_str()),
            ("x-security-token", SECURITY_TOKEN),
            ("x-session-token", &credential()),
            ("authorization", &format!("Basic {BASIC}")),
        ],
    )
    .await;
    assert_eq!(good.status, 200, "{}", good.body);
    let refused = [
        seed_002(&format!("{LOGIN}/{WRONG_PASSWORD}")),
        seed_002(&format!("ghost/{GHOST_PASSWORD}")),
        seed_002(""),
        format!("<not-xml>{}", credential()),
    ];
    for body in refused {
        let answer = post(proxy_addr, body, &[]).await;
        assert!(answer.status == 500, "{}", answer.body);
    }
    let legacy = post(
        proxy_addr,
        seed_002(&format!("{LEGACY_LOGIN}/{LEGACY_PASSWORD}")),
        &[],
    )
    .await;
    assert_eq!(legacy.status, 200);
    // Logon, a call with the session, a wrong password at Logon.
    let logon = |password: &str| {
        format!(
            r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body><m:Logon xmlns:m="urn:xtk:session"><sessiontoken/><login>{LOGIN}</login><password>{password}</password></m:Logon></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
        )
    };
    let answer = post(proxy_addr, logon(PASSWORD), &[]).await;
    let session = answer
        .body
        .split("<pstrSessionToken xsi:type='xsd:string'>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    let security = answer
        .body
        .split("<pstrSecurityToken xsi:type='xsd:string'>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    let with_session = post(
        proxy_addr,
        seed_002(&session),
        &[("x-security-token", &security)],
    )
    .await;
    assert_eq!(with_session.status, 200, "{}", with_session.body);
    post(proxy_addr, logon(WRONG_PASSWORD), &[])
        .await
        .assert_fault(500, "Client", "Invalid login");
    // Campaign refuses the token: the call is replayed with a new one.
    ims.revoke_all();
    assert_eq!(
        post(proxy_addr, seed_002(&credential()), &[]).await.status,
        200
    );
    // The refresher of the broken profile fails, and retries at least once.
    running.wait_for_lines(&["IMS token request failed", "broken"], 2);

    let (status, log) = running.stop();
    assert!(status.success(), "exit status after SIGTERM: {status}");

    // The run logged what it should: requests, refusals, the IMS failure...
    let expected: &[&str] = if format == "json" {
        &[
            r#""caller":"crm-events","profile":"messagecenter","action":"nms:rtEvent#PushEvent","mode":"ims","route":"ims","status":200"#,
            r#""outcome":"wrong_password""#,
            r#""route":"local""#,
            r#""retried":true"#,
            r#""profile":"broken""#,
        ]
    } else {
        &[
            "caller=\"crm-events\" profile=\"messagecenter\" action=\"nms:rtEvent#PushEvent\" mode=\"ims\" route=\"ims\" status=200",
            "outcome=\"wrong_password\"",
            "outcome=\"unknown_caller\"",
            "outcome=\"missing_credential\"",
            "outcome=\"bad_request\"",
            "caller=\"old-crm\"",
            "route=\"local\"",
            "retried=true",
            "profile=broken error=IMS refused the request (HTTP 401): invalid_client: invalid client_secret parameter",
            "shutting down",
        ]
    };
    for expected in expected {
        assert!(
            log.contains(expected),
            "`{expected}` missing from the log:\n{log}"
        );
    }
    if format == "json" {
        for line in log.lines().filter(|l| l.starts_with('{')) {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }
    // ... and no secret.
    let key_line = std::fs::read_to_string(TEST_KEY)
        .unwrap()
        .lines()
        .nth(3)
        .unwrap()
        .to_owned();
    let mut secrets = vec![
        CLIENT_SECRET.to_owned(),
        BROKEN_SECRET.to_owned(),
        JWT_CLIENT_SECRET.to_owned(),
        SESSION_SECRET.to_owned(),
        PASSWORD.to_owned(),
        WRONG_PASSWORD.to_owned(),
        GHOST_PASSWORD.to_owned(),
        LEGACY_PASSWORD.to_owned(),
        SECURITY_TOKEN.to_owned(),
        BASIC.to_owned(),
        session.clone(),
        session.rsplit('.').next().unwrap().to_owned(),
        security.clone(),
        key_line,
    ];
    let issued = ims.issued();
    assert!(
        issued.len() >= 3,
        "messagecenter, analytics, and the refetch"
    );
    for token in issued {
        secrets.push(token.rsplit('.').next().unwrap().to_owned()); // the signature part is unique
        secrets.push(token);
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret leaked into the log:\n{log}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_invalid_config_is_refused_with_the_key_named() {
    let dir = temp_dir("bad-config");
    let path = dir.join("bad.toml");
    let cases = [
        (
            "[upstream]\nurl = \"https://x\"\ntimeot = \"5s\"\n",
            "unknown field `timeot`",
        ),
        (
            "[upstream]\nurl = \"https://x\"\ntimeout = \"5 seconds\"\n",
            "upstream.timeout",
        ),
        (
            "[upstream]\nurl = \"https://x\"\n[server]\ntls = { cert = \"a\", key = \"b\" }\n",
            "server.tls: cert: ",
        ),
        (
            "[upstream]\nurl = \"https://x\"\n[profiles.p]\ntype = \"oauth\"\nclient_id = \"c\"\nclient_secret = { env = \"IMSBRIDGE_TEST_UNSET\" }\nscopes = [\"openid\"]\n",
            "profiles.p.client_secret: environment variable IMSBRIDGE_TEST_UNSET is not set; a secret is given as the value itself (\"…\"), as { env = \"VAR\" } or as { file = \"PATH\" } (line 6)",
        ),
        (
            "[upstream]\nurl = \"https://x\"\ntimeot = \"5s\"\n",
            "line 3, `timeot`: unknown field `timeot`, expected one of",
        ),
        (
            "[upstream]\nurl = \"https://x\"\ntimeot = \"5s\"\n",
            "; did you mean `timeout`?",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&path, text).unwrap();
        let output = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "`{expected}` not in: {stderr}");
    }
    let output = Command::new(BIN)
        .args(["run", "--config", "/nonexistent/imsbridge.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("cannot read config file /nonexistent/imsbridge.toml")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hash_password_prints_a_hash_the_config_accepts() {
    let output = run_with_stdin(&["hash-password".to_owned()], "an operator password\n");
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let parsed = argon2::password_hash::phc::PasswordHash::new(&hash).unwrap();
    assert!(imsbridge::cli::check_password(
        "an operator password",
        &parsed
    ));
    assert!(!imsbridge::cli::check_password(
        "an operator password\n",
        &parsed
    ));

    let empty = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(2));
}

#[test]
fn demo_shows_the_seed_002_call_going_through() {
    let output = Command::new(BIN)
        .args(["demo", "--once", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "── 1. Adobe's example call (the migration guide's \"before\"), as the legacy caller sends it ──",
        "<urn:sessiontoken>mc/demo-password</urn:sessiontoken>",
        "── 2. As Campaign received it (credential gone, Bearer token added) ──",
        "<urn:sessiontoken></urn:sessiontoken>",
        "authorization: Bearer ",
        "── 3. The answer the caller got: HTTP 200 ──",
        "<plId xsi:type='xsd:long'>72057594037927936</plId>",
        "── 4. The same call with a wrong password: HTTP 500, and Campaign received 0 request(s) ──",
        "Invalid login or password. Connection denied.",
        "curl -sS http://127.0.0.1:",
    ] {
        assert!(shown.contains(expected), "`{expected}` missing:\n{shown}");
    }
    // The part Campaign received holds the seed's "after" body.
    let received = shown
        .split("── 2.")
        .nth(1)
        .unwrap()
        .split("── 3.")
        .next()
        .unwrap();
    let unindented: String = received
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        unindented.contains(imsbridge::demo::SEED_002_AFTER.trim_end()),
        "{received}"
    );
}

/// Runs `imsbridge` with the given arguments and standard input.
fn run_with_stdin(args: &[String], stdin: &str) -> std::process::Output {
    let mut child = ChildGuard::spawn(
        Command::new(BIN)
            .args(args)
            .env("MC_CLIENT_SECRET", CLIENT_SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output()
}

/// [`run_with_stdin`], off the runtime's threads (the stand-ins run on them).
async fn imsbridge(args: Vec<String>, stdin: &str) -> std::process::Output {
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || run_with_stdin(&args, &stdin))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_takes_and_prints_the_route_of_the_environment() {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let dir = temp_dir("check-route");
    let path = dir.join("imsbridge.toml");
    std::fs::write(&path, config_text(&ims.url(), &campaign.url(), "", "")).unwrap();
    // A proxy that is not there: a check that went through it fails.
    let (proxy, _held) = closed_port_url();
    let run = |no_proxy: &'static str| {
        let (path, proxy) = (path.clone(), proxy.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["check", "--config"])
                .arg(&path)
                .env("MC_CLIENT_SECRET", CLIENT_SECRET)
                .env("HTTP_PROXY", &proxy)
                .env("https_proxy", &proxy)
                .env("NO_PROXY", no_proxy)
                .output()
                .unwrap()
        })
    };
    let output = run("").await.unwrap();
    let shown = text(&output.stdout);
    assert!(
        shown.contains(&format!(
            "route to IMS: through {proxy}\nroute to Campaign: through {proxy}\n"
        )),
        "{shown}"
    );
    assert!(!output.status.success(), "{shown}");
    assert_eq!(ims.token_requests(), 0, "nothing went straight to IMS");
    // NO_PROXY names the stand-ins' host: straight, and the check passes.
    let output = run("127.0.0.1").await.unwrap();
    let shown = text(&output.stdout);
    assert!(shown.contains("route to IMS: direct\n"), "{shown}");
    assert!(output.status.success(), "{shown}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `imsbridge check --config PATH [--probe]`.
async fn check_command(path: impl std::fmt::Display, probe: bool) -> std::process::Output {
    let mut args = vec!["check".to_owned(), "--config".to_owned(), path.to_string()];
    if probe {
        args.push("--probe".to_owned());
    }
    imsbridge(args, "").await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A config with an oauth profile and a jwt profile, written to `dir`.
fn two_profiles(
    dir: &std::path::Path,
    ims: &str,
    campaign: &str,
    jwt_key: &str,
) -> std::path::PathBuf {
    let config = config_text(ims, campaign, "", "")
        + &format!(
            "\n[profiles.analytics]\n{}\n",
            jwt_profile(
                &format!("{{ file = \"{jwt_key}\" }}"),
                "[\"ent_campaign_sdk\"]"
            )
        );
    let path = dir.join("imsbridge.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A web server that is not Campaign: it answers any request `200 OK` with a page that echoes
/// the request's `Authorization`.
async fn not_campaign() -> String {
    scripted_http(|head| {
        let page = format!(
            "<html><body>It works! You sent: {}</body></html>",
            header_of(head, "authorization").unwrap_or("-")
        );
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_fails_against_a_server_that_is_not_campaign() {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    let dir = temp_dir("check-not-campaign");
    let path = dir.join("imsbridge.toml");
    std::fs::write(
        &path,
        config_text(&ims.url(), &not_campaign().await, "", ""),
    )
    .unwrap();
    let output = check_command(path.display(), true).await;
    let shown = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("  FAILED      probe: HTTP 200 OK, but not Campaign's answer to xtk:session#GetUserInfo (no GetUserInfoResponse naming an operator): text/html, "),
        "{shown}"
    );
    assert!(shown.contains("It works! You sent: Bearer ****"), "{shown}");
    assert!(shown.contains("1 of 1 profile FAILED"), "{shown}");
    let issued = ims.issued();
    assert!(!issued.is_empty());
    for token in issued {
        assert!(!shown.contains(&token), "the token was shown:\n{shown}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shows_every_profile_and_probes_campaign() {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    add_jwt_client(&ims, &["ent_campaign_sdk"]);
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let dir = temp_dir("check");
    let path = two_profiles(&dir, &ims.url(), &campaign.url(), TEST_KEY);

    let output = check_command(path.display(), false).await;
    let shown = text(&output.stdout);
    assert!(output.status.success(), "{shown}{}", text(&output.stderr));
    for expected in [
        "config: valid (2 profiles, 2 callers",
        "route to IMS: direct\nroute to Campaign: direct\n",
        "profile messagecenter\n  kind        oauth (OAuth Server-to-Server)\n  token       ok, expires in 24h 0m 0s (at 20",
        &format!("  client_id   {CLIENT_ID}\n"),
        "  scopes      openid, AdobeID, additional_info.projectedProductContext\n",
        "  created     20",
        "  expires     20",
        "profile analytics\n  kind        jwt (Service Account, retired by Adobe)\n  token       ok",
        &format!("  account     {TECHNICAL_ACCOUNT_ID}\n"),
        "  scopes      ent_campaign_sdk\n",
        "  warning     JWT (Service Account) credentials are retired by Adobe",
        "set type = \"oauth\"",
        "all 2 profiles passed",
    ] {
        assert!(shown.contains(expected), "`{expected}` missing:\n{shown}");
    }
    assert!(!shown.contains("\n  probe "), "no probe unless asked");
    assert!(campaign.requests().is_empty());
    for token in ims.issued() {
        assert!(!shown.contains(&token), "a token was shown");
    }
    assert!(!shown.contains(CLIENT_SECRET) && !shown.contains(JWT_CLIENT_SECRET));

    let output = check_command(path.display(), true).await;
    let shown = text(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains(&format!(
            "  probe       Campaign answered xtk:session#GetUserInfo (HTTP 200 OK): the call ran as operator \"{TECHNICAL_ACCOUNT_ID}\""
        )),
        "{shown}"
    );
    let probes = campaign.requests();
    assert_eq!(probes.len(), 2, "one probe per profile");
    assert_eq!(
        probes[0].header("soapaction"),
        Some("xtk:session#GetUserInfo")
    );
    assert!(
        probes[0]
            .text()
            .contains("<ns:sessiontoken></ns:sessiontoken>")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_with_the_ims_error_and_a_failed_probe() {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, "a-rotated-secret");
    add_jwt_client(&ims, &["ent_campaign_sdk"]);
    let (nowhere, _refusing) = closed_port_url();
    let dir = temp_dir("check-fails");
    let path = two_profiles(&dir, &ims.url(), &nowhere, OTHER_KEY);
    let output = check_command(path.display().to_string(), true).await;
    let shown = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    for expected in [
        "  FAILED      IMS refused the request (HTTP 401): invalid_client: invalid client_secret parameter",
        "  hint        check client_id and client_secret",
        "  FAILED      IMS refused the request (HTTP 400): invalid_signature: Could not match JWT signature to any of the bindings",
        "  hint        the private key does not match the public key (certificate) of the credential",
        "2 of 2 profiles FAILED",
    ] {
        assert!(shown.contains(expected), "`{expected}` missing:\n{shown}");
    }
    assert!(!shown.contains(CLIENT_SECRET));

    // Good tokens, but Campaign cannot be reached: the probe fails the check.
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    let path = two_profiles(&dir, &ims.url(), &nowhere, TEST_KEY);
    let output = check_command(path.display().to_string(), true).await;
    let shown = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("  FAILED      probe: Campaign unreachable"),
        "{shown}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_nlserver_gives_a_profile_that_check_accepts() {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let key = std::fs::read(TEST_KEY).unwrap();
    let setimsjwtauth = format!(
        "{ORG_ID}/{JWT_CLIENT_ID}/{TECHNICAL_ACCOUNT_ID}/{JWT_CLIENT_SECRET}/{}",
        base64::engine::general_purpose::STANDARD.encode(&key)
    );
    let dir = temp_dir("import");
    let args = |credential: &str| {
        vec![
            "import-nlserver".to_owned(),
            "--name".into(),
            "messagecenter".into(),
            "--dir".into(),
            dir.display().to_string(),
            credential.to_owned(),
        ]
    };
    // From standard input, so the secret stays out of the process list.
    let output = imsbridge(args("-"), &format!("{setimsjwtauth}\n")).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let profile = text(&output.stdout);
    assert!(
        profile.starts_with("[profiles.messagecenter]\ntype = \"jwt\"\n"),
        "{profile}"
    );
    assert!(profile.contains("metascopes = [\"ent_campaign_sdk\"]"));
    assert!(
        !profile.contains(JWT_CLIENT_SECRET) && !profile.contains("PRIVATE KEY"),
        "{profile}"
    );
    assert!(!text(&output.stderr).contains(JWT_CLIENT_SECRET));
    for file in [
        "messagecenter.client-secret",
        "messagecenter.private-key.pem",
    ] {
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // The printed profile, in a config, passes `check` against an IMS that knows the account.
    let ims = StandInIms::start().await.unwrap();
    add_jwt_client(&ims, &["ent_campaign_sdk"]);
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let config = format!(
        "[upstream]\nurl = \"{}\"\n[ims]\nhost = \"{}\"\n\n{profile}",
        campaign.url(),
        ims.url()
    );
    std::fs::write(dir.join("imsbridge.toml"), config).unwrap();
    let output = check_command(dir.join("imsbridge.toml").display().to_string(), true).await;
    assert!(output.status.success(), "{}", text(&output.stdout));

    // Run again: the files exist, nothing is overwritten.
    let again = imsbridge(args(&setimsjwtauth), "").await;
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already exists"));
    // A malformed string says which part is wrong.
    let bad = imsbridge(
        args(&setimsjwtauth.replace("@techacct.adobe.com", "@example.com")),
        "",
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("part 3 (technical account id)"),
        "{}",
        text(&bad.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A config file for the binary: the test callers, listening on a free port.
/// The config of a proxy run as a process: on a free port, with two workers (whatever the
/// machine's cores), and `top`/`extra` as [`config_text`] takes them.
pub(crate) fn write_config(
    dir: &Path,
    ims: &str,
    campaign: &str,
    top: &str,
    extra: &str,
) -> std::path::PathBuf {
    let config = with_server(
        &config_text(ims, campaign, top, extra),
        "listen = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\nworkers = 2",
    );
    let path = dir.join("imsbridge.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish() {
    let (ims, campaign) = stand_ins().await;
    campaign.set_delay(Duration::from_millis(1500));
    let dir = temp_dir("sigterm");
    let mut running = Running::start(
        &write_config(&dir, &ims.url(), &campaign.url(), "", ""),
        "info",
    );
    let addr = running.addr;
    let in_flight = tokio::spawn(async move { post(addr, seed_002(&credential()), &[]).await });
    // Campaign has the call (it answers in 1.5 s) when the signal comes.
    eventually("Campaign has the call", Duration::from_secs(10), || async {
        (!campaign.requests().is_empty()).then_some(())
    })
    .await;
    running.signal("TERM");
    running.wait_for("shutting down");
    // No new connection is taken (the listener closes right after that line)...
    eventually("the listener closed", Duration::from_secs(2), || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    // ... and the one in flight completes.
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (status, _) = running.stop();
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_good_config_and_keeps_the_old_one_over_a_bad_one() {
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir("sighup");
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    let first = write_config(&dir, &ims.url(), &campaign.url(), "", "");
    let from_file = |text: String| {
        text.replace(
            "{ env = \"MC_CLIENT_SECRET\" }",
            &format!("{{ file = \"{}\" }}", secret_file.display()),
        )
    };
    std::fs::write(&first, from_file(std::fs::read_to_string(&first).unwrap())).unwrap();
    let mut running = Running::start(&first, "info");
    let addr = running.addr;
    let call = |credential: String| async move { post(addr, seed_002(&credential), &[]).await };
    assert_eq!(call(credential()).await.status, 200);

    // A good config: mc's password changed, a caller added, the client secret rotated.
    const NEW_PASSWORD: &str = "mc-password-rotated-77ab";
    const ROTATED_SECRET: &str = "client-secret-rotated-91fe";
    ims.add_client(CLIENT_ID, ROTATED_SECRET);
    std::fs::write(&secret_file, ROTATED_SECRET).unwrap();
    let next = config_text(&ims.url(), &campaign.url(), "", "")
        + &format!(
            "\n[[callers]]\nname = \"newcomer\"\nlogin = \"newcomer\"\npassword = \"{}\"\nprofile = \"messagecenter\"\n",
            cheap_hash("newcomer-password-3c5d")
        );
    let next = with_mc_password(&next, NEW_PASSWORD);
    let next = with_server(&from_file(next), "listen = \"127.0.0.1:0\"");
    std::fs::write(&first, next).unwrap();
    let fetched = ims.token_requests();
    running.signal("HUP");
    running.wait_for("config reloaded");
    assert!(
        ims.token_requests() > fetched,
        "the new config fetched its token with the new secret"
    );
    call(credential())
        .await
        .assert_fault(500, "Client", "Invalid login or password");
    assert_eq!(call(format!("{LOGIN}/{NEW_PASSWORD}")).await.status, 200);
    assert_eq!(
        call("newcomer/newcomer-password-3c5d".to_owned())
            .await
            .status,
        200
    );
    let ready = get(running.admin, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    // A bad config: refused with its reason; the running one stays.
    std::fs::write(
        &first,
        "[upstream]\nurl = \"https://campaign.example.com\"\nretries = 3\n",
    )
    .unwrap();
    running.signal("HUP");
    let refused = running.wait_for("reload refused");
    assert!(refused.contains("unknown field `retries`"), "{refused}");
    assert_eq!(call(format!("{LOGIN}/{NEW_PASSWORD}")).await.status, 200);
    let (status, log) = running.stop();
    assert!(status.success());
    assert!(!log.contains(ROTATED_SECRET) && !log.contains(NEW_PASSWORD));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `config_text` with the `mc` caller's password set to `password`.
pub(crate) fn with_mc_password(config: &str, password: &str) -> String {
    let at = config.find(&format!("login = \"{LOGIN}\"")).unwrap();
    let start = at + config[at..].find("password = \"").unwrap() + "password = \"".len();
    let end = start + config[start..].find('"').unwrap();
    format!(
        "{}{}{}",
        &config[..start],
        cheap_hash(password),
        &config[end..]
    )
}

/// The README's "Try it against stand-ins", step by step: the stand-ins up with a config
/// written for them, `check --probe` passes, `run` serves, and the legacy caller's call goes
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_try_out_path_works_with_the_stand_ins_alone() {
    let dir = temp_dir("try-out");
    let config = dir.join("imsbridge-try.toml");
    // Killed when the test ends, pass or fail: it serves until told to stop.
    let mut stand_ins = ChildGuard::spawn(
        Command::new(BIN)
            .args([
                "demo",
                "--stand-ins",
                "--listen",
                "127.0.0.1:0",
                "--write-config",
            ])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = stand_ins.stdout.take().unwrap();
    let said = tokio::task::spawn_blocking(move || {
        let mut said = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            said.push_str(&line);
            said.push('\n');
            if line == "Serving until Ctrl-C." {
                break;
            }
        }
        said
    })
    .await
    .unwrap();
    assert!(said.contains("imsbridge check --config"), "{said}");

    let output = check_command(config.display(), true).await;
    let shown = text(&output.stdout);
    assert!(output.status.success(), "{shown}{}", text(&output.stderr));
    assert!(shown.contains("the call ran as operator"), "{shown}");
    assert!(
        shown.contains("config: valid (1 profile, 1 caller, unknown_callers = \"reject\")"),
        "{shown}"
    );
    assert!(shown.contains("the profile passed"), "{shown}");

    let running = Running::start(&config, "info");
    let answer = post(running.addr, seed_002("mc/demo-password"), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("PushEventResponse"), "{}", answer.body);
    post(running.addr, seed_002("mc/not-the-password"), &[])
        .await
        .assert_fault(500, "Client", "Invalid login or password");
    let (status, _) = running.stop();
    assert!(status.success());
    drop(stand_ins);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A proxy holds two sockets a request: the soft limit of open files (often 1024, systemd's
/// default) is raised to the hard one at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_to_the_hard_one() {
    use rustix::process::{Resource, getrlimit};
    let Some(hard) = getrlimit(Resource::Nofile).maximum else {
        return; // no finite hard limit to raise to
    };
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir("nofile");
    let config = write_config(&dir, &ims.url(), &campaign.url(), "", "");
    let soft = 256.min(hard);
    let running = Running::spawn(Command::new("sh").arg("-c").arg(format!(
        "ulimit -Sn {soft} && exec {BIN} run --config '{}'",
        config.display()
    )));
    let metrics = get(running.admin, "/metrics").await.body;
    assert_eq!(
        metric(&metrics, "imsbridge_process_max_fds"),
        Some(hard as f64)
    );
    let (status, _) = running.stop();
    assert!(status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A process a test starts is gone when the test ends, even when the test fails while it
/// runs: the stand-ins serve until they are killed.
#[test]
fn a_failing_test_leaves_no_process_behind() {
    let mut pid = None;
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let stand_ins = ChildGuard::spawn(
            Command::new(BIN)
                .args(["demo", "--stand-ins", "--listen", "127.0.0.1:0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        pid = Some(stand_ins.id());
        assert!(Path::new(&format!("/proc/{}", stand_ins.id())).exists());
        panic!("a test failing while its process runs");
    }));
    assert!(failed.is_err());
    let pid = pid.unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} was left running"
    );
}

#[test]
fn run_help_says_what_the_config_and_the_signals_do() {
    let output = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = text(&output.stdout);
    assert!(output.status.success(), "{help}");
    for expected in [
        "--config <FILE>",
        "The TOML config",
        "SIGHUP reloads FILE",
        "SIGTERM or Ctrl-C stops accepting",
    ] {
        assert!(help.contains(expected), "`{expected}` missing:\n{help}");
    }
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = text(&output.stdout);
    assert!(
        help.contains("legacy callers keep their session tokens, Campaign gets IMS technical-account Bearer tokens"),
        "{help}"
    );
}

/// A figure of `/proc/PID/status`, in bytes (`VmRSS`, `VmHWM`: resident now, and at most).
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line.trim().trim_end_matches(" kB").parse().unwrap();
    kib * 1024
}

/// An HTTP/2 connection whose `streams` streams each send `sent` bytes of a prefix that never
/// ends (an unfinished comment), then stall; each stream's answer, if one comes.
async fn stalled_streams(addr: SocketAddr, streams: usize, sent: usize) -> Vec<Option<u16>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut answers = Vec::new();
    for _ in 0..streams {
        let mut client = client.clone().ready().await.unwrap();
        let request = http::Request::post(format!("http://localhost{SOAP_PATH}"))
            .header("content-type", "text/xml")
            .body(())
            .unwrap();
        let (answer, mut body) = client.send_request(request, false).unwrap();
        answers.push(tokio::spawn(async move {
            let mut prefix = b"<?xml version=\"1.0\"?><!-- ".to_vec();
            prefix.resize(sent, b'>');
            for piece in prefix.chunks(4096) {
                if body
                    .send_data(bytes::Bytes::copy_from_slice(piece), false)
                    .is_err()
                {
                    break;
                }
            }
            let answer = tokio::time::timeout(Duration::from_secs(30), answer).await;
            // The stream stays open (unless answered) until the test ends.
            std::mem::forget(body);
            answer
                .ok()
                .and_then(std::result::Result::ok)
                .map(|a| a.status().as_u16())
        }));
    }
    let mut statuses = Vec::new();
    for answer in answers {
        statuses.push(answer.await.unwrap());
    }
    driver.abort();
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http2_streams_hold_no_more_than_max_prefix_memory() {
    // 24 connections × 32 streams × 60 KiB: without a budget, 48 MiB of buffers (RSS grew by
    // 65 MB here, and from 9 to 135 MB in the issue's run); with one of 4 MiB, the streams past
    // it get a 503, and RSS grows by 14 MB (the budget, what HTTP/2 windows let the clients
    // send ahead, and the state of 768 streams).
    const BUDGET: u64 = 4 * 1024 * 1024;
    const MARGIN: u64 = 16 * 1024 * 1024;
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir("stalled");
    let config = with_server(
        &config_text(&ims.url(), &campaign.url(), "", ""),
        &format!(
            "listen = \"127.0.0.1:0\"\nmax_prefix_memory = {BUDGET}\nprefix_timeout = \"60s\"\nshutdown_grace = \"1s\""
        ),
    );
    let path = dir.join("imsbridge.toml");
    std::fs::write(&path, config).unwrap();
    let mut running = Running::start(&path, "info");
    let pid = running.child.id();
    let addr = running.addr;
    assert_eq!(
        post_from("127.0.0.1", addr, &seed_002(&credential())).await,
        200
    );
    let before = memory(pid, "VmRSS");
    let attack: Vec<_> = (0..24)
        .map(|_| tokio::spawn(stalled_streams(addr, 32, 60 * 1024)))
        .collect();
    // Until the proxy has taken in what it will: its memory the same over a second of samples
    // (one every 20 ms).
    let (mut steady, mut last) = (0, 0);
    eventually("the proxy's memory steady", Duration::from_secs(15), || {
        let now = memory(pid, "VmRSS");
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
        std::future::ready((steady >= 50).then_some(()))
    })
    .await;
    let peak = memory(pid, "VmHWM");
    let mb = |bytes: u64| bytes as f64 / 1e6;
    eprintln!(
        "peak RSS {:.1} MB, {:.1} MB before the attack",
        mb(peak),
        mb(before)
    );
    assert!(
        peak < before + BUDGET + MARGIN,
        "peak RSS {:.1} MB: {:.1} MB before the attack, a budget of {:.1} MB",
        mb(peak),
        mb(before),
        mb(BUDGET)
    );
    // The streams past the budget were refused as such.
    running.wait_for("prefixes_busy");
    running.signal("TERM");
    for connection in attack {
        connection.abort();
    }
    let _ = running.child.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `imsbridge_config_reloads_total` of a result.
async fn reloads(admin: SocketAddr, result: &str) -> f64 {
    let shown = get(admin, "/metrics").await.body;
    metric(
        &shown,
        &format!("imsbridge_config_reloads_total{{result=\"{result}\"}}"),
    )
    .unwrap_or_else(|| panic!("no reload count:\n{shown}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_is_reloaded_whichever_way_it_changed() {
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir("watch");
    // A ConfigMap volume: the file is a symlink through `..data` to a dated folder.
    let write_version = |name: &str, text: &str| {
        let version = dir.join(name);
        std::fs::create_dir_all(&version).unwrap();
        std::fs::write(version.join("imsbridge.toml"), text).unwrap();
    };
    let base = with_server(
        &config_text(&ims.url(), &campaign.url(), "", ""),
        "listen = \"127.0.0.1:0\"",
    );
    let with_newcomer = |text: &str, login: &str| {
        format!(
            "{text}\n[[callers]]\nname = \"{login}\"\nlogin = \"{login}\"\npassword = \"{}\"\nprofile = \"messagecenter\"\n",
            cheap_hash("newcomer-password-3c5d")
        )
    };
    write_version("..2026_12_01_a", &base);
    std::os::unix::fs::symlink("..2026_12_01_a", dir.join("..data")).unwrap();
    let config = dir.join("imsbridge.toml");
    std::os::unix::fs::symlink("..data/imsbridge.toml", &config).unwrap();
    let mut running = Running::start(&config, "info");
    let addr = running.addr;
    let call = |login: &'static str| async move {
        post(
            addr,
            seed_002(&format!("{login}/newcomer-password-3c5d")),
            &[],
        )
        .await
        .status
    };
    assert_eq!(call("first").await, 500, "not a caller yet");

    // Kubernetes' update: a new dated folder, then `..data` swapped to it by a rename.
    write_version("..2026_12_01_b", &with_newcomer(&base, "first"));
    std::os::unix::fs::symlink("..2026_12_01_b", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    running.wait_for("config reloaded");
    assert_eq!(call("first").await, 200, "the swapped-in config serves");

    // An editor's save: a new file renamed over the target.
    let target = dir.join("..2026_12_01_b/imsbridge.toml");
    let saved = dir.join("..2026_12_01_b/.imsbridge.toml.swp");
    std::fs::write(
        &saved,
        with_newcomer(&with_newcomer(&base, "first"), "second"),
    )
    .unwrap();
    std::fs::rename(&saved, &target).unwrap();
    running.wait_for("config reloaded");
    assert_eq!(call("second").await, 200);

    // An edit in place.
    std::fs::write(&target, with_newcomer(&base, "third")).unwrap();
    running.wait_for("config reloaded");
    assert_eq!(call("third").await, 200);
    assert_eq!(call("second").await, 500, "gone with the edit");
    assert_eq!(reloads(running.admin, "ok").await, 3.0);

    // A bad edit: refused, said why, counted; the running config stays.
    std::fs::write(
        &target,
        "[upstream]\nurl = \"https://campaign.example.com\"\nretries = 3\n",
    )
    .unwrap();
    let refused = running.wait_for("reload refused");
    assert!(refused.contains("unknown field `retries`"), "{refused}");
    assert_eq!(reloads(running.admin, "failed").await, 1.0);
    assert_eq!(call("third").await, 200);
    let (status, _) = running.stop();
    assert!(status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_reloading_and_stopping() {
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir("notify");
    let config = write_config(&dir, &ims.url(), &campaign.url(), "", "");
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let heard = move || {
        let mut buffer = [0u8; 4096];
        let n = socket.recv(&mut buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    let heard = std::sync::Arc::new(std::sync::Mutex::new(heard));
    let next = {
        let heard = heard.clone();
        move || tokio::task::block_in_place(|| (heard.lock().unwrap())())
    };
    let running = Running::start_env(
        &config,
        "info",
        &[],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let ready = next();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    // The listeners answer once READY is said.
    assert_eq!(get(running.admin, "/healthz").await.status, 200);

    running.signal("HUP");
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let done = next();
    assert!(
        done.starts_with("READY=1\nSTATUS=serving; config reloaded"),
        "{done}"
    );

    // A refused reload: READY again, and the status says why.
    std::fs::write(&config, "[upstream]\nretries = 3\n").unwrap();
    running.signal("HUP");
    let mut said = Vec::new();
    while !said.iter().any(|s: &String| s.starts_with("READY=1")) {
        said.push(next());
    }
    assert!(said[0].starts_with("RELOADING=1"), "{said:?}");
    let status = said.last().unwrap();
    assert!(status.contains("the last reload was refused"), "{status}");
    assert!(status.contains("retries"), "{status}");

    let (exit, _) = running.stop();
    assert!(exit.success());
    let mut said = next();
    // A change to the file may have been noticed again meanwhile.
    while !said.starts_with("STOPPING=1") {
        said = next();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An OTLP/HTTP receiver on loopback: the JSON bodies posted to `/v1/traces`. With `tls`, it
/// speaks HTTPS with that certificate.
async fn otlp_receiver(
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = received.clone();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let keep = keep.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let keep = keep.clone();
                        async move {
                            let path = request.uri().path().to_owned();
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            if path == "/v1/traces" {
                                keep.lock()
                                    .unwrap()
                                    .push(serde_json::from_slice(&body).unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                            ))
                        }
                    },
                );
                let http1 = hyper::server::conn::http1::Builder::new();
                let _ = match acceptor {
                    None => {
                        http1
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => {
                            http1
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await
                        }
                        Err(_) => return,
                    },
                };
            });
        }
    });
    (url, received)
}

/// A CA and a certificate it signed for 127.0.0.1: the CA's PEM, and a rustls server config.
fn collector_certificate() -> (String, std::sync::Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    (ca.pem(), std::sync::Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_one_trace_from_the_caller_to_campaign() {
    one_trace_to(false).await;
}

/// The same, to a collector that speaks HTTPS, trusted by `telemetry.ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_go_to_an_https_collector() {
    one_trace_to(true).await;
}

async fn one_trace_to(https: bool) {
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir(if https { "otlps" } else { "otlp" });
    let (collector, received, ca_file) = if https {
        let (ca, tls) = collector_certificate();
        std::fs::write(dir.join("collector-ca.pem"), ca).unwrap();
        let (collector, received) = otlp_receiver(Some(tls)).await;
        (collector, received, "ca_file = \"collector-ca.pem\"\n")
    } else {
        let (collector, received) = otlp_receiver(None).await;
        (collector, received, "")
    };
    let config = write_config(
        &dir,
        &ims.url(),
        &campaign.url(),
        &format!("[telemetry]\notlp_endpoint = \"{collector}\"\n{ca_file}"),
        "",
    );
    let running = Running::start(&config, "info");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let answer = post(
        running.addr,
        seed_002(&credential()),
        &[("traceparent", &format!("00-{trace_id}-{parent_id}-01"))],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (status, log) = running.stop();
    assert!(status.success());
    assert!(!log.contains(trace_id), "spans are not in the log");

    let bodies = received.lock().unwrap().clone();
    let text = serde_json::to_string(&bodies).unwrap();
    for secret in [PASSWORD, CLIENT_SECRET] {
        assert!(!text.contains(secret), "`{secret}` in a span");
    }
    for token in ims.issued() {
        assert!(!text.contains(&token), "the access token in a span");
    }
    let spans: Vec<&serde_json::Value> = bodies
        .iter()
        .flat_map(|b| b["resourceSpans"].as_array().unwrap().iter())
        .flat_map(|r| r["scopeSpans"].as_array().unwrap().iter())
        .flat_map(|s| s["spans"].as_array().unwrap().iter())
        .collect();
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no span {name} in {text}"))
    };
    let request = named("request");
    assert_eq!(request["traceId"], trace_id, "the caller's trace goes on");
    assert_eq!(request["parentSpanId"], parent_id);
    for stage in ["prefix", "caller check", "token", "upstream"] {
        let span = named(stage);
        assert_eq!(span["traceId"], trace_id, "{stage}");
        assert_eq!(span["parentSpanId"], request["spanId"], "{stage}");
    }
    // Campaign got the trace, as a child of the upstream stage.
    let sent = campaign.requests();
    let traceparent = sent[0]
        .header("traceparent")
        .expect("a traceparent to Campaign");
    assert_eq!(
        traceparent,
        format!(
            "00-{trace_id}-{}-01",
            named("upstream")["spanId"].as_str().unwrap()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The access log is written off the request path; at SIGTERM, every request answered has its
/// line, however many were in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_access_line_is_lost_at_sigterm_under_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (ims, campaign) = stand_ins().await;
    campaign.set_delay(Duration::from_millis(20));
    let dir = temp_dir("log-at-sigterm");
    let config = write_config(&dir, &ims.url(), &campaign.url(), "", "");
    let running = Running::start(&config, "info");
    let addr = running.addr;
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (answered, stop) = (answered.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let request = soap_request(seed_002(&credential()), &[]);
                    match imsbridge::demo::send(addr, request).await {
                        Ok(response) if response.status() == 200 => {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        // Refused once shutting down: no answer, no line.
                        _ => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();
    eventually("answers under load", Duration::from_secs(20), || async {
        (answered.load(Ordering::SeqCst) >= 300).then_some(())
    })
    .await;
    let (status, log) = running.stop();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    assert!(status.success());
    let lines = log
        .lines()
        .filter(|l| l.contains("imsbridge::access") && l.contains(" status=200 "))
        .count();
    assert_eq!(
        lines,
        answered.load(Ordering::SeqCst),
        "one access line per answered request"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_beyond_loopback_without_a_password_is_warned_of() {
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir("admin-warning");
    let warning = "has no [admin] password";
    let beyond = |top: &str| {
        let path = write_config(&dir, &ims.url(), &campaign.url(), top, "");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "admin_listen = \"127.0.0.1:0\"",
            "admin_listen = \"0.0.0.0:0\"",
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    // On 0.0.0.0 without a password: warned, with the address.
    let running = Running::start(&beyond(""), "info");
    let (_, log) = running.stop();
    let line = log
        .lines()
        .find(|line| line.contains(warning))
        .unwrap_or_else(|| panic!("no warning in:\n{log}"));
    assert!(line.contains("WARN") && line.contains("0.0.0.0:"), "{line}");
    // With one, or on loopback: not.
    let with_password = format!("[admin]\npassword = \"{}\"\n", cheap_hash("admin-pw-4d2c"));
    for config in [
        beyond(&with_password),
        write_config(&dir, &ims.url(), &campaign.url(), "", ""),
    ] {
        let running = Running::start(&config, "info");
        let (_, log) = running.stop();
        assert!(!log.contains(warning), "{log}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_url_it_called_and_the_usual_cause_of_a_404() {
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir("check-404");
    let path = dir.join("imsbridge.toml");
    // The usual mistake: the SOAP router's path in upstream.url.
    let doubled = format!("{}/nl/jsp/soaprouter.jsp", campaign.url());
    std::fs::write(&path, config_text(&ims.url(), &doubled, "", "")).unwrap();
    let output = check_command(path.display(), true).await;
    let shown = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(&format!(
            "probe: POST {doubled}/nl/jsp/soaprouter.jsp answered HTTP 404 Not Found"
        )),
        "{shown}"
    );
    assert!(
        shown.contains(
            "the upstream URL already ends in /nl/jsp/soaprouter.jsp, which imsbridge adds to it"
        ),
        "{shown}"
    );
    // Another path: the URL, and what upstream.url holds.
    let elsewhere = format!("{}/campaign", campaign.url());
    std::fs::write(&path, config_text(&ims.url(), &elsewhere, "", "")).unwrap();
    let output = check_command(path.display(), true).await;
    let shown = text(&output.stdout);
    assert!(
        shown.contains(&format!(
            "probe: POST {elsewhere}/nl/jsp/soaprouter.jsp answered HTTP 404 Not Found"
        )),
        "{shown}"
    );
    assert!(shown.contains("is this Campaign's address?"), "{shown}");
    // Campaign's address alone: the probe passes.
    std::fs::write(&path, config_text(&ims.url(), &campaign.url(), "", "")).unwrap();
    let output = check_command(path.display(), true).await;
    assert!(output.status.success(), "{}", text(&output.stdout));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_into_a_closed_pipe_finishes_quietly_with_its_own_status() {
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir("check-pipe");
    let path = dir.join("imsbridge.toml");
    std::fs::write(&path, config_text(&ims.url(), &campaign.url(), "", "")).unwrap();
    let status = |config: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            // `check … | head -0`: the reader is gone before the first line is written.
            let mut child = ChildGuard::spawn(
                Command::new(BIN)
                    .args(["check", "--probe", "--config"])
                    .arg(config)
                    .env("MC_CLIENT_SECRET", CLIENT_SECRET)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped()),
            );
            drop(child.stdout.take());
            child.wait_with_output()
        })
    };
    let output = status(path.clone()).await.unwrap();
    let said = text(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(
        !said.contains("panicked") && !said.contains("Broken pipe"),
        "{said}"
    );
    // A failing check still says so by its status.
    std::fs::write(
        &path,
        config_text(&ims.url(), &format!("{}/x", campaign.url()), "", ""),
    )
    .unwrap();
    let output = status(path).await.unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_the_commit_build_info_does() {
    let output = Command::new(BIN).arg("--version").output().unwrap();
    let said = text(&output.stdout);
    assert!(
        said.starts_with(&format!("imsbridge {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{said}"
    );
    let commit = said
        .split("(commit ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap();
    // What imsbridge_build_info says, from the same build.
    let stack = Stack::default().await;
    let metrics = get(stack.proxy.admin, "/metrics").await.body;
    let info = metrics
        .lines()
        .find(|line| line.starts_with("imsbridge_build_info{"))
        .unwrap_or_else(|| panic!("no imsbridge_build_info in {metrics}"));
    assert!(
        info.contains(&format!("commit=\"{commit}\"")),
        "{info} / {said}"
    );
    // In this checkout, with git at hand: the commit itself.
    if let Ok(head) = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        && head.status.success()
    {
        assert_eq!(commit, text(&head.stdout).trim());
    }
}

#[test]
fn a_mistyped_command_or_option_names_the_nearest() {
    for (args, tip) in [
        (vec!["chek"], "a similar subcommand exists: 'check'"),
        (vec!["inventry"], "a similar subcommand exists: 'inventory'"),
        (
            vec!["check", "--confg", "x"],
            "a similar argument exists: '--config'",
        ),
    ] {
        let output = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(2));
        let said = text(&output.stderr);
        assert!(said.contains(tip), "{args:?}: {said}");
    }
}
