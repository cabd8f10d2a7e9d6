//! When IMS or Campaign misbehave, or a client is slow: every failure has its defined answer,
//! and the proxy recovers. Stand-ins are told to fail, hang, answer garbage or revoke tokens.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use imsbridge::demo::{ImsFailure, Refusal, StandInCampaign, StandInIms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Limits small enough to see them act in a test.
const FAST: &str = "idle_timeout = \"500ms\"\nheader_read_timeout = \"500ms\"";

/// The test config with `server` lines.
fn config_with(ims: &str, campaign: &str, server: &str) -> String {
    with_server(&config_text(ims, campaign, "", ""), server)
}

async fn warm(stack: &Stack) {
    assert_eq!(
        post(stack.url(), seed_002(&credential()), &[]).await.status,
        200
    );
    assert_eq!(stack.ims.token_requests(), 1);
}

#[tokio::test]
async fn each_refusal_form_leads_to_one_refetch_and_a_replay() {
    for refusal in [
        Refusal::Unauthorized,
        Refusal::Fault350114,
        Refusal::Fault350008,
    ] {
        let stack = Stack::default().await;
        warm(&stack).await;
        stack.campaign.set_refusal(refusal);
        stack.ims.revoke_all();
        let body = push_events(&credential(), 20_000);
        let answer = post(stack.url(), body, &[]).await;
        assert_eq!(answer.status, 200, "{refusal:?}: {}", answer.body);
        assert_eq!(stack.ims.token_requests(), 2, "{refusal:?}: one refetch");
        let seen = stack.campaign.requests();
        assert_eq!(
            seen.len(),
            3,
            "{refusal:?}: the refused call, then its replay"
        );
        assert_eq!(
            seen[1].body_sha256, seen[2].body_sha256,
            "the same body, replayed"
        );
        assert_eq!(
            seen[1].header("content-length"),
            seen[2].header("content-length")
        );
        let issued = stack.ims.issued();
        assert_eq!(
            seen[2].header("authorization"),
            Some(format!("Bearer {}", issued[1]).as_str())
        );
        assert_eq!(stack.campaign.refused(), 1);
    }
}

#[tokio::test]
async fn fifty_concurrent_refusals_cause_one_refetch() {
    let stack = Stack::default().await;
    warm(&stack).await;
    stack.ims.revoke_all();
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let addr = stack.url();
            tokio::spawn(async move { post(addr, seed_002(&credential()), &[]).await.status })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(stack.ims.token_requests(), 2);
    assert_eq!(stack.campaign.refused(), 50);
}

#[tokio::test]
async fn a_body_over_the_retry_buffer_is_not_replayed() {
    let stack = Stack::default().await;
    let small = Proxy::start(
        &config_text(&stack.ims.url(), &stack.campaign.url(), "", "")
            .replace("[upstream]", "[upstream]\nretry_buffer_bytes = 4096"),
    )
    .await;
    let fine = || async {
        assert_eq!(
            post(small.addr, seed_002(&credential()), &[]).await.status,
            200
        );
    };
    fine().await;
    let fetched = stack.ims.token_requests();
    // 10 KB, declared: Campaign's refusal is relayed.
    stack.ims.revoke_all();
    let answer = post(small.addr, push_events(&credential(), 10_000), &[]).await;
    answer.assert_fault(500, "Client", "XSV-350114");
    // The refused token was dropped all the same: the next call has a new one.
    fine().await;
    // 10 KB again, chunked: it outgrows the buffer while it streams.
    stack.ims.revoke_all();
    let body = Bytes::from(push_events(&credential(), 10_000));
    let request = chunked_request(&body, 1000);
    send(small.addr, request)
        .await
        .assert_fault(500, "Client", "XSV-350114");
    fine().await;
    assert_eq!(stack.ims.token_requests(), fetched + 2);
    let to_small = stack.campaign.requests().len();
    assert_eq!(to_small, 5, "no call was sent twice");
}

