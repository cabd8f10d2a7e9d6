//! Campaign's keep-alive connections, on hyper's HTTP/1.1 client connection.
//!
//! A connection goes back to the pool when the body of Campaign's answer has been read to its
//! end ([`CampaignBody`]); an answer abandoned half-way closes its connection with it. The pool
//! hands out the most recently used connection first, keeps at most [`MAX_IDLE`], and forgets
//! those idle for longer than [`IDLE_TIMEOUT`] (Campaign may have closed them by then).
//!
//! hyper-util's pooled client does the same with more machinery per request (a keyed map, a
//! checkout future, a task spawned to wait for each connection to be ready again), which
//! showed in the profile of a small call (`bench/README.md`).

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower_service::Service;

use super::UpstreamError;
use crate::body::{CampaignBody, Lease, Reuse, Sender, UpstreamBody};
use crate::connect::{EgressConnector, error_chain};

/// Idle connections are closed after this; Campaign's own keep-alive is usually longer.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle connections are kept; more in use at once is fine.
pub(super) const MAX_IDLE: usize = 512;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The connections to one Campaign address.
pub(super) struct Pool {
    connector: HttpsConnector<EgressConnector>,
    /// What the connector dials: Campaign's scheme and authority.
    target: Uri,
    /// Bound on a new connection: TCP, a proxy's `CONNECT` and the TLS handshake together.
    connect_timeout: Duration,
    /// The most at a time hyper buffers per connection, each way.
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
    fn give_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
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
            sender,
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

    /// Sends `request` (its URI in origin form) on an idle connection, or a new one. A pooled
    /// connection that turns out closed before the request went out is replaced, and the
    /// request sent again: nothing of it reached Campaign. When a new connection cannot be
    /// made, or closes before the request goes out, the request comes back with the error.
    pub(super) fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Response<CampaignBody>, Failed>> + '_ {
        // Not an `async fn` of its own: a future around the one below would be one more move
        // of the request on every call.
        self.send_from(None, request)
    }

    /// [`Pool::send`], trying `pooled` first (a connection already taken from the pool).
    async fn send_from(
        &self,
        mut pooled: Option<Sender>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<CampaignBody>, Failed> {
        loop {
            let (mut sender, reused) = match pooled.take().or_else(|| self.checkout()) {
                Some(sender) => (sender, true),
                // Boxed: connecting is the rare case, and its future would double the size of
                // every request's.
                None => match Box::pin(self.connect_or_wait()).await {
                    Ok(connected) => connected,
                    Err(error) => return Err(Failed::unsent(error, request)),
                },
            };
            // A connection back from the pool may still be finishing its last answer.
            if let Err(error) = sender.ready().await {
                if reused {
                    continue;
                }
                let error = UpstreamError::Unreachable(error_chain(&error));
                return Err(Failed::unsent(error, request));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease::new(sender, self.shared().clone());
                    return Ok(response.map(|body| CampaignBody::new(body, lease)));
                }
                Err(mut error) => match error.take_message() {
                    // Closed before the request went out: nothing reached Campaign.
                    Some(unsent) if reused => request = unsent,
                    Some(unsent) => {
                        let error = UpstreamError::from_hyper(&error.into_error());
                        return Err(Failed::unsent(error, unsent));
                    }
                    None => {
                        return Err(Failed {
                            error: UpstreamError::from_hyper(&error.into_error()),
                            unsent: None,
                        });
                    }
                },
            }
        }
    }

    /// The most recently returned connection that is still open and not too old.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self
            .shared()
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(Idle { sender, since }) = idle.pop_back() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    /// A new connection, or one another request gives back first: in a burst, a connection
    /// freed in a millisecond beats a handshake with a Campaign whose accept queue is full.
    async fn connect_or_wait(&self) -> Result<(Sender, bool), UpstreamError> {
        let connect = self.connect();
        let mut connect = pin!(connect);
        loop {
            let released = self.shared().released.notified();
            tokio::select! {
                biased;
                connected = &mut connect => return Ok((connected?, false)),
                () = released => {
                    if let Some(sender) = self.checkout() {
                        return Ok((sender, true));
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<Sender, UpstreamError> {
        let mut connector = self.connector.clone();
        let io = tokio::time::timeout(self.connect_timeout, connector.call(self.target.clone()))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.connect_timeout))?
            .map_err(|error| UpstreamError::Unreachable(error_chain(&*error)))?;
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(self.max_buf_size)
            .handshake(io)
            .await
            .map_err(|error| UpstreamError::Unreachable(error_chain(&error)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection to Campaign ended with an error");
            }
        });
        Ok(sender)
    }

    /// Connections idle in the pool now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.shared().idle.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests;
