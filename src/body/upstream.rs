//! The caller's request body on its way to Campaign: chunks ready to go (the spliced prefix
//! and what was read with it), then the rest of the caller's body streamed through untouched,
//! within `max_body_bytes` and the idle timeout. It can keep what it sends in a [`Replay`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::idle::IdleTimer;
use super::replay::Replay;
use super::{BodyError, Lingering};

/// Looks at each chunk of the caller's body before it goes on; a refusal ends the body with
/// [`BodyError::Refused`], so that Campaign never gets it whole.
pub(crate) trait Inspect: Send + Sync {
    fn inspect(&mut self, chunk: &[u8]) -> Result<(), String>;
}

/// The request body sent to Campaign.
pub(crate) struct UpstreamBody {
    /// Chunks ready to go: the spliced prefix, then what was read with it.
    ready: VecDeque<Bytes>,
    /// What the caller has not sent yet; streamed through untouched.
    rest: Option<Lingering>,
    /// Bytes the caller may still send before the body is over `max_body_bytes`.
    allowance: u64,
    limit: u64,
    /// Bytes left to send, when the length is known.
    remaining: Option<u64>,
    /// The caller's longest pause.
    idle: IdleTimer,
    /// Where sent chunks are kept for a replay, if one may be needed.
    replay: Option<Arc<Mutex<Replay>>>,
    /// Counts the bytes that come from the caller (the `ready` ones were counted already).
    received: Option<Arc<AtomicU64>>,
    /// Looks at what comes from the caller (the `ready` chunks were looked at already).
    inspect: Option<Box<dyn Inspect>>,
}

impl UpstreamBody {
    /// `ready` chunks first, then `rest`. `received` bytes of a body limited to `limit` have
    /// been read already; `length` is the total to send, when known; the caller may pause
    /// `idle` at most.
    pub(crate) fn new(
        ready: impl IntoIterator<Item = Bytes>,
        rest: Option<Lingering>,
        received: u64,
        limit: u64,
        length: Option<u64>,
        idle: Duration,
    ) -> UpstreamBody {
        let ready: VecDeque<Bytes> = ready.into_iter().filter(|c| !c.is_empty()).collect();
        let rest = rest.filter(|rest| !rest.is_end_stream());
        UpstreamBody {
            ready,
            rest,
            allowance: limit.saturating_sub(received),
            limit,
            remaining: length,
            idle: IdleTimer::new(idle),
            replay: None,
            received: None,
            inspect: None,
        }
    }

    /// Has `inspect` look at each chunk still to come from the caller (boxed only if one may
    /// come).
    pub(crate) fn inspecting(mut self, inspect: impl Inspect + 'static) -> UpstreamBody {
        if self.rest.is_some() {
            self.inspect = Some(Box::new(inspect));
        }
        self
    }

    /// Adds the bytes that come from the caller to `received`.
    pub(crate) fn counting(mut self, received: Arc<AtomicU64>) -> UpstreamBody {
        self.received = Some(received);
        self
    }

    /// Keeps what is sent in `replay`.
    pub(crate) fn recording(mut self, replay: Arc<Mutex<Replay>>) -> UpstreamBody {
        self.replay = Some(replay);
        self
    }

    fn sent(&mut self, chunk: &Bytes) {
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(chunk.len() as u64);
        }
        if let Some(replay) = &self.replay {
            Replay::lock(replay).keep(chunk);
        }
    }

    fn finished(&mut self, complete: bool) {
        self.rest = None;
        if let Some(replay) = &self.replay {
            Replay::lock(replay).end(complete);
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
            this.sent(&chunk);
            if this.ready.is_empty() && this.rest.is_none() {
                this.finished(true);
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(rest) = this.rest.as_mut() else {
            this.finished(true);
            return Poll::Ready(None);
        };
        let frame = match Pin::new(rest).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if this.idle.expired(cx) {
                    this.finished(false);
                    return Poll::Ready(Some(Err(BodyError::Idle(this.idle.limit))));
                }
                return Poll::Pending;
            }
        };
        this.idle.touch();
        match frame {
            None => {
                this.finished(true);
                Poll::Ready(None)
            }
            Some(Err(error)) => {
                this.finished(false);
                Poll::Ready(Some(Err(BodyError::Client(error.to_string()))))
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.allowance {
                        this.finished(false);
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                    }
                    this.allowance -= n;
                    if let Some(received) = &this.received {
                        received.fetch_add(n, Ordering::Relaxed);
                    }
                    if let Some(Err(reason)) = this.inspect.as_mut().map(|i| i.inspect(data)) {
                        this.finished(false);
                        return Poll::Ready(Some(Err(BodyError::Refused(reason))));
                    }
                    let data = data.clone();
                    this.sent(&data);
                }
                // hyper stops polling a body that says it has ended, so the end is noted
                // here rather than on a `None` that may never be asked for.
                if this
                    .rest
                    .as_ref()
                    .is_some_and(http_body::Body::is_end_stream)
                {
                    this.finished(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty()
            && self
                .rest
                .as_ref()
                .is_none_or(http_body::Body::is_end_stream)
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn chunks(texts: &[&'static str]) -> Vec<Bytes> {
        texts
            .iter()
            .map(|t| Bytes::from_static(t.as_bytes()))
            .collect()
    }

    #[tokio::test]
    async fn sends_the_ready_chunks_and_keeps_them_for_a_replay() {
        let replay = Replay::new(1024);
        let received = Arc::new(AtomicU64::new(0));
        let body = UpstreamBody::new(
            chunks(&["<a>", "", "</a>"]),
            None,
            7,
            1024,
            Some(7),
            Duration::from_secs(5),
        )
        .counting(received.clone())
        .recording(replay.clone());
        assert_eq!(body.size_hint().exact(), Some(7));
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], b"<a></a>");
        // The ready chunks were counted when they were read, not again here.
        assert_eq!(received.load(Ordering::Relaxed), 0);
        let kept = Replay::lock(&replay).take().unwrap();
        assert_eq!(kept, chunks(&["<a>", "</a>"]), "empty chunks are not sent");
    }

    #[tokio::test]
    async fn a_replay_over_its_limit_is_given_up() {
        let replay = Replay::new(4);
        let body = UpstreamBody::new(
            chunks(&["<a>", "</a>"]),
            None,
            7,
            1024,
            None,
            Duration::from_secs(5),
        )
        .recording(replay.clone());
        assert_eq!(body.size_hint().lower(), 7, "length unknown: what is ready");
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"<a></a>");
        assert_eq!(Replay::lock(&replay).take(), None);
    }
}
