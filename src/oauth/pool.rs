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
}

impl TrustedClient {
    /// `client`, named for messages as this one is (an identity client of the same trust).
    pub fn with_client(&self, client: Arc<PooledClient>) -> TrustedClient {
        TrustedClient {
            client,
            verified_against: self.verified_against.clone(),
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

/// The most clients of distinct CA bundles in use at once. A client costs about its bundle's
/// parsed anchors plus a connection pool (`cargo bench --bench trust_pool`: see
/// docs/performance.md), so this bounds what OAuthClients naming distinct bundles can make the
/// operator hold; OAuthClients sharing a bundle share one client and count once.
pub const MAX_BUNDLE_CLIENTS: usize = 256;

/// The most certificates the clients of distinct bundles hold between them. A client's memory
/// grows with its anchors (about 0.7 KiB each: a bundle of the Debian store's 145 certificates
/// costs about 105 KiB), so this bounds it to about 14 MiB whatever the bundles' sizes.
pub const MAX_POOLED_ANCHORS: usize = 20_000;

/// Why the pool has no client to give.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The HTTP client could not be built.
    #[error(transparent)]
    Build(TransportError),
    /// The TLS of a client identity could not be set up (mutual TLS).
    #[error("{}", .0.message)]
    Tls(Failure),
    /// [`MAX_BUNDLE_CLIENTS`] clients of distinct bundles are in use, or they hold
    /// [`MAX_POOLED_ANCHORS`] certificates with this one.
    #[error(
        "the operator already holds HTTP clients for {clients} distinct CA bundles with {anchors} certificates, and this one would pass its limit ({MAX_BUNDLE_CLIENTS} bundles, {MAX_POOLED_ANCHORS} certificates); OAuthClients that trust the same CA should name the same bundle (trust-manager distributes one into every namespace)"
    )]
    Full {
        /// Bundle clients in use.
        clients: usize,
        /// Their certificates.
        anchors: usize,
    },
}

/// The bundle clients in use and their certificates.
fn bundle_load(entries: &HashMap<ClientKey, Weak<PooledClient>>) -> (usize, usize) {
    entries
        .iter()
        .filter(|(key, _)| key.trust != TrustKey::Default && key.identity.is_none())
        .filter_map(|(_, client)| client.upgrade())
        .fold((0, 0), |(n, anchors), c| (n + 1, anchors + c.anchors))
}

/// The clients in use, by key.
#[derive(Debug)]
pub struct ClientPool {
    template: ClientTemplate,
    entries: Mutex<HashMap<ClientKey, Weak<PooledClient>>>,
    /// The default trust's verifier for identity clients, built when the first is.
    default_verifier: std::sync::OnceLock<Result<Arc<dyn ServerCertVerifier>, String>>,
}

impl ClientPool {
    /// An empty pool building clients from `template`.
    pub fn new(template: ClientTemplate) -> Self {
        ClientPool {
            template,
            entries: Mutex::default(),
            default_verifier: std::sync::OnceLock::new(),
        }
    }

    /// What its clients share.
    pub fn template(&self) -> &ClientTemplate {
        &self.template
    }

    /// The client for `trust`: the one in use if there is one, else a new one. A new client for
    /// a bundle is refused while [`MAX_BUNDLE_CLIENTS`] bundle clients are in use or when its
    /// certificates would take theirs past [`MAX_POOLED_ANCHORS`] (each client holds its
    /// parsed anchors: without a bound, OAuthClients naming distinct bundles would grow the
    /// operator's memory without end). The client is built outside the pool's lock, so that
    /// parsing a large bundle does not hold up the reconciles that need another one.
    pub fn get(&self, trust: &Trust) -> Result<Arc<PooledClient>, PoolError> {
        self.get_for(trust, None)
    }

