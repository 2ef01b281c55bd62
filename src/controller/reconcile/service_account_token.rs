//! A fresh token of the client's ServiceAccount for every exchange (`ServiceAccountToken`), from
//! the TokenRequest API (`serviceaccounts/token`, create), never stored or logged; refused for
//! the audiences the API server accepts itself ([`crate::controller::service_account`]).

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

use super::error::Error;
use crate::api::reason::{Failure, Reason};
use crate::base::{Scrubber, Sensitive};
use crate::controller::context::Context;
use crate::controller::issuer::IssuerAnswer;
use crate::controller::service_account::accepted_by_the_api_server;
use crate::oauth::response::sanitise;
use crate::spec::ServiceAccountSettings;

/// What the TokenRequest came to.
#[derive(Debug)]
pub enum Requested {
    /// The ServiceAccount's token.
    Issued(Sensitive<String>),
    /// Refused (the audience is the API server's, or the API server refused the TokenRequest):
    /// nothing is sent to the token endpoint.
    Refused(Failure),
}

/// A new token of the ServiceAccount for the settings' audience and lifetime, unless the
/// audience is the API server's own or the TokenRequest is refused (`field`: where the spec
/// names the ServiceAccount, for messages).
pub async fn request(
    ctx: &Context,
    namespace: &str,
    settings: &ServiceAccountSettings,
    field: &str,
) -> Result<Requested, Error> {
    let answer = ctx.shared.issuer.get(&ctx.shared.kube).await;
    let issuer = match answer.map_err(Error::ReadIssuer)? {
        IssuerAnswer::Known(issuer) => issuer,
        IssuerAnswer::Refused(failure) => return Ok(Requested::Refused(failure)),
    };
    if accepted_by_the_api_server(&settings.audience, &issuer, &ctx.shared.refused_audiences) {
        return Ok(Requested::Refused(Failure::new(
            Reason::ServiceAccountTokenDenied,
            format!(
                "{field}.audience {} is accepted by the Kubernetes API server itself (its issuer, kubernetes.default.svc, its own audiences or --refused-token-audiences): a token for it would let the token endpoint act as ServiceAccount {} towards the cluster, so none is requested",
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
            .map_or_else(
                || Requested::Refused(refused(settings, "it returned no token")),
                |token| Requested::Issued(Sensitive::new(token)),
            ),
        Err(kube::Error::Api(e)) if e.code == 404 => Requested::Refused(Failure::new(
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
            Requested::Refused(refused(settings, &detail))
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
