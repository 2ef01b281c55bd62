//! The seal that proves a managed Secret is as the operator wrote it.
//!
//! Every item the operator writes into a managed Secret — each data key (the token, its type,
//! expiry, scope, the rendered templates) and its own annotations (issued-at, expires-at, the
//! fingerprint, the target hash) — gets a keyed MAC (HMAC-SHA256 under a key only the operator
//! holds, truncated to 96 bits), bound to the Secret's namespace and name and to the
//! OAuthClient's uid. Two more tags cover items together, names and values: every item in the
//! seal's order (so that no item, and no tag, can be taken from another seal: the items were
//! sealed together or not at all), and the token's items (the token, its type, times, scope and
//! fingerprint: the group a re-rendering may trust while only its templates changed). The tags
//! are stored in one annotation,
//! `oauth.token-operator.dev/mac: v2:<key id>:<all tag>:<token tag>:<item>=<tag>,...`.
//!
//! What a seal must cover does not come from the seal: the checker is told which items the
//! operator writes for the current spec ([`Expected`]: the standard keys, every template key and
//! the operator's annotations, plus the keys a token may or may not have, such as `scope`, when
//! the Secret holds them). A seal that leaves out an expected item, names one the operator does
//! not write, or whose list was edited is broken, so an emptied seal, a dropped or an added item
//! cannot hide a swapped token or a forged expiry. A reader of the Secret can see which items
//! are sealed but cannot compute a tag, so a swapped token, a forged `expires-at` or a Secret
//! copied from another client is noticed, also after a restart, and the changed items can be
//! named (never their values).
//!
//! Two keys can be held: the current one (new seals) and the previous one (seals made before a
//! rotation still verify, and are re-sealed without a new exchange). Seals of the former format
//! (`v1`, no list tag) verify only when they list exactly the expected items, and are re-sealed.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::base::Sensitive;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v2";

/// The former format: no list tag (re-sealed when it lists exactly the expected items).
const FORMER_VERSION: &str = "v1";

/// The item names the group tags are computed under (no real item can have them: data items
/// start with `data/`, annotation names have no `*`).
const ALL_ITEMS: &str = "*items*";
const TOKEN_ITEMS: &str = "*token*";

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

/// The seal annotation's value for `items`, `token` naming the items of the token's group.
pub fn seal(keys: &SealKeys, scope: &Scope<'_>, items: &[Item<'_>], token: &[String]) -> String {
    let tags: Vec<String> = items
        .iter()
        .map(|(item, value)| format!("{item}={}", keys.current.tag(scope, item, value)))
        .collect();
    let pairs: Vec<(&str, &[u8])> = items.iter().map(|(i, v)| (i.as_str(), *v)).collect();
    let key = &keys.current;
    format!(
        "{VERSION}:{}:{}:{}:{}",
        key.id,
        group_tag(key, scope, ALL_ITEMS, &pairs),
        group_tag(key, scope, TOKEN_ITEMS, &of_group(&pairs, token)),
        tags.join(",")
    )
}

/// The items of `pairs` named in `group`, in `pairs`' order.
fn of_group<'v>(pairs: &[(&'v str, &'v [u8])], group: &[String]) -> Vec<(&'v str, &'v [u8])> {
    pairs
        .iter()
        .filter(|(name, _)| group.iter().any(|g| g == name))
        .copied()
        .collect()
}

/// The tag of items together: each name and value, length-prefixed, in order.
fn group_tag(key: &SealKey, scope: &Scope<'_>, group: &str, pairs: &[(&str, &[u8])]) -> String {
    let mut joined = Vec::new();
    for (name, value) in pairs {
        for part in [name.as_bytes(), value] {
            joined.extend_from_slice(&(part.len() as u64).to_be_bytes());
            joined.extend_from_slice(part);
        }
    }
    key.tag(scope, group, &joined)
}

