//! `oauth-token-operator run`: the controller process.

use std::process::ExitCode;
use std::sync::Arc;

use kube::config::KubeConfigOptions;

use super::api_proxy::{self, LoadError, Source};
use super::terminal::errln;
use crate::base::clock::SystemClock;
use crate::controller::{self, Config};
use crate::oauth::transport::proxy::ProxyConfig;
use crate::runtime::health::{self, Health};
use crate::runtime::leader::{LeaderConfig, Leadership};
use crate::runtime::metrics::Metrics;
use crate::spec::Policy;

use super::RunArgs;

/// Runs the controller until SIGTERM or SIGINT; any start-up problem is one clear message and
/// exit code 1 (terminal-safe: escape sequences in what the API server said become `?`).
pub fn run(args: RunArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            // Quotes what the API server said: through the terminal filter.
            errln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_async(args: RunArgs) -> Result<(), String> {
    let proxy = ProxyConfig::from_env();
    let api = connect(&proxy).await?;
    let namespaces: Vec<String> = args
        .namespaces
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    let own_namespace = crate::runtime::leader::own_namespace(&api.default_namespace);
    let cluster_clients = cluster_resource_namespace(&args, &namespaces, &own_namespace)?;
    let own_service_account = if args.allow_service_account_tokens {
        controller::service_account::own_service_account(&api.client)
            .await
            .map_err(|e| format!("cannot tell which identity the operator runs as (SelfSubjectReview at {}): {e}", api.url))?
    } else {
        None
    };
    let needs = controller::Needs {
        namespaces: &namespaces,
        own_namespace: &own_namespace,
        service_account_tokens: args.allow_service_account_tokens,
        lease_namespace: args.leader_elect.then_some(own_namespace.as_str()),
        metrics_reviews: args.metrics_secure,
        own_service_account: own_service_account
            .as_ref()
            .map(|(ns, name)| (ns.as_str(), name.as_str())),
        cluster_clients: cluster_clients.as_deref(),
    };
    controller::preflight(&api.client, &needs, &api.url)
        .await
        .map_err(|e| e.to_string())?;
    let stop = stop_on_signal();
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::default());
    let security = if args.metrics_secure {
        let names = vec![
            "localhost".to_owned(),
            std::env::var("POD_NAME").unwrap_or_else(|_| crate::NAME.to_owned()),
        ];
        let tls = crate::runtime::tls::server_config(args.metrics_cert_dir.as_deref(), &names)
            .map_err(|e| format!("the metrics endpoint's TLS: {e}"))?;
        health::Security::Secure {
            tls,
            auth: Arc::new(crate::runtime::metrics_auth::MetricsAuth::new(
                api.client.clone(),
            )),
        }
    } else {
        health::Security::Plain
    };
    let server = health::serve(
        args.metrics_addr,
        health.clone(),
        metrics.clone(),
        security,
        stopped(&stop),
    )
    .await
    .map_err(|e| format!("cannot listen on --metrics-addr {}: {e}", args.metrics_addr))?;
    let server = tokio::spawn(server);
    let ca_file = args
        .ca_file
        .as_deref()
        .map(|path| super::read_ca_bundle_file("--ca-file", path)?.map_err(|f| f.message))
        .transpose()?;
    tracing::info!(
        version = crate::VERSION,
        namespaces = ?namespaces,
        metrics_addr = %args.metrics_addr,
        leader_elect = args.leader_elect,
        kubernetes_api = %api.route,
        service_account_tokens = args.allow_service_account_tokens,
        token_request_proxies = %proxy,
        extra_trust_anchors = ca_file.as_ref().map_or(0, |b| b.len()),
        "starting"
    );
    for warning in proxy.warnings().into_iter().chain(api.warnings) {
        tracing::warn!("{warning}");
    }
    let config = Config {
        namespaces,
        policy: Policy {
            allow_insecure_http: args.allow_insecure_http,
            token_urls: Arc::new(args.token_urls.policy()),
            allow_service_account_tokens: args.allow_service_account_tokens,
        },
        max_concurrent_exchanges: usize::from(args.max_concurrent_exchanges),
        request_timeout: args.request_timeout,
        proxy,
        namespace: own_namespace,
        ca_file,
        limits: args.limits.limits(),
        refused_token_audiences: args
            .refused_token_audiences
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
        own_service_account,
        cluster_clients,
    };
    let controller = controller::run(
        api.client.clone(),
        config,
        Arc::new(SystemClock),
        health.clone(),
        metrics,
        stopped(&stop),
    );
    if args.leader_elect {
        let leader = LeaderConfig::from_env(&api.default_namespace, args.lease_duration);
        as_leader(api.client, &leader, &health, &stop, controller).await?;
    } else {
        controller.await.map_err(|e| e.to_string())?;
    }
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// The Kubernetes API connection, as `run` makes it.
struct Connected {
    client: kube::Client,
    url: String,
    default_namespace: String,
    route: api_proxy::ApiRoute,
    warnings: Vec<String>,
}

/// Loads the Kubernetes configuration (kubeconfig or in-cluster, with its proxy) and makes the
/// client.
async fn connect(proxy: &ProxyConfig) -> Result<Connected, String> {
    let api = api_proxy::load(Source::Infer, &KubeConfigOptions::default(), proxy)
        .await
        .map_err(|e| match e {
            LoadError::Invalid(message) => {
                format!("the Kubernetes configuration cannot be used: {message}")
            }
            e => format!(
                "no Kubernetes configuration found (KUBECONFIG, ~/.kube/config or in-cluster): {e}"
            ),
        })?;
    let config = api.config;
    let url = config.cluster_url.to_string();
    let default_namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("cannot create a Kubernetes client for {url}: {e}"))?;
    Ok(Connected {
        client,
        url,
        default_namespace,
        route: api.route,
        warnings: api.warnings,
    })
}

