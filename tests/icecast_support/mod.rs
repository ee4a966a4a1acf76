//! Helpers for the Icecast tests: external tools run under a kill-on-drop guard, raw HTTP
//! clients (sources, listeners, admin), and Ogg/ICY readers built on the library's parsers.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use onair::format::ogg::{parse_page, Packetizer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::common::{http_get, TestRelay};

/// Time allowed for an external tool to finish.
pub const TOOL_LIMIT: Duration = Duration::from_secs(30);

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// A fresh path in the temp directory for this test process.
pub fn temp_path(name: &str) -> PathBuf {
    let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("onair-icecast-test-{}-{n}-{name}", std::process::id()))
}

/// An external process that is killed (and reaped) when dropped; its output goes to files.
pub struct Proc {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// Starts `program` with `args`, stdin from `stdin` (or nothing).
    pub fn spawn(program: &str, args: &[&str], stdin: Option<&Path>) -> Proc {
        let stdout = temp_path("stdout");
        let stderr = temp_path("stderr");
        let input = match stdin {
            Some(path) => Stdio::from(File::open(path).expect("open stdin file")),
            None => Stdio::null(),
        };
        let child = Command::new(program)
            .args(args)
            .stdin(input)
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {program} (is it installed?): {err}"));
        Proc { child, label: format!("{program} {}", args.join(" ")), stdout, stderr }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for it to exit (failing the test after `limit`); returns status, stdout, stderr.
    pub async fn wait(mut self, limit: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let stdout = std::fs::read_to_string(&self.stdout).unwrap_or_default();
                return (status, stdout, self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish in {limit:?}: {}",
                self.label,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// Runs a tool to completion and asserts it succeeded; returns (stdout, stderr).
pub async fn run_ok(program: &str, args: &[&str]) -> (String, String) {
    let (status, stdout, stderr) = Proc::spawn(program, args, None).wait(TOOL_LIMIT).await;
    assert!(status.success(), "{program} {args:?} failed ({status}): {stderr}");
    (stdout, stderr)
}

/// Makes an Ogg/Opus file of `seconds` of a stereo sine with a title, via ffmpeg.
pub async fn opus_file(seconds: u32, title: &str) -> TempFile {
    let path = temp_path("sine.opus.ogg");
    let input = format!("sine=frequency=440:sample_rate=48000:duration={seconds}");
    let title = format!("title={title}");
    run_ok(
        "ffmpeg",
        &[
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            &input,
            "-ac",
            "2",
            "-c:a",
            "libopus",
            "-b:a",
            "96k",
            "-metadata",
            &title,
            "-metadata",
            "artist=Tester",
            path.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    TempFile(path)
}

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// The path as a string.
    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts ffmpeg pushing a sine to `mount` with the Icecast protocol, paced in real time.
pub fn ffmpeg_source(relay: &TestRelay, mount: &str, password: &str, codec: &str) -> Proc {
    let url = format!("icecast://source:{password}@{}{mount}", relay.addr);
    let encode = match codec {
        "opus" => "48000 -ac 2 -c:a libopus -b:a 128k -f ogg",
        "vorbis" => "44100 -ac 2 -c:a libvorbis -b:a 96k -f ogg -content_type audio/ogg",
        _ => "44100 -ac 2 -c:a libmp3lame -b:a 128k -f mp3 -content_type audio/mpeg",
    };
    let command = format!(
        "-hide_banner -loglevel error -re -f lavfi -i sine=frequency=440:duration=60:sample_rate={encode}"
    );
    let mut args: Vec<&str> = command.split_whitespace().collect();
    args.extend(["-ice_name", "Test FM", "-ice_genre", "Testing", &url]);
    Proc::spawn("ffmpeg", &args, None)
}

/// The JSON of `/api/streams` for one stream.
pub async fn stream_info(relay: &TestRelay, name: &str) -> serde_json::Value {
    let (_, body) = http_get(relay, "/api/streams").await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("streams JSON");
    json["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .cloned()
        .expect("stream listed")
}

/// Waits until `name` is live and has taken at least `frames` frames.
pub async fn wait_live(relay: &TestRelay, name: &str, frames: u64, source: Option<&mut Proc>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut source = source;
    loop {
        let info = stream_info(relay, name).await;
        if info["live"] == true && info["frames_in"].as_u64().unwrap_or(0) >= frames {
            return;
        }
        if let Some(proc) = source.as_deref_mut() {
            assert!(proc.running(), "the source exited early: {}", proc.stderr());
        }
        assert!(Instant::now() < deadline, "{name} did not go live: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `name` is offline.
pub async fn wait_offline(relay: &TestRelay, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while stream_info(relay, name).await["live"] != false {
        assert!(Instant::now() < deadline, "{name} stayed live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A complete short HTTP exchange: sends `request` as is, returns (status, head, body).
pub async fn exchange(relay: &TestRelay, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut socket = TcpStream::connect(relay.addr).await.expect("connect");
    socket.write_all(request).await.expect("send");
    let mut response = Vec::new();
    timeout(Duration::from_secs(5), socket.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    split_response(&response)
}

/// Splits a raw response into status, head and body.
pub fn split_response(response: &[u8]) -> (u16, String, Vec<u8>) {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head, response[end..].to_vec())
}

/// A GET with extra header lines; returns (status, head, body).
pub async fn get(relay: &TestRelay, path: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", relay.addr);
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    exchange(relay, request.as_bytes()).await
}

/// `Authorization: Basic` for user:password.
pub fn basic(user: &str, password: &str) -> String {
    format!("Authorization: Basic {}", crate::common::base64(&format!("{user}:{password}")))
}

/// A listener connection: the response head, then a body read on demand.
pub struct HttpListener {
    pub socket: TcpStream,
    pub head: String,
    pub status: u16,
    buffered: Vec<u8>,
}

impl HttpListener {
    /// Sends `GET path` with extra header lines and reads the response head.
    pub async fn open(relay: &TestRelay, path: &str, headers: &[&str]) -> HttpListener {
        let mut socket = TcpStream::connect(relay.addr).await.expect("connect");
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: test-listener\r\n", relay.addr);
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        socket.write_all(request.as_bytes()).await.expect("send");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(Duration::from_secs(5), socket.read(&mut chunk))
                .await
                .expect("head in time")
                .expect("read head");
            assert!(n > 0, "closed before the head: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let (status, head, body) = split_response(&buf[..end]);
        assert!(body.is_empty());
        HttpListener { socket, head, status, buffered: buf[end..].to_vec() }
    }

    /// A response header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// Reads exactly `n` body bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buffered.len() < n {
            let mut chunk = [0u8; 16384];
            let got = timeout(Duration::from_secs(5), self.socket.read(&mut chunk))
                .await
                .expect("body in time")
                .expect("read body");
            assert!(got > 0, "stream ended");
            self.buffered.extend_from_slice(&chunk[..got]);
        }
        self.buffered.drain(..n).collect()
    }

    /// Reads until the relay closes; returns what came.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.buffered);
        timeout(Duration::from_secs(5), self.socket.read_to_end(&mut rest))
            .await
            .expect("closed in time")
            .expect("read body");
        rest
    }
}

/// Reads an Ogg body page by page.
pub struct OggReader {
    pub listener: HttpListener,
    buf: BytesMut,
    packetizer: Packetizer,
}

/// One page with its packets.
#[derive(Debug)]
pub struct OggPage {
    pub serial: u32,
    pub sequence: u32,
    pub granule: u64,
    pub flags: u8,
    pub packets: Vec<Bytes>,
}

impl OggReader {
    pub fn new(listener: HttpListener) -> Self {
        Self { listener, buf: BytesMut::new(), packetizer: Packetizer::new(1 << 20) }
    }

    /// The next page, CRC checked.
    pub async fn next_page(&mut self) -> OggPage {
        loop {
            if let Some(page) = parse_page(&mut self.buf).expect("valid Ogg page") {
                let mut packets = Vec::new();
                self.packetizer.push(&page, &mut packets).expect("packets");
                return OggPage {
                    serial: page.serial,
                    sequence: page.sequence,
                    granule: page.granule,
                    flags: page.flags,
                    packets,
                };
            }
            let more = self.listener.read_exact(1).await;
            self.buf.extend_from_slice(&more);
            let pending = std::mem::take(&mut self.listener.buffered);
            self.buf.extend_from_slice(&pending);
        }
    }
}

/// Splits ICY-interleaved bytes into audio and metadata texts; `offset` carries the position
/// within the current audio run between calls.
pub struct IcyReader {
    pub listener: HttpListener,
    metaint: usize,
}

impl IcyReader {
    pub fn new(listener: HttpListener) -> Self {
        let metaint = listener
            .header("icy-metaint")
            .and_then(|v| v.parse().ok())
            .expect("icy-metaint header");
        Self { listener, metaint }
    }

    /// Reads one audio run and the metadata block after it; returns (audio, text).
    pub async fn next_block(&mut self) -> (Vec<u8>, String) {
        let audio = self.listener.read_exact(self.metaint).await;
        let len = usize::from(self.listener.read_exact(1).await[0]) * 16;
        let text = self.listener.read_exact(len).await;
        (audio, String::from_utf8_lossy(&text).trim_end_matches('\0').to_owned())
    }

    /// Reads blocks until one carries `StreamTitle='{title}'`, failing after `limit`.
    pub async fn wait_title(&mut self, title: &str, limit: Duration) {
        let want = format!("StreamTitle='{title}';");
        let deadline = Instant::now() + limit;
        loop {
            let (_, text) = self.next_block().await;
            if text.contains(&want) {
                return;
            }
            assert!(Instant::now() < deadline, "no {want} within {limit:?}; last block {text:?}");
        }
    }
}
