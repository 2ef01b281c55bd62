//! A token endpoint that authenticates clients by mutual TLS (RFC 8705 section 2), on
//! 127.0.0.1 with the fixture CA's server certificate for `localhost`.
//!
//! * The handshake asks for a client certificate and checks that the client holds its key
//!   (the CertificateVerify signature); the request is then answered as RFC 8705 says: a
//!   missing certificate, one not issued by the test CA, or one that is not the certificate
//!   registered for the body's `client_id`, is 401 `invalid_client`.
//! * Every handshake is recorded with its kind (full or resumed) and the certificate presented;
//!   the server supports TLS 1.3 resumption, so a client that offers a ticket is seen doing so.
//! * Connections are kept alive for further requests, or closed after each answer.
//! * The loops are bounded: at most 10,000 connections, 100 requests per connection, 10 s of
//!   silence per read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub use rustls::HandshakeKind;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/client-auth/");

/// A fixture file.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).unwrap()
}

/// The test CA, as the operator's extra trust anchor.
pub fn test_ca() -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(&fixture("ca.crt"))
        .collect::<Result<_, _>>()
        .unwrap()
}

/// One TLS handshake the server completed.
#[derive(Clone, Debug)]
pub struct Handshake {
    pub kind: Option<HandshakeKind>,
    /// The leaf certificate the client presented (DER).
    pub certificate: Option<Vec<u8>>,
}

/// One token request: who asked, as the certificate says, and the answer's status.
#[derive(Clone, Debug)]
pub struct Served {
    pub client_id: Option<String>,
    pub certificate: Option<Vec<u8>>,
    pub status: u16,
}

struct State {
    /// The CA whose certificates the endpoint accepts.
    roots: Arc<rustls::RootCertStore>,
    /// client_id → its registered leaf certificate (DER).
    clients: Mutex<HashMap<String, Vec<u8>>>,
    handshakes: Mutex<Vec<Handshake>>,
    served: Mutex<Vec<Served>>,
    issued: Mutex<Vec<String>>,
    close_after_answer: AtomicBool,
}

/// A running mTLS token endpoint.
#[derive(Clone)]
pub struct MtlsServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl MtlsServer {
    /// The endpoint with the fixture CA and its `localhost` certificate.
    pub async fn start() -> Self {
        MtlsServer::start_with(
            &fixture("ca.crt"),
            &fixture("server.crt"),
            &fixture("server.key"),
        )
        .await
    }

    /// The endpoint accepting client certificates of the CA in `ca_pem`, serving the chain and
    /// key given (for `localhost`).
    pub async fn start_with(ca_pem: &[u8], chain_pem: &[u8], key_pem: &[u8]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(Arc::new(AnyClientCertificate { provider }))
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(ca.unwrap()).unwrap();
        }
        let state = Arc::new(State {
            roots: Arc::new(roots),
            clients: Mutex::default(),
            handshakes: Mutex::default(),
            served: Mutex::default(),
            issued: Mutex::default(),
            close_after_answer: AtomicBool::new(false),
        });
        let serving = state.clone();
        tokio::spawn(async move {
            for _ in 0..10_000 {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, state) = (acceptor.clone(), serving.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(socket)).await
                    {
                        connection(tls, &state).await;
                    }
                });
            }
        });
        MtlsServer { addr, state }
    }

    /// The token URL (`localhost`, which the server certificate names).
    pub fn url(&self) -> String {
        format!("https://localhost:{}/token", self.addr.port())
    }

    /// Registers `client_id` with the leaf certificate of `pem`.
    pub fn register(&self, client_id: &str, pem: &[u8]) {
        let leaf = CertificateDer::from_pem_slice(pem).unwrap();
        self.state
            .clients
            .lock()
            .unwrap()
            .insert(client_id.to_owned(), leaf.as_ref().to_vec());
    }

    /// Closes each connection after its answer (so that the next request needs a handshake).
    pub fn close_after_answer(&self, close: bool) {
        self.state.close_after_answer.store(close, Ordering::SeqCst);
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.state.handshakes.lock().unwrap().clone()
    }

    pub fn served(&self) -> Vec<Served> {
        self.state.served.lock().unwrap().clone()
    }

    /// Token requests answered with a token.
    pub fn count(&self) -> usize {
        self.served().iter().filter(|s| s.status == 200).count()
    }

    pub fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }
}

/// Serves the requests of one connection.
async fn connection(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    state: &State,
) {
    let (_, conn) = tls.get_ref();
    let certificate = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    state.handshakes.lock().unwrap().push(Handshake {
        kind: conn.handshake_kind(),
        certificate: certificate.clone(),
    });
    for _ in 0..100 {
        let Some(body) = read_request(&mut tls).await else {
            return;
        };
        let (status, answer) = answer(state, certificate.as_deref(), &body);
        let close = state.close_after_answer.load(Ordering::SeqCst);
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
            if status == 200 { "OK" } else { "Unauthorized" },
            answer.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if tls.write_all(head.as_bytes()).await.is_err()
            || tls.write_all(answer.as_bytes()).await.is_err()
        {
            return;
        }
        if close {
            let _ = tls.shutdown().await;
            return;
        }
    }
}

/// The body of the next request, or `None` at the end of the connection.
async fn read_request(
    tls: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf[head_end..head_end + length].to_vec())
}

/// RFC 8705 section 2: the certificate must be a test CA's and the one registered for the
/// client; `client_id` is in the body, no secret.
fn answer(state: &State, certificate: Option<&[u8]>, body: &[u8]) -> (u16, String) {
    let form: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let client_id = get("client_id");
    let refuse = |state: &State, why: &str| {
        state.served.lock().unwrap().push(Served {
            client_id: client_id.clone(),
            certificate: certificate.map(<[u8]>::to_vec),
            status: 401,
        });
        (
            401,
            json!({"error": "invalid_client", "error_description": why}).to_string(),
        )
    };
    if get("grant_type").as_deref() != Some("client_credentials") {
        return refuse(state, "grant_type must be client_credentials");
    }
    if get("client_secret").is_some() || get("client_assertion").is_some() {
        return refuse(state, "multiple client authentication methods");
    }
    let Some(leaf) = certificate else {
        return refuse(state, "a client certificate is required");
    };
    let verifier = WebPkiClientVerifier::builder(state.roots.clone())
        .build()
        .unwrap();
    let end_entity = CertificateDer::from(leaf.to_vec());
    if verifier
        .verify_client_cert(&end_entity, &[], UnixTime::now())
        .is_err()
    {
        return refuse(
            state,
            "the client certificate is not issued by a trusted CA",
        );
    }
    let registered = client_id
        .as_ref()
        .and_then(|id| state.clients.lock().unwrap().get(id).cloned());
    if registered.as_deref() != Some(leaf) {
        return refuse(
            state,
            "the client certificate is not the one registered for this client",
        );
    }
    let token = format!("emulated-token-mtls-{:016x}", rand::random::<u64>());
    state.issued.lock().unwrap().push(token.clone());
    state.served.lock().unwrap().push(Served {
        client_id,
        certificate: Some(leaf.to_vec()),
        status: 200,
    });
    (
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}).to_string(),
    )
}

/// Asks for a client certificate, accepts any whose key signed the handshake (the chain is
/// checked per request, as the endpoint answers invalid_client rather than failing TLS).
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
