//! Compact indexes of Secrets (and of ConfigMaps, which may hold CA bundles), fed by
//! metadata-only watches.
//!
//! A reflector store keeps an `ObjectMeta` (hundreds of bytes even when nearly empty) behind
//! an `Arc` per Secret, keyed by an `ObjectRef` that also copies the uid and resourceVersion.
//! Clusters hold tens of thousands of Secrets, and the controller only asks "does this Secret
//! exist, and at which version?" of all of them ([`SecretIndex`]), and "who controls it and
//! what did we annotate?" of the managed ones ([`ManagedIndex`]). ConfigMaps are asked the first
//! question only ([`ConfigMapIndex`]). The
//! same index, over ServiceAccounts, tells the resourceVersion of the ServiceAccounts that
//! `ServiceAccountToken` clients use ([`ServiceAccountIndex`]).

use std::collections::BTreeMap;
use std::sync::RwLock;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

use crate::api::keys;
use crate::api::name::NamespacedName as Key;

fn key<K>(meta: &PartialObjectMeta<K>) -> Key {
    Key::of(&meta.metadata)
}

/// (namespace, name) → what `extract` keeps of each object of kind `K` (Secrets unless said
/// otherwise), following a watch (re-lists included: a re-list replaces the whole map at
/// InitDone). Ordered maps, not hash maps: a hash map's table doubles, so that 30,000 Secrets
/// took a table of 65,536 slots of 48 bytes (3 MiB, more than half of it empty).
#[derive(Debug)]
pub struct Index<V, K = Secret> {
    live: RwLock<BTreeMap<Key, V>>,
    /// A re-list in progress (between Init and InitDone) builds a fresh map here.
    relist: RwLock<Option<BTreeMap<Key, V>>>,
    extract: fn(&PartialObjectMeta<K>) -> V,
}

impl<V: Clone, K> Index<V, K> {
    /// An empty index keeping `extract` of each object.
    pub fn new(extract: fn(&PartialObjectMeta<K>) -> V) -> Self {
        Index {
            live: RwLock::default(),
            relist: RwLock::default(),
            extract,
        }
    }

    /// What is kept of a Secret, if it exists.
    pub fn get(&self, namespace: &str, name: &str) -> Option<V> {
        self.live
            .read()
            .expect("index lock")
            .get(&Key::new(namespace, name))
            .cloned()
    }

    /// Applies one watch event.
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<K>>) {
        match event {
            watcher::Event::Init => {
                *self.relist.write().expect("index lock") = Some(BTreeMap::new());
            }
            watcher::Event::InitApply(meta) => {
                if let Some(map) = self.relist.write().expect("index lock").as_mut() {
                    map.insert(key(meta), (self.extract)(meta));
                }
            }
            watcher::Event::InitDone => {
                if let Some(map) = self.relist.write().expect("index lock").take() {
                    *self.live.write().expect("index lock") = map;
                }
            }
            watcher::Event::Apply(meta) => {
                let value = (self.extract)(meta);
                self.live
                    .write()
                    .expect("index lock")
                    .insert(key(meta), value);
            }
            watcher::Event::Delete(meta) => {
                self.live.write().expect("index lock").remove(&key(meta));
            }
        }
    }

    /// The entries whose value satisfies `keep`.
    pub fn keys_where(&self, keep: impl Fn(&V) -> bool) -> Vec<(Key, V)> {
        self.live
            .read()
            .expect("index lock")
            .iter()
            .filter(|(_, v)| keep(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Number of Secrets indexed.
    pub fn len(&self) -> usize {
        self.live.read().expect("index lock").len()
    }

    /// Whether no Secret is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// All Secrets in scope: (namespace, name) → resourceVersion.
pub type SecretIndex = Index<Box<str>>;

/// All ConfigMaps in scope: (namespace, name) → resourceVersion.
pub type ConfigMapIndex = Index<Box<str>, ConfigMap>;

impl<K> Index<Box<str>, K> {
    /// An index of resourceVersions.
    pub fn of_versions() -> Self {
        Index::new(|meta| {
            meta.metadata
                .resource_version
                .as_deref()
                .unwrap_or_default()
                .into()
        })
    }

    /// The resourceVersion of an object, if it exists.
    pub fn resource_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.get(namespace, name).map(String::from)
    }
}

/// The ServiceAccounts in scope (watched only with `--allow-service-account-tokens`):
/// (namespace, name) → resourceVersion.
pub type ServiceAccountIndex = Index<Box<str>, ServiceAccount>;

/// What reconciles read of a managed Secret, in boxed slices and strings (no spare capacity,
/// no map nodes: at 10,000 clients a `BTreeMap` per Secret alone cost megabytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Managed {
    /// resourceVersion.
    pub resource_version: Box<str>,
    /// uids of its controller ownerReferences.
    pub controllers: Box<[Box<str>]>,
    /// This operator's annotations (`oauth.token-operator.dev/...`).
    pub annotations: OurAnnotations,
}

/// The annotations this operator writes, by index: every managed Secret carries the same
/// five or six keys (about 40 bytes each), so they are kept once, here, not per Secret.
const KNOWN_ANNOTATIONS: [&str; 8] = [
    keys::ISSUED_AT_ANNOTATION,
    keys::EXPIRES_AT_ANNOTATION,
    keys::FINGERPRINT_ANNOTATION,
    keys::TARGET_HASH_ANNOTATION,
    keys::MAC_ANNOTATION,
    keys::TOKEN_AUDIENCES_ANNOTATION,
    keys::TOKEN_ENDPOINTS_ANNOTATION,
    keys::REFRESH_REQUESTED_ANNOTATION,
];

/// The `oauth.token-operator.dev/` annotations of a managed Secret: those of
/// [`KNOWN_ANNOTATIONS`] by index, any other key under the prefix (someone else's, or a later
/// version's) in full.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OurAnnotations {
    known: Box<[(u8, Box<str>)]>,
    other: Box<[(Box<str>, Box<str>)]>,
}

