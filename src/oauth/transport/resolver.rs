//! The DNS resolver of every token-endpoint client: the system resolver, with the addresses the
//! token URL policy ([`crate::spec::url_policy`]) denies removed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::spec::url_policy::TokenUrlPolicy;

/// The DNS resolver of the token transport: the system resolver, with the addresses the policy
/// denies removed. Because the check runs on the addresses the connection will use, a name
/// that resolves (or re-resolves, DNS rebinding) to a denied address is refused.
///
/// The configured proxies' own host names are resolved without the check: the operator's
/// administrator chose them (an in-cluster proxy in `10.0.0.0/8` must stay reachable when that
/// range is denied to tenants). The transport checks a token URL whose host is a proxy's name
/// itself before it connects.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    policy: Arc<TokenUrlPolicy>,
    exempt: Arc<HashSet<String>>,
}

impl PolicyResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<TokenUrlPolicy>) -> Self {
        PolicyResolver::with_exempt(policy, HashSet::new())
    }

    /// A resolver enforcing `policy` on every name except `exempt` (lowercase host names: the
    /// configured proxies).
    pub fn with_exempt(policy: Arc<TokenUrlPolicy>, exempt: HashSet<String>) -> Self {
        PolicyResolver {
            policy,
            exempt: Arc::new(exempt),
        }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        let exempt = self
            .exempt
            .contains(&host.trim_end_matches('.').to_ascii_lowercase());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = if exempt {
                addrs
            } else {
                policy.filter(&host, addrs)?
            };
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}
