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
//! `kubernetes.default.svc` forms; the API server's own audiences (`--api-audiences`, which
//! distributions extend), learned at start from a TokenRequest for the operator's own
//! ServiceAccount with no audience, which the server fills with them ([`learn_api_audiences`]);
//! and those given with `--refused-token-audiences`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
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

/// Whether the API server accepts `audience`: its issuer, an in-cluster name, or one of
/// `refused` (its audiences as learned at start, and `--refused-token-audiences`); compared
/// without letter case and a trailing `/`, to refuse near spellings too.
pub fn accepted_by_the_api_server(audience: &str, issuer: &str, refused: &[String]) -> bool {
    let normal = |a: &str| a.trim().trim_end_matches('/').to_ascii_lowercase();
    let audience = normal(audience);
    std::iter::once(issuer)
        .chain(IN_CLUSTER_AUDIENCES)
        .chain(refused.iter().map(String::as_str))
        .any(|accepted| normal(accepted) == audience)
}

/// The operator's own ServiceAccount (namespace, name), as the API server names the identity
/// of its credentials (a SelfSubjectReview, which every authenticated user may create); `None`
/// when it runs as something else (a user's kubeconfig).
pub async fn own_service_account(
    client: &kube::Client,
) -> Result<Option<(String, String)>, kube::Error> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    Ok(username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, name)| (ns.to_owned(), name.to_owned())))
}

/// The API server's own audiences (those it accepts as its own tokens'): a TokenRequest for the
/// ServiceAccount `namespace/name` with no audience is filled with them. The token itself is
/// dropped unused.
pub async fn learn_api_audiences(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<String>, kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(600),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let answer = api
        .create_token_request(name, &PostParams::default(), &request)
        .await?;
    let mut audiences = answer.spec.audiences;
    if audiences.is_empty() {
        // An API server that does not echo them: the token's own `aud` (not verified: it comes
        // straight from the server).
        let token = answer.status.map(|s| Sensitive::new(s.token));
        audiences = token
            .as_ref()
            .map(|t| token_audiences(t.expose()))
            .unwrap_or_default();
    }
    Ok(audiences)
}

/// The `aud` claim of a JWT, unverified.
fn token_audiences(jwt: &str) -> Vec<String> {
    use base64::Engine as _;
    let claims = jwt
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    match &claims["aud"] {
        serde_json::Value::String(a) => vec![a.clone()],
        serde_json::Value::Array(list) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
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
    if accepted_by_the_api_server(&settings.audience, &issuer, &ctx.shared.refused_audiences) {
        return Ok(Err(Failure::new(
            Reason::ServiceAccountTokenDenied,
            format!(
                "spec.serviceAccountToken.audience {} is accepted by the Kubernetes API server itself (its issuer, kubernetes.default.svc, its own audiences or --refused-token-audiences): a token for it would let the token endpoint act as ServiceAccount {} towards the cluster, so none is requested",
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
            assert!(
                accepted_by_the_api_server(audience, issuer, &[]),
                "{audience}"
            );
        }
        for audience in [
            "api://AzureADTokenExchange",
            "https://oidc.example/cluster-2",
            "https://kubernetes.default.svc.example",
            "sts.amazonaws.com",
        ] {
            assert!(
                !accepted_by_the_api_server(audience, issuer, &[]),
                "{audience}"
            );
        }
        // Learned or configured audiences are refused too.
        let learned = [
            "https://api.cluster-1.example".to_owned(),
            "vault".to_owned(),
        ];
        for audience in ["https://api.cluster-1.example/", "VAULT", "vault"] {
            assert!(
                accepted_by_the_api_server(audience, issuer, &learned),
                "{audience}"
            );
        }
        assert!(!accepted_by_the_api_server("vaults", issuer, &learned));
    }
}