impl OurAnnotations {
    /// The annotations of `all` under the operator's prefix.
    pub fn of<'a>(all: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut known = Vec::new();
        let mut other = Vec::new();
        for (key, value) in all {
            if !key.starts_with(keys::PREFIX) {
                continue;
            }
            match KNOWN_ANNOTATIONS.iter().position(|k| k == key) {
                Some(i) => known.push((i as u8, Box::from(value.as_str()))),
                None => other.push((Box::from(key.as_str()), Box::from(value.as_str()))),
            }
        }
        OurAnnotations {
            known: known.into_boxed_slice(),
            other: other.into_boxed_slice(),
        }
    }

    /// The annotations as a map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let known = self.known.iter().map(|(i, v)| {
            let key = KNOWN_ANNOTATIONS[usize::from(*i)];
            (key.to_owned(), v.to_string())
        });
        let other = (self.other.iter()).map(|(k, v)| (k.to_string(), v.to_string()));
        known.chain(other).collect()
    }

    /// Number of annotations.
    pub fn len(&self) -> usize {
        self.known.len() + self.other.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Managed {
    /// Whether `uid` is one of its controllers.
    pub fn controlled_by(&self, uid: &str) -> bool {
        self.controllers.iter().any(|c| &**c == uid)
    }

    /// The annotations as a map.
    pub fn annotation_map(&self) -> BTreeMap<String, String> {
        self.annotations.to_map()
    }
}

/// The uids of an object's controller ownerReferences.
fn controllers(meta: &PartialObjectMeta<Secret>) -> Box<[Box<str>]> {
    meta.metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.controller == Some(true))
        .map(|r| Box::from(r.uid.as_str()))
        .collect()
}

/// The managed Secrets (label-selected): (namespace, name) → [`Managed`].
pub type ManagedIndex = Index<Managed>;

impl ManagedIndex {
    /// An index of Secrets by resourceVersion and controllers only (no annotations): the
    /// ClusterOAuthClients' copies, thousands per ClusterOAuthClient.
    pub fn of_controllers() -> Self {
        Index::new(|meta| Managed {
            resource_version: meta.resource_version().unwrap_or_default().into(),
            controllers: controllers(meta),
            annotations: OurAnnotations::default(),
        })
    }

    /// An index of managed Secrets.
    pub fn of_managed() -> Self {
        Index::new(|meta| Managed {
            resource_version: meta.resource_version().unwrap_or_default().into(),
            controllers: controllers(meta),
            annotations: OurAnnotations::of(meta.annotations()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str, name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        let mut m: PartialObjectMeta<Secret> = Default::default();
        m.metadata.namespace = Some(ns.into());
        m.metadata.name = Some(name.into());
        m.metadata.resource_version = Some(rv.into());
        m
    }

    #[test]
    fn follows_lists_updates_and_deletes() {
        let index = SecretIndex::of_versions();
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(meta("a", "x", "1")));
        assert_eq!(
            index.resource_version("a", "x"),
            None,
            "not live before InitDone"
        );
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.resource_version("a", "x").as_deref(), Some("1"));
        index.apply(&watcher::Event::Apply(meta("a", "x", "2")));
        index.apply(&watcher::Event::Apply(meta("b", "y", "3")));
        assert_eq!(index.resource_version("a", "x").as_deref(), Some("2"));
        index.apply(&watcher::Event::Delete(meta("a", "x", "4")));
        assert_eq!(index.resource_version("a", "x"), None);
        // A re-list replaces everything: y is gone, z appears.
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(meta("c", "z", "5")));
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.resource_version("b", "y"), None);
        assert_eq!(index.resource_version("c", "z").as_deref(), Some("5"));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn managed_entries_keep_controllers_and_our_annotations_only() {
        let index = ManagedIndex::of_managed();
        let mut m = meta("a", "t", "7");
        m.metadata.annotations = Some(
            [
                (
                    "oauth.token-operator.dev/expires-at".to_owned(),
                    "x".to_owned(),
                ),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                    "big".to_owned(),
                ),
                // Under the prefix but not one this version writes: kept in full.
                (
                    "oauth.token-operator.dev/later-version".to_owned(),
                    "y".to_owned(),
                ),
                (keys::MAC_ANNOTATION.to_owned(), "m".to_owned()),
            ]
            .into(),
        );
        m.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                controller: Some(true),
                uid: "u1".into(),
                ..Default::default()
            },
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                controller: None,
                uid: "u2".into(),
                ..Default::default()
            },
        ]);
        index.apply(&watcher::Event::Apply(m));
        let entry = index.get("a", "t").unwrap();
        assert_eq!(&*entry.resource_version, "7");
        assert!(entry.controlled_by("u1"));
        assert!(!entry.controlled_by("u2"), "not a controller reference");
        assert_eq!(
            entry.annotation_map(),
            BTreeMap::from(
                [
                    ("oauth.token-operator.dev/expires-at", "x"),
                    ("oauth.token-operator.dev/later-version", "y"),
                    ("oauth.token-operator.dev/mac", "m"),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
            )
        );
        assert_eq!(entry.annotations.len(), 3);
    }
}
