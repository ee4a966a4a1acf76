//! One stream: its ring of recent frames, its sources and its listeners' cursors.
//!
//! `SourceHandle` (from `Stream::attach`) pushes frames and events; `Consumer` (from
//! `Stream::subscribe`) reads them at its own pace. ALL lag, burst and fallback policy lives
//! here: a consumer that falls off the ring jumps to the newest start point and is told how
//! many frames it skipped; a live source takes over from the auto-DJ and hands back to it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::config::StreamConfig;
use crate::metrics::StreamMetrics;
use crate::protocol::{
    FrameHeader, ListenerEvent, Metadata, SourceState, Track, TrackKind, FRAME_HEADER_BYTES,
    PROTOCOL_VERSION,
};
use crate::websocket::WireFrame;

/// The relay's name and version, as announced in `hello`.
pub const SERVER_NAME: &str = concat!("onair/", env!("CARGO_PKG_VERSION"));
/// Ingest bitrate is averaged over windows of this length.
const BITRATE_WINDOW: Duration = Duration::from_secs(2);

/// What kind of source feeds a stream; a live source takes precedence over the auto-DJ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A broadcaster connected over the network.
    Live,
    /// The built-in auto-DJ playing the stream's playlist.
    AutoDj,
}

/// Most entries one `Consumer::fill` takes: a listener writes them with one vectored write
/// (two buffers each), and its outbox never grows past this however far behind it is.
pub const MAX_FILL_ENTRIES: usize = 64;

/// One ring entry: a frame or an event, already framed for the wire.
#[derive(Clone, Debug)]
struct Entry {
    seq: u64,
    kind: EntryKind,
    wire: WireFrame,
    /// When it entered the ring; a listener's send window counts from here.
    at: tokio::time::Instant,
}

#[derive(Clone, Copy, Debug)]
enum EntryKind {
    Frame {
        /// A listener may start here (a keyframe on the stream's start track).
        start: bool,
        /// Codec configuration (already sent to listeners that joined after it).
        header: bool,
        /// Media frames before this one in the stream's life, to count skips exactly.
        number: u64,
        pts: u64,
    },
    Metadata,
    Source,
}

/// Why a source could not attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// Another source of the same kind is connected.
    #[error("another source is already live on this stream")]
    Busy,
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// `start` was sent twice.
    #[error("start message sent twice")]
    AlreadyStarted,
    /// A frame or metadata before `start`.
    #[error("frame before the start message")]
    NotStarted,
    /// A frame names an undeclared track.
    #[error("frame on track {0}, which the start message did not declare")]
    UnknownTrack(u8),
}

/// A stream is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream has its maximum of {0} listeners")]
pub struct StreamFull(pub usize);

/// What a source slot remembers, so the auto-DJ resumes with its own headers and title.
#[derive(Debug, Default)]
struct Slot {
    id: u64,
    /// Cancelled when an operator removes this source.
    kick: tokio_util::sync::CancellationToken,
    tracks: Option<Vec<Track>>,
    headers: Vec<(u8, Bytes)>,
    metadata: Option<Metadata>,
}

#[derive(Debug)]
struct State {
    entries: VecDeque<Entry>,
    bytes: usize,
    next_seq: u64,
    next_number: u64,
    live: Option<Slot>,
    autodj: Option<Slot>,
    on_air: Option<(SourceKind, u64)>,
    on_air_since: Option<Instant>,
    next_source_id: u64,
    tracks: Vec<Track>,
    start_track: Option<u8>,
    headers: Vec<(u8, Entry)>,
    /// Seq of the newest entry that changed the headers (a header frame or a source switch).
    header_version: u64,
    metadata: Option<Metadata>,
    metadata_version: u64,
    /// Seq of the newest source event; bursts never reach back past it.
    session_seq: u64,
    window_start: Instant,
    window_bytes: u64,
    bitrate_bps: u64,
}

/// One stream: config, ring, sources, listener count and metrics.
#[derive(Debug)]
pub struct Stream {
    config: StreamConfig,
    state: Mutex<State>,
    head: watch::Sender<u64>,
    /// Listener drivers (threads) to wake when the head moves; one per driver, never more.
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
    listeners: AtomicUsize,
    metrics: StreamMetrics,
}

/// A snapshot of a stream for `/api/streams`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// Whether a source is on air.
    pub live: bool,
    /// `live`, `autodj` or null.
    pub source: Option<&'static str>,
    /// Whether listeners need a signed link (`listen_secret`).
    pub private: bool,
    /// Tracks of the current (or last) source.
    pub tracks: Vec<Track>,
    /// Connected listeners.
    pub listeners: usize,
    /// Ingest bitrate over the last couple of seconds.
    pub bitrate_bps: u64,
    /// Frames accepted from sources.
    pub frames_in: u64,
    /// Frames written to listeners (sum over listeners).
    pub frames_out: u64,
    /// Frames lagging listeners jumped over.
    pub frames_skipped: u64,
    /// Bytes received from sources.
    pub bytes_in: u64,
    /// Bytes written to listeners.
    pub bytes_out: u64,
    /// Seconds the current source has been on air (0 when offline).
    pub uptime_s: u64,
    /// Latest now-playing information.
    pub metadata: Option<Metadata>,
}

