//! Icecast compatibility: broadcaster tools push with the Icecast source protocol, ordinary
//! players listen over plain HTTP, and the admin/status API answers like Icecast's.
//!
//! `server.rs` hands a request here when `claims` says so. `source` demuxes an Icecast body
//! into the same `SourceHandle` the WebSocket ingest uses; `listen` muxes the ring back into
//! Ogg (Opus, Vorbis) or MP3 (with ICY metadata) per listener; `admin` serves `/admin/*` and
//! `/status-json.xsl`. `Icecast` keeps what Icecast reports that the ring does not know: the
//! sources' `Ice-*` headers, the connected clients and listener peaks.

pub mod admin;
pub mod demux;
pub mod listen;
pub mod source;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::{valid_stream_name, Config};
use crate::format::Container;
use crate::http::{Request, Response};
use crate::server::Relay;

/// `Server` header and `server_id` of Icecast-style answers.
pub const SERVER_ID: &str =
    concat!("Icecast 2.4.4 compatible (onair/", env!("CARGO_PKG_VERSION"), ")");
/// Realm in `WWW-Authenticate` challenges (libshout retries with credentials after a 401).
pub const REALM: &str = "Icecast2 Server";
/// Longest `Ice-*` header value kept.
const MAX_ICE_VALUE_BYTES: usize = 1024;
/// Headers a web page may read from a stream response.
const EXPOSED_HEADERS: &str = "icy-metaint, icy-name, icy-description, icy-genre, icy-url, icy-br, icy-pub, icy-audio-info, ice-audio-info, Content-Type";

/// What a source announced about itself in `Ice-*` (or `icy-*`) headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceInfo {
    /// Station name.
    pub name: Option<String>,
    /// Station description.
    pub description: Option<String>,
    /// Genre.
    pub genre: Option<String>,
    /// Station web site.
    pub url: Option<String>,
    /// Whether the station may be listed in directories.
    pub public: Option<bool>,
    /// Nominal bitrate in kbit/s.
    pub bitrate: Option<u32>,
    /// `ice-audio-info`, e.g. `channels=2;samplerate=48000;bitrate=128`.
    pub audio_info: Option<String>,
}

impl IceInfo {
    /// Reads the `Ice-*` headers of a source request (`icy-*` as a fallback).
    pub fn from_request(request: &Request) -> Self {
        let get = |name: &str| {
            let value = request
                .header(&format!("ice-{name}"))
                .or_else(|| request.header(&format!("icy-{name}")))?
                .trim();
            (!value.is_empty())
                .then(|| crate::format::opus::truncate(value, MAX_ICE_VALUE_BYTES).to_owned())
        };
        let audio_info = get("audio-info");
        let bitrate =
            get("bitrate").or_else(|| get("br")).and_then(|b| b.parse().ok()).or_else(|| {
                audio_info.as_deref().and_then(|info| {
                    info.split(';')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| matches!(k.trim(), "bitrate" | "ice-bitrate"))
                        .and_then(|(_, v)| v.trim().parse().ok())
                })
            });
        Self {
            name: get("name"),
            description: get("description"),
            genre: get("genre"),
            url: get("url"),
            public: get("public")
                .or_else(|| get("pub"))
                .map(|p| p == "1" || p.eq_ignore_ascii_case("true")),
            bitrate,
            audio_info,
        }
    }
}

/// An Icecast source on air: its announcement and a way to remove it.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// `Ice-*` headers.
    pub ice: IceInfo,
    /// The container it sends.
    pub container: Container,
    /// When it connected.
    pub started: SystemTime,
    /// Its address.
    pub peer: SocketAddr,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
}

/// One connected listener, for `/admin/listclients`.
#[derive(Debug, Clone)]
pub struct Client {
    /// Stream it listens to.
    pub stream: String,
    /// Its address.
    pub peer: SocketAddr,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
    /// When it connected.
    pub connected: Instant,
    /// `http` or `websocket`.
    pub kind: &'static str,
}

#[derive(Debug, Default)]
struct Registry {
    sources: HashMap<String, SourceInfo>,
    clients: HashMap<u64, Client>,
    peaks: HashMap<String, usize>,
}

/// The Icecast-facing state of a relay.
#[derive(Debug)]
pub struct Icecast {
    started: SystemTime,
    next_id: AtomicU64,
    registry: Arc<Mutex<Registry>>,
}

