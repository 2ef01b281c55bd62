//! The HTTP client of a token request, as the transport hands it out ([`HttpClient`]): a pooled
//! reqwest client for one trust (and, for mutual TLS, one identity), the rules every request
//! follows (see [`crate::oauth::transport`]), and the words for what went wrong.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderMap;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use url::{Host, Url};

use super::pool::{Claim, ClientTemplate, Held, Pooled};
use super::proxy::{ProxyServer, Route};
use super::tls_failure::TlsProblem;
use super::trust::{Trust, TrustKey};
use crate::api::reason::{Failure, Reason};
use crate::base::Scrubber;
use crate::oauth::identity::IdentityKey;
use crate::oauth::request::TokenRequest;
use crate::oauth::response::sanitise;
use crate::spec::url_policy::DeniedAddress;

/// Largest response body read (1 MiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// Bytes of a response body read without asking the byte budget (token responses are smaller).
const FREE_BYTES: usize = 64 * 1024;

/// The byte budget of response bodies beyond their first [`FREE_BYTES`], in answers of
/// [`MAX_BODY`]: by default as many as the default `--max-concurrent-exchanges`.
const DEFAULT_LARGE_BODIES: usize = 32;

/// Bytes of response bodies beyond their first [`FREE_BYTES`] read or held at once, process-wide:
/// requests in flight may outnumber the exchange budget (stalled requests go on outside it), so
/// a large body waits for room, while a body that hangs holds only what it received.
static BODY_BYTES: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();

/// Sets the byte budget of response bodies to `count` answers of [`MAX_BODY`] (the controller:
/// its exchange budget). The first call wins.
pub fn limit_bodies(count: usize) {
    let bytes = count.max(1).saturating_mul(MAX_BODY);
    let _ = BODY_BYTES.set(Arc::new(tokio::sync::Semaphore::new(bytes)));
}

fn body_bytes() -> Arc<tokio::sync::Semaphore> {
    BODY_BYTES
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(DEFAULT_LARGE_BODIES * MAX_BODY)))
        .clone()
}

/// A received response, body capped. Its `Debug` shows the status, the header names and the
/// body's length, never the body (it holds the access token).
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (at most [`MAX_BODY`] bytes).
    pub body: Vec<u8>,
    /// Its bytes beyond the first 64 KiB in the byte budget ([`limit_bodies`]), given back with
    /// the reply.
    pub held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.keys().map(|name| name.as_str()).collect();
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The HTTP client a token request goes through: verifies the endpoint against one trust and,
/// for mutual TLS, presents one identity. Pooled: cloning it, or getting it again for the same
/// trust and identity, shares one connection pool; it lives while someone holds it.
#[derive(Clone)]
pub struct HttpClient {
    pooled: Arc<Pooled>,
    /// What the endpoint's certificate is verified against, in words (`key ca.crt of ConfigMap
    /// corp-ca (spec.caBundleRef) alone`).
    verified_against: Arc<str>,
    /// What every client shares: the policy, the proxies, the timeout.
    template: Arc<ClientTemplate>,
    /// The namespace's hold on the client (counted against its share of the bounds), while
    /// anyone keeps this.
    _claim: Option<Arc<Claim>>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("trust", &self.pooled.key().trust.to_string())
            .field("mtls", &self.pooled.key().identity.is_some())
            .field("verified_against", &self.verified_against)
            .finish()
    }
}

impl HttpClient {
    pub(super) fn new(
        held: Held,
        verified_against: Arc<str>,
        template: Arc<ClientTemplate>,
    ) -> Self {
        HttpClient {
            pooled: held.pooled,
            verified_against,
            template,
            _claim: held.claim,
        }
    }

    /// The trust it verifies endpoints against.
    pub fn trust(&self) -> &Trust {
        self.pooled.trust()
    }

    /// The identity it presents in the handshake (mutual TLS), if any.
    pub fn presents(&self) -> Option<IdentityKey> {
        self.pooled.key().identity
    }

    /// What the endpoint's certificate is verified against, in words.
    pub fn verified_against(&self) -> &str {
        &self.verified_against
    }

    /// Whether it shares its connection pool with `other` (the same trust and identity).
    pub fn shares_pool_with(&self, other: &HttpClient) -> bool {
        Arc::ptr_eq(&self.pooled, &other.pooled)
    }

