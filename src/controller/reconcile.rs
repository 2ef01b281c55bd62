//! One reconcile, as a visible pipeline:
//!
//! 1. **load** (API, mostly from watch caches): the OAuthClient, its credentials, the managed
//!    Secret;
//! 2. **plan** (pure, [`crate::plan::plan`]): is the stored token valid, is an exchange due;
//! 3. **exchange** (HTTP) if due, bounded by the exchange semaphore;
//! 4. **apply the Secret** (server-side apply) when there is a new token or new rendering;
//! 5. **apply the status** (server-side apply) only when it changed;
//! 6. **requeue** at the next refresh or retry time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::{Context, Verified, Written};
use crate::crd::{OAuthClient, OAuthClientStatus};
use crate::fingerprint;
use crate::plan::{self, Attempt, Next, Observed, SecretState, StoredToken};
use crate::reason::{Failure, Reason};
use crate::redact::Sensitive;
use crate::request::Credentials;
use crate::secret::{
    self, EXPIRES_AT_ANNOTATION, FINGERPRINT_ANNOTATION, ISSUED_AT_ANNOTATION,
    REFRESH_REQUESTED_ANNOTATION, TARGET_HASH_ANNOTATION,
};
use crate::settings::ClientSettings;

/// Errors that end a reconcile early (the API failed); exchange failures are not errors, they
/// are recorded in the status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube { action, .. } => action,
        }
    }
}

