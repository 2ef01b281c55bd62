//! Step 4, the exchange: a place at the exchange gate ([`admit`]), then, with the inputs
//! loaded, the token request ([`send`]); returns what happened. It writes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::credentials::Loaded;
use super::observe::Snapshot;
use super::trust::LoadedTrust;
use crate::api::name::NamespacedName;
use crate::api::reason::Failure;
use crate::controller::context::{Context, Shared};
use crate::controller::gate::{Pass, STALL};
use crate::controller::memory::{Change, Pending, queue_ref};
use crate::decide::Trigger;
use crate::oauth::credentials::Credentials;
use crate::oauth::exchange;
use crate::oauth::transport::HttpClient;
use crate::output::fingerprint;
use crate::spec::ClientSettings;

/// One exchange attempt, or one refusal before it, as the metrics count it.
#[derive(Clone, Copy, Debug)]
pub struct Counted {
    /// Why it was due.
    pub trigger: Trigger,
    /// `success` or the failure reason.
    pub result: &'static str,
    /// The request's duration, when a request was sent.
    pub seconds: Option<f64>,
}

impl Counted {
    /// An attempt refused before any request.
    pub fn refused(trigger: Trigger, failure: &Failure) -> Counted {
        Counted {
            trigger,
            result: failure.reason.as_str(),
            seconds: None,
        }
    }
}

/// What the token request came to.
#[derive(Debug)]
pub enum Exchanged {
    /// A token, to be written.
    Issued(Box<Pending>),
    /// The request could not be made, or the endpoint refused it.
    Failed(Failure),
}

/// A token request, as sent.
#[derive(Debug)]
pub struct Sent {
    /// What it came to.
    pub exchanged: Exchanged,
    /// As the metrics count it.
    pub counted: Counted,
    /// The identity client it went through (TlsClientAuth), kept while the client uses it; any
    /// other method lets go of one.
    pub identity: Change<HttpClient>,
}

/// The endpoint a request of `settings` goes to, as the gate counts it (`host:port`).
pub fn endpoint(settings: &ClientSettings) -> String {
    let url = &settings.exchange.token_url;
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default().trim_end_matches('.'),
        url.port_or_known_default().unwrap_or_default()
    )
}

/// A place at the gate for a request of `settings`, or `None` when there is no room (the gate
/// wakes the client when there is).
pub fn admit(ctx: &Context, seen: &Snapshot, settings: &ClientSettings) -> Option<Pass> {
    let endpoint = endpoint(settings);
    let pass = ctx
        .shared
        .gate
        .enter(&endpoint, ctx.scope, &queue_ref(&seen.key));
    if pass.is_none() {
        tracing::debug!(endpoint, "waiting for room at the exchange gate");
    }
    pass
}

/// Takes the client out of the gate's queue (and gives back a place reserved for it): its
/// reconcile needs no request after all.
pub fn leave_the_queue(ctx: &Context, seen: &Snapshot) {
    ctx.shared.gate.forget(ctx.scope, &queue_ref(&seen.key));
}

/// How long a client waiting at the gate waits at most before it looks again by itself (the
/// gate normally wakes it sooner): twice the longest a request can take.
pub fn deferred_wait(ctx: &Context) -> Duration {
    (ctx.shared.request_timeout * 2).max(Duration::from_secs(5))
}

/// Sends the token request through `client` with `sent_credentials`, holding the gate's
/// `pass` until the answer; the token comes back with the fingerprint of the credentials
/// `as_read`. Owns what it uses, so that it can go on by itself once stalled ([`detach`]).
pub async fn send(
    shared: Arc<Shared>,
    pass: Pass,
    trigger: Trigger,
    settings: ClientSettings,
    as_read: Loaded,
    sent_credentials: Credentials,
    client: HttpClient,
) -> Sent {
    let sent = send_now(
        &shared,
        trigger,
        &settings,
        &as_read,
        &sent_credentials,
        &client,
    )
    .await;
    drop(pass);
    sent
}

async fn send_now(
    shared: &Shared,
    trigger: Trigger,
    settings: &ClientSettings,
    as_read: &Loaded,
    sent_credentials: &Credentials,
    client: &HttpClient,
) -> Sent {
    let started = Instant::now();
    let clock = shared.clock.as_ref();
    let result = exchange::exchange(client, &settings.exchange, sent_credentials, clock).await;
    // Failures found before any request (the request could not be built) have no duration.
    let sent = !matches!(&result, Err(f) if f.before_request());
    let counted = Counted {
        trigger,
        result: result
            .as_ref()
            .map_or_else(|f| f.reason.as_str(), |_| "success"),
        seconds: sent.then(|| started.elapsed().as_secs_f64()),
    };
    let identity = match client.presents() {
        Some(_) => Change::Set(client.clone()),
        None => Change::Clear,
    };
    // The credentials as read (a ServiceAccount, not its token) are what the stored token is
    // fingerprinted with.
    let credentials = as_read.credentials.as_ref().unwrap_or(sent_credentials);
    let exchanged = match result {
        Ok(token) => Exchanged::Issued(Box::new(Pending {
            fingerprint: fingerprint::compute(
                &fingerprint::new_salt(),
                &settings.exchange,
                credentials,
            ),
            token,
            settings: settings.exchange.clone(),
            credentials_rv: as_read.resource_version.clone(),
            credentials_digest: fingerprint::credentials_digest(
                &shared.credentials_key,
                credentials,
            ),
        })),
        Err(failure) => Exchanged::Failed(failure),
    };
    Sent {
        exchanged,
        counted,
        identity,
    }
}

