//! The relay's configuration: a TOML file, every key with a default.
//!
//! `Config::parse` turns text into a validated `Config` or a `ConfigError` that names the file,
//! the line and what is wrong. No I/O here beyond what `Config::load` reads; `main.rs` decides
//! what to do with errors. Every key is documented in `onair.example.toml`.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::proxy::{IpNet, TrustedProxies, MAX_TRUSTED_PROXIES};

/// Address the relay listens on when neither the config nor `--listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// Most simultaneous connections of all kinds.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_000;
/// Largest WebSocket message a source may send.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Largest text message (JSON) a source may send: a `start` with 16 tracks or now playing
/// with four 1 KiB fields is a few KiB.
pub const DEFAULT_MAX_TEXT_MESSAGE_BYTES: usize = 64 << 10;
/// Time allowed to send a complete HTTP request head.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// A write to a peer that makes no progress for this long ends the connection.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 20_000;
/// How often the relay pings an idle peer.
pub const DEFAULT_PING_INTERVAL_MS: u64 = 15_000;
/// A peer that sends nothing (not even a pong) for this long is closed.
pub const DEFAULT_DEAD_PEER_TIMEOUT_MS: u64 = 45_000;
/// A listener that has not caught up with the live edge for this long is closed.
pub const DEFAULT_SLOW_LISTENER_TIMEOUT_MS: u64 = 10_000;
/// Recent audio sent to a new listener so playback starts at once.
pub const DEFAULT_BURST_MS: u64 = 1_000;
/// Frames kept per stream: about 10 s of 30 fps video plus 50 fps audio.
pub const DEFAULT_RING_FRAMES: usize = 1_024;
/// Bytes kept per stream: about 8 s of 8 Mbit/s video.
pub const DEFAULT_RING_BYTES: usize = 8 << 20;
/// Connections from one IP address (loopback and `ip_limit_exempt` are not counted).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Failed logins (wrong key or password) from one address in a minute before it gets 429.
pub const DEFAULT_MAX_LOGIN_FAILURES: u32 = 10;
/// Shortest stream key or admin password accepted (`onair keygen` makes 32 characters).
pub const MIN_KEY_CHARS: usize = 16;
/// IPv6 peers are counted per network of this prefix length: a host usually holds a /64.
pub const DEFAULT_IP_LIMIT_IPV6_PREFIX: u8 = 64;
/// Most a source may send, bits per second, averaged over `INGEST_BURST_SECONDS`.
pub const DEFAULT_MAX_INGEST_BITRATE: u64 = 16_000_000;
/// Most listeners of one stream, of every kind.
pub const DEFAULT_MAX_LISTENERS: usize = 10_000;
/// Longest a signed listener link may be valid for, from the moment it is used: a week.
pub const DEFAULT_MAX_LINK_LIFETIME_HOURS: u64 = 7 * 24;
/// Bytes the relay writes to one listener socket in one go when the listener is behind.
pub const DEFAULT_LISTENER_BATCH_BYTES: usize = 64 << 10;
/// Unsent bytes the kernel may hold for one listener (`TCP_NOTSENT_LOWAT`).
pub const DEFAULT_LISTENER_KERNEL_BYTES: usize = 32 << 10;
/// How long a listener may hold new frames to send them in one write: 0 sends each frame as
/// soon as it arrives (lowest latency, one write per frame per listener).
pub const DEFAULT_SEND_WINDOW_MS: u64 = 0;
/// How long an HTTP listener may hold new frames to send them in one write. Players of HTTP
/// streams buffer a second or more of audio (and a new listener gets `burst_ms` at once), so
/// this costs them nothing audible; writes per listener are what its CPU cost follows
/// (200 ms: 0.042 CPU-s per 1000 MP3 listener-seconds, 500 ms: 0.023; docs/PERFORMANCE.md).
pub const DEFAULT_HTTP_SEND_WINDOW_MS: u64 = 500;
/// Largest `send_window_ms`: beyond a second a window is a delay, not a batching aid.
pub const MAX_SEND_WINDOW_MS: u64 = 1_000;
/// Most listener driver threads (`listener_threads`).
pub const MAX_LISTENER_THREADS: usize = 64;

/// One listener driver per core the process may use.
fn default_listener_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Audio bytes between two ICY metadata blocks for HTTP listeners that ask for them.
pub const DEFAULT_ICY_METAINT: usize = 16_000;
/// First token of every cluster subject and the lease bucket's name.
pub const DEFAULT_CLUSTER_PREFIX: &str = "onair";
/// How long a cluster lease lasts without being renewed (it is renewed three times as often).
pub const DEFAULT_LEASE_MS: u64 = 3_000;
/// Shortest `lease_ms`: the lease is renewed over the network every third of it.
pub const MIN_LEASE_MS: u64 = 500;
/// Longest `lease_ms`: a dead node's streams stay taken this long.
pub const MAX_LEASE_MS: u64 = 60_000;
/// Messages a cluster node's subscription holds per stream before NATS drops messages for it:
/// about five seconds of 50 frames a second.
pub const SUBSCRIPTION_MESSAGES_PER_STREAM: usize = 256;
/// Bounds of `[cluster] subscription_capacity`.
pub const SUBSCRIPTION_CAPACITY: std::ops::RangeInclusive<usize> = 1..=1_000_000;
/// Longest HLS part (LL-HLS `PART-TARGET`): hls.js plays about 1-2 s behind live with these.
pub const DEFAULT_HLS_PART_MS: u64 = 200;
/// Longest HLS segment (`EXT-X-TARGETDURATION`).
pub const DEFAULT_HLS_SEGMENT_MS: u64 = 2_000;
/// HLS segments kept in memory and listed in the playlist.
pub const DEFAULT_HLS_WINDOW_SEGMENTS: usize = 10;
/// Bounds of `hls_window_segments`: players need three segments behind live; more than a
/// few minutes in memory per stream is a recording's job.
pub const HLS_WINDOW_SEGMENTS: std::ops::RangeInclusive<usize> = 3..=300;

