//! What a token endpoint's certificate is verified against.
//!
//! * [`Trust::Default`]: the system trust store, plus the anchors of `--ca-file` when it is given
//!   (the transport holds those; see [`crate::oauth::transport::TransportConfig`]).
//! * [`Trust::Bundle`]: one OAuthClient's `spec.caBundleRef` (or `exchange --ca-bundle-file`):
//!   the endpoint is verified against that bundle **alone**, never the system store.
//!
//! A bundle is PEM text holding one or more `CERTIFICATE` sections; other sections (a private
//! key, say) are ignored. A bundle in which no certificate parses as a trust anchor is refused
//! (`InvalidSpec`); a missing object or key is `CredentialsNotFound` naming it. Messages name
//! where the bundle came from, never its content (a CA bundle is not secret, but a Secret key
//! named by mistake might be).
//!
//! Bundles are identified by [`TrustKey`], a SHA-256 over their certificates (sorted, without
//! duplicates), so that OAuthClients whose bundles hold the same certificates share one HTTP
//! client ([`crate::oauth::transport::pool`]). The parsed certificates are kept only until that client is
//! built.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use sha2::{Digest as _, Sha256};

use crate::api::crd::{CaBundleKind, CaBundleRef};
use crate::api::reason::{Failure, Reason};
use crate::oauth::credentials::SecretData;

/// Which trust anchors a pooled HTTP client verifies endpoints against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrustKey {
    /// The default trust: the system store (plus `--ca-file`).
    Default,
    /// A bundle, by the SHA-256 of its certificates.
    Bundle([u8; 32]),
}

impl fmt::Display for TrustKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustKey::Default => f.write_str("default"),
            TrustKey::Bundle(hash) => {
                let short: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
                write!(f, "bundle sha256:{short}")
            }
        }
    }
}

/// The trust an exchange uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The default trust (system store, plus `--ca-file`).
    Default,
    /// This bundle alone.
    Bundle(CaBundle),
}

impl Trust {
    /// The pool key of this trust.
    pub fn key(&self) -> TrustKey {
        match self {
            Trust::Default => TrustKey::Default,
            Trust::Bundle(bundle) => bundle.key(),
        }
    }
}

/// Parsed trust anchors and where they came from. Its `Debug` shows the origin, the number of
/// certificates and the key, never the certificates.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    certificates: Arc<[CertificateDer<'static>]>,
    key: [u8; 32],
    origin: String,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("origin", &self.origin)
            .field("certificates", &self.certificates.len())
            .field("key", &TrustKey::Bundle(self.key).to_string())
            .finish()
    }
}

/// The largest CA bundle read, in PEM bytes: a whole system trust store with a few hundred
/// corporate anchors fits (Debian's is about 220 KB, about 150 certificates).
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// The most certificates a CA bundle may hold.
pub const MAX_BUNDLE_CERTIFICATES: usize = 1000;

impl CaBundle {
    /// Parses PEM text read from `origin` (as messages name it: `ConfigMap corp-ca key ca.crt`,
    /// `--ca-file /etc/ssl/corp.pem`). Sections that are not certificates are skipped; a
    /// certificate that is not a usable trust anchor is skipped too. No usable certificate at
    /// all is `InvalidSpec`.
    pub fn parse(pem: &[u8], origin: impl Into<String>) -> Result<Self, Failure> {
        let origin = origin.into();
        if pem.len() > MAX_BUNDLE_BYTES {
            return Err(Failure::invalid_spec(format!(
                "{origin} is {} bytes, larger than a CA bundle may be ({MAX_BUNDLE_BYTES} bytes)",
                pem.len()
            )));
        }
        let mut skipped = 0usize;
        let mut certificates: Vec<CertificateDer<'static>> = Vec::new();
        for item in CertificateDer::pem_slice_iter(pem) {
            match item {
                Ok(der) if is_anchor(&der) => certificates.push(der),
                Ok(_) | Err(_) => skipped += 1,
            }
        }
        if certificates.len() > MAX_BUNDLE_CERTIFICATES {
            return Err(Failure::invalid_spec(format!(
                "{origin} holds {} certificates, more than a CA bundle may ({MAX_BUNDLE_CERTIFICATES})",
                certificates.len()
            )));
        }
        certificates.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        certificates.dedup();
        if certificates.is_empty() {
            let detail = match skipped {
                0 => "no PEM CERTIFICATE section".to_owned(),
                n => format!("{n} CERTIFICATE section(s), none a parseable X.509 certificate"),
            };
            return Err(Failure::invalid_spec(format!(
                "{origin} holds no parseable PEM certificate ({detail})"
            )));
        }
        if skipped > 0 {
            tracing::warn!(
                origin,
                skipped,
                "CA bundle sections that are not parseable certificates were ignored"
            );
        }
        let key = digest(&certificates);
        Ok(CaBundle {
            certificates: certificates.into(),
            key,
            origin,
        })
    }

    /// The DER certificates (sorted, without duplicates).
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }

    /// The number of certificates.
    pub fn len(&self) -> usize {
        self.certificates.len()
    }

    /// Whether the bundle is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }

    /// The pool key of the bundle.
    pub fn key(&self) -> TrustKey {
        TrustKey::Bundle(self.key)
    }

    /// Where it came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Whether a certificate can be a trust anchor (what the TLS verifier will accept).
fn is_anchor(der: &CertificateDer<'static>) -> bool {
    rustls::RootCertStore::empty().add(der.clone()).is_ok()
}

fn digest(certificates: &[CertificateDer<'static>]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for der in certificates {
        hash.update((der.len() as u64).to_be_bytes());
        hash.update(der.as_ref());
    }
    hash.finalize().into()
}

