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
        "caller=\"crm-events\" profile=\"messagecenter\" action=\"nms:rtEvent#PushEvent\" mode=\"ims\" route=\"ims\" status=200",
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
    let output = run_with_stdin(&["hash-password".to_owned()], "an operator password\n");
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

/// Runs `imsbridge` with the given arguments and standard input.
fn run_with_stdin(args: &[String], stdin: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("MC_CLIENT_SECRET", CLIENT_SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// [`run_with_stdin`], off the runtime's threads (the stand-ins run on them).
async fn imsbridge(args: Vec<String>, stdin: &str) -> std::process::Output {
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || run_with_stdin(&args, &stdin))
        .await
        .unwrap()
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
    let nowhere = closed_port_url();
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
