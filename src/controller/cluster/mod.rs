//! The ClusterOAuthClient controller (`run --enable-cluster-clients`): one credential, one token
//! request per lifetime, the token written into every namespace the ClusterOAuthClient selects.
//!
//! The token is obtained by an OAuthClient that the controller keeps in the cluster resource
//! namespace (`cluster-<name>`, owned by the ClusterOAuthClient, labelled
//! `oauth.token-operator.dev/cluster-client`): the whole OAuthClient pipeline (credentials,
//! trust, the exchange gate, refresh, backoff, restart reuse, the sealed and healed managed
//! Secret) serves it unchanged, and every reference resolves in that namespace as the contract
//! says. This controller:
//!
//! 1. keeps that OAuthClient's spec equal to the ClusterOAuthClient's ([`reconcile`]);
//! 2. reads its managed Secret when it changes, and takes the token only if it is intact;
//! 3. writes a sealed copy into each selected namespace ([`copies`]), removes the copies of
//!    namespaces that stopped matching, and leaves any Secret it does not control untouched;
//! 4. reports the OAuthClient's status, the targets and `Distributed` on the ClusterOAuthClient.
//!
//! Watches: ClusterOAuthClients; namespaces (metadata only: a namespace labelled in or out gets
//! or loses its copy within seconds); the copies (metadata, label-selected); the OAuthClients it
//! keeps (metadata, label-selected). A Secret of someone else that blocks a namespace is looked
//! up in the cluster-wide scope's index of all Secrets, and looked at again every few seconds.

mod copies;
mod reconcile;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use super::context::{Context, Shared};
use super::secret_index::ManagedIndex;
use crate::api::cluster_crd::ClusterOAuthClient;
use crate::api::crd::{OAuthClient, OAuthClientSpec, Target};
use crate::api::keys::CLUSTER_CLIENT_SELECTOR;
use crate::decide::managed_secret::IntactToken;

type BoxFuture = futures::future::BoxFuture<'static, ()>;

/// What every reconcile of a ClusterOAuthClient shares.
pub struct ClusterContext {
    /// What all controllers share.
    pub shared: Arc<Shared>,
    /// The cluster-wide OAuthClient scope: its index of all Secrets tells a conflicting Secret.
    pub scope: Arc<Context>,
    /// `--cluster-resource-namespace`: where references resolve and the token's OAuthClient is.
    pub namespace: String,
    /// Namespaces (metadata).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The copies (label-selected Secrets): controllers and resourceVersion.
    pub copies: Arc<ManagedIndex>,
    /// Per ClusterOAuthClient (by name): what this process read and wrote.
    pub memory: Mutex<HashMap<String, Remembered>>,
    /// True once the namespace, copy and OAuthClient watches have listed completely.
    pub synced: tokio::sync::watch::Receiver<bool>,
}

/// What a process remembers of one ClusterOAuthClient.
#[derive(Clone, Debug, Default)]
pub struct Remembered {
    /// Its uid (a recreated one starts afresh).
    pub uid: String,
    /// The token's OAuthClient's managed Secret as last read and found intact: its
    /// resourceVersion and token.
    pub source: Option<(String, IntactToken)>,
    /// Per namespace: the copy's resourceVersion as last written or verified, and the source
    /// of its content ([`copies::source`]).
    pub written: HashMap<String, (String, String)>,
    /// Per namespace: the resourceVersion of someone else's Secret of the target name, as last
    /// read (read again only when it changes).
    pub conflicts: HashMap<String, String>,
    /// The namespaces selected at the last reconcile: a namespace event reconciles only the
    /// ClusterOAuthClients whose selection it changes.
    pub selected: BTreeSet<String>,
}