#[tokio::test]
async fn never_more_than_one_retry_and_never_on_other_faults() {
    // Campaign trusts another IMS: every token is refused, every time.
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);
    let elsewhere = StandInIms::start().await.unwrap();
    let campaign = StandInCampaign::start(Some(elsewhere.token_check()))
        .await
        .unwrap();
    let proxy = Proxy::start(&config_text(&ims.url(), &campaign.url(), "", "")).await;
    post(proxy.addr, seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Client", "XSV-350114");
    assert_eq!(
        campaign.requests().len(),
        2,
        "one call, one replay, no more"
    );
    assert_eq!(ims.token_requests(), 2);

    // Campaign's other faults are its own business: relayed, no retry, no refetch.
    let stack = Stack::default().await;
    warm(&stack).await;
    stack
        .campaign
        .set_fault(Some("XSV-350122 Duplicate key in table nms:rtEvent."));
    post(stack.url(), seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Client", "XSV-350122");
    assert_eq!(stack.campaign.requests().len(), 2);
    assert_eq!(stack.ims.token_requests(), 1);
}

#[tokio::test]
async fn readyz_waits_only_for_the_profiles_of_ims_and_canary_callers() {
    // A profile whose client IMS does not know, used by a legacy caller only: it never gets a
    // token, and the replica is ready all the same (before, 503 for good).
    let (ims, campaign) = stand_ins().await;
    let extra = format!(
        "\n[profiles.reporting]\ntype = \"oauth\"\nclient_id = \"unknown-client\"\nclient_secret = \"unknown-secret\"\nscopes = [\"openid\"]\n\n[[callers]]\nname = \"reports\"\nlogin = \"reports\"\npassword = \"{}\"\nprofile = \"reporting\"\nmode = \"legacy\"\n",
        cheap_hash("reports-password")
    );
    let proxy = Proxy::start(&(config_text(&ims.url(), &campaign.url(), "", "") + &extra)).await;
    let ready = wait_ready(proxy.admin, 200, "ready").await;
    assert!(
        ready.body.contains(
            "profile reporting: not ready: IMS refused the request (HTTP 400): invalid_client"
        ),
        "{}",
        ready.body
    );
    assert!(
        ready.body.contains("(legacy callers only)"),
        "{}",
        ready.body
    );
    // Its legacy caller goes to Campaign as before.
    post(proxy.addr, seed_002("reports/reports-password"), &[]).await;
    assert_eq!(campaign.requests().len(), 1);
}

/// Polls `/readyz` until it answers `status` with `text` in its body.
async fn wait_ready(admin: std::net::SocketAddr, status: u16, text: &str) -> Answer {
    eventually(
        &format!("/readyz answering {status} with `{text}`"),
        Duration::from_secs(30),
        || async {
            let ready = get(admin, "/readyz").await;
            (ready.status == status && ready.body.contains(text)).then_some(ready)
        },
    )
    .await
}

#[tokio::test]
async fn ims_failures_are_retried_and_the_proxy_recovers_by_itself() {
    let failures = [
        (
            ImsFailure::Status(503),
            "IMS refused the request (HTTP 503)",
        ),
        (
            ImsFailure::Garbage,
            "IMS answer is unusable: not a JSON object",
        ),
        (ImsFailure::EmptyOk, "IMS answer is unusable: empty answer"),
        (ImsFailure::Hang, "IMS did not answer within 500ms"),
    ];
    let runs = failures.map(|(failure, reason)| async move {
        let (ims, campaign) = stand_ins().await;
        ims.set_failure(Some(failure));
        let config = config_text(&ims.url(), &campaign.url(), "", "")
            .replace("[ims]\n", "[ims]\ntimeout = \"500ms\"\n")
            .replace("timeout = \"5s\"\n\n[profiles", "\n[profiles");
        let proxy = Proxy::start(&config).await;
        let ready = wait_ready(proxy.admin, 503, reason).await;
        assert!(
            ready.body.contains("profile messagecenter: not ready"),
            "{failure:?}: {}",
            ready.body
        );
        let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
        answer.assert_fault(500, "Server", "not available");
        assert!(campaign.requests().is_empty());
        // IMS comes back: the refresher's next retry gets a token, with nobody's help.
        ims.set_failure(None);
        wait_ready(proxy.admin, 200, "ready").await;
        assert_eq!(
            post(proxy.addr, seed_002(&credential()), &[]).await.status,
            200,
            "{failure:?}"
        );
        assert!(ims.token_requests() >= 2);
    });
    let runs: Vec<_> = runs.into_iter().map(tokio::spawn).collect();
    for run in runs {
        run.await.unwrap();
    }
}

#[tokio::test]
async fn a_missing_expires_in_falls_back_to_the_tokens_claims() {
    let (ims, campaign) = stand_ins().await;
    ims.set_failure(Some(ImsFailure::NoExpiresIn));
    let proxy = Proxy::start(&config_text(&ims.url(), &campaign.url(), "", "")).await;
    assert_eq!(
        post(proxy.addr, seed_002(&credential()), &[]).await.status,
        200
    );
    let ready = wait_ready(proxy.admin, 200, "ready").await;
    // The claims say 24 hours; the conservative default would have said 5 minutes.
    assert!(ready.body.contains("token valid for 863"), "{}", ready.body);
}

#[tokio::test]
async fn the_current_token_serves_while_ims_is_down_and_never_once_it_expired() {
    let (ims, campaign) = stand_ins().await;
    ims.set_lifetime(Duration::from_secs(3));
    let proxy = Proxy::start(&config_text(&ims.url(), &campaign.url(), "", "")).await;
    assert_eq!(
        post(proxy.addr, seed_002(&credential()), &[]).await.status,
        200
    );
    ims.set_failure(Some(ImsFailure::Status(502)));
    // IMS is down; the token fetched at start (three seconds) still serves.
    assert_eq!(
        post(proxy.addr, seed_002(&credential()), &[]).await.status,
        200
    );
    // Once it expires, with no new one: a Server fault, and Campaign never sees the expired
    // token.
    eventually(
        "a fault once the token expired",
        Duration::from_secs(30),
        || async {
            match post(proxy.addr, seed_002(&credential()), &[]).await.status {
                200 => None,
                500 => Some(()),
                other => panic!("{other}"),
            }
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            post(proxy.addr, seed_002(&credential()), &[]).await.status,
            500,
            "no token while IMS is down"
        );
    }
    assert!(ims.token_requests() > 1, "the refresher kept asking");
    assert_eq!(campaign.refused(), 0, "Campaign never saw an expired token");
    // Still ready: every replica shares IMS, and an outage must not take them all out of the
    // load balancer (legacy callers included). The body says what is wrong.
    let ready = get(proxy.admin, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready
            .body
            .contains("profile messagecenter: not ready: IMS refused the request (HTTP 502)"),
        "{}",
        ready.body
    );
    ims.set_failure(None);
    wait_ready(proxy.admin, 200, "token valid").await;
    assert_eq!(
        post(proxy.addr, seed_002(&credential()), &[]).await.status,
        200
    );
}

#[tokio::test]
async fn campaign_failures_get_server_faults_and_stalls_are_cut() {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);

    // A Campaign whose accept queue is full: the connection attempt times out.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(1).unwrap();
    let full_addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(full_addr)).await
        {
            fillers.push(stream);
        }
    }
    let config = config_with(&ims.url(), &format!("http://{full_addr}"), FAST)
        .replace("connect_timeout = \"2s\"", "connect_timeout = \"300ms\"");
    let proxy = Proxy::start(&config).await;
    post(proxy.addr, seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Server", "could not be reached");

    // A Campaign that closes the connection without answering.
    let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing_addr = closing.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = closing.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            drop(stream);
        }
    });
    let proxy = Proxy::start(&config_with(
        &ims.url(),
        &format!("http://{closing_addr}"),
        FAST,
    ))
    .await;
    post(proxy.addr, seed_002(&credential()), &[])
        .await
        .assert_fault(500, "Server", "could not be reached");

    // A Campaign that stalls in the middle of its answer: the caller's connection is cut
    // after the idle timeout instead of hanging.
    let campaign = StandInCampaign::start(Some(ims.token_check()))
        .await
        .unwrap();
    campaign.set_stall(true);
    let proxy = Proxy::start(&config_with(&ims.url(), &campaign.url(), FAST)).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(soap_request(seed_002(&credential()), &[]))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the head came before the stall");
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .expect("cut, not hanging");
    assert!(body.is_err(), "the answer is cut short");
}

