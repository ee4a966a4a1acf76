//! The server: the listening sockets, the connection limits, routing and graceful drain.
//!
//! `Server::run` owns the plain listening socket until its `shutdown` future completes; each
//! connection is a task with a child cancellation token (`router.rs` reads its request head
//! and hands it to the ingest, the listeners, the Icecast admin or the HTTP API). On shutdown
//! every WebSocket gets 1001 and the server waits (up to `DRAIN_TIMEOUT`) for them.
//! `tls.rs` serves the same endpoints over TLS on a second port.

mod accept;
mod admission;
mod api;
mod router;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
#[cfg(feature = "cluster")]
use tracing::error;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::hls::HlsStream;
use crate::listener::Hub;
use crate::node::Node;
use crate::record::Recordings;
use crate::relay::Stream;

pub use admission::{Admission, Limits};

/// How long shutdown waits for connections to close.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pending connections the kernel queues before `accept`.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A running node's server side: its shared state, its listener drivers, its HLS windows
/// and its limits.
pub struct Server {
    node: Arc<Node>,
    listeners: Hub,
    hls: HashMap<String, Arc<HlsStream>>,
    recordings: Option<Arc<Recordings>>,
    limits: Arc<Limits>,
    web_root: PathBuf,
}

impl Server {
    /// The node, drivers and limits for a config.
    pub fn new(config: Config) -> Arc<Self> {
        let web_root = config.web_root.clone().unwrap_or_else(default_web_root);
        let listeners = Hub::new(&config);
        let node = Node::new(config);
        let limits = Limits::new(&node.config, node.metrics.connections.clone());
        let hls = if node.config.hls {
            let hls = |s: &Arc<Stream>| (s.config().name.clone(), HlsStream::new(&node.config, s));
            node.streams.iter().map(hls).collect()
        } else {
            HashMap::new()
        };
        let recordings = Recordings::new(&node.config);
        Arc::new(Self { node, listeners, hls, recordings, limits, web_root })
    }

    /// The node this server serves.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// `stream`'s HLS clients that polled lately, counted now (0 without HLS).
    pub fn hls_listeners(&self, stream: &Stream) -> usize {
        self.hls.get(&stream.config().name).map_or(0, |hls| hls.listeners())
    }

