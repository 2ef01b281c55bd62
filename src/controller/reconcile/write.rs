//! Step 5, write the managed Secret: create it (when absent, so that one created meanwhile is
//! never taken over), apply it, re-render it; each returns what it did.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};

use jiff::Timestamp;

use super::error::Error;
use super::observe::Snapshot;
use super::retries::with_retries;
use crate::api::crd::OAuthClient;
use crate::api::keys::FIELD_MANAGER;
use crate::api::reason::{Failure, Reason};
use crate::base::Scrubber;
use crate::base::time::truncate_to_seconds;
use crate::controller::context::Context;
use crate::controller::memory::{Pending, Verified, Written};
use crate::controller::own_writes::WriteOf;
use crate::controller::secret_index::OurAnnotations;
use crate::decide::managed_secret::{self, IntactToken};
use crate::decide::stale_fields as stale;
use crate::decide::{Attempt, SecretState};
use crate::oauth::response::{Token, sanitise};
use crate::output::secret;
use crate::spec::ClientSettings;

/// What a write of the managed Secret leaves for the memory.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// The version written, known to be as the operator wrote it.
    pub trusted_rv: Option<String>,
    /// The annotations written, trusted over a cache that has not caught up.
    pub written: Written,
}

/// What writing a new token came to.
#[derive(Debug)]
pub enum Stored {
    /// The managed Secret holds the token.
    Written {
        /// The attempt, as the settle step sees it.
        attempt: Box<Attempt>,
        /// The write.
        record: WriteRecord,
        /// The stored token's fingerprint, checked by construction.
        verified: Verified,
        /// When the request that obtained it was sent.
        exchanged_at: Timestamp,
    },
    /// Not written, for a reason the status reports (the API server refused it, a Secret of
    /// that name appeared, the token is too large); the token is kept for the next attempt
    /// unless it can never be written.
    Refused {
        /// Why.
        failure: Failure,
        /// The token, kept.
        kept: Option<Box<Pending>>,
    },
    /// Not written, transiently (after the in-place retries): the reconcile ends with the
    /// error, the token kept.
    Interrupted {
        /// The API error.
        error: Error,
        /// The token, kept.
        kept: Box<Pending>,
    },
}

/// Writes a new token into the managed Secret. A write the API server refuses (any 4xx but a
/// conflict or a rate limit) is a failure (`InvalidSpec`, with the server's message); a transient
/// one is an error (retried with backoff). Either way the token is kept for the next attempt
/// while it is valid.
pub async fn store(
    client: &OAuthClient,
    ctx: &Context,
    seen: &Snapshot,
    settings: &ClientSettings,
    pending: Box<Pending>,
) -> Stored {
    let token = &pending.token;
    if let Err(failure) = secret::check_size(token, &settings.templates) {
        return Stored::Refused {
            failure,
            kept: None,
        };
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
        issued_token_type: token.issued_token_type.clone(),
    };
    let absent = seen.secret == SecretState::Absent;
    let failure = match create_and_apply(client, ctx, seen, &body, absent).await {
        Ok(Created::Applied(record)) => {
            return Stored::Written {
                attempt: Box::new(attempt),
                record,
                verified: Verified {
                    credentials_rv: pending.credentials_rv.clone(),
                    fingerprint: pending.fingerprint.clone(),
                    generation: client.metadata.generation,
                    matched: true,
                },
                exchanged_at: token.issued_at,
            };
        }
        Ok(Created::Conflict(failure)) => failure,
        Err(WriteError::Refused(message)) => refusal(&seen.secret_name, &message, token),
        Err(WriteError::Failed(error)) => {
            return Stored::Interrupted {
                error,
                kept: pending,
            };
        }
    };
    Stored::Refused {
        failure,
        kept: Some(pending),
    }
}

/// What creating (when absent) and applying came to.
enum Created {
    /// Applied.
    Applied(WriteRecord),
    /// A Secret of that name was created by someone else meanwhile.
    Conflict(Failure),
}

