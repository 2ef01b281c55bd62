//! RBAC proven complete, for each chart configuration (`serviceAccountTokens.enabled` off and
//! on): every API call the controller makes (in the scenarios below, and in any test run
//! before this one, as recorded by the API-server double under the operator's configuration)
//! is granted by the chart's rules for that configuration, and every rule is used by some call.
//!
//! The one non-resource call, `get /.well-known/openid-configuration` (the API server's issuer,
//! read with `--allow-service-account-tokens` only), needs no rule of the chart: Kubernetes
//! binds `system:service-account-issuer-discovery` to every ServiceAccount by default
//! (`system:serviceaccounts`), and a ClusterRole would be the only place for such a rule,
//! which a namespaced install does not have.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use oauth_token_operator::runtime::leader::{LeaderConfig, Leadership};
use serde_json::{Value, json};
use support::apiserver::{
    ApiServer, CLUSTER_CLIENTS_PROFILE, CLUSTEROAUTHCLIENTS, CONFIGMAPS, Call, DEFAULT_PROFILE,
    NAMESPACES, OAUTHCLIENTS, SECRETS, SERVICE_ACCOUNT_TOKENS_PROFILE, SERVICEACCOUNTS,
    calls_log_path,
};
use support::assertions::{Expectation, VerifyingKey};
use support::harness::*;
use support::vendors::*;

const HELPERS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/oauth-token-operator/templates/_helpers.tpl"
);
const PLAIN_MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/oauth-token-operator.yaml"
);

/// (verb, group, resource[/subresource]) granted by one rule set.
type Grant = (String, String, String);

