//! The exchange engine with the client authentication methods beyond shared secrets, against
//! the strict emulators on 127.0.0.1: RFC 7523 assertions (every algorithm, the verifier's
//! refusals, replay), and mutual TLS (identity, connections and TLS sessions never shared
//! between identities, the identity clients' lifetime).

mod support;

use std::sync::Arc;
use std::time::Duration;

use oauth_token_operator::api::crd::OAuthClientSpec;
use oauth_token_operator::api::reason::{Failure, Reason};
use oauth_token_operator::base::clock::SystemClock;
use oauth_token_operator::oauth::credentials::{Credentials, Proof};
use oauth_token_operator::oauth::exchange;
use oauth_token_operator::oauth::identity::Identity;
use oauth_token_operator::oauth::response::Token;
use oauth_token_operator::oauth::transport::trust::{CaBundle, Trust};
use oauth_token_operator::oauth::transport::{Transport, TransportConfig};
use oauth_token_operator::spec::{ClientSettings, ExchangeSettings, Policy};
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use support::assertions::{Expectation, VerifyingKey};
use support::mtls::{HandshakeKind, MtlsServer, fixture, test_ca};
use support::vendors::*;

fn settings(fields: Value) -> ExchangeSettings {
    let mut spec = json!({"credentialsSecretRef": {"name": "creds"}});
    spec.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let spec: OAuthClientSpec = serde_json::from_value(spec).unwrap();
    let policy = Policy {
        allow_insecure_http: true,
        ..Default::default()
    };
    ClientSettings::resolve(&spec, &policy).unwrap().exchange
}

fn identity(key: &str, cert: Option<&str>) -> Arc<Identity> {
    let cert = cert.map(|c| (fixture(c), c));
    Arc::new(
        Identity::load(
            &fixture(key),
            key,
            cert.as_ref().map(|(b, c)| (b.as_slice(), *c)),
        )
        .unwrap(),
    )
}

fn keyed(client_id: &str, identity: Arc<Identity>) -> Credentials {
    Credentials {
        subject: None,
        client_id: client_id.into(),
        proof: Proof::Key(identity),
    }
}

fn transport() -> Transport {
    let ca = CaBundle::parse(&fixture("ca.crt"), "the test CA").unwrap();
    Transport::from_config(TransportConfig {
        timeout: Duration::from_secs(5),
        ca_file: Some(ca),
        ..TransportConfig::default()
    })
    .unwrap()
}

async fn exchange(
    transport: &Transport,
    s: &ExchangeSettings,
    c: &Credentials,
) -> Result<Token, Failure> {
    exchange::exchange_once(transport, &Trust::Default, s, c, &SystemClock).await
}

// === RFC 7523 assertions ===

#[tokio::test]
async fn every_algorithm_passes_the_strict_verifier_with_a_fresh_assertion_per_request() {
    let server = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let url = server.url();
    let cases = [
        ("rsa-pkcs1.pem", "rsa.crt", None, "RS256"),
        ("rsa-pkcs8.pem", "rsa.crt", Some("RS512"), "RS512"),
        ("rsa-pkcs1.pem", "rsa.crt", Some("PS256"), "PS256"),
        ("ec-p256-sec1.pem", "ec-p256.crt", None, "ES256"),
        ("ec-p384-pkcs8.pem", "ec-p384.crt", None, "ES384"),
        ("ed25519-pkcs8.pem", "ed25519.crt", None, "EdDSA"),
    ];
    let transport = transport();
    for (i, (key, cert, algorithm, alg)) in cases.into_iter().enumerate() {
        let id = format!("client-{i}");
        let registered = VerifyingKey::of_certificate(&fixture(cert), &[alg]);
        server.expect_assertions(Expectation::of_client(&id, registered, &url));
        let mut assertion = json!({"keyId": "k1"});
        if let Some(a) = algorithm {
            assertion["algorithm"] = json!(a);
        }
        let s = settings(json!({
            "tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt", "clientAssertion": assertion,
        }));
        let c = keyed(&id, identity(key, Some(cert)));
        for _ in 0..2 {
            exchange(&transport, &s, &c)
                .await
                .unwrap_or_else(|f| panic!("{key} {alg}: {f}"));
        }
    }
    // Two requests per key, each with its own assertion (the verifier refuses a jti twice).
    let assertions: Vec<String> = server
        .requests()
        .iter()
        .map(|r| form_value(r, "client_assertion"))
        .collect();
    assert_eq!(assertions.len(), 12);
    let mut distinct = assertions.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 12);
    for request in server.requests() {
        assert!(request.header("authorization").is_none());
        assert!(request.form().iter().all(|(k, _)| k != "client_secret"));
    }
}

