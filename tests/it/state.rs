//! What outlives a process and spans replicas (`[state]`): against a real `redis-server` of the
//! test's own (on a free loopback port, no persistence, stopped by its PID) with three replicas
//! where the point is the fleet, and against real SQLite files.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::sessions::{SESSION_SECRET, log_on, push, session_call, sessions_table};
use crate::support::*;
use imsbridge::config::Config;
use imsbridge::demo::{StandInCampaign, StandInIms};

/// The `[state]` table of a store at `url`, and `[sessions]`.
fn shared(url: &str) -> String {
    format!(
        "{}[state]\nredis = \"{url}\"\nflush_interval = \"200ms\"\n",
        sessions_table(SESSION_SECRET, "1h")
    )
}

/// `n` replicas of one config, sharing the stand-ins.
async fn replicas(top: &str, extra: &str, n: usize) -> (Vec<Proxy>, StandInIms, StandInCampaign) {
    let (ims, campaign) = stand_ins().await;
    let text = config_text(&ims.url(), &campaign.url(), top, extra);
    let mut proxies = Vec::new();
    for _ in 0..n {
        proxies.push(Proxy::start(&text).await);
    }
    (proxies, ims, campaign)
}

async fn logoff(proxy: SocketAddr, session: &str, security: &str) {
    let answer = post(
        proxy,
        session_call("Logoff", "xtk:session", session, security),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("LogoffResponse"), "{}", answer.body);
}

async fn inventory(admin: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(admin, "/inventory").await.body).unwrap()
}

