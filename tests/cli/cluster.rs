//! The day-2 commands on a ClusterOAuthClient (`clusteroauthclient/NAME`, `coac/NAME` or
//! `--cluster NAME`), against the API-server double holding one, its status (as the
//! operator would write it) and copies of its token in two namespaces: `status` shows the
//! targets and conflicts and exits 1 unless Ready, `renew` sets the annotation on the
//! cluster-scoped object (and `--wait` sees the new `issuedAt`), `inspect` lists the copies'
//! keys and sizes and never the token, and a name that is no name is refused before any
//! request.

use std::sync::LazyLock;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::*;
use crate::support::apiserver::{ApiServer, CLUSTEROAUTHCLIENTS, SECRETS};

/// The token the copies hold: no command may print it.
const COPY_TOKEN: &str = "coac-copy-token-NEVER-PRINT-4f7c2a91d3";
/// The ClusterOAuthClient's `issuedAt`: five minutes before the tests started, in whole seconds.
static ISSUED_AT: LazyLock<String> = LazyLock::new(|| ago(300));
const REQUESTED: &str = "oauth.token-operator.dev/refresh-requested-at";

/// `seconds` before now, in RFC 3339 whole seconds.
fn ago(seconds: i64) -> String {
    let now = jiff::Timestamp::now().as_second() - seconds;
    jiff::Timestamp::from_second(now).unwrap().to_string()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": *ISSUED_AT})
}

/// The status of `vendor`: Ready as `ready` says, one conflict among three namespaces.
fn status(ready: bool) -> Value {
    let (state, reason) = if ready {
        ("True", "TokenIssued")
    } else {
        ("False", "InvalidClient")
    };
    json!({
        "conditions": [
            condition("Ready", state, reason, "as the OAuthClient cluster-vendor says"),
            condition("Distributed", "False", "SecretConflict",
                      "1 selected namespace holds a Secret vendor-token this ClusterOAuthClient does not control"),
        ],
        "observedGeneration": 1,
        "secretName": "vendor-token",
        "tokenType": "Bearer",
        "issuedAt": *ISSUED_AT,
        "expiresAt": "2099-12-07T02:00:00Z",
        "nextRefreshAt": "2099-12-07T01:40:00Z",
        "consecutiveFailures": if ready { 0 } else { 1 },
        "targets": {"selected": 3, "written": 2, "conflicts": ["payments"], "summary": "2/3"},
    })
}

/// A copy of the token in `namespace`, controlled by `owner` (the ClusterOAuthClient's uid).
fn copy(api: &ApiServer, namespace: &str, owner: &str, issued_at: &str) {
    api.create(
        SECRETS,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": "vendor-token", "namespace": namespace,
                "labels": {"oauth.token-operator.dev/cluster-client": "vendor"},
                "annotations": {"oauth.token-operator.dev/issued-at": issued_at},
                "ownerReferences": [{"apiVersion": "oauth.token-operator.dev/v1alpha1",
                    "kind": "ClusterOAuthClient", "name": "vendor", "uid": owner,
                    "controller": true, "blockOwnerDeletion": true}],
            },
            "type": "Opaque",
            "data": {
                "access_token": b64(COPY_TOKEN),
                "Authorization": b64(&format!("Bearer {COPY_TOKEN}")),
                "token_type": b64("Bearer"),
            },
        }),
    );
}

