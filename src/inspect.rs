//! `onair listen`: a listener that prints what a stream carries, for debugging.
//!
//! WebSocket streams are hard to inspect with general tools; this connects like a player and
//! prints the `hello`, every event, and either every frame header or a summary per second.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::decode_frame_header;

/// What `onair listen` was asked to do.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// `ws://HOST:PORT/listen/STREAM`.
    pub url: String,
    /// Print every frame header instead of a summary per second.
    pub frames: bool,
    /// Stop after this long (`None`: until the stream closes or Ctrl-C).
    pub duration: Option<Duration>,
}

/// Connects and prints until the connection ends or `duration` passes.
///
/// # Errors
/// When the connection cannot be opened or fails.
pub async fn run(options: InspectOptions) -> anyhow::Result<()> {
    let (mut ws, response) = tokio_tungstenite::connect_async(options.url.as_str())
        .await
        .map_err(|err| anyhow::anyhow!("cannot connect to {}: {}", options.url, describe(&err)))?;
    println!("connected: HTTP {}", response.status().as_u16());
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut summary = Summary::default();
    loop {
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => ws.next().await,
        };
        let msg = match next {
            Some(Ok(msg)) => msg,
            Some(Err(err)) => return Err(anyhow::anyhow!("connection failed: {err}")),
            None => break,
        };
        match msg {
            Message::Text(text) => println!("event: {text}"),
            Message::Binary(data) => match decode_frame_header(&data) {
                Ok(header) if options.frames => println!(
                    "frame: track {} pts {} us{}{} {} bytes",
                    header.track,
                    header.pts,
                    if header.is_keyframe() { " key" } else { "" },
                    if header.is_header() { " header" } else { "" },
                    data.len() - crate::protocol::FRAME_HEADER_BYTES
                ),
                Ok(header) => summary.add(header.track, header.pts, data.len()),
                Err(err) => println!("bad frame: {err}"),
            },
            Message::Close(frame) => {
                match frame {
                    Some(f) => println!("closed by relay: {} {}", u16::from(f.code), f.reason),
                    None => println!("closed by relay"),
                }
                break;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    summary.flush();
    Ok(())
}

fn describe(err: &tokio_tungstenite::tungstenite::Error) -> String {
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            format!("HTTP {} {}", response.status().as_u16(), body.trim())
        }
        other => other.to_string(),
    }
}

/// Frames per track, printed once a second.
#[derive(Default)]
struct Summary {
    since: Option<Instant>,
    tracks: BTreeMap<u8, (u64, usize, u64)>,
}

impl Summary {
    fn add(&mut self, track: u8, pts: u64, bytes: usize) {
        let since = *self.since.get_or_insert_with(Instant::now);
        let entry = self.tracks.entry(track).or_default();
        entry.0 += 1;
        entry.1 += bytes;
        entry.2 = pts;
        if since.elapsed() >= Duration::from_secs(1) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for (track, (frames, bytes, pts)) in &self.tracks {
            println!(
                "track {track}: {frames} frames, {bytes} bytes, last pts {:.3} s",
                *pts as f64 / 1e6
            );
        }
        self.tracks.clear();
        self.since = None;
    }
}
