//! The accept loop, request routing, the WebSocket handshake, and graceful drain.
//!
//! `run` owns the listening socket until its `shutdown` future completes; each connection is a
//! task with a child cancellation token, so shutdown closes every WebSocket with 1001 and waits
//! (up to `DRAIN_TIMEOUT`) for them. Refusals (401/403/404/409/503) are answered here, before
//! any upgrade, with a plain-text reason and one log line.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::http::{self, Request, Response};
use crate::listener::NewListener;
use crate::metrics::Metrics;
use crate::relay::{SourceKind, Stream, Streams};
use crate::{ingest, Error};

/// How long shutdown waits for connections to close.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Pending connections the kernel queues before `accept`.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Shared state of a running relay.
pub struct Relay {
    /// The configuration it runs with.
    pub config: Config,
    /// Its streams.
    pub streams: Streams,
    /// Its metrics.
    pub metrics: Metrics,
    /// Icecast-facing state: source announcements, listed clients, listener peaks.
    pub icecast: crate::icecast::Icecast,
    /// The threads that write to WebSocket listeners.
    pub listeners: crate::listener::Hub,
    web_root: PathBuf,
    connections: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Relay {
    /// Builds the streams and metrics for a config.
    pub fn new(config: Config) -> Arc<Self> {
        let metrics = Metrics::new();
        let streams = Streams::new(&config.streams, &metrics);
        let web_root = config.web_root.clone().unwrap_or_else(default_web_root);
        let connections = Arc::new(Semaphore::new(config.max_connections));
        let icecast = crate::icecast::Icecast::new();
        let listeners = crate::listener::Hub::new(&config);
        Arc::new(Self {
            config,
            streams,
            metrics,
            icecast,
            listeners,
            web_root,
            connections,
            per_ip: Mutex::default(),
        })
    }
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

/// Serves connections on `listener` until `shutdown` completes, then drains.
///
/// # Errors
/// Never fails today; the `Result` leaves room for fatal listener errors.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> crate::Result<()> {
    run_relay(listener, Relay::new(config), shutdown).await
}

/// Like `run`, with a relay built by the caller (to reach its streams and metrics).
///
/// # Errors
/// Never fails today; the `Result` leaves room for fatal listener errors.
pub async fn run_relay(
    listener: TcpListener,
    relay: Arc<Relay>,
    shutdown: impl Future<Output = ()>,
) -> crate::Result<()> {
    let (cancel, sessions) = (CancellationToken::new(), TaskTracker::new());
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "listening");
    }
    for stream in relay.streams.iter() {
        if let Some(playlist) = &stream.config().playlist {
            spawn_autodj(&sessions, stream, playlist, cancel.child_token());
        }
    }
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(%err, "accept failed");
                    sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let relay = Arc::clone(&relay);
        let cancel = cancel.child_token();
        let permit = Arc::clone(&relay.connections).try_acquire_owned().ok();
        sessions.spawn(async move {
            if let Err(err) = connection(socket, peer, Arc::clone(&relay), permit, cancel).await {
                if err.is_expected() {
                    debug!(%peer, %err, "connection ended");
                } else {
                    warn!(%peer, %err, "connection failed");
                }
            }
        });
    }
    info!(open = sessions.len(), "shutting down");
    drop(listener);
    cancel.cancel();
    sessions.close();
    // The connection tasks end first: one may be handing a listener to a driver, and that
    // listener must be there to get its 1001 when the drivers shut down.
    let drained = async {
        sessions.wait().await;
        relay.listeners.shutdown().await;
    };
    if timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        warn!(open = sessions.len(), "drain timed out");
    }
    Ok(())
}

impl Relay {
    /// Counts a connection from `ip`; false when that address is at its limit.
    pub(crate) fn admit_ip(&self, ip: IpAddr) -> bool {
        if self.config.ip_limit_exempt.contains(&ip) {
            return true;
        }
        let mut per_ip = self.per_ip.lock().expect("per-ip lock poisoned");
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.config.max_connections_per_ip {
            return false;
        }
        *count += 1;
        true
    }

