//! The Kubernetes API connection: its configuration (kubeconfig, else in-cluster) and its proxy,
//! chosen as client-go chooses it.
//!
//! * The kubeconfig cluster's `proxy-url` (`http://`, `https://` or `socks5://`), when set,
//!   carries every request; `NO_PROXY` does not apply to it.
//! * Otherwise the environment, with the variables and rules of token requests
//!   ([`ProxyConfig`]: lowercase wins; `NO_PROXY` with `*`, suffixes on label boundaries, IP
//!   addresses, CIDR ranges and ports): `https_proxy` for an `https://` API server, `http_proxy`
//!   for `http://`, unless `no_proxy` matches it. As in Go's `net/http`, a `localhost` or
//!   loopback API server never goes through a proxy of the environment. In a pod the API server
//!   is `KUBERNETES_SERVICE_HOST` (an address): `NO_PROXY` must hold it (the chart's default
//!   does) for the connection to stay direct.
//! * A proxy variable that is not a usable URL leaves the API connection direct, with a warning
//!   (token requests it would carry are refused instead; see [`crate::oauth::transport::proxy`]).
//!
//! kube-rs reads `HTTPS_PROXY` itself when it loads a kubeconfig (uppercase first, `NO_PROXY`
//! compared with the proxy's own address, and a `NO_PROXY` entry it cannot parse, such as the
//! empty one a trailing comma leaves, failing the whole configuration), and not at all in a pod.
//! Its choice is therefore replaced by this one, and a kubeconfig that kube refuses only because
//! of those variables is loaded here without them: setting a proxy never stops the operator from
//! starting.

use std::path::Path;

use kube::config::{
    Cluster, Context, KubeConfigOptions, Kubeconfig, KubeconfigError, LoadDataError,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use url::{Host, Url};

use crate::oauth::transport::proxy::{ProxyConfig, Route};

/// How the API connection goes, for the start-up log (never with the proxy's userinfo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiRoute {
    /// Straight to the API server.
    Direct,
    /// Through the kubeconfig's `proxy-url`.
    Kubeconfig(String),
    /// Through a proxy of the environment (the proxy, its variable).
    Environment(String, &'static str),
}

impl std::fmt::Display for ApiRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiRoute::Direct => f.write_str("direct"),
            ApiRoute::Kubeconfig(proxy) => write!(f, "via {proxy} (kubeconfig proxy-url)"),
            ApiRoute::Environment(proxy, variable) => write!(f, "via {proxy} ({variable})"),
        }
    }
}

/// A loaded configuration, its proxy set, and how the connection goes.
pub struct Loaded {
    /// The configuration.
    pub config: kube::Config,
    /// How the API connection goes.
    pub route: ApiRoute,
    /// Problems worth a warning (an unusable proxy variable).
    pub warnings: Vec<String>,
}

/// Where the configuration comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// This kubeconfig file alone.
    File(&'a Path),
    /// `KUBECONFIG` (several files, merged) or `~/.kube/config`.
    Kubeconfig,
    /// As [`Source::Kubeconfig`], else the in-cluster configuration (what `kube::Config::infer`
    /// does).
    Infer,
}

/// Why no configuration could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The kubeconfig file could not be read.
    #[error("{0}")]
    Read(KubeconfigError),
    /// The kubeconfig was read but is not usable.
    #[error("{0}")]
    Kubeconfig(KubeconfigError),
    /// Neither a kubeconfig nor the in-cluster configuration.
    #[error("{kubeconfig}; in-cluster: {in_cluster}")]
    Neither {
        /// Why the kubeconfig did not do.
        kubeconfig: KubeconfigError,
        /// Why the in-cluster configuration did not do.
        in_cluster: kube::config::InClusterError,
    },
    /// The configuration names an API server or proxy URL that cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// Loads the configuration `source` names for `options`, with the proxy chosen as above.
pub async fn load(
    source: Source<'_>,
    options: &KubeConfigOptions,
    env: &ProxyConfig,
) -> Result<Loaded, LoadError> {
    let kubeconfig = match source {
        Source::File(path) => Kubeconfig::read_from(path).map_err(LoadError::Read)?,
        Source::Kubeconfig => Kubeconfig::read().map_err(LoadError::Read)?,
        Source::Infer => match Kubeconfig::read() {
            Ok(kubeconfig) => kubeconfig,
            Err(kubeconfig) => return in_cluster(kubeconfig, env),
        },
    };
    let proxy_url = selected(&kubeconfig, options)
        .and_then(|(_, cluster)| cluster.proxy_url.clone())
        .filter(|p| !p.trim().is_empty());
    let mut config = match from_kubeconfig(kubeconfig, options, proxy_url.is_some()).await {
        Ok(config) => config,
        Err(kubeconfig) if matches!(source, Source::Infer) => return in_cluster(kubeconfig, env),
        Err(kubeconfig) => return Err(LoadError::Kubeconfig(kubeconfig)),
    };
    if matches!(source, Source::Infer) {
        config.apply_debug_overrides();
    }
    with_route(config, proxy_url.as_deref(), env)
}