fn kube_error(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// The field manager of every write.
pub const FIELD_MANAGER: &str = crate::NAME;

/// Writes are retried this many times in place before the reconcile gives up, so that a
/// transient API error right after an exchange does not cost the new token.
const WRITE_ATTEMPTS: u32 = 3;

/// Runs one reconcile of the OAuthClient the watch cache shows (metadata only), counted in the
/// metrics. The object itself is read first: one GET, so spec and status are never stale.
pub async fn reconcile(
    meta: Arc<PartialObjectMeta<OAuthClient>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let api: Api<OAuthClient> = Api::namespaced(
        ctx.shared.client.clone(),
        meta.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let result = match api.get_opt(&meta.name_any()).await {
        // Deleted meanwhile: the watch will tell.
        Ok(None) => Ok(Action::await_change()),
        Ok(Some(client)) => reconcile_inner(Arc::new(client), ctx.clone()).await,
        Err(e) => Err(kube_error("reading the OAuthClient")(e)),
    };
    let error = result.as_ref().err().map(Error::label);
    ctx.shared
        .metrics
        .reconcile(started.elapsed().as_secs_f64(), error);
    result
}

#[tracing::instrument(skip_all, fields(namespace = client.namespace().unwrap_or_default(), name = client.name_any()))]
async fn reconcile_inner(client: Arc<OAuthClient>, ctx: Arc<Context>) -> Result<Action, Error> {
    // The Secret caches must be complete before anything is concluded from them (after a restart,
    // a missing entry would otherwise look like a missing token).
    let _ = ctx.secrets_synced.clone().wait_for(|synced| *synced).await;
    let now = ctx.shared.clock.now();
    let key = super::context::client_key(&client.metadata);
    let namespace = client.namespace().unwrap_or_default();
    // The object was just read from the API server, so its status is current.
    let status = client.status.clone().unwrap_or_default();
    let generation = client.metadata.generation;

    // --- 1. load ---
    let settings = ClientSettings::resolve(&client.spec, &ctx.shared.policy);
    let reference = &client.spec.credentials_secret_ref;
    ctx.reference(&reference.name, &key);
    let credentials_rv = ctx.secrets.resource_version(&namespace, &reference.name);
    let secret_name = secret::target_name(&client);
    let observed_secret = observe_secret(&client, &ctx, &key, &namespace, &secret_name).await?;

    let mut credentials: Option<Loaded> = None;
    let mut current = false;
    if let (Ok(settings), Some(stored_fingerprint)) = (&settings, &observed_secret.fingerprint) {
        let cached = ctx.with_memo(&key, |m| m.verified.clone());
        let fresh = |v: &Verified| {
            v.credentials_rv == credentials_rv
                && &v.fingerprint == stored_fingerprint
                && v.generation == generation
        };
        current = match cached {
            Some(v) if fresh(&v) => v.matched,
            _ => {
                let loaded = load_credentials(&client, &ctx, &namespace).await?;
                let matched = loaded
                    .credentials
                    .as_ref()
                    .is_ok_and(|c| fingerprint::matches(stored_fingerprint, &settings.exchange, c));
                credentials = Some(loaded);
                ctx.with_memo(&key, |m| {
                    m.verified = Some(Verified {
                        credentials_rv: credentials_rv.clone(),
                        fingerprint: stored_fingerprint.clone(),
                        generation,
                        matched,
                    })
                });
                matched
            }
        };
    }
    let secret_state = match &observed_secret.state {
        SecretState::Owned(Some(token)) => SecretState::Owned(Some(StoredToken {
            current,
            target_current: token.target_current,
            ..*token
        })),
        other => other.clone(),
    };
    // Changed since the last failure: the cache shows a version other than the one that failed
    // (a cache that has not caught up, or a deletion, changes nothing).
    let credentials_changed = ctx.with_memo(&key, |m| {
        match (&m.failed_with_credentials, &credentials_rv) {
            (Some(failed), Some(now)) => failed.as_ref() != Some(now),
            _ => false,
        }
    });
    let refresh_requested_at = client
        .annotations()
        .get(REFRESH_REQUESTED_ANNOTATION)
        .and_then(|t| t.parse::<Timestamp>().ok());
    let uid = client.uid().unwrap_or_default();
    let loaded_problem = match &credentials {
        Some(Loaded {
            credentials: Err(f),
            ..
        }) => Some(f.clone()),
        _ => None,
    };
    let invalid;
    let observed = Observed {
        generation,
        status: &status,
        refresh: match &settings {
            Ok(s) => Ok(s.refresh),
            Err(f) => {
                invalid = f.clone();
                Err(&invalid)
            }
        },
        credentials_problem: loaded_problem.as_ref(),
        secret: &secret_state,
        refresh_requested_at,
        credentials_changed,
        uid: &uid,
        secret_name: &secret_name,
        failure_streak: ctx.with_memo(&key, |m| m.failure_streak),
    };

    // --- 2. plan ---
    let plan = plan::plan(&observed, now);
    tracing::debug!(next = ?plan.next, due_at = %plan.due_at, "planned");

    // --- 3. exchange, 4. apply the Secret ---
    let attempt = match &plan.next {
        Next::Idle => Attempt::None,
        Next::Fail(failure) => Attempt::Failed(failure.clone()),
        Next::Rerender => {
            let settings = settings
                .as_ref()
                .expect("rerender is planned for a valid spec");
            rerender(&client, &ctx, &key, &namespace, &secret_name, settings).await?;
            Attempt::None
        }
        Next::Exchange => {
            let settings = settings
                .as_ref()
                .expect("an exchange is planned for a valid spec");
            if credentials.is_none() {
                credentials = Some(load_credentials(&client, &ctx, &namespace).await?);
            }
            match credentials
                .as_ref()
                .map(|l| &l.credentials)
                .expect("loaded above")
                .clone()
            {
                Err(failure) => Attempt::Failed(failure),
                Ok(credentials) => {
                    exchange_and_store(&client, &ctx, &key, &namespace, settings, &credentials)
                        .await?
                }
            }
        }
    };

    // --- 5. apply the status ---
    let settled = plan::settle(&observed, &plan, &attempt, now, rand::random::<f64>());
    // Attempts that failed before any request (spec, credentials, conflict) count too.
    if let Attempt::Failed(failure) = &attempt {
        if !matches!(plan.next, Next::Exchange) || failure.reason == Reason::CredentialsNotFound {
            let provider = client.spec.provider.as_str();
            ctx.shared
                .metrics
                .exchange(provider, failure.reason.as_str(), None);
        }
    }
    record_state(&ctx, &namespace, &client.name_any(), &settled.status);
    ctx.with_memo(&key, |m| m.failure_streak = settled.failure_streak);
    match &attempt {
        Attempt::Failed(failure) => {
            tracing::info!(reason = %failure.reason, message = %failure.message, "exchange failed");
            // The version that failed: as read, else as the cache shows it.
            let failed_rv = match &credentials {
                Some(loaded) => loaded.resource_version.clone(),
                None => credentials_rv.clone(),
            };
            ctx.with_memo(&key, |m| m.failed_with_credentials = Some(failed_rv));
        }
        Attempt::Issued { expires_at, .. } => {
            tracing::info!(expires_at = %expires_at, "token issued");
            ctx.with_memo(&key, |m| m.failed_with_credentials = None);
        }
        Attempt::None => {}
    }
    write_status(&client, &ctx, &namespace, &status, &settled.status).await?;
    if let Some(note) = &settled.event {
        ctx.shared.events.publish(&client, note).await;
    }

    // --- 6. requeue ---
    ctx.with_memo(&key, |m| m.errors = 0);
    let wait = settled.requeue_at.duration_since(ctx.shared.clock.now());
    let wait = Duration::try_from(wait)
        .unwrap_or(plan::MIN_WAIT)
        .max(plan::MIN_WAIT);
    Ok(Action::requeue(wait))
}

/// After an error: retry with exponential backoff from 5 s up to 5 min.
pub fn error_policy(
    client: Arc<PartialObjectMeta<OAuthClient>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = super::context::client_key(&client.metadata);
    let errors = ctx.with_memo(&key, |m| {
        m.errors = m.errors.saturating_add(1);
        m.errors
    });
    let delay = crate::refresh::retry_delay(
        Reason::EndpointUnavailable,
        errors,
        None,
        rand::random::<f64>(),
    );
    tracing::warn!(
        namespace = client.namespace().unwrap_or_default(),
        name = client.name_any(),
        error = %error,
        retry_in_s = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

// === load ===

/// The managed Secret as the caches (or this process's own recent write) show it.
struct ObservedSecret {
    state: SecretState,
    fingerprint: Option<String>,
}

async fn observe_secret(
    client: &OAuthClient,
    ctx: &Context,
    key: &ObjectRef<OAuthClient>,
    namespace: &str,
    name: &str,
) -> Result<ObservedSecret, Error> {
    let cached = ctx.managed.get(namespace, name);
    let cached_rv = cached.as_ref().map(|m| m.resource_version.to_string());
    // Our own last write wins while the cache still shows the Secret as it was before it.
    let recent = ctx.with_memo(key, |m| {
        let behind = m
            .written_secret
            .as_ref()
            .and_then(|w| w.if_cache_is_behind(cached_rv.as_ref()));
        if behind.is_none() {
            m.written_secret = None;
        }
        behind
    });
    let annotations = match (cached, recent) {
        (_, Some(recent)) => recent,
        (Some(managed), None) => {
            if !client.uid().is_some_and(|uid| managed.controlled_by(&uid)) {
                return Ok(conflict(name, "is controlled by another owner"));
            }
            managed.annotation_map()
        }
        (None, None) => {
            if ctx.secrets.resource_version(namespace, name).is_none() {
                return Ok(ObservedSecret {
                    state: SecretState::Absent,
                    fingerprint: None,
                });
            }
            // A Secret of that name without our label: look at its owners.
            let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), namespace);
            match api
                .get_metadata_opt(name)
                .await
                .map_err(kube_error("reading the target Secret"))?
            {
                None => {
                    return Ok(ObservedSecret {
                        state: SecretState::Absent,
                        fingerprint: None,
                    });
                }
                Some(meta) => {
                    let refs = meta.metadata.owner_references.clone().unwrap_or_default();
                    if !secret::controlled_by(&refs, client) {
                        return Ok(conflict(
                            name,
                            "exists and is not managed by this OAuthClient",
                        ));
                    }
                    meta.annotations().clone()
                }
            }
        }
    };
    Ok(observed_from_annotations(client, &annotations))
}

fn conflict(name: &str, what: &str) -> ObservedSecret {
    ObservedSecret {
        state: SecretState::Conflict(format!(
            "Secret {name} {what}; it is left untouched (choose another spec.target.name or delete it)"
        )),
        fingerprint: None,
    }
}

fn observed_from_annotations(
    client: &OAuthClient,
    annotations: &BTreeMap<String, String>,
) -> ObservedSecret {
    let time = |key: &str| {
        annotations
            .get(key)
            .and_then(|t| t.parse::<Timestamp>().ok())
    };
    let target = client.spec.target.clone().unwrap_or_default();
    let token = match (time(ISSUED_AT_ANNOTATION), time(EXPIRES_AT_ANNOTATION)) {
        (Some(issued_at), Some(expires_at)) => Some(StoredToken {
            issued_at,
            expires_at,
            current: false,
            target_current: annotations.get(TARGET_HASH_ANNOTATION)
                == Some(&secret::target_hash(&target)),
        }),
        _ => None,
    };
    ObservedSecret {
        fingerprint: token.and(annotations.get(FINGERPRINT_ANNOTATION).cloned()),
        state: SecretState::Owned(token),
    }
}

/// Reads the credentials Secret. A missing Secret or key is `CredentialsNotFound`; a value that
/// is not UTF-8 is `InvalidSpec` naming the key. Values are used byte for byte.
async fn load_credentials(
    client: &OAuthClient,
    ctx: &Context,
    namespace: &str,
) -> Result<Loaded, Error> {
    let reference = &client.spec.credentials_secret_ref;
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), namespace);
    let Some(secret) = api
        .get_opt(&reference.name)
        .await
        .map_err(kube_error("reading the credentials Secret"))?
    else {
        return Ok(Loaded {
            resource_version: None,
            credentials: Err(Failure::new(
                Reason::CredentialsNotFound,
                format!(
                    "Secret {} not found in namespace {namespace}",
                    reference.name
                ),
            )),
        });
    };
    let resource_version = secret.resource_version();
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| -> Result<String, Failure> {
        let bytes = data.get(key).map(|b| b.0.clone()).ok_or_else(|| {
            Failure::new(
                Reason::CredentialsNotFound,
                format!("Secret {} has no key {key}", reference.name),
            )
        })?;
        if bytes.is_empty() {
            return Err(Failure::new(
                Reason::CredentialsNotFound,
                format!("key {key} of Secret {} is empty", reference.name),
            ));
        }
        String::from_utf8(bytes).map_err(|_| {
            Failure::invalid_spec(format!(
                "key {key} of Secret {} is not valid UTF-8",
                reference.name
            ))
        })
    };
    let client_id = match &client.spec.client_id {
        Some(id) => Ok(id.clone()),
        None => value(&reference.client_id_key),
    };
    let credentials = client_id.and_then(|client_id| {
        Ok(Credentials {
            client_id,
            client_secret: Sensitive::new(value(&reference.client_secret_key)?),
        })
    });
    Ok(Loaded {
        resource_version,
        credentials,
    })
}

