//! The CRD schema refuses what no OAuthClient may hold: a namespace in the credentials
//! reference, and oversize user-controlled maps and strings. Checked through the API-server
//! double, which applies the generated CRD's OpenAPI schema and evaluates its CEL rules.

mod support;

use kube::api::{Api, PostParams};
use oauth_token_operator::api::crd::{MAX_MAP_ENTRIES, MAX_NAME_LEN, MAX_VALUE_LEN, OAuthClient};
use serde_json::{Map, Value, json};
use support::apiserver::ApiServer;

fn client(name: &str, spec_fields: Value) -> OAuthClient {
    let mut spec =
        json!({"tokenUrl": "https://idp.example/token", "credentialsSecretRef": {"name": "creds"}});
    for (k, v) in spec_fields.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn map(entries: usize, name_len: usize, value_len: usize) -> Value {
    let mut m = Map::new();
    for i in 0..entries {
        let name = format!("{i:0>width$}", width = name_len.max(3));
        m.insert(name, json!("v".repeat(value_len)));
    }
    Value::Object(m)
}

/// Each client is refused with 422 and a message holding its expected text.
async fn assert_refused<const N: usize>(
    clients: &Api<OAuthClient>,
    cases: [(OAuthClient, &str); N],
) {
    for (i, (mut client, expected)) in cases.into_iter().enumerate() {
        client.metadata.name = Some(format!("bad-{i}"));
        let err = clients
            .create(&PostParams::default(), &client)
            .await
            .expect_err(&format!("case {i} should be refused: {expected}"));
        let kube::Error::Api(status) = err else {
            panic!("case {i}: {err}")
        };
        assert_eq!(status.code, 422, "case {i}");
        assert!(
            status.message.contains(expected),
            "case {i}: {}",
            status.message
        );
    }
}

#[tokio::test]
async fn the_schema_refuses_namespaced_references_and_oversize_specs() {
    let api = ApiServer::start_unlogged().await;
    let clients: Api<OAuthClient> = Api::namespaced(api.client(), "team-a");
    let refused = [
        (
            json!({"credentialsSecretRef": {"name": "creds", "namespace": "team-b"}}),
            "own namespace",
        ),
        (
            json!({"credentialsSecretRef": {"name": "creds", "namespace": "team-a"}}),
            "own namespace",
        ),
        (
            json!({"extraParams": map(MAX_MAP_ENTRIES + 1, 3, 1)}),
            "Too many properties",
        ),
        (
            json!({"extraHeaders": map(MAX_MAP_ENTRIES + 1, 3, 1)}),
            "Too many properties",
        ),
        (
            json!({"extraParams": map(1, 3, MAX_VALUE_LEN + 1)}),
            "Too long",
        ),
        (
            json!({"extraHeaders": map(1, 3, MAX_VALUE_LEN + 1)}),
            "Too long",
        ),
        (
            json!({"extraParams": map(1, MAX_NAME_LEN + 1, 1)}),
            "extraParams names must be 1 to 256",
        ),
        (
            json!({"extraHeaders": map(1, MAX_NAME_LEN + 1, 1)}),
            "extraHeaders names must be 1 to 256",
        ),
        (
            json!({"extraHeaders": {"": "v"}}),
            "extraHeaders names must be 1 to 256",
        ),
        (
            json!({"target": {"template": map(MAX_MAP_ENTRIES + 1, 3, 1)}}),
            "Too many properties",
        ),
        (
            json!({"target": {"template": map(1, 3, MAX_VALUE_LEN + 1)}}),
            "Too long",
        ),
        (
            json!({"target": {"template": map(1, 254, 1)}}),
            "template keys must be 1 to 253",
        ),
        (
            json!({"tokenUrl": format!("https://x/{}", "a".repeat(2048))}),
            "Too long",
        ),
        (json!({"scopes": vec!["s"; 65]}), "Too many items"),
        (json!({"audience": "a".repeat(2049)}), "Too long"),
    ];
    let refused = refused.map(|(fields, expected)| (client("bad", fields), expected));
    assert_refused(&clients, refused).await;
    // Exactly at every limit is accepted.
    let at_limit = json!({
        "extraParams": map(MAX_MAP_ENTRIES, MAX_NAME_LEN, MAX_VALUE_LEN),
        "extraHeaders": map(MAX_MAP_ENTRIES, MAX_NAME_LEN, MAX_VALUE_LEN),
        "target": {"template": map(MAX_MAP_ENTRIES, 253, MAX_VALUE_LEN)},
        "scopes": vec!["s"; 64],
    });
    clients
        .create(&PostParams::default(), &client("at-limit", at_limit))
        .await
        .expect("a spec at every limit is accepted");
}

/// An OAuthClient with exactly `spec`.
fn with_spec(name: &str, spec: Value) -> OAuthClient {
    serde_json::from_value(json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn the_schema_holds_the_client_authentication_rules() {
    let api = ApiServer::start_unlogged().await;
    let clients: Api<OAuthClient> = Api::namespaced(api.client(), "team-a");
    let url = "https://idp.example/token";
    let creds = json!({"name": "creds"});
    let sa = json!({"serviceAccountName": "workload", "audience": "api://AzureADTokenExchange"});
    let accepted = [
        json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
            "clientAssertion": {"algorithm": "ES256", "keyId": "k1", "audience": "https://idp.example", "lifetime": "1m"}}),
        json!({"tokenUrl": url, "clientAuthMethod": "ClientSecretJwt", "credentialsSecretRef": creds,
            "clientAssertion": {"algorithm": "HS512"}}),
        json!({"tokenUrl": url, "clientAuthMethod": "TlsClientAuth", "clientId": "id",
            "credentialsSecretRef": {"name": "tls", "privateKeyKey": "key.pem", "certificateKey": "chain.pem"}}),
        json!({"tokenUrl": url, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
            "serviceAccountToken": sa}),
    ];
    for (i, spec) in accepted.iter().enumerate() {
        clients
            .create(
                &PostParams::default(),
                &with_spec(&format!("ok-{i}"), spec.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("case {i} should be accepted: {e}"));
    }
    let refused = [
        (json!({"tokenUrl": url}), "credentialsSecretRef is required"),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
                "serviceAccountToken": sa, "credentialsSecretRef": creds}),
            "must be absent",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "ServiceAccountToken", "clientId": "id"}),
            "requires spec.serviceAccountToken",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "ServiceAccountToken", "serviceAccountToken": sa}),
            "requires spec.serviceAccountToken",
        ),
        (
            json!({"tokenUrl": url, "credentialsSecretRef": creds, "serviceAccountToken": sa}),
            "only allowed with clientAuthMethod ServiceAccountToken",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "TlsClientAuth", "credentialsSecretRef": creds,
                "clientAssertion": {}}),
            "only allowed with clientAuthMethod ClientSecretJwt or PrivateKeyJwt",
        ),
        (
            json!({"tokenUrl": url, "credentialsSecretRef": creds, "clientAssertion": {"algorithm": "RS256"}}),
            "only allowed with clientAuthMethod ClientSecretJwt or PrivateKeyJwt",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "ClientSecretJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"algorithm": "RS256"}}),
            "must be HS256, HS384 or HS512",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"algorithm": "HS256"}}),
            "must be one of RS256",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"lifetime": "2h"}}),
            "between 10s and 1h",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"lifetime": "5s"}}),
            "between 10s and 1h",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"keyId": "k".repeat(1025)}}),
            "Too long",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"audience": "a".repeat(2049)}}),
            "Too long",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "PrivateKeyJwt",
                "credentialsSecretRef": {"name": "creds", "privateKeyKey": "k".repeat(254)}}),
            "Too long",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "TlsClientAuth",
                "credentialsSecretRef": {"name": "creds", "certificateKey": "k".repeat(254)}}),
            "Too long",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
                "serviceAccountToken": {"serviceAccountName": "w", "audience": "a".repeat(2049)}}),
            "Too long",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
                "serviceAccountToken": {"serviceAccountName": "w", "audience": "a", "expirationSeconds": 599}}),
            "expirationSeconds: should be at least 600",
        ),
        (
            json!({"tokenUrl": url, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
                "serviceAccountToken": {"serviceAccountName": "w", "audience": "a", "expirationSeconds": 86401}}),
            "expirationSeconds: should be at most 86400",
        ),
    ];
    let refused = refused.map(|(spec, expected)| (with_spec("bad", spec), expected));
    assert_refused(&clients, refused).await;
}
