//! The managed Secret: its name, labels, annotations, owner and content, built from a token
//! (pure).

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::crd::{OAuthClient, Target};
use crate::api::keys::{
    CLIENT_LABEL, EXPIRES_AT_ANNOTATION, FINGERPRINT_ANNOTATION, ISSUED_AT_ANNOTATION,
    MAC_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, TARGET_HASH_ANNOTATION,
};
use crate::base::Sensitive;
use crate::base::time::rfc3339;
use crate::oauth::response::Token;
use crate::output::mac::{self, Check, Scope, SealKeys};
use crate::spec::template::{Template, Values};

/// The managed Secret's name: `spec.target.name`, else `<name>-token`.
pub fn target_name(client: &OAuthClient) -> String {
    client
        .spec
        .target
        .as_ref()
        .and_then(|t| t.name.clone())
        .unwrap_or_else(|| format!("{}-token", client.name_any()))
}

/// Longest label value Kubernetes accepts.
pub const MAX_LABEL_VALUE: usize = 63;

/// The value of [`CLIENT_LABEL`](crate::api::keys::CLIENT_LABEL) for an OAuthClient name: the name itself when it fits a label
/// value (63 characters), else its first 52 characters (without a trailing '-' or '.'), '-' and
/// the first 10 hex digits of the name's SHA-256. Either way
/// `kubectl get secret -l oauth.token-operator.dev/client=<value>` selects the Secret.
pub fn client_label_value(name: &str) -> String {
    shorten(name, MAX_LABEL_VALUE)
}

/// `text` when it is at most `max` bytes, else a prefix of it, '-' and 10 hex digits of its
/// SHA-256, `max` bytes in all, ending in a letter or digit. The prefix keeps it readable; the hash
/// keeps distinct names distinct.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let digest = Sha256::digest(text.as_bytes());
    let hash: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
    let keep = max.saturating_sub(hash.len() + 1);
    let mut prefix: String = text.chars().take_while(char::is_ascii).take(keep).collect();
    while prefix.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        prefix.pop();
    }
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// Largest rendered managed Secret (all keys and values, templates included): 256 KiB.
pub const MAX_SECRET_SIZE: usize = 256 * 1024;

/// Checks, without rendering, that the Secret for `token` stays within [`MAX_SECRET_SIZE`]:
/// a template repeating `{{ access_token }}` could otherwise make it hundreds of megabytes.
pub fn check_size(
    token: &Token,
    templates: &BTreeMap<String, Template>,
) -> Result<(), crate::api::reason::Failure> {
    let expires_at = rfc3339(token.expires_at);
    let scope = token.scope.clone().unwrap_or_default();
    let values = Values {
        access_token: token.access_token.expose(),
        token_type: &token.token_type,
        expires_at: &expires_at,
        scope: &scope,
    };
    let standard = "access_token".len()
        + values.access_token.len()
        + "token_type".len()
        + values.token_type.len()
        + "expires_at".len()
        + expires_at.len()
        + token.scope.as_ref().map_or(0, |s| "scope".len() + s.len())
        + token
            .issued_token_type
            .as_ref()
            .map_or(0, |t| "issued_token_type".len() + t.len());
    let mut total = standard;
    let mut largest: Vec<(usize, &str)> = Vec::new();
    for (key, template) in templates {
        let size = key.len().saturating_add(template.rendered_len(&values));
        total = total.saturating_add(size);
        largest.push((size, key));
    }
    if total <= MAX_SECRET_SIZE {
        return Ok(());
    }
    largest.sort_unstable_by(|a, b| b.cmp(a));
    let named: Vec<String> = largest
        .iter()
        .take(3)
        .map(|(size, key)| format!("{key} ({size} bytes)"))
        .collect();
    Err(crate::api::reason::Failure::invalid_spec(format!(
        "spec.target.template: the managed Secret would be {total} bytes with this token ({}-byte access token), more than the {} KiB allowed; largest keys: {}",
        values.access_token.len(),
        MAX_SECRET_SIZE / 1024,
        named.join(", ")
    )))
}

