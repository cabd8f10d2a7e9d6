//! What one client may hold of the proxy's connections (issue "Security", HTTP/2 and per
//! address): streams per HTTP/2 connection, HTTP/2 connections with no stream, peers that do
//! not answer pings, and connections from one address. HTTP/2 is spoken here frame by frame,
//! as an attacker would, so that the client does exactly what each test says and no more.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Ample time for what should happen within a few seconds: a guard against a hang, not a
/// measure.
const HANG: Duration = Duration::from_secs(20);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut out = vec![length[1], length[2], length[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const SETTINGS: u8 = 4;
const HEADERS: u8 = 1;
const DATA: u8 = 0;
const END_HEADERS: u8 = 4;

/// The HEADERS of a POST to the SOAP router, HPACK without Huffman or indexing.
fn post_headers(stream: u32) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    for (index, value) in [(4u8, SOAP_PATH), (1, "localhost")] {
        // A literal without indexing, its name from the static table (:path, :authority).
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    frame(HEADERS, END_HEADERS, stream, &block)
}

/// A connection that has sent the HTTP/2 preface and an empty SETTINGS frame.
async fn h2_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    stream
}

/// Reads until the peer closes the connection (or resets it).
async fn closed(mut stream: TcpStream) {
    let mut sink = Vec::new();
    let read = tokio::time::timeout(HANG, stream.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the connection is still open after {HANG:?}");
}

async fn admin_metric(stack: &Stack, name: &str) -> Option<f64> {
    let text = get(stack.proxy.admin, "/metrics").await.body;
    metric(&text, name)
}

#[tokio::test]
async fn an_http2_connection_allows_http2_max_streams_at_once() {
    for (setting, expected) in [(None, 32), (Some(5), 5)] {
        let stack = Stack::start_with("", "", |config| {
            if let Some(n) = setting {
                config.server.limits.http2_max_streams = n;
            }
        })
        .await;
        let mut stream = h2_connection(stack.url()).await;
        // The server's first frame is its SETTINGS.
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(head[3], SETTINGS);
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; length];
        stream.read_exact(&mut payload).await.unwrap();
        let max_streams = payload
            .chunks(6)
            .find(|setting| setting[..2] == [0, 3]) // SETTINGS_MAX_CONCURRENT_STREAMS
            .map(|setting| u32::from_be_bytes(setting[2..].try_into().unwrap()));
        assert_eq!(max_streams, Some(expected));
    }
}

#[tokio::test]
async fn http2_connections_with_no_stream_do_not_lock_callers_out() {
    // Before the fix, four connections that sent the preface and nothing else held every slot
    // for good: the caller below never got an answer.
    let stack = Stack::start_with("", "", |config| {
        config.server.limits.max_connections = 4;
        config.server.limits.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(h2_connection(stack.url()).await);
    }
    // Served once a slot is free, that is once the idle connections are closed.
    let body = seed_002(&credential());
    let answer = tokio::time::timeout(HANG, post_from("127.0.0.1", stack.url(), &body)).await;
    assert_eq!(
        answer.ok(),
        Some(200),
        "locked out by stream-less connections"
    );
    // Each was closed: GOAWAY, then dropped, as none of them answers the GOAWAY's ping.
    for stream in idle {
        closed(stream).await;
    }
}

#[tokio::test]
async fn an_http2_peer_that_does_not_answer_pings_is_dropped() {
    // A stream is open (its body stalls before the session token, within every body timeout),
    // so the connection is not idle: only the ping can tell that its peer is gone.
    let stack = Stack::start_with("", "", |config| {
        config.server.limits.header_read_timeout = Duration::from_secs(1);
        config.server.limits.idle_timeout = Duration::from_secs(600);
        config.server.prefix_timeout = Duration::from_secs(600);
    })
    .await;
    let mut stream = h2_connection(stack.url()).await;
    stream.write_all(&post_headers(1)).await.unwrap();
    stream
        .write_all(&frame(DATA, 0, 1, b"<?xml version=\"1.0\"?>"))
        .await
        .unwrap();
    eventually("the connection is counted", HANG, || async {
        (admin_metric(&stack, "imsbridge_connections_open").await == Some(1.0)).then_some(())
    })
    .await;
    // Nothing more is read from the socket: the pings go unanswered.
    eventually("the connection is dropped", HANG, || async {
        (admin_metric(&stack, "imsbridge_connections_open").await == Some(0.0)).then_some(())
    })
    .await;
    closed(stream).await;
}

#[tokio::test]
async fn one_address_holds_at_most_max_connections_per_ip() {
    let stack = Stack::start_with("", "", |config| {
        config.server.limits.max_connections_per_ip = 2;
    })
    .await;
    let body = seed_002(&credential());
    let held = [
        TcpStream::connect(stack.url()).await.unwrap(),
        TcpStream::connect(stack.url()).await.unwrap(),
    ];
    // A third from the same address is closed at once, unanswered.
    let third = TcpStream::connect(stack.url()).await.unwrap();
    closed(third).await;
    assert_eq!(
        admin_metric(&stack, "imsbridge_connections_refused_per_ip_total").await,
        Some(1.0)
    );
    // Another address is served as usual.
    assert_eq!(post_from("127.0.0.2", stack.url(), &body).await, 200);
    // Once one of the two is closed, the first address has room again.
    drop(held);
    eventually("a slot of 127.0.0.1 comes back", HANG, || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let stream = socket.connect(stack.url()).await.unwrap();
        let (status, _) = tokio::time::timeout(HANG, try_exchange(stream, &body))
            .await
            .unwrap();
        (status == Some(200)).then_some(())
    })
    .await;
}

/// [`exchange_on`], but a connection closed unanswered gives `None` rather than a panic.
async fn try_exchange(mut stream: TcpStream, body: &str) -> (Option<u16>, String) {
    let request = format!(
        "POST {SOAP_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    (answer.get(9..12).and_then(|s| s.parse().ok()), answer)
}

/// A PROXY protocol v2 header: `command` 0x21 (PROXY) or 0x20 (LOCAL), TCP over IPv4.
fn proxy_v2(command: u8, source: [u8; 4]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[command, 0x11, 0, 12]);
    header.extend_from_slice(&source);
    header.extend_from_slice(&[10, 0, 0, 1]);
    header.extend_from_slice(&40000u16.to_be_bytes());
    header.extend_from_slice(&8080u16.to_be_bytes());
    header
}

/// A SOAP call with `Connection: close` after `preamble` on a new connection; the status (0:
/// closed unanswered).
async fn call_after(addr: SocketAddr, preamble: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(preamble).await.unwrap();
    try_exchange(stream, &seed_002(&credential()))
        .await
        .0
        .unwrap_or(0)
}

const CLIENT: &str = "203.0.113.7";

#[tokio::test]
async fn the_proxy_protocol_names_the_client() {
    // The caller may come from 203.0.113.7 only; the balancer in front is 127.0.0.1.
    let stack = Stack::start_with("", &format!("allow_from = [\"{CLIENT}/32\"]"), |config| {
        config.server.limits.proxy_protocol = true;
    })
    .await;
    let v1 = format!("PROXY TCP4 {CLIENT} 10.0.0.1 40000 8080\r\n");
    assert_eq!(call_after(stack.url(), v1.as_bytes()).await, 200);
    assert_eq!(
        call_after(stack.url(), &proxy_v2(0x21, [203, 0, 113, 7])).await,
        200
    );
    let seen = stack.campaign.requests();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.header("x-forwarded-for"), Some(CLIENT));
    }
    // Another client, the balancer's own check (LOCAL: the connection's address), no header.
    let other = b"PROXY TCP4 198.51.100.1 10.0.0.1 40000 8080\r\n";
    assert_eq!(call_after(stack.url(), other).await, 500);
    assert_eq!(call_after(stack.url(), &proxy_v2(0x20, [0; 4])).await, 500);
    assert_eq!(
        call_after(stack.url(), b"").await,
        0,
        "no PROXY header: closed"
    );
    assert_eq!(stack.campaign.requests().len(), 2);
    // The admin listener is reached directly (probes, scrapers): no header there.
    assert_eq!(get(stack.proxy.admin, "/healthz").await.status, 200);
}

