//! The migration cockpit (issue "Migration cockpit"): the inventory of legacy logins
//! (`GET /inventory`, `imsbridge inventory`), its `[[callers]]` skeleton accepted by the config
//! once its hash is in, its bound; shadow comparisons (agreement, mismatch, a PushEvent sent
//! once, the in-flight bound); the admin page.

use std::process::Command;
use std::time::Duration;

use crate::support::*;
use imsbridge::config::Config;
use imsbridge::demo::StandInCampaign;
use serde_json::Value;

const STRANGER_PASSWORD: &str = "stranger-password-8c1d";
const WRONG_PASSWORD: &str = "not-the-password-77ab";
pub(super) const READER_PASSWORD: &str = "reader-password-3f9e";

/// A call of `service#method` with `credential` in its session token.
pub(super) fn call(service: &str, method: &str, credential: &str) -> (String, String) {
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:{service}"><soapenv:Header/><soapenv:Body><urn:{method}><urn:sessiontoken>{credential}</urn:sessiontoken><urn:entity><queryDef schema="nms:recipient" operation="select"><select><node expr="@email"/></select></queryDef></urn:entity></urn:{method}></soapenv:Body></soapenv:Envelope>"#
    );
    (body, format!("{service}#{method}"))
}

pub(super) async fn post_call(
    proxy: &Proxy,
    service: &str,
    method: &str,
    credential: &str,
) -> Answer {
    let (body, action) = call(service, method, credential);
    post(proxy.addr, body, &[("soapaction", &action)]).await
}

async fn inventory(proxy: &Proxy) -> Value {
    let answer = get(proxy.admin, "/inventory").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.headers.get("content-type").unwrap(),
        "application/json"
    );
    serde_json::from_str(&answer.body).unwrap()
}

fn login<'a>(inventory: &'a Value, name: &str) -> &'a Value {
    inventory["logins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["login"] == name)
        .unwrap_or_else(|| panic!("no login {name} in {inventory:#}"))
}

