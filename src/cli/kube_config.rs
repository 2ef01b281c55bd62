//! The cluster connection of `status`, `renew` and `inspect`: kubeconfig handling as kubectl
//! does it (through kube's own loader), the namespace to use, and API errors as one clear
//! message with an exit code.
//!
//! * `--kubeconfig FILE` reads that file alone; otherwise `KUBECONFIG` (several paths, merged
//!   as kubectl merges them) or `~/.kube/config`, and in a pod the in-cluster configuration.
//! * `--context`, `--kube-cluster` and `--user` pick from the kubeconfig (default: its current
//!   context).
//! * The namespace is `-n`, else the context's namespace, else `default`; `-A` (where a command
//!   has it) means all namespaces.
//! * The connection follows the kubeconfig's `proxy-url` and the proxy variables, as kubectl
//!   does ([`super::api_proxy`]).

use crate::cli::terminal::errln;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kube::config::KubeConfigOptions;

use super::EXIT_INPUT;
use super::api_proxy::{self, LoadError, Source};
use crate::oauth::transport::proxy::ProxyConfig;

/// Exit code when a listed client is not Ready, a renewal failed or timed out, or the object
/// does not exist.
pub(super) const EXIT_NOT_OK: u8 = 1;

/// How to reach the cluster: the kubeconfig flags every cluster command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// The kubeconfig cluster to use (default: the context's). kubectl calls it --cluster; here
    /// --cluster names a ClusterOAuthClient, as the API contract says.
    #[arg(long = "kube-cluster", value_name = "NAME")]
    pub cluster: Option<String>,

    /// The kubeconfig user to use (default: the context's).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// The namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Timeout of each API request (e.g. 10s, 1m).
    #[arg(long, value_parser = super::parse_duration, default_value = "30s", value_name = "DURATION")]
    pub request_timeout: Duration,
}

/// A client for the cluster the flags name.
pub(super) struct Connection {
    /// The client.
    pub client: kube::Client,
    /// `-n`, else the context's namespace.
    pub namespace: String,
    /// The API server's URL (for messages).
    pub url: String,
}

/// A command's failure: what to print and the exit code.
#[derive(Debug)]
pub(super) struct CliError {
    /// The exit code.
    pub code: u8,
    /// One line saying what went wrong.
    pub message: String,
}

impl CliError {
    /// A usage or connection problem (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_INPUT,
            message: message.into(),
        }
    }

    /// An object that does not exist (exit 1).
    pub fn not_found(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_NOT_OK,
            message: message.into(),
        }
    }

    /// An API call about `what` (e.g. `OAuthClient telemetry/streamhub`) that failed.
    pub fn api(error: kube::Error, what: &str, url: &str) -> Self {
        match error {
            kube::Error::Api(status) => match status.code {
                404 => CliError::not_found(format!("{what} not found")),
                401 => CliError::usage(format!(
                    "the API server at {url} refused the credentials of the kubeconfig (401 Unauthorized): {}",
                    status.message
                )),
                403 => CliError::usage(format!("forbidden: {} (reading {what})", status.message)),
                code => CliError::usage(format!(
                    "{what}: the API server answered {code} {}: {}",
                    status.reason, status.message
                )),
            },
            other => CliError::usage(format!(
                "cannot reach the Kubernetes API server at {url}: {other}"
            )),
        }
    }

    /// Prints the message and returns the exit code.
    pub fn report(self) -> ExitCode {
        errln!("error: {}", self.message);
        ExitCode::from(self.code)
    }
}

/// Runs `command` on a small runtime and turns its outcome into the exit code (its own code on
/// success, the error's code after printing the error).
pub(super) fn block_on(
    command: impl std::future::Future<Output = Result<u8, CliError>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return CliError::usage(format!("cannot start the async runtime: {e}")).report(),
    };
    match runtime.block_on(command) {
        Ok(code) => ExitCode::from(code),
        Err(error) => error.report(),
    }
}