    /// Serves connections on `listener` until `shutdown` completes, then drains.
    ///
    /// # Errors
    /// Never fails today; the `Result` leaves room for fatal listener errors.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> crate::Result<()> {
        self.serve(listener, None, shutdown).await
    }

    /// Serves plain connections on `plain` and, with `tls`, TLS connections on its listener
    /// with its certificate, until `shutdown` completes; then drains both.
    ///
    /// # Errors
    /// Never fails today; the `Result` leaves room for fatal listener errors.
    pub async fn serve(
        self: Arc<Self>,
        plain: TcpListener,
        tls: Option<(TcpListener, Arc<tls::Terminator>)>,
        shutdown: impl Future<Output = ()>,
    ) -> crate::Result<()> {
        let (cancel, sessions) = (CancellationToken::new(), TaskTracker::new());
        let stop = CancellationToken::new();
        if let Ok(addr) = plain.local_addr() {
            info!(%addr, "listening");
            if self.node.config.proxy_protocol {
                info!(%addr, "every connection must start with a proxy protocol header");
            }
        }
        let config = &self.node.config;
        let proxy_protocol =
            config.proxy_protocol || config.tls.as_ref().is_some_and(|t| t.proxy_protocol);
        if proxy_protocol && config.trusted_proxies.is_empty() {
            warn!("proxy_protocol is on and trusted_proxies is empty: any peer that reaches the port can claim any address");
        }
        if !config.trusted_proxies.is_empty() {
            info!(trusted_proxies = %config.trusted_proxies, "client addresses from these proxies' headers");
        }
        #[cfg(feature = "cluster")]
        #[cfg_attr(not(feature = "source"), allow(unused_variables))]
        let cluster = match &self.node.config.cluster {
            Some(config) => {
                let cluster = crate::cluster::Cluster::start(
                    &self.node,
                    config.clone(),
                    &sessions,
                    cancel.child_token(),
                );
                match cluster.await {
                    Ok(cluster) => Some(cluster),
                    Err(err) => {
                        error!(%err, "cluster: cannot use the nats settings; serving as a single node");
                        None
                    }
                }
            }
            None => None,
        };
        for stream in self.node.streams.iter() {
            if let Some(playlist) = &stream.config().playlist {
                // In a cluster the auto-DJ runs on the node that holds its lease.
                #[cfg(all(feature = "cluster", feature = "source"))]
                if let Some(cluster) = &cluster {
                    cluster.spawn_autodj(&sessions, stream, playlist, cancel.child_token());
                } else {
                    spawn_autodj(&sessions, stream, playlist, cancel.child_token());
                }
                #[cfg(not(all(feature = "cluster", feature = "source")))]
                spawn_autodj(&sessions, stream, playlist, cancel.child_token());
            }
            if let Some(hls) = self.hls.get(&stream.config().name) {
                let (stream, hls) = (Arc::clone(stream), Arc::clone(hls));
                sessions.spawn(crate::hls::run(stream, hls, cancel.child_token()));
            }
            if let Some(recordings) = self.recordings.as_ref().filter(|_| stream.config().record) {
                let metrics = self.node.metrics.recording(&stream.config().name);
                let (stream, recordings) = (Arc::clone(stream), Arc::clone(recordings));
                sessions.spawn(crate::record::run(
                    stream,
                    recordings,
                    metrics,
                    cancel.child_token(),
                ));
            }
        }
        if let Some(recordings) = &self.recordings {
            let (recordings, node) = (Arc::clone(recordings), Arc::clone(&self.node));
            sessions.spawn(crate::record::sweep(recordings, node, cancel.child_token()));
        }
        let plain_loop = accept::accept_loop(&plain, stop.cancelled(), |socket, peer| {
            let server = Arc::clone(&self);
            let cancel = cancel.child_token();
            sessions.spawn(async move {
                router::connection(socket, peer, &server, cancel).await;
            });
        });
        let tls_loop = async {
            let Some((listener, terminator)) = &tls else { return };
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "listening for tls");
                if terminator.proxy_protocol() {
                    info!(%addr, "every tls connection must start with a proxy protocol header");
                }
            }
            accept::accept_loop(listener, stop.cancelled(), |socket, peer| {
                let (server, acceptor) = (Arc::clone(&self), terminator.acceptor());
                let cancel = cancel.child_token();
                sessions.spawn(async move {
                    tls::connection(socket, peer, &server, acceptor, cancel).await;
                });
            })
            .await;
        };
        let watch = async {
            shutdown.await;
            stop.cancel();
        };
        tokio::join!(watch, plain_loop, tls_loop);
        info!(open = sessions.len(), "shutting down");
        drop((plain, tls));
        cancel.cancel();
        sessions.close();
        // The connection tasks end first: one may be handing a listener to a driver, and that
        // listener must be there to get its 1001 when the drivers shut down.
        let drained = async {
            sessions.wait().await;
            self.listeners.shutdown().await;
        };
        if timeout(DRAIN_TIMEOUT, drained).await.is_err() {
            warn!(open = sessions.len(), "drain timed out");
        }
        Ok(())
    }
}

/// One log line for a connection that failed: debug when the peer simply went away.
pub(super) fn log_ending(peer: SocketAddr, result: crate::Result<()>) {
    if let Err(err) = result {
        if err.is_write_stall() {
            // As for a listener closed for being too slow: policy, worth a line by default.
            info!(%peer, %err, "connection dropped: the peer stopped reading");
        } else if err.is_expected() {
            debug!(%peer, %err, "connection ended");
        } else {
            warn!(%peer, %err, "connection failed");
        }
    }
}

/// Serves `config` on `listener` until `shutdown` completes, then drains.
///
/// # Errors
/// Never fails today; the `Result` leaves room for fatal listener errors.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> crate::Result<()> {
    Server::new(config).run(listener, shutdown).await
}

/// `web-player/` in the working directory, else the one in the source tree it was built from.
fn default_web_root() -> PathBuf {
    let here = PathBuf::from("web-player");
    if here.join("index.html").is_file() {
        here
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web-player")
    }
}

/// Raises this process's soft limit on open files to its hard limit; returns the new limit.
///
/// # Errors
/// When the limits cannot be read or set.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Binds a listening socket with a deep accept backlog.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG as u32)
}

#[cfg(feature = "source")]
fn spawn_autodj(
    sessions: &TaskTracker,
    stream: &Arc<Stream>,
    playlist: &std::path::Path,
    cancel: CancellationToken,
) {
    sessions.spawn(crate::push::autodj::run(Arc::clone(stream), playlist.to_owned(), cancel));
}

#[cfg(not(feature = "source"))]
fn spawn_autodj(_: &TaskTracker, stream: &Arc<Stream>, _: &std::path::Path, _: CancellationToken) {
    warn!(stream = %stream.config().name, "this build has no source feature: the playlist is not played");
}
