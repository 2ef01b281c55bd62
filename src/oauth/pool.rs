//! The HTTP clients for token endpoints: one per distinct client configuration, shared by every
//! OAuthClient that uses it, dropped when none does.
//!
//! A configuration is a [`ClientKey`]: the trust anchors ([`TrustKey`]: the default trust, or a
//! bundle by the hash of its certificates) and, for mutual TLS (`TlsClientAuth`), the client
//! identity ([`IdentityKey`]: a digest of its key and certificate chain), whose clients present
//! that certificate and never resume TLS sessions ([`mtls`]). Everything else — the token URL
//! policy and its DNS resolver, the proxies, the timeouts, no redirects, the User-Agent — is the
//! same for every client: it comes from one [`ClientTemplate`], so a pooled client can never
//! skip a rule the default one follows.
//!
//! The pool hands out `Arc`s and keeps only `Weak`s: a client lives as long as someone holds it
//! (the transport holds the default one; the controller's memory of each OAuthClient holds the
//! one it uses), and the pool forgets dropped ones whenever it adds a client.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;

use crate::api::reason::Failure;
use crate::oauth::identity::{Identity, IdentityKey};
use crate::oauth::proxy::ProxyConfig;
use crate::oauth::transport::TransportError;
use crate::oauth::trust::{CaBundle, Trust, TrustKey};
use crate::oauth::url_policy::{PolicyResolver, TokenUrlPolicy};

/// What makes two pooled clients different.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// The trust anchors.
    pub trust: TrustKey,
    /// The client certificate presented in the handshake (mutual TLS), if any.
    pub identity: Option<IdentityKey>,
}

mod mtls;

/// One pooled HTTP client.
pub struct PooledClient {
    key: ClientKey,
    /// The trust it verifies endpoints against (its bundle's certificates are shared, not
    /// copied), so that an identity client of the same trust can be built from it.
    trust: Trust,
    client: reqwest::Client,
    /// The bundle's certificates (none for the default trust), counted against
    /// [`MAX_POOLED_ANCHORS`].
    anchors: usize,
    /// What it holds in DER bytes (the bundle's certificates, or the identity's chain),
    /// counted against [`MAX_POOLED_BUNDLE_BYTES`] or [`MAX_POOLED_IDENTITY_BYTES`]: a
    /// certificate's cost grows with its size, which its count does not say.
    bytes: usize,
}

impl PooledClient {
    /// What it was built for.
    pub fn key(&self) -> &ClientKey {
        &self.key
    }

    /// The trust it verifies endpoints against.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    pub(crate) fn reqwest(&self) -> &reqwest::Client {
        &self.client
    }
}

impl fmt::Debug for PooledClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledClient")
            .field("trust", &self.key.trust.to_string())
            .field("identity", &self.key.identity)
            .finish()
    }
}

/// A pooled client and, for messages, what it verifies endpoints against as the OAuthClient
/// using it names it (`key ca.crt of ConfigMap corp-ca (spec.caBundleRef) alone`). Cloning
/// shares the client.
#[derive(Clone)]
pub struct TrustedClient {
    client: Arc<PooledClient>,
    verified_against: Arc<str>,
    /// The namespace's hold on the client (counted against its share of the bounds), while
    /// anyone keeps this.
    _claim: Option<Arc<Claim>>,
}

impl TrustedClient {
    /// `client`, named for messages as this one is (an identity client of the same trust).
    fn with_client(
        &self,
        (client, claim): (Arc<PooledClient>, Option<Arc<Claim>>),
    ) -> TrustedClient {
        TrustedClient {
            client,
            verified_against: self.verified_against.clone(),
            _claim: claim,
        }
    }

    /// The pooled client.
    pub fn pooled(&self) -> &Arc<PooledClient> {
        &self.client
    }

    /// What the endpoint's certificate is verified against, in words.
    pub fn verified_against(&self) -> &str {
        &self.verified_against
    }
}

impl fmt::Debug for TrustedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedClient")
            .field("trust", &self.client.key.trust.to_string())
            .field("verified_against", &self.verified_against)
            .finish()
    }
}

/// What every pooled client shares, and how one is built.
#[derive(Debug)]
pub struct ClientTemplate {
    /// Request and connect timeout.
    pub timeout: Duration,
    /// The token URL policy (its resolver checks every address connected to).
    pub policy: Arc<TokenUrlPolicy>,
    /// The proxies.
    pub proxy: Arc<ProxyConfig>,
    /// The proxies' host names, which the resolver does not check.
    pub proxy_hosts: Arc<HashSet<String>>,
    /// `--ca-file`: added to the system store in the default trust.
    pub ca_file: Option<CaBundle>,
}

