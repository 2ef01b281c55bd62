//! oauth-token-operator: keeps OAuth2 client-credentials tokens fresh in Kubernetes Secrets.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Each concern lives in the module
//! named for it:
//!
//! | module | holds | I/O |
//! | --- | --- | --- |
//! | [`crd`] | the `OAuthClient` custom resource types and CRD generation | none |
//! | [`presets`] | the vendor preset table | none |
//! | [`settings`] | a spec merged over its preset, validated | none |
//! | [`request`] | building the token request | none |
//! | [`response`] | reading token responses and classifying failures | none |
//! | [`reason`] | failure reasons shared by status, events and metrics | none |
//! | [`template`] | rendering `target.template` | none |
//! | [`duration`] | `90s` / `1h30m` durations | none |
//! | [`redact`] | the type that holds secrets and tokens; the scrubber that keeps them out of messages | none |
//! | [`refresh`] | refresh timing and failure backoff | none |
//! | [`secret`] | the managed Secret's content | none |
//! | [`clock`] | the injected clock | none |
//! | [`plan`] | what a reconcile does: exchange or wait, status, events | none |
//! | [`conditions`] | Ready / Degraded conditions | none |
//! | [`fingerprint`] | salted fingerprint of spec and credentials | none |
//! | [`transport`] | the HTTP client (reqwest + rustls) | HTTP |
//! | [`url_policy`] | where credentials may be sent (deny CIDRs, allowed hosts) | DNS |
//! | [`proxy`] | proxies for token requests (`HTTPS_PROXY`, `NO_PROXY`, ...) | none |
//! | [`exchange`] | one client-credentials exchange, end to end | HTTP |
//! | [`controller`] | watches and the reconcile pipeline | API, HTTP |
//! | [`health`] | `/healthz`, `/readyz`, `/metrics` | HTTP |
//! | [`metrics`] | Prometheus metrics | none |
//! | [`leader`] | leader election over a Lease | API |
//! | [`cli`] | the command line and its commands | files, HTTP |
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod exchange;
pub mod fingerprint;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod presets;
pub mod proxy;
pub mod reason;
pub mod redact;
pub mod refresh;
pub mod request;
pub mod response;
pub mod secret;
pub mod settings;
pub mod template;
pub mod transport;
pub mod url_policy;

/// The name used for the binary, the field manager, the Lease and the chart.
pub const NAME: &str = "oauth-token-operator";

/// The crate version, used in the User-Agent.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The User-Agent sent to token endpoints.
pub fn user_agent() -> String {
    format!("{NAME}/{VERSION}")
}
