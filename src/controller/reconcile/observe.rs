//! Step 1, observe: everything a reconcile knows before it decides, gathered once — from the
//! object, the watch caches and indexes, the client's memo, and (only when the caches cannot
//! tell) the API server. The credentials and the CA bundle are read when needed, once.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::Api;

use super::Error;
use super::trust::{self, LoadedTrust};
use crate::api::crd::{CaBundleKind, ClientAuthMethod, OAuthClient, OAuthClientStatus};
use crate::api::keys::{
    EXPIRES_AT_ANNOTATION, FINGERPRINT_ANNOTATION, ISSUED_AT_ANNOTATION, MAC_ANNOTATION,
    REFRESH_REQUESTED_ANNOTATION, TARGET_HASH_ANNOTATION,
};
use crate::api::name::NamespacedName;
use crate::api::reason::Failure;
use crate::controller::context::Context;
use crate::controller::memo::{Change, FailedWith, Learned, Memo, Verified};
use crate::decide::managed_secret::ReadSecret;
use crate::decide::{Observed, SecretState, StoredToken};
use crate::oauth::credentials::{self, Credentials};
use crate::output::{fingerprint, secret};
use crate::spec::ClientSettings;

/// The credentials as read, and the resourceVersion of the Secret they were read from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// resourceVersion of the credentials Secret (None: it does not exist).
    pub resource_version: Option<String>,
    /// The credentials, or why they cannot be used.
    pub credentials: Result<Credentials, Failure>,
}

/// What one reconcile knows about its client.
#[derive(Debug)]
pub struct Observation {
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
    /// resourceVersion of the credentials Secret, as the cache shows it.
    pub credentials_rv: Option<String>,
    /// The managed Secret.
    pub secret: SecretState,
    /// The credentials, when they had to be read.
    pub credentials: Option<Loaded>,
    /// The credentials changed since the last failure.
    pub credentials_changed: bool,
    /// resourceVersion of the object `spec.caBundleRef` names, as the cache shows it.
    pub trust_rv: Option<String>,
    /// The CA bundle's object changed since the last failure.
    pub trust_changed: bool,
    /// The HTTP client of the exchange, when it had to be chosen.
    pub trust: Option<LoadedTrust>,
    /// `oauth.token-operator.dev/refresh-requested-at`, when set and readable.
    pub refresh_requested_at: Option<Timestamp>,
    /// The client's memo as the reconcile started.
    pub memo: Memo,
    /// What this reconcile learned, recorded at its end.
    pub learned: Learned,
    /// The exchange attempt (or refusal before one) made, for the metrics.
    pub counted: Option<super::act::Counted>,
    /// The managed Secret's metadata (owned by the operator) that someone else changed.
    pub drift: Option<Vec<String>>,
    /// The managed Secret's token and fingerprint, as read and found intact (sealed together,
    /// and the token the status records): what a re-rendering writes again.
    pub verified_token: Option<(crate::oauth::response::Token, String)>,
}

impl Observation {
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
            failure_streak: self.memo.failure_streak,
            issued_events: self.memo.issued_events,
            last_exchange_at: self.memo.last_exchange_at,
            drift: self.drift.as_deref(),
            restore_streak: self.memo.restore_streak,
            margin_warned: self.memo.margin_warned,
        }
    }

    /// The credentials, read once per reconcile.
    pub async fn credentials(
        &mut self,
        client: &OAuthClient,
        ctx: &Context,
    ) -> Result<&Loaded, Error> {
        if self.credentials.is_none() {
            self.credentials = Some(read_credentials(client, ctx).await?);
        }
        Ok(self.credentials.as_ref().expect("read above"))
    }

    /// The HTTP client of the exchange (its trust), chosen once per reconcile.
    pub async fn trust(
        &mut self,
        client: &OAuthClient,
        ctx: &Context,
    ) -> Result<&LoadedTrust, Error> {
        if self.trust.is_none() {
            self.trust = Some(trust::load(client, ctx, self).await?);
        }
        Ok(self.trust.as_ref().expect("loaded above"))
    }
}

