//! Step 1, observe: everything a reconcile knows before it decides, gathered once into an
//! immutable [`Snapshot`] — from the object, the watch caches and indexes, the client's memory,
//! and (only when those cannot tell) the API server. What the managed Secret is, is decided
//! purely by [`crate::decide::managed_secret`]; this step does the reads.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::credentials::{self, Loaded, Source, SubjectSource};
use super::error::Error;
use super::subject;
use crate::api::crd::{CaBundleKind, CaBundleRef, OAuthClient, OAuthClientStatus};
use crate::api::keys::{MAC_ANNOTATION, REFRESH_REQUESTED_ANNOTATION};
use crate::api::name::NamespacedName;
use crate::api::reason::Failure;
use crate::controller::context::Context;
use crate::controller::memory::{CacheUpdate, Change, FailedWith, Memory, Verified};
use crate::controller::own_writes::WriteOf;
use crate::decide::managed_secret::{self, Described, IntactToken};
use crate::decide::{Observed, SecretState};
use crate::output::{fingerprint, secret};
use crate::spec::ClientSettings;

/// What one reconcile saw of its client, as it started. Never changed once built: the steps
/// after it return what they did.
#[derive(Debug)]
pub struct Snapshot {
    /// When the reconcile started (by the clock).
    pub now: Timestamp,
    /// The client's key.
    pub key: NamespacedName,
    /// Its status as just read (default when none).
    pub status: OAuthClientStatus,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.uid`.
    pub uid: String,
    /// The managed Secret's name.
    pub secret_name: String,
    /// The spec, resolved, or why it is unusable.
    pub settings: Result<ClientSettings, Failure>,
    /// resourceVersion of the credentials Secret (or ServiceAccount), as the cache shows it.
    pub credentials_rv: Option<String>,
    /// The managed Secret.
    pub secret: SecretState,
    /// The credentials, when observing had to read them.
    pub credentials: Option<Loaded>,
    /// The credentials changed since the last failure.
    pub credentials_changed: bool,
    /// resourceVersion of the object `spec.caBundleRef` names, as the cache shows it.
    pub trust_rv: Option<String>,
    /// The CA bundle's object changed since the last failure.
    pub trust_changed: bool,
    /// `oauth.token-operator.dev/refresh-requested-at`, when set and readable.
    pub refresh_requested_at: Option<Timestamp>,
    /// The client's memory as the reconcile started.
    pub memory: Memory,
    /// The managed Secret's metadata (owned by the operator) that someone else changed.
    pub drift: Option<Vec<String>>,
    /// The managed Secret's token and fingerprint, as read and found intact (sealed together,
    /// and the token the status records): what a re-rendering writes again.
    pub intact_token: Option<IntactToken>,
    /// What observing learned that later reconciles should know.
    pub found: Found,
}

/// What observing learned for the memory.
#[derive(Debug, Default)]
pub struct Found {
    /// The fingerprint check, the managed Secret's trusted version, the end of this process's
    /// write being ahead of the cache.
    pub caches: CacheUpdate,
    /// The credentials that failed, seen again with the same values under a new version.
    pub failed_with: Option<FailedWith>,
    /// `spec.caBundleRef` is gone: its HTTP client is let go.
    pub trust_released: bool,
}

impl Snapshot {
    /// The key of the managed Secret.
    pub fn secret_key(&self) -> NamespacedName {
        NamespacedName::new(&self.key.namespace, &self.secret_name)
    }

    /// What the pure planner looks at.
    pub fn view(&self) -> Observed<'_> {
        Observed {
            generation: self.generation,
            status: &self.status,
            refresh: self.settings.as_ref().map(|s| s.refresh),
            credentials_problem: self
                .credentials
                .as_ref()
                .and_then(|l| l.credentials.as_ref().err()),
            secret: &self.secret,
            refresh_requested_at: self.refresh_requested_at,
            credentials_changed: self.credentials_changed,
            trust_changed: self.trust_changed,
            uid: &self.uid,
            secret_name: &self.secret_name,
            failure_streak: self.memory.retry.failure_streak,
            issued_events: self.memory.ledger.issued,
            last_exchange_at: self.memory.retry.last_exchange_at,
            last_attempt_at: self.memory.retry.last_attempt_at,
            served_request: self.memory.retry.served_request,
            failure_seen_here: self.memory.retry.failed_with.is_some(),
            drift: self.drift.as_deref(),
            restore_streak: self.memory.retry.restore_streak,
            margin_warned: self.memory.ledger.margin_warned,
        }
    }

    /// The settings of a spec the plan found usable.
    pub fn usable_settings(&self) -> &ClientSettings {
        self.settings
            .as_ref()
            .expect("an exchange or a re-render is planned for a usable spec only")
    }
}

/// The credentials, read at most once while observing.
#[derive(Default)]
struct Reader(Option<Loaded>);

impl Reader {
    async fn get(&mut self, client: &OAuthClient, ctx: &Context) -> Result<&Loaded, Error> {
        if self.0.is_none() {
            self.0 = Some(credentials::read(client, ctx).await?);
        }
        Ok(self.0.as_ref().expect("read above"))
    }
}

/// Gathers what a reconcile of `client` knows.
pub async fn observe(client: &OAuthClient, ctx: &Context) -> Result<Snapshot, Error> {
    // The Secret caches must be complete before anything is concluded from them (after a
    // restart, a missing entry would otherwise look like a missing token).
    let _ = ctx.secrets_synced.clone().wait_for(|synced| *synced).await;
    let key = NamespacedName::of(&client.metadata);
    let secret_name = secret::target_name(client);
    let credentials_rv = link(client, ctx, &key, &secret_name);
    let bundle = client.spec.ca_bundle_ref.as_ref();
    let memory = ctx.memories.snapshot(&key);
    let status = client.status.clone().unwrap_or_default();
    let settings = settings(client, &secret_name, ctx);
    let now = ctx.shared.clock.now();
    let managed = managed_secret(client, ctx, &key, &secret_name, &memory, &status).await?;
    let mut reader = Reader::default();
    let mut caches = managed.caches;
    let mut secret = managed.state;
    if let (Some(stored), Ok(settings)) = (&managed.fingerprint, &settings) {
        let check = verify(
            client,
            ctx,
            &mut reader,
            &memory,
            settings,
            stored,
            &credentials_rv,
        );
        let check = check.await?;
        if let SecretState::Owned(Some(token)) = &mut secret {
            token.current = check.verified.matched;
        }
        if check.new {
            caches.verified = Change::Set(check.verified);
        }
    }
    let since_failure = changed_since_failure(client, ctx, &mut reader, &memory, &credentials_rv);
    let since_failure = since_failure.await?;
    let trust_rv = cached_version(ctx, &key.namespace, bundle);
    Ok(Snapshot {
        now,
        trust_changed: trust_changed_since_failure(&memory, trust_rv.as_ref()),
        trust_rv,
        found: Found {
            caches,
            failed_with: since_failure.same_values,
            trust_released: bundle.is_none() && memory.handles.trust.is_some(),
        },
        credentials_changed: since_failure.changed,
        credentials: reader.0,
        refresh_requested_at: client
            .annotations()
            .get(REFRESH_REQUESTED_ANNOTATION)
            .and_then(|t| t.parse().ok()),
        generation: client.metadata.generation,
        uid: client.uid().unwrap_or_default(),
        drift: managed.drift,
        intact_token: managed.intact_token,
        secret,
        status,
        settings,
        credentials_rv,
        secret_name,
        memory,
        key,
    })
}

/// Links the client to what it uses, for the watch mappers: its credentials source (a Secret, or
/// a ServiceAccount), the object its `caBundleRef` names and the managed Secret it writes.
/// Returns the credentials source's resourceVersion as the caches show it.
fn link(client: &OAuthClient, ctx: &Context, key: &NamespacedName, target: &str) -> Option<String> {
    let bundle = client.spec.ca_bundle_ref.as_ref();
    let (secret_bundle, map_bundle) = match bundle.map(|b| (b.kind, b.name.as_str())) {
        Some((CaBundleKind::Secret, name)) => (Some(name), None),
        Some((CaBundleKind::ConfigMap, name)) => (None, Some(name)),
        None => (None, None),
    };
    let source = credentials::source(client);
    let credentials = match source {
        Source::Secret(name) => Some(name),
        Source::ServiceAccount(_) | Source::Public | Source::None => None,
    };
    // The subject token's Secret: a Secret subject, or the managed Secret of the client whose
    // token this one exchanges (as learned when that client was last read).
    let subject = credentials::subject_source(client);
    let learned;
    let (subject_client, subject_secret, subject_account) = match subject {
        Some(SubjectSource::Client(name)) => {
            learned = ctx.subject_secret(key);
            (Some(name), learned.as_deref(), None)
        }
        Some(SubjectSource::Secret(name)) => (None, Some(name), None),
        Some(SubjectSource::ServiceAccount(name)) => (None, None, Some(name)),
        None => (None, None, None),
    };
    let clients: Vec<&str> = subject_client.into_iter().collect();
    ctx.client_refs.link_all(key, &clients);
    let secrets: Vec<&str> = credentials
        .into_iter()
        .chain(secret_bundle)
        .chain(subject_secret)
        .collect();
    ctx.references.link_all(key, &secrets);
    let maps: Vec<&str> = map_bundle.into_iter().collect();
    ctx.config_map_references.link_all(key, &maps);
    ctx.references.link_target(key, target);
    let own_account = match source {
        Source::ServiceAccount(name) => Some(name),
        _ => None,
    };
    let accounts: Vec<&str> = own_account.into_iter().chain(subject_account).collect();
    ctx.service_account_refs.link_all(key, &accounts);
    let account_version = |name: &str| {
        ctx.service_accounts
            .as_ref()
            .and_then(|index| index.resource_version(&key.namespace, name))
    };
    let own = match source {
        Source::Secret(name) => ctx.secrets.resource_version(&key.namespace, name),
        Source::ServiceAccount(name) => account_version(name),
        Source::Public | Source::None => None,
    };
    let secret_version =
        || subject_secret.and_then(|name| ctx.secrets.resource_version(&key.namespace, name));
    let subject = subject.map(|subject| match subject {
        SubjectSource::ServiceAccount(name) => account_version(name),
        SubjectSource::Secret(_) => secret_version(),
        // The referenced client's own version (it appears, becomes Ready, ...) and its
        // managed Secret's.
        SubjectSource::Client(name) => Some(subject::client_subject_version(
            ctx.subject_client_version(&NamespacedName::new(&key.namespace, name))
                .as_deref(),
            secret_version().as_deref(),
        )),
    });
    credentials::composed_version(own, subject)
}

/// The resourceVersion of the object `reference` names, as the watch caches show it.
pub fn cached_version(
    ctx: &Context,
    namespace: &str,
    reference: Option<&CaBundleRef>,
) -> Option<String> {
    let reference = reference?;
    match reference.kind {
        CaBundleKind::ConfigMap => ctx.config_maps.resource_version(namespace, &reference.name),
        CaBundleKind::Secret => ctx.secrets.resource_version(namespace, &reference.name),
    }
}

/// Whether the CA bundle's object changed since the last failure: the cache shows a version
/// other than the one the failure happened with (a cache that shows none changes nothing).
fn trust_changed_since_failure(memory: &Memory, trust_rv: Option<&String>) -> bool {
    let (Some(failed), Some(now)) = (&memory.retry.failed_with, trust_rv) else {
        return false;
    };
    failed.trust_rv.as_ref() != Some(now)
}

/// The spec resolved, and the managed Secret's name checked (a default `<name>-token` can be
/// too long).
fn settings(
    client: &OAuthClient,
    secret_name: &str,
    ctx: &Context,
) -> Result<ClientSettings, Failure> {
    let settings = ClientSettings::resolve(&client.spec, &ctx.shared.policy)?;
    let named = client
        .spec
        .target
        .as_ref()
        .is_some_and(|t| t.name.is_some());
    let field = if named {
        "spec.target.name"
    } else {
        "the default managed Secret name (<metadata.name>-token; set spec.target.name)"
    };
    crate::spec::check_object_name(field, secret_name)?;
    Ok(settings)
}

/// Whether the stored token was issued for the current spec and credentials: its fingerprint
/// checked against them (a check not repeated while its inputs stay the same). `new`: made now.
async fn verify(
    client: &OAuthClient,
    ctx: &Context,
    reader: &mut Reader,
    memory: &Memory,
    settings: &ClientSettings,
    stored: &str,
    credentials_rv: &Option<String>,
) -> Result<Check, Error> {
    let generation = client.metadata.generation;
    let remembered = memory.caches.verified.as_ref().filter(|v| {
        &v.credentials_rv == credentials_rv && v.fingerprint == stored && v.generation == generation
    });
    if let Some(verified) = remembered {
        return Ok(Check {
            verified: verified.clone(),
            new: false,
        });
    }
    let loaded = reader.get(client, ctx).await?;
    let matched = loaded
        .credentials
        .as_ref()
        .is_ok_and(|c| fingerprint::matches(stored, &settings.exchange, c));
    Ok(Check {
        verified: Verified {
            credentials_rv: credentials_rv.clone(),
            fingerprint: stored.to_owned(),
            generation,
            matched,
        },
        new: true,
    })
}

/// A fingerprint check, and whether it was made by this reconcile.
struct Check {
    verified: Verified,
    new: bool,
}

/// Whether the credentials changed since the last failure.
struct SinceFailure {
    /// They did.
    changed: bool,
    /// They did not, but the same values were seen under a new version: remember it, so that
    /// they are not read again.
    same_values: Option<FailedWith>,
}

/// Whether the credentials changed since the last failure: the cache shows a version other than
/// the one that failed (a cache that has not caught up, or a deletion, changes nothing), and the
/// values differ from the ones that failed (a metadata-only edit keeps the backoff).
async fn changed_since_failure(
    client: &OAuthClient,
    ctx: &Context,
    reader: &mut Reader,
    memory: &Memory,
    credentials_rv: &Option<String>,
) -> Result<SinceFailure, Error> {
    let unchanged = SinceFailure {
        changed: false,
        same_values: None,
    };
    let (Some(failed), Some(now_rv)) = (&memory.retry.failed_with, credentials_rv) else {
        return Ok(unchanged);
    };
    if failed.resource_version.as_ref() == Some(now_rv) {
        return Ok(unchanged);
    }
    let loaded = reader.get(client, ctx).await?;
    let digest = Some(loaded.digest(&ctx.shared.credentials_key));
    if digest != failed.digest {
        return Ok(SinceFailure {
            changed: true,
            same_values: None,
        });
    }
    Ok(SinceFailure {
        changed: false,
        same_values: Some(FailedWith {
            resource_version: loaded.resource_version.clone(),
            digest,
            trust_rv: failed.trust_rv.clone(),
        }),
    })
}

/// The managed Secret as observed.
struct Managed {
    state: SecretState,
    /// The fingerprint stored with its token.
    fingerprint: Option<String>,
    caches: CacheUpdate,
    drift: Option<Vec<String>>,
    intact_token: Option<IntactToken>,
}

impl Managed {
    fn described(described: Described, caches: CacheUpdate) -> Managed {
        Managed {
            state: SecretState::Owned(described.token),
            fingerprint: described.fingerprint,
            caches,
            drift: None,
            intact_token: None,
        }
    }

    fn seen(state: SecretState, caches: CacheUpdate) -> Managed {
        Managed {
            state,
            fingerprint: None,
            caches,
            drift: None,
            intact_token: None,
        }
    }
}

/// The managed Secret as the caches (or this process's own recent write) show it, and the
/// fingerprint it carries. A version this process did not write or verify (someone else changed
/// it, or the process just started) is read once and inspected.
async fn managed_secret(
    client: &OAuthClient,
    ctx: &Context,
    key: &NamespacedName,
    name: &str,
    memory: &Memory,
    status: &OAuthClientStatus,
) -> Result<Managed, Error> {
    let namespace = &key.namespace;
    let cached = ctx.managed.get(namespace, name);
    let cached_rv = cached.as_ref().map(|m| m.resource_version.to_string());
    // Our own last write wins while the cache still shows the Secret as it was before it, and
    // only until the watches have shown the write: then the cache is as current as the write
    // (a Secret missing from it since then was deleted or lost the operator's label).
    let written = memory.caches.written.as_ref();
    let awaited = ctx
        .own_writes
        .awaits(WriteOf::Secret, &NamespacedName::new(namespace, name));
    let recent = written
        .filter(|_| awaited)
        .and_then(|w| w.if_cache_is_behind(cached_rv.as_ref()));
    let mut caches = CacheUpdate::default();
    if recent.is_none() && written.is_some() {
        caches.written = Change::Clear;
    }
    if let Some(annotations) = recent {
        return Ok(Managed::described(
            managed_secret::describe(client, &annotations),
            caches,
        ));
    }
    if let Some(managed) = &cached
        && cached_rv.is_some()
        && cached_rv == memory.caches.trusted_rv
    {
        let described = managed_secret::describe(client, &managed.annotation_map());
        return Ok(Managed::described(described, caches));
    }
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    // Whose is it? The cache tells, or (without the operator's label) one metadata GET.
    let uid = client.uid().unwrap_or_default();
    let refused = match &cached {
        Some(managed) => managed_secret::refuse_unread(
            name,
            managed.controlled_by(&uid),
            managed.annotation_map().contains_key(MAC_ANNOTATION),
            true,
        ),
        None => {
            if ctx.secrets.resource_version(namespace, name).is_none() {
                return Ok(Managed::seen(SecretState::Absent, caches));
            }
            let meta = api
                .get_metadata_opt(name)
                .await
                .map_err(Error::ReadSecret)?;
            let Some(meta) = meta else {
                return Ok(Managed::seen(SecretState::Absent, caches));
            };
            let refs = meta.metadata.owner_references.clone().unwrap_or_default();
            managed_secret::refuse_unread(
                name,
                secret::controlled_by(&refs, client),
                meta.annotations().contains_key(MAC_ANNOTATION),
                false,
            )
        }
    };
    if let Some(conflict) = refused {
        return Ok(Managed::seen(conflict, caches));
    }
    let Some(read) = api.get_opt(name).await.map_err(Error::ReadSecret)? else {
        return Ok(Managed::seen(SecretState::Absent, caches));
    };
    let inspection = managed_secret::inspect(&read, client, &ctx.shared.seal_keys, status);
    if inspection.verdict.trusted {
        caches.trusted_rv = Change::Set(inspection.resource_version);
    }
    Ok(Managed {
        state: inspection.verdict.state,
        fingerprint: inspection.fingerprint,
        caches,
        drift: inspection.verdict.drift,
        intact_token: inspection.intact_token,
    })
}
