//! A tap: everything a stream carries, read in order by something that is not a listener (a
//! cluster node publishing its stream to the others, `cluster/origin.rs`).
//!
//! A tap starts at the head, is not counted as a listener, gets no burst and no `hello`, and
//! says which kind of source each session is from (so relayed sessions are never published
//! again). It falls behind only if its reader does: then it jumps to the head and hands out
//! the stream's current state as a new session, with the count of frames it lost.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;

use super::ring::{Frame, Item, Mark};
use super::source::SourceKind;
use super::stream::{State, Stream};
use crate::protocol::{ListenerEvent, Metadata, Track};

/// What a tap hands out, in the stream's order.
#[derive(Clone, Debug)]
pub enum Tapped {
    /// A source went on air (`kind` says which, `None`: nobody, the stream went offline);
    /// its headers and now playing follow as `Frame`s and `Metadata`.
    Session {
        /// Who went on air.
        kind: Option<SourceKind>,
        /// Its tracks (empty when offline).
        tracks: Vec<Track>,
    },
    /// A media frame (a header frame when `frame.header().is_header()`).
    Frame(Frame),
    /// Now playing changed.
    Metadata(Metadata),
}

/// A reader of everything a stream carries from the moment it was made. Not a listener.
#[derive(Debug)]
pub struct Tap {
    stream: Arc<Stream>,
    cursor: u64,
    head: watch::Receiver<u64>,
}

impl Stream {
    /// A tap from the head on, and what it must hand on first: the session on air now (a
    /// `Session` with its headers and now playing), or an offline `Session` when none is.
    /// (`Stream::tap` is the other kind of reader that is not a listener: a `Consumer` with
    /// a burst and `hello`, for the HLS segmenter and the recorder.)
    pub fn session_tap(self: &Arc<Self>) -> (Tap, Vec<Tapped>) {
        let state = self.lock();
        let mut first = VecDeque::new();
        current_session(&state, &mut first);
        let tap = Tap {
            stream: Arc::clone(self),
            cursor: state.ring.next_seq(),
            head: self.head.subscribe(),
        };
        drop(state);
        (tap, first.into())
    }
}

