//! The client of `h1.rs` against hyper's HTTP/1.1 client connection: the same answers, byte
//! for byte (every framing RFC 9112 §6 allows or forbids, the chunked syntax, trailers, 1xx,
//! 204 and 304, HEAD, `Connection`), each written by a server on a real socket, in one piece and
//! a byte at a time; what each client hands on (the status, the version, the fields, the body,
//! the trailers, or that it failed, and where) and whether it would send another request on the
//! connection must be the same.

use std::sync::Mutex;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// What a client handed on for an answer.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The head could not be read.
    HeadFailed,
    Answer {
        status: u16,
        version: Version,
        fields: Vec<(String, Vec<u8>)>,
        /// The body's bytes, and whether it ended in an error.
        body: Vec<u8>,
        body_failed: bool,
        trailers: Option<Vec<(String, Vec<u8>)>>,
        /// A second request on the connection got its answer.
        reused: bool,
    },
}

fn fields(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// How the server writes an answer.
#[derive(Clone, Copy, Debug)]
enum Pace {
    Whole,
    ByteByByte,
}

const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond";

/// A server for one connection: it reads the request (a head, and a body of its
/// `content-length`), writes `answer` at `pace`, closes if `close`, else answers a second
/// request with [`SECOND`].
async fn server(answer: &'static [u8], pace: Pace, close: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        for round in 0..2 {
            if !read_request(&mut stream).await {
                return;
            }
            let bytes = if round == 0 { answer } else { SECOND };
            match pace {
                Pace::Whole => {
                    if stream.write_all(bytes).await.is_err() {
                        return;
                    }
                }
                Pace::ByteByByte => {
                    for byte in bytes {
                        if stream.write_all(&[*byte]).await.is_err() {
                            return;
                        }
                        stream.flush().await.unwrap();
                        tokio::time::sleep(Duration::from_micros(50)).await;
                    }
                }
            }
            if close {
                return;
            }
        }
        // Kept open until the client goes.
        let mut rest = [0u8; 64];
        let _ = stream.read(&mut rest).await;
    });
    addr
}

/// Reads one request; false at the connection's end.
async fn read_request(stream: &mut tokio::net::TcpStream) -> bool {
    let mut read = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&read[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse().unwrap());
            if read.len() >= end + 4 + length {
                return true;
            }
        }
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => read.extend_from_slice(&buffer[..n]),
        }
    }
}

fn request(method: &Method) -> Request<http_body_util::Full<Bytes>> {
    let body = if *method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(b"<x/>")
    };
    let mut builder = Request::builder()
        .method(method.clone())
        .uri("/nl/jsp/soaprouter.jsp")
        .header("host", "campaign");
    if *method != Method::HEAD {
        builder = builder.header("content-length", "4");
    }
    builder.body(http_body_util::Full::new(body)).unwrap()
}

/// Reads a body to its end: its bytes, whether it failed, its trailers.
async fn read_body<B>(mut body: B) -> (Vec<u8>, bool, Option<Vec<(String, Vec<u8>)>>)
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut bytes = Vec::new();
    let mut trailers = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Err(_) => panic!("a body that never ends"),
            Ok(None) => return (bytes, false, trailers),
            Ok(Some(Err(_))) => return (bytes, true, trailers),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => bytes.extend_from_slice(&data),
                Err(frame) => {
                    if let Ok(fields_of) = frame.into_trailers() {
                        trailers = Some(fields(&fields_of));
                    }
                }
            },
        }
    }
}

const MAX_HEAD: usize = 8 * 1024;

