//! A client's key and certificate chain (PrivateKeyJwt, TlsClientAuth), loaded from PEM and
//! checked before anything is sent: an unencrypted PKCS#8, PKCS#1 or SEC1 key of a supported
//! type (RSA of 2048 bits or more, EC P-256 or P-384, Ed25519), certificates that parse, a leaf
//! certificate whose public key is the key's. Every refusal is `InvalidCredentials` and names
//! where the value came from (the Secret key, the file), never its content.
//!
//! An [`Identity`] also carries its [`IdentityKey`]: a digest of the key and the chain (never
//! the key itself) that tells identities apart, so that each has its own HTTP client.

mod pkcs8;

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls::SignatureScheme;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::SigningKey;
use sha2::{Digest as _, Sha256};

use crate::api::crd::AssertionAlgorithm;
use crate::api::reason::Failure;
use crate::base::Sensitive;

/// The type of a client key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA, 2048 bits or more.
    Rsa,
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// Ed25519.
    Ed25519,
}

impl KeyKind {
    /// As messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA",
            KeyKind::EcP256 => "EC P-256",
            KeyKind::EcP384 => "EC P-384",
            KeyKind::Ed25519 => "Ed25519",
        }
    }

    /// The assertion algorithm used when the spec names none.
    pub fn default_algorithm(self) -> AssertionAlgorithm {
        match self {
            KeyKind::Rsa => AssertionAlgorithm::RS256,
            KeyKind::EcP256 => AssertionAlgorithm::ES256,
            KeyKind::EcP384 => AssertionAlgorithm::ES384,
            KeyKind::Ed25519 => AssertionAlgorithm::EdDSA,
        }
    }

    /// Whether the key can sign with `algorithm`.
    pub fn fits(self, algorithm: AssertionAlgorithm) -> bool {
        use AssertionAlgorithm::*;
        match self {
            KeyKind::Rsa => matches!(algorithm, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::EcP256 => algorithm == ES256,
            KeyKind::EcP384 => algorithm == ES384,
            KeyKind::Ed25519 => algorithm == EdDSA,
        }
    }
}

/// A digest of an identity's key and certificate chain, which tells identities apart (HTTP
/// clients are kept per identity). It is SHA-256 over the DER of both: it never holds, and
/// does not reveal, the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey([u8; 32]);

impl IdentityKey {
    /// The digest's bytes (for salted fingerprints).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short: String = self.0[..4].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "IdentityKey({short}…)")
    }
}

/// A certificate chain, leaf first, and the leaf's thumbprints.
#[derive(Clone)]
pub struct Certificates {
    chain: Vec<CertificateDer<'static>>,
    x5t: String,
    x5t_s256: String,
}

impl Certificates {
    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// base64url of the SHA-1 of the leaf's DER (the `x5t` header).
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// base64url of the SHA-256 of the leaf's DER (the `x5t#S256` header).
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }
}

/// A client's private key, with its certificate chain when there is one. `Debug` shows the key
/// type and where it came from, never the key.
pub struct Identity {
    kind: KeyKind,
    signing: Arc<dyn SigningKey>,
    /// The key as the JOSE crate takes it: PKCS#1 for RSA, PKCS#8 for the others.
    jws_der: Sensitive<Vec<u8>>,
    /// The forms of the key a careless echo could show (the PEM block, its base64 body).
    secret_forms: Sensitive<Vec<String>>,
    certificates: Option<Certificates>,
    key_origin: Box<str>,
    digest: IdentityKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("kind", &self.kind)
            .field("key", &self.key_origin)
            .field(
                "certificates",
                &self.certificates.as_ref().map(|c| c.chain.len()),
            )
            .field("digest", &self.digest)
            .finish()
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for Identity {}

impl Identity {
    /// Loads and checks a key (`key_pem`, from `key_origin`) and, when given, its certificate
    /// chain (`certificate`: the PEM and where it came from).
    pub fn load(
        key_pem: &[u8],
        key_origin: &str,
        certificate: Option<(&[u8], &str)>,
    ) -> Result<Identity, Failure> {
        let der = private_key(key_pem, key_origin)?;
        let (kind, signing) = parse_key(&der)
            .map_err(|why| Failure::invalid_credentials(format!("{key_origin}: {why}")))?;
        let certificates = certificate
            .map(|(pem, origin)| certificates(pem, origin, signing.as_ref(), key_origin))
            .transpose()?;
        let secret_forms = vec![
            String::from_utf8_lossy(key_pem).into_owned(),
            STANDARD.encode(der.secret_der()),
        ];
        Ok(Identity {
            kind,
            jws_der: Sensitive::new(jws_der(&der, kind)),
            digest: digest(der.secret_der(), certificates.as_ref()),
            signing,
            secret_forms: Sensitive::new(secret_forms),
            certificates,
            key_origin: key_origin.into(),
        })
    }

    /// The key's type.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The certificate chain, when one was given.
    pub fn certificates(&self) -> Option<&Certificates> {
        self.certificates.as_ref()
    }

    /// Where the key came from, as messages name it (`key tls.key of Secret creds`).
    pub fn key_origin(&self) -> &str {
        &self.key_origin
    }

    /// The digest that tells identities apart.
    pub fn key(&self) -> IdentityKey {
        self.digest
    }

    /// The key for TLS client authentication.
    pub fn signing_key(&self) -> Arc<dyn SigningKey> {
        self.signing.clone()
    }

    /// The key for the JOSE crate (PKCS#1 for RSA, PKCS#8 otherwise). Callers must not log it.
    pub fn jws_der(&self) -> &Sensitive<Vec<u8>> {
        &self.jws_der
    }

