//! The controller's guards against hostile specs, refused writes, racing writers and slow
//! endpoints, against the API-server double and the vendor emulators.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::apiserver::{ApiServer, EVENTS, Matcher, OAUTHCLIENTS, SECRETS};
use support::harness::*;
use support::vendors::*;

const NS: &str = "telemetry";
const ID: &str = "guards-client";
const SECRET: &str = "guard-s3cr3t-value";

fn spec(vendor: &TokenServer) -> Value {
    json!({
        "provider": "generic",
        "tokenUrl": vendor.url(),
        "credentialsSecretRef": {"name": "creds"},
    })
}

fn events(api: &ApiServer, reason: &str) -> Vec<Value> {
    api.list(EVENTS, Some(NS))
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
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
    let cases = [
        (
            "creds",
            json!({"credentialsSecretRef": {"name": hostile}}),
            "spec.credentialsSecretRef.name",
        ),
        (
            "bundle",
            json!({"caBundleRef": {"name": hostile}}),
            "spec.caBundleRef.name",
        ),
        (
            "target",
            json!({"target": {"name": hostile}}),
            "spec.target.name",
        ),
        (
            "sa",
            json!({"clientAuthMethod": "ServiceAccountToken", "clientId": "x", "credentialsSecretRef": null,
                   "serviceAccountToken": {"serviceAccountName": hostile, "audience": "a"}}),
            "spec.serviceAccountToken.serviceAccountName",
        ),
    ];
    for (name, fields, field) in cases {
        let mut s = spec(&vendor);
        for (k, v) in fields.as_object().unwrap() {
            if v.is_null() {
                s.as_object_mut().unwrap().remove(k);
            } else {
                s[k] = v.clone();
            }
        }
        oauth_client(&api, NS, name, s);
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

// === refused and failed Secret writes ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_secret_write_is_visible_with_backoff_and_the_token_is_kept() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    // The API server refuses the Secret (422) on every write for now.
    api.fail_next(Matcher::new("patch", "secrets"), 1000, 422);
    oauth_client(&api, NS, "demo", spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "InvalidSpec").await;
    assert!(
        message.contains("the API server refused the managed Secret demo-token")
            && message.contains("injected fault"),
        "{message}"
    );
    let degraded = condition(&api, NS, "demo", "Degraded").unwrap();
    assert_eq!(
        (degraded.0.as_str(), degraded.1.as_str()),
        ("True", "InvalidSpec")
    );
    eventually("the ExchangeFailed event", Duration::from_secs(5), || {
        (events(&api, "ExchangeFailed").len() == 1).then_some(())
    })
    .await;
    // Backoff (about a minute), not a re-exchange loop.
    sleep(3000).await;
    assert_eq!(vendor.count(), 1, "one token request, no loop");
    let object = api.get(OAUTHCLIENTS, NS, "demo").unwrap();
    assert_eq!(object["status"]["consecutiveFailures"], 1);
    let next: jiff::Timestamp = object["status"]["nextRefreshAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(next.duration_since(jiff::Timestamp::now()).as_secs() >= 40);

    // The cause goes away and the spec changes: the token obtained is written, not re-fetched.
    api.reset_faults();
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["spec"]["target"] = json!({"labels": {"team": "a"}});
    });
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert_eq!(vendor.count(), 1, "the token obtained before was written");
    assert_eq!(
        secret_value(&api, NS, "demo-token", "access_token").unwrap(),
        vendor.issued()[0]
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_write_failure_retries_the_write_not_the_exchange() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    // More 500s than the in-place retries absorb: the reconcile fails and is retried.
    api.fail_next(Matcher::new("patch", "secrets"), 4, 500);
    oauth_client(&api, NS, "demo", spec(&vendor));
    let started = Instant::now();
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert!(started.elapsed() < Duration::from_secs(12));
    assert_eq!(
        vendor.count(),
        1,
        "the write was retried with the same token"
    );
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_are_hashed_where_kubernetes_limits_them() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    // 70 characters: too long for a label value, fine for a Secret and an event.
    let name = format!("streamhub.{}", "x".repeat(60));
    oauth_client(&api, NS, &name, spec(&vendor));
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
    oauth_client(&api, NS, &long, spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, &long, "False", "InvalidSpec").await;
    assert!(message.contains("spec.target.name"), "{message}");
    let event_names: Vec<String> = api
        .list(EVENTS, Some(NS))
        .iter()
        .map(|e| e["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        event_names.iter().all(|n| n.len() <= 253),
        "{event_names:?}"
    );
    assert!(
        events(&api, "ExchangeFailed")
            .iter()
            .any(|e| e["regarding"]["name"] == long.as_str()),
        "the failure of the long-named client has an event"
    );
    assert_eq!(vendor.count(), 1, "no request for the unusable spec");
    api.modify(OAUTHCLIENTS, NS, &long, |o| {
        o["spec"]["target"] = json!({"name": "long-token"});
    });
    wait_ready(&api, NS, &long, "True", "TokenIssued").await;
    assert!(api.get(SECRETS, NS, "long-token").is_some());
    operator.stop().await;
}

// === no adoption race ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_created_between_the_read_and_the_write_is_never_taken_over() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    let foreign = json!({
        "metadata": {"name": "demo-token", "namespace": NS, "labels": {"owner": "someone"}},
        "stringData": {"password": "not-yours"},
    });
    // The cache says "absent"; another client creates the Secret just before the operator
    // writes it.
    api.create_before_next(Matcher::new("create", "secrets"), SECRETS, foreign);
    oauth_client(&api, NS, "demo", spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, "demo", "False", "SecretConflict").await;
    assert!(message.contains("demo-token"), "{message}");
    let secret = api.get(SECRETS, NS, "demo-token").unwrap();
    assert!(
        secret["metadata"]["ownerReferences"].is_null(),
        "no ownerReference added: {secret:#}"
    );
    assert_eq!(
        secret_value(&api, NS, "demo-token", "password").as_deref(),
        Some("not-yours")
    );
    assert!(secret["data"]["access_token"].is_null(), "nothing merged");
    assert_eq!(api.count("patch secrets"), 0, "never applied to it");
    operator.stop().await;
}

