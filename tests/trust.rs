//! Trust: HTTPS token endpoints on 127.0.0.1 with certificates from test CAs generated here
//! (rcgen). An endpoint is trusted through its own bundle (alone) or through `--ca-file` (on
//! top of the system store); each kind of refusal has its own message, starting with the
//! contract's phrase; clients are pooled per distinct trust; and the proxy and token URL
//! policy apply to every pooled client as to the default one.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use oauth_token_operator::api::crd::OAuthClientSpec;
use oauth_token_operator::api::reason::{Failure, Reason};
use oauth_token_operator::base::clock::SystemClock;
use oauth_token_operator::oauth::exchange;
use oauth_token_operator::oauth::request::Credentials;
use oauth_token_operator::oauth::response::Token;
use oauth_token_operator::oauth::transport::proxy::ProxyConfig;
use oauth_token_operator::oauth::transport::trust::{CaBundle, Trust};
use oauth_token_operator::oauth::transport::{Transport, TransportConfig};
use oauth_token_operator::spec::url_policy::{CidrList, TokenUrlPolicy};
use oauth_token_operator::spec::{ClientSettings, Policy};
use serde_json::{Value, json};
use support::apiserver::{ApiServer, CONFIGMAPS, OAUTHCLIENTS, SECRETS};
use support::harness::*;
use support::proxy::ProxyDouble;
use support::tls::{TestCa, TlsFront, closing_endpoint, https_url, port_of};
use support::vendors::*;

const ID: &str = "trust-test-client";
const SECRET: &str = "trust-test-secret-9f2c";

