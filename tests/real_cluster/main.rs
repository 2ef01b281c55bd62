//! The real-cluster suite: the operator, its CRD, its chart and its CLI against a real
//! kube-apiserver, etcd and kube-controller-manager (built by `controlplane/build.sh`, started
//! by [`support::control_plane`]), or against the cluster of `REAL_CLUSTER_KUBECONFIG`.
//!
//! Where the API-server double and the real server disagree, the real server is right: the
//! double stays for what a real server cannot be made to do (faults, dropped watches, slow
//! writes), and everything whose point is fidelity (schema and CEL, server-side apply, RBAC,
//! garbage collection, TokenRequest, watches across restarts) is proven here.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod cluster_clients;
mod common;
mod crd;
mod helm;
mod leader;
mod metrics;
mod ownership;
mod playground;
mod rbac;
mod scale;
mod schema;
mod token_request;
mod watches;