/// The credentials as read, and the resourceVersion of the Secret they were read from.
struct Loaded {
    resource_version: Option<String>,
    credentials: Result<Credentials, Failure>,
}

// === exchange and write ===

async fn exchange_and_store(
    client: &OAuthClient,
    ctx: &Context,
    key: &ObjectRef<OAuthClient>,
    namespace: &str,
    settings: &ClientSettings,
    credentials: &Credentials,
) -> Result<Attempt, Error> {
    let token = {
        let _permit = ctx
            .shared
            .permits
            .acquire()
            .await
            .expect("the exchange semaphore is never closed");
        let started = Instant::now();
        let result = ctx
            .shared
            .exchanger
            .exchange(&settings.exchange, credentials, ctx.shared.clock.as_ref())
            .await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(f) => f.reason.as_str(),
        };
        // Failures found before any request (bad spec) have no duration.
        let sent = !matches!(&result, Err(f) if f.reason == Reason::InvalidSpec || f.reason == Reason::CredentialsNotFound);
        ctx.shared.metrics.exchange(
            settings.exchange.provider.as_str(),
            outcome,
            sent.then(|| started.elapsed().as_secs_f64()),
        );
        result
    };
    let token = match token {
        Ok(token) => token,
        Err(failure) => return Ok(Attempt::Failed(failure)),
    };
    let salt = fingerprint::new_salt();
    let fp = fingerprint::compute(&salt, &settings.exchange, credentials);
    let body = secret::managed_secret(client, &token, &settings.templates, &fp);
    apply_secret(ctx, key, namespace, &body).await?;
    ctx.with_memo(key, |m| {
        m.verified = Some(Verified {
            credentials_rv: ctx
                .secrets
                .resource_version(namespace, &client.spec.credentials_secret_ref.name),
            fingerprint: fp.clone(),
            generation: client.metadata.generation,
            matched: true,
        })
    });
    // The Secret's annotations keep whole seconds; plan with exactly what a restart will read.
    Ok(Attempt::Issued {
        issued_at: crate::conditions::truncate_to_seconds(token.issued_at),
        expires_at: crate::conditions::truncate_to_seconds(token.expires_at),
        token_type: token.token_type.clone(),
        scope: token.scope.clone(),
    })
}

