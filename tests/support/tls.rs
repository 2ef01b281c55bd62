//! TLS for tests: certificate authorities generated in the test (rcgen), server certificates
//! they issue (valid, expired, for another name), and a TLS front on 127.0.0.1 that terminates
//! TLS with such a certificate and splices to a plain-HTTP emulator. Everything is bounded in
//! connections and time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    date_time_ymd,
};
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Connections a front serves at most.
const MAX_CONNECTIONS: usize = 64;
/// How long one connection may last.
const CONNECTION_TIME: Duration = Duration::from_secs(15);

/// A test certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A server certificate chain (leaf first) and its key.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid now.
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        self.issue_with(names, |_| {})
    }

    /// A server certificate for `names` that expired in 2021.
    pub fn issue_expired(&self, names: &[&str]) -> ServerCert {
        self.issue_with(names, |params| {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(
        &self,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> ServerCert {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "token endpoint");
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        ServerCert {
            chain: vec![leaf.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

fn server_config(cert: &ServerCert) -> Arc<rustls::ServerConfig> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        cert.chain.clone(),
        PrivateKeyDer::Pkcs8(cert.key.clone_key()),
    )
    .unwrap();
    Arc::new(config)
}

/// A TLS front on 127.0.0.1: TLS with a test certificate, then plain bytes to `upstream`.
pub struct TlsFront {
    port: u16,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    /// Terminates TLS with `cert` and splices to `127.0.0.1:upstream`.
    pub async fn start(cert: &ServerCert, upstream: u16) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(cert));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let done = handshakes.clone();
        let task = tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_TIME, async move {
                        let Ok(mut tls) = acceptor.accept(socket).await else {
                            return;
                        };
                        done.fetch_add(1, Ordering::SeqCst);
                        let Ok(mut plain) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    })
                    .await;
                });
            }
        });
        TlsFront {
            port,
            handshakes,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Completed TLS handshakes.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

/// The port of a plain-HTTP URL (`http://127.0.0.1:PORT/path`).
pub fn port_of(url: &str) -> u16 {
    url::Url::parse(url).unwrap().port().unwrap()
}

/// `url` (an emulator's `http://127.0.0.1:PORT/path`) as served by the front on `host`.
pub fn https_url(url: &str, host: &str, front: &TlsFront) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_scheme("https").unwrap();
    url.set_host(Some(host)).unwrap();
    url.set_port(Some(front.port())).unwrap();
    url.to_string()
}

/// A listener on 127.0.0.1 that reads the start of the TLS handshake and closes the
/// connection; returns its port and the number of connections it took.
pub async fn closing_endpoint() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let mut hello = [0u8; 512];
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut hello)).await;
            drop(socket);
        }
    });
    (port, seen)
}
