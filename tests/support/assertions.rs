//! A strict RFC 7523 client assertion verifier for the token endpoint emulators, independent
//! of the operator's JOSE crate (signatures are checked with ring directly):
//!
//! * `client_assertion_type` is `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, and
//!   neither a client_secret nor a Basic header comes with it;
//! * the JWS: three base64url parts, `alg` one the client is registered for (never `none`), the
//!   signature valid with the registered public key or the client_secret;
//! * the claims: `iss` and `sub` as registered (the client_id for private_key_jwt and
//!   client_secret_jwt; the cluster's issuer and `system:serviceaccount:NS:NAME` for workload
//!   identity federation), `aud` holding the expected audience, `exp` in the future and at most
//!   the allowed lifetime ahead, `iat` (and `nbf`) not in the future beyond the skew, a `jti`
//!   never seen before (a replayed assertion is refused), `client_id` in the body matching.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature;
use serde_json::Value;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The key a client's assertions are checked with.
#[derive(Clone, Debug)]
pub enum VerifyingKey {
    /// A public key (its subjectPublicKey bits) and the algorithms it verifies.
    Public(Vec<u8>, Vec<&'static str>),
    /// The client_secret (HS256, HS384, HS512).
    Secret(String),
}

impl VerifyingKey {
    /// The public key of the leaf certificate in `pem` (a fixture), for `algorithms`.
    pub fn of_certificate(pem: &[u8], algorithms: &[&'static str]) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem).unwrap();
        let spki = rustls::server::ParsedCertificate::try_from(&der)
            .unwrap()
            .subject_public_key_info();
        VerifyingKey::Public(subject_public_key(spki.as_ref()), algorithms.to_vec())
    }
}

/// What the endpoint expects of a client's assertions.
#[derive(Clone, Debug)]
pub struct Expectation {
    pub client_id: String,
    /// `iss`; the client_id when `None`.
    pub issuer: Option<String>,
    /// `sub`; the client_id when `None`.
    pub subject: Option<String>,
    pub audience: String,
    pub key: VerifyingKey,
    /// `exp` at most this far ahead.
    pub max_lifetime: Duration,
    /// Clock skew allowed for `iat` and `nbf`.
    pub skew: Duration,
}

impl Expectation {
    /// The client's own assertions (`iss` = `sub` = client_id, private_key_jwt and
    /// client_secret_jwt) for `audience`, checked with `key`: at most 5 minutes ahead (the
    /// operator's default lifetime), 5 s of skew.
    pub fn of_client(client_id: &str, key: VerifyingKey, audience: &str) -> Self {
        Expectation {
            client_id: client_id.into(),
            issuer: None,
            subject: None,
            audience: audience.into(),
            key,
            max_lifetime: Duration::from_secs(300),
            skew: Duration::from_secs(5),
        }
    }
}

/// Checks assertions and remembers every `jti` it accepted.
#[derive(Default)]
pub struct Verifier {
    seen: Mutex<HashSet<String>>,
}

impl Verifier {
    /// Checks the form body of a token request; `Err` holds the `error_description`.
    pub fn check(
        &self,
        expectation: &Expectation,
        form: &[(String, String)],
        basic: bool,
    ) -> Result<(), String> {
        let get = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if basic || get("client_secret").is_some() {
            return Err("multiple client authentication methods".into());
        }
        if get("client_assertion_type") != Some(JWT_BEARER) {
            return Err("client_assertion_type must be jwt-bearer".into());
        }
        let jwt = get("client_assertion").ok_or("client_assertion is required")?;
        super::harness::seen_secret(jwt);
        if get("client_id").is_some_and(|id| id != expectation.client_id) {
            return Err("client_id does not match the assertion".into());
        }
        let claims = verify_signature(jwt, &expectation.key)?;
        self.check_claims(expectation, &claims)
    }

