//! HTTP/1.1 to Campaign, written for the proxy's one use of it: a request written out (its head
//! and what is ready of its body in one write), the head of the answer read with `httparse`,
//! its body handed on as it comes (length-delimited, chunked, or up to the connection's end), and
//! the connection kept for the next request when RFC 9112 §9.3 allows it.
//!
//! It takes the place of hyper's client connection, whose task per connection and channel per
//! request were a fifth of a small call's cost (`bench/README.md`). It follows that client's
//! rules, which `h1/tests.rs` holds it to by feeding the same answers to both: which answers
//! have a body and how it is framed (RFC 9112 §6.3: 1xx skipped, 204, 304 and HEAD without one,
//! `Transfer-Encoding` over `Content-Length`, several `Content-Length` agreeing or refused),
//! the chunked syntax and its limits, trailers, and when a connection can be used again. The
//! caller's side stays on hyper.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// At most this many header fields in an answer's head, and in its trailers (hyper's default).
const MAX_HEADERS: usize = 100;
/// Bytes of chunk extensions in an answer, in all (hyper's limit).
const MAX_CHUNK_EXTENSIONS: u64 = 16 * 1024;
/// Bytes of an answer's trailers (hyper's limit).
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// What one read asks for at least.
const READ_AT_LEAST: usize = 8 * 1024;
/// A body read asks for at most this much at once (the buffer grows to it as reads fill it).
const READ_AT_MOST: usize = 64 * 1024;
/// What the head and the body's first bytes are written with at most, in one system call; the
/// rest of a large body goes as it comes.
const GATHER_AT_MOST: usize = 64 * 1024;

/// What a connection to Campaign runs on: TCP, or TLS (or a tunnel through an egress proxy)
/// as the connector made it.
pub(crate) enum Transport {
    Plain(TcpStream),
    Other(Box<TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>>),
}

