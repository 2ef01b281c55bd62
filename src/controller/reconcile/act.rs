//! Step 3, act on the plan: exchange credentials for a token (through the exchange gate) and
//! hand it to the Secret write, re-render the Secret, or record why an attempt cannot be made.
//! Every attempt, and every refusal before one, is counted exactly once: noted in the
//! observation (`counted`), for the record step, whatever happens after.

use std::time::{Duration, Instant};

use super::Error;
use super::observe::{Observation, digest_of};
use super::write;
use crate::api::crd::OAuthClient;
use crate::api::reason::Failure;
use crate::controller::context::Context;
use crate::controller::memo::{Change, Pending, queue_ref};
use crate::controller::service_account;
use crate::decide::{self, Attempt, Next, Plan, StoredToken, Trigger};
use crate::oauth::credentials::{Credentials, Proof};
use crate::oauth::pool::TrustedClient;
use crate::output::fingerprint;
use crate::spec::ClientSettings;

/// What acting came to.
pub enum Acted {
    /// The endpoint (or the operator) has as many requests in flight as it may: the gate wakes
    /// the client when there is room. Nothing was attempted.
    Deferred,
    /// The attempt (if any) is over.
    Done(Attempt),
}

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

/// Acts on the plan.
pub async fn act(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
    plan: &Plan,
) -> Result<Acted, Error> {
    Ok(match &plan.next {
        Next::Idle => Acted::Done(Attempt::None),
        Next::Fail(trigger, failure) => {
            observation.counted = Some(refused(*trigger, failure));
            Acted::Done(Attempt::Failed(failure.clone()))
        }
        Next::Rerender => {
            let settings = settings(observation);
            match write::rerender(client, ctx, observation, &settings).await? {
                Some(failure) => Acted::Done(Attempt::Failed(failure)),
                None => Acted::Done(Attempt::None),
            }
        }
        Next::Exchange(trigger) => exchange(client, ctx, observation, *trigger).await?,
    })
}

/// The settings of a spec the plan found usable.
fn settings(observation: &Observation) -> ClientSettings {
    observation
        .settings
        .clone()
        .expect("an exchange or a re-render is planned for a usable spec only")
}

fn refused(trigger: Trigger, failure: &Failure) -> Counted {
    Counted {
        trigger,
        result: failure.reason.as_str(),
        seconds: None,
    }
}

/// The exchange step: a token obtained earlier whose write failed is written instead of a new
/// exchange; else a pass from the gate, the credentials, the request, and the Secret write.
async fn exchange(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
    trigger: Trigger,
) -> Result<Acted, Error> {
    tracing::debug!(%trigger, "exchange due");
    let settings = settings(observation);
    if let Some(pending) = usable_pending(client, ctx, observation, &settings).await? {
        let attempt = write::store(client, ctx, observation, &settings, pending).await?;
        return Ok(Acted::Done(attempt));
    }
    let url = &settings.exchange.token_url;
    let endpoint = format!(
        "{}:{}",
        url.host_str().unwrap_or_default().trim_end_matches('.'),
        url.port_or_known_default().unwrap_or_default()
    );
    let Some(pass) = ctx
        .shared
        .gate
        .enter_patiently(&endpoint, ctx.scope, &queue_ref(&observation.key))
        .await
    else {
        tracing::debug!(endpoint, "waiting for room at the exchange gate");
        return Ok(Acted::Deferred);
    };
    let outcome = request(client, ctx, observation, trigger, &settings).await;
    drop(pass);
    let pending = match outcome? {
        Ok(pending) => pending,
        Err(failure) => return Ok(Acted::Done(Attempt::Failed(failure))),
    };
    let attempt = write::store(client, ctx, observation, &settings, pending).await?;
    Ok(Acted::Done(attempt))
}

