//! Campaign's keep-alive connections, each an HTTP/1.1 connection of `h1.rs`.
//!
//! A connection goes back to the pool when the body of Campaign's answer has been read to its
//! end ([`CampaignBody`]) and HTTP allows another request on it; an answer abandoned half-way
//! closes its connection with it. The pool hands out the most recently used connection first
//! (one Campaign has closed meanwhile, or sent something unasked on, is dropped then), keeps
//! at most [`MAX_IDLE`], and forgets those idle for longer than [`IDLE_TIMEOUT`]. Each worker
//! has a pool of its own: a connection is driven by the runtime that made it.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower_service::Service;

use super::UpstreamError;
use crate::body::{CampaignBody, UpstreamBody};
use crate::connect::{EgressConnector, error_chain};
use crate::h1::{Conn, Reuse, Transport};

/// Idle connections are closed after this; Campaign's own keep-alive is usually longer.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle connections are kept; more in use at once is fine.
pub(super) const MAX_IDLE: usize = 512;

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The connections to one Campaign address.
pub(super) struct Pool {
    connector: HttpsConnector<EgressConnector>,
    /// What the connector dials: Campaign's scheme and authority.
    target: Uri,
    /// Bound on a new connection: TCP, a proxy's `CONNECT` and the TLS handshake together.
    connect_timeout: Duration,
    /// The most an answer's head may take, and a connection buffer.
    max_buf_size: usize,
    /// A pool per worker: a connection is driven by the runtime of the worker that made it,
    /// and only that worker's requests use it.
    workers: Box<[Arc<Shared>]>,
}

/// A request the pool could not get an answer to.
pub(super) struct Failed {
    pub error: UpstreamError,
    /// The request, when none of it went out: it may go to another node.
    pub unsent: Option<Request<UpstreamBody>>,
}

impl Failed {
    fn unsent(error: UpstreamError, request: Request<UpstreamBody>) -> Failed {
        Failed {
            error,
            unsent: Some(request),
        }
    }
}

/// What the pool shares with the connections out of it.
#[derive(Default)]
struct Shared {
    /// Oldest first: connections are taken from the back, and expire from the front.
    idle: Mutex<VecDeque<Idle>>,
    /// Told when a connection comes back.
    released: Notify,
}

impl Reuse for Shared {
    fn give_back(&self, conn: Conn) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while idle
            .front()
            .is_some_and(|oldest| oldest.since.elapsed() >= IDLE_TIMEOUT)
            || idle.len() >= MAX_IDLE
        {
            idle.pop_front();
        }
        idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        self.released.notify_one();
    }
}

impl Pool {
    pub(super) fn new(
        connector: HttpsConnector<EgressConnector>,
        target: Uri,
        connect_timeout: Duration,
        max_buf_size: usize,
        workers: usize,
    ) -> Pool {
        Pool {
            connector,
            target,
            connect_timeout,
            max_buf_size,
            workers: (0..workers.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    /// The pool of the worker running this thread.
    fn shared(&self) -> &Arc<Shared> {
        &self.workers[crate::workers::index() % self.workers.len()]
    }

    /// Sends `request` (its URI in origin form) on an idle connection, or a new one. When a
    /// new connection cannot be made, the request comes back with the error: nothing of it
    /// reached Campaign.
    pub(super) async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<CampaignBody>, Failed> {
        let conn = match self.checkout() {
            Some(conn) => conn,
            // Boxed: connecting is the rare case, and its future would double the size of
            // every request's.
            None => match Box::pin(self.connect_or_wait()).await {
                Ok(conn) => conn,
                Err(error) => return Err(Failed::unsent(error, request)),
            },
        };
        let home: Arc<dyn Reuse> = self.shared().clone();
        conn.send(request, home).await.map_err(|failed| Failed {
            error: UpstreamError::from_h1(failed.error),
            unsent: failed.unsent,
        })
    }

    /// The most recently returned connection that is still open, not too old, and has not
    /// been sent anything since its last answer.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self
            .shared()
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(Idle { mut conn, since }) = idle.pop_back() {
            if since.elapsed() < IDLE_TIMEOUT && conn.usable() {
                return Some(conn);
            }
        }
        None
    }

    /// A new connection, or one another request gives back first: in a burst, a connection
    /// freed in a millisecond beats a handshake with a Campaign whose accept queue is full.
    async fn connect_or_wait(&self) -> Result<Conn, UpstreamError> {
        let connect = self.connect();
        let mut connect = pin!(connect);
        loop {
            let released = self.shared().released.notified();
            tokio::select! {
                biased;
                connected = &mut connect => return connected,
                () = released => {
                    if let Some(conn) = self.checkout() {
                        return Ok(conn);
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let mut connector = self.connector.clone();
        let io = tokio::time::timeout(self.connect_timeout, connector.call(self.target.clone()))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.connect_timeout))?
            .map_err(|error| UpstreamError::Unreachable(error_chain(&*error)))?;
        Ok(Conn::new(Transport::from(io), self.max_buf_size))
    }

    /// Connections idle in the pool now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.shared().idle.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests;
