//! `onair push` end to end: the source client pushes the samples to a real relay on port 0 and
//! a real WebSocket listener checks what comes out.
#![cfg(feature = "source")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use common::*;
use futures_util::StreamExt;
use onair::protocol::{decode_frame_header, FLAG_HEADER, FLAG_KEYFRAME};
use onair::push::{PushArgs, FRAME_DURATION_US, FRAME_SAMPLES};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    push: PushArgs,
}

fn push_args(url: &str, key: &str, extra: &[&str]) -> PushArgs {
    let mut argv = vec!["push".to_owned(), "--to".into(), url.into(), "--key".into(), key.into()];
    for arg in extra {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join(arg);
        argv.push(if sample.exists() {
            sample.to_string_lossy().into_owned()
        } else {
            (*arg).into()
        });
    }
    Cli::parse_from(argv).push
}

/// What a listener saw of one source session.
#[derive(Debug, Default)]
struct Heard {
    headers: Vec<Vec<u8>>,
    pts: Vec<u64>,
    /// (title, pts) of each metadata event.
    titles: Vec<(String, u64)>,
    online: usize,
}

/// Reads a listener until the source goes offline (or `stop` says enough).
async fn listen(ws: &mut Ws, heard: &mut Heard, stop: impl Fn(&Heard) -> bool) {
    while !stop(heard) {
        match next_message(ws).await {
            Message::Binary(data) => {
                let head = decode_frame_header(&data).unwrap();
                assert_eq!(head.track, 0);
                if head.is_header() {
                    assert_eq!(head.flags, FLAG_HEADER);
                    heard.headers.push(data[10..].to_vec());
                } else {
                    assert_eq!(head.flags, FLAG_KEYFRAME, "every Opus packet is a keyframe");
                    let samples = opus::packet::get_nb_samples(&data[10..], 48_000).unwrap();
                    assert_eq!(samples, FRAME_SAMPLES, "20 ms Opus packets");
                    heard.pts.push(head.pts);
                }
            }
            Message::Text(text) => {
                let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                match (event["type"].as_str().unwrap(), event["state"].as_str()) {
                    ("metadata", _) => {
                        assert_eq!(event["artist"], "onair samples");
                        assert_eq!(event["album"], "onair test signals");
                        let title = event["title"].as_str().unwrap().to_owned();
                        heard.titles.push((title, event["pts"].as_u64().unwrap()));
                    }
                    ("source", Some("online")) => {
                        assert_eq!(event["tracks"][0]["codec"], "opus");
                        heard.online += 1;
                    }
                    ("source", Some("offline")) => return,
                    other => panic!("unexpected event {other:?}: {text}"),
                }
            }
            Message::Close(frame) => panic!("listener closed: {frame:?}"),
            _ => {}
        }
    }
}

fn assert_continuous(pts: &[u64]) {
    for pair in pts.windows(2) {
        assert_eq!(pair[1], pair[0] + FRAME_DURATION_US, "pts must grow by 20 ms");
    }
}

#[tokio::test]
async fn pushed_files_reach_a_listener_with_header_continuous_frames_and_titles() {
    let relay = TestRelay::start().await;
    let (mut ws, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["live"], false);
    let push = tokio::spawn(onair::push::push(push_args(
        &relay.url("/ingest/radio"),
        "SECRET",
        &["--fast", "tone-1k.m4a", "broken.mp3", "station-id.wav"],
    )));
    let mut heard = Heard::default();
    within_secs(30, listen(&mut ws, &mut heard, |_| false)).await;
    within_secs(30, push).await.unwrap().expect("a finished playlist exits 0");

    assert_eq!(heard.online, 1);
    assert_eq!(heard.headers.len(), 1);
    let head = &heard.headers[0];
    assert_eq!((&head[..8], head.len(), head[9]), (&b"OpusHead"[..], 19, 2));
    assert_eq!(heard.pts[0], 0);
    assert_continuous(&heard.pts);
    // 2 s + 3.267 s + the encoder's lookahead, in 20 ms packets.
    assert_eq!(heard.pts.len(), 264);
    let titles: Vec<&str> = heard.titles.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(titles, ["Tone 1 kHz", "Station ID"], "broken.mp3 is skipped");
    assert_eq!(heard.titles[0].1, 0);
    // The second track starts right after the first one's 2 s.
    assert_eq!(heard.titles[1].1, 2_000_000);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_exits_3_and_an_unknown_stream_exits_4() {
    let relay = TestRelay::start().await;
    let err = within(onair::push::push(push_args(
        &relay.url("/ingest/radio"),
        "WRONG",
        &["--fast", "tone-1k.m4a"],
    )))
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    let err = within(onair::push::push(push_args(
        &relay.url("/ingest/nope"),
        "SECRET",
        &["--fast", "tone-1k.m4a"],
    )))
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 4, "{err}");
    relay.shutdown().await;
}

