//! HTTP/1.1 on the relay's one port: reading request heads, writing plain responses, and the
//! non-upgrade endpoints (`/healthz`, `/api/streams`, `/metrics`, the web player's files).
//!
//! Request heads are parsed with `httparse` under a size limit and the handshake timeout (in
//! `server.rs`); bytes that arrive after the head stay in the caller's buffer. Every answer here
//! closes the connection: listeners and sources are long-lived, plain requests are rare.

use std::path::{Component, Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::relay::{StreamInfo, Streams};

/// Largest request head accepted.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 << 10;
/// Most headers in a request.
const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string, without `?`.
    pub query: Option<String>,
    /// Headers in order; names as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header contains this token (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The socket failed.
    #[error("reading request: {0}")]
    Io(#[from] std::io::Error),
    /// Not HTTP/1.x, or too many headers.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The head is larger than `MAX_REQUEST_HEAD_BYTES`.
    #[error("request head larger than {MAX_REQUEST_HEAD_BYTES} bytes")]
    TooLarge,
}

/// Reads one request head into `buf`; what follows it stays in `buf`.
/// Returns `None` when the peer closes before sending anything. Cancel safe.
///
/// # Errors
/// `HttpError` for socket errors, malformed or oversized heads, or a close mid-head.
pub async fn read_request(
    socket: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<Option<Request>, HttpError> {
    loop {
        if let Some(request) = parse_request(buf)? {
            return Ok(Some(request));
        }
        if buf.len() >= MAX_REQUEST_HEAD_BYTES {
            return Err(HttpError::TooLarge);
        }
        buf.reserve(1024);
        if socket.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(HttpError::Malformed("connection closed inside the request head".into()));
        }
    }
}

/// Parses a complete request head at the start of `buf` and removes it from `buf`.
///
/// # Errors
/// `Malformed` when the bytes are not an HTTP/1.x request.
pub fn parse_request(buf: &mut BytesMut) -> Result<Option<Request>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(HttpError::Malformed(err.to_string())),
    };
    let target = parsed.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let request = Request {
        method: parsed.method.unwrap_or("GET").to_owned(),
        path,
        query,
        headers: parsed
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
            .collect(),
    };
    let _ = buf.split_to(len);
    Ok(Some(request))
}

/// A complete response with a small body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (Content-Length and Connection are added).
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// A response with this status, content type and body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self { status, headers: vec![("Content-Type", content_type.to_owned())], body: body.into() }
    }

    /// A plain-text response; the body is the reason, followed by a newline.
    pub fn text(status: u16, reason: &str) -> Self {
        Self::new(status, "text/plain; charset=utf-8", format!("{reason}\n"))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The whole response as bytes; `head_only` leaves out the body (HEAD requests).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason_phrase(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", self.body.len()));
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }

    /// Writes the response and shuts the write side down.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn send(&self, socket: &mut TcpStream, head_only: bool) -> std::io::Result<()> {
        socket.write_all(&self.to_bytes(head_only)).await?;
        socket.shutdown().await
    }
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// `GET /api/streams`.
pub fn streams_json(streams: &Streams) -> Response {
    #[derive(serde::Serialize)]
    struct Body {
        streams: Vec<StreamInfo>,
    }
    let body = Body { streams: streams.iter().map(|s| s.info()).collect() };
    let json = serde_json::to_vec(&body).expect("stream info always serializes");
    Response::new(200, "application/json", json).with_header("Cache-Control", "no-store")
}

/// A file of the web player: `/` is `index.html`, `/broadcast` is `broadcast.html`.
pub async fn static_file(web_root: &Path, url_path: &str) -> Response {
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
    fn request_heads_parse_and_leave_the_rest() {
        let mut buf = BytesMut::from(
            &b"GET /ingest/radio?key=a%20b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\r\nextra"[..],
        );
        let request = parse_request(&mut buf).unwrap().unwrap();
        assert_eq!((request.method.as_str(), request.path.as_str()), ("GET", "/ingest/radio"));
        assert_eq!(request.query_param("key").as_deref(), Some("a b"));
        assert!(request.header_has_token("connection", "upgrade"));
        assert_eq!(request.header("HOST"), Some("x"));
        assert_eq!(&buf[..], b"extra");
        assert!(parse_request(&mut BytesMut::from(&b"GET / HTTP/1.1\r\nHost"[..]))
            .unwrap()
            .is_none());
        assert!(parse_request(&mut BytesMut::from(&b"\x16\x03\x01garbage\r\n\r\n"[..])).is_err());
    }

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