impl ClientTemplate {
    /// Builds a client verifying endpoints against `trust`, presenting `identity` (with the
    /// TLS of [`mtls`], verified by `verifier`) when there is one.
    fn build(
        &self,
        trust: &Trust,
        identity: Option<(&Identity, Arc<dyn ServerCertVerifier>)>,
    ) -> Result<reqwest::Client, PoolError> {
        // Both kube and reqwest use rustls with ring; install it as the process default once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resolver = PolicyResolver::with_exempt(
            Arc::clone(&self.policy),
            self.proxy_hosts.as_ref().clone(),
        );
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .user_agent(crate::user_agent())
            .pool_idle_timeout(Duration::from_secs(60))
            .dns_resolver(Arc::new(resolver))
            .no_proxy();
        for proxy in self.proxy.reqwest_proxies() {
            builder = builder.proxy(proxy);
        }
        builder = match (identity, trust) {
            (Some((identity, verifier)), _) => builder.use_preconfigured_tls(
                mtls::tls_config(identity, verifier).map_err(PoolError::Tls)?,
            ),
            (None, Trust::Default) => match &self.ca_file {
                Some(extra) => {
                    builder.tls_certs_merge(certificates(extra).map_err(PoolError::Build)?)
                }
                None => builder,
            },
            (None, Trust::Bundle(bundle)) => {
                builder.tls_certs_only(certificates(bundle).map_err(PoolError::Build)?)
            }
        };
        builder
            .build()
            .map_err(|e| PoolError::Build(TransportError(e)))
    }

    /// How messages name the default trust.
    pub fn default_trust_description(&self) -> String {
        match &self.ca_file {
            Some(extra) => format!("the system trust store and {}", extra.origin()),
            None => "the system trust store".to_owned(),
        }
    }
}

fn certificates(bundle: &CaBundle) -> Result<Vec<reqwest::Certificate>, TransportError> {
    bundle
        .certificates()
        .iter()
        .map(|der| reqwest::Certificate::from_der(der.as_ref()).map_err(TransportError))
        .collect()
}

/// The most clients of distinct CA bundles in use at once, by default (`--max-ca-bundles`). A
/// client costs about its bundle's parsed anchors plus a connection pool (`cargo bench --bench
/// trust_pool`: see docs/performance.md), so this bounds what OAuthClients naming distinct
/// bundles can make the operator hold; OAuthClients sharing a bundle share one client and count
/// once.
pub const MAX_BUNDLE_CLIENTS: usize = 256;

/// The most certificates the clients of distinct bundles hold between them. A client's memory
/// grows with its anchors (about 0.7 KiB each: a bundle of the Debian store's 145 certificates
/// costs about 105 KiB), so this bounds it to about 14 MiB whatever the bundles' sizes. Each
/// namespace may hold the same share of it as of `--max-ca-bundles`.
pub const MAX_POOLED_ANCHORS: usize = 20_000;

/// The most DER bytes the clients of distinct bundles hold between them (16 MiB); each
/// namespace may hold the same share of it as of `--max-ca-bundles`.
pub const MAX_POOLED_BUNDLE_BYTES: usize = 16 * 1024 * 1024;

/// The most DER bytes of certificate chains the identity clients hold between them (16 MiB);
/// each namespace may hold the same share of it as of `--max-tls-identities`.
pub const MAX_POOLED_IDENTITY_BYTES: usize = 16 * 1024 * 1024;

/// The bounds on the HTTP clients OAuthClients can make the operator hold, globally and per
/// namespace (a namespace that reaches its share fails only its own clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// Clients of distinct CA bundles (`--max-ca-bundles`).
    pub bundles: usize,
    /// Of those, held for one namespace (`--max-ca-bundles-per-namespace`).
    pub bundles_per_namespace: usize,
    /// Clients of distinct mutual-TLS identities (`--max-tls-identities`).
    pub identities: usize,
    /// Of those, held for one namespace (`--max-tls-identities-per-namespace`).
    pub identities_per_namespace: usize,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            bundles: MAX_BUNDLE_CLIENTS,
            bundles_per_namespace: 64,
            identities: 1024,
            identities_per_namespace: 128,
        }
    }
}

impl PoolLimits {
    /// One namespace's share of `total`, for a bound of which it may hold `share` of `all`.
    fn share_of(total: usize, share: usize, all: usize) -> usize {
        total / all.max(1) * share.min(all)
    }