/// Gathers what a reconcile of `client` knows.
pub async fn observe(client: &OAuthClient, ctx: &Context) -> Result<Observation, Error> {
    // The Secret caches must be complete before anything is concluded from them (after a
    // restart, a missing entry would otherwise look like a missing token).
    let _ = ctx.secrets_synced.clone().wait_for(|synced| *synced).await;
    let key = NamespacedName::of(&client.metadata);
    let secret_name = secret::target_name(client);
    let credentials_rv = link(client, ctx, &key, &secret_name);
    let bundle = client.spec.ca_bundle_ref.as_ref();
    let mut observation = Observation {
        now: ctx.shared.clock.now(),
        status: client.status.clone().unwrap_or_default(),
        generation: client.metadata.generation,
        uid: client.uid().unwrap_or_default(),
        settings: settings(client, &secret_name, ctx),
        credentials_rv,
        secret: SecretState::Absent,
        credentials: None,
        credentials_changed: false,
        trust_rv: trust::cached_version(ctx, &key.namespace, bundle),
        trust_changed: false,
        trust: None,
        refresh_requested_at: client
            .annotations()
            .get(REFRESH_REQUESTED_ANNOTATION)
            .and_then(|t| t.parse().ok()),
        memo: ctx.memos.snapshot(&key),
        learned: Learned::default(),
        counted: None,
        drift: None,
        verified_token: None,
        secret_name,
        key,
    };
    let (state, stored_fingerprint) = managed_secret(client, ctx, &mut observation).await?;
    observation.secret = state;
    if let Some(stored) = stored_fingerprint {
        verify(client, ctx, &mut observation, &stored).await?;
    }
    observation.credentials_changed = changed_since_failure(client, ctx, &mut observation).await?;
    observation.trust_changed = trust_changed_since_failure(&observation);
    if bundle.is_none() && observation.memo.trust.is_some() {
        // The reference is gone: let go of its client.
        observation.learned.trust = Change::Clear;
    }
    Ok(observation)
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
    let source = source(client);
    let credentials = match source {
        Source::Secret(name) => Some(name),
        Source::ServiceAccount(_) | Source::None => None,
    };
    let secrets: Vec<&str> = credentials.into_iter().chain(secret_bundle).collect();
    ctx.references.link_all(key, &secrets);
    let maps: Vec<&str> = map_bundle.into_iter().collect();
    ctx.config_map_references.link_all(key, &maps);
    ctx.references.link_target(key, target);
    match source {
        Source::Secret(name) => {
            ctx.service_account_refs.unlink(key);
            ctx.secrets.resource_version(&key.namespace, name)
        }
        Source::ServiceAccount(name) => {
            ctx.service_account_refs.link(key, name);
            let index = ctx.service_accounts.as_ref()?;
            index.resource_version(&key.namespace, name)
        }
        Source::None => {
            ctx.service_account_refs.unlink(key);
            None
        }
    }
}

/// Whether the CA bundle's object changed since the last failure: the cache shows a version
/// other than the one the failure happened with (a cache that shows none changes nothing).
fn trust_changed_since_failure(observation: &Observation) -> bool {
    let (Some(failed), Some(now)) = (&observation.memo.failed_with, &observation.trust_rv) else {
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

/// Where a client's credentials come from.
enum Source<'a> {
    /// The credentials Secret.
    Secret(&'a str),
    /// The ServiceAccount (ServiceAccountToken).
    ServiceAccount(&'a str),
    /// Nowhere the spec names (an unusable spec).
    None,
}

fn source(client: &OAuthClient) -> Source<'_> {
    let spec = &client.spec;
    if spec.client_auth_method == Some(ClientAuthMethod::ServiceAccountToken) {
        return spec
            .service_account_token
            .as_ref()
            .map_or(Source::None, |s| {
                Source::ServiceAccount(&s.service_account_name)
            });
    }
    spec.credentials_secret_ref
        .as_ref()
        .map_or(Source::None, |r| Source::Secret(&r.name))
}

/// Reads the credentials with one GET: the credentials Secret (Secret data is never cached),
/// or the ServiceAccount's metadata (ServiceAccountToken, only when the operator may request
/// its tokens).
pub async fn read_credentials(client: &OAuthClient, ctx: &Context) -> Result<Loaded, Error> {
    let namespace = client.namespace().unwrap_or_default();
    let name = match source(client) {
        Source::Secret(name) => name,
        Source::ServiceAccount(name) if ctx.shared.policy.allow_service_account_tokens => {
            return read_service_account(client, ctx, &namespace, name).await;
        }
        Source::ServiceAccount(_) | Source::None => {
            // The spec is unusable; resolving it says why.
            let failure = ClientSettings::resolve(&client.spec, &ctx.shared.policy)
                .err()
                .unwrap_or_else(|| Failure::invalid_spec("the spec names no credentials"));
            return Ok(Loaded {
                resource_version: None,
                credentials: Err(failure),
            });
        }
    };
    // A name that is not one never reaches the request path.
    if let Err(failure) =
        crate::spec::check_reference_name("spec.credentialsSecretRef.name", "Secret", name)
    {
        return Ok(Loaded {
            resource_version: None,
            credentials: Err(failure),
        });
    }
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), &namespace);
    let secret = api.get_opt(name).await.map_err(Error::ReadCredentials)?;
    let data = secret.as_ref().map(|s| s.data.clone().unwrap_or_default());
    Ok(Loaded {
        resource_version: secret.as_ref().and_then(|s| s.resource_version()),
        credentials: credentials::from_secret(
            &client.spec,
            &namespace,
            data.as_ref().map(|d| d as &dyn credentials::SecretData),
        ),
    })
}

