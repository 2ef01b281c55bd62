//! The seal that proves a managed Secret is as the operator wrote it.
//!
//! Every item the operator writes into a managed Secret — each data key (the token, its type,
//! expiry, scope, the rendered templates) and its own annotations (issued-at, expires-at, the
//! fingerprint, the target hash) — gets a keyed MAC (HMAC-SHA256 under a key only the operator
//! holds, truncated to 96 bits), bound to the Secret's namespace and name and to the
//! OAuthClient's uid. The tags are stored in one annotation,
//! `oauth.token-operator.dev/mac: v1:<key id>:<item>=<tag>,...`. A reader of the Secret can see
//! which items are sealed but cannot compute a tag, so a swapped token, a forged `expires-at` or
//! a Secret copied from another client is noticed, also after a restart, and the changed items
//! can be named (never their values).
//!
//! Two keys can be held: the current one (new seals) and the previous one (seals made before a
//! rotation still verify, and are re-sealed without a new exchange).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::output::redact::Sensitive;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";

/// Bytes of a tag kept (96 bits).
const TAG_LEN: usize = 12;

/// A seal key and its id (the first 8 hex digits of its SHA-256: names the key, reveals
/// nothing usable).
#[derive(Clone)]
pub struct SealKey {
    id: String,
    key: Sensitive<Vec<u8>>,
}

impl SealKey {
    /// A key from its bytes (at least 32).
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        if bytes.len() < 32 {
            return None;
        }
        let digest = Sha256::digest(&bytes);
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Some(SealKey {
            id,
            key: Sensitive::new(bytes),
        })
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn tag(&self, scope: &Scope<'_>, item: &str, value: &[u8]) -> String {
        let mut mac =
            HmacSha256::new_from_slice(self.key.expose()).expect("HMAC takes keys of any length");
        // Length-prefixed fields: boundaries are unambiguous.
        for part in [
            scope.namespace.as_bytes(),
            scope.name.as_bytes(),
            scope.owner_uid.as_bytes(),
            item.as_bytes(),
            value,
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        B64.encode(&mac.finalize().into_bytes()[..TAG_LEN])
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealKey({}, [redacted])", self.id)
    }
}

/// The keys the operator seals with: the current one, and the previous one during a rotation.
#[derive(Clone, Debug)]
pub struct SealKeys {
    /// New seals use this key.
    pub current: SealKey,
    /// Seals made with this key still verify.
    pub previous: Option<SealKey>,
}

impl SealKeys {
    /// A random key, for tests and for a first start.
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        SealKeys {
            current: SealKey::new(bytes.to_vec()).expect("32 bytes"),
            previous: None,
        }
    }

    fn by_id(&self, id: &str) -> Option<(&SealKey, bool)> {
        if self.current.id == id {
            Some((&self.current, true))
        } else {
            self.previous
                .as_ref()
                .filter(|k| k.id == id)
                .map(|k| (k, false))
        }
    }
}

/// What a seal is bound to.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The Secret's namespace.
    pub namespace: &'a str,
    /// The Secret's name.
    pub name: &'a str,
    /// The uid of the OAuthClient that owns it.
    pub owner_uid: &'a str,
}

/// One sealed item: a data key (`data/<key>`) or an annotation (its name), with its value.
pub type Item<'v> = (String, &'v [u8]);

/// The item name of a data key.
pub fn data_item(key: &str) -> String {
    format!("data/{key}")
}

/// The seal annotation's value for `items`.
pub fn seal(keys: &SealKeys, scope: &Scope<'_>, items: &[Item<'_>]) -> String {
    let tags: Vec<String> = items
        .iter()
        .map(|(item, value)| format!("{item}={}", keys.current.tag(scope, item, value)))
        .collect();
    format!("{VERSION}:{}:{}", keys.current.id, tags.join(","))
}

/// The outcome of checking a seal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Every sealed item is as sealed, with the current key.
    Valid,
    /// As sealed, with the previous key: re-seal.
    ValidWithPrevious,
    /// These items were changed or removed (or the seal is missing, unreadable or made with an
    /// unknown key: `["seal"]`).
    Changed(Vec<String>),
}