#[tokio::test]
async fn trusted_proxies_name_the_client_by_x_forwarded_for() {
    let allowed = format!("allow_from = [\"{CLIENT}/32\"]");
    let stack = Stack::start_with("", &allowed, |config| {
        config.server.trusted_proxies = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
    })
    .await;
    let call = |chain: &'static str| {
        let addr = stack.url();
        async move {
            post(addr, seed_002(&credential()), &[("x-forwarded-for", chain)])
                .await
                .status
        }
    };
    // The right-most address that is not a trusted proxy: the client.
    assert_eq!(call("198.51.100.1, 203.0.113.7, 10.1.2.3").await, 200);
    let seen = stack.campaign.requests();
    assert_eq!(seen[0].header("x-forwarded-for"), Some(CLIENT));
    // A client that put the allowed address further left is not believed.
    assert_eq!(call("203.0.113.7, 198.51.100.1").await, 500);
    assert_eq!(stack.campaign.requests().len(), 1);
    // Without trusted proxies, the header names nobody: the peer is the client.
    let stack = Stack::start("", &allowed).await;
    let answer = post(
        stack.url(),
        seed_002(&credential()),
        &[("x-forwarded-for", CLIENT)],
    )
    .await;
    assert_eq!(answer.status, 500);
    assert!(stack.campaign.requests().is_empty());
}
