//! Step 4, the exchange: a place at the exchange gate ([`admit`]), then, with the inputs
//! loaded, the token request ([`send`]); returns what happened. It writes nothing.

use std::time::{Duration, Instant};

use super::credentials::Loaded;
use super::observe::Snapshot;
use crate::api::reason::Failure;
use crate::controller::context::Context;
use crate::controller::gate::Pass;
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

/// How long a client waiting at the gate waits at most before it looks again by itself (the
/// gate normally wakes it sooner): twice the longest a request can take.
pub fn deferred_wait(ctx: &Context) -> Duration {
    (ctx.shared.request_timeout * 2).max(Duration::from_secs(5))
}

/// Sends the token request through `client` with `sent_credentials`, holding the gate's
/// `_pass`; the token comes back with the fingerprint of the credentials `as_read`.
pub async fn send(
    ctx: &Context,
    _pass: &Pass,
    trigger: Trigger,
    settings: &ClientSettings,
    as_read: &Loaded,
    sent_credentials: &Credentials,
    client: &HttpClient,
) -> Sent {
    let started = Instant::now();
    let clock = ctx.shared.clock.as_ref();
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
                &ctx.shared.credentials_key,
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