impl From<MaybeHttpsStream<TokioIo<TcpStream>>> for Transport {
    fn from(stream: MaybeHttpsStream<TokioIo<TcpStream>>) -> Transport {
        match stream {
            MaybeHttpsStream::Http(tcp) => Transport::Plain(tcp.into_inner()),
            other => Transport::Other(Box::new(TokioIo::new(other))),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Transport::Other(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            Transport::Other(io) => Pin::new(io.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, data),
            Transport::Other(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, data),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(tcp) => tcp.is_write_vectored(),
            Transport::Other(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Transport::Other(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Transport::Other(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection to Campaign between exchanges.
pub(crate) struct Conn {
    io: Transport,
    /// Read from Campaign and not handed on yet.
    buf: BytesMut,
    /// The most an answer's head may take (and a read buffer hold).
    max_buf_size: usize,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("Campaign closed the connection before its answer was complete")]
    Incomplete,
    #[error("Campaign's answer is not HTTP/1.1 as RFC 9112 writes it: {0}")]
    Parse(&'static str),
    #[error("the head of Campaign's answer is over {0} bytes")]
    TooLarge(usize),
    /// The request's own body failed (the caller's, most often): the request is abandoned.
    #[error("{0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("the request's body does not have the length its head says")]
    BodyLength,
}

/// A request the connection could not take: `unsent` gives it back when none of it was written.
pub(crate) struct Failed<B> {
    pub(crate) error: Error,
    pub(crate) unsent: Option<Request<B>>,
}

/// Where a connection goes when its answer was read to its end and it may take another.
pub(crate) trait Reuse: Send + Sync + 'static {
    fn give_back(&self, conn: Conn);
}

impl Conn {
    pub(crate) fn new(io: Transport, max_buf_size: usize) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            max_buf_size,
        }
    }

    /// Whether this idle connection can take a request: Campaign has neither closed it nor
    /// sent anything since its last answer (looked at without waiting).
    pub(crate) fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Sends `request` (its URI in origin form, its `Host` set) and reads the head of the
    /// answer. Its body reads the rest; read to its end, it gives the connection to `home`
    /// when the connection may take another request.
    pub(crate) async fn send<B>(
        mut self,
        request: Request<B>,
        home: Arc<dyn Reuse>,
    ) -> Result<Response<Answer>, Failed<B>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = request.method().clone();
        let (head, framing) = match encode_head(&request) {
            Ok(encoded) => encoded,
            Err(error) => {
                return Err(Failed {
                    error,
                    unsent: Some(request),
                });
            }
        };
        let mut body = Some(request.into_body());
        let mut outgoing = Outgoing {
            pending: std::collections::VecDeque::new(),
            pending_bytes: 0,
            framing,
            done: false,
        };
        // The head, and what the body has ready, go in one write.
        outgoing.push(head.freeze());
        let sent =
            std::future::poll_fn(|cx| self.poll_exchange(cx, &mut outgoing, &mut body, &method))
                .await;
        match sent {
            Ok((parts, decoder, keep_alive)) => {
                // A request whose body was not all written (Campaign answered before it ended)
                // leaves the connection in no state to take another.
                let reusable = keep_alive && outgoing.done && body.is_none();
                let answer = Answer {
                    conn: Some(self),
                    decoder,
                    reusable,
                    home: Some(home),
                    trailers: None,
                };
                let answer = if answer.decoder.is_done() {
                    answer.finished()
                } else {
                    answer
                };
                Ok(Response::from_parts(parts, answer))
            }
            Err(error) => Err(Failed {
                error,
                unsent: None,
            }),
        }
    }

    /// Writes what is pending, pulls more of the body while the socket takes it, and reads
    /// the answer's head as soon as Campaign sends it.
    #[allow(clippy::type_complexity)]
    fn poll_exchange<B>(
        &mut self,
        cx: &mut Context<'_>,
        outgoing: &mut Outgoing,
        body: &mut Option<B>,
        method: &Method,
    ) -> Poll<Result<(http::response::Parts, Decoder, bool), Error>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // The write side: as long as the socket takes what there is, and the body gives more.
        loop {
            while let Some(ready) = body.as_mut() {
                if outgoing.pending_bytes >= GATHER_AT_MOST {
                    break;
                }
                match Pin::new(ready).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            outgoing.data(data)?;
                        }
                    }
                    Poll::Ready(Some(Err(error))) => {
                        return Poll::Ready(Err(Error::Body(error.into())));
                    }
                    Poll::Ready(None) => {
                        outgoing.end()?;
                        *body = None;
                    }
                    Poll::Pending => break,
                }
            }
            if outgoing.pending.is_empty() {
                break;
            }
            match outgoing.poll_write(&mut self.io, cx) {
                Poll::Ready(Ok(())) => {}
                // Campaign may have answered and closed: its answer counts, if it came.
                Poll::Ready(Err(error)) => {
                    return match self.poll_head(cx, method) {
                        Poll::Ready(Ok(parsed)) => {
                            outgoing.pending.clear();
                            *body = None;
                            Poll::Ready(Ok(parsed))
                        }
                        _ => Poll::Ready(Err(Error::Io(error))),
                    };
                }
                Poll::Pending => break,
            }
        }
        if outgoing.pending.is_empty() && body.is_none() {
            outgoing.done = true;
        }
        // The read side: the answer's head, whenever it comes.
        let parsed = ready!(self.poll_head(cx, method))?;
        if !outgoing.done {
            // Answered before the request ended: the rest of it is not sent.
            *body = None;
        }
        Poll::Ready(Ok(parsed))
    }

    /// Reads until the head of an answer (1xx ones skipped) is whole.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
    ) -> Poll<Result<(http::response::Parts, Decoder, bool), Error>> {
        loop {
            if !self.buf.is_empty() {
                if let Some(parsed) = parse_head(&mut self.buf, method, self.max_buf_size)? {
                    return Poll::Ready(Ok(parsed));
                }
            }
            if self.buf.len() >= self.max_buf_size {
                return Poll::Ready(Err(Error::TooLarge(self.max_buf_size)));
            }
            let read = ready!(self.poll_fill(cx, READ_AT_LEAST))?;
            if read == 0 {
                return Poll::Ready(Err(Error::Incomplete));
            }
        }
    }

    /// Reads what Campaign sent into the buffer, room for `at_least` made first: the count
    /// (0: the connection's end).
    fn poll_fill(&mut self, cx: &mut Context<'_>, at_least: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < at_least {
            self.buf.reserve(at_least);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// What is still to be written of a request.
struct Outgoing {
    pending: std::collections::VecDeque<Bytes>,
    pending_bytes: usize,
    framing: Framing,
    /// The whole request has been written.
    done: bool,
}

/// How a request's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: this many bytes still to come.
    Length(u64),
    Chunked,
}