#[tokio::test]
async fn a_relay_restart_is_survived_by_reconnecting_where_the_playout_paused() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let relay = TestRelay::start_on(socket, config(&[("radio", "SECRET")]));
    let (mut ws, _) = listener(&relay, "radio").await;
    // Real time: 4 s of tone.
    let push = tokio::spawn(onair::push::push(push_args(
        &relay.url("/ingest/radio"),
        "SECRET",
        &["tone-440.flac"],
    )));
    let mut before = Heard::default();
    within(listen(&mut ws, &mut before, |h| h.pts.len() >= 25)).await;
    relay.shutdown().await;
    drop(ws);

    // Same port, new process state: the client must find it again by itself.
    let relay =
        TestRelay::start_on(TcpListener::bind(addr).await.unwrap(), config(&[("radio", "SECRET")]));
    let (mut ws, _) = listener(&relay, "radio").await;
    let mut after = Heard::default();
    within_secs(30, listen(&mut ws, &mut after, |_| false)).await;
    within(push).await.unwrap().expect("exit 0 after the playlist");

    assert_eq!(after.online, 1);
    assert_eq!(after.headers.len(), 1, "the header frame is sent again");
    assert_eq!(after.titles, [("Tone 440 Hz".to_owned(), 0)], "and the current track's metadata");
    assert_continuous(&after.pts);
    // The playout paused while the relay was away: the stream resumes near where the first
    // relay stopped receiving (frames in flight at the shutdown may be lost or sent twice),
    // not seconds later, and plays the file to its end.
    let (last, resumed) = (*before.pts.last().unwrap(), after.pts[0]);
    assert!(resumed <= last + 10 * FRAME_DURATION_US, "skipped from {last} to {resumed}");
    assert!(resumed + 10 * FRAME_DURATION_US >= last, "went back from {last} to {resumed}");
    assert!(*after.pts.last().unwrap() >= 199 * FRAME_DURATION_US, "the 4 s file played out");
    relay.shutdown().await;
}

#[tokio::test]
async fn stdin_style_pcm_input_is_a_usage_error_when_mixed_with_files() {
    let relay = TestRelay::start().await;
    let err = within(onair::push::push(push_args(
        &relay.url("/ingest/radio"),
        "SECRET",
        &["-", "tone-1k.m4a"],
    )))
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    // A listener sees nothing: the push never connected.
    let (mut ws, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["live"], false);
    assert!(tokio::time::timeout(Duration::from_millis(100), ws.next()).await.is_err());
    relay.shutdown().await;
}

#[tokio::test]
async fn stopping_the_push_closes_cleanly_and_the_listener_sees_offline() {
    let relay = TestRelay::start().await;
    let (mut ws, _) = listener(&relay, "radio").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let args = push_args(&relay.url("/ingest/radio"), "SECRET", &["--loop", "tone-1k.m4a"]);
    let push = tokio::spawn(onair::push::run(args, async {
        let _ = stopped.await;
    }));
    let mut heard = Heard::default();
    within(listen(&mut ws, &mut heard, |h| h.pts.len() >= 5)).await;
    stop.send(()).unwrap();
    within(push).await.unwrap().expect("a stopped push exits 0");
    within(listen(&mut ws, &mut heard, |_| false)).await; // returns on `source offline`
    assert_continuous(&heard.pts);
    relay.shutdown().await;
}
