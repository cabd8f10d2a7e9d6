//! The time of day, given to the code that needs it (an issued session's expiry, the Logon's
//! answer) rather than read from the system there, so that a test can move it forward instead of
//! sleeping until a session expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The system's time, or (for tests) the system's time moved forward by [`Clock::advance`].
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds ahead of the system's time; `None`: the system's time itself.
    ahead: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system's time.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system's time, until [`Clock::advance`] moves it; clones move together.
    pub fn adjustable() -> Clock {
        Clock {
            ahead: Some(Arc::default()),
        }
    }

    /// The time of day, as this clock tells it.
    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        match &self.ahead {
            None => now,
            Some(ahead) => now + Duration::from_millis(ahead.load(Ordering::Relaxed)),
        }
    }

    /// Moves an adjustable clock (and its clones) forward by `by`; the system's clock stays.
    pub fn advance(&self, by: Duration) {
        if let Some(ahead) = &self.ahead {
            let millis = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
            ahead.fetch_add(millis, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_with_its_clones_and_the_system_clock_does_not() {
        let clock = Clock::adjustable();
        let clone = clock.clone();
        let before = clone.now();
        clock.advance(Duration::from_secs(3600));
        assert!(clone.now() >= before + Duration::from_secs(3600));
        let system = Clock::system();
        system.advance(Duration::from_secs(3600));
        assert!(system.now() < SystemTime::now() + Duration::from_secs(60));
    }
}