#[tokio::test]
async fn slow_clients_are_cut() {
    let stack = Stack::default().await;
    let proxy = Proxy::start(&config_with(&stack.ims.url(), &stack.campaign.url(), FAST)).await;
    let answered = |answer: &str| answer.is_empty() || answer.starts_with("HTTP/1.1 408");
    // Headers that never end.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /nl/jsp/soaprouter.jsp HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection is closed");
    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    let mut said = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut said)).await;
    assert!(read.is_ok(), "the idle connection is closed");
    assert!(
        answered(&String::from_utf8_lossy(&said)),
        "{}",
        String::from_utf8_lossy(&said)
    );
    // A body that stops coming before the session token: a Client fault.
    let body = seed_002(&credential());
    let head = format!(
        "POST {SOAP_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..100]).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    assert!(answer.contains("The request body stopped coming."));
    // A body that stops after the token, while it streams to Campaign: cut as well.
    let big = push_events(&credential(), 200_000);
    let head = format!(
        "POST {SOAP_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&big[..50_000]).await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    assert!(
        stack.campaign.requests().is_empty(),
        "Campaign never got a whole request"
    );
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let stack = Stack::default().await;
    let proxy = Proxy::start(&config_with(
        &stack.ims.url(),
        &stack.campaign.url(),
        "max_connections = 2",
    ))
    .await;
    let first = TcpStream::connect(proxy.addr).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr).await.unwrap();
    let accepted = || async {
        metric(
            &get(proxy.admin, "/metrics").await.body,
            "imsbridge_connections_accepted_total",
        )
    };
    eventually(
        "two connections accepted",
        Duration::from_secs(10),
        || async { (accepted().await == Some(2.0)).then_some(()) },
    )
    .await;
    // The third is taken by the kernel, and its request written, but the proxy asks for no
    // more connections while both slots are held.
    let body = seed_002(&credential());
    let request = format!(
        "POST {SOAP_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third.write_all(request.as_bytes()).await.unwrap();
    // A whole call on the second connection (kept alive, so its slot stays taken), written
    // after the third's: the proxy is serving.
    let keep_alive = request.replace("Connection: close\r\n", "");
    second.write_all(keep_alive.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("</SOAP-ENV:Envelope>") {
        let n = second.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the second connection closed");
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(accepted().await, Some(2.0), "served beyond max_connections");
    let mut byte = [0u8; 1];
    assert!(
        matches!(third.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the third connection got an answer beyond max_connections"
    );
    // A slot frees: the third is served.
    drop(first);
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A Campaign on a raw socket: it answers `answers_per_connection` requests on a connection,
/// then closes it without a word (as a keep-alive timeout does). Counts its connections.
/// Each connection it closes is told on the receiver.
async fn closing_campaign(
    answers_per_connection: usize,
) -> (String, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let (closed_tx, closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                for _ in 0..answers_per_connection {
                    // The head, then as many body bytes as it declares.
                    let head_end = loop {
                        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..head_end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while pending.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&chunk[..n]),
                        }
                    }
                    pending.drain(..head_end + length);
                    let body = "<ok/>";
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
                // Closed without `Connection: close`.
                drop(stream);
                let _ = closed_tx.send(());
            });
        }
    });
    (url, connections, closed)
}

