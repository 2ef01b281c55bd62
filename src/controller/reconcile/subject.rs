//! The subject token of a token exchange (RFC 8693), read with the credentials: the key of a
//! Secret, another OAuthClient's current token (its managed Secret, as the operator sealed it,
//! while that client is Ready; a reference cycle is `InvalidSpec`), or a ServiceAccount that
//! opted in (its token is requested only once the exchange is admitted, in the inputs step).
//! Every message names where the token comes from, never the token.
//!
//! Names read from other objects (the `oauthClientRef`s further down a chain, the referenced
//! client's `status.secretName` or `spec.target.name`) are checked as the client's own spec's
//! are before they reach a request path: one that is no object name is `InvalidSpec`, and
//! nothing is read under it.

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::Api;

use super::error::Error;
use crate::api::conditions::READY;
use crate::api::crd::OAuthClient;
use crate::api::keys::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use crate::api::name::NamespacedName;
use crate::api::reason::{Failure, Reason};
use crate::base::Sensitive;
use crate::controller::context::Context;
use crate::decide::managed_secret;
use crate::oauth::credentials::{self, Origin, Subject};
use crate::output::secret;
use crate::spec::{ClientSettings, SubjectSettings, check_reference_name};

/// Longest chain of `oauthClientRef`s followed when looking for a cycle.
pub const MAX_CHAIN: usize = 16;

/// The subject as read, and the resourceVersion of the object it was read from.
#[derive(Debug)]
pub struct ReadSubject {
    /// resourceVersion of the Secret (a Secret subject, or the referenced client's managed
    /// Secret) or the ServiceAccount; `None` when there is none.
    pub resource_version: Option<String>,
    /// The subject, or why there is none to send.
    pub subject: Result<Subject, Failure>,
}

impl ReadSubject {
    fn failed(failure: Failure) -> Self {
        ReadSubject {
            resource_version: None,
            subject: Err(failure),
        }
    }
}

/// The version of another OAuthClient's token as a subject: that client's resourceVersion (as
/// the watch showed it) and its managed Secret's. The observe step composes it from the caches
/// and reading the subject from what it read, the same way.
pub fn client_subject_version(client: Option<&str>, secret: Option<&str>) -> String {
    format!("{}/{}", client.unwrap_or("-"), secret.unwrap_or("-"))
}

/// Reads the subject of `client`'s token exchange (`settings` resolved from its spec).
pub async fn read(
    client: &OAuthClient,
    ctx: &Context,
    settings: &ClientSettings,
    subject: &SubjectSettings,
) -> Result<ReadSubject, Error> {
    let namespace = client.namespace().unwrap_or_default();
    match subject {
        SubjectSettings::Secret { name, key } => read_secret(ctx, &namespace, name, key).await,
        SubjectSettings::Client(name) => read_client(client, ctx, &namespace, name).await,
        SubjectSettings::ServiceAccount(sa) => {
            let api: Api<ServiceAccount> = Api::namespaced(ctx.shared.kube.clone(), &namespace);
            let meta = api
                .get_metadata_opt(&sa.name)
                .await
                .map_err(Error::ReadServiceAccount)?;
            let grant = credentials::service_account_grant(
                &sa.name,
                &sa.audience,
                &settings.exchange.token_url,
                &namespace,
                meta.as_ref().map(|m| m.annotations()),
            );
            Ok(ReadSubject {
                resource_version: meta.as_ref().and_then(|m| m.resource_version()),
                subject: grant.map(Subject::ServiceAccount),
            })
        }
    }
}

/// The key of a Secret of the namespace.
async fn read_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<ReadSubject, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    let Some(found) = api.get_opt(name).await.map_err(Error::ReadCredentials)? else {
        return Ok(ReadSubject::failed(Failure::new(
            Reason::CredentialsNotFound,
            format!(
                "Secret {name} (spec.tokenExchange.subjectToken.secretRef) not found in namespace {namespace}"
            ),
        )));
    };
    if let Some(refused) = refused_secret(&found, name) {
        return Ok(ReadSubject::failed(refused));
    }
    let data = found.data.clone().unwrap_or_default();
    let token = token_value(data.get(key).map(|v| v.0.as_slice()), name, key);
    Ok(ReadSubject {
        resource_version: found.resource_version(),
        subject: token.map(Subject::Token),
    })
}

