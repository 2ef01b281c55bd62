//! Token requests through a proxy (the CONNECT / forwarding proxy double of
//! `support::proxy`, on 127.0.0.1): the token URL policy is applied on the operator's own
//! resolution before anything reaches the proxy, `NO_PROXY` bypasses it, an unresolvable host
//! needs `--token-url-allow-hosts`, a refusing proxy is `EndpointUnavailable` with its status,
//! and the proxy's userinfo is never shown.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use oauth_token_operator::api::crd::OAuthClientSpec;
use oauth_token_operator::api::reason::{Failure, Reason};
use oauth_token_operator::base::clock::SystemClock;
use oauth_token_operator::oauth::exchange;
use oauth_token_operator::oauth::request::Credentials;
use oauth_token_operator::oauth::response::Token;
use oauth_token_operator::oauth::transport::Transport;
use oauth_token_operator::oauth::transport::proxy::ProxyConfig;
use oauth_token_operator::oauth::transport::trust::Trust;
use oauth_token_operator::spec::url_policy::{CidrList, HostPattern, TokenUrlPolicy};
use oauth_token_operator::spec::{ClientSettings, Policy};
use serde_json::json;
use support::proxy::ProxyDouble;
use support::vendors::*;

const ID: &str = "proxy-test-client";
const SECRET: &str = "pr0xy/test+secret=value";
const PROXY_USER: &str = "squid-user-4c1e";
const PROXY_PASSWORD: &str = "squidPassw0rdZq8";

fn creds() -> Credentials {
    Credentials::with_secret(ID, SECRET)
}

fn policy(deny: &str, allow: &[&str]) -> Policy {
    Policy {
        allow_insecure_http: true,
        token_urls: Arc::new(TokenUrlPolicy::new(
            deny.parse::<CidrList>().unwrap(),
            allow
                .iter()
                .map(|h| h.parse::<HostPattern>().unwrap())
                .collect(),
        )),
        allow_service_account_tokens: false,
    }
}

/// A proxy configuration as the environment would give it (never the process environment:
/// tests run in parallel).
fn proxies(vars: &[(&'static str, String)]) -> ProxyConfig {
    let vars = vars.to_vec();
    ProxyConfig::from_vars(move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
}

/// Both schemes through `proxy`.
fn through(proxy: &str) -> ProxyConfig {
    proxies(&[("HTTPS_PROXY", proxy.into()), ("HTTP_PROXY", proxy.into())])
}

fn spec(url: &str) -> OAuthClientSpec {
    serde_json::from_value(json!({"tokenUrl": url, "credentialsSecretRef": {"name": "creds"}}))
        .unwrap()
}

async fn exchange_via(url: &str, policy: Policy, proxy: ProxyConfig) -> Result<Token, Failure> {
    let settings = ClientSettings::resolve(&spec(url), &policy)?;
    let transport =
        Transport::with_proxy(Duration::from_secs(5), policy.token_urls.clone(), proxy).unwrap();
    exchange::exchange_once(
        &transport,
        &Trust::Default,
        &settings.exchange,
        &creds(),
        &SystemClock,
    )
    .await
}

fn assert_no_secret(failure: &Failure) {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ID}:{SECRET}"));
    let proxy_basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"));
    for value in [SECRET, &basic, PROXY_USER, PROXY_PASSWORD, &proxy_basic] {
        assert!(!failure.message.contains(value), "{}", failure.message);
    }
}

/// A TLS endpoint with a self-signed certificate on 127.0.0.1, counting connections.
async fn self_signed_endpoint() -> (u16, Arc<AtomicUsize>) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
        cert.signing_key.serialize_der().into(),
    );
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(socket)).await;
        }
    });
    (port, connections)
}

// === (a) an allowed host goes through the proxy ===

#[tokio::test]
async fn an_allowed_http_host_is_forwarded_by_the_proxy_and_gets_a_token() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let proxy = ProxyDouble::start().await;
    let url = server.url().replace("127.0.0.1", "localhost");
    let token = exchange_via(&url, policy("169.254.0.0/16", &[]), through(&proxy.url()))
        .await
        .expect("a token through the proxy");
    assert_eq!(token.access_token.expose(), &server.issued()[0]);
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    // http:// goes to the proxy in absolute form (no tunnel), and was checked all the same.
    assert_eq!(requests[0].line, format!("POST {url} HTTP/1.1"));
    assert_eq!(proxy.tunnels(), 0);
    assert_eq!(server.count(), 1);
    assert!(server.requests()[0].header("authorization").is_some());
}