    /// The client for `trust` that presents `identity` in the handshake (mutual TLS): one per
    /// distinct (trust, identity), shared by the OAuthClients that use the same certificate,
    /// never by two identities. Identity clients are not counted against the bundle limits
    /// (there is one per distinct certificate the cluster's Secrets hold).
    pub fn get_with_identity(
        &self,
        trust: &Trust,
        identity: &Identity,
    ) -> Result<Arc<PooledClient>, PoolError> {
        self.get_for(trust, Some(identity))
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
            Trust::Bundle(bundle) => mtls::bundle_verifier(bundle),
        };
        built.map_err(|e| {
            PoolError::Tls(Failure::new(
                crate::api::reason::Reason::EndpointUnavailable,
                e,
            ))
        })
    }

    fn get_for(
        &self,
        trust: &Trust,
        identity: Option<&Identity>,
    ) -> Result<Arc<PooledClient>, PoolError> {
        let key = ClientKey {
            trust: trust.key(),
            identity: identity.map(Identity::key),
        };
        {
            let entries = self.entries.lock().expect("client pool lock");
            if let Some(client) = entries.get(&key).and_then(Weak::upgrade) {
                return Ok(client);
            }
            if let (Trust::Bundle(bundle), None) = (trust, identity) {
                let (clients, anchors) = bundle_load(&entries);
                if clients >= MAX_BUNDLE_CLIENTS
                    || anchors + bundle.certificates().len() > MAX_POOLED_ANCHORS
                {
                    return Err(PoolError::Full { clients, anchors });
                }
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
            anchors: match trust {
                Trust::Default => 0,
                Trust::Bundle(bundle) => bundle.certificates().len(),
            },
        });
        let mut entries = self.entries.lock().expect("client pool lock");
        // Another reconcile may have built the same one meanwhile: use theirs.
        if let Some(client) = entries.get(&key).and_then(Weak::upgrade) {
            return Ok(client);
        }
        entries.retain(|_, client| client.strong_count() > 0);
        entries.insert(key, Arc::downgrade(&built));
        tracing::debug!(
            trust = %built.key.trust,
            mtls = built.key.identity.is_some(),
            clients = entries.len(),
            "built an HTTP client for token endpoints"
        );
        Ok(built)
    }

    /// A client for `trust`, named for messages.
    pub fn trusted(
        &self,
        trust: &Trust,
        verified_against: impl Into<Arc<str>>,
    ) -> Result<TrustedClient, PoolError> {
        Ok(TrustedClient {
            client: self.get(trust)?,
            verified_against: verified_against.into(),
        })
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
        ClientPool::new(ClientTemplate {
            timeout: Duration::from_secs(1),
            policy: Arc::default(),
            proxy: Arc::default(),
            proxy_hosts: Arc::default(),
            ca_file: None,
        })
    }

    fn bundle(name: &str) -> CaBundle {
        CaBundle::parse(crate::oauth::trust::tests::ca(name).as_bytes(), name).unwrap()
    }

    #[test]
    fn one_client_per_distinct_trust_shared_and_dropped_when_unused() {
        let pool = pool();
        let (a, b) = (bundle("a"), bundle("b"));
        let first = pool.get(&Trust::Bundle(a.clone())).unwrap();
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
        let shared = pool.get(&Trust::Bundle(same)).unwrap();
        assert!(Arc::ptr_eq(&first, &shared));
        let other = pool.get(&Trust::Bundle(b)).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        let default = pool.trusted(&Trust::Default, "the default").unwrap();
        assert_eq!(default.pooled().key().trust, TrustKey::Default);
        assert_eq!(pool.live(), 3);
        drop((first, shared));
        assert_eq!(pool.live(), 2, "a client nobody holds is gone");
        drop(other);
        // Dead entries are swept when a client is added.
        let again = pool.get(&Trust::Bundle(a)).unwrap();
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
        let plain = pool.get(&Trust::Default).unwrap();
        let a_default = pool.get_with_identity(&Trust::Default, &a).unwrap();
        let a_again = pool.get_with_identity(&Trust::Default, &a).unwrap();
        let b_default = pool.get_with_identity(&Trust::Default, &b).unwrap();
        let a_bundle = pool.get_with_identity(&bundle, &a).unwrap();
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
        assert_eq!(bundle_load(&pool.entries.lock().unwrap()).0, 0);
        assert_eq!(pool.live(), 4);
        drop((a_default, a_again));
        assert_eq!(pool.live(), 3, "an identity client nobody holds is gone");
    }

    #[test]
    fn clients_of_distinct_bundles_are_bounded_and_a_freed_place_is_reused() {
        let pool = pool();
        let pems: Vec<String> = (0..MAX_BUNDLE_CLIENTS)
            .map(|i| crate::oauth::trust::tests::ca(&format!("ca-{i}")))
            .collect();
        let held: Vec<_> = pems
            .iter()
            .map(|pem| {
                let bundle = CaBundle::parse(pem.as_bytes(), "ConfigMap ca").unwrap();
                pool.get(&Trust::Bundle(bundle)).unwrap()
            })
            .collect();
        let default = pool.get(&Trust::Default).unwrap();
        // One more distinct bundle is refused, with a message that says what to do.
        let refused = pool
            .get(&Trust::Bundle(bundle("one-too-many")))
            .unwrap_err();
        assert!(matches!(
            refused,
            PoolError::Full {
                clients: MAX_BUNDLE_CLIENTS,
                ..
            }
        ));
        assert!(refused.to_string().contains("same bundle"), "{refused}");
        // A bundle already in use is still shared, and the default trust is never refused.
        let again = CaBundle::parse(pems[0].as_bytes(), "ConfigMap again").unwrap();
        assert!(Arc::ptr_eq(
            &pool.get(&Trust::Bundle(again)).unwrap(),
            &held[0]
        ));
        assert!(Arc::ptr_eq(&pool.get(&Trust::Default).unwrap(), &default));
        // Dropping one frees its place.
        let mut held = held;
        held.pop();
        assert!(pool.get(&Trust::Bundle(bundle("now-fits"))).is_ok());
    }

    #[test]
    fn the_certificates_of_bundle_clients_are_bounded_too() {
        let pool = pool();
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
            .map(|i| pool.get(&Trust::Bundle(big(i))).unwrap())
            .collect();
        let refused = pool.get(&Trust::Bundle(big(fits))).unwrap_err();
        assert!(
            matches!(refused, PoolError::Full { clients, anchors } if clients == fits && anchors == fits * per),
            "{refused}"
        );
        // A small bundle still fits in what is left, if anything is.
        let left = MAX_POOLED_ANCHORS - fits * per;
        assert_eq!(pool.get(&Trust::Bundle(bundle("small"))).is_ok(), left >= 1);
        drop(held);
        assert!(pool.get(&Trust::Bundle(big(0))).is_ok());
    }
}
