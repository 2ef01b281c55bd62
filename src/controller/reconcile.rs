//! One reconcile, as a visible pipeline:
//!
//! 1. **load** (API, mostly from watch caches): the OAuthClient, its credentials, the managed
//!    Secret;
//! 2. **plan** (pure, [`crate::decide::plan`]): is the stored token valid, is an exchange due;
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

use super::context::{Context, FailedWith, Pending, Verified, Written};
use crate::api::crd::{OAuthClient, OAuthClientStatus};
use crate::api::keys::{
    CLIENT_LABEL, EXPIRES_AT_ANNOTATION, FIELD_MANAGER, FINGERPRINT_ANNOTATION,
    ISSUED_AT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, REFRESH_REQUESTED_ANNOTATION,
    TARGET_HASH_ANNOTATION,
};
use crate::api::reason::{Failure, Reason};
use crate::decide::{self, Attempt, Next, Observed, SecretState, StoredToken};
use crate::oauth::request::Credentials;
use crate::output::fingerprint;
use crate::output::redact::Sensitive;
use crate::output::secret::{self};
use crate::spec::ClientSettings;

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
    let secret_name = secret::target_name(&client);
    let settings = ClientSettings::resolve(&client.spec, &ctx.shared.policy).and_then(|s| {
        let field = if client
            .spec
            .target
            .as_ref()
            .is_some_and(|t| t.name.is_some())
        {
            "spec.target.name"
        } else {
            "the default managed Secret name (<metadata.name>-token; set spec.target.name)"
        };
        crate::spec::check_object_name(field, &secret_name).map(|()| s)
    });
    let reference = &client.spec.credentials_secret_ref;
    ctx.reference(&reference.name, &key);
    let credentials_rv = ctx.secrets.resource_version(&namespace, &reference.name);
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
    // (a cache that has not caught up, or a deletion, changes nothing), and the values differ
    // from the ones that failed (a metadata-only edit keeps the backoff).
    let failed_with = ctx.with_memo(&key, |m| m.failed_with.clone());
    let mut credentials_changed = false;
    if let (Some(failed), Some(now_rv)) = (&failed_with, &credentials_rv)
        && failed.resource_version.as_ref() != Some(now_rv)
    {
        if credentials.is_none() {
            credentials = Some(load_credentials(&client, &ctx, &namespace).await?);
        }
        let loaded = credentials.as_ref().expect("loaded above");
        let digest = digest_of(&ctx, loaded);
        credentials_changed = digest != failed.digest;
        if !credentials_changed {
            // The same values under a new version: remember the version, so that it is not
            // read again.
            ctx.with_memo(&key, |m| {
                m.failed_with = Some(FailedWith {
                    resource_version: loaded.resource_version.clone(),
                    digest,
                })
            });
        }
    }
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
        issued_events: ctx.with_memo(&key, |m| m.issued_events),
        last_exchange_at: ctx.with_memo(&key, |m| m.last_exchange_at),
    };

    // --- 2. plan ---
    let plan = decide::plan(&observed, now);
    tracing::debug!(next = ?plan.next, due_at = %plan.due_at, "planned");

    // --- 3. exchange, 4. apply the Secret ---
    let attempt = match &plan.next {
        Next::Idle => Attempt::None,
        Next::Fail(failure) => Attempt::Failed(failure.clone()),
        Next::Rerender => {
            let settings = settings
                .as_ref()
                .expect("rerender is planned for a valid spec");
            match rerender(&client, &ctx, &key, &namespace, &secret_name, settings).await? {
                Some(failure) => Attempt::Failed(failure),
                None => Attempt::None,
            }
        }
        Next::Exchange => {
            let settings = settings
                .as_ref()
                .expect("an exchange is planned for a valid spec");
            let target = Target {
                client: &client,
                key: &key,
                namespace: &namespace,
                settings,
                absent: observed_secret.state == SecretState::Absent,
            };
            match usable_pending(&ctx, &key, settings, &credentials_rv, now) {
                // A token obtained earlier whose write failed: write it, do not exchange again.
                Some(pending) => store(&ctx, &target, pending).await?,
                None => {
                    let endpoint = endpoint_of(settings);
                    let Some(pass) = ctx.shared.gate.enter(
                        &endpoint,
                        ctx.scope,
                        &super::context::meta_ref(&key),
                    ) else {
                        // The endpoint (or the operator) has as many requests in flight as it may:
                        // the gate wakes this client when there is room. Nothing is written.
                        tracing::debug!(endpoint, "waiting for room at the exchange gate");
                        return Ok(Action::requeue(deferred_wait(&ctx)));
                    };
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
                            let obtained = exchange(&ctx, settings, &credentials, pass).await;
                            match obtained {
                                Err(failure) => Attempt::Failed(failure),
                                Ok(token) => {
                                    let salt = fingerprint::new_salt();
                                    let pending = Pending {
                                        fingerprint: fingerprint::compute(
                                            &salt,
                                            &settings.exchange,
                                            &credentials,
                                        ),
                                        token,
                                        settings: settings.exchange.clone(),
                                        credentials_rv: credentials_rv.clone(),
                                    };
                                    store(&ctx, &target, pending).await?
                                }
                            }
                        }
                    }
                }
            }
        }
    };

    // --- 5. apply the status ---
    let settled = decide::settle(&observed, &plan, &attempt, now, rand::random::<f64>());
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
    ctx.with_memo(&key, |m| {
        m.failure_streak = settled.failure_streak;
        m.issued_events = settled.issued_events;
    });
    match &attempt {
        Attempt::Failed(failure) => {
            tracing::info!(reason = %failure.reason, message = %failure.message, "exchange failed");
            // The credentials that failed: as read, else as the cache shows them.
            let failed = match &credentials {
                Some(loaded) => FailedWith {
                    resource_version: loaded.resource_version.clone(),
                    digest: digest_of(&ctx, loaded),
                },
                None => failed_with.clone().unwrap_or(FailedWith {
                    resource_version: credentials_rv.clone(),
                    digest: None,
                }),
            };
            ctx.with_memo(&key, |m| m.failed_with = Some(failed));
        }
        Attempt::Issued {
            expires_at,
            exchanged_at,
            ..
        } => {
            tracing::info!(expires_at = %expires_at, "token issued");
            ctx.with_memo(&key, |m| {
                m.failed_with = None;
                m.last_exchange_at = Some(*exchanged_at);
            });
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
        .unwrap_or(decide::MIN_WAIT)
        .max(decide::MIN_WAIT);
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
    let delay = crate::timing::backoff::retry_delay(
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

/// Where a token request goes (host and port): the unit of the gate's per-endpoint bound.
fn endpoint_of(settings: &ClientSettings) -> String {
    let url = &settings.exchange.token_url;
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

/// How long a client waiting at the gate waits at most before it looks again by itself (the
/// gate normally wakes it sooner): twice the longest a request can take.
fn deferred_wait(ctx: &Context) -> Duration {
    (ctx.shared.request_timeout * 2).max(Duration::from_secs(5))
}

/// The keyed digest of loaded credentials, or of why they could not be used (a Secret that
/// appears, or gains its missing key, is a change).
fn digest_of(ctx: &Context, loaded: &Loaded) -> Option<[u8; 32]> {
    let key = &ctx.shared.credentials_key;
    Some(match &loaded.credentials {
        Ok(credentials) => fingerprint::credentials_digest(key, credentials),
        Err(failure) => fingerprint::keyed_digest(key, failure.message.as_bytes()),
    })
}

/// The token waiting to be written, if it can still be used: valid until after its refresh
/// would be due, and issued for the current request settings and credentials. A token that can
/// no longer be used is dropped.
fn usable_pending(
    ctx: &Context,
    key: &ObjectRef<OAuthClient>,
    settings: &ClientSettings,
    credentials_rv: &Option<String>,
    now: Timestamp,
) -> Option<Pending> {
    let pending = ctx.with_memo(key, |m| m.pending.take())?;
    let token = StoredToken {
        issued_at: pending.token.issued_at,
        expires_at: pending.token.expires_at,
        current: true,
        target_current: true,
    };
    let fresh = pending.settings == settings.exchange
        && &pending.credentials_rv == credentials_rv
        && decide::refresh_time(&token, &settings.refresh, "", None) > now;
    fresh.then_some(*pending)
}

/// Sends one token request, holding the gate's pass, and counts it.
async fn exchange(
    ctx: &Context,
    settings: &ClientSettings,
    credentials: &Credentials,
    pass: super::gate::Pass,
) -> Result<crate::oauth::response::Token, Failure> {
    let started = Instant::now();
    let result = ctx
        .shared
        .exchanger
        .exchange(&settings.exchange, credentials, ctx.shared.clock.as_ref())
        .await;
    drop(pass);
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
}

/// Where the managed Secret goes.
struct Target<'a> {
    client: &'a OAuthClient,
    key: &'a ObjectRef<OAuthClient>,
    namespace: &'a str,
    settings: &'a ClientSettings,
    /// The caches show no Secret of that name.
    absent: bool,
}

/// Writes a new token into the managed Secret. A write the API server refuses because of the
/// spec is a failure (`InvalidSpec`, with the server's message); a transient one is an error
/// (retried with backoff). Either way the token is kept for the next attempt while it is valid.
async fn store(ctx: &Context, target: &Target<'_>, pending: Pending) -> Result<Attempt, Error> {
    let token = &pending.token;
    if let Err(failure) = secret::check_size(token, &target.settings.templates) {
        return Ok(Attempt::Failed(failure));
    }
    let body = secret::managed_secret(
        target.client,
        token,
        &target.settings.templates,
        &pending.fingerprint,
    );
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let attempt = Attempt::Issued {
        exchanged_at: token.issued_at,
        // The Secret's annotations keep whole seconds; plan with exactly what a restart reads.
        issued_at: crate::timing::time::truncate_to_seconds(token.issued_at),
        expires_at: crate::timing::time::truncate_to_seconds(token.expires_at),
        token_type: token.token_type.clone(),
        scope: token.scope.clone(),
    };
    let written = async {
        let mut created = None;
        if target.absent {
            match create_if_absent(ctx, target, &name).await? {
                Some(version) => created = version,
                None => return Ok(Some(Failure::new(
                Reason::SecretConflict,
                format!(
                    "Secret {name} was created by someone else meanwhile and is not managed by this OAuthClient; it is left untouched (choose another spec.target.name or delete it)"
                ),
                ))),
            }
        }
        apply_secret(ctx, target.key, target.namespace, &body, created).await?;
        Ok::<_, WriteError>(None)
    }
    .await;
    let failure = match written {
        Ok(None) => {
            let credentials_rv = pending.credentials_rv.clone();
            ctx.with_memo(target.key, |m| {
                m.verified = Some(Verified {
                    credentials_rv,
                    fingerprint: pending.fingerprint.clone(),
                    generation: target.client.metadata.generation,
                    matched: true,
                })
            });
            return Ok(attempt);
        }
        Ok(Some(conflict)) => conflict,
        Err(WriteError::Refused(message)) => refusal(&name, &message, token),
        Err(WriteError::Failed(error)) => {
            ctx.with_memo(target.key, |m| m.pending = Some(Box::new(pending)));
            return Err(error);
        }
    };
    ctx.with_memo(target.key, |m| m.pending = Some(Box::new(pending)));
    Ok(Attempt::Failed(failure))
}

/// Creates the managed Secret when the caches show none, so that a Secret someone created
/// meanwhile is never taken over (a server-side apply would merge into it). Only what identifies
/// it is created (name, type, the operator's labels, the ownerReference): the apply that follows
/// writes everything else and owns it alone. `None` when a Secret of that name exists and is
/// not controlled by this OAuthClient; else the resourceVersion of the Secret created (None when
/// it existed already, controlled by this OAuthClient).
async fn create_if_absent(
    ctx: &Context,
    target: &Target<'_>,
    name: &str,
) -> Result<Option<Option<String>>, WriteError> {
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), target.namespace);
    let mut labels = BTreeMap::new();
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned());
    labels.insert(
        CLIENT_LABEL.to_owned(),
        secret::client_label_value(&target.client.name_any()),
    );
    let object = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(target.namespace.to_owned()),
            labels: Some(labels),
            owner_references: Some(vec![secret::owner_reference(target.client)]),
            ..Default::default()
        },
        type_: target.client.spec.target.as_ref().map(|t| t.type_.clone()),
        ..Default::default()
    };
    let params = kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    let created = with_retries(|| api.create(&params, &object)).await;
    match created {
        Ok(secret) => Ok(Some(secret.resource_version())),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api
                .get_metadata_opt(name)
                .await
                .map_err(|e| WriteError::Failed(kube_error("reading the target Secret")(e)))?;
            let ours = existing.is_some_and(|meta| {
                secret::controlled_by(
                    meta.metadata
                        .owner_references
                        .as_deref()
                        .unwrap_or_default(),
                    target.client,
                )
            });
            Ok(ours.then_some(None))
        }
        Err(e) => Err(WriteError::classify("creating the managed Secret", e)),
    }
}