    /// Sends a token request and reads the reply with the body cap. Error messages are
    /// scrubbed with `scrubber` (the request's credentials).
    pub async fn send(
        &self,
        request: &TokenRequest,
        scrubber: &Scrubber<'_>,
    ) -> Result<Reply, Failure> {
        let url = &request.url;
        let host = url.host_str().unwrap_or("?").to_owned();
        self.template.policy.check_url(url)?;
        let route = self.template.proxy.route(url);
        match route {
            Route::Direct => self.check_direct_to_a_proxy_host(url).await?,
            Route::Proxy(proxy) => {
                refuse_tls_proxy_with_bundle(url, proxy, self)?;
                self.check_before_proxy(url, proxy).await?
            }
            Route::Unusable(unusable) => {
                return Err(Failure::new(
                    Reason::EndpointUnavailable,
                    format!(
                        "token endpoint {host}: {unusable}; the request is not sent (fix the variable or add the host to no_proxy)"
                    ),
                ));
            }
        }
        let mut builder = self
            .pooled
            .reqwest()
            .post(url.clone())
            .body(request.body.expose().clone());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                return Err(self.transport_failure(url, route, &e, scrubber).await);
            }
        };
        let status = response.status().as_u16();
        if let Route::Proxy(proxy) = route
            && status == 407
            && url.scheme() == "http"
        {
            // Forwarded http:// requests: the answer is the proxy's, not the endpoint's.
            return Err(Failure::new(
                Reason::EndpointUnavailable,
                format!(
                    "token endpoint {host}: the proxy {proxy} refused the request: HTTP 407 Proxy Authentication Required"
                ),
            ));
        }
        let headers = response.headers().clone();
        let (body, held) = match read_body(response, status).await {
            Ok(read) => read,
            Err(Read::TooLarge(failure)) => return Err(failure),
            Err(Read::Broken(e)) => {
                return Err(self.transport_failure(url, route, &e, scrubber).await);
            }
        };
        Ok(Reply {
            status,
            headers,
            body,
            held,
        })
    }

    /// The policy on the operator's own resolution of the token host, before the request goes
    /// to `proxy` (which resolves the name itself, out of the resolver's sight).
    async fn check_before_proxy(&self, url: &Url, proxy: &ProxyServer) -> Result<(), Failure> {
        // IP literals were checked with the URL.
        let Some(Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        let problem = match self.lookup(url, name).await {
            Ok(addrs) => {
                return self
                    .template
                    .policy
                    .check_all(name, &addrs)
                    .map_err(|d| d.failure());
            }
            Err(problem) => problem,
        };
        if self.template.policy.names_host(name) {
            tracing::debug!(
                host = name,
                %proxy,
                "host not resolvable locally; sent to the proxy because --token-url-allow-hosts names it"
            );
            return Ok(());
        }
        Err(Failure::new(
            Reason::EndpointUnavailable,
            format!(
                "token endpoint host {name} could not be resolved locally ({problem}), so the operator cannot check it against --token-url-deny-cidrs before sending the request to the proxy {proxy}; add the host to the operator's --token-url-allow-hosts to send it through the proxy unresolved (an allow list admits only the hosts it names)"
            ),
        ))
    }

    /// A direct request to a host that is also a configured proxy's name: the resolver does not
    /// check proxy names, so the check happens here.
    async fn check_direct_to_a_proxy_host(&self, url: &Url) -> Result<(), Failure> {
        let Some(Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        let lowercase = name.trim_end_matches('.').to_ascii_lowercase();
        if !self.template.proxy_hosts.contains(&lowercase) {
            return Ok(());
        }
        match self.lookup(url, name).await {
            Ok(addrs) => self
                .template
                .policy
                .check_all(name, &addrs)
                .map_err(|d| d.failure()),
            // The connection will fail the same way.
            Err(_) => Ok(()),
        }
    }

    /// Resolves the URL's host, bounded by the request timeout; the reason when no address
    /// comes back.
    async fn lookup(&self, url: &Url, name: &str) -> Result<Vec<SocketAddr>, String> {
        let port = url.port_or_known_default().unwrap_or(443);
        match tokio::time::timeout(self.template.timeout, tokio::net::lookup_host((name, port)))
            .await
        {
            Ok(Ok(addrs)) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    Err("no address".into())
                } else {
                    Ok(addrs)
                }
            }
            Ok(Err(e)) => Err(sanitise(&e.to_string(), &Scrubber::none())
                .unwrap_or_else(|| "the lookup failed".to_owned())),
            Err(_) => Err(format!(
                "no answer within {}s",
                self.template.timeout.as_secs_f32()
            )),
        }
    }

    async fn transport_failure(
        &self,
        url: &Url,
        route: Route<'_>,
        error: &reqwest::Error,
        scrubber: &Scrubber<'_>,
    ) -> Failure {
        let host = url.host_str().unwrap_or("?");
        if let Some(denied) = find_source::<DeniedAddress>(error) {
            return denied.failure();
        }
        if let Route::Proxy(proxy) = route
            && let Some(message) = self.proxy_failure(url, proxy, error).await
        {
            let text = format!("token endpoint {host}: {message}");
            let message = sanitise(&text, &Scrubber::none())
                .unwrap_or_else(|| format!("token endpoint {host}: the proxy {proxy} failed"));
            return Failure::new(Reason::EndpointUnavailable, message);
        }
        let via = match route {
            Route::Proxy(proxy) => format!(" (through the proxy {proxy})"),
            _ => String::new(),
        };
        if let Some(problem) = TlsProblem::find(error) {
            return tls_failure(url, &problem, &via, self);
        }
        // What happened, with the library's detail, and the same without it.
        let (what, short) = if error.is_timeout() {
            let what = format!("timed out after {}s", self.template.timeout.as_secs_f32());
            (what.clone(), what)
        } else if error.is_connect() {
            let short = "could not connect".to_owned();
            (format!("{short}: {}", root_cause(error)), short)
        } else if error.is_body() || error.is_decode() {
            let short = "failed while reading the response".to_owned();
            (format!("{short}: {}", root_cause(error)), short)
        } else {
            (root_cause(error), "request failed".to_owned())
        };
        // These messages hold no body text; with a secret too short to scrub reliably they
        // are left whole rather than shredded.
        let none = Scrubber::none();
        let scrubber = if scrubber.allows_excerpts() {
            scrubber
        } else {
            &none
        };
        let message = sanitise(&format!("token endpoint {host} {what}{via}"), scrubber)
            .unwrap_or_else(|| format!("token endpoint {host} {short}{via}"));
        Failure::new(Reason::EndpointUnavailable, message)
    }

    /// What went wrong with the proxy itself, if it was the proxy: it could not be reached, or
    /// it refused the CONNECT.
    async fn proxy_failure(
        &self,
        url: &Url,
        proxy: &ProxyServer,
        error: &reqwest::Error,
    ) -> Option<String> {
        let chain = error_chain(error);
        let tunnel = chain
            .iter()
            .find(|text| text.starts_with("tunnel error: "))?;
        let target = format!(
            "{}:{}",
            url.host_str().unwrap_or("?"),
            url.port_or_known_default().unwrap_or(443)
        );
        let refused =
            |status: String| format!("the proxy {proxy} refused the CONNECT to {target}: {status}");
        Some(match tunnel.trim_start_matches("tunnel error: ") {
            "proxy authorization required" => {
                refused("HTTP 407 Proxy Authentication Required".into())
            }
            "failed to create underlying connection" | "io error establishing tunnel" => format!(
                "could not connect to the proxy {proxy}: {}",
                root_cause(error)
            ),
            "unexpected end of file" => format!(
                "the proxy {proxy} closed the connection before answering the CONNECT to {target}"
            ),
            // hyper-util reports any other answer without its status: ask once more to learn it
            // (a bare CONNECT: no token request, nothing of the client's).
            _ => match connect_status(proxy, &target, self.template.timeout).await {
                Ok(status) => refused(status_text(status)),
                Err(why) => refused(format!("its answer could not be read ({why})")),
            },
        })
    }
}