impl Stream {
    /// A stream with an empty ring and no source.
    pub fn new(config: StreamConfig, metrics: StreamMetrics) -> Arc<Self> {
        let state = State {
            entries: VecDeque::with_capacity(config.ring_frames.min(4096)),
            bytes: 0,
            next_seq: 0,
            next_number: 0,
            live: None,
            autodj: None,
            on_air: None,
            on_air_since: None,
            next_source_id: 1,
            tracks: Vec::new(),
            start_track: None,
            headers: Vec::new(),
            header_version: 0,
            metadata: None,
            metadata_version: 0,
            session_seq: 0,
            window_start: Instant::now(),
            window_bytes: 0,
            bitrate_bps: 0,
        };
        let (head, _) = watch::channel(0);
        Arc::new(Self {
            config,
            state: Mutex::new(state),
            head,
            wakers: Mutex::default(),
            listeners: AtomicUsize::new(0),
            metrics,
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

    /// Whether a source is on air.
    pub fn is_live(&self) -> bool {
        self.lock().on_air.is_some()
    }

    /// Asks the live source to leave (admin `killsource`); false when there is none.
    pub fn kick_live(&self) -> bool {
        match &self.lock().live {
            Some(slot) => {
                slot.kick.cancel();
                true
            }
            None => false,
        }
    }

    /// The latest now-playing information.
    pub fn metadata(&self) -> Option<Metadata> {
        self.lock().metadata.clone()
    }

    /// Sets now playing for the source on air (an Icecast `/admin/metadata` request); every
    /// listener gets it at once. Returns false when no source is on air.
    pub fn set_metadata(&self, meta: Metadata) -> bool {
        let mut state = self.lock();
        let slot = match state.on_air {
            Some((SourceKind::Live, _)) => state.live.as_mut(),
            Some((SourceKind::AutoDj, _)) => state.autodj.as_mut(),
            None => return false,
        };
        if let Some(slot) = slot {
            slot.metadata = Some(meta.clone());
        }
        state.metadata = Some(meta.clone());
        self.publish_event(state, &ListenerEvent::Metadata(meta));
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // NOTE: no code path panics while holding this lock, so poisoning means a bug.
        self.state.lock().expect("stream state lock poisoned")
    }

    /// Reserves the stream for a source of this kind.
    ///
    /// # Errors
    /// `Busy` when a source of the same kind is already attached (HTTP 409).
    pub fn attach(self: &Arc<Self>, kind: SourceKind) -> Result<SourceHandle, AttachError> {
        let mut state = self.lock();
        let id = state.next_source_id;
        let slot = match kind {
            SourceKind::Live => &mut state.live,
            SourceKind::AutoDj => &mut state.autodj,
        };
        if slot.is_some() {
            return Err(AttachError::Busy);
        }
        *slot = Some(Slot { id, ..Slot::default() });
        state.next_source_id += 1;
        Ok(SourceHandle { stream: Arc::clone(self), kind, id })
    }

    /// Registers a new listener and gives it the frames it must see first (`hello`, headers).
    ///
    /// # Errors
    /// `StreamFull` when `max_listeners` are connected (HTTP 503).
    pub fn subscribe(self: &Arc<Self>) -> Result<(Consumer, Vec<WireFrame>), StreamFull> {
        let max = self.config.max_listeners;
        if self.listeners.fetch_add(1, Ordering::AcqRel) >= max {
            self.listeners.fetch_sub(1, Ordering::AcqRel);
            return Err(StreamFull(max));
        }
        self.metrics.listeners.inc();
        let state = self.lock();
        let hello = ListenerEvent::Hello {
            version: PROTOCOL_VERSION,
            stream: self.config.name.clone(),
            live: state.on_air.is_some(),
            tracks: state.tracks.clone(),
            metadata: state.metadata.clone(),
            server: SERVER_NAME.to_owned(),
        };
        let mut first = vec![WireFrame::text(hello.to_json())];
        first.extend(state.headers.iter().map(|(_, e)| e.wire.clone()));
        let (cursor, number) = state.start_point(self.config.burst);
        let pos = Position {
            cursor,
            next_number: number,
            joined_at: state.next_seq,
            header_version: state.header_version,
            metadata_version: state.metadata_version,
            session_seq: state.session_seq,
        };
        let consumer = Consumer { stream: Arc::clone(self), pos, head: self.head.subscribe() };
        Ok((consumer, first))
    }

    /// A snapshot for the JSON API; also refreshes the bitrate and uptime gauges.
    pub fn info(&self) -> StreamInfo {
        let state = self.lock();
        let now = Instant::now();
        let bitrate_bps = if now.duration_since(state.window_start) > 2 * BITRATE_WINDOW {
            0
        } else {
            state.bitrate_bps
        };
        let uptime_s = state.on_air_since.map_or(0, |t| now.duration_since(t).as_secs());
        let m = &self.metrics;
        m.bitrate.set(i64::try_from(bitrate_bps).unwrap_or(i64::MAX));
        m.uptime.set(i64::try_from(uptime_s).unwrap_or(i64::MAX));
        StreamInfo {
            name: self.config.name.clone(),
            live: state.on_air.is_some(),
            source: state.on_air.map(|(kind, _)| match kind {
                SourceKind::Live => "live",
                SourceKind::AutoDj => "autodj",
            }),
            private: self.config.listen_secret.is_some(),
            tracks: state.tracks.clone(),
            listeners: self.listener_count(),
            bitrate_bps,
            frames_in: m.frames_in.get(),
            frames_out: m.frames_out.get(),
            frames_skipped: m.frames_skipped.get(),
            bytes_in: m.bytes_in.get(),
            bytes_out: m.bytes_out.get(),
            uptime_s,
            metadata: state.metadata.clone(),
        }
    }

    /// Appends an entry, evicts what no longer fits, and wakes listeners after unlocking.
    fn publish(&self, mut state: MutexGuard<'_, State>, kind: EntryKind, wire: WireFrame) {
        let seq = state.next_seq;
        state.next_seq += 1;
        state.bytes += wire.wire_len();
        state.entries.push_back(Entry { seq, kind, wire, at: tokio::time::Instant::now() });
        while state.entries.len() > self.config.ring_frames
            || (state.bytes > self.config.ring_bytes && state.entries.len() > 1)
        {
            let Some(old) = state.entries.pop_front() else { break };
            state.bytes -= old.wire.wire_len();
        }
        let head = state.next_seq;
        drop(state);
        self.head.send_replace(head);
        for waker in self.wakers.lock().expect("stream wakers lock poisoned").iter() {
            // A driver that has exited no longer listens; nothing to do then.
            let _ = waker.wake();
        }
    }

    /// Wakes `waker` whenever the head moves (a listener driver serving this stream).
    pub(crate) fn wake_on_change(&self, waker: &Arc<mio::Waker>) {
        let mut wakers = self.wakers.lock().expect("stream wakers lock poisoned");
        if !wakers.iter().any(|known| Arc::ptr_eq(known, waker)) {
            wakers.push(Arc::clone(waker));
        }
    }

    /// The sequence number the next entry will get.
    pub(crate) fn head_seq(&self) -> u64 {
        *self.head.borrow()
    }

    /// When the first entry at or after `seq` entered the ring, and the wire bytes of the
    /// entries from there to the head (a driver's send window counts from that time).
    pub(crate) fn arrivals_since(&self, seq: u64) -> (Option<Instant>, usize) {
        let state = self.lock();
        let oldest = state.entries.front().map_or(state.next_seq, |e| e.seq);
        let from = usize::try_from(seq.saturating_sub(oldest)).unwrap_or(usize::MAX);
        let from = from.min(state.entries.len());
        let bytes = state.entries.range(from..).map(|e| e.wire.wire_len()).sum();
        (state.entries.get(from).map(|e| e.at.into_std()), bytes)
    }

    fn publish_event(&self, mut state: MutexGuard<'_, State>, event: &ListenerEvent) {
        let kind = match event {
            ListenerEvent::Metadata(_) => {
                state.metadata_version = state.next_seq;
                EntryKind::Metadata
            }
            _ => {
                state.session_seq = state.next_seq;
                state.header_version = state.next_seq;
                EntryKind::Source
            }
        };
        self.publish(state, kind, WireFrame::text(event.to_json()));
    }

    /// Re-evaluates who is on air after a slot changed, and tells listeners about a switch.
    fn switch_if_needed(&self, mut state: MutexGuard<'_, State>) {
        let want = match (&state.live, &state.autodj) {
            (Some(s), _) if s.tracks.is_some() => Some((SourceKind::Live, s.id)),
            (_, Some(s)) if s.tracks.is_some() => Some((SourceKind::AutoDj, s.id)),
            _ => None,
        };
        if want == state.on_air {
            return;
        }
        state.on_air = want;
        let Some((kind, _)) = want else {
            state.on_air_since = None;
            state.headers.clear();
            self.metrics.live.set(0);
            let offline = ListenerEvent::Source { state: SourceState::Offline, tracks: None };
            return self.publish_event(state, &offline);
        };
        state.on_air_since = Some(Instant::now());
        self.metrics.live.set(1);
        let slot = match kind {
            SourceKind::Live => state.live.as_ref(),
            SourceKind::AutoDj => state.autodj.as_ref(),
        };
        let slot = slot.expect("the slot chosen above is attached");
        let tracks = slot.tracks.clone().unwrap_or_default();
        let headers = slot.headers.clone();
        let metadata = slot.metadata.clone();
        state.start_track = start_track(&tracks);
        state.tracks = tracks.clone();
        state.headers.clear();
        let online = ListenerEvent::Source { state: SourceState::Online, tracks: Some(tracks) };
        self.publish_event(state, &online);
        for (track, message) in headers {
            let state = self.lock();
            self.publish_frame(state, FrameHeader { flags: 0, track, pts: 0 }, message, true);
        }
        if let Some(meta) = metadata {
            let mut state = self.lock();
            state.metadata = Some(meta.clone());
            self.publish_event(state, &ListenerEvent::Metadata(meta));
        }
    }

    fn publish_frame(
        &self,
        mut state: MutexGuard<'_, State>,
        header: FrameHeader,
        message: Bytes,
        is_header: bool,
    ) {
        let bytes = message.len() as u64;
        self.metrics.frames_in.inc();
        self.metrics.bytes_in.inc_by(bytes);
        let now = Instant::now();
        state.window_bytes += bytes;
        let elapsed = now.duration_since(state.window_start);
        if elapsed >= BITRATE_WINDOW {
            state.bitrate_bps = (state.window_bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
            state.window_bytes = 0;
            state.window_start = now;
        }
        let start = !is_header
            && header.is_keyframe()
            && state.start_track.is_none_or(|t| t == header.track);
        let number = state.next_number;
        state.next_number += 1;
        let kind = EntryKind::Frame { start, header: is_header, number, pts: header.pts };
        let wire = WireFrame::binary(message);
        if is_header {
            let at = tokio::time::Instant::now();
            let entry = Entry { seq: state.next_seq, kind, wire: wire.clone(), at };
            state.header_version = entry.seq;
            match state.headers.iter_mut().find(|(t, _)| *t == header.track) {
                Some(slot) => slot.1 = entry,
                None => state.headers.push((header.track, entry)),
            }
        }
        self.publish(state, kind, wire);
    }
}

/// Video keyframes are the only safe start points when a stream has video.
fn start_track(tracks: &[Track]) -> Option<u8> {
    tracks.iter().find(|t| t.kind == TrackKind::Video).map(|t| t.id)
}

impl State {
    /// Where a new (or lagging) listener starts: the newest start point at least `burst`
    /// before the newest frame, else the oldest start point of this source; the live edge
    /// when there is none. Returns the entry's seq and media frame number.
    fn start_point(&self, burst: Duration) -> (u64, u64) {
        let newest_pts =
            self.entries.iter().rev().take_while(|e| e.seq >= self.session_seq).find_map(
                |e| match e.kind {
                    EntryKind::Frame { header: false, pts, .. } => Some(pts),
                    _ => None,
                },
            );
        let Some(newest_pts) = newest_pts else { return (self.next_seq, self.next_number) };
        let target =
            newest_pts.saturating_sub(u64::try_from(burst.as_micros()).unwrap_or(u64::MAX));
        let mut best = None;
        for entry in self.entries.iter().rev().take_while(|e| e.seq >= self.session_seq) {
            if let EntryKind::Frame { start: true, number, pts, .. } = entry.kind {
                best = Some((entry.seq, number));
                if pts <= target {
                    break;
                }
            }
        }
        best.unwrap_or((self.next_seq, self.next_number))
    }
}

/// A source's handle on a stream. Dropping it detaches the source: listeners get
/// `source offline`, or the auto-DJ takes back over.
#[derive(Debug)]
pub struct SourceHandle {
    stream: Arc<Stream>,
    kind: SourceKind,
    id: u64,
}

impl SourceHandle {
    /// The stream this source feeds.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Cancelled when an operator removes this source: its session should close (4010).
    pub fn kicked(&self) -> tokio_util::sync::CancellationToken {
        let mut state = self.stream.lock();
        self.slot(&mut state).kick.clone()
    }

    fn slot<'a>(&self, state: &'a mut State) -> &'a mut Slot {
        let slot = match self.kind {
            SourceKind::Live => state.live.as_mut(),
            SourceKind::AutoDj => state.autodj.as_mut(),
        };
        slot.expect("a handle's slot stays attached until the handle drops")
    }

    fn is_on_air(&self, state: &State) -> bool {
        state.on_air == Some((self.kind, self.id))
    }

    /// Declares the tracks; the source goes on air unless a live source outranks it.
    ///
    /// # Errors
    /// `AlreadyStarted` on a second call.
    pub fn start(&mut self, tracks: Vec<Track>) -> Result<(), SourceError> {
        let mut state = self.stream.lock();
        let slot = self.slot(&mut state);
        if slot.tracks.is_some() {
            return Err(SourceError::AlreadyStarted);
        }
        slot.tracks = Some(tracks);
        self.stream.switch_if_needed(state);
        Ok(())
    }

    /// Pushes one binary frame message (header and payload, exactly as received).
    /// Returns whether it went on air (false while a live source outranks this one).
    ///
    /// # Errors
    /// `NotStarted` before `start`, `UnknownTrack` for an undeclared track.
    pub fn frame(&mut self, header: FrameHeader, message: Bytes) -> Result<bool, SourceError> {
        debug_assert!(message.len() >= FRAME_HEADER_BYTES);
        let mut state = self.stream.lock();
        let slot = self.slot(&mut state);
        let Some(tracks) = &slot.tracks else { return Err(SourceError::NotStarted) };
        if !tracks.iter().any(|t| t.id == header.track) {
            return Err(SourceError::UnknownTrack(header.track));
        }
        if header.is_header() {
            match slot.headers.iter_mut().find(|(t, _)| *t == header.track) {
                Some(stored) => stored.1 = message.clone(),
                None => slot.headers.push((header.track, message.clone())),
            }
        }
        if !self.is_on_air(&state) {
            return Ok(false);
        }
        self.stream.publish_frame(state, header, message, header.is_header());
        Ok(true)
    }

    /// Sets now playing; listeners get it at once if this source is on air.
    ///
    /// # Errors
    /// `NotStarted` before `start`.
    pub fn metadata(&mut self, meta: Metadata) -> Result<(), SourceError> {
        let mut state = self.stream.lock();
        let slot = self.slot(&mut state);
        if slot.tracks.is_none() {
            return Err(SourceError::NotStarted);
        }
        slot.metadata = Some(meta.clone());
        if self.is_on_air(&state) {
            state.metadata = Some(meta.clone());
            self.stream.publish_event(state, &ListenerEvent::Metadata(meta));
        }
        Ok(())
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        let mut state = self.stream.lock();
        match self.kind {
            SourceKind::Live => state.live = None,
            SourceKind::AutoDj => state.autodj = None,
        }
        self.stream.switch_if_needed(state);
    }
}

/// What `Consumer::fill` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Media frames added to the batch.
    pub frames: u64,
    /// Bytes added to the batch.
    pub bytes: usize,
    /// Frames jumped over because the consumer fell off the ring.
    pub skipped: u64,
    /// Whether the consumer reached the newest entry.
    pub at_head: bool,
}

/// A listener's cursor into a stream's ring. Dropping it frees the listener's place.
#[derive(Debug)]
pub struct Consumer {
    stream: Arc<Stream>,
    pos: Position,
    head: watch::Receiver<u64>,
}

/// Where a consumer is, and which versions of the stream's state it has seen.
#[derive(Debug)]
struct Position {
    cursor: u64,
    next_number: u64,
    /// Events and headers older than this were covered by `hello` (or a resync).
    joined_at: u64,
    header_version: u64,
    metadata_version: u64,
    session_seq: u64,
}

impl Consumer {
    /// The stream this consumer reads.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Waits until the ring may hold something new for this consumer. Cancel safe.
    pub async fn changed(&mut self) {
        if self.head.changed().await.is_err() {
            // The stream lives as long as any consumer, so its sender cannot go away.
            std::future::pending::<()>().await;
        }
    }