impl Outgoing {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.pending_bytes += bytes.len();
            self.pending.push_back(bytes);
        }
    }

    fn data(&mut self, data: Bytes) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            Framing::Length(remaining) => {
                let length = data.len() as u64;
                if length > *remaining {
                    return Err(Error::BodyLength);
                }
                *remaining -= length;
                self.push(data);
            }
            Framing::Chunked => {
                self.push(Bytes::from(format!("{:X}\r\n", data.len())));
                self.push(data);
                self.push(Bytes::from_static(b"\r\n"));
            }
        }
        Ok(())
    }

    fn end(&mut self) -> Result<(), Error> {
        match self.framing {
            Framing::Length(0) => Ok(()),
            Framing::Length(_) => Err(Error::BodyLength),
            Framing::Chunked => {
                self.push(Bytes::from_static(b"0\r\n\r\n"));
                Ok(())
            }
        }
    }

    /// Writes what is pending, gathered; `Ready(Ok)` once all of it is written.
    fn poll_write(&mut self, io: &mut Transport, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written = if self.pending.len() == 1 || !io.is_write_vectored() {
                ready!(Pin::new(&mut *io).poll_write(cx, &self.pending[0]))?
            } else {
                let slices: Vec<io::IoSlice<'_>> = self
                    .pending
                    .iter()
                    .take(64)
                    .map(|b| io::IoSlice::new(b))
                    .collect();
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_bytes -= written;
            let mut left = written;
            while left > 0 {
                let first = &mut self.pending[0];
                if first.len() <= left {
                    left -= first.len();
                    self.pending.pop_front();
                } else {
                    first.advance(left);
                    left = 0;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A request's head as it is written, and how its body is framed; its headers are adjusted as
/// hyper's client does (`Transfer-Encoding` over `Content-Length`, a body of unknown length
/// chunked, one of known length given its `Content-Length`).
fn encode_head<B: Body>(request: &Request<B>) -> Result<(BytesMut, Framing), Error> {
    let headers = request.headers();
    let body = request.body();
    let te = headers.get_all(header::TRANSFER_ENCODING);
    let has_te = te.iter().next().is_some();
    let content_length = content_length(headers);
    let mut add_chunked_te = false;
    let mut set_length = None;
    let mut skip_content_length = false;
    let mut skip_te = false;
    let framing = if body.is_end_stream() {
        skip_te = true;
        Framing::Length(0)
    } else if has_te {
        skip_content_length = true;
        if !is_chunked(&te) {
            // hyper appends `chunked` to a `Transfer-Encoding` that does not end with it.
            add_chunked_te = true;
        }
        Framing::Chunked
    } else if let Some(length) = content_length {
        Framing::Length(length)
    } else if let Some(exact) = body.size_hint().exact() {
        set_length = Some(exact);
        Framing::Length(exact)
    } else if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::CONNECT
    ) {
        Framing::Length(0)
    } else {
        skip_content_length = true;
        Framing::Chunked
    };
    let mut head = BytesMut::with_capacity(64 + headers.len() * 32);
    head.put_slice(request.method().as_str().as_bytes());
    head.put_u8(b' ');
    let uri = request.uri();
    match uri.path_and_query() {
        Some(target) => head.put_slice(target.as_str().as_bytes()),
        None => head.put_u8(b'/'),
    }
    head.put_slice(b" HTTP/1.1\r\n");
    let mut last_te = None;
    if add_chunked_te {
        last_te = te.iter().next_back();
    }
    for (name, value) in headers {
        if (skip_content_length && name == header::CONTENT_LENGTH)
            || (skip_te && name == header::TRANSFER_ENCODING)
        {
            continue;
        }
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        if add_chunked_te && name == header::TRANSFER_ENCODING && Some(value) == last_te {
            head.put_slice(b", chunked");
        }
        head.put_slice(b"\r\n");
    }
    if framing == Framing::Chunked && !has_te {
        head.put_slice(b"transfer-encoding: chunked\r\n");
    }
    if let Some(length) = set_length {
        head.put_slice(b"content-length: ");
        head.put_slice(length.to_string().as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"\r\n");
    Ok((head, framing))
}

/// Whether the last of the `Transfer-Encoding` codings is `chunked`.
fn is_chunked(values: &http::header::GetAll<'_, HeaderValue>) -> bool {
    values
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.rsplit(',').next())
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

/// The `Content-Length`, when every field and every item of it names the same number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.to_str().ok()?.split(',') {
            let n = digits(item.trim().as_bytes())?;
            match length {
                None => length = Some(n),
                Some(m) if m == n => {}
                Some(_) => return None,
            }
        }
    }
    length
}

fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// Whether a `Connection` field names `token`.
fn connection_has(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Parses the head at the start of `buf` (taken off it when whole): the answer's parts, how
/// its body is framed, and whether the connection stays open after it. `None`: more to read
/// (an informational answer, 1xx, is taken off and skipped).
fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    max_head: usize,
) -> Result<Option<(http::response::Parts, Decoder, bool)>, Error> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut fields);
        let length = match response.parse(buf) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Parse("too many header fields"));
            }
            Err(httparse::Error::Version) => return Err(Error::Parse("not HTTP/1.x")),
            Err(httparse::Error::Status) => return Err(Error::Parse("a malformed status code")),
            Err(_) => return Err(Error::Parse("a malformed head")),
        };
        if length > max_head {
            return Err(Error::TooLarge(max_head));
        }
        let code = response.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| Error::Parse("a status code out of range"))?;
        let version = if response.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        // Header values share the buffer's bytes.
        let spans: Vec<(usize, usize, usize, usize)> = response
            .headers
            .iter()
            .map(|field| {
                let base = buf.as_ptr() as usize;
                let name = field.name.as_ptr() as usize - base;
                let value = field.value.as_ptr() as usize - base;
                (name, field.name.len(), value, field.value.len())
            })
            .collect();
        let head = buf.split_to(length).freeze();
        let mut headers = HeaderMap::with_capacity(spans.len());
        let mut keep_alive = version == Version::HTTP_11;
        let mut closing = false;
        for (name, name_length, value, value_length) in spans {
            let name = HeaderName::from_bytes(&head[name..name + name_length])
                .map_err(|_| Error::Parse("a malformed field name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_length))
                .map_err(|_| Error::Parse("a malformed field value"))?;
            if name == header::CONNECTION {
                if closing || connection_has(&value, "close") {
                    closing = true;
                    keep_alive = false;
                } else if !keep_alive {
                    keep_alive = connection_has(&value, "keep-alive");
                }
            }
            headers.append(name, value);
        }
        if headers.contains_key(header::TRANSFER_ENCODING) {
            headers.remove(header::CONTENT_LENGTH);
        }
        let decoder = match code {
            101 => return Err(Error::Parse("an upgrade (101), which was not asked for")),
            100..=199 => continue,
            204 | 304 => Decoder::Length(0),
            _ if *method == Method::HEAD => Decoder::Length(0),
            _ if headers.contains_key(header::TRANSFER_ENCODING) => {
                if version == Version::HTTP_10 {
                    return Err(Error::Parse("Transfer-Encoding in HTTP/1.0"));
                }
                if is_chunked(&headers.get_all(header::TRANSFER_ENCODING)) {
                    Decoder::Chunked(Chunked::default())
                } else {
                    Decoder::Close
                }
            }
            _ => match content_length(&headers) {
                Some(length) if length <= u64::MAX - 2 => Decoder::Length(length),
                Some(_) => return Err(Error::TooLarge(max_head)),
                None if headers.contains_key(header::CONTENT_LENGTH) => {
                    return Err(Error::Parse("an invalid Content-Length"));
                }
                None => Decoder::Close,
            },
        };
        if matches!(decoder, Decoder::Close) {
            keep_alive = false;
        }
        let mut parts = Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some((parts, decoder, keep_alive)));
    }
}

