//! The real controller with each client authentication method beyond shared secrets and
//! ServiceAccount tokens, against the API-server double and strict emulators: PrivateKeyJwt
//! and ClientSecretJwt (an RFC 7523 verifier), TlsClientAuth (an mTLS endpoint). For each: the
//! happy path, each failure reason, rotation, restart reuse with zero token requests, and (when
//! each operator stops) the scans of logs, statuses and events for keys, assertions, secrets
//! and tokens.

use std::time::{Duration, Instant};

use crate::common::{b64, sleep};
use crate::support::apiserver::{ApiServer, SECRETS};
use crate::support::assertions::{Expectation, VerifyingKey};
use crate::support::builders::{SecretObject, Spec, create_client};
use crate::support::harness::*;
use crate::support::mtls::{MtlsServer, fixture};
use crate::support::vendors::*;
use serde_json::json;

const NS: &str = "payments";

/// A credentials Secret with a client_id and, when given, a key and a certificate (as
/// cert-manager writes them: a kubernetes.io/tls Secret).
fn key_secret(api: &ApiServer, name: &str, id: &str, key: Option<&[u8]>, cert: Option<&[u8]>) {
    let mut secret = SecretObject::named(name)
        .type_("kubernetes.io/tls")
        .entry("client_id", id);
    if let Some(key) = key {
        secret = secret.bytes("tls.key", key);
    }
    if let Some(cert) = cert {
        secret = secret.bytes("tls.crt", cert);
    }
    secret.create(api, NS);
}

fn spec(url: &str, method: &str, secret: &str) -> Spec {
    Spec::to(url).method(method).credentials(secret)
}

/// Token requests the emulator received for `client_id`.
fn requests_of(vendor: &TokenServer, client_id: &str) -> usize {
    vendor
        .requests()
        .iter()
        .filter(|r| {
            r.form()
                .iter()
                .any(|(k, v)| k == "client_id" && v == client_id)
        })
        .count()
}

// === PrivateKeyJwt ===

/// A client of the PrivateKeyJwt tests: its Secret's key and certificate, and what the
/// provider has registered for it.
struct KeyClient {
    name: &'static str,
    key: &'static str,
    cert: Option<&'static str>,
    registered: &'static str,
    algorithms: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_reaches_ready_with_each_key_type_and_encoding() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    let url = vendor.url();
    let client = |name, key, cert, registered, algorithms| KeyClient {
        name,
        key,
        cert,
        registered,
        algorithms,
    };
    let good = [
        client(
            "rsa",
            "rsa-pkcs1.pem",
            Some("rsa.crt"),
            "rsa.crt",
            &["RS256"],
        ),
        client("rsa8", "rsa-pkcs8.pem", None, "rsa.crt", &["RS256"]),
        client(
            "p256",
            "ec-p256-sec1.pem",
            Some("ec-p256.crt"),
            "ec-p256.crt",
            &["ES256"],
        ),
        client("ed", "ed25519-pkcs8.pem", None, "ed25519.crt", &["EdDSA"]),
    ];
    for c in &good {
        let id = format!("{}-client", c.name);
        let registered = VerifyingKey::of_certificate(&fixture(c.registered), c.algorithms);
        vendor.expect_assertions(Expectation::of_client(&id, registered, &url));
        key_secret(
            &api,
            c.name,
            &id,
            Some(&fixture(c.key)),
            c.cert.map(fixture).as_deref(),
        );
        create_client(&api, NS, c.name, &spec(&url, "PrivateKeyJwt", c.name));
    }
    for c in &good {
        wait_ready(&api, NS, c.name, "True", "TokenIssued").await;
        assert_eq!(
            requests_of(&vendor, &format!("{}-client", c.name)),
            1,
            "{}",
            c.name
        );
    }
    assert!(api.violations().is_empty(), "{:?}", api.violations());
    operator.stop().await;
}

/// A client whose credentials cannot work, and what the operator must say.
struct Refusal {
    name: &'static str,
    key: Option<Vec<u8>>,
    cert: Option<&'static str>,
    /// `spec.clientAssertion.algorithm`, when set.
    algorithm: Option<&'static str>,
    reason: &'static str,
    message: &'static str,
}