/// A channel that turns true on SIGTERM or SIGINT.
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Resolves once `stop` turns true.
fn stopped(stop: &tokio::sync::watch::Receiver<bool>) -> impl Future<Output = ()> + use<> {
    let mut rx = stop.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Waits for the lease (a standby is ready: it serves its purpose by waiting), then runs
/// `controller` while holding it. Stopped while waiting: Ok.
async fn as_leader(
    client: kube::Client,
    leader: &LeaderConfig,
    health: &Health,
    stop: &tokio::sync::watch::Receiver<bool>,
    controller: impl Future<Output = Result<(), controller::StartError>>,
) -> Result<(), String> {
    let mut leadership = Leadership::join(client, leader)
        .await
        .map_err(|e| e.to_string())?;
    health.set_ready();
    tracing::info!(identity = %leader.identity, namespace = %leader.namespace, "waiting for the lease");
    tokio::select! {
        acquired = leadership.acquired() => {
            if !acquired {
                return Err("leader election stopped unexpectedly".into());
            }
        }
        _ = stopped(stop) => {
            leadership.release().await;
            return Ok(());
        }
    }
    tracing::info!(identity = %leader.identity, "became the leader; starting the controller");
    let outcome = tokio::select! {
        result = controller => result.map_err(|e| e.to_string()),
        // Dropping the controller future stops reconciling at once.
        _ = leadership.lost() => Err("lost the lease to another instance; exiting so that this one restarts as a standby".into()),
    };
    leadership.release().await;
    outcome
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// With `--enable-cluster-clients`, the cluster resource namespace (checked as a name); an
/// error with `--namespaces`, since a ClusterOAuthClient writes into any namespace.
fn cluster_resource_namespace(
    args: &RunArgs,
    namespaces: &[String],
    own_namespace: &str,
) -> Result<Option<String>, String> {
    if !args.enable_cluster_clients {
        return Ok(None);
    }
    if !namespaces.is_empty() {
        return Err("--enable-cluster-clients needs a cluster-wide installation: a ClusterOAuthClient writes into the namespaces it selects, so --namespaces (chart: watchNamespaces) cannot be set with it".to_owned());
    }
    let namespace = args
        .cluster_resource_namespace
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(own_namespace)
        .to_owned();
    crate::spec::check_object_name("--cluster-resource-namespace", &namespace)
        .map_err(|f| f.message)?;
    Ok(Some(namespace))
}
