//! oauth-token-operator: keeps OAuth2 client-credentials tokens fresh in Kubernetes Secrets.
//!
//! The crate is a library with a thin binary (`src/main.rs`). The folders are the layers, from
//! the foundations up to the command line: each row may use the rows above it and never those
//! below it, and no two files use each other (`tests/layers.rs` checks both):
//!
//! | module | holds | I/O |
//! | --- | --- | --- |
//! | [`base`] | foundations: the wrapper that keeps a secret out of output, the scrubber of echoed secrets, time formats and arithmetic, the clock | none |
//! | [`api`] | the `OAuthClient` types and CRD, label and annotation names, conditions, reasons, `NamespacedName` | none |
//! | [`spec`] | a spec merged over its vendor preset and validated (URL and the token URL policy, client authentication, CA bundle reference, scopes, parameters, headers, refresh, target, templates, durations) | none |
//! | [`oauth`] | the exchange: credentials, client assertions, keys and certificates, request, response, trust, and the transport (the one place that chooses the HTTP client: the pool, mutual TLS, proxies, the token URL policy on resolved addresses, TLS failures in words) | HTTP, DNS |
//! | [`timing`] | refresh time and failure backoff | none |
//! | [`output`] | the managed Secret's content, its fingerprint and its seal | none |
//! | [`decide`] | what a reconcile does (the managed Secret's state, why an exchange is due, status, events, requeue) | none |
//! | [`runtime`] | `/healthz`, `/readyz`, `/metrics` (TLS, TokenReview and SubjectAccessReview), the metrics, leader election | HTTP, API |
//! | [`controller`] | the start-up check, watches, the per-client state, the exchange gate, the seal key, events, the API server's issuer and the reconcile pipeline | API, HTTP |
//! | [`cli`] | the command line: `run`, `crd`, `exchange`; `status`, `renew`, `inspect`; the kubectl plugin | files, HTTP, API |
#![forbid(unsafe_code)]

/// The API group, as a literal for `concat!` (every name under it is built from this).
macro_rules! group {
    () => {
        "oauth.token-operator.dev"
    };
}

/// The operator's name, as a literal for `concat!`.
macro_rules! name {
    () => {
        "oauth-token-operator"
    };
}

pub mod api;
pub mod base;
pub mod cli;
pub mod controller;
pub mod decide;
pub mod oauth;
pub mod output;
pub mod runtime;
pub mod spec;
pub mod timing;

/// The name used for the binary, the field manager, the Lease and the chart.
pub const NAME: &str = name!();

/// The crate version, used in the User-Agent.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The User-Agent sent to token endpoints.
pub fn user_agent() -> String {
    format!("{NAME}/{VERSION}")
}
