//! `server.workers`: the binary with two workers, each a runtime of its own with its own
//! socket. Callers are served by both, a reload reaches both, the connection limits are the
//! process's, and SIGTERM drains the requests in flight on both.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cli::{Running, temp_dir, with_mc_password, write_config};
use crate::support::*;

/// Connections each worker accepted, from `/metrics`.
async fn accepted_by_worker(admin: SocketAddr) -> [f64; 2] {
    let metrics = get(admin, "/metrics").await.body;
    let of = |worker: usize| {
        metric(
            &metrics,
            &format!("imsbridge_worker_connections_accepted_total{{worker=\"{worker}\"}}"),
        )
        .unwrap_or(0.0)
    };
    [of(0), of(1)]
}

/// `count` calls with `credential`, each on a connection of its own; their statuses.
async fn calls(proxy: SocketAddr, credential: &str, count: usize) -> Vec<u16> {
    let mut answers = Vec::new();
    for _ in 0..count {
        answers.push(post(proxy, seed_002(credential), &[]).await.status);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_workers_serve_callers_and_a_reload_reaches_both() {
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir("workers-reload");
    let path = write_config(&dir, &ims.url(), &campaign.url(), "", "");
    let mut running = Running::start(&path, "info");
    // The kernel spreads new connections over the two sockets: 32 of them all on one would
    // be a chance of 2^-31.
    assert!(
        calls(running.addr, &credential(), 32)
            .await
            .iter()
            .all(|s| *s == 200)
    );
    let before = accepted_by_worker(running.admin).await;
    assert!(before.iter().all(|n| *n > 0.0), "{before:?}");
    // A reload: mc's password changes. Every worker has it for its next connection.
    const NEW_PASSWORD: &str = "mc-password-after-reload-5e2a";
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, with_mc_password(&text, NEW_PASSWORD)).unwrap();
    running.signal("HUP");
    running.wait_for("config reloaded");
    let old = calls(running.addr, &credential(), 32).await;
    let new = calls(running.addr, &format!("{LOGIN}/{NEW_PASSWORD}"), 32).await;
    assert!(old.iter().all(|s| *s == 500), "{old:?}");
    assert!(new.iter().all(|s| *s == 200), "{new:?}");
    let after = accepted_by_worker(running.admin).await;
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "both workers served after the reload: {before:?} then {after:?}"
    );
    let (status, log) = running.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("workers=2"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A connection that has sent a call and keeps open (keep-alive), its answer read.
async fn held_connection(proxy: SocketAddr) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(proxy).await.ok()?;
    let body = seed_002(&credential());
    let head = format!(
        "POST {SOAP_PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body.as_bytes()).await.ok()?;
    // The answer (the stand-in's is small), or the end: a connection closed at once.
    let mut buf = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    (read > 0 && buf.starts_with(b"HTTP/1.1 200")).then_some(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limits_are_the_whole_processs() {
    let (ims, campaign) = stand_ins().await;
    let dir = temp_dir("workers-limits");
    let path = write_config(&dir, &ims.url(), &campaign.url(), "", "");
    let text = with_server(
        &std::fs::read_to_string(&path).unwrap(),
        "max_connections_per_ip = 4",
    );
    std::fs::write(&path, text).unwrap();
    let running = Running::start(&path, "info");
    // Four connections from 127.0.0.1 are held open; each of the next ones is closed at
    // once, whichever worker takes it (each worker alone would have let four more in).
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        match held_connection(running.addr).await {
            Some(stream) => held.push(stream),
            None => refused += 1,
        }
    }
    assert_eq!(held.len(), 4, "{refused} refused");
    let metrics = get(running.admin, "/metrics").await.body;
    assert_eq!(
        metric(&metrics, "imsbridge_connections_refused_per_ip_total"),
        Some(8.0),
        "{metrics}"
    );
    let by_worker = accepted_by_worker(running.admin).await;
    assert!(by_worker.iter().all(|n| *n > 0.0), "{by_worker:?}");
    // One closes: one more is let in.
    held.pop();
    let addr = running.addr;
    let another = eventually("a place freed", Duration::from_secs(10), || async move {
        held_connection(addr).await
    })
    .await;
    held.push(another);
    assert_eq!(held.len(), 4);
    drop(held);
    let (status, log) = running.stop();
    assert!(status.success(), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_connections_are_served_over_all_workers() {
    let (ims, campaign) = stand_ins().await;
    campaign.set_delay(Duration::from_millis(800));
    let dir = temp_dir("workers-max-connections");
    let path = write_config(&dir, &ims.url(), &campaign.url(), "", "");
    let text = with_server(
        &std::fs::read_to_string(&path).unwrap(),
        "max_connections = 3",
    );
    std::fs::write(&path, text).unwrap();
    let running = Running::start(&path, "info");
    let addr = running.addr;
    let calls: Vec<_> = (0..8)
        .map(|_| tokio::spawn(async move { post(addr, seed_002(&credential()), &[]).await.status }))
        .collect();
    // While they run, no more than three connections are served at once (each worker alone
    // would have taken three); the others wait in the kernel's queue.
    let mut most = 0.0f64;
    while !calls.iter().all(tokio::task::JoinHandle::is_finished) {
        let metrics = get(running.admin, "/metrics").await.body;
        most = most.max(metric(&metrics, "imsbridge_connections_open").unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert!(most <= 3.0, "{most} at once");
    assert!(most >= 2.0, "the calls did overlap: {most}");
    let (status, log) = running.stop();
    assert!(status.success(), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_requests_in_flight_on_every_worker() {
    let (ims, campaign) = stand_ins().await;
    campaign.set_delay(Duration::from_millis(1500));
    let dir = temp_dir("workers-sigterm");
    let mut running = Running::start(
        &write_config(&dir, &ims.url(), &campaign.url(), "", ""),
        "info",
    );
    let addr = running.addr;
    let in_flight: Vec<_> = (0..16)
        .map(|_| tokio::spawn(async move { post(addr, seed_002(&credential()), &[]).await }))
        .collect();
    eventually(
        "Campaign has the calls",
        Duration::from_secs(10),
        || async { (campaign.requests().len() >= 16).then_some(()) },
    )
    .await;
    let by_worker = accepted_by_worker(running.admin).await;
    assert!(by_worker.iter().all(|n| *n > 0.0), "{by_worker:?}");
    running.signal("TERM");
    running.wait_for("shutting down");
    for call in in_flight {
        let answer = call.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let (status, log) = running.stop();
    assert!(status.success(), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}