/// Requests the inventory counts for `login`, by way and outcome together.
fn requests_of(inventory: &serde_json::Value, login: &str) -> u64 {
    inventory["logins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["login"] == login)
        .map_or(0, |l| l["requests"].as_u64().unwrap())
}

async fn metric_of(admin: SocketAddr, name: &str) -> Option<f64> {
    metric(&get(admin, "/metrics").await.body, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logoff_through_one_replica_is_honoured_by_every_other_within_a_second() {
    let Some(redis) = RedisServer::start("a_logoff_through_one_replica…").await else {
        return;
    };
    let (proxies, _ims, campaign) = replicas(&shared(&redis.url()), "logon = true", 3).await;
    let (a, b, c) = (proxies[0].addr, proxies[1].addr, proxies[2].addr);
    let (session, security) = log_on(a, LOGIN, PASSWORD).await;
    // Every replica takes the session (they share the session secret)...
    for replica in [a, b, c] {
        assert_eq!(push(replica, &session, &security).await.status, 200);
    }
    // ...until a Logoff through the second: the third refuses it within a second.
    logoff(b, &session, &security).await;
    let ended = tokio::time::Instant::now();
    eventually(
        "the third replica refuses the session",
        Duration::from_secs(1),
        || async {
            let answer = push(c, &session, &security).await;
            (answer.status == 500 && answer.body.contains("XSV-350008")).then_some(())
        },
    )
    .await;
    eprintln!(
        "refused by the third replica {:?} after the Logoff",
        ended.elapsed()
    );
    push(a, &session, &security)
        .await
        .assert_fault(500, "Client", "XSV-350008");
    assert_eq!(
        campaign.requests().len(),
        3,
        "only the calls before the Logoff"
    );

    // A replica started after the Logoff knows of it (read at start).
    let late = Proxy::start(&config_text(
        &_ims.url(),
        &campaign.url(),
        &shared(&redis.url()),
        "logon = true",
    ))
    .await;
    push(late.addr, &session, &security)
        .await
        .assert_fault(500, "Client", "XSV-350008");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_failures_count_over_the_fleet() {
    let Some(redis) = RedisServer::start("password_failures_count_over_the_fleet").await else {
        return;
    };
    let (ims, campaign) = stand_ins().await;
    let text = with_server(
        &config_text(
            &ims.url(),
            &campaign.url(),
            &format!("[state]\nredis = \"{}\"\n", redis.url()),
            "",
        ),
        "password_failures = { per_login = \"10/m\", per_peer = \"1000/m\" }",
    );
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(Proxy::start(&text).await);
    }
    // 11 wrong passwords (each another: a refused one is remembered, and not checked again),
    // 4 + 4 + 3: no replica saw 10 of them.
    let mut guess = 0;
    for (replica, failures) in proxies.iter().zip([4, 4, 3]) {
        for _ in 0..failures {
            guess += 1;
            post(
                replica.addr,
                seed_002(&format!("{LOGIN}/wrong-{guess}")),
                &[],
            )
            .await
            .assert_fault(500, "Client", "Invalid login or password");
        }
    }
    // The right password, on the replica that saw 3: refused, the login is over the limit.
    post(proxies[2].addr, seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Client", "Invalid login or password");
    assert!(campaign.requests().is_empty());
    let counted: Option<u64> = redis
        .query(redis::cmd("GET").arg(format!("imsbridge:fail:login:{LOGIN}")))
        .await;
    assert_eq!(
        counted,
        Some(10),
        "counted until the limit, then refused unchecked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_of_two_replicas_is_read_through_the_third() {
    let Some(redis) = RedisServer::start("the_inventory_of_two_replicas…").await else {
        return;
    };
    let (proxies, _ims, _campaign) = replicas(&shared(&redis.url()), "", 3).await;
    for _ in 0..3 {
        assert_eq!(
            post(proxies[0].addr, seed_002(&credential()), &[])
                .await
                .status,
            200
        );
    }
    post(proxies[1].addr, seed_002("oldop/whatever"), &[]).await;
    post(proxies[1].addr, seed_002("crm/legacy-password"), &[]).await;
    let read = eventually("the fleet's inventory", Duration::from_secs(5), || async {
        let read = inventory(proxies[2].admin).await;
        (requests_of(&read, LOGIN) == 3
            && requests_of(&read, "oldop") == 1
            && requests_of(&read, LEGACY_LOGIN) == 1)
            .then_some(read)
    })
    .await;
    let mc = read["logins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["login"] == LOGIN)
        .unwrap();
    assert_eq!(mc["caller"], "crm-events");
    assert_eq!(mc["actions"][0]["name"], "nms:rtEvent#PushEvent");
    assert!(read.get("note").is_none(), "{read}");
    // `imsbridge inventory` needs one address of a fleet that shares a store.
    let output = tokio::task::spawn_blocking({
        let admin = proxies[2].admin;
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_imsbridge"))
                .args(["inventory", "--admin", &format!("http://{admin}")])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    for login in [LOGIN, "oldop", LEGACY_LOGIN] {
        assert!(table.contains(login), "{login} in:\n{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_in_the_middle_of_traffic() {
    let Some(mut redis) = RedisServer::start("redis_killed_and_restarted…").await else {
        return;
    };
    let (proxies, _ims, _campaign) = replicas(&shared(&redis.url()), "", 1).await;
    let proxy = &proxies[0];
    let call = || async { post(proxy.addr, seed_002(&credential()), &[]).await.status };
    for _ in 0..5 {
        assert_eq!(call().await, 200);
    }
    redis.kill();
    eventually("the store seen down", Duration::from_secs(5), || async {
        (metric_of(proxy.admin, "imsbridge_state_up").await? == 0.0).then_some(())
    })
    .await;
    // Nothing that should pass is refused while the store is away.
    for _ in 0..20 {
        assert_eq!(call().await, 200);
    }
    let page = get(proxy.admin, "/").await.body;
    assert!(page.contains("down: serving on, counts wait"), "{page}");
    // The inventory says it is this replica's own, without the store.
    let read = inventory(proxy.admin).await;
    assert!(
        read["note"]
            .as_str()
            .unwrap()
            .contains("this replica's own"),
        "{read}"
    );
    redis.restart().await;
    // The counts made during the outage arrive once it is back (the store restarted empty).
    let read = eventually(
        "the outage's counts written",
        Duration::from_secs(10),
        || async {
            let read = inventory(proxy.admin).await;
            (read.get("note").is_none() && requests_of(&read, LOGIN) >= 20).then_some(read)
        },
    )
    .await;
    assert!(
        requests_of(&read, LOGIN) <= 25,
        "each request counted once: {read}"
    );
    assert_eq!(
        metric_of(proxy.admin, "imsbridge_state_up").await,
        Some(1.0)
    );
    let metrics = get(proxy.admin, "/metrics").await.body;
    assert!(
        metric(&metrics, "imsbridge_state_errors_total{op=\"flush\"}").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "imsbridge_state_dropped_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_stops_no_call() {
    let Some(redis) = RedisServer::start("a_frozen_redis_stops_no_call").await else {
        return;
    };
    let (proxies, _ims, _campaign) = replicas(&shared(&redis.url()), "logon = true", 1).await;
    let proxy = &proxies[0];
    let (session, security) = log_on(proxy.addr, LOGIN, PASSWORD).await;
    assert_eq!(push(proxy.addr, &session, &security).await.status, 200);
    redis.freeze();
    let frozen = tokio::time::Instant::now();
    // Calls of a known caller, a new Logon and a Logoff, and a wrong password (the failure
    // limits fall back to the process's counts): each answered.
    let mut answered = 0;
    while frozen.elapsed() < Duration::from_secs(3) {
        assert_eq!(push(proxy.addr, &session, &security).await.status, 200);
        answered += 1;
    }
    let (other, other_security) = log_on(proxy.addr, LOGIN, PASSWORD).await;
    logoff(proxy.addr, &other, &other_security).await;
    push(proxy.addr, &other, &other_security)
        .await
        .assert_fault(500, "Client", "XSV-350008");
    post(proxy.addr, seed_002(&format!("{LOGIN}/wrong")), &[])
        .await
        .assert_fault(500, "Client", "Invalid login or password");
    redis.thaw();
    eprintln!("{answered} calls answered while the store was frozen");
    // The Logoff made while frozen reaches the store once it answers.
    eventually("the Logoff written", Duration::from_secs(5), || async {
        let revoked: u64 = redis
            .query(redis::cmd("ZCARD").arg("imsbridge:revoked"))
            .await;
        (revoked == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_caller_costs_the_store_a_handful_of_commands() {
    let Some(redis) = RedisServer::start("a_remembered_caller_costs…").await else {
        return;
    };
    // The default flush interval (1 s).
    let top = format!(
        "{}[state]\nredis = \"{}\"\n",
        sessions_table(SESSION_SECRET, "1h"),
        redis.url()
    );
    let (proxies, _ims, _campaign) = replicas(&top, "", 1).await;
    let proxy = &proxies[0];
    // The caller's verdict remembered, and the first batch written.
    assert_eq!(
        post(proxy.addr, seed_002(&credential()), &[]).await.status,
        200
    );
    eventually("the first batch", Duration::from_secs(5), || async {
        (requests_of(&inventory(proxy.admin).await, LOGIN) == 1).then_some(())
    })
    .await;
    let sent_by_clients = |stats: &str| -> u64 {
        // The commands clients send (a script's own commands are counted apart, as theirs).
        [
            "evalsha", "eval", "ping", "script", "get", "zadd", "incr", "publish",
        ]
        .iter()
        .filter_map(|name| {
            let line = stats
                .lines()
                .find(|l| l.starts_with(&format!("cmdstat_{name}:")))?;
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
    };
    let stats = || async {
        redis
            .query::<String>(redis::cmd("INFO").arg("commandstats"))
            .await
    };
    let (before, before_all) = (stats().await, redis.commands_processed().await);
    let started = tokio::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(
            post(proxy.addr, seed_002(&credential()), &[]).await.status,
            200
        );
    }
    let took = started.elapsed();
    let (after, after_all) = (stats().await, redis.commands_processed().await);
    let sent = sent_by_clients(&after) - sent_by_clients(&before);
    let all = after_all - before_all;
    eprintln!(
        "300 calls in {took:?}: {sent} commands sent to the store, {all} with those its script ran"
    );
    // One script a flush, a look at the store when there is nothing to write: the commands
    // follow the time the calls took, not their number.
    let flushes = took.as_secs() + 2;
    assert!(
        sent <= flushes * 2,
        "{sent} commands for 300 calls in {took:?}"
    );
    assert!(all < 300 / 3, "{all} commands, scripts' own included");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_password_is_never_shown() {
    const PASSWORD_OF_REDIS: &str = "redis-secret-9d2f";
    let Some(redis) = RedisServer::start_with("the_redis_password…", Some(PASSWORD_OF_REDIS)).await
    else {
        return;
    };
    // The right password from the environment, and a wrong one in the URL (the store is
    // then down, with an error to show).
    let (ims, campaign) = stand_ins().await;
    let right = format!(
        "{}[state]\nredis = {{ env = \"REDIS_URL\" }}\n",
        sessions_table(SESSION_SECRET, "1h")
    );
    let mut env = env();
    env.insert("REDIS_URL".to_owned(), redis.url());
    let config = Config::parse(
        &config_text(&ims.url(), &campaign.url(), &right, ""),
        Path::new("."),
        &env,
    )
    .unwrap();
    assert!(!format!("{config:?}").contains(PASSWORD_OF_REDIS));
    let up = Proxy::start_config(config).await;
    let wrong_url = redis
        .url()
        .replace(PASSWORD_OF_REDIS, "not-the-redis-secret-7b1e");
    let down = Proxy::start(&config_text(
        &ims.url(),
        &campaign.url(),
        &format!("[state]\nredis = \"{wrong_url}\"\n"),
        "",
    ))
    .await;
    for proxy in [&up, &down] {
        assert_eq!(
            post(proxy.addr, seed_002(&credential()), &[]).await.status,
            200
        );
    }
    eventually(
        "the wrong password's store down",
        Duration::from_secs(5),
        || async { (metric_of(down.admin, "imsbridge_state_up").await? == 0.0).then_some(()) },
    )
    .await;
    for proxy in [&up, &down] {
        for path in ["/", "/metrics", "/inventory", "/readyz"] {
            let shown = get(proxy.admin, path).await.body;
            for secret in [PASSWORD_OF_REDIS, "not-the-redis-secret-7b1e"] {
                assert!(!shown.contains(secret), "{path}: {shown}");
            }
        }
    }
    // `/readyz` does not follow the store.
    assert_eq!(get(down.admin, "/readyz").await.status, 200);
}

/// A config with its state in `file`.
fn on_file(ims: &str, campaign: &str, file: &Path) -> String {
    config_text(
        ims,
        campaign,
        &format!(
            "{}[state]\npath = \"{}\"\n",
            sessions_table(SESSION_SECRET, "1h"),
            file.display()
        ),
        "logon = true",
    )
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("imsbridge-state-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_revocations_and_the_inventory_across_a_restart() {
    let dir = temp_dir("restart");
    let file = dir.join("state.db");
    let (ims, campaign) = stand_ins().await;
    let text = on_file(&ims.url(), &campaign.url(), &file);
    let proxy = Proxy::start(&text).await;
    let (session, security) = log_on(proxy.addr, LOGIN, PASSWORD).await;
    assert_eq!(push(proxy.addr, &session, &security).await.status, 200);
    post(proxy.addr, seed_002("oldop/whatever"), &[]).await;
    logoff(proxy.addr, &session, &security).await;
    proxy.stop().await;

    let again = Proxy::start(&text).await;
    push(again.addr, &session, &security)
        .await
        .assert_fault(500, "Client", "XSV-350008");
    let read = inventory(again.admin).await;
    assert!(requests_of(&read, LOGIN) >= 2, "{read}");
    assert_eq!(requests_of(&read, "oldop"), 1, "{read}");

    // A second process on the same file is refused, naming it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = imsbridge::run(
        imsbridge::Listeners {
            proxy: listener.into(),
            admin: None,
        },
        Config::parse(&text, Path::new("."), &env()).unwrap(),
        std::future::pending(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("in use by another imsbridge process"),
        "{error}"
    );
    assert!(error.contains(&file.display().to_string()), "{error}");
    again.stop().await;

    // What an administrator reads with the sqlite3 shell.
    match tool("sqlite3", &["--version"]) {
        Err(why) => skip("sqlite_keeps_revocations… (sqlite3 shell)", &why),
        Ok(()) => {
            let output = std::process::Command::new("sqlite3")
                .arg(&file)
                .arg("PRAGMA user_version; SELECT login, caller FROM logins ORDER BY login; SELECT COUNT(*) FROM revoked;")
                .output()
                .unwrap();
            let shown = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{shown}");
            assert_eq!(
                shown.lines().collect::<Vec<_>>(),
                ["2", "mc|crm-events", "oldop|", "1"],
                "{shown}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_state_file_of_a_newer_schema_is_refused_and_an_older_one_migrated() {
    let dir = temp_dir("schema");
    let (ims, campaign) = stand_ins().await;
    let start = |file: &Path| {
        let config = Config::parse(
            &on_file(&ims.url(), &campaign.url(), file),
            Path::new("."),
            &env(),
        )
        .unwrap();
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let run = tokio::spawn(imsbridge::run(
                imsbridge::Listeners {
                    proxy: listener.into(),
                    admin: None,
                },
                config,
                async move {
                    let _ = stopped.await;
                },
            ));
            (run, stop)
        }
    };
    let newer = dir.join("newer.db");
    std::fs::write(&newer, b"").unwrap();
    {
        let db = rusqlite::Connection::open(&newer).unwrap();
        db.pragma_update(None, "user_version", 99).unwrap();
    }
    let (run, _stop) = start(&newer).await;
    let error = run.await.unwrap().unwrap_err().to_string();
    assert!(
        error.contains("schema version 99, newer than this imsbridge's (2)"),
        "{error}"
    );

    // An empty file (version 0) gets the schema.
    let older = dir.join("older.db");
    std::fs::write(&older, b"").unwrap();
    let (run, stop) = start(&older).await;
    eventually("the schema written", Duration::from_secs(5), || async {
        let db = rusqlite::Connection::open(&older).ok()?;
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .ok()?;
        (version == 2).then_some(())
    })
    .await;
    let _ = stop.send(());
    run.await.unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
