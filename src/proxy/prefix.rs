//! Reads the start of a request body, up to the end of the session token, and no further.
//!
//! The common case costs no copy: the whole prefix came in the first chunk, which is scanned
//! where it lies. Otherwise chunks are copied into one buffer, never more than
//! `max_prefix_bytes` of them; the part of the last chunk beyond that stays a slice of it.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

use crate::body::BodyError;
use crate::soap::{Edit, Envelope, ScanError, Scanner, splice};

/// Why a prefix could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error("session token not within the first {0} bytes of the body")]
    TooLong(usize),
    /// The body itself: over its limit, broken off, or paused too long.
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// The prefix and what came with it.
pub struct Prefix<B> {
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
    pub fn chunks(&self, edits: &[Edit]) -> Vec<Bytes> {
        let end = self.envelope.end;
        let mut chunks = splice(&self.head.slice(..end), edits);
        chunks.push(self.head.slice(end..));
        chunks.extend(self.spill.clone());
        chunks
    }
}

/// How much `edits` change the body's length.
pub fn length_after(length: u64, edits: &[Edit]) -> u64 {
    let removed: u64 = edits.iter().map(|e| e.range.len() as u64).sum();
    let added: u64 = edits.iter().map(|e| e.replacement.len() as u64).sum();
    length - removed + added
}

/// Reads chunks of `body` until the scanner has the envelope's first parameter. Every byte
/// received is added to `counted` as it comes, whether the prefix is read or refused.
pub async fn read<B>(
    mut body: B,
    max_prefix: usize,
    max_body: u64,
    idle: std::time::Duration,
    counted: &AtomicU64,
) -> Result<Prefix<B>, PrefixError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut scanner = Scanner::new();
    let mut buffer = BytesMut::new();
    let mut received: u64 = 0;
    loop {
        let frame = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| BodyError::Idle(idle))?;
        let chunk = match frame {
            None => None,
            Some(Err(error)) => return Err(BodyError::Client(error.to_string()).into()),
            // Trailers end the data.
            Some(Ok(frame)) => frame.into_data().ok(),
        };
        let Some(chunk) = chunk else {
            return match scanner.feed(&buffer, true)? {
                Some(envelope) => Ok(Prefix {
                    envelope,
                    head: buffer.freeze(),
                    spill: None,
                    rest: body,
                    received,
                }),
                None => Err(ScanError::Truncated.into()),
            };
        };
        received += chunk.len() as u64;
        counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if received > max_body {
            return Err(BodyError::TooLarge(max_body).into());
        }
        let at_eof = body.is_end_stream();
        // Only the first `max_prefix` bytes are ever scanned or copied.
        let take = chunk.len().min(max_prefix - buffer.len());
        let whole = take == chunk.len();
        let first = buffer.is_empty();
        let found = if first {
            // The common case: the whole prefix in the first chunk, scanned where it lies.
            scanner.feed(&chunk[..take], at_eof && whole)?
        } else {
            buffer.extend_from_slice(&chunk[..take]);
            scanner.feed(&buffer, at_eof && whole)?
        };
        if let Some(envelope) = found {
            let (head, spill) = if first {
                (chunk, None)
            } else {
                (buffer.freeze(), (!whole).then(|| chunk.slice(take..)))
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
            buffer.extend_from_slice(&chunk[..take]);
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
    use std::pin::Pin;
    use std::task::{Context, Poll};

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

    const IDLE: std::time::Duration = std::time::Duration::from_secs(5);

    const ENVELOPE: &str = r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><m:PushEvent xmlns:m="urn:nms:rtEvent"><m:sessiontoken>mc/pass</m:sessiontoken><m:domEvent><rtEvent/></m:domEvent></m:PushEvent></s:Body></s:Envelope>"#;

    async fn forwarded(body: Chunks) -> Vec<u8> {
        let mut prefix = read(body, 64 * 1024, u64::MAX, IDLE, &AtomicU64::new(0))
            .await
            .unwrap();
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
            match read(
                chunks(body.as_bytes(), &cuts),
                2048,
                u64::MAX,
                IDLE,
                &AtomicU64::new(0),
            )
            .await
            {
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
        match read(
            chunks(ENVELOPE.as_bytes(), &[10]),
            64 * 1024,
            20,
            IDLE,
            &AtomicU64::new(0),
        )
        .await
        {
            Err(PrefixError::Body(BodyError::TooLarge(20))) => {}
            other => panic!("{:?}", other.err()),
        }
        let cut = &ENVELOPE[..ENVELOPE.find("pass").unwrap()];
        match read(
            chunks(cut.as_bytes(), &[5]),
            64 * 1024,
            u64::MAX,
            IDLE,
            &AtomicU64::new(0),
        )
        .await
        {
            Err(PrefixError::Scan(ScanError::Truncated)) => {}
            other => panic!("{:?}", other.err()),
        }
        match read(
            chunks(b"", &[]),
            64 * 1024,
            u64::MAX,
            IDLE,
            &AtomicU64::new(0),
        )
        .await
        {
            Err(PrefixError::Scan(ScanError::Truncated)) => {}
            other => panic!("{:?}", other.err()),
        }
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
