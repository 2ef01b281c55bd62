//! Watches across a real kube-apiserver restart (etcd kept) and an etcd compaction that leaves
//! the operator's resourceVersion too old (`410 Gone`): the operator reconnects or relists,
//! re-issues no valid token, stays Ready, and serves a client created afterwards.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::support::control_plane::{Options, own_control_plane};
use crate::support::vendors::{TokenServer, Tokens, Vendor};

const ID: &str = "watch-client";
const SECRET: &str = "watch-s3cret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_survives_an_apiserver_restart_and_a_compaction_without_reissuing() {
    let test = "the_operator_survives_an_apiserver_restart_and_a_compaction_without_reissuing";
    let Some(cluster) = own_control_plane(test, Options::default()).await else {
        return;
    };
    let plane = cluster.local.clone().unwrap();
    let client = cluster.client().await;
    let ns = cluster.namespace("watches").await;
    // The whole-cluster chart: the operator watches everything, as most installations do.
    let install = Install::new(&cluster, "watches", json!({"allowInsecureHttp": true})).await;
    let operator = install.pod("watches-0").await;
    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    credentials(&client, &ns, "creds", ID, SECRET).await;
    let spec = json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"}});
    oauth_client(&client, &ns, "before", spec.clone()).await;
    wait_ready(
        &client,
        &ns,
        "before",
        "True",
        "TokenIssued",
        Some(&operator),
    )
    .await;
    assert_eq!(vendor.count(), 1);

    // 1. kube-apiserver restarted, etcd kept.
    plane.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(2)).await;
    plane.start_apiserver().await;
    let client = cluster.client().await;
    let created = Instant::now();
    oauth_client(&client, &ns, "after-restart", spec.clone()).await;
    wait_ready(
        &client,
        &ns,
        "after-restart",
        "True",
        "TokenIssued",
        Some(&operator),
    )
    .await;
    // The watches each back off on their own (at most 5 s); their errors must not add up.
    let took = created.elapsed();
    eprintln!("real-cluster suite: a client created after the restart was Ready in {took:.1?}");
    assert!(
        took < Duration::from_secs(12),
        "a client created after the restart took {took:?}"
    );
    wait_ready(
        &client,
        &ns,
        "before",
        "True",
        "TokenIssued",
        Some(&operator),
    )
    .await;
    assert_eq!(
        vendor.count(),
        2,
        "no valid token re-issued after the restart"
    );

    // 2. The history the operator would resume from is compacted away while the API server is
    //    down: its watches come back with 410 Gone and must relist.
    let lists_before = operator_lists(&plane, &install.user());
    plane.stop_apiserver();
    for _ in 0..5 {
        plane.etcd_put_noise().await;
    }
    let compacted = plane.compact_etcd().await;
    plane.start_apiserver().await;
    let client = cluster.client().await;
    oauth_client(&client, &ns, "after-compaction", spec.clone()).await;
    wait_ready(
        &client,
        &ns,
        "after-compaction",
        "True",
        "TokenIssued",
        Some(&operator),
    )
    .await;
    for name in ["before", "after-restart"] {
        wait_ready(&client, &ns, name, "True", "TokenIssued", Some(&operator)).await;
    }
    assert_eq!(
        vendor.count(),
        3,
        "no valid token re-issued after the relist"
    );
    let lists_after = operator_lists(&plane, &install.user());
    eprintln!(
        "real-cluster suite: etcd compacted at revision {compacted}; the operator listed {} more \
         times (its watches were answered 410 Gone)",
        lists_after - lists_before
    );
    assert!(
        lists_after > lists_before,
        "the operator relisted after its resourceVersion was compacted away"
    );
    drop(operator);
    assert_operator_never_refused(&cluster, &install.user());
}

/// How many lists the operator made so far.
fn operator_lists(plane: &crate::support::control_plane::ControlPlane, user: &str) -> usize {
    plane
        .audit_events()
        .iter()
        .filter(|e| e.user == user && e.verb == "list")
        .count()
}