    /// One namespace's share of [`MAX_POOLED_ANCHORS`]: the share it has of the bundles.
    fn anchors_per_namespace(&self) -> usize {
        Self::share_of(MAX_POOLED_ANCHORS, self.bundles_per_namespace, self.bundles)
    }

    /// One namespace's share of [`MAX_POOLED_BUNDLE_BYTES`].
    fn bundle_bytes_per_namespace(&self) -> usize {
        Self::share_of(
            MAX_POOLED_BUNDLE_BYTES,
            self.bundles_per_namespace,
            self.bundles,
        )
    }

    /// One namespace's share of [`MAX_POOLED_IDENTITY_BYTES`].
    fn identity_bytes_per_namespace(&self) -> usize {
        Self::share_of(
            MAX_POOLED_IDENTITY_BYTES,
            self.identities_per_namespace,
            self.identities,
        )
    }
}

/// The DER bytes of certificates.
fn der_bytes(certificates: &[rustls::pki_types::CertificateDer<'_>]) -> usize {
    certificates.iter().map(|c| c.as_ref().len()).sum()
}

/// Why the pool has no client to give.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The HTTP client could not be built.
    #[error(transparent)]
    Build(TransportError),
    /// The TLS of a client identity could not be set up (mutual TLS).
    #[error("{}", .0.message)]
    Tls(Failure),
    /// The bundle clients in use reach `--max-ca-bundles`, or would pass
    /// [`MAX_POOLED_ANCHORS`] certificates or [`MAX_POOLED_BUNDLE_BYTES`] with this one.
    #[error(
        "the operator already holds HTTP clients for {clients} distinct CA bundles with {anchors} certificates ({bytes} bytes), and this one would pass its bound (--max-ca-bundles={limit}, {MAX_POOLED_ANCHORS} certificates, {MAX_POOLED_BUNDLE_BYTES} bytes); OAuthClients that trust the same CA should name the same bundle (trust-manager distributes one into every namespace), or raise --max-ca-bundles (chart value limits.caBundles)"
    )]
    Full {
        /// Bundle clients in use.
        clients: usize,
        /// Their certificates.
        anchors: usize,
        /// Their certificates' DER bytes.
        bytes: usize,
        /// `--max-ca-bundles`.
        limit: usize,
    },
    /// The identity clients in use reach `--max-tls-identities`, or would pass
    /// [`MAX_POOLED_IDENTITY_BYTES`] with this one.
    #[error(
        "the operator already holds HTTP clients for {identities} distinct client certificates ({bytes} bytes of certificate chains), and this one would pass the bound (--max-tls-identities={limit}, {MAX_POOLED_IDENTITY_BYTES} bytes); OAuthClients of the same certificate share one: raise --max-tls-identities (chart value limits.tlsIdentities)"
    )]
    IdentitiesFull {
        /// Identity clients in use.
        identities: usize,
        /// Their chains' DER bytes.
        bytes: usize,
        /// `--max-tls-identities`.
        limit: usize,
    },
    /// The namespace holds its share of a bound already.
    #[error(
        "namespace {namespace} already holds {held} {what} (its share: {flag}={limit}{extra}); this OAuthClient's would pass it, and only this namespace's clients are refused: {advice}, or raise {flag}"
    )]
    NamespaceFull {
        /// The namespace.
        namespace: String,
        /// What it holds (`HTTP clients of distinct CA bundles`).
        what: &'static str,
        /// How many.
        held: usize,
        /// Its share.
        limit: usize,
        /// The flag that sets the share.
        flag: &'static str,
        /// More about the bound (the certificates of the bundles).
        extra: String,
        /// What to do instead.
        advice: &'static str,
    },
}

/// A namespace's hold on a pooled client: counted against its share while anyone keeps it.
#[derive(Debug)]
pub struct Claim;

/// What kind of bound a client counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    /// A client of a CA bundle (no identity).
    Bundle,
    /// A client presenting an identity (mutual TLS).
    Identity,
}

impl ClientKey {
    /// The bound this client counts against (`None`: the default trust without an identity,
    /// which is never refused).
    fn bound(&self) -> Option<Bound> {
        match (&self.trust, &self.identity) {
            (_, Some(_)) => Some(Bound::Identity),
            (TrustKey::Default, None) => None,
            (_, None) => Some(Bound::Bundle),
        }
    }
}

