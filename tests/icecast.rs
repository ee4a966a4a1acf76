//! Icecast compatibility end to end: real broadcaster tools (ffmpeg, libshout's `shout`) push
//! to a relay on 127.0.0.1:0; ffmpeg/ffprobe and Rust clients listen over HTTP and WebSocket.
#![allow(clippy::unwrap_used)]

mod common;
mod icecast_support;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use icecast_support::*;
use onair::format::ogg::FLAG_BOS;
use onair::format::opus::{self, OpusHead};
use onair::protocol::{decode_frame_header, FLAG_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Decodes `seconds` of `url` with ffmpeg; any error message fails the test.
async fn decode_cleanly(url: &str, seconds: &str) {
    let (status, _, stderr) = Proc::spawn(
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            url,
            "-t",
            seconds,
            "-f",
            "null",
            "-",
        ],
        None,
    )
    .wait(TOOL_LIMIT)
    .await;
    assert!(status.success() && stderr.trim().is_empty(), "decoding {url}: {status} {stderr}");
}

/// ffprobe's codec, sample rate and channels of the first stream at `url`.
async fn probe(url: &str) -> (String, String, u64) {
    let (stdout, _) = run_ok(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,sample_rate,channels",
            "-of",
            "json",
            url,
        ],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let stream = &json["streams"][0];
    (
        stream["codec_name"].as_str().unwrap_or("").to_owned(),
        stream["sample_rate"].as_str().unwrap_or("").to_owned(),
        stream["channels"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn ffmpeg_ogg_opus_source_plays_over_http_including_for_late_joiners() {
    let relay = TestRelay::start().await;
    // As a user types it: no -content_type, so ffmpeg says audio/mpeg; the relay sniffs Ogg.
    let mut source = ffmpeg_source(&relay, "/radio.ogg", "SECRET", "opus");
    wait_live(&relay, "radio", 10, Some(&mut source)).await;
    let url = format!("http://{}/radio.ogg", relay.addr);
    assert_eq!(probe(&url).await, ("opus".into(), "48000".into(), 2));
    decode_cleanly(&url, "3").await;
    // Joining a couple of seconds later still starts with fresh headers and decodes cleanly;
    // `/radio` without an extension serves the same stream.
    decode_cleanly(&format!("http://{}/radio", relay.addr), "2").await;
    let info = stream_info(&relay, "radio").await;
    assert!(info["frames_out"].as_u64().unwrap() > 100, "{info}");
    assert!(source.running(), "{}", source.stderr());
    drop(source);
    wait_offline(&relay, "radio").await;
    relay.shutdown().await;
}

#[tokio::test]
async fn ffmpeg_ogg_vorbis_source_plays_over_http_and_websocket() {
    let relay = TestRelay::start().await;
    let mut source = ffmpeg_source(&relay, "/radio.ogg", "SECRET", "vorbis");
    wait_live(&relay, "radio", 10, Some(&mut source)).await;
    let url = format!("http://{}/radio.ogg", relay.addr);
    assert_eq!(probe(&url).await, ("vorbis".into(), "44100".into(), 2));
    decode_cleanly(&url, "3").await;
    decode_cleanly(&url, "1").await;
    // WebSocket listeners get the three headers in one header frame, then the packets.
    let (mut ws, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["tracks"][0]["codec"], "vorbis");
    let header = next_frame(&mut ws).await;
    assert_eq!(decode_frame_header(&header).unwrap().flags, FLAG_HEADER);
    let [ident, _, setup] =
        onair::format::vorbis::unpack_headers(&bytes::Bytes::from(header[10..].to_vec())).unwrap();
    assert!(onair::format::vorbis::VorbisInfo::parse(&ident, &setup).is_ok());
    assert!(decode_frame_header(&next_frame(&mut ws).await).unwrap().is_keyframe());
    drop(source);
    relay.shutdown().await;
}

#[tokio::test]
async fn ffmpeg_mp3_source_plays_over_http_and_icy_listeners_see_admin_titles() {
    let mut config = config(&[("radio", "SECRET")]);
    config.admin_password = Some("the-admin-password".into());
    let relay = TestRelay::start_with(config).await;
    let mut source = ffmpeg_source(&relay, "/radio.mp3", "SECRET", "mp3");
    wait_live(&relay, "radio", 10, Some(&mut source)).await;
    let url = format!("http://{}/radio.mp3", relay.addr);
    assert_eq!(probe(&url).await, ("mp3".into(), "44100".into(), 2));
    let icy = HttpListener::open(&relay, "/radio.mp3", &["Icy-MetaData: 1"]).await;
    assert_eq!(icy.status, 200);
    assert_eq!(icy.header("content-type").as_deref(), Some("audio/mpeg"));
    assert_eq!(icy.header("icy-name").as_deref(), Some("Test FM"), "from ffmpeg's ice-name");
    assert_eq!(icy.header("icy-genre").as_deref(), Some("Testing"));
    assert_eq!(icy.header("icy-metaint").as_deref(), Some("16000"));
    let mut icy = IcyReader::new(icy);
    let (audio, _) = icy.next_block().await;
    assert_eq!(audio[0], 0xFF, "the body starts on an MP3 frame");

    let auth = basic("source", "SECRET");
    let (status, _, body) = get(
        &relay,
        "/admin/metadata?mount=/radio.mp3&mode=updinfo&song=Band+-+Caf%C3%A9",
        &[&auth],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("Metadata update successful"));
    icy.wait_title("Band - Café", Duration::from_secs(10)).await;
    // The client list (the admin's) names the mount it was asked about.
    let admin = basic("admin", "the-admin-password");
    let (status, _, body) = get(&relay, "/admin/listclients?mount=/radio.mp3", &[&admin]).await;
    let xml = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(xml.contains(r#"<source mount="/radio.mp3">"#), "{xml}");
    decode_cleanly(&format!("http://{}/radio", relay.addr), "2").await;
    drop(source);
    relay.shutdown().await;
}

#[tokio::test]
async fn websocket_and_http_listeners_of_an_icecast_source_receive_the_same_frames() {
    let relay = TestRelay::start().await;
    // Both listeners wait for the source, so both see everything from its first frame.
    let (mut ws, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["live"], false);
    let http = HttpListener::open(&relay, "/radio.ogg", &[]).await;
    assert_eq!(http.header("content-type").as_deref(), Some("audio/ogg"));
    let mut ogg = OggReader::new(http);
    let source = ffmpeg_source(&relay, "/radio.ogg", "SECRET", "opus");

    let online = next_event(&mut ws).await;
    assert_eq!(
        (online["state"].as_str(), online["tracks"][0]["codec"].as_str()),
        (Some("online"), Some("opus"))
    );
    assert_eq!(online["tracks"][0]["channels"], 2);
    let header = next_frame(&mut ws).await;
    assert_eq!(decode_frame_header(&header).unwrap().flags, FLAG_HEADER);
    assert!(OpusHead::parse(&header[10..]).is_ok());
    let mut ws_frames = Vec::new();
    for i in 0..100u64 {
        let frame = next_frame(&mut ws).await;
        let head = decode_frame_header(&frame).unwrap();
        assert!(head.is_keyframe());
        assert_eq!(head.pts, i * 20_000, "pts from the Opus TOC (20 ms packets)");
        ws_frames.push(frame[10..].to_vec());
    }

    let first = ogg.next_page().await;
    assert_eq!((first.flags, first.sequence, first.granule), (FLAG_BOS, 0, 0));
    assert_eq!(&first.packets[0][..], &header[10..], "the same OpusHead");
    let tags = ogg.next_page().await;
    assert!(opus::parse_tags(&tags.packets[0], opus::TAGS_MAGIC).is_ok());
    let mut http_frames = Vec::new();
    let mut sequence = tags.sequence;
    while http_frames.len() < 100 {
        let page = ogg.next_page().await;
        assert_eq!((page.serial, page.sequence), (first.serial, sequence + 1));
        sequence = page.sequence;
        http_frames.extend(page.packets.iter().map(|p| p.to_vec()));
        assert_eq!(page.granule, http_frames.len() as u64 * 960, "48 kHz samples so far");
    }
    http_frames.truncate(100);
    assert_eq!(http_frames, ws_frames);
    drop(source);
    relay.shutdown().await;
}

#[tokio::test]
async fn websocket_source_is_playable_as_ogg_over_http() {
    let file = opus_file(4, "From WebSocket").await;
    let data = std::fs::read(&file.0).unwrap();
    let mut buf = bytes::BytesMut::from(&data[..]);
    let mut packetizer = onair::format::ogg::Packetizer::new(1 << 20);
    let mut packets = Vec::new();
    while let Some(page) = onair::format::ogg::parse_page(&mut buf).unwrap() {
        packetizer.push(&page, &mut packets).unwrap();
    }
    let (head, audio) = (packets[0].clone(), packets[2..].to_vec());

    let relay = TestRelay::start().await;
    let mut src = source(&relay, "radio", "SECRET").await;
    src.send(Message::binary(header_frame(&head))).await.unwrap();
    // Paced like a live source: 20 ms per packet.
    let pacer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for (i, packet) in audio.iter().enumerate() {
            tick.tick().await;
            if src.send(Message::binary(frame(i as u64 * 20_000, packet))).await.is_err() {
                break;
            }
        }
        src
    });
    wait_live(&relay, "radio", 10, None).await;
    let url = format!("http://{}/radio.ogg", relay.addr);
    assert_eq!(probe(&url).await, ("opus".into(), "48000".into(), 2));
    decode_cleanly(&url, "1.5").await;
    drop(pacer.await.unwrap());
    relay.shutdown().await;
}

#[tokio::test]
async fn libshout_pushes_ogg_with_in_stream_titles() {
    let file = opus_file(6, "Shout Song").await;
    let relay = TestRelay::start().await;
    let port = relay.addr.port().to_string();
    let mut shout = Proc::spawn(
        "shout",
        &[
            "--format",
            "ogg",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--mount",
            "/radio.ogg",
            "--user",
            "source",
            "--pass",
            "SECRET",
            "--tls-mode",
            "disabled",
        ],
        Some(&file.0),
    );
    wait_live(&relay, "radio", 10, Some(&mut shout)).await;
    let (_, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["metadata"]["title"], "Shout Song", "from the stream's OpusTags");
    assert_eq!(hello["metadata"]["artist"], "Tester");
    decode_cleanly(&format!("http://{}/radio.ogg", relay.addr), "1.5").await;
    let icy = HttpListener::open(&relay, "/radio.ogg", &["Icy-MetaData: 1"]).await;
    let mut icy = IcyReader::new(icy);
    icy.wait_title("Tester - Shout Song", Duration::from_secs(10)).await;
    drop(shout);
    relay.shutdown().await;
}

#[tokio::test]
async fn libshout_pushes_ogg_vorbis_after_its_tls_probe() {
    let relay = TestRelay::start().await;
    let port = relay.addr.port().to_string();
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/music.ogg");
    // libshout's default TLS mode first probes with `OPTIONS *` (Upgrade: TLS/1.0), then
    // falls back to plain HTTP when the relay does not upgrade.
    let args =
        format!("--format ogg --host 127.0.0.1 --port {port} --mount /radio.ogg --pass SECRET");
    let args: Vec<&str> = args.split_whitespace().collect();
    let mut shout = Proc::spawn("shout", &args, Some(&sample));
    wait_live(&relay, "radio", 10, Some(&mut shout)).await;
    let (_, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["metadata"]["title"], "Onair Arpeggio");
    decode_cleanly(&format!("http://{}/radio.ogg", relay.addr), "1.5").await;
    drop(shout);
    relay.shutdown().await;
}

#[tokio::test]
async fn sources_are_refused_with_icecast_status_codes() {
    let relay = TestRelay::start().await;
    let put = |auth: &str, path: &str, extra: &str| {
        format!("PUT {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: audio/ogg\r\n{extra}Expect: 100-continue\r\n\r\n")
    };
    // libshout's first attempt carries no credentials: it needs a Basic challenge.
    let (status, head, _) =
        exchange(&relay, b"SOURCE /radio.ogg HTTP/1.0\r\nContent-Type: audio/ogg\r\n\r\n").await;
    assert_eq!(status, 401);
    assert!(head.contains("WWW-Authenticate: Basic realm="), "{head}");
    let (status, _, _) =
        exchange(&relay, put(&basic("source", "WRONG"), "/radio.ogg", "").as_bytes()).await;
    assert_eq!(status, 401);
    let (status, _, _) =
        exchange(&relay, put(&basic("source", "SECRET"), "/nope.ogg", "").as_bytes()).await;
    assert_eq!(status, 404);
    let webm = put(&basic("source", "SECRET"), "/radio.webm", "Content-Type: video/webm\r\n");
    let webm = webm.replacen("Content-Type: audio/ogg\r\n", "", 1);
    assert_eq!(exchange(&relay, webm.as_bytes()).await.0, 415);
    let _live = source(&relay, "radio", "SECRET").await;
    wait_live(&relay, "radio", 0, None).await;
    let (status, _, body) =
        exchange(&relay, put(&basic("source", "SECRET"), "/radio.ogg", "").as_bytes()).await;
    assert_eq!((status, String::from_utf8_lossy(&body).trim()), (403, "Mountpoint in use"));
    // ffmpeg reports the refusal and exits.
    let url = format!("icecast://source:WRONG@{}/radio.ogg", relay.addr);
    let (status, _, stderr) = Proc::spawn(
        "ffmpeg",
        &[
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine",
            "-t",
            "1",
            "-c:a",
            "libopus",
            "-f",
            "ogg",
            &url,
        ],
        None,
    )
    .wait(TOOL_LIMIT)
    .await;
    assert!(!status.success() && stderr.contains("401"), "{stderr}");
    relay.shutdown().await;
}

#[tokio::test]
async fn garbage_or_a_container_switch_drops_only_that_source() {
    let relay = TestRelay::start_with(config(&[("radio", "SECRET"), ("other", "KEY2")])).await;
    let (mut other_listener, _) = listener(&relay, "other").await;
    let mut other = source(&relay, "other", "KEY2").await;
    assert_eq!(next_event(&mut other_listener).await["state"], "online");

    let auth = basic("source", "SECRET");
    let garbage = include_bytes!("../samples/broken.mp3");
    let mut request =
        format!("SOURCE /radio.mp3 HTTP/1.0\r\n{auth}\r\nContent-Type: audio/mpeg\r\n\r\n")
            .into_bytes();
    request.extend_from_slice(garbage);
    let (status, _, _) = exchange(&relay, &request).await;
    assert_eq!(status, 200, "accepted, then closed once the body proved to be garbage");

    // Ogg/Opus, then MP3 bytes on the same connection: the source is closed mid-stream.
    let mut socket = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    socket
        .write_all(
            format!("PUT /radio.ogg HTTP/1.1\r\n{auth}\r\nExpect: 100-continue\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 25];
    within(socket.read_exact(&mut head)).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 100 Continue\r\n\r\n", "ffmpeg waits for this");
    socket.write_all(&ogg_opus_pages(1, 50)).await.unwrap();
    wait_live(&relay, "radio", 50, None).await;
    socket.write_all(&include_bytes!("../samples/sweep.mp3")[..4096]).await.unwrap();
    let mut rest = Vec::new();
    within(socket.read_to_end(&mut rest)).await.unwrap();
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.0 200 OK"));
    wait_offline(&relay, "radio").await;

    let (_, metrics) = http_get(&relay, "/metrics").await;
    assert!(metrics.contains("onair_refusals_total{reason=\"bad_source_data\"} 2"), "{metrics}");
    other.send(Message::binary(frame(1, b"still here"))).await.unwrap();
    assert_eq!(next_frame(&mut other_listener).await, frame(1, b"still here"));
    relay.shutdown().await;
}

/// An Ogg/Opus stream made with the library's writer: OpusHead, OpusTags, `n` 20 ms packets.
fn ogg_opus_pages(serial: u32, n: usize) -> Vec<u8> {
    use onair::format::ogg::PageWriter;
    let (mut scratch, mut pages) = (bytes::BytesMut::new(), Vec::new());
    let mut writer = PageWriter::new(serial);
    writer.write(
        &[(OpusHead::synthesize(2, 48_000), 0)],
        FLAG_BOS,
        false,
        &mut scratch,
        &mut pages,
    );
    writer.write(&[(opus::write_tags("test", None), 0)], 0, false, &mut scratch, &mut pages);
    for i in 0..n {
        let packet = bytes::Bytes::from(vec![0xFC, i as u8, 0, 0]);
        writer.write(&[(packet, (i as u64 + 1) * 960)], 0, false, &mut scratch, &mut pages);
    }
    pages.concat()
}

#[tokio::test]
async fn admin_metadata_reaches_websocket_and_icy_listeners() {
    let mut config = config(&[("radio", "SECRET")]);
    config.icy_metaint = 500;
    config.admin_password = Some("ADMIN".into());
    let relay = TestRelay::start_with(config).await;
    let mut src = source(&relay, "radio", "SECRET").await;
    src.send(Message::binary(header_frame(&OpusHead::synthesize(2, 48_000)))).await.unwrap();
    let feeder = tokio::spawn(async move {
        for i in 0..2000u64 {
            if src.send(Message::binary(frame(i * 20_000, &[0xFC; 200]))).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    wait_live(&relay, "radio", 5, None).await;
    let (mut ws, _) = listener(&relay, "radio").await;
    let icy = HttpListener::open(&relay, "/radio.ogg", &["Icy-MetaData: 1"]).await;
    assert_eq!(icy.header("icy-metaint").as_deref(), Some("500"));
    let mut icy = IcyReader::new(icy);

    let path = "/admin/metadata?mount=/radio.ogg&mode=updinfo&song=Now+Playing";
    assert_eq!(get(&relay, path, &[&basic("source", "WRONG")]).await.0, 401);
    assert_eq!(get(&relay, path, &[]).await.0, 401);
    let (status, head, _) = get(&relay, path, &[&basic("admin", "ADMIN")]).await;
    assert_eq!(status, 200, "{head}");
    loop {
        match next_message(&mut ws).await {
            Message::Text(text) => {
                let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                if event["type"] == "metadata" {
                    assert_eq!(event["title"], "Now Playing");
                    break;
                }
            }
            _ => continue,
        }
    }
    icy.wait_title("Now Playing", Duration::from_secs(5)).await;
    let (status, _, body) = get(
        &relay,
        "/admin/metadata?mount=/nope.ogg&mode=updinfo&song=x",
        &[&basic("admin", "ADMIN")],
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    feeder.abort();
    relay.shutdown().await;
}

#[tokio::test]
async fn status_json_has_icecasts_shape_and_counts_listeners() {
    let mut config = config(&[("radio", "SECRET"), ("other", "KEY2")]);
    config.admin_password = Some("the-admin-password".into());
    let relay = TestRelay::start_with(config).await;
    let (status, _, body) = get(&relay, "/status-json.xsl", &[]).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(json["icestats"]["source"].is_null(), "no live source, no `source`: {json}");
    assert!(json["icestats"]["server_id"].as_str().unwrap().starts_with("Icecast"));

    let mut src = source(&relay, "radio", "SECRET").await;
    src.send(Message::text(r#"{"type":"metadata","title":"Song","artist":"Band"}"#)).await.unwrap();
    within(async {
        while stream_info(&relay, "radio").await["metadata"]["title"] != "Song" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (_ws, _) = listener(&relay, "radio").await;
    let _http = HttpListener::open(&relay, "/radio.ogg", &[]).await;
    let json = status_json(&relay, "/status-json.xsl").await;
    let radio = &json["icestats"]["source"];
    assert!(radio.is_object(), "one source is an object, as in Icecast: {json}");
    assert_eq!(radio["listeners"], 2);
    assert_eq!(radio["listener_peak"], 2);
    assert_eq!(radio["listenurl"], format!("http://{}/radio.ogg", relay.addr));
    assert_eq!(radio["server_type"], "audio/ogg");
    assert_eq!((radio["title"].as_str(), radio["artist"].as_str()), (Some("Song"), Some("Band")));
    for key in [
        "audio_info",
        "bitrate",
        "genre",
        "server_name",
        "server_description",
        "stream_start_iso8601",
    ] {
        assert!(!radio[key].is_null(), "{key} missing: {radio}");
    }

    let listclients = "/admin/listclients?mount=/radio.ogg";
    let (status, _, _) = get(&relay, listclients, &[&basic("source", "SECRET")]).await;
    assert_eq!(status, 403, "listener addresses are for the admin, not a stream's key");
    let (status, _, body) =
        get(&relay, listclients, &[&basic("admin", "the-admin-password")]).await;
    let xml = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(xml.contains("<Listeners>2</Listeners>") && xml.contains("test-listener"), "{xml}");
    // Any mount form of the stream: the answer names the one asked about.
    let (_, _, body) =
        get(&relay, "/admin/listclients?mount=/radio.opus", &[&basic("a", "the-admin-password")])
            .await;
    let xml = String::from_utf8_lossy(&body);
    assert!(xml.contains(r#"<source mount="/radio.opus">"#), "{xml}");

    let _other = source(&relay, "other", "KEY2").await;
    wait_live(&relay, "other", 0, None).await;
    let json = status_json(&relay, "/status-json.xsl").await;
    assert_eq!(json["icestats"]["source"].as_array().map(Vec::len), Some(2), "{json}");
    let json = status_json(&relay, "/status-json.xsl?mount=/other.ogg").await;
    assert_eq!(json["icestats"]["source"]["server_name"], "other");
    relay.shutdown().await;
}

async fn status_json(relay: &TestRelay, path: &str) -> serde_json::Value {
    let (status, _, body) = get(relay, path, &[]).await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn killsource_removes_an_icecast_source_and_its_listeners_stay() {
    let relay = TestRelay::start().await;
    let auth = basic("source", "SECRET");
    let mut socket = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let mut request =
        format!("SOURCE /radio.ogg HTTP/1.0\r\n{auth}\r\nContent-Type: application/ogg\r\n\r\n")
            .into_bytes();
    request.extend(ogg_opus_pages(7, 20));
    socket.write_all(&request).await.unwrap();
    wait_live(&relay, "radio", 20, None).await;
    let (mut ws, _) = listener(&relay, "radio").await;

    let (status, _, body) = get(&relay, "/admin/killsource?mount=/radio.ogg", &[&auth]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut rest = Vec::new();
    within(socket.read_to_end(&mut rest)).await.unwrap();
    wait_offline(&relay, "radio").await;
    loop {
        if let Message::Text(text) = next_message(&mut ws).await {
            if text.contains("offline") {
                break;
            }
        }
    }
    let (status, _, _) = get(&relay, "/admin/killsource?mount=/radio.ogg", &[&auth]).await;
    assert_eq!(status, 400, "nothing left to remove");
    relay.shutdown().await;
}

#[tokio::test]
async fn cors_preflight_and_headers_follow_the_config() {
    let mut config = config(&[("radio", "SECRET")]);
    config.cors_origins = vec!["https://radio.example".into()];
    let relay = TestRelay::start_with(config).await;
    let preflight = "OPTIONS /radio.ogg HTTP/1.1\r\nHost: x\r\nOrigin: https://radio.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: icy-metadata\r\n\r\n";
    let (status, head, _) = exchange(&relay, preflight.as_bytes()).await;
    assert_eq!(status, 204);
    assert!(head.contains("Access-Control-Allow-Origin: https://radio.example"), "{head}");
    assert!(head.contains("Access-Control-Allow-Headers: icy-metadata"), "{head}");
    let listener =
        HttpListener::open(&relay, "/radio.ogg", &["Origin: https://radio.example"]).await;
    assert_eq!(
        listener.header("access-control-allow-origin").as_deref(),
        Some("https://radio.example")
    );
    assert!(listener.header("access-control-expose-headers").unwrap().contains("icy-metaint"));
    let (_, head, _) = get(&relay, "/status-json.xsl", &["Origin: https://evil.example"]).await;
    assert!(!head.contains("Access-Control-Allow-Origin"), "{head}");
    let (_, head, _) = get(&relay, "/api/streams", &["Origin: https://radio.example"]).await;
    assert!(head.contains("Access-Control-Allow-Origin: https://radio.example"), "{head}");
    // libshout's TLS probe is answered without an upgrade.
    let (status, head, _) = exchange(
        &relay,
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\n\r\n",
    )
    .await;
    assert!(status == 204 && !head.contains("Upgrade"), "{head}");
    relay.shutdown().await;
}

#[tokio::test]
async fn http_listener_urls_are_checked_against_the_codec() {
    let relay = TestRelay::start().await;
    let (status, _, body) = get(&relay, "/radio", &[]).await;
    assert_eq!(status, 404, "no source yet and no extension: {}", String::from_utf8_lossy(&body));
    let _src = source(&relay, "radio", "SECRET").await;
    wait_live(&relay, "radio", 0, None).await;
    let (status, _, body) = get(&relay, "/radio.mp3", &[]).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("/radio.ogg"));
    let (status, head, body) =
        exchange(&relay, b"HEAD /radio.opus HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((status, body.len()), (200, 0));
    assert!(head.contains("Content-Type: audio/ogg"), "{head}");
    assert_eq!(get(&relay, "/nope.ogg", &[]).await.0, 404);
    relay.shutdown().await;
}

#[tokio::test]
async fn http_listener_behind_for_too_long_is_closed() {
    let mut config = config(&[("radio", "SECRET")]);
    config.slow_listener_timeout = Duration::from_millis(300);
    config.streams[0].ring_bytes = 256 << 10;
    let relay = TestRelay::start_with(config).await;
    let mut src = source(&relay, "radio", "SECRET").await;
    src.send(Message::binary(frame(0, &[0xFC; 100]))).await.unwrap();
    wait_live(&relay, "radio", 1, None).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = within(socket.connect(relay.addr)).await.unwrap();
    stalled.write_all(b"GET /radio.ogg HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let body = vec![0xFCu8; 16 << 10];
    let too_slow = "onair_listeners_too_slow_total{stream=\"radio\"} 1";
    within(async {
        for i in 1.. {
            src.send(Message::binary(frame(i * 20_000, &body))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            if http_get(&relay, "/metrics").await.1.contains(too_slow) {
                break;
            }
        }
    })
    .await;
    let mut rest = Vec::new();
    within(stalled.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.starts_with(b"HTTP/1.0 200 OK"));
    relay.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_icecast_sources_and_http_listeners() {
    let relay = TestRelay::start().await;
    let mut socket = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let mut request =
        format!("SOURCE /radio.ogg HTTP/1.0\r\n{}\r\n\r\n", basic("source", "SECRET")).into_bytes();
    request.extend(ogg_opus_pages(3, 5));
    socket.write_all(&request).await.unwrap();
    wait_live(&relay, "radio", 5, None).await;
    let mut http = HttpListener::open(&relay, "/radio.ogg", &[]).await;
    // The listener has its stream (the BOS page) before the relay stops.
    let mut body = http.read_exact(28).await;
    relay.shutdown().await;
    let mut rest = Vec::new();
    within(socket.read_to_end(&mut rest)).await.unwrap();
    body.extend(http.read_to_end().await);
    let first =
        onair::format::ogg::parse_page(&mut bytes::BytesMut::from(&body[..])).unwrap().unwrap();
    assert!(first.is_bos(), "the listener got its stream, then the relay closed it");
}

#[tokio::test]
async fn private_streams_need_a_signed_link_over_http_too() {
    let secret = "a-long-listen-secret";
    let mut config = config(&[("radio", "SECRET")]);
    config.streams[0].listen_secret = Some(secret.into());
    let relay = TestRelay::start_with(config).await;
    let _src = source(&relay, "radio", "SECRET").await;
    wait_live(&relay, "radio", 0, None).await;
    assert_eq!(get(&relay, "/radio.ogg", &[]).await.0, 401);
    let now = onair::auth::unix_now();
    let forged = format!("/radio.ogg?expires={}&sig={}", now + 60, "0".repeat(64));
    assert_eq!(get(&relay, &forged, &[]).await.0, 403);
    let signed = format!(
        "/radio.ogg?expires={}&sig={}",
        now + 60,
        onair::auth::sign(secret, "radio", now + 60)
    );
    let listener = HttpListener::open(&relay, &signed, &[]).await;
    assert_eq!(listener.status, 200, "{}", listener.head);
    relay.shutdown().await;
}

#[tokio::test]
async fn icecast_source_over_the_bitrate_cap_is_dropped() {
    let mut config = config(&[("radio", "SECRET")]);
    config.streams[0].max_ingest_bitrate = 64_000;
    let relay = TestRelay::start_with(config).await;
    let mut socket = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let head = format!("SOURCE /radio.ogg HTTP/1.0\r\n{}\r\n\r\n", basic("source", "SECRET"));
    socket.write_all(head.as_bytes()).await.unwrap();
    // 2 s of burst at 64 kbit/s is 16 kB: 4000 pages of 100-byte packets is far more.
    let _ = socket.write_all(&ogg_opus_pages(5, 4000)).await;
    let mut rest = Vec::new();
    let _ = within(socket.read_to_end(&mut rest)).await;
    wait_offline(&relay, "radio").await;
    let (_, metrics) = http_get(&relay, "/metrics").await;
    assert!(metrics.contains("onair_refusals_total{reason=\"bad_source_data\"} 1"), "{metrics}");
    relay.shutdown().await;
}
