//! Cut-over evidence (`GET /cutover`, `imsbridge cutover`): verdicts made from real traffic over
//! real sockets, the stand-in Campaign answering the two ways alike or not; the same answers
//! from the memory, SQLite and Redis stores; a history read back the next day and pruned.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::cockpit::{READER_PASSWORD, post_call, shadow_caller};
use crate::support::*;
use imsbridge::config::Config;
use serde_json::Value;

const PUSHER_PASSWORD: &str = "pusher-password-2c8a";

/// A canary caller at 100 %, login `pusher`.
fn canary_caller() -> String {
    format!(
        "\n[[callers]]\nname = \"pusher\"\nlogin = \"pusher\"\npassword = \"{}\"\nprofile = \"messagecenter\"\nmode = \"canary\"\ncanary_percent = 100\n",
        cheap_hash(PUSHER_PASSWORD)
    )
}

async fn cutover(admin: SocketAddr) -> Value {
    let answer = get(admin, "/cutover").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.headers.get("content-type").unwrap(),
        "application/json"
    );
    serde_json::from_str(&answer.body).unwrap()
}

fn caller<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["callers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["caller"] == name)
        .unwrap_or_else(|| panic!("no caller {name} in {report}"))
}

/// Waits until `name`'s verdict is `verdict`.
async fn until_verdict(admin: SocketAddr, name: &str, verdict: &str) -> Value {
    eventually(
        &format!("{name}: {verdict}"),
        Duration::from_secs(10),
        || async {
            let report = cutover(admin).await;
            (caller(&report, name)["verdict"] == verdict).then_some(report)
        },
    )
    .await
}

