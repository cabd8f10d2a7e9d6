//! The verdict on real answers, read off a socket by the upstream client: what refuses a
//! token, what does not, and the answer streamed back whole either way.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::body::UpstreamBody;
use crate::config::UpstreamSettings;
use crate::upstream::Upstream;

const IDLE: Duration = Duration::from_secs(5);

/// A fault with `code` in its detail, after `padding` bytes of whitespace.
fn fault(code: &str, padding: usize) -> String {
    format!(
        "<?xml version='1.0'?><SOAP-ENV:Envelope xmlns:SOAP-ENV='http://schemas.xmlsoap.org/soap/envelope/'><SOAP-ENV:Body>{}<SOAP-ENV:Fault><faultcode>SOAP-ENV:Client</faultcode><faultstring>Error</faultstring><detail>{code} Invalid token.</detail></SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>",
        " ".repeat(padding)
    )
}

fn with_length(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The body in two chunks, cut at `cut`.
fn chunked(status: &str, body: &str, cut: usize) -> Vec<u8> {
    let (a, b) = body.split_at(cut);
    format!(
        "HTTP/1.1 {status}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    )
    .into_bytes()
}

/// Campaign's answer `raw` to one call, as the upstream client hands it over.
async fn answer(raw: Vec<u8>) -> Response<CampaignBody> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        stream.write_all(&raw).await.unwrap();
        // Kept open: the answer ends by its framing.
        let _ = stream.read(&mut byte).await;
    });
    let settings = UpstreamSettings {
        name: "default".to_owned(),
        nodes: vec![crate::config::NodeSettings {
            scheme: http::uri::Scheme::HTTP,
            authority: addr.to_string().parse().unwrap(),
            base_path: String::new(),
        }],
        timeout: IDLE,
        connect_timeout: IDLE,
        extra_roots: Vec::new(),
        retry_buffer_bytes: 0,
        cooldown: IDLE,
    };
    let attempts = |_: &str, _: &str| Default::default();
    let upstream = Upstream::new(
        &settings,
        &[],
        &crate::connect::Egress::default(),
        &attempts,
        prometheus_client::metrics::histogram::Histogram::new([1.0]),
        1,
    )
    .unwrap();
    let request = Request::post("/nl/jsp/soaprouter.jsp")
        .header("host", "campaign")
        .body(UpstreamBody::new([], None, 0, 0, Some(0), IDLE))
        .unwrap();
    upstream.send(request).await.unwrap()
}

/// The verdict, and the answer's body as the caller gets it.
async fn judged(raw: Vec<u8>) -> (bool, u16, String) {
    let judged = judge(answer(raw).await, IDLE, b"the-access-token")
        .await
        .unwrap();
    assert!(!judged.echoes);
    let status = judged.response.status().as_u16();
    let body = judged
        .response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    (
        judged.refused,
        status,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn a_401_refuses_the_token() {
    assert_eq!(
        judged(with_length("401 Unauthorized", "no")).await,
        (true, 401, "no".to_owned())
    );
}

#[tokio::test]
async fn a_500_fault_with_a_refusal_code_refuses_it_and_streams_back_whole() {
    for code in ["XSV-350114", "XSV-350008"] {
        let body = fault(code, 0);
        assert_eq!(
            judged(with_length("500 Internal Server Error", &body)).await,
            (true, 500, body.clone()),
            "{code}"
        );
        // The code cut in two by the chunks of the answer.
        let cut = body.find(code).unwrap() + 4;
        assert_eq!(
            judged(chunked("500 Internal Server Error", &body, cut)).await,
            (true, 500, body),
            "{code} across chunks"
        );
    }
}

#[tokio::test]
async fn other_answers_are_campaigns_business() {
    // Another fault, and a success that happens to say a refusal code.
    let other = fault("XSV-350122", 0);
    assert_eq!(
        judged(with_length("500 Internal Server Error", &other)).await,
        (false, 500, other)
    );
    let ok = "<ok>XSV-350114</ok>";
    assert_eq!(
        judged(with_length("200 OK", ok)).await,
        (false, 200, ok.to_owned())
    );
}

#[tokio::test]
async fn a_code_far_past_the_peek_is_not_looked_for_and_nothing_is_lost() {
    // Far past: the verdict reads whole frames until it has PEEK_BYTES, and a frame can hold
    // as much as the client's read buffer.
    let body = fault("XSV-350114", PEEK_BYTES + 4 * crate::body::MAX_BUF_SIZE);
    let (refused, status, sent) = judged(chunked("500 Internal Server Error", &body, 1000)).await;
    assert!(
        !refused,
        "only about the first {PEEK_BYTES} bytes are read for the verdict"
    );
    assert_eq!((status, sent.len()), (500, body.len()));
    assert_eq!(sent, body);
}

#[tokio::test]
async fn a_fault_that_echoes_the_token_is_seen() {
    let body = fault("XSV-350122 Bearer the-access-token", 0);
    let judged = judge(
        answer(with_length("500 Internal Server Error", &body)).await,
        IDLE,
        b"the-access-token",
    )
    .await
    .unwrap();
    assert!(judged.echoes);
    assert!(!judged.refused);
}