async fn rerender(
    client: &OAuthClient,
    ctx: &Context,
    key: &ObjectRef<OAuthClient>,
    namespace: &str,
    name: &str,
    settings: &ClientSettings,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), namespace);
    let Some(current) = api
        .get_opt(name)
        .await
        .map_err(kube_error("reading the managed Secret"))?
    else {
        return Ok(());
    };
    let (Some(token), Some(fp)) = (
        secret::stored_token(&current),
        current.annotations().get(FINGERPRINT_ANNOTATION).cloned(),
    ) else {
        return Ok(());
    };
    let body = secret::managed_secret(client, &token, &settings.templates, &fp);
    apply_secret(ctx, key, namespace, &body).await
}

async fn apply_secret(
    ctx: &Context,
    key: &ObjectRef<OAuthClient>,
    namespace: &str,
    body: &serde_json::Value,
) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), namespace);
    let name = body["metadata"]["name"].as_str().unwrap_or_default();
    let based_on = ctx
        .managed
        .get(namespace, name)
        .map(|m| m.resource_version.to_string());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api.patch(name, &params, &Patch::Apply(body)).await {
            Ok(written) => {
                ctx.with_memo(key, |m| {
                    m.written_secret = Some(Written {
                        based_on,
                        at: Instant::now(),
                        value: written.annotations().clone(),
                    })
                });
                return Ok(());
            }
            Err(e) if attempt < WRITE_ATTEMPTS && retriable(&e) => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => return Err(kube_error("writing the managed Secret")(e)),
        }
    }
}

