//! Reading a client's credentials: the credentials Secret with one GET (Secret data is never
//! cached), or the ServiceAccount's metadata (ServiceAccountToken, only when the operator may
//! request its tokens). Used by the observe step when it must compare them, and by the inputs
//! step otherwise.

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::Api;

use super::error::Error;
use super::subject;
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
    /// No credentials: a public client (`None`, token exchange).
    Public,
    /// Nowhere the spec names (an unusable spec).
    None,
}

/// Where the subject token of a token exchange comes from, as the watches see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectSource<'a> {
    /// A key of this Secret.
    Secret(&'a str),
    /// A token of this ServiceAccount.
    ServiceAccount(&'a str),
    /// The managed Secret of this OAuthClient.
    Client(&'a str),
}

/// Where the subject token of `client`'s token exchange comes from (`None`: it makes none).
pub fn subject_source(client: &OAuthClient) -> Option<SubjectSource<'_>> {
    let subject = &client.spec.token_exchange.as_ref()?.subject_token;
    if let Some(sa) = &subject.service_account_token {
        return Some(SubjectSource::ServiceAccount(&sa.service_account_name));
    }
    if let Some(other) = &subject.oauth_client_ref {
        return Some(SubjectSource::Client(&other.name));
    }
    subject
        .secret_ref
        .as_ref()
        .map(|s| SubjectSource::Secret(&s.name))
}

/// The resourceVersions of the credentials and of the subject token's object as one version:
/// either changes it. Clients without a subject keep their credentials' version as it is.
pub fn composed_version(own: Option<String>, subject: Option<Option<String>>) -> Option<String> {
    match subject {
        None => own,
        Some(None) if own.is_none() => None,
        Some(subject) => Some(format!(
            "{}+{}",
            own.as_deref().unwrap_or("-"),
            subject.as_deref().unwrap_or("-")
        )),
    }
}

/// Where the credentials of `client` come from.
pub fn source(client: &OAuthClient) -> Source<'_> {
    let spec = &client.spec;
    if crate::spec::client_auth_method(spec) == ClientAuthMethod::None {
        return Source::Public;
    }
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

/// Reads the credentials with one GET, and the subject token of a token exchange (one GET
/// more, or a few along a chain of OAuthClients).
pub async fn read(client: &OAuthClient, ctx: &Context) -> Result<Loaded, Error> {
    let own = read_own(client, ctx).await?;
    if client.spec.token_exchange.is_none() || own.credentials.is_err() {
        return Ok(own);
    }
    let settings = match ClientSettings::resolve(&client.spec, &ctx.shared.policy) {
        Ok(settings) => settings,
        Err(failure) => return Ok(Loaded::unusable(failure)),
    };
    let Some(exchange) = &settings.exchange.token_exchange else {
        return Ok(own);
    };
    let read = subject::read(client, ctx, &settings, &exchange.subject).await?;
    Ok(Loaded {
        resource_version: composed_version(own.resource_version, Some(read.resource_version)),
        credentials: match (own.credentials, read.subject) {
            (Ok(credentials), Ok(subject)) => Ok(credentials.with_subject(subject)),
            (Err(failure), _) | (_, Err(failure)) => Err(failure),
        },
    })
}

/// Reads the client's own credentials with one GET (none for a public client).
async fn read_own(client: &OAuthClient, ctx: &Context) -> Result<Loaded, Error> {
    let namespace = client.namespace().unwrap_or_default();
    let name = match source(client) {
        // Nothing to read; `read` resolves the spec once for the subject.
        Source::Public => {
            return Ok(Loaded {
                resource_version: None,
                credentials: Ok(Credentials::public(
                    client.spec.client_id.clone().unwrap_or_default(),
                )),
            });
        }
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
    if let Some(refused) = secret
        .as_ref()
        .and_then(|s| subject::cluster_credential("spec.credentialsSecretRef", s, name))
    {
        return Ok(Loaded {
            resource_version: secret.as_ref().and_then(|s| s.resource_version()),
            credentials: Err(refused),
        });
    }
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
