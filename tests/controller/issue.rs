//! A client's first token: each seed vendor's Secret in the contract's layout, target settings
//! and templates applied (and re-rendered without a new token), credentials taken as bytes,
//! names too long for Kubernetes hashed or refused with what to set, one exchange per new
//! client, credentials and clients read only in the namespaces they belong to, and reference
//! names that are no object names never reaching a request path.

use std::time::Duration;

use crate::common::*;
use crate::support::apiserver::{ApiServer, EVENTS, OAUTHCLIENTS, SECRETS};
use crate::support::builders::{SecretObject, Spec, create_client};
use crate::support::harness::*;
use crate::support::vendors::*;
use serde_json::json;

// === the contract's layout ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_seed_vendor_reaches_ready_with_the_contract_secret_layout() {
    for (vendor, provider) in [
        (Vendor::Microboxlabs, "microboxlabs"),
        (Vendor::Microbilt, "microbilt"),
        (Vendor::Iotspot, "iotspot"),
    ] {
        let Setup {
            api,
            vendor,
            operator,
        } = setup(vendor).await;
        credentials(&api, NS, "creds", ID, SECRET);
        create_client(&api, NS, "demo", &spec_for(&vendor, provider));
        let (_, _, message) = wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
        assert!(message.contains("demo-token"), "{message}");
        let token = secret_value(&api, NS, "demo-token", "access_token").unwrap();
        assert_eq!(vendor.issued(), std::slice::from_ref(&token), "{provider}");
        let expires_at = assert_contract_secret_layout(&api);
        assert_first_token_status(&api, &expires_at);
        // The event follows the status write.
        eventually("the TokenIssued event", Duration::from_secs(5), || {
            (!events(&api, "TokenIssued").is_empty()).then_some(())
        })
        .await;
        sleep(500).await;
        assert_eq!(events(&api, "TokenIssued").len(), 1);
        assert_eq!(vendor.count(), 1);
        assert_eq!(
            api.count("patch oauthclients/status"),
            1,
            "{:?}",
            api.counts()
        );
        // One write: the create carries the whole Secret.
        assert_eq!(api.count("patch secrets"), 0, "{:?}", api.counts());
        assert!(api.violations().is_empty(), "{:?}", api.violations());
        operator.stop().await;
    }
}

/// Checks the managed Secret `demo-token` of the client `demo` against the contract: its keys,
/// labels, annotations, controller ownerReference and type. Returns its `expires_at`.
fn assert_contract_secret_layout(api: &ApiServer) -> String {
    assert_eq!(
        secret_value(api, NS, "demo-token", "token_type").unwrap(),
        "Bearer"
    );
    let expires_at = secret_value(api, NS, "demo-token", "expires_at").unwrap();
    assert!(
        expires_at.ends_with('Z') && expires_at.len() == 20,
        "{expires_at}"
    );

    let secret = api.get(SECRETS, NS, "demo-token").unwrap();
    let meta = &secret["metadata"];
    assert_eq!(
        meta["labels"]["app.kubernetes.io/managed-by"],
        "oauth-token-operator"
    );
    assert_eq!(meta["labels"]["oauth.token-operator.dev/client"], "demo");
    assert_eq!(
        meta["annotations"]["oauth.token-operator.dev/expires-at"],
        expires_at.as_str()
    );
    assert!(meta["annotations"]["oauth.token-operator.dev/issued-at"].is_string());
    let fingerprint = meta["annotations"]["oauth.token-operator.dev/fingerprint"]
        .as_str()
        .unwrap();
    assert!(!fingerprint.contains(SECRET));
    let client = api.get(OAUTHCLIENTS, NS, "demo").unwrap();
    let owner = &meta["ownerReferences"][0];
    assert_eq!(owner["uid"], client["metadata"]["uid"]);
    assert_eq!(owner["kind"], "OAuthClient");
    assert_eq!(owner["apiVersion"], "oauth.token-operator.dev/v1alpha1");
    assert_eq!(owner["controller"], true);
    assert_eq!(secret["type"], "Opaque");
    expires_at
}

/// Checks the status of the client `demo` after its first token, which expires at
/// `expires_at`.
fn assert_first_token_status(api: &ApiServer, expires_at: &str) {
    let client = api.get(OAUTHCLIENTS, NS, "demo").unwrap();
    let status = &client["status"];
    assert_eq!(status["secretName"], "demo-token");
    assert_eq!(status["tokenType"], "Bearer");
    assert_eq!(status["expiresAt"], expires_at);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["consecutiveFailures"], 0);
    assert!(status["nextRefreshAt"].is_string());
    assert_eq!(
        condition(api, NS, "demo", "Degraded").unwrap().1,
        "RefreshSucceeded"
    );
}

