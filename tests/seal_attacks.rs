//! Review of security round three, item 1 (the seal): attacks that splice or replay genuine
//! tags. Every tag of the seal is computed per item (namespace, Secret name, owner uid, item
//! name, item value) and the list tag covers only the item *names*, so tags taken from two
//! different genuine states of the same Secret combine into a seal that verifies for a content
//! the operator never wrote.

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use support::apiserver::{ApiServer, EVENTS, OAUTHCLIENTS, SECRETS};
use support::harness::*;
use support::vendors::*;

use oauth_token_operator::output::mac::{self, Check, Expected, Scope, SealKeys};

const NS: &str = "telemetry";
const ID: &str = "review-seal-client";
const SECRET: &str = "review-seal-s3cr3t";
const TOKEN_SECRET: &str = "demo-token";
const MAC: &str = "oauth.token-operator.dev/mac";
const EXPIRES: &str = "oauth.token-operator.dev/expires-at";

fn b64(text: &str) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(text))
}

/// `item -> entry` of a v2 seal (`item=tag`).
fn entries(seal: &str) -> Vec<(String, String)> {
    seal.splitn(5, ':')
        .nth(4)
        .unwrap()
        .split(',')
        .map(|e| {
            let (item, _) = e.split_once('=').unwrap();
            (item.to_owned(), e.to_owned())
        })
        .collect()
}

/// `seal` with the entries of `items` replaced by those of `donor` (same list, same order, so
/// the list tag of `seal` still verifies).
fn splice(seal: &str, donor: &str, items: &[&str]) -> String {
    // v2:<key id>:<all tag>:<token tag>:<entries>
    let head: Vec<&str> = seal.splitn(5, ':').take(4).collect();
    let donor = entries(donor);
    let spliced: Vec<String> = entries(seal)
        .into_iter()
        .map(|(item, entry)| {
            if items.contains(&item.as_str()) {
                donor.iter().find(|(i, _)| *i == item).unwrap().1.clone()
            } else {
                entry
            }
        })
        .collect();
    format!("{}:{}", head.join(":"), spliced.join(","))
}

fn seal_of(secret: &Value) -> String {
    secret["metadata"]["annotations"][MAC]
        .as_str()
        .unwrap()
        .to_owned()
}

fn restored_events(api: &ApiServer) -> Vec<String> {
    api.list(EVENTS, Some(NS))
        .into_iter()
        .filter(|e| e["reason"] == "SecretRestored")
        .map(|e| e["note"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn force_renew(api: &ApiServer, vendor: &TokenServer, count: usize) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["metadata"]["annotations"] =
            json!({"oauth.token-operator.dev/refresh-requested-at": now});
    });
    eventually("the forced renewal", Duration::from_secs(10), || {
        let latest = vendor.issued().last().cloned()?;
        (vendor.count() == count
            && secret_value(api, NS, TOKEN_SECRET, "access_token").as_deref() == Some(&latest))
        .then_some(())
    })
    .await;
    // Let the status write and the cache settle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

async fn ready(vendor: &TokenServer) -> (ApiServer, Operator) {
    let api = ApiServer::start().await;
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
    (api, operator)
}

/// Pure check: two genuine seals of the same Secret (same scope), tags mixed across them,
/// verify as `Valid` for a content that was never sealed together.
#[test]
fn splicing_the_tags_of_two_genuine_seals_verifies() {
    let keys = SealKeys::random();
    let scope = Scope {
        namespace: "ns",
        name: "demo-token",
        owner_uid: "uid-1",
    };
    let first: Vec<(String, Vec<u8>)> = vec![
        (mac::data_item("access_token"), b"old-token".to_vec()),
        (EXPIRES.to_owned(), b"2026-01-01T01:00:00Z".to_vec()),
    ];
    let second: Vec<(String, Vec<u8>)> = vec![
        (mac::data_item("access_token"), b"new-token".to_vec()),
        (EXPIRES.to_owned(), b"2027-01-01T00:00:00Z".to_vec()),
    ];
    let borrowed = |v: &[(String, Vec<u8>)]| -> Vec<(String, Vec<u8>)> { v.to_vec() };
    let seal = |v: &[(String, Vec<u8>)]| {
        let items: Vec<mac::Item<'_>> = v.iter().map(|(i, b)| (i.clone(), b.as_slice())).collect();
        mac::seal(
            &keys,
            &scope,
            &items,
            &[mac::data_item("access_token"), EXPIRES.to_owned()],
        )
    };
    let s1 = seal(&borrowed(&first));
    let s2 = seal(&borrowed(&second));
    // The old token with the new (later) expiry.
    let forged_values = [first[0].clone(), second[1].clone()];
    let forged_seal = splice(&s2, &s1, &["data/access_token"]);
    let expected = Expected {
        always: vec![mac::data_item("access_token"), EXPIRES.to_owned()],
        sometimes: vec![],
        token: vec![mac::data_item("access_token"), EXPIRES.to_owned()],
    };
    let check = mac::check(&keys, &scope, Some(&forged_seal), &expected, |item| {
        forged_values
            .iter()
            .find(|(i, _)| i == item)
            .map(|(_, v)| v.as_slice())
    });
    assert_ne!(
        check,
        Check::Valid,
        "a seal spliced from two genuine seals verifies for a content never sealed together"
    );
}

/// The operator: after a renewal, the old token is put back with the tags of its own old seal
/// while the expiry (and every other item) stays the new one. The operator accepts it as
/// intact: no restore, no new exchange; consumers get the replaced token, and the operator
/// believes it valid until the new token's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_token_spliced_under_a_newer_expiry_is_accepted_as_intact() {
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let (api, operator) = ready(&vendor).await;
    let first = api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
    let old_token = vendor.issued()[0].clone();
    force_renew(&api, &vendor, 2).await;
    let second = api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
    assert_ne!(seal_of(&first), seal_of(&second));
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["data"]["access_token"] = b64(&old_token);
        s["data"]["Authorization"] = b64(&format!("Bearer {old_token}"));
        s["metadata"]["annotations"][MAC] = json!(splice(
            &seal_of(&second),
            &seal_of(&first),
            &["data/access_token", "data/Authorization"]
        ));
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    let now = secret_value(&api, NS, TOKEN_SECRET, "access_token").unwrap();
    let events = restored_events(&api);
    let count = vendor.count();
    operator.stop().await;
    assert!(
        now != old_token || count > 2,
        "the spliced Secret was accepted: it still holds the replaced token {old_token:?} \
         (issued tokens {:?}), {count} exchanges, SecretRestored events {events:?}",
        vendor.issued()
    );
}

