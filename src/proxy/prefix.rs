//! Reads the start of a request body, up to the end of the session token, and no further.
//!
//! The common case costs no copy: the whole prefix came in the first chunk, which is scanned
//! where it lies. Otherwise chunks are copied into one buffer, never more than
//! `max_prefix_bytes` of them; the part of the last chunk beyond that stays a slice of it.
//! Those buffers are charged to one [`PrefixBudget`] shared by every request being read, and
//! the whole read has a deadline however the bytes trickle in.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::body::{BodyError, Inspect};
use crate::soap::{Charset, Edit, Envelope, ScanError, Scanner, Tail, splice};

/// Why a prefix could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrefixError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("session token not within the first {0} bytes of the body")]
    TooLong(usize),
    /// The prefix was still incomplete at the deadline.
    #[error("the body prefix took longer than {0:?}")]
    Deadline(Duration),
    /// The prefixes being read already hold the whole budget.
    #[error("the prefixes being read hold {0} bytes already")]
    Busy(usize),
    /// The body itself: over its limit, broken off, or paused too long.
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// The prefix and what came with it.
pub(super) struct Prefix<B> {
    pub envelope: Envelope,
    /// The bytes received so far from offset 0, in one piece: the prefix and maybe more.
    head: Bytes,
    /// The part of the last chunk that was not copied into `head`.
    spill: Option<Bytes>,
    /// The body still to come.
    pub rest: B,
    /// Body bytes received so far.
    pub received: u64,
}

impl<B> Prefix<B> {
    /// The body bytes read so far, with `edits` applied to the prefix; slices, not copies.
    pub(super) fn chunks(&self, edits: &[Edit]) -> Vec<Bytes> {
        let end = self.envelope.end;
        let mut chunks = splice(&self.head.slice(..end), edits);
        chunks.push(self.head.slice(end..));
        chunks.extend(self.spill.clone());
        chunks
    }
}

impl<B> Prefix<B> {
    /// The watch of the rest of the envelope, having read what came past the prefix already.
    pub(super) fn tail(&self) -> Result<Tail, ScanError> {
        let mut tail = Tail::after(&self.envelope, &self.head);
        tail.feed(&self.head[self.envelope.end..])?;
        if let Some(spill) = &self.spill {
            tail.feed(spill)?;
        }
        Ok(tail)
    }
}

impl Inspect for Tail {
    fn inspect(&mut self, chunk: &[u8]) -> Result<(), String> {
        self.feed(chunk).map_err(|e| e.to_string())
    }
}

/// How much `edits` change the body's length.
pub(super) fn length_after(length: u64, edits: &[Edit]) -> u64 {
    let removed: u64 = edits.iter().map(|e| e.range.len() as u64).sum();
    let added: u64 = edits.iter().map(|e| e.replacement.len() as u64).sum();
    length - removed + added
}

/// What a prefix read may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// The session token ends within this many bytes.
    pub max_prefix: usize,
    pub max_body: u64,
    /// Longest pause between two chunks.
    pub idle: Duration,
    /// The whole prefix must have come within this.
    pub deadline: Duration,
}

/// The bytes that all prefixes being read may hold together. A read charges its buffer before
/// it grows it, and gives the charge back when it ends.
#[derive(Debug)]
pub(super) struct PrefixBudget {
    held: AtomicUsize,
    limit: usize,
}