    /// Appends what is between the cursor and the head to `out`, up to about `max_bytes` and
    /// `MAX_FILL_ENTRIES` (at least one entry). A consumer that fell off the ring first gets a
    /// `skipped` event and the stream's current state, then continues from the newest start
    /// point.
    pub fn fill(&mut self, out: &mut VecDeque<WireFrame>, max_bytes: usize) -> Fill {
        self.head.borrow_and_update();
        let state = self.stream.lock();
        let mut fill = Fill::default();
        let oldest = state.entries.front().map_or(state.next_seq, |e| e.seq);
        if self.pos.cursor < oldest {
            let (cursor, number) = state.start_point(self.stream.config.burst);
            fill.skipped = number.saturating_sub(self.pos.next_number);
            self.pos.cursor = cursor;
            self.pos.next_number = number;
            let skipped = ListenerEvent::Skipped { frames: fill.skipped };
            out.push_back(WireFrame::text(skipped.to_json()));
            self.pos.resync(&state, out);
        }
        let from = usize::try_from(self.pos.cursor - oldest).unwrap_or(usize::MAX);
        let from = from.min(state.entries.len());
        let room = MAX_FILL_ENTRIES.saturating_sub(out.len()).max(1);
        let mut taken = 0;
        for entry in state.entries.range(from..) {
            if fill.bytes >= max_bytes || taken == room {
                break;
            }
            self.pos.cursor = entry.seq + 1;
            let covered = entry.seq < self.pos.joined_at;
            match entry.kind {
                EntryKind::Frame { header, number, .. } => {
                    self.pos.next_number = number + 1;
                    if header {
                        self.pos.header_version = entry.seq;
                        if covered {
                            continue;
                        }
                    }
                    fill.frames += 1;
                }
                EntryKind::Metadata => {
                    self.pos.metadata_version = entry.seq;
                    if covered {
                        continue;
                    }
                }
                EntryKind::Source => {
                    self.pos.session_seq = entry.seq;
                    self.pos.header_version = entry.seq;
                    if covered {
                        continue;
                    }
                }
            }
            fill.bytes += entry.wire.wire_len();
            taken += 1;
            out.push_back(entry.wire.clone());
        }
        fill.at_head = self.pos.cursor >= state.next_seq;
        fill
    }
}

impl Position {
    /// After a jump: what changed while this consumer was away, so it can carry on.
    fn resync(&mut self, state: &State, out: &mut VecDeque<WireFrame>) {
        if state.session_seq > self.session_seq {
            let event = ListenerEvent::Source {
                state: if state.on_air.is_some() {
                    SourceState::Online
                } else {
                    SourceState::Offline
                },
                tracks: state.on_air.map(|_| state.tracks.clone()),
            };
            out.push_back(WireFrame::text(event.to_json()));
        }
        if state.header_version > self.header_version {
            out.extend(state.headers.iter().map(|(_, e)| e.wire.clone()));
        }
        if state.metadata_version > self.metadata_version {
            if let Some(meta) = &state.metadata {
                out.push_back(WireFrame::text(ListenerEvent::Metadata(meta.clone()).to_json()));
            }
        }
        self.session_seq = state.session_seq;
        self.header_version = state.header_version;
        self.metadata_version = state.metadata_version;
        self.joined_at = state.next_seq;
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stream.listeners.fetch_sub(1, Ordering::AcqRel);
        self.stream.metrics.listeners.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_frame, Codec, FLAG_HEADER, FLAG_KEYFRAME};

