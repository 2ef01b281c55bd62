//! ServiceAccountToken: the controller exchanges a ServiceAccount token of the double (a
//! federation endpoint verifies it) only with `--allow-service-account-tokens`, only for a
//! ServiceAccount whose owner opted in to the audience and listed the token endpoint's origin
//! (no origin trick passes that list), never for an audience the API server itself accepts, and
//! reuses the stored tokens after a restart; each refusal sends nothing to the token endpoint.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::sleep;
use crate::support::apiserver::{ApiServer, Matcher, OAUTHCLIENTS, SERVICEACCOUNTS};
use crate::support::assertions::{Expectation, VerifyingKey};
use crate::support::builders::{Spec, create_client};
use crate::support::harness::*;
use crate::support::vendors::*;
use oauth_token_operator::api::keys::{TOKEN_AUDIENCES_ANNOTATION, TOKEN_ENDPOINTS_ANNOTATION};
use oauth_token_operator::oauth::credentials::from_service_account;
use serde_json::{Value, json};

const NS: &str = "payments";
const AUDIENCE: &str = "api://AzureADTokenExchange";
const TOKEN_REQUESTS: &str = "create serviceaccounts/token";

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

/// The spec of a client `client_id` that sends tokens of the ServiceAccount `sa` for
/// `audience` (an hour long) to `url`.
fn federated(url: &str, client_id: &str, sa: &str, audience: &str) -> Spec {
    Spec::to(url)
        .service_account(sa, audience)
        .client_id(client_id)
        .expiration_seconds(3600)
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

// === federation ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_token_federation_needs_the_opt_in_and_survives_a_restart() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let operator = Operator::start_with(&api, &[], 4, with_service_account_tokens());
    let url = vendor.url();
    vendor.expect_assertions(federation(&api, "app", "workload"));
    service_account(&api, "workload", Some(&format!("other, {AUDIENCE} ")), &url);
    create_client(
        &api,
        NS,
        "app",
        &federated(&url, "app", "workload", AUDIENCE),
    );
    wait_ready(&api, NS, "app", "True", "TokenIssued").await;
    assert_eq!((vendor.count(), api.count(TOKEN_REQUESTS)), (1, 1));

    // No opt-in: denied before any TokenRequest; the annotation retries within seconds.
    vendor.expect_assertions(federation(&api, "shy-app", "shy"));
    service_account(&api, "shy", None, &url);
    create_client(
        &api,
        NS,
        "shy",
        &federated(&url, "shy-app", "shy", AUDIENCE),
    );
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

// === where ServiceAccount tokens may go ===

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
    create_client(
        &api,
        NS,
        "legit",
        &federated(&idp.url(), "app", "workload", AUDIENCE),
    );
    wait_ready(&api, NS, "legit", "True", "TokenIssued").await;
    create_client(
        &api,
        NS,
        "stolen",
        &federated(&attacker.url(), "app", "workload", AUDIENCE),
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

// === origin tricks (formerly tests/service_account_endpoints.rs) ===
//
// Review of security round three, item 2: origin tricks against a ServiceAccount's
// `token-endpoints` opt-in. For every token URL the opt-in allows, the host and port the HTTP
// client connects to must be the listed ones. (This attack holds; kept as a regression.)

fn connects_to(url: &url::Url) -> (String, u16) {
    (
        url.host_str().unwrap_or_default().to_ascii_lowercase(),
        url.port_or_known_default().unwrap_or(0),
    )
}

/// Listed origins, each with token URLs that try to pass for it.
const ORIGIN_TRICKS: [(&str, &[&str]); 4] = [
    (
        "https://idp.example.com",
        &[
            "https://idp.example.com@evil.example/token",
            "https://idp.example.com:443@evil.example/token",
            "https://evil.example\\@idp.example.com/token",
            "https://evil.example#@idp.example.com/token",
            "https://evil.example?@idp.example.com/token",
            "https://idp.example.com.evil.example/token",
            "https://idp.example.com./token",
            "https://IDP.EXAMPLE.COM:443/token",
            "HTTPS://idp.example.com/token",
            "https://idp%2eexample%2ecom/token",
            "https://idp.example.com:8443/token",
            "http://idp.example.com/token",
            "http://idp.example.com:443/token",
            "https://user:pw@idp.example.com/token",
            "https://xn--idp-example-com/token",
            "https://idp.example.com%00.evil.example/token",
            "https://idp.example.com\t/token",
        ],
    ),
    (
        "https://127.0.0.1",
        &[
            "https://0x7f.1/token",
            "https://2130706433/token",
            "https://127.1/token",
            "https://[::ffff:127.0.0.1]/token",
            "https://[::1]/token",
            "https://localhost/token",
            "https://127.0.0.1:443/token",
        ],
    ),
    (
        "https://[::1]:8443",
        &[
            "https://[0:0:0:0:0:0:0:1]:8443/token",
            "https://[::1]/token",
            "https://[::0001]:8443/t",
        ],
    ),
    (
        "https://bücher.example",
        &[
            "https://xn--bcher-kva.example/t",
            "https://BÜCHER.example/t",
            "https://bucher.example/t",
        ],
    ),
];

#[test]
fn no_token_url_the_opt_in_allows_connects_anywhere_else() {
    let mut wrong = Vec::new();
    for (listed, urls) in ORIGIN_TRICKS {
        let annotations: BTreeMap<String, String> = [
            (TOKEN_AUDIENCES_ANNOTATION.to_owned(), "aud".to_owned()),
            (
                TOKEN_ENDPOINTS_ANNOTATION.to_owned(),
                format!(" {listed} , "),
            ),
        ]
        .into();
        let listed_url = url::Url::parse(listed).unwrap();
        for raw in urls {
            let Ok(url) = url::Url::parse(raw) else {
                continue;
            };
            let allowed =
                from_service_account("c", "sa", "aud", &url, "ns", Some(&annotations)).is_ok();
            println!(
                "{listed:28} {raw:50} -> {} {:?}",
                if allowed { "ALLOWED" } else { "denied " },
                connects_to(&url)
            );
            if allowed
                && (connects_to(&url) != connects_to(&listed_url)
                    || url.scheme() != listed_url.scheme())
            {
                wrong.push(format!(
                    "{raw} allowed by {listed}, connects to {:?}",
                    connects_to(&url)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

// === refusals ===

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
    create_client(&api, NS, "issuer", &federated(&url, "g1", "greedy", issuer));
    create_client(
        &api,
        NS,
        "in-cluster",
        &federated(&url, "g2", "greedy", "https://kubernetes.default.svc"),
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
    create_client(
        &api,
        NS,
        "ghost",
        &federated(&url, "g3", "nobody", AUDIENCE),
    );
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
        namespace: None,
    };
    api.fail_next(token, 1, 403);
    service_account(&api, "refused", Some(AUDIENCE), &url);
    create_client(
        &api,
        NS,
        "refused",
        &federated(&url, "g4", "refused", AUDIENCE),
    );
    let (_, _, message) =
        wait_ready(&api, NS, "refused", "False", "ServiceAccountTokenDenied").await;
    assert!(message.contains("refused the TokenRequest"), "{message}");
    assert_eq!(vendor.count(), 0, "no token request for any refusal");
    assert!(api.violations().is_empty(), "{:?}", api.violations());
    operator.stop().await;
}

/// `helm upgrade --set serviceAccountTokens.enabled=true`: a client refused for the missing
/// flag is retried at once by the operator started with it, not after the backoff the previous
/// process recorded (a minute after one failure, up to 30 min after a streak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_started_with_the_flag_retries_the_refused_client_at_once() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let url = vendor.url();
    vendor.expect_assertions(federation(&api, "app", "workload"));
    service_account(&api, "workload", Some(AUDIENCE), &url);
    let without = Operator::start(&api, &[], 4);
    create_client(
        &api,
        NS,
        "app",
        &federated(&url, "app", "workload", AUDIENCE),
    );
    wait_ready(&api, NS, "app", "False", "InvalidSpec").await;
    without.stop().await;
    let retry_at = api.get(OAUTHCLIENTS, NS, "app").unwrap()["status"]["nextRefreshAt"].clone();
    let started = Instant::now();
    let with = Operator::start_with(&api, &[], 4, with_service_account_tokens());
    wait_ready(&api, NS, "app", "True", "TokenIssued").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?} (the recorded retry was {retry_at})",
        started.elapsed()
    );
    assert_eq!(vendor.count(), 1);
    with.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_are_invalid_spec_without_the_flag_and_no_service_account_is_read() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "-", "-", Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    service_account(&api, "workload", Some(AUDIENCE), &vendor.url());
    create_client(
        &api,
        NS,
        "app",
        &federated(&vendor.url(), "app", "workload", AUDIENCE),
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

/// Review of the token exchange change: a credentials Secret of a cluster credential type (a
/// legacy ServiceAccount token, read through `clientSecretKey: token`) went to any token
/// endpoint without the ServiceAccount's opt-in. It is ServiceAccountTokenDenied, and nothing
/// is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_secret_that_is_a_cluster_credential_is_never_sent() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "app", "-", Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    api.create(
        crate::support::apiserver::SECRETS,
        json!({"metadata": {"name": "legacy", "namespace": NS,
            "annotations": {"kubernetes.io/service-account.name": "default"}},
            "type": "kubernetes.io/service-account-token",
            "stringData": {"token": "legacy-service-account-token-value", "client_id": "app"}}),
    );
    create_client(
        &api,
        NS,
        "legacy",
        &Spec::to(&vendor.url())
            .credentials("legacy")
            .credentials_key("clientSecretKey", "token"),
    );
    let (_, _, message) =
        wait_ready(&api, NS, "legacy", "False", "ServiceAccountTokenDenied").await;
    assert!(
        message.contains("spec.credentialsSecretRef") && message.contains("service-account-token"),
        "{message}"
    );
    sleep(500).await;
    assert_eq!(vendor.count(), 0);
    operator.stop().await;
}
