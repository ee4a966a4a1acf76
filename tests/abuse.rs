//! One bad peer cannot take a station off the air: per-address limits, ingest bitrate cap,
//! half-open (slowloris) connections.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use onair::protocol::close;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn connections_per_address_are_limited() {
    let mut config = config(&[("radio", "SECRET")]);
    config.max_connections_per_ip = 3;
    config.ip_limit_exempt = Vec::new();
    let relay = TestRelay::start_with(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(listener(&relay, "radio").await);
    }
    assert_eq!(http_get(&relay, "/healthz").await.0, 503, "a fourth from the same address");
    let (mut first, _) = held.remove(0);
    first.close(None).await.unwrap();
    let _ = close_code(&mut first).await;
    // The freed place is reusable once the relay has seen the close.
    within(async {
        while http_get(&relay, "/healthz").await.0 != 200 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    relay.shutdown().await;
}

#[tokio::test]
async fn a_source_over_its_bitrate_cap_is_closed_with_4006() {
    let mut config = config(&[("radio", "SECRET")]);
    config.streams[0].max_ingest_bitrate = 80_000; // 10 kB/s, 20 kB burst
    let relay = TestRelay::start_with(config).await;
    let mut src = source(&relay, "radio", "SECRET").await;
    for i in 0..40 {
        if src.send(Message::binary(frame(i, &[0u8; 1000]))).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut src).await, close::RATE_LIMITED);
    relay.shutdown().await;
}

/// Slowloris from one address that is counted (127.0.0.1 is exempt by default, and this test
/// used to run from it, under limits nothing reached): its half-open connections take the
/// address's places, the rest are refused at once, and listeners from elsewhere get in.
#[tokio::test]
async fn half_open_connections_do_not_keep_real_listeners_out() {
    let mut config = config(&[("radio", "SECRET")]);
    config.handshake_timeout = Duration::from_secs(2);
    config.max_connections_per_ip = 50;
    let relay = TestRelay::start_with(config).await;
    // 300 slowloris peers from 127.0.0.2: each sends half a request head and then nothing.
    let mut half_open = Vec::new();
    for _ in 0..300 {
        let mut tcp = connect_from("127.0.0.2", relay.addr).await;
        tcp.write_all(b"GET /listen/radio HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        half_open.push(tcp);
    }
    let to = relay.addr;
    let mut ws = listen_from("127.0.0.3", to).await;
    let mut src = source(&relay, "radio", "SECRET").await;
    src.send(Message::binary(frame(0, b"heard"))).await.unwrap();
    assert_eq!(next_event(&mut ws).await["state"], "online");
    assert_eq!(next_frame(&mut ws).await, frame(0, b"heard"));
    // Past the address's 50 places they were refused at once (503); the others are answered
    // 408 and closed after the handshake timeout.
    let (mut timed_out, mut refused) = (0, 0);
    for tcp in &mut half_open {
        let mut answer = String::new();
        within(tcp.read_to_string(&mut answer)).await.unwrap();
        match &answer[..12] {
            "HTTP/1.1 408" => timed_out += 1,
            "HTTP/1.1 503" => refused += 1,
            _ => panic!("{answer}"),
        }
    }
    assert!(timed_out >= 50 && refused > 0, "{timed_out} timed out, {refused} refused");
    relay.shutdown().await;
}

/// Reads server frames from a raw socket until it has been quiet for `quiet`; counts pongs.
async fn count_pongs(tcp: &mut tokio::net::TcpStream, quiet: Duration) -> usize {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, tcp.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let (mut at, mut pongs) = (0, 0);
    while at + 2 <= buf.len() {
        let (opcode, len) = (buf[at] & 0x0F, buf[at + 1] & 0x7F);
        // A frame cut off at the end of what was read is not counted.
        let extended = |n: usize| buf.get(at + 2..at + 2 + n);
        let (head, len) = match len {
            126 => match extended(2) {
                Some(b) => (4, usize::from(u16::from_be_bytes([b[0], b[1]]))),
                None => break,
            },
            127 => match extended(8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(b) => (10, u64::from_be_bytes(b) as usize),
                None => break,
            },
            n => (2, usize::from(n)),
        };
        pongs += usize::from(opcode == 0xA);
        at += head + len;
    }
    pongs
}

#[tokio::test]
async fn a_listener_flooding_pings_without_reading_gets_a_bounded_number_of_pongs() {
    let relay = TestRelay::start_with(config(&[("radio", "SECRET")])).await;
    let mut src = source(&relay, "radio", "SECRET").await;
    let mut flood = raw_websocket(&relay, "/listen/radio").await;
    let (mut healthy, _) = listener(&relay, "radio").await;
    // 300 000 masked pings (1.8 MB) while never reading: their 600 kB of pongs are more than
    // the kernel buffers hold, so the relay could only keep them all by queueing them.
    const PINGS: usize = 300_000;
    let ping = [0x89u8, 0x80, 1, 2, 3, 4];
    let pings: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * PINGS).collect();
    within(flood.write_all(&pings)).await.unwrap();
    // The relay still serves everyone else meanwhile.
    src.send(Message::binary(frame(0, b"still on air"))).await.unwrap();
    assert_eq!(next_frame(&mut healthy).await, frame(0, b"still on air"));
    assert_eq!(http_get(&relay, "/healthz").await.0, 200);
    let pongs = count_pongs(&mut flood, Duration::from_millis(700)).await;
    assert!(pongs > 0, "pings are answered");
    assert!(
        pongs < PINGS / 2,
        "{pongs} pongs for {PINGS} pings: answers piled up for a peer that does not read"
    );
    relay.shutdown().await;
}

