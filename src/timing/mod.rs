//! Time: when to refresh, how long to back off after a failure, time arithmetic and formats, and
//! the clock every reading of the current time goes through. All pure but the clock.

pub mod backoff;
pub mod refresh;