/// The items a seal must cover: those the operator always writes for the current spec, and
/// those it writes only for some tokens (sealed exactly when the Secret holds them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Always written (item names: `data/<key>` or an annotation name).
    pub always: Vec<String>,
    /// Written for some tokens only, e.g. `data/scope`.
    pub sometimes: Vec<String>,
    /// The token's items (among the above), sealed together as a group too.
    pub token: Vec<String>,
}

/// The outcome of checking a seal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Every sealed item is as sealed, together, with the current key.
    Valid,
    /// As sealed, with the previous key or in the former format: re-seal.
    ValidWithPrevious,
    /// These items were changed or removed (or the seal is missing, unreadable, made with an
    /// unknown key, or its items were not sealed together: `seal`).
    Changed {
        /// What changed (item names, or `seal`).
        items: Vec<String>,
        /// Whether the token's items are still exactly as sealed together (so that only
        /// rendered templates or other items changed, and the token may be re-rendered).
        token_intact: bool,
    },
}

impl Check {
    /// A seal that proves nothing.
    fn broken() -> Check {
        Check::Changed {
            items: vec!["seal".to_owned()],
            token_intact: false,
        }
    }
}

/// Checks the seal annotation `seal` against the observed values (`lookup` gives the value of
/// an item, `None` when it is gone) and the items the operator writes (`expected`).
pub fn check<'v>(
    keys: &SealKeys,
    scope: &Scope<'_>,
    seal: Option<&str>,
    expected: &Expected,
    lookup: impl Fn(&str) -> Option<&'v [u8]>,
) -> Check {
    let Some(parsed) = seal.and_then(Parsed::of) else {
        return Check::broken();
    };
    let Some((key, current)) = keys.by_id(parsed.key_id) else {
        return Check::broken();
    };
    let names: Vec<&str> = parsed.entries.iter().map(|(item, _)| *item).collect();
    let wrong = coverage(expected, &names, &lookup);
    // The former format carries no group tags: only a list that is exactly what the operator
    // writes is accepted (then re-sealed), and its token is never trusted on its own.
    if parsed.groups.is_none() && wrong.is_some() {
        return Check::broken();
    }
    let mut changed = wrong.unwrap_or_default();
    for (item, tag) in &parsed.entries {
        let intact = lookup(item).is_some_and(|value| {
            constant_time_eq(key.tag(scope, item, value).as_bytes(), tag.as_bytes())
        });
        if !intact && !changed.iter().any(|c| c == item) {
            changed.push((*item).to_owned());
        }
    }
    let values: Option<Vec<(&str, &[u8])>> = names
        .iter()
        .map(|name| lookup(name).map(|v| (*name, v)))
        .collect();
    let groups_intact = |group: &str, tag: &str, pairs: &[(&str, &[u8])]| {
        constant_time_eq(
            group_tag(key, scope, group, pairs).as_bytes(),
            tag.as_bytes(),
        )
    };
    let (all_intact, token_intact) = match (&parsed.groups, &values) {
        (Some((all, token)), Some(values)) => (
            groups_intact(ALL_ITEMS, all, values),
            groups_intact(TOKEN_ITEMS, token, &of_group(values, &expected.token))
                && !changed.iter().any(|c| expected.token.contains(c)),
        ),
        _ => (parsed.groups.is_none(), false),
    };
    if changed.is_empty() && !all_intact {
        changed.push("seal".to_owned());
    }
    match (changed.is_empty(), current && parsed.groups.is_some()) {
        (false, _) => Check::Changed {
            items: changed,
            token_intact,
        },
        (true, true) => Check::Valid,
        (true, false) => Check::ValidWithPrevious,
    }
}

