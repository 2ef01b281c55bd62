//! Leader election over a `coordination.k8s.io/v1` Lease named `oauth-token-operator` in the
//! pod's namespace, with the maintained `kube-lease-manager` crate.
//!
//! A standby holds no caches and does not reconcile. When it becomes leader it starts the
//! controller; when the leader loses the lease it stops reconciling at once (the controller is
//! dropped, not drained) and the process exits, so that it restarts as a standby. On a graceful
//! shutdown the lease is released, so a standby takes over without waiting for it to expire.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Lease name.
pub const LEASE_NAME: &str = crate::NAME;

/// Default lease duration.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// Where and as whom to hold the lease.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease (the pod's).
    pub namespace: String,
    /// This instance's identity (the pod's name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
}

impl LeaderConfig {
    /// From the environment: `POD_NAMESPACE` (else `fallback_namespace`) and `POD_NAME` (else
    /// the host name with a random suffix).
    pub fn from_env(fallback_namespace: &str, lease_duration: Duration) -> Self {
        let namespace = own_namespace(fallback_namespace);
        let identity = std::env::var("POD_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| crate::NAME.to_owned());
                format!("{host}-{:08x}", rand::random::<u32>())
            });
        LeaderConfig {
            namespace,
            identity,
            lease_duration,
        }
    }
}

/// Leader election could not start.
#[derive(Debug, thiserror::Error)]
#[error("leader election on Lease {namespace}/{LEASE_NAME} failed: {source}")]
pub struct LeaderError {
    namespace: String,
    #[source]
    source: LeaseManagerError,
}

/// A running election.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Joins the election.
    pub async fn join(client: Client, config: &LeaderConfig) -> Result<Self, LeaderError> {
        let seconds = config.lease_duration.as_secs().max(2);
        let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(seconds)
            .with_grace((seconds / 3).max(1))
            .with_field_manager(format!("{}-{}", crate::NAME, config.identity))
            .build()
            .await
            .map_err(|source| LeaderError {
                namespace: config.namespace.clone(),
                source,
            })?;
        let (state, task) = manager.watch().await;
        Ok(Leadership { state, task })
    }

    /// Resolves once this instance leads (false if the election stopped).
    pub async fn acquired(&mut self) -> bool {
        self.state.wait_for(|leader| *leader).await.is_ok()
    }

    /// Resolves once this instance no longer leads.
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|leader| !*leader).await;
    }

    /// Leaves the election, releasing the lease if held.
    pub async fn release(self) {
        drop(self.state);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => tracing::info!("lease released"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease task failed"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }
}

/// The operator's own namespace: `POD_NAMESPACE` (the chart sets it from the downward API),
/// else `fallback` (the kubeconfig's namespace).
pub fn own_namespace(fallback: &str) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| fallback.to_owned())
}
