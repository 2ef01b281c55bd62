//! The double's ServiceAccount token issuer: `serviceaccounts/<name>/token` (TokenRequest,
//! create) returns a JWT signed with a P-256 key that the double publishes to the tests
//! ([`Issuer::public_key`]), with the claims a real API server writes (`iss`, `sub` =
//! `system:serviceaccount:NS:NAME`, `aud`, `exp`, `iat`, `nbf`, `jti`, `kubernetes.io`), and
//! `status.expirationTimestamp`; and the discovery document `/.well-known/openid-configuration`
//! naming the issuer.

use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

/// The double's issuer (not one of the in-cluster names, so that only discovery tells it).
pub const ISSUER: &str = "https://oidc.double.test/cluster";
/// The `kid` of its signing key.
pub const KID: &str = "double-signing-key";

/// Signs ServiceAccount tokens and remembers every one it issued (for the leak scans).
pub struct Issuer {
    key: EcdsaKeyPair,
    issued: Mutex<Vec<String>>,
    /// The API server's own audiences (`--api-audiences`): a TokenRequest with no audience is
    /// filled with them, as a real API server does.
    api_audiences: Mutex<Vec<String>>,
}

impl Issuer {
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        Issuer {
            key,
            issued: Mutex::default(),
            api_audiences: Mutex::new(vec![ISSUER.to_owned()]),
        }
    }

    /// Sets the API server's own audiences.
    pub fn set_api_audiences(&self, audiences: Vec<String>) {
        *self.api_audiences.lock().unwrap() = audiences;
    }

    /// The public key (an uncompressed P-256 point), to verify the tokens with.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Every token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    /// The answer to a TokenRequest for the ServiceAccount `sa` (its object) of `namespace`.
    pub fn token_request(
        &self,
        namespace: &str,
        sa: &Value,
        body: &Value,
    ) -> Result<Value, (u16, String)> {
        let name = sa["metadata"]["name"].as_str().unwrap_or_default();
        let mut audiences: Vec<String> = body["spec"]["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if audiences.is_empty() {
            audiences = self.api_audiences.lock().unwrap().clone();
        }
        let mut spec = body["spec"].clone();
        spec["audiences"] = json!(audiences);
        let seconds = body["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
        if seconds < 600 {
            return Err((
                422,
                format!(
                    "TokenRequest.authentication.k8s.io \"{name}\" is invalid: spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        let now = jiff::Timestamp::now().as_second();
        let claims = json!({
            "aud": audiences,
            "exp": now + seconds,
            "iat": now,
            "nbf": now,
            "iss": ISSUER,
            "jti": format!("{:032x}", rand::random::<u128>()),
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]},
            },
        });
        let token = self.sign(&claims);
        self.issued.lock().unwrap().push(token.clone());
        let expires = jiff::Timestamp::from_second(now + seconds)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        Ok(json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expires},
        }))
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": KID});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

/// The API server's OpenID discovery document.
pub fn discovery() -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}
