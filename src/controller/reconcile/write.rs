//! Step 4, write the managed Secret: create it (when absent, so that one created meanwhile is
//! never taken over), apply it, re-render it; and the one write-retry helper of every write.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{ResourceExt, api::ObjectMeta};

use super::Error;
use super::observe::Observation;
use crate::api::crd::OAuthClient;
use crate::api::keys::{
    CLIENT_LABEL, EXPIRES_AT_ANNOTATION, FIELD_MANAGER, FINGERPRINT_ANNOTATION,
    ISSUED_AT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use crate::api::reason::{Failure, Reason};
use crate::controller::context::Context;
use crate::controller::memo::{Change, Pending, Verified, Written};
use crate::decide::managed_secret::ReadSecret;
use crate::decide::{Attempt, SecretState};
use crate::oauth::response::{Token, sanitise};
use crate::output::redact::Scrubber;
use crate::output::secret;
use crate::spec::ClientSettings;
use crate::timing::time::truncate_to_seconds;

/// Writes are retried this many times in place before the reconcile gives up, so that a
/// transient API error right after an exchange does not cost the new token.
const WRITE_ATTEMPTS: u32 = 3;

/// Writes a new token into the managed Secret. A write the API server refuses (any 4xx but a
/// conflict or a rate limit) is a failure (`InvalidSpec`, with the server's message); a transient
/// one is an error (retried with backoff). Either way the token is kept for the next attempt
/// while it is valid.
pub async fn store(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
    settings: &ClientSettings,
    pending: Pending,
) -> Result<Attempt, Error> {
    let token = &pending.token;
    if let Err(failure) = secret::check_size(token, &settings.templates) {
        return Ok(Attempt::Failed(failure));
    }
    let keys = &ctx.shared.seal_keys;
    let body = secret::managed_secret(
        client,
        token,
        &settings.templates,
        &pending.fingerprint,
        keys,
    );
    let attempt = Attempt::Issued {
        exchanged_at: token.issued_at,
        // The Secret's annotations keep whole seconds; plan with exactly what a restart reads.
        issued_at: truncate_to_seconds(token.issued_at),
        expires_at: truncate_to_seconds(token.expires_at),
        token_type: token.token_type.clone(),
        scope: token.scope.clone(),
    };
    let absent = observation.secret == SecretState::Absent;
    let failure = match create_and_apply(client, ctx, observation, &body, absent).await {
        Ok(None) => {
            observation.learned.verified = Change::Set(Verified {
                credentials_rv: pending.credentials_rv.clone(),
                fingerprint: pending.fingerprint.clone(),
                generation: client.metadata.generation,
                matched: true,
            });
            observation.learned.pending = Change::Clear;
            // The exchange that obtained it counts as served (refresh requests, the least
            // interval) once its token is stored.
            observation.learned.last_exchange_at = Some(token.issued_at);
            return Ok(attempt);
        }
        Ok(Some(failure)) => failure,
        Err(WriteError::Refused(message)) => refusal(&observation.secret_name, &message, token),
        Err(WriteError::Failed(error)) => {
            observation.learned.pending = Change::Set(Box::new(pending));
            return Err(error);
        }
    };
    observation.learned.pending = Change::Set(Box::new(pending));
    Ok(Attempt::Failed(failure))
}

/// Creates the Secret when the caches show none, then applies it. `Some(failure)` when a Secret
/// of that name was created by someone else meanwhile.
async fn create_and_apply(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
    body: &serde_json::Value,
    absent: bool,
) -> Result<Option<Failure>, WriteError> {
    let name = observation.secret_name.clone();
    let mut created = None;
    if absent {
        match create_if_absent(client, ctx, &observation.key.namespace, &name).await? {
            Some(version) => created = version,
            None => {
                return Ok(Some(Failure::new(
                    Reason::SecretConflict,
                    format!(
                        "Secret {name} was created by someone else meanwhile and is not managed by this OAuthClient; it is left untouched (choose another spec.target.name or delete it)"
                    ),
                )));
            }
        }
    }
    apply(ctx, observation, body, created).await?;
    Ok(None)
}

/// Creates the managed Secret when the caches show none, so that a Secret someone created
/// meanwhile is never taken over (a server-side apply would merge into it). Only what identifies
/// it is created (name, type, the operator's labels, the ownerReference): the apply that follows
/// writes everything else and owns it alone. `None` when a Secret of that name exists and is not
/// controlled by this OAuthClient; else the resourceVersion of the Secret created (None when it
/// existed already, controlled by this OAuthClient).
async fn create_if_absent(
    client: &OAuthClient,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Option<String>>, WriteError> {
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (
            CLIENT_LABEL.to_owned(),
            secret::client_label_value(&client.name_any()),
        ),
    ]);
    let object = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            owner_references: Some(vec![secret::owner_reference(client)]),
            ..Default::default()
        },
        type_: client.spec.target.as_ref().map(|t| t.type_.clone()),
        ..Default::default()
    };
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match with_retries(|| api.create(&params, &object)).await {
        Ok(secret) => Ok(Some(secret.resource_version())),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api
                .get_metadata_opt(name)
                .await
                .map_err(|e| WriteError::Failed(Error::ReadSecret(e)))?;
            let ours = existing.is_some_and(|meta| {
                let refs = meta.metadata.owner_references.unwrap_or_default();
                secret::controlled_by(&refs, client)
            });
            Ok(ours.then_some(None))
        }
        Err(e) => Err(WriteError::classify(e)),
    }
}

