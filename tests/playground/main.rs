//! `scripts/playground.sh`: a local Kubernetes control plane with the operator and a client that
//! is Ready, in one command ([`session`]); Ctrl-C stops everything it started.

use std::process::ExitCode;

#[path = "../support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "../real_cluster/common.rs"]
mod common;

mod session;

#[tokio::main]
async fn main() -> ExitCode {
    let options = support::control_plane::Options::default();
    let Some(cluster) = support::control_plane::own_cluster("playground", options).await else {
        eprintln!(
            "no control plane binaries: run controlplane/build.sh (scripts/playground.sh does)"
        );
        return ExitCode::from(2);
    };
    let session = session::start(&cluster).await;
    print!("{}", session.summary());
    let _ = tokio::signal::ctrl_c().await;
    println!("\nStopping the operator and the control plane...");
    drop(session);
    drop(cluster);
    ExitCode::SUCCESS
}