    fn audio() -> Vec<Track> {
        vec![Track::audio(0, Codec::Opus, 48_000, 2, None)]
    }

    fn stream(ring_frames: usize, burst_ms: u64) -> Arc<Stream> {
        let mut config = StreamConfig::new("test", Some("k"));
        config.ring_frames = ring_frames;
        config.burst = Duration::from_millis(burst_ms);
        Stream::new(config, StreamMetrics::default())
    }

    fn push(source: &mut SourceHandle, flags: u8, track: u8, pts: u64, body: &[u8]) {
        let header = FrameHeader { flags, track, pts };
        source.frame(header, encode_frame(header, body)).unwrap();
    }

    /// Text events as JSON values and binary frames as their pts, in order.
    fn drain(consumer: &mut Consumer) -> (Vec<serde_json::Value>, Vec<u64>, Fill) {
        let mut out = VecDeque::new();
        let fill = consumer.fill(&mut out, usize::MAX);
        let (mut events, mut frames) = (Vec::new(), Vec::new());
        for frame in out {
            if frame.is_binary() {
                frames.push(protocol_pts(frame.payload()));
            } else {
                events.push(serde_json::from_slice(frame.payload()).unwrap());
            }
        }
        (events, frames, fill)
    }

    fn protocol_pts(message: &[u8]) -> u64 {
        crate::protocol::decode_frame_header(message).unwrap().pts
    }