/// One token request, counted: the credentials, what the method sends (a ServiceAccount's
/// token, the identity's HTTP client), the exchange, and the token to write with its
/// fingerprint. `Ok(Err(_))`: the attempt failed, before the request or at the endpoint.
async fn request(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
    trigger: Trigger,
    settings: &ClientSettings,
) -> Result<Result<Pending, Failure>, Error> {
    let loaded = observation.credentials(client, ctx).await?.clone();
    let via = match (
        &loaded.credentials,
        observation.trust(client, ctx).await?.client.clone(),
    ) {
        (Ok(_), Ok(via)) => Ok(via),
        (Err(failure), _) => Err(failure.clone()),
        (_, Err(failure)) => Err(failure),
    };
    let prepared = match (loaded.credentials.clone(), via) {
        (Ok(credentials), Ok(via)) => {
            prepare(ctx, &observation.key.namespace, settings, credentials, &via).await?
        }
        (Err(failure), _) | (_, Err(failure)) => Err(failure),
    };
    let (credentials, via) = match prepared {
        Ok(prepared) => prepared,
        Err(failure) => {
            observation.counted = Some(refused(trigger, &failure));
            return Ok(Err(failure));
        }
    };
    let started = Instant::now();
    let clock = ctx.shared.clock.as_ref();
    let result = ctx
        .shared
        .exchanger
        .exchange_via(&via, &settings.exchange, &credentials, clock)
        .await;
    // An identity client (TlsClientAuth) lives while the OAuthClient's memory holds it.
    observation.learned.identity = match via.pooled().key().identity {
        Some(_) => Change::Set(via),
        None => Change::Clear,
    };
    // Failures found before any request (the request could not be built) have no duration.
    let sent = !matches!(&result, Err(f) if f.before_request());
    observation.counted = Some(Counted {
        trigger,
        result: result
            .as_ref()
            .map_or_else(|f| f.reason.as_str(), |_| "success"),
        seconds: sent.then(|| started.elapsed().as_secs_f64()),
    });
    // The credentials as read (a ServiceAccount, not its token) are what the stored token is
    // fingerprinted with.
    let credentials = loaded.credentials.clone().unwrap_or(credentials);
    Ok(result.map(|token| Pending {
        fingerprint: fingerprint::compute(
            &fingerprint::new_salt(),
            &settings.exchange,
            &credentials,
        ),
        token,
        settings: settings.exchange.clone(),
        credentials_rv: loaded.resource_version.clone(),
        credentials_digest: digest(ctx, &credentials),
    }))
}

/// The credentials as the exchange sends them (for ServiceAccountToken, a new token of the
/// ServiceAccount) and the HTTP client: `via`, the client of the trust, or for TlsClientAuth the
/// one of that trust that presents the client's certificate. `Ok(Err(_))`: refused before any
/// token request.
async fn prepare(
    ctx: &Context,
    namespace: &str,
    settings: &ClientSettings,
    credentials: Credentials,
    via: &TrustedClient,
) -> Result<Result<(Credentials, TrustedClient), Failure>, Error> {
    let credentials = match (&credentials.proof, &settings.exchange.service_account) {
        (Proof::ServiceAccount(_), Some(service_account)) => {
            match service_account::token(ctx, namespace, service_account).await? {
                Ok(token) => Credentials {
                    client_id: credentials.client_id,
                    proof: Proof::Assertion(token),
                },
                Err(failure) => return Ok(Err(failure)),
            }
        }
        _ => credentials,
    };
    Ok(ctx
        .shared
        .exchanger
        .client_for(via, &settings.exchange, &credentials, namespace)
        .map(|client| (credentials, client)))
}

fn digest(ctx: &Context, credentials: &Credentials) -> [u8; 32] {
    fingerprint::credentials_digest(&ctx.shared.credentials_key, credentials)
}

/// The token waiting to be written, if it can still be used: valid until after its refresh
/// would be due, and issued for the current request settings and exactly the current
/// credentials (read again to compare: a changed key reference with an unchanged Secret must not
/// pass). A token that can no longer be used is dropped.
async fn usable_pending(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
    settings: &ClientSettings,
) -> Result<Option<Pending>, Error> {
    let Some(pending) = observation.memo.pending.take() else {
        return Ok(None);
    };
    observation.learned.pending = Change::Clear;
    let token = StoredToken {
        issued_at: pending.token.issued_at,
        expires_at: pending.token.expires_at,
        current: true,
        target_current: true,
    };
    let fresh = pending.settings == settings.exchange
        && pending.credentials_rv == observation.credentials_rv
        && decide::refresh_time(&token, &settings.refresh, "", None) > observation.now;
    if !fresh {
        return Ok(None);
    }
    let loaded = observation.credentials(client, ctx).await?.clone();
    let same = digest_of(ctx, &loaded).is_some_and(|d| d == pending.credentials_digest)
        && loaded.credentials.is_ok();
    Ok(same.then_some(*pending))
}

/// How long a client waiting at the gate waits at most before it looks again by itself (the
/// gate normally wakes it sooner): twice the longest a request can take.
pub fn deferred_wait(ctx: &Context) -> Duration {
    (ctx.shared.request_timeout * 2).max(Duration::from_secs(5))
}
