//! WSDL-driven SOAP libraries, unmodified, pointed at imsbridge (issue "Real clients"): each is
//! constructed with the WSDL URL of the proxy, fetches the WSDLs through it (served with the
//! token of `[wsdl] profile`, their address rewritten by `server.public_url`), calls PushEvent
//! with `login/password`, reads a wrong password as a SOAP fault, and logs on, calls with the
//! session and logs off. They install what they
//! need, or are skipped and say so, unless `IMSBRIDGE_REQUIRE_ALL_TESTS=1` (`.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn interop(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(path)
}

/// What Campaign got: the PushEvents with the Bearer token, and none of the passwords or
/// issued tokens.
fn campaign_saw_the_bearer_only(stack: &Stack, calls: usize) {
    let seen = stack.campaign.requests();
    let bearer = format!("Bearer {}", stack.ims.issued()[0]);
    let pushes: Vec<_> = seen.iter().filter(|r| r.uri.path() == SOAP_PATH).collect();
    assert_eq!(
        pushes.len(),
        calls,
        "the wrong password never reaches Campaign"
    );
    for request in seen {
        assert_eq!(request.header("authorization"), Some(bearer.as_str()));
        let everything = format!("{:?}\n{}", request.headers, request.text());
        for secret in [PASSWORD, LOGON_LOGIN, LOGON_PASSWORD, "ibs1.", "ibx1."] {
            assert!(
                !everything.contains(secret),
                "`{secret}` reached Campaign: {everything}"
            );
        }
    }
}

const LOGON_LOGIN: &str = "wsdl_logon_7h2k";
const LOGON_PASSWORD: &str = "wsdl-Logon-Pa55word-3v9q";

/// The stack the libraries talk to: WSDLs served without a credential, naming the proxy; a
/// caller that logs on beside the one with `login/password`.
async fn stack() -> Stack {
    let sessions = "[sessions]\nsecret = \"wsdl-clients-session-secret-0123456789\"\n";
    let logon = format!(
        "\n[[callers]]\nname = \"wsdl-logon\"\nlogin = \"{LOGON_LOGIN}\"\npassword = \"{}\"\nprofile = \"messagecenter\"\nlogon = true\n",
        cheap_hash(LOGON_PASSWORD)
    );
    Stack::start_public(sessions, &logon, |config| config.wsdl.profile = Some(0)).await
}

/// Runs `program` on `script` against `stack`; its JSON report.
async fn run(stack: &Stack, program: PathBuf, script: &str) -> serde_json::Value {
    let mut command = Command::new(program);
    command
        .arg(interop(script))
        .env("IMSBRIDGE_URL", format!("http://{}", stack.url()))
        .env("LOGIN", LOGIN)
        .env("PASSWORD", PASSWORD)
        .env("LOGON_LOGIN", LOGON_LOGIN)
        .env("LOGON_PASSWORD", LOGON_PASSWORD);
    json_report(command).await
}

/// What each library saw: the PushEvent's result, a fault for the wrong password with
/// Campaign's detail, a Logon answered with imsbridge's session, the call with it, the Logoff,
/// and the session refused after it.
fn saw_every_answer(report: &serde_json::Value) {
    assert_eq!(report["plId"], "72057594037927936", "{report}");
    let fault = report["wrongPassword"].as_str().unwrap();
    assert!(fault.contains("the method 'PushEvent'"), "{report}");
    let detail = report["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("Invalid login or password"), "{report}");
    assert_eq!(report["sessionToken"], "ibs1.", "{report}");
    assert_eq!(report["securityToken"], "ibx1.", "{report}");
    assert_eq!(report["sessionPlId"], "72057594037927936", "{report}");
    assert_eq!(report["loggedOff"], true, "{report}");
    let after = report["afterLogoff"].as_str().unwrap();
    assert!(after.contains("XSV-350008"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_soapclient_in_wsdl_mode_pushes_events_through_the_proxy() {
    if let Err(why) = tool("php", &["-r", "exit(class_exists('SoapClient') ? 0 : 1);"]) {
        return skip(
            "php_soapclient_in_wsdl_mode_pushes_events_through_the_proxy",
            &format!("PHP with its soap extension (Debian: php-cli php-soap): {why}"),
        );
    }
    let stack = stack().await;
    let report = run(&stack, PathBuf::from("php"), "php/push.php").await;
    saw_every_answer(&report);
    assert_eq!(report["faultcode"], "SOAP-ENV:Client", "{report}");
    campaign_saw_the_bearer_only(&stack, 2);
}

/// The zeep release tried.
const ZEEP: &str = "zeep==4.3.1";

/// zeep in a virtualenv under `target/`, installed once; its Python, or why it cannot be.
fn zeep() -> Result<PathBuf, String> {
    let python = |venv: &Path| venv.join("bin/python");
    let ready = |venv: &Path| {
        Command::new(python(venv))
            .args(["-c", "import zeep"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    python_tool("zeep", ZEEP, ready).map(|venv| python(&venv))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_in_wsdl_mode_pushes_events_through_the_proxy() {
    let python = match tokio::task::spawn_blocking(zeep).await.unwrap() {
        Ok(python) => python,
        Err(why) => {
            return skip(
                "zeep_in_wsdl_mode_pushes_events_through_the_proxy",
                &format!("Python with pip and PyPI, for {ZEEP}: {why}"),
            );
        }
    };
    let stack = stack().await;
    let report = run(&stack, python, "zeep/push.py").await;
    saw_every_answer(&report);
    campaign_saw_the_bearer_only(&stack, 2);
}
