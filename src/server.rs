//! Listeners, the accept loop and graceful shutdown. The same loop serves the proxy, the admin
//! listener and the stand-ins of `imsbridge demo`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::body::MAX_BUF_SIZE;
use crate::config::Limits;
use crate::tls::CertIdentity;

/// A TLS client gets this long to finish its handshake.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts of a listener's connections.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    accepted: AtomicU64,
    open: AtomicI64,
    refused_per_ip: AtomicU64,
    /// Accepted by each worker (`workers.rs`), by its index: how the kernel spread them.
    by_worker: Mutex<Vec<u64>>,
}

impl Connections {
    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because their address had `max_connections_per_ip` open.
    pub(crate) fn refused_per_ip(&self) -> u64 {
        self.refused_per_ip.load(Ordering::Relaxed)
    }

    /// Connections accepted by each worker so far.
    pub(crate) fn by_worker(&self) -> Vec<u64> {
        self.by_worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn accept(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let worker = crate::workers::index();
        let mut by_worker = self
            .by_worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if by_worker.len() <= worker {
            by_worker.resize(worker + 1, 0);
        }
        by_worker[worker] += 1;
    }
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    /// What its client certificate names, when the listener asks for one (mTLS).
    pub cert: Option<Arc<CertIdentity>>,
    /// The address as `X-Forwarded-For` names it, written once per connection.
    pub forwarded_for: HeaderValue,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr, cert: Option<Arc<CertIdentity>>) -> Peer {
        let forwarded_for = HeaderValue::try_from(addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Peer {
            addr,
            cert,
            forwarded_for,
        }
    }
}

/// Serves HTTP/1.1 and HTTP/2 (h2c, or ALPN over TLS) on `listener` until `shutdown`
/// completes. With `tls`, every connection takes the acceptor current when it arrives (a
/// reload swaps certificates without a restart).
/// Then it stops accepting and lets open connections finish their requests for up to
/// the shutdown grace of `limits`.
///
/// What a client may hold (`limits`): `max_connections` are served at once, beyond which new
/// ones wait in the kernel's queue, and `max_connections_per_ip` from one address, beyond which
/// new ones are closed at once. A connection must send its first byte, and an HTTP/1.1 request
/// its head, within `header_read_timeout`; a connection with no request open for that long is
/// closed (gracefully: an HTTP/2 client gets a GOAWAY, and is dropped if still there after as
/// long again). HTTP/2 allows `http2_max_streams` streams at once, and a peer that sent nothing
/// for `header_read_timeout` is pinged: no answer within as long, and the connection is closed.
pub(crate) async fn serve<H, F, B>(
    listener: TcpListener,
    tls: Option<watch::Receiver<TlsAcceptor>>,
    connections: Arc<Connections>,
    limits: Limits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Arc<Peer>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let admission = Admission::new(&limits);
    serve_admitted(
        listener,
        tls,
        connections,
        &admission,
        limits,
        handler,
        shutdown,
    )
    .await;
}

/// What a listener's connections take a place in: `max_connections` and
/// `max_connections_per_ip`. One for the workers of a process together, so that the limits
/// are the process's.
#[derive(Clone)]
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    max_connections: usize,
}

impl Admission {
    pub(crate) fn new(limits: &Limits) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            per_ip: Arc::new(PerIp::new(limits.max_connections_per_ip)),
            max_connections: limits.max_connections,
        }
    }
}