/// How the rest of an answer's body is read.
#[derive(Debug)]
pub(crate) enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunked),
    /// Up to the connection's end.
    Close,
    /// Read to its end.
    Done,
}

impl Decoder {
    fn is_done(&self) -> bool {
        matches!(self, Decoder::Done | Decoder::Length(0))
    }
}

/// Where a chunked body's reading is (hyper's states, RFC 9112 §7.1).
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    /// The size of the chunk being read, or what is left of it.
    size: u64,
    /// Bytes of chunk extensions so far.
    extensions: u64,
    /// The trailer section, as it comes.
    trailers: Option<BytesMut>,
    trailer_fields: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Body,
    BodyCr,
    BodyLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    End,
}

/// What the chunked decoder found in the buffer.
enum Step {
    /// Data of a chunk.
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The last chunk and the trailers are read: the trailer fields, if any.
    End(Option<HeaderMap>),
}

fn invalid(what: &'static str) -> Error {
    Error::Parse(what)
}

impl Chunked {
    /// Goes through `buf`, as far as it holds.
    fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        use ChunkState::{
            Body, BodyCr, BodyLf, End, EndCr, EndLf, Extension, Size, SizeLf, SizeLws, Start,
            Trailer, TrailerLf,
        };
        loop {
            if self.state == Body {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let take = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                let data = buf.split_to(take).freeze();
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = BodyCr;
                }
                return Ok(Step::Data(data));
            }
            if self.state == End {
                let trailers = match self.trailers.take() {
                    None => None,
                    Some(section) => Some(decode_trailers(&section, self.trailer_fields)?),
                };
                return Ok(Step::End(trailers));
            }
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let byte = buf[0];
            buf.advance(1);
            self.state = match (self.state, byte) {
                (Start | Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    let digit = match byte {
                        b'0'..=b'9' => byte - b'0',
                        b'a'..=b'f' => byte - b'a' + 10,
                        _ => byte - b'A' + 10,
                    };
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|n| n.checked_add(u64::from(digit)))
                        .ok_or_else(|| invalid("a chunk size that overflows"))?;
                    Size
                }
                (Start, _) => return Err(invalid("a chunk size line without a digit")),
                (Size | SizeLws, b'\t' | b' ') => SizeLws,
                (Size | SizeLws, b';') => Extension,
                (Size | SizeLws, b'\r') => SizeLf,
                (Size, _) => return Err(invalid("a chunk size line with an invalid size")),
                (SizeLws, _) => return Err(invalid("a chunk size line with invalid white space")),
                (Extension, b'\r') => SizeLf,
                (Extension, b'\n') => return Err(invalid("a chunk extension with a newline")),
                (Extension, _) => {
                    self.extensions += 1;
                    if self.extensions >= MAX_CHUNK_EXTENSIONS {
                        return Err(invalid("chunk extensions over the limit"));
                    }
                    Extension
                }
                (SizeLf, b'\n') if self.size == 0 => EndCr,
                (SizeLf, b'\n') => Body,
                (SizeLf, _) => return Err(invalid("a chunk size line without its LF")),
                (BodyCr, b'\r') => BodyLf,
                (BodyCr, _) => return Err(invalid("a chunk without its CR")),
                (BodyLf, b'\n') => {
                    self.size = 0;
                    Start
                }
                (BodyLf, _) => return Err(invalid("a chunk without its LF")),
                (EndCr, b'\r') => {
                    self.keep_trailer_byte(byte)?;
                    EndLf
                }
                (EndCr, b'\n') => return Err(invalid("a trailer line ending in a bare LF")),
                (EndCr, _) => {
                    self.trailers
                        .get_or_insert_with(|| BytesMut::with_capacity(64));
                    self.keep_trailer_byte(byte)?;
                    Trailer
                }
                (Trailer, b'\r') => {
                    self.keep_trailer_byte(byte)?;
                    TrailerLf
                }
                (Trailer, b'\n') => return Err(invalid("a trailer line ending in a bare LF")),
                (Trailer, _) => {
                    self.keep_trailer_byte(byte)?;
                    Trailer
                }
                (TrailerLf, b'\n') => {
                    if self.trailer_fields >= MAX_HEADERS {
                        return Err(invalid("too many trailer fields"));
                    }
                    self.trailer_fields += 1;
                    self.keep_trailer_byte(byte)?;
                    EndCr
                }
                (TrailerLf, _) => return Err(invalid("a trailer line without its LF")),
                (EndLf, b'\n') => {
                    self.keep_trailer_byte(byte)?;
                    End
                }
                (EndLf, _) => return Err(invalid("the last chunk without its LF")),
                (Body | End, _) => unreachable!("handled above"),
            };
        }
    }

    fn keep_trailer_byte(&mut self, byte: u8) -> Result<(), Error> {
        if let Some(section) = &mut self.trailers {
            if section.len() >= MAX_TRAILER_BYTES {
                return Err(invalid("trailers over the limit"));
            }
            section.put_u8(byte);
        }
        Ok(())
    }
}

