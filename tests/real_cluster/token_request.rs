//! TokenRequest for real: a `ServiceAccountToken` client's assertion is minted by the real API
//! server; the token endpoint verifies its signature against the server's `/openid/v1/jwks` and
//! its `iss`, `sub`, `aud` and `exp`. Audiences the API server itself accepts are refused with
//! no TokenRequest.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use serde_json::{Value, json};

use crate::common::*;
use crate::support::assertions::{Expectation, VerifyingKey};
use crate::support::control_plane::{ControlPlane, cluster};
use crate::support::process::spawn_with;
use crate::support::vendors::{TokenServer, Tokens, Vendor};

/// The verifying key of the API server's ServiceAccount tokens, from its `/openid/v1/jwks`.
pub async fn jwks_key(plane: &ControlPlane) -> VerifyingKey {
    let client = plane.client().await;
    let request = http::Request::get("/openid/v1/jwks")
        .body(Vec::new())
        .unwrap();
    let jwks: Value =
        serde_json::from_str(&client.request_text(request).await.expect("/openid/v1/jwks"))
            .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC", "{jwks}");
    assert_eq!(key["crv"], "P-256", "{jwks}");
    let coordinate = |name: &str| URL_SAFE_NO_PAD.decode(key[name].as_str().unwrap()).unwrap();
    let mut point = vec![0x04];
    point.extend(coordinate("x"));
    point.extend(coordinate("y"));
    VerifyingKey::Public(point, vec!["ES256"])
}

/// What the token endpoint expects of the assertions of `client_id`: tokens of the
/// ServiceAccount `ns/account` for `audience`, issued by the real API server.
pub async fn expectation(
    plane: &ControlPlane,
    client_id: &str,
    ns: &str,
    account: &str,
    audience: &str,
) -> Expectation {
    Expectation {
        client_id: client_id.into(),
        issuer: Some(plane.issuer.clone()),
        subject: Some(format!("system:serviceaccount:{ns}:{account}")),
        audience: audience.into(),
        key: jwks_key(plane).await,
        max_lifetime: Duration::from_secs(3600),
        skew: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_come_from_the_real_token_request_api() {
    let test = "service_account_tokens_come_from_the_real_token_request_api";
    let Some(cluster) = cluster(test).await else {
        return;
    };
    let Some(plane) = cluster.local_or_skip(test) else {
        return;
    };
    let client = cluster.client().await;
    let ns = cluster.namespace("token-request").await;
    let audience = "api://AzureADTokenExchange";
    let vendor = TokenServer::start(Vendor::Generic, "wif", "unused", Tokens::Unique).await;
    vendor.expect_assertions(expectation(&plane, "wif", &ns, "workload", audience).await);
    let origin = url::Url::parse(&vendor.url())
        .unwrap()
        .origin()
        .ascii_serialization();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let account = |name: &str, audiences: &str| -> ServiceAccount {
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": {
            "oauth.token-operator.dev/token-audiences": audiences,
            "oauth.token-operator.dev/token-endpoints": origin,
        }}}))
        .unwrap()
    };
    accounts
        .create(&Default::default(), &account("workload", audience))
        .await
        .unwrap();
    // A ServiceAccount that opts in to the API server's own audience (its issuer): refused.
    accounts
        .create(&Default::default(), &account("api-audience", &plane.issuer))
        .await
        .unwrap();
    let operator = spawn_with(
        crate::support::process::BIN,
        &cluster.kubeconfig,
        &[
            "--allow-service-account-tokens",
            &format!("--namespaces={ns}"),
        ],
        "token-request-0",
        &[("POD_NAMESPACE", ns.as_str())],
    );
    let spec = |account: &str, audience: &str| {
        json!({"tokenUrl": vendor.url(), "clientAuthMethod": "ServiceAccountToken", "clientId": "wif",
               "serviceAccountToken": {"serviceAccountName": account, "audience": audience}})
    };
    oauth_client(&client, &ns, "wif", spec("workload", audience)).await;
    wait_ready(&client, &ns, "wif", "True", "TokenIssued", Some(&operator)).await;
    assert_eq!(
        vendor.count(),
        1,
        "one token request, its assertion verified"
    );

    oauth_client(
        &client,
        &ns,
        "api-audience",
        spec("api-audience", &plane.issuer),
    )
    .await;
    let object = wait_ready(
        &client,
        &ns,
        "api-audience",
        "False",
        "ServiceAccountTokenDenied",
        Some(&operator),
    )
    .await;
    let (_, _, message) = condition_of(&object, "Ready").unwrap();
    assert!(message.contains(&plane.issuer), "{message}");
    assert_eq!(vendor.count(), 1, "nothing sent for the refused audience");
    let minted: Vec<_> = plane
        .audit_events()
        .into_iter()
        .filter(|e| {
            e.resource == "serviceaccounts" && e.subresource == "token" && e.namespace == ns
        })
        .collect();
    assert!(
        minted.iter().all(|e| !e.uri.contains("/api-audience/")),
        "no TokenRequest for the refused audience: {minted:?}"
    );
    assert!(minted.iter().any(|e| e.uri.contains("/workload/")));
    drop(operator);
}

