//! What a listener is owed: a queue of shared buffers written with one vectored write.
//!
//! Both kinds of listener use it: WebSocket listeners queue `WireFrame`s (a header computed
//! once per frame, and the ring's payload), HTTP listeners queue container bytes (Ogg pages and
//! MP3 frames written once per stream, ICY blocks made once per title). Nothing is copied per
//! listener.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

use crate::websocket::WireFrame;

/// Most buffers in one vectored write (Linux allows 1024).
const MAX_IOV: usize = 128;
/// An emptied outbox keeps room for this many pieces; a larger one (after a burst or a
/// catch-up) is given back, so an idle listener costs little memory.
const KEEP_PIECES: usize = 4;

/// One queued piece: a WebSocket message (its header computed once, its payload shared) or
/// container bytes (an Ogg page, an MP3 frame, an ICY block: shared too).
#[derive(Clone, Debug)]
pub enum Piece {
    /// A WebSocket frame.
    Ws(WireFrame),
    /// Container bytes and the media frames their last byte completes.
    Bytes(Bytes, u32),
}

impl Piece {
    /// The bytes, in order; the second part may be empty.
    fn parts(&self) -> [&[u8]; 2] {
        match self {
            Piece::Ws(frame) => [frame.head(), &frame.payload()[..]],
            Piece::Bytes(bytes, _) => [&bytes[..], &[]],
        }
    }

    /// Media frames that writing the piece's last byte completes.
    fn frames(&self) -> u64 {
        match self {
            Piece::Ws(frame) => u64::from(frame.is_binary()),
            Piece::Bytes(_, frames) => u64::from(*frames),
        }
    }

    /// Total length.
    pub fn wire_len(&self) -> usize {
        match self {
            Piece::Ws(frame) => frame.wire_len(),
            Piece::Bytes(bytes, _) => bytes.len(),
        }
    }

    fn is_control(&self) -> bool {
        matches!(self, Piece::Ws(frame) if frame.is_control())
    }
}

/// A WebSocket listener queues the message of each item.
impl From<&crate::relay::Item> for Piece {
    fn from(item: &crate::relay::Item) -> Self {
        Piece::Ws(item.wire().clone())
    }
}

/// Pieces waiting to be written, the first possibly in part.
#[derive(Debug, Default)]
pub struct Outbox {
    /// The pieces, oldest first.
    pub items: VecDeque<Piece>,
    /// Bytes of the first piece already written.
    pub offset: usize,
}

impl Outbox {
    /// Whether everything was written.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Hands as much as fits in one vectored write to `write`; returns (bytes, media frames
    /// completed).
    ///
    /// # Errors
    /// What `write` returned (`WouldBlock` when the socket is full).
    pub fn write_with(
        &mut self,
        write: impl FnOnce(&[IoSlice<'_>]) -> std::io::Result<usize>,
    ) -> std::io::Result<(usize, u64)> {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        let mut skip = self.offset;
        'pieces: for piece in &self.items {
            for part in piece.parts() {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                iov[n] = IoSlice::new(&part[skip..]);
                skip = 0;
                n += 1;
                if n == MAX_IOV {
                    break 'pieces;
                }
            }
        }
        let written = write(&iov[..n])?;
        let mut frames = 0;
        self.offset += written;
        while let Some(front) = self.items.front() {
            if self.offset < front.wire_len() {
                break;
            }
            self.offset -= front.wire_len();
            frames += front.frames();
            self.items.pop_front();
        }
        Ok((written, frames))
    }

    /// Drops everything queued, keeping the room.
    pub fn clear(&mut self) {
        self.items.clear();
        self.offset = 0;
    }

    /// Writes what a tokio socket takes without blocking; returns (bytes, frames completed).
    /// An outbox that lives as long as its connection gives back the room of a burst once
    /// empty (a driver's shared batch queue uses `write_with` and keeps its room).
    ///
    /// # Errors
    /// Socket errors, `WouldBlock` when it is full.
    pub fn write_to(&mut self, socket: &tokio::net::TcpStream) -> std::io::Result<(usize, u64)> {
        let wrote = self.write_with(|iov| socket.try_write_vectored(iov));
        if self.items.is_empty() && self.items.capacity() > 2 * KEEP_PIECES {
            self.items.shrink_to(KEEP_PIECES);
        }
        wrote
    }

    /// Queues a control frame at the next frame boundary, ahead of media but behind other
    /// control frames (pongs answer pings in order).
    pub fn push_control(&mut self, frame: WireFrame) {
        let mut at = usize::from(self.offset > 0).min(self.items.len());
        while self.items.get(at).is_some_and(Piece::is_control) {
            at += 1;
        }
        self.items.insert(at, Piece::Ws(frame));
    }

    /// Control frames waiting at the front (to bound the pongs a ping flood can queue).
    pub fn control_frames(&self) -> usize {
        self.items.iter().skip(usize::from(self.offset > 0)).take_while(|f| f.is_control()).count()
    }

    /// Drops queued frames but one already half written.
    pub fn truncate_to_boundary(&mut self) {
        self.items.truncate(usize::from(self.offset > 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_writes_resume_mid_piece_and_count_completed_frames() {
        let mut out = Outbox::default();
        out.items.push_back(Piece::Bytes(Bytes::from_static(b"abc"), 0));
        out.items.push_back(Piece::Bytes(Bytes::from_static(b"defg"), 2));
        let mut sink = Vec::new();
        let mut take = |limit: usize| {
            out.write_with(|iov| {
                let mut n = 0;
                for part in iov {
                    let k = part.len().min(limit - n);
                    sink.extend_from_slice(&part[..k]);
                    n += k;
                }
                Ok(n)
            })
            .unwrap()
        };
        assert_eq!(take(2), (2, 0));
        assert_eq!(take(3), (3, 0), "mid-piece: frames count only when a piece is done");
        assert_eq!(take(10), (2, 2));
        assert_eq!(sink, b"abcdefg");
        assert!(out.is_empty());
    }

    #[test]
    fn a_batch_queue_keeps_its_room_after_a_write() {
        // A driver fills and writes one queue for every listener: it must not reallocate.
        let mut out = Outbox::default();
        out.items.extend((0..40).map(|_| Piece::Bytes(Bytes::from_static(b"frame"), 1)));
        let room = out.items.capacity();
        let written = out.write_with(|iov| Ok(iov.iter().map(|part| part.len()).sum())).unwrap();
        assert_eq!(written, (200, 40));
        assert!(out.is_empty());
        assert_eq!(out.items.capacity(), room);
    }

    #[test]
    fn control_frames_go_ahead_of_media_but_not_into_a_half_written_frame() {
        let mut out = Outbox::default();
        out.items.push_back(Piece::Ws(WireFrame::binary(Bytes::from_static(b"one"))));
        out.items.push_back(Piece::Ws(WireFrame::binary(Bytes::from_static(b"two"))));
        out.offset = 1;
        out.push_control(WireFrame::new(crate::websocket::OP_PONG, Bytes::from_static(b"a")));
        out.push_control(WireFrame::new(crate::websocket::OP_PONG, Bytes::from_static(b"b")));
        let payloads: Vec<_> = out
            .items
            .iter()
            .map(|p| match p {
                Piece::Ws(f) => f.payload().clone(),
                Piece::Bytes(b, _) => b.clone(),
            })
            .collect();
        assert_eq!(payloads, ["one", "a", "b", "two"].map(|s| Bytes::from(s.as_bytes())));
        assert_eq!(out.control_frames(), 2);
    }
}
