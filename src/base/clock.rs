//! The wall clock of the controller.
//!
//! Every read of the current date and time that the controller makes (when a token was issued,
//! when the next refresh is due, how long a backoff lasts) goes through a [`Clock`] handed to
//! [`crate::controller::run`]; the decisions themselves ([`crate::decide`],
//! [`crate::timing`]) are pure functions of a `now` they are given, and their tests pass times in
//! instead of waiting. Two kinds of reads do not go through it, on purpose: the command-line
//! commands (`status`, `renew`, `inspect`) read the system time directly, and durations measured
//! on the monotonic clock (`std::time::Instant`: request latency, the exchange gate's pacing,
//! the write-retry budget) are not dates and are read where they are measured.
//!
//! The [`ManualClock`] moves only when told to. A controller running on it looks at every
//! client again whenever it is moved ([`Clock::moved`]), so that a test can move a token's life
//! forward by minutes and see the refresh at once instead of waiting for it.

use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// For a clock that jumps (a [`ManualClock`]), a receiver that changes whenever it moves:
    /// the controller then reconciles every client again. `None` for a clock that flows.
    fn moved(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that stands still until [`ManualClock::advance`] or [`ManualClock::set`] moves it.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
    moves: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn at(start: Timestamp) -> Self {
        ManualClock {
            now: Mutex::new(start),
            moves: watch::channel(0).0,
        }
    }

    /// A clock showing the system time of now (then standing still).
    pub fn starting_now() -> Self {
        ManualClock::at(Timestamp::now())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = SignedDuration::try_from(by).expect("a duration a clock can move by");
        let mut now = self.now.lock().expect("clock lock");
        *now = now.checked_add(by).expect("a time within jiff's range");
        drop(now);
        self.moves.send_modify(|n| *n += 1);
    }

    /// Sets the clock to `to` (backwards too).
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().expect("clock lock") = to;
        self.moves.send_modify(|n| *n += 1);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock lock")
    }

    fn moved(&self) -> Option<watch::Receiver<u64>> {
        Some(self.moves.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_says_so() {
        let start = Timestamp::from_second(1_000_000).unwrap();
        let clock = ManualClock::at(start);
        let mut moved = clock.moved().unwrap();
        assert_eq!(clock.now(), start);
        assert!(!moved.has_changed().unwrap());
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now().as_second(), 1_000_090);
        assert!(moved.has_changed().unwrap());
        moved.mark_unchanged();
        clock.set(start);
        assert_eq!(clock.now(), start);
        assert!(moved.has_changed().unwrap());
        assert!(SystemClock.moved().is_none());
    }
}
