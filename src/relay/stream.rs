//! One stream: its ring, what is on air, and who to wake when the ring moves.
//!
//! Sources push through a [`SourceHandle`](super::SourceHandle) (`source.rs`), listeners read
//! through a [`Consumer`](super::Consumer) (`consumer.rs`); both go through the state here,
//! under one lock with short critical sections. Every change is appended to the ring and
//! committed at once: listeners are woken once per change, after the lock is released.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use super::ring::{Event, Frame, Ring};
use super::source::{Gate, SourceKind, Sources};
use super::stats::Bitrate;
use crate::config::StreamConfig;
use crate::format::mux::StreamMux;
use crate::format::LinkEdge;
use crate::metrics::StreamMetrics;
use crate::protocol::{FrameHeader, ListenerEvent, Metadata, SourceState, Track, TrackKind};

/// Now playing enters a stream's ring at most once per this interval: a burst of updates is
/// coalesced and the latest wins (each entry wakes every listener, and 1 024 of them would
/// push all audio out of a default ring).
pub const METADATA_INTERVAL: Duration = Duration::from_millis(250);

/// Something that serves listeners of a stream and must hear when its head moves (a listener
/// driver thread). Called after the stream's lock is released; must not block.
pub trait Watcher: Send + Sync {
    /// The stream has new entries.
    fn wake(&self);
}

/// What listeners of the source on air need: its tracks, headers and now playing, and where
/// in the ring each last changed.
#[derive(Debug, Default)]
pub(super) struct OnAir {
    pub tracks: Vec<Track>,
    /// Video keyframes are the only start points when the stream has video.
    pub start_track: Option<u8>,
    pub headers: Vec<(u8, Frame)>,
    /// Seq of the newest entry that changed the headers (a header frame or a source switch).
    pub header_version: u64,
    pub metadata: Option<Metadata>,
    pub metadata_version: u64,
    /// When now playing last entered the ring (tokio's clock, as the ring's).
    pub metadata_at: Option<tokio::time::Instant>,
    /// The latest now playing offered within `METADATA_INTERVAL` of the last one; it enters
    /// the ring with the first frame after the interval, or when the interval ends.
    pub pending_metadata: Option<Metadata>,
    /// Whether a task will put `pending_metadata` into the ring when the interval ends.
    pub metadata_flush_scheduled: bool,
    /// Seq of the newest source event; bursts never reach back past it.
    pub session_seq: u64,
}

#[derive(Debug)]
pub(super) struct State {
    pub ring: Ring,
    pub sources: Sources,
    pub on_air: OnAir,
    pub bitrate: Bitrate,
    /// The HTTP listeners' container, written once per frame.
    pub mux: StreamMux,
}

/// One stream: config, ring, sources, listener count and metrics.
pub struct Stream {
    pub(super) config: StreamConfig,
    state: Mutex<State>,
    pub(super) head: watch::Sender<u64>,
    /// Listener drivers to wake when the head moves; one per driver, never more.
    watchers: Mutex<Vec<Arc<dyn Watcher>>>,
    pub(super) listeners: AtomicUsize,
    /// HLS clients, as the stream's HLS side last counted them.
    hls_listeners: AtomicUsize,
    pub(super) metrics: StreamMetrics,
    /// Decides whether a local source may attach (set by a cluster; weak: the cluster owns
    /// the streams it guards).
    pub(super) gate: OnceLock<Weak<dyn Gate>>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("name", &self.config.name).finish_non_exhaustive()
    }
}

impl Stream {
    /// A stream with an empty ring and no source.
    pub fn new(config: StreamConfig, metrics: StreamMetrics) -> Arc<Self> {
        let state = State {
            ring: Ring::new(config.ring_frames, config.ring_bytes),
            sources: Sources::default(),
            on_air: OnAir::default(),
            bitrate: Bitrate::new(Instant::now()),
            mux: StreamMux::default(),
        };
        let (head, _) = watch::channel(0);
        Arc::new(Self {
            config,
            state: Mutex::new(state),
            head,
            watchers: Mutex::default(),
            listeners: AtomicUsize::new(0),
            hls_listeners: AtomicUsize::new(0),
            metrics,
            gate: OnceLock::new(),
        })
    }

    /// The stream's configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// The stream's metric handles.
    pub fn metrics(&self) -> &StreamMetrics {
        &self.metrics
    }

    /// Connected listeners.
    pub fn listener_count(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }

    /// HLS clients that polled lately, as the stream's HLS side last counted them (every
    /// second; 0 without HLS). They are not in `listener_count`.
    pub fn hls_listener_count(&self) -> usize {
        self.hls_listeners.load(Ordering::Relaxed)
    }

    /// Records the HLS side's count of its clients.
    pub fn set_hls_listeners(&self, count: usize) {
        self.hls_listeners.store(count, Ordering::Relaxed);
    }

    /// Whether a source is on air.
    pub fn is_live(&self) -> bool {
        self.lock().sources.on_air.is_some()
    }