/// Writes the Secret: when the caches show none, in one apply that can only create it (see
/// [`create`]); else (or when the Secret turns out to be this OAuthClient's after all) an apply.
async fn create_and_apply(
    client: &OAuthClient,
    ctx: &Context,
    seen: &Snapshot,
    body: &serde_json::Value,
    absent: bool,
) -> Result<Created, WriteError> {
    let name = &seen.secret_name;
    if absent {
        match create(client, ctx, seen, body).await? {
            Creation::Created(record) => return Ok(Created::Applied(record)),
            Creation::Existed => {}
            Creation::Foreign => {
                return Ok(Created::Conflict(Failure::new(
                    Reason::SecretConflict,
                    format!(
                        "Secret {name} was created by someone else meanwhile and is not managed by this OAuthClient; it is left untouched (choose another spec.target.name or delete it)"
                    ),
                )));
            }
        }
    }
    Ok(Created::Applied(apply(ctx, seen, body).await?))
}

/// What creating the Secret came to.
enum Creation {
    /// Created, with its whole body.
    Created(WriteRecord),
    /// It existed already, controlled by this OAuthClient.
    Existed,
    /// It exists and is not controlled by this OAuthClient.
    Foreign,
}

/// Creates the managed Secret, whole, in one write (a create, so that a Secret someone created
/// meanwhile is never taken over: the API server refuses it with 409 and nothing is written).
/// Whether the Secret found is this OAuthClient's (its own earlier write, not in the caches
/// yet) is then read from its ownerReferences.
///
/// A create makes the operator the owner of every field as an updater, not as the applier, and a
/// later apply removes only what the applier owns: [`drop_stale`] removes what the create wrote
/// and a later rendering no longer has.
async fn create(
    client: &OAuthClient,
    ctx: &Context,
    seen: &Snapshot,
    body: &serde_json::Value,
) -> Result<Creation, WriteError> {
    let (namespace, name) = (&seen.key.namespace, seen.secret_name.as_str());
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    let object: Secret = serde_json::from_value(body.clone())
        .map_err(|e| WriteError::Refused(format!("the managed Secret is not a Secret: {e}")))?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    let before = cached_before(ctx, seen);
    let write = ctx.begin_write(WriteOf::Secret, &seen.secret_key(), &seen.key);
    let created = with_retries(|| api.create(&params, &object)).await;
    write.end(
        created
            .as_ref()
            .ok()
            .and_then(|s| s.metadata.resource_version.as_deref()),
    );
    match created {
        Ok(written) => Ok(Creation::Created(record(
            before,
            written.resource_version(),
            written.annotations(),
        ))),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api
                .get_metadata_opt(name)
                .await
                .map_err(|e| WriteError::Failed(Error::ReadSecret(e)))?;
            let ours = existing.is_some_and(|meta| {
                let refs = meta.metadata.owner_references.unwrap_or_default();
                secret::controlled_by(&refs, client)
            });
            Ok(if ours {
                Creation::Existed
            } else {
                Creation::Foreign
            })
        }
        Err(e) => Err(WriteError::classify(e)),
    }
}

/// What re-rendering came to.
#[derive(Debug)]
pub enum Rerendered {
    /// Written again from its token.
    Written(WriteRecord),
    /// Its token, read back, is not exactly as sealed or not the one the status records: nothing
    /// is written and its version is no longer trusted (the next reconcile finds the Secret
    /// changed and exchanges anew).
    NotIntact,
    /// The API server refused the result (or it is too large).
    Refused(Failure),
    /// A transient API error, after the in-place retries.
    Interrupted(Error),
}

