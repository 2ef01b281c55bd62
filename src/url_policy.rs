//! Where credentials may be sent: the operator's token URL policy.
//!
//! Anyone who can create an OAuthClient chooses the URL the operator POSTs client credentials
//! to. Without a policy that is a server-side request forgery: a `tokenUrl` of
//! `http://169.254.169.254/...` would make the operator talk to the node's cloud metadata
//! service. Two operator flags bound it:
//!
//! * `--token-url-deny-cidrs` (default [`DEFAULT_DENY_CIDRS`]: IPv4 and IPv6 link-local and the
//!   AWS IPv6 metadata address) refuses every address in those networks. The check applies to
//!   the **resolved** addresses of each connection (a DNS resolver that drops denied addresses,
//!   so DNS rebinding cannot slip past it) and to IP literals in the URL.
//! * `--token-url-allow-hosts` (default: any host), when set, allows only the listed host
//!   names (`idp.example.com`, or `*.example.com` for any subdomain).
//!
//! A refused URL is an `InvalidSpec` failure naming the rule; no request is sent.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use url::{Host, Url};

use crate::reason::Failure;

/// The default of `--token-url-deny-cidrs`: link-local (which holds the cloud metadata
/// services' 169.254.169.254) and the AWS IPv6 metadata address.
pub const DEFAULT_DENY_CIDRS: &str = "169.254.0.0/16,fe80::/10,fd00:ec2::254/128";

/// A list of networks, parsed from `a.b.c.d/n,x::/m,...` (a bare address is one host; an
/// empty string is the empty list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<IpNet>);

impl FromStr for CidrList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        format!("{s:?} is not a CIDR (e.g. 169.254.0.0/16) or an IP address")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(CidrList)
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// A host name allowed by `--token-url-allow-hosts`: exact, or `*.suffix` for any subdomain
/// of the suffix (not the suffix itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// This host exactly (lowercase).
    Exact(String),
    /// Any host ending in `.suffix` (lowercase, without the leading dot).
    Subdomains(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (pattern, name) = match text.strip_prefix("*.") {
            Some(suffix) => (
                HostPattern::Subdomains(suffix.to_owned()),
                suffix.to_owned(),
            ),
            None => (HostPattern::Exact(text.clone()), text.clone()),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if valid {
            Ok(pattern)
        } else {
            Err(format!(
                "{text:?} is not a host name or *.domain pattern (e.g. idp.example.com, *.example.com)"
            ))
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// The token URL policy: denied networks and, optionally, the only allowed hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenUrlPolicy {
    deny: Vec<IpNet>,
    allow_hosts: Vec<HostPattern>,
}

impl Default for TokenUrlPolicy {
    fn default() -> Self {
        TokenUrlPolicy::new(
            DEFAULT_DENY_CIDRS
                .parse::<CidrList>()
                .expect("valid default"),
            Vec::new(),
        )
    }
}

impl TokenUrlPolicy {
    /// A policy denying `deny` and, when `allow_hosts` is not empty, allowing only those hosts.
    pub fn new(deny: CidrList, allow_hosts: Vec<HostPattern>) -> Self {
        TokenUrlPolicy {
            deny: deny.0,
            allow_hosts,
        }
    }

    /// A policy that allows everything (tests of other concerns).
    pub fn permissive() -> Self {
        TokenUrlPolicy::new(CidrList::default(), Vec::new())
    }

    /// The network of `--token-url-deny-cidrs` that holds `ip`, if any. IPv4-mapped IPv6
    /// addresses (`::ffff:169.254.169.254`) are checked as the IPv4 address they carry.
    pub fn denying_network(&self, ip: IpAddr) -> Option<IpNet> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.deny.iter().copied().find(|net| net.contains(&ip))
    }

    /// Checks what the URL itself shows: its host against `--token-url-allow-hosts`, and an IP
    /// literal against `--token-url-deny-cidrs`. Names are checked again once resolved (see
    /// [`PolicyResolver`]).
    pub fn check_url(&self, url: &Url) -> Result<(), Failure> {
        let host = match url.host() {
            Some(Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
            Some(Host::Ipv4(v4)) => v4.to_string(),
            Some(Host::Ipv6(v6)) => v6.to_string(),
            None => return Err(Failure::invalid_spec("spec.tokenUrl has no host")),
        };
        if !self.allow_hosts.is_empty() && !self.allow_hosts.iter().any(|p| p.matches(&host)) {
            let allowed: Vec<String> = self.allow_hosts.iter().map(ToString::to_string).collect();
            return Err(Failure::invalid_spec(format!(
                "spec.tokenUrl host {host} is not allowed by the operator's --token-url-allow-hosts ({})",
                allowed.join(", ")
            )));
        }
        let literal = match url.host() {
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(ip) = literal
            && let Some(net) = self.denying_network(ip)
        {
            return Err(DeniedAddress { host, ip, net }.failure());
        }
        Ok(())
    }

    /// Keeps the addresses the policy allows; an error when none is left.
    pub fn filter(
        &self,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, DeniedAddress> {
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|addr| match self.denying_network(addr.ip()) {
                Some(net) => {
                    refused.get_or_insert((addr.ip(), net));
                    false
                }
                None => true,
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some((ip, net))) => Err(DeniedAddress {
                host: host.to_owned(),
                ip,
                net,
            }),
            _ => Ok(allowed),
        }
    }
}

/// Every address of a token endpoint is in a denied network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.tokenUrl host {host} resolves to {ip}, which the operator's --token-url-deny-cidrs refuses ({net}); credentials are not sent there"
)]
pub struct DeniedAddress {
    /// The host name of the URL.
    pub host: String,
    /// The first refused address.
    pub ip: IpAddr,
    /// The network that refused it.
    pub net: IpNet,
}

impl DeniedAddress {
    /// The failure reported for it.
    pub fn failure(&self) -> Failure {
        Failure::invalid_spec(self.to_string())
    }
}

/// The DNS resolver of the token transport: the system resolver, with the addresses the policy
/// denies removed. Because the check runs on the addresses the connection will use, a name
/// that resolves (or re-resolves, DNS rebinding) to a denied address is refused.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    policy: Arc<TokenUrlPolicy>,
}

