//! HTTP tests of the exchange engine against the vendor emulators on 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use oauth_token_operator::api::crd::OAuthClientSpec;
use oauth_token_operator::api::reason::{Failure, Reason};
use oauth_token_operator::base::clock::SystemClock;
use oauth_token_operator::oauth::exchange;
use oauth_token_operator::oauth::request::Credentials;
use oauth_token_operator::oauth::response::Token;
use oauth_token_operator::oauth::transport::trust::Trust;
use oauth_token_operator::oauth::transport::{MAX_BODY, Transport};
use oauth_token_operator::spec::url_policy::{CidrList, HostPattern, TokenUrlPolicy};
use oauth_token_operator::spec::{ClientSettings, Policy};
use serde_json::{Value, json};
use support::vendors::*;

const ID: &str = "1PpG/Q 1";
const SECRET: &str = "z/tZ9VwFZqApmIQ+ZH1I5pLk/uB4ud:X2/8bL+wfFTt1rFw=";

fn spec(fields: Value) -> OAuthClientSpec {
    let mut spec = json!({"credentialsSecretRef": {"name": "creds"}});
    spec.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    serde_json::from_value(spec).unwrap()
}

fn creds(id: &str, secret: &str) -> Credentials {
    Credentials::with_secret(id, secret)
}

async fn exchange_with(
    fields: Value,
    credentials: &Credentials,
    timeout: Duration,
    policy: Policy,
) -> Result<Token, Failure> {
    let settings = ClientSettings::resolve(&spec(fields), &policy)?;
    let transport = Transport::with_policy(timeout, policy.token_urls.clone()).unwrap();
    exchange::exchange_once(
        &transport,
        &Trust::Default,
        &settings.exchange,
        credentials,
        &SystemClock,
    )
    .await
}

async fn exchange(fields: Value, credentials: &Credentials) -> Result<Token, Failure> {
    let policy = Policy {
        allow_insecure_http: true,
        ..Default::default()
    };
    exchange_with(fields, credentials, Duration::from_secs(5), policy).await
}

fn assert_safe(failure: &Failure) {
    for value in [SECRET, "wrong-secret-value"] {
        assert!(!failure.message.contains(value), "{}", failure.message);
    }
}

async fn fail(fields: Value, credentials: &Credentials) -> Failure {
    let failure = exchange(fields, credentials)
        .await
        .expect_err("expected a failure");
    assert_safe(&failure);
    failure
}

// === each seed preset with nothing but the preset and credentials ===