/// The double with the ClusterOAuthClient `vendor` (its status Ready as `ready` says) and
/// copies in `analytics` (current) and `billing` (an older token), and a user.
async fn start(ready: bool) -> (ApiServer, User, Vec<String>) {
    let api = ApiServer::start_unlogged().await;
    let created = api.create(
        CLUSTEROAUTHCLIENTS,
        json!({
            "apiVersion": "oauth.token-operator.dev/v1alpha1", "kind": "ClusterOAuthClient",
            "metadata": {"name": "vendor"},
            "spec": {
                "provider": "generic",
                "tokenUrl": "https://idp.example.com/oauth/token",
                "credentialsSecretRef": {"name": "vendor-credentials"},
                "target": {"name": "vendor-token", "namespaces": ["analytics", "billing", "payments"]},
            },
        }),
    );
    let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
    api.set_status(CLUSTEROAUTHCLIENTS, "", "vendor", status(ready));
    copy(&api, "analytics", &uid, &ISSUED_AT);
    copy(&api, "billing", &uid, &ago(3900));
    let user = User::new(&api);
    let mut secrets = forbidden(&api, &[]);
    secrets.push(COPY_TOKEN.to_owned());
    (api, user, secrets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_targets_and_conflicts_and_exits_1_unless_ready() {
    let (api, user, secrets) = start(true).await;
    let run = user
        .run(&["status", "clusteroauthclient/vendor"], &secrets)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for needle in [
        "Name:                vendor",
        "Kind:                ClusterOAuthClient (cluster-scoped; references resolve in the cluster resource namespace)",
        "Targets:             selected 3, written 2; conflicts: payments",
        &format!("  issuedAt:             {} (5m", *ISSUED_AT),
    ] {
        assert!(
            run.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            run.stdout
        );
    }
    let distributed = run
        .stdout
        .lines()
        .map(cells)
        .find(|c| c.first().is_some_and(|t| t == "Distributed"))
        .unwrap_or_else(|| panic!("no Distributed condition in\n{}", run.stdout));
    assert_eq!(distributed[1..3], ["False", "SecretConflict"]);

    api.set_status(CLUSTEROAUTHCLIENTS, "", "vendor", status(false));
    let run = user.run(&["status", "--cluster", "vendor"], &secrets).await;
    assert_eq!(run.code, 1, "not Ready: {}", run.stdout);
    assert!(run.stdout.contains("InvalidClient"), "{}", run.stdout);

    let run = user
        .run(&["status", "coac/vendor", "-o", "json"], &secrets)
        .await;
    assert_eq!(run.code, 1);
    let json = run.json();
    assert_eq!(json["kind"], "ClusterOAuthClient");
    assert_eq!(json["ready"], "False");
    assert_eq!(json["status"]["targets"]["conflicts"], json!(["payments"]));

    // Without NAME: the table of every ClusterOAuthClient.
    let run = user.run(&["status", "--cluster"], &secrets).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let rows = run.rows();
    assert_eq!(
        rows[0],
        ["NAME", "READY", "REASON", "TARGETS", "EXPIRES", "MESSAGE"]
    );
    assert_eq!(rows[1][..4], ["vendor", "False", "InvalidClient", "2/3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_sets_the_annotation_on_the_cluster_scoped_object() {
    let (api, user, secrets) = start(true).await;
    let run = user
        .run(&["renew", "clusteroauthclient/vendor"], &secrets)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("clusteroauthclient/vendor: renewal requested at "),
        "{}",
        run.stdout
    );
    let object = api.get(CLUSTEROAUTHCLIENTS, "", "vendor").unwrap();
    let requested = object["metadata"]["annotations"][REQUESTED]
        .as_str()
        .expect("the annotation on the ClusterOAuthClient")
        .to_owned();
    let patch = api
        .calls()
        .into_iter()
        .find(|c| c.verb == "patch")
        .expect("a patch");
    assert_eq!(
        (patch.resource.as_str(), patch.namespace.as_deref()),
        ("clusteroauthclients", None),
        "a cluster-scoped patch"
    );
    assert!(
        api.list(crate::support::apiserver::OAUTHCLIENTS, None)
            .is_empty()
    );

    // --wait: the request is still pending, so no second one is made; the operator's answer
    // is the ClusterOAuthClient's issuedAt reaching it, written once `renew` polls.
    api.reset_counts();
    let waiting = {
        let secrets = secrets.clone();
        let user = User {
            dir: tempfile::tempdir().unwrap(),
            kubeconfig: user.kubeconfig.clone(),
        };
        tokio::spawn(async move {
            user.run(
                &["renew", "coac/vendor", "--wait", "--timeout", "30s"],
                &secrets,
            )
            .await
        })
    };
    while api.count("get clusteroauthclients") < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut renewed = status(true);
    renewed["issuedAt"] = json!(requested);
    api.set_status(CLUSTEROAUTHCLIENTS, "", "vendor", renewed);
    let run = waiting.await.unwrap();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("is already pending; not requesting another"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "clusteroauthclient/vendor: renewed: issuedAt {requested}"
        )),
        "{}",
        run.stdout
    );
    assert_eq!(api.count("patch clusteroauthclients"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_lists_the_copies_keys_and_sizes_never_the_token() {
    let (_api, user, secrets) = start(true).await;
    let run = user
        .run(&["inspect", "clusteroauthclient/vendor"], &secrets)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for output in [&run.stdout, &run.stderr] {
        assert!(!output.contains(COPY_TOKEN), "{output}");
    }
    assert!(
        run.stdout
            .contains("Targets:             selected 3, written 2; conflicts: payments"),
        "{}",
        run.stdout
    );
    let rows: Vec<Vec<String>> = run
        .stdout
        .lines()
        .map(cells)
        .filter(|c| {
            c.first()
                .is_some_and(|n| n == "analytics" || n == "billing")
        })
        .collect();
    let size = COPY_TOKEN.len();
    assert_eq!(
        rows,
        [
            [
                "analytics".to_owned(),
                "vendor-token".to_owned(),
                "yes".to_owned(),
                "yes".to_owned(),
                format!(
                    "Authorization ({}), access_token ({size}), token_type (6)",
                    size + 7
                ),
            ],
            [
                "billing".to_owned(),
                "vendor-token".to_owned(),
                "yes".to_owned(),
                "no".to_owned(),
                format!(
                    "Authorization ({}), access_token ({size}), token_type (6)",
                    size + 7
                ),
            ],
        ],
        "{}",
        run.stdout
    );

    let run = user
        .run(&["inspect", "--cluster", "vendor", "-o", "json"], &secrets)
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains(COPY_TOKEN) && !run.stderr.contains(COPY_TOKEN));
    let json = run.json();
    assert_eq!(json["copies"][0]["namespace"], "analytics");
    assert_eq!(json["copies"][0]["current"], true);
    assert_eq!(json["copies"][1]["current"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_cluster_client_name_is_refused_before_any_request() {
    let (api, user, secrets) = start(true).await;
    for args in [
        &["status", "clusteroauthclient/../x"][..],
        &["renew", "clusteroauthclient/../x"],
        &["inspect", "clusteroauthclient/../x"],
        &["status", "--cluster", "../x"],
        &["inspect", "coac/vendor/../../secrets"],
    ] {
        let run = user.run(args, &secrets).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("is not a valid ClusterOAuthClient name"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(api.calls().is_empty(), "{:?}", api.calls());
    assert!(api.paths().is_empty(), "{:?}", api.paths());
}
