//! The caller's request body, which is read to its end (within bounds) even when the proxy
//! stops wanting it: a refused upload is answered at once, and its client must be able to read
//! that answer.
//!
//! A server that closes a connection with unread data in it makes the kernel send a reset, and
//! a client still writing its body then loses the answer (`curl: (55) Send failure: Broken
//! pipe`). So a [`Lingering`] body dropped before its end hands what remains to a task that
//! reads and discards it, for `server.linger` at most and `max_body_bytes` at most (nginx's
//! `lingering_close`). Dropped at its end, as it is on every request that went through, it
//! costs nothing.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// A request body drained within bounds when dropped before its end.
#[derive(Debug)]
pub(crate) struct Lingering {
    /// `None` once dropped.
    body: Option<Incoming>,
    linger: Duration,
    limit: u64,
}

impl Lingering {
    /// `body`, to be drained for `linger` and `limit` bytes at most if dropped unread.
    pub(crate) fn new(body: Incoming, linger: Duration, limit: u64) -> Lingering {
        Lingering {
            body: Some(body),
            linger,
            limit,
        }
    }
}

impl Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        if body.is_end_stream() || self.linger.is_zero() {
            return;
        }
        // Outside a runtime (a test's teardown), the body just goes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body, self.linger, self.limit));
        }
    }
}

/// Reads `body` to its end, for `linger` and `limit` bytes at most.
async fn drain(mut body: Incoming, linger: Duration, limit: u64) {
    let read = async {
        let mut read: u64 = 0;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |data| data.len() as u64);
            if read > limit {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(linger, read).await;
}