// === target settings and templates ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_settings_and_template_are_applied_and_rerendered_without_a_new_token() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    let spec = generic_spec(&vendor)
        .scopes(&["read"])
        .target("custom-name")
        .target_label("team", "a")
        .target_annotation("note", "x")
        .template("Authorization", "Bearer {{ access_token }}")
        .template("expiry", "{{ expires_at }}");
    create_client(&api, NS, "demo", &spec);
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    let token = secret_value(&api, NS, "custom-name", "access_token").unwrap();
    assert_eq!(
        secret_value(&api, NS, "custom-name", "Authorization").unwrap(),
        format!("Bearer {token}")
    );
    assert_eq!(
        secret_value(&api, NS, "custom-name", "scope").unwrap(),
        "read"
    );
    let secret = api.get(SECRETS, NS, "custom-name").unwrap();
    assert_eq!(secret["metadata"]["labels"]["team"], "a");
    assert_eq!(secret["metadata"]["annotations"]["note"], "x");

    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["spec"]["target"]["template"] = json!({"Authorization": "Token {{ access_token }}"});
    });
    eventually("re-rendered template", Duration::from_secs(10), || {
        secret_value(&api, NS, "custom-name", "Authorization").filter(|v| v.starts_with("Token "))
    })
    .await;
    assert_eq!(
        secret_value(&api, NS, "custom-name", "access_token").unwrap(),
        token
    );
    // The key the create wrote and the new rendering drops goes in a second write right after
    // the apply (write.rs: a server-side apply cannot remove what the create wrote): between the
    // two, the Secret shows the new value beside the old key.
    eventually("removed template key", Duration::from_secs(5), || {
        secret_value(&api, NS, "custom-name", "expiry")
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(vendor.count(), 1, "re-rendering needs no new token");
    eventually("observedGeneration 2", Duration::from_secs(5), || {
        (status_field(&api, "demo", "observedGeneration") == 2).then_some(())
    })
    .await;
    operator.stop().await;
}

// === credentials are bytes ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_bytes_a_trailing_newline_is_kept_and_non_utf8_is_named() {
    let api = ApiServer::start().await;
    let operator = Operator::start(&api, &[], 4);
    let with_newline = format!("{SECRET}\n");
    // The classic `echo` mistake: the endpoint knows the secret without the newline, so the
    // secret with it must fail, not be silently "fixed".
    let strict = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    SecretObject::named("echoed")
        .entry("client_id", ID)
        .entry("client_secret", &with_newline)
        .create(&api, NS);
    create_client(
        &api,
        NS,
        "echoed",
        &generic_spec(&strict).credentials("echoed"),
    );
    wait_ready(&api, NS, "echoed", "False", "InvalidClient").await;

    // An endpoint whose secret really ends in a newline gets it byte for byte.
    let exact = TokenServer::start(Vendor::Generic, ID, &with_newline, Tokens::Unique).await;
    create_client(
        &api,
        NS,
        "exact",
        &generic_spec(&exact).credentials("echoed"),
    );
    wait_ready(&api, NS, "exact", "True", "TokenIssued").await;

    // Not UTF-8: InvalidCredentials naming the key (the contract moved it from InvalidSpec),
    // and nothing is sent.
    let never = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    SecretObject::named("binary")
        .entry("client_id", ID)
        .bytes("client_secret", &[0xff, 0xfe, 0x00, 0x41])
        .create(&api, NS);
    create_client(
        &api,
        NS,
        "binary",
        &generic_spec(&never).credentials("binary"),
    );
    let (_, _, message) = wait_ready(&api, NS, "binary", "False", "InvalidCredentials").await;
    assert!(
        message.contains("key client_secret of Secret binary is not valid UTF-8"),
        "{message}"
    );
    assert_eq!(never.count(), 0);
    operator.stop().await;
}

// === names Kubernetes limits ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_are_hashed_where_kubernetes_limits_them() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    credentials(&api, NS, "creds", ID, SECRET);
    // 70 characters: too long for a label value, fine for a Secret and an event.
    let name = format!("streamhub.{}", "x".repeat(60));
    create_client(&api, NS, &name, &generic_spec(&vendor));
    wait_ready(&api, NS, &name, "True", "TokenIssued").await;
    let secret = api.get(SECRETS, NS, &format!("{name}-token")).unwrap();
    let label = secret["metadata"]["labels"]["oauth.token-operator.dev/client"]
        .as_str()
        .unwrap();
    assert!(label.len() <= 63, "{label}");
    assert!(label.starts_with("streamhub.xxx"), "{label}");
    assert_eq!(
        label,
        oauth_token_operator::output::secret::client_label_value(&name),
        "the documented rule"
    );
    eventually("the TokenIssued event", Duration::from_secs(5), || {
        events(&api, "TokenIssued").first().cloned()
    })
    .await;

    // 250 characters: `<name>-token` would exceed 253, so nothing is requested, and the
    // message says what to set.
    let long = format!(
        "{}.{}.{}.{}",
        "a".repeat(62),
        "b".repeat(62),
        "c".repeat(62),
        "d".repeat(61)
    );
    assert_eq!(long.len(), 250);
    create_client(&api, NS, &long, &generic_spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, &long, "False", "InvalidSpec").await;
    assert!(message.contains("spec.target.name"), "{message}");
    // The event follows the status write: waited for, not read at once.
    eventually(
        "the failure of the long-named client has an event",
        Duration::from_secs(5),
        || {
            (events(&api, "ExchangeFailed").iter())
                .any(|e| e["regarding"]["name"] == long.as_str())
                .then_some(())
        },
    )
    .await;
    let event_names: Vec<String> = api
        .list(EVENTS, Some(NS))
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        event_names.iter().all(|n| n.len() <= 253),
        "{event_names:?}"
    );
    assert_eq!(vendor.count(), 1, "no request for the unusable spec");
    api.modify(OAUTHCLIENTS, NS, &long, |o| {
        o["spec"]["target"] = json!({"name": "long-token"});
    });
    wait_ready(&api, NS, &long, "True", "TokenIssued").await;
    assert!(api.get(SECRETS, NS, "long-token").is_some());
    operator.stop().await;
}