// === fairness ===

/// Accepts connections and never answers (until the test ends).
async fn tarpit() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}/token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_delays_only_the_clients_that_use_it() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let tarpit = tarpit().await;
    let operator = Operator::start_with_timeout(&api, &[], 32, Duration::from_secs(10));
    operator.ready().await;
    credentials(&api, NS, "creds", ID, SECRET);
    for i in 0..200 {
        let mut s = spec(&vendor);
        s["tokenUrl"] = json!(tarpit);
        oauth_client(&api, NS, &format!("stuck-{i}"), s);
    }
    // Let the stuck clients take what they can.
    sleep(1500).await;
    let mut created = Vec::new();
    for i in 0..20 {
        oauth_client(&api, NS, &format!("healthy-{i}"), spec(&vendor));
        created.push((format!("healthy-{i}"), Instant::now()));
    }
    for (name, at) in &created {
        wait_ready(&api, NS, name, "True", "TokenIssued").await;
        let took = at.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{name} Ready {took:?} after creation"
        );
    }
    assert_eq!(vendor.count(), 20);
    operator.stop().await;
}

// === a metadata-only edit keeps the backoff ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_only_edit_of_the_credentials_does_not_skip_the_backoff() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, "wrong-secret-value");
    oauth_client(&api, NS, "demo", spec(&vendor));
    wait_ready(&api, NS, "demo", "False", "InvalidClient").await;
    assert_eq!(vendor.count(), 1);
    for i in 0..3 {
        api.modify(SECRETS, NS, "creds", |s| {
            s["metadata"]["labels"] = json!({"touched": i.to_string()});
            s["metadata"]["annotations"] = json!({"note": format!("edit {i}")});
        });
        sleep(700).await;
    }
    sleep(1500).await;
    assert_eq!(vendor.count(), 1, "the backoff holds");
    // A real change of the values retries at once.
    api.modify(SECRETS, NS, "creds", |s| {
        use base64::Engine as _;
        s["data"]["client_secret"] =
            json!(base64::engine::general_purpose::STANDARD.encode(SECRET));
    });
    wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert_eq!(vendor.count(), 2);
    operator.stop().await;
}

// === the operator's own create does not look like a missing token ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_secret_then_applying_it_costs_one_exchange_per_client() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 8);
    credentials(&api, NS, "creds", ID, SECRET);
    // Slow watches make the cache lag behind the create and the apply that follows it.
    api.set_latency(Duration::from_millis(30));
    for i in 0..30 {
        oauth_client(&api, NS, &format!("c{i}"), spec(&vendor));
    }
    for i in 0..30 {
        wait_ready(&api, NS, &format!("c{i}"), "True", "TokenIssued").await;
    }
    sleep(2000).await;
    assert_eq!(vendor.count(), 30, "one token request per client");
    // One create per managed Secret, and the operator's seal key.
    assert_eq!(api.count("create secrets"), 31);
    assert_eq!(api.count("patch secrets"), 30);
    operator.stop().await;
}

