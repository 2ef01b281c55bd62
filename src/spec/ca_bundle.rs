//! `spec.caBundleRef`: the token endpoint's own trust anchors, in the OAuthClient's namespace.
//!
//! Only the reference is checked here (pure); the bundle itself is read when an exchange needs
//! it ([`crate::oauth::transport::trust::from_object`]).

use crate::api::crd::{CaBundleRef, OAuthClientSpec};
use crate::api::reason::Failure;
use crate::spec::target::check_reference_name;

/// The reference, checked: no namespace, a valid object name and key.
pub fn ca_bundle(spec: &OAuthClientSpec) -> Result<Option<CaBundleRef>, Failure> {
    let Some(reference) = &spec.ca_bundle_ref else {
        return Ok(None);
    };
    if reference.namespace.is_some() {
        return Err(Failure::invalid_spec(
            "spec.caBundleRef.namespace is not allowed: the bundle is read only from the OAuthClient's own namespace",
        ));
    }
    let kind = match reference.kind {
        crate::api::crd::CaBundleKind::ConfigMap => "ConfigMap",
        crate::api::crd::CaBundleKind::Secret => "Secret",
    };
    check_reference_name("spec.caBundleRef.name", kind, &reference.name)?;
    let key = &reference.key;
    let valid_key = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid_key {
        let shown: String = key.chars().take(80).collect();
        return Err(Failure::invalid_spec(format!(
            "spec.caBundleRef.key {shown:?} is not a valid key (letters, digits, '-', '_' and '.', at most 253)"
        )));
    }
    Ok(Some(reference.clone()))
}
