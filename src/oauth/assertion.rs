//! The client assertion of ClientSecretJwt and PrivateKeyJwt (RFC 7523 section 2.2 and 3, OIDC
//! Core section 9), built and signed by the `jsonwebtoken` crate, as pure code: the clock
//! reading and the random bytes of the `jti` are inputs, so a test fixes both.
//!
//! * header: `alg`, `typ: JWT`, `kid` when `clientAssertion.keyId` is set, and with a certificate
//!   `x5t` (base64url SHA-1 of its DER) and `x5t#S256`;
//! * claims: `iss` = `sub` = client_id, `aud` = `clientAssertion.audience` (default the token
//!   URL), `jti` (a UUIDv4 from 122 random bits), `iat` = now, `exp` = now + lifetime.
//!
//! A new assertion is built for every token request. The client_secret (HS*) and the private
//! key never leave the process.

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::api::crd::AssertionAlgorithm;
use crate::api::reason::Failure;
use crate::base::Sensitive;
use crate::oauth::identity::Identity;
use crate::spec::AssertionSettings;

/// `client_assertion_type` of RFC 7523 section 2.2.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What signs the assertion.
#[derive(Clone, Copy, Debug)]
pub enum Signer<'a> {
    /// The client_secret (ClientSecretJwt).
    Secret(&'a Sensitive<String>),
    /// The private key (PrivateKeyJwt).
    Key(&'a Identity),
}

/// The claims, in the order they are written.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

/// Builds and signs an assertion for `client_id` at `now`, its `jti` from `random`.
pub fn build(
    settings: &AssertionSettings,
    client_id: &str,
    signer: Signer<'_>,
    now: Timestamp,
    random: [u8; 16],
) -> Result<Sensitive<String>, Failure> {
    let algorithm = algorithm(settings, signer)?;
    let mut header = Header::new(jose_algorithm(algorithm));
    header.kid = settings.key_id.clone();
    if let Signer::Key(identity) = signer
        && let Some(certificates) = identity.certificates()
    {
        header.x5t = Some(certificates.x5t().to_owned());
        header.x5t_s256 = Some(certificates.x5t_s256().to_owned());
    }
    let iat = now.as_second();
    let lifetime = i64::try_from(settings.lifetime.as_secs()).unwrap_or(i64::MAX);
    let claims = Claims {
        iss: client_id,
        sub: client_id,
        aud: &settings.audience,
        jti: uuid_v4(random),
        iat,
        exp: iat.saturating_add(lifetime),
    };
    let key = match signer {
        Signer::Secret(secret) => EncodingKey::from_secret(secret.expose().as_bytes()),
        Signer::Key(identity) => {
            let der = identity.jws_der().expose();
            match algorithm {
                AssertionAlgorithm::ES256 | AssertionAlgorithm::ES384 => {
                    EncodingKey::from_ec_der(der)
                }
                AssertionAlgorithm::EdDSA => EncodingKey::from_ed_der(der),
                _ => EncodingKey::from_rsa_der(der),
            }
        }
    };
    jsonwebtoken::encode(&header, &claims, &key)
        .map(Sensitive::new)
        .map_err(|_| {
            Failure::invalid_credentials(format!(
                "{} could not sign the client assertion with {}",
                what_signs(signer),
                algorithm.as_str()
            ))
        })
}

/// The algorithm: the spec's, or the key's default; it must fit the key.
fn algorithm(
    settings: &AssertionSettings,
    signer: Signer<'_>,
) -> Result<AssertionAlgorithm, Failure> {
    match signer {
        Signer::Secret(_) => {
            let algorithm = settings.algorithm.unwrap_or(AssertionAlgorithm::HS256);
            if algorithm.is_hmac() {
                Ok(algorithm)
            } else {
                Err(Failure::invalid_spec(format!(
                    "spec.clientAssertion.algorithm {} needs a private key; ClientSecretJwt uses HS256, HS384 or HS512",
                    algorithm.as_str()
                )))
            }
        }
        Signer::Key(identity) => {
            let kind = identity.kind();
            let algorithm = settings.algorithm.unwrap_or(kind.default_algorithm());
            if kind.fits(algorithm) {
                Ok(algorithm)
            } else {
                Err(Failure::invalid_credentials(format!(
                    "spec.clientAssertion.algorithm {} does not fit the {} key in {}",
                    algorithm.as_str(),
                    kind.as_str(),
                    identity.key_origin()
                )))
            }
        }
    }
}

fn what_signs(signer: Signer<'_>) -> String {
    match signer {
        Signer::Secret(_) => "the client_secret".into(),
        Signer::Key(identity) => format!("the private key in {}", identity.key_origin()),
    }
}

fn jose_algorithm(algorithm: AssertionAlgorithm) -> Algorithm {
    match algorithm {
        AssertionAlgorithm::RS256 => Algorithm::RS256,
        AssertionAlgorithm::RS384 => Algorithm::RS384,
        AssertionAlgorithm::RS512 => Algorithm::RS512,
        AssertionAlgorithm::PS256 => Algorithm::PS256,
        AssertionAlgorithm::PS384 => Algorithm::PS384,
        AssertionAlgorithm::PS512 => Algorithm::PS512,
        AssertionAlgorithm::ES256 => Algorithm::ES256,
        AssertionAlgorithm::ES384 => Algorithm::ES384,
        AssertionAlgorithm::EdDSA => Algorithm::EdDSA,
        AssertionAlgorithm::HS256 => Algorithm::HS256,
        AssertionAlgorithm::HS384 => Algorithm::HS384,
        AssertionAlgorithm::HS512 => Algorithm::HS512,
    }
}

/// 16 random bytes as a UUIDv4 (RFC 9562): 122 of their bits, the version and variant set.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests;