/// Reads a `define` block of plain YAML rules from _helpers.tpl.
fn rules(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(HELPERS).unwrap();
    let start = text
        .find(&format!("{{{{- define \"{name}\" -}}}}"))
        .unwrap_or_else(|| panic!("no define {name}"));
    let body = &text[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let body = &body[..body.find("{{- end }}").unwrap()];
    serde_yaml::from_str(body).unwrap()
}

fn grants(rules: &[Value]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let verb = verb.as_str().unwrap();
                    assert_ne!(verb, "*", "no wildcard verbs");
                    assert_ne!(resource.as_str().unwrap(), "*", "no wildcard resources");
                    out.insert((
                        verb.to_owned(),
                        group.as_str().unwrap().to_owned(),
                        resource.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

fn grant_of(verb: &str, group: &str, resource: &str, subresource: Option<&str>) -> Grant {
    let group = if group == "core" { "" } else { group };
    let resource = match subresource {
        Some(sub) if sub != "-" => format!("{resource}/{sub}"),
        _ => resource.to_owned(),
    };
    (verb.to_owned(), group.to_owned(), resource)
}

fn from_call(call: &Call) -> Grant {
    grant_of(
        &call.verb,
        &call.group,
        &call.resource,
        call.subresource.as_deref(),
    )
}

/// What Kubernetes grants every authenticated user (`system:basic-user`), so no rule of the
/// chart: the start-up check's access reviews, and the review that tells the operator which
/// ServiceAccount it runs as.
const DEFAULT_GRANTS: [(&str, &str, &str); 2] = [
    ("create", "authorization.k8s.io", "selfsubjectaccessreviews"),
    ("create", "authentication.k8s.io", "selfsubjectreviews"),
];

/// The non-resource URLs the controller may read without a rule of the chart (see the module
/// documentation).
const DEFAULT_NON_RESOURCE: [&str; 1] = ["/.well-known/openid-configuration"];

/// Runs every code path of the controller and the leader election against one double, with or
/// without `--allow-service-account-tokens`.
async fn scenarios(service_account_tokens: bool) -> Vec<Call> {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "id", "secret-value", Tokens::Unique).await;
    vendor.set_expires_in(json!(3));
    let options = Options {
        service_account_tokens,
        ..Options::default()
    };
    let operator = Operator::start_with(&api, &[], 2, options);
    if service_account_tokens {
        service_account_scenario(&api, &vendor).await;
    }
    credentials(&api, "ns", "creds", "id", "secret-value");
    let spec = |target: &str| json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"}, "target": {"name": target}});
    // Issue, refresh, re-render.
    oauth_client(&api, "ns", "short", spec("short-token"));
    wait_ready(&api, "ns", "short", "True", "TokenIssued").await;
    eventually("refreshes", Duration::from_secs(10), || {
        (vendor.count() >= 3).then_some(())
    })
    .await;
    api.modify(OAUTHCLIENTS, "ns", "short", |o| {
        o["spec"]["target"]["labels"] = json!({"x": "y"})
    });
    // A foreign Secret with the target name (its owners are read).
    api.create(
        SECRETS,
        json!({"metadata": {"name": "taken", "namespace": "ns"}, "stringData": {"a": "b"}}),
    );
    oauth_client(&api, "ns", "conflict", spec("taken"));
    wait_ready(&api, "ns", "conflict", "False", "SecretConflict").await;
    // A CA bundle in a ConfigMap (read with a get; ConfigMaps are listed and watched).
    api.create(
        CONFIGMAPS,
        json!({"metadata": {"name": "corp-ca", "namespace": "ns"}, "data": {"ca.crt": "no certificate"}}),
    );
    let mut bundled = spec("bundled-token");
    bundled["caBundleRef"] = json!({"name": "corp-ca"});
    oauth_client(&api, "ns", "bundled", bundled);
    wait_ready(&api, "ns", "bundled", "False", "InvalidSpec").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    operator.stop().await;
    // The start-up check.
    for namespaces in [vec![], vec!["ns".to_owned()]] {
        let needs = oauth_token_operator::controller::Needs {
            namespaces: &namespaces,
            own_namespace: "oauth-token-operator-system",
            service_account_tokens,
            lease_namespace: None,
            metrics_reviews: false,
            own_service_account: None,
            cluster_clients: None,
        };
        oauth_token_operator::controller::preflight(&api.client(), &needs, "double")
            .await
            .unwrap();
    }
    // Leader election.
    let config = LeaderConfig {
        namespace: "oauth-token-operator-system".into(),
        identity: "rbac-test".into(),
        lease_duration: Duration::from_secs(3),
    };
    let mut leadership = Leadership::join(api.client(), &config).await.unwrap();
    assert!(leadership.acquired().await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    leadership.release().await;
    api.calls()
}

/// A federated client whose ServiceAccount opted in (token requested), and one whose did not.
async fn service_account_scenario(api: &ApiServer, vendor: &TokenServer) {
    let audience = "api://AzureADTokenExchange";
    vendor.expect_assertions(Expectation {
        client_id: "federated".into(),
        issuer: Some(api.service_account_issuer().into()),
        subject: Some("system:serviceaccount:ns:workload".into()),
        audience: audience.into(),
        key: VerifyingKey::Public(api.service_account_public_key(), vec!["ES256"]),
        max_lifetime: Duration::from_secs(3600),
        skew: Duration::from_secs(5),
    });
    for (name, annotated) in [("workload", true), ("shy", false)] {
        let mut meta = json!({"name": name, "namespace": "ns"});
        if annotated {
            meta["annotations"] = json!({
                "oauth.token-operator.dev/token-audiences": audience,
                "oauth.token-operator.dev/token-endpoints": url::Url::parse(&vendor.url()).unwrap().origin().ascii_serialization(),
            });
        }
        api.create(SERVICEACCOUNTS, json!({"metadata": meta}));
        let spec = json!({"tokenUrl": vendor.url(), "clientAuthMethod": "ServiceAccountToken",
            "clientId": "federated",
            "serviceAccountToken": {"serviceAccountName": name, "audience": audience}});
        oauth_client(api, "ns", &format!("sa-{name}"), spec);
    }
    wait_ready(api, "ns", "sa-workload", "True", "TokenIssued").await;
    wait_ready(api, "ns", "sa-shy", "False", "ServiceAccountTokenDenied").await;
}

/// What the chart grants with `serviceAccountTokens.enabled` as given.
fn granted(service_account_tokens: bool) -> BTreeSet<Grant> {
    let mut granted = grants(&rules("oauth-token-operator.rules"));
    granted.extend(grants(&rules("oauth-token-operator.leaderElectionRules")));
    granted.extend(grants(&rules("oauth-token-operator.sealKeyRules")));
    if service_account_tokens {
        granted.extend(grants(&rules(
            "oauth-token-operator.serviceAccountTokenRules",
        )));
    }
    granted
}

/// Calls recorded by the doubles of earlier test binaries (controller, binary, leader tests)
/// under `profile`: the resource grants, and the non-resource URLs.
fn logged(profile: &str) -> (BTreeSet<Grant>, BTreeSet<String>) {
    let (mut used, mut urls) = (BTreeSet::new(), BTreeSet::new());
    let text = std::fs::read_to_string(calls_log_path()).unwrap_or_default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (verb, group, resource, sub, logged_as) = match parts[..] {
            [verb, group, resource, sub] => (verb, group, resource, sub, DEFAULT_PROFILE),
            [verb, group, resource, sub, p] => (verb, group, resource, sub, p),
            _ => continue,
        };
        if logged_as != profile {
            continue;
        }
        if resource.starts_with('/') {
            urls.insert(format!("{verb} {resource}"));
        } else {
            used.insert(grant_of(verb, group, resource, Some(sub)));
        }
    }
    (used, urls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_grants_exactly_what_the_controller_uses_in_each_configuration() {
    // The seal key Secret's Role, in the release namespace, is what a namespace-scoped install
    // (only Roles in the watched namespaces) needs to read or create it: get and create Secrets.
    assert_eq!(
        grants(&rules("oauth-token-operator.sealKeyRules")),
        [
            grant_of("create", "", "secrets", None),
            grant_of("get", "", "secrets", None)
        ]
        .into()
    );
    for (service_account_tokens, profile) in [
        (false, DEFAULT_PROFILE),
        (true, SERVICE_ACCOUNT_TOKENS_PROFILE),
    ] {
        let granted = granted(service_account_tokens);
        let calls = scenarios(service_account_tokens).await;
        let (mut used, mut urls) = logged(profile);
        for call in &calls {
            if call.resource.starts_with('/') {
                urls.insert(format!("{} {}", call.verb, call.resource));
            } else {
                used.insert(from_call(call));
            }
        }
        for (verb, group, resource) in DEFAULT_GRANTS {
            used.remove(&grant_of(verb, group, resource, None));
        }
        assert!(
            !used.iter().any(|(_, _, r)| r.starts_with("self")),
            "{profile}: reviews are default grants"
        );
        let missing: Vec<_> = used.difference(&granted).collect();
        assert!(
            missing.is_empty(),
            "{profile}: calls the chart's RBAC does not grant: {missing:?}"
        );
        let unused: Vec<_> = granted.difference(&used).collect();
        assert!(
            unused.is_empty(),
            "{profile}: rules no call uses: {unused:?}"
        );
        let expected: BTreeSet<String> = if service_account_tokens {
            DEFAULT_NON_RESOURCE
                .iter()
                .map(|u| format!("get {u}"))
                .collect()
        } else {
            BTreeSet::new()
        };
        assert_eq!(urls, expected, "{profile}: non-resource URLs");
    }
    // Leases only through the leader-election Role, never cluster-wide.
    assert!(
        grants(&rules("oauth-token-operator.rules"))
            .iter()
            .all(|(_, group, _)| group != "coordination.k8s.io")
    );
}

#[test]
fn the_service_account_rules_are_granted_only_when_the_value_enables_them() {
    let rbac = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/oauth-token-operator/templates/rbac.yaml"
    ))
    .unwrap();
    let includes: Vec<usize> = rbac
        .match_indices("include \"oauth-token-operator.serviceAccountTokenRules\"")
        .map(|(at, _)| at)
        .collect();
    assert_eq!(includes.len(), 2, "in the Role and in the ClusterRole");
    for at in includes {
        let before = &rbac[..at];
        let guard = before.rfind("{{- if").unwrap();
        assert!(
            before[guard..].contains("Values.serviceAccountTokens.enabled")
                && !before[guard..].contains("{{- end"),
            "the include is inside the serviceAccountTokens.enabled guard"
        );
    }
    let deployment = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/oauth-token-operator/templates/deployment.yaml"
    ))
    .unwrap();
    let flag = deployment.find("- --allow-service-account-tokens").unwrap();
    let guard = deployment[..flag].rfind("{{- if").unwrap();
    assert!(deployment[guard..flag].contains("Values.serviceAccountTokens.enabled"));
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/oauth-token-operator/values.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        values["serviceAccountTokens"]["enabled"], false,
        "off by default"
    );
}

