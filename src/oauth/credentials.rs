//! Client credentials, and the one set of rules for reading them, shared by the controller
//! (from the credentials Secret, or the ServiceAccount of `ServiceAccountToken`) and the
//! `exchange` command (from flags, files, the environment or a Secret in the file).
//!
//! What is read follows the method ([`read`]): client_id always; client_secret for the secret
//! methods and ClientSecretJwt; the private key (and the certificate chain: optional with
//! PrivateKeyJwt, required with TlsClientAuth) for the key methods; a ready assertion for
//! ServiceAccountToken in the `exchange` command.
//!
//! Every value is used byte for byte (a trailing newline is part of the secret); a value that
//! is missing or empty is `CredentialsNotFound`; a client_id or client_secret that is not UTF-8,
//! and a key or certificate that cannot be used, is `InvalidCredentials`; every message names
//! where the value came from (the Secret key, the flag, the file), never the value.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::ByteString;

use crate::api::crd::{ClientAuthMethod, CredentialsSecretRef, OAuthClientSpec};
use crate::api::keys::{TOKEN_AUDIENCES_ANNOTATION, TOKEN_ENDPOINTS_ANNOTATION};
use crate::api::reason::{Failure, Reason};
use crate::base::Sensitive;
use crate::oauth::identity::Identity;

/// Client credentials: the client_id (not a secret) and what proves the client holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The client identifier.
    pub client_id: String,
    /// The secret, key or assertion.
    pub proof: Proof,
    /// The subject token of a token exchange (RFC 8693); `None` for client credentials.
    pub subject: Option<Subject>,
}

/// The subject token of a token exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The token: read from a Secret or from another client's managed Secret, given in a file,
    /// or the ServiceAccount token requested for this exchange.
    Token(Sensitive<String>),
    /// A ServiceAccount that opted in to the audience and the token endpoint (before its token
    /// is requested).
    ServiceAccount(ServiceAccountGrant),
}

/// What authenticates the client, beside its client_id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// The client_secret (ClientSecretBasic, ClientSecretPost, ClientSecretJwt).
    Secret(Sensitive<String>),
    /// The private key, with its certificate chain when there is one (PrivateKeyJwt,
    /// TlsClientAuth).
    Key(Arc<Identity>),
    /// A ServiceAccount that allows a token for the spec's audience (ServiceAccountToken, before
    /// the token is requested).
    ServiceAccount(ServiceAccountGrant),
    /// A ready client assertion: the ServiceAccount token requested for this exchange, or the
    /// JWT of `exchange --assertion-file`.
    Assertion(Sensitive<String>),
    /// Nothing: a public client (`None`, token exchange only).
    None,
}

/// A ServiceAccount that opted in to the audience and the token endpoint of a
/// `ServiceAccountToken` client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountGrant {
    /// The ServiceAccount's name.
    pub name: String,
    /// The value of its `oauth.token-operator.dev/token-audiences` annotation.
    pub audiences: String,
    /// The value of its `oauth.token-operator.dev/token-endpoints` annotation.
    pub endpoints: String,
}

impl Credentials {
    /// A client_id and client_secret.
    pub fn with_secret(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Credentials {
            client_id: client_id.into(),
            proof: Proof::Secret(Sensitive::new(client_secret.into())),
            subject: None,
        }
    }

    /// A public client (`clientAuthMethod: None`): `client_id` as `spec.clientId` gives it
    /// (empty: none is sent).
    pub fn public(client_id: impl Into<String>) -> Self {
        Credentials {
            client_id: client_id.into(),
            proof: Proof::None,
            subject: None,
        }
    }

    /// These credentials with the subject token of a token exchange.
    pub fn with_subject(self, subject: Subject) -> Self {
        Credentials {
            subject: Some(subject),
            ..self
        }
    }

    /// The subject token, once it is known (not a ServiceAccount before its token is
    /// requested).
    pub fn subject_token(&self) -> Option<&Sensitive<String>> {
        match &self.subject {
            Some(Subject::Token(token)) => Some(token),
            _ => None,
        }
    }

    /// The client_secret, for the methods that use one.
    pub fn client_secret(&self) -> Option<&Sensitive<String>> {
        match &self.proof {
            Proof::Secret(secret) => Some(secret),
            _ => None,
        }
    }

    /// The key, for the methods that use one.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        match &self.proof {
            Proof::Key(identity) => Some(identity),
            _ => None,
        }
    }
}