#[tokio::test]
async fn connections_campaign_closed_are_replaced_without_failing_a_call() {
    let ims = StandInIms::start().await.unwrap();
    ims.add_client(CLIENT_ID, CLIENT_SECRET);

    // Closed right after each answer: the next call finds its pooled connection dead, either
    // at checkout or when sending, and goes out on a new one. (The pool's own tests force each
    // of the two cases.)
    let (url, connections, mut closed) = closing_campaign(1).await;
    let proxy = Proxy::start(&config_text(&ims.url(), &url, "", "")).await;
    for round in 0..6 {
        let answer = post(proxy.addr, seed_002(&credential()), &[]).await;
        assert_eq!(answer.status, 200, "call {round}: {}", answer.body);
        assert_eq!(answer.body, "<ok/>");
        if round % 2 == 0 {
            // Every other round, the next call starts only once Campaign has closed.
            closed.recv().await.unwrap();
        }
    }
    assert_eq!(connections.load(Ordering::SeqCst), 6);
    proxy.stop().await;

    // Kept open: one connection serves every call, one after the other.
    let (url, connections, _) = closing_campaign(usize::MAX).await;
    let proxy = Proxy::start(&config_text(&ims.url(), &url, "", "")).await;
    for _ in 0..5 {
        assert_eq!(
            post(proxy.addr, seed_002(&credential()), &[]).await.status,
            200
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_call_abandoned_half_way_through_its_answer_does_not_break_the_next_ones() {
    let stack = Stack::default().await;
    warm(&stack).await;
    let before = stack.campaign.connections();
    // The caller reads the head of the answer and hangs up in the middle of the body.
    stack.campaign.set_stall(true);
    let mut stream = TcpStream::connect(stack.url()).await.unwrap();
    let body = seed_002(&credential());
    let head = format!(
        "POST /nl/jsp/soaprouter.jsp HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    drop(stream);
    stack.campaign.set_stall(false);
    // The next calls go through, on a connection that can take them.
    for _ in 0..3 {
        let answer = post(stack.url(), seed_002(&credential()), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert!(stack.campaign.connections() > before);
}
