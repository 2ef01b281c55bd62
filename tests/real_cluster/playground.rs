//! `scripts/playground.sh` (issue 22, item 8): its session on a control plane of its own
//! reaches a Ready client through the chart's RBAC and prints what the README promises; when
//! it ends, the operator and the control plane are gone.

use std::time::Duration;

use crate::support::control_plane::{Options, own_cluster};

#[path = "../playground/session.rs"]
mod session;

#[tokio::test]
async fn the_playground_reaches_ready_and_stops_everything_it_started() {
    let test = "the_playground_reaches_ready_and_stops_everything_it_started";
    let Some(cluster) = own_cluster(test, Options::default()).await else {
        return;
    };
    let session = session::start(&cluster).await;
    let summary = session.summary();
    println!("{summary}");
    let row = session
        .clients
        .lines()
        .find(|l| l.starts_with("default "))
        .unwrap_or_else(|| panic!("{}", session.clients));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &columns[..4],
        ["default", "demo", "True", "TokenIssued"],
        "{row}"
    );
    for needle in [
        "Secret default/demo-token",
        &format!("export KUBECONFIG={}", session.kubeconfig.display()),
        "Ctrl-C stops everything",
    ] {
        assert!(summary.contains(needle), "{needle:?} in {summary}");
    }
    let url = cluster
        .local
        .as_ref()
        .expect("its own control plane")
        .url
        .clone();
    drop(session);
    drop(cluster);
    // Nothing answers where the control plane was.
    let address = url.trim_start_matches("https://").to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tokio::net::TcpStream::connect(&address).await.is_err(),
        "kube-apiserver still listens on {address}"
    );
}
