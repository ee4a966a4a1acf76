//! Recording and listen-again end to end: ffmpeg pushes a tone to a relay on 127.0.0.1:0 with
//! `record = true`; the show is listed, downloaded with range requests and decoded whole by
//! ffmpeg; long shows are split; retention removes the oldest; a relay killed with SIGKILL
//! leaves a playable file; private streams' recordings need a signed link; a failing disk does
//! not stop the live stream, and recording resumes when the disk works again.
#![allow(clippy::unwrap_used)]

mod common;
mod icecast_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use icecast_support::{temp_path, Proc};
use onair::{Config, StreamConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A relay config with `radio` (key recording-test-key-01) recorded into a fresh folder.
fn recorded(dir: &Path) -> Config {
    let mut config = config(&[]);
    let mut stream = StreamConfig::new("radio", Some("recording-test-key-01"));
    stream.record = true;
    config.streams.push(stream);
    config.recordings_dir = Some(dir.to_owned());
    config.recordings_fsync = Duration::from_secs(1);
    config
}

/// A fresh, empty folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = temp_path(name);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// ffmpeg pushing `seconds` of a sine (`None`: an hour) to `/radio.{ogg,mp3}`, `speed` times
/// faster than real time, with `title` in its stream tags.
fn push(
    relay_addr: std::net::SocketAddr,
    codec: &str,
    freq: u32,
    seconds: Option<u32>,
    speed: u32,
) -> Proc {
    let url = format!(
        "icecast://source:recording-test-key-01@{relay_addr}/radio.{}",
        if codec == "mp3" { "mp3" } else { "ogg" }
    );
    let encode = match codec {
        "mp3" => "-ac 2 -c:a libmp3lame -b:a 128k -f mp3 -content_type audio/mpeg",
        "vorbis" => "-ar 44100 -ac 2 -c:a libvorbis -b:a 96k -f ogg -content_type audio/ogg",
        _ => "-ac 2 -c:a libopus -b:a 96k -f ogg -content_type application/ogg",
    };
    let seconds = seconds.unwrap_or(3600);
    let command = format!(
        "-hide_banner -loglevel error -readrate {speed} -f lavfi \
         -i sine=frequency={freq}:sample_rate=48000:duration={seconds} {encode} -metadata title=Tone{freq}"
    );
    let mut args: Vec<&str> = command.split_whitespace().collect();
    args.push(&url);
    Proc::spawn("ffmpeg", &args, None)
}

/// A raw HTTP/1.1 exchange: status, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!("{} is not JSON: {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }
}

async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut socket = within(TcpStream::connect(addr)).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within_secs(20, socket.read_to_end(&mut response)).await.unwrap();
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let text = String::from_utf8_lossy(&response[..end]).into_owned();
    let mut lines = text.lines();
    let status =
        lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers, body: response[end..].to_vec() }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[]).await
}

/// The stream's recordings (the list's `recordings` array).
async fn list(addr: std::net::SocketAddr) -> Vec<Value> {
    let answer = get(addr, "/api/recordings/radio").await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    answer.json()["recordings"].as_array().unwrap().clone()
}

