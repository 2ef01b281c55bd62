//! The CRD's schema and CEL rules, as the real API server applies them: what no OAuthClient may
//! hold (a namespace in a reference, oversize maps and strings, a credential Secret type,
//! reserved keys, client authentication fields that do not fit the method) is refused with 422
//! and a message that says why, and exactly at every limit is accepted.
//!
//! These tables were checked against the API-server double's own CEL evaluator before; the real
//! server is the reference now, and the double evaluates no CEL.

use kube::api::{Api, PostParams};
use oauth_token_operator::api::crd::{MAX_MAP_ENTRIES, MAX_NAME_LEN, MAX_VALUE_LEN, OAuthClient};
use serde_json::{Map, Value, json};

use crate::support::control_plane::cluster;

const URL: &str = "https://idp.example/token";

/// An OAuthClient with exactly `spec`.
fn with_spec(name: &str, spec: Value) -> OAuthClient {
    serde_json::from_value(json!({
        "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "OAuthClient",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// A generic client's spec with `fields` added.
fn generic(fields: Value) -> Value {
    let mut spec = json!({"tokenUrl": URL, "credentialsSecretRef": {"name": "creds"}});
    for (k, v) in fields.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

fn map(entries: usize, name_len: usize, value_len: usize) -> Value {
    let mut m = Map::new();
    for i in 0..entries {
        let name = format!("{i:0>width$}", width = name_len.max(3));
        m.insert(name, json!("v".repeat(value_len)));
    }
    Value::Object(m)
}

/// Each spec is refused with 422 and a message holding its expected text.
async fn assert_refused(clients: &Api<OAuthClient>, cases: Vec<(Value, &str)>) {
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        let client = with_spec(&format!("bad-{i}"), spec.clone());
        let err = clients
            .create(&PostParams::default(), &client)
            .await
            .expect_err(&format!("case {i} should be refused ({expected}): {spec}"));
        let kube::Error::Api(status) = err else {
            panic!("case {i}: {err}")
        };
        assert_eq!(status.code, 422, "case {i}: {}", status.message);
        assert!(
            status.message.contains(expected),
            "case {i}: expected {expected:?} in {:?}",
            status.message
        );
    }
}

/// Each spec is accepted.
async fn assert_accepted(clients: &Api<OAuthClient>, prefix: &str, cases: Vec<Value>) {
    for (i, spec) in cases.into_iter().enumerate() {
        clients
            .create(
                &PostParams::default(),
                &with_spec(&format!("{prefix}-{i}"), spec.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("case {i} should be accepted: {spec}: {e}"));
    }
}

#[tokio::test]
async fn the_schema_refuses_namespaced_references_and_oversize_specs() {
    let Some(cluster) =
        cluster("the_schema_refuses_namespaced_references_and_oversize_specs").await
    else {
        return;
    };
    let ns = cluster.namespace("schema-bounds").await;
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client().await, &ns);
    let refused = vec![
        (
            generic(json!({"credentialsSecretRef": {"name": "creds", "namespace": "team-b"}})),
            "own namespace",
        ),
        (
            generic(json!({"credentialsSecretRef": {"name": "creds", "namespace": ns}})),
            "own namespace",
        ),
        (
            generic(json!({"caBundleRef": {"name": "ca", "namespace": "team-b"}})),
            "own namespace",
        ),
        (
            generic(json!({"extraParams": map(MAX_MAP_ENTRIES + 1, 3, 1)})),
            "Too many",
        ),
        (
            generic(json!({"extraHeaders": map(MAX_MAP_ENTRIES + 1, 3, 1)})),
            "Too many",
        ),
        (
            generic(json!({"extraParams": map(1, 3, MAX_VALUE_LEN + 1)})),
            "Too long",
        ),
        (
            generic(json!({"extraHeaders": map(1, 3, MAX_VALUE_LEN + 1)})),
            "Too long",
        ),
        (
            generic(json!({"extraParams": map(1, MAX_NAME_LEN + 1, 1)})),
            "extraParams names must be 1 to 256",
        ),
        (
            generic(json!({"extraHeaders": map(1, MAX_NAME_LEN + 1, 1)})),
            "extraHeaders names must be 1 to 256",
        ),
        (
            generic(json!({"extraHeaders": {"": "v"}})),
            "extraHeaders names must be 1 to 256",
        ),
        (
            generic(json!({"target": {"template": map(MAX_MAP_ENTRIES + 1, 3, 1)}})),
            "Too many",
        ),
        (
            generic(json!({"target": {"template": map(1, 3, MAX_VALUE_LEN + 1)}})),
            "Too long",
        ),
        (
            generic(json!({"target": {"template": map(1, 254, 1)}})),
            "template keys must be 1 to 253",
        ),
        (
            generic(json!({"tokenUrl": format!("https://x/{}", "a".repeat(2048))})),
            "Too long",
        ),
        (generic(json!({"scopes": vec!["s"; 65]})), "Too many"),
        (generic(json!({"audience": "a".repeat(2049)})), "Too long"),
        // Durations are refused in words, not with the regular expression (issue 22).
        (
            generic(json!({"refresh": {"renewBefore": "5 minutes"}})),
            "must be a duration: a number and a unit (ms, s, m or h), repeated, such as 90s, 5m or 1h30m",
        ),
        (
            generic(json!({"refresh": {"defaultLifetime": "1d"}})),
            "must be a duration: a number and a unit",
        ),
    ];

    assert_refused(&clients, refused).await;
    // Exactly at every limit is accepted.
    let at_limit = generic(json!({
        "extraParams": map(MAX_MAP_ENTRIES, MAX_NAME_LEN, MAX_VALUE_LEN),
        "extraHeaders": map(MAX_MAP_ENTRIES, MAX_NAME_LEN, MAX_VALUE_LEN),
        "target": {"template": map(MAX_MAP_ENTRIES, 253, MAX_VALUE_LEN)},
        "scopes": vec!["s"; 64],
        "refresh": {"renewBefore": "1h30m", "defaultLifetime": "1.5h"},
    }));
    assert_accepted(&clients, "at-limit", vec![at_limit]).await;
}

/// Security round three, item 4: every name the operator puts in an API path is a name.
#[tokio::test]
async fn the_schema_refuses_names_that_are_not_object_names() {
    let Some(cluster) = cluster("the_schema_refuses_names_that_are_not_object_names").await else {
        return;
    };
    let ns = cluster.namespace("schema-names").await;
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client().await, &ns);
    let hostile = [
        "../../victim/secrets/victim-creds",
        "creds/../x",
        "creds%2F..",
        "Creds",
        "-creds",
        "creds?x=1",
        "a b",
        "creds.",
    ];
    for (i, name) in hostile.iter().enumerate() {
        for (field, spec) in [
            (
                "spec.credentialsSecretRef.name",
                generic(json!({"credentialsSecretRef": {"name": name}})),
            ),
            (
                "spec.caBundleRef.name",
                generic(json!({"caBundleRef": {"name": name}})),
            ),
            (
                "spec.target.name",
                generic(json!({"target": {"name": name}})),
            ),
            (
                "spec.serviceAccountToken.serviceAccountName",
                json!({"tokenUrl": URL, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
                       "serviceAccountToken": {"serviceAccountName": name, "audience": "a"}}),
            ),
        ] {
            let err = clients
                .create(
                    &PostParams::default(),
                    &with_spec(&format!("bad-{i}"), spec),
                )
                .await
                .expect_err(&format!("{field} {name:?} accepted"));
            let kube::Error::Api(status) = err else {
                panic!("{err}")
            };
            assert_eq!(status.code, 422, "{}", status.message);
            assert!(
                status.message.contains(field) && status.message.contains("must be an object name"),
                "{field} {name:?}: {}",
                status.message
            );
        }
    }
}

#[tokio::test]
async fn the_schema_refuses_credential_secret_types_and_reserved_keys() {
    let Some(cluster) =
        cluster("the_schema_refuses_credential_secret_types_and_reserved_keys").await
    else {
        return;
    };
    let ns = cluster.namespace("schema-target").await;
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client().await, &ns);
    let target = |target: Value| generic(json!({ "target": target }));
    let refused = [
        json!({"type": "kubernetes.io/service-account-token",
               "annotations": {"kubernetes.io/service-account.name": "default"}}),
        json!({"type": "kubernetes.io/service-account-token"}),
        json!({"type": "bootstrap.kubernetes.io/token"}),
        json!({"type": "kubernetes.io/dockerconfigjson"}),
        json!({"annotations": {"kubernetes.io/service-account.name": "default"}}),
        json!({"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}),
        json!({"annotations": {"app.kubernetes.io/name": "x"}}),
        json!({"annotations": {"oauth.token-operator.dev/expires-at": "9999-01-01T00:00:00Z"}}),
        json!({"annotations": {"oauth.token-operator.dev/fingerprint": "v1:AAAA:AAAA"}}),
        json!({"labels": {"node.kubernetes.io/role": "x"}}),
        json!({"labels": {"k8s.io/x": "y"}}),
        json!({"labels": {"sub.k8s.io/x": "y"}}),
        json!({"labels": {"oauth.token-operator.dev/client": "other"}}),
    ];
    let refused = refused
        .into_iter()
        .map(|t| {
            let expected = if t.get("type").is_some() {
                "spec.target.type"
            } else {
                "reserved"
            };
            (target(t), expected)
        })
        .collect();
    assert_refused(&clients, refused).await;
    let accepted = vec![
        target(json!({"type": "Opaque"})),
        target(json!({"labels": {"app.kubernetes.io/name": "streamhub", "team": "a"}})),
        target(json!({"annotations": {"example.com/owner": "team-a", "notkubernetes.io/x": "y"}})),
    ];
    assert_accepted(&clients, "ok", accepted).await;
}

#[tokio::test]
async fn the_schema_holds_the_client_authentication_rules() {
    let Some(cluster) = cluster("the_schema_holds_the_client_authentication_rules").await else {
        return;
    };
    let ns = cluster.namespace("schema-auth").await;
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client().await, &ns);
    let creds = json!({"name": "creds"});
    let sa = json!({"serviceAccountName": "workload", "audience": "api://AzureADTokenExchange"});
    let accepted = vec![
        json!({"tokenUrl": URL, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
            "clientAssertion": {"algorithm": "ES256", "keyId": "k1", "audience": "https://idp.example", "lifetime": "1m"}}),
        json!({"tokenUrl": URL, "clientAuthMethod": "ClientSecretJwt", "credentialsSecretRef": creds,
            "clientAssertion": {"algorithm": "HS512"}}),
        json!({"tokenUrl": URL, "clientAuthMethod": "TlsClientAuth", "clientId": "id",
            "credentialsSecretRef": {"name": "tls", "privateKeyKey": "key.pem", "certificateKey": "chain.pem"}}),
        json!({"tokenUrl": URL, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
            "serviceAccountToken": sa}),
        json!({"provider": "iotspot", "credentialsSecretRef": creds}),
    ];
    assert_accepted(&clients, "ok", accepted).await;
    assert_refused(&clients, client_authentication_refusals(&creds, &sa)).await;
}

/// The client-authentication specs the schema refuses, each with a part of its message.
fn client_authentication_refusals(creds: &Value, sa: &Value) -> Vec<(Value, &'static str)> {
    vec![
        (json!({"tokenUrl": URL}), "credentialsSecretRef is required"),
        (
            json!({"credentialsSecretRef": creds}),
            "spec.tokenUrl is required unless provider is one of",
        ),
        (
            json!({"provider": "okta", "credentialsSecretRef": creds}),
            "spec.tokenUrl is required unless provider is one of",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
                "serviceAccountToken": sa, "credentialsSecretRef": creds}),
            "must be absent",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "ServiceAccountToken", "clientId": "id"}),
            "requires spec.serviceAccountToken",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "ServiceAccountToken", "serviceAccountToken": sa}),
            "requires spec.serviceAccountToken",
        ),
        (
            json!({"tokenUrl": URL, "credentialsSecretRef": creds, "serviceAccountToken": sa}),
            "only allowed with clientAuthMethod ServiceAccountToken",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "TlsClientAuth", "credentialsSecretRef": creds,
                "clientAssertion": {}}),
            "only allowed with clientAuthMethod ClientSecretJwt or PrivateKeyJwt",
        ),
        (
            json!({"tokenUrl": URL, "credentialsSecretRef": creds, "clientAssertion": {"algorithm": "RS256"}}),
            "only allowed with clientAuthMethod ClientSecretJwt or PrivateKeyJwt",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "ClientSecretJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"algorithm": "RS256"}}),
            "must be HS256, HS384 or HS512",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"algorithm": "HS256"}}),
            "must be one of RS256",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"lifetime": "2h"}}),
            "between 10s and 1h",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"lifetime": "5s"}}),
            "between 10s and 1h",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"keyId": "k".repeat(1025)}}),
            "Too long",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "PrivateKeyJwt", "credentialsSecretRef": creds,
                "clientAssertion": {"audience": "a".repeat(2049)}}),
            "Too long",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "PrivateKeyJwt",
                "credentialsSecretRef": {"name": "creds", "privateKeyKey": "k".repeat(254)}}),
            "Too long",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "TlsClientAuth",
                "credentialsSecretRef": {"name": "creds", "certificateKey": "k".repeat(254)}}),
            "Too long",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
                "serviceAccountToken": {"serviceAccountName": "w", "audience": "a".repeat(2049)}}),
            "Too long",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
                "serviceAccountToken": {"serviceAccountName": "w", "audience": "a", "expirationSeconds": 599}}),
            "expirationSeconds",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "ServiceAccountToken", "clientId": "id",
                "serviceAccountToken": {"serviceAccountName": "w", "audience": "a", "expirationSeconds": 3601}}),
            "expirationSeconds",
        ),
    ]
}

