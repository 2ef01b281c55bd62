//! The command line: `run`, `crd` and `exchange`, and the day-2 commands `status`, `renew` and
//! `inspect` (also as the kubectl plugin `kubectl oauth-token`).

use crate::cli::terminal::out;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::oauth::transport::pool::PoolLimits;
use crate::spec::url_policy::{CidrList, DEFAULT_DENY_CIDRS, HostPattern, TokenUrlPolicy};

mod api_proxy;
mod cluster;
mod exchange;
mod inspect;
mod kube_config;
mod plugin;
mod renew;
mod run;
mod status;
mod table;
pub(crate) mod terminal;

pub use inspect::InspectArgs;
pub use kube_config::KubeArgs;
pub use plugin::{PLUGIN_BINARY, invoked_as_plugin};
pub use renew::RenewArgs;
pub use status::{StatusArgs, StatusFormat};

/// Exit code for unusable input (bad file, bad spec, missing credentials).
pub const EXIT_INPUT: u8 = 2;
/// Exit code for a failed exchange.
pub const EXIT_EXCHANGE: u8 = 3;

/// Keeps OAuth2 client-credentials tokens fresh in Kubernetes Secrets.
#[derive(Debug, Parser)]
#[command(name = "oauth-token-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the OAuthClient CustomResourceDefinition as YAML (with --cluster, the
    /// ClusterOAuthClient one).
    Crd(CrdArgs),
    /// Perform one token exchange locally, without a cluster, and print what the operator would
    /// store.
    Exchange(ExchangeArgs),
    /// Show which OAuthClients are not Ready and why (exit 1 if any is not Ready).
    ///
    /// Without NAME, a table, not-Ready clients first; with NAME, its conditions, status, the
    /// managed Secret's keys and sizes (never values) and its recent events. With
    /// clusteroauthclient/NAME (or --cluster), a ClusterOAuthClient and its targets.
    Status(StatusArgs),
    /// Ask the operator for a new token now; --wait prints the new issuedAt or the failure.
    ///
    /// Sets the annotation oauth.token-operator.dev/refresh-requested-at to now, unless a
    /// request the operator has not served yet is already there (on a ClusterOAuthClient with
    /// clusteroauthclient/NAME or --cluster).
    Renew(RenewArgs),
    /// Show what the stored token holds: type, times and, for a JWT, header and claims.
    ///
    /// Reads the managed Secret; never prints the token, its signature or any credential. With
    /// clusteroauthclient/NAME (or --cluster), the ClusterOAuthClient's status and its
    /// copies' keys and sizes.
    Inspect(InspectArgs),
}

/// Arguments of `exchange`.
#[derive(Debug, clap::Args)]
pub struct ExchangeArgs {
    /// OAuthClient YAML file ("-" for standard input). It may also hold the credentials Secret.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,

    /// client_id (overrides spec.clientId and the Secret in the file).
    #[arg(long, env = "OAUTH_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,

    /// File holding the client secret, used byte for byte (a trailing newline is part of the
    /// secret). Without it, OAUTH_CLIENT_SECRET or the Secret in the file is used.
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// PEM private key (PrivateKeyJwt, TlsClientAuth), instead of the Secret in the file.
    #[arg(long, value_name = "FILE")]
    pub private_key_file: Option<PathBuf>,

    /// PEM certificate chain, leaf first (TlsClientAuth; with PrivateKeyJwt it adds x5t and
    /// x5t#S256), instead of the Secret in the file.
    #[arg(long, value_name = "FILE")]
    pub certificate_file: Option<PathBuf>,

    /// A ready JWT sent as client_assertion, standing in for the ServiceAccount token of
    /// clientAuthMethod ServiceAccountToken (e.g. from kubectl create token NAME --audience
    /// AUDIENCE); surrounding whitespace is dropped.
    #[arg(long, value_name = "FILE")]
    pub assertion_file: Option<PathBuf>,

