//! RBAC proven complete: every API call the controller makes (in the scenarios below, and in
//! any test run before this one, as recorded by the API-server double) is granted by the
//! chart's rules, and every rule is used by some call.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use oauth_token_operator::runtime::leader::{LeaderConfig, Leadership};
use serde_json::{Value, json};
use support::apiserver::{ApiServer, CONFIGMAPS, Call, OAUTHCLIENTS, SECRETS, calls_log_path};
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

/// Runs every code path of the controller and the leader election against one double.
async fn scenarios() -> Vec<Call> {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, "id", "secret-value", Tokens::Unique).await;
    vendor.set_expires_in(json!(3));
    let operator = Operator::start(&api, &[], 2);
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
    oauth_token_operator::controller::preflight(&api.client(), &[], "double")
        .await
        .unwrap();
    oauth_token_operator::controller::preflight(&api.client(), &["ns".into()], "double")
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_grants_exactly_what_the_controller_uses() {
    let controller_rules = grants(&rules("oauth-token-operator.rules"));
    let leader_rules = grants(&rules("oauth-token-operator.leaderElectionRules"));
    let seal_key_rules = grants(&rules("oauth-token-operator.sealKeyRules"));
    let granted: BTreeSet<Grant> = controller_rules
        .union(&leader_rules)
        .chain(&seal_key_rules)
        .cloned()
        .collect();
    // The seal key Secret's Role, in the release namespace, is what a namespace-scoped install
    // (only Roles in the watched namespaces) needs to read or create it: get and create Secrets.
    assert_eq!(
        seal_key_rules,
        [
            grant_of("create", "", "secrets", None),
            grant_of("get", "", "secrets", None)
        ]
        .into()
    );

    let mut used: BTreeSet<Grant> = scenarios().await.iter().map(from_call).collect();
    // Calls recorded by the double in earlier test binaries (controller, binary, leader tests).
    if let Ok(text) = std::fs::read_to_string(calls_log_path()) {
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let [verb, group, resource, sub] = parts[..] {
                used.insert(grant_of(verb, group, resource, Some(sub)));
            }
        }
    }
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "calls the chart's RBAC does not grant: {missing:?}"
    );
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(unused.is_empty(), "rules no call uses: {unused:?}");
    // Leases only through the leader-election Role, never cluster-wide.
    assert!(
        controller_rules
            .iter()
            .all(|(_, group, _)| group != "coordination.k8s.io")
    );
}

#[test]
fn the_plain_manifest_has_the_same_rules() {
    let text = std::fs::read_to_string(PLAIN_MANIFEST).unwrap();
    let mut cluster = None;
    let mut leader = None;
    let mut seal_key = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc).unwrap();
        match (value["kind"].as_str(), value["metadata"]["name"].as_str()) {
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
}
