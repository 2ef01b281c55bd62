//! The controller: watches OAuthClients, their managed Secrets and their credentials Secrets,
//! and reconciles each OAuthClient ([`reconcile`]).
//!
//! Watches, per scope (all namespaces, or each namespace of `--namespaces`):
//!
//! * OAuthClients (full objects: the controller needs their spec);
//! * managed Secrets, metadata only, selected by the `app.kubernetes.io/managed-by` label and
//!   mapped back to their owner;
//! * all Secrets, metadata only and reduced to name and resourceVersion, mapped back to the
//!   OAuthClients that reference them (credentials, CA bundles). Secret data is never cached;
//! * all ConfigMaps, metadata only, likewise (CA bundles); their data is read when an exchange
//!   needs it, and kept only as the HTTP client built from it.
//! * with `--allow-service-account-tokens`, ServiceAccounts, metadata only and reduced to name
//!   and resourceVersion, mapped back to the OAuthClients that use them
//!   (`ServiceAccountToken`), so that a change of the opt-in annotation retries at once.

pub mod cluster;
pub mod context;
pub mod events;
pub mod gate;
pub mod issuer;
pub mod memory;
pub mod own_writes;
pub mod preflight;
pub mod queue;
pub mod reconcile;
pub mod references;
pub mod seal_key;
pub mod secret_index;
pub mod service_account;
mod watches;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use kube::Client;

use crate::base::clock::Clock;
use crate::oauth::transport::proxy::ProxyConfig;
use crate::oauth::transport::trust::CaBundle;
use crate::oauth::transport::{Transport, TransportConfig};
use crate::runtime::health::Health;
use crate::runtime::metrics::Metrics;
use crate::spec::Policy;
use context::Shared;

/// The controller's configuration (from the `run` command line).
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Spec rules.
    pub policy: Policy,
    /// Concurrent exchanges at most.
    pub max_concurrent_exchanges: usize,
    /// Token request timeout.
    pub request_timeout: Duration,
    /// Proxies for token requests (`run` reads them from the environment).
    pub proxy: ProxyConfig,
    /// The operator's own namespace (the seal key Secret lives there).
    pub namespace: String,
    /// `--ca-file`: extra trust anchors for every endpoint without its own `caBundleRef`, on
    /// top of the system store.
    pub ca_file: Option<CaBundle>,
    /// The bounds on the HTTP clients of CA bundles and client certificates.
    pub limits: crate::oauth::transport::pool::PoolLimits,
    /// `--refused-token-audiences`: never requested for a ServiceAccount token, besides the
    /// API server's audiences (learned at start).
    pub refused_token_audiences: Vec<String>,
    /// The ServiceAccount the operator runs as (namespace, name), whose TokenRequest with no
    /// audience tells the API server's own audiences; `None` when it runs as a user.
    pub own_service_account: Option<(String, String)>,
    /// `--enable-cluster-clients`: the cluster resource namespace (`--cluster-resource-namespace`)
    /// where ClusterOAuthClients' references resolve; `None`: ClusterOAuthClients are not served.
    pub cluster_clients: Option<String>,
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The OAuthClient CRD is missing.
    #[error(
        "the OAuthClient CRD (oauthclients.oauth.token-operator.dev) is not installed in this cluster; install it with `kubectl apply -f crds/oauthclient.yaml` (or the Helm chart)"
    )]
    CrdMissing,
    /// The operator's identity lacks rights it will use (each named, as `verb resource in
    /// scope`).
    #[error(
        "the operator's RBAC does not grant: {} (check the operator's Role or ClusterRole; the chart grants exactly what the operator uses)",
        .0.join("; ")
    )]
    MissingRights(Vec<String>),
    /// The API server cannot be reached or answered with an error.
    #[error("cannot reach the Kubernetes API server at {url}: {source}")]
    Unreachable {
        /// The cluster URL.
        url: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The HTTP client for token endpoints could not be built.
    #[error(transparent)]
    Transport(#[from] crate::oauth::transport::BuildError),
    /// The seal key could not be read or created.
    #[error(transparent)]
    SealKey(#[from] seal_key::SealKeyError),
    /// The API server's own audiences could not be learned (`--allow-service-account-tokens`).
    #[error(
        "cannot learn the API server's own audiences (a TokenRequest for the operator's own ServiceAccount, with no audience): {0}; the operator needs create on serviceaccounts/token for its own ServiceAccount (the chart grants it with serviceAccountTokens.enabled)"
    )]
    Audiences(String),
}

