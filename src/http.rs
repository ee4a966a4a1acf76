//! HTTP/1.1 as the relay speaks it: reading request heads, writing plain responses, CORS.
//!
//! Request heads are parsed with `httparse` under a size limit (and the handshake timeout, in
//! `server/`); bytes that arrive after the head stay in the caller's buffer. An answer closes
//! the connection (listeners and sources are long-lived, plain requests are rare), except HLS
//! answers to a client that keeps its connection alive (`send_keep_alive`): an LL-HLS player
//! asks five times a second.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::info;

use crate::config::Config;
use crate::error::Refusal;
use crate::metrics::Metrics;

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
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version: u8,
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

    /// Whether the client wants the connection kept after the answer: HTTP/1.1 unless it says
    /// `Connection: close`, HTTP/1.0 only when it says `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.version >= 1 {
            !self.header_has_token("connection", "close")
        } else {
            self.header_has_token("connection", "keep-alive")
        }
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
pub async fn read_request<S: AsyncRead + Unpin>(
    socket: &mut S,
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
        version: parsed.version.unwrap_or(1),
    };
    let _ = buf.split_to(len);
    Ok(Some(request))
}

/// Headers a web page may read from a stream response.
const EXPOSED_HEADERS: &str = "icy-metaint, icy-name, icy-description, icy-genre, icy-url, icy-br, icy-pub, icy-audio-info, ice-audio-info, Content-Type";

/// The CORS headers for a response to `request` (none when its Origin is not allowed by
/// `cors_origins`).
pub fn cors_headers(config: &Config, request: &Request) -> Vec<(&'static str, String)> {
    let any = config.cors_origins.iter().any(|o| o == "*");
    let origin = request.header("origin").map(str::trim);
    let allowed = match origin {
        _ if any => Some("*".to_owned()),
        Some(origin) if config.cors_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) => {
            Some(origin.to_owned())
        }
        _ => None,
    };
    let Some(allowed) = allowed else { return Vec::new() };
    let mut headers = vec![
        ("Access-Control-Allow-Origin", allowed),
        ("Access-Control-Expose-Headers", EXPOSED_HEADERS.to_owned()),
    ];
    if !any {
        headers.push(("Vary", "Origin".to_owned()));
    }
    headers
}

/// Answers a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn preflight(config: &Config, request: &Request) -> Response {
    let mut response = Response::new(204, "text/plain", "").with_cors(config, request);
    if response.headers.iter().any(|(n, _)| *n == "Access-Control-Allow-Origin") {
        let asked = request.header("access-control-request-headers").unwrap_or("");
        // Echo what the page asks for (bounded, token characters only): Icy-MetaData, Range...
        // but never Authorization: no page of another site may send credentials here.
        let allow: String = asked
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ',' | ' ' | '_'))
            .take(512)
            .collect::<String>()
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty() && !h.eq_ignore_ascii_case("authorization"))
            .collect::<Vec<_>>()
            .join(", ");
        response = response
            .with_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
            .with_header(
                "Access-Control-Allow-Headers",
                if allow.trim().is_empty() { "Icy-MetaData, Range".to_owned() } else { allow },
            )
            .with_header("Access-Control-Max-Age", "86400");
    }
    response
}

/// A complete response with a small body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
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

    /// A refusal: its status and its reason as plain text (and when to come back, for 429).
    pub fn refusal(refusal: &Refusal) -> Self {
        let response = Self::text(refusal.status(), &refusal.to_string());
        match refusal {
            Refusal::Throttled(throttled) => response
                .with_header("Retry-After", throttled.retry_after.as_secs().max(1).to_string()),
            _ => response,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds the CORS headers `request` gets.
    pub fn with_cors(mut self, config: &Config, request: &Request) -> Self {
        self.headers.extend(cors_headers(config, request));
        self
    }

    /// The whole response as bytes; `head_only` leaves out the body (HEAD requests).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut bytes = self.head(self.body.len() as u64);
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }

    /// The status line and headers, announcing a body of `content_length` bytes (which need
    /// not be `body`: a file is streamed after its head).
    pub fn head(&self, content_length: u64) -> Vec<u8> {
        self.head_with(content_length, false)
    }

    fn head_with(&self, content_length: u64, keep_alive: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason_phrase(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        let connection = if keep_alive { "keep-alive" } else { "close" };
        out.push_str(&format!(
            "Content-Length: {content_length}\r\nConnection: {connection}\r\n\r\n"
        ));
        out.into_bytes()
    }

    /// Writes the response (head and body in vectored writes, the body not copied) and shuts
    /// the write side down.
    ///
    /// # Errors
    /// Socket errors, and `TimedOut` from a socket with a write deadline.
    pub async fn send<S: AsyncWrite + Unpin>(
        &self,
        socket: &mut S,
        head_only: bool,
    ) -> std::io::Result<()> {
        let head = Bytes::from(self.head(self.body.len() as u64));
        let body = if head_only { Bytes::new() } else { self.body.clone() };
        socket.write_all_buf(&mut head.chain(body)).await?;
        socket.shutdown().await
    }

    /// Writes the response with `Connection: keep-alive` and leaves the connection open for
    /// the client's next request.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn send_keep_alive<S: AsyncWrite + Unpin>(
        &self,
        socket: &mut S,
        head_only: bool,
    ) -> std::io::Result<()> {
        let head = Bytes::from(self.head_with(self.body.len() as u64, true));
        let body = if head_only { Bytes::new() } else { self.body.clone() };
        socket.write_all_buf(&mut head.chain(body)).await?;
        socket.flush().await
    }
}