impl PrefixBudget {
    pub(super) fn new(limit: usize) -> PrefixBudget {
        PrefixBudget {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// One read's share of the budget, given back on drop.
struct Charge<'a> {
    budget: &'a PrefixBudget,
    bytes: usize,
}

impl Charge<'_> {
    /// Takes `more` bytes of the budget, if they are left.
    fn grow(&mut self, more: usize) -> Result<(), PrefixError> {
        let budget = self.budget;
        budget
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(more)
                    .filter(|&after| after <= budget.limit)
            })
            .map_err(|_| PrefixError::Busy(budget.limit))?;
        self.bytes += more;
        Ok(())
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Appends `data` to `buffer`, charging whatever capacity that adds (doubling, within `max`).
fn append(
    buffer: &mut Vec<u8>,
    data: &[u8],
    max: usize,
    charge: &mut Charge<'_>,
) -> Result<(), PrefixError> {
    let needed = buffer.len() + data.len();
    if needed > buffer.capacity() {
        let capacity = needed.max(buffer.capacity() * 2).max(4096).min(max);
        charge.grow(capacity - buffer.capacity())?;
        buffer.reserve_exact(capacity - buffer.len());
    }
    buffer.extend_from_slice(data);
    Ok(())
}

/// What polling a body gives: a frame, an error, or its end (`None`).
type Frame<B> = Option<Result<http_body::Frame<<B as Body>::Data>, <B as Body>::Error>>;

/// Adds `chunk` to the bytes `received` and `counted`; past `max_body`, the body is too large.
fn count(
    received: &mut u64,
    chunk: &[u8],
    counted: &AtomicU64,
    max_body: u64,
) -> Result<(), PrefixError> {
    *received += chunk.len() as u64;
    counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    if *received > max_body {
        return Err(BodyError::TooLarge(max_body).into());
    }
    Ok(())
}

/// The next frame of `body` if it is there already (`Pending` if not), without waiting.
fn ready_frame<B: Body + Unpin>(body: &mut B) -> Poll<Frame<B>> {
    Pin::new(body).poll_frame(&mut Context::from_waker(std::task::Waker::noop()))
}

/// Reads chunks of `body` (in `charset`, when its `Content-Type` names one) until the scanner
/// has the envelope's first parameter. Every byte
/// received is added to `counted` as it comes, whether the prefix is read or refused; a buffer
/// is charged to `budget` while the read lasts.
pub(super) async fn read<B>(
    mut body: B,
    charset: Option<Charset>,
    limits: Limits,
    budget: &PrefixBudget,
    counted: &AtomicU64,
) -> Result<Prefix<B>, PrefixError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let Limits {
        max_prefix,
        max_body,
        idle,
        deadline,
    } = limits;
    let mut scanner = Scanner::with_charset(charset);
    let mut buffer = Vec::new();
    let mut charge = Charge { budget, bytes: 0 };
    let mut received: u64 = 0;
    let give_up = Instant::now() + deadline;
    loop {
        let pause = Instant::now() + idle;
        let frame = match tokio::time::timeout_at(pause.min(give_up), body.frame()).await {
            Ok(frame) => frame,
            Err(_) if pause < give_up => return Err(BodyError::Idle(idle).into()),
            Err(_) => return Err(PrefixError::Deadline(deadline)),
        };
        let chunk = match frame {
            None => None,
            Some(Err(error)) => return Err(BodyError::Client(error.to_string()).into()),
            // Trailers end the data.
            Some(Ok(frame)) => frame.into_data().ok(),
        };
        let Some(mut chunk) = chunk else {
            return match scanner.feed(&buffer, true)? {
                Some(envelope) => Ok(Prefix {
                    envelope,
                    head: Bytes::from(buffer),
                    spill: None,
                    rest: body,
                    received,
                }),
                None => Err(ScanError::Truncated.into()),
            };
        };
        count(&mut received, &chunk, counted, max_body)?;
        let mut at_eof = body.is_end_stream();
        // Only the first `max_prefix` bytes are ever scanned or copied.
        let mut take = chunk.len().min(max_prefix - buffer.len());
        let mut whole = take == chunk.len();
        let first = buffer.is_empty();
        let found = if first {
            // The common case: the whole prefix in the first chunk, scanned where it lies.
            scanner.feed(&chunk[..take], at_eof && whole)?
        } else {
            append(&mut buffer, &chunk[..take], max_prefix, &mut charge)?;
            // The chunks already there are copied too, for one scan of them all: a body sent a
            // byte at a time costs a copy per byte, not a scan.
            while whole && !at_eof && buffer.len() < max_prefix {
                let Poll::Ready(next) = ready_frame(&mut body) else {
                    break;
                };
                let next = match next {
                    None => None,
                    Some(Err(error)) => return Err(BodyError::Client(error.to_string()).into()),
                    Some(Ok(frame)) => frame.into_data().ok(),
                };
                let Some(next) = next else {
                    at_eof = true;
                    break;
                };
                count(&mut received, &next, counted, max_body)?;
                at_eof = body.is_end_stream();
                take = next.len().min(max_prefix - buffer.len());
                whole = take == next.len();
                append(&mut buffer, &next[..take], max_prefix, &mut charge)?;
                chunk = next;
            }
            scanner.feed(&buffer, at_eof && whole)?
        };
        if let Some(envelope) = found {
            let (head, spill) = if first {
                (chunk, None)
            } else {
                (Bytes::from(buffer), (!whole).then(|| chunk.slice(take..)))
            };
            return Ok(Prefix {
                envelope,
                head,
                spill,
                rest: body,
                received,
            });
        }
        if first {
            append(&mut buffer, &chunk[..take], max_prefix, &mut charge)?;
        }
        if buffer.len() >= max_prefix {
            return Err(PrefixError::TooLong(max_prefix));
        }
        if at_eof {
            return Err(ScanError::Truncated.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::future::Future;

    /// A body that yields the given chunks.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|c| Ok(http_body::Frame::data(c))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn chunks(body: &[u8], cuts: &[usize]) -> Chunks {
        let mut out = VecDeque::new();
        let mut at = 0;
        for &cut in cuts {
            out.push_back(Bytes::copy_from_slice(&body[at..cut]));
            at = cut;
        }
        out.push_back(Bytes::copy_from_slice(&body[at..]));
        Chunks(out)
    }

    const IDLE: Duration = Duration::from_secs(5);

    const ENVELOPE: &str = r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><m:PushEvent xmlns:m="urn:nms:rtEvent"><m:sessiontoken>mc/pass</m:sessiontoken><m:domEvent><rtEvent/></m:domEvent></m:PushEvent></s:Body></s:Envelope>"#;

    fn limits(max_prefix: usize, max_body: u64) -> Limits {
        Limits {
            max_prefix,
            max_body,
            idle: IDLE,
            deadline: Duration::from_secs(60),
        }
    }

    /// Reads with an ample budget.
    async fn read_within<B>(
        body: B,
        max_prefix: usize,
        max_body: u64,
    ) -> Result<Prefix<B>, PrefixError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let budget = PrefixBudget::new(usize::MAX);
        let read = read(
            body,
            None,
            limits(max_prefix, max_body),
            &budget,
            &AtomicU64::new(0),
        )
        .await;
        assert_eq!(budget.held(), 0, "the charge is given back");
        read
    }

    async fn forwarded(body: Chunks) -> Vec<u8> {
        let mut prefix = read_within(body, 64 * 1024, u64::MAX).await.unwrap();
        assert_eq!(
            prefix.envelope.credential().unwrap().value.expose(),
            "mc/pass"
        );
        let edits = crate::carriers::body_edits(&prefix.envelope);
        let mut out = prefix.chunks(&edits).concat();
        while let Some(frame) = prefix.rest.frame().await {
            out.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn any_two_chunks_give_the_same_result() {
        let expected = ENVELOPE.replace("mc/pass", "");
        for cut in 0..=ENVELOPE.len() {
            let out = forwarded(chunks(ENVELOPE.as_bytes(), &[cut])).await;
            assert_eq!(String::from_utf8(out).unwrap(), expected, "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn one_byte_chunks() {
        let cuts: Vec<usize> = (1..ENVELOPE.len()).collect();
        let out = forwarded(chunks(ENVELOPE.as_bytes(), &cuts)).await;
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ENVELOPE.replace("mc/pass", "")
        );
    }

    #[tokio::test]
    async fn prefix_is_bounded() {
        let padding = format!("<s:Header>{}</s:Header>", "<x/>".repeat(1000));
        let body = ENVELOPE.replace("<s:Body>", &format!("{padding}<s:Body>"));
        // Whole body in one chunk, or in pieces: the limit holds either way.
        for cuts in [vec![], vec![100, 2000, 3000]] {
            match read_within(chunks(body.as_bytes(), &cuts), 2048, u64::MAX).await {
                Err(PrefixError::TooLong(2048)) => {}
                Err(other) => panic!("{other}"),
                Ok(_) => panic!("accepted a prefix over the limit"),
            }
        }
        // The same body fits with a larger limit, and the part of a chunk past the limit is
        // forwarded as a slice, not copied.
        let out = forwarded(chunks(body.as_bytes(), &[100, 2000])).await;
        assert_eq!(String::from_utf8(out).unwrap(), body.replace("mc/pass", ""));
    }

    #[tokio::test]
    async fn body_limit_and_truncation() {
        match read_within(chunks(ENVELOPE.as_bytes(), &[10]), 64 * 1024, 20).await {
            Err(PrefixError::Body(BodyError::TooLarge(20))) => {}
            other => panic!("{:?}", other.err()),
        }
        let cut = &ENVELOPE[..ENVELOPE.find("pass").unwrap()];
        match read_within(chunks(cut.as_bytes(), &[5]), 64 * 1024, u64::MAX).await {
            Err(PrefixError::Scan(ScanError::Truncated)) => {}
            other => panic!("{:?}", other.err()),
        }
        match read_within(chunks(b"", &[]), 64 * 1024, u64::MAX).await {
            Err(PrefixError::Scan(ScanError::Truncated)) => {}
            other => panic!("{:?}", other.err()),
        }
    }

    /// A body whose chunks come one per `every`, forever.
    struct Trickle {
        every: Duration,
        next: Pin<Box<tokio::time::Sleep>>,
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            std::task::ready!(self.next.as_mut().poll(cx));
            let every = self.every;
            self.next.as_mut().reset(Instant::now() + every);
            // An unfinished comment: the scan waits for its end.
            Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                b"<!-- ",
            )))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_prefix_that_trickles_in_meets_its_deadline() {
        let every = Duration::from_secs(1);
        let body = Trickle {
            every,
            next: Box::pin(tokio::time::sleep(every)),
        };
        let limits = Limits {
            deadline: Duration::from_secs(10),
            ..limits(64 * 1024, u64::MAX)
        };
        let budget = PrefixBudget::new(usize::MAX);
        let started = Instant::now();
        match read(body, None, limits, &budget, &AtomicU64::new(0)).await {
            Err(PrefixError::Deadline(d)) if d == limits.deadline => {}
            other => panic!("{:?}", other.err()),
        }
        // Every pause was within the idle timeout: the deadline alone ended it.
        assert_eq!(started.elapsed(), limits.deadline);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn buffers_are_charged_to_the_budget_and_given_back() {
        let cuts: Vec<usize> = (1..ENVELOPE.len()).collect();
        // Too small for the first buffer: refused, and nothing stays charged.
        let budget = PrefixBudget::new(1024);
        match read(
            chunks(ENVELOPE.as_bytes(), &cuts),
            None,
            limits(64 * 1024, u64::MAX),
            &budget,
            &AtomicU64::new(0),
        )
        .await
        {
            Err(PrefixError::Busy(1024)) => {}
            other => panic!("{:?}", other.err()),
        }
        assert_eq!(budget.held(), 0);
        // Room for one: a read in progress holds its buffer, and a second one is refused.
        let budget = PrefixBudget::new(4096);
        let counted = AtomicU64::new(0);
        let mut first = Box::pin(read(
            chunks(ENVELOPE.as_bytes(), &cuts),
            None,
            limits(64 * 1024, u64::MAX),
            &budget,
            &counted,
        ));
        let mut second = Box::pin(read(
            Pending(Some(Bytes::from_static(b"<?xml"))),
            None,
            limits(64 * 1024, u64::MAX),
            &budget,
            &counted,
        ));
        // The second read takes the budget first, and waits for more of its body.
        assert!(futures_poll(second.as_mut()).is_pending());
        assert_eq!(budget.held(), 4096);
        match first.as_mut().await {
            Err(PrefixError::Busy(4096)) => {}
            other => panic!("{:?}", other.err()),
        }
        drop(second);
        assert_eq!(budget.held(), 0);
        // The whole prefix in one chunk is scanned where it lies, and charges nothing.
        let budget = PrefixBudget::new(0);
        let read = read(
            chunks(ENVELOPE.as_bytes(), &[]),
            None,
            limits(64 * 1024, u64::MAX),
            &budget,
            &AtomicU64::new(0),
        )
        .await;
        assert!(read.is_ok());
    }

    /// A body that yields one chunk, then waits forever.
    struct Pending(Option<Bytes>);

    impl Body for Pending {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            match self.0.take() {
                Some(chunk) => Poll::Ready(Some(Ok(http_body::Frame::data(chunk)))),
                None => Poll::Pending,
            }
        }
    }

    /// Polls `future` once.
    fn futures_poll<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        future.poll(&mut Context::from_waker(waker))
    }

    /// CPU time of this thread.
    fn thread_cpu() -> Duration {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    /// The thread CPU time of reading `body` (made anew for each of `rounds` reads).
    fn cpu_of_reads(rounds: usize, body: impl Fn() -> Chunks) -> Duration {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut spent = Duration::ZERO;
        for _ in 0..rounds {
            let body = body();
            let started = thread_cpu();
            let read = runtime.block_on(read_within(body, 64 * 1024, u64::MAX));
            spent += thread_cpu() - started;
            assert!(read.is_ok());
        }
        spent
    }

    #[test]
    fn a_prefix_sent_a_byte_at_a_time_costs_within_3x_of_one_sent_at_once() {
        // A 64 KiB prefix: a SOAP Header of one comment full of `>` (the construct that was
        // parsed again from its start at every chunk: 17 s of CPU for this one), then the token.
        let filler = 64 * 1024 - ENVELOPE.len() - 40;
        let body = ENVELOPE.replace(
            "<s:Body>",
            &format!("<s:Header><!--{}--></s:Header><s:Body>", ">".repeat(filler)),
        );
        let end = body.find("</m:sessiontoken>").unwrap();
        assert!(end > 60 * 1024 && end < 64 * 1024);
        let at_once = cpu_of_reads(20, || chunks(body.as_bytes(), &[]));
        let cuts: Vec<usize> = (1..body.len()).collect();
        let pieces: Vec<Bytes> = chunks(body.as_bytes(), &cuts).0.into();
        let bytewise = cpu_of_reads(20, || Chunks(pieces.iter().cloned().collect()));
        eprintln!("{bytewise:?} a byte at a time, {at_once:?} at once");
        assert!(
            bytewise <= 3 * at_once,
            "{bytewise:?} a byte at a time, {at_once:?} at once"
        );
    }

    #[test]
    fn length_changes_by_the_edits() {
        let edits = [
            Edit {
                range: 10..17,
                replacement: Bytes::new(),
            },
            Edit {
                range: 30..40,
                replacement: Bytes::from_static(b"abc"),
            },
        ];
        assert_eq!(length_after(100, &edits), 86);
    }
}
