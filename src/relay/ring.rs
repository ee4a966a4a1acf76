//! The ring: a stream's recent past, in order, bounded by entry count and bytes.
//!
//! Entries are typed: a media [`Frame`] as its source sent it, or an [`Event`] for listeners
//! (now playing, source online/offline). Each carries the encoding listeners receive, computed
//! once when it enters the ring (a WebSocket header for frames, JSON text for events), so
//! fan-out clones refcounts and never encodes per listener. Pure: no locks, no I/O.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::source::SourceKind;
use crate::format::icy::metadata_block;
use crate::format::mux::Rendition;
use crate::format::LinkEdge;
use crate::protocol::{FrameHeader, ListenerEvent, FRAME_HEADER_BYTES};
use crate::websocket::WireFrame;

/// A media frame as its source sent it (frame header and payload), framed once for
/// WebSocket listeners and written once into the HTTP listeners' container.
#[derive(Clone, Debug)]
pub struct Frame {
    header: FrameHeader,
    wire: WireFrame,
    http: Option<Rendition>,
    edge: Option<LinkEdge>,
}

impl Frame {
    /// A frame from a source's binary message; `header` was decoded from its first bytes.
    pub fn new(header: FrameHeader, message: Bytes) -> Self {
        debug_assert!(message.len() >= FRAME_HEADER_BYTES);
        Self { header, wire: WireFrame::binary(message), http: None, edge: None }
    }

    /// The same frame with what HTTP listeners write for it.
    pub fn with_http(self, http: Option<Rendition>) -> Self {
        Self { http, ..self }
    }

    /// The frame, marked as the last or first of a chained Ogg link of its source.
    pub fn with_edge(self, edge: Option<LinkEdge>) -> Self {
        Self { edge, ..self }
    }

    /// Where the frame stands in its source's chained Ogg stream, when at a link's edge.
    pub fn edge(&self) -> Option<LinkEdge> {
        self.edge
    }

    /// What HTTP listeners write for this frame (`None`: they skip it).
    pub fn http(&self) -> Option<&Rendition> {
        self.http.as_ref()
    }

    /// Bytes this frame holds beyond the source's message (an Ogg page header).
    fn extra_bytes(&self) -> usize {
        self.http.as_ref().map_or(0, Rendition::extra_bytes)
    }

    /// The decoded frame header.
    pub fn header(&self) -> FrameHeader {
        self.header
    }

    /// The message as the source sent it: frame header, then payload.
    pub fn message(&self) -> &Bytes {
        self.wire.payload()
    }

    /// The codec payload after the frame header (shares the message's memory).
    pub fn payload(&self) -> Bytes {
        self.wire.payload().slice(FRAME_HEADER_BYTES.min(self.wire.payload().len())..)
    }

    /// The WebSocket binary message listeners receive.
    pub fn wire(&self) -> &WireFrame {
        &self.wire
    }
}

/// Something listeners are told, as a typed value and as the JSON text message they receive.
#[derive(Clone, Debug)]
pub struct Event(Arc<EventData>);

#[derive(Debug)]
struct EventData {
    event: ListenerEvent,
    wire: WireFrame,
    /// Which slot went on air, for a `source online` event the switch made (not sent).
    source: Option<SourceKind>,
    /// For a relayed session (`SourceKind::Remote`): whether its origin plays a live source.
    relayed_live: bool,
    /// The ICY metadata block of now playing, made for the first listener that needs it.
    icy: OnceLock<Option<Bytes>>,
}

impl Event {
    /// Encodes `event` once.
    pub fn new(event: ListenerEvent) -> Self {
        Self::with_source(event, None)
    }

    /// Encodes `event` once, noting which kind of source it puts on air (the recorder reads
    /// it; listeners never see it).
    pub fn with_source(event: ListenerEvent, source: Option<SourceKind>) -> Self {
        let wire = WireFrame::text(event.to_json());
        Self(Arc::new(EventData { event, wire, source, relayed_live: false, icy: OnceLock::new() }))
    }

    /// Encodes `event` once for a session relayed from another node of a cluster (kind
    /// `Remote`); `live`: its origin plays a live source, not an auto-DJ.
    pub fn relayed(event: ListenerEvent, live: bool) -> Self {
        let wire = WireFrame::text(event.to_json());
        let source = Some(SourceKind::Remote);
        Self(Arc::new(EventData { event, wire, source, relayed_live: live, icy: OnceLock::new() }))
    }

    /// The kind of source a `source online` event put on air, when the switch said so (a
    /// consumer's resync after a skip makes events that do not).
    pub fn source_kind(&self) -> Option<SourceKind> {
        self.0.source
    }

