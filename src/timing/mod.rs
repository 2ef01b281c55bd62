//! Timing, as pure functions: when to refresh a token ([`refresh`]) and how long to back off
//! after a failure ([`backoff`]). Time formats and the clock are in [`crate::base`].

pub mod backoff;
pub mod refresh;