/// Polls the list until `done` holds for it (the recorder works in the background).
async fn wait_list(
    addr: std::net::SocketAddr,
    secs: u64,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    within_secs(secs, async {
        loop {
            let recordings = list(addr).await;
            if done(&recordings) {
                return recordings;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Decodes a file with ffmpeg into mono 48 kHz samples; `strict` fails on any decode error.
async fn decode(path: &Path, strict: bool) -> Vec<f32> {
    let path = path.to_string_lossy().into_owned();
    let mut args = vec!["-hide_banner", "-loglevel", "error"];
    if strict {
        args.push("-xerror");
    }
    args.extend(["-i", &path, "-ac", "1", "-ar", "48000", "-f", "f32le", "-"]);
    let out =
        within_secs(30, tokio::process::Command::new("ffmpeg").args(&args).output()).await.unwrap();
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    if strict {
        assert!(
            out.stderr.is_empty(),
            "ffmpeg complained: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// (flags, granule) of every Ogg page in `bytes`; fails on a bad page.
fn ogg_pages(bytes: &[u8]) -> Vec<(u8, u64)> {
    let mut buf = bytes::BytesMut::from(bytes);
    let mut pages = Vec::new();
    while let Some(page) = onair::format::ogg::parse_page(&mut buf).unwrap() {
        pages.push((page.flags, page.granule));
    }
    assert!(buf.is_empty(), "{} bytes after the last page", buf.len());
    pages
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[cfg(feature = "source")]
#[tokio::test]
async fn a_live_show_is_recorded_listed_and_served_with_ranges_and_the_auto_dj_is_not() {
    let dir = TempDir::new("show");
    let mut config = recorded(&dir.0);
    config.streams[0].playlist = Some(sample("tone-440.flac"));
    let relay = TestRelay::start_with(config).await;
    icecast_support::wait_live(&relay, "radio", 50, None).await;
    // The auto-DJ plays 440 Hz; ffmpeg goes live over it with 6 s of 1 kHz (in 3 s), and an
    // operator sets a title while it is on.
    let source = push(relay.addr, "opus", 1000, Some(6), 2);
    wait_list(relay.addr, 10, |r| r.first().is_some_and(|r| r["state"] == "recording")).await;
    let auth = format!("Basic {}", common::base64("source:recording-test-key-01"));
    let path = "/admin/metadata?mount=/radio.ogg&mode=updinfo&song=Live+Title";
    assert_eq!(request(relay.addr, "GET", path, &[("Authorization", &auth)]).await.status, 200);
    let (status, _, stderr) = source.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "ffmpeg: {stderr}");
    let recordings =
        wait_list(relay.addr, 10, |r| r.first().is_some_and(|r| r["state"] == "complete")).await;
    assert_eq!(
        recordings.len(),
        1,
        "one file for the live show, none for the auto-DJ: {recordings:?}"
    );
    let rec = &recordings[0];
    let id = rec["id"].as_str().unwrap();
    assert!(id.len() >= 16 && id.ends_with('Z'), "{id}");
    assert!(rec["started"].as_str().unwrap().ends_with('Z'));
    assert_eq!(rec["source"], "live");
    assert_eq!(rec["content_type"], "audio/ogg");
    let duration = rec["duration_s"].as_f64().unwrap();
    assert!((5.5..=6.5).contains(&duration), "duration {duration}");
    assert_eq!(rec["titles"][0]["title"], "Tone1000");
    assert_eq!(rec["titles"][0]["offset_s"], 0.0);
    assert_eq!(rec["titles"][1]["title"], "Live Title");
    let offset = rec["titles"][1]["offset_s"].as_f64().unwrap();
    assert!(offset > 0.0 && offset < duration, "the title's place in the file: {offset}");
    let url = rec["url"].as_str().unwrap();
    assert_eq!(url, format!("/recordings/radio/{id}.ogg"));
    let bytes = rec["bytes"].as_u64().unwrap();

    // Seeking players: a range, the rest of it, one past the end.
    let head = request(relay.addr, "GET", url, &[("Range", "bytes=0-99")]).await;
    assert_eq!(head.status, 206);
    assert_eq!(head.header("content-range"), Some(format!("bytes 0-99/{bytes}").as_str()));
    assert_eq!(head.header("accept-ranges"), Some("bytes"));
    assert_eq!(head.header("content-type"), Some("audio/ogg"));
    assert_eq!(head.body.len(), 100);
    let rest = request(relay.addr, "GET", url, &[("Range", "bytes=100-")]).await;
    assert_eq!(rest.status, 206);
    assert_eq!(
        rest.header("content-range"),
        Some(format!("bytes 100-{}/{bytes}", bytes - 1).as_str())
    );
    let whole = [head.body, rest.body].concat();
    let past = request(relay.addr, "GET", url, &[("Range", &format!("bytes={bytes}-"))]).await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some(format!("bytes */{bytes}").as_str()));
    let full = get(relay.addr, url).await;
    assert_eq!((full.status, full.body.len() as u64), (200, bytes));
    assert_eq!(full.body, whole, "two ranges make the file");
    let probe = request(relay.addr, "HEAD", url, &[]).await;
    assert_eq!(
        (probe.status, probe.header("content-length")),
        (200, Some(bytes.to_string().as_str()))
    );
    assert!(probe.body.is_empty());

    // A standalone Ogg stream: head pages first, granules from 0, an EOS page last.
    let pages = ogg_pages(&whole);
    assert_eq!(pages[0], (onair::format::ogg::FLAG_BOS, 0));
    assert!(pages.last().unwrap().0 & onair::format::ogg::FLAG_EOS != 0);
    let file = write(&dir.0, "download.ogg", &whole);
    let pcm = decode(&file, true).await;
    let seconds = pcm.len() as f64 / 48_000.0;
    assert!((5.5..=6.5).contains(&seconds), "{seconds} s decoded");
    let share = tone_share(&pcm[4_800..pcm.len() - 4_800], 1000.0);
    assert!(share > 0.95, "the live tone, not the auto-DJ's: {share}");

    let bad = [
        "/recordings/radio/..%2F..%2Fetc%2Fpasswd",
        "/recordings/radio/../../etc/passwd",
        &format!("/recordings/radio/{id}.json"),
        &format!("/recordings/radio/{id}"),
        &format!("/recordings/other/{id}.ogg"),
        "/api/recordings/other",
    ];
    for path in bad {
        assert_eq!(get(relay.addr, path).await.status, 404, "{path}");
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn a_long_show_is_split_at_the_configured_length() {
    let dir = TempDir::new("split");
    let mut config = recorded(&dir.0);
    config.recordings_split = Duration::from_secs(3);
    let relay = TestRelay::start_with(config).await;
    let source = push(relay.addr, "mp3", 440, Some(8), 4);
    let (status, _, stderr) = source.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "ffmpeg: {stderr}");
    let recordings =
        wait_list(relay.addr, 10, |r| r.len() == 3 && r.iter().all(|r| r["state"] == "complete"))
            .await;
    // Newest first: parts 3, 2, 1 of one show.
    let parts: Vec<u64> = recordings.iter().map(|r| r["part"].as_u64().unwrap()).collect();
    assert_eq!(parts, [3, 2, 1]);
    let show = recordings[2]["id"].clone();
    assert!(recordings.iter().all(|r| r["show"] == show), "{recordings:?}");
    let mut total = 0.0;
    for rec in &recordings {
        let duration = rec["duration_s"].as_f64().unwrap();
        let listed = if rec["part"] == 3 { 1.5..=2.5 } else { 3.0..=3.1 };
        assert!(listed.contains(&duration), "part {}: {duration} s", rec["part"]);
        assert_eq!(rec["content_type"], "audio/mpeg");
        let answer = get(relay.addr, rec["url"].as_str().unwrap()).await;
        assert_eq!(answer.status, 200);
        let file = write(&dir.0, "part.mp3", &answer.body);
        let pcm = decode(&file, true).await;
        let seconds = pcm.len() as f64 / 48_000.0;
        assert!((duration - 0.1..=duration + 0.1).contains(&seconds), "{seconds} s vs {duration}");
        assert!(tone_share(&pcm, 440.0) > 0.95);
        total += seconds;
    }
    assert!((7.8..=8.2).contains(&total), "{total} s in all");
    relay.shutdown().await;
}

#[tokio::test]
async fn an_ogg_vorbis_show_is_recorded_as_ogg_vorbis() {
    let dir = TempDir::new("vorbis");
    let relay = TestRelay::start_with(recorded(&dir.0)).await;
    let source = push(relay.addr, "vorbis", 440, Some(4), 4);
    let (status, _, stderr) = source.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "ffmpeg: {stderr}");
    let recordings =
        wait_list(relay.addr, 10, |r| r.first().is_some_and(|r| r["state"] == "complete")).await;
    let duration = recordings[0]["duration_s"].as_f64().unwrap();
    assert!((3.8..=4.2).contains(&duration), "duration {duration} (44.1 kHz granules)");
    let answer = get(relay.addr, recordings[0]["url"].as_str().unwrap()).await;
    let file = write(&dir.0, "show.ogg", &answer.body);
    let pcm = decode(&file, true).await;
    assert!((pcm.len() as f64 / 48_000.0 - duration).abs() < 0.1, "{} samples", pcm.len());
    assert!(tone_share(&pcm, 440.0) > 0.95);
    relay.shutdown().await;
}

#[cfg(feature = "source")]
#[tokio::test]
async fn the_auto_dj_is_recorded_with_record_autodj() {
    let dir = TempDir::new("autodj");
    let mut config = recorded(&dir.0);
    config.streams[0].playlist = Some(sample("tone-440.flac"));
    config.streams[0].record_autodj = true;
    let relay = TestRelay::start_with(config).await;
    let recordings = wait_list(relay.addr, 10, |r| {
        r.first().is_some_and(|r| r["duration_s"].as_f64() > Some(0.5))
    })
    .await;
    assert_eq!(
        (&recordings[0]["source"], &recordings[0]["state"]),
        (&Value::from("autodj"), &Value::from("recording"))
    );
    assert_eq!(recordings[0]["titles"][0]["title"], "onair samples - Tone 440 Hz");
    relay.shutdown().await;
    let recordings = list_dir(&dir.0.join("radio"));
    assert_eq!(recordings.len(), 2, "a file and its sidecar: {recordings:?}");
}

fn list_dir(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn retention_removes_the_oldest_recordings_first() {
    let dir = TempDir::new("retention");
    let radio = dir.0.join("radio");
    std::fs::create_dir_all(&radio).unwrap();
    let now = SystemTime::now();
    let id = |ago_hours: u64| {
        onair::record::catalog::make_id(now - Duration::from_secs(ago_hours * 3600), 1)
    };
    let ancient = "20200101T000000Z";
    for (name, bytes) in [
        (format!("{ancient}.ogg"), 10),
        (format!("{ancient}.json"), 0),
        (format!("{}.ogg", id(3)), 1000),
        (format!("{}.ogg", id(2)), 1000),
        (format!("{}.ogg", id(1)), 1000),
        ("keep-me.txt".to_owned(), 5000),
    ] {
        write(&radio, &name, &vec![0u8; bytes]);
    }
    let mut config = recorded(&dir.0);
    config.recordings_keep_days = Some(30);
    config.recordings_max_bytes = Some(2500);
    let relay = TestRelay::start_with(config).await;
    let recordings = wait_list(relay.addr, 5, |r| r.len() == 2).await;
    let ids: Vec<&str> = recordings.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id(1), id(2)], "newest first, the oldest gone");
    assert!(!radio.join(format!("{ancient}.json")).exists(), "a sidecar goes with its file");
    assert!(radio.join("keep-me.txt").exists(), "files that are not recordings stay");
    let (_, metrics) = http_get(&relay, "/metrics").await;
    assert!(metrics.contains("onair_recordings_removed_total{stream=\"radio\"} 2"), "{metrics}");
    relay.shutdown().await;
}

#[tokio::test]
async fn private_streams_recordings_need_the_signed_link() {
    let dir = TempDir::new("private");
    let mut config = recorded(&dir.0);
    config.streams[0].listen_secret = Some("a-secret-of-16-chars".into());
    std::fs::create_dir_all(dir.0.join("radio")).unwrap();
    write(&dir.0.join("radio"), "20240305T100000Z.ogg", b"OggS not really");
    let relay = TestRelay::start_with(config).await;
    let expires = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() + 600;
    let sig = onair::auth::sign("a-secret-of-16-chars", "radio", expires);
    let link = format!("?expires={expires}&sig={sig}");

    assert_eq!(get(relay.addr, "/api/recordings/radio").await.status, 401);
    let forged = format!("?expires={expires}&sig={}", "0".repeat(64));
    assert_eq!(get(relay.addr, &format!("/api/recordings/radio{forged}")).await.status, 403);
    let listed = get(relay.addr, &format!("/api/recordings/radio{link}")).await;
    assert_eq!(listed.status, 200);
    let url = listed.json()["recordings"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("/recordings/radio/20240305T100000Z.ogg{link}"), "the link is carried");
    assert_eq!(get(relay.addr, "/recordings/radio/20240305T100000Z.ogg").await.status, 401);
    let file = get(relay.addr, &url).await;
    assert_eq!((file.status, file.body.as_slice()), (200, &b"OggS not really"[..]));
    assert_eq!(file.header("cache-control"), Some("private, no-cache"));
    relay.shutdown().await;
}

#[tokio::test]
async fn a_failing_disk_never_stops_the_live_stream_and_recording_resumes() {
    let dir = TempDir::new("disk");
    // A folder that cannot be made, even by root: its parent is a file.
    let blocker = write(&dir.0, "blocker", b"not a folder");
    let config = recorded(&blocker.join("recordings"));
    let relay = TestRelay::start_with(config).await;
    let _source = push(relay.addr, "opus", 440, None, 1);
    icecast_support::wait_live(&relay, "radio", 25, None).await;
    let (listener, _) = listener(&relay, "radio").await;
    let heard = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn(count_frames(listener, Arc::clone(&heard)));
    // Live audio still reaches the listener: `n` more frames arrive.
    let flowing = |n: u64| {
        let heard = Arc::clone(&heard);
        async move {
            let from = heard.load(Ordering::Relaxed);
            within_secs(10, async {
                while heard.load(Ordering::Relaxed) < from + n {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
        }
    };
    let errors = "onair_recording_errors_total{stream=\"radio\",op=\"open\"}";
    within_secs(10, async {
        while !http_get(&relay, "/metrics").await.1.contains(errors) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (_, streams) = http_get(&relay, "/api/streams").await;
    assert!(streams.contains("\"live\":true"), "{streams}");
    flowing(25).await;

    // The disk works again: a new file within the backoff (1, 2, 4 s...).
    std::fs::remove_file(&blocker).unwrap();
    let first = wait_list(relay.addr, 15, |r| r.len() == 1 && r[0]["state"] == "recording").await;
    let first = first[0]["id"].as_str().unwrap().to_owned();

    // The stream's folder is deleted under the recorder: it notices at its next sync and goes
    // on in a new file in a new folder.
    std::fs::remove_dir_all(blocker.join("recordings/radio")).unwrap();
    let next = wait_list(relay.addr, 10, |r| r.len() == 1 && r[0]["state"] == "recording").await;
    assert_ne!(next[0]["id"].as_str().unwrap(), first);
    flowing(25).await;
    let (_, metrics) = http_get(&relay, "/metrics").await;
    assert!(
        metrics.contains("onair_recording_errors_total{stream=\"radio\",op=\"vanished\"} 1"),
        "{metrics}"
    );
    let lost = metrics
        .lines()
        .find(|l| l.starts_with("onair_recording_frames_lost_total{stream=\"radio\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap();
    assert!(lost > 0, "frames lost while the disk failed are counted");
    reader.abort();
    relay.shutdown().await;
    // Shutdown closed the file: it decodes cleanly.
    let id = next[0]["id"].as_str().unwrap();
    let pcm = decode(&blocker.join(format!("recordings/radio/{id}.ogg")), true).await;
    assert!(pcm.len() > 48_000 / 2, "{} samples", pcm.len());
    assert!(tone_share(&pcm, 440.0) > 0.95);
}

#[tokio::test]
async fn a_relay_killed_mid_show_leaves_a_playable_recording() {
    let dir = TempDir::new("sigkill");
    let config_path = write(
        &dir.0,
        "onair.toml",
        format!(
            "recordings_dir = \"{}\"\nrecordings_fsync_seconds = 1\n[[streams]]\nname = \"radio\"\nkey = \"recording-test-key-01\"\nrecord = true\n",
            dir.0.join("rec").display()
        )
        .as_bytes(),
    );
    let (relay, addr) = spawn_relay(&config_path).await;
    let mut source = push(addr, "opus", 440, None, 1);
    // Wait until the file holds at least 3 s of audio (96 kbit/s: 12 kB/s).
    let radio = dir.0.join("rec/radio");
    let file = within_secs(20, async {
        loop {
            let found = std::fs::read_dir(&radio).ok().and_then(|d| {
                d.flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "ogg"))
            });
            if let Some(file) =
                found.filter(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 40_000))
            {
                return file;
            }
            assert!(source.running(), "ffmpeg exited: {}", source.stderr());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    drop(relay); // SIGKILL
    drop(source);
    let pcm = decode(&file, false).await;
    let seconds = pcm.len() as f64 / 48_000.0;
    assert!(seconds >= 2.5, "{seconds} s playable");
    assert!(tone_share(&pcm, 440.0) > 0.95);
    // After a restart the list says what happened to it.
    let config = Config::load(&config_path).unwrap();
    let relay = TestRelay::start_with(config).await;
    let recordings = list(relay.addr).await;
    assert_eq!(recordings[0]["state"], "interrupted");
    relay.shutdown().await;
}

/// Reads a WebSocket listener until it ends, counting binary frames.
async fn count_frames(mut ws: Ws, heard: Arc<AtomicU64>) {
    use futures_util::StreamExt;
    while let Some(Ok(message)) = ws.next().await {
        if message.is_binary() {
            heard.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The `onair` binary serving `config` on a port of its choosing; killed (SIGKILL) on drop.
async fn spawn_relay(config: &Path) -> (KillOnDrop, std::net::SocketAddr) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let guard = KillOnDrop(child);
    let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the relay logs its address");
    (guard, addr.parse().unwrap())
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn recordings_are_off_without_a_recordings_dir() {
    let relay = TestRelay::start().await;
    let answer = get(relay.addr, "/api/recordings/radio").await;
    assert_eq!(answer.status, 404);
    assert!(String::from_utf8_lossy(&answer.body).contains("recordings_dir"));
    let (_, streams) = http_get(&relay, "/api/streams").await;
    assert!(streams.contains("\"recorded\":false"), "{streams}");
    relay.shutdown().await;
}
