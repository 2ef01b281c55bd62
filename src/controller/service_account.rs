//! `ServiceAccountToken`, what the operator learns at start and the rule every request follows
//! (the tokens themselves are requested by the reconcile's inputs step,
//! [`crate::controller::reconcile`]).
//!
//! Before a TokenRequest (the ServiceAccount's opt-in was checked when it was read, see
//! [`crate::oauth::credentials::from_service_account`]), the audience is refused when the
//! Kubernetes API server itself accepts it: a token for such an audience would let the
//! identity provider, or anyone it hands the token to, act as the ServiceAccount towards the
//! cluster. Those audiences are the API server's issuer (from its
//! `/.well-known/openid-configuration`, see [`crate::controller::issuer`], which every ServiceAccount may read through the
//! default `system:service-account-issuer-discovery` binding) and the
//! `kubernetes.default.svc` forms; the API server's own audiences (`--api-audiences`, which
//! distributions extend), learned at start from a TokenRequest for the operator's own
//! ServiceAccount with no audience, which the server fills with them ([`learn_api_audiences`]);
//! and those given with `--refused-token-audiences`.

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use crate::base::Sensitive;

/// The in-cluster names of the API server, which it accepts as audiences.
pub const IN_CLUSTER_AUDIENCES: [&str; 2] = [
    "https://kubernetes.default.svc",
    "https://kubernetes.default.svc.cluster.local",
];

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
