//! The node's plain HTTP endpoints: `/healthz`, `/api/streams` (JSON), `/metrics`
//! (Prometheus) and the web player's files.

use std::path::{Component, Path, PathBuf};

use super::Server;
use crate::http::{Request, Response};
use crate::relay::StreamInfo;

/// Answers a plain GET or HEAD that no one else claimed.
pub(super) async fn answer(server: &Server, request: &Request) -> Response {
    let node = &server.node;
    match request.path.as_str() {
        "/healthz" => Response::text(200, "ok"),
        "/api/streams" => streams_json(server).with_cors(&node.config, request),
        "/metrics" => {
            for stream in node.streams.iter() {
                stream.update_gauges();
                let name = &stream.config().name;
                if let Some(hls) = server.hls.get(name) {
                    node.metrics.set_hls_listeners(name, hls.listeners());
                }
            }
            // The body is OpenMetrics text (`# EOF`, `_total` samples): say so.
            Response::new(200, crate::metrics::CONTENT_TYPE, node.metrics.render())
        }
        path => static_file(&server.web_root, path).await,
    }
}

/// `GET /api/streams`.
fn streams_json(server: &Server) -> Response {
    #[derive(serde::Serialize)]
    struct Body {
        streams: Vec<Info>,
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
    }
    let info = |s: &std::sync::Arc<crate::relay::Stream>| Info {
        stream: s.info(),
        hls_listeners: server.hls.get(&s.config().name).map_or(0, |h| h.listeners()),
        recorded: server.recordings.is_some() && s.config().record,
    };
    let body = Body { streams: server.node.streams.iter().map(info).collect() };
    let json = serde_json::to_vec(&body).expect("stream info always serializes");
    Response::new(200, "application/json", json).with_header("Cache-Control", "no-store")
}

/// A file of the web player: `/` is `index.html`, `/broadcast` is `broadcast.html`.
async fn static_file(web_root: &Path, url_path: &str) -> Response {
    let relative = match url_path {
        "/" => "index.html",
        "/broadcast" | "/broadcast/" => "broadcast.html",
        other => other.trim_start_matches('/'),
    };
    let Some(path) = safe_join(web_root, relative) else {
        return Response::text(404, "not found");
    };
    match tokio::fs::read(&path).await {
        Ok(body) => Response::new(200, content_type(&path), body)
            .with_header("Cache-Control", "no-cache")
            .with_header("X-Content-Type-Options", "nosniff"),
        Err(_) => Response::text(404, "not found"),
    }
}

/// Joins a URL path under `root`, refusing anything that could leave it.
fn safe_join(root: &Path, relative: &str) -> Option<PathBuf> {
    let relative = Path::new(relative);
    let safe = relative.components().all(|c| matches!(c, Component::Normal(_)))
        && relative.to_str().is_some_and(|s| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
                && !s.contains("..")
        });
    safe.then(|| root.join(relative))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_paths_cannot_escape_the_root() {
        let root = Path::new("/srv/web");
        assert_eq!(safe_join(root, "player.js"), Some(root.join("player.js")));
        assert_eq!(safe_join(root, "vendor/opus.wasm"), Some(root.join("vendor/opus.wasm")));
        for bad in ["../etc/passwd", "a/../../b", "/etc/passwd", "a\\b", "%2e%2e/x", ""] {
            assert_eq!(safe_join(root, bad), None, "{bad}");
        }
    }
}