/// Keys that cannot work, each refused before anything is sent.
fn key_refusals() -> [Refusal; 5] {
    let refusal = |name, key, cert, algorithm, reason, message| Refusal {
        name,
        key,
        cert,
        algorithm,
        reason,
        message,
    };
    [
        refusal(
            "garbled",
            Some(b"not a PEM key".to_vec()),
            None,
            None,
            "InvalidCredentials",
            "key tls.key of Secret garbled holds no PEM private key",
        ),
        refusal(
            "mismatch",
            Some(fixture("rsa-pkcs1.pem")),
            None,
            Some("ES256"),
            "InvalidCredentials",
            "spec.clientAssertion.algorithm ES256 does not fit the RSA key in key tls.key of Secret mismatch",
        ),
        refusal(
            "foreign-cert",
            Some(fixture("rsa-other-pkcs1.pem")),
            Some("rsa.crt"),
            None,
            "InvalidCredentials",
            "the certificate in key tls.crt of Secret foreign-cert does not match the private key in key tls.key of Secret foreign-cert",
        ),
        refusal(
            "no-key",
            None,
            None,
            None,
            "CredentialsNotFound",
            "Secret no-key has no key tls.key",
        ),
        refusal(
            "locked",
            Some(fixture("rsa-encrypted-pkcs8.pem")),
            None,
            None,
            "InvalidCredentials",
            "key tls.key of Secret locked holds an encrypted private key",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_refusals_have_their_reasons_and_only_a_wrong_key_is_sent() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    let url = vendor.url();
    let rsa = VerifyingKey::of_certificate(&fixture("rsa.crt"), &["RS256"]);
    vendor.expect_assertions(Expectation::of_client("wrong-client", rsa.clone(), &url));
    key_secret(
        &api,
        "wrong",
        "wrong-client",
        Some(&fixture("rsa-other-pkcs1.pem")),
        None,
    );
    create_client(&api, NS, "wrong", &spec(&url, "PrivateKeyJwt", "wrong"));
    let (_, _, message) = wait_ready(&api, NS, "wrong", "False", "InvalidClient").await;
    assert!(message.contains("signature is invalid"), "{message}");

    let refusals = key_refusals();
    for r in &refusals {
        let id = format!("{}-client", r.name);
        vendor.expect_assertions(Expectation::of_client(&id, rsa.clone(), &url));
        key_secret(
            &api,
            r.name,
            &id,
            r.key.as_deref(),
            r.cert.map(fixture).as_deref(),
        );
        let mut spec = spec(&url, "PrivateKeyJwt", r.name);
        if let Some(algorithm) = r.algorithm {
            spec = spec.assertion_algorithm(algorithm);
        }
        create_client(&api, NS, r.name, &spec);
    }
    for r in &refusals {
        let (_, _, message) = wait_ready(&api, NS, r.name, "False", r.reason).await;
        assert!(message.starts_with(r.message), "{}: {message}", r.name);
        assert!(
            !message.contains("BEGIN") && !message.contains("MII"),
            "{message}"
        );
        assert_eq!(
            requests_of(&vendor, &format!("{}-client", r.name)),
            0,
            "{}",
            r.name
        );
    }
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_key_rotation_exchanges_again_a_label_does_not_and_a_restart_reuses() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    let url = vendor.url();
    let p256 = VerifyingKey::of_certificate(&fixture("ec-p256.crt"), &["ES256"]);
    vendor.expect_assertions(Expectation::of_client("app", p256, &url));
    key_secret(
        &api,
        "keys",
        "app",
        Some(&fixture("ec-p256-sec1.pem")),
        Some(&fixture("ec-p256.crt")),
    );
    create_client(&api, NS, "app", &spec(&url, "PrivateKeyJwt", "keys"));
    wait_ready(&api, NS, "app", "True", "TokenIssued").await;
    assert_eq!(vendor.count(), 1);

    api.modify(SECRETS, NS, "keys", |s| {
        s["metadata"]["labels"] = json!({"team": "payments"})
    });
    sleep(3000).await;
    assert_eq!(vendor.count(), 1, "a label change is no credential change");

    // The provider gets the new key's certificate; the Secret moves to the new key.
    let p384 = VerifyingKey::of_certificate(&fixture("ec-p384.crt"), &["ES384"]);
    vendor.expect_assertions(Expectation::of_client("app", p384, &url));
    let rotated = Instant::now();
    api.modify(SECRETS, NS, "keys", |s| {
        s["data"]["tls.key"] = b64(fixture("ec-p384-pkcs8.pem"));
        s["data"]["tls.crt"] = b64(fixture("ec-p384.crt"));
    });
    eventually(
        "a new exchange after the rotation",
        Duration::from_secs(10),
        || (vendor.count() == 2).then_some(()),
    )
    .await;
    assert!(
        rotated.elapsed() < Duration::from_secs(5),
        "{:?}",
        rotated.elapsed()
    );
    wait_ready(&api, NS, "app", "True", "TokenIssued").await;
    eventually("the new token stored", Duration::from_secs(5), || {
        secret_value(&api, NS, "app-token", "access_token")
            .filter(|t| Some(t) == vendor.issued().last())
    })
    .await;
    operator.stop().await;

    let writes = api.count("patch secrets");
    let again = Operator::start(&api, &[], 4);
    again.ready().await;
    sleep(2000).await;
    assert_eq!(
        vendor.count(),
        2,
        "the stored token is reused after a restart"
    );
    assert_eq!(api.count("patch secrets"), writes);
    assert_eq!(
        condition(&api, NS, "app", "Ready").unwrap().1,
        "TokenIssued"
    );
    again.stop().await;
}

// === ClientSecretJwt ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_jwt_is_macd_with_the_secret_a_wrong_secret_is_invalid_client_and_a_restart_reuses()
 {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    let url = vendor.url();
    let secret = "a-client-secret-long-enough-for-hs512-000000000000000000000000000";
    let registered = |id: &str, secret: &str| {
        Expectation::of_client(id, VerifyingKey::Secret(secret.into()), &url)
    };
    vendor.expect_assertions(registered("hs", secret));
    credentials(&api, NS, "hs-creds", "hs", secret);
    let hs512 = spec(&url, "ClientSecretJwt", "hs-creds")
        .assertion_algorithm("HS512")
        .assertion_lifetime("60s");
    create_client(&api, NS, "hs", &hs512);
    wait_ready(&api, NS, "hs", "True", "TokenIssued").await;
    let body = vendor.requests()[0].form();
    assert!(body.iter().all(|(k, _)| k != "client_secret"), "{body:?}");

    credentials(
        &api,
        NS,
        "wrong-creds",
        "wrong",
        "not-the-registered-secret-00000000",
    );
    vendor.expect_assertions(registered("wrong", secret));
    create_client(
        &api,
        NS,
        "wrong",
        &spec(&url, "ClientSecretJwt", "wrong-creds"),
    );
    wait_ready(&api, NS, "wrong", "False", "InvalidClient").await;

    // Rotation of the secret on both sides retries at once.
    vendor.expect_assertions(registered("wrong", "not-the-registered-secret-00000001"));
    api.modify(SECRETS, NS, "wrong-creds", |s| {
        s["data"]["client_secret"] = b64(b"not-the-registered-secret-00000001");
    });
    wait_ready(&api, NS, "wrong", "True", "TokenIssued").await;
    operator.stop().await;

    // A restart reuses both stored tokens: no assertion is sent, nothing is written.
    let (requests, writes) = (vendor.count(), api.count("patch secrets"));
    let again = Operator::start(&api, &[], 4);
    again.ready().await;
    sleep(2000).await;
    assert_eq!(vendor.count(), requests, "the stored tokens are reused");
    assert_eq!(api.count("patch secrets"), writes);
    for name in ["hs", "wrong"] {
        assert_eq!(condition(&api, NS, name, "Ready").unwrap().1, "TokenIssued");
    }
    again.stop().await;
}

// === TlsClientAuth ===

fn trusting_the_test_ca() -> Options {
    Options {
        ca_file: Some(
            oauth_token_operator::oauth::transport::trust::CaBundle::parse(
                &fixture("ca.crt"),
                "the test CA",
            )
            .unwrap(),
        ),
        ..Options::default()
    }
}

/// The Secrets of the TlsClientAuth clients `a` and `b` (each with its registered key and
/// certificate), `foreign` (a certificate of another CA for the same key), `no-cert` and
/// `mismatch` (a certificate of another key).
fn tls_secrets(api: &ApiServer) {
    let p256_key = fixture("ec-p256-sec1.pem");
    let secrets: [(&str, &str, &[u8], Option<&str>); 5] = [
        ("a", "mtls-a", &p256_key, Some("ec-p256.crt")),
        ("b", "mtls-b", &fixture("rsa-pkcs8.pem"), Some("rsa.crt")),
        // A certificate of another CA, for the same key.
        ("foreign", "foreign", &p256_key, Some("ec-p256-foreign.crt")),
        ("no-cert", "mtls-a", &p256_key, None),
        ("mismatch", "mtls-a", &p256_key, Some("rsa.crt")),
    ];
    for (name, id, key, cert) in secrets {
        key_secret(api, name, id, Some(key), cert.map(fixture).as_deref());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_auth_presents_the_certificate_and_refuses_what_cannot_work() {
    let api = ApiServer::start().await;
    let endpoint = MtlsServer::start().await;
    let operator = Operator::start_with(&api, &[], 4, trusting_the_test_ca());
    let url = endpoint.url();
    endpoint.register("mtls-a", &fixture("ec-p256.crt"));
    endpoint.register("mtls-b", &fixture("rsa.crt"));
    endpoint.register("foreign", &fixture("ec-p256.crt"));
    tls_secrets(&api);
    for name in ["a", "b", "foreign", "no-cert", "mismatch"] {
        create_client(&api, NS, name, &spec(&url, "TlsClientAuth", name));
    }
    wait_ready(&api, NS, "a", "True", "TokenIssued").await;
    wait_ready(&api, NS, "b", "True", "TokenIssued").await;
    let (_, _, message) = wait_ready(&api, NS, "foreign", "False", "InvalidClient").await;
    assert!(message.contains("not issued by a trusted CA"), "{message}");
    let (_, _, message) = wait_ready(&api, NS, "no-cert", "False", "CredentialsNotFound").await;
    assert_eq!(message, "Secret no-cert has no key tls.crt");
    let (_, _, message) = wait_ready(&api, NS, "mismatch", "False", "InvalidCredentials").await;
    assert!(
        message.contains("does not match the private key"),
        "{message}"
    );
    // Each identity reached the endpoint with its own certificate; the refused ones never.
    let served = endpoint.served();
    let leaf = |pem: &str| {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::from_pem_slice(&fixture(pem))
            .unwrap()
            .as_ref()
            .to_vec()
    };
    for (id, cert) in [("mtls-a", "ec-p256.crt"), ("mtls-b", "rsa.crt")] {
        let mine: Vec<_> = served
            .iter()
            .filter(|s| s.client_id.as_deref() == Some(id))
            .collect();
        assert_eq!(mine.len(), 1, "{id}: {served:?}");
        assert_eq!(
            (mine[0].status, mine[0].certificate.as_deref()),
            (200, Some(&leaf(cert)[..]))
        );
    }
    assert_eq!(
        served.len(),
        3,
        "a, b and the foreign certificate: {served:?}"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_auth_certificate_rotation_and_restart_reuse() {
    let api = ApiServer::start().await;
    let endpoint = MtlsServer::start().await;
    let operator = Operator::start_with(&api, &[], 4, trusting_the_test_ca());
    endpoint.register("app", &fixture("ec-p256.crt"));
    key_secret(
        &api,
        "tls",
        "app",
        Some(&fixture("ec-p256-sec1.pem")),
        Some(&fixture("ec-p256.crt")),
    );
    create_client(
        &api,
        NS,
        "app",
        &spec(&endpoint.url(), "TlsClientAuth", "tls"),
    );
    wait_ready(&api, NS, "app", "True", "TokenIssued").await;
    // cert-manager renews: new key and certificate in the same Secret.
    endpoint.register("app", &fixture("ed25519.crt"));
    api.modify(SECRETS, NS, "tls", |s| {
        s["data"]["tls.key"] = b64(fixture("ed25519-pkcs8.pem"));
        s["data"]["tls.crt"] = b64(fixture("ed25519.crt"));
    });
    eventually(
        "an exchange with the new certificate",
        Duration::from_secs(10),
        || (endpoint.count() == 2).then_some(()),
    )
    .await;
    wait_ready(&api, NS, "app", "True", "TokenIssued").await;
    operator.stop().await;

    let again = Operator::start_with(&api, &[], 4, trusting_the_test_ca());
    again.ready().await;
    sleep(2000).await;
    assert_eq!(endpoint.count(), 2, "reused after the restart");
    assert_eq!(endpoint.handshakes().len(), 2, "not even a connection");
    again.stop().await;
}