/// The clients in use that count against `bound`: how many, their certificates, their bytes.
fn load(entries: &HashMap<ClientKey, Weak<PooledClient>>, bound: Bound) -> (usize, usize, usize) {
    entries
        .iter()
        .filter(|(key, _)| key.bound() == Some(bound))
        .filter_map(|(_, client)| client.upgrade())
        .fold((0, 0, 0), |(n, anchors, bytes), c| {
            (n + 1, anchors + c.anchors, bytes + c.bytes)
        })
}

/// The clients in use, by key.
#[derive(Debug)]
pub struct ClientPool {
    template: ClientTemplate,
    limits: PoolLimits,
    entries: Mutex<HashMap<ClientKey, Weak<PooledClient>>>,
    /// Which namespaces hold which clients (the per-namespace shares of the bounds).
    claims: Mutex<HashMap<(String, ClientKey), Weak<Claim>>>,
    /// The default trust's verifier for identity clients, built when the first is.
    default_verifier: std::sync::OnceLock<Result<Arc<dyn ServerCertVerifier>, String>>,
    /// The verifier of each bundle that identity clients use, shared by all of them (a root
    /// store per identity client would let distinct throwaway certificates multiply a large
    /// bundle's memory).
    bundle_verifiers: Mutex<HashMap<TrustKey, Weak<dyn ServerCertVerifier>>>,
}

impl ClientPool {
    /// An empty pool building clients from `template`, within `limits`.
    pub fn new(template: ClientTemplate, limits: PoolLimits) -> Self {
        ClientPool {
            template,
            limits,
            entries: Mutex::default(),
            claims: Mutex::default(),
            default_verifier: std::sync::OnceLock::new(),
            bundle_verifiers: Mutex::default(),
        }
    }

    /// What its clients share.
    pub fn template(&self) -> &ClientTemplate {
        &self.template
    }

    /// The client for `trust`, held for `namespace`: the one in use if there is one, else a new
    /// one. A new client for a bundle is refused while `--max-ca-bundles` bundle clients are in
    /// use or when its certificates would take theirs past [`MAX_POOLED_ANCHORS`], and when the
    /// namespace holds its share of either (each client holds its parsed anchors: without a
    /// bound, OAuthClients naming distinct bundles would grow the operator's memory without
    /// end). The client is built outside the pool's lock, so that parsing a large bundle does
    /// not hold up the reconciles that need another one.
    pub fn get(
        &self,
        trust: &Trust,
        namespace: &str,
    ) -> Result<(Arc<PooledClient>, Option<Arc<Claim>>), PoolError> {
        self.get_for(trust, None, namespace)
    }

    /// The client for `trust` that presents `identity` in the handshake (mutual TLS): one per
    /// distinct (trust, identity), shared by the OAuthClients that use the same certificate,
    /// never by two identities; bounded by `--max-tls-identities` and the namespace's share.
    /// Identity clients of one trust share its verifier (one root store per bundle).
    pub fn get_with_identity(
        &self,
        trust: &Trust,
        identity: &Identity,
        namespace: &str,
    ) -> Result<(Arc<PooledClient>, Option<Arc<Claim>>), PoolError> {
        self.get_for(trust, Some(identity), namespace)
    }

    /// The verifier an identity client of `trust` checks endpoints with.
    fn verifier(&self, trust: &Trust) -> Result<Arc<dyn ServerCertVerifier>, PoolError> {
        let built = match trust {
            Trust::Default => self
                .default_verifier
                .get_or_init(|| {
                    let extra = self.template.ca_file.as_ref();
                    mtls::default_verifier(extra.map(|b| b.certificates()).unwrap_or_default())
                })
                .clone(),
            Trust::Bundle(bundle) => {
                let key = trust.key();
                let mut verifiers = self.bundle_verifiers.lock().expect("verifier lock");
                match verifiers.get(&key).and_then(Weak::upgrade) {
                    Some(verifier) => Ok(verifier),
                    None => {
                        let built = mtls::bundle_verifier(bundle);
                        if let Ok(verifier) = &built {
                            verifiers.retain(|_, v| v.strong_count() > 0);
                            verifiers.insert(key, Arc::downgrade(verifier));
                        }
                        built
                    }
                }
            }
        };
        built.map_err(|e| {
            PoolError::Tls(Failure::new(
                crate::api::reason::Reason::EndpointUnavailable,
                e,
            ))
        })
    }