/// Builds the ClusterOAuthClient controller: its future, and one that resolves once its watches
/// have listed completely.
pub fn controller(
    shared: Arc<Shared>,
    scope: Arc<Context>,
    namespace: String,
    shutdown: futures::future::Shared<impl Future<Output = ()> + Send + 'static>,
) -> (BoxFuture, BoxFuture) {
    let kube = shared.kube.clone();
    let (synced_tx, synced) = tokio::sync::watch::channel(0u8);
    let synced_tx = Arc::new(synced_tx);
    let (ns_store, ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let ns_mark = mark(&synced_tx, 1);
    let namespaces = watcher::watcher(
        Api::<PartialObjectMeta<Namespace>>::all(kube.clone()),
        watcher::Config::default(),
    )
    .backoff(super::watches::watch_backoff())
    .inspect(move |e| ns_mark(e))
    .reflect(ns_writer)
    .touched_objects();
    let copies = Arc::new(ManagedIndex::of_controllers());
    let index = copies.clone();
    let copies_mark = mark(&synced_tx, 2);
    let copies_stream = watcher::watcher(
        Api::<PartialObjectMeta<Secret>>::all(kube.clone()),
        watcher::Config::default().labels(CLUSTER_CLIENT_SELECTOR),
    )
    .backoff(super::watches::watch_backoff())
    .inspect(move |event| {
        if let Ok(event) = event {
            index.apply(event);
        }
        copies_mark(event);
    })
    .touched_objects();
    let children_mark = mark(&synced_tx, 4);
    let children = watcher::watcher(
        Api::<PartialObjectMeta<OAuthClient>>::namespaced(kube.clone(), &namespace),
        watcher::Config::default().labels(CLUSTER_CLIENT_SELECTOR),
    )
    .backoff(super::watches::watch_backoff())
    .inspect(move |e| children_mark(e))
    .touched_objects();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let mut bits = synced.clone();
    tokio::spawn(async move {
        let _ = bits.wait_for(|b| *b == 7).await;
        let _ = ready_tx.send(true);
        // Keep the sender alive for the receivers.
        std::future::pending::<()>().await;
    });
    let cx = Arc::new(ClusterContext {
        shared: shared.clone(),
        scope,
        namespace,
        namespaces: ns_store,
        copies,
        memory: Mutex::default(),
        synced: ready.clone(),
    });
    let api: Api<ClusterOAuthClient> = Api::all(kube);
    let controller = Controller::new(api, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(8));
    let store = controller.store();
    let (all, by_copy, by_child, ns_cx) = (store.clone(), store.clone(), store.clone(), cx.clone());
    let running = controller
        .watches_stream(namespaces, move |ns: PartialObjectMeta<Namespace>| {
            changed_selection(&ns_cx, &all, &ns)
        })
        .watches_stream(copies_stream, move |secret: PartialObjectMeta<Secret>| {
            owner(&by_copy, &secret.metadata)
        })
        .watches_stream(children, move |child: PartialObjectMeta<OAuthClient>| {
            owner(&by_child, &child.metadata)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, cx.clone())
        .for_each(move |result| {
            if let Err(error) = result {
                tracing::debug!(%error, "cluster controller event");
            }
            forget_deleted(&cx, &store);
            futures::future::ready(())
        })
        .boxed();
    let mut ready = ready;
    let synced = async move {
        let _ = ready.wait_for(|r| *r).await;
    }
    .boxed();
    (running, synced)
}

/// The controller ownerReference to a ClusterOAuthClient.
pub fn owner_reference(client: &ClusterOAuthClient) -> OwnerReference {
    OwnerReference {
        api_version: ClusterOAuthClient::api_version(&()).into_owned(),
        kind: ClusterOAuthClient::kind(&()).into_owned(),
        name: client.name_any(),
        uid: client.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The ClusterOAuthClient's spec as an OAuthClient's whose Secret is named `target_name`.
pub fn spec_named(client: &ClusterOAuthClient, target_name: &str) -> OAuthClientSpec {
    let mut spec = client.spec.client.clone();
    let target = spec.target.take().unwrap_or_default();
    spec.target = Some(Target {
        name: Some(target_name.to_owned()),
        ..target
    });
    spec
}

/// An `inspect` callback that marks `bit` in `synced` on the watch's first complete list.
fn mark<K>(
    synced: &Arc<tokio::sync::watch::Sender<u8>>,
    bit: u8,
) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
    let tx = synced.clone();
    move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            tx.send_if_modified(|b| {
                let before = *b;
                *b |= bit;
                *b != before
            });
        }
    }
}

/// The ClusterOAuthClient that controls an object (by its controller ownerReference, name and
/// uid: a copied ownerReference of a deleted one, or a made-up one, reconciles nothing).
fn owner(
    store: &Store<ClusterOAuthClient>,
    meta: &kube::api::ObjectMeta,
) -> Option<ObjectRef<ClusterOAuthClient>> {
    let r = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == "ClusterOAuthClient")?;
    let reference = ObjectRef::new(&r.name);
    let live = store.get(&reference)?;
    (live.uid().as_deref() == Some(r.uid.as_str())).then_some(reference)
}

/// The ClusterOAuthClients whose selection a namespace's event changes (it starts or stops
/// matching), and those not reconciled yet: every namespace event reconciling every
/// ClusterOAuthClient would cost a pass over all their namespaces each.
fn changed_selection(
    cx: &ClusterContext,
    store: &Store<ClusterOAuthClient>,
    ns: &PartialObjectMeta<Namespace>,
) -> Vec<ObjectRef<ClusterOAuthClient>> {
    let name = ns.name_any();
    let seen = crate::decide::distribution::NamespaceSeen {
        name: name.clone(),
        labels: ns.labels().clone(),
        terminating: ns.metadata.deletion_timestamp.is_some(),
    };
    let memory = cx.memory.lock().expect("cluster memory lock");
    store
        .state()
        .iter()
        .filter(|client| {
            // An empty selector is refused (it would select every namespace): none here.
            let selector = client
                .spec
                .namespace_selector
                .clone()
                .filter(|s| {
                    s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                        || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
                })
                .and_then(|s| kube::core::Selector::try_from(s).ok());
            let now = crate::decide::distribution::selected(
                std::slice::from_ref(&seen),
                &client.spec.namespaces,
                selector.as_ref(),
            )
            .contains(&name);
            match memory.get(&client.name_any()) {
                Some(remembered) => remembered.selected.contains(&name) != now,
                None => true,
            }
        })
        .map(|client| ObjectRef::from_obj(client.as_ref()))
        .collect()
}

/// Drops the memory of ClusterOAuthClients that no longer exist.
fn forget_deleted(cx: &ClusterContext, store: &Store<ClusterOAuthClient>) {
    let mut memory = cx.memory.lock().expect("cluster memory lock");
    if memory.len() > store.state().len() {
        memory.retain(|name, _| {
            let live = store.get(&ObjectRef::new(name)).is_some();
            if !live {
                cx.shared.metrics.forget_cluster_client(name);
            }
            live
        });
    }
}
