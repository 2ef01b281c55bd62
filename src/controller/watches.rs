//! The watches of one scope (all namespaces, or one) and the controller built on them:
//!
//! * OAuthClients, metadata only (each reconcile reads its object with one GET);
//! * managed Secrets, metadata only, selected by the `app.kubernetes.io/managed-by` label, kept
//!   as a compact index and mapped back to their owner;
//! * all Secrets, metadata only and reduced to name and resourceVersion, mapped back to the
//!   OAuthClients that reference them (credentials, or a CA bundle of kind Secret). Secret data
//!   is never cached;
//! * all ConfigMaps, likewise, mapped back to the OAuthClients whose `spec.caBundleRef` names
//!   them (a bundle's change retries a failing client within seconds);
//! * with `--allow-service-account-tokens` only, ServiceAccounts, metadata only and reduced to
//!   name and resourceVersion, mapped back to the OAuthClients that use them;
//! * the exchange gate's wake-ups.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::applier;
use kube::runtime::controller::{Action, Config as ControllerConfig, Error as ControllerError};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, watcher as watch};
use tracing::Instrument as _;

use super::context::{Context, Shared};
use super::memory::{Memories, queue_key, queue_ref};
use super::own_writes::WriteOf;
use super::queue::{Lane, Queue};
use super::reconcile;
use super::references::References;
use super::secret_index::{ConfigMapIndex, Index, ManagedIndex, SecretIndex, ServiceAccountIndex};
use crate::api::crd::OAuthClient;
use crate::api::keys::MANAGED_SELECTOR;
use crate::api::name::NamespacedName;
use crate::base::clock::Clock;

type BoxFuture = futures::future::BoxFuture<'static, ()>;

/// Builds the controller of one scope: its future, a future that resolves once its caches
/// are synced, and its context.
pub fn scope_controller(
    shared: Arc<Shared>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: futures::future::Shared<impl Future<Output = ()> + Send + 'static>,
) -> (BoxFuture, BoxFuture, Arc<Context>) {
    // Readiness from each watch's first complete list (InitDone). kube's
    // `Store::wait_until_ready` wakes only one of several concurrent waiters, and the
    // controller itself waits on the OAuthClient store, so it is not used here.
    let synced = Arc::new(Synced::new(shared.policy.allow_service_account_tokens));
    let ns = namespace.as_deref();
    let clients_api: Api<PartialObjectMeta<OAuthClient>> = scoped_api(&shared.kube, ns);
    let w = watched(&shared, ns, &synced);
    let (store, writer) = reflector::store::<PartialObjectMeta<OAuthClient>>();
    let (service_account_index, service_account_stream) = w.service_accounts.unzip();
    // Clients the exchange gate wakes (see gate.rs), and clients whose subject token is
    // another client's token when that client changes (see `clients`), are reconciled through
    // this channel.
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let woken = futures::stream::unfold(woken, |mut rx| async move {
        rx.recv().await.map(|client| (client, rx))
    });
    let shared_clock = shared.clock.clone();
    let limit = usize::from(concurrency);
    let ctx = Arc::new(Context {
        scope: shared.gate.add_scope(wake.clone()),
        queue: Arc::new(Queue::new(limit)),
        detached: Default::default(),
        own_writes: Default::default(),
        shared,
        managed: w.managed,
        secrets: w.secrets,
        config_maps: w.config_maps,
        memories: Memories::default(),
        references: References::default(),
        config_map_references: References::default(),
        service_accounts: service_account_index,
        service_account_refs: References::default(),
        client_refs: References::default(),
        secrets_synced: synced.secrets_ready(),
        subject_secrets: Default::default(),
        subject_clients: Default::default(),
    });
    let clients_stream = clients(
        clients_api,
        writer,
        synced.on_event(Synced::CLIENTS),
        ctx.clone(),
        wake,
    );
    let (cm_ctx, cm_store) = (ctx.clone(), store.clone());
    // What makes a client due at once: its own events, the objects it uses (each mapped back
    // to its users) and moves of an injected clock; and, in a lane of their own, the exchange
    // gate's wake-ups. A watch's error is logged and the watch goes on (each watch has already
    // waited its own backoff).
    let mut triggers: Vec<futures::stream::BoxStream<'static, Vec<ClientRef>>> = vec![
        clients_stream
            .map(|client| Ok(vec![queue_ref(&NamespacedName::of(&client?.metadata))]))
            .map(watch_triggers)
            .boxed(),
        mapped(w.managed_stream, users(ctx.clone(), store.clone())),
        mapped(w.secrets_stream, users(ctx.clone(), store.clone())),
        mapped(
            w.config_maps_stream,
            move |map: PartialObjectMeta<ConfigMap>| {
                referencing(&cm_ctx.config_map_references, &cm_store, &map.metadata)
            },
        ),
        clock_moves(&shared_clock, store.clone())
            .map(|client| vec![client])
            .boxed(),
    ];
    if let Some(stream) = service_account_stream {
        let (sa_ctx, sa_store) = (ctx.clone(), store.clone());
        triggers.push(mapped(
            stream,
            move |sa: PartialObjectMeta<ServiceAccount>| {
                referencing(&sa_ctx.service_account_refs, &sa_store, &sa.metadata)
            },
        ));
    }
    let due = futures::stream::select_all(triggers)
        .flat_map(futures::stream::iter)
        .map(|client| (queue_key(&client), Lane::Due));
    // The clients the exchange gate wakes have a place waiting: they go first.
    let woken = woken.map(|client| (queue_key(&client), Lane::Woken));
    let triggers = futures::stream::select(due, woken).take_until(shutdown);
    let running = drive(
        ctx.queue.stream(Box::pin(triggers)),
        ctx.clone(),
        store,
        limit,
    );
    (running, all_synced(&synced), ctx)
}

