//! What the operator writes: the managed Secret's content ([`secret`]), the fingerprint that ties
//! a stored token to the spec and credentials ([`fingerprint`]), and the seal of what it wrote
//! ([`mac`]). The guard that keeps secrets out of everything shown is [`crate::base::scrub`].

pub mod fingerprint;
pub mod mac;
pub mod secret;
