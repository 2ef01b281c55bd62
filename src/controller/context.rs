//! What every reconcile shares: the Kubernetes client, the transport and the exchange gate, the clock,
//! the caches and indexes of its scope, and the per-client memory.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use super::events::EventPublisher;
use super::gate::ExchangeGate;
use super::issuer::Issuer;
use super::memory::{Memories, queue_ref};
use super::own_writes::{OwnWrites, WriteOf};
use super::references::References;
use super::secret_index::{ConfigMapIndex, ManagedIndex, SecretIndex, ServiceAccountIndex};
use crate::api::name::NamespacedName;
use crate::base::clock::Clock;
use crate::oauth::transport::Transport;
use crate::runtime::metrics::Metrics;
use crate::spec::Policy;

/// Shared by every scope (namespace) of the controller.
pub struct Shared {
    /// The Kubernetes API client.
    pub kube: Client,
    /// Chooses the HTTP client of each token request (the pool of clients by trust and identity).
    pub transport: Transport,
    /// Rules a spec must satisfy.
    pub policy: Policy,
    /// The clock: every reading of the current time goes through it.
    pub clock: Arc<dyn Clock>,
    /// Bounds token requests in flight, in all and per endpoint (`--max-concurrent-exchanges`).
    pub gate: ExchangeGate,
    /// Token request timeout: a client waiting at the gate looks again after twice this.
    pub request_timeout: Duration,
    /// Key of the credential digests remembered after a failure and with a pending token
    /// (random per process; never stored or shown).
    pub credentials_key: [u8; 32],
    /// The keys that seal what the operator writes into managed Secrets.
    pub seal_keys: crate::output::mac::SealKeys,
    /// Publishes events.
    pub events: EventPublisher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The API server's issuer (ServiceAccountToken), read when first needed.
    pub issuer: Issuer,
    /// Audiences never requested for a ServiceAccount token, besides the issuer and the
    /// in-cluster names: the API server's own (learned at start) and `--refused-token-audiences`.
    pub refused_audiences: Vec<String>,
}

/// The context of one controller scope (all namespaces, or one).
pub struct Context {
    /// What all scopes share.
    pub shared: Arc<Shared>,
    /// Managed Secrets (label-selected): controllers, our annotations, resourceVersion.
    pub managed: Arc<ManagedIndex>,
    /// Names and resourceVersions of all Secrets in scope (credentials, CA bundles).
    pub secrets: Arc<SecretIndex>,
    /// Names and resourceVersions of all ConfigMaps in scope (CA bundles).
    pub config_maps: Arc<ConfigMapIndex>,
    /// Per-OAuthClient memory.
    pub memories: Memories,
    /// Which OAuthClients reference which Secrets (credentials, CA bundles).
    pub references: References,
    /// Which OAuthClients reference which ConfigMaps (CA bundles).
    pub config_map_references: References,
    /// Names and resourceVersions of the ServiceAccounts in scope (only with
    /// `--allow-service-account-tokens`).
    pub service_accounts: Option<Arc<ServiceAccountIndex>>,
    /// Which OAuthClients (ServiceAccountToken) use which ServiceAccounts.
    pub service_account_refs: References,
    /// Which OAuthClients take their subject token from which OAuthClients (token exchange,
    /// `oauthClientRef`): a change of the referenced client reconciles them.
    pub client_refs: References,
    /// True once the Secret and ConfigMap caches (and the ServiceAccount one, when watched)
    /// hold a complete first list.
    pub secrets_synced: tokio::sync::watch::Receiver<bool>,
    /// This scope's index at the exchange gate.
    pub scope: usize,
    /// Which OAuthClients are to be reconciled, and when (see queue.rs).
    pub queue: Arc<super::queue::Queue>,
    /// The writes of the managed Secrets and statuses in progress or just made, whose watch
    /// events reconcile nobody.
    pub own_writes: OwnWrites,
    /// Token requests that went on by themselves once stalled, and their outcomes.
    pub detached: super::reconcile::DetachedRequests,
    /// The managed Secret of the OAuthClient each token-exchange client takes its subject
    /// token from (`oauthClientRef`), as learned when it was last read: linked for the watch
    /// mapper, so that a new token of that client reaches this one.
    pub subject_secrets: std::sync::Mutex<std::collections::HashMap<NamespacedName, Box<str>>>,
    /// The resourceVersion of each OAuthClient that another client takes its subject token
    /// from, as the watch last showed it (only those; the store keeps no versions).
    pub subject_clients: std::sync::Mutex<std::collections::HashMap<NamespacedName, Box<str>>>,
}

