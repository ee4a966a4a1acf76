//! A stream's sources: a live slot and an auto-DJ slot, and which of them is on air.
//!
//! `Stream::attach` reserves a slot and returns a [`SourceHandle`]; the handle pushes frames
//! and now playing, and dropping it frees the slot. A live source outranks the auto-DJ: it
//! takes over when it sends `start` (the auto-DJ keeps running, muted) and hands back when it
//! leaves; listeners hear a `source online` event either way.
//!
//! A third slot, `Remote`, carries a stream relayed from another node of a cluster
//! (`cluster/`): it ranks below a local live source and, when its origin plays an auto-DJ,
//! below the local auto-DJ too. A [`Gate`] set on the stream decides whether a local source may
//! attach at all (one live source cluster-wide).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::stream::{State, Stream};
use crate::format::LinkEdge;
use crate::protocol::{FrameHeader, Metadata, Track, FRAME_HEADER_BYTES};

/// What kind of source feeds a stream; a live source takes precedence over the auto-DJ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A broadcaster connected over the network.
    Live,
    /// The built-in auto-DJ playing the stream's playlist.
    AutoDj,
    /// Frames relayed from the stream's origin on another node of the cluster.
    Remote,
}

impl SourceKind {
    /// `live` or `autodj`, as `/api/streams` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Live => "live",
            SourceKind::AutoDj => "autodj",
            SourceKind::Remote => "remote",
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
    /// Cancelled when this source must leave (`kick_reason` says why).
    kick: CancellationToken,
    kick_reason: OnceLock<KickReason>,
    pub tracks: Option<Vec<Track>>,
    pub headers: Vec<(FrameHeader, Bytes)>,
    pub metadata: Option<Metadata>,
    /// A remote source whose origin is live: it outranks the local auto-DJ.
    pub outranks_autodj: bool,
}

/// Why a source was told to leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KickReason {
    /// An operator removed it (`/admin/killsource`).
    Operator,
    /// Another node of the cluster holds the stream's live lease: the source lost the race of
    /// two that connected to two nodes at the same time.
    LiveElsewhere,
}

/// Decides whether a local source may attach to a stream, and hears when one attaches and
/// detaches: how a cluster keeps one live source per stream across nodes (`cluster/`).
/// Called without the stream's lock held; must not block.
pub trait Gate: Send + Sync {
    /// Whether a source of `kind` may attach now.
    ///
    /// # Errors
    /// `Busy` when the stream is live on another node.
    fn admit(&self, stream: &Stream, kind: SourceKind) -> Result<(), AttachError>;
    /// A source of `kind` attached.
    fn attached(&self, stream: &Stream, kind: SourceKind);
    /// The source of `kind` detached (its handle was dropped).
    fn detached(&self, stream: &Stream, kind: SourceKind);
}

/// The two slots and who is on air.
#[derive(Debug, Default)]
pub(super) struct Sources {
    live: Option<Slot>,
    autodj: Option<Slot>,
    remote: Option<Slot>,
    pub on_air: Option<(SourceKind, u64)>,
    pub on_air_since: Option<Instant>,
    next_id: u64,
}

impl Sources {
    pub fn slot(&self, kind: SourceKind) -> Option<&Slot> {
        match kind {
            SourceKind::Live => self.live.as_ref(),
            SourceKind::AutoDj => self.autodj.as_ref(),
            SourceKind::Remote => self.remote.as_ref(),
        }
    }