/// Why a Secret may not be a subject, if it may not:
///
/// * a Secret an OAuthClient's managed Secret (the operator's label, or an OAuthClient as its
///   controller): its token changes with every exchange, so a client whose subject leads back to
///   itself through it would exchange without end (`oauthClientRef` is the way to take another
///   client's token, and its cycles are refused);
/// * a cluster credential (`kubernetes.io/service-account-token`, `bootstrap.kubernetes.io/token`):
///   a ServiceAccount token goes to a token endpoint only through `serviceAccountToken`, with its
///   owner's opt-in and never for an audience the API server accepts, and a legacy token's
///   audience is the API server itself.
fn refused_secret(secret: &Secret, name: &str) -> Option<Failure> {
    let managed = secret
        .labels()
        .get(MANAGED_BY_LABEL)
        .is_some_and(|v| v == MANAGED_BY_VALUE)
        || secret
            .owner_references()
            .iter()
            .any(|r| r.controller == Some(true) && r.kind == "OAuthClient");
    if managed {
        return Some(Failure::invalid_spec(format!(
            "spec.tokenExchange.subjectToken.secretRef: Secret {name} is an OAuthClient's managed Secret, whose token changes with every exchange; to exchange that client's token, name it in oauthClientRef"
        )));
    }
    cluster_credential("spec.tokenExchange.subjectToken.secretRef", secret, name)
}

/// A Secret of a type that makes it a credential of the cluster itself
/// (`kubernetes.io/service-account-token`, `bootstrap.kubernetes.io/token`): never read for a
/// token endpoint, as a subject or as client credentials (`field` names the reference).
pub fn cluster_credential(field: &str, secret: &Secret, name: &str) -> Option<Failure> {
    let credential = secret.type_.as_deref().filter(|t| {
        [
            "kubernetes.io/service-account-token",
            "bootstrap.kubernetes.io/token",
        ]
        .contains(t)
    })?;
    Some(Failure::new(
        Reason::ServiceAccountTokenDenied,
        format!(
            "{field}: Secret {name} is of type {credential}, a credential of the cluster itself; it is never sent to a token endpoint (a ServiceAccount's token goes out only through serviceAccountToken, with its owner's opt-in)"
        ),
    ))
}

/// A subject token as a Secret holds it: present, not empty, UTF-8, without surrounding
/// whitespace (a file written with a trailing newline works).
fn token_value(bytes: Option<&[u8]>, name: &str, key: &str) -> Result<Sensitive<String>, Failure> {
    credentials::token(bytes, Origin::Key { secret: name, key }, || {
        Failure::new(
            Reason::CredentialsNotFound,
            format!("Secret {name} has no key {key} (the subject token)"),
        )
    })
}

