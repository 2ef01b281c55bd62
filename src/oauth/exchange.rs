//! One client-credentials exchange, end to end: build the request (pure), send it (HTTP), read
//! the response (pure).

use std::time::Instant;

use crate::api::reason::Failure;
use crate::oauth::pool::TrustedClient;
use crate::oauth::request::{self, Credentials};
use crate::oauth::response::{self, ReadContext, Token};
use crate::oauth::transport::Transport;
use crate::output::redact::Scrubber;
use crate::spec::ExchangeSettings;
use crate::timing::clock::Clock;

/// Performs exchanges with one transport.
#[derive(Clone, Debug)]
pub struct Exchanger {
    transport: Transport,
}

impl Exchanger {
    /// An exchanger sending through `transport`.
    pub fn new(transport: Transport) -> Self {
        Exchanger { transport }
    }

    /// The transport (for the HTTP client of a trust configuration).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Exchanges the credentials for a token as `settings` describe, verifying the endpoint
    /// against the default trust.
    pub async fn exchange(
        &self,
        settings: &ExchangeSettings,
        credentials: &Credentials,
        clock: &dyn Clock,
    ) -> Result<Token, Failure> {
        let client = self.transport.default_client().clone();
        self.exchange_via(&client, settings, credentials, clock)
            .await
    }

    /// Exchanges the credentials for a token as `settings` describe, through `client` (see
    /// [`Transport::client`]).
    pub async fn exchange_via(
        &self,
        client: &TrustedClient,
        settings: &ExchangeSettings,
        credentials: &Credentials,
        clock: &dyn Clock,
    ) -> Result<Token, Failure> {
        let request = request::build(settings, credentials)?;
        let host = settings.token_url.host_str().unwrap_or("?");
        let sent_at = clock.now();
        let started = Instant::now();
        tracing::debug!(
            provider = settings.provider.as_str(),
            host,
            "requesting a token"
        );
        // Everything the endpoint says goes through this before it enters a message.
        let scrubber = Scrubber::for_credentials(credentials);
        let reply = self.transport.send_via(client, &request, &scrubber).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let reply = match reply {
            Ok(reply) => reply,
            Err(failure) => {
                tracing::debug!(host, elapsed_ms, reason = %failure.reason, "token request failed");
                return Err(failure);
            }
        };
        let ctx = ReadContext {
            fields: &settings.response_fields,
            default_lifetime: settings.default_lifetime,
            now: sent_at,
            request_url: &settings.token_url,
            scrubber: &scrubber,
        };
        let result = response::read(
            &response::Response {
                status: reply.status,
                headers: &reply.headers,
                body: &reply.body,
            },
            &ctx,
        );
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
        result
    }
}