impl Tap {
    /// The stream this tap reads.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Waits until the ring may hold something new for this tap. Cancel safe.
    pub async fn changed(&mut self) {
        if self.head.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Appends up to `max` entries from the cursor on to `out`; returns how many entries
    /// were lost because the tap fell off the ring (it then starts again from the head, with
    /// the current session).
    pub fn fill(&mut self, out: &mut VecDeque<Tapped>, max: usize) -> u64 {
        self.head.borrow_and_update();
        let state = self.stream.lock();
        let ring = &state.ring;
        let mut lost = 0;
        if self.cursor < ring.oldest_seq() {
            lost = ring.next_seq() - self.cursor;
            current_session(&state, out);
            self.cursor = ring.next_seq();
        }
        for entry in ring.from(self.cursor).take(max) {
            self.cursor = entry.seq + 1;
            match (&entry.item, entry.mark) {
                (Item::Frame(frame), _) => out.push_back(Tapped::Frame(frame.clone())),
                (Item::Event(event), Mark::Metadata) => {
                    if let ListenerEvent::Metadata(meta) = event.get() {
                        out.push_back(Tapped::Metadata(meta.clone()));
                    }
                }
                (Item::Event(event), _) => {
                    let kind = event.source_kind();
                    let tracks = match event.get() {
                        ListenerEvent::Source { tracks: Some(tracks), .. } => tracks.clone(),
                        _ => Vec::new(),
                    };
                    out.push_back(Tapped::Session { kind, tracks });
                }
            }
        }
        lost
    }

    /// Whether the tap has read everything up to the head.
    pub fn at_head(&self) -> bool {
        self.cursor >= self.stream.head_seq()
    }
}

/// The session on air now, as a tap would have read it: `Session`, headers, now playing.
fn current_session(state: &State, out: &mut VecDeque<Tapped>) {
    let kind = state.sources.on_air.map(|(kind, _)| kind);
    let tracks = if kind.is_some() { state.on_air.tracks.clone() } else { Vec::new() };
    out.push_back(Tapped::Session { kind, tracks });
    if kind.is_some() {
        out.extend(state.on_air.headers.iter().map(|(_, frame)| Tapped::Frame(frame.clone())));
        if let Some(meta) = &state.on_air.metadata {
            out.push_back(Tapped::Metadata(meta.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::config::StreamConfig;
    use crate::metrics::StreamMetrics;
    use crate::protocol::{encode_frame, Codec, FrameHeader, FLAG_HEADER, FLAG_KEYFRAME};
    use crate::relay::{AttachError, Consumer, Gate, SourceHandle};

    fn stream() -> Arc<Stream> {
        let mut config = StreamConfig::new("test", Some("k"));
        config.burst = Duration::ZERO;
        Stream::new(config, StreamMetrics::default())
    }

    fn audio() -> Vec<Track> {
        vec![Track::audio(0, Codec::Opus, 48_000, 2, None)]
    }

    fn message(flags: u8, pts: u64, body: &[u8]) -> (FrameHeader, Bytes) {
        let header = FrameHeader { flags, track: 0, pts };
        (header, encode_frame(header, body))
    }

    fn push(source: &mut SourceHandle, pts: u64, body: &[u8]) {
        let (header, message) = message(FLAG_KEYFRAME, pts, body);
        source.frame(header, message).unwrap();
    }

    /// Sessions as (kind, track count), frames as their payloads, metadata as titles.
    fn drain(tap: &mut Tap) -> Vec<String> {
        let mut out = VecDeque::new();
        tap.fill(&mut out, usize::MAX);
        out.into_iter().map(describe).collect()
    }

    fn describe(item: Tapped) -> String {
        match item {
            Tapped::Session { kind, tracks } => {
                format!("session {} {}", kind.map_or("none", SourceKind::as_str), tracks.len())
            }
            Tapped::Frame(frame) => String::from_utf8_lossy(&frame.payload()).into_owned(),
            Tapped::Metadata(meta) => format!("title {}", meta.title.unwrap_or_default()),
        }
    }

    /// Pts of the frames and the source events a listener reads.
    fn listen(consumer: &mut Consumer) -> Vec<String> {
        let mut out = VecDeque::<Item>::new();
        consumer.fill(&mut out, usize::MAX);
        out.into_iter()
            .map(|item| match item {
                Item::Frame(frame) => String::from_utf8_lossy(&frame.payload()).into_owned(),
                Item::Event(event) => match event.get() {
                    ListenerEvent::Source { state, .. } => format!("{state:?}"),
                    other => other.to_json(),
                },
            })
            .collect()
    }

    #[test]
    fn a_tap_is_not_a_listener_and_says_whose_session_it_reads() {
        let stream = stream();
        let mut autodj = stream.attach(SourceKind::AutoDj).unwrap();
        autodj.start(audio()).unwrap();
        let (header, head) = message(FLAG_HEADER, 0, b"dj head");
        autodj.frame(header, head).unwrap();
        push(&mut autodj, 0, b"dj 0");

        let (mut tap, first) = stream.session_tap();
        assert_eq!(stream.listener_count(), 0, "a tap is not counted");
        let first: Vec<String> = first.into_iter().map(describe).collect();
        assert_eq!(first, ["session autodj 1", "dj head"], "the session on air, then its header");
        assert!(drain(&mut tap).is_empty(), "a tap starts at the head: no burst");

        push(&mut autodj, 20_000, b"dj 1");
        let mut remote = stream.attach(SourceKind::Remote).unwrap();
        let (header, head) = message(FLAG_HEADER, 0, b"remote head");
        let title = Metadata { title: Some("Elsewhere".into()), ..Metadata::default() };
        remote.restart(audio(), vec![(header, head)], Some(title), true);
        push(&mut remote, 5, b"remote 0");
        drop(remote);
        assert_eq!(
            drain(&mut tap),
            [
                "dj 1",
                "session remote 1",
                "remote head",
                "title Elsewhere",
                "remote 0",
                "session autodj 1",
                "dj head"
            ]
        );
        drop(autodj);
        assert_eq!(drain(&mut tap), ["session none 0"]);
    }

    #[test]
    fn a_tap_that_falls_off_the_ring_starts_again_from_the_current_session() {
        let mut config = StreamConfig::new("test", Some("k"));
        config.ring_frames = 8;
        let stream = Stream::new(config, StreamMetrics::default());
        let mut live = stream.attach(SourceKind::Live).unwrap();
        live.start(audio()).unwrap();
        let (mut tap, _) = stream.session_tap();
        for i in 0..20 {
            push(&mut live, i, format!("f{i}").as_bytes());
        }
        let mut out = VecDeque::new();
        assert_eq!(tap.fill(&mut out, usize::MAX), 20, "entries lost");
        let items: Vec<String> = out.into_iter().map(describe).collect();
        assert_eq!(items, ["session live 1"], "the current session, then the head");
        push(&mut live, 20, b"f20");
        assert_eq!(drain(&mut tap), ["f20"]);
    }

    #[test]
    fn a_relayed_live_source_outranks_the_local_autodj_and_a_local_live_one_outranks_it() {
        let stream = stream();
        let (mut listener, _) = stream.subscribe().unwrap();
        let mut autodj = stream.attach(SourceKind::AutoDj).unwrap();
        autodj.start(audio()).unwrap();
        push(&mut autodj, 0, b"dj");
        let mut remote = stream.attach(SourceKind::Remote).unwrap();
        remote.restart(audio(), Vec::new(), None, false);
        push(&mut remote, 0, b"remote autodj");
        assert_eq!(stream.on_air_kind(), Some(SourceKind::AutoDj), "the local auto-DJ first");
        remote.restart(audio(), Vec::new(), None, true);
        push(&mut remote, 1, b"remote live");
        assert_eq!(stream.on_air_kind(), Some(SourceKind::Remote), "then a live source elsewhere");
        let mut live = stream.attach(SourceKind::Live).unwrap();
        live.start(audio()).unwrap();
        push(&mut remote, 2, b"muted");
        push(&mut live, 0, b"here");
        assert_eq!(stream.on_air_kind(), Some(SourceKind::Live), "a live source here above all");
        drop(live);
        push(&mut remote, 3, b"remote again");
        assert_eq!(
            listen(&mut listener),
            ["Online", "dj", "Online", "remote live", "Online", "here", "Online", "remote again"],
            "listeners hear every switch as `source online`, never offline"
        );
        assert!(stream.has_source(SourceKind::AutoDj) && stream.has_source(SourceKind::Remote));
    }

    #[derive(Default)]
    struct Recorder {
        refuse_live: bool,
        calls: Mutex<Vec<String>>,
    }

    impl Gate for Recorder {
        fn admit(&self, _: &Stream, kind: SourceKind) -> Result<(), AttachError> {
            if self.refuse_live && kind == SourceKind::Live {
                return Err(AttachError::Busy);
            }
            Ok(())
        }
        fn attached(&self, stream: &Stream, kind: SourceKind) {
            let on_air = stream.on_air_kind().map_or("none", SourceKind::as_str);
            self.calls.lock().unwrap().push(format!("attached {} ({on_air})", kind.as_str()));
        }
        fn detached(&self, stream: &Stream, kind: SourceKind) {
            let on_air = stream.on_air_kind().map_or("none", SourceKind::as_str);
            self.calls.lock().unwrap().push(format!("detached {} ({on_air})", kind.as_str()));
        }
    }

    #[test]
    fn the_gate_refuses_before_a_slot_is_taken_and_hears_attach_and_detach() {
        let stream = stream();
        let gate = Arc::new(Recorder { refuse_live: true, ..Recorder::default() });
        stream.set_gate(&(Arc::clone(&gate) as Arc<dyn Gate>));
        assert_eq!(stream.attach(SourceKind::Live).unwrap_err(), AttachError::Busy);
        assert!(!stream.has_source(SourceKind::Live), "a refused source takes no slot");
        let mut autodj = stream.attach(SourceKind::AutoDj).unwrap();
        autodj.start(audio()).unwrap();
        drop(autodj);
        let calls = gate.calls.lock().unwrap().clone();
        assert_eq!(calls, ["attached autodj (none)", "detached autodj (none)"]);
    }
}
