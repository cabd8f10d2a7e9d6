//! Campaign's answer as it comes off a pooled keep-alive connection. The connection is lent
//! for one exchange ([`Lease`]); read to its end, the answer gives it back to where it came from
//! ([`Reuse`], the pool of `upstream/pool.rs`); dropped before, it closes it: hyper cannot reuse
//! a connection with an answer half-read.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::UpstreamBody;

/// A connection to Campaign, ready for requests of ours.
pub(crate) type Sender = http1::SendRequest<UpstreamBody>;

/// Where a connection goes when its answer was read to its end.
pub(crate) trait Reuse: Send + Sync + 'static {
    fn give_back(&self, sender: Sender);
}

/// A connection lent for one exchange, and where it goes back.
pub(crate) struct Lease {
    sender: Sender,
    /// A shared handle (the pool's own `Arc`): lending costs no allocation.
    home: Arc<dyn Reuse>,
}

impl Lease {
    pub(crate) fn new(sender: Sender, home: Arc<dyn Reuse>) -> Lease {
        Lease { sender, home }
    }
}

/// The body of Campaign's answer; see the module documentation.
pub(crate) struct CampaignBody {
    body: Incoming,
    lease: Option<Lease>,
    ended: bool,
}

impl CampaignBody {
    pub(crate) fn new(body: Incoming, lease: Lease) -> CampaignBody {
        CampaignBody {
            ended: body.is_end_stream(),
            body,
            lease: Some(lease),
        }
    }
}

impl Drop for CampaignBody {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take()
            && (self.ended || self.body.is_end_stream())
        {
            lease.home.give_back(lease.sender);
        }
    }
}

impl Body for CampaignBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.ended = true,
            // A broken answer leaves the connection unusable.
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
