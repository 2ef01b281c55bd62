//! `spec.refresh`: when to refresh, and the lifetime assumed when the endpoint does not say.

use std::time::Duration;

use super::RefreshSettings;
use crate::api::crd::Refresh;
use crate::api::reason::Failure;
use crate::spec::duration;

/// `refresh.defaultLifetime`, at least one second.
pub fn default_lifetime(refresh: &Refresh) -> Result<Duration, Failure> {
    let lifetime = duration::parse(&refresh.default_lifetime)
        .map_err(|e| Failure::invalid_spec(format!("spec.refresh.defaultLifetime: {e}")))?;
    if lifetime < Duration::from_secs(1) {
        return Err(Failure::invalid_spec(
            "spec.refresh.defaultLifetime must be at least 1s",
        ));
    }
    Ok(lifetime)
}

/// `refresh.renewBefore` and `refresh.renewBeforePercentage` (1 to 90).
pub fn settings(refresh: &Refresh) -> Result<RefreshSettings, Failure> {
    let renew_before = refresh
        .renew_before
        .as_deref()
        .map(duration::parse)
        .transpose()
        .map_err(|e| Failure::invalid_spec(format!("spec.refresh.renewBefore: {e}")))?;
    let percentage = refresh.renew_before_percentage;
    let percentage = u8::try_from(percentage)
        .ok()
        .filter(|p| (1..=90).contains(p))
        .ok_or_else(|| {
            Failure::invalid_spec(format!(
                "spec.refresh.renewBeforePercentage must be between 1 and 90, not {percentage}"
            ))
        })?;
    Ok(RefreshSettings {
        renew_before,
        renew_before_percentage: percentage,
    })
}