/// A reference to an OAuthClient, as the watch mappers and the gate give them.
type ClientRef = ObjectRef<PartialObjectMeta<OAuthClient>>;

/// The clients to reconcile for one event of a watch (none for an error: logged, and the watch
/// goes on).
fn watch_triggers(event: Result<Vec<ClientRef>, watcher::Error>) -> Vec<ClientRef> {
    event.unwrap_or_else(|error| {
        tracing::debug!(%error, "watch error");
        Vec::new()
    })
}

/// A watch's objects mapped to the clients they concern.
fn mapped<K: Send + 'static>(
    stream: Watch<K>,
    mapper: impl Fn(PartialObjectMeta<K>) -> Vec<ClientRef> + Send + 'static,
) -> futures::stream::BoxStream<'static, Vec<ClientRef>> {
    stream
        .map(move |object| object.map(&mapper))
        .map(watch_triggers)
        .boxed()
}

type Watch<K> = futures::stream::BoxStream<'static, Result<PartialObjectMeta<K>, watcher::Error>>;

/// The metadata-only watches of a scope besides the OAuthClients', and the indexes they keep.
struct Watched {
    managed: Arc<ManagedIndex>,
    managed_stream: Watch<Secret>,
    secrets: Arc<SecretIndex>,
    secrets_stream: Watch<Secret>,
    config_maps: Arc<ConfigMapIndex>,
    config_maps_stream: Watch<ConfigMap>,
    service_accounts: Option<(Arc<ServiceAccountIndex>, Watch<ServiceAccount>)>,
}