pub use preflight::{Needs, preflight};

/// The API server's own audiences, learned with a TokenRequest for the operator's own
/// ServiceAccount (none to learn when it runs as a user, with a note in the log).
async fn api_audiences(
    client: &Client,
    own: Option<&(String, String)>,
) -> Result<Vec<String>, StartError> {
    let Some((namespace, name)) = own else {
        tracing::info!(
            "not running as a ServiceAccount: the API server's own audiences are not learned (its issuer, the kubernetes.default.svc names and --refused-token-audiences are refused)"
        );
        return Ok(Vec::new());
    };
    let audiences = service_account::learn_api_audiences(client, namespace, name)
        .await
        .map_err(|e| StartError::Audiences(e.to_string()))?;
    tracing::info!(audiences = ?audiences, "the API server's own audiences, never requested for a ServiceAccount token");
    Ok(audiences)
}

/// Runs the controller until `shutdown` resolves. `health` is marked ready once every watch
/// cache has synced.
pub async fn run(
    client: Client,
    config: Config,
    clock: Arc<dyn Clock>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let transport = Transport::from_config(TransportConfig {
        timeout: config.request_timeout,
        policy: config.policy.token_urls.clone(),
        proxy: config.proxy.clone(),
        ca_file: config.ca_file.clone(),
        limits: config.limits,
    })?;
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| crate::NAME.to_owned());
    let seal_keys = seal_key::load_or_create(&client, &config.namespace).await?;
    let mut refused_audiences = config.refused_token_audiences.clone();
    if config.policy.allow_service_account_tokens {
        refused_audiences
            .extend(api_audiences(&client, config.own_service_account.as_ref()).await?);
    }
    // At most a budget of answers in memory, however many requests are out (stalled ones too).
    crate::oauth::transport::limit_bodies(config.max_concurrent_exchanges);
    let shared = Arc::new(Shared {
        kube: client.clone(),
        transport,
        policy: config.policy,
        clock,
        gate: gate::ExchangeGate::new(config.max_concurrent_exchanges),
        request_timeout: config.request_timeout,
        credentials_key: rand::random(),
        seal_keys,
        events: events::EventPublisher::new(client.clone(), instance),
        metrics,
        issuer: issuer::Issuer::default(),
        refused_audiences,
    });
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let shutdown = shutdown.shared();
    let concurrency = u16::try_from(config.max_concurrent_exchanges.saturating_mul(2).max(16))
        .unwrap_or(u16::MAX);
    let mut readiness = Vec::new();
    let mut controllers = Vec::new();
    for scope in scopes {
        let cluster_wide = scope.is_none();
        let (controller, ready, ctx) =
            watches::scope_controller(shared.clone(), scope, concurrency, shutdown.clone());
        readiness.push(ready);
        controllers.push(controller);
        if let (true, Some(namespace)) = (cluster_wide, &config.cluster_clients) {
            let (controller, ready) =
                cluster::controller(shared.clone(), ctx, namespace.clone(), shutdown.clone());
            readiness.push(ready);
            controllers.push(controller);
            tracing::info!(cluster_resource_namespace = %namespace, "serving ClusterOAuthClients");
        }
    }
    let health_ready = health.clone();
    tokio::spawn(async move {
        futures::future::join_all(readiness).await;
        health_ready.set_ready();
        tracing::info!("watch caches synced; ready");
    });
    futures::future::join_all(controllers).await;
    Ok(())
}
