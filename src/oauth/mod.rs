//! The client-credentials exchange: reading credentials, building the request, where it may be
//! sent (token URL policy, proxies), what the endpoint is verified against (trust), the HTTP
//! clients (one per trust configuration, pooled), sending it (the transport) and reading the
//! answer.
//! The client-credentials exchange: reading credentials (secrets, keys and certificates),
//! building the client assertion and the request, where it may be sent (token URL policy,
//! proxies), sending it (the transport, with a client per identity for mutual TLS) and reading
//! the answer.

pub mod assertion;
pub mod credentials;
pub mod exchange;
pub mod identity;
pub mod pool;
pub mod proxy;
pub mod request;
pub mod response;
pub mod tls_failure;
pub mod transport;
pub mod trust;
pub mod url_policy;