/// Starts nothing yet: the watch streams (`Api<PartialObjectMeta<_>>` makes metadata-only list
/// and watch requests) and their indexes, each reporting its first complete list to `synced`.
fn watched(shared: &Shared, ns: Option<&str>, synced: &Synced) -> Watched {
    let kube = &shared.kube;
    let secrets_api: Api<PartialObjectMeta<Secret>> = scoped_api(kube, ns);
    let managed = Arc::new(ManagedIndex::of_managed());
    let managed_stream = indexed(
        secrets_api.clone(),
        watcher::Config::default().labels(MANAGED_SELECTOR),
        managed.clone(),
        synced.on_event(Synced::MANAGED),
    )
    .boxed();
    let secrets = Arc::new(SecretIndex::of_versions());
    let secrets_stream = indexed(
        secrets_api,
        watcher::Config::default(),
        secrets.clone(),
        synced.on_event(Synced::SECRETS),
    )
    .boxed();
    let config_maps = Arc::new(ConfigMapIndex::of_versions());
    let config_maps_stream = indexed(
        scoped_api::<ConfigMap>(kube, ns),
        watcher::Config::default(),
        config_maps.clone(),
        synced.on_event(Synced::CONFIG_MAPS),
    )
    .boxed();
    let service_accounts = shared.policy.allow_service_account_tokens.then(|| {
        let (index, stream) = service_account_watch(kube, ns, synced);
        (index, stream.boxed())
    });
    Watched {
        managed,
        managed_stream,
        secrets,
        secrets_stream,
        config_maps,
        config_maps_stream,
        service_accounts,
    }
}

/// Runs the reconciles of the clients `due` hands out (kube's applier, at most `concurrency` at
/// once, each in its own task), requeues each in the queue as it asks, and forgets deleted
/// clients as it goes.
fn drive(
    due: impl Stream<Item = NamespacedName> + Send + 'static,
    ctx: Arc<Context>,
    store: Store<PartialObjectMeta<OAuthClient>>,
    concurrency: usize,
) -> BoxFuture {
    let (requeues, retries) = (ctx.queue.clone(), ctx.queue.clone());
    let reconciler = move |client: Arc<PartialObjectMeta<OAuthClient>>, ctx: Arc<Context>| {
        let queue = requeues.clone();
        let reconciling = async move {
            let key = NamespacedName::of(&client.metadata);
            let result = reconcile::reconcile(client, ctx).await;
            if let Ok(Some(delay)) = result {
                queue.requeue(&key, delay);
            }
            result.map(|_| Action::await_change())
        };
        // In the span kube opened for this reconcile (the object's reference).
        ReconcileTask(tokio::spawn(reconciling.in_current_span()))
    };
    let error_policy = move |client: Arc<PartialObjectMeta<OAuthClient>>,
                             error: &reconcile::Error,
                             ctx: Arc<Context>| {
        let key = NamespacedName::of(&client.metadata);
        retries.requeue(&key, reconcile::error_policy(client, error, ctx));
        Action::await_change()
    };
    let requests = due.map(|key| Ok::<_, std::convert::Infallible>(queue_ref(&key)));
    let config =
        ControllerConfig::default().concurrency(u16::try_from(concurrency).unwrap_or(u16::MAX));
    applier(
        reconciler,
        error_policy,
        ctx.clone(),
        store.clone(),
        requests,
        config,
    )
    .for_each(move |result| {
        let over = match &result {
            Ok((client, _)) => Some(queue_key(client)),
            Err(ControllerError::ObjectNotFound(client))
            | Err(ControllerError::ReconcilerFailed(_, client)) => Some(queue_key(&**client)),
            Err(_) => None,
        };
        if let Err(error) = &result {
            tracing::debug!(%error, "controller event");
        }
        if let Some(client) = over {
            ctx.queue.finished(&client);
        }
        forget_deleted(&ctx, &store);
        futures::future::ready(())
    })
    .boxed()
}

/// A reconcile running in a task of its own (so that reconciles run on every worker thread),
/// aborted when dropped: dropping the controller (a lost lease, the end of the shutdown's
/// grace) stops its reconciles where they are, as kube's own `Controller` does, instead of
/// leaving them writing beside the next leader.
struct ReconcileTask(tokio::task::JoinHandle<Result<Action, reconcile::Error>>);