    #[test]
    fn late_joiner_gets_hello_header_and_a_burst_cut_on_frames() {
        let stream = stream(1000, 100);
        let mut source = stream.attach(SourceKind::Live).unwrap();
        source.start(audio()).unwrap();
        push(&mut source, FLAG_HEADER, 0, 0, b"OpusHead");
        for i in 0..50 {
            push(&mut source, FLAG_KEYFRAME, 0, i * 20_000, b"x");
        }
        source.metadata(Metadata { title: Some("Song".into()), ..Metadata::default() }).unwrap();

        let (mut consumer, first) = stream.subscribe().unwrap();
        let hello: serde_json::Value = serde_json::from_slice(first[0].payload()).unwrap();
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["live"], true);
        assert_eq!(hello["metadata"]["title"], "Song");
        assert_eq!(first.len(), 2, "hello then the stored header");
        assert_eq!(&first[1].payload()[10..], b"OpusHead");

        let (events, frames, fill) = drain(&mut consumer);
        assert!(events.is_empty(), "metadata already in hello: {events:?}");
        // newest pts 980 ms, burst 100 ms: start at the newest frame at or before 880 ms
        assert_eq!(frames, (44..50).map(|i| i * 20_000).collect::<Vec<_>>());
        assert!(fill.at_head);