    fn slot_mut(&mut self, kind: SourceKind) -> &mut Option<Slot> {
        match kind {
            SourceKind::Live => &mut self.live,
            SourceKind::AutoDj => &mut self.autodj,
            SourceKind::Remote => &mut self.remote,
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
        // Live here, then live elsewhere, then the auto-DJ here, then one elsewhere.
        let remote = started(&self.remote);
        let want = match (started(&self.live), remote.filter(|s| s.outranks_autodj)) {
            (Some(s), _) => Some((SourceKind::Live, s.id)),
            (None, Some(s)) => Some((SourceKind::Remote, s.id)),
            (None, None) => match (started(&self.autodj), remote) {
                (Some(s), _) => Some((SourceKind::AutoDj, s.id)),
                (None, Some(s)) => Some((SourceKind::Remote, s.id)),
                (None, None) => None,
            },
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
    /// `Busy` when a source of the same kind is already attached, or when the stream's
    /// [`Gate`] refuses (the stream is live on another node).
    pub fn attach(self: &Arc<Self>, kind: SourceKind) -> Result<SourceHandle, AttachError> {
        let gate = self.gate.get().and_then(std::sync::Weak::upgrade);
        if let Some(gate) = &gate {
            gate.admit(self, kind)?;
        }
        let handle = self.reserve(kind)?;
        if let Some(gate) = gate {
            gate.attached(self, kind);
        }
        Ok(handle)
    }

    /// Sets the stream's gate (once; later calls are ignored). The stream keeps a weak
    /// reference: the gate's owner keeps it alive.
    pub fn set_gate(&self, gate: &Arc<dyn Gate>) {
        let _ = self.gate.set(Arc::downgrade(gate));
    }

    /// Whether a source of `kind` is attached (on air or not).
    pub fn has_source(&self, kind: SourceKind) -> bool {
        self.lock().sources.slot(kind).is_some()
    }

    fn reserve(self: &Arc<Self>, kind: SourceKind) -> Result<SourceHandle, AttachError> {
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

    /// Asks the live source to leave, for `reason`; false when there is none.
    pub fn kick_live(&self, reason: KickReason) -> bool {
        match self.lock().sources.slot(SourceKind::Live) {
            Some(slot) => {
                // The first reason given wins: the session reads it once it sees the kick.
                let _ = slot.kick_reason.set(reason);
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

    /// Cancelled when this source must leave (an operator removed it, or the stream is live
    /// on another node): its session should close, with [`SourceHandle::kick_reason`].
    pub fn kicked(&self) -> CancellationToken {
        let mut state = self.stream.lock();
        self.slot(&mut state).kick.clone()
    }

    /// Why this source was told to leave (`Operator` when it was not).
    pub fn kick_reason(&self) -> KickReason {
        let mut state = self.stream.lock();
        self.slot(&mut state).kick_reason.get().copied().unwrap_or(KickReason::Operator)
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

    /// Starts a new session on this handle, replacing its tracks, headers and now playing
    /// (a `Remote` source whose origin switched sources, or a first start). If it is on air,
    /// listeners hear it as a switch: `source online`, the headers and now playing, under one
    /// lock. `live`: for a `Remote` source, whether its origin plays a live source (which
    /// outranks the local auto-DJ) rather than an auto-DJ.
    pub fn restart(
        &mut self,
        tracks: Vec<Track>,
        headers: Vec<(FrameHeader, Bytes)>,
        metadata: Option<Metadata>,
        live: bool,
    ) {
        let mut state = self.stream.lock();
        state.sources.next_id += 1;
        let id = state.sources.next_id;
        let slot = self.slot(&mut state);
        slot.id = id;
        slot.tracks = Some(tracks);
        slot.headers = headers;
        slot.metadata = metadata;
        slot.outranks_autodj = live;
        self.id = id;
        self.stream.switch_if_needed(state);
    }

    /// Pushes one binary frame message (header and payload, exactly as received).
    /// Returns whether it went on air (false while a live source outranks this one).
    ///
    /// # Errors
    /// `NotStarted` before `start`, `UnknownTrack` for an undeclared track.
    pub fn frame(&mut self, header: FrameHeader, message: Bytes) -> Result<bool, SourceError> {
        self.frame_at_edge(header, message, None)
    }

    /// [`frame`](Self::frame) for a frame at the edge of a chained Ogg link of the source
    /// (Icecast sources): HTTP listeners and recordings end or start their link there too.
    ///
    /// # Errors
    /// As for `frame`.
    pub fn frame_at_edge(
        &mut self,
        header: FrameHeader,
        message: Bytes,
        edge: Option<LinkEdge>,
    ) -> Result<bool, SourceError> {
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
        self.stream.push_frame(&mut state, header, message, edge);
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
        if let Some(gate) = self.stream.gate.get().and_then(std::sync::Weak::upgrade) {
            gate.detached(&self.stream, self.kind);
        }
    }
}
