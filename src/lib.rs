//! oauth-token-operator: keeps OAuth2 client-credentials tokens fresh in Kubernetes Secrets.
//!
//! The crate is a library with a thin binary (`src/main.rs`). The folders are the layers, from
//! the public API down to the running process:
//!
//! | module | holds | I/O |
//! | --- | --- | --- |
//! | [`api`] | the `OAuthClient` types and CRD, label and annotation names, conditions, reasons, `NamespacedName` | none |
//! | [`spec`] | a spec merged over its vendor preset and validated (URL, client authentication, CA bundle reference, scopes, parameters, headers, refresh, target, templates, durations) | none |
//! | [`oauth`] | the exchange: credentials, client assertions, keys and certificates, request, response, trust, the pool of HTTP clients (mutual TLS included), transport, TLS failures in words, proxies, token URL policy | HTTP, DNS |
//! | [`timing`] | refresh time, failure backoff, time arithmetic, the clock | none |
//! | [`decide`] | what a reconcile does (why an exchange is due, status, events, requeue) | none |
//! | [`output`] | the managed Secret's content, its fingerprint, its seal, keeping secrets out of output | none |
//! | [`controller`] | the start-up check, watches, the per-client memory, the exchange gate, the seal key, events, ServiceAccount tokens and the reconcile pipeline | API, HTTP |
//! | [`runtime`] | `/healthz`, `/readyz`, `/metrics` (TLS, TokenReview and SubjectAccessReview), the metrics, leader election | HTTP, API |
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
