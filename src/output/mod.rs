//! What the operator writes: the managed Secret's content, the fingerprint that ties a stored
//! token to the spec and credentials, and the guard that keeps secrets out of everything shown.

pub mod fingerprint;
pub mod mac;
pub mod secret;
