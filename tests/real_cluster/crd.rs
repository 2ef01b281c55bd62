//! The CRD on the real API server: structural, every CEL rule within the cost budget.

use crate::support::control_plane::cluster;

#[tokio::test]
async fn the_crd_is_accepted_and_established() {
    let Some(cluster) = cluster("the_crd_is_accepted_and_established").await else {
        return;
    };
    let out = cluster
        .kubectl(&[
            "get",
            "crd",
            "oauthclients.oauth.token-operator.dev",
            "-o",
            "json",
        ])
        .ok("kubectl get crd");
    assert!(out.contains("Established"));
}