    /// The subject token of a token exchange (grantType TokenExchange), standing in for the
    /// file's spec.tokenExchange.subjectToken (a ServiceAccount token, e.g. from kubectl create
    /// token NAME --audience AUDIENCE; another client's token; a Secret's); surrounding
    /// whitespace is dropped. Without it, a secretRef subject is read from that Secret in the
    /// file.
    #[arg(long, value_name = "FILE")]
    pub subject_token_file: Option<PathBuf>,

    /// Overrides the subject_token_type sent with the subject token (a URI such as
    /// urn:ietf:params:oauth:token-type:jwt).
    #[arg(long, value_name = "URI")]
    pub subject_token_type: Option<String>,

    /// Allow http:// token URLs (testing only: credentials travel in clear text).
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,

    /// Where credentials may be sent.
    #[command(flatten)]
    pub token_urls: TokenUrlArgs,

    /// Print the access token instead of [redacted].
    #[arg(long)]
    pub show_token: bool,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Request timeout (e.g. 10s, 1m).
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    pub request_timeout: Duration,

    /// PEM file of extra trust anchors, added to the system trust store (as on `run`).
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// PEM file standing in for the file's spec.caBundleRef: the endpoint is verified against
    /// this bundle alone. Without it, a caBundleRef is read from a ConfigMap or Secret of that
    /// name in the file.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle_file: Option<PathBuf>,
}

/// Arguments of `run`. Every flag can also be set from the environment variable named after it.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Namespaces to watch, comma-separated (default: all).
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Allow http:// token URLs (testing only: credentials travel in clear text).
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,

    /// Where credentials may be sent.
    #[command(flatten)]
    pub token_urls: TokenUrlArgs,

    /// Allow clientAuthMethod ServiceAccountToken: the operator requests tokens of
    /// ServiceAccounts that opted in (annotation oauth.token-operator.dev/token-audiences), which
    /// needs RBAC on serviceaccounts (get, list, watch) and serviceaccounts/token (create).
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_ALLOW_SERVICE_ACCOUNT_TOKENS")]
    pub allow_service_account_tokens: bool,

    /// Audiences never requested for a ServiceAccount token (comma-separated), besides the API
    /// server's issuer, the kubernetes.default.svc names and its own audiences (learned at
    /// start): for audiences that other components of the cluster accept.
    #[arg(
        long,
        env = "OAUTH_TOKEN_OPERATOR_REFUSED_TOKEN_AUDIENCES",
        value_delimiter = ',',
        value_name = "AUDIENCES"
    )]
    pub refused_token_audiences: Vec<String>,

    /// Serve ClusterOAuthClients: one token per ClusterOAuthClient, written into every namespace
    /// it selects. Needs a cluster-wide installation (no --namespaces) and the rights the chart
    /// adds with clusterOAuthClients.enabled (namespaces list and watch; secrets delete; in the
    /// cluster resource namespace, oauthclients create and patch).
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_ENABLE_CLUSTER_CLIENTS")]
    pub enable_cluster_clients: bool,

    /// Where ClusterOAuthClients' references (credentials Secret, CA bundle, ServiceAccounts,
    /// subject tokens) are resolved, and where the OAuthClient that obtains each one's token
    /// lives (default: the operator's own namespace, POD_NAMESPACE).
    #[arg(
        long,
        env = "OAUTH_TOKEN_OPERATOR_CLUSTER_RESOURCE_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub cluster_resource_namespace: Option<String>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "OAUTH_TOKEN_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: std::net::SocketAddr,

    /// Serve the metrics endpoint over TLS, with /metrics only for callers whose bearer token
    /// the API server accepts (TokenReview) and who may get the non-resource URL /metrics
    /// (SubjectAccessReview); /healthz and /readyz stay open. `--metrics-secure=false` serves
    /// plain HTTP with /metrics open to whoever reaches the port.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_METRICS_SECURE", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub metrics_secure: bool,

    /// Folder holding tls.crt and tls.key for the metrics endpoint (a mounted cert-manager
    /// Secret; read again when they change). Without it, a self-signed certificate is made at
    /// start.
    #[arg(
        long,
        env = "OAUTH_TOKEN_OPERATOR_METRICS_CERT_DIR",
        value_name = "DIR"
    )]
    pub metrics_cert_dir: Option<PathBuf>,

    /// Most token exchanges in flight at once.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_MAX_CONCURRENT_EXCHANGES", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_exchanges: u16,

    /// Token request timeout (e.g. 10s, 1m).
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_REQUEST_TIMEOUT", value_parser = parse_duration,
          default_value = "10s", value_name = "DURATION")]
    pub request_timeout: Duration,

    /// Log line format.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// PEM file of extra trust anchors (a corporate root CA, say) for token endpoints without
    /// their own spec.caBundleRef, added to the system trust store. Read at start-up.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Run only while holding the Lease `oauth-token-operator` in the pod's namespace
    /// (POD_NAMESPACE), so that several replicas can run with one active.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_LEADER_ELECT")]
    pub leader_elect: bool,

    /// How long the lease lasts without renewal: the longest a failover takes.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_LEASE_DURATION", value_parser = parse_duration,
          default_value = "15s", value_name = "DURATION")]
    pub lease_duration: Duration,

    /// The bounds on the HTTP clients OAuthClients can make the operator hold.
    #[command(flatten)]
    pub limits: PoolLimitArgs,
}

