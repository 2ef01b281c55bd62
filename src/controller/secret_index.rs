//! The names and resourceVersions of all Secrets in scope, and nothing else.
//!
//! A full reflector store keeps an `ObjectMeta` (hundreds of bytes even when nearly empty) per
//! Secret; clusters hold tens of thousands of Secrets, and the controller only asks "does this
//! Secret exist, and at which version?". The index is fed by the metadata-only watch.

use std::collections::HashMap;
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

type Key = (String, String);

/// (namespace, name) → resourceVersion.
#[derive(Debug, Default)]
pub struct SecretIndex {
    live: RwLock<HashMap<Key, String>>,
    /// A re-list in progress (between Init and InitDone) builds a fresh map here.
    relist: RwLock<Option<HashMap<Key, String>>>,
}

fn key(meta: &PartialObjectMeta<Secret>) -> Key {
    (meta.namespace().unwrap_or_default(), meta.name_any())
}

impl SecretIndex {
    /// The resourceVersion of a Secret, if it exists.
    pub fn resource_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.live
            .read()
            .expect("index lock")
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Applies one watch event.
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        match event {
            watcher::Event::Init => {
                *self.relist.write().expect("index lock") = Some(HashMap::new());
            }
            watcher::Event::InitApply(meta) => {
                let rv = meta.resource_version().unwrap_or_default();
                if let Some(map) = self.relist.write().expect("index lock").as_mut() {
                    map.insert(key(meta), rv);
                }
            }
            watcher::Event::InitDone => {
                if let Some(mut map) = self.relist.write().expect("index lock").take() {
                    map.shrink_to_fit();
                    *self.live.write().expect("index lock") = map;
                }
            }
            watcher::Event::Apply(meta) => {
                let rv = meta.resource_version().unwrap_or_default();
                self.live.write().expect("index lock").insert(key(meta), rv);
            }
            watcher::Event::Delete(meta) => {
                self.live.write().expect("index lock").remove(&key(meta));
            }
        }
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
        let index = SecretIndex::default();
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
}