impl Drop for ReconcileTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for ReconcileTask {
    type Output = Result<Action, reconcile::Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| match joined {
                Ok(result) => result,
                // A panic in a reconcile goes on in the controller's task, as in kube's own.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: only when the runtime shuts down; nothing is left to report.
                Err(_) => Ok(Action::await_change()),
            })
    }
}

/// Resolves once every watch of the scope has listed completely.
fn all_synced(synced: &Synced) -> BoxFuture {
    let mut all = synced.all_ready();
    async move {
        let _ = all.wait_for(|ready| *ready).await;
    }
    .boxed()
}

/// A metadata-only API of `K` in the scope: one namespace, or all.
fn scoped_api<K>(kube: &kube::Client, namespace: Option<&str>) -> Api<PartialObjectMeta<K>>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(kube.clone(), ns),
        None => Api::all(kube.clone()),
    }
}

/// The metadata-only watch of ServiceAccounts (with `--allow-service-account-tokens`) and the
/// index it keeps.
fn service_account_watch(
    kube: &kube::Client,
    namespace: Option<&str>,
    synced: &Synced,
) -> (
    Arc<ServiceAccountIndex>,
    impl Stream<Item = Result<PartialObjectMeta<ServiceAccount>, watcher::Error>> + Send + 'static,
) {
    let index = Arc::new(ServiceAccountIndex::of_versions());
    let stream = indexed(
        scoped_api::<ServiceAccount>(kube, namespace),
        watcher::Config::default(),
        index.clone(),
        synced.on_event(Synced::SERVICE_ACCOUNTS),
    );
    (index, stream)
}

/// Maps a changed Secret to the OAuthClients it matters to: the one its controller
/// ownerReference names, those that reference it as credentials, and the one that writes it
/// (also when its ownerReference or label was removed).
fn users(
    ctx: Arc<Context>,
    store: Store<PartialObjectMeta<OAuthClient>>,
) -> impl Fn(PartialObjectMeta<Secret>) -> Vec<reflector::ObjectRef<PartialObjectMeta<OAuthClient>>>
+ Send
+ Sync
+ 'static {
    move |secret: PartialObjectMeta<Secret>| {
        let key = NamespacedName::of(&secret.metadata);
        let owner = secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.controller == Some(true) && r.kind == "OAuthClient")
            .map(|r| NamespacedName::new(&key.namespace, &r.name));
        // The client that wrote this version itself needs no reconcile for it (own_writes.rs);
        // the clients that use the Secret do.
        let writer = ctx.own_writes.spare(
            WriteOf::Secret,
            &key,
            secret.metadata.resource_version.as_deref(),
        );
        if let Some(writer) = &writer
            && !ctx.own_writes.awaits(WriteOf::Secret, &key)
        {
            // Every watch has shown the write: the memory of it is no longer needed.
            ctx.memories.forget_write(writer);
        }
        let mut clients: Vec<NamespacedName> = owner
            .chain(ctx.references.targeting(&key))
            .filter(|client| Some(client) != writer.as_ref())
            .chain(ctx.references.referencing(&key))
            .collect();
        clients.sort();
        clients.dedup();
        live_refs(&clients, &store)
    }
}

/// The OAuthClients (still in the store) that reference the object of `meta`.
fn referencing(
    references: &References,
    store: &Store<PartialObjectMeta<OAuthClient>>,
    meta: &kube::api::ObjectMeta,
) -> Vec<kube::runtime::reflector::ObjectRef<PartialObjectMeta<OAuthClient>>> {
    live_refs(&references.referencing(&NamespacedName::of(meta)), store)
}

/// The queue references of the OAuthClients among `keys` that the store still holds.
fn live_refs(
    keys: &[NamespacedName],
    store: &Store<PartialObjectMeta<OAuthClient>>,
) -> Vec<reflector::ObjectRef<PartialObjectMeta<OAuthClient>>> {
    keys.iter()
        .map(queue_ref)
        .filter(|r| store.get(r).is_some())
        .collect()
}

