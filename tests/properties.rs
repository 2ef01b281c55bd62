//! Property tests (proptest) of the refresh timing and backoff functions and of the plan: for
//! any lifetime, issue time, settings and failure sequence.

use std::time::Duration;

use jiff::Timestamp;
use oauth_token_operator::api::crd::OAuthClientStatus;
use oauth_token_operator::api::reason::{Failure, Reason};
use oauth_token_operator::decide::{self, Attempt, Next, Observed, SecretState, StoredToken};
use oauth_token_operator::spec::RefreshSettings;
use oauth_token_operator::timing::backoff;
use oauth_token_operator::timing::refresh::{self, FLOOR_SHARE};
use proptest::prelude::*;

const YEAR: i64 = 365 * 24 * 3600;

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn settings() -> impl Strategy<Value = RefreshSettings> {
    (prop::option::of(0u64..(2 * YEAR as u64)), 1u8..=90).prop_map(|(before, pct)| {
        RefreshSettings {
            renew_before: before.map(Duration::from_secs),
            renew_before_percentage: pct,
        }
    })
}

fn reason() -> impl Strategy<Value = Reason> {
    prop::sample::select(Reason::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Refresh comes after the floor (10% of the lifetime), never after expiry, and before
    /// expiry whenever the margin allows it.
    #[test]
    fn refresh_is_before_expiry_and_after_the_floor(
        issued in -YEAR..YEAR, lifetime in 1i64..YEAR, s in settings(), jitter in 0.0f64..1.0
    ) {
        let (issued_at, expires_at) = (ts(issued), ts(issued + lifetime));
        let at = refresh::refresh_at(issued_at, expires_at, &s, jitter);
        let floor_ms = (lifetime as f64 * 1000.0 * FLOOR_SHARE) as i64;
        prop_assert!(at.duration_since(issued_at).as_millis() >= i128::from(floor_ms) - 1);
        prop_assert!(at <= expires_at);
        if lifetime >= 2 {
            prop_assert!(at < expires_at, "refresh at {at} for expiry {expires_at}");
        }
    }

    /// Backoff never exceeds its cap, never drops under a second, honours Retry-After up to
    /// the cap, and grows with the number of failures (ignoring jitter).
    #[test]
    fn backoff_is_bounded_and_monotone(
        r in reason(), failures in 0u32..200, after in prop::option::of(0u64..100_000), jitter in 0.0f64..1.0
    ) {
        let (_, cap) = backoff::backoff_bounds(r);
        let delay = backoff::retry_delay(r, failures, after.map(Duration::from_secs), jitter);
        prop_assert!(delay <= cap);
        prop_assert!(delay >= Duration::from_secs(1));
        if let Some(after) = after {
            prop_assert!(delay >= Duration::from_secs(after).min(cap));
        }
        let next = backoff::retry_delay(r, failures.saturating_add(1), None, 0.0);
        prop_assert!(next >= backoff::retry_delay(r, failures, None, 0.0));
    }

    /// Whatever happened, the next reconcile is never in the past nor sooner than a second, a
    /// failure never forgets the stored token, and Ready is True exactly while it is valid.
    #[test]
    fn plans_never_loop_and_never_lose_the_token(
        failures in prop::collection::vec(prop::option::of(reason()), 1..12),
        lifetime in 2i64..100_000,
        s in settings(),
        step in 1i64..10_000,
    ) {
        let uid = "uid-1";
        let mut status = OAuthClientStatus::default();
        let mut secret = SecretState::Absent;
        let mut now = ts(0);
        let mut streak = None;
        let mut issued_events = None;
        for outcome in failures {
            let observed = Observed {
                generation: Some(1),
                status: &status,
                refresh: Ok(s),
                credentials_problem: None,
                secret: &secret,
                refresh_requested_at: None,
                credentials_changed: false,
                trust_changed: false,
                uid,
                secret_name: "t",
                failure_streak: streak,
                issued_events,
                last_exchange_at: None,
                last_attempt_at: None,
                served_request: None,
                failure_seen_here: true,
                drift: None,
                restore_streak: 0,
                margin_warned: None,
            };
            let p = decide::plan(&observed, now);
            let attempt = match (&p.next, outcome) {
                (Next::Exchange(_), None) => Attempt::Issued {
                    exchanged_at: now,
                    issued_at: now,
                    expires_at: Timestamp::from_second(now.as_second() + lifetime).unwrap(),
                    token_type: "Bearer".into(),
                    scope: None,
                    issued_token_type: None,
                },
                (Next::Exchange(_), Some(r)) => Attempt::Failed(Failure::new(r, "failed")),
                _ => Attempt::None,
            };
            let settled = decide::settle(&observed, &p, &attempt, now, 0.5);
            prop_assert!(settled.requeue_at.duration_since(now).as_millis() >= 1000);
            if let (SecretState::Owned(Some(token)), Attempt::Failed(_)) = (&secret, &attempt) {
                prop_assert_eq!(settled.status.expires_at.clone(), Some(plan_rfc3339(token.expires_at)));
            }
            if let Attempt::Issued { issued_at, expires_at, .. } = &attempt {
                // The next scheduled exchange is at least 5 s away, however short the lifetime.
                let next: Timestamp = settled.status.next_refresh_at.as_deref().unwrap().parse().unwrap();
                prop_assert!(next.duration_since(*issued_at).as_secs() >= 5);
                secret = SecretState::Owned(Some(StoredToken {
                    issued_at: *issued_at,
                    expires_at: *expires_at,
                    current: true,
                    target_current: true,
                }));
            }
            let ready = settled.status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone());
            let valid = matches!(&secret, SecretState::Owned(Some(t)) if t.expires_at > now);
            prop_assert_eq!(ready.as_deref() == Some("True"), valid);
            status = settled.status;
            streak = settled.failure_streak;
            issued_events = settled.issued_events;
            now = Timestamp::from_second(now.as_second() + step).unwrap();
        }
    }
}

fn plan_rfc3339(t: Timestamp) -> String {
    oauth_token_operator::base::time::rfc3339(t)
}