/// The trailer section's fields.
fn decode_trailers(section: &[u8], count: usize) -> Result<HeaderMap, Error> {
    let mut fields = vec![httparse::EMPTY_HEADER; count.max(1)];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            let mut trailers = HeaderMap::with_capacity(fields.len());
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| invalid("a malformed trailer name"))?;
                let value = HeaderValue::from_bytes(field.value)
                    .map_err(|_| invalid("a malformed trailer value"))?;
                trailers.append(name, value);
            }
            Ok(trailers)
        }
        Ok(httparse::Status::Partial) => Err(invalid("a partial trailer section")),
        Err(_) => Err(invalid("a malformed trailer section")),
    }
}

/// The body of Campaign's answer, read off its connection as the caller takes it. Read to its
/// end, it gives the connection back (when it may take another request); dropped before, it
/// closes it.
pub(crate) struct Answer {
    conn: Option<Conn>,
    decoder: Decoder,
    /// The connection may take another request once this answer is read.
    reusable: bool,
    home: Option<Arc<dyn Reuse>>,
    /// Trailers read with the last chunk, handed on after the data (boxed: they are rare).
    trailers: Option<Box<HeaderMap>>,
}

impl Answer {
    /// The answer is read: the connection goes back, if it may.
    fn finished(mut self) -> Answer {
        self.finish();
        self
    }

