//! HLS end to end: ffmpeg and GStreamer's hlsdemux decode the right tone from the playlist
//! (Opus in fragmented MP4, MP3 as packed audio), across a source switch; LL-HLS blocking
//! reloads and hinted parts wait for what they ask; private streams sign every URI.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "source")]

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use onair::StreamConfig;
use tokio_tungstenite::tungstenite::Message;

/// A relay whose stream `radio` is played by the auto-DJ from `file`.
async fn relay_with_autodj(file: &str) -> TestRelay {
    let mut config = config(&[]);
    let mut stream = StreamConfig::new("radio", Some("SECRET"));
    stream.playlist = Some(sample(file));
    config.streams.push(stream);
    let relay = TestRelay::start_with(config).await;
    wait_for_playlist(&relay, "/radio.m3u8").await;
    relay
}

/// Waits until the playlist lists a complete segment.
async fn wait_for_playlist(relay: &TestRelay, path: &str) -> String {
    within_secs(15, async {
        loop {
            let (status, body) = http_get(relay, path).await;
            if status == 200 && body.contains("#EXTINF") {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Mono 48 kHz samples decoded by `command` (its stdout is f32le).
async fn decode(program: &str, args: &[String]) -> Vec<f32> {
    let out = within_secs(
        40,
        tokio::process::Command::new(program).args(args).kill_on_drop(true).output(),
    )
    .await
    .unwrap();
    // `timeout` ends a player that plays on (a live playlist): its 124 is a success here.
    let stopped = program == "timeout" && out.status.code() == Some(124);
    assert!(out.status.success() || stopped, "{program}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn ffmpeg_args(url: &str, seconds: u32) -> Vec<String> {
    ["-hide_banner", "-loglevel", "error", "-live_start_index", "-2", "-i", url, "-t"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([seconds.to_string()])
        .chain(["-ac", "1", "-ar", "48000", "-f", "f32le", "-"].iter().map(|s| (*s).to_owned()))
        .collect()
}

#[tokio::test]
async fn ffmpeg_and_gstreamer_decode_the_opus_playlist() {
    let relay = relay_with_autodj("tone-440.flac").await;
    let url = format!("http://{}/radio.m3u8", relay.addr);
    let playlist = wait_for_playlist(&relay, "/radio.m3u8").await;
    assert!(playlist.contains("#EXT-X-MAP:URI=\"/hls/radio/init-1.mp4\""), "{playlist}");
    assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{playlist}");

    let samples = decode("ffmpeg", &ffmpeg_args(&url, 3)).await;
    assert!(samples.len() >= 48_000 * 2, "ffmpeg decoded {} samples", samples.len());
    assert!(tone_share(&samples[4_800..], 440.0) > 0.95, "ffmpeg hears 440 Hz");

    let location = format!("location={url}");
    // GStreamer plays a live playlist on: `timeout` stops it after a few seconds.
    let gst: Vec<String> = [
        "8",
        "gst-launch-1.0",
        "-q",
        "souphttpsrc",
        &location,
        "!",
        "hlsdemux",
        "!",
        "qtdemux",
        "!",
        "opusdec",
        "!",
        "audioconvert",
        "!",
        "audioresample",
        "!",
        "audio/x-raw,format=F32LE,channels=1,rate=48000",
        "!",
        "fdsink",
        "fd=1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let samples = decode("timeout", &gst).await;
    assert!(samples.len() >= 48_000, "GStreamer decoded {} samples", samples.len());
    assert!(tone_share(&samples[4_800..], 440.0) > 0.95, "GStreamer hears 440 Hz");
    relay.shutdown().await;
}

#[tokio::test]
async fn a_source_switch_is_a_discontinuity_that_ffmpeg_plays_through() {
    let relay = relay_with_autodj("tone-440.flac").await;
    let url = format!("http://{}/radio.m3u8", relay.addr);
    let args = ffmpeg_args(&url, 9);
    let listen = tokio::spawn(async move { decode("ffmpeg", &args).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut push = tokio::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["push", "--loop", "--key", "SECRET", "--to", &relay.url("/ingest/radio")])
        .arg(sample("tone-1k.m4a"))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let samples = within_secs(40, listen).await.unwrap();
    push.kill().await.ok();
    assert!(samples.len() >= 48_000 * 8, "{} samples", samples.len());
    assert!(tone_share(&samples[..48_000], 440.0) > 0.95, "the auto-DJ first");
    let tail = &samples[samples.len() - 48_000..];
    assert!(tone_share(tail, 1_000.0) > 0.95, "then the live source, across the discontinuity");
    let (_, playlist) = http_get(&relay, "/radio.m3u8").await;
    assert!(playlist.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"/hls/radio/init-2.mp4\""));
    relay.shutdown().await;
}

#[tokio::test]
async fn mp3_streams_are_served_as_packed_audio() {
    let relay = TestRelay::start().await;
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i"])
        .arg("sine=frequency=1000:sample_rate=44100")
        .args(["-c:a", "libmp3lame", "-b:a", "128k", "-content_type", "audio/mpeg", "-f", "mp3"])
        .arg(format!("icecast://source:SECRET@{}/radio.mp3", relay.addr))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let playlist = wait_for_playlist(&relay, "/radio.m3u8").await;
    assert!(playlist.contains(".mp3\n") && !playlist.contains("EXT-X-MAP"), "{playlist}");
    let samples =
        decode("ffmpeg", &ffmpeg_args(&format!("http://{}/radio.m3u8", relay.addr), 2)).await;
    assert!(samples.len() >= 48_000, "{} samples", samples.len());
    assert!(tone_share(&samples[4_800..], 1_000.0) > 0.95, "1 kHz from the MP3 segments");
    let (status, body) = http_get(&relay, "/hls/radio/0.mp3").await;
    assert_eq!(status, 200);
    assert!(body.as_bytes().starts_with(b"ID3"), "a segment starts with its timestamp tag");
    ffmpeg.kill().await.ok();
    relay.shutdown().await;
}

/// The `(msn, part)` of the playlist's preload hint.
fn hint(playlist: &str) -> (u64, u64) {
    let line = playlist.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT")).unwrap();
    let name = line.rsplit('/').next().unwrap().trim_end_matches('"');
    let mut parts = name.split('.');
    (parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn blocking_reloads_and_hinted_parts_wait_for_what_they_ask() {
    let relay = relay_with_autodj("tone-440.flac").await;
    let (_, playlist) = http_get(&relay, "/radio.m3u8").await;
    let (msn, part) = hint(&playlist);
    let uri = format!("/hls/radio/{msn}.{part}.m4s");
    assert!(!playlist.contains(&format!("URI=\"{uri}\",")), "the hinted part is not listed yet");
    // A blocking reload for the hinted part answers once the playlist lists it.
    let (status, reloaded) =
        http_get(&relay, &format!("/radio.m3u8?_HLS_msn={msn}&_HLS_part={part}")).await;
    assert_eq!(status, 200);
    assert!(reloaded.contains(&format!("URI=\"{uri}\",")), "{reloaded}");
    // So does a request for the part after it, before it exists.
    let (next_msn, next_part) = hint(&reloaded);
    let (status, body) = http_get(&relay, &format!("/hls/radio/{next_msn}.{next_part}.m4s")).await;
    assert_eq!(status, 200);
    assert!(body.as_bytes().windows(4).any(|w| w == b"moof"), "an MP4 fragment");
    // Too far ahead: refused at once.
    let (status, _) = http_get(&relay, &format!("/radio.m3u8?_HLS_msn={}", msn + 50)).await;
    assert_eq!(status, 400);
    let (status, _) = http_get(&relay, "/hls/radio/99999.m4s").await;
    assert_eq!(status, 404);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_playlist_asked_for_as_the_source_starts_waits_for_the_first_part() {
    let relay = TestRelay::start().await;
    let (status, _) = http_get(&relay, "/radio.m3u8").await;
    assert_eq!(status, 404, "no source: refused at once");
    let mut source = source(&relay, "radio", "SECRET").await;
    let head = onair::format::opus::OpusHead::synthesize(2, 48_000);
    source.send(Message::binary(header_frame(&head))).await.unwrap();
    // Live, nothing cut yet: the request is held until the first part, not refused.
    let frames = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..15u64 {
            // 20 ms CELT packets (TOC 0xF8), one every 20 ms of media.
            let packet = [0xF8, i as u8, 1, 2];
            source.send(Message::binary(frame(i * 20_000, &packet))).await.unwrap();
        }
    };
    let ((status, playlist), ()) = tokio::join!(http_get(&relay, "/radio.m3u8"), frames);
    assert_eq!(status, 200, "{playlist}");
    assert!(playlist.contains("#EXT-X-PART:"), "{playlist}");
    relay.shutdown().await;
}

#[tokio::test]
async fn a_private_stream_signs_every_uri_of_its_playlist() {
    let secret = "a-long-listen-secret";
    let relay = relay_with_autodj_private(secret).await;
    let (status, _) = http_get(&relay, "/radio.m3u8").await;
    assert_eq!(status, 401, "no link, no playlist");
    let expires = onair::auth::unix_now() + 3600;
    let sig = onair::auth::sign(secret, "radio", expires);
    let query = format!("?expires={expires}&sig={sig}");
    let playlist = wait_for_playlist(&relay, &format!("/radio.m3u8{query}")).await;
    let uris: Vec<&str> = playlist
        .lines()
        .filter_map(|l| {
            if l.starts_with('/') {
                Some(l)
            } else {
                l.split("URI=\"").nth(1).map(|rest| rest.split('"').next().unwrap())
            }
        })
        .collect();
    assert!(uris.len() > 5, "{playlist}");
    assert!(uris.iter().all(|u| u.ends_with(&query)), "{uris:?}");
    let segment = uris.iter().find(|u| u.contains(".m4s?")).unwrap();
    let (status, _) = http_get(&relay, segment).await;
    assert_eq!(status, 200);
    let (status, _) = http_get(&relay, segment.split('?').next().unwrap()).await;
    assert_eq!(status, 401, "a segment without the link is refused too");
    relay.shutdown().await;
}

async fn relay_with_autodj_private(secret: &str) -> TestRelay {
    let mut config = config(&[]);
    let mut stream = StreamConfig::new("radio", Some("SECRET"));
    stream.playlist = Some(sample("tone-440.flac"));
    stream.listen_secret = Some(secret.to_owned());
    config.streams.push(stream);
    TestRelay::start_with(config).await
}

/// One answer read from a kept-alive connection: status, `Connection` header and body.
async fn read_answer(socket: &mut tokio::net::TcpStream) -> (u16, String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(within(socket.read(&mut byte)).await.unwrap(), 1, "closed mid-head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let mut body = vec![0u8; header("content-length").parse().unwrap()];
    within(socket.read_exact(&mut body)).await.unwrap();
    (status, header("connection"), body)
}

/// An HTTP/1.1 GET on a connection that may already have served others.
async fn get(socket: &mut tokio::net::TcpStream, path: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: keeper\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    read_answer(socket).await
}

#[tokio::test]
async fn an_hls_client_keeps_one_connection_for_playlists_parts_and_segments() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = relay_with_autodj("tone-440.flac").await;
    let mut socket = within(tokio::net::TcpStream::connect(relay.addr)).await.unwrap();
    let (status, connection, playlist) = get(&mut socket, "/radio.m3u8").await;
    assert_eq!((status, connection.as_str()), (200, "keep-alive"));
    let (msn, part) = hint(&String::from_utf8(playlist).unwrap());
    // The blocking reload for the hinted part, then the part, on the same connection.
    let (status, connection, reloaded) =
        get(&mut socket, &format!("/radio.m3u8?_HLS_msn={msn}&_HLS_part={part}")).await;
    assert_eq!((status, connection.as_str()), (200, "keep-alive"));
    assert!(String::from_utf8(reloaded).unwrap().contains(&format!("/{msn}.{part}.m4s\",")));
    let (status, connection, fragment) =
        get(&mut socket, &format!("/hls/radio/{msn}.{part}.m4s")).await;
    assert_eq!((status, connection.as_str()), (200, "keep-alive"));
    assert!(fragment.windows(4).any(|w| w == b"mdat"), "an MP4 fragment");
    // A whole segment listed in the playlist, still on the same connection.
    let (_, _, playlist) = get(&mut socket, "/radio.m3u8").await;
    let playlist = String::from_utf8(playlist).unwrap();
    let segment = playlist.lines().rfind(|l| l.ends_with(".m4s")).unwrap().to_owned();
    let (status, connection, whole) = get(&mut socket, &segment).await;
    assert_eq!((status, connection.as_str()), (200, "keep-alive"), "{segment}");
    assert!(whole.len() > fragment.len(), "a segment holds several parts' audio");
    // Anything else is answered as always, and the connection closes after it.
    let (status, connection, _) = get(&mut socket, "/healthz").await;
    assert_eq!((status, connection.as_str()), (200, "close"));
    let mut rest = Vec::new();
    within(socket.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
    // HTTP/1.0 without keep-alive is closed after its answer.
    let mut old = within(tokio::net::TcpStream::connect(relay.addr)).await.unwrap();
    old.write_all(b"GET /radio.m3u8 HTTP/1.0\r\n\r\n").await.unwrap();
    let (status, connection, _) = read_answer(&mut old).await;
    assert_eq!((status, connection.as_str()), (200, "close"));
    relay.shutdown().await;
}
