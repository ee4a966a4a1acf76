//! The relay core end to end: a real server on port 0, real WebSocket sources and listeners.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use onair::protocol::close;
use onair::StreamConfig;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn frames_reach_every_listener_byte_exact_and_in_order() {
    let relay = TestRelay::start().await;
    let (mut a, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["live"], false, "a listener may connect before the source");
    assert_eq!(hello["version"], 1);
    let (mut b, _) = listener(&relay, "radio").await;

    let mut src = source(&relay, "radio", "SECRET").await;
    let mut sent = vec![header_frame(b"OpusHead-test")];
    sent.extend((0..300).map(|i| frame(i * 20_000, &payload(i, 1 + (i as usize * 37) % 2000))));
    for msg in &sent {
        within(src.send(Message::binary(msg.clone()))).await.unwrap();
    }
    for ws in [&mut a, &mut b] {
        let online = next_event(ws).await;
        assert_eq!(online["type"], "source");
        assert_eq!(online["state"], "online");
        assert_eq!(online["tracks"][0]["codec"], "opus");
        for (i, expected) in sent.iter().enumerate() {
            assert_eq!(&next_frame(ws).await, expected, "frame {i}");
        }
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn late_joiner_gets_metadata_header_and_a_burst_then_live_frames() {
    let mut config = config(&[]);
    let mut stream = StreamConfig::new("radio", Some("SECRET"));
    stream.burst = Duration::from_millis(200);
    config.streams.push(stream);
    let relay = TestRelay::start_with(config).await;
    let mut src = source(&relay, "radio", "SECRET").await;
    src.send(Message::binary(header_frame(b"OpusHead"))).await.unwrap();
    for i in 0..100 {
        src.send(Message::binary(frame(i * 20_000, &payload(i, 100)))).await.unwrap();
    }
    src.send(Message::text(r#"{"type":"metadata","title":"Song","artist":"Band","pts":1980000}"#))
        .await
        .unwrap();
    // The listener below must not race the source: wait until the relay has everything.
    let (mut probe, _) = listener(&relay, "radio").await;
    drop(probe.close(None).await);
    wait_for_frames_in(&relay, 101).await;

    let (mut late, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["live"], true);
    assert_eq!(hello["metadata"]["title"], "Song");
    assert_eq!(hello["metadata"]["pts"], 1_980_000);
    assert_eq!(hello["tracks"][0]["sample_rate"], 48000);
    assert_eq!(next_frame(&mut late).await, header_frame(b"OpusHead"));
    // newest pts 1.98 s, burst 200 ms: from the frame at 1.78 s (index 89) onwards
    for i in 89..100 {
        assert_eq!(
            next_frame(&mut late).await,
            frame(i * 20_000, &payload(i, 100)),
            "burst frame {i}"
        );
    }
    src.send(Message::binary(frame(2_000_000, b"live"))).await.unwrap();
    assert_eq!(next_frame(&mut late).await, frame(2_000_000, b"live"));
    src.send(Message::text(r#"{"type":"metadata","title":"Next"}"#)).await.unwrap();
    let meta = next_event(&mut late).await;
    assert_eq!((meta["type"].as_str(), meta["title"].as_str()), (Some("metadata"), Some("Next")));
    relay.shutdown().await;
}

async fn wait_for_frames_in(relay: &TestRelay, n: u64) {
    within(async {
        loop {
            let (_, body) = http_get(relay, "/api/streams").await;
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            if json["streams"][0]["frames_in"].as_u64().unwrap() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn listener_behind_for_too_long_is_closed_with_4008() {
    let mut config = config(&[]);
    let mut stream = StreamConfig::new("radio", Some("SECRET"));
    stream.ring_bytes = 256 << 10;
    config.streams.push(stream);
    config.slow_listener_timeout = Duration::from_millis(300);
    let relay = TestRelay::start_with(config).await;
    let mut stalled = stalled_listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    let body = vec![1u8; 16 << 10];
    // Keep the source going until the relay gives up on the listener, so it never catches up.
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
    // It reads again within the close timeout: the close frame follows what was queued.
    assert_eq!(close_code(&mut stalled).await, close::TOO_SLOW);
    relay.shutdown().await;
}

#[tokio::test]
async fn source_disconnect_leaves_listeners_connected_and_a_new_source_resumes() {
    let relay = TestRelay::start().await;
    let (mut ws, _) = listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    src.send(Message::binary(frame(0, b"one"))).await.unwrap();
    assert_eq!(next_event(&mut ws).await["state"], "online");
    assert_eq!(next_frame(&mut ws).await, frame(0, b"one"));
    src.close(None).await.unwrap();
    assert_eq!(
        next_event(&mut ws).await,
        serde_json::json!({"type": "source", "state": "offline"})
    );
    let (_, body) = http_get(&relay, "/api/streams").await;
    assert!(body.contains(r#""live":false"#), "{body}");

    // Same key, new connection: the stream resumes for the listener that stayed.
    let mut again = source(&relay, "radio", "SECRET").await;
    again.send(Message::binary(frame(5, b"two"))).await.unwrap();
    assert_eq!(next_event(&mut ws).await["state"], "online");
    assert_eq!(next_frame(&mut ws).await, frame(5, b"two"));
    relay.shutdown().await;
}

#[tokio::test]
async fn refusals_happen_before_the_upgrade_with_the_right_status() {
    let mut config = config(&[("radio", "SECRET")]);
    config.allowed_origins = Some(vec!["https://radio.example".into()]);
    config.streams[0].max_listeners = 1;
    let relay = TestRelay::start_with(config).await;
    assert_eq!(refused_status(&relay, "/ingest/radio", &[]).await, 401, "no key");
    assert_eq!(refused_status(&relay, "/ingest/radio?key=WRONG", &[]).await, 401);
    assert_eq!(
        refused_status(&relay, "/ingest/radio", &[("Authorization", "Bearer SECRE")]).await,
        401
    );
    assert_eq!(refused_status(&relay, "/ingest/nope?key=SECRET", &[]).await, 404);
    assert_eq!(refused_status(&relay, "/listen/nope", &[]).await, 404);
    let evil = [("Origin", "https://evil.example")];
    assert_eq!(refused_status(&relay, "/ingest/radio?key=SECRET", &evil).await, 403);

    let good = [("Origin", "https://radio.example")];
    let _live = connect(&relay, "/ingest/radio?key=SECRET", &good).await.expect("query key works");
    assert_eq!(refused_status(&relay, "/ingest/radio?key=SECRET", &[]).await, 409, "second source");

    let _first = listener(&relay, "radio").await;
    assert_eq!(refused_status(&relay, "/listen/radio", &[]).await, 503, "max_listeners");
    let (status, body) = http_get(&relay, "/listen/radio").await;
    assert_eq!(
        (status, body.trim()),
        (426, "this is a WebSocket endpoint: send Upgrade: websocket")
    );
    relay.shutdown().await;
}

#[tokio::test]
async fn connection_limit_refuses_with_503() {
    let mut config = config(&[("radio", "SECRET")]);
    config.max_connections = 1;
    let relay = TestRelay::start_with(config).await;
    let _one = listener(&relay, "radio").await;
    let (status, _) = http_get(&relay, "/healthz").await;
    assert_eq!(status, 503);
    relay.shutdown().await;
}

#[tokio::test]
async fn bad_source_input_closes_that_source_with_a_precise_code() {
    let mut config = config(&[("radio", "SECRET"), ("other", "KEY2")]);
    config.max_message_bytes = 64 << 10;
    let relay = TestRelay::start_with(config).await;
    // A healthy stream beside the bad ones must carry on throughout.
    let (mut other_listener, _) = listener(&relay, "other").await;
    let mut other = source(&relay, "other", "KEY2").await;
    assert_eq!(next_event(&mut other_listener).await["state"], "online");

    let cases: Vec<(&str, Vec<Message>, u16)> = vec![
        ("truncated frame", vec![Message::binary(vec![1u8, 0, 0])], close::TRUNCATED_FRAME),
        ("reserved flags", vec![Message::binary(vec![0x80u8; 12])], close::RESERVED_FLAGS),
        (
            "unknown track",
            vec![Message::binary({
                let mut f = frame(0, b"x");
                f[1] = 9;
                f
            })],
            close::UNKNOWN_TRACK,
        ),
        ("oversized", vec![Message::binary(vec![0u8; 65 << 10])], close::TOO_BIG),
        (
            "bad metadata",
            vec![Message::text("{\"type\":\"metadata\",\"title\":5}")],
            close::BAD_MESSAGE,
        ),
        ("second start", vec![Message::text(OPUS_START)], close::BAD_START),
    ];
    for (what, messages, code) in cases {
        let mut src = source(&relay, "radio", "SECRET").await;
        for msg in messages {
            let _ = src.send(msg).await;
        }
        assert_eq!(close_code(&mut src).await, code, "{what}");
    }
    let before_start: Vec<(&str, Message, u16)> = vec![
        ("frame before start", Message::binary(frame(0, b"x")), close::NOT_STARTED),
        ("malformed start", Message::text("{\"type\":\"start\""), close::BAD_START),
        ("invalid start", Message::text(r#"{"type":"start","tracks":[]}"#), close::BAD_START),
        (
            "metadata before start",
            Message::text(r#"{"type":"metadata","title":"x"}"#),
            close::NOT_STARTED,
        ),
    ];
    for (what, msg, code) in before_start {
        let mut src = connect(&relay, "/ingest/radio?key=SECRET", &[]).await.unwrap();
        src.send(msg).await.unwrap();
        assert_eq!(close_code(&mut src).await, code, "{what}");
    }
    other.send(Message::binary(frame(1, b"still here"))).await.unwrap();
    assert_eq!(next_frame(&mut other_listener).await, frame(1, b"still here"));
    relay.shutdown().await;
}

#[tokio::test]
async fn listener_that_sends_a_huge_message_is_closed_with_1009() {
    let relay = TestRelay::start().await;
    let (mut ws, _) = listener(&relay, "radio").await;
    ws.send(Message::binary(vec![0u8; 10_000])).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);
    relay.shutdown().await;
}

#[tokio::test]
async fn listeners_pings_are_answered() {
    let relay = TestRelay::start().await;
    let (mut ws, _) = listener(&relay, "radio").await;
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    match within(ws.next()).await.unwrap().unwrap() {
        Message::Pong(data) => assert_eq!(&data[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_every_websocket_with_1001() {
    let relay = TestRelay::start().await;
    let (mut ws, _) = listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    let _ = next_event(&mut ws).await;
    let shutdown = tokio::spawn(relay.shutdown());
    assert_eq!(close_code(&mut ws).await, close::GOING_AWAY);
    assert_eq!(close_code(&mut src).await, close::GOING_AWAY);
    within(shutdown).await.unwrap();
}

#[tokio::test]
async fn listeners_spread_over_driver_threads_hear_every_frame_and_get_1001_at_shutdown() {
    let mut config = config(&[("radio", "SECRET"), ("talk", "KEY2")]);
    config.listener_threads = 3;
    let relay = TestRelay::start_with(config).await;
    let mut listeners = Vec::new();
    for i in 0..12 {
        let stream = if i % 2 == 0 { "radio" } else { "talk" };
        listeners.push((stream, listener(&relay, stream).await.0));
    }
    let mut radio = source(&relay, "radio", "SECRET").await;
    let mut talk = source(&relay, "talk", "KEY2").await;
    let sent = |stream: &str, i: u64| match stream {
        "radio" => frame(i * 20_000, &payload(i, 100 + i as usize)),
        _ => frame(i * 40_000, &payload(1_000 + i, 60)),
    };
    for i in 0..50 {
        radio.send(Message::binary(sent("radio", i))).await.unwrap();
        talk.send(Message::binary(sent("talk", i))).await.unwrap();
    }
    for (stream, ws) in &mut listeners {
        assert_eq!(next_event(ws).await["state"], "online");
        for i in 0..50 {
            assert_eq!(next_frame(ws).await, sent(stream, i), "{stream} frame {i}");
        }
    }
    let shutdown = tokio::spawn(relay.shutdown());
    for (_, ws) in &mut listeners {
        assert_eq!(close_code(ws).await, close::GOING_AWAY);
    }
    within(shutdown).await.unwrap();
}

#[tokio::test]
async fn listeners_upgraded_while_the_relay_shuts_down_still_get_1001() {
    // The relay answers 101 before a listener reaches its driver: a shutdown in the middle of
    // a crowd of handshakes must still close every listener that got its 101 with 1001.
    let mut config = config(&[("radio", "SECRET")]);
    config.listener_threads = 2;
    let relay = TestRelay::start_with(config).await;
    let url = relay.url("/listen/radio");
    let connects: Vec<_> =
        (0..150).map(|_| tokio::spawn(tokio_tungstenite::connect_async(url.clone()))).collect();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let shutdown = tokio::spawn(relay.shutdown());
    let mut upgraded = 0;
    for connect in connects {
        // Refused or cut during the handshake is fine; an upgraded listener must hear 1001.
        if let Ok(Ok((mut ws, _))) = within(connect).await {
            upgraded += 1;
            assert_eq!(close_code(&mut ws).await, close::GOING_AWAY);
        }
    }
    within(shutdown).await.unwrap();
    assert!(upgraded > 0, "some listeners were upgraded before the shutdown");
}

#[tokio::test]
async fn http_endpoints_report_health_streams_and_metrics() {
    let relay = TestRelay::start().await;
    assert_eq!(http_get(&relay, "/healthz").await, (200, "ok\n".into()));
    let (_ws, _) = listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    src.send(Message::text(r#"{"type":"metadata","title":"Now"}"#)).await.unwrap();
    for i in 0..10 {
        src.send(Message::binary(frame(i, b"0123456789"))).await.unwrap();
    }
    wait_for_frames_in(&relay, 10).await;
    let (status, body) = http_get(&relay, "/api/streams").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let radio = &json["streams"][0];
    assert_eq!(radio["name"], "radio");
    assert_eq!(radio["live"], true);
    assert_eq!(radio["listeners"], 1);
    assert_eq!(radio["bytes_in"], 200);
    assert_eq!(radio["metadata"]["title"], "Now");
    assert_eq!(radio["tracks"][0]["codec"], "opus");
    let (status, metrics) = http_get(&relay, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "onair_frames_in_total{stream=\"radio\"} 10",
        "onair_listeners{stream=\"radio\"} 1",
        "onair_live{stream=\"radio\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert_eq!(http_get(&relay, "/nope.js").await.0, 404);
    assert_eq!(http_get(&relay, "/../Cargo.toml").await.0, 404);
    relay.shutdown().await;
}

#[tokio::test]
async fn garbage_and_slow_requests_get_an_error_and_the_relay_carries_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = config(&[("radio", "SECRET")]);
    config.handshake_timeout = Duration::from_millis(200);
    let relay = TestRelay::start_with(config).await;
    let mut garbage = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    garbage.write_all(b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    within(garbage.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let mut slow = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    slow.write_all(b"GET /listen/radio HTTP/1.1\r\n").await.unwrap();
    let mut answer = String::new();
    within(slow.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(http_get(&relay, "/healthz").await.0, 200);
    relay.shutdown().await;
}

#[tokio::test]
async fn peers_that_stop_answering_pings_are_closed_with_4009() {
    let mut config = config(&[("radio", "SECRET")]);
    config.ping_interval = Duration::from_millis(50);
    config.dead_peer_timeout = Duration::from_millis(200);
    let relay = TestRelay::start_with(config).await;
    let mut listener = raw_websocket(&relay, "/listen/radio").await;
    let (code, pings) = raw_close_code(&mut listener).await;
    assert_eq!(code, close::DEAD_PEER);
    assert!(pings >= 2, "pinged {pings} times before giving up");

    let mut source = raw_websocket(&relay, "/ingest/radio?key=SECRET").await;
    raw_send(
        &mut source,
        0x1,
        br#"{"type":"start","tracks":[{"id":0,"kind":"audio","codec":"opus"}]}"#,
    )
    .await;
    let (code, _) = raw_close_code(&mut source).await;
    assert_eq!(code, close::DEAD_PEER);
    relay.shutdown().await;
}

#[tokio::test]
async fn private_streams_admit_only_listeners_with_a_valid_signed_link() {
    let secret = "a-long-listen-secret";
    let mut config = config(&[("radio", "SECRET")]);
    config.streams[0].listen_secret = Some(secret.into());
    let relay = TestRelay::start_with(config).await;
    assert_eq!(refused_status(&relay, "/listen/radio", &[]).await, 401);
    let now = onair::auth::unix_now();
    let expired = format!(
        "/listen/radio?expires={}&sig={}",
        now - 1,
        onair::auth::sign(secret, "radio", now - 1)
    );
    assert_eq!(refused_status(&relay, &expired, &[]).await, 403);
    let forged = format!("/listen/radio?expires={}&sig={}", now + 60, "0".repeat(64));
    assert_eq!(refused_status(&relay, &forged, &[]).await, 403);
    // Valid signatures, refused: good for ten years (past max_link_lifetime_hours), and the
    // right tag in uppercase hex (a second spelling of one link).
    let decade = now + 10 * 365 * 86_400;
    let forever = format!(
        "/listen/radio?expires={decade}&sig={}",
        onair::auth::sign(secret, "radio", decade)
    );
    assert_eq!(refused_status(&relay, &forever, &[]).await, 403);
    let upper = format!(
        "/listen/radio?expires={}&sig={}",
        now + 60,
        onair::auth::sign(secret, "radio", now + 60).to_ascii_uppercase()
    );
    assert_eq!(refused_status(&relay, &upper, &[]).await, 403);

    // A link minted by the CLI, as an operator would share it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["sign", "radio", "--secret", secret, "--hours", "1", "--base"])
        .arg(format!("http://{}", relay.addr))
        .output()
        .unwrap();
    assert!(out.status.success());
    let urls = String::from_utf8(out.stdout).unwrap();
    let mut lines = urls.lines();
    let path =
        lines.next().unwrap().strip_prefix(&format!("ws://{}", relay.addr)).unwrap().to_owned();
    let page = lines.next().unwrap();
    assert!(page.starts_with(&format!("http://{}/?stream=radio&expires=", relay.addr)), "{page}");
    let (_, body) = http_get(&relay, "/api/streams").await;
    assert!(body.contains(r#""private":true"#), "{body}");
    let mut ws = connect(&relay, &path, &[]).await.expect("a signed link admits the listener");
    assert_eq!(next_event(&mut ws).await["type"], "hello");
    relay.shutdown().await;
}

#[tokio::test]
async fn an_operator_can_remove_a_websocket_source_and_listeners_stay() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start().await;
    let (mut ws, _) = listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    assert_eq!(next_event(&mut ws).await["state"], "online");
    let mut admin = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    // Basic auth "source:SECRET", as Icecast's admin tools send it.
    let request = "GET /admin/killsource?mount=/radio HTTP/1.1\r\nHost: x\r\nAuthorization: Basic c291cmNlOlNFQ1JFVA==\r\n\r\n";
    admin.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    within(admin.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("Source Removed"), "{answer}");
    assert_eq!(close_code(&mut src).await, close::KICKED);
    assert_eq!(
        next_event(&mut ws).await["state"],
        "offline",
        "the listener stays, told the source left"
    );
    relay.shutdown().await;
}