/// Length of a recording's files: a show longer than this continues in a new file.
pub const DEFAULT_RECORDINGS_SPLIT_MINUTES: f64 = 60.0;
/// Bounds of `recordings_split_minutes`: one second (tests) to one day.
pub const RECORDINGS_SPLIT_MINUTES: std::ops::RangeInclusive<f64> = (1.0 / 60.0)..=1_440.0;
/// How often a recording is fsynced: a power cut loses at most about this much.
pub const DEFAULT_RECORDINGS_FSYNC_SECONDS: u64 = 5;
/// Bounds of `recordings_fsync_seconds`.
pub const RECORDINGS_FSYNC_SECONDS: std::ops::RangeInclusive<u64> = 1..=300;

/// Where a configuration problem is and what it is.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The config file's path as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// The whole relay configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Origins allowed to open an ingest WebSocket; `None` accepts any.
    pub allowed_origins: Option<Vec<String>>,
    /// Folder with the web player; `None` serves the copy built into the binary.
    pub web_root: Option<PathBuf>,
    /// Most simultaneous connections of all kinds (503 past it).
    pub max_connections: usize,
    /// Largest WebSocket message a source may send (close 1009 past it).
    pub max_message_bytes: usize,
    /// Largest text message a source may send (close 1009 past it).
    pub max_text_message_bytes: usize,
    /// Time allowed to send a complete request head.
    pub handshake_timeout: Duration,
    /// A write that makes no progress for this long ends the connection (and the kernel drops
    /// a connection whose sent data stays unacknowledged this long: `TCP_USER_TIMEOUT`).
    pub write_timeout: Duration,
    /// How often the relay pings an idle peer.
    pub ping_interval: Duration,
    /// A peer silent for this long is closed.
    pub dead_peer_timeout: Duration,
    /// A listener behind the live edge for this long is closed.
    pub slow_listener_timeout: Duration,
    /// Bytes written to one listener per write when it is behind.
    pub listener_batch_bytes: usize,
    /// Unsent bytes the kernel may hold per listener.
    pub listener_kernel_bytes: usize,
    /// Longest a frame waits so that it goes out in one write with the next ones (0: never).
    pub send_window: Duration,
    /// The same for HTTP listeners (`http_send_window_ms`).
    pub http_send_window: Duration,
    /// Threads that write to WebSocket listeners (each an epoll loop holding thousands).
    pub listener_threads: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Addresses the per-IP limit does not apply to (e.g. a reverse proxy).
    pub ip_limit_exempt: Vec<std::net::IpAddr>,
    /// IPv6 peers count against the per-IP limit per network of this prefix length (1-128).
    pub ip_limit_ipv6_prefix: u8,
    /// Failed logins from one address within a minute before it is refused (429) for a minute.
    pub max_login_failures: u32,
    /// Proxies whose `Forwarded`/`X-Forwarded-For`/`X-Real-IP` headers and PROXY protocol
    /// headers name the client; empty: nobody's (the default).
    pub trusted_proxies: TrustedProxies,
    /// Every connection to `listen` starts with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
    /// Serve TLS on a second port.
    pub tls: Option<TlsConfig>,
    /// Serve an echo WebSocket at `/echo` (for the Autobahn conformance suite only).
    pub echo_endpoint: bool,
    /// Origins allowed to read streams and status from a web page (CORS); `*` allows any.
    pub cors_origins: Vec<String>,
    /// Password for the Icecast admin API (`/admin/...`) on every stream; `None`: only each
    /// stream's key works, for its own stream.
    pub admin_password: Option<String>,
    /// Audio bytes between ICY metadata blocks (`icy-metaint`).
    pub icy_metaint: usize,
    /// Share the streams with other nodes through NATS; `None`: a single node.
    pub cluster: Option<ClusterConfig>,
    /// Serve every Opus and MP3 stream over HLS (`/{stream}.m3u8`).
    pub hls: bool,
    /// Longest HLS part.
    pub hls_part: Duration,
    /// Longest HLS segment.
    pub hls_segment: Duration,
    /// HLS segments kept in memory.
    pub hls_window_segments: usize,
    /// Where playlists point for segments (a CDN), e.g. `https://cdn.example`; `None`: here.
    pub hls_base_url: Option<String>,
    /// Folder for recorded shows (`record = true` streams), one subfolder per stream;
    /// `None`: nothing is recorded and `/api/recordings/` answers 404.
    pub recordings_dir: Option<PathBuf>,
    /// Longest file of a recording; a longer show continues in a new file.
    pub recordings_split: Duration,
    /// How often an open recording is fsynced.
    pub recordings_fsync: Duration,
    /// Recordings that started longer ago than this many days are removed; `None`: kept.
    pub recordings_keep_days: Option<u64>,
    /// Most bytes all recordings may take; the oldest are removed past it. `None`: no limit.
    pub recordings_max_bytes: Option<u64>,
    /// The streams, in file order.
    pub streams: Vec<StreamConfig>,
}

/// `[cluster]`: several nodes serve one set of streams through NATS (docs/CLUSTER.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:4222`, `tls://host:4222`, or `host:port`).
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster (letters, digits, `-`, `_`). Default: the
    /// host name's first label.
    pub node: String,
    /// First token of every subject and the lease bucket's name, so several clusters can
    /// share one NATS.
    pub prefix: String,
    /// How long a lease (a stream's live source, its auto-DJ) outlives its node's last renewal.
    pub lease: Duration,
    /// NATS user and password.
    pub user: Option<(String, String)>,
    /// NATS token.
    pub token: Option<String>,
    /// PEM file of the CA certificates that sign the NATS servers' certificates.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for NATS servers that verify clients.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Refuse to talk to NATS without TLS.
    pub tls_required: bool,
    /// Messages the node's NATS subscriptions may hold before NATS drops messages for it (a
    /// slow consumer); `None`: `SUBSCRIPTION_MESSAGES_PER_STREAM` per stream (at least 4
    /// streams' worth).
    pub subscription_capacity: Option<usize>,
}

impl ClusterConfig {
    /// A cluster of `nats` with every other setting at its default.
    pub fn new(nats: &str, node: &str) -> Self {
        Self {
            nats: vec![nats.to_owned()],
            node: node.to_owned(),
            prefix: DEFAULT_CLUSTER_PREFIX.to_owned(),
            lease: Duration::from_millis(DEFAULT_LEASE_MS),
            user: None,
            token: None,
            tls_ca: None,
            tls_client: None,
            tls_required: false,
            subscription_capacity: None,
        }
    }
}

