//! `spec.extraParams`: extra, non-secret body parameters.

use std::collections::BTreeMap;

use super::check_map;
use crate::api::crd::{MAX_NAME_LEN, OAuthClientSpec};
use crate::api::reason::Failure;

/// Body parameters that only the dedicated fields may set (compared after trimming, ASCII
/// case-folding and mapping `.`, spaces and `[` to `_`, since servers differ in how they read
/// names: PHP, for one, turns `grant.type` into `grant_type`).
pub const RESERVED_PARAMS: [&str; 12] = [
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "audience",
    "client_assertion",
    "client_assertion_type",
    // Token exchange (RFC 8693 section 2.1): set from spec.tokenExchange, or never.
    "subject_token",
    "subject_token_type",
    "requested_token_type",
    "actor_token",
    "actor_token_type",
];

/// A parameter name as the most lenient server reads it.
fn canonical(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            '.' | '[' => '_',
            c if c.is_whitespace() => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The extra parameters, bounded and without a reserved name.
pub fn extra_params(spec: &OAuthClientSpec) -> Result<BTreeMap<String, String>, Failure> {
    check_map("spec.extraParams", spec.extra_params.as_ref(), MAX_NAME_LEN)?;
    let extra_params = spec.extra_params.clone().unwrap_or_default();
    for name in extra_params.keys() {
        if RESERVED_PARAMS.contains(&canonical(name).as_str()) {
            return Err(Failure::invalid_spec(format!(
                "spec.extraParams may not set {name:?}: the operator sets it from the dedicated field, clientAuthMethod, spec.tokenExchange or the credentials Secret"
            )));
        }
        if name.is_empty() {
            return Err(Failure::invalid_spec("spec.extraParams has an empty name"));
        }
    }
    Ok(extra_params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_a_lenient_server_reads_as_reserved_are_reserved() {
        for name in [
            "grant.type",
            "client secret",
            " Client_Secret ",
            "SCOPE",
            "client[id",
            "Client_Assertion_Type",
        ] {
            assert!(
                RESERVED_PARAMS.contains(&canonical(name).as_str()),
                "{name}"
            );
        }
        assert_eq!(canonical("resource"), "resource");
    }
}
