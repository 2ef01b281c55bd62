//! TLS for the HTTP clients of mutual TLS (`TlsClientAuth`): the identity's chain and key
//! presented when the server asks, **no session resumption** (a TLS 1.3 ticket carries the
//! identity it was issued to; none is kept, so none can be offered for another identity), and
//! the endpoint verified against the client's trust (the default trust, or its bundle alone).
//!
//! Requests for different identities never share a connection either: the pool keys clients by
//! (trust, identity), so each identity has its own client and connection pool.

use std::fmt;
use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::ServerCertVerifier;
use rustls::sign::CertifiedKey;

use crate::api::reason::{Failure, Reason};
use crate::oauth::identity::Identity;

/// TLS for one identity: its chain and key presented when asked, no session resumption,
/// `verifier` for the endpoint, HTTP/2 or HTTP/1.1.
pub(super) fn tls_config(
    identity: &Identity,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, Failure> {
    let chain = identity
        .certificates()
        .map(|c| c.chain().to_vec())
        .ok_or_else(|| {
            Failure::invalid_credentials(format!(
                "mutual TLS needs a certificate beside the key in {}",
                identity.key_origin()
            ))
        })?;
    let certified = Arc::new(CertifiedKey::new(chain, identity.signing_key()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new(Reason::EndpointUnavailable, format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(Presented(certified)));
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Presents one certificate chain whenever the server asks for a client certificate.
struct Presented(Arc<CertifiedKey>);

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Presented")
    }
}

impl ResolvesClientCert for Presented {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .key
            .choose_scheme(sigschemes)
            .map(|_| Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The verifier of the default trust: the platform's (the system store) and `extra`
/// (`--ca-file`). Built once per pool and shared by its identity clients.
pub(super) fn default_verifier(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls_platform_verifier::Verifier::new_with_extra_roots(extra.iter().cloned(), provider)
        .map(|v| Arc::new(v) as Arc<dyn ServerCertVerifier>)
        .map_err(|e| format!("TLS: no trust store to verify token endpoints with: {e}"))
}

/// The verifier of a bundle alone.
pub(super) fn bundle_verifier(
    bundle: &crate::oauth::transport::trust::CaBundle,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(bundle.certificates().iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map(|v| v as Arc<dyn ServerCertVerifier>)
        .map_err(|e| format!("TLS: cannot verify with {}: {e}", bundle.origin()))
}
