//! Proxies for token requests, from the environment: `https_proxy` / `HTTPS_PROXY`,
//! `http_proxy` / `HTTP_PROXY` and `no_proxy` / `NO_PROXY`.
//!
//! The operator reads these itself instead of letting reqwest do it, because the token URL
//! policy must be applied to the token host before anything is sent to a proxy: a proxy
//! resolves the name on its own, so the transport's DNS resolver would only ever see the
//! proxy's name (see [`crate::oauth::transport`]).
//!
//! * The lowercase variable wins when both spellings are set; a variable that is empty (or
//!   only spaces) counts as unset.
//! * `https_proxy` serves `https://` token URLs, `http_proxy` serves `http://` ones. A value
//!   without a scheme is taken as `http://`; `http://` and `https://` proxies are supported.
//! * Userinfo (`http://user:pass@proxy:3128`) becomes the `Proxy-Authorization` header and is
//!   never shown: [`ProxyServer`]'s `Display` and `Debug` print the proxy without it.
//! * A value that is not a usable proxy URL does not stop the operator: token requests that
//!   would use it fail with `EndpointUnavailable` saying which variable is wrong (never its
//!   value, which may hold a password), rather than silently going direct.
//! * [`NoProxy`] holds the `no_proxy` rules.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use percent_encoding::percent_decode_str;
use url::{Host, Url};

use crate::base::{REDACTED, Sensitive};

/// The proxy configuration of the token transport.
#[derive(Clone, Debug, Default)]
pub struct ProxyConfig {
    https: Option<Setting>,
    http: Option<Setting>,
    no_proxy: NoProxy,
}

/// One proxy variable, parsed.
#[derive(Clone, Debug)]
enum Setting {
    Server(ProxyServer),
    Unusable(Unusable),
}

/// A proxy variable whose value cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unusable {
    /// The variable, as spelled in the environment (`HTTPS_PROXY`, `https_proxy`, ...).
    pub variable: &'static str,
    /// What is wrong with it (never the value itself).
    pub problem: String,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the environment variable {} is not a usable proxy URL ({})",
            self.variable, self.problem
        )
    }
}

/// Where a token request goes.
#[derive(Clone, Copy, Debug)]
pub enum Route<'a> {
    /// Straight to the token endpoint.
    Direct,
    /// Through this proxy.
    Proxy(&'a ProxyServer),
    /// A proxy is configured for the URL's scheme but its value cannot be used.
    Unusable(&'a Unusable),
}

/// A proxy server: its URL without userinfo, and the credentials that were in it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyServer {
    variable: &'static str,
    url: Url,
    credentials: Option<Sensitive<(String, String)>>,
}

impl ProxyServer {
    /// Parses the value of `variable`.
    pub fn parse(variable: &'static str, value: &str) -> Result<Self, Unusable> {
        let unusable = |problem: String| Unusable { variable, problem };
        let value = value.trim();
        let text = if value.contains("://") {
            value.to_owned()
        } else {
            format!("http://{value}")
        };
        // url::ParseError never repeats the input, so the message cannot carry a password.
        let mut url = Url::parse(&text).map_err(|e| unusable(e.to_string()))?;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(unusable(format!(
                    "{other}:// proxies are not supported; use http:// or https://"
                )));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(unusable("no host".into()));
        }
        let decode = |text: &str| {
            percent_decode_str(text)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| unusable("the userinfo is not UTF-8 once percent-decoded".into()))
        };
        let credentials = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let user = decode(url.username())?;
            let password = decode(url.password().unwrap_or(""))?;
            Some(Sensitive::new((user, password)))
        };
        // Setting these cannot fail on an http(s) URL with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_path("/");
        url.set_query(None);
        url.set_fragment(None);
        Ok(ProxyServer {
            variable,
            url,
            credentials,
        })
    }

    /// The proxy's URL without userinfo (what reqwest is given).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The variable the proxy came from.
    pub fn variable(&self) -> &'static str {
        self.variable
    }

    /// The user name and password of the proxy URL, if it had any. Callers must not log them.
    pub fn credentials(&self) -> Option<&Sensitive<(String, String)>> {
        self.credentials.as_ref()
    }

    /// The proxy's host name, lowercase (`None` for an IP address).
    pub fn host_name(&self) -> Option<String> {
        match self.url.host() {
            Some(Host::Domain(name)) => Some(name.trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        }
    }

    /// `host:port` of the proxy (IPv6 in brackets).
    pub fn authority(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port_or_known_default().unwrap_or(80);
        format!("{host}:{port}")
    }
}