impl Default for Icecast {
    fn default() -> Self {
        Self::new()
    }
}

impl Icecast {
    /// Empty state; the server start time is now.
    pub fn new() -> Self {
        Self { started: SystemTime::now(), next_id: AtomicU64::new(1), registry: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // NOTE: nothing panics while holding this lock; poisoning would mean a bug.
        self.registry.lock().expect("icecast registry lock poisoned")
    }

    /// Records an Icecast source on `stream` until the registration drops.
    pub fn add_source(&self, stream: &str, info: SourceInfo) -> Registration {
        self.lock().sources.insert(stream.to_owned(), info);
        Registration {
            registry: Arc::clone(&self.registry),
            entry: Entry::Source(stream.to_owned()),
        }
    }

    /// The Icecast source on `stream`, if one is connected.
    pub fn source(&self, stream: &str) -> Option<SourceInfo> {
        self.lock().sources.get(stream).cloned()
    }

    /// Records a listener until the registration drops, and updates the stream's peak.
    pub fn add_client(&self, client: Client, listeners_now: usize) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut registry = self.lock();
        let peak = registry.peaks.entry(client.stream.clone()).or_default();
        *peak = (*peak).max(listeners_now);
        registry.clients.insert(id, client);
        drop(registry);
        Registration { registry: Arc::clone(&self.registry), entry: Entry::Client(id) }
    }

    /// The listeners of `stream`, oldest first.
    pub fn clients(&self, stream: &str) -> Vec<Client> {
        let mut clients: Vec<Client> =
            self.lock().clients.values().filter(|c| c.stream == stream).cloned().collect();
        clients.sort_by_key(|c| c.connected);
        clients
    }

    /// Most listeners seen at once on `stream` (at least `now`).
    pub fn listener_peak(&self, stream: &str, now: usize) -> usize {
        let mut registry = self.lock();
        let peak = registry.peaks.entry(stream.to_owned()).or_default();
        *peak = (*peak).max(now);
        *peak
    }

    /// When the relay started.
    pub fn started(&self) -> SystemTime {
        self.started
    }
}

/// A source or listener listed in the Icecast status; dropping it removes the entry.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Mutex<Registry>>,
    entry: Entry,
}

#[derive(Debug)]
enum Entry {
    Source(String),
    Client(u64),
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut registry) = self.registry.lock() {
            match &self.entry {
                Entry::Source(stream) => {
                    registry.sources.remove(stream);
                }
                Entry::Client(id) => {
                    registry.clients.remove(id);
                }
            }
        }
    }
}

/// Extensions a mount may carry; they all name the same stream.
const MOUNT_EXTENSIONS: [&str; 6] = ["ogg", "opus", "oga", "mp3", "mpeg", "webm"];

/// Splits `/radio.ogg` into the stream name `radio` and the extension `ogg`.
pub fn parse_mount(path: &str) -> Option<(&str, Option<&str>)> {
    let mount = path.strip_prefix('/')?;
    let (name, ext) = match mount.rsplit_once('.') {
        Some((name, ext)) if MOUNT_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)) => {
            (name, Some(ext))
        }
        Some(_) => return None,
        None => (mount, None),
    };
    valid_stream_name(name).then_some((name, ext))
}

/// Whether this request belongs to the Icecast side: a source (`SOURCE`/`PUT`), a CORS
/// preflight or `OPTIONS *`, `/admin/...`, `/status-json.xsl`, or a listener on a mount.
pub fn claims(request: &Request, relay: &Relay) -> bool {
    match request.method.as_str() {
        "SOURCE" | "PUT" | "OPTIONS" => return true,
        _ => {}
    }
    if request.path.starts_with("/admin/") || request.path == "/status-json.xsl" {
        return true;
    }
    parse_mount(&request.path).is_some_and(|(name, _)| relay.streams.get(name).is_some())
}

