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
use tracing::{debug, warn};

use super::{api, Admission, Server};
use crate::conn::Conn;
use crate::error::{Error, Refusal};
use crate::http::{self, HttpError, Request, Response};
use crate::icecast::{self, parse_mount, SERVER_ID};
use crate::{ingest, listener};

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

/// Lets a plain connection in, reads its request head and routes it.
pub(super) async fn connection(
    mut socket: TcpStream,
    peer: SocketAddr,
    server: &Server,
    cancel: CancellationToken,
) -> crate::Result<()> {
    let Some(admission) = admit(&mut socket, peer, server).await else { return Ok(()) };
    serve(Conn::Plain(socket), peer, server, admission, cancel).await
}

/// Lets a connection in (`max_connections`, `max_connections_per_ip`), or refuses it with a
/// short plain-text answer.
pub(super) async fn admit(
    socket: &mut TcpStream,
    peer: SocketAddr,
    server: &Server,
) -> Option<Admission> {
    match server.limits.admit(peer.ip()) {
        Ok(admission) => Some(admission),
        Err(refusal) => {
            server.node.metrics.refused(&refusal.label());
            warn!(%peer, reason = %refusal, "refused before reading the request");
            let answer = Response::refusal(&refusal);
            let _ = timeout(REFUSAL_TIMEOUT, answer.send(socket, false)).await;
            None
        }
    }
}

/// Reads a connection's request head and routes it. HLS requests of a client that keeps
/// its connection alive are answered here, one after the other on the same connection, each
/// next head awaited for up to `handshake_timeout` (an idle connection then closes quietly);
/// anything else is routed and ends the connection.
pub(super) async fn serve(
    mut socket: Conn,
    peer: SocketAddr,
    server: &Server,
    admission: Admission,
    cancel: CancellationToken,
) -> crate::Result<()> {
    let node = &server.node;
    let mut buf = BytesMut::with_capacity(1024);
    let mut answered = 0u64;
    let request = loop {
        let head = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            head = timeout(node.config.handshake_timeout, http::read_request(&mut socket, &mut buf)) => head,
        };
        let request = match head {
            // A kept-alive connection that asks nothing more is closed without a word.
            Err(_) if answered > 0 => return Ok(()),
            Err(_) => {
                let refusal = Refusal::HeadTimeout;
                node.metrics.refused(&refusal.label());
                let _ = Response::refusal(&refusal).send(&mut socket, false).await;
                return Err(Error::HandshakeTimeout(node.config.handshake_timeout));
            }
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(err)) => {
                let refusal = match &err {
                    HttpError::TooLarge => Refusal::HeadTooLarge,
                    other => Refusal::Malformed(other.to_string()),
                };
                let _ = Response::refusal(&refusal).send(&mut socket, false).await;
                return Err(err.into());
            }
        };
        let head_only = request.method == "HEAD";
        if !(request.keep_alive() && (request.method == "GET" || head_only)) {
            break request;
        }
        let Some(response) = hls(server, &request, peer).await else { break request };
        let response = response.with_cors(&node.config, &request);
        response.send_keep_alive(&mut socket, head_only).await?;
        answered += 1;
    };
    // The request buffer (1-2 KiB) would otherwise live as long as the connection: keep only
    // the bytes that came after the head (usually none).
    let leftover = Bytes::copy_from_slice(&buf);
    drop(buf);
    route(socket, peer, server, request, leftover, admission, cancel).await
}

async fn route(
    mut socket: Conn,
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
        let lease = Box::new(admission);
        return listener::websocket::accept(
            socket,
            peer,
            node,
            &server.listeners,
            request,
            &name,
            leftover,
            lease,
        )
        .await;
    }
    if request.path == "/echo" && node.config.echo_endpoint && !socket.is_tls() {
        let accept = match http::websocket_accept(&request) {
            Ok(accept) => accept,
            Err(refusal) => {
                http::refuse(&mut socket, &node.metrics, peer, &request, &refusal, &[]).await?;
                return Ok(());
            }
        };
        socket.write_all(&http::switching_protocols(&accept)).await?;
        let Some(socket) = socket.into_plain() else { return Ok(()) };
        socket.set_nodelay(true)?;
        return Ok(listener::echo::serve(socket, &leftover, cancel).await?);
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
        let lease = Box::new(admission);
        return listener::http::accept(socket, peer, node, &server.listeners, &request, lease)
            .await;
    }
    let response = api::answer(server, &request).await;
    response.send(&mut socket, head_only).await?;
    Ok(())
}
