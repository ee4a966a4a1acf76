//! One connection: let in by the limits, its request head read (with a size limit and the
//! handshake timeout), then routed to whoever serves it.
//!
//! | request | served by |
//! | --- | --- |
//! | `GET /ingest/{stream}` (WebSocket) | `ingest::websocket` |
//! | `SOURCE`/`PUT /{mount}` | `ingest::icecast` |
//! | `GET /listen/{stream}` (WebSocket) | `listener::websocket`, then a driver |
//! | `GET /{stream}.ogg`, `.mp3`, `/{stream}` | `listener::http` |
//! | `/admin/*`, `/status-json.xsl` | `icecast::admin` |
//! | `OPTIONS` | CORS preflight, libshout's `OPTIONS *` probe |
//! | `/echo` (only with `echo_endpoint`) | `listener::echo` |
//! | `/api/recordings/{stream}`, `/recordings/{stream}/{file}` | `record::serve` |
//! | `GET /{stream}.m3u8`, `/hls/{stream}/{file}` (the connection may be kept alive) | `hls` |
//! | anything else | `api.rs`: `/healthz`, `/api/streams`, `/metrics`, the web player |

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{api, Admission, Server};
use crate::conn::Conn;
use crate::deadline::{self, Deadline};
use crate::error::{Error, Refusal};
use crate::http::{self, HttpError, Request, Response};
use crate::icecast::{self, parse_mount, SERVER_ID};
use crate::{ingest, listener, proxy};

/// `GET /{stream}.m3u8` and `GET /hls/{stream}/{file}`; `None` for other paths.
async fn hls(server: &Server, request: &Request, peer: SocketAddr) -> Option<Response> {
    let (name, file) = match request.path.strip_prefix("/hls/") {
        Some(rest) => {
            let (name, file) = rest.split_once('/')?;
            (name, Some(file))
        }
        None => (request.path.strip_prefix('/')?.strip_suffix(".m3u8")?, None),
    };
    let node = &server.node;
    let (Some(stream), Some(hls)) = (node.streams.get(name), server.hls.get(name)) else {
        return Some(Response::refusal(&Refusal::NoSuchStream));
    };
    if let Err(denied) = crate::auth::check_listen_access(stream, request) {
        let refusal = Refusal::from(denied);
        node.metrics.refused(&refusal.label());
        debug!(%peer, path = %request.path, reason = %refusal, "hls request refused");
        return Some(Response::refusal(&refusal));
    }
    Some(match file {
        None => crate::hls::playlist(hls, &node.config, name, request, peer.ip()).await,
        Some(file) => match crate::hls::file(hls, file).await {
            Ok((kind, pieces)) => crate::hls::file_response(kind, file, pieces),
            Err(response) => response,
        },
    })
}

/// Time allowed to answer a connection that is refused before its request is read.
const REFUSAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection while it is served on tokio: every write has the write deadline.
type Socket = Deadline<Conn>;

/// Lets a plain connection in, reads its request head and routes it.
pub(super) async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    server: &Server,
    cancel: CancellationToken,
) {
    let proxy_protocol = server.node.config.proxy_protocol;
    let Some((admission, peer)) =
        let_in(&mut socket, peer, server, proxy_protocol, Answer::Http, &cancel).await
    else {
        return;
    };
    serve(Conn::Plain(socket), peer, server, admission, cancel).await;
}

/// How a connection refused before its request head is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// A short plain-text HTTP answer.
    Http,
    /// Nothing: the peer expects a TLS handshake, a plain-text answer would be noise.
    Close,
}

