//! Refresh timing and failure backoff: pure functions of their inputs, with the current time
//! and the random jitter passed in.
//!
//! * A token is refreshed at `expiresAt - renewBefore`, or, when `renewBefore` is unset, when
//!   `renewBeforePercentage` of its lifetime remains. Jitter moves the time earlier by at most
//!   10% of that margin, never later. The result is never earlier than 10% of the lifetime
//!   after issuance, so a long `renewBefore` cannot make a refresh loop.
//! * After a failure, transient reasons (RateLimited, EndpointUnavailable, InvalidResponse)
//!   retry after about 5 s, doubling up to 5 min; others (bad credentials, bad spec) after
//!   about 1 min, doubling up to 30 min. A `Retry-After` from the endpoint is honoured up to
//!   the cap. Jitter shortens a delay by at most 20%.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::reason::Reason;
use crate::settings::RefreshSettings;

/// Largest share of the refresh margin that jitter may take (10%).
pub const JITTER_SHARE: f64 = 0.10;

/// Share of the lifetime before which no refresh is planned (10%).
pub const FLOOR_SHARE: f64 = 0.10;

/// The least time between a client's exchange and its next scheduled refresh. A token that
/// lives shorter is expired in between (and such lifetimes are too short for mounted Secrets
/// anyway: the kubelet refreshes those only about once a minute).
pub const MIN_EXCHANGE_INTERVAL: Duration = Duration::from_secs(5);

/// First retry delay after a transient failure.
pub const TRANSIENT_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay after transient failures.
pub const TRANSIENT_CAP: Duration = Duration::from_secs(5 * 60);
/// First retry delay after an authentication or spec failure.
pub const PERMANENT_BASE: Duration = Duration::from_secs(60);
/// Longest retry delay after authentication or spec failures.
pub const PERMANENT_CAP: Duration = Duration::from_secs(30 * 60);

/// When to refresh a token issued at `issued_at` that expires at `expires_at`.
///
/// `jitter` is a number in `[0, 1)`; 0 means no jitter.
pub fn refresh_at(
    issued_at: Timestamp,
    expires_at: Timestamp,
    settings: &RefreshSettings,
    jitter: f64,
) -> Timestamp {
    let lifetime = expires_at.duration_since(issued_at);
    if lifetime <= SignedDuration::ZERO {
        return expires_at;
    }
    let margin = match settings.renew_before {
        Some(before) => SignedDuration::try_from(before).unwrap_or(SignedDuration::MAX),
        None => lifetime.mul_f64(f64::from(settings.renew_before_percentage) / 100.0),
    };
    let jitter = margin.mul_f64(JITTER_SHARE * jitter.clamp(0.0, 1.0));
    let planned = expires_at
        .checked_sub(margin.saturating_add(jitter))
        .unwrap_or(issued_at);
    let floor = issued_at
        .checked_add(lifetime.mul_f64(FLOOR_SHARE))
        .unwrap_or(expires_at);
    planned.max(floor)
}

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

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn pct(p: u8) -> RefreshSettings {
        RefreshSettings {
            renew_before: None,
            renew_before_percentage: p,
        }
    }

    fn before(secs: u64) -> RefreshSettings {
        RefreshSettings {
            renew_before: Some(Duration::from_secs(secs)),
            renew_before_percentage: 33,
        }
    }

    #[test]
    fn refresh_time_table() {
        // (lifetime s, settings, jitter, expected refresh offset from issuance in s)
        let cases = [
            (3600, pct(33), 0.0, 2412), // 33% of 3600 = 1188 before expiry
            (3600, pct(50), 0.0, 1800),
            (3600, pct(90), 0.0, 360), // 90% margin hits exactly the 10% floor
            (3600, before(300), 0.0, 3300),
            (3600, before(3600), 0.0, 360), // renewBefore >= lifetime: the floor
            (3600, before(7200), 0.0, 360),
            (86400, before(300), 0.0, 86100),
            (30, pct(33), 0.0, 20), // 9.9 s margin, truncated to ms: 20.1 s
            (3600, before(300), 0.999_999, 3270), // jitter at most 10% of the margin, earlier
            (3600, pct(33), 0.5, 2352),
        ];
        for (lifetime, settings, jitter, offset) in cases {
            let got = refresh_at(t(0), t(lifetime), &settings, jitter);
            let got_offset = got.duration_since(t(0)).as_secs();
            assert_eq!(
                got_offset, offset,
                "lifetime {lifetime} {settings:?} jitter {jitter}"
            );
        }
    }

    #[test]
    fn jitter_is_bounded_and_only_earlier() {
        for i in 0..100 {
            let jitter = f64::from(i) / 100.0;
            let got = refresh_at(t(0), t(3600), &before(600), jitter);
            assert!(got <= t(3000), "jitter must not delay");
            assert!(got >= t(2940), "jitter at most 10% of the 600 s margin");
        }
    }

    #[test]
    fn degenerate_lifetimes() {
        assert_eq!(refresh_at(t(0), t(0), &pct(33), 0.0), t(0));
        assert_eq!(refresh_at(t(10), t(0), &pct(33), 0.0), t(0));
        let got = refresh_at(t(0), t(1), &pct(33), 0.0);
        assert!(got > t(0) && got < t(1));
    }

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