        push(&mut source, FLAG_KEYFRAME, 0, 1_000_000, b"live");
        let (_, frames, _) = drain(&mut consumer);
        assert_eq!(frames, vec![1_000_000]);
    }

    #[test]
    fn lagging_consumer_jumps_ahead_and_is_told_exactly_how_far() {
        let stream = stream(10, 0);
        let mut source = stream.attach(SourceKind::Live).unwrap();
        source.start(audio()).unwrap();
        let (mut consumer, _) = stream.subscribe().unwrap();
        push(&mut source, FLAG_KEYFRAME, 0, 0, b"a");
        let (_, frames, _) = drain(&mut consumer);
        assert_eq!(frames, vec![0]);
        for i in 1..=25 {
            push(&mut source, FLAG_KEYFRAME, 0, i * 20_000, b"b");
        }
        source.metadata(Metadata { title: Some("New".into()), ..Metadata::default() }).unwrap();
        let (events, frames, fill) = drain(&mut consumer);
        // burst 0: resume at the newest frame (25); frames 1..=24 were never sent
        assert_eq!(fill.skipped, 24);
        assert_eq!(events[0], serde_json::json!({"type": "skipped", "frames": 24}));
        assert_eq!(events[1]["title"], "New", "changed metadata is resent after a skip");
        assert_eq!(frames, vec![25 * 20_000]);
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn video_streams_start_only_at_video_keyframes() {
        let stream = stream(1000, 0);
        let mut source = stream.attach(SourceKind::Live).unwrap();
        let mut tracks = audio();
        tracks.push(Track {
            id: 1,
            kind: TrackKind::Video,
            codec: Codec::Vp8,
            sample_rate: None,
            channels: None,
            width: Some(640),
            height: Some(480),
            bitrate: None,
        });
        source.start(tracks).unwrap();
        push(&mut source, FLAG_KEYFRAME, 1, 0, b"key");
        push(&mut source, FLAG_KEYFRAME, 0, 10_000, b"audio");
        push(&mut source, 0, 1, 33_000, b"delta");
        push(&mut source, FLAG_KEYFRAME, 0, 30_000, b"audio");
        let (mut consumer, _) = stream.subscribe().unwrap();
        let (_, frames, _) = drain(&mut consumer);
        assert_eq!(frames, vec![0, 10_000, 33_000, 30_000], "from the video keyframe on");
    }

    #[test]
    fn ring_is_bounded_by_frames_and_bytes() {
        let mut config = StreamConfig::new("test", Some("k"));
        config.ring_frames = 100;
        config.ring_bytes = 1000;
        let stream = Stream::new(config, StreamMetrics::default());
        let mut source = stream.attach(SourceKind::Live).unwrap();
        source.start(audio()).unwrap();
        for i in 0..500 {
            push(&mut source, FLAG_KEYFRAME, 0, i, &[0; 90]);
        }
        let state = stream.lock();
        assert!(
            state.bytes <= 1000 && state.entries.len() <= 100,
            "{} {}",
            state.bytes,
            state.entries.len()
        );
        assert_eq!(state.bytes, state.entries.iter().map(|e| e.wire.wire_len()).sum::<usize>());
    }

    #[test]
    fn bad_source_input_is_refused() {
        let stream = stream(10, 0);
        let mut source = stream.attach(SourceKind::Live).unwrap();
        let header = FrameHeader { flags: 0, track: 0, pts: 0 };
        assert_eq!(source.frame(header, encode_frame(header, b"")), Err(SourceError::NotStarted));
        source.start(audio()).unwrap();
        assert_eq!(source.start(audio()), Err(SourceError::AlreadyStarted));
        let header = FrameHeader { flags: 0, track: 9, pts: 0 };
        assert_eq!(
            source.frame(header, encode_frame(header, b"")),
            Err(SourceError::UnknownTrack(9))
        );
        assert_eq!(stream.attach(SourceKind::Live).unwrap_err(), AttachError::Busy);
    }

    #[test]
    fn listener_limit_is_enforced_and_freed_on_drop() {
        let mut config = StreamConfig::new("test", Some("k"));
        config.max_listeners = 2;
        let stream = Stream::new(config, StreamMetrics::default());
        let a = stream.subscribe().unwrap();
        let _b = stream.subscribe().unwrap();
        assert_eq!(stream.subscribe().unwrap_err(), StreamFull(2));
        drop(a);
        assert!(stream.subscribe().is_ok());
        assert_eq!(stream.listener_count(), 1);
    }

    #[test]
    fn source_disconnect_and_resume_keep_the_consumer() {
        let stream = stream(100, 0);
        let (mut consumer, first) = stream.subscribe().unwrap();
        let hello: serde_json::Value = serde_json::from_slice(first[0].payload()).unwrap();
        assert_eq!(hello["live"], false);
        let mut source = stream.attach(SourceKind::Live).unwrap();
        source.start(audio()).unwrap();
        push(&mut source, FLAG_KEYFRAME, 0, 0, b"a");
        drop(source);
        let (events, frames, _) = drain(&mut consumer);
        assert_eq!(events[0]["state"], "online");
        assert_eq!(events[0]["tracks"][0]["codec"], "opus");
        assert_eq!(events[1], serde_json::json!({"type": "source", "state": "offline"}));
        assert_eq!(frames, vec![0]);
        let mut again = stream.attach(SourceKind::Live).unwrap();
        again.start(audio()).unwrap();
        push(&mut again, FLAG_KEYFRAME, 0, 5, b"b");
        let (events, frames, _) = drain(&mut consumer);
        assert_eq!(events[0]["state"], "online");
        assert_eq!(frames, vec![5]);
    }

    #[test]
    fn live_source_takes_over_from_the_autodj_and_hands_back() {
        let stream = stream(1000, 0);
        let mut dj = stream.attach(SourceKind::AutoDj).unwrap();
        dj.start(audio()).unwrap();
        push(&mut dj, FLAG_HEADER, 0, 0, b"dj-head");
        dj.metadata(Metadata { title: Some("Auto".into()), ..Metadata::default() }).unwrap();
        push(&mut dj, FLAG_KEYFRAME, 0, 0, b"dj");
        let (mut consumer, _) = stream.subscribe().unwrap();
        drain(&mut consumer);

        let mut live = stream.attach(SourceKind::Live).unwrap();
        push(&mut dj, FLAG_KEYFRAME, 0, 20_000, b"dj");
        live.start(audio()).unwrap();
        push(&mut dj, FLAG_KEYFRAME, 0, 40_000, b"dj muted");
        push(&mut live, FLAG_HEADER, 0, 0, b"live-head");
        push(&mut live, FLAG_KEYFRAME, 0, 7, b"live");
        let (events, frames, _) = drain(&mut consumer);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["state"], "online");
        assert_eq!(frames, vec![20_000, 0, 7], "dj frame, then live header and frame");
        assert_eq!(stream.info().source, Some("live"));

        drop(live);
        push(&mut dj, FLAG_KEYFRAME, 0, 60_000, b"dj");
        let (events, frames, _) = drain(&mut consumer);
        assert_eq!(events[0]["state"], "online");
        assert_eq!(events[1]["title"], "Auto", "the auto-DJ's title comes back");
        assert_eq!(frames, vec![0, 60_000], "its header again, then its frames");
        assert_eq!(stream.info().source, Some("autodj"));
        assert!(stream.is_live());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::protocol::{encode_frame, Codec, FLAG_KEYFRAME};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push { keyframe: bool, bytes: usize },
        Read { consumer: usize, max_bytes: usize },
        Metadata,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<bool>(), 1usize..200).prop_map(|(keyframe, bytes)| Op::Push { keyframe, bytes }),
            3 => (0usize..3, 1usize..600).prop_map(|(consumer, max_bytes)| Op::Read { consumer, max_bytes }),
            1 => Just(Op::Metadata),
        ]
    }

    proptest! {
        /// Any interleaving of pushes and reads keeps order, never yields a frame twice, and
        /// reports exactly the frames a consumer never got.
        #[test]
        fn consumers_see_ordered_unique_frames_and_exact_skip_counts(ops in prop::collection::vec(op(), 1..400)) {
            let mut config = StreamConfig::new("prop", Some("k"));
            config.ring_frames = 8;
            config.ring_bytes = 1024;
            config.burst = Duration::ZERO;
            let stream = Stream::new(config, StreamMetrics::default());
            let mut source = stream.attach(SourceKind::Live).expect("free");
            source.start(vec![Track::audio(0, Codec::Opus, 48_000, 2, None)]).expect("first start");
            // Consumers join before the first frame, so every frame is theirs to get or skip.
            let mut consumers: Vec<(Consumer, u64)> =
                (0..3).map(|_| (stream.subscribe().expect("room").0, 0)).collect();
            let mut pushed = 0u64;
            for op in ops {
                match op {
                    Op::Push { keyframe, bytes } => {
                        let header = FrameHeader { flags: if keyframe { FLAG_KEYFRAME } else { 0 }, track: 0, pts: pushed };
                        let mut body = pushed.to_be_bytes().to_vec();
                        body.resize(bytes.max(8), 0);
                        source.frame(header, encode_frame(header, &body)).expect("declared track");
                        pushed += 1;
                    }
                    Op::Metadata => source.metadata(Metadata::default()).expect("started"),
                    Op::Read { consumer, max_bytes } => {
                        let (consumer, expected) = &mut consumers[consumer];
                        let mut out = VecDeque::new();
                        let fill = consumer.fill(&mut out, max_bytes);
                        let mut skipped_seen = 0;
                        let mut frames = 0;
                        for frame in out {
                            if !frame.is_binary() {
                                let event: serde_json::Value = serde_json::from_slice(frame.payload()).expect("json");
                                if event["type"] == "skipped" {
                                    skipped_seen += event["frames"].as_u64().expect("count");
                                }
                                continue;
                            }
                            let mut n = [0u8; 8];
                            n.copy_from_slice(&frame.payload()[10..18]);
                            let number = u64::from_be_bytes(n);
                            let want = *expected + std::mem::take(&mut skipped_seen);
                            prop_assert_eq!(number, want, "in order, no duplicates, exact skip");
                            *expected = number + 1;
                            frames += 1;
                        }
                        prop_assert_eq!(fill.frames, frames);
                        // A skip reported with nothing after it yet: the gap is still owed.
                        *expected += skipped_seen;
                        prop_assert!(*expected <= pushed);
                        if fill.at_head {
                            prop_assert_eq!(*expected, pushed, "at the head means nothing left");
                        }
                    }
                }
            }
        }
    }
}