impl Context {
    /// `writer` starts a write of `object` (its status, or the managed Secret `object_key`):
    /// the watch events of the write reconcile nobody. End it with [`OwnWrite::end`].
    pub fn begin_write<'a>(
        &'a self,
        object: WriteOf,
        object_key: &NamespacedName,
        writer: &NamespacedName,
    ) -> OwnWrite<'a> {
        self.own_writes.begin(object, object_key, writer);
        OwnWrite {
            ctx: self,
            object,
            object_key: object_key.clone(),
            writer: writer.clone(),
            ended: false,
        }
    }

    /// Remembers that `client` takes its subject token from the managed Secret `secret`.
    pub fn learn_subject_secret(&self, client: &NamespacedName, secret: &str) {
        self.subject_secrets
            .lock()
            .expect("subject secrets lock")
            .insert(client.clone(), secret.into());
        // A change of it reaches this client from now on, not only after its next observe.
        self.references.add(client, secret);
    }

    /// Notes the resourceVersion of the OAuthClient `client` (`None`: deleted) when another
    /// client takes its subject token from it.
    pub fn note_subject_client(&self, client: &NamespacedName, version: Option<&str>) {
        let mut versions = self.subject_clients.lock().expect("subject clients lock");
        match version {
            Some(version) if self.client_refs.is_referenced(client) => {
                versions.insert(client.clone(), version.into());
            }
            _ => {
                versions.remove(client);
            }
        }
    }

    /// The resourceVersion of the OAuthClient `client`, as noted.
    pub fn subject_client_version(&self, client: &NamespacedName) -> Option<Box<str>> {
        self.subject_clients
            .lock()
            .expect("subject clients lock")
            .get(client)
            .cloned()
    }

    /// The managed Secret `client` takes its subject token from, as last learned.
    pub fn subject_secret(&self, client: &NamespacedName) -> Option<Box<str>> {
        self.subject_secrets
            .lock()
            .expect("subject secrets lock")
            .get(client)
            .cloned()
    }

    /// Forgets an OAuthClient that no longer exists (memory, references, metrics, the gate).
    pub fn forget(&self, key: &NamespacedName) {
        self.shared.metrics.forget_client(&key.namespace, &key.name);
        self.memories.forget(key);
        self.queue.forget(key);
        self.references.unlink(key);
        self.config_map_references.unlink(key);
        self.service_account_refs.unlink(key);
        self.client_refs.unlink(key);
        self.subject_secrets
            .lock()
            .expect("subject secrets lock")
            .remove(key);
        self.shared.gate.forget(self.scope, &queue_ref(key));
        // Its HTTP client (if no other client shares it) went with its memory.
        let in_use = self.shared.transport.clients_in_use();
        self.shared.metrics.http_clients(in_use);
        self.detached.lock().expect("detached lock").remove(key);
        self.own_writes.forget(key);
    }
}

/// A write of a managed Secret or a status in progress (see [`crate::controller::own_writes`]).
/// Dropped without [`OwnWrite::end`], it ends as a failed write.
#[must_use]
pub struct OwnWrite<'a> {
    ctx: &'a Context,
    object: WriteOf,
    object_key: NamespacedName,
    writer: NamespacedName,
    ended: bool,
}

impl OwnWrite<'_> {
    /// The write made `version` (`None`: it failed). Reconciles the writer when a watch showed
    /// someone else's change while the write was out.
    pub fn end(mut self, version: Option<&str>) {
        self.finish(version);
    }

    fn finish(&mut self, version: Option<&str>) {
        self.ended = true;
        let ctx = self.ctx;
        let ended = ctx
            .own_writes
            .end(self.object, &self.object_key, &self.writer, version);
        if let Some(writer) = ended {
            ctx.shared.gate.wake(ctx.scope, &queue_ref(&writer));
        }
    }
}

impl Drop for OwnWrite<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.finish(None);
        }
    }
}