/// The operator: the expiry of an earlier, longer-lived token (here one year, the most the
/// operator keeps; a tenant who may point tokenUrl at their own server gets any expiry up to
/// that sealed) is spliced onto the current token. The operator accepts it and will not
/// refresh the current one-hour token until the forged expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_longer_expiry_spliced_onto_the_current_token_is_accepted() {
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    vendor.set_expires_in(json!(365 * 24 * 3600));
    let (api, operator) = ready(&vendor).await;
    let first = api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
    let long_expiry = first["metadata"]["annotations"][EXPIRES]
        .as_str()
        .unwrap()
        .to_owned();
    vendor.set_expires_in(json!(3600));
    force_renew(&api, &vendor, 2).await;
    let second = api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
    let short_expiry = second["metadata"]["annotations"][EXPIRES]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(short_expiry < long_expiry);
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["data"]["expires_at"] = first["data"]["expires_at"].clone();
        s["metadata"]["annotations"][EXPIRES] = json!(long_expiry);
        s["metadata"]["annotations"][MAC] = json!(splice(
            &seal_of(&second),
            &seal_of(&first),
            &["data/expires_at", EXPIRES]
        ));
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    let secret = api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
    let status = api.get(OAUTHCLIENTS, NS, "demo").unwrap()["status"].clone();
    let count = vendor.count();
    operator.stop().await;
    let kept = secret["metadata"]["annotations"][EXPIRES].as_str().unwrap();
    assert!(
        kept != long_expiry || count > 2,
        "the spliced expiry was accepted: the current token (expires {short_expiry}) is now \
         believed to expire at {kept}, {count} exchanges; status: expiresAt {} nextRefreshAt {}",
        status["expiresAt"],
        status["nextRefreshAt"]
    );
}

/// The operator: after a renewal, the whole earlier Secret (data, annotations and seal) is put
/// back. Every tag is genuine, so it verifies: the operator goes back to the replaced token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_earlier_secret_replayed_after_a_renewal_is_accepted() {
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let (api, operator) = ready(&vendor).await;
    let first = api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
    let old_token = vendor.issued()[0].clone();
    force_renew(&api, &vendor, 2).await;
    api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
        s["data"] = first["data"].clone();
        s["metadata"]["annotations"] = first["metadata"]["annotations"].clone();
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    let now = secret_value(&api, NS, TOKEN_SECRET, "access_token").unwrap();
    let count = vendor.count();
    operator.stop().await;
    assert!(
        now != old_token || count > 2,
        "the replayed Secret was accepted: it holds the replaced token again, {count} exchanges"
    );
}