    /// Forgets one connection from `ip`; the map never keeps addresses with no connection.
    pub(crate) fn release_ip(&self, ip: IpAddr) {
        if self.config.ip_limit_exempt.contains(&ip) {
            return;
        }
        let mut per_ip = self.per_ip.lock().expect("per-ip lock poisoned");
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(feature = "source")]
fn spawn_autodj(
    sessions: &TaskTracker,
    stream: &Arc<Stream>,
    playlist: &std::path::Path,
    cancel: CancellationToken,
) {
    sessions.spawn(crate::source::autodj::run(Arc::clone(stream), playlist.to_owned(), cancel));
}

#[cfg(not(feature = "source"))]
fn spawn_autodj(_: &TaskTracker, stream: &Arc<Stream>, _: &std::path::Path, _: CancellationToken) {
    warn!(stream = %stream.config().name, "this build has no source feature: the playlist is not played");
}

/// A connection's place in the relay's limits (the connection permit, the per-address count,
/// the open-connections gauge), given back when dropped: at the end of the connection's task,
/// or when a listener handed to a driver leaves.
struct Admission {
    relay: Arc<Relay>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.relay.metrics.connections.dec();
        self.relay.release_ip(self.ip);
    }
}

/// One TCP connection: read the request head, route it.
async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    relay_arc: Arc<Relay>,
    permit: Option<OwnedSemaphorePermit>,
    cancel: CancellationToken,
) -> crate::Result<()> {
    let relay = &*relay_arc;
    let Some(permit) = permit else {
        relay.metrics.refused("max_connections");
        warn!(%peer, limit = relay.config.max_connections, "refused: connection limit reached");
        let refusal = Response::text(503, "the relay is at its connection limit, try again later");
        let _ = timeout(Duration::from_secs(1), refusal.send(&mut socket, false)).await;
        return Ok(());
    };
    if !relay.admit_ip(peer.ip()) {
        relay.metrics.refused("max_connections_per_ip");
        warn!(%peer, limit = relay.config.max_connections_per_ip, "refused: per-address connection limit reached");
        let refusal = Response::text(503, "too many connections from your address");
        let _ = timeout(Duration::from_secs(1), refusal.send(&mut socket, false)).await;
        return Ok(());
    }
    relay.metrics.connections.inc();
    let admission = Admission { relay: Arc::clone(&relay_arc), ip: peer.ip(), _permit: permit };
    let mut buf = BytesMut::with_capacity(1024);
    let head = tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        head = timeout(relay.config.handshake_timeout, http::read_request(&mut socket, &mut buf)) => head,
    };
    let request = match head {
        Err(_) => {
            relay.metrics.refused("handshake_timeout");
            let _ = Response::text(408, "request head not received in time")
                .send(&mut socket, false)
                .await;
            return Err(Error::HandshakeTimeout(relay.config.handshake_timeout));
        }
        Ok(Ok(Some(request))) => request,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(err)) => {
            let status = if matches!(err, http::HttpError::TooLarge) { 431 } else { 400 };
            let _ = Response::text(status, &err.to_string()).send(&mut socket, false).await;
            return Err(err.into());
        }
    };
    // The request buffer (1-2 KiB) would otherwise live as long as the connection: keep only
    // the bytes that came after the head (usually none).
    let leftover = bytes::Bytes::copy_from_slice(&buf);
    drop(buf);
    route(socket, peer, relay, request, leftover, admission, cancel).await
}