/// Where a credential value comes from, as messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin<'a> {
    /// A key of the credentials Secret.
    Key {
        /// The Secret's name.
        secret: &'a str,
        /// The key.
        key: &'a str,
    },
    /// Anything else: a flag, a file, an environment variable (as written, e.g.
    /// `--client-secret-file /tmp/secret`).
    Other(&'a str),
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Key { secret, key } => write!(f, "key {key} of Secret {secret}"),
            Origin::Other(what) => f.write_str(what),
        }
    }
}

/// One credential value by the shared rules: present (else `missing`), not empty, UTF-8.
pub fn value(
    bytes: Option<&[u8]>,
    origin: Origin<'_>,
    missing: impl FnOnce() -> Failure,
) -> Result<String, Failure> {
    let bytes = present(bytes, origin, missing)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Failure::invalid_credentials(format!("{origin} is not valid UTF-8")))
}

/// A token given as a value (the subject token of a token exchange, from a Secret or a file):
/// by the rules of [`value`], then without surrounding whitespace (a file written with a
/// trailing newline works), and not empty once trimmed.
pub fn token(
    bytes: Option<&[u8]>,
    origin: Origin<'_>,
    missing: impl FnOnce() -> Failure,
) -> Result<Sensitive<String>, Failure> {
    let text = value(bytes, origin, missing)?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Failure::new(
            Reason::CredentialsNotFound,
            format!("{origin} is empty"),
        ));
    }
    Ok(Sensitive::new(trimmed.to_owned()))
}

/// One credential value that need not be text (a PEM key or certificate): present, not empty.
pub fn present<'b>(
    bytes: Option<&'b [u8]>,
    origin: Origin<'_>,
    missing: impl FnOnce() -> Failure,
) -> Result<&'b [u8], Failure> {
    let bytes = bytes.ok_or_else(missing)?;
    if bytes.is_empty() {
        return Err(Failure::new(
            Reason::CredentialsNotFound,
            format!("{origin} is empty"),
        ));
    }
    Ok(bytes)
}

/// A kind of credential value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// The client_id.
    ClientId,
    /// The client_secret.
    ClientSecret,
    /// The PEM private key.
    PrivateKey,
    /// The PEM certificate chain.
    Certificate,
    /// A ready client assertion (`exchange --assertion-file`).
    Assertion,
}

/// Where the values of one reading come from: the credentials Secret, or the `exchange`
/// command's flags and file.
pub trait Source {
    /// The bytes of `item` and where they came from (as messages name it), if present.
    fn get(&self, item: Item) -> Result<Option<(Vec<u8>, String)>, Failure>;
    /// The failure when `item` is required and absent.
    fn missing(&self, item: Item) -> Failure;
}

/// Reads what `method` needs from `source`.
pub fn read(method: ClientAuthMethod, source: &dyn Source) -> Result<Credentials, Failure> {
    if method == ClientAuthMethod::None {
        // A public client: a client_id only when one is given, nothing else.
        let client_id = match source.get(Item::ClientId)? {
            Some((bytes, origin)) => value(Some(&bytes), Origin::Other(&origin), || {
                source.missing(Item::ClientId)
            })?,
            None => String::new(),
        };
        return Ok(Credentials::public(client_id));
    }
    let client_id = text(source, Item::ClientId)?;
    let proof = match method {
        ClientAuthMethod::ClientSecretBasic
        | ClientAuthMethod::ClientSecretPost
        | ClientAuthMethod::ClientSecretJwt => {
            Proof::Secret(Sensitive::new(text(source, Item::ClientSecret)?))
        }
        ClientAuthMethod::PrivateKeyJwt => Proof::Key(Arc::new(identity(source, false)?)),
        ClientAuthMethod::TlsClientAuth => Proof::Key(Arc::new(identity(source, true)?)),
        ClientAuthMethod::ServiceAccountToken => {
            let jwt = text(source, Item::Assertion)?;
            Proof::Assertion(Sensitive::new(jwt.trim().to_owned()))
        }
        ClientAuthMethod::None => unreachable!("returned above"),
    };
    Ok(Credentials {
        client_id,
        proof,
        subject: None,
    })
}

fn text(source: &dyn Source, item: Item) -> Result<String, Failure> {
    let found = source.get(item)?;
    let origin = found.as_ref().map(|(_, o)| o.clone()).unwrap_or_default();
    value(
        found.as_ref().map(|(b, _)| b.as_slice()),
        Origin::Other(&origin),
        || source.missing(item),
    )
}

