//! How long to wait after a failure, as a pure function of the failure and the count.
//!
//! Transient reasons (RateLimited, EndpointUnavailable, InvalidResponse) retry after about 5 s,
//! doubling up to 5 min; others (bad credentials, bad spec) after about 1 min, doubling up to
//! 30 min. A `Retry-After` from the endpoint is honoured up to the cap. Jitter shortens a delay
//! by at most 20%.

use std::time::Duration;

use crate::api::reason::Reason;

/// First retry delay after a transient failure.
pub const TRANSIENT_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay after transient failures.
pub const TRANSIENT_CAP: Duration = Duration::from_secs(5 * 60);
/// First retry delay after an authentication or spec failure.
pub const PERMANENT_BASE: Duration = Duration::from_secs(60);
/// Longest retry delay after authentication or spec failures.
pub const PERMANENT_CAP: Duration = Duration::from_secs(30 * 60);

/// How long to wait before retrying after the `failures`-th consecutive failure (1-based).
///
/// `jitter` is a number in `[0, 1)` that shortens the delay by up to 20%.
pub fn retry_delay(
    reason: Reason,
    failures: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let (base, cap) = backoff_bounds(reason);
    let exponent = failures.saturating_sub(1).min(16);
    let backoff = base.saturating_mul(1 << exponent).min(cap);
    let jittered = backoff.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or(Duration::ZERO)).min(cap)
}

/// The first delay and the cap for a failure reason.
pub fn backoff_bounds(reason: Reason) -> (Duration, Duration) {
    if reason.is_transient() {
        (TRANSIENT_BASE, TRANSIENT_CAP)
    } else {
        (PERMANENT_BASE, PERMANENT_CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_table() {
        let s = Duration::from_secs;
        let cases = [
            (Reason::EndpointUnavailable, 1, None, s(5)),
            (Reason::EndpointUnavailable, 2, None, s(10)),
            (Reason::RateLimited, 3, None, s(20)),
            (Reason::InvalidResponse, 7, None, s(300)),
            (Reason::InvalidResponse, 60, None, s(300)),
            (Reason::RateLimited, 1, Some(s(42)), s(42)),
            (Reason::RateLimited, 1, Some(s(3600)), s(300)),
            (Reason::RateLimited, 5, Some(s(1)), s(80)),
            (Reason::InvalidClient, 1, None, s(60)),
            (Reason::InvalidSpec, 2, None, s(120)),
            (Reason::AccessDenied, 6, None, s(1800)),
            (Reason::CredentialsNotFound, u32::MAX, None, s(1800)),
            (Reason::EndpointUnavailable, 0, None, s(5)),
        ];
        for (reason, failures, retry_after, want) in cases {
            assert_eq!(
                retry_delay(reason, failures, retry_after, 0.0),
                want,
                "{reason} #{failures}"
            );
        }
    }

    #[test]
    fn backoff_jitter_shortens_by_at_most_a_fifth() {
        for i in 0..100 {
            let d = retry_delay(Reason::EndpointUnavailable, 3, None, f64::from(i) / 100.0);
            assert!(
                d <= Duration::from_secs(20) && d >= Duration::from_secs(16),
                "{d:?}"
            );
        }
    }
}