async fn route(
    mut socket: TcpStream,
    peer: SocketAddr,
    relay: &Relay,
    request: Request,
    leftover: bytes::Bytes,
    admission: Admission,
    cancel: CancellationToken,
) -> crate::Result<()> {
    // Every route but a listener's ends with this task, and `admission` with it.
    let leftover_bytes = leftover.clone();
    let leftover = &leftover_bytes[..];
    let head_only = request.method == "HEAD";
    // NOTE: a task reserves room for the largest future it may await, so every WebSocket
    // listener would pay for an Icecast session (about 5 KiB) and a source session: those are
    // boxed, and a listener's task keeps only what a listener needs.
    if crate::icecast::claims(&request, relay) {
        return Box::pin(crate::icecast::serve(socket, peer, relay, request, leftover, cancel))
            .await;
    }
    if let Some(name) = request.path.strip_prefix("/ingest/") {
        return Box::pin(ingest(socket, peer, relay, &request, name, leftover, cancel)).await;
    }
    if request.path.starts_with("/listen/") {
        return listen(socket, peer, relay, request, leftover_bytes, admission).await;
    }
    if request.path == "/echo" && relay.config.echo_endpoint {
        let accept = match upgrade_key(&request) {
            Ok(accept) => accept,
            Err((status, reason)) => {
                return refuse(&mut socket, relay, peer, &request.path, status, reason).await
            }
        };
        tokio::io::AsyncWriteExt::write_all(&mut socket, &switching_protocols(&accept)).await?;
        socket.set_nodelay(true)?;
        return Ok(crate::echo::serve(socket, leftover, cancel).await?);
    }
    if request.method != "GET" && !head_only {
        let response = Response::text(405, "method not allowed").with_header("Allow", "GET, HEAD");
        response.send(&mut socket, false).await?;
        return Ok(());
    }
    let response = match request.path.as_str() {
        "/healthz" => Response::text(200, "ok"),
        "/api/streams" => {
            crate::icecast::with_cors(http::streams_json(&relay.streams), &relay.config, &request)
        }
        "/metrics" => {
            for stream in relay.streams.iter() {
                let _ = stream.info();
            }
            Response::new(200, "text/plain; version=0.0.4; charset=utf-8", relay.metrics.render())
        }
        path => http::static_file(&relay.web_root, path).await,
    };
    response.send(&mut socket, head_only).await?;
    Ok(())
}

/// Refuses a request before the upgrade: one log line, a metric, a plain-text answer.
async fn refuse(
    socket: &mut TcpStream,
    relay: &Relay,
    peer: SocketAddr,
    path: &str,
    status: u16,
    reason: &str,
) -> crate::Result<()> {
    relay.metrics.refused(&status.to_string());
    info!(%peer, %path, status, %reason, "refused");
    let mut response = Response::text(status, reason);
    if status == 401 {
        response = response.with_header("WWW-Authenticate", "Bearer realm=\"onair\"");
    }
    response.send(socket, false).await?;
    Ok(())
}

/// Checks the upgrade headers; returns the `Sec-WebSocket-Accept` value.
fn upgrade_key(request: &Request) -> Result<String, (u16, &'static str)> {
    if request.method != "GET" {
        return Err((405, "WebSocket endpoints take GET"));
    }
    if !request.header_has_token("upgrade", "websocket")
        || !request.header_has_token("connection", "upgrade")
    {
        return Err((426, "this is a WebSocket endpoint: send Upgrade: websocket"));
    }
    if request.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err((426, "only WebSocket version 13 is supported"));
    }
    match request.header("sec-websocket-key") {
        Some(key) if !key.trim().is_empty() => Ok(derive_accept_key(key.trim().as_bytes())),
        _ => Err((400, "missing Sec-WebSocket-Key")),
    }
}

fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// The key a source presents: `Authorization: Bearer KEY`, else `?key=KEY`.
fn presented_key(request: &Request) -> Option<String> {
    let bearer = request.header("authorization").and_then(|value| {
        let (scheme, key) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim().to_owned())
    });
    bearer.or_else(|| request.query_param("key"))
}

