//! The real controller with each client authentication method beyond shared secrets, against
//! the API-server double and strict emulators: PrivateKeyJwt and ClientSecretJwt (an RFC 7523
//! verifier), TlsClientAuth (an mTLS endpoint), ServiceAccountToken (a federation endpoint that
//! verifies the double's ServiceAccount tokens). For each: the happy path, each failure reason,
//! rotation, restart reuse with zero token requests, and (when each operator stops) the scans
//! of logs, statuses and events for keys, assertions, secrets and tokens.

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::apiserver::{ApiServer, Matcher, SECRETS, SERVICEACCOUNTS};
use support::assertions::{Expectation, VerifyingKey};
use support::harness::*;
use support::mtls::{MtlsServer, fixture};
use support::vendors::*;

const NS: &str = "payments";
const AUDIENCE: &str = "api://AzureADTokenExchange";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A credentials Secret with a client_id and, when given, a key and a certificate (as
/// cert-manager writes them: a kubernetes.io/tls Secret).
fn key_secret(api: &ApiServer, name: &str, id: &str, key: Option<&[u8]>, cert: Option<&[u8]>) {
    let mut data = json!({"client_id": b64(id.as_bytes())});
    if let Some(key) = key {
        data["tls.key"] = json!(b64(key));
    }
    if let Some(cert) = cert {
        data["tls.crt"] = json!(b64(cert));
    }
    api.create(
        SECRETS,
        json!({"metadata": {"name": name, "namespace": NS}, "type": "kubernetes.io/tls", "data": data}),
    );
}

fn spec(url: &str, method: &str, secret: &str) -> Value {
    json!({"tokenUrl": url, "clientAuthMethod": method, "credentialsSecretRef": {"name": secret}})
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

async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
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
        oauth_client(&api, NS, c.name, spec(&url, "PrivateKeyJwt", c.name));
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
    assertion: Value,
    reason: &'static str,
    message: &'static str,
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
    oauth_client(&api, NS, "wrong", spec(&url, "PrivateKeyJwt", "wrong"));
    let (_, _, message) = wait_ready(&api, NS, "wrong", "False", "InvalidClient").await;
    assert!(message.contains("signature is invalid"), "{message}");

    let refusal = |name, key, cert, assertion, reason, message| Refusal {
        name,
        key,
        cert,
        assertion,
        reason,
        message,
    };
    let refusals = [
        refusal(
            "garbled",
            Some(b"not a PEM key".to_vec()),
            None,
            json!(null),
            "InvalidCredentials",
            "key tls.key of Secret garbled holds no PEM private key",
        ),
        refusal(
            "mismatch",
            Some(fixture("rsa-pkcs1.pem")),
            None,
            json!({"algorithm": "ES256"}),
            "InvalidCredentials",
            "spec.clientAssertion.algorithm ES256 does not fit the RSA key in key tls.key of Secret mismatch",
        ),
        refusal(
            "foreign-cert",
            Some(fixture("rsa-other-pkcs1.pem")),
            Some("rsa.crt"),
            json!(null),
            "InvalidCredentials",
            "the certificate in key tls.crt of Secret foreign-cert does not match the private key in key tls.key of Secret foreign-cert",
        ),
        refusal(
            "no-key",
            None,
            None,
            json!(null),
            "CredentialsNotFound",
            "Secret no-key has no key tls.key",
        ),
        refusal(
            "locked",
            Some(fixture("rsa-encrypted-pkcs8.pem")),
            None,
            json!(null),
            "InvalidCredentials",
            "key tls.key of Secret locked holds an encrypted private key",
        ),
    ];
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
        if !r.assertion.is_null() {
            spec["clientAssertion"] = r.assertion.clone();
        }
        oauth_client(&api, NS, r.name, spec);
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
    oauth_client(&api, NS, "app", spec(&url, "PrivateKeyJwt", "keys"));
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
        s["data"]["tls.key"] = json!(b64(&fixture("ec-p384-pkcs8.pem")));
        s["data"]["tls.crt"] = json!(b64(&fixture("ec-p384.crt")));
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
    vendor.expect_assertions(Expectation::of_client(
        "hs",
        VerifyingKey::Secret(secret.into()),
        &url,
    ));
    credentials(&api, NS, "hs-creds", "hs", secret);
    let mut hs512 = spec(&url, "ClientSecretJwt", "hs-creds");
    hs512["clientAssertion"] = json!({"algorithm": "HS512", "lifetime": "60s"});
    oauth_client(&api, NS, "hs", hs512);
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
    vendor.expect_assertions(Expectation::of_client(
        "wrong",
        VerifyingKey::Secret(secret.into()),
        &url,
    ));
    oauth_client(
        &api,
        NS,
        "wrong",
        spec(&url, "ClientSecretJwt", "wrong-creds"),
    );
    wait_ready(&api, NS, "wrong", "False", "InvalidClient").await;

    // Rotation of the secret on both sides retries at once.
    vendor.expect_assertions(Expectation::of_client(
        "wrong",
        VerifyingKey::Secret("not-the-registered-secret-00000001".into()),
        &url,
    ));
    api.modify(SECRETS, NS, "wrong-creds", |s| {
        s["data"]["client_secret"] = json!(b64(b"not-the-registered-secret-00000001"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_auth_presents_the_certificate_and_refuses_what_cannot_work() {
    let api = ApiServer::start().await;
    let endpoint = MtlsServer::start().await;
    let operator = Operator::start_with(&api, &[], 4, trusting_the_test_ca());
    let url = endpoint.url();
    endpoint.register("mtls-a", &fixture("ec-p256.crt"));
    endpoint.register("mtls-b", &fixture("rsa.crt"));
    endpoint.register("foreign", &fixture("ec-p256.crt"));
    key_secret(
        &api,
        "a",
        "mtls-a",
        Some(&fixture("ec-p256-sec1.pem")),
        Some(&fixture("ec-p256.crt")),
    );
    key_secret(
        &api,
        "b",
        "mtls-b",
        Some(&fixture("rsa-pkcs8.pem")),
        Some(&fixture("rsa.crt")),
    );
    // A certificate of another CA, for the same key.
    key_secret(
        &api,
        "foreign",
        "foreign",
        Some(&fixture("ec-p256-sec1.pem")),
        Some(&fixture("ec-p256-foreign.crt")),
    );
    key_secret(
        &api,
        "no-cert",
        "mtls-a",
        Some(&fixture("ec-p256-sec1.pem")),
        None,
    );
    key_secret(
        &api,
        "mismatch",
        "mtls-a",
        Some(&fixture("ec-p256-sec1.pem")),
        Some(&fixture("rsa.crt")),
    );
    for name in ["a", "b", "foreign", "no-cert", "mismatch"] {
        oauth_client(&api, NS, name, spec(&url, "TlsClientAuth", name));
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
    oauth_client(
        &api,
        NS,
        "app",
        spec(&endpoint.url(), "TlsClientAuth", "tls"),
    );
    wait_ready(&api, NS, "app", "True", "TokenIssued").await;
    // cert-manager renews: new key and certificate in the same Secret.
    endpoint.register("app", &fixture("ed25519.crt"));
    api.modify(SECRETS, NS, "tls", |s| {
        s["data"]["tls.key"] = json!(b64(&fixture("ed25519-pkcs8.pem")));
        s["data"]["tls.crt"] = json!(b64(&fixture("ed25519.crt")));
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

// === ServiceAccountToken ===

fn with_service_account_tokens() -> Options {
    Options {
        service_account_tokens: true,
        ..Options::default()
    }
}

/// The opt-in annotations of a ServiceAccount: `audiences`, and the origin of `token_url` as
/// the one token endpoint its tokens may go to.
fn opt_in(audiences: &str, token_url: &str) -> Value {
    let origin = url::Url::parse(token_url)
        .unwrap()
        .origin()
        .ascii_serialization();
    json!({
        "oauth.token-operator.dev/token-audiences": audiences,
        "oauth.token-operator.dev/token-endpoints": origin,
    })
}

/// A ServiceAccount that opted in to `audiences` at `token_url` (or not at all).
fn service_account(api: &ApiServer, name: &str, audiences: Option<&str>, token_url: &str) {
    let mut meta = json!({"name": name, "namespace": NS});
    if let Some(a) = audiences {
        meta["annotations"] = opt_in(a, token_url);
    }
    api.create(SERVICEACCOUNTS, json!({"metadata": meta}));
}

fn federated(url: &str, client_id: &str, sa: &str, audience: &str) -> Value {
    json!({
        "tokenUrl": url, "clientAuthMethod": "ServiceAccountToken", "clientId": client_id,
        "serviceAccountToken": {"serviceAccountName": sa, "audience": audience, "expirationSeconds": 3600},
    })
}

/// The federation trust of an Entra-like provider: tokens of the double's issuer for `sa`.
fn federation(api: &ApiServer, client_id: &str, sa: &str) -> Expectation {
    Expectation {
        client_id: client_id.into(),
        issuer: Some(api.service_account_issuer().into()),
        subject: Some(format!("system:serviceaccount:{NS}:{sa}")),
        audience: AUDIENCE.into(),
        key: VerifyingKey::Public(api.service_account_public_key(), vec!["ES256"]),
        max_lifetime: Duration::from_secs(3600),
        skew: Duration::from_secs(5),
    }
}

const TOKEN_REQUESTS: &str = "create serviceaccounts/token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_token_federation_needs_the_opt_in_and_survives_a_restart() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let operator = Operator::start_with(&api, &[], 4, with_service_account_tokens());
    let url = vendor.url();
    vendor.expect_assertions(federation(&api, "app", "workload"));
    service_account(&api, "workload", Some(&format!("other, {AUDIENCE} ")), &url);
    oauth_client(
        &api,
        NS,
        "app",
        federated(&url, "app", "workload", AUDIENCE),
    );
    wait_ready(&api, NS, "app", "True", "TokenIssued").await;
    assert_eq!((vendor.count(), api.count(TOKEN_REQUESTS)), (1, 1));

    // No opt-in: denied before any TokenRequest; the annotation retries within seconds.
    vendor.expect_assertions(federation(&api, "shy-app", "shy"));
    service_account(&api, "shy", None, &url);
    oauth_client(&api, NS, "shy", federated(&url, "shy-app", "shy", AUDIENCE));
    let (_, _, message) = wait_ready(&api, NS, "shy", "False", "ServiceAccountTokenDenied").await;
    assert!(message.contains("has not opted in"), "{message}");
    assert_eq!((vendor.count(), api.count(TOKEN_REQUESTS)), (1, 1));
    api.modify(SERVICEACCOUNTS, NS, "shy", |sa| {
        sa["metadata"]["labels"] = json!({"x": "y"})
    });
    sleep(2000).await;
    assert_eq!(api.count(TOKEN_REQUESTS), 1, "a label is no opt-in");
    let opted_in = Instant::now();
    api.modify(SERVICEACCOUNTS, NS, "shy", |sa| {
        sa["metadata"]["annotations"] = opt_in(AUDIENCE, &url)
    });
    wait_ready(&api, NS, "shy", "True", "TokenIssued").await;
    assert!(
        opted_in.elapsed() < Duration::from_secs(5),
        "{:?}",
        opted_in.elapsed()
    );
    assert_eq!((vendor.count(), api.count(TOKEN_REQUESTS)), (2, 2));
    operator.stop().await;

    // Restart: the stored tokens are reused, with no TokenRequest and no token request.
    let again = Operator::start_with(&api, &[], 4, with_service_account_tokens());
    again.ready().await;
    sleep(2000).await;
    assert_eq!((vendor.count(), api.count(TOKEN_REQUESTS)), (2, 2));
    assert_eq!(
        condition(&api, NS, "app", "Ready").unwrap().1,
        "TokenIssued"
    );
    again.stop().await;
}

/// Security round three, item 2: a tenant who may create OAuthClients names a ServiceAccount
/// that opted in to the identity provider's audience and points the token URL at their own
/// server. No TokenRequest is made and nothing reaches their server; the ServiceAccount's owner
/// listing that origin is what it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_token_is_never_sent_to_an_endpoint_its_owner_did_not_list() {
    let api = ApiServer::start().await;
    let idp = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let attacker = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let operator = Operator::start_with(&api, &[], 4, with_service_account_tokens());
    idp.expect_assertions(federation(&api, "app", "workload"));
    attacker.expect_assertions(federation(&api, "app", "workload"));
    service_account(&api, "workload", Some(AUDIENCE), &idp.url());
    oauth_client(
        &api,
        NS,
        "legit",
        federated(&idp.url(), "app", "workload", AUDIENCE),
    );
    wait_ready(&api, NS, "legit", "True", "TokenIssued").await;
    oauth_client(
        &api,
        NS,
        "stolen",
        federated(&attacker.url(), "app", "workload", AUDIENCE),
    );
    let (_, _, message) =
        wait_ready(&api, NS, "stolen", "False", "ServiceAccountTokenDenied").await;
    let origin = url::Url::parse(&attacker.url())
        .unwrap()
        .origin()
        .ascii_serialization();
    assert!(
        message.contains(&origin) && message.contains("oauth.token-operator.dev/token-endpoints"),
        "{message}"
    );
    sleep(1000).await;
    assert_eq!(attacker.count(), 0, "nothing reached the tenant's server");
    assert_eq!(
        api.count(TOKEN_REQUESTS),
        1,
        "one TokenRequest, for the listed endpoint"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_token_refusals_send_nothing_to_the_token_endpoint() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let operator = Operator::start_with(&api, &[], 4, with_service_account_tokens());
    let url = vendor.url();
    // Audiences the API server accepts are refused even when listed.
    let issuer = api.service_account_issuer();
    service_account(
        &api,
        "greedy",
        Some(&format!("{issuer},https://kubernetes.default.svc")),
        &url,
    );
    oauth_client(&api, NS, "issuer", federated(&url, "g1", "greedy", issuer));
    oauth_client(
        &api,
        NS,
        "in-cluster",
        federated(&url, "g2", "greedy", "https://kubernetes.default.svc"),
    );
    for name in ["issuer", "in-cluster"] {
        let (_, _, message) =
            wait_ready(&api, NS, name, "False", "ServiceAccountTokenDenied").await;
        assert!(
            message.contains("accepted by the Kubernetes API server"),
            "{message}"
        );
    }
    // A missing ServiceAccount.
    oauth_client(&api, NS, "ghost", federated(&url, "g3", "nobody", AUDIENCE));
    let (_, _, message) = wait_ready(&api, NS, "ghost", "False", "CredentialsNotFound").await;
    assert_eq!(
        message,
        format!("ServiceAccount nobody not found in namespace {NS}")
    );
    assert_eq!(api.count(TOKEN_REQUESTS), 0);
    // A TokenRequest the API server refuses.
    let token = Matcher {
        verb: Some("create"),
        resource: Some("serviceaccounts"),
        subresource: Some("token"),
    };
    api.fail_next(token, 1, 403);
    service_account(&api, "refused", Some(AUDIENCE), &url);
    oauth_client(
        &api,
        NS,
        "refused",
        federated(&url, "g4", "refused", AUDIENCE),
    );
    let (_, _, message) =
        wait_ready(&api, NS, "refused", "False", "ServiceAccountTokenDenied").await;
    assert!(message.contains("refused the TokenRequest"), "{message}");
    assert_eq!(vendor.count(), 0, "no token request for any refusal");
    assert!(api.violations().is_empty(), "{:?}", api.violations());
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_are_invalid_spec_without_the_flag_and_no_service_account_is_read() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    service_account(&api, "workload", Some(AUDIENCE), &vendor.url());
    oauth_client(
        &api,
        NS,
        "app",
        federated(&vendor.url(), "app", "workload", AUDIENCE),
    );
    let (_, _, message) = wait_ready(&api, NS, "app", "False", "InvalidSpec").await;
    assert!(
        message.contains("--allow-service-account-tokens"),
        "{message}"
    );
    sleep(500).await;
    assert_eq!(vendor.count(), 0);
    let touched: Vec<String> = api
        .calls()
        .iter()
        .filter(|c| c.resource == "serviceaccounts" || c.resource.starts_with("/.well-known"))
        .map(|c| c.label())
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
    operator.stop().await;
}
