//! One client-credentials exchange, end to end: build the client assertion and the request
//! (pure), send it (HTTP, through the client the transport chose: for mutual TLS, the one that
//! presents the credentials' certificate), read the response (pure).

use std::time::Instant;

use crate::api::crd::ClientAuthMethod;
use crate::api::reason::Failure;
use crate::base::clock::Clock;
use crate::base::{Scrubber, Sensitive};
use crate::oauth::assertion::{self, Signer};
use crate::oauth::credentials::Proof;
use crate::oauth::identity::Identity;
use crate::oauth::request::{self, Credentials};
use crate::oauth::response::{self, ReadContext, Token};
use crate::oauth::transport::trust::Trust;
use crate::oauth::transport::{HttpClient, Reply, Transport};
use crate::spec::ExchangeSettings;

/// The identity the HTTP client of an exchange presents in the TLS handshake: the credentials'
/// certificate for TlsClientAuth, none for every other method (see
/// [`crate::oauth::transport::Transport::client`]).
pub fn identity<'a>(
    settings: &ExchangeSettings,
    credentials: &'a Credentials,
) -> Option<&'a Identity> {
    match settings.client_auth_method {
        ClientAuthMethod::TlsClientAuth => credentials.identity().map(|i| &**i),
        _ => None,
    }
}

/// Exchanges the credentials for a token as `settings` describe, through the client `transport`
/// chooses for `trust` and [`identity`], held for no namespace: one exchange, for callers that
/// keep no client (the `exchange` command).
pub async fn exchange_once(
    transport: &Transport,
    trust: &Trust,
    settings: &ExchangeSettings,
    credentials: &Credentials,
    clock: &dyn Clock,
) -> Result<Token, Failure> {
    let client = transport.client(trust, identity(settings, credentials), "")?;
    exchange(&client, settings, credentials, clock).await
}

/// Exchanges the credentials for a token as `settings` describe, through `client` (chosen for
/// the endpoint's trust and [`identity`]).
pub async fn exchange(
    client: &HttpClient,
    settings: &ExchangeSettings,
    credentials: &Credentials,
    clock: &dyn Clock,
) -> Result<Token, Failure> {
    check_identity(settings, credentials, client)?;
    let assertion = client_assertion(settings, credentials, clock)?;
    let request = request::build_with(settings, credentials, assertion.as_ref())?;
    let host = settings.token_url.host_str().unwrap_or("?");
    let sent_at = clock.now();
    let started = Instant::now();
    tracing::debug!(
        provider = settings.provider.as_str(),
        method = settings.client_auth_method.as_str(),
        host,
        "requesting a token"
    );
    // Everything the endpoint says goes through this before it enters a message.
    let scrubber = Scrubber::for_request(credentials);
    let scrubber = match &assertion {
        Some(jwt) => scrubber.with_assertion(jwt.expose()),
        None => scrubber,
    };
    let reply = client.send(&request, &scrubber).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let reply = match reply {
        Ok(reply) => reply,
        Err(failure) => {
            tracing::debug!(host, elapsed_ms, reason = %failure.reason, "token request failed");
            return Err(failure);
        }
    };
    read_reply(settings, &reply, sent_at, &scrubber, elapsed_ms)
}

/// The token in the reply (or why there is none), logged with the request's duration.
fn read_reply(
    settings: &ExchangeSettings,
    reply: &Reply,
    sent_at: jiff::Timestamp,
    scrubber: &Scrubber<'_>,
    elapsed_ms: u64,
) -> Result<Token, Failure> {
    let host = settings.token_url.host_str().unwrap_or("?");
    let ctx = ReadContext {
        fields: &settings.response_fields,
        default_lifetime: settings.default_lifetime,
        now: sent_at,
        request_url: &settings.token_url,
        scrubber,
    };
    let result = response::read(
        &response::Response {
            status: reply.status,
            headers: &reply.headers,
            body: &reply.body,
        },
        &ctx,
    )
    .map(|mut token| {
        // issued_token_type belongs to token exchange answers only.
        if settings.token_exchange.is_none() {
            token.issued_token_type = None;
        }
        token
    });
    match &result {
        Ok(token) => tracing::debug!(
            host,
            status = reply.status,
            elapsed_ms,
            expires_at = %token.expires_at,
            "token received"
        ),
        Err(failure) => tracing::debug!(
            host,
            status = reply.status,
            elapsed_ms,
            reason = %failure.reason,
            "token request refused"
        ),
    }
    result.map_err(|mut failure| {
        if reply.status >= 400
            && let Some(url) = shown_url(&settings.token_url, scrubber)
        {
            failure.message.push_str(&format!(" (token URL {url})"));
        }
        failure
    })
}

/// The token URL an HTTP error came from, so that a wrong path or host shows at once: scheme,
/// host, port and path (never a query or user information), scrubbed like anything an
/// endpoint says.
fn shown_url(url: &url::Url, scrubber: &Scrubber<'_>) -> Option<String> {
    response::sanitise(crate::base::url::shown(url).as_str(), scrubber)
}

/// TlsClientAuth goes through the client of exactly the credentials' identity; the other
/// methods through the shared client.
fn check_identity(
    settings: &ExchangeSettings,
    credentials: &Credentials,
    client: &HttpClient,
) -> Result<(), Failure> {
    let mtls = settings.client_auth_method == ClientAuthMethod::TlsClientAuth;
    let expected = credentials.identity().map(|i| i.key());
    let presented = client.presents();
    let fits = match presented {
        Some(key) => mtls && expected == Some(key),
        None => !mtls,
    };
    if fits {
        Ok(())
    } else {
        Err(Failure::invalid_credentials(
            "the HTTP client does not present the credentials' certificate; the request is not sent",
        ))
    }
}

/// A new client assertion for this request (ClientSecretJwt, PrivateKeyJwt): `iat` now, a
/// fresh random `jti`.
fn client_assertion(
    settings: &ExchangeSettings,
    credentials: &Credentials,
    clock: &dyn Clock,
) -> Result<Option<Sensitive<String>>, Failure> {
    let Some(assertion_settings) = &settings.assertion else {
        return Ok(None);
    };
    let signer = match &credentials.proof {
        Proof::Secret(secret) => Signer::Secret(secret),
        Proof::Key(identity) => Signer::Key(identity),
        _ => {
            return Err(Failure::invalid_credentials(format!(
                "clientAuthMethod {} needs a client_secret or a private key",
                settings.client_auth_method.as_str()
            )));
        }
    };
    assertion::build(
        assertion_settings,
        &credentials.client_id,
        signer,
        clock.now(),
        rand::random(),
    )
    .map(Some)
}