fn in_cluster(kubeconfig: KubeconfigError, env: &ProxyConfig) -> Result<Loaded, LoadError> {
    let mut config = kube::Config::incluster().map_err(|in_cluster| LoadError::Neither {
        kubeconfig,
        in_cluster,
    })?;
    config.apply_debug_overrides();
    with_route(config, None, env)
}

/// kube's own loading; when only the proxy variables make it fail, the same without them.
async fn from_kubeconfig(
    kubeconfig: Kubeconfig,
    options: &KubeConfigOptions,
    has_proxy_url: bool,
) -> Result<kube::Config, KubeconfigError> {
    match kube::Config::from_custom_kubeconfig(kubeconfig.clone(), options).await {
        Ok(config) => Ok(config),
        Err(KubeconfigError::ParseNoProxy(_)) => without_proxy_variables(&kubeconfig, options),
        Err(KubeconfigError::ParseProxyUrl(_)) if !has_proxy_url => {
            without_proxy_variables(&kubeconfig, options)
        }
        Err(other) => Err(other),
    }
}

/// The context and cluster `options` select, as kube selects them.
fn selected<'k>(
    kubeconfig: &'k Kubeconfig,
    options: &KubeConfigOptions,
) -> Option<(&'k Context, &'k Cluster)> {
    let context_name = options
        .context
        .as_ref()
        .or(kubeconfig.current_context.as_ref())?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| &c.name == context_name)?
        .context
        .as_ref()?;
    let cluster_name = options.cluster.as_ref().unwrap_or(&context.cluster);
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| &c.name == cluster_name)?
        .cluster
        .as_ref()?;
    Some((context, cluster))
}

/// What kube's loader makes of the kubeconfig, without its reading of the proxy variables.
fn without_proxy_variables(
    kubeconfig: &Kubeconfig,
    options: &KubeConfigOptions,
) -> Result<kube::Config, KubeconfigError> {
    let (context, cluster) = selected(kubeconfig, options)
        .ok_or_else(|| KubeconfigError::LoadContext(options.context.clone().unwrap_or_default()))?;
    let server = cluster
        .server
        .as_deref()
        .ok_or(KubeconfigError::MissingClusterUrl)?;
    let mut config = kube::Config::new(server.parse().map_err(KubeconfigError::ParseClusterUrl)?);
    config.default_namespace = context
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    config.root_cert = certificate_authority(cluster)?;
    config.accept_invalid_certs = cluster.insecure_skip_tls_verify.unwrap_or(false);
    config.disable_compression = cluster.disable_compression.unwrap_or(false);
    config.tls_server_name = cluster.tls_server_name.clone();
    let user = options.user.as_ref().or(context.user.as_ref());
    let mut auth_info = user
        .and_then(|name| kubeconfig.auth_infos.iter().find(|u| &u.name == name))
        .and_then(|u| u.auth_info.clone())
        .unwrap_or_default();
    if let Some(exec) = &mut auth_info.exec
        && exec.provide_cluster_info
    {
        exec.cluster = Some(cluster.try_into()?);
    }
    config.auth_info = auth_info;
    Ok(config)
}

/// The cluster's CA certificates (DER), from `certificate-authority-data` or the file.
fn certificate_authority(cluster: &Cluster) -> Result<Option<Vec<Vec<u8>>>, KubeconfigError> {
    use base64::Engine as _;
    let pem = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| {
                // kube's DecodeError is another base64 version's: say it as an I/O error.
                let invalid = std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
                let what = "certificate-authority-data".into();
                KubeconfigError::LoadCertificateAuthority(LoadDataError::ReadFile(invalid, what))
            })?,
        (None, Some(path)) => std::fs::read(path).map_err(|e| {
            KubeconfigError::LoadCertificateAuthority(LoadDataError::ReadFile(e, path.into()))
        })?,
        (None, None) => return Ok(None),
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .map(|der| der.as_ref().to_vec())
        .collect();
    Ok(Some(certificates))
}

/// Sets the configuration's proxy: the kubeconfig's `proxy-url`, else the environment's.
fn with_route(
    mut config: kube::Config,
    proxy_url: Option<&str>,
    env: &ProxyConfig,
) -> Result<Loaded, LoadError> {
    let mut warnings = Vec::new();
    let (proxy, route) = match proxy_url {
        Some(text) => match kubeconfig_proxy(text) {
            Ok(uri) => {
                let shown = shown_proxy(&uri);
                (Some(uri), ApiRoute::Kubeconfig(shown))
            }
            Err(problem) => {
                // As with an unusable variable: a proxy setting never stops the operator.
                warnings.push(format!(
                    "the kubeconfig's proxy-url {problem}; the Kubernetes API connection goes direct"
                ));
                (None, ApiRoute::Direct)
            }
        },
        None => from_environment(&config.cluster_url, env, &mut warnings)?,
    };
    config.proxy_url = proxy;
    Ok(Loaded {
        config,
        route,
        warnings,
    })
}

