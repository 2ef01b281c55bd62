//! Where credentials may be sent: the operator's token URL policy.
//!
//! Anyone who can create an OAuthClient chooses the URL the operator POSTs client credentials
//! to. Without a policy that is a server-side request forgery: a `tokenUrl` of
//! `http://169.254.169.254/...` would make the operator talk to the node's cloud metadata
//! service. Two operator flags bound it:
//!
//! * `--token-url-deny-cidrs` (default [`DEFAULT_DENY_CIDRS`]: IPv4 and IPv6 link-local, the
//!   AWS IPv6 metadata address, Alibaba Cloud's metadata address and Azure's WireServer)
//!   refuses every address in those networks. The check applies to the **resolved** addresses
//!   of each connection (a DNS resolver that drops denied addresses, so DNS rebinding cannot
//!   slip past it), to IP literals in the URL and, when a proxy is used, to the operator's own
//!   resolution of the host before anything is sent to the proxy (see [`crate::oauth::transport`]).
//! * [`ALWAYS_DENIED`] (`0.0.0.0/8`, `::/128`: "this host", which connects to loopback) is
//!   refused whatever the flag says, even when it is empty.
//! * IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
//!   `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and `64:ff9b:1::a.b.c.d`) are checked as that IPv4
//!   address too, so
//!   `::ffff:127.0.0.1` is refused wherever `127.0.0.0/8` is.
//! * `--token-url-allow-hosts` (default: any host), when set, allows only the listed host
//!   names (`idp.example.com`, or `*.example.com` for any subdomain).
//!
//! A refused URL is an `InvalidSpec` failure naming the rule; no request is sent.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use url::{Host, Url};

use crate::api::reason::Failure;

/// The default of `--token-url-deny-cidrs`: link-local (which holds the cloud metadata
/// services' 169.254.169.254), the AWS IPv6 metadata address, Alibaba Cloud's metadata address
/// (100.100.100.200) and Azure's WireServer (168.63.129.16).
///
/// Loopback and the private ranges (RFC 1918, unique-local IPv6) are not in it: identity
/// providers often run in the cluster (Keycloak at `keycloak.auth.svc`). Operators whose tenants
/// must not reach in-cluster services add those ranges to the flag (see SECURITY.md).
pub const DEFAULT_DENY_CIDRS: &str =
    "169.254.0.0/16,fe80::/10,fd00:ec2::254/128,100.100.100.200/32,168.63.129.16/32";

/// Networks refused whatever `--token-url-deny-cidrs` says: `0.0.0.0/8` and `::` mean "this
/// host" and a connection to them reaches loopback.
pub const ALWAYS_DENIED: &str = "0.0.0.0/8,::/128";

/// The NAT64 well-known prefix (RFC 6052): `64:ff9b::a.b.c.d` is the IPv4 address `a.b.c.d`.
const NAT64_PREFIX: [u16; 6] = [0x64, 0xff9b, 0, 0, 0, 0];