/// Security round three, item 6: audiences the API server accepts besides its issuer (a
/// distribution's `--api-audiences`) are learned at start, from a TokenRequest for the
/// operator's own ServiceAccount, and refused even when a ServiceAccount lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_servers_own_audiences_are_learned_at_start_and_refused() {
    let test = "the_api_servers_own_audiences_are_learned_at_start_and_refused";
    let extra = "https://api.cluster-1.example";
    let options = crate::support::control_plane::Options {
        apiserver_flags: vec![format!("--api-audiences={extra}")],
        ..Default::default()
    };
    let Some(cluster) = crate::support::control_plane::own_control_plane(test, options).await
    else {
        return;
    };
    let client = cluster.client().await;
    let ns = cluster.namespace("api-audiences").await;
    let install = Install::new(
        &cluster,
        "api-audiences",
        json!({"allowInsecureHttp": true, "watchNamespaces": [ns],
               "serviceAccountTokens": {"enabled": true, "refusedAudiences": ["vault"]}}),
    )
    .await;
    let operator = install.pod("api-audiences-0").await;
    let vendor = TokenServer::start(Vendor::Generic, "wif", "unused", Tokens::Unique).await;
    let origin = url::Url::parse(&vendor.url())
        .unwrap()
        .origin()
        .ascii_serialization();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let greedy: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "greedy", "annotations": {
            "oauth.token-operator.dev/token-audiences": format!("{extra},vault"),
            "oauth.token-operator.dev/token-endpoints": origin,
        }}}))
        .unwrap();
    accounts.create(&Default::default(), &greedy).await.unwrap();
    for (name, audience) in [("learned", extra), ("configured", "vault")] {
        oauth_client(
            &client,
            &ns,
            name,
            json!({"tokenUrl": vendor.url(), "clientAuthMethod": "ServiceAccountToken", "clientId": "wif",
                   "serviceAccountToken": {"serviceAccountName": "greedy", "audience": audience}}),
        )
        .await;
        let object = wait_ready(
            &client,
            &ns,
            name,
            "False",
            "ServiceAccountTokenDenied",
            Some(&operator),
        )
        .await;
        let (_, _, message) = condition_of(&object, "Ready").unwrap();
        assert!(
            message.contains("accepted by the Kubernetes API server"),
            "{message}"
        );
    }
    assert_eq!(vendor.count(), 0, "nothing sent for either");
    let plane = cluster.local.clone().unwrap();
    let minted: Vec<_> = plane
        .audit_events()
        .into_iter()
        .filter(|e| e.subresource == "token" && e.namespace == ns)
        .collect();
    assert!(
        minted.is_empty(),
        "no TokenRequest for the workload: {minted:?}"
    );
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}

