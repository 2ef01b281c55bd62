//! `spec.extraParams`: extra, non-secret body parameters.

use std::collections::BTreeMap;

use super::check_map;
use crate::api::crd::{MAX_NAME_LEN, OAuthClientSpec};
use crate::api::reason::Failure;

/// Body parameters that only the dedicated fields may set (compared after trimming and ASCII
/// case-folding, since servers differ in how they read names).
pub const RESERVED_PARAMS: [&str; 7] = [
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "audience",
    "client_assertion",
    "client_assertion_type",
];

/// The extra parameters, bounded and without a reserved name.
pub fn extra_params(spec: &OAuthClientSpec) -> Result<BTreeMap<String, String>, Failure> {
    check_map("spec.extraParams", spec.extra_params.as_ref(), MAX_NAME_LEN)?;
    let extra_params = spec.extra_params.clone().unwrap_or_default();
    for name in extra_params.keys() {
        if RESERVED_PARAMS.contains(&name.trim().to_ascii_lowercase().as_str()) {
            return Err(Failure::invalid_spec(format!(
                "spec.extraParams may not set {name:?}: the operator sets it from the dedicated field, clientAuthMethod or the credentials Secret"
            )));
        }
        if name.is_empty() {
            return Err(Failure::invalid_spec("spec.extraParams has an empty name"));
        }
    }
    Ok(extra_params)
}