/// Lets a connection in (`max_connections`, `max_connections_per_ip`) and learns whom it is
/// from: with `proxy_protocol`, the PROXY header read first (within `handshake_timeout`)
/// names the client. A connection from a trusted proxy is counted on its client's address
/// only once that is known: here for a PROXY header, in `serve` for request headers.
/// `None` when it is refused (answered as `answer` says, and logged).
pub(super) async fn let_in(
    socket: &mut TcpStream,
    peer: SocketAddr,
    server: &Server,
    proxy_protocol: bool,
    answer: Answer,
    cancel: &CancellationToken,
) -> Option<(Admission, SocketAddr)> {
    let node = &server.node;
    let trusted = &node.config.trusted_proxies;
    if proxy_protocol && !trusted.is_empty() && !trusted.contains(peer.ip()) {
        node.metrics.refused("untrusted_proxy");
        info!(%peer, "connection refused: proxy_protocol is on and the peer is not in trusted_proxies");
        return None;
    }
    let admitted = if proxy_protocol || trusted.contains(peer.ip()) {
        server.limits.admit_deferred()
    } else {
        server.limits.admit(peer.ip())
    };
    let mut admission = match admitted {
        Ok(admission) => admission,
        Err(refusal) => {
            refuse_early(socket, server, peer, &refusal, answer).await;
            return None;
        }
    };
    if !proxy_protocol {
        return Some((admission, peer));
    }
    let timeout_after = node.config.handshake_timeout;
    let header = tokio::select! {
        () = cancel.cancelled() => return None,
        header = timeout(timeout_after, proxy::read_header(socket)) => header,
    };
    let header = match header {
        Ok(Ok(header)) => header,
        Ok(Err(err)) => {
            node.metrics.refused("proxy_protocol");
            info!(%peer, %err, "connection refused: proxy_protocol is on and it sent no valid header");
            return None;
        }
        Err(_) => {
            node.metrics.refused("proxy_protocol");
            info!(%peer, timeout = ?timeout_after, "connection refused: proxy_protocol is on and no header came in time");
            return None;
        }
    };
    let client = header.source.unwrap_or(peer);
    debug!(%peer, %client, version = header.version, "proxy protocol header");
    // A client that is itself a trusted proxy may still name another in its request head.
    if !trusted.contains(client.ip()) {
        if let Err(refusal) = admission.attribute(client.ip()) {
            refuse_early(socket, server, client, &refusal, answer).await;
            return None;
        }
    }
    Some((admission, client))
}

/// Answers a connection refused before its request was read.
async fn refuse_early(
    socket: &mut TcpStream,
    server: &Server,
    peer: SocketAddr,
    refusal: &Refusal,
    answer: Answer,
) {
    server.node.metrics.refused(&refusal.label());
    warn!(%peer, reason = %refusal, "refused before reading the request");
    match answer {
        Answer::Http => {
            let response = Response::refusal(refusal);
            let _ = timeout(REFUSAL_TIMEOUT, response.send(socket, false)).await;
        }
        Answer::Close => {
            let _ = timeout(REFUSAL_TIMEOUT, socket.shutdown()).await;
        }
    }
}

/// Reads a connection's request head, learns its client from a trusted proxy's headers,
/// routes it, and logs how it ended. HLS requests of a client that keeps its connection alive
/// are answered here, one after the other on the same connection, each next head awaited for
/// up to `handshake_timeout` (an idle connection then closes quietly); anything else is
/// routed and ends the connection.
pub(super) async fn serve(
    socket: Conn,
    peer: SocketAddr,
    server: &Server,
    admission: Admission,
    cancel: CancellationToken,
) {
    let (client, result) = read_and_route(socket, peer, server, admission, cancel).await;
    super::log_ending(client, result);
}

async fn read_and_route(
    socket: Conn,
    peer: SocketAddr,
    server: &Server,
    mut admission: Admission,
    cancel: CancellationToken,
) -> (SocketAddr, crate::Result<()>) {
    let node = &server.node;
    // Answers go out in one write each, files in large pieces: no Nagle delay for anyone.
    let _ = socket.tcp().set_nodelay(true);
    deadline::set_user_timeout(socket.tcp(), node.config.write_timeout);
    let mut socket = Deadline::new(socket, node.config.write_timeout);
    let mut buf = BytesMut::with_capacity(1024);
    let mut answered = 0u64;
    let (request, client) = loop {
        let head = tokio::select! {
            () = cancel.cancelled() => return (peer, Ok(())),
            head = timeout(node.config.handshake_timeout, http::read_request(&mut socket, &mut buf)) => head,
        };
        let request = match head {
            // A kept-alive connection that asks nothing more is closed without a word.
            Err(_) if answered > 0 => return (peer, Ok(())),
            Err(_) => {
                let refusal = Refusal::HeadTimeout;
                node.metrics.refused(&refusal.label());
                let _ = Response::refusal(&refusal).send(&mut socket, false).await;
                return (peer, Err(Error::HandshakeTimeout(node.config.handshake_timeout)));
            }
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return (peer, Ok(())),
            Ok(Err(err)) => {
                let refusal = match &err {
                    HttpError::TooLarge => Refusal::HeadTooLarge,
                    other => Refusal::Malformed(other.to_string()),
                };
                let _ = Response::refusal(&refusal).send(&mut socket, false).await;
                return (peer, Err(err.into()));
            }
        };
        // Who it is from: a trusted proxy's headers name the client (from anyone else they
        // are ignored), request by request, since a proxy may carry several clients' requests
        // on one kept-alive connection. The connection, which took no per-address place
        // until now, is counted on the client of its first request.
        let (client, via) = node.config.trusted_proxies.client(peer, &request);
        if let Some(via) = via {
            debug!(%peer, %client, header = via.header(), "client address from a trusted proxy");
        }
        if admission.is_deferred() {
            if let Err(refusal) = admission.attribute(client.ip()) {
                node.metrics.refused(&refusal.label());
                warn!(peer = %client, via = %peer, reason = %refusal, "refused: too many connections from the client's address");
                let result = Response::refusal(&refusal).send(&mut socket, false).await;
                return (client, result.map_err(Error::from));
            }
        }
        let head_only = request.method == "HEAD";
        if !(request.keep_alive() && (request.method == "GET" || head_only)) {
            break (request, client);
        }
        let Some(response) = hls(server, &request, client).await else { break (request, client) };
        let response = response.with_cors(&node.config, &request);
        if let Err(err) = response.send_keep_alive(&mut socket, head_only).await {
            return (client, Err(err.into()));
        }
        answered += 1;
    };
    // The request buffer (1-2 KiB) would otherwise live as long as the connection: keep only
    // the bytes that came after the head (usually none).
    let leftover = Bytes::copy_from_slice(&buf);
    drop(buf);
    let result = route(socket, client, server, request, leftover, admission, cancel).await;
    (client, result)
}

