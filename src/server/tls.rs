//! `https://` and `wss://` served directly, with rustls, on a second port.
//!
//! A TLS connection is let in by the same limits as a plain one (counted on its real
//! address), shakes hands here, and then takes the same path: the router, the sessions, and
//! for listeners the same driver threads, which encrypt what they write (one record per
//! batch). The certificate is reloaded on SIGHUP (`main.rs`) without dropping anyone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Server;
use crate::config::TlsConfig;
use crate::conn::Conn;

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

    pub(super) fn acceptor(&self) -> TlsAcceptor {
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
    // A listener's session leaves rustls after the handshake: the driver seals its records.
    crate::listener::tls::prepare(&mut config);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One TLS connection: let in by the limits (the connection permit and the peer's real
/// address, before the handshake), the handshake (within `handshake_timeout`), then the same
/// routing as a plain connection.
pub(super) async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    server: &Server,
    acceptor: TlsAcceptor,
    cancel: CancellationToken,
) -> crate::Result<()> {
    let admission = match server.limits.admit(peer.ip()) {
        Ok(admission) => admission,
        Err(refusal) => {
            // No answer: the peer expects a handshake, a plain-text refusal would be noise.
            server.node.metrics.refused(&refusal.label());
            info!(%peer, reason = %refusal, "tls connection refused");
            let _ = socket.shutdown().await;
            return Ok(());
        }
    };
    let handshake = tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        handshake = timeout(server.node.config.handshake_timeout, acceptor.accept(socket)) => handshake,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            debug!(%peer, %err, "tls handshake failed");
            return Ok(());
        }
        Err(_) => {
            debug!(%peer, "tls handshake timed out");
            return Ok(());
        }
    };
    super::router::serve(Conn::Tls(Box::new(tls)), peer, server, admission, cancel).await
}