/// A relay listening on `[::]` (dual stack) sees IPv4 peers as `::ffff:a.b.c.d`: the
/// exemption of 127.0.0.1 did not apply to them, so a proxy on loopback got 503s.
#[tokio::test]
async fn ipv4_peers_of_a_dual_stack_relay_count_as_their_ipv4_address() {
    let mut config = config(&[("radio", "SECRET")]);
    config.max_connections_per_ip = 1;
    let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let relay = TestRelay::start_on(listener, config);
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // 127.0.0.1 is exempt (the default), however the socket spells it.
    let _held = [listen_from("127.0.0.1", to).await, listen_from("127.0.0.1", to).await];
    assert_eq!(get_from("127.0.0.1", to).await, 200);
    // Two other IPv4 peers are two peers, not one IPv6 /64 (::ffff:0:0/96 is inside one).
    let _first = listen_from("127.0.0.2", to).await;
    assert_eq!(get_from("127.0.0.3", to).await, 200, "another address");
    assert_eq!(get_from("127.0.0.2", to).await, 503, "the same address");
    relay.shutdown().await;
}

/// A TCP connection from `source` (every 127.0.0.0/8 address is local).
async fn connect_from(source: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    within(socket.connect(to)).await.unwrap()
}

/// A WebSocket listener from `source`, once it has its hello (so the relay has counted it).
async fn listen_from(source: &str, to: std::net::SocketAddr) -> Ws {
    let tcp = connect_from(source, to).await;
    let url = format!("ws://{to}/listen/radio");
    let plain = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    let (mut ws, _) = within(tokio_tungstenite::client_async(url, plain)).await.unwrap();
    assert_eq!(next_event(&mut ws).await["type"], "hello");
    ws
}

/// The status of `GET /healthz` sent from `source`.
async fn get_from(source: &str, to: std::net::SocketAddr) -> u16 {
    let mut tcp = connect_from(source, to).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    within(tcp.read_to_string(&mut answer)).await.unwrap();
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line")
}

/// Open connections as `/metrics` counts them, less the one asking.
async fn open_connections(relay: &TestRelay) -> u64 {
    let (_, metrics) = http_get(relay, "/metrics").await;
    let line = metrics.lines().find(|l| l.starts_with("onair_connections ")).unwrap();
    line.split(' ').nth(1).unwrap().parse::<u64>().unwrap() - 1
}

