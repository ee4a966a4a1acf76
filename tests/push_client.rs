//! `onair push` against a scripted stand-in for the relay's ingest endpoint: what it sends,
//! how it maps refusals to exit codes, and how it reconnects. The tests against the real relay
//! are in `tests/push.rs`; this one pins down the client's side of the protocol on its own.
#![cfg(feature = "source")]
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use std::sync::{Arc, Mutex};

use clap::Parser;
use common::{sample_arg, within_secs};
use futures_util::StreamExt;
use onair::protocol::{self, SourceMessage, FLAG_HEADER, FLAG_KEYFRAME};
use onair::push::{PushArgs, PushError, FRAME_DURATION_US};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    push: PushArgs,
}

fn args(list: &[&str]) -> PushArgs {
    Cli::parse_from(std::iter::once("push").chain(list.iter().copied())).push
}

/// Pushes take real (paced) time: longer than `common::within`.
async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    within_secs(30, fut).await
}

/// What the stand-in relay does with its n-th connection.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Refuse the upgrade with this status.
    Refuse(u16),
    /// Accept, and close with 1001 (going away) after this many audio frames.
    CloseAfter(usize),
    /// Accept and read everything.
    Accept,
}

/// What the stand-in relay saw.
#[derive(Debug)]
enum Seen {
    Connected { conn: usize, authorization: Option<String> },
    Text { conn: usize, msg: SourceMessage },
    Header { conn: usize, pts: u64, payload: Vec<u8> },
    Frame { conn: usize, pts: u64 },
    Closed { conn: usize, code: Option<u16> },
}

struct FakeRelay {
    url: String,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl FakeRelay {
    async fn start(plans: Vec<Plan>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ingest/radio", listener.local_addr().unwrap());
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut conn = 0;
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                // The client also polls `/api/streams` for its listener count: answer 404 (the
                // count stays unknown) without spending a plan meant for the ingest connections.
                let mut head = [0u8; 16];
                let _ = within(socket.peek(&mut head)).await;
                if head.starts_with(b"GET /api/") {
                    use tokio::io::AsyncWriteExt;
                    let _ = socket.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                    continue;
                }
                let plan = plans.get(conn).copied().unwrap_or(Plan::Accept);
                tokio::spawn(serve(socket, conn, plan, tx.clone()));
                conn += 1;
            }
        });
        FakeRelay { url, seen }
    }

    async fn next(&mut self) -> Seen {
        within(self.seen.recv()).await.expect("relay task ended")
    }
}

