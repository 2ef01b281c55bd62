//! Pure tests of planning and settling, with an injected clock.

use super::*;
use crate::api::conditions::find;
use crate::api::conditions::{DEGRADED, READY, REFRESH_SUCCEEDED, TOKEN_ISSUED};
use crate::api::reason::Reason;
use crate::base::time::{add, ceil_second, rfc3339};
use crate::timing::refresh::token_jitter;

const UID: &str = "0f0e0d0c-uid";
const SECRET: &str = "demo-token";

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn pct33() -> RefreshSettings {
    RefreshSettings {
        renew_before: None,
        renew_before_percentage: 33,
    }
}

fn token(issued: i64, expires: i64) -> StoredToken {
    StoredToken {
        issued_at: t(issued),
        expires_at: t(expires),
        current: true,
        target_current: true,
    }
}

struct Case {
    status: OAuthClientStatus,
    refresh: Result<RefreshSettings, Failure>,
    credentials_problem: Option<Failure>,
    secret: SecretState,
    requested: Option<Timestamp>,
    credentials_changed: bool,
    trust_changed: bool,
    generation: i64,
    streak: Option<FailureStreak>,
    issued_events: Option<IssuedEvents>,
    margin_warned: Option<i64>,
    /// When this "process" last attempted, and whether it saw the failure itself.
    attempted: Option<Timestamp>,
    served: Option<Timestamp>,
    seen_here: bool,
}

impl Case {
    fn new(secret: SecretState) -> Self {
        Case {
            status: OAuthClientStatus::default(),
            refresh: Ok(pct33()),
            credentials_problem: None,
            secret,
            requested: None,
            credentials_changed: false,
            trust_changed: false,
            generation: 1,
            streak: None,
            issued_events: None,
            margin_warned: None,
            attempted: None,
            served: None,
            seen_here: false,
        }
    }
    /// What a new process knows: the status alone.
    fn restart(&mut self) {
        self.streak = None;
        self.attempted = None;
        self.served = None;
        self.seen_here = false;
    }
    fn observed(&self) -> Observed<'_> {
        Observed {
            generation: Some(self.generation),
            status: &self.status,
            refresh: self.refresh.as_ref().map(|r| *r),
            credentials_problem: self.credentials_problem.as_ref(),
            secret: &self.secret,
            refresh_requested_at: self.requested,
            credentials_changed: self.credentials_changed,
            trust_changed: self.trust_changed,
            uid: UID,
            secret_name: SECRET,
            failure_streak: self.streak,
            issued_events: self.issued_events,
            last_exchange_at: None,
            last_attempt_at: self.attempted,
            served_request: self.served,
            failure_seen_here: self.seen_here,
            drift: None,
            restore_streak: 0,
            margin_warned: self.margin_warned,
        }
    }
    fn plan(&self, now: Timestamp) -> Plan {
        plan(&self.observed(), now)
    }
    /// Runs plan and settle with `attempt`, then adopts the resulting status.
    fn step(&mut self, now: Timestamp, attempt: Attempt) -> Settled {
        let p = self.plan(now);
        let settled = settle(&self.observed(), &p, &attempt, now, 0.0);
        self.status = settled.status.clone();
        self.streak = settled.failure_streak;
        if !matches!(attempt, Attempt::None) {
            self.attempted = Some(now);
            self.served = self.requested;
        }
        self.seen_here = matches!(attempt, Attempt::Failed(_));
        self.issued_events = settled.issued_events;
        self.margin_warned = settled.margin_warned;
        settled
    }
}

fn issued(issued: i64, expires: i64) -> Attempt {
    Attempt::Issued {
        exchanged_at: t(issued),
        issued_at: t(issued),
        expires_at: t(expires),
        token_type: "Bearer".into(),
        scope: Some("read".into()),
        issued_token_type: None,
    }
}

fn failed(reason: Reason, message: &str) -> Attempt {
    Attempt::Failed(Failure::new(reason, message))
}

/// The next attempt the settled status announces.
fn next_at(settled: &Settled) -> Timestamp {
    settled
        .status
        .next_refresh_at
        .as_deref()
        .expect("nextRefreshAt")
        .parse()
        .unwrap()
}