    /// `namespace`'s hold on the client of `key`: the one it has, or a new one if its share of
    /// the key's bound allows (`anchors`: the bundle's certificates).
    fn claim(
        &self,
        namespace: &str,
        key: &ClientKey,
        anchors: usize,
        bytes: usize,
    ) -> Result<Option<Arc<Claim>>, PoolError> {
        let Some(bound) = key.bound() else {
            return Ok(None);
        };
        let mut claims = self.claims.lock().expect("claims lock");
        let id = (namespace.to_owned(), key.clone());
        if let Some(claim) = claims.get(&id).and_then(Weak::upgrade) {
            return Ok(Some(claim));
        }
        claims.retain(|_, c| c.strong_count() > 0);
        let entries = self.entries.lock().expect("client pool lock");
        let held: Vec<&ClientKey> = claims
            .keys()
            .filter(|(ns, k)| ns == namespace && k.bound() == Some(bound))
            .map(|(_, k)| k)
            .collect();
        let limits = &self.limits;
        let (held_anchors, held_bytes) = held
            .iter()
            .filter_map(|k| entries.get(*k).and_then(Weak::upgrade))
            .fold((0, 0), |(a, b), c| (a + c.anchors, b + c.bytes));
        let refused = match bound {
            Bound::Bundle => {
                let anchor_share = limits.anchors_per_namespace();
                let byte_share = limits.bundle_bytes_per_namespace();
                (held.len() >= limits.bundles_per_namespace
                    || held_anchors + anchors > anchor_share
                    || held_bytes + bytes > byte_share)
                    .then(|| PoolError::NamespaceFull {
                        namespace: namespace.to_owned(),
                        what: "HTTP clients of distinct CA bundles",
                        held: held.len(),
                        limit: limits.bundles_per_namespace,
                        flag: "--max-ca-bundles-per-namespace",
                        extra: format!(
                            ", and {anchor_share} certificates of {byte_share} bytes in all; it holds {held_anchors} of {held_bytes} bytes, this bundle {anchors} of {bytes}"
                        ),
                        advice: "OAuthClients that trust the same CA should name the same bundle",
                    })
            }
            Bound::Identity => {
                let byte_share = limits.identity_bytes_per_namespace();
                (held.len() >= limits.identities_per_namespace || held_bytes + bytes > byte_share)
                    .then(|| PoolError::NamespaceFull {
                        namespace: namespace.to_owned(),
                        what: "HTTP clients of distinct client certificates (mutual TLS)",
                        held: held.len(),
                        limit: limits.identities_per_namespace,
                        flag: "--max-tls-identities-per-namespace",
                        extra: format!(
                            ", and {byte_share} bytes of certificate chains; it holds {held_bytes}, this chain {bytes}"
                        ),
                        advice: "OAuthClients of one workload should share one certificate",
                    })
            }
        };
        if let Some(error) = refused {
            return Err(error);
        }
        let claim = Arc::new(Claim);
        claims.insert(id, Arc::downgrade(&claim));
        Ok(Some(claim))
    }

    fn get_for(
        &self,
        trust: &Trust,
        identity: Option<&Identity>,
        namespace: &str,
    ) -> Result<(Arc<PooledClient>, Option<Arc<Claim>>), PoolError> {
        let key = ClientKey {
            trust: trust.key(),
            identity: identity.map(Identity::key),
        };
        let (anchors, bytes) = match (trust, identity) {
            (Trust::Bundle(bundle), None) => (
                bundle.certificates().len(),
                der_bytes(bundle.certificates()),
            ),
            (_, Some(identity)) => (
                0,
                identity.certificates().map_or(0, |c| der_bytes(c.chain())),
            ),
            _ => (0, 0),
        };
        let claim = self.claim(namespace, &key, anchors, bytes)?;
        {
            let entries = self.entries.lock().expect("client pool lock");
            if let Some(client) = entries.get(&key).and_then(Weak::upgrade) {
                return Ok((client, claim));
            }
            match key.bound() {
                Some(Bound::Bundle) => {
                    let (clients, held, held_bytes) = load(&entries, Bound::Bundle);
                    if clients >= self.limits.bundles
                        || held + anchors > MAX_POOLED_ANCHORS
                        || held_bytes + bytes > MAX_POOLED_BUNDLE_BYTES
                    {
                        return Err(PoolError::Full {
                            clients,
                            anchors: held,
                            bytes: held_bytes,
                            limit: self.limits.bundles,
                        });
                    }
                }
                Some(Bound::Identity) => {
                    let (identities, _, held_bytes) = load(&entries, Bound::Identity);
                    if identities >= self.limits.identities
                        || held_bytes + bytes > MAX_POOLED_IDENTITY_BYTES
                    {
                        return Err(PoolError::IdentitiesFull {
                            identities,
                            bytes: held_bytes,
                            limit: self.limits.identities,
                        });
                    }
                }
                None => {}
            }
        }
        let tls = match identity {
            Some(identity) => Some((identity, self.verifier(trust)?)),
            None => None,
        };
        let built = Arc::new(PooledClient {
            client: self.template.build(trust, tls)?,
            key: key.clone(),
            trust: trust.clone(),
            anchors,
            bytes,
        });
        let mut entries = self.entries.lock().expect("client pool lock");
        // Another reconcile may have built the same one meanwhile: use theirs.
        if let Some(client) = entries.get(&key).and_then(Weak::upgrade) {
            return Ok((client, claim));
        }
        entries.retain(|_, client| client.strong_count() > 0);
        entries.insert(key, Arc::downgrade(&built));
        tracing::debug!(
            trust = %built.key.trust,
            mtls = built.key.identity.is_some(),
            clients = entries.len(),
            "built an HTTP client for token endpoints"
        );
        Ok((built, claim))
    }