#[tokio::test]
async fn microboxlabs_preset_reaches_a_token() {
    let server = TokenServer::start(Vendor::Microboxlabs, ID, SECRET, Tokens::Documented).await;
    let token = exchange(
        json!({"provider": "microboxlabs", "tokenUrl": server.url(), "audience": STREAMHUB_AUDIENCE}),
        &creds(ID, SECRET),
    )
    .await
    .unwrap();
    assert_eq!(token.access_token.expose(), MICROBOXLABS_TOKEN);
    assert_eq!(token.scope.as_deref(), Some("asset:track:write"));
    let lifetime = token.expires_at.duration_since(token.issued_at).as_secs();
    assert_eq!(lifetime, 86400);
    let request = &server.requests()[0];
    assert_eq!(request.header("content-type").unwrap(), "application/json");
    assert!(request.header("authorization").is_none());
    assert_eq!(
        request.header("user-agent").unwrap(),
        format!("oauth-token-operator/{}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn microbilt_presets_reach_a_token() {
    for provider in ["microbilt", "microbilt-sandbox"] {
        let server = TokenServer::start(Vendor::Microbilt, ID, SECRET, Tokens::Documented).await;
        let token = exchange(
            json!({"provider": provider, "tokenUrl": server.url()}),
            &creds(ID, SECRET),
        )
        .await
        .unwrap();
        assert_eq!(token.access_token.expose(), MICROBILT_TOKEN);
        assert_eq!(token.token_type, "Bearer");
        assert_eq!(
            token.expires_at.duration_since(token.issued_at).as_secs(),
            3599
        );
        let body = server.requests()[0].json().unwrap();
        assert_eq!(body["grant_type"], "client_credentials");
    }
}

#[tokio::test]
async fn microbilt_form_variant_is_also_accepted() {
    let server = TokenServer::start(Vendor::Microbilt, ID, SECRET, Tokens::Documented).await;
    let token = exchange(
        json!({"provider": "microbilt", "tokenUrl": server.url(), "requestEncoding": "Form"}),
        &creds(ID, SECRET),
    )
    .await
    .unwrap();
    assert_eq!(token.access_token.expose(), MICROBILT_TOKEN);
}

#[tokio::test]
async fn iotspot_preset_reaches_a_token() {
    let server = TokenServer::start(Vendor::Iotspot, ID, SECRET, Tokens::Documented).await;
    let token = exchange(
        json!({"provider": "iotspot", "tokenUrl": server.url()}),
        &creds(ID, SECRET),
    )
    .await
    .unwrap();
    assert_eq!(token.access_token.expose(), IOTSPOT_TOKEN);
    assert_eq!(
        token.expires_at.duration_since(token.issued_at).as_secs(),
        3600
    );
    let request = &server.requests()[0];
    let form = request.form();
    assert!(form.contains(&("client_id".into(), ID.into())));
    assert!(form.contains(&("scope".into(), "iotspot/openapi".into())));
    assert!(
        !form.iter().any(|(k, _)| k == "client_secret"),
        "secret sent twice"
    );
}

#[tokio::test]
async fn generic_preset_with_both_client_auth_methods() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    for method in ["ClientSecretBasic", "ClientSecretPost"] {
        let token = exchange(
            json!({"tokenUrl": server.url(), "clientAuthMethod": method, "scopes": ["read", "write"]}),
            &creds(ID, SECRET),
        )
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(token.scope.as_deref(), Some("read write"));
        assert_eq!(token.token_type, "Bearer");
    }
}

// === wrong credentials: InvalidClient with the vendor's description ===

#[tokio::test]
async fn wrong_credentials_are_invalid_client_for_every_vendor() {
    let cases = [
        (
            Vendor::Microboxlabs,
            json!({"provider": "microboxlabs", "audience": STREAMHUB_AUDIENCE}),
            "access_denied: Unauthorized",
        ),
        (
            Vendor::Microbilt,
            json!({"provider": "microbilt"}),
            "invalid_client: Client credentials are invalid",
        ),
        (
            Vendor::Iotspot,
            json!({"provider": "iotspot"}),
            "invalid_client",
        ),
        (
            Vendor::Generic,
            json!({}),
            "invalid_client: Client authentication failed",
        ),
    ];
    for (vendor, mut fields, description) in cases {
        let server = TokenServer::start(vendor, ID, SECRET, Tokens::Documented).await;
        fields["tokenUrl"] = json!(server.url());
        let failure = fail(fields, &creds(ID, "wrong-secret-value")).await;
        assert_eq!(
            failure.reason,
            Reason::InvalidClient,
            "{vendor:?}: {failure}"
        );
        assert!(
            failure.message.contains(description),
            "{vendor:?}: {}",
            failure.message
        );
    }
}

// === the emulators are as strict as the documents ===

#[tokio::test]
async fn microboxlabs_rejects_form_bodies_missing_audience_and_wrong_audience() {
    let server = TokenServer::start(Vendor::Microboxlabs, ID, SECRET, Tokens::Documented).await;
    let url = server.url();
    let f = fail(
        json!({"provider": "microboxlabs", "tokenUrl": url, "audience": STREAMHUB_AUDIENCE, "requestEncoding": "Form"}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidRequest);
    assert!(f.message.contains("application/json"), "{}", f.message);
    // The preset refuses a spec without audience before sending (a unit test of spec/); the
    // emulator refuses the same request shape sent without one.
    let f = fail(
        json!({"provider": "generic", "tokenUrl": url, "clientAuthMethod": "ClientSecretPost", "requestEncoding": "JSON"}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidRequest);
    assert!(f.message.contains("audience"), "{}", f.message);
    let f = fail(
        json!({"provider": "microboxlabs", "tokenUrl": url, "audience": "https://other/api"}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::AccessDenied);
    assert!(
        f.message
            .contains("Client is not authorized to access the audience")
    );
    // Basic auth instead of credentials in the JSON body: the secret is missing from the body.
    let f = fail(
        json!({"provider": "microboxlabs", "tokenUrl": url, "audience": STREAMHUB_AUDIENCE, "clientAuthMethod": "ClientSecretBasic"}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidRequest);
}

#[tokio::test]
async fn iotspot_requires_raw_basic_and_its_scope() {
    let server = TokenServer::start(Vendor::Iotspot, ID, SECRET, Tokens::Documented).await;
    let url = server.url();
    // Credentials in the body instead of the Basic header.
    let f = fail(
        json!({"provider": "iotspot", "tokenUrl": url, "clientAuthMethod": "ClientSecretPost"}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidClient);
    // RFC-style encoded Basic differs from raw for these awkward characters.
    let f = fail(
        json!({"provider": "iotspot", "tokenUrl": url, "basicAuthEncoding": "UrlEncoded"}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidClient);
    let f = fail(
        json!({"provider": "iotspot", "tokenUrl": url, "scopes": ["iotspot/admin"]}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidScope);
    assert!(f.message.contains("invalid_scope"));
    let f = fail(
        json!({"provider": "iotspot", "tokenUrl": url, "requestEncoding": "JSON"}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidRequest);
}

#[tokio::test]
async fn generic_requires_rfc_encoding_of_basic_credentials() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let f = fail(
        json!({"tokenUrl": server.url(), "basicAuthEncoding": "Raw"}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidClient);
    let f = fail(
        json!({"tokenUrl": server.url(), "scopes": ["forbidden"]}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidScope);
    let f = fail(
        json!({"tokenUrl": server.url(), "requestEncoding": "JSON"}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidRequest);
}

// === every other failure reason ===

#[tokio::test]
async fn rate_limited_carries_retry_after() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    server.push(Canned::new(429, r#"{"error":"slow_down"}"#).header("retry-after", "17"));
    let f = fail(json!({"tokenUrl": server.url()}), &creds(ID, SECRET)).await;
    assert_eq!(f.reason, Reason::RateLimited);
    assert_eq!(f.retry_after, Some(Duration::from_secs(17)));
}

/// An HTTP error names the token URL it came from, without its query (a wrong path was
/// `InvalidRequest: HTTP 404 Not Found: not_found`, with nothing to say which URL).
#[tokio::test]
async fn an_http_error_names_the_token_url_without_its_query() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    server.push(Canned::new(404, r#"{"error":"not_found"}"#));
    let url = format!("{}?tenant=a&key=hidden", server.url());
    let f = fail(json!({"tokenUrl": url}), &creds(ID, SECRET)).await;
    assert_eq!(
        f.message,
        format!("HTTP 404 Not Found: not_found (token URL {})", server.url())
    );
    assert!(!f.message.contains("hidden"));
}

#[tokio::test]
async fn endpoint_unavailable_for_5xx_html_refused_connections_and_timeouts() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    server.push(
        Canned::new(
            503,
            "<html><head><title>503 Service Unavailable</title></head><body>down</body></html>",
        )
        .header("content-type", "text/html"),
    );
    let f = fail(json!({"tokenUrl": server.url()}), &creds(ID, SECRET)).await;
    assert_eq!(f.reason, Reason::EndpointUnavailable);
    assert_eq!(
        f.message,
        format!(
            "HTTP 503 Service Unavailable: 503 Service Unavailable (token URL {})",
            server.url()
        )
    );

    // Nothing listens on a port we bound and released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let f = fail(
        json!({"tokenUrl": format!("http://127.0.0.1:{port}/token")}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::EndpointUnavailable);
    assert!(f.message.contains("could not connect"), "{}", f.message);

    server.push(Canned::new(200, "{}").delay(Duration::from_secs(3)));
    let started = Instant::now();
    let f = exchange_with(
        json!({"tokenUrl": server.url()}),
        &creds(ID, SECRET),
        Duration::from_millis(500),
        Policy {
            allow_insecure_http: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(f.reason, Reason::EndpointUnavailable);
    assert!(f.message.contains("timed out"), "{}", f.message);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn invalid_response_for_html_200_and_200_with_error() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    server.push(
        Canned::new(200, "<html><title>Login</title></html>")
            .header("content-type", "application/json"),
    );
    let f = fail(json!({"tokenUrl": server.url()}), &creds(ID, SECRET)).await;
    assert_eq!(f.reason, Reason::InvalidResponse);
    assert!(f.message.contains("Login"), "{}", f.message);
    server.push(Canned::new(
        200,
        r#"{"error":"invalid_client","error_description":"nope"}"#,
    ));
    let f = fail(json!({"tokenUrl": server.url()}), &creds(ID, SECRET)).await;
    assert_eq!(f.reason, Reason::InvalidResponse);
    assert!(f.message.contains("invalid_client: nope"));
}

#[tokio::test]
async fn redirects_are_not_followed_and_credentials_go_to_one_url_only() {
    let elsewhere = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    for status in [301, 302, 303, 307, 308] {
        server.push(Canned::new(status, "").header("location", &elsewhere.url()));
        let f = fail(
            json!({"tokenUrl": server.url(), "clientAuthMethod": "ClientSecretPost"}),
            &creds(ID, SECRET),
        )
        .await;
        assert_eq!(f.reason, Reason::InvalidResponse, "{status}");
        assert!(
            f.message.contains("redirect to host 127.0.0.1"),
            "{}",
            f.message
        );
    }
    assert_eq!(
        elsewhere.count(),
        0,
        "the redirect target must never be contacted"
    );
    assert_eq!(server.count(), 5);
}

#[tokio::test]
async fn oversize_bodies_are_cut_off() {
    // With a Content-Length over the cap.
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let big = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(MAX_BODY + 10));
    server.push(Canned::new(200, big));
    let f = fail(json!({"tokenUrl": server.url()}), &creds(ID, SECRET)).await;
    assert_eq!(f.reason, Reason::InvalidResponse);
    assert!(f.message.contains("larger than 1024 KiB"), "{}", f.message);

    // A chunked body that never ends: reading must stop at the cap.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent_by_server = sent.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let _ = socket.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
        // At most 64 MiB, and it stops as soon as the client hangs up.
        for _ in 0..1024 {
            if socket.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent_by_server.fetch_add(64 * 1024, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let f = fail(
        json!({"tokenUrl": format!("http://{addr}/token")}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidResponse);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent < 16 * MAX_BODY,
        "the client kept reading: {sent} bytes"
    );
}

#[tokio::test]
async fn invalid_spec_sends_nothing() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let strict = Policy::default();
    let f = exchange_with(
        json!({"tokenUrl": server.url()}),
        &creds(ID, SECRET),
        Duration::from_secs(5),
        strict,
    )
    .await
    .unwrap_err();
    assert_eq!(f.reason, Reason::InvalidSpec);
    assert!(f.message.contains("--allow-insecure-http"));
    let f = fail(
        json!({"tokenUrl": server.url(), "extraHeaders": {"Authorization": "Bearer x"}}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidSpec);
    let f = fail(
        json!({"tokenUrl": server.url(), "target": {"template": {"auth": "{{ password }}"}}}),
        &creds(ID, SECRET),
    )
    .await;
    assert_eq!(f.reason, Reason::InvalidSpec);
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn extra_params_and_headers_reach_the_endpoint() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    exchange(
        json!({"tokenUrl": server.url(), "audience": "api://aud", "extraParams": {"resource": "https://graph"}, "extraHeaders": {"X-Tenant": "acme"}}),
        &creds(ID, SECRET),
    )
    .await
    .unwrap();
    let request = &server.requests()[0];
    assert_eq!(request.header("x-tenant").unwrap(), "acme");
    let form = request.form();
    assert!(form.contains(&("resource".into(), "https://graph".into())));
    assert!(form.contains(&("audience".into(), "api://aud".into())));
}

// === TLS is always verified ===

#[tokio::test]
async fn self_signed_tls_is_refused() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
        cert.signing_key.serialize_der().into(),
    );
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let completed = handshakes.clone();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            if acceptor.accept(socket).await.is_ok() {
                completed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let f = exchange_with(
        json!({"tokenUrl": format!("https://localhost:{}/token", addr.port())}),
        &creds(ID, SECRET),
        Duration::from_secs(5),
        Policy::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(f.reason, Reason::EndpointUnavailable);
    assert!(
        f.message.to_lowercase().contains("certificate"),
        "{}",
        f.message
    );
    assert_eq!(handshakes.load(std::sync::atomic::Ordering::SeqCst), 0);
}

// === token URL policy (--token-url-deny-cidrs, --token-url-allow-hosts) ===

fn policy(deny: &str, allow: &[&str]) -> Policy {
    Policy {
        allow_insecure_http: true,
        token_urls: std::sync::Arc::new(TokenUrlPolicy::new(
            deny.parse::<CidrList>().unwrap(),
            allow
                .iter()
                .map(|h| h.parse::<HostPattern>().unwrap())
                .collect(),
        )),
        allow_service_account_tokens: false,
    }
}

async fn with_policy(url: &str, policy: Policy) -> Result<Token, Failure> {
    exchange_with(
        json!({"tokenUrl": url}),
        &creds(ID, SECRET),
        Duration::from_secs(5),
        policy,
    )
    .await
}

#[tokio::test]
async fn denied_networks_are_checked_on_resolved_addresses() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let by_name = server.url().replace("127.0.0.1", "localhost");
    // Allowed: the name resolves to loopback, which this policy does not deny.
    with_policy(&by_name, policy("169.254.0.0/16", &[]))
        .await
        .expect("localhost is allowed when loopback is not denied");
    assert_eq!(server.count(), 1);

    // The URL names no address, so only the resolver can refuse it.
    let failure = with_policy(&by_name, policy("127.0.0.0/8,::1", &[]))
        .await
        .expect_err("every address of localhost is denied");
    assert_eq!(failure.reason, Reason::InvalidSpec, "{}", failure.message);
    assert!(
        failure.message.contains("--token-url-deny-cidrs"),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("localhost"), "{}", failure.message);
    assert_safe(&failure);

    // An IP literal is refused before any connection.
    let failure = with_policy(&server.url(), policy("127.0.0.1", &[]))
        .await
        .expect_err("a denied literal address");
    assert_eq!(failure.reason, Reason::InvalidSpec);
    assert_eq!(server.count(), 1, "no request reached a denied address");
}

/// Exchanges with settings resolved under no policy, through a transport that denies `deny`.
async fn through_strict_transport(url: &str, deny: &str) -> Result<Token, Failure> {
    let settings = ClientSettings::resolve(&spec(json!({"tokenUrl": url})), &policy("", &[]))
        .expect("no policy at resolve time");
    let strict = policy(deny, &[]).token_urls;
    let transport = Transport::with_policy(Duration::from_secs(5), strict).unwrap();
    exchange::exchange_once(
        &transport,
        &Trust::Default,
        &settings.exchange,
        &creds(ID, SECRET),
        &SystemClock,
    )
    .await
}

#[tokio::test]
async fn the_transport_enforces_the_policy_on_its_own() {
    // Settings resolved without the policy (e.g. by an older operator) still cannot reach a
    // denied address: the transport checks the URL and the resolved addresses itself.
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let failure = through_strict_transport(&server.url(), "127.0.0.0/8")
        .await
        .expect_err("literal address denied by the transport");
    assert_eq!(failure.reason, Reason::InvalidSpec);

    let by_name = server.url().replace("127.0.0.1", "localhost");
    let failure = through_strict_transport(&by_name, "127.0.0.0/8,::1")
        .await
        .expect_err("resolved address denied by the transport");
    assert_eq!(failure.reason, Reason::InvalidSpec, "{}", failure.message);
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn this_host_and_ipv6_forms_of_loopback_are_refused_without_connecting() {
    // http://0.0.0.0:PORT connects to loopback on Linux; it is refused whatever the deny list
    // says (even empty), and IPv6 spellings of 127.0.0.1 are checked as 127.0.0.1.
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let port = server
        .url()
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for deny in ["127.0.0.0/8", ""] {
        for url in [
            format!("http://0.0.0.0:{port}/token"),
            format!("http://0:{port}/token"),
            format!("http://[::]:{port}/token"),
            format!("http://[::ffff:0.0.0.0]:{port}/token"),
        ] {
            let failure = with_policy(&url, policy(deny, &[]))
                .await
                .expect_err("this host");
            assert_eq!(
                failure.reason,
                Reason::InvalidSpec,
                "{url}: {}",
                failure.message
            );
            assert!(
                failure.message.contains("always refuses"),
                "{}",
                failure.message
            );
            // The transport refuses it on its own too (settings that skipped the check).
            let mut settings =
                ClientSettings::resolve(&spec(json!({"tokenUrl": server.url()})), &policy("", &[]))
                    .unwrap();
            settings.exchange.token_url = url.parse().unwrap();
            let transport =
                Transport::with_policy(Duration::from_secs(5), policy(deny, &[]).token_urls)
                    .unwrap();
            let failure = exchange::exchange_once(
                &transport,
                &Trust::Default,
                &settings.exchange,
                &creds(ID, SECRET),
                &SystemClock,
            )
            .await
            .expect_err("this host, in the transport");
            assert_eq!(
                failure.reason,
                Reason::InvalidSpec,
                "{url}: {}",
                failure.message
            );
        }
    }
    for url in [
        format!("http://[::ffff:127.0.0.1]:{port}/token"),
        format!("http://[::127.0.0.1]:{port}/token"),
        format!("http://[64:ff9b::7f00:1]:{port}/token"),
    ] {
        let failure = through_strict_transport(&url, "127.0.0.0/8")
            .await
            .expect_err("loopback in IPv6 form");
        assert_eq!(
            failure.reason,
            Reason::InvalidSpec,
            "{url}: {}",
            failure.message
        );
        assert!(
            failure.message.contains("127.0.0.0/8"),
            "{}",
            failure.message
        );
    }
    assert_eq!(server.count(), 0, "nothing reached the endpoint");
}

#[tokio::test]
async fn default_policy_refuses_the_metadata_address_without_connecting() {
    let started = Instant::now();
    let failure = with_policy(
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        Policy {
            allow_insecure_http: true,
            ..Default::default()
        },
    )
    .await
    .expect_err("metadata address");
    assert_eq!(failure.reason, Reason::InvalidSpec);
    assert!(
        failure.message.contains("169.254.0.0/16"),
        "{}",
        failure.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no connection attempt"
    );
}

#[tokio::test]
async fn allow_hosts_admits_only_the_listed_hosts() {
    let server = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let by_name = server.url().replace("127.0.0.1", "localhost");
    with_policy(&by_name, policy("", &["localhost"]))
        .await
        .expect("listed host");
    for allow in [&["idp.example.com"][..], &["*.localhost"][..]] {
        let failure = with_policy(&by_name, policy("", allow))
            .await
            .expect_err("host not listed");
        assert_eq!(failure.reason, Reason::InvalidSpec);
        assert!(
            failure.message.contains("--token-url-allow-hosts"),
            "{}",
            failure.message
        );
    }
    let failure = with_policy(&server.url(), policy("", &["localhost"]))
        .await
        .expect_err("an address is not a listed host");
    assert_eq!(failure.reason, Reason::InvalidSpec);
    assert_eq!(server.count(), 1);
}

// === an endpoint that echoes the request ===

/// A client secret with every character that encoders treat differently.
const NASTY_SECRET: &str = "s3cr3t ~+/=&<x>\"'\n";
const NASTY_ID: &str = "echo id/1";
const ECHO_TOKEN: &str = "echo/token+value=0123456789";

/// Percent-encoding with `%20` for spaces and lower-case hex, as some servers write it.
fn lower_percent(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
        .split('%')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 || part.len() < 2 {
                part.to_owned()
            } else {
                format!("%{}{}", part[..2].to_ascii_lowercase(), &part[2..])
            }
        })
        .collect()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Answers every request by echoing what it got (the body, each decoded parameter, the
/// Authorization header and the decoded Basic credentials) raw, form-urlencoded (upper- and
/// lower-case, `+` and `%20`), JSON-escaped and HTML-escaped, inside the kind of answer the
/// path names: `/json400`, `/html401`, `/text500` (plain text, long enough to be cut, the echo
/// across the excerpt limit), `/fault401` (Apigee) and `/error200` (a 200 that carries an error
/// beside an access token, echoed too).
async fn echo(
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use base64::Engine as _;
    let mut echoed = vec![String::from_utf8_lossy(&body).into_owned()];
    for (name, value) in form_urlencoded::parse(&body) {
        echoed.push(format!("{name}={value}"));
    }
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) {
        for (name, value) in map {
            echoed.push(format!("{name}={}", value.as_str().unwrap_or_default()));
        }
    }
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        echoed.push(format!("Authorization: {auth}"));
        let decoded = auth
            .strip_prefix("Basic ")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        if let Some(decoded) = decoded {
            let pair = String::from_utf8_lossy(&decoded).into_owned();
            for half in pair.splitn(2, ':') {
                let unescaped = form_urlencoded::parse(format!("v={half}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                echoed.push(unescaped);
            }
            echoed.push(pair);
        }
    }
    let text = echoed.join(" | ");
    let encoded: String = form_urlencoded::byte_serialize(text.as_bytes()).collect();
    let json_escaped = serde_json::to_string(&text).unwrap();
    let all = [
        text.clone(),
        encoded,
        lower_percent(&text),
        json_escaped.clone(),
        json_escaped.replace('/', "\\/"),
        html_escape(&text),
    ]
    .join(" || ");
    let json_type = [("content-type", "application/json")];
    match uri.path() {
        "/json400" => (
            StatusCode::BAD_REQUEST,
            json_type,
            json!({"error": "invalid_request", "error_description": all}).to_string(),
        )
            .into_response(),
        "/html401" => (
            StatusCode::UNAUTHORIZED,
            [("content-type", "text/html")],
            format!(
                "<html><head><title>Denied: {}</title></head><body><pre>{}</pre></body></html>",
                html_escape(&text),
                html_escape(&all)
            ),
        )
            .into_response(),
        "/text500" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            // The echo starts just before the 200-character excerpt limit.
            format!("{} {all}", "failure ".repeat(24)),
        )
            .into_response(),
        "/fault401" => (
            StatusCode::UNAUTHORIZED,
            json_type,
            json!({"fault": {"faultstring": all, "detail": {"errorcode": text}}}).to_string(),
        )
            .into_response(),
        _ => (
            StatusCode::OK,
            json_type,
            json!({
                "access_token": ECHO_TOKEN,
                "error": "server_error",
                "error_description": format!("{all} (token {ECHO_TOKEN})"),
            })
            .to_string(),
        )
            .into_response(),
    }
}

use axum::http::StatusCode;

#[tokio::test]
async fn an_endpoint_that_echoes_the_request_never_gets_a_secret_into_a_message() {
    let (logs, _guard) = support::logs::capture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(echo))
            .await
            .ok();
    });
    let methods = [
        json!({"clientAuthMethod": "ClientSecretPost"}),
        json!({"clientAuthMethod": "ClientSecretPost", "requestEncoding": "JSON"}),
        json!({"clientAuthMethod": "ClientSecretBasic", "basicAuthEncoding": "UrlEncoded"}),
        json!({"clientAuthMethod": "ClientSecretBasic", "basicAuthEncoding": "Raw"}),
    ];
    let modes = [
        ("json400", Reason::InvalidRequest),
        ("html401", Reason::InvalidClient),
        ("text500", Reason::EndpointUnavailable),
        ("fault401", Reason::InvalidClient),
        ("error200", Reason::InvalidResponse),
    ];
    // A secret long enough to scrub, and two too short to: those keep no body text at all.
    let secrets = [NASTY_SECRET, "s3cr3t!", "abc"];
    let mut messages = String::new();
    let mut forbidden: Vec<String> = vec![ECHO_TOKEN.to_owned()];
    for secret in secrets {
        forbidden.push(secret.to_owned());
        forbidden.extend(support::logs::basic_pairs(NASTY_ID, secret));
        for method in &methods {
            for (mode, reason) in modes {
                let mut fields = method.clone();
                fields["tokenUrl"] = json!(format!("http://{addr}/{mode}"));
                let failure = exchange(fields, &creds(NASTY_ID, secret))
                    .await
                    .expect_err("the echo endpoint never issues a token");
                assert_eq!(failure.reason, reason, "{mode} {method}: {failure}");
                assert!(
                    failure.message.starts_with("HTTP "),
                    "{mode}: {}",
                    failure.message
                );
                let refs: Vec<&str> = forbidden.iter().map(String::as_str).collect();
                support::logs::assert_absent(&failure.message, &refs, &format!("{mode} {method}"));
                if secret == NASTY_SECRET && mode != "text500" {
                    assert!(
                        failure.message.contains("[redacted]"),
                        "the echo is shown, scrubbed: {}",
                        failure.message
                    );
                }
                if secret.len() < 8 {
                    let expected = match mode {
                        "json400" => "HTTP 400 Bad Request: invalid_request",
                        "html401" | "fault401" => "HTTP 401 Unauthorized",
                        "text500" => "HTTP 500 Internal Server Error",
                        _ => "HTTP 200 OK carries an error instead of a token",
                    };
                    // Nothing the endpoint said; for an HTTP error, the token URL it came from.
                    let rest = failure
                        .message
                        .strip_prefix(expected)
                        .unwrap_or_else(|| panic!("{mode} {method}: {}", failure.message));
                    assert!(
                        rest.is_empty()
                            || (rest.starts_with(" (token URL http://127.0.0.1:")
                                && rest.ends_with(&format!("/{mode})"))),
                        "{mode} {method}: {}",
                        failure.message
                    );
                }
                tracing::info!(%failure, "echo failure");
                messages.push_str(&failure.message);
                messages.push('\n');
            }
        }
    }
    server.abort();
    let refs: Vec<&str> = forbidden.iter().map(String::as_str).collect();
    support::logs::assert_absent(&messages, &refs, "failure messages");
    let text = logs.text();
    assert!(text.contains("TRACE"), "TRACE logs are captured");
    assert!(text.contains("echo failure"), "the failures were logged");
    support::logs::assert_absent(&text, &refs, "TRACE logs");
}