/// The items a seal listing `names` fails to cover or covers wrongly: an expected item it
/// leaves out, an item the operator does not write, an item written for some tokens only that
/// the Secret holds but the seal leaves out (or the other way round), a name listed twice.
/// `None` when the list is exactly right.
fn coverage<'v>(
    expected: &Expected,
    names: &[&str],
    lookup: &impl Fn(&str) -> Option<&'v [u8]>,
) -> Option<Vec<String>> {
    let mut wrong: Vec<String> = Vec::new();
    for item in &expected.always {
        if !names.contains(&item.as_str()) {
            wrong.push(item.clone());
        }
    }
    for item in &expected.sometimes {
        if names.contains(&item.as_str()) != lookup(item).is_some() {
            wrong.push(item.clone());
        }
    }
    for (i, name) in names.iter().enumerate() {
        let known = expected
            .always
            .iter()
            .chain(&expected.sometimes)
            .any(|e| e == name);
        if (!known || names[..i].contains(name)) && !wrong.iter().any(|w| w == name) {
            wrong.push((*name).to_owned());
        }
    }
    (!wrong.is_empty()).then_some(wrong)
}

/// A seal annotation, parsed.
struct Parsed<'s> {
    key_id: &'s str,
    /// The tags of all items and of the token's items (`None` in the former format).
    groups: Option<(&'s str, &'s str)>,
    entries: Vec<(&'s str, &'s str)>,
}

impl<'s> Parsed<'s> {
    fn of(seal: &'s str) -> Option<Parsed<'s>> {
        let (version, rest) = seal.split_once(':')?;
        let (key_id, rest) = rest.split_once(':')?;
        let (groups, tags) = match version {
            VERSION => {
                let (all, rest) = rest.split_once(':')?;
                let (token, tags) = rest.split_once(':')?;
                (Some((all, token)), tags)
            }
            FORMER_VERSION => (None, rest),
            _ => return None,
        };
        let entries = tags
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| e.split_once('='))
            .collect::<Option<Vec<_>>>()?;
        Some(Parsed {
            key_id,
            groups,
            entries,
        })
    }
}

