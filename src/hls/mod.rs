//! HLS for CDNs and phones: `GET /{stream}.m3u8`, a live (low-latency) media playlist, and
//! `GET /hls/{stream}/{file}`, its init segments, segments and parts.
//!
//! Each stream's segments are built once, by one task reading the stream's ring like a
//! listener that is never counted (`Stream::tap`), and kept in memory for a window
//! (`hls_window_segments`); HLS clients only ever read them. A playlist request may block
//! (`_HLS_msn`/`_HLS_part`, RFC 8216bis §6.2.5.2) and so may a request for the part the
//! playlist hints at, until it exists. Sessions (address and user agent, or `?session=`) that
//! polled recently are counted as the stream's HLS listeners.

pub mod window;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Config;
use crate::http::{Request, Response};
use crate::protocol::ListenerEvent;
use crate::relay::{Item, Stream, MAX_FILL_ENTRIES};
use window::{Kind, Shape, Window};

/// An HLS client that has not polled for this many target durations is no longer counted.
const SESSION_TARGETS: u32 = 3;
/// How often the stream's count of HLS clients is refreshed.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// One stream's HLS side: its window, a signal for every new part, and its sessions.
#[derive(Debug)]
pub struct HlsStream {
    window: Mutex<Window>,
    /// Parts completed so far: waiting requests watch it.
    parts: watch::Sender<u64>,
    sessions: Mutex<HashMap<(IpAddr, String), Instant>>,
    max_sessions: usize,
    /// The playlist as every client without link parameters gets it, and the window version
    /// it shows: rendered once per change, not once per request.
    rendered: Mutex<Option<(u64, Bytes)>>,
    /// How long a blocking request waits (three target durations, as RFC 8216bis says).
    hold: Duration,
}

impl HlsStream {
    /// An empty window for `stream` cut as `config` says.
    pub fn new(config: &Config, stream: &Stream) -> Arc<Self> {
        let shape = Shape {
            part: config.hls_part,
            segment: config.hls_segment,
            segments: config.hls_window_segments,
        };
        let target = config.hls_segment.as_secs_f64().ceil().max(1.0);
        Arc::new(Self {
            window: Mutex::new(Window::new(shape)),
            parts: watch::channel(0).0,
            sessions: Mutex::default(),
            max_sessions: stream.config().max_listeners,
            rendered: Mutex::default(),
            hold: Duration::from_secs_f64(target * 3.0),
        })
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().expect("hls window lock poisoned")
    }

    /// Applies one item of the stream.
    fn push(&self, item: &Item) {
        let now = SystemTime::now();
        let mut window = self.window();
        let part = match item {
            Item::Frame(frame) => {
                let header = frame.header();
                if header.is_header() {
                    window.header(header.track, &frame.payload());
                    false
                } else {
                    window.frame(header.track, &frame.payload(), now)
                }
            }
            Item::Event(event) => {
                match event.get() {
                    ListenerEvent::Hello { tracks, metadata, live, .. } => {
                        if *live {
                            window.source(tracks);
                        }
                        window.metadata(metadata.clone(), now);
                    }
                    ListenerEvent::Source { tracks: Some(tracks), .. } => window.source(tracks),
                    ListenerEvent::Source { tracks: None, .. } => window.offline(),
                    ListenerEvent::Metadata(meta) => window.metadata(Some(meta.clone()), now),
                    ListenerEvent::Skipped { .. } => {}
                }
                false
            }
        };
        drop(window);
        if part {
            self.parts.send_modify(|n| *n += 1);
        }
    }

    /// The playlist with `base` (the same for every request of a stream: it comes from the
    /// config) and no link parameters, rendered when the window changed since the last one.
    fn shared_playlist(&self, base: &str) -> Option<Bytes> {
        let window = self.window();
        let version = window.version();
        let mut rendered = self.rendered.lock().expect("hls playlist lock poisoned");
        if let Some((_, body)) = rendered.as_ref().filter(|(shown, _)| *shown == version) {
            return Some(body.clone());
        }
        let body = Bytes::from(window.playlist(base, "")?);
        *rendered = Some((version, body.clone()));
        Some(body)
    }