#[tokio::test]
async fn an_allowed_https_host_is_tunnelled_and_tls_is_verified_through_the_tunnel() {
    let (port, endpoint_connections) = self_signed_endpoint().await;
    let proxy = ProxyDouble::start().await;
    let url = format!("https://localhost:{port}/token");
    let failure = exchange_via(&url, policy("169.254.0.0/16", &[]), through(&proxy.url()))
        .await
        .expect_err("the self-signed endpoint is not trusted");
    assert_eq!(
        failure.reason,
        Reason::EndpointUnavailable,
        "{}",
        failure.message
    );
    assert!(
        failure.message.to_lowercase().contains("certificate"),
        "{}",
        failure.message
    );
    let requests = proxy.requests();
    assert_eq!(
        requests[0].line,
        format!("CONNECT localhost:{port} HTTP/1.1")
    );
    assert!(requests[0].header("authorization").is_none());
    assert_eq!(proxy.tunnels(), 1);
    assert!(endpoint_connections.load(Ordering::SeqCst) >= 1);
    assert_no_secret(&failure);
}

// === (b) a denied host never reaches the proxy ===

#[tokio::test]
async fn a_denied_host_is_refused_before_the_proxy_receives_a_byte() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let proxy = ProxyDouble::start().await;
    let port = server
        .url()
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for scheme in ["http", "https"] {
        let url = format!("{scheme}://localhost:{port}/token");
        // Denying only the IPv4 loopback is enough: through a proxy, any denied address of
        // the name refuses it (the proxy cannot be kept to the allowed ones).
        for deny in ["127.0.0.0/8,::1", "127.0.0.0/8"] {
            let failure = exchange_via(&url, policy(deny, &[]), through(&proxy.url()))
                .await
                .expect_err("localhost is denied");
            assert_eq!(
                failure.reason,
                Reason::InvalidSpec,
                "{url}: {}",
                failure.message
            );
            assert!(
                failure.message.contains("--token-url-deny-cidrs")
                    && failure.message.contains("localhost"),
                "{}",
                failure.message
            );
            assert_no_secret(&failure);
        }
    }
    // Literal forms of loopback (and "this host") through the proxy.
    for url in [
        format!("http://0.0.0.0:{port}/token"),
        format!("http://[::ffff:127.0.0.1]:{port}/token"),
        format!("http://[64:ff9b::7f00:1]:{port}/token"),
    ] {
        let failure = exchange_via(&url, policy("127.0.0.0/8", &[]), through(&proxy.url()))
            .await
            .expect_err("a denied literal");
        assert_eq!(
            failure.reason,
            Reason::InvalidSpec,
            "{url}: {}",
            failure.message
        );
    }
    assert_eq!(proxy.connections(), 0, "{:?}", proxy.requests());
    assert_eq!(proxy.bytes(), 0);
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn the_transport_applies_the_policy_before_the_proxy_on_its_own() {
    // Settings resolved without the policy still cannot send a denied host to the proxy.
    let proxy = ProxyDouble::start().await;
    let lax = policy("", &[]);
    let settings = ClientSettings::resolve(&spec("http://localhost:9/token"), &lax).unwrap();
    let strict = policy("127.0.0.0/8", &[]).token_urls;
    let transport =
        Transport::with_proxy(Duration::from_secs(5), strict, through(&proxy.url())).unwrap();
    let failure = exchange::exchange_once(
        &transport,
        &Trust::Default,
        &settings.exchange,
        &creds(),
        &SystemClock,
    )
    .await
    .expect_err("denied by the transport");
    assert_eq!(failure.reason, Reason::InvalidSpec, "{}", failure.message);
    assert_eq!(proxy.connections(), 0);
}