/// The same traffic, and the verdicts it gives, on the store of `state` (a `[state]` table,
/// or none): what the answers hold but for the time they were made.
async fn verdicts_on(state: &str) -> Value {
    let extra = format!("{}{}", shadow_caller(""), canary_caller());
    let top = format!("{state}\n[cutover]\nmin_comparisons = 5\nquiet_days = 7\n");
    let stack = Stack::start(&top, &extra).await;
    let proxy = &stack.proxy;
    let reader = format!("reader/{READER_PASSWORD}");

    // Nothing yet: the shadow caller has no comparison, the legacy one no evidence, the ims
    // one's old operator is unused.
    let report = cutover(proxy.admin).await;
    assert_eq!(report["days_are"], "UTC");
    assert_eq!(caller(&report, "reader")["verdict"], "not_yet");
    assert_eq!(caller(&report, "old-crm")["verdict"], "no_evidence");
    assert!(
        caller(&report, "old-crm")["summary"]
            .as_str()
            .unwrap()
            .contains("shadow_actions")
    );
    assert_eq!(
        caller(&report, "crm-events")["verdict"],
        "old_operator_unused"
    );

    // Five agreeing comparisons: ready.
    for _ in 0..5 {
        let answer = post_call(proxy, "xtk:queryDef", "ExecuteQuery", &reader).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let report = until_verdict(proxy.admin, "reader", "ready").await;
    assert_eq!(caller(&report, "reader")["numbers"]["comparisons"], 5);

    // A canary at 100 %: its calls go the ims way; five clean ones make it ready.
    for _ in 0..5 {
        assert_eq!(
            post(
                proxy.addr,
                seed_002(&format!("pusher/{PUSHER_PASSWORD}")),
                &[]
            )
            .await
            .status,
            200
        );
    }
    until_verdict(proxy.admin, "pusher", "ready").await;

    // One mismatch (GetUserInfo: the technical account is not the operator): not yet.
    let answer = post_call(proxy, "xtk:session", "GetUserInfo", &reader).await;
    assert_eq!(answer.status, 200);
    let report = until_verdict(proxy.admin, "reader", "not_yet").await;
    let reader_verdict = caller(&report, "reader");
    assert!(
        reader_verdict["summary"]
            .as_str()
            .unwrap()
            .contains("xtk:session#GetUserInfo"),
        "{reader_verdict}"
    );

    // A login no caller owns is listed with its last call; the ims caller's own calls leave
    // its old operator unused.
    post(proxy.addr, seed_002("oldop/whatever"), &[]).await;
    assert_eq!(
        post(proxy.addr, seed_002(&credential()), &[]).await.status,
        200
    );
    let report = eventually(
        "the last calls written",
        Duration::from_secs(10),
        || async {
            let report = cutover(proxy.admin).await;
            let listed = report["unowned_logins"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["login"] == "oldop");
            (listed && caller(&report, "crm-events")["numbers"]["ims_way_calls"] == 1)
                .then_some(report)
        },
    )
    .await;
    assert_eq!(
        caller(&report, "crm-events")["verdict"],
        "old_operator_unused"
    );
    // Today's bars: the shadow caller's six calls went the shadow way.
    let today = caller(&report, "reader")["days"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(today["ways"]["shadow"], 6, "{today}");
    stack.proxy.stop().await;
    report
}

/// What a report says but for the time it was made.
fn verdicts(report: &Value) -> Vec<(String, String, Value)> {
    report["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["caller"].as_str().unwrap().to_owned(),
                c["verdict"].as_str().unwrap().to_owned(),
                c["numbers"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_verdicts_from_memory_sqlite_and_redis() {
    let memory = verdicts_on("[state]\nflush_interval = \"100ms\"\n").await;
    let dir = std::env::temp_dir().join(format!("imsbridge-cutover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = verdicts_on(&format!(
        "[state]\npath = \"{}\"\nflush_interval = \"100ms\"\n",
        dir.join("state.db").display()
    ))
    .await;
    assert_eq!(verdicts(&memory), verdicts(&sqlite));
    assert_eq!(memory["unowned_logins"].as_array().unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
    let Some(redis) = RedisServer::start("the_same_verdicts_from_memory_sqlite_and_redis").await
    else {
        return;
    };
    let shared = verdicts_on(&format!(
        "[state]\nredis = \"{}\"\nflush_interval = \"100ms\"\n",
        redis.url()
    ))
    .await;
    assert_eq!(verdicts(&memory), verdicts(&shared));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_switched_to_ims_right_after_a_legacy_way_call_shows_today() {
    let (ims, campaign) = stand_ins().await;
    let text = |mode: &str| {
        config_text(
            &ims.url(),
            &campaign.url(),
            "[state]\nflush_interval = \"100ms\"\n",
            &format!("mode = \"{mode}\""),
        )
    };
    let load = |mode: &str| Config::parse(&text(mode), Path::new("."), &env()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    tokio::spawn(imsbridge::run_reloadable(
        imsbridge::Listeners {
            proxy: listener.into(),
            admin: Some(admin),
        },
        load("legacy"),
        std::future::pending(),
        reloads,
    ));
    // In legacy mode, a call carrying its login goes the legacy way.
    assert_eq!(post(addr, seed_002(&credential()), &[]).await.status, 200);
    until_verdict(admin_addr, "crm-events", "no_evidence").await;
    eventually("the call written", Duration::from_secs(10), || async {
        let report = cutover(admin_addr).await;
        let days = caller(&report, "crm-events")["days"]
            .as_array()
            .unwrap()
            .clone();
        (days.last().unwrap()["ways"]["legacy"] == 1).then_some(())
    })
    .await;
    // Switched to ims by a reload: the history followed its name, and its old operator was
    // used today.
    reload.send(Ok(load("ims"))).await.unwrap();
    let report = until_verdict(admin_addr, "crm-events", "old_operator_used").await;
    let today = imsbridge::clock::Clock::system().now();
    let day = &cutover_day(today);
    let verdict = caller(&report, "crm-events");
    assert_eq!(verdict["numbers"]["last_legacy_call"], day.as_str());
    assert!(
        verdict["summary"].as_str().unwrap().contains(day),
        "{verdict}"
    );
    assert_eq!(verdict["mode"], "ims");
}

/// `YYYY-MM-DD` (UTC) of a time.
fn cutover_day(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Days since the epoch to a civil date (H. Hinnant's algorithm), as the tests' own check.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_is_read_back_the_next_day_and_pruned_after_history_days() {
    let dir = std::env::temp_dir().join(format!("imsbridge-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = imsbridge::clock::Clock::adjustable();
    let top = format!(
        "[state]\npath = \"{}\"\nflush_interval = \"100ms\"\nhistory_days = 2\n[cutover]\nquiet_days = 1\n",
        dir.join("state.db").display()
    );
    let stack = Stack::start_with(&top, "", |config| config.clock = clock.clone()).await;
    let admin = stack.proxy.admin;
    let day_d = cutover_day(clock.now());
    for _ in 0..3 {
        assert_eq!(
            post(stack.url(), seed_002(&credential()), &[]).await.status,
            200
        );
    }
    let bar_of = |report: &Value, day: &str| -> Value {
        caller(report, "crm-events")["days"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["day"] == day)
            .cloned()
            .unwrap_or(Value::Null)
    };
    eventually("day D written", Duration::from_secs(10), || async {
        (bar_of(&cutover(admin).await, &day_d)["ways"]["ims"] == 3).then_some(())
    })
    .await;
    // Day D + 1: day D read back, yesterday's bar.
    clock.advance(Duration::from_secs(86_400));
    let report = cutover(admin).await;
    assert_eq!(bar_of(&report, &day_d)["ways"]["ims"], 3, "{report}");
    assert_eq!(
        caller(&report, "crm-events")["days"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["day"],
        cutover_day(clock.now())
    );
    // Two days later, past history_days = 2: pruned by the next write.
    clock.advance(Duration::from_secs(2 * 86_400));
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    let today = cutover_day(clock.now());
    let report = eventually("day D pruned", Duration::from_secs(10), || async {
        let report = cutover(admin).await;
        (bar_of(&report, &today)["ways"]["ims"] == 1).then_some(report)
    })
    .await;
    assert_eq!(
        bar_of(&report, &day_d)["ways"],
        serde_json::json!({}),
        "{report}"
    );
    stack.proxy.stop().await;
    let db = rusqlite::Connection::open(dir.join("state.db")).unwrap();
    let days: Vec<String> = db
        .prepare("SELECT DISTINCT day FROM daily ORDER BY day")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(days, [today]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cutover_command_prints_the_verdicts_and_exits_0_whatever_they_are() {
    let stack = Stack::start("", &shadow_caller("")).await;
    let admin = format!("http://{}", stack.proxy.admin);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_imsbridge"))
                .args(args)
                .output()
                .unwrap()
        })
    };
    let table = run(vec!["cutover".into(), "--admin".into(), admin.clone()])
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{shown}");
    assert!(shown.contains("days are UTC"), "{shown}");
    for line in [
        "reader      shadow   not_yet",
        "old-crm     legacy   no_evidence",
        "crm-events  ims      old_operator_unused",
    ] {
        assert!(shown.contains(line), "`{line}` in:\n{shown}");
    }
    let json = run(vec![
        "cutover".into(),
        "--admin".into(),
        admin,
        "--json".into(),
    ])
    .await
    .unwrap();
    assert!(json.status.success());
    let parsed: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(caller(&parsed, "reader")["verdict"], "not_yet");
    // A replica that cannot be read: non-zero, saying why.
    let (closed, _held) = closed_port_url();
    let failed = run(vec!["cutover".into(), "--admin".into(), closed])
        .await
        .unwrap();
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("imsbridge: http://"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}