fn cond(status: &OAuthClientStatus, type_: &str) -> (String, String) {
    let c = find(&status.conditions, type_).expect(type_);
    (c.status.clone(), c.reason.clone())
}

#[test]
fn new_client_exchanges_at_once() {
    for secret in [SecretState::Absent, SecretState::Owned(None)] {
        let case = Case::new(secret);
        assert!(matches!(case.plan(t(0)).next, Next::Exchange(_)));
    }
}

#[test]
fn valid_token_waits_for_its_refresh_time() {
    let case = Case::new(SecretState::Owned(Some(token(0, 3600))));
    let p = case.plan(t(100));
    assert_eq!(p.next, Next::Idle);
    // 33% of 3600 s before expiry, minus at most 10% of that margin.
    assert!(
        p.due_at <= t(2412) && p.due_at >= t(2412 - 119),
        "{}",
        p.due_at
    );
    assert_eq!(p.due_at, case.plan(t(200)).due_at, "the plan is stable");
    assert!(matches!(case.plan(p.due_at).next, Next::Exchange(_)));
}

#[test]
fn token_for_other_spec_or_credentials_or_expired_is_replaced_at_once() {
    let stale = StoredToken {
        current: false,
        ..token(0, 3600)
    };
    assert_eq!(
        Case::new(SecretState::Owned(Some(stale))).plan(t(10)).next,
        Next::Exchange(Trigger::SpecChanged)
    );
    let expired = token(0, 60);
    assert_eq!(
        Case::new(SecretState::Owned(Some(expired)))
            .plan(t(61))
            .next,
        Next::Exchange(Trigger::RefreshDue)
    );
}

#[test]
fn target_change_rerenders_without_exchanging() {
    let tok = StoredToken {
        target_current: false,
        ..token(0, 3600)
    };
    assert_eq!(
        Case::new(SecretState::Owned(Some(tok))).plan(t(10)).next,
        Next::Rerender
    );
}

#[test]
fn pre_exchange_failures_in_priority_order() {
    let mut case = Case::new(SecretState::Conflict("taken".into()));
    case.credentials_problem = Some(Failure::new(Reason::CredentialsNotFound, "no secret"));
    assert_eq!(
        case.plan(t(0)).next,
        Next::Fail(
            Trigger::NoToken,
            Failure::new(Reason::SecretConflict, "taken")
        )
    );
    case.secret = SecretState::Absent;
    assert!(
        matches!(case.plan(t(0)).next, Next::Fail(_, f) if f.reason == Reason::CredentialsNotFound)
    );
    case.refresh = Err(Failure::invalid_spec("bad"));
    assert!(matches!(case.plan(t(0)).next, Next::Fail(_, f) if f.reason == Reason::InvalidSpec));
}

