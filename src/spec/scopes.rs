//! `spec.scopes`: each one a single scope.

use crate::api::crd::OAuthClientSpec;
use crate::api::reason::Failure;
use crate::spec::presets::Preset;

/// The scopes to request: the spec's (an empty list too), else the preset's; each must be one
/// scope without spaces or control characters.
pub fn scopes(spec: &OAuthClientSpec, preset: &Preset) -> Result<Vec<String>, Failure> {
    let scopes = spec
        .scopes
        .clone()
        .unwrap_or_else(|| preset.scopes.iter().map(|s| (*s).to_owned()).collect());
    for scope in &scopes {
        if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Failure::invalid_spec(format!(
                "spec.scopes: {scope:?} is not a single scope (no spaces; list each scope separately)"
            )));
        }
    }
    Ok(scopes)
}