    /// A client for `trust`, held for `namespace`, named for messages.
    pub fn trusted(
        &self,
        trust: &Trust,
        namespace: &str,
        verified_against: impl Into<Arc<str>>,
    ) -> Result<TrustedClient, PoolError> {
        let (client, claim) = self.get(trust, namespace)?;
        Ok(TrustedClient {
            client,
            verified_against: verified_against.into(),
            _claim: claim,
        })
    }

    /// `trusted`'s trust presenting `identity`, held for `namespace`, named as `trusted` is.
    pub fn trusted_with_identity(
        &self,
        trusted: &TrustedClient,
        identity: &Identity,
        namespace: &str,
    ) -> Result<TrustedClient, PoolError> {
        let held = self.get_with_identity(trusted.pooled().trust(), identity, namespace)?;
        Ok(trusted.with_client(held))
    }

    /// The number of live verifiers of bundles that identity clients share.
    pub fn bundle_verifiers(&self) -> usize {
        let verifiers = self.bundle_verifiers.lock().expect("verifier lock");
        verifiers.values().filter(|v| v.strong_count() > 0).count()
    }

    /// The number of clients someone still holds.
    pub fn live(&self) -> usize {
        let entries = self.entries.lock().expect("client pool lock");
        entries.values().filter(|c| c.strong_count() > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> ClientPool {
        pool_with(PoolLimits::default())
    }

    fn pool_with(limits: PoolLimits) -> ClientPool {
        ClientPool::new(
            ClientTemplate {
                timeout: Duration::from_secs(1),
                policy: Arc::default(),
                proxy: Arc::default(),
                proxy_hosts: Arc::default(),
                ca_file: None,
            },
            limits,
        )
    }

    /// Every bound as high as the global one: the per-namespace shares out of the way.
    fn unshared() -> PoolLimits {
        let d = PoolLimits::default();
        PoolLimits {
            bundles_per_namespace: d.bundles,
            identities_per_namespace: d.identities,
            ..d
        }
    }

    /// The client only (its claim dropped at once: for tests of the clients themselves).
    fn get(pool: &ClientPool, trust: &Trust) -> Result<Arc<PooledClient>, PoolError> {
        pool.get(trust, "ns").map(|(client, _)| client)
    }

    fn get_with_identity(
        pool: &ClientPool,
        trust: &Trust,
        identity: &Identity,
    ) -> Result<Arc<PooledClient>, PoolError> {
        pool.get_with_identity(trust, identity, "ns")
            .map(|(client, _)| client)
    }

    fn bundle(name: &str) -> CaBundle {
        CaBundle::parse(crate::oauth::trust::tests::ca(name).as_bytes(), name).unwrap()
    }

    #[test]
    fn one_client_per_distinct_trust_shared_and_dropped_when_unused() {
        let pool = pool();
        let (a, b) = (bundle("a"), bundle("b"));
        let first = get(&pool, &Trust::Bundle(a.clone())).unwrap();
        // Another origin with the same certificates shares the client.
        let same = CaBundle::parse(
            &a.certificates()
                .iter()
                .map(|der| {
                    let text = base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        der.as_ref(),
                    );
                    format!("-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----\n")
                })
                .collect::<String>()
                .into_bytes(),
            "elsewhere",
        )
        .unwrap();
        let shared = get(&pool, &Trust::Bundle(same)).unwrap();
        assert!(Arc::ptr_eq(&first, &shared));
        let other = get(&pool, &Trust::Bundle(b)).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        let default = pool.trusted(&Trust::Default, "ns", "the default").unwrap();
        assert_eq!(default.pooled().key().trust, TrustKey::Default);
        assert_eq!(pool.live(), 3);
        drop((first, shared));
        assert_eq!(pool.live(), 2, "a client nobody holds is gone");
        drop(other);
        // Dead entries are swept when a client is added.
        let again = get(&pool, &Trust::Bundle(a)).unwrap();
        assert_eq!(pool.live(), 2);
        assert_eq!(pool.entries.lock().unwrap().len(), 2);
        drop(again);
        assert!(format!("{default:?}").contains("the default"));
    }

    fn identity(key: &str, cert: &str) -> Identity {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/client-auth/");
        let read = |name: &str| std::fs::read(format!("{dir}{name}")).unwrap();
        let cert = read(cert);
        Identity::load(&read(key), "tls.key", Some((&cert, "tls.crt"))).unwrap()
    }

    #[test]
    fn identity_clients_are_one_per_trust_and_identity_and_never_shared_across_either() {
        let pool = pool();
        let (a, b) = (
            identity("ec-p256-sec1.pem", "ec-p256.crt"),
            identity("rsa-pkcs8.pem", "rsa.crt"),
        );
        let bundle = Trust::Bundle(bundle("corp"));
        let plain = get(&pool, &Trust::Default).unwrap();
        let a_default = get_with_identity(&pool, &Trust::Default, &a).unwrap();
        let a_again = get_with_identity(&pool, &Trust::Default, &a).unwrap();
        let b_default = get_with_identity(&pool, &Trust::Default, &b).unwrap();
        let a_bundle = get_with_identity(&pool, &bundle, &a).unwrap();
        assert!(
            Arc::ptr_eq(&a_default, &a_again),
            "same trust and identity: shared"
        );
        for (x, y) in [
            (&a_default, &b_default),
            (&a_default, &a_bundle),
            (&a_default, &plain),
        ] {
            assert!(!Arc::ptr_eq(x, y));
            assert_ne!(x.key(), y.key());
        }
        assert_eq!(a_default.key().identity, Some(a.key()));
        assert_eq!(a_bundle.key().trust, bundle.key());
        assert_eq!(a_bundle.trust(), &bundle);
        assert_eq!(plain.key().identity, None);
        // Identity clients do not count as bundle clients.
        assert_eq!(load(&pool.entries.lock().unwrap(), Bound::Bundle).0, 0);
        assert_eq!(pool.live(), 4);
        drop((a_default, a_again));
        assert_eq!(pool.live(), 3, "an identity client nobody holds is gone");
    }

    #[test]
    fn clients_of_distinct_bundles_are_bounded_and_a_freed_place_is_reused() {
        let pool = pool_with(unshared());
        let pems: Vec<String> = (0..MAX_BUNDLE_CLIENTS)
            .map(|i| crate::oauth::trust::tests::ca(&format!("ca-{i}")))
            .collect();
        let held: Vec<_> = pems
            .iter()
            .map(|pem| {
                let bundle = CaBundle::parse(pem.as_bytes(), "ConfigMap ca").unwrap();
                get(&pool, &Trust::Bundle(bundle)).unwrap()
            })
            .collect();
        let default = get(&pool, &Trust::Default).unwrap();
        // One more distinct bundle is refused, with a message that says what to do.
        let refused = get(&pool, &Trust::Bundle(bundle("one-too-many"))).unwrap_err();
        assert!(matches!(
            refused,
            PoolError::Full {
                clients: MAX_BUNDLE_CLIENTS,
                limit: MAX_BUNDLE_CLIENTS,
                ..
            }
        ));
        assert!(refused.to_string().contains("same bundle"), "{refused}");
        // A bundle already in use is still shared, and the default trust is never refused.
        let again = CaBundle::parse(pems[0].as_bytes(), "ConfigMap again").unwrap();
        assert!(Arc::ptr_eq(
            &get(&pool, &Trust::Bundle(again)).unwrap(),
            &held[0]
        ));
        assert!(Arc::ptr_eq(&get(&pool, &Trust::Default).unwrap(), &default));
        // Dropping one frees its place.
        let mut held = held;
        held.pop();
        assert!(get(&pool, &Trust::Bundle(bundle("now-fits"))).is_ok());
    }

    #[test]
    fn the_certificates_of_bundle_clients_are_bounded_too() {
        let pool = pool_with(unshared());
        let per = crate::oauth::trust::MAX_BUNDLE_CERTIFICATES;
        // One CA's certificate re-issued: distinct certificates, cheap to make.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = |i: usize, j: usize| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("ca-{i}-{j}"));
            params.self_signed(&key).unwrap().pem()
        };
        let big = |i: usize| {
            let pem: String = (0..per).map(|j| cert(i, j)).collect();
            CaBundle::parse(pem.as_bytes(), "ConfigMap big").unwrap()
        };
        let fits = MAX_POOLED_ANCHORS / per;
        let held: Vec<_> = (0..fits)
            .map(|i| get(&pool, &Trust::Bundle(big(i))).unwrap())
            .collect();
        let refused = get(&pool, &Trust::Bundle(big(fits))).unwrap_err();
        assert!(
            matches!(refused, PoolError::Full { clients, anchors, .. } if clients == fits && anchors == fits * per),
            "{refused}"
        );
        // A small bundle still fits in what is left, if anything is.
        let left = MAX_POOLED_ANCHORS - fits * per;
        assert_eq!(
            get(&pool, &Trust::Bundle(bundle("small"))).is_ok(),
            left >= 1
        );
        drop(held);
        assert!(get(&pool, &Trust::Bundle(big(0))).is_ok());
    }

