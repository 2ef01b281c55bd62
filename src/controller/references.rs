//! Which objects each OAuthClient uses, for the watch mappers: the credentials Secret, the CA
//! bundle's ConfigMap or Secret, the ServiceAccount, and the managed Secret it writes.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::name::NamespacedName;

/// Objects of one kind (Secrets, ConfigMaps) ↔ the OAuthClients that use them, in two kinds of
/// use: what each client references (a credentials Secret, a CA bundle) and the managed Secret
/// each client writes (so that a change to a managed Secret whose ownerReference or label was
/// removed still reaches its client). All live in the client's namespace; most objects are used
/// by one client and each client references one or two, so both sides hold boxed slices rather
/// than sets.
#[derive(Debug, Default)]
pub struct References {
    referenced: Mutex<Links>,
    targets: Mutex<Links>,
}

#[derive(Debug, Default)]
struct Links {
    /// Object → OAuthClient names (in the object's namespace).
    by_object: HashMap<NamespacedName, Box<[Box<str>]>>,
    /// OAuthClient → object names (in the client's namespace).
    by_client: HashMap<NamespacedName, Box<[Box<str>]>>,
}

impl References {
    /// Records that `client` references the object `name` of its namespace (replacing what
    /// it referenced before).
    pub fn link(&self, client: &NamespacedName, name: &str) {
        self.link_all(client, &[name]);
    }

    /// Records that `client` references exactly the objects `names` of its namespace (none:
    /// it references nothing of this kind).
    pub fn link_all(&self, client: &NamespacedName, names: &[&str]) {
        self.referenced
            .lock()
            .expect("references lock")
            .link_all(client, names);
    }

    /// Records that `client` also references the object `name` of its namespace (besides what
    /// it referenced before).
    pub fn add(&self, client: &NamespacedName, name: &str) {
        let mut links = self.referenced.lock().expect("references lock");
        let mut names: Vec<Box<str>> = links
            .by_client
            .get(client)
            .map(|n| n.to_vec())
            .unwrap_or_default();
        if names.iter().any(|n| &**n == name) {
            return;
        }
        names.push(name.into());
        let names: Vec<&str> = names.iter().map(|n| &**n).collect();
        links.link_all(client, &names);
    }

    /// Records that `client` writes the managed Secret `secret` of its namespace.
    pub fn link_target(&self, client: &NamespacedName, secret: &str) {
        self.targets
            .lock()
            .expect("references lock")
            .link_all(client, &[secret]);
    }

    /// Forgets what `client` uses.
    pub fn unlink(&self, client: &NamespacedName) {
        self.referenced
            .lock()
            .expect("references lock")
            .unlink(client);
        self.targets.lock().expect("references lock").unlink(client);
    }

    /// The OAuthClients that reference the object `object`.
    pub fn referencing(&self, object: &NamespacedName) -> Vec<NamespacedName> {
        self.referenced
            .lock()
            .expect("references lock")
            .clients(object)
    }

    /// Whether any OAuthClient references the object `object` (without listing them: this is
    /// asked of every watch event).
    pub fn is_referenced(&self, object: &NamespacedName) -> bool {
        self.referenced
            .lock()
            .expect("references lock")
            .by_object
            .contains_key(object)
    }

    /// The OAuthClients that write the managed Secret `secret`.
    pub fn targeting(&self, secret: &NamespacedName) -> Vec<NamespacedName> {
        self.targets
            .lock()
            .expect("references lock")
            .clients(secret)
    }
}

impl Links {
    fn link_all(&mut self, client: &NamespacedName, names: &[&str]) {
        let mut wanted: Vec<&str> = names.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let current = self.by_client.get(client);
        if current.is_some_and(|c| c.iter().map(|n| &**n).eq(wanted.iter().copied()))
            || (current.is_none() && wanted.is_empty())
        {
            return;
        }
        self.unlink(client);
        if wanted.is_empty() {
            return;
        }
        for name in &wanted {
            let entry = self
                .by_object
                .entry(NamespacedName::new(&client.namespace, name))
                .or_default();
            let mut list = std::mem::take(entry).into_vec();
            list.push(client.name.clone());
            *entry = list.into_boxed_slice();
        }
        let names: Box<[Box<str>]> = wanted.into_iter().map(Box::from).collect();
        self.by_client.insert(client.clone(), names);
    }

    fn clients(&self, object: &NamespacedName) -> Vec<NamespacedName> {
        self.by_object
            .get(object)
            .map(|clients| {
                clients
                    .iter()
                    .map(|c| NamespacedName::new(&object.namespace, c))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn unlink(&mut self, client: &NamespacedName) {
        let Some(names) = self.by_client.remove(client) else {
            return;
        };
        for name in names.iter() {
            let key = NamespacedName {
                namespace: client.namespace.clone(),
                name: name.clone(),
            };
            if let Some(clients) = self.by_object.get_mut(&key) {
                let rest: Box<[Box<str>]> = clients
                    .iter()
                    .filter(|c| **c != client.name)
                    .cloned()
                    .collect();
                if rest.is_empty() {
                    self.by_object.remove(&key);
                } else {
                    *clients = rest;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> NamespacedName {
        NamespacedName::new("ns", name)
    }

    fn names(refs: &References, secret: &str) -> Vec<String> {
        let mut v: Vec<String> = refs
            .referencing(&NamespacedName::new("ns", secret))
            .into_iter()
            .map(|c| c.name.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn references_follow_links_and_unlinks() {
        let refs = References::default();
        refs.link(&client("a"), "creds");
        refs.link(&client("b"), "creds");
        assert_eq!(names(&refs, "creds"), ["a", "b"]);
        refs.link(&client("a"), "other");
        assert_eq!(names(&refs, "creds"), ["b"]);
        assert_eq!(names(&refs, "other"), ["a"]);
        refs.unlink(&client("b"));
        assert!(names(&refs, "creds").is_empty());
        assert_eq!(refs.referenced.lock().unwrap().by_client.len(), 1);
        refs.link_target(&client("a"), "a-token");
        assert_eq!(
            refs.targeting(&NamespacedName::new("ns", "a-token")),
            [client("a")]
        );
    }

    #[test]
    fn a_client_may_reference_several_objects_of_a_kind() {
        let refs = References::default();
        // Credentials and a CA bundle in Secrets.
        refs.link_all(&client("a"), &["creds", "corp-ca"]);
        refs.link_all(&client("b"), &["creds", "creds"]);
        assert_eq!(names(&refs, "creds"), ["a", "b"]);
        assert_eq!(names(&refs, "corp-ca"), ["a"]);
        refs.link_all(&client("a"), &["creds"]);
        assert!(names(&refs, "corp-ca").is_empty());
        refs.add(&client("a"), "subject-token");
        refs.add(&client("a"), "subject-token");
        assert_eq!(names(&refs, "creds"), ["a", "b"]);
        assert_eq!(names(&refs, "subject-token"), ["a"]);
        assert!(refs.is_referenced(&NamespacedName::new("ns", "subject-token")));
        refs.link_all(&client("a"), &[]);
        assert_eq!(names(&refs, "creds"), ["b"]);
        assert!(names(&refs, "subject-token").is_empty());
        assert!(!refs.is_referenced(&NamespacedName::new("ns", "subject-token")));
        assert!(
            !refs
                .referenced
                .lock()
                .unwrap()
                .by_client
                .contains_key(&client("a"))
        );
        assert!(
            !refs
                .referenced
                .lock()
                .unwrap()
                .by_object
                .contains_key(&NamespacedName::new("ns", "corp-ca"))
        );
    }
}
