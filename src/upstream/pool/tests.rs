//! The pool against a Campaign on a raw socket that counts its connections and requests, and
//! closes a connection when told to.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use super::*;
use crate::body::MAX_BUF_SIZE;
use crate::connect::https_connector;

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n<ok/>";

/// A Campaign that answers every request with `<ok/>` on keep-alive connections.
struct Campaign {
    url: Uri,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Closes the connections open now.
    close: Arc<Notify>,
    /// One message per connection closed on `close`.
    closed: mpsc::UnboundedReceiver<()>,
}

impl Campaign {
    async fn start() -> Campaign {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(Notify::new());
        let (closed_tx, closed) = mpsc::unbounded_channel();
        tokio::spawn({
            let (connections, requests, close) =
                (connections.clone(), requests.clone(), close.clone());
            async move {
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (requests, close, closed) =
                        (requests.clone(), close.clone(), closed_tx.clone());
                    tokio::spawn(async move {
                        let mut read = Vec::new();
                        let mut buffer = [0u8; 4096];
                        loop {
                            let n = tokio::select! {
                                n = stream.read(&mut buffer) => n.unwrap_or(0),
                                () = close.notified() => {
                                    drop(stream);
                                    let _ = closed.send(());
                                    return;
                                }
                            };
                            if n == 0 {
                                return;
                            }
                            read.extend_from_slice(&buffer[..n]);
                            // Every request of these tests is a head and a 4-byte body.
                            while let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                                if read.len() < end + 4 + 4 {
                                    break;
                                }
                                read.drain(..end + 4 + 4);
                                requests.fetch_add(1, Ordering::SeqCst);
                                stream.write_all(ANSWER).await.unwrap();
                            }
                        }
                    });
                }
            }
        });
        Campaign {
            url,
            connections,
            requests,
            close,
            closed,
        }
    }

    fn pool(&self) -> Pool {
        let connector = https_connector(&[], None, &Default::default()).unwrap();
        Pool::new(
            connector,
            self.url.clone(),
            Duration::from_secs(2),
            MAX_BUF_SIZE,
            1,
        )
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.connections.load(Ordering::SeqCst),
            self.requests.load(Ordering::SeqCst),
        )
    }
}

fn request() -> Request<UpstreamBody> {
    let body = UpstreamBody::new(
        [Bytes::from_static(b"<x/>")],
        None,
        4,
        1024,
        Some(4),
        Duration::from_secs(5),
    );
    Request::post("/nl/jsp/soaprouter.jsp")
        .header("host", "campaign")
        .header("content-length", 4)
        .body(body)
        .unwrap()
}

/// Sends a request and reads the answer to its end.
async fn exchange(pool: &Pool) -> String {
    let Ok(response) = pool.send(request()).await else {
        panic!("no answer");
    };
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn a_connection_read_to_the_end_is_reused_and_an_abandoned_one_is_not() {
    let campaign = Campaign::start().await;
    let pool = campaign.pool();
    assert_eq!(exchange(&pool).await, "<ok/>");
    assert_eq!(pool.idle(), 1, "given back once its answer was read");
    assert_eq!(exchange(&pool).await, "<ok/>");
    assert_eq!(
        campaign.counts(),
        (1, 2),
        "the second call reused the connection"
    );

    // An answer dropped half-read takes its connection with it.
    let Ok(response) = pool.send(request()).await else {
        panic!("no answer");
    };
    assert_eq!(pool.idle(), 0, "lent out");
    drop(response);
    assert_eq!(pool.idle(), 0, "not given back");
    assert_eq!(exchange(&pool).await, "<ok/>");
    assert_eq!(
        campaign.counts(),
        (2, 4),
        "a new connection after the abandoned one"
    );
}

#[tokio::test]
async fn a_connection_campaign_closed_while_idle_is_replaced() {
    let mut campaign = Campaign::start().await;
    let pool = campaign.pool();
    assert_eq!(exchange(&pool).await, "<ok/>");
    assert_eq!(pool.idle(), 1);
    // Campaign closes the idle connection: the next request sees it closed when it takes it
    // from the pool, before anything is written, and goes on a new one.
    campaign.close.notify_waiters();
    campaign.closed.recv().await.unwrap();
    assert_eq!(exchange(&pool).await, "<ok/>");
    assert_eq!(
        campaign.counts(),
        (2, 2),
        "sent once, on a new connection: nothing went out on the closed one"
    );
}

#[tokio::test]
async fn a_connection_campaign_sent_something_unasked_on_is_not_used_again() {
    // A Campaign that answers, then writes more on the idle connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: Uri = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let wrote_more = Arc::new(Notify::new());
    let told = wrote_more.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            let told = told.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                if stream.read(&mut buffer).await.unwrap_or(0) == 0 {
                    return;
                }
                stream.write_all(ANSWER).await.unwrap();
                stream.write_all(ANSWER).await.unwrap();
                told.notify_one();
                let _ = stream.read(&mut buffer).await;
            });
        }
    });
    let connector = https_connector(&[], None, &Default::default()).unwrap();
    let pool = Pool::new(connector, url, Duration::from_secs(2), MAX_BUF_SIZE, 1);
    assert_eq!(exchange(&pool).await, "<ok/>");
    wrote_more.notified().await;
    // The extra bytes may have come with the answer (then the connection was never given
    // back) or after it (then it is seen at checkout): either way, a new connection.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(exchange(&pool).await, "<ok/>");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_new_connection_that_fails_hands_the_request_back() {
    // A port that refuses connections: bound, never listening.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url: Uri = format!("http://{}", socket.local_addr().unwrap())
        .parse()
        .unwrap();
    let connector = https_connector(&[], None, &Default::default()).unwrap();
    let pool = Pool::new(connector, url, Duration::from_secs(2), MAX_BUF_SIZE, 1);
    match pool.send(request()).await {
        Err(Failed {
            error: UpstreamError::Unreachable(text),
            unsent: Some(unsent),
        }) => {
            assert!(text.contains("refused"), "{text}");
            assert_eq!(
                unsent.uri(),
                "/nl/jsp/soaprouter.jsp",
                "the request comes back"
            );
        }
        Err(Failed { error, unsent }) => panic!("{error}, unsent: {}", unsent.is_some()),
        Ok(response) => panic!("{}", response.status()),
    }
}

#[tokio::test]
async fn the_connect_timeout_covers_the_tls_handshake() {
    // A node that takes connections and says nothing: TCP connects at once, TLS never ends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: Uri = format!("https://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let connector = https_connector(&[], None, &Default::default()).unwrap();
    let pool = Pool::new(connector, url, Duration::from_millis(300), MAX_BUF_SIZE, 1);
    match pool.send(request()).await {
        Err(Failed {
            error: UpstreamError::ConnectTimeout(after),
            unsent: Some(_),
        }) => assert_eq!(after, Duration::from_millis(300)),
        Err(Failed { error, unsent }) => panic!("{error}, unsent: {}", unsent.is_some()),
        Ok(response) => panic!("{}", response.status()),
    }
    held.abort();
}
