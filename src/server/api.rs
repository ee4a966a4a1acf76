//! The node's plain HTTP endpoints: `/healthz`, `/api/streams` (JSON), `/metrics`
//! (Prometheus) and the web player's files.

use std::path::{Component, Path, PathBuf};

use super::Server;
use crate::http::{Request, Response};
use crate::metrics::StreamLabel;
use crate::node::Node;
use crate::relay::StreamInfo;

/// Answers a plain GET or HEAD that no one else claimed.
pub(super) async fn answer(server: &Server, request: &Request) -> Response {
    let node = &server.node;
    match request.path.as_str() {
        "/healthz" => Response::text(200, "ok"),
        "/api/streams" => streams_json(node).with_cors(&node.config, request),
        "/metrics" => {
            for stream in node.streams.iter() {
                stream.update_gauges();
                let label = StreamLabel { stream: stream.config().name.clone() };
                let cluster = i64::try_from(node.cluster_listeners(stream)).unwrap_or(i64::MAX);
                node.metrics.cluster.listeners.get_or_create(&label).set(cluster);
            }
            Response::new(200, "text/plain; version=0.0.4; charset=utf-8", node.metrics.render())
        }
        path => static_file(&server.web_root, path).await,
    }
}

/// `GET /api/streams`: each stream's figures, its listeners on every node of the cluster
/// (`cluster_listeners`, the same as `listeners` on a node that runs alone) and, in a
/// cluster, the node its source is on (`origin`).
fn streams_json(node: &Node) -> Response {
    #[derive(serde::Serialize)]
    struct Entry {
        #[serde(flatten)]
        info: StreamInfo,
        cluster_listeners: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
    }
    #[derive(serde::Serialize)]
    struct Body {
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        streams: Vec<Entry>,
    }
    let streams = node.streams.iter().map(|s| Entry {
        info: s.info(),
        cluster_listeners: node.cluster_listeners(s),
        origin: node.origin(s),
    });
    let name = node.cluster.get().map(|c| c.node().to_owned());
    let body = Body { node: name, streams: streams.collect() };
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
