//! When to refresh a token: a pure function of its times and the settings, with the jitter
//! passed in.
//!
//! * A token is refreshed at `expiresAt - renewBefore`, or, when `renewBefore` is unset, when
//!   `renewBeforePercentage` of its lifetime remains. Jitter moves the time earlier by at most
//!   10% of that margin, never later. The result is never earlier than 10% of the lifetime
//!   after issuance, so a long `renewBefore` cannot make a refresh loop.
//! * The jitter is fixed per token ([`token_jitter`]), so that a plan is stable across
//!   reconciles.
//! * [`MIN_EXCHANGE_INTERVAL`] bounds how soon after an exchange the next may be scheduled (the
//!   planner applies it).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::spec::RefreshSettings;

/// Largest share of the refresh margin that jitter may take (10%).
pub const JITTER_SHARE: f64 = 0.10;

/// Share of the lifetime before which no refresh is planned (10%).
pub const FLOOR_SHARE: f64 = 0.10;

/// A refresh margin (expiry minus refresh time) under this may let workloads read an expired
/// token: the kubelet refreshes a mounted Secret only when it resyncs the pod (every 60–90 s
/// with the default `syncFrequency` of 1 minute, minutes more with the `Cache` change-detection
/// strategy on large clusters).
pub const SHORT_MARGIN: Duration = Duration::from_secs(120);

/// The warning about a refresh margin (expiry minus refresh) under [`SHORT_MARGIN`], or `None`
/// when the margin is long enough: the operator puts it in the Ready condition and a
/// `ShortRenewMargin` event, `exchange` prints it.
pub fn short_margin_warning(refresh_at: Timestamp, expires_at: Timestamp) -> Option<String> {
    let margin = expires_at.duration_since(refresh_at).as_secs();
    (margin < SHORT_MARGIN.as_secs() as i64).then(|| {
        format!(
            "its refresh margin of {}s (expiry minus refresh) is under {}s: pods that mount the Secret may read an expired token, since the kubelet updates mounted Secrets only every 60-90 s; set refresh.renewBefore to at least 2m or use longer-lived tokens",
            margin.max(0),
            SHORT_MARGIN.as_secs()
        )
    })
}

/// The least time between a client's exchange and its next scheduled refresh. A token that
/// lives shorter is expired in between (and such lifetimes are too short for mounted Secrets
/// anyway: the kubelet refreshes those only about once a minute).
pub const MIN_EXCHANGE_INTERVAL: Duration = Duration::from_secs(5);

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

/// A number in [0, 1) fixed for one token of one object.
pub fn token_jitter(uid: &str, issued_at: Timestamp) -> f64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{uid}/{}", issued_at.as_second()));
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (n >> 11) as f64 / (1u64 << 53) as f64
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
}