/// `[tls]`: serve `https://` and `wss://` on a second port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address for TLS connections, e.g. `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// PEM certificate chain (reloaded on SIGHUP).
    pub cert: PathBuf,
    /// PEM private key (reloaded on SIGHUP).
    pub key: PathBuf,
    /// Every connection to this port starts with a PROXY protocol header, before its TLS
    /// handshake (HAProxy's `send-proxy` in TCP mode in front of onair's own TLS).
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// One stream ("mount").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Name used in URLs: `/ingest/{name}`, `/listen/{name}`.
    pub name: String,
    /// Key a live source must present; `None` means no live source may connect.
    pub key: Option<String>,
    /// Files, folders or playlists the built-in auto-DJ plays while no live source is connected.
    pub playlist: Option<PathBuf>,
    /// Recent media sent to a new listener.
    pub burst: Duration,
    /// Most entries (frames and events) the ring keeps (`ring_frames`).
    pub ring_frames: usize,
    /// Most bytes the ring keeps (`ring_bytes`); the newest entry is kept whatever its size.
    pub ring_bytes: usize,
    /// Most listeners of every kind at once (503 past it).
    pub max_listeners: usize,
    /// Most a live source may send, bits per second (close 4006 past it).
    pub max_ingest_bitrate: u64,
    /// When set, listeners need a link signed with this secret (`onair sign`).
    pub listen_secret: Option<String>,
    /// Signed links that expire later than this from now are refused (a leaked link must not
    /// stay good for years).
    pub max_link_lifetime: Duration,
    /// Record every live show into `recordings_dir`.
    pub record: bool,
    /// Record the auto-DJ too (off by default: it plays files the station already has).
    pub record_autodj: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    allowed_origins: Option<Vec<String>>,
    web_root: Option<PathBuf>,
    max_connections: Option<Spanned<usize>>,
    max_message_bytes: Option<Spanned<usize>>,
    max_text_message_bytes: Option<Spanned<usize>>,
    handshake_timeout_ms: Option<Spanned<u64>>,
    write_timeout_ms: Option<Spanned<u64>>,
    ping_interval_ms: Option<Spanned<u64>>,
    dead_peer_timeout_ms: Option<Spanned<u64>>,
    slow_listener_timeout_ms: Option<Spanned<u64>>,
    listener_batch_bytes: Option<Spanned<usize>>,
    listener_kernel_bytes: Option<Spanned<usize>>,
    send_window_ms: Option<Spanned<u64>>,
    http_send_window_ms: Option<Spanned<u64>>,
    listener_threads: Option<Spanned<usize>>,
    max_connections_per_ip: Option<Spanned<usize>>,
    ip_limit_exempt: Option<Vec<Spanned<String>>>,
    ip_limit_ipv6_prefix: Option<Spanned<u8>>,
    max_login_failures: Option<Spanned<usize>>,
    trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    proxy_protocol: bool,
    tls: Option<TlsConfig>,
    #[serde(default)]
    echo_endpoint: bool,
    cors_origins: Option<Vec<String>>,
    admin_password: Option<Spanned<String>>,
    icy_metaint: Option<Spanned<usize>>,
    cluster: Option<Spanned<RawCluster>>,
    hls: Option<bool>,
    hls_part_ms: Option<Spanned<u64>>,
    hls_segment_ms: Option<Spanned<u64>>,
    hls_window_segments: Option<Spanned<usize>>,
    hls_base_url: Option<Spanned<String>>,
    recordings_dir: Option<PathBuf>,
    recordings_split_minutes: Option<Spanned<f64>>,
    recordings_fsync_seconds: Option<Spanned<u64>>,
    recordings_keep_days: Option<Spanned<u64>>,
    recordings_max_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    streams: Vec<RawStream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    nats: Spanned<OneOrMany>,
    node: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    lease_ms: Option<Spanned<u64>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    tls_required: bool,
    subscription_capacity: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    name: Spanned<String>,
    key: Option<Spanned<String>>,
    playlist: Option<PathBuf>,
    burst_ms: Option<u64>,
    ring_frames: Option<Spanned<usize>>,
    ring_bytes: Option<Spanned<usize>>,
    max_listeners: Option<Spanned<usize>>,
    max_ingest_bitrate: Option<Spanned<usize>>,
    listen_secret: Option<Spanned<String>>,
    max_link_lifetime_hours: Option<Spanned<usize>>,
    record: Option<Spanned<bool>>,
    record_autodj: Option<Spanned<bool>>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.message),
            line => write!(f, "{}:{line}:{}: {}", self.file, self.column, self.message),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            allowed_origins: None,
            web_root: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_text_message_bytes: DEFAULT_MAX_TEXT_MESSAGE_BYTES,
            handshake_timeout: Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS),
            write_timeout: Duration::from_millis(DEFAULT_WRITE_TIMEOUT_MS),
            ping_interval: Duration::from_millis(DEFAULT_PING_INTERVAL_MS),
            dead_peer_timeout: Duration::from_millis(DEFAULT_DEAD_PEER_TIMEOUT_MS),
            slow_listener_timeout: Duration::from_millis(DEFAULT_SLOW_LISTENER_TIMEOUT_MS),
            listener_batch_bytes: DEFAULT_LISTENER_BATCH_BYTES,
            listener_kernel_bytes: DEFAULT_LISTENER_KERNEL_BYTES,
            send_window: Duration::from_millis(DEFAULT_SEND_WINDOW_MS),
            http_send_window: Duration::from_millis(DEFAULT_HTTP_SEND_WINDOW_MS),
            listener_threads: default_listener_threads(),
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            ip_limit_exempt: vec![
                std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::Ipv6Addr::LOCALHOST.into(),
            ],
            ip_limit_ipv6_prefix: DEFAULT_IP_LIMIT_IPV6_PREFIX,
            max_login_failures: DEFAULT_MAX_LOGIN_FAILURES,
            trusted_proxies: TrustedProxies::default(),
            proxy_protocol: false,
            tls: None,
            echo_endpoint: false,
            cors_origins: vec!["*".to_owned()],
            admin_password: None,
            icy_metaint: DEFAULT_ICY_METAINT,
            cluster: None,
            hls: true,
            hls_part: Duration::from_millis(DEFAULT_HLS_PART_MS),
            hls_segment: Duration::from_millis(DEFAULT_HLS_SEGMENT_MS),
            hls_window_segments: DEFAULT_HLS_WINDOW_SEGMENTS,
            hls_base_url: None,
            recordings_dir: None,
            recordings_split: Duration::from_secs_f64(DEFAULT_RECORDINGS_SPLIT_MINUTES * 60.0),
            recordings_fsync: Duration::from_secs(DEFAULT_RECORDINGS_FSYNC_SECONDS),
            recordings_keep_days: None,
            recordings_max_bytes: None,
            streams: Vec::new(),
        }
    }
}

