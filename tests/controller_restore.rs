//! The managed Secret heals: what someone else changes of what the operator wrote is restored
//! within seconds — with a new token when the token or its times can no longer be trusted,
//! without one when only metadata or rendered templates changed — and what others add stays.

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::apiserver::{ApiServer, EVENTS, OAUTHCLIENTS, SECRETS};
use support::harness::*;
use support::vendors::*;

const NS: &str = "telemetry";
const ID: &str = "restore-client";
const SECRET: &str = "restore-s3cr3t-value";
const TOKEN_SECRET: &str = "demo-token";

fn b64(text: &str) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(text))
}

fn restored_events(api: &ApiServer) -> Vec<String> {
    api.list(EVENTS, Some(NS))
        .into_iter()
        .filter(|e| e["reason"] == "SecretRestored")
        .map(|e| e["note"].as_str().unwrap_or_default().to_owned())
        .collect()
}

struct Setup {
    api: ApiServer,
    vendor: TokenServer,
    operator: Operator,
}

/// A Ready client whose Secret has an `Authorization` template key.
async fn ready() -> Setup {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    oauth_client(
        &api,
        NS,
        "demo",
        json!({
            "tokenUrl": vendor.url(),
            "credentialsSecretRef": {"name": "creds"},
            "target": {"template": {"Authorization": "Bearer {{ access_token }}"}},
        }),
    );
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert_eq!(vendor.count(), 1);
    Setup {
        api,
        vendor,
        operator,
    }
}

