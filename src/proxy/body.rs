//! The bodies the proxy moves: [`UpstreamBody`] (the caller's request, spliced prefix first,
//! the rest streamed as it comes) and [`ResponseBody`] (Campaign's answer streamed back, or a
//! fault of our own).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Why the caller's body could not be forwarded to the end.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    #[error("request body over {0} bytes")]
    TooLarge(u64),
    #[error("reading the request body: {0}")]
    Client(String),
}

/// The request body sent to Campaign.
pub struct UpstreamBody {
    /// Chunks ready to go: the spliced prefix, then what was read with it.
    ready: VecDeque<Bytes>,
    /// What the caller has not sent yet; streamed through untouched.
    rest: Option<Incoming>,
    /// Bytes the caller may still send before the body is over `max_body_bytes`.
    allowance: u64,
    limit: u64,
    /// Bytes left to send, when the length is known.
    remaining: Option<u64>,
}

impl UpstreamBody {
    /// `ready` chunks first, then `rest`. `received` bytes of a body limited to `limit` have
    /// been read already; `length` is the total to send, when known.
    pub fn new(
        ready: impl IntoIterator<Item = Bytes>,
        rest: Option<Incoming>,
        received: u64,
        limit: u64,
        length: Option<u64>,
    ) -> UpstreamBody {
        let ready: VecDeque<Bytes> = ready.into_iter().filter(|c| !c.is_empty()).collect();
        let rest = rest.filter(|rest| !rest.is_end_stream());
        UpstreamBody {
            ready,
            rest,
            allowance: limit.saturating_sub(received),
            limit,
            remaining: length,
        }
    }

    fn sent(&mut self, n: usize) {
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(n as u64);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(chunk) = this.ready.pop_front() {
            this.sent(chunk.len());
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(rest).poll_frame(cx));
        match frame {
            None => {
                this.rest = None;
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                this.rest = None;
                Poll::Ready(Some(Err(BodyError::Client(error.to_string()))))
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.allowance {
                        this.rest = None;
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                    }
                    this.allowance -= n;
                    this.sent(data.len());
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(self.ready.iter().map(|c| c.len() as u64).sum());
                hint
            }
        }
    }
}

/// The answer to the caller.
pub enum ResponseBody {
    /// A fault or page of our own.
    Full(Option<Bytes>),
    /// Campaign's answer, streamed as it comes.
    Upstream(Incoming),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody::Full(Some(bytes.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(incoming) => Pin::new(incoming).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Upstream(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Upstream(incoming) => incoming.size_hint(),
        }
    }
}
