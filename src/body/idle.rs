//! The longest a peer may stay silent in the middle of a body.

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Fails when a peer stays silent for longer than its limit. Armed on the first wait only, so
/// that a body that never waits never allocates a timer.
pub(super) struct IdleTimer {
    pub limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The sleep must be re-armed before it is polled again.
    stale: bool,
}

impl IdleTimer {
    pub(super) fn new(limit: Duration) -> IdleTimer {
        IdleTimer {
            limit,
            sleep: None,
            stale: true,
        }
    }

    /// Something arrived: the silence starts again.
    pub(super) fn touch(&mut self) {
        self.stale = true;
    }

    /// True once the silence has lasted the limit (arms the timer on the first call).
    pub(super) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.limit;
        // Boxed: a `Sleep` cannot move once polled, and the bodies holding this timer must.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;

    /// Polls `timer` once, from a task.
    async fn expired(timer: &mut IdleTimer) -> bool {
        poll_fn(|cx| Poll::Ready(timer.expired(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn expires_after_the_limit_of_silence_and_restarts_on_touch() {
        let mut timer = IdleTimer::new(Duration::from_secs(10));
        assert!(!expired(&mut timer).await);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!expired(&mut timer).await);
        // Something arrived: ten more seconds from now.
        timer.touch();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!expired(&mut timer).await);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!expired(&mut timer).await, "re-armed at the touch's poll");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(expired(&mut timer).await);
    }
}
