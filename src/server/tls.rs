//! `https://` and `wss://` served directly, with rustls, on a second port.
//!
//! Each TLS connection is decrypted here and relayed over loopback to the relay's own plain
//! port, so every endpoint (ingest, listeners, the API) works the same behind TLS without a
//! second code path. Trade-off: a hop through the kernel per TLS connection, and the relay
//! sees TLS peers as 127.0.0.1 (exempt from the per-address limit; this module applies it).
//! The certificate is reloaded on SIGHUP (`main.rs`) without dropping anyone.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{Server, DRAIN_TIMEOUT};
use crate::config::TlsConfig;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the certificate and key.
    #[error("certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The current TLS acceptor; `reload` swaps it for connections that arrive afterwards.
pub struct Terminator {
    config: TlsConfig,
    acceptor: RwLock<TlsAcceptor>,
}

impl Terminator {
    /// Loads the certificate chain and key named in the config.
    ///
    /// # Errors
    /// `TlsError` naming the file or the mismatch.
    pub fn new(config: TlsConfig) -> Result<Arc<Self>, TlsError> {
        let acceptor = RwLock::new(load(&config.cert, &config.key)?);
        Ok(Arc::new(Self { config, acceptor }))
    }

    /// Reads the certificate and key again; on error the old ones stay in use.
    ///
    /// # Errors
    /// `TlsError` naming the file or the mismatch.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.config.cert, &self.config.key)?;
        *self.acceptor.write().expect("tls acceptor lock poisoned") = fresh;
        info!(cert = %self.config.cert.display(), "tls certificate reloaded");
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().expect("tls acceptor lock poisoned").clone()
    }
}

fn load(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let pem_error = |path: &Path, message: String| TlsError::Pem { path: path.to_owned(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|err| pem_error(cert, err.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|err| pem_error(cert, err.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|err| pem_error(key, err.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS connections on `listener` and relays each to the plain port `plain`, until
/// `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    plain: SocketAddr,
    terminator: Arc<Terminator>,
    server: Arc<Server>,
    shutdown: impl Future<Output = ()>,
) {
    let (cancel, sessions) = (CancellationToken::new(), TaskTracker::new());
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "listening for tls");
    }
    super::accept::accept_loop(&listener, shutdown, |socket, peer| {
        let (acceptor, server, cancel) =
            (terminator.acceptor(), Arc::clone(&server), cancel.child_token());
        sessions.spawn(async move {
            let Ok(_place) = server.limits.admit_address(peer.ip()) else {
                debug!(%peer, "tls connection refused: per-address limit");
                return;
            };
            let handshake =
                timeout(server.node.config.handshake_timeout, acceptor.accept(socket)).await;
            let mut tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => return debug!(%peer, %err, "tls handshake failed"),
                Err(_) => return debug!(%peer, "tls handshake timed out"),
            };
            let mut inner = match TcpStream::connect(plain).await {
                Ok(inner) => inner,
                Err(err) => return warn!(%peer, %err, "cannot reach the relay's plain port"),
            };
            let _ = inner.set_nodelay(true);
            tokio::select! {
                () = relay_bytes(&mut tls, &mut inner) => {}
                () = async { cancel.cancelled().await; tokio::time::sleep(DRAIN_TIMEOUT).await } => {}
            }
        });
    })
    .await;
    cancel.cancel();
    sessions.close();
    let _ = timeout(DRAIN_TIMEOUT, sessions.wait()).await;
}

/// Copies both ways until the node's side closes (the node decides when a connection ends:
/// a closed listener must not live on as a half-open TLS session), or the client leaves.
async fn relay_bytes(tls: &mut tokio_rustls::server::TlsStream<TcpStream>, inner: &mut TcpStream) {
    use tokio::io::AsyncWriteExt;
    let (mut tls_read, mut tls_write) = tokio::io::split(tls);
    let (mut inner_read, mut inner_write) = inner.split();
    let to_client = async {
        let _ = tokio::io::copy(&mut inner_read, &mut tls_write).await;
        let _ = tls_write.shutdown().await;
    };
    let to_relay = async {
        let _ = tokio::io::copy(&mut tls_read, &mut inner_write).await;
        let _ = inner_write.shutdown().await;
    };
    tokio::pin!(to_client, to_relay);
    tokio::select! {
        () = &mut to_client => {}
        () = &mut to_relay => {
            // The client is done sending; let the relay finish its answer, briefly.
            let _ = timeout(std::time::Duration::from_secs(5), to_client).await;
        }
    }
}
