//! Listeners, the accept loop and graceful shutdown. The same loop serves the proxy, the admin
//! listener and the stand-ins of `imsbridge demo`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::body::MAX_BUF_SIZE;
use crate::config::Limits;

/// A TLS client gets this long to finish its handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts of a listener's connections.
#[derive(Debug, Default)]
pub struct Connections {
    accepted: AtomicU64,
    open: AtomicI64,
}

impl Connections {
    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// Who is at the other end of a connection.
#[derive(Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Subject of the client certificate, when the listener asks for one (mTLS).
    pub cert_subject: Option<Arc<str>>,
    /// The address as `X-Forwarded-For` names it, written once per connection.
    pub forwarded_for: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr, cert_subject: Option<Arc<str>>) -> Peer {
        let forwarded_for = HeaderValue::try_from(addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Peer {
            addr,
            cert_subject,
            forwarded_for,
        }
    }
}

/// Serves HTTP/1.1 and HTTP/2 (h2c, or ALPN over TLS) on `listener` until `shutdown`
/// completes. With `tls`, every connection takes the acceptor current when it arrives (a
/// reload swaps certificates without a restart).
/// Then it stops accepting and lets open connections finish their requests for up to
/// the shutdown grace of `limits`. At most `limits.max_connections` are served at once; an
/// HTTP/1.1 client gets `limits.header_read_timeout` to send its headers, which also closes
/// idle keep-alive connections.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    tls: Option<watch::Receiver<TlsAcceptor>>,
    connections: Arc<Connections>,
    limits: Limits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Arc<Peer>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
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
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        connections.accepted.fetch_add(1, Ordering::Relaxed);
        connections.open.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        // hyper's own header timeout starts once a request begins; the wait for the very first
        // byte (protocol detection, or the TLS hello) needs ours.
        let stream = FirstByteDeadline::new(stream, limits.header_read_timeout);
        let handler = handler.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|tls| tls.borrow().clone());
        let connections = connections.clone();
        tokio::spawn(async move {
            // Every request of the connection goes to the handler with its peer.
            let service = |peer: Arc<Peer>| {
                hyper::service::service_fn(move |request| {
                    let response = handler(peer.clone(), request);
                    async move { Ok::<_, Infallible>(response.await) }
                })
            };
            let result = match acceptor {
                None => {
                    let peer = Arc::new(Peer::new(peer, None));
                    let connection = builder.serve_connection(TokioIo::new(stream), service(peer));
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            let cert_subject = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|certs| certs.first())
                                .and_then(|cert| crate::tls::subject(cert))
                                .map(Arc::from);
                            let peer = Arc::new(Peer::new(peer, cert_subject));
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service(peer));
                            watcher.watch(connection.into_owned()).await
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
            drop(slot);
        });
    }
    drop(listener);
    let grace = limits.shutdown_grace;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("requests still in flight after {grace:?}; closing them");
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