/// A hash of the target settings, to notice when the Secret must be re-rendered.
pub fn target_hash(target: &Target) -> String {
    let canonical = json!({
        "type": target.type_,
        "labels": target.labels,
        "annotations": target.annotations,
        "template": target.template,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The controller ownerReference to `client`.
pub fn owner_reference(client: &OAuthClient) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/{}", crate::api::crd::GROUP, crate::api::crd::VERSION),
        kind: "OAuthClient".into(),
        name: client.name_any(),
        uid: client.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `secret_owner_refs` name `client` as controller.
pub fn controlled_by(owner_refs: &[OwnerReference], client: &OAuthClient) -> bool {
    let uid = client.uid();
    owner_refs
        .iter()
        .any(|r| r.controller == Some(true) && Some(&r.uid) == uid.as_ref())
}

/// The annotations the seal covers, besides the data keys.
const SEALED_ANNOTATIONS: [&str; 4] = [
    ISSUED_AT_ANNOTATION,
    EXPIRES_AT_ANNOTATION,
    FINGERPRINT_ANNOTATION,
    TARGET_HASH_ANNOTATION,
];

/// The labels the operator sets on the managed Secret.
fn labels(client: &OAuthClient, target: &Target) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = target.labels.clone().unwrap_or_default();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels.insert(CLIENT_LABEL.into(), client_label_value(&client.name_any()));
    labels
}

/// The Secret to apply for `token`: only the fields this operator owns, sealed with `keys`.
pub fn managed_secret(
    client: &OAuthClient,
    token: &Token,
    templates: &BTreeMap<String, Template>,
    fingerprint: &str,
    keys: &SealKeys,
) -> Value {
    let target = client.spec.target.clone().unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = target.annotations.clone().unwrap_or_default();
    annotations.insert(ISSUED_AT_ANNOTATION.into(), rfc3339(token.issued_at));
    annotations.insert(EXPIRES_AT_ANNOTATION.into(), rfc3339(token.expires_at));
    annotations.insert(FINGERPRINT_ANNOTATION.into(), fingerprint.into());
    annotations.insert(TARGET_HASH_ANNOTATION.into(), target_hash(&target));
    let entries = token_entries(token, templates);
    let name = target_name(client);
    let namespace = client.namespace().unwrap_or_default();
    let uid = client.uid().unwrap_or_default();
    let scope = Scope {
        namespace: &namespace,
        name: &name,
        owner_uid: &uid,
    };
    let mut items: Vec<mac::Item<'_>> = entries
        .iter()
        .map(|e| (mac::data_item(&e.key), e.value.expose().as_bytes()))
        .collect();
    items.extend(SEALED_ANNOTATIONS.iter().map(|a| {
        let value = annotations.get(*a).map_or(&[][..], |v| v.as_bytes());
        ((*a).to_owned(), value)
    }));
    let seal = mac::seal(keys, &scope, &items, &token_items());
    annotations.insert(MAC_ANNOTATION.into(), seal);
    let data: BTreeMap<&str, String> = entries
        .iter()
        .map(|e| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(e.value.expose());
            (e.key.as_str(), encoded)
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(client, &target),
            "annotations": annotations,
            "ownerReferences": [owner_reference(client)],
        },
        "type": target.type_,
        "data": data,
    })
}

/// Data keys every token has.
const ALWAYS_KEYS: [&str; 3] = ["access_token", "token_type", "expires_at"];

/// Data keys only some tokens have (written when the endpoint said).
const SOMETIMES_KEYS: [&str; 2] = ["scope", "issued_token_type"];

/// The items the operator writes into `client`'s managed Secret, which its seal must cover:
/// every data key (the standard ones, and each `target.template` key of the spec) and the
/// sealed annotations; `scope` only when the token has one. The seal's own list is never the
/// authority on this.
pub fn expected_items(client: &OAuthClient) -> mac::Expected {
    let templates = client
        .spec
        .target
        .as_ref()
        .and_then(|t| t.template.as_ref())
        .map(|t| t.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    let always = ALWAYS_KEYS
        .iter()
        .map(|k| mac::data_item(k))
        .chain(templates.iter().map(|k| mac::data_item(k)))
        .chain(SEALED_ANNOTATIONS.iter().map(|a| (*a).to_owned()))
        .collect();
    mac::Expected {
        always,
        sometimes: SOMETIMES_KEYS.iter().map(|k| mac::data_item(k)).collect(),
        token: token_items(),
    }
}

/// The token's items, sealed together as a group: what a re-rendering may trust while only
/// template keys or metadata changed.
fn token_items() -> Vec<String> {
    ALWAYS_KEYS
        .iter()
        .chain(&SOMETIMES_KEYS)
        .map(|k| mac::data_item(k))
        .chain(
            [
                ISSUED_AT_ANNOTATION,
                EXPIRES_AT_ANNOTATION,
                FINGERPRINT_ANNOTATION,
            ]
            .iter()
            .map(|a| (*a).to_owned()),
        )
        .collect()
}

/// Checks the seal of a managed Secret as read: are its operator-written data and annotations
/// as the operator wrote them, for this OAuthClient, and does the seal cover every item the
/// operator writes for its current spec?
pub fn check_seal(secret: &Secret, client: &OAuthClient, keys: &SealKeys) -> Check {
    let annotations = secret.metadata.annotations.as_ref();
    let data = secret.data.as_ref();
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
    let uid = client.uid().unwrap_or_default();
    let scope = Scope {
        namespace,
        name,
        owner_uid: &uid,
    };
    let seal = annotations
        .and_then(|a| a.get(MAC_ANNOTATION))
        .map(String::as_str);
    mac::check(
        keys,
        &scope,
        seal,
        &expected_items(client),
        |item| match item.strip_prefix("data/") {
            Some(key) => data.and_then(|d| d.get(key)).map(|v| v.0.as_slice()),
            None => annotations.and_then(|a| a.get(item)).map(|v| v.as_bytes()),
        },
    )
}

/// What of the managed Secret's metadata the operator owns and finds changed: its labels, the
/// annotations of `target.annotations`, the controller ownerReference (the sealed items are
/// checked by [`check_seal`]).
pub fn drift(secret: &Secret, client: &OAuthClient) -> Vec<String> {
    let target = client.spec.target.clone().unwrap_or_default();
    let mut changed = Vec::new();
    let have_labels = secret.metadata.labels.clone().unwrap_or_default();
    for (key, value) in labels(client, &target) {
        if have_labels.get(&key) != Some(&value) {
            changed.push(format!("label {key}"));
        }
    }
    let have_annotations = secret.metadata.annotations.clone().unwrap_or_default();
    for (key, value) in target.annotations.clone().unwrap_or_default() {
        if have_annotations.get(&key) != Some(&value) {
            changed.push(format!("annotation {key}"));
        }
    }
    let refs = secret.metadata.owner_references.clone().unwrap_or_default();
    if !controlled_by(&refs, client) {
        changed.push("ownerReference".to_owned());
    }
    changed
}

/// Reads the token back from a managed Secret's data and annotations (for re-rendering).
pub fn stored_token(secret: &Secret) -> Option<Token> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let annotations = secret.metadata.annotations.as_ref()?;
    let time = |key: &str| annotations.get(key).and_then(|t| t.parse().ok());
    Some(Token {
        access_token: Sensitive::new(text("access_token")?),
        token_type: text("token_type").unwrap_or_else(|| "Bearer".into()),
        scope: text("scope"),
        issued_token_type: text("issued_token_type"),
        issued_at: time(ISSUED_AT_ANNOTATION)?,
        expires_at: time(EXPIRES_AT_ANNOTATION)?,
        lifetime_source: crate::oauth::response::LifetimeSource::ExpiresIn,
        vendor_issued_at: None,
    })
}