#[test]
fn the_plain_manifest_has_the_same_rules() {
    let text = std::fs::read_to_string(PLAIN_MANIFEST).unwrap();
    let mut cluster = None;
    let mut leader = None;
    let mut seal_key = None;
    let mut metrics_auth = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc).unwrap();
        match (value["kind"].as_str(), value["metadata"]["name"].as_str()) {
            (Some("ClusterRole"), Some(name)) if name.ends_with("-metrics-auth") => {
                metrics_auth = Some(grants(value["rules"].as_array().unwrap()))
            }
            (Some("ClusterRole"), Some(name)) if name.ends_with("-metrics-reader") => {}
            (Some("ClusterRole"), _) => cluster = Some(grants(value["rules"].as_array().unwrap())),
            (Some("Role"), Some(name)) if name.ends_with("leader-election") => {
                leader = Some(grants(value["rules"].as_array().unwrap()))
            }
            (Some("Role"), Some(name)) if name.ends_with("seal-key") => {
                seal_key = Some(value["rules"].clone())
            }
            _ => {}
        }
    }
    assert_eq!(
        cluster.unwrap(),
        grants(&rules("oauth-token-operator.rules"))
    );
    assert_eq!(
        leader.unwrap(),
        grants(&rules("oauth-token-operator.leaderElectionRules"))
    );
    assert_eq!(
        seal_key.unwrap(),
        serde_json::to_value(rules("oauth-token-operator.sealKeyRules")).unwrap()
    );
    assert_eq!(
        metrics_auth.unwrap(),
        grants(&rules("oauth-token-operator.metricsAuthRules"))
    );
}