/// [`serve`], its connections counted in `admission` (shared with other listeners that serve
/// the same address: the workers). At shutdown it waits for every connection `admission`
/// counts, its own and the other listeners' alike, up to the grace.
pub(crate) async fn serve_admitted<H, F, B>(
    listener: TcpListener,
    tls: Option<watch::Receiver<TlsAcceptor>>,
    connections: Arc<Connections>,
    admission: &Admission,
    limits: Limits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Arc<Peer>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BUF_SIZE)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        // What a client may send ahead of the handlers, which hyper holds: bounded per
        // connection, outside the prefix budget.
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let (stop, stopping) = watch::channel(false);
    let slots = admission.slots.clone();
    let per_ip = admission.per_ip.clone();
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        connections.accept();
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let stopping = stopping.clone();
        let acceptor = tls.as_ref().map(|tls| tls.borrow().clone());
        let connections = connections.clone();
        let per_ip = per_ip.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            // Behind a balancer that says who the client is, the client is who it says.
            let peer = if limits.proxy_protocol {
                let read = proxy_header(&mut stream);
                match tokio::time::timeout(limits.header_read_timeout, read).await {
                    Ok(Ok(client)) => client.unwrap_or(peer),
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "closed: no PROXY protocol header");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "closed: no PROXY protocol header in time");
                        return;
                    }
                }
            } else {
                peer
            };
            let Some(ip_slot) = per_ip.enter(peer.ip()) else {
                connections.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "closed: its address has max_connections_per_ip open");
                return;
            };
            connections.open.fetch_add(1, Ordering::Relaxed);
            // hyper's own header timeout starts once a request begins; the wait for the very
            // first byte (protocol detection, or the TLS hello) needs ours.
            let stream = FirstByteDeadline::new(stream, limits.header_read_timeout);
            let activity = Arc::new(Activity::default());
            // Every request of the connection goes to the handler with its peer, and counts as
            // activity until its answer is done with.
            let service = |peer: Arc<Peer>| {
                let activity = activity.clone();
                hyper::service::service_fn(move |request| {
                    let open = activity.open();
                    let response = handler(peer.clone(), request);
                    async move {
                        let response = response.await.map(|body| Tracked { body, _open: open });
                        Ok::<_, Infallible>(response)
                    }
                })
            };
            let idle = limits.header_read_timeout;
            let result = match acceptor {
                None => {
                    let peer = Arc::new(Peer::new(peer, None));
                    let connection = builder.serve_connection(TokioIo::new(stream), service(peer));
                    watch_connection(
                        connection,
                        hyper_util::server::conn::auto::Connection::graceful_shutdown,
                        &activity,
                        idle,
                        stopping,
                    )
                    .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|certs| certs.first())
                                .and_then(|cert| CertIdentity::from_der(cert))
                                .map(Arc::new);
                            let peer = Arc::new(Peer::new(peer, cert));
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service(peer));
                            watch_connection(
                                connection,
                                hyper_util::server::conn::auto::Connection::graceful_shutdown,
                                &activity,
                                idle,
                                stopping,
                            )
                            .await
                        }
                        Ok(Err(error)) => Err(error.into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            connections.open.fetch_sub(1, Ordering::Relaxed);
            drop(ip_slot);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let grace = limits.shutdown_grace;
    // Every connection holds a slot until it ends: all of them back means all ended.
    let all = u32::try_from(admission.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("requests still in flight after {grace:?}; closing them");
        }
    }
}

/// Flow-control windows of HTTP/2: the data a client may send before the proxy has read it,
/// which hyper holds meanwhile. A connection holds as much unread data as an HTTP/1.1 one may
/// (`MAX_BUF_SIZE`), a stream at most a prefix's worth. (hyper's 1 MiB each let 24 connections
/// of stalled streams hold 20 MB beside the prefix budget.) A stream still moves 64 KiB per
/// round trip: 300 MB/s at 0.2 ms, 2 MB/s at 30 ms.
pub(crate) const HTTP2_CONNECTION_WINDOW: u32 = MAX_BUF_SIZE as u32;
pub(crate) const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;

type ConnectionResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Drives `connection` to its end. It is shut down gracefully (`shut`) when the listener stops,
/// or once no request has been open for `idle`; a peer that then keeps it open with no request
/// for as long again is dropped.
async fn watch_connection<C>(
    connection: C,
    shut: impl Fn(Pin<&mut C>),
    activity: &Activity,
    idle: Duration,
    mut stopping: watch::Receiver<bool>,
) -> ConnectionResult
where
    C: Future<Output = ConnectionResult>,
{
    let mut connection = pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            _ = stopping.wait_for(|stop| *stop), if !closing => {
                closing = true;
                shut(connection.as_mut());
            }
            () = activity.idle_for(idle) => {
                if closing {
                    return Err("no request open after a graceful shutdown".into());
                }
                closing = true;
                shut(connection.as_mut());
            }
        }
    }
}

/// The signature that starts a PROXY protocol v2 header.
const PROXY_V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest PROXY protocol v1 header, CRLF included.
const PROXY_V1_MAX: usize = 107;