/// Another OAuthClient's current token: the chain of references is followed first (a cycle is
/// `InvalidSpec`), then the client must be Ready and its managed Secret intact and unexpired.
async fn read_client(
    client: &OAuthClient,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<ReadSubject, Error> {
    let api: Api<OAuthClient> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    let own = client.name_any();
    let mut chain = vec![own.clone()];
    let mut next = Some(name.to_owned());
    let mut referenced: Option<OAuthClient> = None;
    while let Some(current) = next.take() {
        if chain.contains(&current) {
            chain.push(current);
            return Ok(ReadSubject::failed(Failure::invalid_spec(format!(
                "spec.tokenExchange.subjectToken.oauthClientRef: the references form a cycle ({}), so no client in it can ever have a token",
                chain.join(" -> ")
            ))));
        }
        if chain.len() > MAX_CHAIN {
            return Ok(ReadSubject::failed(Failure::invalid_spec(format!(
                "spec.tokenExchange.subjectToken.oauthClientRef: the chain of references is longer than {MAX_CHAIN} clients"
            ))));
        }
        // The first name is this client's own (checked with its spec); the others come from
        // the specs of the clients along the chain.
        let field = format!(
            "spec.tokenExchange.subjectToken.oauthClientRef.name of OAuthClient {}",
            chain.last().expect("the chain starts with this client")
        );
        if let Err(failure) = check_reference_name(&field, "OAuthClient", &current) {
            return Ok(ReadSubject::failed(failure));
        }
        let Some(found) = api.get_opt(&current).await.map_err(Error::ReadSubject)? else {
            if referenced.is_none() {
                return Ok(ReadSubject::failed(Failure::new(
                    Reason::CredentialsNotFound,
                    format!(
                        "OAuthClient {current} (spec.tokenExchange.subjectToken.oauthClientRef) not found in namespace {namespace}"
                    ),
                )));
            }
            // Further down the chain: that client says so itself.
            break;
        };
        next = found
            .spec
            .token_exchange
            .as_ref()
            .and_then(|e| e.subject_token.oauth_client_ref.as_ref())
            .map(|r| r.name.clone());
        chain.push(current);
        if referenced.is_none() {
            referenced = Some(found);
        }
    }
    let referenced = referenced.expect("the first client was found");
    let (target, field) = match referenced
        .status
        .as_ref()
        .and_then(|s| s.secret_name.clone())
    {
        Some(name) => (name, "status.secretName"),
        None => (secret::target_name(&referenced), "spec.target.name"),
    };
    // Another object's word: checked before it reaches a path (or the watch mapping).
    let field = format!("the managed Secret of OAuthClient {name} (its {field})");
    if let Err(failure) = check_reference_name(&field, "Secret", &target) {
        return Ok(ReadSubject::failed(failure));
    }
    ctx.learn_subject_secret(&NamespacedName::of(&client.metadata), &target);
    if let Some(failure) = not_ready(&referenced, name) {
        return Ok(ReadSubject::failed(failure));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.shared.kube.clone(), namespace);
    let read = secrets.get_opt(&target).await.map_err(Error::ReadSecret)?;
    // As the observe step composes it: the referenced client's version as the watch showed it,
    // and its managed Secret's.
    let noted = ctx.subject_client_version(&NamespacedName::new(namespace, name));
    let resource_version = Some(client_subject_version(
        noted.as_deref(),
        read.as_ref().and_then(|s| s.resource_version()).as_deref(),
    ));
    let status = referenced.status.clone().unwrap_or_default();
    let intact = read.as_ref().and_then(|s| {
        managed_secret::inspect(s, &referenced, &ctx.shared.seal_keys, &status).intact_token
    });
    let now = ctx.shared.clock.now();
    let subject = match intact {
        Some(intact) if intact.token.expires_at > now => {
            Ok(Subject::Token(intact.token.access_token))
        }
        Some(_) => Err(Failure::new(
            Reason::TokenExpired,
            format!("the token of OAuthClient {name} (the subject token) has expired"),
        )),
        None => Err(Failure::new(
            Reason::TokenExpired,
            format!(
                "OAuthClient {name} (the subject token) has no intact token in its managed Secret {target}"
            ),
        )),
    };
    Ok(ReadSubject {
        resource_version,
        subject,
    })
}

/// Why the referenced client's token cannot be used now, if it cannot: it is not Ready.
fn not_ready(referenced: &OAuthClient, name: &str) -> Option<Failure> {
    let ready = referenced
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let current = ready.is_some_and(|c| {
        c.observed_generation.is_none() || c.observed_generation == referenced.metadata.generation
    });
    match ready {
        Some(c) if c.status == "True" && !current => Some(Failure::new(
            Reason::TokenExpired,
            format!(
                "OAuthClient {name} (the subject token) has a new spec it has not obtained a token for yet; no token exchange is made until it is Ready again"
            ),
        )),
        Some(c) if c.status == "True" => None,
        Some(c) => Some(Failure::new(
            Reason::TokenExpired,
            format!(
                "OAuthClient {name} (the subject token) is not Ready ({}); no token exchange is made until it is",
                c.reason
            ),
        )),
        None => Some(Failure::new(
            Reason::TokenExpired,
            format!(
                "OAuthClient {name} (the subject token) has no token yet; no token exchange is made until it is Ready"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_token_in_a_secret_is_trimmed_and_never_shown() {
        let token = token_value(Some(b"eyJ.abc.def\n"), "idp", "token").unwrap();
        assert_eq!(token.expose(), "eyJ.abc.def");
        let missing = token_value(None, "idp", "token").unwrap_err();
        assert_eq!(missing.reason, Reason::CredentialsNotFound);
        assert!(missing.message.contains("has no key token"));
        let blank = token_value(Some(b" \n"), "idp", "token").unwrap_err();
        assert_eq!(blank.reason, Reason::CredentialsNotFound);
        assert_eq!(blank.message, "key token of Secret idp is empty");
        let binary = token_value(Some(&[0xff, 0xfe, b's', b'e', b'c']), "idp", "token");
        let binary = binary.unwrap_err();
        assert_eq!(binary.reason, Reason::InvalidCredentials);
        assert!(!binary.message.contains("sec"));
    }

    fn client(generation: i64, ready: &str, observed: i64) -> OAuthClient {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
            "metadata": {"name": "first", "namespace": "ns", "generation": generation},
            "spec": {"tokenUrl": "https://idp/t", "credentialsSecretRef": {"name": "c"}},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "TokenIssued",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": observed}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_referenced_client_is_ready_only_for_its_current_spec() {
        assert!(not_ready(&client(3, "True", 3), "first").is_none());
        let stale = not_ready(&client(4, "True", 3), "first").unwrap();
        assert_eq!(stale.reason, Reason::TokenExpired);
        assert!(stale.message.contains("new spec"), "{}", stale.message);
        let failing = not_ready(&client(3, "False", 3), "first").unwrap();
        assert!(
            failing.message.contains("not Ready (TokenIssued)"),
            "{}",
            failing.message
        );
    }
}