    /// The kind of source on air, if any.
    pub fn on_air_kind(&self) -> Option<SourceKind> {
        self.lock().sources.on_air.map(|(kind, _)| kind)
    }

    /// What the source on air plays, `Live` or `AutoDj`, wherever it is: a stream relayed from
    /// another node plays what its origin does.
    pub fn on_air_plays(&self) -> Option<SourceKind> {
        let state = self.lock();
        match state.sources.on_air? {
            (SourceKind::Remote, _) => {
                let live =
                    state.sources.slot(SourceKind::Remote).is_some_and(|s| s.outranks_autodj);
                Some(if live { SourceKind::Live } else { SourceKind::AutoDj })
            }
            (kind, _) => Some(kind),
        }
    }

    /// The latest now-playing information.
    pub fn metadata(&self) -> Option<Metadata> {
        self.lock().on_air.metadata.clone()
    }

    /// Sets now playing for the source on air (an Icecast `/admin/metadata` request); every
    /// listener gets it, at the pace of `METADATA_INTERVAL`. A live source that is connected
    /// but has not started yet keeps it until it goes on air. Returns false when there is no
    /// such source.
    pub fn set_metadata(self: &Arc<Self>, meta: Metadata) -> bool {
        let mut state = self.lock();
        // NOTE: libshout (ezstream) and liquidsoap send the first title right after the
        // source's `200 OK`, before the relay has read its first audio frame (and so before
        // `start`): that title belongs to the live source about to go on air.
        if let Some(slot) = state.sources.unstarted_live_mut() {
            slot.metadata = Some(meta);
            return true;
        }
        let Some(slot) = state.sources.on_air_slot_mut() else { return false };
        slot.metadata = Some(meta.clone());
        if self.offer_metadata(&mut state, meta) {
            self.commit(state);
        }
        true
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // NOTE: no code path panics while holding this lock, so poisoning means a bug.
        self.state.lock().expect("stream state lock poisoned")
    }

    /// Releases the lock and tells everyone reading the stream that its head moved.
    pub(super) fn commit(&self, state: MutexGuard<'_, State>) {
        let head = state.ring.next_seq();
        drop(state);
        self.head.send_replace(head);
        for watcher in self.watchers.lock().expect("stream watchers lock poisoned").iter() {
            watcher.wake();
        }
    }

    /// Wakes `watcher` whenever the head moves (a listener driver serving this stream).
    pub fn watch(&self, watcher: &Arc<dyn Watcher>) {
        let mut watchers = self.watchers.lock().expect("stream watchers lock poisoned");
        let known = |w: &Arc<dyn Watcher>| std::ptr::addr_eq(Arc::as_ptr(w), Arc::as_ptr(watcher));
        if !watchers.iter().any(known) {
            watchers.push(Arc::clone(watcher));
        }
    }

    /// The sequence number the next entry will get.
    pub fn head_seq(&self) -> u64 {
        *self.head.borrow()
    }

    /// When the first entry at or after `seq` entered the ring, and the wire bytes of the
    /// entries from there to the head (a driver's send window counts from that time).
    pub fn arrivals_since(&self, seq: u64) -> (Option<std::time::Instant>, usize) {
        let (at, bytes) = self.lock().ring.arrivals_since(seq);
        (at.map(tokio::time::Instant::into_std), bytes)
    }

    /// Now playing from the source on air or an admin: appended at once (true: commit), or,
    /// within `METADATA_INTERVAL` of the last one, held in place of whatever was held until
    /// the next frame or the end of the interval, whichever comes first.
    pub(super) fn offer_metadata(self: &Arc<Self>, state: &mut State, meta: Metadata) -> bool {
        let now = tokio::time::Instant::now();
        let Some(due) = state.on_air.metadata_at.map(|at| at + METADATA_INTERVAL) else {
            self.push_metadata(state, meta);
            return true;
        };
        if now >= due {
            self.push_metadata(state, meta);
            return true;
        }
        state.on_air.pending_metadata = Some(meta);
        if !state.on_air.metadata_flush_scheduled {
            state.on_air.metadata_flush_scheduled = self.schedule_metadata_flush(due);
        }
        false
    }