impl KubeArgs {
    /// The kube-rs options for the chosen context, cluster and user.
    fn options(&self) -> KubeConfigOptions {
        KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        }
    }

    /// Loads the configuration (the API connection's proxy chosen as client-go does; see
    /// [`super::api_proxy`]) and builds a client.
    pub(super) async fn connect(&self) -> Result<Connection, CliError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = self.options();
        let explicit =
            options.context.is_some() || options.cluster.is_some() || options.user.is_some();
        let source = match &self.kubeconfig {
            Some(path) => Source::File(path),
            // A context, cluster or user can only come from a kubeconfig.
            None if explicit => Source::Kubeconfig,
            None => Source::Infer,
        };
        let loaded = api_proxy::load(source, &options, &ProxyConfig::from_env())
            .await
            .map_err(|e| CliError::usage(load_error(source, e)))?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let mut config = loaded.config;
        config.read_timeout = Some(self.request_timeout);
        config.write_timeout = Some(self.request_timeout);
        config.connect_timeout = Some(self.request_timeout.min(Duration::from_secs(30)));
        let url = config.cluster_url.to_string();
        let namespace = match &self.namespace {
            Some(ns) if ns.trim().is_empty() => {
                return Err(CliError::usage("-n/--namespace is empty"));
            }
            Some(ns) => ns.trim().to_owned(),
            None => config.default_namespace.clone(),
        };
        let namespace = checked_namespace(&namespace)?.to_owned();
        let client = kube::Client::try_from(config)
            .map_err(|e| CliError::usage(format!("cannot create a client for {url}: {e}")))?;
        Ok(Connection {
            client,
            namespace,
            url: url.trim_end_matches('/').to_owned(),
        })
    }
}

/// `namespace`, if it is a namespace's name (a DNS label): anything else would reach another
/// API path.
pub(super) fn checked_namespace(namespace: &str) -> Result<&str, CliError> {
    let label =
        namespace.len() <= 63 && !namespace.contains('.') && crate::spec::dns_subdomain(namespace);
    if label {
        Ok(namespace)
    } else {
        Err(CliError::usage(format!(
            "{namespace:?} is not a namespace name (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
        )))
    }
}

/// `name`, if it is an object's name (a DNS subdomain) of `kind`: a name given on the command
/// line, or read from the cluster (`spec.target.name`, `status.secretName`), never reaches an
/// API path unless it is one.
pub(super) fn checked_name<'a>(kind: &str, name: &'a str) -> Result<&'a str, CliError> {
    if crate::spec::dns_subdomain(name) {
        Ok(name)
    } else {
        Err(CliError::usage(format!(
            "{name:?} is not a valid {kind} name (at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit); nothing was read"
        )))
    }
}

/// The message for a configuration that could not be loaded from `source`.
fn load_error(source: Source<'_>, error: LoadError) -> String {
    match (source, error) {
        (_, LoadError::Invalid(message)) => {
            format!("the Kubernetes configuration cannot be used: {message}")
        }
        (Source::File(path), LoadError::Read(e)) => {
            format!("cannot read --kubeconfig {}: {e}", path.display())
        }
        (Source::File(path), e) => format!("--kubeconfig {}: {e}", path.display()),
        (Source::Kubeconfig, e) => format!("kubeconfig: {e}"),
        (Source::Infer, e) => format!(
            "no Kubernetes configuration found (--kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster): {e}"
        ),
    }
}

/// A 404 on a list means the resource type is missing: the CRD is not installed.
pub(super) fn list_error(error: kube::Error, scope: &str, url: &str) -> CliError {
    match &error {
        kube::Error::Api(status) if status.code == 404 => CliError::usage(format!(
            "the OAuthClient CRD (oauthclients.oauth.token-operator.dev) is not installed in the cluster at {url}: kubectl apply -f crds/oauthclient.yaml"
        )),
        _ => CliError::api(error, &format!("OAuthClients {scope}"), url),
    }
}