// === caBundleRef ===

/// How messages name the object a reference points at: `ConfigMap corp-ca`.
pub fn object_name(reference: &CaBundleRef) -> String {
    format!("{} {}", kind_name(reference.kind), reference.name)
}

fn kind_name(kind: CaBundleKind) -> &'static str {
    match kind {
        CaBundleKind::ConfigMap => "ConfigMap",
        CaBundleKind::Secret => "Secret",
    }
}

/// Reads the bundle `reference` names from its object's data (`None`: the object does not
/// exist in `namespace`), by the rules above.
pub fn from_object(
    reference: &CaBundleRef,
    namespace: &str,
    object: Option<&dyn SecretData>,
) -> Result<CaBundle, Failure> {
    let object_name = object_name(reference);
    let Some(data) = object else {
        return Err(Failure::new(
            Reason::CredentialsNotFound,
            format!("{object_name} (spec.caBundleRef) not found in namespace {namespace}"),
        ));
    };
    let key = reference.key.as_str();
    let Some(bytes) = data.bytes(key) else {
        return Err(Failure::new(
            Reason::CredentialsNotFound,
            format!("{object_name} (spec.caBundleRef) has no key {key}"),
        ));
    };
    CaBundle::parse(
        bytes,
        format!("key {key} of {object_name} (spec.caBundleRef)"),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A fresh self-signed CA certificate named `name`, PEM (also for the pool's tests).
    pub(crate) fn ca(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn reference(kind: CaBundleKind) -> CaBundleRef {
        CaBundleRef {
            kind,
            name: "corp-ca".into(),
            key: "ca.crt".into(),
            namespace: None,
        }
    }

    #[test]
    fn oversized_bundles_are_refused_as_invalid_spec_before_they_are_parsed() {
        let one = ca("big");
        let many = one.repeat(MAX_BUNDLE_CERTIFICATES + 1);
        // Duplicates count: the bound is on what is parsed, not on what is kept.
        assert!(many.len() <= MAX_BUNDLE_BYTES, "the count is what is over");
        let refused = CaBundle::parse(many.as_bytes(), "ConfigMap huge key ca.crt").unwrap_err();
        assert_eq!(refused.reason, Reason::InvalidSpec);
        assert!(
            refused.message.starts_with("ConfigMap huge key ca.crt "),
            "{}",
            refused.message
        );
        let padded = format!("{one}{}", "#".repeat(MAX_BUNDLE_BYTES));
        let refused = CaBundle::parse(padded.as_bytes(), "ConfigMap padded").unwrap_err();
        assert_eq!(refused.reason, Reason::InvalidSpec);
        assert!(refused.message.contains("bytes"), "{}", refused.message);
        assert!(!refused.message.contains("BEGIN"), "{}", refused.message);
        // Just under both bounds is fine.
        assert!(CaBundle::parse(one.repeat(10).as_bytes(), "ConfigMap ok").is_ok());
    }

    #[test]
    fn bundles_parse_all_certificates_and_ignore_other_sections() {
        let (a, b) = (ca("a"), ca("b"));
        let key_section = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let text = format!("# comment\n{a}{key_section}{b}{a}");
        let bundle = CaBundle::parse(text.as_bytes(), "test").unwrap();
        assert_eq!(bundle.len(), 2, "two distinct certificates");
        // The same certificates in another order are the same trust.
        let again = CaBundle::parse(format!("{b}{a}").as_bytes(), "other").unwrap();
        assert_eq!(bundle.key(), again.key());
        assert_ne!(
            bundle.key(),
            CaBundle::parse(a.as_bytes(), "a").unwrap().key()
        );
        let shown = format!("{bundle:?}");
        assert!(
            shown.contains("certificates: 2") && !shown.contains("BEGIN"),
            "{shown}"
        );
    }

    #[test]
    fn a_bundle_without_a_parseable_certificate_is_invalid_spec_naming_its_origin() {
        let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        for text in ["", "hello", garbage] {
            let f = CaBundle::parse(text.as_bytes(), "key ca.crt of ConfigMap x").unwrap_err();
            assert_eq!(f.reason, Reason::InvalidSpec);
            assert!(
                f.message
                    .starts_with("key ca.crt of ConfigMap x holds no parseable PEM certificate"),
                "{}",
                f.message
            );
            assert!(!f.message.contains("bm90"), "{}", f.message);
        }
    }

    #[test]
    fn missing_objects_and_keys_are_credentials_not_found_naming_them() {
        let empty: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let f = from_object(&reference(CaBundleKind::ConfigMap), "ns", None).unwrap_err();
        assert_eq!(
            (f.reason, f.message.as_str()),
            (
                Reason::CredentialsNotFound,
                "ConfigMap corp-ca (spec.caBundleRef) not found in namespace ns"
            )
        );
        let f = from_object(&reference(CaBundleKind::Secret), "ns", Some(&empty)).unwrap_err();
        assert_eq!(
            (f.reason, f.message.as_str()),
            (
                Reason::CredentialsNotFound,
                "Secret corp-ca (spec.caBundleRef) has no key ca.crt"
            )
        );
        let data: BTreeMap<String, Vec<u8>> =
            BTreeMap::from([("ca.crt".to_owned(), ca("x").into_bytes())]);
        let bundle = from_object(&reference(CaBundleKind::ConfigMap), "ns", Some(&data)).unwrap();
        assert_eq!(
            bundle.origin(),
            "key ca.crt of ConfigMap corp-ca (spec.caBundleRef)"
        );
        assert_eq!(Trust::Bundle(bundle.clone()).key(), bundle.key());
        assert_eq!(Trust::Default.key().to_string(), "default");
    }
}
