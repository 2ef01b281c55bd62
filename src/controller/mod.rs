//! The controller: watches OAuthClients, their managed Secrets and their credentials Secrets,
//! and reconciles each OAuthClient ([`reconcile`]).
//!
//! Watches, per scope (all namespaces, or each namespace of `--namespaces`):
//!
//! * OAuthClients (full objects: the controller needs their spec);
//! * managed Secrets, metadata only, selected by the `app.kubernetes.io/managed-by` label and
//!   mapped back to their owner;
//! * all Secrets, metadata only and reduced to name and resourceVersion, mapped back to the
//!   OAuthClients that reference them as credentials. Secret data is never cached.

pub mod context;
pub mod events;
pub mod gate;
pub mod reconcile;
pub mod secret_index;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Client, ResourceExt};

use crate::api::crd::OAuthClient;
use crate::api::keys::MANAGED_SELECTOR;
use crate::oauth::exchange::Exchanger;
use crate::oauth::proxy::ProxyConfig;
use crate::oauth::transport::Transport;
use crate::runtime::health::Health;
use crate::runtime::metrics::Metrics;
use crate::spec::Policy;
use crate::timing::clock::Clock;
use context::{Context, Shared};

/// Settings of the controller (from the `run` command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Spec rules.
    pub policy: Policy,
    /// Concurrent exchanges at most.
    pub max_concurrent_exchanges: usize,
    /// Token request timeout.
    pub request_timeout: Duration,
    /// Proxies for token requests (`run` reads them from the environment).
    pub proxy: ProxyConfig,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The OAuthClient CRD is missing.
    #[error(
        "the OAuthClient CRD (oauthclients.oauth.token-operator.dev) is not installed in this cluster; install it with `kubectl apply -f crds/oauthclient.yaml` (or the Helm chart)"
    )]
    CrdMissing,
    /// RBAC forbids listing OAuthClients.
    #[error("not allowed to list OAuthClients{scope}: {message} (check the operator's RBAC)")]
    Forbidden {
        /// Where.
        scope: String,
        /// The API server's message.
        message: String,
    },
    /// The API server cannot be reached or answered with an error.
    #[error("cannot reach the Kubernetes API server at {url}: {source}")]
    Unreachable {
        /// The cluster URL.
        url: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The HTTP client for token endpoints could not be built.
    #[error(transparent)]
    Transport(#[from] crate::oauth::transport::TransportError),
}

/// Checks that the cluster is reachable and serves OAuthClients in every scope.
pub async fn preflight(
    client: &Client,
    namespaces: &[String],
    url: &str,
) -> Result<(), StartError> {
    let scopes: Vec<Option<&String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(Some).collect()
    };
    for scope in scopes {
        let api: Api<OAuthClient> = match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Err(StartError::CrdMissing),
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return Err(StartError::Forbidden {
                    scope: scope
                        .map(|ns| format!(" in namespace {ns}"))
                        .unwrap_or_default(),
                    message: e.message,
                });
            }
            Err(source) => {
                return Err(StartError::Unreachable {
                    url: url.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Runs the controller until `shutdown` resolves. `health` is marked ready once every watch
/// cache has synced.
pub async fn run(
    client: Client,
    settings: Settings,
    clock: Arc<dyn Clock>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let transport = Transport::with_proxy(
        settings.request_timeout,
        settings.policy.token_urls.clone(),
        settings.proxy.clone(),
    )?;
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| crate::NAME.to_owned());
    let shared = Arc::new(Shared {
        client: client.clone(),
        exchanger: Exchanger::new(transport),
        policy: settings.policy.clone(),
        clock,
        gate: gate::ExchangeGate::new(settings.max_concurrent_exchanges),
        request_timeout: settings.request_timeout,
        credentials_key: rand::random(),
        events: events::EventPublisher::new(client.clone(), instance),
        metrics,
    });
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let shutdown = shutdown.shared();
    let concurrency = u16::try_from(settings.max_concurrent_exchanges.saturating_mul(2).max(16))
        .unwrap_or(u16::MAX);
    let mut readiness = Vec::new();
    let mut controllers = Vec::new();
    for scope in scopes {
        let (controller, ready) =
            scope_controller(shared.clone(), scope, concurrency, shutdown.clone());
        readiness.push(ready);
        controllers.push(controller);
    }
    let health_ready = health.clone();
    tokio::spawn(async move {
        futures::future::join_all(readiness).await;
        health_ready.set_ready();
        tracing::info!("watch caches synced; ready");
    });
    futures::future::join_all(controllers).await;
    Ok(())
}

type BoxFuture = futures::future::BoxFuture<'static, ()>;

/// Builds the controller of one scope: its future, and a future that resolves once its caches
/// are synced.
fn scope_controller(
    shared: Arc<Shared>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: futures::future::Shared<impl Future<Output = ()> + Send + 'static>,
) -> (BoxFuture, BoxFuture) {
    let client = shared.client.clone();
    // `Api<PartialObjectMeta<_>>` makes metadata-only list and watch requests.
    // OAuthClients are watched metadata-only too: the cache holds names, generations and
    // resourceVersions, and each reconcile reads the whole object (spec and status) with one GET.
    // At 10,000 clients this keeps tens of megabytes of specs and statuses out of memory, and
    // the status read is never stale.
    let (clients_api, secrets_api): (
        Api<PartialObjectMeta<OAuthClient>>,
        Api<PartialObjectMeta<Secret>>,
    ) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };

    // Readiness from each watch's first complete list (InitDone). kube's
    // `Store::wait_until_ready` wakes only one of several concurrent waiters, and the
    // controller itself waits on the OAuthClient store, so it is not used here.
    let synced = Arc::new(Synced::new());

    // Managed Secrets: metadata only, by label, kept as a compact index of what reconciles
    // read (controllers and this operator's annotations).
    let managed = Arc::new(secret_index::ManagedIndex::of_managed());
    let managed_index = managed.clone();
    let managed_synced = synced.on_event(Synced::MANAGED);
    let managed_stream = watch(
        secrets_api.clone(),
        watcher::Config::default().labels(MANAGED_SELECTOR),
    )
    .default_backoff()
    .inspect(move |event| {
        if let Ok(event) = event {
            managed_index.apply(event);
        }
        managed_synced(event);
    })
    .touched_objects();

    // All Secrets, reduced to name and resourceVersion (credentials and conflicts).
    let secrets = Arc::new(secret_index::SecretIndex::of_versions());
    let index = secrets.clone();
    let secrets_synced = synced.on_event(Synced::SECRETS);
    let secrets_stream = watch(secrets_api, watcher::Config::default())
        .default_backoff()
        .inspect(move |event| {
            if let Ok(event) = event {
                index.apply(event);
            }
            secrets_synced(event);
        })
        .touched_objects();

    // OAuthClients, through our own reflector so that deletions are seen (to drop their
    // metrics and memory).
    let (store, clients_writer) = reflector::store::<PartialObjectMeta<OAuthClient>>();
    let deleted = Arc::new(Mutex::new(Vec::<ObjectRef<OAuthClient>>::new()));
    let deleted_sink = deleted.clone();
    let clients_synced = synced.on_event(Synced::CLIENTS);
    let clients_stream = watch(clients_api, watcher::Config::default())
        .default_backoff()
        .modify(|client| {
            // Only the name and namespace are read from the cache (each reconcile GETs the
            // object); everything else would be copied into the store and into every
            // reference to it.
            client.metadata = kube::api::ObjectMeta {
                name: client.metadata.name.take(),
                namespace: client.metadata.namespace.take(),
                ..Default::default()
            };
        })
        .reflect(clients_writer)
        .inspect(move |event| {
            clients_synced(event);
            if let Ok(watcher::Event::Delete(client)) = event {
                deleted_sink
                    .lock()
                    .expect("deleted lock")
                    .push(context::client_key(&client.metadata));
            }
        })
        .applied_objects();
    // Clients the exchange gate wakes (see gate.rs) are reconciled through this channel.
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let scope_index = shared.gate.add_scope(wake);
    let woken = futures::stream::unfold(woken, |mut rx| async move {
        rx.recv().await.map(|client| (client, rx))
    });
    let controller = Controller::for_stream(clients_stream, store.clone())
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(woken);
    let ctx = Arc::new(Context {
        shared,
        managed,
        secrets: secrets.clone(),
        memo: Mutex::new(HashMap::new()),
        references: Mutex::new(Default::default()),
        secrets_synced: synced.secrets_ready(),
        scope: scope_index,
    });
    let mapper_ctx = ctx.clone();
    let mapper_store = store.clone();

    let ready = {
        let mut all = synced.all_ready();
        async move {
            let _ = all.wait_for(|ready| *ready).await;
        }
        .boxed()
    };

    let gc_ctx = ctx.clone();
    let gc_store = store.clone();
    let running = controller
        .owns_stream(managed_stream)
        .watches_stream(secrets_stream, move |secret: PartialObjectMeta<Secret>| {
            let ns = secret.namespace().unwrap_or_default();
            let referencing = mapper_ctx.referencing(&ns, &secret.name_any());
            referencing
                .iter()
                .map(context::meta_ref)
                .filter(|r| mapper_store.get(r).is_some())
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(move |result| {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
            let gone: Vec<_> = std::mem::take(&mut *deleted.lock().expect("deleted lock"));
            for key in gone {
                gc_ctx.forget(&key);
            }
            forget_deleted(&gc_ctx, &gc_store);
            futures::future::ready(())
        })
        .boxed();
    (running, ready)
}

/// Which watch caches of a scope have completed their first list.
struct Synced {
    bits: tokio::sync::watch::Sender<u8>,
}

impl Synced {
    const CLIENTS: u8 = 1;
    const MANAGED: u8 = 2;
    const SECRETS: u8 = 4;
    const ALL: u8 = 7;

    fn new() -> Self {
        Synced {
            bits: tokio::sync::watch::channel(0).0,
        }
    }

    /// An `inspect` callback that marks `bit` on the stream's first InitDone.
    fn on_event<K>(&self, bit: u8) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let bits = self.bits.clone();
        move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                bits.send_if_modified(|b| {
                    let before = *b;
                    *b |= bit;
                    *b != before
                });
            }
        }
    }

    /// Resolves (through `wait_for`) once both Secret caches are complete.
    fn secrets_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.mapped(Self::MANAGED | Self::SECRETS)
    }

    /// Resolves once every cache of the scope is complete.
    fn all_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.mapped(Self::ALL)
    }

    fn mapped(&self, mask: u8) -> tokio::sync::watch::Receiver<bool> {
        let mut source = self.bits.subscribe();
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if source.wait_for(|b| b & mask == mask).await.is_ok() {
                let _ = tx.send(true);
                // Keep the value readable after this task ends.
                tx.closed().await;
            }
        });
        rx
    }
}

/// Drops memory of OAuthClients that left the store (now and then, cheaply).
fn forget_deleted(ctx: &Context, store: &Store<PartialObjectMeta<OAuthClient>>) {
    let stale: Vec<ObjectRef<OAuthClient>> = {
        let memo = ctx.memo.lock().expect("memo lock");
        if memo.len() <= store.len() {
            return;
        }
        let live: HashSet<context::Pair> = store
            .state()
            .iter()
            .map(|o| {
                let m = &o.metadata;
                context::pair(
                    m.namespace.as_deref().unwrap_or_default(),
                    m.name.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        memo.keys()
            .filter(|k| !live.contains(*k))
            .map(|(ns, name)| ObjectRef::new(name).within(ns))
            .collect()
    };
    for key in stale {
        ctx.forget(&key);
    }
}