/// Serves a request that `claims` accepted.
///
/// # Errors
/// Socket errors; protocol problems are answered (or logged) here.
pub async fn serve(
    mut socket: TcpStream,
    peer: SocketAddr,
    relay: &Relay,
    request: Request,
    leftover: &[u8],
    cancel: CancellationToken,
) -> crate::Result<()> {
    let head_only = request.method == "HEAD";
    match request.method.as_str() {
        "SOURCE" | "PUT" => {
            // Boxed: a source session (~5 KiB) would otherwise be reserved in every
            // listener's task.
            return Box::pin(source::serve(socket, peer, relay, &request, leftover, cancel)).await;
        }
        "OPTIONS" => {
            tracing::debug!(%peer, path = %request.path, "options request");
            let response = if request.path == "*" {
                // libshout probes with `OPTIONS *` (asking for TLS): answer plainly, no upgrade.
                Response::new(204, "text/plain", "")
                    .with_header("Allow", "GET, HEAD, PUT, SOURCE, OPTIONS")
            } else {
                preflight(&relay.config, &request)
            };
            response.with_header("Server", SERVER_ID).send(&mut socket, false).await?;
            return Ok(());
        }
        "GET" | "HEAD" => {}
        _ => {
            let response = Response::text(405, "method not allowed")
                .with_header("Allow", "GET, HEAD, PUT, SOURCE, OPTIONS");
            response.send(&mut socket, false).await?;
            return Ok(());
        }
    }
    if request.path.starts_with("/admin/") || request.path == "/status-json.xsl" {
        let response = admin::serve(relay, &request, peer);
        let response =
            with_cors(response, &relay.config, &request).with_header("Server", SERVER_ID);
        response.send(&mut socket, head_only).await?;
        return Ok(());
    }
    listen::serve(socket, peer, relay, &request, leftover, cancel).await
}

/// The CORS headers for a response to `request` (none when its Origin is not allowed).
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

/// Adds the CORS headers to a response.
pub fn with_cors(mut response: Response, config: &Config, request: &Request) -> Response {
    response.headers.extend(cors_headers(config, request));
    response
}

/// Answers a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
fn preflight(config: &Config, request: &Request) -> Response {
    let mut response = with_cors(Response::new(204, "text/plain", ""), config, request);
    if response.headers.iter().any(|(n, _)| *n == "Access-Control-Allow-Origin") {
        let asked = request.header("access-control-request-headers").unwrap_or("");
        // Echo what the page asks for (bounded, token characters only): Icy-MetaData, Range...
        let allow: String = asked
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ',' | ' ' | '_'))
            .take(512)
            .collect();
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

/// Decodes `Authorization: Basic ...` into user and password.
pub fn basic_auth(request: &Request) -> Option<(String, String)> {
    let value = request.header("authorization")?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Standard base64 (padding optional); `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: "/radio.ogg".into(),
            query: None,
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn mounts_map_to_stream_names() {
        assert_eq!(parse_mount("/radio.ogg"), Some(("radio", Some("ogg"))));
        assert_eq!(parse_mount("/radio.MP3"), Some(("radio", Some("MP3"))));
        assert_eq!(parse_mount("/radio"), Some(("radio", None)));
        assert_eq!(parse_mount("/radio.opus"), Some(("radio", Some("opus"))));
        assert_eq!(parse_mount("/player.js"), None);
        assert_eq!(parse_mount("/a/b.ogg"), None);
        assert_eq!(parse_mount("/"), None);
    }

    #[test]
    fn basic_credentials_decode() {
        // "source:hackme"
        let r = request(&[("Authorization", "Basic c291cmNlOmhhY2ttZQ==")]);
        assert_eq!(basic_auth(&r), Some(("source".into(), "hackme".into())));
        assert_eq!(basic_auth(&request(&[("Authorization", "Basic !!!")])), None);
        assert_eq!(basic_auth(&request(&[("Authorization", "Bearer c291cmNl")])), None);
        assert_eq!(base64_decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
    }

    #[test]
    fn ice_headers_are_read_with_fallbacks() {
        let r = request(&[
            ("ice-name", "My Radio"),
            ("icy-genre", "Jazz"),
            ("ice-public", "1"),
            ("ice-audio-info", "ice-samplerate=48000;ice-bitrate=128;ice-channels=2"),
        ]);
        let info = IceInfo::from_request(&r);
        assert_eq!(info.name.as_deref(), Some("My Radio"));
        assert_eq!(info.genre.as_deref(), Some("Jazz"));
        assert_eq!(info.public, Some(true));
        assert_eq!(info.bitrate, Some(128));
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
}
