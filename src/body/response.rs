//! The answer to the caller: Campaign's, streamed back as it comes (with what was already read
//! of it first), or a fault or page of our own. It counts the bytes it sends and, when it is
//! done with (sent to its end, broken off, or dropped by a caller that went away), hands that
//! count to its [`Finish`]: the request's log line and metrics are written then, with the
//! whole latency and the bytes both ways.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::campaign::CampaignBody;
use super::idle::IdleTimer;

/// Why Campaign's answer stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnswerError {
    #[error("Campaign sent nothing for {0:?} in the middle of its answer")]
    Idle(Duration),
    #[error(transparent)]
    Upstream(#[from] crate::h1::Error),
}

/// What happens when an answer is done with.
pub(crate) trait Finish: Send + Sync + 'static {
    /// `bytes_out`: the body bytes that went to the caller.
    fn finish(self: Box<Self>, bytes_out: u64);
}

/// The answer to the caller.
pub(crate) struct ResponseBody {
    answer: Answer,
    /// Body bytes handed to hyper so far.
    bytes_out: u64,
    /// Told when the answer is done with; boxed, as most bodies built in tests and by the
    /// stand-ins have none.
    finish: Option<Box<dyn Finish>>,
    /// A copy of what goes to the caller, for a shadow comparison; boxed, as most have none.
    tee: Option<Box<Tee>>,
}

/// A copy of an answer as it goes to the caller, of at most `limit` bytes (shared pieces, not
/// copies), handed over when the answer ends: the whole answer, or `None` when it was larger,
/// broke off, or was dropped unsent.
pub(crate) struct Tee {
    chunks: Vec<Bytes>,
    size: u64,
    limit: u64,
    over: bool,
    done: Option<tokio::sync::oneshot::Sender<Option<Vec<Bytes>>>>,
}

impl Tee {
    /// A tee of at most `limit` bytes, and where its copy comes out.
    pub(crate) fn new(
        limit: u64,
    ) -> (Box<Tee>, tokio::sync::oneshot::Receiver<Option<Vec<Bytes>>>) {
        let (done, copy) = tokio::sync::oneshot::channel();
        let tee = Tee {
            chunks: Vec::new(),
            size: 0,
            limit,
            over: false,
            done: Some(done),
        };
        (Box::new(tee), copy)
    }

    fn keep(&mut self, data: &Bytes) {
        self.size += data.len() as u64;
        if self.size > self.limit {
            self.over = true;
            self.chunks = Vec::new();
        } else if !self.over {
            self.chunks.push(data.clone());
        }
    }

    fn end(&mut self, whole: bool) {
        if let Some(done) = self.done.take() {
            let copy = (whole && !self.over).then(|| std::mem::take(&mut self.chunks));
            let _ = done.send(copy);
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.end(false);
    }
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
    pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody {
            answer: Answer::Full(Some(bytes.into())),
            bytes_out: 0,
            finish: None,
            tee: None,
        }
    }

    /// Campaign's answer: `read` (already taken from it), then `rest`; Campaign may pause
    /// `idle` at most.
    pub(crate) fn upstream(
        read: Option<Bytes>,
        rest: CampaignBody,
        idle: Duration,
    ) -> ResponseBody {
        ResponseBody {
            answer: Answer::Upstream {
                read: read.filter(|r| !r.is_empty()),
                rest,
                idle: Box::new(IdleTimer::new(idle)),
            },
            bytes_out: 0,
            finish: None,
            tee: None,
        }
    }

    /// Has `tee` keep a copy of what goes to the caller.
    pub(crate) fn tee(&mut self, tee: Box<Tee>) {
        self.tee = Some(tee);
    }

    /// Has `finish` told when the answer is done with.
    pub(crate) fn finish_with(&mut self, finish: Box<dyn Finish>) {
        self.finish = Some(finish);
    }

    fn poll_answer(
        &mut self,
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

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper stops polling once the body says it is at its end: whole is what it says.
        if let Some(mut tee) = self.tee.take() {
            tee.end(self.is_end_stream());
        }
        if let Some(finish) = self.finish.take() {
            finish.finish(self.bytes_out);
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
        let this = &mut *self;
        let frame = this.poll_answer(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame
            && let Some(data) = frame.data_ref()
        {
            this.bytes_out += data.len() as u64;
            if let Some(tee) = &mut this.tee {
                tee.keep(data);
            }
        }
        if let (Some(tee), Poll::Ready(ready)) = (&mut this.tee, &frame) {
            match ready {
                None => tee.end(true),
                Some(Err(_)) => tee.end(false),
                Some(Ok(_)) => {}
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Writes the count it is told into a shared cell; `u64::MAX` until then.
    struct Told(Arc<AtomicU64>);

    impl Finish for Told {
        fn finish(self: Box<Self>, bytes_out: u64) {
            self.0.store(bytes_out, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_full_answer_tells_its_bytes_when_done_with() {
        let told = Arc::new(AtomicU64::new(u64::MAX));
        let mut body = ResponseBody::full("<fault/>");
        body.finish_with(Box::new(Told(told.clone())));
        assert_eq!(body.size_hint().exact(), Some(8));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "<fault/>");
        assert!(body.is_end_stream());
        assert_eq!(told.load(Ordering::SeqCst), u64::MAX, "not done with yet");
        drop(body);
        assert_eq!(told.load(Ordering::SeqCst), 8);
    }

    #[test]
    fn an_answer_dropped_unsent_tells_zero() {
        let told = Arc::new(AtomicU64::new(u64::MAX));
        let mut body = ResponseBody::full("<fault/>");
        body.finish_with(Box::new(Told(told.clone())));
        drop(body);
        assert_eq!(told.load(Ordering::SeqCst), 0);
    }
}
