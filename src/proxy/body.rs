//! The bodies the proxy moves: [`UpstreamBody`] (the caller's request, spliced prefix first,
//! the rest streamed as it comes) and [`ResponseBody`] (Campaign's answer streamed back, or a
//! fault of our own). Both stop a peer that goes quiet for longer than the idle timeout.
//!
//! An [`UpstreamBody`] can also keep what it sends in a [`Replay`], bounded, so that a call
//! whose token Campaign refused can be sent again: the kept chunks are clones of the sent ones
//! (shared buffers, not copies).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::record::Completion;
use crate::upstream::CampaignBody;

/// Why the caller's body could not be forwarded to the end.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    #[error("request body over {0} bytes")]
    TooLarge(u64),
    #[error("reading the request body: {0}")]
    Client(String),
    #[error("the client sent nothing for {0:?} in the middle of its body")]
    Idle(Duration),
}

/// Why Campaign's answer stopped.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("Campaign sent nothing for {0:?} in the middle of its answer")]
    Idle(Duration),
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
}

/// Fails when a peer stays silent for longer than its limit.
struct IdleTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The sleep must be re-armed before it is polled again.
    stale: bool,
}

impl IdleTimer {
    fn new(limit: Duration) -> IdleTimer {
        IdleTimer {
            limit,
            sleep: None,
            stale: true,
        }
    }

    /// Something arrived: the silence starts again.
    fn touch(&mut self) {
        self.stale = true;
    }

    /// True once the silence has lasted the limit (arms the timer on the first call).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if self.stale {
            sleep.as_mut().reset(deadline);
            self.stale = false;
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// What an [`UpstreamBody`] sent, kept for a replay while it stays under its limit.
pub struct Replay {
    chunks: Vec<Bytes>,
    size: u64,
    limit: u64,
    /// The body was sent to its end.
    complete: bool,
    /// The body outgrew the limit (or failed): no replay.
    given_up: bool,
}

impl Replay {
    pub fn new(limit: u64) -> Arc<Mutex<Replay>> {
        Arc::new(Mutex::new(Replay {
            chunks: Vec::new(),
            size: 0,
            limit,
            complete: false,
            given_up: false,
        }))
    }

    fn keep(&mut self, chunk: &Bytes) {
        if self.given_up {
            return;
        }
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            self.give_up();
        } else {
            self.chunks.push(chunk.clone());
        }
    }

    fn give_up(&mut self) {
        self.given_up = true;
        self.chunks = Vec::new();
    }

    /// The whole body as sent, if it was sent to its end within the limit.
    pub fn take(&mut self) -> Option<Vec<Bytes>> {
        (self.complete && !self.given_up).then(|| std::mem::take(&mut self.chunks))
    }
}

fn lock(replay: &Mutex<Replay>) -> std::sync::MutexGuard<'_, Replay> {
    replay.lock().unwrap_or_else(|e| e.into_inner())
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
    /// The caller's longest pause.
    idle: IdleTimer,
    /// Where sent chunks are kept for a replay, if one may be needed.
    replay: Option<Arc<Mutex<Replay>>>,
    /// Counts the bytes that come from the caller (the `ready` ones were counted already).
    received: Option<Arc<AtomicU64>>,
}

impl UpstreamBody {
    /// `ready` chunks first, then `rest`. `received` bytes of a body limited to `limit` have
    /// been read already; `length` is the total to send, when known; the caller may pause
    /// `idle` at most.
    pub fn new(
        ready: impl IntoIterator<Item = Bytes>,
        rest: Option<Incoming>,
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
        }
    }

    /// Adds the bytes that come from the caller to `received`.
    pub fn counting(mut self, received: Arc<AtomicU64>) -> UpstreamBody {
        self.received = Some(received);
        self
    }

    /// Keeps what is sent in `replay`.
    pub fn recording(mut self, replay: Arc<Mutex<Replay>>) -> UpstreamBody {
        self.replay = Some(replay);
        self
    }

    fn sent(&mut self, chunk: &Bytes) {
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(chunk.len() as u64);
        }
        if let Some(replay) = &self.replay {
            lock(replay).keep(chunk);
        }
    }

    fn finished(&mut self, complete: bool) {
        self.rest = None;
        if let Some(replay) = &self.replay {
            let mut replay = lock(replay);
            if complete {
                replay.complete = true;
            } else {
                replay.give_up();
            }
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
                    let data = data.clone();
                    this.sent(&data);
                }
                // hyper stops polling a body that says it has ended, so the end is noted
                // here rather than on a `None` that may never be asked for.
                if this.rest.as_ref().is_some_and(|rest| rest.is_end_stream()) {
                    this.finished(true);
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

/// The answer to the caller; it carries the request's [`Completion`], written when it is
/// dropped.
pub struct ResponseBody {
    answer: Answer,
    completion: Option<Box<Completion>>,
}

enum Answer {
    /// A fault or page of our own.
    Full(Option<Bytes>),
    /// Campaign's answer, streamed as it comes: what was already read of it, then the rest.
    Upstream {
        read: Option<Bytes>,
        rest: CampaignBody,
        /// Boxed: most answers never arm it.
        idle: Box<IdleTimer>,
    },
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody {
            answer: Answer::Full(Some(bytes.into())),
            completion: None,
        }
    }

    /// Has `completion` written when the answer is done with.
    pub fn complete_with(&mut self, completion: Completion) {
        self.completion = Some(Box::new(completion));
    }

    /// Campaign's answer: `read` (already taken from it), then `rest`; Campaign may pause
    /// `idle` at most.
    pub fn upstream(read: Option<Bytes>, rest: CampaignBody, idle: Duration) -> ResponseBody {
        ResponseBody {
            answer: Answer::Upstream {
                read: read.filter(|r| !r.is_empty()),
                rest,
                idle: Box::new(IdleTimer::new(idle)),
            },
            completion: None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = AnswerError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, AnswerError>>> {
        let frame = self.as_mut().poll_answer(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(completion)) = (&frame, &mut self.completion)
            && let Some(data) = frame.data_ref()
        {
            completion.bytes_out += data.len() as u64;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.answer {
            Answer::Full(bytes) => bytes.is_none(),
            Answer::Upstream { read, rest, .. } => read.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.answer {
            Answer::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Answer::Upstream { read, rest, .. } => {
                let read = read.as_ref().map_or(0, |r| r.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
        }
    }
}

impl ResponseBody {
    fn poll_answer(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, AnswerError>>> {
        match &mut self.answer {
            Answer::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Answer::Upstream { read, rest, idle } => {
                if let Some(read) = read.take() {
                    return Poll::Ready(Some(Ok(Frame::data(read))));
                }
                match Pin::new(rest).poll_frame(cx) {
                    Poll::Pending if idle.expired(cx) => {
                        Poll::Ready(Some(Err(AnswerError::Idle(idle.limit))))
                    }
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(frame) => {
                        idle.touch();
                        Poll::Ready(frame.map(|f| f.map_err(AnswerError::from)))
                    }
                }
            }
        }
    }
}