/// Reads the ServiceAccount's metadata with one GET: whether it exists and opted in to the
/// audience (its annotation).
async fn read_service_account(
    client: &OAuthClient,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Loaded, Error> {
    // The spec (the ServiceAccount's name among it) is checked before its name reaches a path.
    let settings = match ClientSettings::resolve(&client.spec, &ctx.shared.policy) {
        Ok(settings) => settings,
        Err(failure) => {
            return Ok(Loaded {
                resource_version: None,
                credentials: Err(failure),
            });
        }
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    let meta = api
        .get_metadata_opt(name)
        .await
        .map_err(Error::ReadServiceAccount)?;
    let audience = client
        .spec
        .service_account_token
        .as_ref()
        .map_or("", |s| s.audience.as_str());
    let credentials = Ok(settings).and_then(|s| {
        credentials::from_service_account(
            client.spec.client_id.as_deref().unwrap_or_default(),
            name,
            audience,
            &s.exchange.token_url,
            namespace,
            meta.as_ref().map(|m| m.annotations()),
        )
    });
    Ok(Loaded {
        resource_version: meta.as_ref().and_then(|m| m.resource_version()),
        credentials,
    })
}

/// Whether the stored token was issued for the current spec and credentials: its fingerprint
/// checked against them (a check not repeated while its inputs stay the same).
async fn verify(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
    stored: &str,
) -> Result<(), Error> {
    let Ok(settings) = &observation.settings else {
        return Ok(());
    };
    let fresh = observation.memo.verified.as_ref().filter(|v| {
        v.credentials_rv == observation.credentials_rv
            && v.fingerprint == stored
            && v.generation == observation.generation
    });
    let matched = match fresh {
        Some(v) => v.matched,
        None => {
            let exchange = settings.exchange.clone();
            let loaded = observation.credentials(client, ctx).await?;
            let matched = loaded
                .credentials
                .as_ref()
                .is_ok_and(|c| fingerprint::matches(stored, &exchange, c));
            observation.learned.verified = Change::Set(Verified {
                credentials_rv: observation.credentials_rv.clone(),
                fingerprint: stored.to_owned(),
                generation: observation.generation,
                matched,
            });
            matched
        }
    };
    if let SecretState::Owned(Some(token)) = &mut observation.secret {
        token.current = matched;
    }
    Ok(())
}

/// Whether the credentials changed since the last failure: the cache shows a version other than
/// the one that failed (a cache that has not caught up, or a deletion, changes nothing), and the
/// values differ from the ones that failed (a metadata-only edit keeps the backoff).
async fn changed_since_failure(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
) -> Result<bool, Error> {
    let Some(failed) = observation.memo.failed_with.clone() else {
        return Ok(false);
    };
    let Some(now_rv) = observation.credentials_rv.clone() else {
        return Ok(false);
    };
    if failed.resource_version.as_ref() == Some(&now_rv) {
        return Ok(false);
    }
    let loaded = observation.credentials(client, ctx).await?.clone();
    let digest = digest_of(ctx, &loaded);
    if digest == failed.digest {
        // The same values under a new version: remember the version, so that it is not read
        // again.
        observation.learned.failed_with = Change::Set(FailedWith {
            resource_version: loaded.resource_version,
            digest,
            trust_rv: failed.trust_rv,
        });
        return Ok(false);
    }
    Ok(true)
}

/// The keyed digest of loaded credentials, or of why they could not be used (a Secret that
/// appears, or gains its missing key, is a change).
pub fn digest_of(ctx: &Context, loaded: &Loaded) -> Option<[u8; 32]> {
    let key = &ctx.shared.credentials_key;
    Some(match &loaded.credentials {
        Ok(credentials) => fingerprint::credentials_digest(key, credentials),
        Err(failure) => fingerprint::keyed_digest(key, failure.message.as_bytes()),
    })
}

/// The managed Secret as the caches (or this process's own recent write) show it, and the
/// fingerprint it carries. A version this process did not write or verify (someone else changed
/// it, or the process just started) is read once and its seal checked.
async fn managed_secret(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
) -> Result<(SecretState, Option<String>), Error> {
    let (namespace, name) = (&observation.key.namespace, observation.secret_name.as_str());
    let cached = ctx.managed.get(namespace, name);
    let cached_rv = cached.as_ref().map(|m| m.resource_version.to_string());
    // Our own last write wins while the cache still shows the Secret as it was before it.
    let recent = observation
        .memo
        .written_secret
        .as_ref()
        .and_then(|w| w.if_cache_is_behind(cached_rv.as_ref()));
    if recent.is_none() && observation.memo.written_secret.is_some() {
        observation.learned.written_secret = Change::Clear;
    }
    if let Some(annotations) = recent {
        return Ok(from_annotations(client, &annotations));
    }
    if let Some(managed) = &cached
        && cached_rv.is_some()
        && cached_rv == observation.memo.trusted_rv
    {
        return Ok(from_annotations(client, &managed.annotation_map()));
    }
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    let name = name.to_owned();
    // Whose is it? The cache tells, or (without the operator's label) one metadata GET. Only a
    // Secret this client controls, or one that carries the operator's seal (its ownerReference
    // removed), is read in full: another owner's data is never read.
    let uid = client.uid().unwrap_or_default();
    let plausible = match &cached {
        Some(managed) => {
            managed.controlled_by(&uid) || managed.annotation_map().contains_key(MAC_ANNOTATION)
        }
        None => {
            if ctx.secrets.resource_version(namespace, &name).is_none() {
                return Ok((SecretState::Absent, None));
            }
            match api
                .get_metadata_opt(&name)
                .await
                .map_err(Error::ReadSecret)?
            {
                None => return Ok((SecretState::Absent, None)),
                Some(meta) => {
                    let refs = meta.metadata.owner_references.clone().unwrap_or_default();
                    secret::controlled_by(&refs, client)
                        || meta.annotations().contains_key(MAC_ANNOTATION)
                }
            }
        }
    };
    if !plausible {
        let what = if cached.is_some() {
            "is controlled by another owner"
        } else {
            "exists and is not managed by this OAuthClient"
        };
        return Ok(conflict(&name, what));
    }
    match api.get_opt(&name).await.map_err(Error::ReadSecret)? {
        None => Ok((SecretState::Absent, None)),
        Some(secret) => Ok(inspect(client, ctx, observation, &secret)),
    }
}

/// Checks a managed Secret as read: whose it is, whether what the operator wrote is intact
/// (the seal), whether the metadata it owns was changed ([`crate::decide::managed_secret`]
/// decides); keeps its token for a re-rendering when it may be written again as it is.
fn inspect(
    client: &OAuthClient,
    ctx: &Context,
    observation: &mut Observation,
    secret: &Secret,
) -> (SecretState, Option<String>) {
    let refs = secret.metadata.owner_references.clone().unwrap_or_default();
    let check = secret::check_seal(secret, client, &ctx.shared.seal_keys);
    let annotations = secret.annotations().clone();
    let (state, fingerprint) = from_annotations(client, &annotations);
    let token = match &state {
        SecretState::Owned(token) => *token,
        _ => None,
    };
    let status_time = |t: &Option<String>| t.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    let verdict = crate::decide::managed_secret::classify(&ReadSecret {
        name: &observation.secret_name,
        controlled: secret::controlled_by(&refs, client),
        check: &check,
        sealed: annotations.contains_key(MAC_ANNOTATION),
        drift: secret::drift(secret, client),
        token,
        status_issued_at: status_time(&observation.status.issued_at),
        status_expires_at: status_time(&observation.status.expires_at),
    });
    if verdict.trusted {
        let version = secret.resource_version().unwrap_or_default();
        observation.learned.trusted_rv = Change::Set(version);
    }
    if verdict.token_trusted {
        observation.verified_token = secret::stored_token(secret).zip(fingerprint.clone());
    }
    observation.drift = verdict.drift;
    let fingerprint = match verdict.state {
        SecretState::Owned(Some(_)) => fingerprint,
        _ => None,
    };
    (verdict.state, fingerprint)
}

fn conflict(name: &str, what: &str) -> (SecretState, Option<String>) {
    let message = format!(
        "Secret {name} {what}; it is left untouched (choose another spec.target.name or delete it)"
    );
    (SecretState::Conflict(message), None)
}

/// The stored token as the Secret's annotations describe it (not yet checked against the
/// current spec and credentials), and its fingerprint.
fn from_annotations(
    client: &OAuthClient,
    annotations: &BTreeMap<String, String>,
) -> (SecretState, Option<String>) {
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
    let fingerprint = token.and(annotations.get(FINGERPRINT_ANNOTATION).cloned());
    (SecretState::Owned(token), fingerprint)
}