/// `crd`'s arguments.
#[derive(Args, Debug, Clone)]
pub struct CrdArgs {
    /// Print the ClusterOAuthClient CRD (crds/clusteroauthclient.yaml) instead.
    #[arg(long)]
    pub cluster: bool,
}

/// `run`'s bounds on the HTTP clients of distinct CA bundles and client certificates: each
/// costs memory, so OAuthClients naming distinct ones are refused past a bound
/// (`EndpointUnavailable` saying which), and one namespace only up to its share, so that it
/// cannot exhaust the bound for the others.
#[derive(Args, Debug, Clone)]
pub struct PoolLimitArgs {
    /// Most HTTP clients of distinct CA bundles (spec.caBundleRef) held at once.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_MAX_CA_BUNDLES", default_value_t = PoolLimits::default().bundles,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_ca_bundles: usize,

    /// Of those, most held for the OAuthClients of one namespace.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_MAX_CA_BUNDLES_PER_NAMESPACE",
          default_value_t = PoolLimits::default().bundles_per_namespace,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_ca_bundles_per_namespace: usize,

    /// Most HTTP clients of distinct client certificates (TlsClientAuth) held at once.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_MAX_TLS_IDENTITIES", default_value_t = PoolLimits::default().identities,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_tls_identities: usize,

    /// Of those, most held for the OAuthClients of one namespace.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_MAX_TLS_IDENTITIES_PER_NAMESPACE",
          default_value_t = PoolLimits::default().identities_per_namespace,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_tls_identities_per_namespace: usize,
}

impl PoolLimitArgs {
    /// The bounds as the transport takes them.
    pub fn limits(&self) -> PoolLimits {
        PoolLimits {
            bundles: self.max_ca_bundles,
            bundles_per_namespace: self.max_ca_bundles_per_namespace,
            identities: self.max_tls_identities,
            identities_per_namespace: self.max_tls_identities_per_namespace,
        }
    }
}

/// How `exchange` prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// One JSON object, for scripts.
    Json,
}

