//! Step 3, the inputs of an exchange, loaded once the gate has admitted it: the credentials (as
//! observed, or read now), the HTTP client of the trust, and what the request sends — for
//! ServiceAccountToken a new token of the ServiceAccount, for TlsClientAuth the client that
//! presents the credentials' certificate.

use kube::ResourceExt;

use super::credentials::{self, Loaded};
use super::error::Error;
use super::observe::Snapshot;
use super::service_account_token::{self, Requested};
use super::trust::{self, LoadedTrust};
use crate::api::crd::OAuthClient;
use crate::api::reason::Failure;
use crate::controller::context::Context;
use crate::oauth::credentials::{Credentials, Proof, Subject};
use crate::oauth::exchange;
use crate::oauth::transport::HttpClient;
use crate::spec::{ClientSettings, SubjectSettings};

/// Everything an exchange needs, as loaded.
#[derive(Debug)]
pub struct Inputs {
    /// The credentials as read (a ServiceAccount, not its token): what the token is
    /// fingerprinted with, and what a failure is remembered with.
    pub credentials: Loaded,
    /// The trust's HTTP client, and the bundle's version.
    pub trust: LoadedTrust,
    /// What the request sends, or why none can be sent.
    pub ready: Ready,
}

/// What the request sends.
#[derive(Debug)]
pub enum Ready {
    /// The credentials as the request sends them and the HTTP client it goes through.
    Send {
        /// The credentials (for ServiceAccountToken, the ServiceAccount's new token as the
        /// assertion).
        credentials: Credentials,
        /// The client: the trust's, or for TlsClientAuth the one of that trust presenting the
        /// credentials' certificate.
        client: HttpClient,
    },
    /// Refused before any request.
    Refused(Failure),
}

/// The credentials: as observed, or read now.
pub async fn credentials(
    client: &OAuthClient,
    ctx: &Context,
    seen: &Snapshot,
) -> Result<Loaded, Error> {
    match &seen.credentials {
        Some(loaded) => Ok(loaded.clone()),
        None => credentials::read(client, ctx).await,
    }
}

/// Loads the inputs of an exchange with `settings` (the credentials from `known` when an
/// earlier step read them).
pub async fn load(
    client: &OAuthClient,
    ctx: &Context,
    seen: &Snapshot,
    settings: &ClientSettings,
    known: Option<Loaded>,
) -> Result<Inputs, Error> {
    let loaded = match known {
        Some(loaded) => loaded,
        None => credentials(client, ctx, seen).await?,
    };
    let trust = trust::load(client, ctx, seen).await?;
    let ready = match (&loaded.credentials, &trust.client) {
        (Err(failure), _) | (_, Err(failure)) => Ready::Refused(failure.clone()),
        (Ok(credentials), Ok(trusted)) => {
            let namespace = client.namespace().unwrap_or_default();
            prepare(ctx, &namespace, settings, credentials.clone(), trusted).await?
        }
    };
    Ok(Inputs {
        credentials: loaded,
        trust,
        ready,
    })
}

/// The credentials as the request sends them, and its HTTP client.
async fn prepare(
    ctx: &Context,
    namespace: &str,
    settings: &ClientSettings,
    credentials: Credentials,
    trusted: &HttpClient,
) -> Result<Ready, Error> {
    let credentials = match (&credentials.proof, &settings.exchange.service_account) {
        (Proof::ServiceAccount(_), Some(service_account)) => {
            let field = "spec.serviceAccountToken";
            match service_account_token::request(ctx, namespace, service_account, field).await? {
                Requested::Issued(token) => Credentials {
                    client_id: credentials.client_id,
                    proof: Proof::Assertion(token),
                    subject: credentials.subject,
                },
                Requested::Refused(failure) => return Ok(Ready::Refused(failure)),
            }
        }
        _ => credentials,
    };
    // A ServiceAccount subject: its token, requested now (after the client's own, if any).
    let subject_account = match (&credentials.subject, &settings.exchange.token_exchange) {
        (Some(Subject::ServiceAccount(_)), Some(exchange)) => match &exchange.subject {
            SubjectSettings::ServiceAccount(sa) => Some(sa),
            _ => None,
        },
        _ => None,
    };
    let credentials = match subject_account {
        None => credentials,
        Some(sa) => match service_account_token::request(
            ctx,
            namespace,
            sa,
            "spec.tokenExchange.subjectToken.serviceAccountToken",
        )
        .await?
        {
            Requested::Issued(token) => credentials.with_subject(Subject::Token(token)),
            Requested::Refused(failure) => return Ok(Ready::Refused(failure)),
        },
    };
    let identity = exchange::identity(&settings.exchange, &credentials);
    let chosen = match identity {
        None => Ok(trusted.clone()),
        Some(identity) => ctx
            .shared
            .transport
            .client(trusted.trust(), Some(identity), namespace),
    };
    Ok(match chosen {
        Ok(client) => Ready::Send {
            credentials,
            client,
        },
        Err(failure) => Ready::Refused(failure),
    })
}
