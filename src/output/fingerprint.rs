//! The fingerprint that tells, after a restart, whether a stored token was issued for the
//! current spec and credentials.
//!
//! It is an HMAC-SHA256, keyed with a random per-token salt, over the exchange settings, the
//! client_id and every credential the method uses: the client_secret (the secret methods,
//! ClientSecretJwt), or the private key and the certificate chain (PrivateKeyJwt,
//! TlsClientAuth; through their [`IdentityKey`](crate::oauth::identity::IdentityKey) digest).
//! ServiceAccountToken stores no credential: its token is requested anew for every exchange and
//! is never kept, so the fingerprint covers what decides that token (the ServiceAccount's name,
//! the audience and the lifetime, all in the settings) and the client_id; the ServiceAccount's
//! opt-in is a permission checked before every TokenRequest, not a credential.
//!
//! It is stored as `v1:<salt>:<mac>` in an annotation of the managed Secret. It reveals nothing
//! usable about the credentials: it is not a plain or unsalted hash, and it changes with every
//! token.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::oauth::credentials::{Proof, Subject};
use crate::oauth::request::Credentials;
use crate::spec::{ExchangeSettings, ServiceAccountSettings, SubjectSettings};

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";

/// Salt length in bytes.
pub const SALT_LEN: usize = 16;

/// A fresh random salt.
pub fn new_salt() -> [u8; SALT_LEN] {
    rand::random()
}

/// Computes the fingerprint for `settings` and `credentials` with `salt`.
pub fn compute(salt: &[u8], settings: &ExchangeSettings, credentials: &Credentials) -> String {
    let mac = mac(salt, settings, credentials).finalize().into_bytes();
    format!("{VERSION}:{}:{}", B64.encode(salt), B64.encode(mac))
}

/// Whether `stored` is the fingerprint of `settings` and `credentials` (constant-time compare).
pub fn matches(stored: &str, settings: &ExchangeSettings, credentials: &Credentials) -> bool {
    let mut parts = stored.split(':');
    let (Some(VERSION), Some(salt), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(salt), Ok(tag)) = (B64.decode(salt), B64.decode(tag)) else {
        return false;
    };
    mac(&salt, settings, credentials).verify_slice(&tag).is_ok()
}

/// A keyed digest of the credential values (HMAC-SHA256 under `key`), to tell whether they
/// changed without keeping them: a metadata-only edit of the credentials Secret leaves it equal.
pub fn credentials_digest(key: &[u8], credentials: &Credentials) -> [u8; 32] {
    let id = &credentials.client_id;
    let canonical = match &credentials.proof {
        Proof::Secret(secret) => serde_json::json!([id, secret.expose()]),
        Proof::Key(identity) => serde_json::json!([id, "key", identity.key().as_bytes()]),
        Proof::ServiceAccount(grant) => {
            serde_json::json!([
                id,
                "serviceAccount",
                grant.name,
                grant.audiences,
                grant.endpoints
            ])
        }
        Proof::Assertion(jwt) => serde_json::json!([id, "assertion", jwt.expose()]),
        Proof::None => serde_json::json!([id, "none"]),
    };
    let canonical = match &credentials.subject {
        None => canonical,
        Some(subject) => serde_json::json!([canonical, "subject", subject_canonical(subject)]),
    };
    keyed_digest(key, canonical.to_string().as_bytes())
}

/// What identifies a subject token: the token itself, or the ServiceAccount and its opt-in
/// (whose token is requested anew for every exchange).
fn subject_canonical(subject: &Subject) -> serde_json::Value {
    match subject {
        Subject::Token(token) => serde_json::json!(["token", token.expose()]),
        Subject::ServiceAccount(grant) => serde_json::json!([
            "serviceAccount",
            grant.name,
            grant.audiences,
            grant.endpoints
        ]),
    }
}

/// What decides a ServiceAccount's token (a client assertion's, or a subject's), as the
/// fingerprint covers it.
fn service_account_json(sa: &ServiceAccountSettings) -> serde_json::Value {
    serde_json::json!({
        "serviceAccountName": sa.name,
        "audience": sa.audience,
        "expirationSeconds": sa.expiration_seconds,
    })
}

/// HMAC-SHA256 of `bytes` under `key`.
pub fn keyed_digest(key: &[u8], bytes: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(bytes);
    mac.finalize().into_bytes().into()
}

