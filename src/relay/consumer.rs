//! A listener's cursor into a stream's ring: all lag, burst and skip policy.
//!
//! `Stream::subscribe` gives a new listener what it must see first (`hello`, the headers) and
//! a [`Consumer`] starting at the burst's start point. `Consumer::fill` hands out what is
//! between the cursor and the head; a consumer that fell off the ring jumps to the newest
//! start point, is told exactly how many frames it skipped, and gets whatever state changed
//! while it was away (source, headers, now playing).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;

use super::ring::{Event, Item, Mark};
use super::stream::{State, Stream};
use crate::protocol::{ListenerEvent, SourceState, PROTOCOL_VERSION};

/// The relay's name and version, as announced in `hello`.
pub const SERVER_NAME: &str = concat!("onair/", env!("CARGO_PKG_VERSION"));

/// Most entries one `Consumer::fill` takes: a listener writes them with one vectored write
/// (two buffers each), and its outbox never grows past this however far behind it is.
pub const MAX_FILL_ENTRIES: usize = 64;

/// A stream is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream has its maximum of {0} listeners")]
pub struct StreamFull(pub usize);

/// What `Consumer::fill` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Media frames added to the batch.
    pub frames: u64,
    /// Bytes added to the batch (as WebSocket messages).
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
    /// Counted among the stream's listeners (false for the relay's own readers).
    counted: bool,
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

impl Stream {
    /// Registers a new listener and gives it what it must see first: `hello`, then the
    /// stream's headers.
    ///
    /// # Errors
    /// `StreamFull` when `max_listeners` are connected.
    pub fn subscribe(self: &Arc<Self>) -> Result<(Consumer, Vec<Item>), StreamFull> {
        let max = self.config.max_listeners;
        if self.listeners.fetch_add(1, Ordering::AcqRel) >= max {
            self.listeners.fetch_sub(1, Ordering::AcqRel);
            return Err(StreamFull(max));
        }
        self.metrics.listeners.inc();
        Ok(self.cursor(true))
    }

    /// A reader of everything the stream carries that is not a listener: it is not counted
    /// and `max_listeners` does not apply (the relay's own readers: the HLS segmenter).
    pub fn tap(self: &Arc<Self>) -> (Consumer, Vec<Item>) {
        self.cursor(false)
    }

    fn cursor(self: &Arc<Self>, counted: bool) -> (Consumer, Vec<Item>) {
        let state = self.lock();
        let on_air = &state.on_air;
        let hello = ListenerEvent::Hello {
            version: PROTOCOL_VERSION,
            stream: self.config.name.clone(),
            live: state.sources.on_air.is_some(),
            tracks: on_air.tracks.clone(),
            metadata: on_air.metadata.clone(),
            server: SERVER_NAME.to_owned(),
        };
        let mut first = vec![Item::Event(Event::new(hello))];
        first.extend(on_air.headers.iter().map(|(_, frame)| Item::Frame(frame.clone())));
        let (cursor, number) = state.ring.start_point(self.config.burst, on_air.session_seq);
        let pos = Position {
            cursor,
            next_number: number,
            joined_at: state.ring.next_seq(),
            header_version: on_air.header_version,
            metadata_version: on_air.metadata_version,
            session_seq: on_air.session_seq,
        };
        drop(state);
        (Consumer { stream: Arc::clone(self), pos, head: self.head.subscribe(), counted }, first)
    }
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
    /// `MAX_FILL_ENTRIES` in all (at least one entry). Items go into `out` as whatever the
    /// listener queues (`Item`s, or a WebSocket listener's messages). See `fill_with`.
    pub fn fill<T: for<'a> From<&'a Item>>(
        &mut self,
        out: &mut VecDeque<T>,
        max_bytes: usize,
    ) -> Fill {
        let room = MAX_FILL_ENTRIES.saturating_sub(out.len()).max(1);
        self.fill_with(max_bytes, room, |item| out.push_back(T::from(item)))
    }

    /// Hands what is between the cursor and the head to `emit`, up to about `max_bytes` and
    /// `max_items` (at least one entry). A consumer that fell off the ring first gets a
    /// `skipped` event and the stream's current state, then continues from the newest start
    /// point. `emit` runs under the stream's lock: it must only queue.
    pub fn fill_with(
        &mut self,
        max_bytes: usize,
        max_items: usize,
        mut emit: impl FnMut(&Item),
    ) -> Fill {
        self.head.borrow_and_update();
        let state = self.stream.lock();
        let mut fill = Fill::default();
        let emitted = std::cell::Cell::new(0usize);
        let mut emit = |item: &Item| {
            emitted.set(emitted.get() + 1);
            emit(item);
        };
        let ring = &state.ring;
        if self.pos.cursor < ring.oldest_seq() {
            let (cursor, number) =
                ring.start_point(self.stream.config.burst, state.on_air.session_seq);
            fill.skipped = number.saturating_sub(self.pos.next_number);
            self.pos.cursor = cursor;
            self.pos.next_number = number;
            emit(&Item::Event(Event::new(ListenerEvent::Skipped { frames: fill.skipped })));
            self.pos.resync(&state, &mut emit);
        }
        let mut taken = 0;
        let room = max_items.saturating_sub(emitted.get()).max(1);
        for entry in ring.from(self.pos.cursor) {
            if fill.bytes >= max_bytes || taken == room {
                break;
            }
            self.pos.cursor = entry.seq + 1;
            let covered = entry.seq < self.pos.joined_at;
            match entry.mark {
                Mark::Frame { header, number, .. } => {
                    self.pos.next_number = number + 1;
                    if header {
                        self.pos.header_version = entry.seq;
                        if covered {
                            continue;
                        }
                    }
                    fill.frames += 1;
                }
                Mark::Metadata => {
                    self.pos.metadata_version = entry.seq;
                    if covered {
                        continue;
                    }
                }
                Mark::Source => {
                    self.pos.session_seq = entry.seq;
                    self.pos.header_version = entry.seq;
                    if covered {
                        continue;
                    }
                }
            }
            fill.bytes += entry.item.wire().wire_len();
            taken += 1;
            emit(&entry.item);
        }
        fill.at_head = self.pos.cursor >= ring.next_seq();
        fill
    }
}

impl Position {
    /// After a jump: what changed while this consumer was away, so it can carry on.
    fn resync(&mut self, state: &State, emit: &mut impl FnMut(&Item)) {
        let on_air = &state.on_air;
        if on_air.session_seq > self.session_seq {
            let live = state.sources.on_air.is_some();
            let event = ListenerEvent::Source {
                state: if live { SourceState::Online } else { SourceState::Offline },
                tracks: live.then(|| on_air.tracks.clone()),
            };
            emit(&Item::Event(Event::new(event)));
        }
        if on_air.header_version > self.header_version {
            for (_, frame) in &on_air.headers {
                emit(&Item::Frame(frame.clone()));
            }
        }
        if on_air.metadata_version > self.metadata_version {
            if let Some(meta) = &on_air.metadata {
                emit(&Item::Event(Event::new(ListenerEvent::Metadata(meta.clone()))));
            }
        }
        self.session_seq = on_air.session_seq;
        self.header_version = on_air.header_version;
        self.metadata_version = on_air.metadata_version;
        self.joined_at = state.ring.next_seq();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.counted {
            self.stream.listeners.fetch_sub(1, Ordering::AcqRel);
            self.stream.metrics.listeners.dec();
        }
    }
}