/// Reads the PROXY protocol header (v1 or v2) that starts `stream`, and not a byte more: the
/// client's address it names, `None` for a balancer's own check (v2 LOCAL, v1 UNKNOWN). The
/// header's syntax is the `ppp` crate's to judge.
async fn proxy_header(stream: &mut tokio::net::TcpStream) -> io::Result<Option<SocketAddr>> {
    use tokio::io::AsyncReadExt;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    // 12 bytes: v2's signature, or the start of the shortest v1 header (`PROXY UNKNOWN\r\n`).
    let mut header = vec![0u8; 12];
    stream.read_exact(&mut header).await?;
    if header == PROXY_V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        stream.read_exact(&mut fixed).await?;
        let length = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        header.extend_from_slice(&fixed);
        header.resize(16 + length, 0);
        stream.read_exact(&mut header[16..]).await?;
    } else if header.starts_with(b"PROXY ") {
        while !header.ends_with(b"\r\n") {
            if header.len() >= PROXY_V1_MAX {
                return Err(invalid("PROXY v1 header too long"));
            }
            header.push(stream.read_u8().await?);
        }
    } else {
        return Err(invalid("not a PROXY protocol header"));
    }
    let source = |ip: std::net::IpAddr, port: u16| Some(SocketAddr::new(ip, port));
    match ppp::HeaderResult::parse(&header) {
        ppp::HeaderResult::V1(Ok(parsed)) => Ok(match parsed.addresses {
            ppp::v1::Addresses::Tcp4(a) => source(a.source_address.into(), a.source_port),
            ppp::v1::Addresses::Tcp6(a) => source(a.source_address.into(), a.source_port),
            ppp::v1::Addresses::Unknown => None,
        }),
        ppp::HeaderResult::V2(Ok(parsed)) => Ok(match (parsed.command, parsed.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => source(a.source_address.into(), a.source_port),
            (_, ppp::v2::Addresses::IPv6(a)) => source(a.source_address.into(), a.source_port),
            (_, ppp::v2::Addresses::Unix(_) | ppp::v2::Addresses::Unspecified) => None,
        }),
        _ => Err(invalid("malformed PROXY protocol header")),
    }
}

/// How many requests of one connection are open, and since when none has been. The request
/// path only counts and, when the last one ends, notes the time; the connection's own task
/// looks at both when its timer fires, so that a request wakes nothing.
#[derive(Debug)]
struct Activity {
    open: AtomicUsize,
    /// Milliseconds from `born` to when a request last ended (0: none yet).
    quiet_since: AtomicU64,
    born: tokio::time::Instant,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            open: AtomicUsize::new(0),
            quiet_since: AtomicU64::new(0),
            born: tokio::time::Instant::now(),
        }
    }
}

impl Activity {
    /// A request begins; it ends when the guard is dropped.
    fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    /// Completes once no request has been open for `limit`.
    async fn idle_for(&self, limit: Duration) {
        let mut check = tokio::time::Instant::now() + limit;
        loop {
            tokio::time::sleep_until(check).await;
            let now = tokio::time::Instant::now();
            if self.open.load(Ordering::Acquire) > 0 {
                check = now + limit;
                continue;
            }
            let quiet = Duration::from_millis(self.quiet_since.load(Ordering::Acquire));
            let until = self.born + quiet + limit;
            if now >= until {
                return;
            }
            check = until;
        }
    }
}

/// An open request of a connection.
struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        let activity = &self.0;
        // Noted by every request that ends, before the count drops: a timer that sees none
        // open sees a time no earlier than the last end (give or take concurrent ones).
        let since = activity.born.elapsed().as_millis();
        activity
            .quiet_since
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Release);
        activity.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body, which keeps its request open until it is done with.
struct Tracked<B> {
    body: B,
    _open: Open,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Connections open per client address, within a limit.
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
    limit: usize,
}

impl PerIp {
    fn new(limit: usize) -> PerIp {
        PerIp {
            open: Mutex::default(),
            limit,
        }
    }

    /// A slot for one more connection from `ip`, if it has fewer than the limit open.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            ip,
        })
    }
}

/// One connection's place in its address's count.
struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .per_ip
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A connection that must send its first byte within a deadline, or be dropped; after that,
/// it is the connection itself.
struct FirstByteDeadline<I> {
    io: I,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> FirstByteDeadline<I> {
    fn new(io: I, limit: Duration) -> FirstByteDeadline<I> {
        FirstByteDeadline {
            io,
            // Boxed: a `Sleep` cannot move once polled, and the connection must.
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if read.is_ready() && buf.filled().len() > before {
            self.deadline = None;
        } else if read.is_pending()
            && let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request on a new connection in time",
            )));
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