async fn with_hyper(answer: &'static [u8], pace: Pace, close: bool, method: &Method) -> Outcome {
    let addr = server(answer, pace, close).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let Ok(response) = sender.send_request(request(method)).await else {
        return Outcome::HeadFailed;
    };
    let (parts, body) = response.into_parts();
    let (body, body_failed, trailers) = read_body(body).await;
    let reused = !body_failed
        && tokio::time::timeout(Duration::from_secs(1), sender.ready())
            .await
            .is_ok_and(|ready| ready.is_ok())
        && match sender.send_request(request(&Method::POST)).await {
            Ok(second) => {
                let (bytes, failed, _) = read_body(second.into_body()).await;
                !failed && bytes == b"second"
            }
            Err(_) => false,
        };
    Outcome::Answer {
        status: parts.status.as_u16(),
        version: parts.version,
        fields: fields(&parts.headers),
        body,
        body_failed,
        trailers,
        reused,
    }
}

/// Keeps the connection an answer gives back.
#[derive(Default)]
struct Kept(Mutex<Option<Conn>>);

impl Reuse for Kept {
    fn give_back(&self, conn: Conn) {
        *self.0.lock().unwrap() = Some(conn);
    }
}

async fn with_ours(answer: &'static [u8], pace: Pace, close: bool, method: &Method) -> Outcome {
    let addr = server(answer, pace, close).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let conn = Conn::new(Transport::Plain(stream), MAX_HEAD);
    let kept = Arc::new(Kept::default());
    let Ok(response) = conn.send(request(method), kept.clone()).await else {
        return Outcome::HeadFailed;
    };
    let (parts, body) = response.into_parts();
    let (body, body_failed, trailers) = read_body(body).await;
    let again = kept.0.lock().unwrap().take();
    let reused = match again {
        Some(mut conn) => {
            conn.usable()
                && match conn.send(request(&Method::POST), kept.clone()).await {
                    Ok(second) => {
                        let (bytes, failed, _) = read_body(second.into_body()).await;
                        !failed && bytes == b"second"
                    }
                    Err(_) => false,
                }
        }
        None => false,
    };
    Outcome::Answer {
        status: parts.status.as_u16(),
        version: parts.version,
        fields: fields(&parts.headers),
        body,
        body_failed,
        trailers,
        reused,
    }
}