/// One key of the managed Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The Secret key.
    pub key: String,
    /// The value (sensitive: it may hold the token).
    pub value: Sensitive<String>,
    /// Whether the value contains the access token.
    pub holds_token: bool,
}

/// The Secret keys for a token: `access_token`, `token_type`, `expires_at`, `scope` (when
/// known) and the rendered `target.template` keys, in that order.
pub fn token_entries(token: &Token, templates: &BTreeMap<String, Template>) -> Vec<Entry> {
    let expires_at = rfc3339(token.expires_at);
    let scope = token.scope.clone().unwrap_or_default();
    let plain = |key: &str, value: &str| Entry {
        key: key.to_owned(),
        value: Sensitive::new(value.to_owned()),
        holds_token: false,
    };
    let mut entries = vec![
        Entry {
            key: "access_token".into(),
            value: token.access_token.clone(),
            holds_token: true,
        },
        plain("token_type", &token.token_type),
        plain("expires_at", &expires_at),
    ];
    if token.scope.is_some() {
        entries.push(plain("scope", &scope));
    }
    if let Some(issued) = &token.issued_token_type {
        entries.push(plain("issued_token_type", issued));
    }
    let values = Values {
        access_token: token.access_token.expose(),
        token_type: &token.token_type,
        expires_at: &expires_at,
        scope: &scope,
    };
    for (key, template) in templates {
        entries.push(Entry {
            key: key.clone(),
            value: Sensitive::new(template.render(&values)),
            holds_token: template.uses_access_token(),
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::response::LifetimeSource;
    use jiff::Timestamp;

    fn token(scope: Option<&str>) -> Token {
        Token {
            access_token: Sensitive::from("tok-123"),
            token_type: "Bearer".into(),
            scope: scope.map(str::to_owned),
            issued_at: Timestamp::from_second(1_700_000_000).unwrap(),
            expires_at: Timestamp::from_second(1_700_003_600).unwrap(),
            lifetime_source: LifetimeSource::ExpiresIn,
            vendor_issued_at: None,
            issued_token_type: None,
        }
    }

    #[test]
    fn standard_keys_then_templates() {
        let templates = crate::spec::template::parse_all(
            &[
                (
                    "Authorization".to_owned(),
                    "Bearer {{ access_token }}".to_owned(),
                ),
                ("until".to_owned(), "{{ expires_at }}".to_owned()),
            ]
            .into(),
        )
        .unwrap();
        let entries = token_entries(&token(Some("a b")), &templates);
        let view: Vec<_> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.expose().as_str(), e.holds_token))
            .collect();
        assert_eq!(
            view,
            [
                ("access_token", "tok-123", true),
                ("token_type", "Bearer", false),
                ("expires_at", "2023-11-14T23:13:20Z", false),
                ("scope", "a b", false),
                ("Authorization", "Bearer tok-123", true),
                ("until", "2023-11-14T23:13:20Z", false),
            ]
        );
    }

    #[test]
    fn scope_key_only_when_known() {
        let entries = token_entries(&token(None), &BTreeMap::new());
        assert!(entries.iter().all(|e| e.key != "scope"));
    }
}