    /// What the session plays, `Live` or `AutoDj`, wherever its source is: a relayed session
    /// plays what its origin does. `None` as for [`Event::source_kind`].
    pub fn plays(&self) -> Option<SourceKind> {
        match self.0.source? {
            SourceKind::Remote if self.0.relayed_live => Some(SourceKind::Live),
            SourceKind::Remote => Some(SourceKind::AutoDj),
            kind => Some(kind),
        }
    }

    /// The event as a value (what an HTTP listener reads).
    pub fn get(&self) -> &ListenerEvent {
        &self.0.event
    }

    /// The WebSocket text message listeners receive.
    pub fn wire(&self) -> &WireFrame {
        &self.0.wire
    }

    /// The ICY metadata block HTTP listeners get for the now playing this event carries (a
    /// `metadata` event, or `hello` with now playing), made once for all of them.
    pub fn icy_block(&self) -> Option<&Bytes> {
        let block = self.0.icy.get_or_init(|| {
            let meta = match &self.0.event {
                ListenerEvent::Metadata(meta) => meta,
                ListenerEvent::Hello { metadata: Some(meta), .. } => meta,
                _ => return None,
            };
            Some(metadata_block(&meta.display_title(), meta.url.as_deref()))
        });
        block.as_ref()
    }
}

/// What a listener receives from a stream, in order.
#[derive(Clone, Debug)]
pub enum Item {
    /// A media frame.
    Frame(Frame),
    /// An event.
    Event(Event),
}

impl Item {
    /// The WebSocket message for this item.
    pub fn wire(&self) -> &WireFrame {
        match self {
            Item::Frame(frame) => frame.wire(),
            Item::Event(event) => event.wire(),
        }
    }

    /// Whether this is a media frame.
    pub fn is_frame(&self) -> bool {
        matches!(self, Item::Frame(_))
    }

    /// Bytes it holds: its WebSocket message and what HTTP listeners write, when a copy.
    pub fn bytes(&self) -> usize {
        match self {
            Item::Frame(frame) => frame.wire.wire_len() + frame.extra_bytes(),
            Item::Event(event) => event.wire().wire_len(),
        }
    }
}

impl From<&Item> for Item {
    fn from(item: &Item) -> Self {
        item.clone()
    }
}

/// A WebSocket listener queues only the message (header and shared payload).
impl From<&Item> for WireFrame {
    fn from(item: &Item) -> Self {
        item.wire().clone()
    }
}

/// What the consumers' policy needs to know about an entry without looking inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mark {
    Frame {
        /// A listener may start here (a keyframe on the stream's start track).
        start: bool,
        /// Codec configuration (sent to every listener that joins after it anyway).
        header: bool,
        /// Media frames before this one in the stream's life, to count skips exactly.
        number: u64,
        pts: u64,
    },
    Metadata,
    Source,
}

/// One ring entry.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub seq: u64,
    pub mark: Mark,
    pub item: Item,
    /// When it entered the ring; a listener's send window counts from here.
    pub at: Instant,
}

/// The bounded ring of one stream.
#[derive(Debug)]
pub(super) struct Ring {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Bytes held outside the entries that count against `max_bytes` (the stored headers).
    reserved: usize,
    next_seq: u64,
    next_number: u64,
    max_entries: usize,
    max_bytes: usize,
}