/// The key and, when the Secret has one (or `required`), the certificate chain.
fn identity(source: &dyn Source, certificate_required: bool) -> Result<Identity, Failure> {
    let key = source.get(Item::PrivateKey)?;
    let key_origin = key.as_ref().map(|(_, o)| o.clone()).unwrap_or_default();
    let key_bytes = present(
        key.as_ref().map(|(b, _)| b.as_slice()),
        Origin::Other(&key_origin),
        || source.missing(Item::PrivateKey),
    )?;
    let certificate = match source.get(Item::Certificate)? {
        None if certificate_required => return Err(source.missing(Item::Certificate)),
        None => None,
        Some((bytes, origin)) => {
            present(Some(&bytes), Origin::Other(&origin), || unreachable!())?;
            Some((bytes, origin))
        }
    };
    Identity::load(
        key_bytes,
        &key_origin,
        certificate
            .as_ref()
            .map(|(b, o)| (b.as_slice(), o.as_str())),
    )
}

/// The data of a credentials Secret (or of the object holding a CA bundle), by key.
pub trait SecretData {
    /// The bytes of `key`, if the Secret has it.
    fn bytes(&self, key: &str) -> Option<&[u8]>;
}

impl SecretData for BTreeMap<String, ByteString> {
    fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.get(key).map(|v| v.0.as_slice())
    }
}

/// A ConfigMap's `data` (text values).
impl SecretData for BTreeMap<String, String> {
    fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.get(key).map(String::as_bytes)
    }
}

impl SecretData for BTreeMap<String, Vec<u8>> {
    fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.get(key).map(Vec::as_slice)
    }
}

/// The credentials Secret as a [`Source`]: `spec.clientId`, when set, is the client_id.
struct SecretSource<'a> {
    spec: &'a OAuthClientSpec,
    reference: &'a CredentialsSecretRef,
    data: &'a dyn SecretData,
}

impl SecretSource<'_> {
    fn key(&self, item: Item) -> Option<&str> {
        let r = self.reference;
        match item {
            Item::ClientId => Some(&r.client_id_key),
            Item::ClientSecret => Some(&r.client_secret_key),
            Item::PrivateKey => Some(&r.private_key_key),
            Item::Certificate => Some(&r.certificate_key),
            Item::Assertion => None,
        }
    }
}

impl Source for SecretSource<'_> {
    fn get(&self, item: Item) -> Result<Option<(Vec<u8>, String)>, Failure> {
        if let (Item::ClientId, Some(id)) = (item, &self.spec.client_id) {
            return Ok(Some((id.clone().into_bytes(), "spec.clientId".into())));
        }
        let Some(key) = self.key(item) else {
            return Ok(None);
        };
        let origin = Origin::Key {
            secret: &self.reference.name,
            key,
        };
        Ok(self
            .data
            .bytes(key)
            .map(|b| (b.to_vec(), origin.to_string())))
    }

    fn missing(&self, item: Item) -> Failure {
        let name = &self.reference.name;
        let key = self.key(item).unwrap_or("(none)");
        Failure::new(
            Reason::CredentialsNotFound,
            format!("Secret {name} has no key {key}"),
        )
    }
}

/// Reads the credentials `spec` names (what its method needs) from its credentials Secret
/// (`None`: the Secret does not exist in `namespace`).
pub fn from_secret(
    spec: &OAuthClientSpec,
    namespace: &str,
    secret: Option<&dyn SecretData>,
) -> Result<Credentials, Failure> {
    let Some(reference) = &spec.credentials_secret_ref else {
        return Err(Failure::invalid_spec(
            "spec.credentialsSecretRef is required unless clientAuthMethod is ServiceAccountToken",
        ));
    };
    let Some(data) = secret else {
        return Err(Failure::new(
            Reason::CredentialsNotFound,
            format!(
                "Secret {} not found in namespace {namespace}",
                reference.name
            ),
        ));
    };
    read(
        crate::spec::client_auth_method(spec),
        &SecretSource {
            spec,
            reference,
            data,
        },
    )
}