    /// Counts an HLS client: `session` (a `?session=` value) or its user agent, per address.
    fn seen(&self, ip: IpAddr, session: String) {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().expect("hls sessions lock poisoned");
        let fresh = self.hold / 3 * SESSION_TARGETS;
        if sessions.len() >= self.max_sessions {
            sessions.retain(|_, at| now.duration_since(*at) < fresh);
        }
        if sessions.len() < self.max_sessions || sessions.contains_key(&(ip, session.clone())) {
            sessions.insert((ip, session), now);
        }
    }

    /// HLS clients that polled within the last three target durations.
    pub fn listeners(&self) -> usize {
        let now = Instant::now();
        let fresh = self.hold / 3 * SESSION_TARGETS;
        let mut sessions = self.sessions.lock().expect("hls sessions lock poisoned");
        sessions.retain(|_, at| now.duration_since(*at) < fresh);
        sessions.len()
    }

    /// Waits (up to `hold`) until `ready` holds for the window. Cancel safe.
    async fn wait_for(&self, ready: impl Fn(&Window) -> bool) -> bool {
        let mut parts = self.parts.subscribe();
        let wait = async {
            loop {
                if ready(&self.window()) {
                    return;
                }
                if parts.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        timeout(self.hold, wait).await.is_ok()
    }
}

/// Builds `stream`'s segments from its ring until `cancel`.
pub async fn run(stream: Arc<Stream>, hls: Arc<HlsStream>, cancel: CancellationToken) {
    let (mut consumer, first) = stream.tap();
    for item in &first {
        hls.push(item);
    }
    // The stream keeps a count of the clients for those who cannot ask the HLS side (the
    // cluster's listener counts), refreshed while the stream is quiet too.
    let mut count = tokio::time::interval(COUNT_EVERY);
    count.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let fill = consumer.fill_with(usize::MAX, MAX_FILL_ENTRIES, |item| hls.push(item));
        if fill.skipped > 0 {
            debug!(stream = %stream.config().name, skipped = fill.skipped, "hls segmenter fell behind");
        }
        if fill.at_head {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                _ = count.tick() => stream.set_hls_listeners(hls.listeners()),
                () = consumer.changed() => {}
            }
        }
    }
    stream.set_hls_listeners(0);
}

/// What a request under `/hls/{stream}/` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    Init(u64),
    Segment(u64),
    Part(u64, usize),
}

impl File {
    fn parse(name: &str) -> Option<(File, Option<&str>)> {
        if let Some(link) = name.strip_prefix("init-").and_then(|n| n.strip_suffix(".mp4")) {
            return Some((File::Init(link.parse().ok()?), None));
        }
        let (stem, ext) = name.rsplit_once('.')?;
        let file = match stem.split_once('.') {
            Some((msn, part)) => File::Part(msn.parse().ok()?, part.parse().ok()?),
            None => File::Segment(stem.parse().ok()?),
        };
        Some((file, Some(ext)))
    }
}

/// Headers of what never changes once made (segments, parts, init segments).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// `GET /{stream}.m3u8`: the media playlist, once it holds what `_HLS_msn`/`_HLS_part` ask.
pub async fn playlist(
    hls: &HlsStream,
    config: &Config,
    name: &str,
    request: &Request,
    peer: IpAddr,
) -> Response {
    let session = request
        .query_param("session")
        .or_else(|| request.header("user-agent").map(str::to_owned))
        .unwrap_or_default();
    hls.seen(peer, session.chars().take(256).collect());
    let msn = request.query_param("_HLS_msn").and_then(|v| v.parse::<u64>().ok());
    let part = request.query_param("_HLS_part").and_then(|v| v.parse::<usize>().ok());
    if let Some(msn) = msn {
        if hls.window().is_far_future(msn) {
            return Response::text(400, "_HLS_msn is beyond the next segment");
        }
        // Without `_HLS_part`, the whole segment is awaited.
        let ready = |w: &Window| match part {
            Some(part) => w.has_part(msn, part) || w.segment(msn + 1).is_some(),
            None => w.segment(msn).is_some_and(|s| s.complete) || w.segment(msn + 1).is_some(),
        };
        if !hls.wait_for(ready).await {
            return Response::text(503, "that part is not ready in time");
        }
    } else if hls.window().is_starting() {
        // A player that opens the stream as its show begins gets the first part, not a 404
        // it may give up on: the part is at most `hls_part_ms` away.
        hls.wait_for(|w| !w.is_starting()).await;
    }
    let base = match &config.hls_base_url {
        Some(base) => format!("{}/hls/{name}/", base.trim_end_matches('/')),
        None => format!("/hls/{name}/"),
    };
    let query = signed_query(request);
    // A signed link's parameters differ per listener: only the others share one rendering.
    let body = if query.is_empty() {
        hls.shared_playlist(&base)
    } else {
        hls.window().playlist(&base, &query).map(Bytes::from)
    };
    match body {
        Some(body) => Response::new(200, "application/vnd.apple.mpegurl", body)
            .with_header("Cache-Control", "no-cache"),
        None => Response::text(404, "the stream has no source to segment yet: try again soon"),
    }
}

