//! The failure reasons of the contract, used on conditions, events and metric labels.

use std::fmt;
use std::time::Duration;

/// A condition reason. The string forms are part of the public API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Credentials Secret or one of its keys missing.
    CredentialsNotFound,
    /// Spec unusable: bad URL, http without `--allow-insecure-http`, bad template, forbidden header.
    InvalidSpec,
    /// HTTP 401, or RFC 6749 error `invalid_client`.
    InvalidClient,
    /// HTTP 403, or `unauthorized_client` / `access_denied` on a non-401 answer.
    AccessDenied,
    /// RFC 6749 error `invalid_scope`.
    InvalidScope,
    /// Any other 4xx except 429.
    InvalidRequest,
    /// HTTP 429.
    RateLimited,
    /// 5xx, timeout, connection or TLS failure.
    EndpointUnavailable,
    /// A 2xx without a usable token, an unreadable or oversize body, or a redirect.
    InvalidResponse,
    /// Credentials present but unusable: a key, certificate or algorithm that does not fit, a
    /// client_id or client_secret that is not UTF-8.
    InvalidCredentials,
    /// `ServiceAccountToken`: the ServiceAccount has not opted in to the audience, or the
    /// TokenRequest was refused.
    ServiceAccountTokenDenied,
    /// The managed Secret exists and is not controlled by this OAuthClient.
    SecretConflict,
    /// The stored token expired and no new one could be obtained.
    TokenExpired,
}

impl Reason {
    /// Every reason, in contract order.
    pub const ALL: [Reason; 13] = [
        Reason::CredentialsNotFound,
        Reason::InvalidSpec,
        Reason::InvalidClient,
        Reason::AccessDenied,
        Reason::InvalidScope,
        Reason::InvalidRequest,
        Reason::RateLimited,
        Reason::EndpointUnavailable,
        Reason::InvalidResponse,
        Reason::InvalidCredentials,
        Reason::ServiceAccountTokenDenied,
        Reason::SecretConflict,
        Reason::TokenExpired,
    ];

    /// The reason as written in conditions, events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CredentialsNotFound => "CredentialsNotFound",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::InvalidClient => "InvalidClient",
            Reason::AccessDenied => "AccessDenied",
            Reason::InvalidScope => "InvalidScope",
            Reason::InvalidRequest => "InvalidRequest",
            Reason::RateLimited => "RateLimited",
            Reason::EndpointUnavailable => "EndpointUnavailable",
            Reason::InvalidResponse => "InvalidResponse",
            Reason::InvalidCredentials => "InvalidCredentials",
            Reason::ServiceAccountTokenDenied => "ServiceAccountTokenDenied",
            Reason::SecretConflict => "SecretConflict",
            Reason::TokenExpired => "TokenExpired",
        }
    }

    /// Transient failures retry quickly (about 5 s up to 5 min); the others are fixed by a
    /// person and retry slowly (about 1 min up to 30 min).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Reason::RateLimited | Reason::EndpointUnavailable | Reason::InvalidResponse
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure: a reason and a message that is safe to show anywhere.
///
/// The message never holds a client secret or a token: it is built from the endpoint's
/// `error` / `error_description`, the HTTP status or a scrubbed excerpt of the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    /// The contract reason.
    pub reason: Reason,
    /// A human-readable, secret-free message.
    pub message: String,
    /// The endpoint's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure without a `Retry-After`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Shorthand for [`Reason::InvalidSpec`].
    pub fn invalid_spec(message: impl Into<String>) -> Self {
        Failure::new(Reason::InvalidSpec, message)
    }

    /// Shorthand for [`Reason::InvalidCredentials`].
    pub fn invalid_credentials(message: impl Into<String>) -> Self {
        Failure::new(Reason::InvalidCredentials, message)
    }

    /// Whether the failure was found before any token request was sent (the spec, the
    /// credentials or the ServiceAccount refused it).
    pub fn before_request(&self) -> bool {
        matches!(
            self.reason,
            Reason::InvalidSpec
                | Reason::CredentialsNotFound
                | Reason::InvalidCredentials
                | Reason::ServiceAccountTokenDenied
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_contract_names() {
        let names: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "CredentialsNotFound",
                "InvalidSpec",
                "InvalidClient",
                "AccessDenied",
                "InvalidScope",
                "InvalidRequest",
                "RateLimited",
                "EndpointUnavailable",
                "InvalidResponse",
                "InvalidCredentials",
                "ServiceAccountTokenDenied",
                "SecretConflict",
                "TokenExpired"
            ]
        );
        for r in Reason::ALL {
            assert_eq!(format!("{r:?}"), r.as_str());
        }
    }

    #[test]
    fn transient_reasons_are_the_contract_ones() {
        let transient: Vec<_> = Reason::ALL
            .into_iter()
            .filter(|r| r.is_transient())
            .collect();
        assert_eq!(
            transient,
            [
                Reason::RateLimited,
                Reason::EndpointUnavailable,
                Reason::InvalidResponse
            ]
        );
    }
}