/// A TLS failure: the contract's phrase first, then where and against what it was verified.
/// An `https://` proxy with an OAuthClient's own CA bundle: the HTTP library verifies the
/// proxy's certificate with the endpoint's trust, so the proxy (which carries the operator's
/// `Proxy-Authorization`) would be judged by a tenant's bundle alone. Refused before anything
/// is sent; an `http://` proxy URL tunnels the same end-to-end TLS.
fn refuse_tls_proxy_with_bundle(
    url: &Url,
    proxy: &ProxyServer,
    client: &HttpClient,
) -> Result<(), Failure> {
    if proxy.url().scheme() != "https" || client.pooled.key().trust == TrustKey::Default {
        return Ok(());
    }
    Err(Failure::new(
        Reason::EndpointUnavailable,
        format!(
            "token endpoint {}: the proxy {proxy} is an https:// proxy, which cannot be combined with spec.caBundleRef (its certificate would be checked against this client's bundle); use an http:// proxy URL (the tunnel to the endpoint is still TLS end to end) or add the host to no_proxy",
            url.host_str().unwrap_or("?")
        ),
    ))
}

fn tls_failure(url: &Url, problem: &TlsProblem, via: &str, client: &HttpClient) -> Failure {
    let host = url.host_str().unwrap_or("?");
    let port = url.port_or_known_default().unwrap_or(443);
    let headline = problem.message(host);
    let text = format!(
        "{headline}: token endpoint {host}:{port}{via}, verified against {}",
        client.verified_against()
    );
    let message = sanitise(&text, &Scrubber::none()).unwrap_or(headline);
    Failure::new(Reason::EndpointUnavailable, message)
}