#[test]
fn success_sets_ready_status_and_event() {
    let mut case = Case::new(SecretState::Absent);
    let settled = case.step(t(0), issued(0, 3600));
    let s = &settled.status;
    assert_eq!(cond(s, READY), ("True".into(), TOKEN_ISSUED.into()));
    assert_eq!(
        cond(s, DEGRADED),
        ("False".into(), REFRESH_SUCCEEDED.into())
    );
    assert_eq!(s.issued_at.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert_eq!(s.expires_at.as_deref(), Some("2023-11-14T23:13:20Z"));
    assert_eq!(s.consecutive_failures, Some(0));
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(s.secret_name.as_deref(), Some(SECRET));
    assert_eq!(s.scope.as_deref(), Some("read"));
    assert_eq!(settled.event.as_ref().unwrap().reason, "TokenIssued");
    assert_eq!(
        s.next_refresh_at.as_deref().unwrap(),
        rfc3339(ceil_second(settled.requeue_at))
    );
    for c in &s.conditions {
        assert_eq!(c.observed_generation, Some(1));
    }
}

#[test]
fn steady_state_settles_to_the_same_status() {
    let mut case = Case::new(SecretState::Absent);
    case.step(t(0), issued(0, 3600));
    case.secret = SecretState::Owned(Some(token(0, 3600)));
    let before = case.status.clone();
    for now in [10, 100, 1000, 2000] {
        let settled = case.step(t(now), Attempt::None);
        assert_eq!(settled.status, before, "no change at t+{now}");
        assert!(settled.event.is_none());
    }
}

#[test]
fn restart_with_lost_status_reuses_the_token() {
    let case = Case::new(SecretState::Owned(Some(token(0, 3600))));
    let p = case.plan(t(30));
    assert_eq!(p.next, Next::Idle);
    let settled = settle(&case.observed(), &p, &Attempt::None, t(30), 0.0);
    assert_eq!(
        cond(&settled.status, READY),
        ("True".into(), TOKEN_ISSUED.into())
    );
    assert_eq!(
        cond(&settled.status, DEGRADED),
        ("False".into(), REFRESH_SUCCEEDED.into())
    );
    assert_eq!(
        settled.status.issued_at.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
}

#[test]
fn failed_refresh_keeps_ready_while_the_token_is_valid_then_token_expired() {
    let mut case = Case::new(SecretState::Absent);
    case.step(t(0), issued(0, 600));
    case.secret = SecretState::Owned(Some(token(0, 600)));
    let due = case.plan(t(1)).due_at;
    assert!(matches!(case.plan(due).next, Next::Exchange(_)));
    let settled = case.step(due, failed(Reason::EndpointUnavailable, "HTTP 503"));
    assert_eq!(
        cond(&settled.status, READY),
        ("True".into(), TOKEN_ISSUED.into())
    );
    assert_eq!(
        cond(&settled.status, DEGRADED),
        ("True".into(), "EndpointUnavailable".into())
    );
    assert_eq!(settled.status.consecutive_failures, Some(1));
    assert_eq!(settled.event.as_ref().unwrap().reason, "ExchangeFailed");
    // Retry about 5 s later (transient), not before.
    let retry_at: Timestamp = next_at(&settled);
    let wait = retry_at.duration_since(due).as_secs_f64();
    assert!(
        (5.0..6.0).contains(&wait),
        "about 5 s, rounded up to a whole second: {wait}"
    );
    assert_eq!(case.plan(due).next, Next::Idle);
    // While waiting past expiry, Ready turns False with TokenExpired.
    case.status.next_refresh_at = Some(rfc3339(t(10_000)));
    let settled = case.step(t(700), Attempt::None);
    assert_eq!(
        cond(&settled.status, READY),
        ("False".into(), "TokenExpired".into())
    );
    assert_eq!(
        cond(&settled.status, DEGRADED),
        ("True".into(), "EndpointUnavailable".into())
    );
    // The issuedAt/expiresAt of the stored token stay.
    assert_eq!(
        settled.status.expires_at.as_deref(),
        Some("2023-11-14T22:23:20Z")
    );
}

#[test]
fn failure_without_token_is_ready_false_with_the_reason() {
    let mut case = Case::new(SecretState::Absent);
    let settled = case.step(
        t(0),
        failed(Reason::InvalidClient, "HTTP 401: invalid_client"),
    );
    assert_eq!(
        cond(&settled.status, READY),
        ("False".into(), "InvalidClient".into())
    );
    assert_eq!(
        cond(&settled.status, DEGRADED),
        ("True".into(), "InvalidClient".into())
    );
    let retry_at: Timestamp = next_at(&settled);
    assert_eq!(retry_at, t(60), "auth failures back off from 1 min");
    assert_eq!(settled.requeue_at, t(60));
}

#[test]
fn repeated_identical_failures_emit_one_event_and_back_off() {
    let mut case = Case::new(SecretState::Absent);
    let mut now = t(0);
    let mut events = 0;
    let mut delays = Vec::new();
    for _ in 0..8 {
        assert!(matches!(case.plan(now).next, Next::Exchange(_)));
        let settled = case.step(now, failed(Reason::InvalidClient, "HTTP 401"));
        events += usize::from(settled.event.is_some());
        let next: Timestamp = next_at(&settled);
        delays.push(next.duration_since(now).as_secs());
        now = next;
    }
    assert_eq!(events, 1);
    assert_eq!(delays, [60, 120, 240, 480, 960, 1800, 1800, 1800]);
    assert_eq!(case.status.consecutive_failures, Some(8));
    // A different failure is a new event.
    let settled = case.step(now, failed(Reason::EndpointUnavailable, "HTTP 503"));
    assert!(settled.event.is_some());
}

#[test]
fn a_failure_of_another_reason_starts_its_schedule_from_the_first_step() {
    let mut case = Case::new(SecretState::Absent);
    let mut now = t(0);
    let mut delays = Vec::new();
    for attempt in [
        failed(Reason::RateLimited, "HTTP 429"),
        failed(Reason::RateLimited, "HTTP 429"),
        failed(Reason::EndpointUnavailable, "HTTP 503"),
        failed(Reason::InvalidSpec, "spec.tokenUrl: not https"),
        failed(Reason::InvalidSpec, "spec.tokenUrl: not https"),
        failed(Reason::CredentialsNotFound, "Secret creds not found"),
        failed(Reason::EndpointUnavailable, "HTTP 503"),
    ] {
        let settled = case.step(now, attempt);
        let next: Timestamp = next_at(&settled);
        delays.push(next.duration_since(now).as_secs());
        now = next;
    }
    // 5 s, 10 s for two 429s; a 503 starts again at 5 s; two InvalidSpec 1 min, 2 min; then
    // CredentialsNotFound about 1 min (not 4); a 503 after them 5 s again.
    assert_eq!(delays, [5, 10, 5, 60, 120, 60, 5]);
    assert_eq!(
        case.status.consecutive_failures,
        Some(7),
        "failed attempts since the last success"
    );
}

#[test]
fn after_a_restart_the_status_tells_the_streak() {
    let mut case = Case::new(SecretState::Absent);
    let mut now = t(0);
    for expected in [60, 120, 240] {
        let settled = case.step(now, failed(Reason::InvalidClient, "HTTP 401"));
        let next: Timestamp = next_at(&settled);
        assert_eq!(next.duration_since(now).as_secs(), expected);
        now = next;
    }
    // A new process has no streak: Degraded's reason and consecutiveFailures decide.
    case.restart();
    let settled = case.step(now, failed(Reason::InvalidClient, "HTTP 401"));
    let next: Timestamp = next_at(&settled);
    assert_eq!(
        next.duration_since(now).as_secs(),
        480,
        "4th 401: 1 min x 2^3"
    );
    case.restart();
    let settled = case.step(next, failed(Reason::EndpointUnavailable, "HTTP 503"));
    let after: Timestamp = next_at(&settled);
    assert_eq!(
        after.duration_since(next).as_secs(),
        5,
        "another reason: first step"
    );
}

#[test]
fn transient_failures_honour_retry_after_within_the_cap() {
    let mut case = Case::new(SecretState::Absent);
    let mut f = Failure::new(Reason::RateLimited, "HTTP 429");
    f.retry_after = Some(Duration::from_secs(42));
    let settled = case.step(t(0), Attempt::Failed(f));
    assert_eq!(
        settled.status.next_refresh_at.as_deref(),
        Some(rfc3339(t(42)).as_str())
    );
}

#[test]
fn spec_or_credentials_change_retries_at_once() {
    let mut case = Case::new(SecretState::Absent);
    case.step(t(0), failed(Reason::InvalidClient, "HTTP 401"));
    assert_eq!(case.plan(t(5)).next, Next::Idle);
    case.credentials_changed = true;
    assert!(matches!(case.plan(t(5)).next, Next::Exchange(_)));
    case.credentials_changed = false;
    case.generation = 2;
    assert!(matches!(case.plan(t(5)).next, Next::Exchange(_)));
}

#[test]
fn force_refresh_exchanges_exactly_once() {
    let mut case = Case::new(SecretState::Absent);
    case.step(t(0), issued(0, 3600));
    case.secret = SecretState::Owned(Some(token(0, 3600)));
    case.requested = Some(t(50));
    assert_eq!(
        case.plan(t(40)).next,
        Next::Idle,
        "a request in the future waits"
    );
    assert_eq!(case.plan(t(40)).due_at, t(50));
    assert!(matches!(case.plan(t(60)).next, Next::Exchange(_)));
    case.step(t(60), issued(60, 3660));
    case.secret = SecretState::Owned(Some(token(60, 3660)));
    assert_eq!(
        case.plan(t(61)).next,
        Next::Idle,
        "served: issuedAt is now later"
    );
    // A request older than the last issue is ignored.
    case.requested = Some(t(10));
    assert_eq!(case.plan(t(62)).next, Next::Idle);
}

#[test]
fn force_refresh_while_failing_acts_at_once_once_per_request() {
    let mut case = Case::new(SecretState::Owned(Some(token(0, 3600))));
    // Three 401s: the next retry is 4 min after the third.
    let mut now = t(0);
    for _ in 0..3 {
        let settled = case.step(now, failed(Reason::InvalidClient, "HTTP 401"));
        now = next_at(&settled);
    }
    assert_eq!(now, t(180 + 240));
    // A request one second after the last attempt waits for the 5 s minimum, not the backoff.
    case.requested = Some(t(181));
    assert_eq!(case.plan(t(182)).next, Next::Idle);
    assert_eq!(case.plan(t(182)).due_at, t(185));
    let Next::Exchange(trigger) = case.plan(t(185)).next else {
        panic!("{:?}", case.plan(t(185)))
    };
    assert_eq!(trigger, Trigger::Requested);
    let settled = case.step(t(185), failed(Reason::InvalidClient, "HTTP 401"));
    // Served once: the backoff rules again.
    assert_eq!(case.plan(t(190)).next, Next::Idle);
    assert!(
        next_at(&settled) > t(185 + 400),
        "the streak goes on: 8 min"
    );
    // Requests are stamped in whole seconds: one made just after an attempt, in its second, is
    // a new request all the same (the attempt served the one before it).
    let attempt_at = Timestamp::from_millisecond(1_700_000_190_094).unwrap();
    case.requested = Some(t(189));
    case.step(attempt_at, failed(Reason::InvalidClient, "HTTP 401"));
    case.requested = Some(t(190));
    assert_eq!(
        case.plan(t(191)).due_at,
        add(attempt_at, Duration::from_secs(5))
    );
    assert!(matches!(
        case.plan(t(196)).next,
        Next::Exchange(Trigger::Requested)
    ));
    // A new process knows only the status: a request older than the streak's start was
    // served; one made during the streak is served once more (the status keeps no time of the
    // last attempt).
    case.restart();
    case.requested = Some(t(0) - jiff::SignedDuration::from_secs(1));
    assert_eq!(case.plan(t(200)).next, Next::Idle);
    case.requested = Some(t(181));
    assert!(matches!(
        case.plan(t(200)).next,
        Next::Exchange(Trigger::Requested)
    ));
}

#[test]
fn a_conflict_that_is_gone_retries_at_once() {
    let mut case = Case::new(SecretState::Conflict(
        "Secret t is not managed by this client".into(),
    ));
    let Next::Fail(_, failure) = case.plan(t(0)).next else {
        panic!()
    };
    case.step(t(0), Attempt::Failed(failure));
    assert_eq!(
        case.plan(t(10)).next,
        Next::Idle,
        "still in the way: backoff"
    );
    case.secret = SecretState::Absent;
    assert!(
        matches!(case.plan(t(10)).next, Next::Exchange(_)),
        "deleted: at once"
    );
}

#[test]
fn an_invalid_spec_that_resolves_on_a_new_process_retries_at_once_and_only_then() {
    let mut case = Case::new(SecretState::Absent);
    case.refresh = Err(Failure::invalid_spec(
        "ServiceAccountToken needs --allow-service-account-tokens",
    ));
    let Next::Fail(_, failure) = case.plan(t(0)).next else {
        panic!()
    };
    case.step(t(0), Attempt::Failed(failure));
    // The same process with the same flags: the backoff.
    case.refresh = Ok(pct33());
    assert_eq!(case.plan(t(10)).next, Next::Idle);
    // A process started with the flag: at once.
    case.restart();
    assert!(matches!(case.plan(t(10)).next, Next::Exchange(_)));
    // A refusal after the request (the size limit) seen by this process follows the backoff.
    let settled = case.step(
        t(10),
        failed(Reason::InvalidSpec, "the Secret would exceed 256 KiB"),
    );
    assert_eq!(case.plan(t(11)).next, Next::Idle);
    assert_eq!(next_at(&settled), t(130), "the second InvalidSpec: 2 min");
}

#[test]
fn invalid_spec_is_reported_once_then_waits() {
    let mut case = Case::new(SecretState::Absent);
    case.refresh = Err(Failure::invalid_spec("spec.tokenUrl is not a valid URL"));
    let Next::Fail(_, f) = case.plan(t(0)).next else {
        panic!()
    };
    let settled = case.step(t(0), Attempt::Failed(f));
    assert_eq!(
        cond(&settled.status, READY),
        ("False".into(), "InvalidSpec".into())
    );
    // The status write triggers another reconcile: nothing more happens.
    let again = case.step(t(1), Attempt::None);
    assert_eq!(again.status, settled.status);
    assert!(again.event.is_none());
}

#[test]
fn never_a_tight_loop() {
    let case = Case::new(SecretState::Owned(Some(token(0, 3600))));
    let p = case.plan(t(5000));
    let settled = settle(&case.observed(), &p, &Attempt::None, t(5000), 0.0);
    assert!(settled.requeue_at >= t(5001));
}

#[test]
fn token_jitter_is_fixed_per_token_and_in_range() {
    let a = token_jitter(UID, t(0));
    assert_eq!(a, token_jitter(UID, t(0)));
    assert_ne!(a, token_jitter(UID, t(1)));
    for i in 0..1000 {
        let j = token_jitter(&format!("uid-{i}"), t(i));
        assert!((0.0..1.0).contains(&j));
    }
}

#[test]
fn every_exchange_names_its_trigger() {
    let trigger = |case: &Case, now: i64| match case.plan(t(now)).next {
        Next::Exchange(trigger) | Next::Fail(trigger, _) => Some(trigger),
        _ => None,
    };
    // A new client: nothing stored.
    let mut case = Case::new(SecretState::Absent);
    assert_eq!(trigger(&case, 0), Some(Trigger::NoToken));
    case.secret = SecretState::Owned(None);
    assert_eq!(trigger(&case, 0), Some(Trigger::NoToken));
    // A token for another spec (the generation moved) or other credentials (it did not).
    let stale = StoredToken {
        current: false,
        ..token(0, 3600)
    };
    let mut case = Case::new(SecretState::Owned(Some(stale)));
    case.status.observed_generation = Some(1);
    case.generation = 2;
    assert_eq!(trigger(&case, 10), Some(Trigger::SpecChanged));
    case.generation = 1;
    assert_eq!(trigger(&case, 10), Some(Trigger::CredentialsChanged));
    // A current token: its refresh time, or a request.
    let mut case = Case::new(SecretState::Owned(Some(token(0, 3600))));
    case.status.observed_generation = Some(1);
    case.status.issued_at = Some(crate::base::time::rfc3339(t(0)));
    assert_eq!(trigger(&case, 10), None);
    assert_eq!(trigger(&case, 3000), Some(Trigger::RefreshDue));
    case.requested = Some(t(20));
    assert_eq!(trigger(&case, 25), Some(Trigger::Requested));
    // While failing, a change that cuts the backoff short is the trigger.
    let mut case = Case::new(SecretState::Absent);
    case.status.observed_generation = Some(1);
    case.status.consecutive_failures = Some(2);
    case.status.next_refresh_at = Some(crate::base::time::rfc3339(t(600)));
    assert_eq!(trigger(&case, 10), None, "backing off");
    case.credentials_changed = true;
    assert_eq!(trigger(&case, 10), Some(Trigger::CredentialsChanged));
    case.credentials_changed = false;
    case.generation = 2;
    assert_eq!(trigger(&case, 10), Some(Trigger::SpecChanged));
}

#[test]
fn a_request_in_the_second_of_the_exchange_that_served_it_is_not_served_twice() {
    // The status keeps whole seconds: issuedAt 00:00:00 for an exchange at 00:00:00.400 that
    // served a request made at 00:00:00.036. The precise time of the exchange tells.
    let mut case = Case::new(SecretState::Owned(Some(token(0, 3600))));
    case.status.observed_generation = Some(1);
    case.status.issued_at = Some(crate::base::time::rfc3339(t(0)));
    case.requested = Some(Timestamp::from_millisecond(1_700_000_000_036).unwrap());
    let mut observed = case.observed();
    observed.last_exchange_at = Some(Timestamp::from_millisecond(1_700_000_000_400).unwrap());
    assert_eq!(plan(&observed, t(1)).next, Next::Idle);
    // Without it (after a restart) the request counts as newer: one exchange, not a loop, and
    // still 5 s after the exchange the status shows.
    assert_eq!(case.plan(t(1)).due_at, t(5));
    assert!(matches!(
        case.plan(t(5)).next,
        Next::Exchange(Trigger::Requested)
    ));
}

#[test]
fn a_margin_too_short_for_mounted_secrets_is_said_and_warned_once_per_generation() {
    // A 90 s token refreshed at two thirds: 30 s of margin, under the 2 minutes the kubelet
    // may take to update a mounted Secret.
    let mut case = Case::new(SecretState::Absent);
    let first = case.step(t(0), issued(0, 90));
    let ready = find(&first.status.conditions, READY).unwrap();
    assert!(
        ready.message.contains("refresh margin of"),
        "{}",
        ready.message
    );
    assert_eq!(first.notices.len(), 1);
    assert_eq!(first.notices[0].reason, "ShortRenewMargin");
    assert!(!first.notices[0].normal);
    // The next token of the same generation: said again, not warned again.
    case.secret = SecretState::Owned(Some(token(0, 90)));
    let again = case.step(t(65), issued(65, 155));
    assert!(again.notices.is_empty());
    assert!(
        find(&again.status.conditions, READY)
            .unwrap()
            .message
            .contains("refresh margin")
    );
    // A new generation warns again.
    case.generation = 2;
    let next = case.step(t(130), issued(130, 220));
    assert_eq!(next.notices.len(), 1);
    // A margin of an hour says nothing.
    let mut long = Case::new(SecretState::Absent);
    let settled = long.step(t(0), issued(0, 3600 * 3));
    assert!(settled.notices.is_empty());
    assert!(
        !find(&settled.status.conditions, READY)
            .unwrap()
            .message
            .contains("margin")
    );
}

#[test]
fn a_ca_bundle_change_retries_at_once_after_a_failure_and_only_then() {
    let mut case = Case::new(SecretState::Absent);
    case.step(
        t(0),
        failed(
            Reason::EndpointUnavailable,
            "TLS: certificate signed by an unknown authority",
        ),
    );
    assert_eq!(case.plan(t(2)).next, Next::Idle, "backing off");
    case.trust_changed = true;
    assert_eq!(case.plan(t(2)).next, Next::Exchange(Trigger::TrustChanged));
    // With a current token and no failure, a bundle change alone makes nothing due.
    let mut healthy = Case::new(SecretState::Owned(Some(StoredToken {
        issued_at: t(0),
        expires_at: t(3600),
        current: true,
        target_current: true,
    })));
    healthy.trust_changed = true;
    assert_eq!(healthy.plan(t(10)).next, Next::Idle);
    assert_eq!(Trigger::TrustChanged.as_str(), "trust_changed");
}

/// A token that expires before the next exchange may be sent (it lives 1 s; exchanges are at
/// least 5 s apart): the reconcile that stored it looks again when it expires, so that Ready
/// turns False then (no later reconcile is caused by the operator's own writes).
#[test]
fn a_token_expiring_before_the_next_exchange_brings_the_next_look_forward_to_its_expiry() {
    let mut case = Case::new(SecretState::Absent);
    let settled = case.step(t(0), issued(0, 1));
    assert!(
        next_at(&settled) > t(1),
        "the next exchange waits for the least interval"
    );
    assert_eq!(settled.requeue_at, t(1));
    let long = Case::new(SecretState::Absent).step(t(0), issued(0, 3600));
    assert!(
        long.requeue_at > t(1800) && long.requeue_at <= next_at(&long),
        "a longer-lived token: the refresh time, {}",
        long.requeue_at
    );
}
