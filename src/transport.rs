//! The one HTTP transport for token requests: reqwest with rustls.
//!
//! * TLS is always verified (the platform's trust store; no option turns verification off).
//! * Redirects are never followed: credentials must not be re-sent to another URL. A 3xx is
//!   handed back to [`crate::response`], which reports it as `InvalidResponse`.
//! * Every request has a timeout.
//! * The response body is read with a cap ([`MAX_BODY`]); reading stops as soon as it is
//!   exceeded.
//! * The User-Agent is `oauth-token-operator/<version>`.
//! * The token URL policy ([`crate::url_policy`]) is enforced on the URL and, through the DNS
//!   resolver, on every address connected to.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::reason::{Failure, Reason};
use crate::redact::Scrubber;
use crate::request::TokenRequest;
use crate::response::sanitise;
use crate::url_policy::{DeniedAddress, PolicyResolver, TokenUrlPolicy};

/// Largest response body read (1 MiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A received response, body capped.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (at most [`MAX_BODY`] bytes).
    pub body: Vec<u8>,
}

/// The HTTP client for token endpoints.
#[derive(Clone, Debug)]
pub struct Transport {
    client: reqwest::Client,
    timeout: Duration,
    policy: Arc<TokenUrlPolicy>,
}

/// The HTTP client could not be built (no usable TLS trust store, for instance).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct TransportError(#[source] reqwest::Error);

impl Transport {
    /// A transport with the given request timeout and the default token URL policy.
    pub fn new(timeout: Duration) -> Result<Self, TransportError> {
        Transport::with_policy(timeout, Arc::default())
    }

    /// A transport with the given request timeout and token URL policy.
    pub fn with_policy(
        timeout: Duration,
        policy: Arc<TokenUrlPolicy>,
    ) -> Result<Self, TransportError> {
        // Both kube and reqwest use rustls with ring; install it as the process default once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(crate::user_agent())
            .pool_idle_timeout(Duration::from_secs(60))
            .dns_resolver(Arc::new(PolicyResolver::new(Arc::clone(&policy))))
            .build()
            .map_err(TransportError)?;
        Ok(Transport {
            client,
            timeout,
            policy,
        })
    }

    /// Sends a token request and reads the reply with the body cap. Error messages are
    /// scrubbed with `scrubber` (the request's credentials).
    pub async fn send(
        &self,
        request: &TokenRequest,
        scrubber: &Scrubber<'_>,
    ) -> Result<Reply, Failure> {
        let host = request.url.host_str().unwrap_or("?").to_owned();
        self.policy.check_url(&request.url)?;
        let mut builder = self
            .client
            .post(request.url.clone())
            .body(request.body.expose().clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let mut response = builder
            .send()
            .await
            .map_err(|e| self.transport_failure(&host, &e, scrubber))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY as u64)
        {
            return Err(too_large(status));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(too_large(status));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(self.transport_failure(&host, &e, scrubber)),
            }
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    fn transport_failure(
        &self,
        host: &str,
        error: &reqwest::Error,
        scrubber: &Scrubber<'_>,
    ) -> Failure {
        if let Some(denied) = find_source::<DeniedAddress>(error) {
            return denied.failure();
        }
        // What happened, with the library's detail, and the same without it.
        let (what, short) = if error.is_timeout() {
            let what = format!("timed out after {}s", self.timeout.as_secs_f32());
            (what.clone(), what)
        } else if error.is_connect() {
            let short = "could not connect".to_owned();
            (format!("{short}: {}", root_cause(error)), short)
        } else if error.is_body() || error.is_decode() {
            let short = "failed while reading the response".to_owned();
            (format!("{short}: {}", root_cause(error)), short)
        } else {
            (root_cause(error), "request failed".to_owned())
        };
        // These messages hold no body text; with a secret too short to scrub reliably they
        // are left whole rather than shredded.
        let none = Scrubber::none();
        let scrubber = if scrubber.allows_excerpts() {
            scrubber
        } else {
            &none
        };
        let message = sanitise(&format!("token endpoint {host} {what}"), scrubber)
            .unwrap_or_else(|| format!("token endpoint {host} {short}"));
        Failure::new(Reason::EndpointUnavailable, message)
    }
}

fn too_large(status: u16) -> Failure {
    Failure::new(
        Reason::InvalidResponse,
        format!(
            "HTTP {status} response body is larger than {} KiB; stopped reading",
            MAX_BODY / 1024
        ),
    )
}

/// The innermost error message (reqwest's top level only says "error sending request").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// The first error of type `E` in `error`'s source chain.
fn find_source<'e, E: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}
