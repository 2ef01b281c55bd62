//! Trust: HTTPS token endpoints on 127.0.0.1 with certificates from test CAs generated here
//! (rcgen). An endpoint is trusted through its own bundle (alone) or through `--ca-file` (on
//! top of the system store); each kind of refusal has its own message, starting with the
//! contract's phrase; clients are pooled per distinct trust; and the proxy and token URL
//! policy apply to every pooled client as to the default one.

mod support;

use std::sync::Arc;
use std::time::Duration;

use oauth_token_operator::api::crd::OAuthClientSpec;
use oauth_token_operator::api::reason::{Failure, Reason};
use oauth_token_operator::oauth::exchange::Exchanger;
use oauth_token_operator::oauth::proxy::ProxyConfig;
use oauth_token_operator::oauth::request::Credentials;
use oauth_token_operator::oauth::response::Token;
use oauth_token_operator::oauth::transport::{Transport, TransportConfig};
use oauth_token_operator::oauth::trust::{CaBundle, Trust};
use oauth_token_operator::oauth::url_policy::{CidrList, TokenUrlPolicy};
use oauth_token_operator::output::redact::Sensitive;
use oauth_token_operator::spec::{ClientSettings, Policy};
use oauth_token_operator::timing::clock::SystemClock;
use serde_json::json;
use support::proxy::ProxyDouble;
use support::tls::{TestCa, TlsFront, closing_endpoint, https_url, port_of};
use support::vendors::*;

const ID: &str = "trust-test-client";
const SECRET: &str = "trust-test-secret-9f2c";

fn creds() -> Credentials {
    Credentials {
        client_id: ID.into(),
        client_secret: Sensitive::from(SECRET),
    }
}

fn transport(ca_file: Option<CaBundle>, proxy: ProxyConfig, deny: &str) -> Transport {
    Transport::from_config(TransportConfig {
        timeout: Duration::from_secs(5),
        policy: Arc::new(TokenUrlPolicy::new(
            deny.parse::<CidrList>().unwrap(),
            Vec::new(),
        )),
        proxy,
        ca_file,
    })
    .unwrap()
}

fn bundle(ca: &TestCa, origin: &str) -> CaBundle {
    CaBundle::parse(ca.pem().as_bytes(), origin).unwrap()
}

async fn exchange(transport: &Transport, trust: &Trust, url: &str) -> Result<Token, Failure> {
    let spec: OAuthClientSpec =
        serde_json::from_value(json!({"tokenUrl": url, "credentialsSecretRef": {"name": "c"}}))
            .unwrap();
    let settings = ClientSettings::resolve(&spec, &Policy::default())?;
    let client = transport.client(trust)?;
    Exchanger::new(transport.clone())
        .exchange_via(&client, &settings.exchange, &creds(), &SystemClock)
        .await
}

/// A token server behind a TLS front whose certificate `issue` makes with `ca`.
async fn endpoint(ca: &TestCa, names: &[&str], expired: bool) -> (TokenServer, TlsFront, String) {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let cert = if expired {
        ca.issue_expired(names)
    } else {
        ca.issue(names)
    };
    let front = TlsFront::start(&cert, port_of(&server.url())).await;
    let url = https_url(&server.url(), "localhost", &front);
    (server, front, url)
}

fn refused(result: Result<Token, Failure>) -> Failure {
    let failure = result.expect_err("refused");
    assert_eq!(
        failure.reason,
        Reason::EndpointUnavailable,
        "{}",
        failure.message
    );
    assert!(!failure.message.contains(SECRET));
    failure
}

#[tokio::test]
async fn an_endpoint_of_a_private_ca_is_trusted_through_its_bundle_alone() {
    let (corp, other) = (TestCa::new("Corp Root CA"), TestCa::new("Other CA"));
    let (server, front, url) = endpoint(&corp, &["localhost"], false).await;
    // --ca-file names the other CA: the bundle alone decides, so this shows it is not merged.
    let transport = transport(
        Some(bundle(&other, "--ca-file other.pem")),
        ProxyConfig::none(),
        "",
    );
    let trust = Trust::Bundle(bundle(&corp, "key ca.crt of ConfigMap corp-ca"));
    let token = exchange(&transport, &trust, &url).await.expect("trusted");
    assert_eq!(token.access_token.expose(), &server.issued()[0]);
    assert_eq!(front.handshakes(), 1);
    // The default trust (system store + the other CA) does not know the corp CA.
    let failure = refused(exchange(&transport, &Trust::Default, &url).await);
    assert!(
        failure.message.starts_with(
            "TLS: certificate signed by an unknown authority: token endpoint localhost:"
        ),
        "{}",
        failure.message
    );
    assert!(
        failure
            .message
            .ends_with("verified against the system trust store and --ca-file other.pem"),
        "{}",
        failure.message
    );
    assert_eq!(
        server.count(),
        1,
        "nothing is sent to an untrusted endpoint"
    );
}