    /// Forms of the key for the scrubber. Callers must not log them.
    pub fn secret_forms(&self) -> &Sensitive<Vec<String>> {
        &self.secret_forms
    }
}

/// The first private key of a PEM text; encrypted keys are refused.
fn private_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, Failure> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(Failure::invalid_credentials(format!(
            "{origin} holds an encrypted private key; the operator needs it unencrypted (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
        )));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
            }
            _ => "is not valid PEM",
        };
        Failure::invalid_credentials(format!("{origin} {why}"))
    })
}

/// The key's type and the TLS signing key, or why it cannot be used (never its content).
fn parse_key(der: &PrivateKeyDer<'_>) -> Result<(KeyKind, Arc<dyn SigningKey>), String> {
    // ring says why an RSA key is refused (too small, say); rustls below only that it is.
    let rsa = match der {
        PrivateKeyDer::Pkcs1(k) => Some((
            true,
            ring::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        )),
        PrivateKeyDer::Pkcs8(k) => Some((
            false,
            ring::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        )),
        _ => None,
    };
    match rsa {
        Some((pkcs1, Err(rejected))) => {
            if let Some(why) = describe_rsa(&rejected.to_string(), pkcs1) {
                return Err(why);
            }
        }
        Some((_, Ok(pair))) if pair.public().modulus_len() * 8 < 2048 => {
            return Err("the RSA key is smaller than 2048 bits".into());
        }
        _ => {}
    }
    let signing = rustls::crypto::ring::sign::any_supported_type(der).map_err(|_| {
        "is not a usable private key: RSA (2048 bits or more), EC P-256, EC P-384 and Ed25519 keys are supported, and an EC key must include its public key".to_owned()
    })?;
    let kind = match signing.algorithm() {
        rustls::SignatureAlgorithm::RSA => KeyKind::Rsa,
        rustls::SignatureAlgorithm::ED25519 => KeyKind::Ed25519,
        rustls::SignatureAlgorithm::ECDSA
            if signing
                .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                .is_some() =>
        {
            KeyKind::EcP256
        }
        rustls::SignatureAlgorithm::ECDSA => KeyKind::EcP384,
        _ => return Err("is a key of an unsupported type".into()),
    };
    Ok((kind, signing))
}

/// Why ring refused an RSA key, when that says more than "not usable" (`pkcs1`: the PEM said
/// it is an RSA key).
fn describe_rsa(rejected: &str, pkcs1: bool) -> Option<String> {
    let why = match rejected {
        "TooSmall" => "the RSA key is smaller than 2048 bits",
        "TooLarge" => "the RSA key is larger than the largest supported (8192 bits)",
        "InconsistentComponents" => "the RSA key's components are inconsistent",
        "PrivateModulusLenNotMultipleOf512Bits" => {
            "the RSA key's modulus is not a multiple of 512 bits"
        }
        _ if pkcs1 => "is not a valid RSA private key",
        _ => return None,
    };
    Some(why.to_owned())
}

/// The key as the JOSE crate signs with it.
fn jws_der(der: &PrivateKeyDer<'_>, kind: KeyKind) -> Vec<u8> {
    match (der, kind) {
        (PrivateKeyDer::Pkcs8(k), KeyKind::Rsa) => pkcs8::inner_key(k.secret_pkcs8_der())
            .unwrap_or_default()
            .to_vec(),
        (PrivateKeyDer::Sec1(k), KeyKind::EcP256) => {
            pkcs8::from_sec1(k.secret_sec1_der(), pkcs8::P256)
        }
        (PrivateKeyDer::Sec1(k), KeyKind::EcP384) => {
            pkcs8::from_sec1(k.secret_sec1_der(), pkcs8::P384)
        }
        (other, _) => other.secret_der().to_vec(),
    }
}

/// The certificates of a PEM text, leaf first, checked against the key.
fn certificates(
    pem: &[u8],
    origin: &str,
    key: &dyn SigningKey,
    key_origin: &str,
) -> Result<Certificates, Failure> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|_| Failure::invalid_credentials(format!("{origin} is not valid PEM")))?;
    let Some(leaf) = chain.first() else {
        return Err(Failure::invalid_credentials(format!(
            "{origin} holds no PEM certificate"
        )));
    };
    for (i, cert) in chain.iter().enumerate() {
        rustls::server::ParsedCertificate::try_from(cert).map_err(|_| {
            Failure::invalid_credentials(format!(
                "{origin}: certificate {} of {} cannot be parsed as X.509",
                i + 1,
                chain.len()
            ))
        })?;
    }
    let leaf_spki = rustls::server::ParsedCertificate::try_from(leaf)
        .map(|c| c.subject_public_key_info())
        .ok();
    if leaf_spki.is_none() || key.public_key() != leaf_spki {
        return Err(Failure::invalid_credentials(format!(
            "the certificate in {origin} does not match the private key in {key_origin} (the first certificate must be the key's)"
        )));
    }
    let x5t = URL_SAFE_NO_PAD.encode(
        ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf.as_ref()).as_ref(),
    );
    let x5t_s256 = URL_SAFE_NO_PAD.encode(Sha256::digest(leaf.as_ref()));
    Ok(Certificates {
        chain,
        x5t,
        x5t_s256,
    })
}

/// SHA-256 over the key and the chain, each length-prefixed.
fn digest(key: &[u8], certificates: Option<&Certificates>) -> IdentityKey {
    let mut hash = Sha256::new();
    hash.update(b"oauth-token-operator identity v1\0");
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    part(key);
    for cert in certificates.map(Certificates::chain).unwrap_or_default() {
        part(cert.as_ref());
    }
    IdentityKey(hash.finalize().into())
}

#[cfg(test)]
pub(crate) mod tests;