impl Ring {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(max_entries.min(4096)),
            bytes: 0,
            reserved: 0,
            next_seq: 0,
            next_number: 0,
            max_entries,
            max_bytes,
        }
    }

    /// The seq the next entry will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The seq of the oldest entry kept (the next one when the ring is empty).
    pub fn oldest_seq(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |e| e.seq)
    }

    /// Appends a frame, numbering it; returns its seq.
    pub fn push_frame(&mut self, frame: Frame, start: bool, header: bool) -> u64 {
        let number = self.next_number;
        self.next_number += 1;
        let pts = frame.header().pts;
        self.push(Item::Frame(frame), Mark::Frame { start, header, number, pts })
    }

    /// Appends an event; returns its seq.
    pub fn push_event(&mut self, event: Event) -> u64 {
        let mark = match event.get() {
            ListenerEvent::Metadata(_) => Mark::Metadata,
            _ => Mark::Source,
        };
        self.push(Item::Event(event), mark)
    }

    /// Appends an entry and evicts the oldest ones past either bound (the newest is kept
    /// however large it is).
    fn push(&mut self, item: Item, mark: Mark) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += item.bytes();
        self.entries.push_back(Entry { seq, mark, item, at: Instant::now() });
        self.evict();
        seq
    }

    /// Counts `bytes` held outside the entries against the byte bound (replacing what was
    /// reserved before), evicting what no longer fits.
    pub fn reserve(&mut self, bytes: usize) {
        self.reserved = bytes;
        self.evict();
    }

    /// Evicts the oldest entries past either bound; the newest is kept however large it is.
    fn evict(&mut self) {
        while self.entries.len() > self.max_entries
            || (self.bytes + self.reserved > self.max_bytes && self.entries.len() > 1)
        {
            let Some(old) = self.entries.pop_front() else { break };
            self.bytes -= old.item.bytes();
        }
    }

    /// Entries from `seq` on (from the oldest kept when `seq` is older).
    pub fn from(&self, seq: u64) -> impl Iterator<Item = &Entry> {
        let from = usize::try_from(seq.saturating_sub(self.oldest_seq())).unwrap_or(usize::MAX);
        self.entries.range(from.min(self.entries.len())..)
    }

    /// When the first entry at or after `seq` entered the ring, and the wire bytes from there
    /// to the head.
    pub fn arrivals_since(&self, seq: u64) -> (Option<Instant>, usize) {
        let mut entries = self.from(seq).peekable();
        let first = entries.peek().map(|e| e.at);
        let bytes = self.from(seq).map(|e| e.item.wire().wire_len()).sum::<usize>();
        (first, bytes)
    }

    /// Where a new (or lagging) listener starts: the newest start point at least `burst`
    /// before the newest frame, else the oldest start point since `session_seq`; the head when
    /// there is none. Returns the entry's seq and its media frame number.
    pub fn start_point(&self, burst: Duration, session_seq: u64) -> (u64, u64) {
        let session = || self.entries.iter().rev().take_while(move |e| e.seq >= session_seq);
        let newest_pts = session().find_map(|e| match e.mark {
            Mark::Frame { header: false, pts, .. } => Some(pts),
            _ => None,
        });
        let Some(newest_pts) = newest_pts else { return (self.next_seq, self.next_number) };
        let target =
            newest_pts.saturating_sub(u64::try_from(burst.as_micros()).unwrap_or(u64::MAX));
        let mut best = None;
        for entry in session() {
            if let Mark::Frame { start: true, number, pts, .. } = entry.mark {
                best = Some((entry.seq, number));
                if pts <= target {
                    break;
                }
            }
        }
        best.unwrap_or((self.next_seq, self.next_number))
    }

    #[cfg(test)]
    pub fn len_and_bytes(&self) -> (usize, usize) {
        let sum = self.entries.iter().map(|e| e.item.bytes()).sum::<usize>();
        assert_eq!(sum, self.bytes, "the byte count follows the entries");
        (self.entries.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_frame, FLAG_KEYFRAME};

    fn frame(pts: u64, body: &[u8]) -> Frame {
        let header = FrameHeader { flags: FLAG_KEYFRAME, track: 0, pts };
        Frame::new(header, encode_frame(header, body))
    }

    #[test]
    fn ring_is_bounded_by_entries_and_bytes() {
        let mut ring = Ring::new(100, 1000);
        for i in 0..500 {
            ring.push_frame(frame(i, &[0; 90]), true, false);
        }
        let (len, bytes) = ring.len_and_bytes();
        assert!(len <= 100 && bytes <= 1000, "{len} {bytes}");
        assert_eq!(ring.oldest_seq() + len as u64, ring.next_seq());
        // One entry larger than the byte bound is still kept (alone).
        ring.push_frame(frame(0, &[0; 5000]), true, false);
        assert_eq!(ring.len_and_bytes().0, 1);
    }

    #[test]
    fn start_points_honour_the_burst_and_the_session() {
        let mut ring = Ring::new(1000, 1 << 20);
        for i in 0..10 {
            ring.push_frame(frame(i * 20_000, b"x"), true, false);
        }
        assert_eq!(ring.start_point(Duration::from_millis(40), 0), (7, 7));
        assert_eq!(ring.start_point(Duration::ZERO, 0), (9, 9));
        assert_eq!(ring.start_point(Duration::from_secs(9), 0), (0, 0), "oldest start point");
        let session = ring.push_event(Event::new(ListenerEvent::Skipped { frames: 0 }));
        assert_eq!(ring.start_point(Duration::from_secs(1), session), (11, 10), "the head");
        ring.push_frame(frame(0, b"y"), false, false);
        assert_eq!(ring.start_point(Duration::from_secs(1), session), (12, 11), "no start point");
    }

    #[test]
    fn arrivals_since_counts_from_the_first_new_entry() {
        let mut ring = Ring::new(1000, 1 << 20);
        assert_eq!(ring.arrivals_since(0), (None, 0));
        ring.push_frame(frame(0, b"abc"), true, false);
        ring.push_frame(frame(1, b"defg"), true, false);
        let (first, bytes) = ring.arrivals_since(1);
        assert!(first.is_some());
        assert_eq!(bytes, 2 + 10 + 4);
    }
}