/// The environment's proxy for the API server at `server`.
fn from_environment(
    server: &http::Uri,
    env: &ProxyConfig,
    warnings: &mut Vec<String>,
) -> Result<(Option<http::Uri>, ApiRoute), LoadError> {
    let url = Url::parse(&server.to_string()).map_err(|e| {
        LoadError::Invalid(format!("the API server URL {server} is not usable: {e}"))
    })?;
    if is_loopback(&url) {
        return Ok((None, ApiRoute::Direct));
    }
    match env.route(&url) {
        Route::Direct => Ok((None, ApiRoute::Direct)),
        Route::Unusable(unusable) => {
            warnings.push(format!(
                "{unusable}; the Kubernetes API connection goes direct"
            ));
            Ok((None, ApiRoute::Direct))
        }
        Route::Proxy(server) => {
            let mut with_userinfo = server.url().clone();
            if let Some(credentials) = server.credentials() {
                let (user, password) = credentials.expose();
                // Setting these cannot fail on an http(s) URL with a host.
                let _ = with_userinfo.set_username(user);
                let _ = with_userinfo.set_password(Some(password));
            }
            match with_userinfo.as_str().trim_end_matches('/').parse() {
                Ok(uri) => Ok((
                    Some(uri),
                    ApiRoute::Environment(server.to_string(), server.variable()),
                )),
                Err(_) => {
                    warnings.push(format!(
                        "{} ({server}) is not usable as a proxy of the Kubernetes API connection; it goes direct",
                        server.variable()
                    ));
                    Ok((None, ApiRoute::Direct))
                }
            }
        }
    }
}

/// `localhost` and loopback addresses, which Go's `net/http` never sends to a proxy of the
/// environment.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(v4)) => v4.is_loopback(),
        Some(Host::Ipv6(v6)) => v6.is_loopback(),
        None => false,
    }
}

/// `scheme://host:port` of a proxy URI, without userinfo.
/// The kubeconfig's `proxy-url` as kube's client can use it: `http`, `https` or `socks5` (the
/// schemes kube supports; anything else would fail the client's creation with an error that
/// prints the whole URL, userinfo included). The problem never holds the URL's userinfo.
fn kubeconfig_proxy(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text.trim().parse().map_err(|_| "is not a URL".to_owned())?;
    let shown = shown_proxy(&uri);
    match uri.scheme_str() {
        Some("http" | "https" | "socks5") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(uri),
        Some("http" | "https" | "socks5") => Err(format!("{shown} has no host")),
        Some(_) => Err(format!(
            "{shown} uses a scheme the Kubernetes client does not support (use http, https or socks5)"
        )),
        None => Err("has no scheme (use http://, https:// or socks5://)".to_owned()),
    }
}