/// Sends `CONNECT target` to an `http://` proxy and returns the status of its answer.
async fn connect_status(
    proxy: &ProxyServer,
    target: &str,
    timeout: Duration,
) -> Result<u16, String> {
    if proxy.url().scheme() != "http" {
        return Err("the proxy is not http://".into());
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(proxy.authority())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(credentials) = proxy.credentials() {
            let (user, password) = credentials.expose();
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            head.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 512];
        while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < 8192 {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        parse_status_line(&answer).ok_or_else(|| "not an HTTP status line".to_owned())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", timeout.as_secs_f32()))?
}

/// The status code of `HTTP/1.x NNN ...`.
fn parse_status_line(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3)
        .then(|| code.parse::<u16>().ok())
        .flatten()
        .filter(|c| (100..=599).contains(c))
}

fn status_text(status: u16) -> String {
    match http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("HTTP {status} {reason}"),
        None => format!("HTTP {status}"),
    }
}

/// Every message of the error's source chain, outermost first.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut chain = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        chain.push(e.to_string());
        current = e.source();
    }
    chain
}

/// Why a body could not be read.
enum Read {
    /// It is larger than [`MAX_BODY`].
    TooLarge(Failure),
    /// The connection failed while reading.
    Broken(reqwest::Error),
}

/// A body as read, and its bytes in the byte budget.
type ReadBody = (Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>);

/// Reads the body, stopping as soon as it exceeds [`MAX_BODY`]; bytes beyond the first
/// [`FREE_BYTES`] are taken from the byte budget as they arrive (so a body that hangs holds only
/// what it received). The buffer is sized from the Content-Length (within what is taken) when
/// there is one, so that it does not grow by doubling.
async fn read_body(mut response: reqwest::Response, status: u16) -> Result<ReadBody, Read> {
    let declared = response.content_length();
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(Read::TooLarge(too_large(status)));
    }
    let budget = body_bytes();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut body = Vec::with_capacity(declared.map_or(0, |len| (len as usize).min(FREE_BYTES)));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let total = body.len() + chunk.len();
                if total > MAX_BODY {
                    return Err(Read::TooLarge(too_large(status)));
                }
                let beyond = total.saturating_sub(FREE_BYTES.max(body.len()));
                if beyond > 0 {
                    let more = u32::try_from(beyond).unwrap_or(u32::MAX);
                    if let Ok(permit) = budget.clone().acquire_many_owned(more).await {
                        match &mut held {
                            Some(held) => held.merge(permit),
                            None => held = Some(permit),
                        }
                    }
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok((body, held)),
            Err(e) => return Err(Read::Broken(e)),
        }
    }
}

fn too_large(status: u16) -> Failure {
    Failure::new(
        Reason::InvalidResponse,
        format!(
            "HTTP {status} response body is larger than {} KiB; stopped reading",
            MAX_BODY / 1024
        ),
    )
}

/// The innermost error message (reqwest's top level only says "error sending request").
pub(super) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// The first error of type `E` in `error`'s source chain.
fn find_source<'e, E: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_debug_shows_status_header_names_and_length_only() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-request-id", "req-secret-value".parse().unwrap());
        let body = br#"{"access_token":"eyJ-the-token","token_type":"Bearer"}"#.to_vec();
        let len = body.len();
        let reply = Reply {
            status: 200,
            headers,
            body,
            held: None,
        };
        let shown = format!("{reply:?}");
        assert!(shown.contains("200"), "{shown}");
        assert!(
            shown.contains("content-type") && shown.contains("x-request-id"),
            "{shown}"
        );
        assert!(shown.contains(&format!("body_len: {len}")), "{shown}");
        for hidden in [
            "eyJ-the-token",
            "access_token",
            "application/json",
            "req-secret-value",
        ] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        let pretty = format!("{reply:#?}");
        assert!(!pretty.contains("eyJ-the-token"));
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 502 Bad Gateway\r\n\r\n"),
            Some(502)
        );
        assert_eq!(parse_status_line(b"HTTP/1.0 403 Forbidden\r\n"), Some(403));
        assert_eq!(parse_status_line(b"HTTP/1.1 200\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
        assert_eq!(status_text(502), "HTTP 502 Bad Gateway");
    }
}
