//! The auto-DJ (a stream's playlist, played in-process) and a live source taking over from it.
#![cfg(feature = "source")]
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use onair::protocol::decode_frame_header;
use onair::StreamConfig;
use tokio_tungstenite::tungstenite::Message;

/// The next message, decoded: Ok(frame header + payload length) or Err(event).
async fn next_item(
    ws: &mut Ws,
) -> Result<(onair::protocol::FrameHeader, Vec<u8>), serde_json::Value> {
    match next_message(ws).await {
        Message::Binary(data) => Ok((decode_frame_header(&data).unwrap(), data.to_vec())),
        Message::Text(text) => Err(serde_json::from_str(&text).unwrap()),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn live_source_takes_over_from_the_autodj_and_hands_back_without_dropping_listeners() {
    let mut stream = StreamConfig::new("radio", Some("SECRET"));
    stream.playlist = Some(sample("tone-440.flac"));
    stream.burst = Duration::ZERO;
    let relay = TestRelay::start_with(onair::Config { streams: vec![stream], ..config(&[]) }).await;

    let (mut ws, _) = listener(&relay, "radio").await;
    // The auto-DJ is on air (it may have started before or after this listener joined).
    let mut autodj_pts = None;
    while autodj_pts.is_none() {
        match next_item(&mut ws).await {
            Ok((h, _)) if h.is_keyframe() => autodj_pts = Some(h.pts),
            Ok(_) => {}
            Err(event) if event["type"] == "metadata" => assert_eq!(event["title"], "Tone 440 Hz"),
            Err(_) => {}
        }
    }

    // A live source connects and sends start: it takes over at a frame boundary.
    let mut live = source(&relay, "radio", "SECRET").await;
    live.send(Message::binary(header_frame(b"live OpusHead"))).await.unwrap();
    for i in 0..5 {
        live.send(Message::binary(frame(1_000_000_000 + i * 20_000, b"live"))).await.unwrap();
    }
    live.send(Message::text(r#"{"type":"metadata","title":"Live show"}"#)).await.unwrap();
    let mut saw_online = false;
    let mut live_frames = 0;
    while live_frames < 5 {
        match next_item(&mut ws).await {
            Ok((h, data)) if h.pts >= 1_000_000_000 => {
                assert!(saw_online, "the switch is announced before the first live frame");
                assert_eq!(&data[10..], b"live");
                live_frames += 1;
            }
            Ok((h, data)) if h.is_header() && &data[10..] == b"live OpusHead" => {
                assert!(saw_online)
            }
            Ok((h, _)) => {
                assert!(!saw_online, "no auto-DJ frame after the live takeover (pts {})", h.pts)
            }
            Err(event) => {
                assert_ne!(event["state"], "offline", "listeners never see the stream go offline");
                if event["type"] == "source" {
                    saw_online = true;
                }
            }
        }
    }
    assert_eq!(next_event(&mut ws).await["title"], "Live show");
    let (_, body) = http_get(&relay, "/api/streams").await;
    assert!(body.contains(r#""source":"live""#), "{body}");

    // The live source leaves: the auto-DJ is back at once, with its header and title.
    live.close(None).await.unwrap();
    let back = next_event(&mut ws).await;
    assert_eq!((back["type"].as_str(), back["state"].as_str()), (Some("source"), Some("online")));
    let (header, data) = next_item(&mut ws).await.unwrap();
    assert!(
        header.is_header() && data[10..].starts_with(b"OpusHead"),
        "the auto-DJ's own OpusHead"
    );
    assert_eq!(next_event(&mut ws).await["title"], "Tone 440 Hz", "its now playing comes back");
    let (first, _) = next_item(&mut ws).await.unwrap();
    let (second, _) = next_item(&mut ws).await.unwrap();
    assert!(first.pts > autodj_pts.unwrap(), "the auto-DJ kept playing while muted");
    assert_eq!(second.pts, first.pts + 20_000, "then continuous 20 ms frames");
    let (_, body) = http_get(&relay, "/api/streams").await;
    assert!(body.contains(r#""source":"autodj""#), "{body}");
    relay.shutdown().await;
}