fn form_value(request: &Recorded, name: &str) -> String {
    request
        .form()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

#[tokio::test]
async fn the_verifier_refuses_replays_wrong_keys_audiences_and_long_lifetimes() {
    let server = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let url = server.url();
    let registered = VerifyingKey::of_certificate(&fixture("ec-p256.crt"), &["ES256"]);
    server.expect_assertions(Expectation::of_client("app", registered.clone(), &url));
    let transport = transport();
    let p256 = keyed("app", identity("ec-p256-sec1.pem", None));
    let s = settings(json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt"}));
    exchange(&transport, &s, &p256).await.unwrap();

    // The same request again: the endpoint has seen its jti.
    let body = server.requests()[0].body.clone();
    let replay = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status().as_u16(), 401);
    assert!(replay.text().await.unwrap().contains("jti replayed"));

    let refused = |reason: Reason, text: &'static str| {
        move |f: Failure| {
            assert_eq!(f.reason, reason, "{}", f.message);
            assert!(f.message.contains(text), "{}", f.message);
        }
    };
    // Another key than the registered one.
    let other = keyed("app", identity("ec-p256-pkcs8.pem", None));
    let rsa = keyed("app", identity("rsa-other-pkcs1.pem", None));
    refused(Reason::InvalidClient, "alg RS256 is not allowed")(
        exchange(&transport, &s, &rsa).await.unwrap_err(),
    );
    exchange(&transport, &s, &other).await.unwrap();
    // An audience the endpoint does not expect, and a lifetime longer than it allows.
    let elsewhere = settings(json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt",
        "clientAssertion": {"audience": "https://another.example"}}));
    refused(Reason::InvalidClient, "aud must be")(
        exchange(&transport, &elsewhere, &p256).await.unwrap_err(),
    );
    let long = settings(json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt",
        "clientAssertion": {"lifetime": "1h"}}));
    refused(Reason::InvalidClient, "exp is too far")(
        exchange(&transport, &long, &p256).await.unwrap_err(),
    );
    // The issuer identifier as audience, for servers that want it (RFC 7523bis, FAPI 2).
    server.expect_assertions(Expectation::of_client(
        "app",
        registered,
        "https://idp.example",
    ));
    let issuer = settings(json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt",
        "clientAssertion": {"audience": "https://idp.example"}}));
    exchange(&transport, &issuer, &p256).await.unwrap();
}

#[tokio::test]
async fn a_ready_assertion_is_sent_as_it_is_and_never_shown() {
    let server = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let url = server.url();
    server.push(Canned::new(
        400,
        r#"{"error":"invalid_client","error_description":"bad assertion eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz"}"#,
    ));
    let mut spec: OAuthClientSpec = serde_json::from_value(json!({
        "tokenUrl": url, "clientAuthMethod": "ServiceAccountToken", "clientId": "app",
        "serviceAccountToken": {"serviceAccountName": "sa", "audience": "api://x"},
    }))
    .unwrap();
    spec.credentials_secret_ref = None;
    let policy = Policy {
        allow_insecure_http: true,
        allow_service_account_tokens: true,
        ..Default::default()
    };
    let s = ClientSettings::resolve(&spec, &policy).unwrap().exchange;
    let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz";
    let c = Credentials {
        subject: None,
        client_id: "app".into(),
        proof: Proof::Assertion(jwt.to_owned().into()),
    };
    let f = exchange(&transport(), &s, &c).await.unwrap_err();
    assert_eq!(f.reason, Reason::InvalidClient);
    assert!(
        !f.message.contains(jwt) && !f.message.contains("c2lnbmF0dXJlLWJ5dGVz"),
        "{}",
        f.message
    );
    assert!(
        f.message.contains("bad assertion [redacted]"),
        "{}",
        f.message
    );
    assert_eq!(form_value(&server.requests()[0], "client_assertion"), jwt);
}

// === mutual TLS ===

