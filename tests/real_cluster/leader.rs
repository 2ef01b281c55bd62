//! Leader election against the real Lease API: two operator pods, the holder killed, the standby
//! takes over within the lease duration and re-issues no valid token.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

use crate::common::*;
use crate::support::control_plane::cluster;
use crate::support::vendors::{TokenServer, Tokens, Vendor};

const ID: &str = "leader-client";
const SECRET: &str = "leader-s3cret";
const LEASE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_within_the_lease_duration_and_reissues_nothing() {
    let Some(cluster) =
        cluster("the_standby_takes_over_within_the_lease_duration_and_reissues_nothing").await
    else {
        return;
    };
    let client = cluster.client().await;
    let ns = cluster.namespace("leader").await;
    let (install, first) = Install::watching(
        &cluster,
        "leader",
        &[&ns],
        json!({"replicas": 2, "leaderElection": {"leaseDuration": "5s"}}),
    )
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &install.namespace);
    let holder = || async {
        let lease = leases.get_opt("oauth-token-operator").await.ok()??;
        lease.spec?.holder_identity
    };
    eventually(
        "leader-0 holds the Lease",
        Duration::from_secs(20),
        Some(&first),
        || async { (holder().await.as_deref() == Some("leader-0")).then_some(()) },
    )
    .await;
    let mut first = Some(first);
    let second = install.pod("leader-1").await;

    let vendor = TokenServer::start(Vendor::Generic, ID, SECRET, Tokens::Unique).await;
    credentials(&client, &ns, "creds", ID, SECRET).await;
    for name in ["one", "two"] {
        oauth_client(
            &client,
            &ns,
            name,
            json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"}}),
        )
        .await;
        wait_ready(&client, &ns, name, "True", "TokenIssued", first.as_ref()).await;
    }
    assert_eq!(vendor.count(), 2);
    assert!(
        !second.text().contains("reconciling"),
        "the standby never reconciles:\n{}",
        second.text()
    );

    // The holder dies without releasing the Lease.
    let mut killed = first.take().unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let died = Instant::now();
    eventually(
        "leader-1 takes the Lease",
        LEASE * 3,
        Some(&second),
        || async { (holder().await.as_deref() == Some("leader-1")).then_some(()) },
    )
    .await;
    let takeover = died.elapsed();
    eprintln!(
        "real-cluster suite: leader-1 took over {:.1} s after leader-0 was killed (lease {LEASE:?})",
        takeover.as_secs_f64()
    );
    assert!(
        takeover <= LEASE + Duration::from_secs(3),
        "takeover took {takeover:?}"
    );
    // The new leader reuses both valid tokens, and serves a new client.
    oauth_client(
        &client,
        &ns,
        "three",
        json!({"tokenUrl": vendor.url(), "credentialsSecretRef": {"name": "creds"}}),
    )
    .await;
    wait_ready(&client, &ns, "three", "True", "TokenIssued", Some(&second)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        vendor.count(),
        3,
        "no valid token re-issued by the new leader"
    );
    for name in ["one", "two"] {
        wait_ready(&client, &ns, name, "True", "TokenIssued", Some(&second)).await;
    }
    drop(second);
    assert_operator_never_refused(&cluster, &install.user());
}