/// Checks the seal annotation `seal` against the observed values (`lookup` gives the value of
/// a sealed item, `None` when it is gone).
pub fn check<'v>(
    keys: &SealKeys,
    scope: &Scope<'_>,
    seal: Option<&str>,
    lookup: impl Fn(&str) -> Option<&'v [u8]>,
) -> Check {
    let broken = || Check::Changed(vec!["seal".to_owned()]);
    let Some(seal) = seal else {
        return broken();
    };
    let mut parts = seal.splitn(3, ':');
    let (Some(VERSION), Some(id), Some(tags)) = (parts.next(), parts.next(), parts.next()) else {
        return broken();
    };
    let Some((key, current)) = keys.by_id(id) else {
        return broken();
    };
    let mut changed = Vec::new();
    for entry in tags.split(',').filter(|e| !e.is_empty()) {
        let Some((item, tag)) = entry.split_once('=') else {
            return broken();
        };
        let intact = lookup(item).is_some_and(|value| {
            let expected = key.tag(scope, item, value);
            constant_time_eq(expected.as_bytes(), tag.as_bytes())
        });
        if !intact {
            changed.push(item.to_owned());
        }
    }
    match (changed.is_empty(), current) {
        (false, _) => Check::Changed(changed),
        (true, true) => Check::Valid,
        (true, false) => Check::ValidWithPrevious,
    }
}

/// The items a seal names, without checking it.
pub fn sealed_items(seal: &str) -> Vec<&str> {
    seal.splitn(3, ':')
        .nth(2)
        .map(|tags| {
            tags.split(',')
                .filter_map(|e| e.split_once('=').map(|(item, _)| item))
                .collect()
        })
        .unwrap_or_default()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: Scope<'static> = Scope {
        namespace: "ns",
        name: "demo-token",
        owner_uid: "uid-1",
    };

    fn items() -> Vec<(String, Vec<u8>)> {
        vec![
            (data_item("access_token"), b"tok-1".to_vec()),
            (
                "oauth.token-operator.dev/expires-at".to_owned(),
                b"2026-01-01T00:00:00Z".to_vec(),
            ),
        ]
    }

    fn borrowed(items: &[(String, Vec<u8>)]) -> Vec<Item<'_>> {
        items
            .iter()
            .map(|(i, v)| (i.clone(), v.as_slice()))
            .collect()
    }

    fn check_with(
        keys: &SealKeys,
        scope: &Scope<'_>,
        seal: &str,
        values: &[(String, Vec<u8>)],
    ) -> Check {
        check(keys, scope, Some(seal), |item| {
            values
                .iter()
                .find(|(i, _)| i == item)
                .map(|(_, v)| v.as_slice())
        })
    }

    #[test]
    fn an_untouched_secret_verifies_and_every_change_is_named() {
        let keys = SealKeys::random();
        let values = items();
        let seal = seal(&keys, &SCOPE, &borrowed(&values));
        assert!(seal.starts_with(&format!("v1:{}:", keys.current.id())));
        assert_eq!(check_with(&keys, &SCOPE, &seal, &values), Check::Valid);
        // A swapped token, a forged expiry, a removed key.
        let mut swapped = values.clone();
        swapped[0].1 = b"tok-2".to_vec();
        assert_eq!(
            check_with(&keys, &SCOPE, &seal, &swapped),
            Check::Changed(vec!["data/access_token".into()])
        );
        let mut forged = values.clone();
        forged[1].1 = b"9999-01-01T00:00:00Z".to_vec();
        assert_eq!(
            check_with(&keys, &SCOPE, &seal, &forged),
            Check::Changed(vec!["oauth.token-operator.dev/expires-at".into()])
        );
        assert_eq!(
            check_with(&keys, &SCOPE, &seal, &values[1..]),
            Check::Changed(vec!["data/access_token".into()])
        );
        // Copied to another Secret or another client, or sealed with a key the operator lacks.
        let other = Scope {
            owner_uid: "uid-2",
            ..SCOPE
        };
        assert!(
            matches!(check_with(&keys, &other, &seal, &values), Check::Changed(c) if c.len() == 2)
        );
        assert_eq!(
            check_with(&SealKeys::random(), &SCOPE, &seal, &values),
            Check::Changed(vec!["seal".into()])
        );
        for broken in ["", "v1", "v2:x:y", "v1:nokey:a=b"] {
            assert_eq!(
                check_with(&keys, &SCOPE, broken, &values),
                Check::Changed(vec!["seal".into()]),
                "{broken}"
            );
        }
        assert_eq!(
            sealed_items(&seal),
            ["data/access_token", "oauth.token-operator.dev/expires-at"]
        );
    }

    #[test]
    fn seals_of_the_previous_key_verify_during_a_rotation() {
        let old = SealKeys::random();
        let values = items();
        let seal = seal(&old, &SCOPE, &borrowed(&values));
        let rotated = SealKeys {
            current: SealKeys::random().current,
            previous: Some(old.current.clone()),
        };
        assert_eq!(
            check_with(&rotated, &SCOPE, &seal, &values),
            Check::ValidWithPrevious
        );
        assert!(!format!("{rotated:?}").contains(&format!("{:?}", old.current.key.expose())));
    }
}