/// The IPv4 address an IPv6 address carries, if any: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, except `::` and `::1`, which are IPv6's own unspecified and
/// loopback addresses) and NAT64 (`64:ff9b::a.b.c.d`).
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = v6.segments();
    let low = Ipv4Addr::from(u128::from(v6) as u32);
    if segments[..6] == [0; 6] {
        return (u32::from(low) > 1).then_some(low);
    }
    // The well-known prefix, and the /96 form of the local-use prefix 64:ff9b:1::/48 (RFC
    // 8215), which NAT64 deployments use the same way.
    let local_use = segments[..3] == [0x64, 0xff9b, 1] && segments[3..6] == [0; 3];
    (segments[..6] == NAT64_PREFIX || local_use).then_some(low)
}

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
    always: Vec<IpNet>,
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
            always: ALWAYS_DENIED.parse::<CidrList>().expect("valid constant").0,
            allow_hosts,
        }
    }

    /// A policy with no `--token-url-deny-cidrs` and no allow list (tests of other concerns).
    /// [`ALWAYS_DENIED`] still applies.
    pub fn permissive() -> Self {
        TokenUrlPolicy::new(CidrList::default(), Vec::new())
    }

    /// The network that refuses `ip`, if any: [`ALWAYS_DENIED`] or `--token-url-deny-cidrs`.
    /// An IPv6 address that carries an IPv4 address ([`embedded_ipv4`]) is refused when either
    /// form is.
    pub fn denying_network(&self, ip: IpAddr) -> Option<IpNet> {
        self.denial(ip).map(|(net, _)| net)
    }

    /// The refusing network and whether it is one of [`ALWAYS_DENIED`].
    fn denial(&self, ip: IpAddr) -> Option<(IpNet, bool)> {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let forms: Vec<IpAddr> = std::iter::once(ip).chain(embedded).collect();
        let find = |nets: &[IpNet]| {
            nets.iter()
                .copied()
                .find(|net| forms.iter().any(|form| net.contains(form)))
        };
        find(&self.always)
            .map(|net| (net, true))
            .or_else(|| find(&self.deny).map(|net| (net, false)))
    }

    /// Whether `--token-url-allow-hosts` is set and names `host` (exactly or by a `*.domain`
    /// pattern). Such an explicit allow list is what lets a host that cannot be resolved
    /// locally go through a proxy.
    pub fn names_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow_hosts.iter().any(|p| p.matches(&host))
    }

    /// The refusal of `ip` for `host`, if the policy refuses it.
    pub fn refusal(&self, host: &str, ip: IpAddr) -> Option<DeniedAddress> {
        self.denial(ip).map(|(net, always)| DeniedAddress {
            host: host.to_owned(),
            ip,
            net,
            always,
        })
    }

    /// Checks what the URL itself shows: its host against `--token-url-allow-hosts`, and an IP
    /// literal against `--token-url-deny-cidrs`. Names are checked again once resolved (see
    /// [`crate::oauth::transport::resolver::PolicyResolver`]).
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
            && let Some(denied) = self.refusal(&host, ip)
        {
            return Err(denied.failure());
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
            .filter(|addr| match self.refusal(host, addr.ip()) {
                Some(denied) => {
                    refused.get_or_insert(denied);
                    false
                }
                None => true,
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(denied)) => Err(denied),
            _ => Ok(allowed),
        }
    }

    /// Checks every address, refusing when **any** is denied: for a connection the operator
    /// does not make itself (a proxy's), which cannot be kept to the allowed addresses.
    pub fn check_all(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), DeniedAddress> {
        match addrs.iter().find_map(|addr| self.refusal(host, addr.ip())) {
            Some(denied) => Err(denied),
            None => Ok(()),
        }
    }
}

/// Every address of a token endpoint is in a denied network (through a proxy: any address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeniedAddress {
    /// The host name of the URL.
    pub host: String,
    /// The first refused address.
    pub ip: IpAddr,
    /// The network that refused it.
    pub net: IpNet,
    /// Whether the network is one of [`ALWAYS_DENIED`] rather than from the flag.
    pub always: bool,
}

impl fmt::Display for DeniedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let DeniedAddress { host, ip, net, .. } = self;
        if self.always {
            write!(
                f,
                "spec.tokenUrl host {host} resolves to {ip}, which the operator always refuses ({net} means this host, which reaches loopback, whatever --token-url-deny-cidrs says); credentials are not sent there"
            )
        } else {
            write!(
                f,
                "spec.tokenUrl host {host} resolves to {ip}, which the operator's --token-url-deny-cidrs refuses ({net}); credentials are not sent there"
            )
        }
    }
}

impl std::error::Error for DeniedAddress {}