async fn serve(
    socket: tokio::net::TcpStream,
    conn: usize,
    plan: Plan,
    tx: mpsc::UnboundedSender<Seen>,
) {
    let authorization = Arc::new(Mutex::new(None));
    let auth = authorization.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        *auth.lock().unwrap() =
            req.headers().get("authorization").map(|v| v.to_str().unwrap().to_owned());
        match plan {
            Plan::Refuse(status) => {
                let mut err = ErrorResponse::new(Some(format!("refused with {status}")));
                *err.status_mut() = status.try_into().unwrap();
                Err(err)
            }
            _ => Ok(resp),
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(socket, callback).await else { return };
    let authorization = authorization.lock().unwrap().take();
    let _ = tx.send(Seen::Connected { conn, authorization });
    let mut frames = 0;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                let msg = protocol::decode_source_message(&text).expect("valid source message");
                let _ = tx.send(Seen::Text { conn, msg });
            }
            Ok(Message::Binary(data)) => {
                let head = protocol::decode_frame_header(&data).expect("valid frame");
                assert_eq!(head.track, 0);
                if head.is_header() {
                    assert_eq!(head.flags, FLAG_HEADER);
                    let _ =
                        tx.send(Seen::Header { conn, pts: head.pts, payload: data[10..].to_vec() });
                } else {
                    assert_eq!(head.flags, FLAG_KEYFRAME);
                    let _ = tx.send(Seen::Frame { conn, pts: head.pts });
                    frames += 1;
                    if matches!(plan, Plan::CloseAfter(n) if frames == n) {
                        let frame =
                            CloseFrame { code: CloseCode::Away, reason: "restarting".into() };
                        let _ = ws.close(Some(frame)).await;
                    }
                }
            }
            Ok(Message::Close(frame)) => {
                let _ = tx.send(Seen::Closed { conn, code: frame.map(|f| f.code.into()) });
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

#[tokio::test]
async fn push_sends_start_header_metadata_and_continuous_frames_then_exits_0() {
    let mut relay = FakeRelay::start(vec![]).await;
    let push = tokio::spawn(onair::push::push(args(&[
        "--to",
        &relay.url,
        "--key",
        "s3cret",
        "--fast",
        &sample_arg("tone-1k.m4a"),
        &sample_arg("broken.mp3"),
        &sample_arg("station-id.wav"),
    ])));
    let Seen::Connected { authorization, .. } = relay.next().await else { panic!("not connected") };
    assert_eq!(authorization.as_deref(), Some("Bearer s3cret"));
    let Seen::Text { msg: SourceMessage::Start { tracks }, .. } = relay.next().await else {
        panic!("start must come first")
    };
    assert_eq!(tracks.len(), 1);
    assert_eq!((tracks[0].id, tracks[0].codec), (0, protocol::Codec::Opus));
    assert_eq!((tracks[0].sample_rate, tracks[0].channels), (Some(48_000), Some(2)));
    let Seen::Header { payload, pts, .. } = relay.next().await else { panic!("then the header") };
    assert_eq!(pts, 0);
    assert_eq!(payload.len(), 19);
    assert_eq!(&payload[..8], b"OpusHead");

    let mut titles = Vec::new();
    let mut next_pts = 0;
    loop {
        match relay.next().await {
            Seen::Text { msg: SourceMessage::Metadata(meta), .. } => {
                assert_eq!(meta.pts, Some(next_pts), "metadata is stamped with its first frame");
                assert_eq!(meta.artist.as_deref(), Some("onair samples"));
                titles.push(meta.title.unwrap());
            }
            Seen::Frame { pts, .. } => {
                assert_eq!(pts, next_pts, "pts grow by 20 ms");
                next_pts += FRAME_DURATION_US;
            }
            Seen::Closed { code, .. } => {
                assert_eq!(code, Some(1000), "a finished playlist closes normally");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(titles, ["Tone 1 kHz", "Station ID"], "broken.mp3 is skipped");
    // 2 s + 3.267 s + the encoder's lookahead.
    assert_eq!(next_pts / FRAME_DURATION_US, 264);
    within(push).await.unwrap().expect("exit 0");
}

async fn push_refused_by(status: u16) -> PushError {
    let relay = FakeRelay::start(vec![Plan::Refuse(status)]).await;
    let err = within(onair::push::push(args(&[
        "--to",
        &relay.url,
        "--fast",
        &sample_arg("tone-1k.m4a"),
    ])))
    .await
    .unwrap_err();
    err
}

#[tokio::test]
async fn a_refused_key_exits_3_and_an_unknown_stream_exits_4() {
    let err = push_refused_by(401).await;
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().contains("refused with 401"), "{err}");
    let err = push_refused_by(404).await;
    assert_eq!(err.exit_code(), 4, "{err}");
    let err = push_refused_by(403).await;
    assert_eq!(err.exit_code(), 1, "{err}");
}

#[tokio::test]
async fn busy_and_dropped_connections_are_retried_and_the_stream_resumes() {
    // 409 busy, then accepted but closed after 20 frames (a relay restart), then 503, then OK.
    let plans = vec![Plan::Refuse(409), Plan::CloseAfter(20), Plan::Refuse(503), Plan::Accept];
    let mut relay = FakeRelay::start(plans).await;
    let push = tokio::spawn(onair::push::push(args(&[
        "--to",
        &relay.url,
        "--fast",
        &sample_arg("tone-440.flac"),
    ])));
    let mut frames_by_conn = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut metadata_by_conn = [0, 0, 0, 0];
    let mut header_pts = [None; 4];
    let mut last_conn = 0;
    loop {
        match relay.next().await {
            Seen::Connected { conn, .. } => last_conn = conn,
            Seen::Text { conn, msg: SourceMessage::Start { .. } } => assert_eq!(conn, last_conn),
            Seen::Text { conn, msg: SourceMessage::Metadata(meta) } => {
                assert_eq!(meta.title.as_deref(), Some("Tone 440 Hz"));
                assert_eq!(meta.pts, Some(0), "the current track's metadata, as first sent");
                metadata_by_conn[conn] += 1;
            }
            Seen::Header { conn, pts, .. } => header_pts[conn] = Some(pts),
            Seen::Frame { conn, pts } => frames_by_conn[conn].push(pts),
            Seen::Closed { conn: 3, .. } => break,
            Seen::Closed { .. } => {}
        }
    }
    within(push).await.unwrap().expect("exit 0");
    assert_eq!(last_conn, 3, "4 connection attempts");
    assert!(frames_by_conn[0].is_empty() && frames_by_conn[2].is_empty());
    assert_eq!(metadata_by_conn[1], 1);
    assert_eq!(metadata_by_conn[3], 1, "metadata is sent again after the reconnect");
    let (first, second) = (&frames_by_conn[1], &frames_by_conn[3]);
    assert!(first.len() >= 20);
    // The second connection resumes where the first stopped: nothing skipped (frames in flight
    // when the relay closed may be sent again), and the stream then runs to its end.
    let resumed_at = second[0];
    assert_eq!(header_pts[3], Some(resumed_at), "the header is stamped with the next frame's pts");
    assert!(resumed_at <= first.last().unwrap() + 20_000, "skipped from {first:?} to {resumed_at}");
    assert!(resumed_at >= first.last().unwrap().saturating_sub(10 * 20_000), "{resumed_at}");
    for pair in second.windows(2) {
        assert_eq!(pair[1], pair[0] + 20_000);
    }
    assert!(*second.last().unwrap() >= 199 * 20_000, "the whole 4 s file is played");
}

#[tokio::test]
async fn a_playlist_that_cannot_be_decoded_never_connects_and_exits_1() {
    let mut relay = FakeRelay::start(vec![]).await;
    let err = within(onair::push::push(args(&[
        "--to",
        &relay.url,
        &sample_arg("broken.mp3"),
        &sample_arg("broken.mp3"),
    ])))
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains("none of the 2 inputs could be decoded"), "{err}");
    assert!(relay.seen.try_recv().is_err(), "the stream never went on air");
}
