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

use jiff::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}
