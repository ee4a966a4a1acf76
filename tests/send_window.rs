//! `send_window_ms`: a listener holds new frames for up to the window so that several go out in
//! one write, and never holds them longer; pings, bursts and lagging listeners are not held.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const WINDOW: Duration = Duration::from_millis(300);

async fn relay_with_window(window: Duration) -> TestRelay {
    let mut config = config(&[("radio", "SECRET")]);
    config.send_window = window;
    TestRelay::start_with(config).await
}

#[tokio::test]
async fn frames_wait_for_the_window_then_go_out_together() {
    let relay = relay_with_window(WINDOW).await;
    let (mut ws, _) = listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    assert_eq!(next_event(&mut ws).await["state"], "online");

    let sent = Instant::now();
    src.send(Message::binary(frame(0, b"first"))).await.unwrap();
    tokio::time::sleep(WINDOW / 3).await;
    src.send(Message::binary(frame(20_000, b"second"))).await.unwrap();

    assert_eq!(next_frame(&mut ws).await, frame(0, b"first"));
    let waited = sent.elapsed();
    assert!(waited >= WINDOW - Duration::from_millis(5), "sent after {waited:?}");
    assert!(waited < WINDOW + Duration::from_secs(2), "held for {waited:?}");
    // The second frame came within the window: it went out in the same write.
    let second = tokio::time::timeout(Duration::from_millis(50), next_frame(&mut ws)).await;
    assert_eq!(second.expect("second frame with the first"), frame(20_000, b"second"));
    relay.shutdown().await;
}

#[tokio::test]
async fn without_a_window_each_frame_goes_out_at_once() {
    let relay = relay_with_window(Duration::ZERO).await;
    let (mut ws, _) = listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    assert_eq!(next_event(&mut ws).await["state"], "online");
    for i in 0..3 {
        let sent = Instant::now();
        src.send(Message::binary(frame(i * 20_000, b"now"))).await.unwrap();
        assert_eq!(next_frame(&mut ws).await, frame(i * 20_000, b"now"));
        assert!(sent.elapsed() < WINDOW, "frame {i} took {:?}", sent.elapsed());
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn a_late_joiner_gets_its_burst_without_waiting_for_the_window() {
    let relay = relay_with_window(WINDOW).await;
    let mut src = source(&relay, "radio", "SECRET").await;
    for i in 0..10 {
        src.send(Message::binary(frame(i * 20_000, b"past"))).await.unwrap();
    }
    // The frames are older than the window by the time the listener joins.
    tokio::time::sleep(WINDOW + Duration::from_millis(100)).await;
    let joined = Instant::now();
    let (mut ws, _) = listener(&relay, "radio").await;
    assert_eq!(next_frame(&mut ws).await, frame(0, b"past"));
    assert!(joined.elapsed() < WINDOW, "burst held for {:?}", joined.elapsed());
    relay.shutdown().await;
}

#[tokio::test]
async fn a_paced_stream_keeps_flowing_through_a_pause_in_the_source() {
    // With a window the listener looks again when the next frames should be due instead of
    // waking on each one; when the source pauses it must fall back to waiting for frames.
    let window = Duration::from_millis(50);
    let relay = relay_with_window(window).await;
    let (mut ws, _) = listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    assert_eq!(next_event(&mut ws).await["state"], "online");
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..20 {
            got.push((next_frame(&mut ws).await, Instant::now()));
        }
        got
    });
    let mut sent = Vec::new();
    for i in 0..20u64 {
        if i == 10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        sent.push(Instant::now());
        src.send(Message::binary(frame(i * 20_000, b"paced"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = within(reader).await.unwrap();
    for (i, ((message, at), sent)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(message, &frame(i as u64 * 20_000, b"paced"), "frame {i} in order");
        let waited = at.duration_since(*sent);
        assert!(waited < window + Duration::from_millis(250), "frame {i} waited {waited:?}");
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn large_frames_are_never_held() {
    // A 20 kB video frame is a big write already: waiting would add latency and save little.
    // The listener joins after a few frames, so its burst tells it the stream's cadence.
    let relay = relay_with_window(WINDOW).await;
    let mut src = source(&relay, "radio", "SECRET").await;
    let body = vec![9u8; 20_000];
    for i in 0..3 {
        src.send(Message::binary(frame(i * 40_000, &body))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let (mut ws, _) = listener(&relay, "radio").await;
    for i in 0..3 {
        assert_eq!(next_frame(&mut ws).await, frame(i * 40_000, &body), "burst frame {i}");
    }
    for i in 3..8 {
        let sent = Instant::now();
        src.send(Message::binary(frame(i * 40_000, &body))).await.unwrap();
        assert_eq!(next_frame(&mut ws).await, frame(i * 40_000, &body));
        assert!(sent.elapsed() < WINDOW - Duration::from_millis(50), "frame {i} held");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    relay.shutdown().await;
}