/// A re-render (the target settings changed, the token did not) reads the Secret again and
/// seals what that second read holds, without checking its seal: a forged token and expiry
/// written between the reconcile's look at the Secret (its trusted cache entry) and the
/// re-render's own read are sealed by the operator as its own. The API-server double's latency
/// widens the window to make the race deterministic; in a cluster it is the time of the
/// reconcile's other requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgery_written_while_a_rerender_is_in_flight_is_sealed_by_the_operator() {
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let (api, operator) = ready(&vendor).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let forged_expiry = "2099-01-01T00:00:00Z";
    let mut outcome = Vec::new();
    for (attempt, delay_ms) in [350u64, 500, 150, 600, 900].into_iter().enumerate() {
        api.set_latency(Duration::from_millis(300));
        api.modify(OAUTHCLIENTS, NS, "demo", |o| {
            o["spec"]["target"]["labels"] = json!({"team": format!("t{attempt}")});
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let mut forged_under = String::new();
        api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
            forged_under = seal_of(s);
            s["data"]["access_token"] = b64("attacker-token");
            s["data"]["Authorization"] = b64("Bearer attacker-token");
            s["data"]["expires_at"] = b64(forged_expiry);
            s["metadata"]["annotations"][EXPIRES] = json!(forged_expiry);
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        api.set_latency(Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let token = secret_value(&api, NS, TOKEN_SECRET, "access_token").unwrap();
        let secret = api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
        let expiry = secret["metadata"]["annotations"][EXPIRES].clone();
        // The operator sealed the forgery when the Secret holds it under a seal other than the
        // one it was forged under. (A forgery still waiting for its restore, which slows down
        // after three in a row, holds the seal it was forged under, which does not verify.)
        let sealed_by_operator = token == "attacker-token" && seal_of(&secret) != forged_under;
        outcome.push(format!(
            "attempt {attempt} (forged {delay_ms} ms after the spec change): token {token:?}, expires-at {expiry}, exchanges {}, sealed by the operator: {sealed_by_operator}",
            vendor.count()
        ));
        if sealed_by_operator {
            break;
        }
    }
    let status = api.get(OAUTHCLIENTS, NS, "demo").unwrap()["status"].clone();
    let events = restored_events(&api);
    operator.stop().await;
    let last = outcome.last().unwrap().clone();
    assert!(
        !last.ends_with("sealed by the operator: true"),
        "the operator sealed a forged token and expiry as its own:\n{}\nstatus expiresAt {} nextRefreshAt {}; SecretRestored events {events:?}",
        outcome.join("\n"),
        status["expiresAt"],
        status["nextRefreshAt"]
    );
}

/// The same race by someone who may only write the Secret: a drift of the operator's metadata
/// (its label removed) makes the operator re-render from the token the Secret holds; a forgery
/// written between its check and its re-render's read is sealed as its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgery_written_after_a_metadata_drift_is_sealed_by_the_operator() {
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let (api, operator) = ready(&vendor).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let forged_expiry = "2099-01-01T00:00:00Z";
    let mut outcome = Vec::new();
    for (attempt, delay_ms) in [1100u64, 1300, 900, 1500, 700].into_iter().enumerate() {
        api.set_latency(Duration::from_millis(300));
        api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
            s["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove("app.kubernetes.io/managed-by");
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        api.modify(SECRETS, NS, TOKEN_SECRET, |s| {
            s["data"]["access_token"] = b64("attacker-token");
            s["data"]["Authorization"] = b64("Bearer attacker-token");
            s["data"]["expires_at"] = b64(forged_expiry);
            s["metadata"]["annotations"][EXPIRES] = json!(forged_expiry);
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        api.set_latency(Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(8)).await;
        let token = secret_value(&api, NS, TOKEN_SECRET, "access_token").unwrap();
        let secret = api.get(SECRETS, NS, TOKEN_SECRET).unwrap();
        outcome.push(format!(
            "attempt {attempt} (forged {delay_ms} ms after the drift): token {token:?}, expires-at {}, exchanges {}",
            secret["metadata"]["annotations"][EXPIRES],
            vendor.count()
        ));
        if token == "attacker-token" {
            break;
        }
    }
    let status = api.get(OAUTHCLIENTS, NS, "demo").unwrap()["status"].clone();
    operator.stop().await;
    let last = outcome.last().unwrap().clone();
    assert!(
        !last.contains("\"attacker-token\""),
        "the operator sealed a forged token and expiry as its own:\n{}\nstatus expiresAt {} nextRefreshAt {}",
        outcome.join("\n"),
        status["expiresAt"],
        status["nextRefreshAt"]
    );
}
