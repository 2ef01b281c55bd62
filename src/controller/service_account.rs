//! `ServiceAccountToken`: a fresh token of the client's ServiceAccount for every exchange, from
//! the TokenRequest API (`serviceaccounts/token`, create), never stored or logged.
//!
//! Before the request (the ServiceAccount's opt-in was checked when it was read, see
//! [`crate::oauth::credentials::from_service_account`]), the audience is refused when the
//! Kubernetes API server itself accepts it: a token for such an audience would let the
//! identity provider, or anyone it hands the token to, act as the ServiceAccount towards the
//! cluster. Those audiences are the API server's issuer (from its
//! `/.well-known/openid-configuration`, which every ServiceAccount may read through the
//! default `system:service-account-issuer-discovery` binding) and the
//! `kubernetes.default.svc` forms.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use super::context::Context;
use super::reconcile::Error;
use crate::api::reason::{Failure, Reason};
use crate::oauth::response::sanitise;
use crate::output::redact::{Scrubber, Sensitive};
use crate::spec::ServiceAccountSettings;

/// The in-cluster names of the API server, which it accepts as audiences.
pub const IN_CLUSTER_AUDIENCES: [&str; 2] = [
    "https://kubernetes.default.svc",
    "https://kubernetes.default.svc.cluster.local",
];

/// The discovery document's path.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// How long the issuer read from the discovery document is kept.
const ISSUER_TTL: Duration = Duration::from_secs(600);

/// The API server's issuer, as last read.
#[derive(Debug, Default)]
pub struct Issuer {
    cached: Mutex<Option<(String, Instant)>>,
}

impl Issuer {
    /// The issuer: the one read less than [`ISSUER_TTL`] ago, or a new reading. `Ok(Err(_))`:
    /// the API server refused to tell (no token can be requested, since the audience cannot
    /// be checked).
    async fn get(&self, ctx: &Context) -> Result<Result<String, Failure>, Error> {
        if let Some((issuer, at)) = self.cached.lock().expect("issuer lock").clone()
            && at.elapsed() < ISSUER_TTL
        {
            return Ok(Ok(issuer));
        }
        let request = http::Request::get(DISCOVERY_PATH)
            .body(Vec::new())
            .expect("a static request is valid");
        let text = match ctx.shared.kube.request_text(request).await {
            Ok(text) => text,
            Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                return Ok(Err(unknown_issuer(&format!("HTTP {}", e.code))));
            }
            Err(e) => return Err(Error::ReadIssuer(e)),
        };
        let issuer = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["issuer"].as_str().map(str::to_owned))
            .filter(|i| !i.is_empty());
        let Some(issuer) = issuer else {
            return Ok(Err(unknown_issuer("the document names no issuer")));
        };
        *self.cached.lock().expect("issuer lock") = Some((issuer.clone(), Instant::now()));
        Ok(Ok(issuer))
    }
}

fn unknown_issuer(why: &str) -> Failure {
    Failure::new(
        Reason::ServiceAccountTokenDenied,
        format!(
            "cannot read the API server's issuer from {DISCOVERY_PATH} ({why}), so the audience cannot be checked against it; no ServiceAccount token is requested"
        ),
    )
}

/// Whether the API server accepts `audience` (its issuer or an in-cluster name; compared
/// without letter case and a trailing `/`, to refuse near spellings too).
pub fn accepted_by_the_api_server(audience: &str, issuer: &str) -> bool {
    let normal = |a: &str| a.trim().trim_end_matches('/').to_ascii_lowercase();
    let audience = normal(audience);
    std::iter::once(issuer)
        .chain(IN_CLUSTER_AUDIENCES)
        .any(|accepted| normal(accepted) == audience)
}

/// A new token of the ServiceAccount for the settings' audience and lifetime. `Ok(Err(_))`:
/// refused (the audience is the API server's, or the TokenRequest was refused), and nothing
/// was sent to the token endpoint.
pub async fn token(
    ctx: &Context,
    namespace: &str,
    settings: &ServiceAccountSettings,
) -> Result<Result<Sensitive<String>, Failure>, Error> {
    let issuer = match ctx.shared.issuer.get(ctx).await? {
        Ok(issuer) => issuer,
        Err(failure) => return Ok(Err(failure)),
    };
    if accepted_by_the_api_server(&settings.audience, &issuer) {
        return Ok(Err(Failure::new(
            Reason::ServiceAccountTokenDenied,
            format!(
                "spec.serviceAccountToken.audience {} is accepted by the Kubernetes API server itself (its issuer, or kubernetes.default.svc): a token for it would let the token endpoint act as ServiceAccount {} towards the cluster, so none is requested",
                settings.audience, settings.name
            ),
        )));
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![settings.audience.clone()],
            expiration_seconds: Some(settings.expiration_seconds),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    tracing::debug!(
        service_account = settings.name,
        audience = settings.audience,
        expiration_seconds = settings.expiration_seconds,
        "requesting a ServiceAccount token"
    );
    let answer = api
        .create_token_request(&settings.name, &PostParams::default(), &request)
        .await;
    Ok(match answer {
        Ok(answer) => answer
            .status
            .map(|status| status.token)
            .filter(|token| !token.is_empty())
            .map(Sensitive::new)
            .ok_or_else(|| refused(settings, "it returned no token")),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(Failure::new(
            Reason::CredentialsNotFound,
            format!(
                "ServiceAccount {} not found in namespace {namespace}",
                settings.name
            ),
        )),
        Err(kube::Error::Api(e))
            if (400..500).contains(&e.code) && !matches!(e.code, 409 | 429) =>
        {
            let detail = sanitise(&e.message, &Scrubber::none())
                .unwrap_or_else(|| format!("HTTP {}", e.code));
            Err(refused(settings, &detail))
        }
        Err(e) => return Err(Error::RequestToken(e)),
    })
}

fn refused(settings: &ServiceAccountSettings, why: &str) -> Failure {
    Failure::new(
        Reason::ServiceAccountTokenDenied,
        format!(
            "the API server refused the TokenRequest for ServiceAccount {}: {why} (does the operator's RBAC grant create on serviceaccounts/token?)",
            settings.name
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_servers_own_audiences_are_refused_in_any_spelling() {
        let issuer = "https://oidc.example/cluster-1";
        for audience in [
            issuer,
            "https://oidc.example/cluster-1/",
            "HTTPS://OIDC.example/cluster-1",
            "https://kubernetes.default.svc",
            "https://kubernetes.default.svc/",
            "https://kubernetes.default.svc.cluster.local",
            " https://Kubernetes.Default.Svc.cluster.local ",
        ] {
            assert!(accepted_by_the_api_server(audience, issuer), "{audience}");
        }
        for audience in [
            "api://AzureADTokenExchange",
            "https://oidc.example/cluster-2",
            "https://kubernetes.default.svc.example",
            "sts.amazonaws.com",
        ] {
            assert!(!accepted_by_the_api_server(audience, issuer), "{audience}");
        }
    }
}