/// `http://proxy:3128`, never the userinfo.
impl fmt::Display for ProxyServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.url.scheme(), self.authority())
    }
}

impl fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyServer")
            .field("variable", &self.variable)
            .field("url", &self.to_string())
            .field("credentials", &self.credentials.as_ref().map(|_| REDACTED))
            .finish()
    }
}

impl ProxyConfig {
    /// No proxy: every request goes direct.
    pub fn none() -> Self {
        ProxyConfig::default()
    }

    /// The configuration the process environment describes (used by `run` and `exchange`).
    pub fn from_env() -> Self {
        ProxyConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// The configuration described by the variables `lookup` returns (tests inject them here
    /// instead of changing the process environment).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let pick = |lower: &'static str, upper: &'static str| {
            [lower, upper].into_iter().find_map(|name| {
                lookup(name)
                    .filter(|value| !value.trim().is_empty())
                    .map(|value| (name, value))
            })
        };
        let setting = |lower, upper| {
            pick(lower, upper).map(
                |(variable, value)| match ProxyServer::parse(variable, &value) {
                    Ok(server) => Setting::Server(server),
                    Err(unusable) => Setting::Unusable(unusable),
                },
            )
        };
        ProxyConfig {
            https: setting("https_proxy", "HTTPS_PROXY"),
            http: setting("http_proxy", "HTTP_PROXY"),
            no_proxy: pick("no_proxy", "NO_PROXY")
                .map(|(_, value)| NoProxy::parse(&value))
                .unwrap_or_default(),
        }
    }

    /// Where a request to `url` goes: the proxy for its scheme unless `no_proxy` matches it.
    pub fn route(&self, url: &Url) -> Route<'_> {
        let setting = match url.scheme() {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        };
        match setting {
            None => Route::Direct,
            Some(_) if self.no_proxy.matches(url) => Route::Direct,
            Some(Setting::Server(server)) => Route::Proxy(server),
            Some(Setting::Unusable(unusable)) => Route::Unusable(unusable),
        }
    }

    /// The configured proxies' host names, lowercase (their addresses are not subject to the
    /// token URL policy: the operator's administrator chose them).
    pub fn proxy_host_names(&self) -> HashSet<String> {
        self.servers().filter_map(ProxyServer::host_name).collect()
    }

    /// Whether any proxy is configured (usable or not).
    pub fn is_empty(&self) -> bool {
        self.https.is_none() && self.http.is_none()
    }

    /// The problems to report at start-up: unusable variables and `no_proxy` entries ignored.
    pub fn warnings(&self) -> Vec<String> {
        let unusable = [&self.https, &self.http]
            .into_iter()
            .flatten()
            .filter_map(|setting| match setting {
                Setting::Unusable(u) => Some(u.to_string()),
                Setting::Server(_) => None,
            });
        let ignored = self.no_proxy.ignored.iter().map(|entry| {
            format!("no_proxy entry {entry:?} is not a host name, address or CIDR; it is ignored")
        });
        unusable.chain(ignored).collect()
    }

    /// The reqwest proxies for this configuration: one per usable variable, each deciding by
    /// [`ProxyConfig::route`], so that reqwest and the transport's own check always agree.
    pub fn reqwest_proxies(&self) -> Vec<reqwest::Proxy> {
        let mut proxies = Vec::new();
        for server in self.servers() {
            let config = self.clone();
            let wanted = server.clone();
            let mut proxy =
                reqwest::Proxy::custom(move |target: &Url| match config.route(target) {
                    Route::Proxy(chosen) if *chosen == wanted => Some(wanted.url.clone()),
                    _ => None,
                });
            if let Some(credentials) = server.credentials() {
                let (user, password) = credentials.expose();
                proxy = proxy.basic_auth(user, password);
            }
            proxies.push(proxy);
        }
        proxies
    }

    fn servers(&self) -> impl Iterator<Item = &ProxyServer> {
        [&self.https, &self.http]
            .into_iter()
            .flatten()
            .filter_map(|setting| match setting {
                Setting::Server(server) => Some(server),
                Setting::Unusable(_) => None,
            })
    }
}