/// A token request that went on by itself after it stalled, and what it came to.
#[derive(Debug)]
pub enum Detached {
    /// Still out.
    Out,
    /// Answered (or failed): its outcome, with the credentials and trust it went with.
    Done(Box<Outcome>),
}

/// What a detached request came to.
#[derive(Debug)]
pub struct Outcome {
    /// The request, as sent.
    pub sent: Sent,
    /// The credentials as read for it.
    pub credentials: Loaded,
    /// The trust's client it went through.
    pub trust: LoadedTrust,
}

impl Outcome {
    /// Whether it still counts: a token for the settings and credentials the client has now (a
    /// failure always does: it is what the last attempt came to).
    pub fn still_fresh(&self, settings: &ClientSettings, seen: &Snapshot) -> bool {
        match &self.sent.exchanged {
            Exchanged::Failed(_) => true,
            Exchanged::Issued(pending) => pending.still_fresh(
                &settings.exchange,
                &settings.refresh,
                seen.credentials_rv.as_ref(),
                seen.now,
            ),
        }
    }
}

/// The token requests of this scope that went on by themselves.
pub type DetachedRequests = Arc<Mutex<HashMap<NamespacedName, Detached>>>;

/// Awaits `request` for [`STALL`]; when it has no answer by then, lets it go on by itself (its
/// reconcile ends, so that a hanging endpoint holds no worker slot of the controller): its outcome
/// is kept, with the `credentials` and `trust` it went with, for the client's next reconcile,
/// which the gate triggers. `None` when detached.
pub async fn answer_or_detach(
    ctx: &Context,
    key: &NamespacedName,
    trigger: Trigger,
    request: tokio::task::JoinHandle<Sent>,
    credentials: Loaded,
    trust: LoadedTrust,
) -> Option<Outcome> {
    let mut request = request;
    match tokio::time::timeout(STALL, &mut request).await {
        Ok(joined) => Some(Outcome {
            sent: joined.unwrap_or_else(|e| cancelled(trigger, &e)),
            credentials,
            trust,
        }),
        Err(_) => {
            detach(ctx, key.clone(), trigger, request, credentials, trust);
            None
        }
    }
}

/// What a request whose task ended without an answer (a panic, a runtime shutting down) counts
/// as.
fn cancelled(trigger: Trigger, error: &tokio::task::JoinError) -> Sent {
    let failure = Failure::new(
        crate::api::reason::Reason::EndpointUnavailable,
        format!("the token request did not complete: {error}"),
    );
    Sent {
        counted: Counted {
            trigger,
            result: failure.reason.as_str(),
            seconds: None,
        },
        exchanged: Exchanged::Failed(failure),
        identity: Change::Keep,
    }
}

fn detach(
    ctx: &Context,
    key: NamespacedName,
    trigger: Trigger,
    request: tokio::task::JoinHandle<Sent>,
    credentials: Loaded,
    trust: LoadedTrust,
) {
    let detached = ctx.detached.clone();
    detached
        .lock()
        .expect("detached lock")
        .insert(key.clone(), Detached::Out);
    let shared = ctx.shared.clone();
    let scope = ctx.scope;
    tokio::spawn(async move {
        let sent = request.await.unwrap_or_else(|e| cancelled(trigger, &e));
        let outcome = Outcome {
            sent,
            credentials,
            trust,
        };
        {
            let mut detached = detached.lock().expect("detached lock");
            // Forgotten meanwhile (the client was deleted): dropped.
            if let Some(entry) = detached.get_mut(&key) {
                *entry = Detached::Done(Box::new(outcome));
            }
        }
        shared.gate.wake(scope, &queue_ref(&key));
    });
}
/// For the client's reconcile: `Some(None)` while its detached request is out (no other may be
/// sent), `Some(Some(outcome))` once it is over (taken), `None` when there is none.
pub fn take_detached(ctx: &Context, key: &NamespacedName) -> Option<Option<Box<Outcome>>> {
    let mut detached = ctx.detached.lock().expect("detached lock");
    match detached.get(key)? {
        Detached::Out => Some(None),
        Detached::Done(_) => match detached.remove(key) {
            Some(Detached::Done(outcome)) => Some(Some(outcome)),
            _ => None,
        },
    }
}