/// Constant-time key comparison (the length is not secret).
pub fn key_matches(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

fn origin_allowed(relay: &Relay, request: &Request) -> bool {
    match (&relay.config.allowed_origins, request.header("origin")) {
        (None, _) | (Some(_), None) => true,
        (Some(allowed), Some(origin)) => {
            allowed.iter().any(|a| a.eq_ignore_ascii_case(origin.trim()))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn ingest(
    mut socket: TcpStream,
    peer: SocketAddr,
    relay: &Relay,
    request: &Request,
    name: &str,
    leftover: &[u8],
    cancel: CancellationToken,
) -> crate::Result<()> {
    let path = &request.path;
    let accept = match upgrade_key(request) {
        Ok(accept) => accept,
        Err((status, reason)) => {
            return refuse(&mut socket, relay, peer, path, status, reason).await
        }
    };
    if !origin_allowed(relay, request) {
        return refuse(&mut socket, relay, peer, path, 403, "origin not allowed").await;
    }
    let Some(stream) = relay.streams.get(name) else {
        return refuse(&mut socket, relay, peer, path, 404, "no such stream").await;
    };
    let authorized = match (&stream.config().key, presented_key(request)) {
        (Some(expected), Some(presented)) => key_matches(expected, &presented),
        _ => false,
    };
    if !authorized {
        return refuse(&mut socket, relay, peer, path, 401, "missing or wrong stream key").await;
    }
    if !leftover.is_empty() {
        return refuse(
            &mut socket,
            relay,
            peer,
            path,
            400,
            "data sent before the handshake completed",
        )
        .await;
    }
    let source = match stream.attach(SourceKind::Live) {
        Ok(source) => source,
        Err(err) => return refuse(&mut socket, relay, peer, path, 409, &err.to_string()).await,
    };
    tokio::io::AsyncWriteExt::write_all(&mut socket, &switching_protocols(&accept)).await?;
    socket.set_nodelay(true)?;
    info!(stream = %name, %peer, "source connected");
    let result = ingest::serve(socket, source, &relay.config, peer, cancel).await;
    info!(stream = %name, %peer, "source disconnected");
    result
}

/// A WebSocket listener on `/listen/{name}`: checked and upgraded here, then handed to a
/// listener driver with its admission (this task ends).
async fn listen(
    mut socket: TcpStream,
    peer: SocketAddr,
    relay: &Relay,
    request: Request,
    leftover: bytes::Bytes,
    admission: Admission,
) -> crate::Result<()> {
    let path = &request.path;
    let name = path.strip_prefix("/listen/").unwrap_or_default();
    let accept = match upgrade_key(&request) {
        Ok(accept) => accept,
        Err((status, reason)) => {
            return refuse(&mut socket, relay, peer, path, status, reason).await
        }
    };
    let Some(stream) = relay.streams.get(name) else {
        return refuse(&mut socket, relay, peer, path, 404, "no such stream").await;
    };
    if let Err(denied) = check_listen_access(stream, &request) {
        return refuse(&mut socket, relay, peer, path, denied.status(), &denied.to_string()).await;
    }
    let (consumer, first) = match Stream::subscribe(stream) {
        Ok(subscribed) => subscribed,
        Err(err) => return refuse(&mut socket, relay, peer, path, 503, &err.to_string()).await,
    };
    tokio::io::AsyncWriteExt::write_all(&mut socket, &switching_protocols(&accept)).await?;
    tune_listener_socket(&socket, relay.config.listener_kernel_bytes);
    debug!(stream = %name, %peer, "listener connected");
    let client = crate::icecast::Client {
        stream: name.to_owned(),
        peer,
        user_agent: request.header("user-agent").map(str::to_owned),
        connected: std::time::Instant::now(),
        kind: "websocket",
    };
    let listed = relay.icecast.add_client(client, stream.listener_count());
    let socket = socket.into_std()?;
    let listener = NewListener {
        socket,
        peer,
        leftover,
        consumer,
        first,
        lease: Box::new((admission, listed)),
    };
    if let Err(listener) = relay.listeners.add(listener) {
        debug!(stream = %name, peer = %listener.peer, "listener refused: the relay is shutting down");
    }
    Ok(())
}

/// A stream with a `listen_secret` only admits listeners with a valid signed link.
///
/// # Errors
/// Why the link is refused; `Denied::status` gives the HTTP status.
pub fn check_listen_access(
    stream: &Stream,
    request: &Request,
) -> Result<(), crate::access::Denied> {
    let Some(secret) = &stream.config().listen_secret else { return Ok(()) };
    crate::access::verify(
        secret,
        &stream.config().name,
        request.query_param("expires").as_deref(),
        request.query_param("sig").as_deref(),
        crate::access::unix_now(),
    )
}

/// No Nagle delay, and a small kernel send buffer: stale audio must wait in the ring, where
/// it can still be skipped, not in the kernel, where it cannot.
fn tune_listener_socket(socket: &TcpStream, kernel_bytes: usize) {
    let _ = socket.set_nodelay(true);
    let sock = socket2::SockRef::from(socket);
    if let Err(err) = sock.set_send_buffer_size(kernel_bytes) {
        debug!(%err, "cannot set SO_SNDBUF");
    }
}
