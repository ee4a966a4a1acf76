//! Test harness: a real relay on 127.0.0.1:0 and real WebSocket clients.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use onair::protocol::{encode_frame, FrameHeader, FLAG_HEADER, FLAG_KEYFRAME};
use onair::{Config, StreamConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket as the tests use it.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub mod nats;
pub mod wav;

/// Every await that could hang gets this long.
pub const WITHIN: Duration = Duration::from_secs(5);

/// Fails the test instead of hanging.
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WITHIN, future).await.expect("timed out")
}

/// Like `within`, for what takes real (paced) time.
pub async fn within_secs<F: Future>(secs: u64, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), future).await.expect("timed out")
}

/// The power of `freq` in 48 kHz samples (Goertzel).
pub fn tone_power(samples: &[f32], freq: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / 48_000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in samples {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The share of `freq` in the power at it and at 440 Hz, 500 Hz, 1 kHz and 2 kHz (the test
/// tones and their neighbours): near 1 when `freq` is what plays.
pub fn tone_share(samples: &[f32], freq: f64) -> f64 {
    let at = tone_power(samples, freq);
    let others: f64 = [440.0, 500.0, 1_000.0, 2_000.0]
        .iter()
        .filter(|&&f| (f - freq).abs() > 1.0)
        .map(|&f| tone_power(samples, f))
        .sum();
    at / (at + others)
}

/// A file of `samples/`.
pub fn sample(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join(name)
}

/// A file of `samples/` as a command-line argument.
pub fn sample_arg(name: &str) -> String {
    sample(name).to_string_lossy().into_owned()
}

/// The start message for one stereo Opus track.
pub const OPUS_START: &str = r#"{"type":"start","tracks":[{"id":0,"kind":"audio","codec":"opus","sample_rate":48000,"channels":2}]}"#;

/// A relay running in this process.
pub struct TestRelay {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<onair::Result<()>>,
}

impl TestRelay {
    /// A relay with one stream `radio`, key `SECRET`.
    pub async fn start() -> Self {
        Self::start_with(config(&[("radio", "SECRET")])).await
    }

    /// A relay with this config (its `listen` is ignored: the port is ephemeral).
    pub async fn start_with(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ephemeral port");
        Self::start_on(listener, config)
    }

    /// A relay on a listener the test bound (e.g. to restart on the same port).
    pub fn start_on(listener: TcpListener, config: Config) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(onair::server::run(listener, config, async {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Graceful shutdown must finish; a hang fails the test.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        within(self.task).await.expect("server panicked").expect("server error");
    }
}

/// A config with these (name, key) streams and test-friendly defaults.
pub fn config(streams: &[(&str, &str)]) -> Config {
    Config {
        streams: streams.iter().map(|(name, key)| StreamConfig::new(name, Some(key))).collect(),
        ..Config::default()
    }
}

/// Connects a source with a bearer key and sends the start message.
pub async fn source(relay: &TestRelay, stream: &str, key: &str) -> Ws {
    let mut ws = connect(
        relay,
        &format!("/ingest/{stream}"),
        &[("Authorization", &format!("Bearer {key}"))],
    )
    .await
    .expect("source connects");
    within(ws.send(Message::text(OPUS_START))).await.expect("send start");
    ws
}

/// Opens a WebSocket with extra request headers.
pub async fn connect(
    relay: &TestRelay,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, WsError> {
    let mut request = relay.url(path).into_client_request().expect("valid url");
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                .expect("header name"),
            value.parse().expect("header value"),
        );
    }
    within(tokio_tungstenite::connect_async(request)).await.map(|(ws, _)| ws)
}

/// The HTTP status of a refused upgrade.
pub async fn refused_status(relay: &TestRelay, path: &str, headers: &[(&str, &str)]) -> u16 {
    match connect(relay, path, headers).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("{path}: expected an HTTP refusal, got {err}"),
        Ok(_) => panic!("{path}: expected an HTTP refusal, got an open WebSocket"),
    }
}

/// Connects a listener and returns it with its parsed hello.
pub async fn listener(relay: &TestRelay, stream: &str) -> (Ws, serde_json::Value) {
    let mut ws =
        connect(relay, &format!("/listen/{stream}"), &[]).await.expect("listener connects");
    let hello = next_event(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    (ws, hello)
}

/// One frame message: keyframe audio on track 0.
pub fn frame(pts: u64, payload: &[u8]) -> Vec<u8> {
    encode_frame(FrameHeader { flags: FLAG_KEYFRAME, track: 0, pts }, payload).to_vec()
}

/// The OpusHead-style header frame on track 0.
pub fn header_frame(payload: &[u8]) -> Vec<u8> {
    encode_frame(FrameHeader { flags: FLAG_HEADER, track: 0, pts: 0 }, payload).to_vec()
}

/// A payload that differs per frame so reordering or corruption shows.
pub fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j * 7) as u8).collect()
}

/// The next message that is not a ping or pong.
pub async fn next_message(ws: &mut Ws) -> Message {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(msg)) => return msg,
            Some(Err(err)) => panic!("websocket error: {err}"),
            None => panic!("connection ended"),
        }
    }
}