/// The audiences a ServiceAccount allows: its annotation's comma-separated entries, surrounding
/// spaces ignored, empty entries dropped.
pub fn allowed_audiences(annotation: &str) -> Vec<&str> {
    annotation
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// The ServiceAccount of a `ServiceAccountToken` client, if it opted in to `audience` and to
/// the origin of `token_url` (`annotations`: its annotations; `None`: it does not exist in
/// `namespace`). The opt-in is checked before anything else, and refused as
/// `ServiceAccountTokenDenied`: whoever may create an OAuthClient must not be able to have the
/// token sent anywhere else than where the ServiceAccount's owner allows.
pub fn from_service_account(
    client_id: &str,
    name: &str,
    audience: &str,
    token_url: &url::Url,
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Credentials, Failure> {
    let grant = service_account_grant(name, audience, token_url, namespace, annotations)?;
    Ok(Credentials {
        client_id: client_id.to_owned(),
        proof: Proof::ServiceAccount(grant),
        subject: None,
    })
}

/// The ServiceAccount `name`, if it opted in to `audience` and to the origin of `token_url`:
/// the rules of [`from_service_account`], for a client assertion or a token exchange's subject.
pub fn service_account_grant(
    name: &str,
    audience: &str,
    token_url: &url::Url,
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<ServiceAccountGrant, Failure> {
    let Some(annotations) = annotations else {
        return Err(Failure::new(
            Reason::CredentialsNotFound,
            format!("ServiceAccount {name} not found in namespace {namespace}"),
        ));
    };
    let denied = |why: String, annotation: &str, what: &str| {
        Failure::new(
            Reason::ServiceAccountTokenDenied,
            format!(
                "ServiceAccount {name} {why}; no token is requested for it (to allow it, its owner lists the {what} in its annotation {annotation})"
            ),
        )
    };
    let Some(listed) = annotations.get(TOKEN_AUDIENCES_ANNOTATION) else {
        return Err(denied(
            format!(
                "has not opted in to tokens for audience {audience}: it has no annotation {TOKEN_AUDIENCES_ANNOTATION}"
            ),
            TOKEN_AUDIENCES_ANNOTATION,
            "audience",
        ));
    };
    if !allowed_audiences(listed).contains(&audience) {
        return Err(denied(
            format!(
                "has not opted in to tokens for audience {audience}: its annotation {TOKEN_AUDIENCES_ANNOTATION} lists {}",
                shown(listed)
            ),
            TOKEN_AUDIENCES_ANNOTATION,
            "audience",
        ));
    }
    let origin = endpoint_origin(token_url);
    let endpoints = annotations.get(TOKEN_ENDPOINTS_ANNOTATION);
    let allowed = endpoints.is_some_and(|e| {
        allowed_endpoints(e)
            .iter()
            .any(|entry| entry.as_deref() == Some(origin.as_str()))
    });
    if !allowed {
        let why = match endpoints {
            None => format!(
                "has not opted in to sending its tokens to {origin}: it has no annotation {TOKEN_ENDPOINTS_ANNOTATION}"
            ),
            Some(listed) => format!(
                "has not opted in to sending its tokens to {origin}: its annotation {TOKEN_ENDPOINTS_ANNOTATION} lists {}",
                shown(listed)
            ),
        };
        return Err(denied(
            why,
            TOKEN_ENDPOINTS_ANNOTATION,
            "token endpoint's origin",
        ));
    }
    Ok(ServiceAccountGrant {
        name: name.to_owned(),
        audiences: listed.clone(),
        endpoints: endpoints.cloned().unwrap_or_default(),
    })
}

/// The origin of a token URL as the annotation compares it: `scheme://host[:port]`, the host
/// lower-cased (IDNA), the scheme's default port dropped.
pub fn endpoint_origin(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// The origins a ServiceAccount allows its tokens to be sent to: each comma-separated entry
/// (surrounding spaces ignored) that is an `http` or `https` origin, normalised as
/// [`endpoint_origin`]; an entry with a path (other than `/`), a query, a fragment or user
/// information is no origin and matches nothing (`None`).
pub fn allowed_endpoints(annotation: &str) -> Vec<Option<String>> {
    annotation
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let url = url::Url::parse(entry).ok()?;
            let origin_only = matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.username().is_empty()
                && url.password().is_none()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none();
            origin_only.then(|| endpoint_origin(&url))
        })
        .collect()
}

/// An annotation's value as a message shows it: at most 200 characters, `(nothing)` if empty.
fn shown(value: &str) -> String {
    let entries = allowed_audiences(value);
    if entries.is_empty() {
        return "nothing".into();
    }
    let joined = entries.join(", ");
    let mut out: String = joined.chars().take(200).collect();
    if out.len() < joined.len() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests;