/// What `clusterOAuthClients.enabled` adds: the ClusterRole's rules and the Role in the cluster
/// resource namespace.
fn cluster_client_grants() -> BTreeSet<Grant> {
    let mut granted = grants(&rules("oauth-token-operator.clusterClientRules"));
    granted.extend(grants(&rules(
        "oauth-token-operator.clusterClientResourceRules",
    )));
    granted
}

/// Every code path of the ClusterOAuthClient controller against one double: the token's
/// OAuthClient applied, copies created and verified, a conflict, a namespace labelled out (its
/// copy deleted), the status; and the start-up check with `--enable-cluster-clients`.
async fn cluster_client_scenario() -> Vec<Call> {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "id", "secret-value", Tokens::Unique).await;
    for (name, labels) in [
        ("platform", json!({})),
        ("a", json!({"t": "y"})),
        ("b", json!({"t": "y"})),
    ] {
        api.create(
            NAMESPACES,
            json!({"metadata": {"name": name, "labels": labels}}),
        );
    }
    api.create(
        SECRETS,
        json!({"metadata": {"name": "shared-token", "namespace": "b"}, "stringData": {"a": "b"}}),
    );
    credentials(&api, "platform", "creds", "id", "secret-value");
    let operator = Operator::start_configured(&api, |config| {
        config.cluster_clients = Some("platform".to_owned());
    });
    api.create(
        CLUSTEROAUTHCLIENTS,
        json!({"apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "ClusterOAuthClient",
               "metadata": {"name": "shared"},
               "spec": {"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"},
                        "target": {"namespaceSelector": {"matchLabels": {"t": "y"}}}}}),
    );
    let written = |api: &ApiServer| {
        api.get(CLUSTEROAUTHCLIENTS, "", "shared")
            .map(|o| o["status"]["targets"]["summary"].clone())
    };
    eventually("the copy in a", Duration::from_secs(10), || {
        (written(&api)? == "1/2").then_some(())
    })
    .await;
    api.modify(NAMESPACES, "", "a", |ns| {
        ns["metadata"]["labels"] = json!({})
    });
    eventually("the copy in a deleted", Duration::from_secs(10), || {
        api.get(SECRETS, "a", "shared-token")
            .is_none()
            .then_some(())
    })
    .await;
    operator.stop().await;
    let needs = oauth_token_operator::controller::Needs {
        namespaces: &[],
        own_namespace: "oauth-token-operator-system",
        service_account_tokens: false,
        lease_namespace: None,
        metrics_reviews: false,
        own_service_account: None,
        cluster_clients: Some("platform"),
    };
    oauth_token_operator::controller::preflight(&api.client(), &needs, "double")
        .await
        .unwrap();
    api.calls()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_client_rules_are_exactly_what_cluster_clients_add() {
    let base = granted(false);
    let added = cluster_client_grants();
    let calls = cluster_client_scenario().await;
    let (mut used, _) = logged(CLUSTER_CLIENTS_PROFILE);
    used.extend(
        calls
            .iter()
            .filter(|c| !c.resource.starts_with('/'))
            .map(from_call),
    );
    for (verb, group, resource) in DEFAULT_GRANTS {
        used.remove(&grant_of(verb, group, resource, None));
    }
    // The token's OAuthClient is created by a server-side apply: the double records a patch, and
    // a real API server asks for create as well when an apply creates the object (the
    // real-cluster suite runs it with exactly these rights).
    if used.contains(&grant_of(
        "patch",
        "oauth.token-operator.dev",
        "oauthclients",
        None,
    )) {
        used.insert(grant_of(
            "create",
            "oauth.token-operator.dev",
            "oauthclients",
            None,
        ));
    }
    let all: BTreeSet<Grant> = base.union(&added).cloned().collect();
    let missing: Vec<_> = used.difference(&all).collect();
    assert!(
        missing.is_empty(),
        "calls the chart's RBAC does not grant: {missing:?}"
    );
    let unused: Vec<_> = added.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "cluster client rules no call uses: {unused:?}"
    );
    assert!(
        added.is_disjoint(&base),
        "clusterOAuthClients.enabled adds only rights the chart does not grant without it"
    );
}
