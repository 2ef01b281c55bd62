//! The client-credentials exchange: reading credentials, building the request, where it may be
//! sent (token URL policy, proxies), sending it (the transport) and reading the answer.

pub mod credentials;
pub mod exchange;
pub mod proxy;
pub mod request;
pub mod response;
pub mod transport;
pub mod url_policy;