impl DeniedAddress {
    /// The failure reported for it.
    pub fn failure(&self) -> Failure {
        Failure::invalid_spec(self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::reason::Reason;

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

    fn empty() -> TokenUrlPolicy {
        TokenUrlPolicy::new("".parse().unwrap(), Vec::new())
    }

    fn denying(cidrs: &str) -> TokenUrlPolicy {
        TokenUrlPolicy::new(cidrs.parse().unwrap(), Vec::new())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn this_host_is_always_denied_even_with_an_empty_list() {
        for policy in [
            empty(),
            TokenUrlPolicy::permissive(),
            TokenUrlPolicy::default(),
        ] {
            for addr in [
                "0.0.0.0",
                "0.1.2.3",
                "0.255.255.255",
                "::",
                "::ffff:0.0.0.0",
                "64:ff9b::",
            ] {
                let denied = policy.refusal("h", ip(addr)).expect(addr);
                assert!(denied.always, "{addr}");
                assert!(denied.to_string().contains("always refuses"), "{denied}");
            }
            // The literal forms in a URL, including the shorthand `http://0/`.
            for text in [
                "http://0.0.0.0:8080/token",
                "http://0/token",
                "http://[::]:8080/token",
                "http://[::ffff:0.0.0.0]/token",
            ] {
                let f = policy.check_url(&url(text)).unwrap_err();
                assert_eq!(f.reason, Reason::InvalidSpec, "{text}");
            }
            assert_eq!(policy.denying_network(ip("1.0.0.0")), None);
        }
        let err = empty()
            .filter("zero.example", vec![sock("0.0.0.0")])
            .unwrap_err();
        assert_eq!(err.net, "0.0.0.0/8".parse::<IpNet>().unwrap());
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_checked_as_ipv4() {
        let policy = denying("127.0.0.0/8");
        for addr in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::127.0.0.1",
            "::7f00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::7f00:1",
        ] {
            assert_eq!(
                policy.denying_network(ip(addr)),
                Some("127.0.0.0/8".parse().unwrap()),
                "{addr} must be checked as 127.0.0.1"
            );
            assert!(!policy.refusal("h", ip(addr)).unwrap().always);
        }
        for text in [
            "http://[::ffff:127.0.0.1]:8080/t",
            "http://[::127.0.0.1]:8080/t",
            "http://[64:ff9b::7f00:1]:8080/t",
        ] {
            let f = policy.check_url(&url(text)).unwrap_err();
            assert!(f.message.contains("127.0.0.0/8"), "{text}: {}", f.message);
        }
        // `::1` is IPv6 loopback, not the IPv4-compatible 0.0.0.1: only an IPv6 rule denies it.
        assert_eq!(embedded_ipv4(ip6("::1")), None);
        assert_eq!(embedded_ipv4(ip6("::")), None);
        assert_eq!(policy.denying_network(ip("::1")), None);
        assert_eq!(
            denying("::1").denying_network(ip("::1")),
            Some("::1/128".parse().unwrap())
        );
        assert_eq!(denying("0.0.0.1").denying_network(ip("::1")), None);
        // Other IPv6 addresses carry no IPv4 address.
        for addr in [
            "2001:db8::7f00:1",
            "64:ff9b:1:1::7f00:1",
            "::1:7f00:1",
            "fe80::7f00:1",
        ] {
            assert_eq!(embedded_ipv4(ip6(addr)), None, "{addr}");
            assert_eq!(policy.denying_network(ip(addr)), None, "{addr}");
        }
        // The metadata address in each IPv6 form, under the default policy.
        let default = TokenUrlPolicy::default();
        for addr in [
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert_eq!(
                default.denying_network(ip(addr)),
                Some("169.254.0.0/16".parse().unwrap()),
                "{addr}"
            );
        }
        // An IPv6 rule still applies to the IPv6 form itself.
        assert!(
            denying("::ffff:0:0/96")
                .denying_network(ip("::ffff:10.0.0.1"))
                .is_some()
        );
    }

    #[test]
    fn new_default_metadata_addresses() {
        let policy = TokenUrlPolicy::default();
        for (addr, net) in [
            ("100.100.100.200", "100.100.100.200/32"),
            ("168.63.129.16", "168.63.129.16/32"),
            ("::ffff:100.100.100.200", "100.100.100.200/32"),
            ("64:ff9b::a83f:8110", "168.63.129.16/32"),
        ] {
            assert_eq!(
                policy.denying_network(ip(addr)),
                Some(net.parse().unwrap()),
                "{addr}"
            );
        }
        for addr in ["100.100.100.201", "168.63.129.17", "100.64.0.1"] {
            assert_eq!(policy.denying_network(ip(addr)), None, "{addr}");
        }
        assert_eq!(
            DEFAULT_DENY_CIDRS.parse::<CidrList>().unwrap().to_string(),
            DEFAULT_DENY_CIDRS
        );
    }

    #[test]
    fn check_all_refuses_when_any_address_is_denied() {
        let policy = denying("169.254.0.0/16");
        assert!(
            policy
                .check_all("h", &[sock("10.0.0.1"), sock("8.8.8.8")])
                .is_ok()
        );
        let err = policy
            .check_all("h", &[sock("8.8.8.8"), sock("169.254.169.254")])
            .unwrap_err();
        assert_eq!(err.ip, ip("169.254.169.254"));
        assert!(policy.check_all("h", &[]).is_ok());
    }

    #[test]
    fn names_host_only_with_an_allow_list() {
        assert!(!TokenUrlPolicy::default().names_host("idp.example.com"));
        let policy = TokenUrlPolicy::new(
            CidrList::default(),
            vec![
                "idp.example.com".parse().unwrap(),
                "*.corp.example".parse().unwrap(),
            ],
        );
        assert!(policy.names_host("idp.example.com"));
        assert!(policy.names_host("IDP.example.com."));
        assert!(policy.names_host("a.corp.example"));
        assert!(!policy.names_host("corp.example"));
        assert!(!policy.names_host("evil.example.com"));
    }

    fn ip6(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
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