/// `(way, outcome)`: requests, of a login.
fn counts(login: &Value) -> Vec<(String, String, u64)> {
    login["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["way"].as_str().unwrap().to_owned(),
                c["outcome"].as_str().unwrap().to_owned(),
                c["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn count(way: &str, outcome: &str, n: u64) -> (String, String, u64) {
    (way.to_owned(), outcome.to_owned(), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_names_every_login_on_every_way_and_never_a_password() {
    let stack = Stack::start("unknown_callers = \"legacy\"", "").await;
    let proxy = &stack.proxy;
    // The ims caller, right and wrong; the legacy caller; a stranger, twice; a stranger's
    // Logon; a page with a stranger's credential; a Campaign session token (no login in it).
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    let wrong = post(
        stack.url(),
        seed_002(&format!("{LOGIN}/{WRONG_PASSWORD}")),
        &[],
    )
    .await;
    assert_eq!(wrong.status, 500);
    let legacy = post(
        stack.url(),
        seed_002(&format!("{LEGACY_LOGIN}/legacy-password")),
        &[],
    )
    .await;
    assert_eq!(legacy.status, 200);
    for _ in 0..2 {
        let stranger = post_call(
            proxy,
            "xtk:queryDef",
            "ExecuteQuery",
            &format!("stranger/{STRANGER_PASSWORD}"),
        )
        .await;
        assert_eq!(stranger.status, 200, "{}", stranger.body);
    }
    let logon = format!(
        r#"<?xml version="1.0"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns="urn:xtk:session"><SOAP-ENV:Body><ns:Logon><ns:sessiontoken></ns:sessiontoken><ns:strLogin>logger</ns:strLogin><ns:strPassword>{STRANGER_PASSWORD}</ns:strPassword><ns:elemParameters/></ns:Logon></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    );
    let answer = post(stack.url(), logon, &[("soapaction", "xtk:session#Logon")]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let page = get(
        stack.url(),
        &format!("/nl/jsp/ping.jsp?__sessiontoken=pager/{STRANGER_PASSWORD}"),
    )
    .await;
    assert_ne!(page.status, 0);
    post(stack.url(), seed_002("___campaign-session-4d2e"), &[]).await;

    // The log line is written when the answer is done with: wait for the last one.
    let shown = eventually(
        "the page request in the inventory",
        Duration::from_secs(5),
        || async {
            let shown = inventory(proxy).await;
            shown["logins"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["login"] == "pager")
                .then_some(shown)
        },
    )
    .await;
    let text = shown.to_string();
    for secret in [
        PASSWORD,
        WRONG_PASSWORD,
        STRANGER_PASSWORD,
        "legacy-password",
        "campaign-session-4d2e",
        CLIENT_SECRET,
    ] {
        assert!(
            !text.contains(secret),
            "`{secret}` in the inventory: {text}"
        );
    }
    let mc = login(&shown, LOGIN);
    assert_eq!(mc["caller"], "crm-events");
    assert_eq!(
        counts(mc),
        [count("ims", "ok", 1), count("refused", "wrong_password", 1)]
    );
    assert_eq!(mc["actions"][0]["name"], "nms:rtEvent#PushEvent");
    assert_eq!(mc["actions"][0]["requests"], 2);
    assert_eq!(mc["peers"][0]["name"], "127.0.0.1");
    assert!(mc["first_seen"].as_u64().unwrap() > 1_700_000_000);
    let crm = login(&shown, LEGACY_LOGIN);
    assert_eq!(crm["caller"], "old-crm");
    assert_eq!(counts(crm), [count("legacy", "ok", 1)]);
    let stranger = login(&shown, "stranger");
    assert_eq!(stranger["caller"], Value::Null);
    assert_eq!(counts(stranger), [count("transparent", "ok", 2)]);
    assert_eq!(stranger["actions"][0]["name"], "xtk:queryDef#ExecuteQuery");
    let logger = login(&shown, "logger");
    assert_eq!(logger["actions"][0]["name"], "xtk:session#Logon");
    let pager = login(&shown, "pager");
    assert_eq!(pager["actions"][0]["name"], "/nl/jsp/ping.jsp");
    assert_eq!(
        shown["logins"].as_array().unwrap().len(),
        5,
        "a Campaign session token names no login: {shown:#}"
    );
    assert_eq!(shown["profiles"], serde_json::json!(["messagecenter"]));
    stack.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_keeps_at_most_its_bound_of_logins_no_caller_owns() {
    let stack = Stack::start(
        "unknown_callers = \"legacy\"\n[admin]\ninventory_max_logins = 3\n",
        "",
    )
    .await;
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    for i in 0..8 {
        let answer = post(stack.url(), seed_002(&format!("stranger{i}/pw")), &[]).await;
        assert_eq!(answer.status, 200);
    }
    let shown = eventually(
        "eight strangers counted",
        Duration::from_secs(5),
        || async {
            let shown = inventory(&stack.proxy).await;
            (shown["dropped"] == 5).then_some(shown)
        },
    )
    .await;
    let mut logins: Vec<&str> = shown["logins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["login"].as_str().unwrap())
        .collect();
    logins.sort();
    // The configured caller's login stays, whatever comes.
    assert_eq!(logins, ["mc", "stranger5", "stranger6", "stranger7"]);
    assert_eq!(shown["max_logins"], 3);
    stack.proxy.stop().await;
}

/// The first day: imsbridge in front of Campaign knowing no caller. `imsbridge inventory` over
/// two replicas says who calls and prints a `[[callers]]` entry that the config accepts once
/// its hash is in; with it, the login is that caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_of_two_replicas_gives_callers_the_config_accepts() {
    let (ims, campaign) = stand_ins().await;
    let full = config_text(
        &ims.url(),
        &campaign.url(),
        "unknown_callers = \"legacy\"",
        "",
    );
    // No callers at all.
    let first_day = full[..full.find("[[callers]]").unwrap()].to_owned();
    let one = Proxy::start(&first_day).await;
    let two = Proxy::start(&first_day).await;
    let newcomer = "crm-newcomer/newcomer-password-5e0a";
    for proxy in [&one, &one, &two] {
        let answer = post(proxy.addr, seed_002(newcomer), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    for proxy in [&one, &two] {
        eventually("counted", Duration::from_secs(5), || async {
            let shown = inventory(proxy).await;
            (!shown["logins"].as_array().unwrap().is_empty()).then_some(())
        })
        .await;
    }
    let admins = [one.admin, two.admin];
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_imsbridge"))
            .arg("inventory")
            .args(
                admins
                    .iter()
                    .flat_map(|a| ["--admin".to_owned(), format!("http://{a}")]),
            )
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!shown.contains("newcomer-password"), "{shown}");
    let row = shown
        .lines()
        .find(|l| l.starts_with("crm-newcomer "))
        .unwrap_or_else(|| panic!("no row:\n{shown}"));
    assert!(
        row.contains(" 3 ") && row.contains("transparent ok 3"),
        "the replicas' counts add up: {row}"
    );
    let skeleton = &shown[shown.find("# Logins no caller owns").expect("a skeleton")..];
    for line in [
        "name = \"legacy-crm-newcomer\"",
        "login = \"crm-newcomer\"",
        "profile = \"messagecenter\"",
        "mode = \"legacy\"",
        "allow_from = [\"127.0.0.1\"]",
    ] {
        assert!(skeleton.contains(line), "`{line}` not in:\n{skeleton}");
    }
    // As printed, refused: the hash is to be filled in.
    let config = format!("{first_day}\n{skeleton}");
    let refused = Config::parse(&config, std::path::Path::new("."), &env()).unwrap_err();
    assert!(
        refused.to_string().contains("callers[0].password"),
        "{refused}"
    );
    let config = config.replace(
        imsbridge::cli::HASH_PLACEHOLDER,
        &cheap_hash("newcomer-password-5e0a"),
    );
    one.stop().await;
    two.stop().await;
    let proxy = Proxy::start(&config).await;
    assert_eq!(post(proxy.addr, seed_002(newcomer), &[]).await.status, 200);
    let shown = eventually("the caller's request", Duration::from_secs(5), || async {
        let shown = inventory(&proxy).await;
        (!shown["logins"].as_array().unwrap().is_empty()).then_some(shown)
    })
    .await;
    let newcomer = login(&shown, "crm-newcomer");
    assert_eq!(newcomer["caller"], "legacy-crm-newcomer");
    assert_eq!(counts(newcomer), [count("legacy", "ok", 1)]);
    proxy.stop().await;
}

/// A config with a `shadow` caller `reader` (login `reader`) beside the stack's callers.
pub(super) fn shadow_caller(extra: &str) -> String {
    format!(
        r#"
[[callers]]
name = "reader"
login = "reader"
password = "{}"
profile = "messagecenter"
mode = "shadow"
shadow_actions = ["xtk:queryDef#ExecuteQuery", "xtk:session#GetUserInfo"]
{extra}"#,
        cheap_hash(READER_PASSWORD)
    )
}

async fn shadow_counts(proxy: &Proxy, action: &str, result: &str) -> f64 {
    let shown = get(proxy.admin, "/metrics").await.body;
    metric(
        &shown,
        &format!(
            "imsbridge_shadow_comparisons_total{{caller=\"reader\",action=\"{action}\",result=\"{result}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

async fn until_counted(proxy: &Proxy, action: &str, result: &str, n: f64) {
    eventually(
        &format!("{action} {result} = {n}"),
        Duration::from_secs(10),
        || async { (shadow_counts(proxy, action, result).await == n).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_caller_gets_the_legacy_answer_and_its_read_calls_are_compared() {
    let stack = Stack::start("", &shadow_caller("")).await;
    let proxy = &stack.proxy;
    let credential = format!("reader/{READER_PASSWORD}");

    // ExecuteQuery: the same answer both ways.
    let answer = post_call(proxy, "xtk:queryDef", "ExecuteQuery", &credential).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    until_counted(proxy, "xtk:queryDef#ExecuteQuery", "match", 1.0).await;
    let sent = stack.campaign.requests();
    assert_eq!(sent.len(), 2, "the call and its copy");
    let (legacy, copy) = (&sent[0], &sent[1]);
    assert!(legacy.header("authorization").is_none());
    assert!(legacy.text().contains(&credential));
    let bearer = copy.header("authorization").unwrap();
    assert!(
        stack
            .ims
            .token_check()
            .is_valid(bearer.strip_prefix("Bearer ").unwrap())
    );
    assert!(
        !copy.text().contains("reader"),
        "the copy carries no credential"
    );
    assert_eq!(
        copy.text(),
        legacy.text().replace(&credential, ""),
        "the copy is the call but for its credential"
    );

    // GetUserInfo: the technical account is not the operator.
    let answer = post_call(proxy, "xtk:session", "GetUserInfo", &credential).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.contains("legacy-operator"),
        "the legacy answer: {}",
        answer.body
    );
    until_counted(proxy, "xtk:session#GetUserInfo", "mismatch", 1.0).await;

    // A PushEvent is never copied; a wrong password gets no copy.
    let push = post(stack.url(), seed_002(&credential), &[]).await;
    assert_eq!(push.status, 200);
    let wrong = post_call(
        proxy,
        "xtk:queryDef",
        "ExecuteQuery",
        &format!("reader/{WRONG_PASSWORD}"),
    )
    .await;
    assert_eq!(wrong.status, 200, "Campaign's own answer: {}", wrong.body);
    until_counted(proxy, "xtk:queryDef#ExecuteQuery", "unverified", 1.0).await;
    let sent = stack.campaign.requests();
    assert_eq!(sent.len(), 6, "two calls and their copies, then one each");
    assert_eq!(
        sent.iter()
            .filter(|r| r.text().contains("PushEvent"))
            .count(),
        1,
        "the PushEvent reached Campaign once"
    );
    // A call whose SOAPAction names a listed action but whose body calls another: no copy.
    let (body, _) = call("nms:rtEvent", "PushEvent", &credential);
    let answer = post(
        stack.url(),
        body,
        &[("soapaction", "xtk:queryDef#ExecuteQuery")],
    )
    .await;
    assert_ne!(answer.status, 0);
    // A copy would hold its place in `shadow_copies_in_flight` from before the answer until
    // its own answer came: none is on its way.
    eventually(
        "no shadow copy on its way",
        Duration::from_secs(10),
        || async {
            let metrics = get(proxy.admin, "/metrics").await.body;
            (metric(&metrics, "imsbridge_shadow_copies_in_flight")? == 0.0).then_some(())
        },
    )
    .await;
    assert_eq!(stack.campaign.requests().len(), 7, "sent once");
    assert_eq!(
        shadow_counts(proxy, "xtk:queryDef#ExecuteQuery", "match").await,
        1.0
    );

    // The page shows the comparisons.
    let page = get(proxy.admin, "/").await.body;
    let shadow = &page[page.find("id=\"shadow\"").unwrap()..];
    assert!(shadow.contains("xtk:session#GetUserInfo"), "{shadow}");
    stack.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_copies_in_flight_are_bounded() {
    let stack = Stack::start("[admin]\nshadow_max_in_flight = 1\n", &shadow_caller("")).await;
    stack.campaign.set_delay(Duration::from_millis(400));
    let credential = format!("reader/{READER_PASSWORD}");
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (body, action) = call("xtk:queryDef", "ExecuteQuery", &credential);
            let addr = stack.url();
            tokio::spawn(async move { post(addr, body, &[("soapaction", &action)]).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().status, 200);
    }
    let action = "xtk:queryDef#ExecuteQuery";
    let (matched, busy) = eventually("each call counted", Duration::from_secs(10), || async {
        let matched = shadow_counts(&stack.proxy, action, "match").await;
        let busy = shadow_counts(&stack.proxy, action, "busy").await;
        (matched + busy == 5.0).then_some((matched, busy))
    })
    .await;
    assert!(
        busy >= 3.0,
        "at most one copy at a time: {matched} copies, {busy} busy"
    );
    assert_eq!(
        stack.campaign.requests().len() as f64,
        5.0 + matched,
        "a call without a copy went once"
    );
    stack.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_callers_profiles_logins_and_nodes_escaped() {
    let stack = Stack::start("unknown_callers = \"legacy\"", &shadow_caller("")).await;
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    // A login is whatever a caller sends: here, markup in a page's query.
    let hostile = "<img src=x onerror=alert(1)>";
    get(
        stack.url(),
        "/nl/jsp/ping.jsp?__sessiontoken=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E/x",
    )
    .await;
    let page = eventually("the page", Duration::from_secs(5), || async {
        let answer = get(stack.proxy.admin, "/").await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.headers.get("content-type").unwrap(),
            "text/html; charset=utf-8"
        );
        answer
            .body
            .contains("&lt;img src=x onerror=alert(1)&gt;")
            .then_some(answer.body)
    })
    .await;
    assert!(!page.contains(hostile), "not escaped");
    assert!(!page.contains("<script"), "no script at all");
    assert!(page.contains("<meta http-equiv=\"refresh\""));
    for shown in [
        "id=\"caller-crm-events\"",
        "id=\"caller-old-crm\"",
        "id=\"caller-reader\"",
        "id=\"profile-messagecenter\"",
        "id=\"login-mc\"",
        &stack.campaign.url(),
        "1 ims · 0 legacy · 0 refused",
    ] {
        assert!(page.contains(shown), "`{shown}` not on the page:\n{page}");
    }
    assert!(!page.contains(PASSWORD));
    stack.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_renders_in_a_browser() {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| tool(name, &["--version"]).is_ok());
    let Some(chromium) = chromium else {
        return skip(
            "the_admin_page_renders_in_a_browser",
            "no chromium (Debian package `chromium`)",
        );
    };
    let second = StandInCampaign::start(None).await.unwrap();
    let stack = Stack::start(
        "unknown_callers = \"legacy\"\n[state]\nflush_interval = \"100ms\"\n",
        &shadow_caller(&format!(
            "\n[upstreams.execution]\nurls = [\"{}\"]\n",
            second.url()
        )),
    )
    .await;
    for _ in 0..6 {
        post(stack.url(), seed_002(&credential()), &[]).await;
    }
    post(
        stack.url(),
        seed_002(&format!("{LOGIN}/{WRONG_PASSWORD}")),
        &[],
    )
    .await;
    for _ in 0..3 {
        post(
            stack.url(),
            seed_002(&format!("{LEGACY_LOGIN}/legacy-password")),
            &[],
        )
        .await;
    }
    post(stack.url(), seed_002("integration-x/unknown"), &[]).await;
    let reader = format!("reader/{READER_PASSWORD}");
    post_call(&stack.proxy, "xtk:queryDef", "ExecuteQuery", &reader).await;
    post_call(&stack.proxy, "xtk:session", "GetUserInfo", &reader).await;
    until_counted(&stack.proxy, "xtk:session#GetUserInfo", "mismatch", 1.0).await;
    // The verdicts rest on what the store has: the mismatch written.
    eventually(
        "the reader's mismatch in the history",
        Duration::from_secs(10),
        || async {
            get(stack.proxy.admin, "/cutover")
                .await
                .body
                .contains("xtk:session#GetUserInfo, within the last")
                .then_some(())
        },
    )
    .await;

    let url = format!("http://{}/", stack.proxy.admin);
    let dir = std::env::temp_dir().join(format!("imsbridge-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let screenshot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cockpit.png");
    let run = |args: Vec<String>| {
        let (chromium, dir) = (chromium.to_owned(), dir.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    &format!("--user-data-dir={}", dir.display()),
                ])
                .args(args)
                .output()
                .unwrap()
        })
    };
    let dom = run(vec!["--dump-dom".to_owned(), url.clone()])
        .await
        .unwrap();
    let dom_text = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    for shown in [
        "id=\"caller-crm-events\"",
        "id=\"caller-old-crm\"",
        "id=\"caller-reader\"",
        "id=\"profile-messagecenter\"",
        "id=\"login-integration-x\"",
        "xtk:session#GetUserInfo",
        "6 ims · 0 legacy · 1 refused",
        // The cut-over column: each caller's verdict and its days, drawn without a script.
        "cut-over (last 30 days, UTC)",
        "<b class=\"verdict muted\">not yet</b>",
        "<b class=\"verdict good\">old operator unused</b>",
        "<b class=\"verdict muted\">no evidence</b>",
        "<svg class=\"days\"",
    ] {
        assert!(
            dom_text.contains(shown),
            "`{shown}` not in the DOM:\n{dom_text}"
        );
    }
    let shot = run(vec![
        format!("--screenshot={}", screenshot.display()),
        "--window-size=1200,1500".to_owned(),
        url,
    ])
    .await
    .unwrap();
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        png.len() > 20_000,
        "more than a blank page: {} bytes",
        png.len()
    );
    // On a phone's width too: the tables scroll inside their section, the page does not.
    let phone = screenshot.with_file_name("cockpit-phone.png");
    let shot = run(vec![
        format!("--screenshot={}", phone.display()),
        "--window-size=390,1600".to_owned(),
        format!("http://{}/", stack.proxy.admin),
    ])
    .await
    .unwrap();
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert!(std::fs::read(&phone).unwrap().starts_with(b"\x89PNG"));
    let _ = std::fs::remove_dir_all(&dir);
    stack.proxy.stop().await;
}