fn creds() -> Credentials {
    Credentials::with_secret(ID, SECRET)
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
        limits: Default::default(),
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
    let client = transport.client(trust, None, "ns")?;
    exchange::exchange(&client, &settings.exchange, &creds(), &SystemClock).await
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
        .client(&Trust::Bundle(bundle(&a, "ConfigMap one")), None, "ns")
        .unwrap();
    let second = transport
        .client(&Trust::Bundle(bundle(&a, "Secret two")), None, "ns")
        .unwrap();
    assert!(
        first.shares_pool_with(&second),
        "same certificates, one client"
    );
    assert_eq!(second.verified_against(), "Secret two alone");
    let third = transport
        .client(&Trust::Bundle(bundle(&b, "ConfigMap three")), None, "ns")
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

/// An https:// proxy's own certificate would be checked against the OAuthClient's bundle (the
/// HTTP library uses the endpoint's trust for the proxy too), so a tenant's anchors would judge
/// the hop that carries the operator's proxy credentials: refused before anything is sent,
/// saying what to use instead. The default trust is unaffected.
#[tokio::test]
async fn an_https_proxy_with_a_bundle_is_refused_before_anything_is_sent() {
    let corp = TestCa::new("Corp Root CA");
    let (server, _front, url) = endpoint(&corp, &["localhost"], false).await;
    let proxy = ProxyDouble::start().await;
    let https_proxy = proxy
        .url()
        .replacen("http://", "https://proxy-user:hunter2@", 1);
    let vars = [("HTTPS_PROXY".to_owned(), https_proxy)];
    let config =
        ProxyConfig::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
    let transport = transport(None, config, "169.254.0.0/16");
    let failure = exchange(&transport, &Trust::Bundle(bundle(&corp, "corp")), &url)
        .await
        .unwrap_err();
    assert_eq!(failure.reason, Reason::EndpointUnavailable);
    assert!(
        failure.message.contains("https:// proxy")
            && failure.message.contains("spec.caBundleRef")
            && failure.message.contains("http:// proxy URL"),
        "{}",
        failure.message
    );
    assert!(!failure.message.contains("hunter2") && !failure.message.contains("proxy-user"));
    assert!(proxy.requests().is_empty(), "nothing reached the proxy");
    assert_eq!(server.count(), 0);
}

// === the controller: spec.caBundleRef against the API-server double ===

const NS: &str = "idp";

fn config_map(api: &ApiServer, name: &str, data: Value) -> Value {
    api.create(
        CONFIGMAPS,
        json!({"metadata": {"name": name, "namespace": NS}, "data": data}),
    )
}

fn client_spec(url: &str, bundle: Value) -> Value {
    json!({"tokenUrl": url, "credentialsSecretRef": {"name": "creds"}, "caBundleRef": bundle})
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

fn status_of(api: &ApiServer, name: &str) -> Value {
    api.get(OAUTHCLIENTS, NS, name).unwrap()["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_bundle_changed_from_the_wrong_ca_to_the_right_one_gives_ready_within_seconds()
{
    let (corp, other) = (TestCa::new("Corp Root CA"), TestCa::new("Other CA"));
    let (server, _front, url) = endpoint(&corp, &["localhost"], false).await;
    let api = ApiServer::start().await;
    let operator = Operator::start_configured(&api, |_| {});
    credentials(&api, NS, "creds", ID, SECRET);
    // A trust-manager Bundle target: a ConfigMap with the bundle under the key it was told.
    config_map(&api, "corp-ca", json!({"ca.crt": other.pem()}));
    oauth_client(
        &api,
        NS,
        "keycloak",
        client_spec(&url, json!({"name": "corp-ca"})),
    );
    let (_, _, message) = wait_ready(&api, NS, "keycloak", "False", "EndpointUnavailable").await;
    assert!(
        message.starts_with(
            "TLS: certificate signed by an unknown authority: token endpoint localhost:"
        ),
        "{message}"
    );
    assert!(
        message
            .ends_with("verified against key ca.crt of ConfigMap corp-ca (spec.caBundleRef) alone"),
        "{message}"
    );
    // Let the backoff grow (about 5 s, then about 10 s), so that a quick recovery can only
    // come from the ConfigMap's watch.
    eventually("a second failure", Duration::from_secs(15), || {
        (status_of(&api, "keycloak")["consecutiveFailures"].as_i64() >= Some(2)).then_some(())
    })
    .await;
    let planned: jiff::Timestamp = status_of(&api, "keycloak")["nextRefreshAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let changed = std::time::Instant::now();
    api.modify(CONFIGMAPS, NS, "corp-ca", |o| {
        o["data"]["ca.crt"] = json!(format!("{}{}", other.pem(), corp.pem()));
    });
    wait_ready(&api, NS, "keycloak", "True", "TokenIssued").await;
    assert!(
        changed.elapsed() < Duration::from_secs(4),
        "{:?}",
        changed.elapsed()
    );
    assert!(
        jiff::Timestamp::now() < planned,
        "before the backoff's retry"
    );
    assert_eq!(server.count(), 1);
    let metrics = operator.metrics.encode();
    assert_eq!(
        sample(
            &metrics,
            "oauth_token_operator_exchange_triggers_total{trigger=\"trust_changed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_bundle_is_trusted_a_rotation_alone_does_not_exchange_and_its_client_goes_with_it()
{
    let (corp, other) = (TestCa::new("Corp Root CA"), TestCa::new("Other CA"));
    let (server, _front, url) = endpoint(&corp, &["localhost"], false).await;
    let api = ApiServer::start().await;
    let operator = Operator::start_configured(&api, |_| {});
    credentials(&api, NS, "creds", ID, SECRET);
    api.create(
        SECRETS,
        json!({"metadata": {"name": "idp-ca", "namespace": NS}, "stringData": {"bundle.pem": corp.pem()}}),
    );
    let bundle = json!({"kind": "Secret", "name": "idp-ca", "key": "bundle.pem"});
    oauth_client(&api, NS, "a", client_spec(&url, bundle.clone()));
    wait_ready(&api, NS, "a", "True", "TokenIssued").await;
    // A second client with the same bundle shares the HTTP client: default + one.
    oauth_client(&api, NS, "b", client_spec(&url, bundle));
    wait_ready(&api, NS, "b", "True", "TokenIssued").await;
    let clients = || {
        sample(
            &operator.metrics.encode(),
            "oauth_token_operator_http_clients",
        )
    };
    assert_eq!(clients(), Some(2.0));
    // A CA rotation (a new CA added to the bundle) is not a credential change.
    api.modify(SECRETS, NS, "idp-ca", |o| {
        let both = format!("{}{}", other.pem(), corp.pem());
        o["data"]["bundle.pem"] = json!(base64::engine::general_purpose::STANDARD.encode(both));
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.count(), 2, "one token per client, none more");
    for name in ["a", "b"] {
        assert_eq!(condition(&api, NS, name, "Ready").unwrap().0, "True");
    }
    api.delete(OAUTHCLIENTS, NS, "a");
    api.delete(OAUTHCLIENTS, NS, "b");
    eventually(
        "the bundle's client is dropped",
        Duration::from_secs(10),
        || (clients() == Some(1.0)).then_some(()),
    )
    .await;
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_unparseable_bundles_are_named_and_each_fix_is_seen_within_seconds() {
    let corp = TestCa::new("Corp Root CA");
    let (server, _front, url) = endpoint(&corp, &["localhost"], false).await;
    let api = ApiServer::start().await;
    let operator = Operator::start_configured(&api, |_| {});
    credentials(&api, NS, "creds", ID, SECRET);
    oauth_client(&api, NS, "c", client_spec(&url, json!({"name": "late-ca"})));
    let (_, _, message) = wait_ready(&api, NS, "c", "False", "CredentialsNotFound").await;
    assert_eq!(
        message,
        format!("ConfigMap late-ca (spec.caBundleRef) not found in namespace {NS}")
    );
    // These failures back off for about a minute: every step below is seen through the watch.
    let started = std::time::Instant::now();
    config_map(&api, "late-ca", json!({"other.crt": corp.pem()}));
    let (_, _, message) = eventually("no key", Duration::from_secs(5), || {
        condition(&api, NS, "c", "Ready").filter(|c| c.2.contains("has no key"))
    })
    .await;
    assert_eq!(
        message,
        "ConfigMap late-ca (spec.caBundleRef) has no key ca.crt"
    );
    api.modify(CONFIGMAPS, NS, "late-ca", |o| {
        o["data"]["ca.crt"] =
            json!("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n");
    });
    let (_, reason, message) = eventually("unparseable", Duration::from_secs(5), || {
        condition(&api, NS, "c", "Ready").filter(|c| c.1 == "InvalidSpec")
    })
    .await;
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.starts_with(
            "key ca.crt of ConfigMap late-ca (spec.caBundleRef) holds no parseable PEM certificate"
        ),
        "{message}"
    );
    api.modify(CONFIGMAPS, NS, "late-ca", |o| {
        o["data"]["ca.crt"] = json!(corp.pem());
    });
    wait_ready(&api, NS, "c", "True", "TokenIssued").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        server.count(),
        1,
        "no token request until the bundle was usable"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_trusts_endpoints_without_a_bundle_and_a_bundle_added_later_is_used_alone() {
    let (corp, other) = (TestCa::new("Corp Root CA"), TestCa::new("Other CA"));
    let (server, _front, url) = endpoint(&corp, &["localhost"], false).await;
    let api = ApiServer::start().await;
    let operator = Operator::start_configured(&api, |config| {
        config.ca_file = Some(bundle(&corp, "--ca-file /etc/corp/ca.pem"));
    });
    credentials(&api, NS, "creds", ID, SECRET);
    oauth_client(
        &api,
        NS,
        "d",
        json!({"tokenUrl": url, "credentialsSecretRef": {"name": "creds"}}),
    );
    wait_ready(&api, NS, "d", "True", "TokenIssued").await;
    // Adding a caBundleRef (the spec changes) does not replace the token: it was issued for
    // the same request and credentials.
    config_map(&api, "wrong-ca", json!({"ca.crt": other.pem()}));
    api.modify(OAUTHCLIENTS, NS, "d", |o| {
        o["spec"]["caBundleRef"] = json!({"name": "wrong-ca"});
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.count(), 1);
    assert_eq!(condition(&api, NS, "d", "Ready").unwrap().0, "True");
    // The next exchange verifies against that bundle alone: --ca-file no longer counts.
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    api.modify(OAUTHCLIENTS, NS, "d", |o| {
        o["metadata"]["annotations"] =
            json!({"oauth.token-operator.dev/refresh-requested-at": now});
    });
    let (_, reason, message) = eventually("a refused refresh", Duration::from_secs(10), || {
        condition(&api, NS, "d", "Degraded").filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!(reason, "EndpointUnavailable");
    assert!(
        message.starts_with("TLS: certificate signed by an unknown authority")
            && message.contains("ConfigMap wrong-ca"),
        "{message}"
    );
    assert_eq!(
        condition(&api, NS, "d", "Ready").unwrap().0,
        "True",
        "the old token stays"
    );
    assert_eq!(server.count(), 1);
    operator.stop().await;
}

/// Without `list` on ConfigMaps (or Secrets) the watches would retry forever and no client would
/// ever be reconciled: the start-up check names each missing right instead (it asks the API
/// server with access reviews; the real-cluster suite takes each rule out of the chart's role).
#[tokio::test]
async fn a_missing_list_permission_on_what_is_watched_stops_the_start_with_its_name() {
    use oauth_token_operator::controller::{Needs, preflight};
    use support::apiserver::Matcher;
    let api = ApiServer::start().await;
    let client = api.client();
    for scope in [vec![], vec!["team-a".to_owned()]] {
        let needs = Needs {
            namespaces: &scope,
            own_namespace: "ops",
            service_account_tokens: false,
            lease_namespace: None,
            metrics_reviews: false,
            own_service_account: None,
            cluster_clients: None,
        };
        preflight(&client, &needs, "double").await.unwrap();
        for resource in ["configmaps", "secrets", "oauthclients"] {
            api.deny(Matcher::new("list", resource));
            let error = preflight(&client, &needs, "double")
                .await
                .unwrap_err()
                .to_string();
            api.allow_all();
            let where_ = match scope.first() {
                Some(ns) => format!("in namespace {ns}"),
                None => "in all namespaces".to_owned(),
            };
            assert!(
                error.starts_with("the operator's RBAC does not grant: list ")
                    && error.contains(&format!("list {resource}"))
                    && error.contains(&where_),
                "{error}"
            );
            assert!(
                error.contains("check the operator's Role or ClusterRole"),
                "{error}"
            );
        }
    }
}