/// Waits until the Secret holds the vendor's latest token in `access_token` and the
/// `Authorization` template, with `check` true of it.
async fn restored(setup: &Setup, what: &str, check: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    eventually(what, Duration::from_secs(10), || {
        let secret = setup.api.get(SECRETS, NS, TOKEN_SECRET)?;
        let token = secret_value(&setup.api, NS, TOKEN_SECRET, "access_token")?;
        let auth = secret_value(&setup.api, NS, TOKEN_SECRET, "Authorization")?;
        let latest = setup.vendor.issued().last().cloned()?;
        (token == latest && auth == format!("Bearer {latest}") && check(&secret)).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_token_or_a_touched_time_is_restored_with_a_new_token() {
    let setup = ready().await;
    let (api, vendor) = (&setup.api, &setup.vendor);
    // The token replaced by another writer (with a header injection for good measure).
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["data"]["access_token"] = b64("abc\r\nX-Injected: 1");
    });
    let took = restored(&setup, "the token restored", |_| true).await;
    assert!(took < Duration::from_secs(10));
    assert_eq!(
        vendor.count(),
        2,
        "a new token: the stored one cannot be trusted"
    );
    eventually("the SecretRestored event", Duration::from_secs(5), || {
        restored_events(api)
            .iter()
            .any(|n| n.contains("data key access_token") && n.contains("new token"))
            .then_some(())
    })
    .await;
    assert!(
        restored_events(api)
            .iter()
            .all(|n| !n.contains("X-Injected")),
        "events name keys, never values"
    );

    // The expires_at key removed.
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["data"].as_object_mut().unwrap().remove("expires_at");
    });
    restored(&setup, "expires_at restored", |s| {
        s["data"]["expires_at"].is_string()
    })
    .await;
    assert_eq!(vendor.count(), 3);

    // The expires-at annotation forged far into the future (which would stop refreshes).
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["metadata"]["annotations"]["oauth.token-operator.dev/expires-at"] =
            json!("9999-12-31T00:00:00Z");
    });
    restored(&setup, "the expiry restored", |s| {
        s["metadata"]["annotations"]["oauth.token-operator.dev/expires-at"]
            != "9999-12-31T00:00:00Z"
    })
    .await;
    assert!(vendor.count() >= 4);
    let status = api.get(OAUTHCLIENTS, NS, "demo").unwrap()["status"].clone();
    assert!(status["expiresAt"].as_str().unwrap() < "9999", "{status}");
    assert_eq!(
        condition(api, NS, "demo", "Ready").unwrap().1,
        "TokenIssued"
    );
    setup.operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_rendered_templates_are_restored_without_a_new_token_and_others_keys_stay() {
    let setup = ready().await;
    let (api, vendor) = (&setup.api, &setup.vendor);
    let token = vendor.issued()[0].clone();
    // A key, a label and an annotation another writer adds: left alone.
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["data"]["extra"] = b64("someone else's");
        s["metadata"]["labels"]["team"] = json!("a");
        s["metadata"]["annotations"]["example.com/note"] = json!("kept");
    });
    // A template key edited.
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["data"]["Authorization"] = b64("Bearer forged");
    });
    restored(&setup, "the template restored", |_| true).await;
    // The ownerReference removed.
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("ownerReferences");
    });
    restored(&setup, "the ownerReference restored", |s| {
        s["metadata"]["ownerReferences"][0]["controller"] == true
    })
    .await;
    // The managed-by label removed.
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("app.kubernetes.io/managed-by");
    });
    restored(&setup, "the label restored", |s| {
        s["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "oauth-token-operator"
    })
    .await;
    assert_eq!(
        vendor.count(),
        1,
        "only metadata and templates: no new token"
    );
    assert_eq!(
        secret_value(api, NS, TOKEN_SECRET, "access_token").unwrap(),
        token
    );
    let secret = api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
    assert_eq!(
        secret_value(api, NS, TOKEN_SECRET, "extra").as_deref(),
        Some("someone else's")
    );
    assert_eq!(secret["metadata"]["labels"]["team"], "a");
    assert_eq!(
        secret["metadata"]["annotations"]["example.com/note"],
        "kept"
    );
    // The events follow the status write that follows the Secret's.
    for what in [
        "data key Authorization",
        "ownerReference",
        "label app.kubernetes.io/managed-by",
    ] {
        eventually(what, Duration::from_secs(5), || {
            restored_events(api)
                .iter()
                .any(|n| n.contains(what) && !n.contains("new token"))
                .then_some(())
        })
        .await;
    }
    setup.operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_own_writes_cause_no_reads_of_the_managed_secret() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    vendor.set_expires_in(json!(6));
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    oauth_client(
        &api,
        NS,
        "demo",
        json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"}}),
    );
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    let (gets, requests) = (api.count("get secrets"), vendor.count());
    tokio::time::sleep(Duration::from_secs(12)).await;
    let refreshes = (vendor.count() - requests) as u64;
    assert!(refreshes >= 2, "{refreshes} refreshes");
    // Each refresh reads the credentials once; the managed Secret, written by the operator, is
    // never read.
    assert_eq!(api.count("get secrets") - gets, refreshes);
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reuses_an_untouched_token_and_replaces_one_edited_while_down() {
    let Setup {
        api,
        vendor,
        operator,
    } = ready().await;
    operator.stop().await;
    // Untouched: zero token requests, zero writes.
    api.reset_counts();
    let operator = Operator::start(&api, &[], 4);
    operator.ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(vendor.count(), 1, "the stored token is reused");
    assert_eq!(
        api.count("patch secrets") + api.count("patch oauthclients/status"),
        0
    );
    operator.stop().await;
    // Edited while the operator was down: exactly one token request.
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["metadata"]["annotations"]["oauth.token-operator.dev/expires-at"] =
            json!("9999-12-31T00:00:00Z");
    });
    let operator = Operator::start(&api, &[], 4);
    eventually("a new token", Duration::from_secs(10), || {
        (vendor.count() == 2).then_some(())
    })
    .await;
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(vendor.count(), 2, "exactly one");
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reverted_again_and_again_causes_no_token_storm() {
    let Setup {
        api,
        vendor,
        operator,
    } = ready().await;
    // Someone (a GitOps tool) keeps stripping the operator's annotations, ten times a second.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
            if let Some(a) = s["metadata"]["annotations"].as_object_mut() {
                a.remove("oauth.token-operator.dev/fingerprint");
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Restores wait at least 5 s after the last exchange, doubling: 5, 10 s ... not 120 requests.
    let requests = vendor.count();
    assert!(requests <= 4, "{requests} token requests in 12 s");
    assert!(vendor.shortest_gap().unwrap() >= Duration::from_millis(4900));
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_seal_key_reseals_without_new_tokens() {
    let Setup {
        api,
        vendor,
        operator,
    } = ready().await;
    operator.stop().await;
    let seal = |api: &ApiServer| {
        api.get(SECRETS, NS, TOKEN_SECRET).unwrap()["metadata"]["annotations"]
            ["oauth.token-operator.dev/mac"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = seal(&api);
    // The documented rotation: the key becomes the previous one, a new key takes its place.
    api.modify(
        SECRETS,
        "oauth-token-operator-system",
        "oauth-token-operator-seal-key",
        |s| {
            s["data"]["previous"] = s["data"]["key"].clone();
            s["data"]["key"] = json!(base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
        },
    );
    api.reset_counts();
    let operator = Operator::start(&api, &[], 4);
    eventually("re-sealed", Duration::from_secs(10), || {
        (seal(&api) != before).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(vendor.count(), 1, "no new token for a key rotation");
    assert_eq!(api.count("patch secrets"), 1, "one re-seal");
    assert!(restored_events(&api).is_empty(), "a rotation is no restore");
    operator.stop().await;
}

// === the seal covers what the operator writes (security round three, item 1) ===

/// The Secret as an attacker leaves it: the token swapped, both expiries moved to 2099, and the
/// seal replaced by `seal` (derived from the genuine one).
fn forge(api: &ApiServer, seal: impl Fn(&str) -> String) {
    let expiry = "2099-01-01T00:00:00Z";
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        let genuine = s["metadata"]["annotations"]["oauth.token-operator.dev/mac"]
            .as_str()
            .unwrap()
            .to_owned();
        s["data"]["access_token"] = b64("attacker-token");
        s["data"]["Authorization"] = b64("Bearer attacker-token");
        s["data"]["expires_at"] = b64(expiry);
        s["metadata"]["annotations"]["oauth.token-operator.dev/expires-at"] = json!(expiry);
        s["metadata"]["annotations"]["oauth.token-operator.dev/mac"] = json!(seal(&genuine));
    });
}

/// `v2:<id>:<all tag>:<token tag>:<entries>` split into (id, the two group tags joined as
/// they are written, entries).
fn seal_parts(seal: &str) -> (String, String, Vec<String>) {
    let parts: Vec<&str> = seal.splitn(5, ':').collect();
    (
        parts[1].to_owned(),
        format!("{}:{}", parts[2], parts[3]),
        parts[4].split(',').map(str::to_owned).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_emptied_cut_or_padded_never_hides_a_forged_token() {
    type Forgery = fn(&str) -> String;
    let attacks: [(&str, Forgery); 5] = [
        ("the empty list", |seal| {
            let (id, list, _) = seal_parts(seal);
            format!("v2:{id}:{list}:")
        }),
        ("the empty list, former format", |seal| {
            format!("v1:{}:", seal_parts(seal).0)
        }),
        ("the token's item dropped", |seal| {
            let (id, list, entries) = seal_parts(seal);
            let kept: Vec<String> = entries
                .into_iter()
                .filter(|e| !e.starts_with("data/access_token=") && !e.contains("expires"))
                .collect();
            format!("v2:{id}:{list}:{}", kept.join(","))
        }),
        ("the token's item dropped, former format", |seal| {
            let (id, _, entries) = seal_parts(seal);
            let kept: Vec<String> = entries
                .into_iter()
                .filter(|e| !e.starts_with("data/access_token=") && !e.contains("expires"))
                .collect();
            format!("v1:{id}:{}", kept.join(","))
        }),
        ("an item added", |seal| {
            format!("{seal},data/extra=AAAAAAAAAAAAAAAA")
        }),
    ];
    // Each attack on a client of its own (restores in a row slow down, by design).
    for (attack, seal) in attacks {
        let setup = ready().await;
        forge(&setup.api, seal);
        restored(&setup, attack, |s| {
            s["metadata"]["annotations"]["oauth.token-operator.dev/expires-at"]
                != "2099-01-01T00:00:00Z"
        })
        .await;
        assert_eq!(
            setup.vendor.count(),
            2,
            "{attack}: a new token replaced the forged one"
        );
        setup.operator.stop().await;
    }
}

/// A Secret that does not carry this client's controller ownerReference is never adopted on
/// the strength of a seal copied from the Secret of the same client before it was recreated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_secret_with_a_seal_copied_from_before_a_recreation_is_never_adopted() {
    let setup = ready().await;
    let old = setup.api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
    setup.operator.stop().await;
    // The client is deleted (its Secret goes with it) and created again under the same name.
    setup.api.delete(OAUTHCLIENTS, NS, "demo");
    eventually("the Secret collected", Duration::from_secs(5), || {
        setup
            .api
            .get(SECRETS, NS, TOKEN_SECRET)
            .is_none()
            .then_some(())
    })
    .await;
    // The tenant puts back the old Secret, unowned, with the token swapped and the expiry in
    // 2099, under each of the old seal's variants.
    let mut foreign = old.clone();
    foreign["metadata"] = json!({
        "name": TOKEN_SECRET, "namespace": NS,
        "labels": old["metadata"]["labels"].clone(),
        "annotations": old["metadata"]["annotations"].clone(),
    });
    foreign["data"]["access_token"] = b64("attacker-token");
    foreign["data"]["expires_at"] = b64("2099-01-01T00:00:00Z");
    foreign["metadata"]["annotations"]["oauth.token-operator.dev/expires-at"] =
        json!("2099-01-01T00:00:00Z");
    setup.api.create(SECRETS, foreign);
    oauth_client(
        &setup.api,
        NS,
        "demo",
        json!({
            "tokenUrl": setup.vendor.url(),
            "credentialsSecretRef": {"name": "creds"},
            "target": {"template": {"Authorization": "Bearer {{ access_token }}"}},
        }),
    );
    let operator = Operator::start(&setup.api, &[], 4);
    wait_ready(&setup.api, NS, "demo", "False", "SecretConflict").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let secret = setup.api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
    assert_eq!(
        secret_value(&setup.api, NS, TOKEN_SECRET, "access_token").as_deref(),
        Some("attacker-token"),
        "left untouched"
    );
    assert!(
        secret["metadata"]["ownerReferences"].is_null(),
        "not adopted"
    );
    assert_eq!(setup.vendor.count(), 1, "nothing exchanged for it");
    operator.stop().await;
}
