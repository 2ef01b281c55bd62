//! The real-cluster scale scenario at larger N (the suite runs N = 1,000 in every test run):
//! N OAuthClients created at once against a real kube-apiserver, etcd and the cluster-wide
//! chart's operator; prints the time to all Ready, the operator's API requests per client and its
//! peak RSS. Needs the control plane of `controlplane/build.sh`.
//!
//! ```sh
//! cargo bench --bench real_cluster_scale -- 10000
//! ```

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

#[path = "../tests/real_cluster/common.rs"]
#[allow(dead_code)]
mod common;

#[path = "../tests/real_cluster/scale.rs"]
mod scale;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for n in sizes {
        match runtime.block_on(scale::run(n)) {
            Some(figures) => figures.print(),
            None => {
                eprintln!("no control plane: build it with controlplane/build.sh");
                std::process::exit(1);
            }
        }
    }
}