/// Re-renders the managed Secret from the token it holds (the target settings changed, the
/// token did not). `Some(failure)` when the API server refuses the result.
pub async fn rerender(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
    settings: &ClientSettings,
) -> Result<Option<Failure>, Error> {
    // The token as observed and found intact; or, when the reconcile did not read the Secret
    // (its own last write, a spec change), read now and checked like any read: a token that is
    // not exactly as sealed, and the one the status records, is never written again (the next
    // reconcile finds the Secret changed and exchanges anew).
    let verified = match observation.verified_token.take() {
        Some(verified) => Some(verified),
        None => read_intact(client, ctx, observation).await?,
    };
    let Some((token, fp)) = verified else {
        observation.learned.trusted_rv = Change::Clear;
        return Ok(None);
    };
    if let Err(failure) = secret::check_size(&token, &settings.templates) {
        return Ok(Some(failure));
    }
    let keys = &ctx.shared.seal_keys;
    let body = secret::managed_secret(client, &token, &settings.templates, &fp, keys);
    match apply(ctx, observation, &body, None).await {
        Ok(()) => Ok(None),
        Err(WriteError::Failed(error)) => Err(error),
        Err(WriteError::Refused(message)) => {
            Ok(Some(refusal(&observation.secret_name, &message, &token)))
        }
    }
}

/// Reads the managed Secret and returns its token and fingerprint if it may be written again
/// as it is.
async fn read_intact(
    client: &OAuthClient,
    ctx: &Context,
    observation: &Observation,
) -> Result<Option<(Token, String)>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), &observation.key.namespace);
    let Some(current) = api
        .get_opt(&observation.secret_name)
        .await
        .map_err(Error::ReadSecret)?
    else {
        return Ok(None);
    };
    let check = secret::check_seal(&current, client, &ctx.shared.seal_keys);
    let annotations = current.annotations();
    let time = |key: &str| annotations.get(key).and_then(|t| t.parse().ok());
    let token = match (time(ISSUED_AT_ANNOTATION), time(EXPIRES_AT_ANNOTATION)) {
        (Some(issued_at), Some(expires_at)) => Some(crate::decide::StoredToken {
            issued_at,
            expires_at,
            current: false,
            target_current: false,
        }),
        _ => None,
    };
    let status_time = |t: &Option<String>| t.as_deref().and_then(|t| t.parse().ok());
    let refs = current
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    let verdict = crate::decide::managed_secret::classify(&ReadSecret {
        name: &observation.secret_name,
        controlled: secret::controlled_by(&refs, client),
        check: &check,
        sealed: annotations.contains_key(crate::api::keys::MAC_ANNOTATION),
        drift: secret::drift(&current, client),
        token,
        status_issued_at: status_time(&observation.status.issued_at),
        status_expires_at: status_time(&observation.status.expires_at),
    });
    Ok(verdict
        .token_trusted
        .then(|| secret::stored_token(&current))
        .flatten()
        .zip(annotations.get(FINGERPRINT_ANNOTATION).cloned()))
}

/// Applies the managed Secret (server-side apply, forced, asking for the written metadata
/// only) and remembers the annotations written. `created`: the resourceVersion of the Secret the
/// operator just created for it, which the cache may show next.
async fn apply(
    ctx: &Context,
    observation: &mut Observation,
    body: &serde_json::Value,
    created: Option<String>,
) -> Result<(), WriteError> {
    let (namespace, name) = (&observation.key.namespace, observation.secret_name.as_str());
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), namespace);
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
        .map_err(WriteError::classify)?;
    if let Some(version) = written.resource_version() {
        observation.learned.trusted_rv = Change::Set(version);
    }
    observation.learned.written_secret = Change::Set(Written {
        before,
        at: Instant::now(),
        annotations: written.annotations().clone(),
    });
    Ok(())
}

/// Why a write of the managed Secret did not happen.
enum WriteError {
    /// The API server refused it (a 4xx other than a conflict or a rate limit: invalid, too
    /// large, forbidden by RBAC or an admission policy): something must change before it can
    /// succeed.
    Refused(String),
    /// Anything else, after the in-place retries.
    Failed(Error),
}

impl WriteError {
    fn classify(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(e) if (400..500).contains(&e.code) && !matches!(e.code, 409 | 429) => {
                WriteError::Refused(e.message.clone())
            }
            other => WriteError::Failed(Error::WriteSecret(other)),
        }
    }
}

/// The failure for a write the API server refused: its message, scrubbed of the token (the
/// server's message is not expected to echo data, but it is shown in public places).
fn refusal(name: &str, message: &str, token: &Token) -> Failure {
    let scrubber = Scrubber::none();
    let scrubber = scrubber.with_token(token.access_token.expose());
    match sanitise(message, &scrubber) {
        Some(detail) => Failure::invalid_spec(format!(
            "the API server refused the managed Secret {name}: {detail}"
        )),
        None => Failure::invalid_spec(format!("the API server refused the managed Secret {name}")),
    }
}

/// Runs a write up to [`WRITE_ATTEMPTS`] times while it fails transiently (5xx, 429, 409
/// conflicts of versions, connection errors).
pub async fn with_retries<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
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

fn retriable(error: &kube::Error) -> bool {
    match error {
        // 409 is a conflict of versions (worth retrying), or AlreadyExists (not).
        kube::Error::Api(e) => {
            e.code >= 500 || e.code == 429 || (e.code == 409 && e.reason != "AlreadyExists")
        }
        _ => true,
    }
}