/// The items a seal names, without checking it.
pub fn sealed_items(seal: &str) -> Vec<&str> {
    Parsed::of(seal)
        .map(|p| p.entries.iter().map(|(item, _)| *item).collect())
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

    const EXPIRES: &str = "oauth.token-operator.dev/expires-at";

    fn items() -> Vec<(String, Vec<u8>)> {
        vec![
            (data_item("access_token"), b"tok-1".to_vec()),
            (EXPIRES.to_owned(), b"2026-01-01T00:00:00Z".to_vec()),
        ]
    }

    fn expected() -> Expected {
        Expected {
            always: vec![data_item("access_token"), EXPIRES.to_owned()],
            sometimes: vec![data_item("scope")],
            token: vec![data_item("access_token"), EXPIRES.to_owned()],
        }
    }

    fn borrowed(items: &[(String, Vec<u8>)]) -> Vec<Item<'_>> {
        items
            .iter()
            .map(|(i, v)| (i.clone(), v.as_slice()))
            .collect()
    }

    fn seal(keys: &SealKeys, scope: &Scope<'_>, items: &[Item<'_>]) -> String {
        super::seal(keys, scope, items, &expected().token)
    }

    /// `Changed` with exactly `items`.
    fn changed(check: &Check, items: &[&str]) -> bool {
        matches!(check, Check::Changed { items: c, .. } if c.iter().map(String::as_str).eq(items.iter().copied()))
    }

    fn check_with(
        keys: &SealKeys,
        scope: &Scope<'_>,
        seal: &str,
        values: &[(String, Vec<u8>)],
    ) -> Check {
        check(keys, scope, Some(seal), &expected(), |item| {
            values
                .iter()
                .find(|(i, _)| i == item)
                .map(|(_, v)| v.as_slice())
        })
    }

    /// The values with the token swapped and the expiry moved to 2099: what an attacker wants
    /// the operator to accept.
    fn forged() -> Vec<(String, Vec<u8>)> {
        vec![
            (data_item("access_token"), b"attacker-token".to_vec()),
            (EXPIRES.to_owned(), b"2099-01-01T00:00:00Z".to_vec()),
        ]
    }

    #[test]
    fn an_untouched_secret_verifies_and_every_change_is_named() {
        let keys = SealKeys::random();
        let values = items();
        let seal = seal(&keys, &SCOPE, &borrowed(&values));
        assert!(seal.starts_with(&format!("v2:{}:", keys.current.id())));
        assert_eq!(check_with(&keys, &SCOPE, &seal, &values), Check::Valid);
        // A swapped token, a forged expiry, a removed key.
        let mut swapped = values.clone();
        swapped[0].1 = b"tok-2".to_vec();
        assert!(changed(
            &check_with(&keys, &SCOPE, &seal, &swapped),
            &["data/access_token"]
        ));
        let mut forged = values.clone();
        forged[1].1 = b"9999-01-01T00:00:00Z".to_vec();
        assert!(changed(
            &check_with(&keys, &SCOPE, &seal, &forged),
            &[EXPIRES]
        ));
        assert!(changed(
            &check_with(&keys, &SCOPE, &seal, &values[1..]),
            &["data/access_token"]
        ));
        // Copied to another Secret or another client, or sealed with a key the operator lacks.
        let other = Scope {
            owner_uid: "uid-2",
            ..SCOPE
        };
        assert!(matches!(
            check_with(&keys, &other, &seal, &values),
            Check::Changed {
                token_intact: false,
                ..
            }
        ));
        assert!(changed(
            &check_with(&SealKeys::random(), &SCOPE, &seal, &values),
            &["seal"]
        ));
        for broken in ["", "v1", "v2:x:y", "v1:nokey:a=b", "v3:x:y:z:w"] {
            assert!(
                changed(&check_with(&keys, &SCOPE, broken, &values), &["seal"]),
                "{broken}"
            );
        }
        assert_eq!(sealed_items(&seal), ["data/access_token", EXPIRES]);
    }

    /// The attacks of the third security review: the seal's list emptied, an item dropped or
    /// added, a seal copied from the Secret of a recreated client; each with the token swapped
    /// and the expiry moved to 2099. None verifies.
    #[test]
    fn a_seal_whose_list_was_emptied_cut_or_padded_does_not_verify() {
        let keys = SealKeys::random();
        let genuine = items();
        let seal = seal(&keys, &SCOPE, &borrowed(&genuine));
        let parts: Vec<&str> = seal.splitn(5, ':').collect();
        let (id, list, entries) = (parts[1], format!("{}:{}", parts[2], parts[3]), parts[4]);
        let token_entry = entries.split(',').next().unwrap();
        let expiry_entry = entries.split(',').nth(1).unwrap();
        let forged = forged();
        // The empty list, in both formats (the former one has no list tag).
        for empty in [format!("v2:{id}:{list}:"), format!("v1:{id}:")] {
            assert!(
                matches!(check_with(&keys, &SCOPE, &empty, &forged), Check::Changed { items, token_intact: false } if !items.is_empty()),
                "{empty}"
            );
        }
        // One item dropped (the token, so that its swap is not checked), with the list tag
        // kept or the former format.
        for cut in [
            format!("v2:{id}:{list}:{expiry_entry}"),
            format!("v1:{id}:{expiry_entry}"),
        ] {
            let mut only_token_swapped = genuine.clone();
            only_token_swapped[0].1 = b"attacker-token".to_vec();
            assert!(
                matches!(check_with(&keys, &SCOPE, &cut, &only_token_swapped), Check::Changed { items, token_intact: false } if !items.is_empty()),
                "{cut}"
            );
            assert!(matches!(
                check_with(&keys, &SCOPE, &cut, &forged),
                Check::Changed { .. }
            ));
        }
        // One item added (an item the operator does not write, or one listed twice).
        for padded in [
            format!("{seal},data/extra=AAAAAAAAAAAAAAAA"),
            format!("v2:{id}:{list}:{token_entry},{token_entry},{expiry_entry}"),
        ] {
            assert!(matches!(
                check_with(&keys, &SCOPE, &padded, &genuine),
                Check::Changed { .. }
            ));
        }
        // The Secret holds a key written for some tokens only (scope) that its seal leaves out.
        let mut with_scope = genuine.clone();
        with_scope.push((data_item("scope"), b"admin".to_vec()));
        assert!(changed(
            &check_with(&keys, &SCOPE, &seal, &with_scope),
            &["data/scope"]
        ));
        // A seal copied from the Secret of the same client before it was recreated (another
        // uid), onto the forged values and onto the values it was made for.
        let recreated = Scope {
            owner_uid: "uid-of-the-recreated-client",
            ..SCOPE
        };
        for values in [&forged, &genuine] {
            assert!(matches!(
                check_with(&keys, &recreated, &seal, values),
                Check::Changed {
                    token_intact: false,
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_former_seal_listing_exactly_the_expected_items_verifies_and_is_resealed() {
        let keys = SealKeys::random();
        let values = items();
        let v2 = seal(&keys, &SCOPE, &borrowed(&values));
        let parts: Vec<&str> = v2.splitn(5, ':').collect();
        let former = format!("v1:{}:{}", parts[1], parts[4]);
        assert_eq!(
            check_with(&keys, &SCOPE, &former, &values),
            Check::ValidWithPrevious
        );
        let mut swapped = values.clone();
        swapped[0].1 = b"tok-2".to_vec();
        assert!(matches!(
            check_with(&keys, &SCOPE, &former, &swapped),
            Check::Changed {
                token_intact: false,
                ..
            }
        ));
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

    /// The review of the fixes: tags taken from two genuine seals of the same Secret (the old
    /// token's under the new expiry's) verify item by item but were never sealed together.
    #[test]
    fn items_of_two_genuine_seals_spliced_together_do_not_verify() {
        let keys = SealKeys::random();
        let first = items();
        let second = vec![
            (data_item("access_token"), b"tok-2".to_vec()),
            (EXPIRES.to_owned(), b"2027-01-01T00:00:00Z".to_vec()),
        ];
        let s1 = seal(&keys, &SCOPE, &borrowed(&first));
        let s2 = seal(&keys, &SCOPE, &borrowed(&second));
        let tag = |seal: &str, item: &str| {
            seal.rsplit(':')
                .next()
                .unwrap()
                .split(',')
                .find(|e| e.starts_with(&format!("{item}=")))
                .unwrap()
                .to_owned()
        };
        let head: Vec<&str> = s2.splitn(5, ':').collect();
        let spliced = format!(
            "v2:{}:{}:{}:{},{}",
            head[1],
            head[2],
            head[3],
            tag(&s1, "data/access_token"),
            tag(&s2, EXPIRES)
        );
        let values = vec![first[0].clone(), second[1].clone()];
        let check = check_with(&keys, &SCOPE, &spliced, &values);
        assert!(
            matches!(
                check,
                Check::Changed {
                    token_intact: false,
                    ..
                }
            ),
            "{check:?}"
        );
        // Only a rendered template changed: the token is intact (it may be re-rendered).
        let mut templated = first.clone();
        templated.push((data_item("Authorization"), b"Bearer tok-1".to_vec()));
        let with_template = Expected {
            always: vec![
                data_item("access_token"),
                EXPIRES.to_owned(),
                data_item("Authorization"),
            ],
            ..expected()
        };
        let sealed = super::seal(&keys, &SCOPE, &borrowed(&templated), &with_template.token);
        templated[2].1 = b"Bearer edited".to_vec();
        let outcome = super::check(&keys, &SCOPE, Some(&sealed), &with_template, |item| {
            templated
                .iter()
                .find(|(i, _)| i == item)
                .map(|(_, v)| v.as_slice())
        });
        assert_eq!(
            outcome,
            Check::Changed {
                items: vec!["data/Authorization".into()],
                token_intact: true
            }
        );
    }
}