fn shown_proxy(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("?");
    match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ProxyConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxyConfig::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn route(
        server: &str,
        kubeconfig: Option<&str>,
        vars: &[(&str, &str)],
    ) -> (Option<String>, String) {
        let config = kube::Config::new(server.parse().unwrap());
        let loaded = with_route(config, kubeconfig, &env(vars)).unwrap();
        (
            loaded.config.proxy_url.map(|u| u.to_string()),
            loaded.route.to_string(),
        )
    }

    #[test]
    fn the_environment_is_used_as_client_go_uses_it() {
        let proxy = [
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            ("HTTP_PROXY", "http://plain:8080"),
        ];
        assert_eq!(
            route("https://10.96.0.1:443", None, &proxy),
            (
                Some("http://proxy.corp:3128/".into()),
                "via http://proxy.corp:3128 (HTTPS_PROXY)".into()
            )
        );
        assert_eq!(
            route("http://api.corp:8080", None, &proxy).1,
            "via http://plain:8080 (HTTP_PROXY)"
        );
        // NO_PROXY rules, the chart's default among them.
        let with_no_proxy = [
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            (
                "NO_PROXY",
                "10.96.0.1,kubernetes.default.svc,.svc,.cluster.local",
            ),
        ];
        assert_eq!(
            route("https://10.96.0.1:443", None, &with_no_proxy),
            (None, "direct".into())
        );
        assert_eq!(
            route("https://kubernetes.default.svc", None, &with_no_proxy).1,
            "direct"
        );
        assert_eq!(
            route("https://api.example.com:6443", None, &with_no_proxy).1,
            "via http://proxy.corp:3128 (HTTPS_PROXY)"
        );
        // Loopback never goes through the environment's proxy.
        for server in [
            "https://127.0.0.1:6443",
            "https://localhost:6443",
            "https://[::1]:6443",
        ] {
            assert_eq!(route(server, None, &proxy).1, "direct", "{server}");
        }
    }

    #[test]
    fn the_kubeconfig_proxy_url_wins_and_userinfo_is_never_shown() {
        let (proxy, shown) = route(
            "https://127.0.0.1:6443",
            Some("socks5://user:pw@bastion:1080"),
            &[("HTTPS_PROXY", "http://env:3128"), ("NO_PROXY", "*")],
        );
        assert_eq!(proxy.as_deref(), Some("socks5://user:pw@bastion:1080/"));
        assert_eq!(shown, "via socks5://bastion:1080 (kubeconfig proxy-url)");
        let (proxy, shown) = route(
            "https://api.corp:6443",
            None,
            &[("https_proxy", "http://squid-user:s3cr%40t@proxy:3128")],
        );
        assert_eq!(
            proxy.as_deref(),
            Some("http://squid-user:s3cr%40t@proxy:3128/")
        );
        assert!(
            !shown.contains("squid-user") && !shown.contains("s3cr"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn the_loader_without_proxy_variables_makes_what_kubes_loader_makes() {
        let ca = {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap().pem()
        };
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(&ca);
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://api.corp:6443\n    certificate-authority-data: {data}\n    tls-server-name: api.internal\n- name: other\n  cluster:\n    server: https://other:6443\ncontexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\n    namespace: team-a\ncurrent-context: ctx\nusers:\n- name: u\n  user:\n    token: abc\n"
        );
        let kubeconfig = Kubeconfig::from_yaml(&yaml).unwrap();
        for options in [
            KubeConfigOptions::default(),
            KubeConfigOptions {
                cluster: Some("other".into()),
                ..Default::default()
            },
        ] {
            let kube = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
                .await
                .unwrap();
            let ours = without_proxy_variables(&kubeconfig, &options).unwrap();
            assert_eq!(ours.cluster_url, kube.cluster_url);
            assert_eq!(ours.default_namespace, kube.default_namespace);
            assert_eq!(ours.root_cert, kube.root_cert);
            assert_eq!(ours.tls_server_name, kube.tls_server_name);
            assert_eq!(ours.accept_invalid_certs, kube.accept_invalid_certs);
            assert_eq!(
                format!("{:?}", ours.auth_info.token),
                format!("{:?}", kube.auth_info.token)
            );
        }
    }

    #[test]
    fn an_unusable_variable_leaves_the_connection_direct_with_a_warning() {
        let config = kube::Config::new("https://api.corp:6443".parse().unwrap());
        let loaded = with_route(
            config,
            None,
            &env(&[("HTTPS_PROXY", "ftp://user:hunter2@p")]),
        )
        .unwrap();
        assert_eq!(loaded.route, ApiRoute::Direct);
        assert_eq!(loaded.config.proxy_url, None);
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].contains("HTTPS_PROXY") && !loaded.warnings[0].contains("hunter2")
        );
    }

    #[tokio::test]
    async fn an_unusable_kubeconfig_proxy_url_warns_and_goes_direct_without_its_userinfo() {
        for text in [
            "socks5h://user:hunter2@bastion:1080",
            "socks4://user:hunter2@bastion:1080",
            "htp://user:hunter2@proxy:3128",
            "user:hunter2@proxy:3128",
            "http://user:hunter2@",
            "not a url at all hunter2",
        ] {
            let config = kube::Config::new("https://api.corp:6443".parse().unwrap());
            let loaded = with_route(config, Some(text), &env(&[])).unwrap();
            assert_eq!(loaded.route, ApiRoute::Direct, "{text}");
            assert_eq!(loaded.config.proxy_url, None, "{text}");
            assert_eq!(loaded.warnings.len(), 1, "{text}");
            let warning = &loaded.warnings[0];
            assert!(warning.contains("proxy-url"), "{warning}");
            assert!(!warning.contains("hunter2"), "{warning}");
            // And what is kept builds a client: kube never sees a URL it refuses.
            assert!(kube::Client::try_from(loaded.config).is_ok(), "{text}");
        }
        for usable in [
            "http://p:3128",
            "https://p:3129",
            "socks5://u:p@bastion:1080",
        ] {
            let config = kube::Config::new("https://api.corp:6443".parse().unwrap());
            let loaded = with_route(config, Some(usable), &env(&[])).unwrap();
            assert!(loaded.warnings.is_empty(), "{usable}");
            assert!(kube::Client::try_from(loaded.config).is_ok(), "{usable}");
        }
    }
}
