//! The `imsbridge` binary as an operator runs it.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use imsbridge::demo::{StandInCampaign, StandInIms};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_imsbridge");

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("imsbridge-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The secrets of the run below: none may show in its output.
const BROKEN_SECRET: &str = "broken-profile-secret-0b1c";
const WRONG_PASSWORD: &str = "wrong-pass-9x7q";
const GHOST_PASSWORD: &str = "ghost-pass-3y5r";
const LEGACY_PASSWORD: &str = "legacy-pass-8w2e";
const SECURITY_TOKEN: &str = "sec-tok-5z1k";
const BASIC: &str = "c2VjcmV0LWJhc2ljLWF1dGg=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs() {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    ims.add_client("broken-client", "what-ims-expects");
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let dir = temp_dir("logs");
    let config = config_text(&ims.url(), &campaign.url(), "", "")
        .replace("[server]", "[server]\nlisten = \"127.0.0.1:0\"")
        + &format!(
            "\n[profiles.broken]\ntype = \"oauth\"\nclient_id = \"broken-client\"\nclient_secret = \"{BROKEN_SECRET}\"\nscopes = [\"openid\"]\n"
        );
    let path = dir.join("imsbridge.toml");
    std::fs::write(&path, config).unwrap();

    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("MC_CLIENT_SECRET", CLIENT_SECRET)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = lines_tx.send(line);
        }
    });
    let mut output = Vec::new();
    let proxy_addr = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the proxy logs where it listens");
        output.push(line.clone());
        if let Some(at) = line.find(" proxy=") {
            let addr = line[at + 7..].split_whitespace().next().unwrap();
            break addr.parse::<std::net::SocketAddr>().unwrap();
        }
    };

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
        assert!(
            answer.status == 500 || answer.status == 400,
            "{}",
            answer.body
        );
    }
    let legacy = post(
        proxy_addr,
        seed_002(&format!("{LEGACY_LOGIN}/{LEGACY_PASSWORD}")),
        &[],
    )
    .await;
    assert_eq!(legacy.status, 200);
    // Let the refresher of the broken profile fail and retry at least once.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    reader.join().unwrap();
    output.extend(lines.try_iter());
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let log = format!("{}\n{stdout}", output.join("\n"));

    // The run logged what it should: requests, refusals, the IMS failure...
    for expected in [
        "caller=\"crm-events\" profile=\"messagecenter\" action=\"nms:rtEvent#PushEvent\" mode=\"ims\" status=200",
        "outcome=\"wrong_password\"",
        "outcome=\"unknown_caller\"",
        "outcome=\"missing_credential\"",
        "outcome=\"bad_request\"",
        "caller=\"old-crm\"",
        "profile=broken error=IMS refused the request (HTTP 401): invalid_client: invalid client_secret parameter",
        "shutting down",
    ] {
        assert!(
            log.contains(expected),
            "`{expected}` missing from the log:\n{log}"
        );
    }
    // ... and no secret.
    let mut secrets = vec![
        CLIENT_SECRET.to_owned(),
        BROKEN_SECRET.to_owned(),
        PASSWORD.to_owned(),
        WRONG_PASSWORD.to_owned(),
        GHOST_PASSWORD.to_owned(),
        LEGACY_PASSWORD.to_owned(),
        SECURITY_TOKEN.to_owned(),
        BASIC.to_owned(),
    ];
    let issued = ims.issued();
    assert!(!issued.is_empty());
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
            "server.tls: not supported yet",
        ),
        (
            "[upstream]\nurl = \"https://x\"\n[profiles.p]\ntype = \"oauth\"\nclient_id = \"c\"\nclient_secret = { env = \"IMSBRIDGE_TEST_UNSET\" }\nscopes = [\"openid\"]\n",
            "profiles.p.client_secret: environment variable IMSBRIDGE_TEST_UNSET is not set",
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
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"an operator password\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let parsed = argon2::password_hash::phc::PasswordHash::new(&hash).unwrap();
    assert!(imsbridge::callers::check_password(
        "an operator password",
        &parsed
    ));
    assert!(!imsbridge::callers::check_password(
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
        "── 1. The seed-002 call, as the legacy caller sends it ──",
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