fn leaf(cert: &str) -> Vec<u8> {
    rustls::pki_types::CertificateDer::from_pem_slice(&fixture(cert))
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn mutual_tls_never_shares_a_connection_or_a_tls_session_between_identities() {
    let server = MtlsServer::start().await;
    server.register("a", &fixture("ec-p256.crt"));
    server.register("b", &fixture("rsa.crt"));
    let s = settings(json!({"tokenUrl": server.url(), "clientAuthMethod": "TlsClientAuth"}));
    let transport = transport();
    let a = keyed("a", identity("ec-p256-sec1.pem", Some("ec-p256.crt")));
    let b = keyed("b", identity("rsa-pkcs8.pem", Some("rsa.crt")));
    let client_for = |c: &Credentials| {
        transport
            .client(&Trust::Default, exchange::identity(&s, c), "ns")
            .unwrap()
    };
    let lease_a = client_for(&a);
    let lease_b = client_for(&b);
    // The default client and one per identity.
    assert_eq!(transport.clients_in_use(), 3);
    // Kept-alive connections: A's second request reuses A's connection; B gets its own.
    for (c, lease) in [(&a, &lease_a), (&a, &lease_a), (&b, &lease_b)] {
        exchange::exchange(lease, &s, c, &SystemClock)
            .await
            .unwrap();
    }
    let handshakes = server.handshakes();
    assert_eq!(handshakes.len(), 2, "{handshakes:?}");
    assert_eq!(
        handshakes[0].certificate.as_deref(),
        Some(&leaf("ec-p256.crt")[..])
    );
    assert_eq!(
        handshakes[1].certificate.as_deref(),
        Some(&leaf("rsa.crt")[..])
    );
    // A request through the wrong identity's client is not sent.
    let f = exchange::exchange(&lease_b, &s, &a, &SystemClock)
        .await
        .unwrap_err();
    assert_eq!(f.reason, Reason::InvalidCredentials);

    // Closed after each answer: every request needs a handshake, and none resumes a session,
    // not even for the same identity (so no ticket of A's is ever offered for B).
    server.close_after_answer(true);
    drop((lease_a, lease_b));
    assert_eq!(
        transport.clients_in_use(),
        1,
        "the identity clients are dropped with their leases"
    );
    for c in [&a, &a, &b, &a] {
        exchange(&transport, &s, c).await.unwrap();
    }
    let later = &server.handshakes()[2..];
    assert_eq!(later.len(), 4, "{later:?}");
    assert!(
        later.iter().all(|h| h.kind == Some(HandshakeKind::Full)),
        "{later:?}"
    );
    let served = server.served();
    assert_eq!(served.len(), 7);
    for request in &served {
        let expected = if request.client_id.as_deref() == Some("a") {
            "ec-p256.crt"
        } else {
            "rsa.crt"
        };
        assert_eq!(
            (request.status, request.certificate.as_deref()),
            (200, Some(&leaf(expected)[..]))
        );
    }

    // The server does resume sessions for a client that offers one: the check above is not
    // vacuous.
    let resumed = resuming_client_handshakes(&server).await;
    assert_eq!(resumed, [HandshakeKind::Full, HandshakeKind::Resumed]);
}

/// Two connections of a plain rustls client with resumption on (and a certificate), and the
/// kinds of handshake the server saw.
async fn resuming_client_handshakes(server: &MtlsServer) -> Vec<HandshakeKind> {
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        for ca in test_ca() {
            r.add(ca).unwrap();
        }
        r
    };
    let chain =
        vec![rustls::pki_types::CertificateDer::from_pem_slice(&fixture("ec-p256.crt")).unwrap()];
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&fixture("ec-p256-sec1.pem")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let before = server.handshakes().len();
    for _ in 0..2 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let body = "grant_type=client_credentials&client_id=a";
        let request = format!(
            "POST /token HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    }
    server.handshakes()[before..]
        .iter()
        .filter_map(|h| h.kind)
        .collect()
}

#[tokio::test]
async fn the_mtls_endpoint_refuses_a_missing_or_foreign_certificate() {
    let server = MtlsServer::start().await;
    server.register("a", &fixture("ec-p256.crt"));
    server.close_after_answer(true);
    // No certificate at all.
    let plain = reqwest::Client::builder()
        .tls_certs_only(
            test_ca()
                .into_iter()
                .map(|c| reqwest::Certificate::from_der(&c).unwrap()),
        )
        .build()
        .unwrap();
    let answer = plain
        .post(server.url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_id=a")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("a client certificate is required")
    );
    // The same key with a foreign CA's certificate, and the test CA's certificate of another
    // client.
    let s = settings(json!({"tokenUrl": server.url(), "clientAuthMethod": "TlsClientAuth"}));
    let transport = transport();
    let foreign = keyed(
        "a",
        identity("ec-p256-sec1.pem", Some("ec-p256-foreign.crt")),
    );
    let f = exchange(&transport, &s, &foreign).await.unwrap_err();
    assert_eq!(f.reason, Reason::InvalidClient);
    assert!(
        f.message.contains("not issued by a trusted CA"),
        "{}",
        f.message
    );
    let someone_else = keyed("a", identity("rsa-pkcs1.pem", Some("rsa.crt")));
    let f = exchange(&transport, &s, &someone_else).await.unwrap_err();
    assert!(
        f.message.contains("not the one registered"),
        "{}",
        f.message
    );
    assert_eq!(server.count(), 0);
}