impl StreamConfig {
    /// A stream with this name and key and every other setting at its default.
    pub fn new(name: &str, key: Option<&str>) -> Self {
        Self {
            name: name.to_owned(),
            key: key.map(str::to_owned),
            playlist: None,
            burst: Duration::from_millis(DEFAULT_BURST_MS),
            ring_frames: DEFAULT_RING_FRAMES,
            ring_bytes: DEFAULT_RING_BYTES,
            max_listeners: DEFAULT_MAX_LISTENERS,
            max_ingest_bitrate: DEFAULT_MAX_INGEST_BITRATE,
            listen_secret: None,
            max_link_lifetime: Duration::from_secs(DEFAULT_MAX_LINK_LIFETIME_HOURS * 3600),
            record: false,
            record_autodj: false,
        }
    }
}

impl Config {
    /// Reads and parses a config file.
    ///
    /// # Errors
    /// A `ConfigError` naming the file (line 0 when it cannot be read).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {err}"),
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        // Playlists are relative to the config file, like any path a user writes in it.
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(dir) = &mut config.recordings_dir {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        for stream in &mut config.streams {
            if let Some(playlist) = &mut stream.playlist {
                if playlist.is_relative() {
                    *playlist = base.join(&*playlist);
                }
            }
        }
        if let Some(cluster) = &mut config.cluster {
            let paths = cluster.tls_client.iter_mut().flat_map(|(c, k)| [c, k]);
            for path in cluster.tls_ca.iter_mut().chain(paths) {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
        Ok(config)
    }

    /// Parses and validates config text; `file` only labels errors.
    ///
    /// # Errors
    /// A `ConfigError` with the line and column of the offending value.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let fail = |span: Option<Range<usize>>, message: String| {
            let (line, column) = span.map_or((1, 1), |s| line_column(text, s.start));
            ConfigError { file: file.to_owned(), line, column, message }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|err| fail(err.span(), err.message().to_owned()))?;
        let mut config = Config::default();
        if let Some(listen) = raw.listen {
            config.listen = listen.get_ref().parse().map_err(|_| {
                fail(
                    Some(listen.span()),
                    format!("listen: `{}` is not an IP address and port", listen.get_ref()),
                )
            })?;
        }
        config.allowed_origins = raw.allowed_origins;
        config.web_root = raw.web_root;
        config.echo_endpoint = raw.echo_endpoint;
        config.tls = raw.tls;
        let positive = |value: Option<Spanned<usize>>, name: &str, default: usize| match value {
            Some(v) if *v.get_ref() == 0 => {
                Err(fail(Some(v.span()), format!("{name} must be > 0")))
            }
            Some(v) => Ok(v.into_inner()),
            None => Ok(default),
        };
        let millis = |value: Option<Spanned<u64>>, name: &str, default: u64| match value {
            Some(v) if *v.get_ref() == 0 => {
                Err(fail(Some(v.span()), format!("{name} must be > 0")))
            }
            Some(v) => Ok(Duration::from_millis(v.into_inner())),
            None => Ok(Duration::from_millis(default)),
        };
        config.max_connections =
            positive(raw.max_connections, "max_connections", DEFAULT_MAX_CONNECTIONS)?;
        config.max_message_bytes =
            positive(raw.max_message_bytes, "max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)?;
        config.max_text_message_bytes = positive(
            raw.max_text_message_bytes,
            "max_text_message_bytes",
            DEFAULT_MAX_TEXT_MESSAGE_BYTES,
        )?;
        config.listener_batch_bytes = positive(
            raw.listener_batch_bytes,
            "listener_batch_bytes",
            DEFAULT_LISTENER_BATCH_BYTES,
        )?;
        config.listener_kernel_bytes = positive(
            raw.listener_kernel_bytes,
            "listener_kernel_bytes",
            DEFAULT_LISTENER_KERNEL_BYTES,
        )?;
        let raw_listener_threads_span = raw.listener_threads.as_ref().map(Spanned::span);
        config.listener_threads =
            positive(raw.listener_threads, "listener_threads", default_listener_threads())?;
        if config.listener_threads > MAX_LISTENER_THREADS {
            let span = raw_listener_threads_span;
            return Err(fail(
                span,
                format!("listener_threads must be at most {MAX_LISTENER_THREADS}"),
            ));
        }
        config.max_connections_per_ip = positive(
            raw.max_connections_per_ip,
            "max_connections_per_ip",
            DEFAULT_MAX_CONNECTIONS_PER_IP,
        )?;
        if let Some(exempt) = raw.ip_limit_exempt {
            config.ip_limit_exempt = exempt
                .into_iter()
                .map(|ip| {
                    ip.get_ref().parse().map_err(|_| {
                        fail(
                            Some(ip.span()),
                            format!("ip_limit_exempt: `{}` is not an IP address", ip.get_ref()),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(list) = raw.trusted_proxies {
            if list.get_ref().len() > MAX_TRUSTED_PROXIES {
                return Err(fail(
                    Some(list.span()),
                    format!(
                        "trusted_proxies: at most {MAX_TRUSTED_PROXIES} addresses or ranges \
(use CIDR ranges such as 10.0.0.0/8)"
                    ),
                ));
            }
            let nets =
                list.into_inner()
                    .into_iter()
                    .map(|entry| {
                        entry.get_ref().trim().parse::<IpNet>().map_err(|err| {
                            fail(Some(entry.span()), format!("trusted_proxies: {err}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
            config.trusted_proxies = TrustedProxies::new(nets);
        }
        config.proxy_protocol = raw.proxy_protocol;
        if let Some(prefix) = raw.ip_limit_ipv6_prefix {
            if !(1..=128).contains(prefix.get_ref()) {
                return Err(fail(
                    Some(prefix.span()),
                    "ip_limit_ipv6_prefix must be 1-128".to_owned(),
                ));
            }
            config.ip_limit_ipv6_prefix = prefix.into_inner();
        }
        config.max_login_failures = positive(
            raw.max_login_failures,
            "max_login_failures",
            DEFAULT_MAX_LOGIN_FAILURES as usize,
        )?
        .try_into()
        .unwrap_or(u32::MAX);
        config.handshake_timeout =
            millis(raw.handshake_timeout_ms, "handshake_timeout_ms", DEFAULT_HANDSHAKE_TIMEOUT_MS)?;
        config.write_timeout =
            millis(raw.write_timeout_ms, "write_timeout_ms", DEFAULT_WRITE_TIMEOUT_MS)?;
        config.ping_interval =
            millis(raw.ping_interval_ms, "ping_interval_ms", DEFAULT_PING_INTERVAL_MS)?;
        config.dead_peer_timeout =
            millis(raw.dead_peer_timeout_ms, "dead_peer_timeout_ms", DEFAULT_DEAD_PEER_TIMEOUT_MS)?;
        config.slow_listener_timeout = millis(
            raw.slow_listener_timeout_ms,
            "slow_listener_timeout_ms",
            DEFAULT_SLOW_LISTENER_TIMEOUT_MS,
        )?;
        for (window, key, value) in [
            (raw.send_window_ms, "send_window_ms", &mut config.send_window),
            (raw.http_send_window_ms, "http_send_window_ms", &mut config.http_send_window),
        ] {
            let Some(window) = window else { continue };
            if *window.get_ref() > MAX_SEND_WINDOW_MS {
                return Err(fail(
                    Some(window.span()),
                    format!("{key} must be at most {MAX_SEND_WINDOW_MS}"),
                ));
            }
            *value = Duration::from_millis(window.into_inner());
        }
        if let Some(origins) = raw.cors_origins {
            config.cors_origins = origins;
        }
        config.admin_password = match raw.admin_password {
            Some(p) if p.get_ref().trim().is_empty() => {
                return Err(fail(Some(p.span()), "admin_password is empty".to_owned()));
            }
            Some(p) if p.get_ref().chars().count() < MIN_KEY_CHARS => {
                return Err(fail(
                    Some(p.span()),
                    format!("admin_password must be at least {MIN_KEY_CHARS} characters (make one with `onair keygen`)"),
                ));
            }
            p => p.map(Spanned::into_inner),
        };
        config.icy_metaint = positive(raw.icy_metaint, "icy_metaint", DEFAULT_ICY_METAINT)?;
        if let Some(raw_cluster) = raw.cluster {
            config.cluster = Some(cluster(raw_cluster, &fail)?);
        }
        config.hls = raw.hls.unwrap_or(true);
        config.hls_part = millis(raw.hls_part_ms, "hls_part_ms", DEFAULT_HLS_PART_MS)?;
        let segment_span = raw.hls_segment_ms.as_ref().map(Spanned::span);
        config.hls_segment = millis(raw.hls_segment_ms, "hls_segment_ms", DEFAULT_HLS_SEGMENT_MS)?;
        if config.hls_segment < config.hls_part * 3 {
            return Err(fail(
                segment_span,
                "hls_segment_ms must be at least three times hls_part_ms".to_owned(),
            ));
        }
        if let Some(count) = raw.hls_window_segments {
            if !HLS_WINDOW_SEGMENTS.contains(count.get_ref()) {
                return Err(fail(
                    Some(count.span()),
                    format!(
                        "hls_window_segments must be between {} and {}",
                        HLS_WINDOW_SEGMENTS.start(),
                        HLS_WINDOW_SEGMENTS.end()
                    ),
                ));
            }
            config.hls_window_segments = count.into_inner();
        }
        if let Some(base) = raw.hls_base_url {
            let url = base.get_ref().trim_end_matches('/');
            let valid = (url.starts_with("https://") || url.starts_with("http://"))
                && !url.contains(['"', '\'', ' ', '\n', '?', '#']);
            if !valid {
                return Err(fail(
                    Some(base.span()),
                    "hls_base_url must be an http:// or https:// URL without a query".to_owned(),
                ));
            }
            config.hls_base_url = Some(url.to_owned());
        }
        config.recordings_dir = raw.recordings_dir;
        if let Some(minutes) = raw.recordings_split_minutes {
            if !RECORDINGS_SPLIT_MINUTES.contains(minutes.get_ref()) {
                return Err(fail(
                    Some(minutes.span()),
                    "recordings_split_minutes must be between 1/60 (a second) and 1440 (a day)"
                        .to_owned(),
                ));
            }
            config.recordings_split = Duration::from_secs_f64(minutes.get_ref() * 60.0);
        }
        if let Some(seconds) = raw.recordings_fsync_seconds {
            if !RECORDINGS_FSYNC_SECONDS.contains(seconds.get_ref()) {
                return Err(fail(
                    Some(seconds.span()),
                    format!(
                        "recordings_fsync_seconds must be between {} and {}",
                        RECORDINGS_FSYNC_SECONDS.start(),
                        RECORDINGS_FSYNC_SECONDS.end()
                    ),
                ));
            }
            config.recordings_fsync = Duration::from_secs(seconds.into_inner());
        }
        for (value, key, field) in [
            (raw.recordings_keep_days, "recordings_keep_days", &mut config.recordings_keep_days),
            (raw.recordings_max_bytes, "recordings_max_bytes", &mut config.recordings_max_bytes),
        ] {
            match value {
                Some(v) if *v.get_ref() == 0 => {
                    return Err(fail(
                        Some(v.span()),
                        format!("{key} must be > 0 (leave it out to keep every recording)"),
                    ));
                }
                v => *field = v.map(Spanned::into_inner),
            }
        }
        if config.dead_peer_timeout <= config.ping_interval {
            return Err(fail(
                None,
                "dead_peer_timeout_ms must be longer than ping_interval_ms".to_owned(),
            ));
        }

        for raw_stream in raw.streams {
            let name_span = raw_stream.name.span();
            let name = raw_stream.name.into_inner();
            if !valid_stream_name(&name) {
                return Err(fail(
                    Some(name_span),
                    format!("stream name `{name}`: use 1-64 letters, digits, `-` or `_`"),
                ));
            }
            if config.streams.iter().any(|s| s.name == name) {
                return Err(fail(Some(name_span), format!("stream `{name}` is declared twice")));
            }
            let key = match raw_stream.key {
                Some(key) if key.get_ref().trim().is_empty() => {
                    return Err(fail(Some(key.span()), format!("stream `{name}`: key is empty")));
                }
                Some(key) if key.get_ref().chars().count() < MIN_KEY_CHARS => {
                    return Err(fail(
                        Some(key.span()),
                        format!("stream `{name}`: key must be at least {MIN_KEY_CHARS} characters (make one with `onair keygen`)"),
                    ));
                }
                Some(key) => Some(key.into_inner()),
                None => None,
            };
            if key.is_none() && raw_stream.playlist.is_none() {
                return Err(fail(
                    Some(name_span),
                    format!("stream `{name}` needs a `key` (for a live source) or a `playlist`"),
                ));
            }
            let mut stream = StreamConfig::new(&name, None);
            stream.key = key;
            stream.playlist = raw_stream.playlist;
            if let Some(ms) = raw_stream.burst_ms {
                stream.burst = Duration::from_millis(ms);
            }
            stream.ring_frames =
                positive(raw_stream.ring_frames, "ring_frames", DEFAULT_RING_FRAMES)?;
            stream.ring_bytes = positive(raw_stream.ring_bytes, "ring_bytes", DEFAULT_RING_BYTES)?;
            stream.max_listeners =
                positive(raw_stream.max_listeners, "max_listeners", DEFAULT_MAX_LISTENERS)?;
            stream.max_ingest_bitrate = positive(
                raw_stream.max_ingest_bitrate,
                "max_ingest_bitrate",
                DEFAULT_MAX_INGEST_BITRATE as usize,
            )? as u64;
            stream.listen_secret = match raw_stream.listen_secret {
                Some(secret) if secret.get_ref().len() < 16 => {
                    return Err(fail(
                        Some(secret.span()),
                        format!("stream `{name}`: listen_secret must be at least 16 characters"),
                    ));
                }
                secret => secret.map(Spanned::into_inner),
            };
            let hours = positive(
                raw_stream.max_link_lifetime_hours,
                "max_link_lifetime_hours",
                DEFAULT_MAX_LINK_LIFETIME_HOURS as usize,
            )? as u64;
            stream.max_link_lifetime = Duration::from_secs(hours.saturating_mul(3600));
            if let Some(record) = &raw_stream.record {
                if *record.get_ref() && config.recordings_dir.is_none() {
                    return Err(fail(
                        Some(record.span()),
                        format!("stream `{name}`: record = true needs a top-level recordings_dir"),
                    ));
                }
            }
            stream.record = raw_stream.record.as_ref().is_some_and(|r| *r.get_ref());
            if let Some(autodj) = raw_stream.record_autodj {
                if *autodj.get_ref() && !stream.record {
                    return Err(fail(
                        Some(autodj.span()),
                        format!("stream `{name}`: record_autodj = true needs record = true"),
                    ));
                }
                stream.record_autodj = autodj.into_inner();
            }
            config.streams.push(stream);
        }
        Ok(config)
    }
}

/// Validates `[cluster]`.
fn cluster(
    raw: Spanned<RawCluster>,
    fail: &dyn Fn(Option<Range<usize>>, String) -> ConfigError,
) -> Result<ClusterConfig, ConfigError> {
    let table = raw.span();
    let raw = raw.into_inner();
    let nats_span = raw.nats.span();
    let urls = match raw.nats.into_inner() {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    };
    if urls.is_empty() {
        return Err(fail(Some(nats_span), "cluster.nats: give at least one NATS URL".into()));
    }
    let mut nats = Vec::with_capacity(urls.len());
    for url in urls {
        if !valid_nats_url(&url) {
            return Err(fail(
                Some(nats_span.clone()),
                format!(
                    "cluster.nats: `{url}` is not a NATS URL (nats://host:port, tls://host:port or host:port)"
                ),
            ));
        }
        nats.push(url);
    }
    let node = match raw.node {
        Some(node) if !valid_token(node.get_ref()) => {
            return Err(fail(
                Some(node.span()),
                format!("cluster.node `{}`: use 1-64 letters, digits, `-` or `_`", node.get_ref()),
            ));
        }
        Some(node) => node.into_inner(),
        None => default_node_name(),
    };
    let prefix = match raw.prefix {
        Some(prefix) if !prefix.get_ref().split('.').all(valid_token) => {
            return Err(fail(
                Some(prefix.span()),
                format!(
                    "cluster.prefix `{}`: use tokens of letters, digits, `-` or `_`, joined by `.`",
                    prefix.get_ref()
                ),
            ));
        }
        Some(prefix) => prefix.into_inner(),
        None => DEFAULT_CLUSTER_PREFIX.to_owned(),
    };
    let lease = match raw.lease_ms {
        Some(ms) if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(ms.get_ref()) => {
            return Err(fail(
                Some(ms.span()),
                format!("cluster.lease_ms must be {MIN_LEASE_MS}-{MAX_LEASE_MS}"),
            ));
        }
        Some(ms) => Duration::from_millis(ms.into_inner()),
        None => Duration::from_millis(DEFAULT_LEASE_MS),
    };
    let user = match (raw.user, raw.password) {
        (Some(user), Some(password)) => Some((user.into_inner(), password.into_inner())),
        (None, None) => None,
        (Some(span), None) | (None, Some(span)) => {
            return Err(fail(
                Some(span.span()),
                "cluster: `user` and `password` go together".into(),
            ));
        }
    };
    if let (Some(token), Some(_)) = (&raw.token, &user) {
        return Err(fail(
            Some(token.span()),
            "cluster: give a `token` or a `user`, not both".into(),
        ));
    }
    let tls_client = match (raw.tls_cert, raw.tls_key) {
        (Some(cert), Some(key)) => Some((cert.into_inner(), key)),
        (None, None) => None,
        (Some(cert), None) => {
            return Err(fail(Some(cert.span()), "cluster: `tls_cert` needs `tls_key`".into()));
        }
        (None, Some(_)) => {
            return Err(fail(Some(table), "cluster: `tls_key` needs `tls_cert`".into()));
        }
    };
    let subscription_capacity = match raw.subscription_capacity {
        Some(n) if !SUBSCRIPTION_CAPACITY.contains(n.get_ref()) => {
            return Err(fail(
                Some(n.span()),
                format!(
                    "cluster.subscription_capacity must be {}-{}",
                    SUBSCRIPTION_CAPACITY.start(),
                    SUBSCRIPTION_CAPACITY.end()
                ),
            ));
        }
        n => n.map(Spanned::into_inner),
    };
    Ok(ClusterConfig {
        nats,
        node,
        prefix,
        lease,
        user,
        token: raw.token.map(Spanned::into_inner),
        tls_ca: raw.tls_ca,
        tls_client,
        tls_required: raw.tls_required,
        subscription_capacity,
    })
}

/// `nats://host:port`, `tls://host:port`, `host:port` or `host`, with optional `user:pass@`.
fn valid_nats_url(url: &str) -> bool {
    let rest = url.strip_prefix("nats://").or_else(|| url.strip_prefix("tls://")).unwrap_or(url);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    !host_port.is_empty()
        && !host_port.contains(['/', ' ', '?', '#'])
        && host_port.rsplit_once(':').is_none_or(|(host, port)| {
            !host.is_empty()
                && (port.parse::<u16>().is_ok() || host.ends_with(']') && port.is_empty())
        })
}

/// A NATS subject token onair writes: node names, stream names, prefix parts.
fn valid_token(token: &str) -> bool {
    valid_stream_name(token)
}

/// The host name's first label, made a valid node name (`onair` when there is none).
fn default_node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let host = if ok { String::from_utf8_lossy(&buf[..len]).into_owned() } else { String::new() };
    let label: String = host
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' })
        .collect();
    if label.is_empty() {
        "onair".to_owned()
    } else {
        label
    }
}

/// What a per-address limit counts a peer as: an IPv4 address as is, an IPv6 address cut to
/// its first `ipv6_prefix` bits. `ip` must be canonical (a mapped IPv4 address already turned
/// into one), or every IPv4 peer of a dual-stack socket would fall into `::ffff:0:0/96`.
pub fn address_key(ip: std::net::IpAddr, ipv6_prefix: u8) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(_) => ip,
        std::net::IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            std::net::Ipv6Addr::from(u128::from(v6) & mask).into()
        }
    }
}

/// Stream names appear in URLs and logs: keep them to a safe alphabet.
pub fn valid_stream_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shape_parses() {
        let text = r#"
listen = "127.0.0.1:8000"
allowed_origins = ["https://radio.example"]   # absent: any Origin is accepted
[[streams]]
name = "radio"
key = "SECRET-0123456789"
"#;
        let config = Config::parse(text, "onair.toml").unwrap();
        assert_eq!(config.listen.port(), 8000);
        assert_eq!(
            config.allowed_origins.as_deref(),
            Some(&["https://radio.example".to_owned()][..])
        );
        assert_eq!(config.streams, vec![StreamConfig::new("radio", Some("SECRET-0123456789"))]);
    }

    #[test]
    fn the_example_config_in_the_repo_parses() {
        let text = include_str!("../docs/onair.example.toml");
        let config = Config::parse(text, "onair.example.toml").unwrap();
        assert!(!config.streams.is_empty());
        // The commented-out [tls] table is valid too.
        let uncommented = text
            .replace("# [tls]", "[tls]")
            .replace("# listen = \"0.0.0.0:8443\"", "listen = \"0.0.0.0:8443\"")
            .replace("# cert =", "cert =")
            .replace("# key =", "key =");
        let config = Config::parse(&uncommented, "onair.example.toml").unwrap();
        assert_eq!(config.tls.map(|t| t.listen.port()), Some(8443));
        // And so is the commented-out [cluster] table (token and user are alternatives).
        let cluster: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [cluster]"))
            .filter(|l| !l.starts_with("# token"))
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let config = Config::parse(&cluster, "onair.example.toml").unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!((cluster.node.as_str(), cluster.lease), ("edge-1", Duration::from_secs(3)));
        assert!(cluster.user.is_some() && cluster.tls_client.is_some());
        assert_eq!(cluster.subscription_capacity, Some(1024));
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let cases = [
            ("listen = \"nowhere\"\n", 1, "not an IP address"),
            (
                "[[streams]]\nname = \"a\"\nkey = \"0123456789abcdef\"\n[[streams]]\nname = \"a\"\nkey = \"0123456789abcdef\"\n",
                5,
                "declared twice",
            ),
            ("[[streams]]\nname = \"has space\"\nkey = \"k\"\n", 2, "stream name"),
            ("[[streams]]\nname = \"a\"\nkey = \"SECRET\"\n", 3, "key must be at least 16 characters"),
            ("admin_password = \"hackme\"\n", 1, "admin_password must be at least 16"),
            ("\n[[streams]]\nname = \"a\"\nkey = \"\"\n", 4, "key is empty"),
            ("[[streams]]\nname = \"a\"\n", 2, "needs a `key`"),
            ("listen = \"127.0.0.1:1\"\nlisen = 3\n", 2, "unknown field"),
            (
                "[[streams]]\nname = \"a\"\nkey = \"0123456789abcdef\"\nring_frames = 0\n",
                4,
                "ring_frames must be > 0",
            ),
            ("listen = \"127.0.0.1:1\"\nsend_window_ms = 5000\n", 2, "send_window_ms"),
            ("listen = \"127.0.0.1:1\"\nlistener_threads = 0\n", 2, "listener_threads must be > 0"),
            ("\nlistener_threads = 65\n", 2, "listener_threads must be at most 64"),
            ("[cluster]\nnats = \"http://x/\"\n", 2, "not a NATS URL"),
            ("[cluster]\nnats = []\n", 2, "at least one NATS URL"),
            ("[cluster]\nnats = \"x:4222\"\nnode = \"edge.1\"\n", 3, "cluster.node"),
            ("[cluster]\nnats = \"x:4222\"\nlease_ms = 100\n", 3, "lease_ms must be"),
            ("[cluster]\nnats = \"x:4222\"\nuser = \"u\"\n", 3, "go together"),
            ("[cluster]\nnats = \"x:4222\"\nprefix = \"a.*\"\n", 3, "cluster.prefix"),
            ("[cluster]\nnats = \"x:4222\"\nnodes = \"a\"\n", 3, "unknown field"),
            ("[cluster]\nnats = \"x:4222\"\nsubscription_capacity = 0\n", 3, "subscription_capacity"),
            ("\nip_limit_ipv6_prefix = 0\n", 2, "ip_limit_ipv6_prefix must be 1-128"),
            ("listen = [\n", 1, ""),
            (
                "[[streams]]\nname = \"a\"\nkey = \"0123456789abcdef\"\nrecord = true\n",
                4,
                "record = true needs a top-level recordings_dir",
            ),
            (
                "recordings_dir = \"r\"\n[[streams]]\nname = \"a\"\nkey = \"0123456789abcdef\"\nrecord_autodj = true\n",
                5,
                "record_autodj = true needs record = true",
            ),
            ("recordings_dir = \"r\"\nrecordings_split_minutes = 0\n", 2, "between 1/60"),
            ("\nrecordings_split_minutes = 2000.5\n", 2, "recordings_split_minutes"),
            ("\n\nrecordings_keep_days = 0\n", 3, "recordings_keep_days must be > 0"),
            ("recordings_max_bytes = 0\n", 1, "recordings_max_bytes must be > 0"),
            ("recordings_fsync_seconds = 0\n", 1, "recordings_fsync_seconds must be between"),
            ("\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.lan\"]\n", 2, "`proxy.lan` is not an IP"),
            ("trusted_proxies = [\"10.0.0.1/8\"]\n", 1, "did you mean 10.0.0.0/8?"),
            ("trusted_proxies = [\"::/200\"]\n", 1, "the prefix must be"),
            ("proxy_protocol = \"yes\"\n", 1, "invalid type"),
        ];
        for (text, line, what) in cases {
            let err = Config::parse(text, "x.toml").unwrap_err();
            assert_eq!((err.file.as_str(), err.line), ("x.toml", line), "{text:?}: {err}");
            assert!(err.to_string().contains(what), "{text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("x.toml:{line}:")), "{err}");
        }
    }

    #[test]
    fn the_cluster_table_takes_one_url_or_a_list_and_names_the_node() {
        let text = "[cluster]\nnats = \"nats://127.0.0.1:4222\"\nnode = \"edge-1\"\n";
        let cluster = Config::parse(text, "x.toml").unwrap().cluster.unwrap();
        assert_eq!(cluster, ClusterConfig::new("nats://127.0.0.1:4222", "edge-1"));
        let text = "[cluster]\nnats = [\"tls://a:4222\", \"u:p@b:4222\", \"c\"]\nlease_ms = 1500\n\
                    user = \"onair\"\npassword = \"pw\"\ntls_ca = \"ca.pem\"\n";
        let cluster = Config::parse(text, "x.toml").unwrap().cluster.unwrap();
        assert_eq!(cluster.nats.len(), 3);
        assert_eq!(cluster.lease, Duration::from_millis(1500));
        assert_eq!(cluster.user, Some(("onair".into(), "pw".into())));
        assert!(valid_token(&cluster.node), "the default node name is a subject token");
        assert!(Config::parse("", "x.toml").unwrap().cluster.is_none(), "one node by default");
    }

    #[test]
    fn recording_keys_parse() {
        let text = "recordings_dir = \"rec\"\nrecordings_split_minutes = 0.05\n\
                    recordings_keep_days = 7\nrecordings_max_bytes = 1000000\n\
                    [[streams]]\nname = \"a\"\nkey = \"0123456789abcdef\"\nrecord = true\nrecord_autodj = true\n";
        let config = Config::parse(text, "x.toml").unwrap();
        assert_eq!(config.recordings_dir.as_deref(), Some(Path::new("rec")));
        assert_eq!(config.recordings_split, Duration::from_secs(3));
        assert_eq!(
            (config.recordings_keep_days, config.recordings_max_bytes),
            (Some(7), Some(1_000_000))
        );
        assert!(config.streams[0].record && config.streams[0].record_autodj);
        let hourly = Config::parse("recordings_split_minutes = 60\n", "x.toml").unwrap();
        assert_eq!(hourly.recordings_split, Duration::from_secs(3600), "an integer works too");
    }

    #[test]
    fn trusted_proxies_parse_and_are_bounded() {
        let text =
            "trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\", \"2001:db8::/32\", \"::1\"]\n\
                    proxy_protocol = true\n[tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"c\"\n\
                    key = \"k\"\nproxy_protocol = true\n";
        let config = Config::parse(text, "x.toml").unwrap();
        assert_eq!(
            config.trusted_proxies.to_string(),
            "127.0.0.1/32, 10.0.0.0/8, 2001:db8::/32, ::1/128"
        );
        assert!(config.trusted_proxies.contains("10.9.8.7".parse().unwrap()));
        assert!(config.proxy_protocol && config.tls.is_some_and(|t| t.proxy_protocol));
        let many: Vec<String> = (0..=MAX_TRUSTED_PROXIES)
            .map(|i| format!("\"10.0.{}.{}\"", i / 256, i % 256))
            .collect();
        let err = Config::parse(&format!("\ntrusted_proxies = [{}]\n", many.join(", ")), "x.toml")
            .unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(err.to_string().contains("at most 256"), "{err}");
        let default = Config::parse("", "x.toml").unwrap();
        assert!(default.trusted_proxies.is_empty() && !default.proxy_protocol, "trust nobody");
    }

    #[test]
    fn the_deploy_guides_snippets_parse() {
        let guide = include_str!("../docs/DEPLOY.md");
        let blocks: Vec<&str> = guide
            .split("```toml\n")
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap())
            .collect();
        assert!(blocks.len() >= 3);
        for block in blocks {
            let config = Config::parse(block, "DEPLOY.md").unwrap();
            assert!(
                config.trusted_proxies.contains("127.0.0.1".parse().unwrap())
                    || config.tls.is_some()
            );
        }
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = Config::parse("", "empty.toml").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert!(config.streams.is_empty());
        assert!(config.listener_threads >= 1, "one driver per core");
        assert_eq!(
            config.slow_listener_timeout,
            Duration::from_millis(DEFAULT_SLOW_LISTENER_TIMEOUT_MS)
        );
    }
}