/// The next text message, parsed; binary frames before it fail the test.
pub async fn next_event(ws: &mut Ws) -> serde_json::Value {
    match next_message(ws).await {
        Message::Text(text) => serde_json::from_str(&text).expect("events are JSON"),
        other => panic!("expected a text event, got {other:?}"),
    }
}

/// The next binary frame; text events before it fail the test.
pub async fn next_frame(ws: &mut Ws) -> Vec<u8> {
    match next_message(ws).await {
        Message::Binary(data) => data.to_vec(),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

/// Reads until the peer closes; returns the close code.
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
            Some(Ok(_)) => continue,
            Some(Err(err)) => panic!("expected a close frame, got error {err}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

/// A plain HTTP GET; returns status and body.
pub async fn http_get(relay: &TestRelay, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = within(TcpStream::connect(relay.addr)).await.expect("connect");
    // HLS answers keep an HTTP/1.1 connection open unless asked not to.
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.expect("send request");
    let mut response = Vec::new();
    within(socket.read_to_end(&mut response)).await.expect("read response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A listener with a tiny receive window that the test does not read: it stalls at once.
pub async fn stalled_listener(relay: &TestRelay, stream: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = within(socket.connect(relay.addr)).await.expect("connect");
    let url = relay.url(&format!("/listen/{stream}"));
    let (ws, _) = within(tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)))
        .await
        .expect("handshake");
    ws
}

/// A WebSocket opened by hand on a raw socket: nothing answers the relay's pings.
pub async fn raw_websocket(relay: &TestRelay, path: &str) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = within(TcpStream::connect(relay.addr)).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("send handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        within(tcp.read_exact(&mut byte)).await.expect("read handshake");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// Sends one masked client frame on a raw socket.
pub async fn raw_send(tcp: &mut TcpStream, opcode: u8, payload: &[u8]) {
    use tokio::io::AsyncWriteExt;
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.expect("send frame");
}

/// Reads server frames on a raw socket until a close frame; returns its code and how many
/// pings came before it.
pub async fn raw_close_code(tcp: &mut TcpStream) -> (u16, usize) {
    use tokio::io::AsyncReadExt;
    let mut pings = 0;
    loop {
        let mut head = [0u8; 2];
        within(tcp.read_exact(&mut head)).await.expect("read frame head");
        let len = match head[1] & 0x7F {
            126 => {
                let mut n = [0u8; 2];
                tcp.read_exact(&mut n).await.expect("len");
                usize::from(u16::from_be_bytes(n))
            }
            127 => {
                let mut n = [0u8; 8];
                tcp.read_exact(&mut n).await.expect("len");
                u64::from_be_bytes(n) as usize
            }
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        within(tcp.read_exact(&mut payload)).await.expect("read payload");
        match head[0] & 0x0F {
            0x8 => return (u16::from_be_bytes([payload[0], payload[1]]), pings),
            0x9 => pings += 1,
            _ => {}
        }
    }
}

/// A directory for a test's web root, removed when dropped.
pub struct WebRoot(pub std::path::PathBuf);

impl WebRoot {
    /// An empty web root, unique to this test process and `name`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("onair-web-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the web root");
        Self(dir)
    }

    /// Writes `path` (creating its folders) under the root.
    pub fn file(&self, path: &str, text: &str) -> &Self {
        let path = self.0.join(path);
        std::fs::create_dir_all(path.parent().expect("a file has a folder")).expect("mkdir");
        std::fs::write(path, text).expect("write a web file");
        self
    }

    /// `index.html` and a sparse file of `len` bytes at `/big.wasm` (no disk space used).
    pub fn with_big_file(name: &str, len: u64) -> Self {
        let root = Self::new(name);
        root.file("index.html", "<!doctype html><title>x</title>");
        std::fs::File::create(root.0.join("big.wasm"))
            .and_then(|f| f.set_len(len))
            .expect("a sparse file");
        root
    }
}

impl Drop for WebRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Standard base64 (RFC 4648), for `Authorization: Basic` in tests.
pub fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}