    /// Puts the held now playing into the ring at `due` (a source may pause its frames, an
    /// admin may set a title while nothing flows). False outside a tokio runtime: then only
    /// the next frame does.
    fn schedule_metadata_flush(self: &Arc<Self>, due: tokio::time::Instant) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return false };
        let stream = Arc::downgrade(self);
        runtime.spawn(async move {
            tokio::time::sleep_until(due).await;
            if let Some(stream) = stream.upgrade() {
                stream.flush_metadata();
            }
        });
        true
    }

    /// The end of an interval: the held now playing, if still due, enters the ring.
    fn flush_metadata(self: &Arc<Self>) {
        let mut state = self.lock();
        state.on_air.metadata_flush_scheduled = false;
        let Some(meta) = state.on_air.pending_metadata.take() else { return };
        // A frame may have flushed an earlier title meanwhile, starting a new interval.
        if self.offer_metadata(&mut state, meta) {
            self.commit(state);
        }
    }

    /// Appends a metadata event.
    pub(super) fn push_metadata(&self, state: &mut State, meta: Metadata) {
        state.on_air.metadata_at = Some(tokio::time::Instant::now());
        state.on_air.pending_metadata = None;
        state.mux.metadata(Some(meta.clone()));
        state.on_air.metadata = Some(meta.clone());
        state.on_air.metadata_version =
            state.ring.push_event(Event::new(ListenerEvent::Metadata(meta)));
    }

    /// Appends a source online/offline event: a new session for listeners.
    fn push_source_event(&self, state: &mut State, event: Event) {
        let seq = state.ring.push_event(event);
        state.on_air.session_seq = seq;
        state.on_air.header_version = seq;
    }

    /// Appends a frame of the source on air (after the now playing held back, when due).
    pub(super) fn push_frame(
        &self,
        state: &mut State,
        header: FrameHeader,
        message: Bytes,
        edge: Option<LinkEdge>,
    ) {
        if state.on_air.pending_metadata.is_some()
            && state
                .on_air
                .metadata_at
                .is_none_or(|at| tokio::time::Instant::now() >= at + METADATA_INTERVAL)
        {
            if let Some(meta) = state.on_air.pending_metadata.take() {
                self.push_metadata(state, meta);
            }
        }
        let bytes = message.len() as u64;
        self.metrics.frames_in.inc();
        self.metrics.bytes_in.inc_by(bytes);
        state.bitrate.add(bytes, Instant::now());
        let is_header = header.is_header();
        let start = !is_header
            && header.is_keyframe()
            && state.on_air.start_track.is_none_or(|t| t == header.track);
        let frame = Frame::new(header, message);
        let http = if is_header {
            state.mux.header(header.track, &frame.payload());
            None
        } else {
            state.mux.frame_at_edge(header.track, &frame.payload(), edge)
        };
        let frame = frame.with_http(http).with_edge(edge);
        let seq = state.ring.push_frame(frame.clone(), start, is_header);
        if is_header {
            state.on_air.header_version = seq;
            match state.on_air.headers.iter_mut().find(|(t, _)| *t == header.track) {
                Some(stored) => stored.1 = frame,
                None => state.on_air.headers.push((header.track, frame)),
            }
            reserve_headers(state);
        }
    }

    /// Re-evaluates who is on air after a source slot changed and tells listeners about a
    /// switch: the `source` event, the new source's headers and its now playing go into the
    /// ring together, under this one lock, so no frame can come between them.
    pub(super) fn switch_if_needed(&self, mut state: MutexGuard<'_, State>) {
        // Nothing changed: nothing to tell (the lock is released on return).
        let Some(on_air) = state.sources.elect() else { return };
        // What the previous source was about to say is no longer now playing, and the new
        // one's first title goes out at once.
        state.on_air.pending_metadata = None;
        state.on_air.metadata_at = None;
        let Some((kind, slot)) = on_air.and_then(|kind| Some((kind, state.sources.slot(kind)?)))
        else {
            state.on_air.headers.clear();
            reserve_headers(&mut state);
            state.mux.source(&[]);
            self.metrics.live.set(0);
            let offline = ListenerEvent::Source { state: SourceState::Offline, tracks: None };
            self.push_source_event(&mut state, Event::new(offline));
            return self.commit(state);
        };
        let tracks = slot.tracks.clone().unwrap_or_default();
        let headers = slot.headers.clone();
        let slot_live = slot.outranks_autodj;
        let metadata = slot.metadata.clone();
        self.metrics.live.set(1);
        state.on_air.start_track = tracks.iter().find(|t| t.kind == TrackKind::Video).map(|t| t.id);
        state.on_air.tracks = tracks.clone();
        state.on_air.headers.clear();
        reserve_headers(&mut state);
        state.mux.source(&tracks);
        state.mux.metadata(metadata.clone());
        let online = ListenerEvent::Source { state: SourceState::Online, tracks: Some(tracks) };
        let event = match kind {
            SourceKind::Remote => Event::relayed(online, slot_live),
            kind => Event::with_source(online, Some(kind)),
        };
        self.push_source_event(&mut state, event);
        for (header, message) in headers {
            self.push_frame(&mut state, header, message, None);
        }
        if let Some(meta) = metadata {
            self.push_metadata(&mut state, meta);
        }
        self.commit(state);
    }
}

/// The headers of the source on air live as long as it does, whatever the ring evicts: they
/// count against `ring_bytes` too (a header still in the ring counts twice, on the safe side).
fn reserve_headers(state: &mut State) {
    let bytes = state.on_air.headers.iter().map(|(_, frame)| frame.wire().wire_len()).sum();
    state.ring.reserve(bytes);
}