async fn write_status(
    client: &OAuthClient,
    ctx: &Context,
    namespace: &str,
    current: &OAuthClientStatus,
    desired: &OAuthClientStatus,
) -> Result<(), Error> {
    if desired == current {
        return Ok(());
    }
    let api: Api<OAuthClient> = Api::namespaced(ctx.shared.client.clone(), namespace);
    let body = json!({
        "apiVersion": OAuthClient::api_version(&()),
        "kind": OAuthClient::kind(&()),
        "status": desired,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match api
            .patch_status(&client.name_any(), &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => return Ok(()),
            // Deleted meanwhile: nothing to report on.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) if attempt < WRITE_ATTEMPTS && retriable(&e) => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => return Err(kube_error("writing the OAuthClient status")(e)),
        }
    }
}

/// Publishes an OAuthClient's token times and Ready condition as metrics.
fn record_state(ctx: &Context, namespace: &str, name: &str, status: &OAuthClientStatus) {
    let time = |t: &Option<String>| {
        t.as_ref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| t.as_second() as f64)
    };
    let token = time(&status.issued_at).zip(time(&status.expires_at));
    let ready = crate::conditions::find(&status.conditions, crate::conditions::READY)
        .map(|c| c.status.as_str())
        .unwrap_or("Unknown");
    ctx.shared
        .metrics
        .client_state(namespace, name, token, ready);
}

fn retriable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(e) => e.code >= 500 || e.code == 429 || e.code == 409,
        _ => true,
    }
}