/// The failure for a write the API server refused: its message, scrubbed of the token (the
/// server's message is not expected to echo data, but it is shown in public places).
fn refusal(name: &str, message: &str, token: &crate::oauth::response::Token) -> Failure {
    let scrubber = crate::output::redact::Scrubber::none();
    let scrubber = scrubber.with_token(token.access_token.expose());
    match crate::oauth::response::sanitise(message, &scrubber) {
        Some(detail) => Failure::invalid_spec(format!(
            "the API server refused the managed Secret {name}: {detail}"
        )),
        None => Failure::invalid_spec(format!("the API server refused the managed Secret {name}")),
    }
}

/// Why a write of the managed Secret did not happen.
enum WriteError {
    /// The API server refused it because of what it holds (400, 413, 422): the spec must change.
    Refused(String),
    /// Anything else, after the in-place retries.
    Failed(Error),
}

impl WriteError {
    fn classify(action: &'static str, error: kube::Error) -> Self {
        match error {
            kube::Error::Api(e) if matches!(e.code, 400 | 413 | 422) => {
                WriteError::Refused(e.message)
            }
            other => WriteError::Failed(kube_error(action)(other)),
        }
    }
}

async fn rerender(
    client: &OAuthClient,
    ctx: &Context,
    key: &ObjectRef<OAuthClient>,
    namespace: &str,
    name: &str,
    settings: &ClientSettings,
) -> Result<Option<Failure>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), namespace);
    let Some(current) = api
        .get_opt(name)
        .await
        .map_err(kube_error("reading the managed Secret"))?
    else {
        return Ok(None);
    };
    let (Some(token), Some(fp)) = (
        secret::stored_token(&current),
        current.annotations().get(FINGERPRINT_ANNOTATION).cloned(),
    ) else {
        return Ok(None);
    };
    if let Err(failure) = secret::check_size(&token, &settings.templates) {
        return Ok(Some(failure));
    }
    let body = secret::managed_secret(client, &token, &settings.templates, &fp);
    match apply_secret(ctx, key, namespace, &body, None).await {
        Ok(()) => Ok(None),
        Err(WriteError::Failed(error)) => Err(error),
        Err(WriteError::Refused(message)) => Ok(Some(refusal(name, &message, &token))),
    }
}