/// Token exchange (RFC 8693) with a ServiceAccount subject minted by the real API server: the
/// exchange endpoint verifies it against `/openid/v1/jwks`; a second client exchanges the
/// first one's token (chaining), a third a token in a Secret; an audience the API server
/// accepts is refused with no TokenRequest; a restarted operator sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_subjects_minted_by_the_real_api_server() {
    use crate::support::sts::{
        ACCESS_TOKEN_TYPE, ClientAuth, JWT_TYPE, Policy, StsServer, Subjects,
    };
    let test = "token_exchange_subjects_minted_by_the_real_api_server";
    let Some(cluster) = cluster(test).await else {
        return;
    };
    let Some(plane) = cluster.local_or_skip(test) else {
        return;
    };
    let client = cluster.client().await;
    let ns = cluster.namespace("token-exchange").await;
    let pool =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/k/providers/k";
    let sts = StsServer::start(Policy {
        client: ClientAuth::Public,
        subject_token_type: JWT_TYPE.into(),
        audience: Some(pool.into()),
        subjects: Subjects::ServiceAccount {
            issuer: plane.issuer.clone(),
            key: jwks_key(&plane).await,
            audience: pool.into(),
            subject: format!("system:serviceaccount:{ns}:ci"),
        },
    })
    .await;
    let issued = std::sync::Arc::new(sts);
    let first = issued.clone();
    let chained = StsServer::start(Policy {
        client: ClientAuth::Public,
        subject_token_type: ACCESS_TOKEN_TYPE.into(),
        audience: None,
        subjects: Subjects::IssuedBy(std::sync::Arc::new(move || first.issued())),
    })
    .await;
    let origin = url::Url::parse(&issued.url())
        .unwrap()
        .origin()
        .ascii_serialization();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "ci", "annotations": {
            "oauth.token-operator.dev/token-audiences": format!("{pool},{}", plane.issuer),
            "oauth.token-operator.dev/token-endpoints": origin,
        }}}))
        .unwrap();
    accounts
        .create(&Default::default(), &account)
        .await
        .unwrap();
    let spawn = |name: &str| {
        spawn_with(
            crate::support::process::BIN,
            &cluster.kubeconfig,
            &[
                "--allow-service-account-tokens",
                &format!("--namespaces={ns}"),
            ],
            name,
            &[("POD_NAMESPACE", ns.as_str())],
        )
    };
    let operator = spawn("token-exchange-0");
    let exchange = |url: &str, audience: Option<&str>, subject: Value| {
        let mut spec = json!({"tokenUrl": url, "grantType": "TokenExchange",
            "clientAuthMethod": "None", "tokenExchange": {"subjectToken": subject}});
        if let Some(audience) = audience {
            spec["audience"] = audience.into();
        }
        spec
    };
    let sa = |audience: &str| json!({"serviceAccountToken": {"serviceAccountName": "ci", "audience": audience}});
    oauth_client(
        &client,
        &ns,
        "gcp",
        exchange(&issued.url(), Some(pool), sa(pool)),
    )
    .await;
    let object = wait_ready(&client, &ns, "gcp", "True", "TokenIssued", Some(&operator)).await;
    assert_eq!(issued.count(), 1, "one exchange, its subject verified");
    assert_eq!(object["status"]["issuedTokenType"], ACCESS_TOKEN_TYPE);
    oauth_client(
        &client,
        &ns,
        "chained",
        exchange(
            &chained.url(),
            None,
            json!({"oauthClientRef": {"name": "gcp"}}),
        ),
    )
    .await;
    wait_ready(
        &client,
        &ns,
        "chained",
        "True",
        "TokenIssued",
        Some(&operator),
    )
    .await;
    assert_eq!(chained.count(), 1);
    // A token in a Secret, written by something else.
    let ci_token = "ci-pipeline-token-0123456789abcdef";
    let from_secret = StsServer::start(Policy {
        client: ClientAuth::Public,
        subject_token_type: JWT_TYPE.into(),
        audience: None,
        subjects: Subjects::Known(vec![ci_token.into()]),
    })
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        json!({"metadata": {"name": "ci-token"}, "stringData": {"token": ci_token}}),
    )
    .unwrap();
    secrets.create(&Default::default(), &secret).await.unwrap();
    oauth_client(
        &client,
        &ns,
        "from-secret",
        exchange(
            &from_secret.url(),
            None,
            json!({"secretRef": {"name": "ci-token", "key": "token"}}),
        ),
    )
    .await;
    wait_ready(
        &client,
        &ns,
        "from-secret",
        "True",
        "TokenIssued",
        Some(&operator),
    )
    .await;
    assert_eq!(from_secret.count(), 1);
    // The API server's own audience, although the ServiceAccount lists it: refused.
    oauth_client(
        &client,
        &ns,
        "cluster-audience",
        exchange(&issued.url(), Some(pool), sa(&plane.issuer)),
    )
    .await;
    wait_ready(
        &client,
        &ns,
        "cluster-audience",
        "False",
        "ServiceAccountTokenDenied",
        Some(&operator),
    )
    .await;
    assert_eq!(issued.count(), 1);
    let minted = plane
        .audit_events()
        .into_iter()
        .filter(|e| {
            e.resource == "serviceaccounts" && e.subresource == "token" && e.namespace == ns
        })
        .count();
    assert_eq!(minted, 1, "one TokenRequest, none for the refused audience");
    drop(operator);

    // A restart reuses the three tokens.
    let again = spawn("token-exchange-1");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        (issued.count(), chained.count(), from_secret.count()),
        (1, 1, 1),
        "{}",
        again.text()
    );
    drop(again);
}
