//! The controller's integration tests, one module per behaviour they prove: the real
//! controller in-process (and, for the metrics endpoint, the binary) against the API-server
//! double, the vendor emulators and the strict client-authentication emulators. When each
//! in-process controller stops, its logs, the statuses and the events are scanned for secrets,
//! keys, assertions and tokens ([`support::harness::Operator::stop`]).
//!
//! * [`issue`]: a client's first token (the contract's layout, templates, names, namespaces);
//! * [`refresh`]: refresh timing, rotation, the refresh-requested annotation, restarts;
//! * [`backoff`]: failures, their reasons and backoff, recovery, API faults;
//! * [`ownership`]: whose Secret the managed Secret is, refused writes, deletion;
//! * [`restore`]: drift restored, and the seal that tells drift from the operator's writes;
//! * [`scheduling`]: the exchange scheduler: the whole budget at one endpoint, fairness;
//! * [`slow_endpoints`]: tarpits and hanging endpoints;
//! * [`client_auth`]: private_key_jwt, client_secret_jwt, tls_client_auth;
//! * [`service_accounts`]: ServiceAccountToken and where its tokens may go;
//! * [`metrics_events`]: event notes, metrics counts, the `/metrics` endpoint;
//! * [`token_exchange`]: RFC 8693 with each subject kind, against a strict exchange endpoint;
//! * [`cluster_clients`]: ClusterOAuthClient: one token, a copy in every selected namespace;
//! * [`common`]: what they share.
//!
//! ## Where the tests came from
//!
//! The modules gather what eight test binaries held, grouped by when they were written. What
//! each said of itself:
//!
//! * `tests/controller.rs` (now in `issue`, `refresh`, `backoff`, `ownership`): "The real
//!   controller against the API-server double and the vendor emulators."
//! * `tests/controller_attacks.rs` (now in `ownership`, `slow_endpoints`, `refresh`,
//!   `metrics_events`): "Attacks on the controller's guards, from the adversarial review of the
//!   security issue: a pending token after the credentials changed, a write denied with 403,
//!   tarpits spread over several endpoints, a refresh request with milliseconds, event notes
//!   over the byte limit. Each failed on the reviewed code."
//! * `tests/controller_guards.rs` (now in `issue`, `ownership`, `slow_endpoints`, `backoff`,
//!   `refresh`, `metrics_events`): "The controller's guards against hostile specs, refused
//!   writes, racing writers and slow endpoints, against the API-server double and the vendor
//!   emulators."
//! * `tests/controller_restore.rs` and `tests/seal_attacks.rs` (now `restore`, with their
//!   module documentation).
//! * `tests/controller_client_auth.rs` (now `client_auth` and `service_accounts`): "The real
//!   controller with each client authentication method beyond shared secrets, against the
//!   API-server double and strict emulators: PrivateKeyJwt and ClientSecretJwt (an RFC 7523
//!   verifier), TlsClientAuth (an mTLS endpoint), ServiceAccountToken (a federation endpoint
//!   that verifies the double's ServiceAccount tokens). For each: the happy path, each failure
//!   reason, rotation, restart reuse with zero token requests, and (when each operator stops)
//!   the scans of logs, statuses and events for keys, assertions, secrets and tokens."
//! * `tests/service_account_endpoints.rs` (now in `service_accounts`) and
//!   `tests/metrics_endpoint.rs` (now in `metrics_events`), with their module documentation.

#[path = "../support/mod.rs"]
mod support;

mod backoff;
mod client_auth;
mod cluster_clients;
mod common;
mod issue;
mod metrics_events;
mod ownership;
mod refresh;
mod restore;
mod scheduling;
mod service_accounts;
mod slow_endpoints;
mod token_exchange;