    fn finish(&mut self) {
        self.decoder = Decoder::Done;
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take())
            && self.reusable
            && conn.buf.is_empty()
        {
            home.give_back(conn);
        }
    }

    /// The connection closes with this answer (it ended with the connection, or broke).
    fn close(&mut self) {
        self.decoder = Decoder::Done;
        self.conn = None;
        self.home = None;
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        loop {
            if matches!(this.decoder, Decoder::Done) {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))));
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.decoder {
                Decoder::Length(0) => {
                    this.finish();
                    continue;
                }
                Decoder::Length(remaining) => {
                    if !conn.buf.is_empty() {
                        let take = usize::try_from(*remaining)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        *remaining -= take as u64;
                        if *remaining == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    let want = usize::try_from(*remaining)
                        .unwrap_or(READ_AT_MOST)
                        .clamp(1, READ_AT_MOST);
                    match ready!(conn.poll_fill(cx, want)) {
                        Ok(0) => {
                            this.close();
                            return Poll::Ready(Some(Err(Error::Incomplete)));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            this.close();
                            return Poll::Ready(Some(Err(Error::Io(error))));
                        }
                    }
                }
                Decoder::Chunked(chunked) => match chunked.step(&mut conn.buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::End(trailers)) => {
                        this.trailers = trailers.map(Box::new);
                        this.finish();
                    }
                    Ok(Step::More) => match ready!(conn.poll_fill(cx, READ_AT_LEAST)) {
                        Ok(0) => {
                            this.close();
                            return Poll::Ready(Some(Err(Error::Incomplete)));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            this.close();
                            return Poll::Ready(Some(Err(Error::Io(error))));
                        }
                    },
                    Err(error) => {
                        this.close();
                        return Poll::Ready(Some(Err(error)));
                    }
                },
                Decoder::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(conn.poll_fill(cx, READ_AT_MOST)) {
                        Ok(0) => this.close(),
                        Ok(_) => {}
                        Err(error) => {
                            this.close();
                            return Poll::Ready(Some(Err(Error::Io(error))));
                        }
                    }
                }
                Decoder::Done => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decoder, Decoder::Done) && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(remaining) => SizeHint::with_exact(remaining),
            Decoder::Done if self.trailers.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