/// How a watch retries after an error: from 0.5 s, doubling, at most 5 s, each delay with up to
/// a quarter less by jitter; back to 0.5 s after a minute without errors (kube's default grows to
/// 30 s). A restarted kube-apiserver answers the first watches with connection errors and then
/// `410 Gone` (its watch cache starts at a newer resourceVersion); with kube's default, those
/// errors added up to more than 30 s before the relist on a real API server. A few lists every
/// 5 s while the API server is down cost it nothing.
pub(super) fn watch_backoff() -> kube::runtime::utils::ResetTimerBackoff<WatchBackoff> {
    kube::runtime::utils::ResetTimerBackoff::new(WatchBackoff::FIRST, Duration::from_secs(60))
}

/// Every client in `store`, each time the clock jumps (a [`crate::base::clock::ManualClock`] in
/// tests): what is due at the new time is done at once. Nothing for a clock that flows.
fn clock_moves(
    clock: &Arc<dyn Clock>,
    store: Store<PartialObjectMeta<OAuthClient>>,
) -> impl Stream<Item = ObjectRef<PartialObjectMeta<OAuthClient>>> + Send + 'static {
    futures::stream::iter(clock.moved())
        .flat_map(|moves| {
            futures::stream::unfold(moves, |mut moves| async move {
                moves.changed().await.ok().map(|()| ((), moves))
            })
        })
        .flat_map(move |()| {
            let all: Vec<_> = store
                .state()
                .iter()
                .map(|client| queue_ref(&NamespacedName::of(&client.metadata)))
                .collect();
            futures::stream::iter(all)
        })
}

/// The delays of [`watch_backoff`].
pub(super) struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: WatchBackoff = WatchBackoff {
        next: Duration::from_millis(500),
    };
    const MAX: Duration = Duration::from_secs(5);
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX);
        Some(delay.mul_f64(1.0 - rand::random::<f64>() / 4.0))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = Self::FIRST;
    }
}

/// A metadata-only watch (of Secrets, ConfigMaps or ServiceAccounts) that keeps `index` up to
/// date.
fn indexed<K, V>(
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
    index: Arc<Index<V, K>>,
    synced: impl Fn(&Result<watcher::Event<PartialObjectMeta<K>>, watcher::Error>) + Send + 'static,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    watch(api, config)
        .backoff(watch_backoff())
        .inspect(move |event| {
            if let Ok(event) = event {
                index.apply(event);
            }
            synced(event);
        })
        .touched_objects()
}