/// Refuses a request: counts it, logs one line (with the path only: a query may hold a key,
/// and keys are never logged) and answers with the reason, closing the connection. `extra`
/// headers go with the answer (a challenge, the `Server` header).
///
/// # Errors
/// Socket errors.
pub async fn refuse<S: AsyncWrite + Unpin>(
    socket: &mut S,
    metrics: &Metrics,
    peer: SocketAddr,
    request: &Request,
    refusal: &Refusal,
    extra: &[(&'static str, String)],
) -> std::io::Result<()> {
    metrics.refused(&refusal.label());
    let path = &request.path;
    info!(%peer, %path, status = refusal.status(), reason = %refusal, "refused");
    let mut response = Response::refusal(refusal);
    response.headers.extend(extra.iter().cloned());
    response.send(socket, request.method == "HEAD").await
}

/// Checks a WebSocket upgrade request (RFC 6455 §4.2.1); returns its `Sec-WebSocket-Accept`.
///
/// # Errors
/// The refusal to answer when it is not a valid upgrade.
pub fn websocket_accept(request: &Request) -> Result<String, Refusal> {
    if request.method != "GET" {
        return Err(Refusal::UpgradeMethod);
    }
    if !request.header_has_token("upgrade", "websocket")
        || !request.header_has_token("connection", "upgrade")
    {
        return Err(Refusal::NotWebSocket);
    }
    if request.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(Refusal::WebSocketVersion);
    }
    match request.header("sec-websocket-key") {
        Some(key) if !key.trim().is_empty() => {
            Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes()))
        }
        _ => Err(Refusal::NoWebSocketKey),
    }
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
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
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A GET of `/radio.ogg` with these headers.
    pub(crate) fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/radio.ogg".into(),
            query: None,
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
            version: 1,
        }
    }

    #[test]
    fn cors_follows_the_configured_origins() {
        let mut config = Config::default();
        let page = request(&[("Origin", "https://radio.example")]);
        assert_eq!(cors_headers(&config, &page)[0].1, "*");
        config.cors_origins = vec!["https://radio.example".into()];
        let headers = cors_headers(&config, &page);
        assert_eq!(headers[0].1, "https://radio.example");
        assert!(headers.iter().any(|(n, v)| *n == "Vary" && v == "Origin"));
        assert!(cors_headers(&config, &request(&[("Origin", "https://evil.example")])).is_empty());
        config.cors_origins.clear();
        assert!(cors_headers(&config, &page).is_empty());
    }

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
    fn keep_alive_is_the_default_of_http_1_1_only() {
        let head = |text: &str| parse_request(&mut BytesMut::from(text)).unwrap().unwrap();
        assert!(head("GET /a.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive());
        assert!(!head("GET /a.m3u8 HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive());
        assert!(!head("GET /a.m3u8 HTTP/1.0\r\n\r\n").keep_alive());
        assert!(head("GET /a.m3u8 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
        let response = Response::text(200, "ok");
        let mut kept = response.head_with(response.body.len() as u64, true);
        kept.extend_from_slice(&response.body);
        let kept = String::from_utf8(kept).unwrap();
        assert!(kept.contains("Connection: keep-alive\r\n") && kept.ends_with("\r\n\r\nok\n"));
        assert!(String::from_utf8(response.to_bytes(true)).unwrap().ends_with("close\r\n\r\n"));
    }
}