#[tokio::test]
async fn an_endpoint_of_a_private_ca_is_trusted_through_ca_file_on_top_of_the_system_store() {
    let corp = TestCa::new("Corp Root CA");
    let (server, _front, url) = endpoint(&corp, &["localhost"], false).await;
    let transport = transport(
        Some(bundle(&corp, "--ca-file corp.pem")),
        ProxyConfig::none(),
        "",
    );
    exchange(&transport, &Trust::Default, &url)
        .await
        .expect("trusted through --ca-file");
    assert_eq!(server.count(), 1);
    // Without it, the system store alone does not.
    let plain = transport_without_ca_file();
    let failure = refused(exchange(&plain, &Trust::Default, &url).await);
    assert!(
        failure
            .message
            .starts_with("TLS: certificate signed by an unknown authority"),
        "{}",
        failure.message
    );
    assert!(
        failure
            .message
            .ends_with("verified against the system trust store")
    );
}

fn transport_without_ca_file() -> Transport {
    transport(None, ProxyConfig::none(), "")
}

#[tokio::test]
async fn another_cas_bundle_is_an_unknown_authority() {
    let (corp, other) = (TestCa::new("Corp Root CA"), TestCa::new("Other CA"));
    let (server, front, url) = endpoint(&corp, &["localhost"], false).await;
    let trust = Trust::Bundle(bundle(
        &other,
        "key ca.crt of ConfigMap wrong-ca (spec.caBundleRef)",
    ));
    let failure = refused(exchange(&transport_without_ca_file(), &trust, &url).await);
    let port = front.port();
    assert_eq!(
        failure.message,
        format!(
            "TLS: certificate signed by an unknown authority: token endpoint localhost:{port}, verified against key ca.crt of ConfigMap wrong-ca (spec.caBundleRef) alone"
        )
    );
    assert_eq!((server.count(), front.handshakes()), (0, 0));
}

#[tokio::test]
async fn an_expired_certificate_says_so() {
    let corp = TestCa::new("Corp Root CA");
    let (server, _front, url) = endpoint(&corp, &["localhost"], true).await;
    let trust = Trust::Bundle(bundle(&corp, "corp"));
    let failure = refused(exchange(&transport_without_ca_file(), &trust, &url).await);
    assert!(
        failure.message.starts_with(
            "TLS: certificate expired (at 2021-01-01T00:00:00Z): token endpoint localhost:"
        ),
        "{}",
        failure.message
    );
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn a_certificate_for_another_name_says_which_names_it_has() {
    let corp = TestCa::new("Corp Root CA");
    let (server, _front, url) = endpoint(&corp, &["idp.corp.example"], false).await;
    let trust = Trust::Bundle(bundle(&corp, "corp"));
    let failure = refused(exchange(&transport_without_ca_file(), &trust, &url).await);
    assert!(
        failure.message.starts_with(
            "TLS: certificate is not valid for localhost (it names idp.corp.example): token endpoint localhost:"
        ),
        "{}",
        failure.message
    );
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn a_server_that_closes_the_handshake_is_a_handshake_failure() {
    let corp = TestCa::new("Corp Root CA");
    let (port, connections) = closing_endpoint().await;
    let url = format!("https://localhost:{port}/token");
    let trust = Trust::Bundle(bundle(&corp, "corp"));
    let failure = refused(exchange(&transport_without_ca_file(), &trust, &url).await);
    assert!(
        failure.message.starts_with(
            "TLS: handshake failed: the server closed the connection during the handshake: token endpoint localhost:"
        ),
        "{}",
        failure.message
    );
    assert!(connections.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn clients_are_pooled_per_distinct_trust_and_dropped_when_unused() {
    let (a, b) = (TestCa::new("A"), TestCa::new("B"));
    let transport = transport_without_ca_file();
    assert_eq!(transport.clients_in_use(), 1, "the default client");
    let first = transport
        .client(&Trust::Bundle(bundle(&a, "ConfigMap one")))
        .unwrap();
    let second = transport
        .client(&Trust::Bundle(bundle(&a, "Secret two")))
        .unwrap();
    assert!(
        Arc::ptr_eq(first.pooled(), second.pooled()),
        "same certificates, one client"
    );
    assert_eq!(second.verified_against(), "Secret two alone");
    let third = transport
        .client(&Trust::Bundle(bundle(&b, "ConfigMap three")))
        .unwrap();
    assert_eq!(transport.clients_in_use(), 3);
    drop((first, second));
    assert_eq!(transport.clients_in_use(), 2);
    drop(third);
    assert_eq!(transport.clients_in_use(), 1);
}

#[tokio::test]
async fn a_pooled_client_goes_through_the_proxy_and_follows_the_token_url_policy() {
    let corp = TestCa::new("Corp Root CA");
    let (server, _front, url) = endpoint(&corp, &["localhost"], false).await;
    let proxy = ProxyDouble::start().await;
    let vars = [("HTTPS_PROXY".to_owned(), proxy.url())];
    let config =
        ProxyConfig::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
    let trust = Trust::Bundle(bundle(&corp, "corp"));
    let through = transport(None, config.clone(), "169.254.0.0/16");
    exchange(&through, &trust, &url)
        .await
        .expect("through the proxy, verified against the bundle");
    assert_eq!(proxy.tunnels(), 1);
    assert!(proxy.requests()[0].line.starts_with("CONNECT localhost:"));
    assert_eq!(server.count(), 1);
    // A denied host is refused before the proxy hears of it, with a bundle as without.
    let denied = transport(None, config, "127.0.0.0/8,::1");
    let failure = exchange(&denied, &trust, &url).await.unwrap_err();
    assert_eq!(failure.reason, Reason::InvalidSpec, "{}", failure.message);
    assert_eq!(proxy.requests().len(), 1, "no second CONNECT");
}