    /// Security round three, item 3: one namespace naming 256 distinct bundles holds only its
    /// share, and another namespace's first bundle is still served; bundle clients held for a
    /// namespace count once however many of its OAuthClients use them.
    #[test]
    fn one_namespace_reaching_its_share_of_bundles_fails_only_its_own_clients() {
        let pool = pool();
        let share = PoolLimits::default().bundles_per_namespace;
        let mut held = Vec::new();
        let mut refused = None;
        for i in 0..MAX_BUNDLE_CLIENTS {
            let trust = Trust::Bundle(bundle(&format!("tenant-{i}")));
            match pool.get(&trust, "noisy") {
                Ok(claimed) => held.push(claimed),
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
        }
        let (at, error) = refused.expect("the namespace's share is bounded");
        assert_eq!(at, share);
        let message = error.to_string();
        assert!(
            message.contains("namespace noisy")
                && message.contains("--max-ca-bundles-per-namespace=64")
                && message.contains("only this namespace's clients are refused"),
            "{message}"
        );
        // Another namespace's first bundle is served, and so is a bundle the noisy namespace
        // already holds.
        assert!(pool.get(&Trust::Bundle(bundle("quiet")), "quiet").is_ok());
        // The noisy namespace's clients freed: its share is free again.
        held.clear();
        assert!(pool.get(&Trust::Bundle(bundle("later")), "noisy").is_ok());
    }

    #[test]
    fn identity_clients_are_bounded_in_all_and_per_namespace_and_share_one_verifier_per_bundle() {
        let limits = PoolLimits {
            identities: 3,
            identities_per_namespace: 2,
            ..PoolLimits::default()
        };
        let pool = pool_with(limits);
        let corp = Trust::Bundle(bundle("corp"));
        let identities = [
            identity("ec-p256-sec1.pem", "ec-p256.crt"),
            identity("rsa-pkcs8.pem", "rsa.crt"),
            identity("ec-p384-sec1.pem", "ec-p384.crt"),
            identity("ed25519-pkcs8.pem", "ed25519.crt"),
        ];
        let a = pool
            .get_with_identity(&corp, &identities[0], "team-a")
            .unwrap();
        let b = pool
            .get_with_identity(&corp, &identities[1], "team-a")
            .unwrap();
        // The same identity again in the same namespace: shared, not counted twice.
        let a2 = pool
            .get_with_identity(&corp, &identities[0], "team-a")
            .unwrap();
        assert!(Arc::ptr_eq(&a.0, &a2.0));
        let refused = pool
            .get_with_identity(&corp, &identities[2], "team-a")
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("--max-tls-identities-per-namespace=2"),
            "{refused}"
        );
        // Another namespace is not refused by team-a's share, but by the global bound.
        let c = pool
            .get_with_identity(&corp, &identities[2], "team-b")
            .unwrap();
        let refused = pool
            .get_with_identity(&corp, &identities[3], "team-b")
            .unwrap_err();
        assert!(
            matches!(
                refused,
                PoolError::IdentitiesFull {
                    identities: 3,
                    limit: 3,
                    ..
                }
            ),
            "{refused}"
        );
        // Every identity client of the bundle verifies with one shared root store.
        assert_eq!(pool.bundle_verifiers(), 1);
        drop((a, a2, b, c));
        assert_eq!(
            pool.bundle_verifiers(),
            0,
            "dropped with its last identity client"
        );
    }
}
