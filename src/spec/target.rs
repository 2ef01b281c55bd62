//! `spec.target`: the managed Secret's name, type, labels, annotations and templates. The
//! managed Secret may never become a credential of the cluster.

use std::collections::BTreeMap;

use super::check_map;
use crate::api::crd::Target;
use crate::api::reason::Failure;
use crate::spec::template::{self, Template};

/// Keys the managed Secret always has; `target.template` may not reuse them.
pub const STANDARD_KEYS: [&str; 5] = [
    "access_token",
    "token_type",
    "expires_at",
    "scope",
    "issued_token_type",
];

/// Secret types the managed Secret may have. Every other built-in type either makes the Secret
/// something a Kubernetes component acts on (`kubernetes.io/service-account-token` is filled in
/// with a ServiceAccount token, `bootstrap.kubernetes.io/token` authenticates nodes,
/// `kubernetes.io/dockercfg` / `dockerconfigjson` are used by the kubelet to pull images) or
/// requires keys the operator does not write (`kubernetes.io/tls`, `basic-auth`, `ssh-auth`); a
/// custom type gains nothing and could acquire a meaning later.
pub const SECRET_TYPES: [&str; 1] = ["Opaque"];

/// Longest object name Kubernetes accepts (a DNS subdomain).
pub const MAX_OBJECT_NAME: usize = 253;

/// Checks `spec.target` and parses its templates.
pub fn templates(target: &Target) -> Result<BTreeMap<String, Template>, Failure> {
    check_target(target)?;
    check_map(
        "spec.target.template",
        target.template.as_ref(),
        MAX_OBJECT_NAME,
    )?;
    let templates = target.template.clone().unwrap_or_default();
    for key in templates.keys() {
        check_secret_key(key)?;
    }
    template::parse_all(&templates)
        .map_err(|(key, e)| Failure::invalid_spec(format!("spec.target.template.{key}: {e}")))
}

/// The managed Secret may never become a credential of the cluster: its type is from
/// [`SECRET_TYPES`], and its labels and annotations may not use keys reserved for Kubernetes
/// (`kubernetes.io/`, `k8s.io/` and their subdomains; the recommended `app.kubernetes.io/`
/// labels excepted) or this operator's own prefix (which would let a user forge the fingerprint
/// or the issue time).
fn check_target(target: &Target) -> Result<(), Failure> {
    if !SECRET_TYPES.contains(&target.type_.as_str()) {
        let shown: String = target.type_.chars().take(64).collect();
        return Err(Failure::invalid_spec(format!(
            "spec.target.type {shown:?} is not allowed (allowed: {}); a managed Secret must never become a credential of the cluster",
            SECRET_TYPES.join(", ")
        )));
    }
    if let Some(name) = &target.name {
        check_object_name("spec.target.name", name)?;
    }
    for (field, map, labels) in [
        ("spec.target.labels", target.labels.as_ref(), true),
        (
            "spec.target.annotations",
            target.annotations.as_ref(),
            false,
        ),
    ] {
        check_map(field, map, MAX_OBJECT_NAME + 64)?;
        for (key, value) in map.into_iter().flatten() {
            check_metadata_key(field, key, labels)?;
            if labels {
                check_label_value(field, key, value)?;
            }
        }
    }
    Ok(())
}

/// Whether a label or annotation key uses a prefix reserved for Kubernetes or this operator.
/// `app.kubernetes.io/` is allowed for labels (the recommended labels).
pub fn reserved_metadata_key(key: &str, label: bool) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    let prefix = prefix.to_ascii_lowercase();
    let under = |domain: &str| {
        prefix == domain
            || prefix
                .strip_suffix(domain)
                .is_some_and(|head| head.ends_with('.'))
    };
    if label && prefix == "app.kubernetes.io" {
        return false;
    }
    under("kubernetes.io") || under("k8s.io") || under(crate::api::crd::GROUP)
}

fn check_metadata_key(field: &str, key: &str, label: bool) -> Result<(), Failure> {
    let shown: String = key.chars().take(80).collect();
    if reserved_metadata_key(key, label) {
        let allowed = if label {
            " (only the recommended app.kubernetes.io/ labels are allowed)"
        } else {
            ""
        };
        return Err(Failure::invalid_spec(format!(
            "{field}: the key {shown:?} uses a prefix reserved for Kubernetes (kubernetes.io/, k8s.io/ and their subdomains) or for this operator ({}/){allowed}",
            crate::api::crd::GROUP
        )));
    }
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| dns_subdomain(p) && p.len() <= MAX_OBJECT_NAME);
    if !prefix_ok || !label_name(name) {
        return Err(Failure::invalid_spec(format!(
            "{field}: {shown:?} is not a valid key (an optional DNS-subdomain prefix and '/', then 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        )));
    }
    Ok(())
}

fn check_label_value(field: &str, key: &str, value: &str) -> Result<(), Failure> {
    if !(value.is_empty() || label_name(value)) {
        let shown: String = key.chars().take(80).collect();
        return Err(Failure::invalid_spec(format!(
            "{field}.{shown}: a label value is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )));
    }
    Ok(())
}

/// A label value or the name part of a qualified name: 1 to 63 characters `[A-Za-z0-9_.-]`,
/// starting and ending alphanumeric.
pub fn label_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
}

/// A DNS subdomain as Kubernetes checks it (`IsDNS1123Subdomain`): at most 253 characters,
/// lowercase parts of letters, digits and '-', separated by '.' (no per-part length limit).
pub fn dns_subdomain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_OBJECT_NAME
        && text.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Checks the name of an object the operator writes (the managed Secret).
pub fn check_object_name(field: &str, name: &str) -> Result<(), Failure> {
    check_reference_name(field, "Secret", name)
}

/// Checks a name the operator puts in an API path (`kind`: what it names, for the message):
/// a DNS subdomain, so that no name can reach another path (`..`, `/`, `%2F`, `?`).
pub fn check_reference_name(field: &str, kind: &str, name: &str) -> Result<(), Failure> {
    if dns_subdomain(name) {
        return Ok(());
    }
    let shown: String = name.chars().take(80).collect();
    Err(Failure::invalid_spec(format!(
        "{field} {shown:?} ({} characters) is not a valid {kind} name: at most {MAX_OBJECT_NAME} lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        name.chars().count()
    )))
}

/// Whether `key` is a valid Secret data key: 1 to 253 letters, digits, '-', '_' and '.'.
pub fn secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn check_secret_key(key: &str) -> Result<(), Failure> {
    if !secret_key(key) {
        return Err(Failure::invalid_spec(format!(
            "spec.target.template: {key:?} is not a valid Secret key (letters, digits, '-', '_', '.')"
        )));
    }
    if STANDARD_KEYS.contains(&key) {
        return Err(Failure::invalid_spec(format!(
            "spec.target.template may not redefine the standard key {key}"
        )));
    }
    Ok(())
}
