//! Several Campaign instances and nodes (issue "Enterprise networks"): profiles choose their
//! instance; requests spread over an instance's nodes; a node that refuses connections or does
//! not take them is skipped for `cooldown` and its request goes to the next node, never twice;
//! a request that went out to a node that then says nothing is not sent again.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;
use imsbridge::demo::StandInCampaign;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const EXECUTION_CLIENT: &str = "execution-technical-account";
const EXECUTION_SECRET: &str = "execution-secret-5b1e";

/// The profile of the execution instance's technical account.
fn execution_profile() -> String {
    format!(
        "[profiles.execution]\ntype = \"oauth\"\nclient_id = \"{EXECUTION_CLIENT}\"\nclient_secret = \"{EXECUTION_SECRET}\"\nscopes = [\"openid\", \"AdobeID\"]\nupstream = \"execution\"\n"
    )
}

/// `config` with `[upstream]`'s `url` replaced by `urls` and these `lines`.
fn with_nodes(config: &str, urls: &[String], lines: &str) -> String {
    let start = config.find("url = \"").unwrap();
    let end = config[start..].find('\n').unwrap() + start;
    let urls: Vec<String> = urls.iter().map(|url| format!("\"{url}\"")).collect();
    format!(
        "{}urls = [{}]\n{lines}{}",
        &config[..start],
        urls.join(", "),
        &config[end..]
    )
}

/// A node that does not take connections: a listener whose accept queue is full, so that the
/// kernel drops new connection attempts and connecting hangs. The streams keep it full.
async fn unaccepting_node() -> (String, TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    // Until a connection attempt hangs: the queue is full.
    while let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
    {
        held.push(stream);
        assert!(held.len() < 64, "the accept queue never filled");
    }
    (format!("http://{addr}"), listener, held)
}

/// A node that takes connections and reads requests but never answers; counts connections.
async fn silent_node() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, connections)
}

async fn metrics(proxy: &Proxy) -> String {
    get(proxy.admin, "/metrics").await.body
}