/// Applies the managed Secret. `created`: the resourceVersion of the Secret the operator just
/// created for it, which the cache may show next.
async fn apply_secret(
    ctx: &Context,
    key: &ObjectRef<OAuthClient>,
    namespace: &str,
    body: &serde_json::Value,
    created: Option<String>,
) -> Result<(), WriteError> {
    let api: Api<Secret> = Api::namespaced(ctx.shared.client.clone(), namespace);
    let name = body["metadata"]["name"].as_str().unwrap_or_default();
    let mut before = vec![
        ctx.managed
            .get(namespace, name)
            .map(|m| m.resource_version.to_string()),
    ];
    if created.is_some() {
        before.push(created);
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(body);
    let written = with_retries(|| api.patch_metadata(name, &params, &patch))
        .await
        .map_err(|e| WriteError::classify("writing the managed Secret", e))?;
    ctx.with_memo(key, |m| {
        m.written_secret = Some(Written {
            before,
            at: Instant::now(),
            value: written.annotations().clone(),
        })
    });
    Ok(())
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
    let patch = Patch::Apply(&body);
    let name = client.name_any();
    match with_retries(|| api.patch_status(&name, &params, &patch)).await {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing to report on.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(kube_error("writing the OAuthClient status")(e)),
    }
}

/// Runs a write up to [`WRITE_ATTEMPTS`] times while it fails transiently (5xx, 429, 409
/// conflicts, connection errors), so that a passing API error right after an exchange does not
/// cost the new token.
async fn with_retries<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match write().await {
            Err(e) if attempt < WRITE_ATTEMPTS && retriable(&e) => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            result => return result,
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
    let ready = crate::api::conditions::find(&status.conditions, crate::api::conditions::READY)
        .map(|c| c.status.as_str())
        .unwrap_or("Unknown");
    ctx.shared
        .metrics
        .client_state(namespace, name, token, ready);
}

fn retriable(error: &kube::Error) -> bool {
    match error {
        // 409 is a conflict of versions (worth retrying), or AlreadyExists (not).
        kube::Error::Api(e) => {
            e.code >= 500 || e.code == 429 || (e.code == 409 && e.reason != "AlreadyExists")
        }
        _ => true,
    }
}