/// Files were read whole into memory (twice) before a byte was sent: a file larger than the
/// memory could not be served at all (404), and 50 stalled downloads of a 7.7 MB file took
/// the relay from 7 to 742 MiB.
#[tokio::test]
async fn static_files_are_streamed_not_read_whole() {
    let web = WebRoot::with_big_file("stream", 1 << 40); // 1 TiB
    let mut config = config(&[("radio", "SECRET")]);
    config.web_root = Some(web.0.clone());
    let relay = TestRelay::start_with(config).await;
    let mut tcp = within(tokio::net::TcpStream::connect(relay.addr)).await.unwrap();
    tcp.write_all(b"GET /big.wasm HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    while got.len() < (1 << 20) {
        let n = within(tcp.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&got[..got.len().min(512)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Length: 1099511627776\r\n"), "{head}");
    drop(tcp);
    relay.shutdown().await;
}

/// A peer that asked for a file and stopped reading held its connection forever.
#[tokio::test]
async fn a_peer_that_stops_reading_a_file_is_dropped_after_the_write_timeout() {
    let web = WebRoot::with_big_file("stall", 64 << 20);
    let mut config = config(&[("radio", "SECRET")]);
    config.web_root = Some(web.0.clone());
    config.write_timeout = Duration::from_millis(300);
    let relay = TestRelay::start_with(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = within(socket.connect(relay.addr)).await.unwrap();
    stalled.write_all(b"GET /big.wasm HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut head = [0u8; 512];
    within(stalled.read_exact(&mut head)).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"), "the download is under way");
    // It reads no more; the relay gives up on it (the kernel buffers filled long before).
    within(async {
        while open_connections(&relay).await > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(stalled);
    relay.shutdown().await;
}

/// `/echo` read and queued everything a peer sent, however much of it the peer never read
/// back: memory grew without bound, and the connection lived forever.
#[tokio::test]
async fn an_echo_peer_that_does_not_read_is_throttled_then_dropped() {
    let mut config = config(&[("radio", "SECRET")]);
    config.echo_endpoint = true;
    config.write_timeout = Duration::from_millis(300);
    let relay = TestRelay::start_with(config).await;
    let mut tcp = raw_websocket(&relay, "/echo").await;
    // Masked binary frames of 64 KiB (a zero mask leaves the payload as it is).
    let mut frame = vec![0x82u8, 0x80 | 127];
    frame.extend_from_slice(&(64u64 << 10).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.resize(frame.len() + (64 << 10), 0x55);
    let mut sent = 0usize;
    within(async {
        while tcp.write_all(&frame).await.is_ok() {
            sent += frame.len();
            assert!(sent < 512 << 20, "the relay took {sent} bytes from a peer that reads nothing");
        }
    })
    .await;
    relay.shutdown().await;
}

/// Text messages were neither charged to `max_ingest_bitrate` nor capped below
/// `max_message_bytes` (4 MiB), and serde buffered whatever unknown fields they carried.
#[tokio::test]
async fn a_sources_text_is_capped_and_charged_to_its_bitrate() {
    let relay = TestRelay::start_with(config(&[("radio", "SECRET"), ("other", "SECRET")])).await;
    // 64 KiB of unknown field in one metadata message: refused before serde sees it.
    let mut src = source(&relay, "radio", "SECRET").await;
    let padding = "x".repeat(64 << 10);
    let big = format!(r#"{{"type":"metadata","title":"t","unknown":"{padding}"}}"#);
    src.send(Message::text(big)).await.unwrap();
    assert_eq!(close_code(&mut src).await, close::TOO_BIG);
    // A small unknown field is ignored, as before.
    let (mut ws, _) = listener(&relay, "other").await;
    let mut src = source(&relay, "other", "SECRET").await;
    src.send(Message::text(r#"{"type":"metadata","title":"t","mood":"calm"}"#)).await.unwrap();
    src.send(Message::binary(frame(0, b"after"))).await.unwrap();
    assert_eq!(next_event(&mut ws).await["state"], "online");
    assert_eq!(next_event(&mut ws).await["title"], "t");
    assert_eq!(next_frame(&mut ws).await, frame(0, b"after"), "still on air");
    drop(src);
    relay.shutdown().await;

    let mut config = config(&[("radio", "SECRET")]);
    config.streams[0].max_ingest_bitrate = 80_000; // 10 kB/s, 20 kB burst
    let relay = TestRelay::start_with(config).await;
    let mut src = source(&relay, "radio", "SECRET").await;
    // 40 kB of metadata and no media at all.
    let meta = format!(r#"{{"type":"metadata","title":"{}"}}"#, "t".repeat(1000));
    for _ in 0..40 {
        if src.send(Message::text(meta.clone())).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut src).await, close::RATE_LIMITED);
    relay.shutdown().await;
}

/// Every metadata message became a ring entry and woke every listener: 40 000 of them in
/// 8 s, and 1 024 in a row evicted all audio from a default ring.
#[tokio::test]
async fn now_playing_floods_are_coalesced_and_the_latest_wins() {
    let relay = TestRelay::start().await;
    let (mut ws, _) = listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    assert_eq!(next_event(&mut ws).await["state"], "online");
    const TITLES: usize = 300;
    for i in 0..TITLES {
        let meta = format!(r#"{{"type":"metadata","title":"t{i}"}}"#);
        src.send(Message::text(meta)).await.unwrap();
    }
    // Media keeps flowing as a source's does (20 ms frames); the latest title comes with it.
    let feeder = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0.. {
            tick.tick().await;
            if src.send(Message::binary(frame(i * 20_000, b"audio"))).await.is_err() {
                break;
            }
        }
    });
    let mut titles = Vec::new();
    within(async {
        loop {
            if let Message::Text(text) = next_message(&mut ws).await {
                let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                if event["type"] == "metadata" {
                    titles.push(event["title"].as_str().unwrap().to_owned());
                    if titles.last().map(String::as_str) == Some("t299") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(titles.len() < 20, "{} of {TITLES} titles reached the listener", titles.len());
    assert_eq!(titles[0], "t0", "the first is not held back");

    // /admin/metadata goes the same way.
    let (mut ws, _) = listener(&relay, "radio").await;
    for i in 0..30 {
        let path = format!("/admin/metadata?mount=/radio&mode=updinfo&song=a{i}");
        let mut tcp = within(tokio::net::TcpStream::connect(relay.addr)).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic c291cmNlOlNFQ1JFVA==\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        within(tcp.read_to_string(&mut answer)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let mut admin_titles = 0;
    within(async {
        loop {
            if let Message::Text(text) = next_message(&mut ws).await {
                let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                if event["type"] == "metadata" {
                    admin_titles += 1;
                    if event["title"] == "a29" {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(admin_titles < 10, "{admin_titles} of 30 admin titles reached the listener");
    feeder.abort();
    relay.shutdown().await;
}

/// A header frame could be as large as `max_message_bytes` (a 1 MiB OpusHead), kept for
/// every late joiner outside the ring's byte budget.
#[tokio::test]
async fn header_frames_are_capped_by_codec() {
    let relay = TestRelay::start().await;
    let mut src = source(&relay, "radio", "SECRET").await;
    let opus_head = onair::format::opus::OpusHead::synthesize(2, 48_000);
    src.send(Message::binary(header_frame(&opus_head))).await.unwrap();
    src.send(Message::binary(header_frame(&vec![0u8; 1 << 20]))).await.unwrap();
    assert_eq!(close_code(&mut src).await, close::TOO_BIG);
    let (mut ws, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["live"], false, "the source was closed");
    drop(ws.close(None).await);
    relay.shutdown().await;
}

/// SECURITY.md claimed 431 for an oversized request head with no test behind it (and a peer
/// still sending its head when the relay answered could lose the answer to a reset).
#[tokio::test]
async fn an_oversized_request_head_gets_431_and_the_relay_carries_on() {
    let relay = TestRelay::start().await;
    let mut tcp = within(tokio::net::TcpStream::connect(relay.addr)).await.unwrap();
    let mut head = b"GET /listen/radio HTTP/1.1\r\nHost: x\r\nCookie: ".to_vec();
    head.resize(20 << 10, b'a');
    tcp.write_all(&head).await.unwrap();
    let mut answer = String::new();
    within(tcp.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(http_get(&relay, "/healthz").await.0, 200);
    relay.shutdown().await;
}

/// SECURITY.md claimed that messages are capped by `max_message_bytes` before they are
/// buffered: a frame announcing a terabyte, and nothing after it, is refused at its header.
#[tokio::test]
async fn a_huge_announced_message_is_refused_before_its_body_arrives() {
    let relay = TestRelay::start().await;
    let mut tcp = raw_websocket(&relay, "/ingest/radio?key=SECRET").await;
    raw_send(
        &mut tcp,
        0x1,
        br#"{"type":"start","tracks":[{"id":0,"kind":"audio","codec":"opus"}]}"#,
    )
    .await;
    let mut header = vec![0x82u8, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&header).await.unwrap();
    let (code, _) = raw_close_code(&mut tcp).await;
    assert_eq!(code, close::TOO_BIG);
    relay.shutdown().await;
}

/// A listener that stops reading is closed with 4008; one that never reads its close frame
/// either must not hold its connection: the driver drops it after its close timeout.
#[tokio::test]
async fn a_listener_that_never_reads_its_close_frame_is_dropped() {
    let mut config = config(&[("radio", "SECRET")]);
    config.streams[0].ring_bytes = 256 << 10;
    config.slow_listener_timeout = Duration::from_millis(300);
    let relay = TestRelay::start_with(config).await;
    let stalled = stalled_listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    assert_eq!(open_connections(&relay).await, 2, "the listener and the source");
    let body = vec![1u8; 16 << 10];
    let too_slow = "onair_listeners_too_slow_total{stream=\"radio\"} 1";
    within(async {
        for i in 0.. {
            src.send(Message::binary(frame(i, &body))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            if http_get(&relay, "/metrics").await.1.contains(too_slow) {
                break;
            }
        }
    })
    .await;
    within(async {
        while open_connections(&relay).await > 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    drop(stalled);
    relay.shutdown().await;
}
