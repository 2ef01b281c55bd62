//! TLS for the metrics endpoint: the certificate and key of `--metrics-cert-dir` (`tls.crt`,
//! `tls.key`: a cert-manager Certificate's Secret mounted as it is; read again when they change,
//! so a renewal needs no restart), or a self-signed certificate made at start. Handshakes run
//! beside the accept loop, each at most [`HANDSHAKE_TIME`]; the accept loop never waits for
//! them: past [`MAX_HANDSHAKES`] in progress, the oldest one whose client has not yet sent its
//! whole ClientHello is dropped (the oldest of all only when every client has). Connections
//! that send nothing, however many and however fast they reconnect, cannot crowd out a probe:
//! its hello arrives with its connection, and from then on only other clients that said hello
//! compete with it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// Handshakes in progress at most (past it, the oldest is dropped).
const MAX_HANDSHAKES: usize = 128;
/// How long a handshake may take.
const HANDSHAKE_TIME: Duration = Duration::from_secs(3);
/// How often the certificate files are looked at again.
const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Why the metrics endpoint has no certificate.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The server TLS configuration: from `cert_dir`, or self-signed for `names`.
pub fn server_config(
    cert_dir: Option<&Path>,
    names: &[String],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resolver: Arc<dyn ResolvesServerCert> = match cert_dir {
        Some(dir) => Arc::new(Reloading::new(dir)?),
        None => Arc::new(Fixed(Arc::new(self_signed(names)?))),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| TlsError(format!("the metrics certificate and key do not fit: {e}")))
}

fn self_signed(names: &[String]) -> Result<CertifiedKey, TlsError> {
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(names.to_vec()).map_err(|e| TlsError(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, crate::NAME);
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError(e.to_string()))?;
    let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| TlsError(e.to_string()))?;
    certified(vec![cert.der().clone()], key)
}

/// One certificate for every handshake.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The certificate of a folder, read again when its files change.
#[derive(Debug)]
struct Reloading {
    dir: PathBuf,
    current: Mutex<(Arc<CertifiedKey>, Option<SystemTime>, Instant)>,
}

impl Reloading {
    fn new(dir: &Path) -> Result<Self, TlsError> {
        let (key, stamp) = read(dir)?;
        Ok(Reloading {
            dir: dir.to_owned(),
            current: Mutex::new((Arc::new(key), stamp, Instant::now())),
        })
    }
}

/// The newest modification time of the folder's two files (a Secret volume swaps a symlink).
fn stamp(dir: &Path) -> Option<SystemTime> {
    ["tls.crt", "tls.key"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok()?.modified().ok())
        .max()
}

fn read(dir: &Path) -> Result<(CertifiedKey, Option<SystemTime>), TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    let stamp = stamp(dir);
    let file = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| {
            TlsError(format!(
                "--metrics-cert-dir: cannot read {}: {e}",
                dir.join(name).display()
            ))
        })
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&file("tls.crt")?)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("--metrics-cert-dir: tls.crt: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError(
            "--metrics-cert-dir: tls.crt holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&file("tls.key")?)
        .map_err(|e| TlsError(format!("--metrics-cert-dir: tls.key: {e}")))?;
    Ok((certified(chain, key)?, stamp))
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().ok()?;
        if current.2.elapsed() >= RELOAD_EVERY {
            current.2 = Instant::now();
            let now = stamp(&self.dir);
            if now != current.1 {
                match read(&self.dir) {
                    Ok((key, stamp)) => {
                        tracing::info!(dir = %self.dir.display(), "metrics certificate reloaded");
                        *current = (Arc::new(key), stamp, Instant::now());
                    }
                    Err(e) => tracing::warn!("{e}; the previous metrics certificate stays"),
                }
            }
        }
        Some(current.0.clone())
    }
}

/// A TCP listener whose connections are TLS, handshaken beside the accept loop.
pub struct TlsListener {
    local: std::net::SocketAddr,
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, std::net::SocketAddr)>,
}

/// A handshake in progress: whether the client has said its hello, and how to drop it.
struct Handshake {
    hello: Arc<AtomicBool>,
    abort: tokio::task::AbortHandle,
}

/// The handshake to drop to make room: the oldest one whose client has not said its whole
/// hello yet (a connection that sends nothing is worth less than any that does), or the oldest
/// of all when every client has.
/// `said_hello` lists the handshakes in progress, oldest first.
fn to_drop(said_hello: impl IntoIterator<Item = bool>) -> usize {
    said_hello.into_iter().position(|said| !said).unwrap_or(0)
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = tokio::sync::mpsc::channel(MAX_HANDSHAKES);
        tokio::spawn(async move {
            let mut in_progress: VecDeque<Handshake> = VecDeque::new();
            loop {
                let (socket, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                in_progress.retain(|h| !h.abort.is_finished());
                if in_progress.len() >= MAX_HANDSHAKES {
                    // Let the handshakes already started read what their clients sent, so a
                    // client that said hello is known as one before anything is dropped.
                    tokio::task::yield_now().await;
                    in_progress.retain(|h| !h.abort.is_finished());
                }
                if in_progress.len() >= MAX_HANDSHAKES
                    && let Some(dropped) = in_progress.remove(to_drop(
                        in_progress.iter().map(|h| h.hello.load(Ordering::Relaxed)),
                    ))
                {
                    dropped.abort.abort();
                }
                let hello = Arc::new(AtomicBool::new(false));
                let (config, sender, said) = (config.clone(), tx.clone(), hello.clone());
                let task = tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIME, async move {
                        let start = tokio_rustls::LazyConfigAcceptor::new(
                            rustls::server::Acceptor::default(),
                            socket,
                        )
                        .await?;
                        said.store(true, Ordering::Relaxed);
                        start.into_stream(config).await
                    })
                    .await;
                    if let Ok(Ok(stream)) = handshake {
                        let _ = sender.send((stream, peer)).await;
                    }
                });
                in_progress.push_back(Handshake {
                    hello,
                    abort: task.abort_handle(),
                });
            }
        });
        Ok(TlsListener { local, accepted })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (the runtime is shutting down): wait for the shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::to_drop;

    #[test]
    fn the_oldest_silent_handshake_is_dropped_before_any_that_said_hello() {
        assert_eq!(to_drop([true, true, false, true, false]), 2);
        assert_eq!(to_drop([false, true]), 0);
        // Every client said hello: the oldest goes.
        assert_eq!(to_drop([true, true, true]), 0);
        assert_eq!(to_drop([]), 0);
    }
}