/// Answers, and whether the server closes after them.
const ANSWERS: &[(&str, &[u8], bool)] = &[
    ("length", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n<ok/>", false),
    ("length zero", b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false),
    ("a SOAP fault", b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/xml\r\ncontent-length: 7\r\n\r\n<fault>", false),
    ("chunked", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", false),
    ("chunked, upper-case size", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", false),
    ("chunked, extensions", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;name=value;x\r\nhello\r\n0;last\r\n\r\n", false),
    ("chunked, white space after the size", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5 \t ;x\r\nhello\r\n0\r\n\r\n", false),
    ("chunked, trailers", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: 42\r\nx-other: a b\r\n\r\n", false),
    ("chunked, a bare LF after the size", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", true),
    ("chunked, no CRLF after the data", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n", true),
    ("chunked, a size that overflows", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1FFFFFFFFFFFFFFFF\r\nx\r\n", true),
    ("chunked, no size", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n;x\r\nhello\r\n0\r\n\r\n", true),
    ("chunked, a size with a sign", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", true),
    ("chunked, an extension with a LF", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n", true),
    ("chunked, a trailer ending in a bare LF", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\n\r\n", true),
    ("chunked, the end without its LF", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\rX", true),
    ("chunked, cut off", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel", true),
    ("chunked over a Content-Length", b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false),
    ("gzip, then chunked", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false),
    ("chunked in another field, in upper case", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false),
    ("a Transfer-Encoding that is not chunked: up to the end", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nuntil the end", true),
    ("chunked with white space around it", b"HTTP/1.1 200 OK\r\ntransfer-encoding:\t chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n", false),
    ("xchunked: up to the end", b"HTTP/1.1 200 OK\r\ntransfer-encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", true),
    ("chunked, then identity: up to the end", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n", true),
    ("an empty Transfer-Encoding", b"HTTP/1.1 200 OK\r\ntransfer-encoding: \r\ncontent-length: 3\r\n\r\nabc", true),
    ("a Content-Length with leading zeros", b"HTTP/1.1 200 OK\r\ncontent-length: 0005\r\n\r\nhello", false),
    ("Transfer-Encoding in HTTP/1.0", b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", true),
    ("two equal Content-Lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello", false),
    ("a list of equal Content-Lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello", false),
    ("two different Content-Lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!", true),
    ("a list of different Content-Lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!", true),
    ("a Content-Length with a sign", b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello", true),
    ("a negative Content-Length", b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nhello", true),
    ("a Content-Length that is no number", b"HTTP/1.1 200 OK\r\ncontent-length: five\r\n\r\nhello", true),
    ("an empty Content-Length", b"HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\nhello", true),
    ("a Content-Length too large", b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\nx", true),
    ("a Content-Length longer than what comes", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello", true),
    ("no length: up to the end", b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end", true),
    ("HTTP/1.0 without keep-alive", b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello", false),
    ("HTTP/1.0 with keep-alive", b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 5\r\n\r\nhello", false),
    ("Connection: close", b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello", false),
    ("Connection: close among others", b"HTTP/1.1 200 OK\r\nconnection: upgrade, Close\r\ncontent-length: 5\r\n\r\nhello", false),
    ("Connection: keep-alive, then close", b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello", false),
    ("204 with a Content-Length", b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", false),
    ("304", b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n", false),
    ("100 Continue, then the answer", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
    ("102 and 103, then the answer", b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
    ("no reason phrase", b"HTTP/1.1 200 \r\ncontent-length: 2\r\n\r\nok", false),
    ("another reason phrase", b"HTTP/1.1 200 Fine\r\ncontent-length: 2\r\n\r\nok", false),
    ("bare LF line ends in the head", b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok", false),
    ("fields in several cases", b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nX-Custom: A\r\nx-custom: b\r\ncontent-length: 2\r\n\r\nok", false),
    ("a value with obs-text", b"HTTP/1.1 200 OK\r\nx-name: caf\xc3\xa9\r\ncontent-length: 2\r\n\r\nok", false),
    ("an empty value", b"HTTP/1.1 200 OK\r\nx-empty:\r\ncontent-length: 2\r\n\r\nok", false),
    ("a folded field (obs-fold)", b"HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\ncontent-length: 2\r\n\r\nok", true),
    ("a space before the colon", b"HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\nok", true),
    ("a control character in a value", b"HTTP/1.1 200 OK\r\nx-bad: a\x01b\r\ncontent-length: 2\r\n\r\nok", true),
    ("a status of four digits", b"HTTP/1.1 2000 OK\r\ncontent-length: 2\r\n\r\nok", true),
    ("a status below 100", b"HTTP/1.1 099 OK\r\ncontent-length: 2\r\n\r\nok", true),
    ("HTTP/2.0 in the status line", b"HTTP/2.0 200 OK\r\ncontent-length: 2\r\n\r\nok", true),
    ("no HTTP at all", b"<html>hello</html>\r\n\r\n", true),
    ("closed before the head", b"HTTP/1.1 200 OK\r\ncontent-le", true),
    ("closed at once", b"", true),
];

/// Answers whose handling the two clients share but for a reuse they would try differently.
fn compare(name: &str, answer: &'static [u8], close: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for method in [Method::POST, Method::HEAD] {
            for pace in [Pace::Whole, Pace::ByteByByte] {
                let hyper = with_hyper(answer, pace, close, &method).await;
                let ours = with_ours(answer, pace, close, &method).await;
                assert_eq!(ours, hyper, "{name} ({method}, {pace:?})");
            }
        }
    });
}

#[test]
fn every_answer_is_handed_on_as_hypers_client_hands_it_on() {
    for (name, answer, close) in ANSWERS {
        compare(name, answer, *close);
    }
}

#[test]
fn a_head_over_the_limit_is_refused_by_both() {
    let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..(MAX_HEAD / 32 + 1) {
        answer.extend_from_slice(format!("x-field-{i:04}: {i:0>16}\r\n").as_bytes());
    }
    answer.extend_from_slice(b"content-length: 2\r\n\r\nok");
    let answer: &'static [u8] = Box::leak(answer.into_boxed_slice());
    compare("a head over the limit", answer, true);
    // And too many fields within it.
    let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        answer.extend_from_slice(format!("x{i}: v\r\n").as_bytes());
    }
    answer.extend_from_slice(b"content-length: 2\r\n\r\nok");
    let answer: &'static [u8] = Box::leak(answer.into_boxed_slice());
    compare("too many fields", answer, true);
}

#[test]
fn the_request_is_written_as_hypers_client_writes_it() {
    // What each client writes for the same requests: a known length, a body of unknown
    // length (chunked), an empty body, a Transfer-Encoding the caller set.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (name, make) in requests() {
            let hyper = written_by(true, make()).await;
            let ours = written_by(false, make()).await;
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&hyper),
                "{name}"
            );
        }
    });
}

/// A body of frames whose length is not known beforehand.
struct Chunks(std::collections::VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

fn unknown_length(chunks: &[&'static [u8]]) -> Chunks {
    Chunks(chunks.iter().map(|c| Bytes::from_static(c)).collect())
}

type AnyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

#[allow(clippy::type_complexity)]
fn requests() -> Vec<(&'static str, Box<dyn Fn() -> Request<AnyBody>>)> {
    let post = || {
        Request::post("/nl/jsp/soaprouter.jsp?x=1")
            .header("host", "campaign")
            .header("x-forwarded-for", "10.0.0.1")
    };
    let full = |bytes: &'static [u8]| {
        http_body_util::Full::new(Bytes::from_static(bytes))
            .map_err(|never| match never {})
            .boxed_unsync()
    };
    vec![
        (
            "a known length",
            Box::new(move || {
                post()
                    .header("content-length", "4")
                    .body(full(b"<x/>"))
                    .unwrap()
            }),
        ),
        (
            "a known length, no Content-Length field",
            Box::new(move || post().body(full(b"<x/>")).unwrap()),
        ),
        (
            "an unknown length",
            Box::new(move || {
                post()
                    .body(unknown_length(&[b"<x>", b"0123456789abcdef", b"</x>"]).boxed_unsync())
                    .unwrap()
            }),
        ),
        (
            "an empty body",
            Box::new(move || {
                post()
                    .header("content-length", "0")
                    .body(full(b""))
                    .unwrap()
            }),
        ),
        (
            "a Transfer-Encoding set, a Content-Length too",
            Box::new(move || {
                post()
                    .header("transfer-encoding", "gzip")
                    .header("content-length", "3")
                    .body(unknown_length(&[b"abc"]).boxed_unsync())
                    .unwrap()
            }),
        ),
        (
            "a GET of unknown length",
            Box::new(move || {
                Request::get("/nl/jsp/schemawsdl.jsp?schema=nms:rtEvent")
                    .header("host", "campaign")
                    .body(unknown_length(&[]).boxed_unsync())
                    .unwrap()
            }),
        ),
    ]
}

/// The bytes a client wrote for `request` (the server answers once and closes).
async fn written_by(hyper: bool, request: Request<AnyBody>) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut read = Vec::new();
        let mut buffer = [0u8; 4096];
        // The request is small and comes within a moment; then the answer.
        loop {
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await {
                Ok(Ok(n)) if n > 0 => read.extend_from_slice(&buffer[..n]),
                _ => break,
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        read
    });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    if hyper {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let _ = sender.send_request(request).await;
    } else {
        let conn = Conn::new(Transport::Plain(stream), MAX_HEAD);
        let _ = conn.send(request, Arc::new(Kept::default())).await;
    }
    server.await.unwrap()
}
