//! The HTTP clients for token endpoints: one per distinct client configuration, shared by every
//! OAuthClient that uses it, dropped when none does.
//!
//! A configuration is a [`PoolKey`]: the trust anchors ([`TrustKey`]: the default trust, or a
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

use super::mtls;
use super::proxy::ProxyConfig;
use super::resolver::PolicyResolver;
use super::trust::{CaBundle, Trust, TrustKey};
use crate::api::reason::Failure;
use crate::oauth::identity::{Identity, IdentityKey};
use crate::spec::url_policy::TokenUrlPolicy;

/// What makes two pooled clients different.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The trust anchors.
    pub trust: TrustKey,
    /// The client certificate presented in the handshake (mutual TLS), if any.
    pub identity: Option<IdentityKey>,
}

/// One pooled reqwest client and what it was built for.
pub struct Pooled {
    key: PoolKey,
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

impl Pooled {
    /// What it was built for.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// The trust it verifies endpoints against.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    pub(super) fn reqwest(&self) -> &reqwest::Client {
        &self.client
    }
}

impl fmt::Debug for Pooled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("trust", &self.key.trust.to_string())
            .field("identity", &self.key.identity)
            .finish()
    }
}

/// A pooled client and `namespace`'s hold on it (counted against the namespace's share of the
/// bounds while anyone keeps it).
#[derive(Clone, Debug)]
pub struct Held {
    /// The client.
    pub pooled: Arc<Pooled>,
    /// The namespace's claim (none for the default trust without an identity).
    pub claim: Option<Arc<Claim>>,
}

/// An HTTP client could not be built (no usable TLS trust store, for instance).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(#[source] pub(crate) reqwest::Error);

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
            // HTTP/2 flow control: an endpoint can send no more than 64 KiB of a body (1 MiB on
            // a connection) before it is read, so unread answers of stalled requests stay small
            // (hyper's defaults are 2 and 5 MiB).
            .http2_initial_stream_window_size(64 * 1024)
            .http2_initial_connection_window_size(1024 * 1024)
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
        builder.build().map_err(|e| PoolError::Build(BuildError(e)))
    }

    /// How messages name the default trust.
    pub fn default_trust_description(&self) -> String {
        match &self.ca_file {
            Some(extra) => format!("the system trust store and {}", extra.origin()),
            None => "the system trust store".to_owned(),
        }
    }
}

fn certificates(bundle: &CaBundle) -> Result<Vec<reqwest::Certificate>, BuildError> {
    bundle
        .certificates()
        .iter()
        .map(|der| reqwest::Certificate::from_der(der.as_ref()).map_err(BuildError))
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
    Build(BuildError),
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

impl PoolKey {
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
fn load(entries: &HashMap<PoolKey, Weak<Pooled>>, bound: Bound) -> (usize, usize, usize) {
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
    template: Arc<ClientTemplate>,
    limits: PoolLimits,
    entries: Mutex<HashMap<PoolKey, Weak<Pooled>>>,
    /// Which namespaces hold which clients (the per-namespace shares of the bounds).
    claims: Mutex<HashMap<(String, PoolKey), Weak<Claim>>>,
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
            template: Arc::new(template),
            limits,
            entries: Mutex::default(),
            claims: Mutex::default(),
            default_verifier: std::sync::OnceLock::new(),
            bundle_verifiers: Mutex::default(),
        }
    }

    /// What its clients share.
    pub fn template(&self) -> &Arc<ClientTemplate> {
        &self.template
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
        key: &PoolKey,
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
        let held: Vec<&PoolKey> = claims
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

    /// The client for `trust`, presenting `identity` in the handshake when there is one (mutual
    /// TLS), held for `namespace`: the one in use if there is one, else a new one.
    ///
    /// A new client for a bundle is refused while `--max-ca-bundles` bundle clients are in use
    /// or when its certificates would take theirs past [`MAX_POOLED_ANCHORS`], and when the
    /// namespace holds its share of either (each client holds its parsed anchors: without a
    /// bound, OAuthClients naming distinct bundles would grow the operator's memory without
    /// end). Identity clients are one per distinct (trust, identity), shared by the OAuthClients
    /// that use the same certificate, never by two identities; bounded by
    /// `--max-tls-identities` and the namespace's share, and those of one trust share its
    /// verifier (one root store per bundle). A client is built outside the pool's lock, so that
    /// parsing a large bundle does not hold up the reconciles that need another one.
    pub fn get(
        &self,
        trust: &Trust,
        identity: Option<&Identity>,
        namespace: &str,
    ) -> Result<Held, PoolError> {
        let key = PoolKey {
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
                return Ok(Held {
                    pooled: client,
                    claim,
                });
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
        let built = Arc::new(Pooled {
            client: self.template.build(trust, tls)?,
            key: key.clone(),
            trust: trust.clone(),
            anchors,
            bytes,
        });
        let mut entries = self.entries.lock().expect("client pool lock");
        // Another reconcile may have built the same one meanwhile: use theirs.
        if let Some(client) = entries.get(&key).and_then(Weak::upgrade) {
            return Ok(Held {
                pooled: client,
                claim,
            });
        }
        entries.retain(|_, client| client.strong_count() > 0);
        entries.insert(key, Arc::downgrade(&built));
        tracing::debug!(
            trust = %built.key.trust,
            mtls = built.key.identity.is_some(),
            clients = entries.len(),
            "built an HTTP client for token endpoints"
        );
        Ok(Held {
            pooled: built,
            claim,
        })
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
mod tests;
