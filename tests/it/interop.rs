//! Interoperability with a real Campaign client library, not one written here:
//! `@adobe/acc-js-sdk` from npm (pinned by `interop/acc-js-sdk/package-lock.json`), run by node
//! against the proxy. The test installs the package itself (`npm ci`); without Node.js, npm or
//! the npm registry it is skipped and says so, unless `IMSBRIDGE_REQUIRE_ALL_TESTS=1`
//! (`.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

// Logins and passwords long enough to search for in what Campaign received.
const LOGON_LOGIN: &str = "crm_pusher_logon_9f3k";
const LOGON_PASSWORD: &str = "interop-Logon-Pa55word-7d1x";
const TOKEN_LOGIN: &str = "mc_events_token_2q8w";
const TOKEN_PASSWORD: &str = "interop-Token-Pa55word-4m6z";

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/acc-js-sdk")
}

/// `npm ci` against the committed lockfile, unless node_modules is already from it; `Err` says
/// why it cannot be.
fn install_sdk(dir: &Path) -> Result<(), String> {
    tool("node", &["--version"])?;
    let lock = dir.join("package-lock.json");
    let installed = dir.join("node_modules/.package-lock.json");
    let fresh = std::fs::metadata(&installed)
        .and_then(|i| Ok(i.modified()? >= std::fs::metadata(&lock)?.modified()?))
        .unwrap_or(false);
    if fresh {
        return Ok(());
    }
    tool("npm", &["--version"])?;
    install(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acc_js_sdk_logs_on_pushes_events_and_logs_off_through_the_proxy() {
    let dir = interop_dir();
    let installed = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || install_sdk(&dir)
    })
    .await
    .unwrap();
    if let Err(why) = installed {
        return skip(
            "acc_js_sdk_logs_on_pushes_events_and_logs_off_through_the_proxy",
            &why,
        );
    }

    let (ims, campaign) = stand_ins().await;
    let callers = format!(
        r#"logon = true

[[callers]]
name = "crm-logon"
login = "{LOGON_LOGIN}"
password = "{}"
profile = "messagecenter"
logon = true

[[callers]]
name = "crm-token"
login = "{TOKEN_LOGIN}"
password = "{}"
profile = "messagecenter"
"#,
        cheap_hash(LOGON_PASSWORD),
        cheap_hash(TOKEN_PASSWORD)
    );
    let sessions = "[sessions]\nsecret = \"interop-session-secret-0123456789abcdef\"\n";
    let proxy = Proxy::start(&config_text(
        &ims.url(),
        &campaign.url(),
        sessions,
        &callers,
    ))
    .await;

    let url = format!("http://{}", proxy.addr);
    let mut command = Command::new("node");
    command
        .arg("interop.js")
        .current_dir(&dir)
        .env("IMSBRIDGE_URL", url)
        .env("LOGON_LOGIN", LOGON_LOGIN)
        .env("LOGON_PASSWORD", LOGON_PASSWORD)
        .env("TOKEN_LOGIN", TOKEN_LOGIN)
        .env("TOKEN_PASSWORD", TOKEN_PASSWORD);
    let report = json_report(command).await;

    // What the SDK saw: a Logon in Campaign's shape, the PushEvent's result, the Logoff.
    assert_eq!(report["logon"]["logged"], true, "{report}");
    assert_eq!(report["logon"]["login"], LOGON_LOGIN);
    assert_eq!(
        report["logon"]["sessionTokenKind"], "ibs1",
        "a session imsbridge issued"
    );
    assert_eq!(report["logon"]["plId"], "72057594037927936");
    assert_eq!(report["logon"]["loggedOff"], true);
    assert_eq!(report["sessionToken"]["plId"], "72057594037927936");
    let wrong = report["wrongPassword"].as_str().unwrap();
    assert!(
        wrong.contains("Invalid login or password. Connection denied."),
        "{wrong}"
    );

    // What Campaign saw: the two PushEvents, each with the Bearer token, and nothing of the
    // logins, the passwords or the issued tokens.
    let seen = campaign.requests();
    assert_eq!(seen.len(), 2, "Logon and Logoff never reach Campaign");
    let bearer = format!("Bearer {}", ims.issued()[0]);
    for request in &seen {
        assert_eq!(request.header("soapaction"), Some("nms:rtEvent#PushEvent"));
        assert_eq!(request.header("authorization"), Some(bearer.as_str()));
        assert!(request.text().contains("<rtEvent "), "{}", request.text());
        let everything = format!("{:?}\n{}", request.headers, request.text());
        for secret in [
            LOGON_LOGIN,
            LOGON_PASSWORD,
            TOKEN_LOGIN,
            TOKEN_PASSWORD,
            "ibs1.",
            "ibx1.",
        ] {
            assert!(
                !everything.contains(secret),
                "`{secret}` reached Campaign:\n{everything}"
            );
        }
    }
}
