//! The record step: what the memory learns from the snapshot and the steps' outputs.

use std::time::Instant;

use super::*;
use crate::api::reason::Failure;
use crate::controller::memory::{Change, FailedWith, Verified, Written};
use crate::controller::reconcile::credentials::Loaded;
use crate::controller::reconcile::exchange::Counted;
use crate::controller::reconcile::record::{Issued, Outputs, learned};
use crate::controller::reconcile::write::WriteRecord;
use crate::decide::{Attempt, FailureStreak, Settled, Trigger};

const KEY: [u8; 32] = [7; 32];

fn settled(failure_streak: Option<FailureStreak>) -> Settled {
    Settled {
        status: Default::default(),
        event: None,
        notices: Vec::new(),
        margin_warned: Some(4),
        requeue_at: Timestamp::UNIX_EPOCH,
        failure_streak,
        issued_events: None,
    }
}

fn written(rv: &str) -> WriteRecord {
    WriteRecord {
        trusted_rv: Some(rv.into()),
        written: Written {
            before: vec![None],
            at: Instant::now(),
            annotations: Default::default(),
        },
    }
}

#[tokio::test]
async fn a_written_token_is_remembered_the_outbox_emptied_and_failures_forgotten() {
    let fixture = Fixture::new();
    let seen = fixture.snapshot(&client(spec("http://127.0.0.1:9/token")));
    let at = fixture.clock.now();
    let outputs = Outputs {
        counted: Some(Counted {
            trigger: Trigger::Restore,
            result: "success",
            seconds: Some(0.1),
        }),
        outbox: Change::Clear,
        written: Some(written("9")),
        issued: Some(Issued {
            verified: Verified {
                credentials_rv: Some("11".into()),
                fingerprint: "fp".into(),
                generation: Some(1),
                matched: true,
            },
            exchanged_at: at,
        }),
        ..Outputs::default()
    };
    let attempt = Attempt::Issued {
        exchanged_at: at,
        issued_at: at,
        expires_at: at,
        token_type: "Bearer".into(),
        scope: None,
        issued_token_type: None,
    };
    let learned = learned(&KEY, &seen, outputs, Some((&attempt, &settled(None))));
    assert!(matches!(&learned.caches.trusted_rv, Change::Set(rv) if rv == "9"));
    assert!(matches!(&learned.caches.verified, Change::Set(v) if v.fingerprint == "fp"));
    assert!(matches!(learned.caches.written, Change::Set(_)));
    assert!(matches!(learned.outbox, Change::Clear));
    assert!(matches!(learned.retry.failed_with, Change::Clear));
    assert_eq!(learned.retry.last_exchange_at, Some(at));
    assert_eq!(learned.retry.restore_streak, Some(1), "a restore in a row");
    assert_eq!(learned.retry.settled, Some(None));
    assert_eq!(learned.ledger.unwrap().margin_warned, Some(4));
}

#[tokio::test]
async fn a_failure_remembers_the_credentials_and_bundle_it_happened_with() {
    let fixture = Fixture::new();
    let mut seen = fixture.snapshot(&client(spec("http://127.0.0.1:9/token")));
    seen.trust_rv = Some("cached-5".into());
    let loaded = Loaded {
        resource_version: Some("12".into()),
        credentials: Err(Failure::invalid_credentials("no key")),
    };
    let digest = loaded.digest(&KEY);
    let outputs = Outputs {
        credentials: Some(loaded),
        ..Outputs::default()
    };
    let streak = FailureStreak {
        reason: crate::api::reason::Reason::InvalidClient,
        count: 1,
    };
    let attempt = Attempt::Failed(Failure::invalid_credentials("no key"));
    let learned = learned(
        &KEY,
        &seen,
        outputs,
        Some((&attempt, &settled(Some(streak)))),
    );
    let Change::Set(failed) = learned.retry.failed_with else {
        panic!("{:?}", learned.retry.failed_with);
    };
    assert_eq!(
        failed,
        FailedWith {
            resource_version: Some("12".into()),
            digest: Some(digest),
            trust_rv: Some("cached-5".into()),
        }
    );
    assert_eq!(learned.retry.settled, Some(Some(streak)));
    assert_eq!(learned.retry.restore_streak, None);
}

#[tokio::test]
async fn an_unsettled_reconcile_keeps_what_observing_found_and_leaves_the_rest() {
    let fixture = Fixture::new();
    let mut seen = fixture.snapshot(&client(spec("http://127.0.0.1:9/token")));
    seen.found.caches.trusted_rv = Change::Set("3".into());
    seen.found.trust_released = true;
    let learned = learned(&KEY, &seen, Outputs::default(), None);
    assert!(matches!(&learned.caches.trusted_rv, Change::Set(rv) if rv == "3"));
    assert!(matches!(learned.handles.trust, Change::Clear));
    assert!(learned.retry.settled.is_none(), "the streak is left alone");
    assert!(learned.ledger.is_none());
    assert!(matches!(learned.outbox, Change::Keep));
}

#[tokio::test]
async fn a_rerender_that_found_the_token_not_intact_stops_trusting_the_version() {
    let fixture = Fixture::new();
    let mut seen = fixture.snapshot(&client(spec("http://127.0.0.1:9/token")));
    seen.found.caches.trusted_rv = Change::Set("3".into());
    let outputs = Outputs {
        untrusted: true,
        ..Outputs::default()
    };
    let learned = learned(&KEY, &seen, outputs, Some((&Attempt::None, &settled(None))));
    assert!(matches!(learned.caches.trusted_rv, Change::Clear));
}