#[tokio::test]
async fn a_proxy_inside_a_denied_network_stays_usable() {
    // The operator's own proxy is not a token endpoint: 127.0.0.0/8 denied for tokens does
    // not stop the transport from reaching a proxy on 127.0.0.1 by name.
    let proxy = ProxyDouble::start().await;
    let by_name = format!("http://localhost:{}", proxy.port());
    let failure = exchange_via(
        "https://no-such-host.invalid/token",
        policy("127.0.0.0/8,::1", &["no-such-host.invalid"]),
        through(&by_name),
    )
    .await
    .expect_err("the proxy answers 502");
    assert_eq!(
        failure.reason,
        Reason::EndpointUnavailable,
        "{}",
        failure.message
    );
    assert!(failure.message.contains("502"), "{}", failure.message);
    assert!(proxy.connections() >= 1);
}

// === (c) NO_PROXY ===

#[tokio::test]
async fn no_proxy_sends_matching_hosts_direct() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let proxy = ProxyDouble::start().await;
    let port = server
        .url()
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let by_name = server.url().replace("127.0.0.1", "localhost");
    let by_address = server.url();
    let with_no_proxy = |rules: &str| {
        proxies(&[
            ("HTTP_PROXY", proxy.url()),
            ("HTTPS_PROXY", proxy.url()),
            ("NO_PROXY", rules.to_owned()),
        ])
    };
    for (url, rules) in [
        (by_name.as_str(), "localhost".to_owned()),
        (by_name.as_str(), ".localhost".to_owned()),
        (by_name.as_str(), format!("idp.example, localhost:{port}")),
        (by_address.as_str(), "127.0.0.0/8".to_owned()),
        (by_address.as_str(), "*".to_owned()),
    ] {
        exchange_via(url, policy("169.254.0.0/16", &[]), with_no_proxy(&rules))
            .await
            .unwrap_or_else(|f| panic!("{url} with NO_PROXY={rules}: {f}"));
    }
    assert_eq!(proxy.connections(), 0);
    assert_eq!(server.count(), 5);

    // Another port, or a lookalike name, is proxied.
    for rules in ["localhost:1", "calhost", "127.0.0.1"] {
        exchange_via(
            &by_name,
            policy("169.254.0.0/16", &[]),
            with_no_proxy(rules),
        )
        .await
        .unwrap();
    }
    assert_eq!(proxy.requests().len(), 3);
    assert_eq!(server.count(), 8);
}

// === (d) a host that cannot be resolved locally ===

#[tokio::test]
async fn an_unresolvable_host_goes_to_the_proxy_only_when_allow_listed() {
    let proxy = ProxyDouble::start().await;
    let url = "https://no-such-host.invalid/token";
    let failure = exchange_via(url, policy("169.254.0.0/16", &[]), through(&proxy.url()))
        .await
        .expect_err("not resolvable, not allow-listed");
    assert_eq!(
        failure.reason,
        Reason::EndpointUnavailable,
        "{}",
        failure.message
    );
    for part in [
        "no-such-host.invalid",
        "could not be resolved locally",
        "--token-url-deny-cidrs",
        "--token-url-allow-hosts",
    ] {
        assert!(
            failure.message.contains(part),
            "{part}: {}",
            failure.message
        );
    }
    assert_eq!(proxy.connections(), 0);

    // Allow-listed: sent to the proxy, which cannot reach it and answers 502.
    let allow = || policy("169.254.0.0/16", &["no-such-host.invalid"]);
    let failure = exchange_via(url, allow(), through(&proxy.url()))
        .await
        .expect_err("the proxy answers 502");
    assert_eq!(
        failure.reason,
        Reason::EndpointUnavailable,
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("HTTP 502") && failure.message.contains("CONNECT"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("127.0.0.1:"),
        "names the proxy: {}",
        failure.message
    );
    let requests = proxy.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request.line, "CONNECT no-such-host.invalid:443 HTTP/1.1");
        assert!(request.header("authorization").is_none());
    }

    // A proxy told to refuse: its status is in the message.
    for status in [407, 403, 503] {
        proxy.refuse_with(status);
        let failure = exchange_via(url, allow(), through(&proxy.url()))
            .await
            .expect_err("refused");
        assert_eq!(
            failure.reason,
            Reason::EndpointUnavailable,
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains(&format!("HTTP {status}")),
            "{status}: {}",
            failure.message
        );
    }

    // http:// is forwarded rather than tunnelled; the same rule applies.
    proxy.refuse_with(0);
    let plain = "http://no-such-host.invalid/token";
    let before = proxy.connections();
    let failure = exchange_via(plain, policy("169.254.0.0/16", &[]), through(&proxy.url()))
        .await
        .expect_err("not allow-listed");
    assert!(failure.message.contains("could not be resolved locally"));
    assert_eq!(proxy.connections(), before);
    let failure = exchange_via(plain, allow(), through(&proxy.url()))
        .await
        .expect_err("the proxy answers 502");
    assert_eq!(
        failure.reason,
        Reason::EndpointUnavailable,
        "{}",
        failure.message
    );
    assert!(failure.message.contains("502"), "{}", failure.message);
    assert_eq!(
        proxy.requests().last().unwrap().line,
        "POST http://no-such-host.invalid/token HTTP/1.1"
    );
}