/// Re-renders the managed Secret from the token it holds (the target settings changed, the
/// token did not).
pub async fn rerender(
    client: &OAuthClient,
    ctx: &Context,
    seen: &Snapshot,
    settings: &ClientSettings,
) -> Rerendered {
    // The token as observed and found intact; or, when the reconcile did not read the Secret
    // (its own last write, a spec change), read now and checked like any read.
    let intact = match &seen.intact_token {
        Some(intact) => Some(intact.clone()),
        None => match read_intact(client, ctx, seen).await {
            Ok(intact) => intact,
            Err(error) => return Rerendered::Interrupted(error),
        },
    };
    let Some(IntactToken { token, fingerprint }) = intact else {
        return Rerendered::NotIntact;
    };
    if let Err(failure) = secret::check_size(&token, &settings.templates) {
        return Rerendered::Refused(failure);
    }
    let keys = &ctx.shared.seal_keys;
    let body = secret::managed_secret(client, &token, &settings.templates, &fingerprint, keys);
    match apply(ctx, seen, &body).await {
        Ok(record) => Rerendered::Written(record),
        Err(WriteError::Failed(error)) => Rerendered::Interrupted(error),
        Err(WriteError::Refused(message)) => {
            Rerendered::Refused(refusal(&seen.secret_name, &message, &token))
        }
    }
}

/// Reads the managed Secret and returns its token if it may be written again as it is.
async fn read_intact(
    client: &OAuthClient,
    ctx: &Context,
    seen: &Snapshot,
) -> Result<Option<IntactToken>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), &seen.key.namespace);
    let current = api
        .get_opt(&seen.secret_name)
        .await
        .map_err(Error::ReadSecret)?;
    Ok(current.and_then(|current| {
        managed_secret::inspect(&current, client, &ctx.shared.seal_keys, &seen.status).intact_token
    }))
}

/// Applies the managed Secret (server-side apply, forced, asking for the written metadata
/// only); returns what was written. `created`: the resourceVersion of the Secret the operator
/// just created for it, which the cache may show next.
async fn apply(
    ctx: &Context,
    seen: &Snapshot,
    body: &serde_json::Value,
) -> Result<WriteRecord, WriteError> {
    let (namespace, name) = (&seen.key.namespace, seen.secret_name.as_str());
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(body);
    // One write for the watches, the removal of stale fields included: its events are this
    // write's, and any other version seen meanwhile reconciles the client again.
    let before = cached_before(ctx, seen);
    let write = ctx.begin_write(WriteOf::Secret, &seen.secret_key(), &seen.key);
    let written = match with_retries(|| api.patch_metadata(name, &params, &patch)).await {
        Ok(written) => written,
        Err(error) => {
            write.end(None);
            return Err(WriteError::classify(error));
        }
    };
    let managed_fields = written
        .metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default();
    if let (Some(stale), Some(precondition)) = (
        stale::after_apply(managed_fields, FIELD_MANAGER, body),
        written.resource_version(),
    ) {
        // Rare: the first rendering since the create that drops a key, label or annotation. Once:
        // the token is written either way; a failure (the Secret changed meanwhile) is left to
        // the next apply, which finds the same fields.
        let patch = Patch::Merge(stale.removal(&precondition));
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        match api.patch_metadata(name, &params, &patch).await {
            Ok(pruned) => {
                write.end(pruned.resource_version().as_deref());
                return Ok(record(
                    before,
                    pruned.resource_version(),
                    pruned.annotations(),
                ));
            }
            Err(error) => {
                tracing::debug!(%error, "removing what the create wrote and the apply dropped failed; the next apply tries again");
            }
        }
    }
    write.end(written.resource_version().as_deref());
    Ok(record(
        before,
        written.resource_version(),
        written.annotations(),
    ))
}

/// The managed Secret's version in the cache now, read before a write ([`record`]): read after
/// the answer, it could already be someone else's later version.
fn cached_before(ctx: &Context, seen: &Snapshot) -> Vec<Option<String>> {
    let (namespace, name) = (&seen.key.namespace, seen.secret_name.as_str());
    vec![
        ctx.managed
            .get(namespace, name)
            .map(|m| m.resource_version.to_string()),
    ]
}

/// What a write leaves for the memory: the version written, and `before`, the one the cache
/// showed before the write was sent (a cache still showing it is behind).
fn record(
    before: Vec<Option<String>>,
    written_rv: Option<String>,
    annotations: &BTreeMap<String, String>,
) -> WriteRecord {
    WriteRecord {
        trusted_rv: written_rv,
        written: Written {
            before,
            at: Instant::now(),
            annotations: OurAnnotations::of(annotations),
        },
    }
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