/// The OAuthClients, through our own reflector so that deletions are seen: a deleted client's
/// metrics and memory are dropped at once.
fn clients(
    api: Api<PartialObjectMeta<OAuthClient>>,
    writer: reflector::store::Writer<PartialObjectMeta<OAuthClient>>,
    synced: impl Fn(&Result<watcher::Event<PartialObjectMeta<OAuthClient>>, watcher::Error>)
    + Send
    + 'static,
    ctx: Arc<Context>,
    wake: tokio::sync::mpsc::UnboundedSender<reflector::ObjectRef<PartialObjectMeta<OAuthClient>>>,
) -> impl Stream<Item = Result<PartialObjectMeta<OAuthClient>, watcher::Error>> + Send + 'static {
    let noting = ctx.clone();
    // Whether the event `modify` just saw is the client's own status write (read by the filter
    // below, for the same event: the stream takes one event at a time through every step).
    let own_write = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (marking, sparing) = (own_write.clone(), own_write);
    watch(api, watcher::Config::default())
        .backoff(watch_backoff())
        .modify(move |client| {
            let key = NamespacedName::of(&client.metadata);
            let version = client.metadata.resource_version.as_deref();
            // The version of a client others take their subject token from, before it goes.
            noting.note_subject_client(&key, version);
            let own = noting.own_writes.spare(WriteOf::Status, &key, version);
            marking.store(own.is_some(), std::sync::atomic::Ordering::Relaxed);
            // Only the name and namespace are read from the cache (each reconcile GETs the
            // object); everything else, the apiVersion and kind included, would be copied into
            // the store and into every reference to it.
            client.types = None;
            client.metadata = kube::api::ObjectMeta {
                name: client.metadata.name.take(),
                namespace: client.metadata.namespace.take(),
                ..Default::default()
            };
        })
        .reflect(writer)
        .inspect(move |event| {
            synced(event);
            if let Ok(watcher::Event::Delete(client)) = event {
                ctx.forget(&NamespacedName::of(&client.metadata));
            }
            if let Ok(watcher::Event::Apply(client) | watcher::Event::Delete(client)) = event {
                let key = NamespacedName::of(&client.metadata);
                if matches!(event, Ok(watcher::Event::Delete(_))) {
                    ctx.note_subject_client(&key, None);
                }
                for user in ctx.client_refs.referencing(&key) {
                    let _ = wake.send(queue_ref(&user));
                }
            }
        })
        // The store and the clients that use this one saw the event; the client's own status
        // write asks for no reconcile of it (see own_writes.rs).
        // Only a live event is spared: a relist shows the client at its latest version, which
        // may hold others' changes whose own events were never delivered.
        .try_filter(move |event| {
            let marked = sparing.swap(false, std::sync::atomic::Ordering::Relaxed);
            let own = matches!(event, watcher::Event::Apply(_)) && marked;
            futures::future::ready(!own)
        })
        .applied_objects()
}

/// Which watch caches of a scope have completed their first list.
struct Synced {
    bits: tokio::sync::watch::Sender<u8>,
    /// The ServiceAccounts bit, when they are watched (else 0).
    service_accounts: u8,
}

impl Synced {
    const CLIENTS: u8 = 1;
    const MANAGED: u8 = 2;
    const SECRETS: u8 = 4;
    const CONFIG_MAPS: u8 = 8;
    const SERVICE_ACCOUNTS: u8 = 16;

    fn new(with_service_accounts: bool) -> Self {
        Synced {
            bits: tokio::sync::watch::channel(0).0,
            service_accounts: if with_service_accounts {
                Self::SERVICE_ACCOUNTS
            } else {
                0
            },
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

    /// Resolves (through `wait_for`) once the Secret and ConfigMap caches (and the
    /// ServiceAccount cache, when there is one) are complete.
    fn secrets_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.mapped(Self::MANAGED | Self::SECRETS | Self::CONFIG_MAPS | self.service_accounts)
    }

    /// Resolves once every cache of the scope is complete.
    fn all_ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.mapped(
            Self::CLIENTS
                | Self::MANAGED
                | Self::SECRETS
                | Self::CONFIG_MAPS
                | self.service_accounts,
        )
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
    if ctx.memories.len() <= store.len() {
        return;
    }
    let live: HashSet<NamespacedName> = store
        .state()
        .iter()
        .map(|o| NamespacedName::of(&o.metadata))
        .collect();
    for key in ctx.memories.stale(|k| live.contains(k)) {
        ctx.forget(&key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_dropped_reconcile_task_stops_where_it_is() {
        let wrote = Arc::new(AtomicBool::new(false));
        let writing = wrote.clone();
        let task = ReconcileTask(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            writing.store(true, Ordering::SeqCst);
            Ok(Action::await_change())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The controller future dropped (a lost lease): its reconciles with it.
        drop(task);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !wrote.load(Ordering::SeqCst),
            "the reconcile went on writing"
        );
    }

    #[tokio::test]
    async fn a_reconcile_task_gives_its_result() {
        let task = ReconcileTask(tokio::spawn(async { Ok(Action::await_change()) }));
        assert_eq!(task.await.unwrap(), Action::await_change());
    }
}
