//! A stream's sources: a live slot and an auto-DJ slot, and which of them is on air.
//!
//! `Stream::attach` reserves a slot and returns a [`SourceHandle`]; the handle pushes frames
//! and now playing, and dropping it frees the slot. A live source outranks the auto-DJ: it
//! takes over when it sends `start` (the auto-DJ keeps running, muted) and hands back when it
//! leaves; listeners hear a `source online` event either way.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::stream::{State, Stream};
use crate::protocol::{FrameHeader, Metadata, Track, FRAME_HEADER_BYTES};

/// What kind of source feeds a stream; a live source takes precedence over the auto-DJ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A broadcaster connected over the network.
    Live,
    /// The built-in auto-DJ playing the stream's playlist.
    AutoDj,
}

impl SourceKind {
    /// `live` or `autodj`, as `/api/streams` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Live => "live",
            SourceKind::AutoDj => "autodj",
        }
    }
}

/// Why a source could not attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// Another source of the same kind is connected.
    #[error("another source is already live on this stream")]
    Busy,
}

/// Why a source's frame or message was refused.
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
    /// A header frame larger than its codec's configuration can be.
    #[error("header frame of {size} bytes, its codec's limit is {max}")]
    HeaderTooLarge {
        /// Its payload's size.
        size: usize,
        /// `Codec::max_header_bytes` of the track.
        max: usize,
    },
}

/// What a source slot remembers, so the auto-DJ resumes with its own headers and title.
#[derive(Debug, Default)]
pub(super) struct Slot {
    id: u64,
    /// Cancelled when an operator removes this source.
    kick: CancellationToken,
    pub tracks: Option<Vec<Track>>,
    pub headers: Vec<(FrameHeader, Bytes)>,
    pub metadata: Option<Metadata>,
}

/// The two slots and who is on air.
#[derive(Debug, Default)]
pub(super) struct Sources {
    live: Option<Slot>,
    autodj: Option<Slot>,
    pub on_air: Option<(SourceKind, u64)>,
    pub on_air_since: Option<Instant>,
    next_id: u64,
}

impl Sources {
    pub fn slot(&self, kind: SourceKind) -> Option<&Slot> {
        match kind {
            SourceKind::Live => self.live.as_ref(),
            SourceKind::AutoDj => self.autodj.as_ref(),
        }
    }

    fn slot_mut(&mut self, kind: SourceKind) -> &mut Option<Slot> {
        match kind {
            SourceKind::Live => &mut self.live,
            SourceKind::AutoDj => &mut self.autodj,
        }
    }

    /// The live slot while its source is connected but has not declared its tracks.
    pub fn unstarted_live_mut(&mut self) -> Option<&mut Slot> {
        self.live.as_mut().filter(|slot| slot.tracks.is_none())
    }

    /// The slot of the source on air.
    pub fn on_air_slot_mut(&mut self) -> Option<&mut Slot> {
        let (kind, _) = self.on_air?;
        self.slot_mut(kind).as_mut()
    }

    /// Puts the started source of the highest rank on air. `None` when nothing changed, else
    /// the new source on air (`Some(None)`: nobody).
    pub fn elect(&mut self) -> Option<Option<SourceKind>> {
        fn started(slot: &Option<Slot>) -> Option<&Slot> {
            slot.as_ref().filter(|s| s.tracks.is_some())
        }
        let want = match (started(&self.live), started(&self.autodj)) {
            (Some(s), _) => Some((SourceKind::Live, s.id)),
            (None, Some(s)) => Some((SourceKind::AutoDj, s.id)),
            (None, None) => None,
        };
        if want == self.on_air {
            return None;
        }
        self.on_air = want;
        self.on_air_since = want.map(|_| Instant::now());
        Some(want.map(|(kind, _)| kind))
    }
}

impl Stream {
    /// Reserves the stream for a source of this kind.
    ///
    /// # Errors
    /// `Busy` when a source of the same kind is already attached.
    pub fn attach(self: &Arc<Self>, kind: SourceKind) -> Result<SourceHandle, AttachError> {
        let mut state = self.lock();
        let sources = &mut state.sources;
        sources.next_id += 1;
        let id = sources.next_id;
        let slot = sources.slot_mut(kind);
        if slot.is_some() {
            return Err(AttachError::Busy);
        }
        *slot = Some(Slot { id, ..Slot::default() });
        Ok(SourceHandle { stream: Arc::clone(self), kind, id })
    }

    /// Asks the live source to leave (admin `killsource`); false when there is none.
    pub fn kick_live(&self) -> bool {
        match self.lock().sources.slot(SourceKind::Live) {
            Some(slot) => {
                slot.kick.cancel();
                true
            }
            None => false,
        }
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

    /// Cancelled when an operator removes this source: its session should close.
    pub fn kicked(&self) -> CancellationToken {
        let mut state = self.stream.lock();
        self.slot(&mut state).kick.clone()
    }

    fn slot<'a>(&self, state: &'a mut State) -> &'a mut Slot {
        let slot = state.sources.slot_mut(self.kind).as_mut();
        slot.expect("a handle's slot stays attached until the handle drops")
    }

    fn is_on_air(&self, state: &State) -> bool {
        state.sources.on_air == Some((self.kind, self.id))
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
        let Some(track) = tracks.iter().find(|t| t.id == header.track) else {
            return Err(SourceError::UnknownTrack(header.track));
        };
        if header.is_header() {
            // Headers are kept for every late joiner, outside the flow of frames: bound them.
            let (size, max) = (message.len() - FRAME_HEADER_BYTES, track.codec.max_header_bytes());
            if size > max {
                return Err(SourceError::HeaderTooLarge { size, max });
            }
            match slot.headers.iter_mut().find(|(h, _)| h.track == header.track) {
                Some(stored) => *stored = (header, message.clone()),
                None => slot.headers.push((header, message.clone())),
            }
        }
        if !self.is_on_air(&state) {
            return Ok(false);
        }
        self.stream.push_frame(&mut state, header, message);
        self.stream.commit(state);
        Ok(true)
    }

    /// Sets now playing; listeners get it if this source is on air, at most a few times a
    /// second (`Stream::offer_metadata`: a burst is coalesced, the latest wins).
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
        if self.is_on_air(&state) && self.stream.offer_metadata(&mut state, meta) {
            self.stream.commit(state);
        }
        Ok(())
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        let mut state = self.stream.lock();
        *state.sources.slot_mut(self.kind) = None;
        self.stream.switch_if_needed(state);
    }
}
