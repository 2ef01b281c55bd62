//! The client-credentials exchange: the client's credentials (secrets, keys and certificates),
//! the client assertion, the request, sending it through the HTTP client the transport chooses
//! for the endpoint's trust and the client's identity ([`transport`]), and reading the answer.

pub mod assertion;
pub mod credentials;
pub mod exchange;
pub mod identity;
pub mod request;
pub mod response;
pub mod transport;