// === margins too short for mounted Secrets ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_refresh_margin_is_said_in_ready_and_warned_once() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    vendor.set_expires_in(json!(90));
    let operator = Operator::start(&api, &[], 4);
    credentials(&api, NS, "creds", ID, SECRET);
    oauth_client(&api, NS, "demo", spec(&vendor));
    let (_, _, message) = wait_ready(&api, NS, "demo", "True", "TokenIssued").await;
    assert!(message.contains("refresh margin of"), "{message}");
    eventually("the ShortRenewMargin event", Duration::from_secs(5), || {
        (events(&api, "ShortRenewMargin").len() == 1).then_some(())
    })
    .await;
    // A forced refresh of the same generation: no second warning.
    sleep(1100).await;
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    api.modify(OAUTHCLIENTS, NS, "demo", |o| {
        o["metadata"]["annotations"] =
            json!({"oauth.token-operator.dev/refresh-requested-at": now});
    });
    eventually("a second token", Duration::from_secs(10), || {
        (vendor.count() == 2).then_some(())
    })
    .await;
    sleep(1000).await;
    assert_eq!(events(&api, "ShortRenewMargin").len(), 1);
    operator.stop().await;
}

// === every attempt counted exactly once ===

/// The value of one series in the Prometheus text, 0 when absent.
fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every series of `metric`.
fn total(metrics: &str, metric: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Each path through an exchange attempt — a token, a refusal by the endpoint, credentials
/// missing, credentials that are not text, a bundle that cannot be read (refusals before any
/// request) — is counted once per attempt in `exchanges_total` (by result) and in
/// `exchange_triggers_total`, no more, no less: the counters equal the attempts the statuses
/// report (`consecutiveFailures`) and the requests the endpoint received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_counted_exactly_once_on_every_path() {
    let api = ApiServer::start().await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    let operator = Operator::start(&api, &[], 4);
    let metrics = operator.metrics.clone();
    credentials(&api, NS, "creds", ID, SECRET);
    credentials(&api, NS, "wrong", ID, "not-the-secret-value");
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    api.create(
        SECRETS,
        json!({"metadata": {"name": "binary", "namespace": NS},
               "data": {"client_id": b64(ID.as_bytes()), "client_secret": b64(&[0xff, 0xfe, 0x00])}}),
    );
    let with = |secret: &str| {
        let mut s = spec(&vendor);
        s["credentialsSecretRef"]["name"] = json!(secret);
        s
    };
    let mut no_bundle = with("creds");
    no_bundle["caBundleRef"] = json!({"name": "absent-ca"});
    let cases = [
        ("ok", with("creds"), "True", "TokenIssued"),
        ("refused", with("wrong"), "False", "InvalidClient"),
        ("missing", with("absent"), "False", "CredentialsNotFound"),
        ("binary", with("binary"), "False", "InvalidCredentials"),
        ("no-bundle", no_bundle, "False", "CredentialsNotFound"),
    ];
    for (name, spec, _, _) in &cases {
        oauth_client(&api, NS, name, spec.clone());
    }
    for (name, _, status, reason) in &cases {
        wait_ready(&api, NS, name, status, reason).await;
    }
    // Let the backoff retry the failures a few times.
    sleep(4000).await;
    operator.stop().await;
    let text = metrics.encode();
    let attempts = |name: &str| {
        api.get(OAUTHCLIENTS, NS, name).unwrap()["status"]["consecutiveFailures"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let result = |r: &str| {
        series(
            &text,
            &format!("oauth_token_operator_exchanges_total{{provider=\"generic\",result=\"{r}\"}}"),
        )
    };
    assert_eq!(result("success"), 1.0, "{text}");
    assert_eq!(result("InvalidClient"), attempts("refused"), "{text}");
    assert_eq!(
        result("CredentialsNotFound"),
        attempts("missing") + attempts("no-bundle"),
        "{text}"
    );
    assert_eq!(result("InvalidCredentials"), attempts("binary"), "{text}");
    for name in ["refused", "missing", "binary", "no-bundle"] {
        assert!(attempts(name) >= 1.0, "{name} was attempted");
    }
    // Only the token and the endpoint's refusals reached the endpoint.
    assert_eq!(
        vendor.count() as f64,
        result("success") + result("InvalidClient")
    );
    // The same attempts, by trigger.
    let all = total(&text, "oauth_token_operator_exchanges_total");
    assert_eq!(
        total(&text, "oauth_token_operator_exchange_triggers_total"),
        all,
        "{text}"
    );
    assert_eq!(
        all,
        1.0 + ["refused", "missing", "binary", "no-bundle"]
            .iter()
            .map(|n| attempts(n))
            .sum::<f64>()
    );
}
