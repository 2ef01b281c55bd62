//! The HTTP clients a client uses, held so that the pool keeps them (and counts them against
//! the namespace's share) while they are in use, and frees them when they are dropped.

use super::change::Change;
use crate::api::crd::CaBundleRef;
use crate::oauth::transport::HttpClient;

/// The HTTP client of a client's `spec.caBundleRef`, kept while the reference and its object's
/// resourceVersion stay the same. The bundle's data is not kept: only the client, which holds
/// the parsed anchors, and which the pool shares with every client of the same bundle.
#[derive(Clone, Debug)]
pub struct TrustHandle {
    /// The reference it was read for.
    pub reference: CaBundleRef,
    /// resourceVersion of the object it was read from.
    pub resource_version: String,
    /// The client.
    pub client: HttpClient,
}

/// The clients held.
#[derive(Clone, Debug, Default)]
pub struct Handles {
    /// The client of the CA bundle, while it is current.
    pub trust: Option<Box<TrustHandle>>,
    /// The client of the identity it last exchanged with (TlsClientAuth): kept while the client
    /// uses that identity, dropped with it.
    pub identity: Option<HttpClient>,
}

/// What a reconcile chose.
#[derive(Clone, Debug, Default)]
pub struct HandlesUpdate {
    /// The client of the CA bundle.
    pub trust: Change<TrustHandle>,
    /// The identity client of the last exchange.
    pub identity: Change<HttpClient>,
}

impl Handles {
    pub(super) fn apply(&mut self, update: HandlesUpdate) {
        update.trust.apply_boxed(&mut self.trust);
        update.identity.apply(&mut self.identity);
    }
}