async fn route(
    mut socket: Socket,
    peer: SocketAddr,
    server: &Server,
    request: Request,
    leftover: Bytes,
    admission: Admission,
    cancel: CancellationToken,
) -> crate::Result<()> {
    let node = &*server.node;
    // NOTE: a task reserves room for the largest future it may await, so every WebSocket
    // listener would pay for an Icecast or WebSocket source session (about 5 KiB): those are
    // boxed, and a listener's task keeps only what a listener needs.
    match request.method.as_str() {
        "SOURCE" | "PUT" => {
            return Box::pin(ingest::icecast::serve(
                socket, peer, node, &request, &leftover, cancel,
            ))
            .await;
        }
        "OPTIONS" => {
            debug!(%peer, path = %request.path, "options request");
            let response = if request.path == "*" {
                // libshout probes with `OPTIONS *` (asking for TLS): answer plainly, no upgrade.
                Response::new(204, "text/plain", "")
                    .with_header("Allow", "GET, HEAD, PUT, SOURCE, OPTIONS")
            } else if request.path.starts_with("/admin/") {
                // No CORS for the admin API: a preflight from a page learns nothing.
                Response::new(204, "text/plain", "").with_header("Allow", "GET, HEAD")
            } else {
                http::preflight(&node.config, &request)
            };
            response.with_header("Server", SERVER_ID).send(&mut socket, false).await?;
            return Ok(());
        }
        _ => {}
    }
    if let Some(name) = request.path.strip_prefix("/ingest/") {
        let session =
            ingest::websocket::accept(socket, peer, node, &request, name, &leftover, cancel);
        return Box::pin(session).await;
    }
    if let Some(name) = request.path.strip_prefix("/listen/") {
        let name = name.to_owned();
        return listener::websocket::accept(
            socket,
            peer,
            node,
            &server.listeners,
            request,
            &name,
            leftover,
            admission,
        )
        .await;
    }
    if request.path == "/echo" && node.config.echo_endpoint && !socket.get_ref().is_tls() {
        let accept = match http::websocket_accept(&request) {
            Ok(accept) => accept,
            Err(refusal) => {
                http::refuse(&mut socket, &node.metrics, peer, &request, &refusal, &[]).await?;
                return Ok(());
            }
        };
        socket.write_all(&http::switching_protocols(&accept)).await?;
        let Some(socket) = socket.into_inner().into_plain() else { return Ok(()) };
        let write_timeout = node.config.write_timeout;
        return Ok(listener::echo::serve(socket, &leftover, write_timeout, cancel).await?);
    }
    let head_only = request.method == "HEAD";
    if request.method != "GET" && !head_only {
        let response = Response::refusal(&Refusal::Method).with_header("Allow", "GET, HEAD");
        response.send(&mut socket, false).await?;
        return Ok(());
    }
    if icecast::is_admin(&request) {
        let response = icecast::admin::serve(node, &request, peer);
        response.send(&mut socket, head_only).await?;
        return Ok(());
    }
    if crate::record::serve::claims(&request.path) {
        let recordings = server.recordings.as_ref();
        crate::record::serve::serve(&mut socket, node, recordings, &request, &cancel).await?;
        return Ok(());
    }
    if let Some(response) = hls(server, &request, peer).await {
        response.with_cors(&node.config, &request).send(&mut socket, head_only).await?;
        return Ok(());
    }
    if parse_mount(&request.path).is_some_and(|(name, _)| node.streams.get(name).is_some()) {
        // TODO(#12): its refusal and response head are written before the deadline applies
        // again in the driver (slow_listener_timeout); hand it `socket` once it takes one.
        let socket = socket.into_inner();
        return listener::http::accept(socket, peer, node, &server.listeners, &request, admission)
            .await;
    }
    api::serve(server, &request, peer, &mut socket, head_only).await?;
    Ok(())
}