fn mac(salt: &[u8], settings: &ExchangeSettings, credentials: &Credentials) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(salt).expect("HMAC takes keys of any length");
    // Every input is JSON-encoded, so field boundaries are unambiguous.
    let headers: Vec<(&str, &[u8])> = settings
        .extra_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let mut canonical = serde_json::json!({
        "tokenUrl": settings.token_url.as_str(),
        "clientAuthMethod": settings.client_auth_method,
        "basicAuthEncoding": settings.basic_auth_encoding,
        "requestEncoding": settings.request_encoding,
        "clientIdInBody": settings.client_id_in_body,
        "audience": settings.audience,
        "scopes": settings.scopes,
        "extraParams": settings.extra_params,
        "extraHeaders": headers,
        "responseFields": settings.response_fields,
        "clientId": credentials.client_id,
    });
    // Only the methods that have them add these, so that the fingerprints of the secret
    // methods stay what they were before the other methods existed.
    if let Some(a) = &settings.assertion {
        canonical["clientAssertion"] = serde_json::json!({
            "algorithm": a.algorithm,
            "keyId": a.key_id,
            "audience": a.audience,
            "lifetimeMs": a.lifetime.as_millis() as u64,
        });
    }
    if let Some(exchange) = &settings.token_exchange {
        let subject = match &exchange.subject {
            SubjectSettings::ServiceAccount(sa) => service_account_json(sa),
            SubjectSettings::Client(name) => serde_json::json!({"oauthClient": name}),
            SubjectSettings::Secret { name, key } => {
                serde_json::json!({"secret": name, "key": key})
            }
        };
        canonical["tokenExchange"] = serde_json::json!({
            "subject": subject,
            "subjectTokenType": exchange.subject_token_type,
            "requestedTokenType": exchange.requested_token_type,
            "resources": exchange.resources,
        });
    }
    if let Some(sa) = &settings.service_account {
        canonical["serviceAccountToken"] = service_account_json(sa);
    }
    mac.update(canonical.to_string().as_bytes());
    mac.update(b"\0");
    match &credentials.proof {
        Proof::Secret(secret) => {
            mac.update(
                serde_json::Value::from(secret.expose().as_str())
                    .to_string()
                    .as_bytes(),
            );
        }
        Proof::Key(identity) => {
            mac.update(b"key:");
            mac.update(identity.key().as_bytes());
        }
        // Nothing stored: see the module documentation.
        Proof::ServiceAccount(_) | Proof::Assertion(_) => mac.update(b"serviceAccountToken"),
        Proof::None => mac.update(b"none"),
    }
    // A token exchange: the subject token read from a Secret or another client is covered (a
    // new one makes the stored token stale); a ServiceAccount's is requested anew each time,
    // and its identity is in the settings.
    match &credentials.subject {
        None => {}
        Some(Subject::Token(token)) => {
            mac.update(b"\0subject:");
            mac.update(
                serde_json::Value::from(token.expose().as_str())
                    .to_string()
                    .as_bytes(),
            );
        }
        Some(Subject::ServiceAccount(_)) => mac.update(b"\0subject:serviceAccount"),
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::crd::OAuthClientSpec;
    use crate::oauth::credentials::Subject;
    use crate::spec::{ClientSettings, Policy};

    fn settings(audience: &str) -> ExchangeSettings {
        let spec: OAuthClientSpec = serde_json::from_value(serde_json::json!({
            "tokenUrl": "https://idp/t", "audience": audience, "credentialsSecretRef": {"name": "c"}
        }))
        .unwrap();
        ClientSettings::resolve(&spec, &Policy::default())
            .unwrap()
            .exchange
    }

    fn creds(id: &str, secret: &str) -> Credentials {
        Credentials::with_secret(id, secret)
    }

    #[test]
    fn matches_only_the_same_settings_and_credentials() {
        let salt = new_salt();
        let fp = compute(&salt, &settings("a"), &creds("id", "secret-1"));
        assert!(matches(&fp, &settings("a"), &creds("id", "secret-1")));
        assert!(!matches(&fp, &settings("a"), &creds("id", "secret-2")));
        assert!(!matches(&fp, &settings("a"), &creds("id2", "secret-1")));
        assert!(!matches(&fp, &settings("b"), &creds("id", "secret-1")));
        assert!(!matches(&fp, &settings("a"), &creds("id", "secret-1\n")));
        for bad in [
            "",
            "v1",
            "v1:x",
            "v2:AAAA:AAAA",
            "v1:!!:!!",
            "v1:AAAA:AAAA:AAAA",
        ] {
            assert!(
                !matches(bad, &settings("a"), &creds("id", "secret-1")),
                "{bad}"
            );
        }
    }

    #[test]
    fn is_salted_and_reveals_nothing() {
        let a = compute(&new_salt(), &settings("a"), &creds("id", "secret-1"));
        let b = compute(&new_salt(), &settings("a"), &creds("id", "secret-1"));
        assert_ne!(a, b, "a fresh salt gives a different fingerprint");
        assert!(!a.contains("secret-1"));
        use sha2::Digest;
        let plain = hex(&Sha256::digest(b"secret-1"));
        let plain_b64 = B64.encode(Sha256::digest(b"secret-1"));
        assert!(!a.contains(&plain) && !a.contains(&plain_b64));
    }

    #[test]
    fn credentials_digest_follows_the_values_only() {
        let key = [7u8; 32];
        let a = credentials_digest(&key, &creds("id", "secret-1"));
        assert_eq!(a, credentials_digest(&key, &creds("id", "secret-1")));
        assert_ne!(a, credentials_digest(&key, &creds("id", "secret-2")));
        assert_ne!(a, credentials_digest(&key, &creds("id2", "secret-1")));
        assert_ne!(a, credentials_digest(&[8u8; 32], &creds("id", "secret-1")));
    }

    /// The credentials of a key (and certificate) fixture.
    fn keyed(id: &str, key: &str, cert: Option<&str>) -> Credentials {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/client-auth/");
        let read = |name: &str| std::fs::read(format!("{dir}{name}")).unwrap();
        let cert = cert.map(read);
        let identity = crate::oauth::identity::Identity::load(
            &read(key),
            "tls.key",
            cert.as_deref().map(|c| (c, "tls.crt")),
        )
        .unwrap();
        Credentials {
            subject: None,
            client_id: id.into(),
            proof: Proof::Key(std::sync::Arc::new(identity)),
        }
    }

    #[test]
    fn covers_the_key_and_the_certificate() {
        let salt = new_salt();
        let with_cert = keyed("id", "ec-p256-sec1.pem", Some("ec-p256.crt"));
        let fp = compute(&salt, &settings("a"), &with_cert);
        assert!(matches(&fp, &settings("a"), &with_cert));
        let again = keyed("id", "ec-p256-sec1.pem", Some("ec-p256.crt"));
        assert!(matches(&fp, &settings("a"), &again));
        for other in [
            keyed("id", "ec-p256-sec1.pem", None),
            keyed("id", "ec-p384-sec1.pem", Some("ec-p384.crt")),
            keyed("id2", "ec-p256-sec1.pem", Some("ec-p256.crt")),
            creds("id", "secret-1"),
        ] {
            assert!(!matches(&fp, &settings("a"), &other), "{other:?}");
        }
        let key = [7u8; 32];
        let digest = credentials_digest(&key, &with_cert);
        assert_eq!(digest, credentials_digest(&key, &again));
        assert_ne!(
            digest,
            credentials_digest(&key, &keyed("id", "ec-p256-sec1.pem", None))
        );
        assert_ne!(
            digest,
            credentials_digest(&key, &keyed("id", "rsa-pkcs1.pem", Some("rsa.crt")))
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn covers_the_subject_token_and_where_it_comes_from() {
        let exchange = |subject: serde_json::Value| {
            let spec: OAuthClientSpec = serde_json::from_value(serde_json::json!({
                "tokenUrl": "https://sts/t", "grantType": "TokenExchange", "clientAuthMethod": "None",
                "tokenExchange": {"subjectToken": subject}
            }))
            .unwrap();
            ClientSettings::resolve(&spec, &Policy::default())
                .unwrap()
                .exchange
        };
        let from_secret =
            exchange(serde_json::json!({"secretRef": {"name": "idp", "key": "token"}}));
        let from_other_key =
            exchange(serde_json::json!({"secretRef": {"name": "idp", "key": "jwt"}}));
        let from_client = exchange(serde_json::json!({"oauthClientRef": {"name": "idp"}}));
        let with = |token: &str| {
            Credentials::public("").with_subject(Subject::Token(crate::base::Sensitive::new(
                token.to_owned(),
            )))
        };
        let fp = compute(&[7; SALT_LEN], &from_secret, &with("subject-one"));
        assert!(matches(&fp, &from_secret, &with("subject-one")));
        // A new subject token, or the same token from elsewhere, is another token's fingerprint.
        assert!(!matches(&fp, &from_secret, &with("subject-two")));
        assert!(!matches(&fp, &from_other_key, &with("subject-one")));
        assert!(!matches(&fp, &from_client, &with("subject-one")));
        assert!(!matches(&fp, &from_secret, &Credentials::public("")));
        assert!(!fp.contains("subject-one"));
        let key = [1; 32];
        assert_ne!(
            credentials_digest(&key, &with("subject-one")),
            credentials_digest(&key, &with("subject-two"))
        );
    }
}
