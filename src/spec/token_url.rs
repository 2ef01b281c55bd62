//! `spec.tokenUrl`: where credentials are sent.

use url::Url;

use super::Policy;
use crate::api::crd::OAuthClientSpec;
use crate::api::reason::Failure;
use crate::spec::presets::Preset;

/// The token URL: the spec's, else the preset's fixed one, checked.
pub fn token_url(spec: &OAuthClientSpec, preset: &Preset, policy: &Policy) -> Result<Url, Failure> {
    let text = spec
        .token_url
        .as_deref()
        .or(preset.token_url)
        .ok_or_else(|| {
            Failure::invalid_spec(format!(
                "spec.tokenUrl is required for provider {}",
                spec.provider.as_str()
            ))
        })?;
    check_token_url(text, policy)
}

/// Checks a token URL against the policy: an absolute https URL (http only when allowed),
/// with a host and without credentials in it, that the token URL policy allows.
pub fn check_token_url(text: &str, policy: &Policy) -> Result<Url, Failure> {
    let url = Url::parse(text)
        .map_err(|e| Failure::invalid_spec(format!("spec.tokenUrl is not a valid URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_insecure_http => {}
        "http" => {
            return Err(Failure::invalid_spec(
                "spec.tokenUrl uses http://, which sends credentials in clear text; use https:// (or run the operator with --allow-insecure-http for testing)",
            ));
        }
        other => {
            return Err(Failure::invalid_spec(format!(
                "spec.tokenUrl must be an https:// URL, not {other}:"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Failure::invalid_spec("spec.tokenUrl has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Failure::invalid_spec(
            "spec.tokenUrl may not carry user:password; put credentials in the credentials Secret",
        ));
    }
    policy.token_urls.check_url(&url)?;
    Ok(url)
}
