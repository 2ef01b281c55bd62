//! Reading a client's credentials: the credentials Secret with one GET (Secret data is never
//! cached), or the ServiceAccount's metadata (ServiceAccountToken, only when the operator may
//! request its tokens). Used by the observe step when it must compare them, and by the inputs
//! step otherwise.

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::Api;

use super::error::Error;
use crate::api::crd::{ClientAuthMethod, OAuthClient};
use crate::api::reason::Failure;
use crate::controller::context::Context;
use crate::oauth::credentials::{self, Credentials};
use crate::output::fingerprint;
use crate::spec::ClientSettings;

/// The credentials as read, and the resourceVersion of the object they were read from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// resourceVersion of the credentials Secret or ServiceAccount (None: it does not exist).
    pub resource_version: Option<String>,
    /// The credentials, or why they cannot be used.
    pub credentials: Result<Credentials, Failure>,
}

impl Loaded {
    /// The keyed digest of the credentials, or of why they could not be used (a Secret that
    /// appears, or gains its missing key, is a change).
    pub fn digest(&self, key: &[u8; 32]) -> [u8; 32] {
        match &self.credentials {
            Ok(credentials) => fingerprint::credentials_digest(key, credentials),
            Err(failure) => fingerprint::keyed_digest(key, failure.message.as_bytes()),
        }
    }

    fn unusable(failure: Failure) -> Loaded {
        Loaded {
            resource_version: None,
            credentials: Err(failure),
        }
    }
}

/// Where a client's credentials come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source<'a> {
    /// The credentials Secret.
    Secret(&'a str),
    /// The ServiceAccount (ServiceAccountToken).
    ServiceAccount(&'a str),
    /// Nowhere the spec names (an unusable spec).
    None,
}

/// Where the credentials of `client` come from.
pub fn source(client: &OAuthClient) -> Source<'_> {
    let spec = &client.spec;
    if spec.client_auth_method == Some(ClientAuthMethod::ServiceAccountToken) {
        return spec
            .service_account_token
            .as_ref()
            .map_or(Source::None, |s| {
                Source::ServiceAccount(&s.service_account_name)
            });
    }
    spec.credentials_secret_ref
        .as_ref()
        .map_or(Source::None, |r| Source::Secret(&r.name))
}

/// Reads the credentials with one GET.
pub async fn read(client: &OAuthClient, ctx: &Context) -> Result<Loaded, Error> {
    let namespace = client.namespace().unwrap_or_default();
    let name = match source(client) {
        Source::Secret(name) => name,
        Source::ServiceAccount(name) if ctx.shared.policy.allow_service_account_tokens => {
            return read_service_account(client, ctx, &namespace, name).await;
        }
        Source::ServiceAccount(_) | Source::None => {
            // The spec is unusable; resolving it says why.
            let failure = ClientSettings::resolve(&client.spec, &ctx.shared.policy)
                .err()
                .unwrap_or_else(|| Failure::invalid_spec("the spec names no credentials"));
            return Ok(Loaded::unusable(failure));
        }
    };
    // A name that is not one never reaches the request path.
    if let Err(failure) =
        crate::spec::check_reference_name("spec.credentialsSecretRef.name", "Secret", name)
    {
        return Ok(Loaded::unusable(failure));
    }
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), &namespace);
    let secret = api.get_opt(name).await.map_err(Error::ReadCredentials)?;
    let data = secret.as_ref().map(|s| s.data.clone().unwrap_or_default());
    Ok(Loaded {
        resource_version: secret.as_ref().and_then(|s| s.resource_version()),
        credentials: credentials::from_secret(
            &client.spec,
            &namespace,
            data.as_ref().map(|d| d as &dyn credentials::SecretData),
        ),
    })
}

/// Reads the ServiceAccount's metadata with one GET: whether it exists and opted in to the
/// audience (its annotation).
async fn read_service_account(
    client: &OAuthClient,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Loaded, Error> {
    // The spec (the ServiceAccount's name among it) is checked before its name reaches a path.
    let settings = match ClientSettings::resolve(&client.spec, &ctx.shared.policy) {
        Ok(settings) => settings,
        Err(failure) => return Ok(Loaded::unusable(failure)),
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    let meta = api
        .get_metadata_opt(name)
        .await
        .map_err(Error::ReadServiceAccount)?;
    let audience = client
        .spec
        .service_account_token
        .as_ref()
        .map_or("", |s| s.audience.as_str());
    let credentials = credentials::from_service_account(
        client.spec.client_id.as_deref().unwrap_or_default(),
        name,
        audience,
        &settings.exchange.token_url,
        namespace,
        meta.as_ref().map(|m| m.annotations()),
    );
    Ok(Loaded {
        resource_version: meta.as_ref().and_then(|m| m.resource_version()),
        credentials,
    })
}