#[tokio::test]
async fn the_schema_holds_the_token_exchange_rules() {
    let Some(cluster) = cluster("the_schema_holds_the_token_exchange_rules").await else {
        return;
    };
    let ns = cluster.namespace("schema-exchange").await;
    let clients: Api<OAuthClient> = Api::namespaced(cluster.client().await, &ns);
    let secret = json!({"subjectToken": {"secretRef": {"name": "ci-token", "key": "token"}}});
    let chained = json!({"subjectToken": {"oauthClientRef": {"name": "first"}},
        "requestedTokenType": "urn:ietf:params:oauth:token-type:access_token",
        "resources": ["https://a.example/", "https://b.example/"]});
    let sa = json!({"subjectToken": {"serviceAccountToken": {"serviceAccountName": "ci", "audience": "sts"}}});
    let public = |exchange: &Value| {
        json!({"tokenUrl": URL, "grantType": "TokenExchange", "clientAuthMethod": "None",
            "tokenExchange": exchange})
    };
    let accepted = vec![
        json!({"provider": "gcp-sts", "audience": "//iam.googleapis.com/x", "tokenExchange": secret}),
        public(&chained),
        public(&sa),
        json!({"tokenUrl": URL, "grantType": "TokenExchange", "credentialsSecretRef": {"name": "creds"},
            "tokenExchange": secret}),
    ];
    assert_accepted(&clients, "exchange", accepted).await;
    let refused = vec![
        (
            public(&json!({"subjectToken": {}})),
            "must set exactly one of serviceAccountToken, oauthClientRef, secretRef",
        ),
        (
            public(
                &json!({"subjectToken": {"secretRef": {"name": "a", "key": "k"},
                "oauthClientRef": {"name": "b"}}}),
            ),
            "must set exactly one of",
        ),
        (
            json!({"tokenUrl": URL, "credentialsSecretRef": {"name": "creds"}, "tokenExchange": secret}),
            "spec.tokenExchange is required with grantType TokenExchange and not allowed otherwise",
        ),
        (
            json!({"tokenUrl": URL, "grantType": "TokenExchange", "credentialsSecretRef": {"name": "creds"}}),
            "spec.tokenExchange is required with grantType TokenExchange",
        ),
        (
            json!({"tokenUrl": URL, "clientAuthMethod": "None"}),
            "is only allowed with grantType TokenExchange",
        ),
        (
            json!({"provider": "gcp-sts", "audience": "a", "grantType": "ClientCredentials"}),
            "clientAuthMethod None (the gcp-sts preset's default) is only allowed with grantType TokenExchange",
        ),
        (
            json!({"tokenUrl": URL, "grantType": "TokenExchange", "clientAuthMethod": "None",
                "credentialsSecretRef": {"name": "creds"}, "tokenExchange": secret}),
            "must be absent with clientAuthMethod None",
        ),
        (
            json!({"provider": "gcp-sts", "audience": "a", "credentialsSecretRef": {"name": "creds"},
                "tokenExchange": secret}),
            "must be absent with clientAuthMethod None",
        ),
        (
            json!({"provider": "gcp-sts", "audience": "a"}),
            "spec.tokenExchange is required with grantType TokenExchange",
        ),
        (
            public(
                &json!({"subjectToken": {"serviceAccountToken": {"serviceAccountName": "ci",
                "audience": "sts", "expirationSeconds": 86400}}}),
            ),
            "expirationSeconds",
        ),
        (
            public(&json!({"subjectToken": {"oauthClientRef": {"name": "../x"}}})),
            "must be an object name",
        ),
    ];
    assert_refused(&clients, refused).await;
}