// === the operator's own create does not look like a missing token ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_clients_secret_costs_one_exchange_and_one_write() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 8);
    credentials(&api, NS, "creds", ID, SECRET);
    // Slow watches make the cache lag behind the create and the apply that follows it.
    api.set_latency(Duration::from_millis(30));
    for i in 0..30 {
        create_client(&api, NS, &format!("c{i}"), &generic_spec(&vendor));
    }
    for i in 0..30 {
        wait_ready(&api, NS, &format!("c{i}"), "True", "TokenIssued").await;
    }
    sleep(2000).await;
    assert_eq!(vendor.count(), 30, "one token request per client");
    // One create per managed Secret, and the operator's seal key; the create carries the whole
    // Secret (issue 23: it was a create, then an apply).
    assert_eq!(api.count("create secrets"), 31);
    assert_eq!(api.count("patch secrets"), 0);
    operator.stop().await;
}

// === namespaces ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_only_from_the_clients_own_namespace() {
    let Setup {
        api,
        vendor,
        operator,
    } = setup(Vendor::Generic).await;
    // The Secret exists, but in another namespace.
    credentials(&api, "other-team", "creds", ID, SECRET);
    create_client(&api, NS, "demo", &generic_spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "CredentialsNotFound").await;
    assert!(
        message.contains(&format!("not found in namespace {NS}")),
        "{message}"
    );
    sleep(500).await;
    assert_eq!(vendor.count(), 0);
    assert!(
        api.calls()
            .iter()
            .filter(|c| c.resource == "secrets" && c.verb == "get")
            .all(|c| c.namespace.as_deref() != Some("other-team")),
        "no Secret is read outside the client's namespace (the operator reads its seal key in its own)"
    );
    operator.stop().await;
}

/// The namespaces half of the former
/// `deleting_the_client_deletes_its_secret_and_namespaces_limit_the_scope` (the deletion half
/// is `ownership::deleting_the_client_deletes_its_secret`): a controller of `team-a` neither
/// reconciles nor touches a client of `team-b`, not even when a client of `team-a` is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_limit_the_scope() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &["team-a"], 4);
    for ns in ["team-a", "team-b"] {
        credentials(&api, ns, "creds", ID, SECRET);
        create_client(&api, ns, "demo", &generic_spec(&vendor));
    }
    wait_ready(&api, "team-a", "demo", "True", "TokenIssued").await;
    sleep(1000).await;
    assert!(
        condition(&api, "team-b", "demo", "Ready").is_none(),
        "team-b is not watched"
    );
    assert_eq!(vendor.count(), 1);
    api.delete(OAUTHCLIENTS, "team-a", "demo");
    assert!(
        api.calls()
            .iter()
            .all(|c| c.namespace.as_deref() != Some("team-b"))
    );
    operator.stop().await;
}

// === names that are not names (security round three, item 4) ===

/// A reference name that would climb out of the namespace's path (behind a front end that
/// normalises dot-segments it reads another namespace's Secret) never reaches a request path:
/// the client is InvalidSpec naming the field, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_name_that_is_no_name_never_reaches_a_request_path() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start_with(
        &api,
        &[],
        4,
        Options {
            service_account_tokens: true,
            ..Options::default()
        },
    );
    let hostile = "../../victim/secrets/victim-creds";
    let spec = generic_spec(&vendor);
    let cases: [(&str, Spec, &str); 4] = [
        (
            "creds",
            spec.clone().credentials(hostile),
            "spec.credentialsSecretRef.name",
        ),
        (
            "bundle",
            spec.clone().set("caBundleRef/name", hostile),
            "spec.caBundleRef.name",
        ),
        ("target", spec.clone().target(hostile), "spec.target.name"),
        (
            "sa",
            spec.service_account(hostile, "a").client_id("x"),
            "spec.serviceAccountToken.serviceAccountName",
        ),
    ];
    for (name, spec, field) in cases {
        create_client(&api, NS, name, &spec);
        let (_, _, message) = wait_ready(&api, NS, name, "False", "InvalidSpec").await;
        assert!(
            message.contains(field) && message.contains("is not a valid"),
            "{name}: {message}"
        );
    }
    sleep(500).await;
    let climbing: Vec<String> = api
        .paths()
        .into_iter()
        .filter(|p| p.contains("..") || p.contains("victim"))
        .collect();
    assert!(climbing.is_empty(), "{climbing:?}");
    assert_eq!(vendor.count(), 0);
    operator.stop().await;
}