/// `imsbridge_upstream_attempts_total` of a node, for an outcome (0 when never counted).
fn attempts(text: &str, node: &str, outcome: &str) -> f64 {
    metric(
        text,
        &format!(
            "imsbridge_upstream_attempts_total{{upstream=\"default\",node=\"{node}\",outcome=\"{outcome}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

fn node_up(text: &str, node: &str) -> Option<f64> {
    metric(
        text,
        &format!("imsbridge_upstream_node_up{{upstream=\"default\",node=\"{node}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_each_get_the_calls_of_their_profiles() {
    let (ims, marketing) = stand_ins().await;
    ims.add_client(EXECUTION_CLIENT, EXECUTION_SECRET);
    let execution = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let extra = format!(
        r#"mode = "ims"

[upstreams.execution]
url = "{}"
timeout = "5s"

{profile}

[[callers]]
name = "event-pusher"
login = "events"
password = "{}"
profile = "execution"
mode = "ims"

[[callers]]
name = "old-event-pusher"
login = "oldevents"
password = "{}"
profile = "execution"
mode = "legacy"
"#,
        execution.url(),
        cheap_hash("events-password"),
        cheap_hash("old-password"),
        profile = execution_profile(),
    );
    let config = config_text(
        &ims.url(),
        &marketing.url(),
        "unknown_callers = \"legacy\"",
        &extra,
    );
    let proxy = Proxy::start(&config).await;

    for credential in [
        credential(),
        "events/events-password".to_owned(),
        "oldevents/old-password".to_owned(),
        format!("{LEGACY_LOGIN}/legacy-password"),
        "nobody/known".to_owned(),
    ] {
        let answer = post(proxy.addr, seed_002(&credential), &[]).await;
        assert_eq!(answer.status, 200, "{credential}: {}", answer.body);
    }
    // A page no caller check reads passes through, to the Campaign of the credential's caller.
    let page = get(
        proxy.addr,
        "/nl/jsp/logon.jsp?__sessiontoken=oldevents/old-password",
    )
    .await;
    assert_ne!(page.status, 502, "{}", page.body);

    let bearer = |recorded: &imsbridge::demo::Recorded| {
        recorded
            .header("authorization")
            .map(|value| value.strip_prefix("Bearer ").unwrap().to_owned())
    };
    let token_of = |recorded: &imsbridge::demo::Recorded| {
        let text = recorded.text();
        let start = text.find("<urn:sessiontoken>").map(|i| i + 18)?;
        let end = text[start..].find('<')? + start;
        Some(text[start..end].to_owned())
    };
    let at_marketing = marketing.requests();
    let at_execution = execution.requests();
    // marketing: mc (ims), crm (legacy), nobody (unknown: the default instance).
    assert_eq!(at_marketing.len(), 3, "{at_marketing:#?}");
    assert_eq!(
        at_marketing
            .iter()
            .map(|r| token_of(r).unwrap_or_default())
            .collect::<Vec<_>>(),
        ["", "crm/legacy-password", "nobody/known"]
    );
    // execution: events (ims), oldevents (legacy), and the page of oldevents.
    assert_eq!(at_execution.len(), 3, "{at_execution:#?}");
    assert_eq!(token_of(&at_execution[0]).as_deref(), Some(""));
    assert_eq!(
        token_of(&at_execution[1]).as_deref(),
        Some("oldevents/old-password")
    );
    assert_eq!(
        at_execution[2].uri.path_and_query().unwrap().as_str(),
        "/nl/jsp/logon.jsp?__sessiontoken=oldevents/old-password"
    );
    // Each `ims` call carries its own technical account's token, IMS-issued, and each
    // instance got the Host of its own URL.
    let marketing_token = bearer(&at_marketing[0]).unwrap();
    let execution_token = bearer(&at_execution[0]).unwrap();
    assert_ne!(marketing_token, execution_token);
    assert!(ims.token_check().is_valid(&marketing_token));
    assert!(ims.token_check().is_valid(&execution_token));
    assert!(bearer(&at_execution[1]).is_none(), "legacy: no token added");
    let host_of = |url: String| url.trim_start_matches("http://").to_owned();
    assert_eq!(
        at_marketing[0].header("host"),
        Some(host_of(marketing.url()).as_str())
    );
    assert_eq!(
        at_execution[0].header("host"),
        Some(host_of(execution.url()).as_str())
    );
    proxy.stop().await;
}

/// The issue's network: three nodes, one refusing connections, one not taking them. Every
/// request is answered by the third, once; each dead node is tried once, then skipped for its
/// cooldown, and the metrics say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_and_a_hanging_node_lose_no_request() {
    let (ims, campaign) = stand_ins().await;
    let (refusing, _refusing_guard) = closed_port_url();
    let (hanging, _listener, _held) = unaccepting_node().await;
    let nodes = [refusing.clone(), hanging.clone(), campaign.url()];
    let config = with_nodes(
        &config_text(&ims.url(), &campaign.url(), "", ""),
        &nodes,
        "cooldown = \"60s\"\n",
    )
    .replace("connect_timeout = \"2s\"", "connect_timeout = \"300ms\"");
    let proxy = Proxy::start(&config).await;

    // One after the other: the first tries the dead nodes in turn, the others skip them.
    for _ in 0..20 {
        let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(campaign.requests().len(), 20, "each request once");
    let shown = metrics(&proxy).await;
    assert_eq!(attempts(&shown, &refusing, "connect_error"), 1.0, "{shown}");
    assert_eq!(
        attempts(&shown, &hanging, "connect_timeout"),
        1.0,
        "{shown}"
    );
    assert_eq!(attempts(&shown, &campaign.url(), "ok"), 20.0, "{shown}");
    assert_eq!(node_up(&shown, &refusing), Some(0.0), "{shown}");
    assert_eq!(node_up(&shown, &hanging), Some(0.0), "{shown}");
    assert_eq!(node_up(&shown, &campaign.url()), Some(1.0), "{shown}");
    proxy.stop().await;

    // At once, on a fresh proxy: many pick a dead node before it is known dead; each goes on.
    let proxy = Proxy::start(&config).await;
    let calls = (0..40).map(|_| {
        let addr = proxy.addr;
        tokio::spawn(async move { post(addr, seed_002(&credential()), &[]).await })
    });
    for call in calls {
        let answer = call.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(campaign.requests().len(), 60, "each request once");
    let shown = metrics(&proxy).await;
    assert!(
        attempts(&shown, &refusing, "connect_error") >= 1.0,
        "{shown}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_the_nodes_and_a_node_is_tried_again_after_its_cooldown() {
    let (ims, first) = stand_ins().await;
    let second = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let config = with_nodes(
        &config_text(&ims.url(), &first.url(), "", ""),
        &[first.url(), second.url()],
        "cooldown = \"1s\"\n",
    );
    let proxy = Proxy::start(&config).await;
    for _ in 0..10 {
        let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // One after the other, none busier than the other: they take turns.
    assert_eq!((first.requests().len(), second.requests().len()), (5, 5));
    proxy.stop().await;

    // A node that refused is tried again once its cooldown is over.
    let (refusing, _guard) = closed_port_url();
    let config = with_nodes(
        &config_text(&ims.url(), &first.url(), "", ""),
        &[refusing.clone(), first.url()],
        "cooldown = \"1s\"\n",
    );
    let proxy = Proxy::start(&config).await;
    let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        attempts(&metrics(&proxy).await, &refusing, "connect_error"),
        1.0
    );
    // Its cooldown over, the node takes requests again.
    let up = format!("imsbridge_upstream_node_up{{upstream=\"default\",node=\"{refusing}\"}}");
    eventually(
        "the refusing node's cooldown to end",
        Duration::from_secs(10),
        || async { (metric(&metrics(&proxy).await, &up)? == 1.0).then_some(()) },
    )
    .await;
    for _ in 0..2 {
        let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(
        attempts(&metrics(&proxy).await, &refusing, "connect_error"),
        2.0
    );
    proxy.stop().await;
}

/// A request that went out is never sent twice: the node may have run it. It is answered
/// `504` after `timeout`; the node is skipped afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_to_a_silent_node_is_not_sent_again() {
    let (ims, campaign) = stand_ins().await;
    let (silent, connections) = silent_node().await;
    let config = with_nodes(
        &config_text(&ims.url(), &campaign.url(), "", ""),
        &[silent.clone(), campaign.url()],
        "cooldown = \"60s\"\n",
    )
    .replace(
        "timeout = \"5s\"\nconnect_timeout",
        "timeout = \"1s\"\nconnect_timeout",
    )
    .replace("[server]\n", "[server]\nfault_status = \"http\"\n");
    let proxy = Proxy::start(&config).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
        if answer.status != 200 {
            answer.assert_fault(504, "Server", "did not answer in time");
        }
        statuses.push(answer.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 504).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(campaign.requests().len(), 5, "not sent again elsewhere");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    let shown = metrics(&proxy).await;
    assert_eq!(attempts(&shown, &silent, "timeout"), 1.0, "{shown}");
    assert_eq!(node_up(&shown, &silent), Some(0.0), "{shown}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_each_upstream_and_probes_through_the_profiles_instance() {
    let (ims, marketing) = stand_ins().await;
    ims.add_client(EXECUTION_CLIENT, EXECUTION_SECRET);
    let execution = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    let (refusing, _guard) = closed_port_url();
    let extra = format!(
        r#"
[upstreams.execution]
urls = ["{refusing}", "{}"]
cooldown = "30s"

{profile}
"#,
        execution.url(),
        profile = execution_profile(),
    );
    let dir = std::env::temp_dir().join(format!("imsbridge-upstreams-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("imsbridge.toml");
    std::fs::write(&path, config_text(&ims.url(), &marketing.url(), "", &extra)).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_imsbridge"))
            .args(["check", "--probe", "--config"])
            .arg(&path)
            .env("MC_CLIENT_SECRET", CLIENT_SECRET)
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{shown}");
    for expected in [
        "route to Campaign: direct\n".to_owned(),
        format!("upstream default: {}\n", marketing.url()),
        format!(
            "upstream execution: {refusing}, {}; 2 nodes, a failed one skipped for 30s\n",
            execution.url()
        ),
        "  upstream    execution\n".to_owned(),
    ] {
        assert!(shown.contains(&expected), "`{expected}` missing:\n{shown}");
    }
    // Each profile's probe went to its own instance (the execution one past its dead node).
    assert_eq!(marketing.requests().len(), 1, "{shown}");
    assert_eq!(execution.requests().len(), 1, "{shown}");
    std::fs::remove_dir_all(&dir).unwrap();
}
