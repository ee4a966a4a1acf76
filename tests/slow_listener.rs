//! A stalled listener beside a fast one, alone in its own test process so that the
//! process's memory reflects only this relay.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use onair::StreamConfig;
use tokio_tungstenite::tungstenite::Message;

/// Current resident memory of this test process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_listener_skips_ahead_without_slowing_the_source_or_a_fast_listener() {
    let mut config = config(&[]);
    let mut stream = StreamConfig::new("radio", Some("SECRET"));
    stream.ring_bytes = 512 << 10;
    stream.burst = Duration::ZERO;
    stream.max_ingest_bitrate = 100_000_000_000; // this test pushes 32 MB as fast as it can
    config.streams.push(stream);
    config.slow_listener_timeout = Duration::from_secs(60);
    let relay = TestRelay::start_with(config).await;

    let mut stalled = stalled_listener(&relay, "radio").await;
    let (mut fast, _) = listener(&relay, "radio").await;

    let frames: u64 = 2_000;
    let size = 16 << 10; // 32 MB in all, 64 times the ring
                         // The fast listener reports its progress, so the source can stay within its reach
                         // (half a ring) without guessing at speeds: it is the stalled one that must fall behind.
    let (progress, mut received) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        assert_eq!(next_event(&mut fast).await["state"], "online");
        for i in 0..frames {
            let got = next_frame(&mut fast).await;
            assert_eq!(got.len(), 10 + size, "frame {i}");
            assert_eq!(&got[..10], &frame(i, &[])[..10], "frame {i} in order");
            progress.send_replace(i + 1);
        }
        fast
    });
    let rss_before = rss_bytes();
    let mut src = source(&relay, "radio", "SECRET").await;
    let body = vec![7u8; size];
    // The source is never blocked by the listener that reads nothing.
    within(async {
        for i in 0..frames {
            received.wait_for(|&n| n + 16 > i).await.unwrap();
            src.send(Message::binary(frame(i, &body))).await.unwrap();
        }
    })
    .await;
    let _fast = within(reader).await.expect("fast listener lost nothing");
    let growth = rss_bytes().saturating_sub(rss_before);
    assert!(
        growth < 24 << 20,
        "memory grew by {growth} bytes for 32 MB through a stalled listener"
    );

    // Now the stalled listener reads again: it is told it skipped, then gets recent frames.
    let mut skipped = None;
    while skipped.is_none() {
        match next_message(&mut stalled).await {
            Message::Text(text) => {
                let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                if event["type"] == "skipped" {
                    skipped = event["frames"].as_u64();
                }
            }
            Message::Binary(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let skipped = skipped.unwrap();
    assert!(skipped > 1_000 && skipped < frames, "skipped {skipped}");
    src.send(Message::binary(frame(frames, b"after"))).await.unwrap();
    loop {
        let got = next_frame(&mut stalled).await;
        if got == frame(frames, b"after") {
            break;
        }
    }
    let (_, body) = http_get(&relay, "/api/streams").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["streams"][0]["frames_skipped"].as_u64(), Some(skipped));
    relay.shutdown().await;
}