    fn check_claims(&self, e: &Expectation, claims: &Value) -> Result<(), String> {
        let issuer = e.issuer.as_deref().unwrap_or(&e.client_id);
        let subject = e.subject.as_deref().unwrap_or(&e.client_id);
        if claims["iss"] != issuer {
            return Err(format!("iss must be {issuer}"));
        }
        if claims["sub"] != subject {
            return Err(format!("sub must be {subject}"));
        }
        let aud_ok = match &claims["aud"] {
            Value::String(a) => *a == e.audience,
            Value::Array(list) => list.iter().any(|a| *a == e.audience.as_str()),
            _ => false,
        };
        if !aud_ok {
            return Err(format!("aud must be {}", e.audience));
        }
        let now = jiff::Timestamp::now().as_second();
        let skew = e.skew.as_secs() as i64;
        let exp = claims["exp"].as_i64().ok_or("exp is required")?;
        if exp <= now {
            return Err("the assertion expired".into());
        }
        if exp > now + e.max_lifetime.as_secs() as i64 + skew {
            return Err("exp is too far in the future".into());
        }
        for claim in ["iat", "nbf"] {
            if claims[claim].as_i64().is_some_and(|t| t > now + skew) {
                return Err(format!("{claim} is in the future"));
            }
        }
        if claims["iat"].as_i64().is_none() {
            return Err("iat is required".into());
        }
        let jti = claims["jti"]
            .as_str()
            .filter(|j| !j.is_empty())
            .ok_or("jti is required")?;
        if !self.seen.lock().unwrap().insert(jti.to_owned()) {
            return Err("the assertion was already used (jti replayed)".into());
        }
        Ok(())
    }
}

/// The claims of `jwt` if its signature verifies with `key` under an allowed algorithm.
pub fn verify_signature(jwt: &str, key: &VerifyingKey) -> Result<Value, String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, sig] = parts[..] else {
        return Err("the assertion is not a JWS".into());
    };
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "bad base64url".to_owned())
    };
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    let alg = header["alg"].as_str().unwrap_or("none");
    let input = format!("{}.{}", parts[0], parts[1]);
    let sig = decode(sig)?;
    let ok = match key {
        VerifyingKey::Secret(secret) => {
            let algorithm = match alg {
                "HS256" => ring::hmac::HMAC_SHA256,
                "HS384" => ring::hmac::HMAC_SHA384,
                "HS512" => ring::hmac::HMAC_SHA512,
                _ => return Err(format!("alg {alg} is not allowed for this client")),
            };
            let key = ring::hmac::Key::new(algorithm, secret.as_bytes());
            ring::hmac::verify(&key, input.as_bytes(), &sig).is_ok()
        }
        VerifyingKey::Public(public, allowed) => {
            if !allowed.contains(&alg) {
                return Err(format!("alg {alg} is not allowed for this client"));
            }
            let algorithm: &dyn signature::VerificationAlgorithm = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
                "ES384" => &signature::ECDSA_P384_SHA384_FIXED,
                "EdDSA" => &signature::ED25519,
                _ => return Err(format!("alg {alg} is not supported")),
            };
            signature::UnparsedPublicKey::new(algorithm, public)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        }
    };
    if !ok {
        return Err("the assertion's signature is invalid".into());
    }
    serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())
}

/// The BIT STRING content of a DER SubjectPublicKeyInfo.
pub fn subject_public_key(spki: &[u8]) -> Vec<u8> {
    let header = |at: usize| -> (usize, usize) {
        let len = spki[at + 1];
        if len < 0x80 {
            (at + 2, len as usize)
        } else {
            let n = (len & 0x7f) as usize;
            let l = spki[at + 2..at + 2 + n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize);
            (at + 2 + n, l)
        }
    };
    let (inner, _) = header(0);
    let (alg, alg_len) = header(inner);
    let (bits, bits_len) = header(alg + alg_len);
    spki[bits + 1..bits + bits_len].to_vec()
}