impl PolicyResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<TokenUrlPolicy>) -> Self {
        PolicyResolver { policy }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = policy.filter(&host, addrs)?;
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Reason;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn sock(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 443)
    }

    #[test]
    fn default_denies_link_local_and_metadata_addresses() {
        let policy = TokenUrlPolicy::default();
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
        ] {
            assert!(
                policy.denying_network(ip.parse().unwrap()).is_some(),
                "{ip} should be denied"
            );
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "8.8.8.8",
            "fd00:ec2::253",
            "2001:db8::1",
        ] {
            assert_eq!(policy.denying_network(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn literal_addresses_in_the_url_are_checked() {
        let policy = TokenUrlPolicy::default();
        let failure = policy
            .check_url(&url("http://169.254.169.254/latest/meta-data/iam"))
            .unwrap_err();
        assert_eq!(failure.reason, Reason::InvalidSpec);
        assert!(
            failure.message.contains("169.254.0.0/16"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("--token-url-deny-cidrs"));
        assert!(policy.check_url(&url("https://[fd00:ec2::254]/")).is_err());
        assert!(
            policy
                .check_url(&url("https://[::ffff:a9fe:a9fe]/"))
                .is_err()
        );
        assert!(policy.check_url(&url("https://idp.example/token")).is_ok());
        assert!(policy.check_url(&url("https://10.1.2.3/token")).is_ok());
        assert!(
            TokenUrlPolicy::permissive()
                .check_url(&url("http://169.254.169.254/"))
                .is_ok()
        );
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let policy = TokenUrlPolicy::default();
        let kept = policy
            .filter("idp", vec![sock("169.254.169.254"), sock("10.0.0.7")])
            .unwrap();
        assert_eq!(kept, vec![sock("10.0.0.7")]);
        let err = policy
            .filter("rebind.example", vec![sock("169.254.169.254")])
            .unwrap_err();
        assert_eq!(err.ip, "169.254.169.254".parse::<IpAddr>().unwrap());
        assert!(err.to_string().contains("rebind.example"));
        assert_eq!(err.failure().reason, Reason::InvalidSpec);
        // Nothing resolved is not a policy matter (the connection fails as usual).
        assert_eq!(policy.filter("none", vec![]).unwrap(), vec![]);
    }

    #[test]
    fn allow_hosts_exact_and_subdomains() {
        let allow: Vec<HostPattern> = ["idp.example.com", "*.auth.example.org"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let policy = TokenUrlPolicy::new(CidrList::default(), allow);
        assert!(policy.check_url(&url("https://idp.example.com/t")).is_ok());
        assert!(policy.check_url(&url("https://IDP.Example.com./t")).is_ok());
        assert!(
            policy
                .check_url(&url("https://eu.auth.example.org/t"))
                .is_ok()
        );
        for denied in [
            "https://auth.example.org/t",
            "https://evilauth.example.org/t",
            "https://idp.example.com.evil.net/t",
            "https://10.0.0.1/t",
        ] {
            let f = policy.check_url(&url(denied)).unwrap_err();
            assert_eq!(f.reason, Reason::InvalidSpec);
            assert!(
                f.message.contains("--token-url-allow-hosts"),
                "{}",
                f.message
            );
        }
    }

    #[test]
    fn parsing_flags() {
        let list: CidrList = "169.254.0.0/16, 10.0.0.5 ,fd00:ec2::254".parse().unwrap();
        assert_eq!(
            list.to_string(),
            "169.254.0.0/16,10.0.0.5/32,fd00:ec2::254/128"
        );
        assert_eq!("".parse::<CidrList>().unwrap(), CidrList::default());
        assert_eq!(
            "10.0.0.1/8".parse::<CidrList>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!("10.0.0.0/33".parse::<CidrList>().is_err());
        assert!(
            "metadata"
                .parse::<CidrList>()
                .unwrap_err()
                .contains("not a CIDR")
        );
        assert!("*.example.com".parse::<HostPattern>().is_ok());
        assert!("https://idp.example.com".parse::<HostPattern>().is_err());
        assert!("*".parse::<HostPattern>().is_err());
        assert!("".parse::<HostPattern>().is_err());
    }
}
