//! What an [`UpstreamBody`](super::UpstreamBody) sent, kept for one replay: when Campaign
//! refuses the token of a call, the call goes once more with a new token, and its body must be
//! sent again as it was. The kept chunks are clones of the sent ones (shared buffers, not
//! copies), and never more than the limit of them: past it, the replay is given up.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

/// The chunks sent so far, while they stay under the limit.
pub(crate) struct Replay {
    chunks: Vec<Bytes>,
    size: u64,
    limit: u64,
    /// The body was sent to its end.
    complete: bool,
    /// The body outgrew the limit (or failed): no replay.
    given_up: bool,
}

impl Replay {
    /// A replay buffer of at most `limit` bytes, shared by the body that fills it and the
    /// pipeline that takes it.
    pub(crate) fn new(limit: u64) -> Arc<Mutex<Replay>> {
        Arc::new(Mutex::new(Replay {
            chunks: Vec::new(),
            size: 0,
            limit,
            complete: false,
            given_up: false,
        }))
    }

    /// Keeps a chunk that was just sent.
    pub(crate) fn keep(&mut self, chunk: &Bytes) {
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

    /// The body was sent to its end (`true`), or broke off (`false`, no replay).
    pub(crate) fn end(&mut self, complete: bool) {
        if complete {
            self.complete = true;
        } else {
            self.give_up();
        }
    }

    fn give_up(&mut self) {
        self.given_up = true;
        self.chunks = Vec::new();
    }

    /// The whole body as sent, if it was sent to its end within the limit; once.
    pub(crate) fn take(&mut self) -> Option<Vec<Bytes>> {
        if !self.complete || self.given_up {
            return None;
        }
        self.given_up = true;
        Some(std::mem::take(&mut self.chunks))
    }

    /// Locks a shared replay; a panic elsewhere leaves it usable (it holds no invariant that a
    /// half-done update could break: at worst a replay is given up).
    pub(crate) fn lock(replay: &Mutex<Replay>) -> MutexGuard<'_, Replay> {
        replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn a_body_sent_whole_within_the_limit_is_given_back_once() {
        let replay = Replay::new(10);
        let mut kept = Replay::lock(&replay);
        kept.keep(&chunk("abcd"));
        assert_eq!(kept.take(), None, "not sent to its end yet");
        kept.keep(&chunk("efghij"));
        kept.end(true);
        assert_eq!(kept.take(), Some(vec![chunk("abcd"), chunk("efghij")]));
        assert_eq!(kept.take(), None, "given back once");
    }

    #[test]
    fn a_body_over_the_limit_is_not_kept() {
        let replay = Replay::new(10);
        let mut kept = Replay::lock(&replay);
        kept.keep(&chunk("abcdef"));
        kept.keep(&chunk("ghijk"));
        assert!(kept.chunks.is_empty(), "given up at once: nothing held");
        kept.keep(&chunk("l"));
        kept.end(true);
        assert_eq!(kept.take(), None);
    }

    #[test]
    fn a_body_that_broke_off_is_not_replayed() {
        let replay = Replay::new(10);
        let mut kept = Replay::lock(&replay);
        kept.keep(&chunk("abc"));
        kept.end(false);
        assert_eq!(kept.take(), None);
    }
}