/// A summary for the start-up log: `https via http://proxy:3128 (HTTPS_PROXY), http direct,
/// 3 no_proxy rules`.
impl fmt::Display for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let describe = |scheme: &str, setting: &Option<Setting>| match setting {
            None => format!("{scheme} direct"),
            Some(Setting::Server(server)) => {
                format!("{scheme} via {server} ({})", server.variable)
            }
            Some(Setting::Unusable(u)) => format!("{scheme} refused ({} unusable)", u.variable),
        };
        write!(
            f,
            "{}, {}, {} no_proxy rules",
            describe("https", &self.https),
            describe("http", &self.http),
            self.no_proxy.len()
        )
    }
}

// === impl NoProxy ===

/// The `no_proxy` rules: requests they match go direct.
///
/// Entries are comma-separated (spaces around them ignored):
///
/// * `*` matches every host;
/// * a host name matches itself and its subdomains, on label boundaries, with or without a
///   leading `.` (or `*.`): `example.com` and `.example.com` both match `example.com` and
///   `a.example.com`, never `badexample.com`;
/// * an IP address or CIDR range (`10.0.0.0/8`, `fd00::/8`) matches a URL whose host is an IP
///   literal in it (names are not resolved for this);
/// * any of these with `:port` (`[v6]:port` for IPv6) matches only that port, the URL's port
///   being the scheme's default (443, 80) when it has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    rules: Vec<NoProxyRule>,
    ignored: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct NoProxyRule {
    target: NoProxyTarget,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum NoProxyTarget {
    /// A host name and its subdomains (lowercase, without leading or trailing dots).
    Domain(String),
    /// An address or network.
    Network(IpNet),
}

impl NoProxy {
    /// Parses a `no_proxy` value. Entries that fit no rule are kept aside (see
    /// [`ProxyConfig::warnings`]) and match nothing.
    pub fn parse(text: &str) -> Self {
        let mut no_proxy = NoProxy::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no_proxy.all = true;
            } else if let Some(rule) = NoProxyRule::parse(entry) {
                no_proxy.rules.push(rule);
            } else {
                no_proxy.ignored.push(entry.to_owned());
            }
        }
        no_proxy
    }

    /// Whether a request to `url` bypasses the proxy.
    pub fn matches(&self, url: &Url) -> bool {
        if self.all {
            return true;
        }
        let Some(port) = url.port_or_known_default() else {
            return false;
        };
        let host = match url.host() {
            Some(Host::Domain(name)) => {
                UrlHost::Name(name.trim_end_matches('.').to_ascii_lowercase())
            }
            Some(Host::Ipv4(v4)) => UrlHost::Ip(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => UrlHost::Ip(IpAddr::V6(v6).to_canonical()),
            None => return false,
        };
        self.rules.iter().any(|rule| rule.matches(&host, port))
    }

    /// The number of rules (`*` counts as one).
    pub fn len(&self) -> usize {
        self.rules.len() + usize::from(self.all)
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

enum UrlHost {
    Name(String),
    Ip(IpAddr),
}

impl NoProxyRule {
    fn parse(entry: &str) -> Option<Self> {
        // `[v6]`, `[v6]:port`, `[v6/len]:port`
        if let Some(rest) = entry.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(parse_port(after.strip_prefix(':')?)?),
            };
            return Some(NoProxyRule {
                target: NoProxyTarget::Network(parse_network(inside)?),
                port,
            });
        }
        // A bare address or network, IPv6 ones included (their colons are not a port).
        if let Some(net) = parse_network(entry) {
            return Some(NoProxyRule {
                target: NoProxyTarget::Network(net),
                port: None,
            });
        }
        let (head, port) = match entry.split_once(':') {
            Some((head, port)) => (head, Some(parse_port(port)?)),
            None => (entry, None),
        };
        let target = match parse_network(head) {
            Some(net) => NoProxyTarget::Network(net),
            None => NoProxyTarget::Domain(parse_domain(head)?),
        };
        Some(NoProxyRule { target, port })
    }

    fn matches(&self, host: &UrlHost, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (&self.target, host) {
            (NoProxyTarget::Domain(domain), UrlHost::Name(name)) => {
                name == domain
                    || name
                        .strip_suffix(domain.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            }
            (NoProxyTarget::Network(net), UrlHost::Ip(ip)) => net.contains(ip),
            _ => false,
        }
    }
}

fn parse_port(text: &str) -> Option<u16> {
    text.parse().ok()
}

fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| {
            text.parse::<IpAddr>()
                .map(|ip| IpNet::from(ip.to_canonical()))
        })
        .ok()
}

