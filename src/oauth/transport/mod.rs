//! The one HTTP transport for token requests: reqwest with rustls.
//!
//! * TLS is always verified: against the system trust store plus `--ca-file` (the default
//!   trust), or against an OAuthClient's own bundle alone ([`trust`]); no option
//!   turns verification off. Each trust configuration has its own pooled client
//!   ([`crate::oauth::transport::pool`]), built from one template, so the rules below hold for every one.
//! * A certificate or handshake failure is `EndpointUnavailable` with a message that starts
//!   with what went wrong in words ([`tls_failure`]).
//! * Redirects are never followed: credentials must not be re-sent to another URL. A 3xx is
//!   handed back to [`crate::oauth::response`], which reports it as `InvalidResponse`.
//! * Every request has a timeout.
//! * The response body is read with a cap ([`MAX_BODY`]); reading stops as soon as it is
//!   exceeded.
//! * The User-Agent is `oauth-token-operator/<version>`.
//! * The token URL policy ([`crate::spec::url_policy`], applied by [`resolver`]) is enforced on the URL and, through the DNS
//!   resolver, on every address connected to.
//! * Proxies come from a [`ProxyConfig`] only (reqwest's own reading of the environment is off).
//!   Before anything is sent to a proxy, the transport resolves the token URL's host itself and
//!   applies the policy to **every** address (a proxy cannot be kept to the allowed ones). A
//!   host that cannot be resolved locally goes through the proxy only when
//!   `--token-url-allow-hosts` names it; otherwise the request is refused. The proxy resolves
//!   the name again: DNS rebinding between the two lookups is for the proxy's egress policy to
//!   stop.
//! * A proxy that refuses the CONNECT is `EndpointUnavailable` with the proxy's status.
//! * Mutual TLS (TlsClientAuth): each client identity has its own HTTP client
//!   (pooled by trust and identity, see [`pool`]), with session resumption off,
//!   so that requests for different identities never share a connection or a TLS session.
//!
//! [`Transport::client`] is the one place that chooses the HTTP client of a request: from the
//! trust the endpoint is verified against and the identity the client presents.

mod client;
mod mtls;
pub mod pool;
pub mod proxy;
pub mod resolver;
pub mod tls_failure;
pub mod trust;

use std::sync::Arc;
use std::time::Duration;

pub use client::{HttpClient, MAX_BODY, Reply, limit_bodies};
pub use pool::{BuildError, PoolLimits};

use self::pool::{ClientPool, ClientTemplate, PoolError};
use self::proxy::ProxyConfig;
use self::trust::{CaBundle, Trust};
use crate::api::reason::{Failure, Reason};
use crate::oauth::identity::Identity;
use crate::spec::url_policy::TokenUrlPolicy;

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The transport for token requests: the pool of HTTP clients (one per trust and identity; see
/// [`pool`]) and the default one.
#[derive(Clone, Debug)]
pub struct Transport {
    pool: Arc<ClientPool>,
    default: HttpClient,
}

/// Everything a transport is built from.
#[derive(Clone, Debug, Default)]
pub struct TransportConfig {
    /// Request timeout.
    pub timeout: Duration,
    /// Where credentials may be sent.
    pub policy: Arc<TokenUrlPolicy>,
    /// Proxies (`run` and `exchange` pass [`ProxyConfig::from_env`]).
    pub proxy: ProxyConfig,
    /// `--ca-file`: extra trust anchors of the default trust, on top of the system store.
    pub ca_file: Option<CaBundle>,
    /// The bounds on the clients of CA bundles and mutual-TLS identities.
    pub limits: PoolLimits,
}

impl Transport {
    /// A transport with the given request timeout and the default token URL policy.
    pub fn new(timeout: Duration) -> Result<Self, BuildError> {
        Transport::with_policy(timeout, Arc::default())
    }

    /// A transport with the given request timeout and token URL policy, connecting directly
    /// (no proxy, whatever the environment says).
    pub fn with_policy(timeout: Duration, policy: Arc<TokenUrlPolicy>) -> Result<Self, BuildError> {
        Transport::with_proxy(timeout, policy, ProxyConfig::none())
    }

    /// A transport with the given request timeout, token URL policy and proxies, and the
    /// system trust store as its default trust.
    pub fn with_proxy(
        timeout: Duration,
        policy: Arc<TokenUrlPolicy>,
        proxy: ProxyConfig,
    ) -> Result<Self, BuildError> {
        Transport::from_config(TransportConfig {
            timeout,
            policy,
            proxy,
            ca_file: None,
            limits: PoolLimits::default(),
        })
    }

    /// A transport as `config` describes it. Its default client (the default trust) is built
    /// at once, so that a platform without a usable trust store is found at start-up.
    pub fn from_config(config: TransportConfig) -> Result<Self, BuildError> {
        let proxy = Arc::new(config.proxy);
        let proxy_hosts = Arc::new(proxy.proxy_host_names());
        let pool = Arc::new(ClientPool::new(
            ClientTemplate {
                timeout: config.timeout,
                policy: config.policy,
                proxy,
                proxy_hosts,
                ca_file: config.ca_file,
            },
            config.limits,
        ));
        let held = match pool.get(&Trust::Default, None, "") {
            Ok(held) => held,
            Err(PoolError::Build(e)) => return Err(e),
            Err(_) => unreachable!("the default trust is never refused, and has no identity"),
        };
        let described = pool.template().default_trust_description();
        let default = HttpClient::new(held, described.into(), pool.template().clone());
        Ok(Transport { pool, default })
    }

    /// The HTTP client for a request whose endpoint is verified against `trust` and which
    /// presents `identity` in the TLS handshake (mutual TLS; `None` for every other method),
    /// held for `namespace` (its share of the bounds): the pooled one when another OAuthClient
    /// uses the same trust and identity, else a new one. A client that cannot be built, or that
    /// the bounds refuse, is `EndpointUnavailable` saying which bound and how to raise it.
    pub fn client(
        &self,
        trust: &Trust,
        identity: Option<&Identity>,
        namespace: &str,
    ) -> Result<HttpClient, Failure> {
        let verified_against = match trust {
            Trust::Default if identity.is_none() => return Ok(self.default.clone()),
            Trust::Default => self.default.verified_against().into(),
            Trust::Bundle(bundle) => format!("{} alone", bundle.origin()).into(),
        };
        let held =
            self.pool
                .get(trust, identity, namespace)
                .map_err(|e| match (e, trust, identity) {
                    (PoolError::Tls(failure), _, _) => failure,
                    (other, _, Some(_)) => Failure::new(
                        Reason::EndpointUnavailable,
                        format!("cannot build the HTTP client for the client certificate: {other}"),
                    ),
                    (other, _, None) => {
                        let problem = match &other {
                            PoolError::Build(e) => client::root_cause(e),
                            _ => other.to_string(),
                        };
                        let origin = match trust {
                            Trust::Bundle(bundle) => bundle.origin().to_owned(),
                            Trust::Default => self.default.verified_against().to_owned(),
                        };
                        Failure::new(
                            Reason::EndpointUnavailable,
                            format!("cannot build an HTTP client for {origin}: {problem}"),
                        )
                    }
                })?;
        Ok(HttpClient::new(
            held,
            verified_against,
            self.pool.template().clone(),
        ))
    }

    /// The number of verifiers of CA bundles that identity clients share (one per bundle).
    pub fn shared_verifiers(&self) -> usize {
        self.pool.bundle_verifiers()
    }

    /// The number of HTTP clients in use (the default one included).
    pub fn clients_in_use(&self) -> usize {
        self.pool.live()
    }
}