/// The token URL policy flags, shared by `run` and `exchange`.
#[derive(Debug, clap::Args)]
pub struct TokenUrlArgs {
    /// Networks that token endpoints may not resolve to, comma-separated CIDRs or addresses
    /// (checked on every resolved address, so DNS rebinding cannot bypass it, and through a
    /// proxy on the operator's own resolution). The default keeps credentials away from
    /// link-local addresses and the cloud metadata services. 0.0.0.0/8 and :: are always
    /// refused, even when this is empty.
    #[arg(long, env = "OAUTH_TOKEN_OPERATOR_TOKEN_URL_DENY_CIDRS", value_name = "CIDRS",
          default_value = DEFAULT_DENY_CIDRS)]
    pub token_url_deny_cidrs: CidrList,

    /// When set, the only token endpoint hosts allowed, comma-separated: exact names or
    /// *.domain for any subdomain (default: any host). A listed host that cannot be resolved
    /// locally may still go through HTTPS_PROXY / HTTP_PROXY.
    #[arg(
        long,
        env = "OAUTH_TOKEN_OPERATOR_TOKEN_URL_ALLOW_HOSTS",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pub token_url_allow_hosts: Vec<HostPattern>,
}

impl TokenUrlArgs {
    /// The policy these flags describe.
    pub fn policy(&self) -> TokenUrlPolicy {
        TokenUrlPolicy::new(
            self.token_url_deny_cidrs.clone(),
            self.token_url_allow_hosts.clone(),
        )
    }
}

/// Reads a PEM bundle given with `flag` (`--ca-file`, `--ca-bundle-file`): the outer error when
/// the file cannot be read, the inner one (`InvalidSpec`) when it holds no certificate.
/// Messages name the flag and the file, never its content.
pub(crate) fn read_ca_bundle_file(
    flag: &str,
    path: &std::path::Path,
) -> Result<Result<crate::oauth::transport::trust::CaBundle, crate::api::reason::Failure>, String> {
    let origin = format!("{flag} {}", path.display());
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {origin}: {e}"))?;
    Ok(crate::oauth::transport::trust::CaBundle::parse(
        &bytes, origin,
    ))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::spec::duration::parse(s).map_err(|e| e.to_string())
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Dependencies whose log lines repeat, at `ERROR`, a failure the operator reports itself at the
/// level it deserves: the TLS verifier logs every certificate it refuses (a tenant's endpoint
/// with an unknown authority, an expected failure the client's status names). Off unless
/// `RUST_LOG` names them.
const REPEATING_DEPENDENCIES: [&str; 1] = ["rustls_platform_verifier"];

/// Sends `tracing` output to standard error, filtered by `RUST_LOG` (default: `default_level`),
/// without the [`REPEATING_DEPENDENCIES`].
pub fn init_logging(format: LogFormat, default_level: &str) {
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    for target in REPEATING_DEPENDENCIES {
        if !asked.contains(target) {
            filter = filter.add_directive(format!("{target}=off").parse().expect("a directive"));
        }
    }
    // No colours: every byte goes through the terminal filter (escape sequences become `?`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| terminal::SafeStderr);
    // A second initialisation (tests calling in twice) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Default log filter of `status`, `renew` and `inspect`: their errors are printed as one
/// message, so kube's own log line for a failed request would only repeat it.
const CLUSTER_COMMAND_LOGS: &str = "warn,kube_client::client=off";

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd(args) => {
            if args.cluster {
                out!("{}", crate::api::cluster_crd::crd_yaml());
            } else {
                out!("{}", crate::api::crd::crd_yaml());
            }
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            init_logging(args.log_format, "info");
            run::run(args)
        }
        Command::Exchange(args) => {
            init_logging(LogFormat::Text, "warn");
            exchange::run(args)
        }
        Command::Status(args) => {
            init_logging(LogFormat::Text, CLUSTER_COMMAND_LOGS);
            kube_config::block_on(status::run(args))
        }
        Command::Renew(args) => {
            init_logging(LogFormat::Text, CLUSTER_COMMAND_LOGS);
            kube_config::block_on(renew::run(args))
        }
        Command::Inspect(args) => {
            init_logging(LogFormat::Text, CLUSTER_COMMAND_LOGS);
            kube_config::block_on(inspect::run(args))
        }
    }
}
