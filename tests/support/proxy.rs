//! An HTTP proxy double on 127.0.0.1: it records the request line and headers of every request
//! it gets (and counts connections and bytes), answers `CONNECT` with 200 and splices to the
//! target, forwards absolute-form requests (`POST http://host:port/path`), and can be told to
//! answer every request with a status (407, 502, ...) instead.
//!
//! It only ever connects to 127.0.0.1: a target host other than `localhost`, `127.0.0.1` or a
//! name it was told to resolve there ([`ProxyDouble::resolve_to_loopback`], standing in for a
//! name only the proxy can resolve) gets 502, as a proxy that cannot resolve the name would
//! answer. It serves a bounded number of connections, each bounded in time.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections served at most.
const MAX_CONNECTIONS: usize = 64;
/// How long one connection may last.
const CONNECTION_TIME: Duration = Duration::from_secs(15);
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// One request as the proxy received it.
#[derive(Clone, Debug)]
pub struct ProxyRequest {
    /// `CONNECT host:443 HTTP/1.1`, `POST http://host:port/path HTTP/1.1`.
    pub line: String,
    /// The header lines, as received.
    pub headers: Vec<(String, String)>,
}

impl ProxyRequest {
    pub fn method(&self) -> &str {
        self.line.split(' ').next().unwrap_or("")
    }
    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    connections: AtomicUsize,
    bytes: AtomicUsize,
    tunnels: AtomicUsize,
    /// 0: proxy normally; else answer every request with this status.
    refuse: AtomicU16,
    requests: Mutex<Vec<ProxyRequest>>,
    /// Names this proxy resolves to 127.0.0.1.
    aliases: Mutex<Vec<String>>,
}

/// The proxy double; it stops when dropped.
pub struct ProxyDouble {
    port: u16,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProxyDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProxyDouble {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner::default());
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_TIME, serve(socket, shared)).await;
                });
            }
        });
        ProxyDouble { port, inner, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://user:password@127.0.0.1:PORT`.
    pub fn url_with_userinfo(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answer every request with `status` (0: proxy normally again).
    pub fn refuse_with(&self, status: u16) {
        self.inner.refuse.store(status, Ordering::SeqCst);
    }

    /// Resolves `name` to 127.0.0.1 from now on (a name the client itself cannot resolve).
    pub fn resolve_to_loopback(&self, name: &str) {
        self.inner.aliases.lock().unwrap().push(name.to_owned());
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Bytes received from clients (request heads and everything spliced).
    pub fn bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::SeqCst)
    }

    /// CONNECT tunnels established.
    pub fn tunnels(&self) -> usize {
        self.inner.tunnels.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.inner.requests.lock().unwrap().clone()
    }
}

async fn serve(mut client: TcpStream, inner: Arc<Inner>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD {
            return;
        }
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                inner.bytes.fetch_add(n, Ordering::SeqCst);
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("").to_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let request = ProxyRequest { line, headers };
    inner.requests.lock().unwrap().push(request.clone());

    let refuse = inner.refuse.load(Ordering::SeqCst);
    if refuse != 0 {
        return answer(&mut client, refuse).await;
    }
    let connect = request.method() == "CONNECT";
    let authority = if connect {
        request.target().to_owned()
    } else {
        // Absolute form: http://host:port/path
        let Some(rest) = request.target().strip_prefix("http://") else {
            return answer(&mut client, 400).await;
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        }
    };
    let Some((host, port)) = authority.rsplit_once(':') else {
        return answer(&mut client, 400).await;
    };
    let Ok(port) = port.parse::<u16>() else {
        return answer(&mut client, 400).await;
    };
    let alias = inner.aliases.lock().unwrap().iter().any(|a| a == host);
    if !matches!(host, "localhost" | "127.0.0.1") && !alias {
        return answer(&mut client, 502).await;
    }
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return answer(&mut client, 502).await;
    };
    if connect {
        inner.tunnels.fetch_add(1, Ordering::SeqCst);
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        if upstream.write_all(&buf[head_end..]).await.is_err() {
            return;
        }
    } else {
        // Forward as a proxy does: without the headers meant for the proxy itself.
        let mut forwarded = format!("{}\r\n", request.line);
        for (name, value) in &request.headers {
            if !name.eq_ignore_ascii_case("proxy-authorization")
                && !name.eq_ignore_ascii_case("proxy-connection")
            {
                forwarded.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        forwarded.push_str("\r\n");
        let mut bytes = forwarded.into_bytes();
        bytes.extend_from_slice(&buf[head_end..]);
        if upstream.write_all(&bytes).await.is_err() {
            return;
        }
    }
    splice(client, upstream, inner).await;
}

async fn answer(client: &mut TcpStream, status: u16) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Refused");
    let extra = if status == 407 {
        "Proxy-Authenticate: Basic realm=\"proxy-double\"\r\n"
    } else {
        ""
    };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = client.write_all(text.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Copies both ways until either side closes, counting what the client sends.
async fn splice(client: TcpStream, upstream: TcpStream, inner: Arc<Inner>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let up = async {
        let mut chunk = [0u8; 8192];
        loop {
            match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    inner.bytes.fetch_add(n, Ordering::SeqCst);
                    if upstream_write.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = upstream_write.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}