fn parse_domain(text: &str) -> Option<String> {
    let name = text
        .strip_prefix("*.")
        .or_else(|| text.strip_prefix('.'))
        .unwrap_or(text)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn config(vars: &[(&str, &str)]) -> ProxyConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxyConfig::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn proxied(config: &ProxyConfig, target: &str) -> Option<String> {
        match config.route(&url(target)) {
            Route::Proxy(server) => Some(server.to_string()),
            Route::Direct => None,
            Route::Unusable(u) => Some(format!("unusable {}", u.variable)),
        }
    }

    fn bypasses(no_proxy: &str, target: &str) -> bool {
        NoProxy::parse(no_proxy).matches(&url(target))
    }

    #[test]
    fn each_scheme_has_its_own_variable() {
        let c = config(&[
            ("HTTPS_PROXY", "http://secure-proxy:3128"),
            ("HTTP_PROXY", "http://plain-proxy:8080"),
        ]);
        assert_eq!(
            proxied(&c, "https://idp.example/token").as_deref(),
            Some("http://secure-proxy:3128")
        );
        assert_eq!(
            proxied(&c, "http://idp.example/token").as_deref(),
            Some("http://plain-proxy:8080")
        );
        let only_https = config(&[("HTTPS_PROXY", "http://p:3128")]);
        assert_eq!(proxied(&only_https, "http://idp.example/token"), None);
        let only_http = config(&[("HTTP_PROXY", "http://p:3128")]);
        assert_eq!(proxied(&only_http, "https://idp.example/token"), None);
        assert!(ProxyConfig::none().is_empty());
        assert_eq!(proxied(&ProxyConfig::none(), "https://idp.example/"), None);
    }

    #[test]
    fn lowercase_wins_and_empty_counts_as_unset() {
        let c = config(&[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("HTTP_PROXY", "http://upper:3"),
            ("http_proxy", "http://lower:4"),
            ("NO_PROXY", "upper.example"),
            ("no_proxy", "lower.example"),
        ]);
        assert_eq!(proxied(&c, "https://x/").as_deref(), Some("http://lower:2"));
        assert_eq!(proxied(&c, "http://x/").as_deref(), Some("http://lower:4"));
        assert_eq!(proxied(&c, "https://lower.example/"), None);
        assert!(proxied(&c, "https://upper.example/").is_some());

        let c = config(&[("HTTPS_PROXY", "http://upper:1"), ("https_proxy", "  ")]);
        assert_eq!(proxied(&c, "https://x/").as_deref(), Some("http://upper:1"));
        let c = config(&[("HTTPS_PROXY", "")]);
        assert!(c.is_empty());
    }

    #[test]
    fn proxy_urls_default_to_http_and_their_scheme_port() {
        let server = |value: &str| ProxyServer::parse("HTTPS_PROXY", value).unwrap();
        assert_eq!(
            server("proxy.corp:3128").to_string(),
            "http://proxy.corp:3128"
        );
        assert_eq!(
            server("http://proxy.corp").to_string(),
            "http://proxy.corp:80"
        );
        assert_eq!(
            server("https://proxy.corp").to_string(),
            "https://proxy.corp:443"
        );
        assert_eq!(
            server("http://[fd00::1]:3128/").to_string(),
            "http://[fd00::1]:3128"
        );
        assert_eq!(server("http://10.0.0.1:3128").host_name(), None);
        assert_eq!(
            server("http://Proxy.Corp.:3128").host_name().as_deref(),
            Some("proxy.corp")
        );
        assert_eq!(
            server("http://p:3128/some/path?q").url().as_str(),
            "http://p:3128/"
        );
        for bad in [
            "socks5://p:1080",
            "http://",
            "http://p:99999",
            "http://[::1",
        ] {
            let err = ProxyServer::parse("HTTPS_PROXY", bad).unwrap_err();
            assert_eq!(err.variable, "HTTPS_PROXY");
        }
    }

    #[test]
    fn userinfo_is_kept_as_credentials_and_never_shown() {
        let c = config(&[(
            "https_proxy",
            "http://proxy-user:s3cr%40t%2Fpw@proxy.corp:3128",
        )]);
        let Route::Proxy(server) = c.route(&url("https://idp.example/")) else {
            panic!("proxied");
        };
        let (user, password) = server.credentials().unwrap().expose();
        assert_eq!(
            (user.as_str(), password.as_str()),
            ("proxy-user", "s3cr@t/pw")
        );
        assert_eq!(server.url().as_str(), "http://proxy.corp:3128/");
        let shown = [
            server.to_string(),
            format!("{server:?}"),
            format!("{c:?}"),
            c.to_string(),
            format!("{:?}", c.reqwest_proxies()),
        ];
        for text in shown {
            for needle in ["proxy-user", "s3cr", "%40", "pw"] {
                assert!(!text.contains(needle), "{needle} in {text}");
            }
        }
        assert!(format!("{server:?}").contains(REDACTED));
        assert!(
            c.to_string()
                .contains("https via http://proxy.corp:3128 (https_proxy)")
        );
    }

    #[test]
    fn an_unusable_value_refuses_instead_of_going_direct_and_is_not_echoed() {
        let c = config(&[("HTTPS_PROXY", "socks5://user:hunter2@p:1080")]);
        match c.route(&url("https://idp.example/")) {
            Route::Unusable(u) => {
                assert_eq!(u.variable, "HTTPS_PROXY");
                let text = u.to_string();
                assert!(
                    text.contains("HTTPS_PROXY") && !text.contains("hunter2"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        // no_proxy still applies to it.
        let c = config(&[("HTTPS_PROXY", "http://[::1"), ("NO_PROXY", "idp.example")]);
        assert!(matches!(
            c.route(&url("https://idp.example/")),
            Route::Direct
        ));
        let warnings =
            config(&[("HTTP_PROXY", "ftp://x"), ("NO_PROXY", "a..b,ok.example")]).warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("HTTP_PROXY"));
        assert!(warnings[1].contains("a..b"));
    }

    #[test]
    fn no_proxy_star_matches_everything() {
        assert!(bypasses("*", "https://anything.example/"));
        assert!(bypasses("a.example, *", "http://10.0.0.1:8080/"));
        // `*` only on its own: a leading `*.` is a domain rule.
        assert!(!bypasses("*.example.com", "https://other.org/"));
    }

    #[test]
    fn no_proxy_names_match_on_label_boundaries_with_or_without_a_leading_dot() {
        for rule in [
            "example.com",
            ".example.com",
            "*.example.com",
            "EXAMPLE.com.",
        ] {
            assert!(bypasses(rule, "https://example.com/"), "{rule}");
            assert!(bypasses(rule, "https://a.example.com/"), "{rule}");
            assert!(bypasses(rule, "https://a.b.Example.COM./"), "{rule}");
            assert!(!bypasses(rule, "https://badexample.com/"), "{rule}");
            assert!(!bypasses(rule, "https://example.com.evil.net/"), "{rule}");
            assert!(!bypasses(rule, "https://com/"), "{rule}");
        }
        assert!(bypasses(" a.example , b.example ", "https://b.example/"));
        assert!(bypasses("svc,cluster.local", "https://kc.auth.svc/"));
        assert!(!bypasses("", "https://example.com/"));
        assert!(!bypasses("a..b", "https://a..b/"));
        // A name rule does not match an address, nor an address rule a name.
        assert!(!bypasses("localhost", "http://127.0.0.1/"));
        assert!(!bypasses("127.0.0.1", "http://localhost/"));
    }

    #[test]
    fn no_proxy_addresses_and_networks_match_ip_literals() {
        assert!(bypasses("10.0.0.0/8", "https://10.1.2.3/token"));
        assert!(!bypasses("10.0.0.0/8", "https://11.1.2.3/token"));
        assert!(bypasses("192.168.1.7", "http://192.168.1.7:8080/"));
        assert!(!bypasses("192.168.1.7", "http://192.168.1.8/"));
        assert!(bypasses("fd00::/8", "https://[fd12::1]/"));
        assert!(bypasses("::1", "https://[::1]/"));
        assert!(bypasses("[::1]", "https://[::1]/"));
        assert!(bypasses("[fd00::/8]", "https://[fd12::1]/"));
        // An IPv4-mapped literal is the IPv4 address.
        assert!(bypasses("10.0.0.0/8", "https://[::ffff:10.0.0.1]/"));
        // Names are not resolved for address rules.
        assert!(!bypasses("127.0.0.0/8", "https://localhost/"));
    }

    #[test]
    fn no_proxy_ports_restrict_a_rule_to_that_port() {
        assert!(bypasses("example.com:8443", "https://a.example.com:8443/"));
        assert!(!bypasses("example.com:8443", "https://a.example.com/"));
        // The scheme's default port when the URL has none.
        assert!(bypasses("example.com:443", "https://example.com/"));
        assert!(!bypasses("example.com:443", "http://example.com/"));
        assert!(bypasses("example.com:80", "http://example.com/"));
        assert!(bypasses("10.0.0.1:8080", "http://10.0.0.1:8080/"));
        assert!(!bypasses("10.0.0.1:8080", "http://10.0.0.1:8081/"));
        assert!(bypasses("10.0.0.0/8:443", "https://10.9.9.9/"));
        assert!(!bypasses("10.0.0.0/8:443", "https://10.9.9.9:8443/"));
        assert!(bypasses("[::1]:8443", "https://[::1]:8443/"));
        assert!(!bypasses("[::1]:8443", "https://[::1]/"));
        assert!(bypasses("[fd00::/8]:443", "https://[fd00::5]/"));
        // A bad port makes the entry unusable, not a wildcard.
        let bad = NoProxy::parse("example.com:http,example.org:70000");
        assert!(bad.is_empty());
        assert_eq!(bad.ignored.len(), 2);
        assert!(!bad.matches(&url("https://example.com/")));
    }

    #[test]
    fn reqwest_proxies_follow_the_same_rules() {
        let none = ProxyConfig::none();
        assert!(none.reqwest_proxies().is_empty());
        let c = config(&[
            ("HTTPS_PROXY", "http://p1:3128"),
            ("HTTP_PROXY", "http://p2:3128"),
        ]);
        assert_eq!(c.reqwest_proxies().len(), 2);
        let c = config(&[("HTTPS_PROXY", "ftp://p1")]);
        assert!(c.reqwest_proxies().is_empty());
        assert_eq!(
            config(&[
                ("HTTPS_PROXY", "http://Proxy.Corp:1"),
                ("HTTP_PROXY", "http://10.0.0.1:2")
            ])
            .proxy_host_names(),
            HashSet::from(["proxy.corp".to_owned()])
        );
    }
}
