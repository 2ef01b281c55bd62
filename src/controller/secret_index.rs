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

/// The `oauth.token-operator.dev/` annotations of a managed Secret, packed into one buffer:
/// each entry is a tag byte (the index of a [`KNOWN_ANNOTATIONS`] key, or [`OTHER_KEY`] followed
/// by the key itself for any other key under the prefix: someone else's, or a later version's)
/// and then the value, each string length-prefixed. One allocation per Secret instead of one
/// per value plus a slice of pairs: at 10,000 managed Secrets that was about 2.5 MiB.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OurAnnotations {
    packed: Box<[u8]>,
}

/// The tag of an entry whose key is written out.
const OTHER_KEY: u8 = u8::MAX;

impl OurAnnotations {
    /// The annotations of `all` under the operator's prefix.
    pub fn of<'a>(all: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut packed = Vec::new();
        for (key, value) in all {
            if !key.starts_with(keys::PREFIX) {
                continue;
            }
            match KNOWN_ANNOTATIONS.iter().position(|k| k == key) {
                Some(i) => packed.push(i as u8),
                None => {
                    packed.push(OTHER_KEY);
                    push_str(&mut packed, key);
                }
            }
            push_str(&mut packed, value);
        }
        OurAnnotations {
            packed: packed.into_boxed_slice(),
        }
    }

    /// The annotations, in the order they were given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest = &self.packed[..];
        std::iter::from_fn(move || {
            let (&tag, after) = rest.split_first()?;
            rest = after;
            let key = match tag {
                OTHER_KEY => take_str(&mut rest),
                i => KNOWN_ANNOTATIONS[usize::from(i)],
            };
            Some((key, take_str(&mut rest)))
        })
    }

    /// The annotations as a map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        (self.iter())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Number of annotations.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }
}

impl std::fmt::Debug for OurAnnotations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Appends `s` with its length in front (LEB128: one byte below 128).
fn push_str(packed: &mut Vec<u8>, s: &str) {
    let mut len = s.len();
    loop {
        let low = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            packed.push(low);
            break;
        }
        packed.push(low | 0x80);
    }
    packed.extend_from_slice(s.as_bytes());
}

/// Takes a string that [`push_str`] appended off the front of `rest`.
fn take_str<'a>(rest: &mut &'a [u8]) -> &'a str {
    let mut len = 0usize;
    let mut shift = 0;
    while let Some((&byte, after)) = rest.split_first() {
        *rest = after;
        len |= usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let (bytes, after) = rest.split_at(len);
    *rest = after;
    std::str::from_utf8(bytes).expect("packed from a str at a char boundary")
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

    #[test]
    fn packed_annotations_give_back_every_key_and_value_exactly() {
        let long = "x".repeat(20_000);
        let given = BTreeMap::from(
            [
                (keys::FINGERPRINT_ANNOTATION, "v1:c2FsdA:bWFj"),
                (keys::TOKEN_AUDIENCES_ANNOTATION, long.as_str()),
                (keys::MAC_ANNOTATION, ""),
                ("oauth.token-operator.dev/später", "naïve ✓"),
                ("oauth.token-operator.dev/x", &long[..128]),
                ("other.example/ignored", "z"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let packed = OurAnnotations::of(&given);
        let mut expected = given.clone();
        expected.remove("other.example/ignored");
        assert_eq!(packed.to_map(), expected);
        assert_eq!(packed.len(), 5);
        assert!(!packed.is_empty());
        assert!(OurAnnotations::of(&BTreeMap::new()).is_empty());
        assert_eq!(OurAnnotations::default().to_map(), BTreeMap::new());
        assert!(format!("{packed:?}").contains("naïve ✓"));
    }
}