#[tokio::test]
async fn an_unreachable_proxy_is_endpoint_unavailable_naming_it() {
    // A port nothing listens on (bound, then closed).
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let failure = exchange_via(
        "https://no-such-host.invalid/token",
        policy("", &["no-such-host.invalid"]),
        through(&format!("http://127.0.0.1:{port}")),
    )
    .await
    .expect_err("no proxy there");
    assert_eq!(
        failure.reason,
        Reason::EndpointUnavailable,
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains(&format!("127.0.0.1:{port}")),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn an_unusable_proxy_variable_refuses_instead_of_going_direct() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let config = proxies(&[(
        "HTTP_PROXY",
        format!("socks5://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:1080"),
    )]);
    let failure = exchange_via(&server.url(), policy("", &[]), config)
        .await
        .expect_err("unusable proxy");
    assert_eq!(
        failure.reason,
        Reason::EndpointUnavailable,
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("HTTP_PROXY"),
        "{}",
        failure.message
    );
    assert_no_secret(&failure);
    assert_eq!(server.count(), 0);
}

// === (e) proxy userinfo is never shown ===

#[tokio::test]
async fn proxy_userinfo_never_appears_in_messages_debug_or_trace_logs() {
    let logs = support::logs::capture_global();
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let proxy = ProxyDouble::start().await;
    let config = || through(&proxy.url_with_userinfo(PROXY_USER, PROXY_PASSWORD));
    let proxy_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"))
    );
    let mut shown = Vec::new();

    // Forwarded http:// with a token: the proxy gets its credentials, nobody else sees them.
    let by_name = server.url().replace("127.0.0.1", "localhost");
    exchange_via(&by_name, policy("", &[]), config())
        .await
        .unwrap();
    assert_eq!(
        proxy.requests()[0].header("proxy-authorization"),
        Some(proxy_basic.as_str())
    );
    assert!(server.requests()[0].header("proxy-authorization").is_none());

    // CONNECT refused with 407 and 502, forwarded refused with 407, not resolvable.
    let allow = || policy("", &["no-such-host.invalid"]);
    for (status, url) in [
        (407, "https://no-such-host.invalid/token"),
        (502, "https://no-such-host.invalid/token"),
        (407, "http://no-such-host.invalid/token"),
    ] {
        proxy.refuse_with(status);
        let failure = exchange_via(url, allow(), config()).await.unwrap_err();
        assert_eq!(
            failure.reason,
            Reason::EndpointUnavailable,
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains(&status.to_string()),
            "{}",
            failure.message
        );
        shown.push(failure.message.clone());
        shown.push(format!("{failure:?}"));
    }
    for request in proxy.requests().iter().skip(1) {
        assert_eq!(
            request.header("proxy-authorization"),
            Some(proxy_basic.as_str())
        );
    }
    proxy.refuse_with(0);
    let failure = exchange_via("https://no-such-host.invalid/t", policy("", &[]), config())
        .await
        .unwrap_err();
    shown.push(failure.message.clone());
    let transport =
        Transport::with_proxy(Duration::from_secs(5), Arc::default(), config()).unwrap();
    shown.push(format!("{transport:?}"));
    shown.push(format!("{:?}", config()));
    shown.push(config().to_string());

    let text = logs.text();
    assert!(
        text.contains(&format!("127.0.0.1:{}", proxy.port())),
        "the proxy's address is logged (so the capture works):\n{text}"
    );
    shown.push(text);
    for (i, text) in shown.iter().enumerate() {
        support::logs::assert_absent(
            text,
            &[PROXY_USER, PROXY_PASSWORD, &proxy_basic, SECRET],
            &format!("output {i}"),
        );
    }
}
