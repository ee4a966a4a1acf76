//! The node's plain HTTP endpoints: `/healthz`, `/api/streams` (JSON), `/metrics`
//! (Prometheus) and the web player's files.
//!
//! Only the player's own assets are served from `web_root`: files with an asset's extension
//! (no READMEs, `package.json` or source maps), no dot-files, nothing a symlink leads out of the
//! root. They are streamed in `STATIC_CHUNK_BYTES` pieces, never held whole, through the
//! connection's write deadline. Pages get a Content-Security-Policy and no Referer leaves
//! them (the player's URL may carry a signed link).

use std::path::{Component, Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use std::net::SocketAddr;
use std::sync::Arc;

use super::Server;
use crate::auth;
use crate::error::Refusal;
use crate::http::{Request, Response};
use crate::metrics::StreamLabel;
use crate::node::Node;
use crate::relay::{Stream, StreamInfo};

/// Bytes of a static file read and written at a time.
const STATIC_CHUNK_BYTES: usize = 64 << 10;

/// Answers a plain GET or HEAD that no one else claimed.
///
/// # Errors
/// Socket errors (`TimedOut` when the peer stops reading).
pub(super) async fn serve(
    server: &Server,
    request: &Request,
    peer: SocketAddr,
    socket: &mut (impl AsyncWrite + Unpin),
    head_only: bool,
) -> std::io::Result<()> {
    let node = &server.node;
    let response = match request.path.as_str() {
        "/healthz" => Response::text(200, "ok"),
        "/api/streams" => streams_json(server).with_cors(&node.config, request),
        "/metrics" => metrics(server, request, peer),
        path => return static_file(&server.web_root, request, path, socket, head_only).await,
    };
    response.send(socket, head_only).await
}

/// The Content-Security-Policy of the player and broadcaster pages: their own scripts,
/// styles and icon; WebAssembly compiled from the vendored decoder (`wasm-unsafe-eval`);
/// WebSockets and fetches to the relay itself; no plugins, no framing by other sites.
fn content_security_policy(request: &Request) -> String {
    // `'self'` covers ws:/wss: to the page's own host in CSP 3; the explicit sources help
    // browsers that predate it. A Host header is only used when it is a plain host[:port].
    let own = request
        .header("host")
        .map(str::trim)
        .filter(|h| {
            !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .map(|h| format!(" ws://{h} wss://{h}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self'; connect-src 'self'{own}; media-src 'self' blob:; object-src 'none'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// `GET /api/streams`. A private stream (`listen_secret`) is listed by name, whether it is
/// live and that it is private, nothing more: the player opened from a signed link finds it,
/// nobody learns what it plays, to whom, or how much (nor, in a cluster, where). A public
/// stream also has its listeners on every node of the cluster (`cluster_listeners`) and the
/// node its source is on (`origin`).
fn streams_json(server: &Server) -> Response {
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Listing {
        Public(Box<Info>),
        Private { name: String, live: bool, private: bool },
    }
    /// A stream's snapshot and what only the server knows of it.
    #[derive(serde::Serialize)]
    struct Info {
        #[serde(flatten)]
        stream: StreamInfo,
        /// HLS clients that polled recently (they are not in `listeners`).
        hls_listeners: usize,
        /// Its shows are recorded (`/api/recordings/{stream}` lists them).
        recorded: bool,
        /// Its listeners on every node of the cluster (`listeners` on a node that runs alone).
        cluster_listeners: usize,
        /// Its HLS clients on every node (`hls_listeners` on a node that runs alone).
        cluster_hls_listeners: usize,
        /// In a cluster, the node its source is on.
        #[serde(skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    }
    #[derive(serde::Serialize)]
    struct Body {
        /// This node's name, in a cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        streams: Vec<Listing>,
    }
    let node = &server.node;
    let listing = |stream: &Arc<Stream>| match stream.config().listen_secret {
        Some(_) => Listing::Private {
            name: stream.config().name.clone(),
            live: stream.is_live(),
            private: true,
        },
        None => {
            let hls_listeners = server.hls_listeners(stream);
            Listing::Public(Box::new(Info {
                stream: stream.info(),
                hls_listeners,
                recorded: server.recordings.is_some() && stream.config().record,
                cluster_listeners: node.cluster_listeners(stream),
                cluster_hls_listeners: node.cluster_hls_listeners(stream, hls_listeners),
                origin: node.origin(stream),
            }))
        }
    };
    let name = node.cluster.get().map(|c| c.node().to_owned());
    let body = Body { node: name, streams: node.streams.iter().map(listing).collect() };
    let json = serde_json::to_vec(&body).expect("stream info always serializes");
    Response::new(200, "application/json", json).with_header("Cache-Control", "no-store")
}

/// `GET /metrics`: every figure of the public streams and the node; a private stream's series
/// only for a scraper that authenticates with `admin_password` (Basic, any user, or Bearer).
fn metrics(server: &Server, request: &Request, peer: SocketAddr) -> Response {
    let node: &Node = &server.node;
    let presented = request.header("authorization").is_some();
    let admin = || {
        auth::admin_password_matches(&node.config, request)
            || auth::bearer_matches(node.config.admin_password.as_deref(), request)
    };
    let full = match node.logins.verify(peer.ip(), presented, admin) {
        Ok(full) => full,
        Err(throttled) => {
            let refusal = Refusal::from(throttled);
            node.metrics.refused(&refusal.label());
            return Response::refusal(&refusal);
        }
    };
    if presented && !full {
        let refusal = Refusal::AdminCredentials;
        node.metrics.refused(&refusal.label());
        return Response::refusal(&refusal)
            .with_header("WWW-Authenticate", "Basic realm=\"onair metrics\"");
    }
    for stream in node.streams.iter() {
        stream.update_gauges();
        let name = &stream.config().name;
        let hls = server.hls_listeners(stream);
        if server.hls.contains_key(name) {
            node.metrics.set_hls_listeners(name, hls);
        }
        let label = StreamLabel { stream: name.clone() };
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let cluster = &node.metrics.cluster;
        cluster.listeners.get_or_create(&label).set(gauge(node.cluster_listeners(stream)));
        let cluster_hls = gauge(node.cluster_hls_listeners(stream, hls));
        cluster.hls_listeners.get_or_create(&label).set(cluster_hls);
    }
    let hidden: Vec<&str> = if full {
        Vec::new()
    } else {
        let private = node.streams.iter().filter(|s| s.config().listen_secret.is_some());
        private.map(|s| s.config().name.as_str()).collect()
    };
    let text = node.metrics.render_without(&hidden);
    // The body is OpenMetrics text (`# EOF`, `_total` samples): say so.
    Response::new(200, crate::metrics::CONTENT_TYPE, text).with_header("Cache-Control", "no-store")
}

/// Sends a file of the web player (`/` is `index.html`, `/broadcast` is `broadcast.html`):
/// its head, then its bytes as they are read.
async fn static_file(
    web_root: &Path,
    request: &Request,
    url_path: &str,
    socket: &mut (impl AsyncWrite + Unpin),
    head_only: bool,
) -> std::io::Result<()> {
    let relative = match url_path {
        "/" => "index.html",
        "/broadcast" | "/broadcast/" => "broadcast.html",
        other => other.trim_start_matches('/'),
    };
    let not_found = Response::text(404, "not found");
    let Some(path) = safe_join(web_root, relative) else {
        return not_found.send(socket, head_only).await;
    };
    let Some(content_type) = content_type(&path) else {
        return not_found.send(socket, head_only).await;
    };
    // Symlinks are followed only where they stay inside the root.
    let inside =
        match (tokio::fs::canonicalize(web_root).await, tokio::fs::canonicalize(&path).await) {
            (Ok(root), Ok(real)) => real.starts_with(root),
            _ => false,
        };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) if inside => file,
        _ => return not_found.send(socket, head_only).await,
    };
    let len = match file.metadata().await {
        Ok(meta) if meta.is_file() => meta.len(),
        _ => return not_found.send(socket, head_only).await,
    };
    let mut response = Response::new(200, content_type, "")
        .with_header("Cache-Control", "no-cache")
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Referrer-Policy", "no-referrer");
    if content_type.starts_with("text/html") {
        response =
            response.with_header("Content-Security-Policy", content_security_policy(request));
    }
    socket.write_all(&response.head(len)).await?;
    if !head_only {
        // At most the announced length, even if the file grows meanwhile.
        let mut file = BufReader::with_capacity(STATIC_CHUNK_BYTES, file.take(len));
        loop {
            let chunk = file.fill_buf().await?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            socket.write_all(chunk).await?;
            file.consume(n);
        }
    }
    socket.shutdown().await
}

/// Joins a URL path under `root`, refusing anything that could leave it and dot-files
/// (`.git/`, `.env`: nothing of the player's).
fn safe_join(root: &Path, relative: &str) -> Option<PathBuf> {
    let relative = Path::new(relative);
    let safe = relative.components().all(|c| match c {
        Component::Normal(name) => !name.to_string_lossy().starts_with('.'),
        _ => false,
    }) && relative.to_str().is_some_and(|s| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
            && !s.contains("..")
    });
    safe.then(|| root.join(relative))
}

/// The content type of a player asset; `None` for anything else (READMEs, `package.json`,
/// source maps, files without an extension), which is not served.
fn content_type(path: &Path) -> Option<&'static str> {
    Some(match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_paths_cannot_escape_the_root() {
        let root = Path::new("/srv/web");
        assert_eq!(safe_join(root, "player.js"), Some(root.join("player.js")));
        assert_eq!(safe_join(root, "vendor/opus.wasm"), Some(root.join("vendor/opus.wasm")));
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a\\b",
            "%2e%2e/x",
            "",
            ".git/config",
            "a/.env",
        ] {
            assert_eq!(safe_join(root, bad), None, "{bad}");
        }
    }
}