/// A private stream's link parameters, carried on to every URI the playlist lists.
fn signed_query(request: &Request) -> String {
    match (request.query_param("expires"), request.query_param("sig")) {
        (Some(expires), Some(sig)) => {
            let clean = |v: &str| v.chars().filter(char::is_ascii_alphanumeric).collect::<String>();
            format!("?expires={}&sig={}", clean(&expires), clean(&sig))
        }
        _ => String::new(),
    }
}

/// `GET /hls/{stream}/{file}`: an init segment, a segment, or a part (held until it exists
/// when it is the next one).
pub async fn file(hls: &HlsStream, name: &str) -> Result<(Kind, Vec<bytes::Bytes>), Response> {
    let not_found = || Response::text(404, "no such segment (it may have left the window)");
    let Some((file, ext)) = File::parse(name) else { return Err(not_found()) };
    match file {
        File::Init(link) => {
            let init = hls.window().init(link).ok_or_else(not_found)?;
            Ok((Kind::Mp4, vec![init]))
        }
        File::Segment(msn) => {
            if hls.window().is_far_future(msn) {
                return Err(not_found());
            }
            hls.wait_for(|w| {
                w.segment(msn).is_some_and(|s| s.complete) || w.segment(msn + 1).is_some()
            })
            .await;
            let window = hls.window();
            let segment = window.segment(msn).filter(|s| s.complete).ok_or_else(not_found)?;
            if ext != Some(segment.kind.extension()) {
                return Err(not_found());
            }
            Ok((segment.kind, segment.pieces()))
        }
        File::Part(msn, index) => {
            if hls.window().is_far_future(msn) {
                return Err(not_found());
            }
            hls.wait_for(|w| w.has_part(msn, index) || w.segment(msn + 1).is_some()).await;
            let window = hls.window();
            let segment = window.segment(msn).ok_or_else(not_found)?;
            let part = segment.parts.get(index).ok_or_else(not_found)?;
            if ext != Some(segment.kind.extension()) {
                return Err(not_found());
            }
            let mut pieces = Vec::with_capacity(2);
            pieces.extend(part.tag.clone());
            pieces.push(part.data.clone());
            Ok((segment.kind, pieces))
        }
    }
}

/// The response for a file's pieces.
pub fn file_response(kind: Kind, name: &str, pieces: Vec<bytes::Bytes>) -> Response {
    let content_type = if name.ends_with(".mp4") { "audio/mp4" } else { kind.content_type() };
    let mut body = bytes::BytesMut::with_capacity(pieces.iter().map(|p| p.len()).sum());
    for piece in pieces {
        body.extend_from_slice(&piece);
    }
    Response::new(200, content_type, body.freeze()).with_header("Cache-Control", IMMUTABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse() {
        assert_eq!(File::parse("init-3.mp4"), Some((File::Init(3), None)));
        assert_eq!(File::parse("12.m4s"), Some((File::Segment(12), Some("m4s"))));
        assert_eq!(File::parse("12.4.mp3"), Some((File::Part(12, 4), Some("mp3"))));
        for bad in ["init-x.mp4", "x.m4s", "1.x.m4s", "..", "12", ""] {
            assert_eq!(File::parse(bad), None, "{bad}");
        }
    }
}
