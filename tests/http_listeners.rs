//! HTTP listeners on the driver threads: a listener that stalls past the ring skips ahead and
//! what it receives still decodes, and many HTTP listeners get the very same bytes (the
//! container is written once per stream).
#![allow(clippy::unwrap_used)]
#![cfg(feature = "source")]

mod common;

use std::time::Duration;

use common::*;
use onair::StreamConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A relay with a short ring (1 s of 20 ms frames), and `onair push` looping `file` into it.
async fn relay_with_push(file: &str) -> (TestRelay, tokio::process::Child) {
    let mut config = config(&[]);
    let mut stream = StreamConfig::new("radio", Some("SECRET"));
    stream.ring_frames = 50;
    config.streams.push(stream);
    config.slow_listener_timeout = Duration::from_secs(60);
    let relay = TestRelay::start_with(config).await;
    let push = tokio::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["push", "--loop", "--key", "SECRET", "--to", &relay.url("/ingest/radio")])
        .arg(sample(file))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    within_secs(10, async {
        loop {
            let (_, body) = http_get(&relay, "/api/streams").await;
            if body.contains("\"live\":true") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    (relay, push)
}

/// Connects with a small receive buffer (so a stall is not hidden by the kernel) and reads the
/// response head; returns the socket and the body bytes read with it.
async fn get(relay: &TestRelay, path: &str) -> (TcpStream, Vec<u8>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(relay.addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let end = within(async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the head");
            got.extend_from_slice(&chunk[..n]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        }
    })
    .await;
    assert!(got.starts_with(b"HTTP/1.0 200 OK"), "{}", String::from_utf8_lossy(&got));
    (stream, got.split_off(end))
}

/// Reads for `seconds` of wall time.
async fn read_for(stream: &mut TcpStream, body: &mut Vec<u8>, seconds: u64) {
    let _ = tokio::time::timeout(Duration::from_secs(seconds), async {
        let mut chunk = [0u8; 16384];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the relay closed the listener");
            body.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
}

/// Decodes an Ogg/Opus file with ffmpeg into mono 48 kHz samples; fails on a decode error.
fn decode(path: &std::path::Path) -> Vec<f32> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-ac", "1", "-ar", "48000", "-f", "f32le", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[tokio::test]
async fn a_stalled_http_listener_skips_ahead_and_its_stream_still_decodes() {
    let (relay, mut push) = relay_with_push("tone-1k.m4a").await;
    let (mut stream, mut body) = get(&relay, "/radio.ogg").await;
    read_for(&mut stream, &mut body, 2).await;
    let before = body.len();
    // Stall for far longer than the ring (1 s) and the kernel buffers hold.
    tokio::time::sleep(Duration::from_secs(6)).await;
    read_for(&mut stream, &mut body, 3).await;
    let (_, api) = http_get(&relay, "/api/streams").await;
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let skipped = api["streams"][0]["frames_skipped"].as_u64().unwrap();
    assert!(skipped > 50, "the stalled listener skipped ahead: {skipped} frames");
    assert!(body.len() > before + 16_000, "it reads live again");

    let dir = std::env::temp_dir().join(format!("onair-http-skip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("skipped.ogg");
    std::fs::write(&file, &body).unwrap();
    let samples = decode(&file);
    std::fs::remove_dir_all(&dir).ok();
    assert!(samples.len() > 48_000 * 3, "{} samples decoded", samples.len());
    // The tail, after the skip, is the tone.
    let tail = &samples[samples.len() - 48_000..];
    let share = tone_share(tail, 1_000.0);
    assert!(share > 0.95, "1 kHz holds {share:.3} of the power after the skip");
    push.kill().await.ok();
    relay.shutdown().await;
}

#[tokio::test]
async fn http_listeners_get_the_same_pages() {
    let (relay, mut push) = relay_with_push("tone-1k.m4a").await;
    let (mut a, mut body_a) = get(&relay, "/radio.ogg").await;
    let (mut b, mut body_b) = get(&relay, "/radio.ogg").await;
    read_for(&mut a, &mut body_a, 2).await;
    read_for(&mut b, &mut body_b, 2).await;
    // Both start with the same link head (same serial); their audio pages are the stream's
    // pages, byte for byte, where they overlap.
    let pages = |body: &[u8]| {
        let mut buf = bytes::BytesMut::from(body);
        let mut pages = Vec::new();
        while let Ok(Some(page)) = onair::format::ogg::parse_page(&mut buf) {
            pages.push((page.serial, page.sequence, page.granule));
        }
        pages
    };
    let (pa, pb) = (pages(&body_a), pages(&body_b));
    assert_eq!(pa[0].0, pb[0].0, "one serial for every listener of the link");
    let common: Vec<_> = pa.iter().filter(|p| p.1 > 1 && pb.contains(p)).collect();
    assert!(common.len() > 20, "shared pages: {}", common.len());
    push.kill().await.ok();
    relay.shutdown().await;
}
