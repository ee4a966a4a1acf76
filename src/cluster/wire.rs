//! What crosses NATS besides frames: control messages, listener counts and the parts of a
//! frame too large for one message. Pure encode/decode; anything malformed is an error for the
//! caller to log and drop, never a panic.
//!
//! A frame is published as the source's message, byte for byte. One larger than the server's
//! `max_payload` goes out in parts: each part is `u32 total`, `u32 offset` (big-endian) and the
//! next bytes; parts of a frame are published back to back, so they arrive in order.
//! A frame at the edge of its source's chained Ogg link carries that in a NATS header
//! (`Onair-Link-Edge`, on the frame's message or its last part): the frame stays the source's
//! bytes, and a node that does not know the header plays the frame as before.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::format::LinkEdge;
use crate::protocol::{decode_frame_header, FrameHeader, Metadata, Track};

/// Bytes of a part's header.
pub const PART_HEADER_BYTES: usize = 8;
/// The NATS header of a frame at the edge of a chained Ogg link: `last <trim>` or `first`.
pub const EDGE_HEADER: &str = "Onair-Link-Edge";
/// Longest trim an edge may carry: more samples than any codec's frame holds is not a trim.
const MAX_EDGE_TRIM: u32 = 1 << 16;

/// A control message of a stream's origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Control {
    /// A source is on air at the origin: sent when it goes on air and again every heartbeat,
    /// so a node that joins late (or lost messages) picks the session up.
    Session {
        /// Unique per origin node and session.
        session: u64,
        /// A live source (it outranks an auto-DJ) rather than the auto-DJ.
        live: bool,
        /// Its tracks.
        tracks: Vec<Track>,
        /// Its header frames, as the source sent them, base64.
        headers: Vec<String>,
        /// Its now playing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Metadata>,
    },
    /// Now playing changed.
    Metadata {
        /// The session it belongs to.
        session: u64,
        /// The new now playing.
        metadata: Metadata,
    },
    /// The session ended (its source left, or was outranked by a source relayed from
    /// elsewhere).
    End {
        /// The session that ended.
        session: u64,
    },
}

/// Why a cluster message was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a control message.
    #[error("malformed control message: {0}")]
    Control(String),
    /// A header frame that is not a valid frame.
    #[error("bad header frame in a session message")]
    Header,
    /// A part that does not continue the frame being put together.
    #[error("frame part out of order")]
    PartOrder,
    /// A frame larger than the node's `max_message_bytes`.
    #[error("frame of {0} bytes is larger than max_message_bytes")]
    TooLarge(usize),
    /// A part shorter than its header.
    #[error("truncated frame part")]
    PartTruncated,
    /// An `Onair-Link-Edge` header that is neither `first` nor `last <trim>`.
    #[error("malformed {EDGE_HEADER} header: {0:?}")]
    Edge(String),
}

/// The `Onair-Link-Edge` header's value for `edge`.
pub fn encode_edge(edge: LinkEdge) -> String {
    match edge {
        LinkEdge::Last { trim } => format!("last {trim}"),
        LinkEdge::First => "first".to_owned(),
    }
}

/// Parses an `Onair-Link-Edge` header's value.
///
/// # Errors
/// `Edge` for anything `encode_edge` does not write.
pub fn decode_edge(value: &str) -> Result<LinkEdge, WireError> {
    let malformed = || WireError::Edge(value.chars().take(40).collect());
    match value.split_once(' ') {
        None if value == "first" => Ok(LinkEdge::First),
        Some(("last", trim)) => {
            let trim: u32 = trim.parse().map_err(|_| malformed())?;
            if trim > MAX_EDGE_TRIM {
                return Err(malformed());
            }
            Ok(LinkEdge::Last { trim })
        }
        _ => Err(malformed()),
    }
}

impl Control {
    /// The JSON text.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("control messages always serialize"))
    }

    /// Parses a control message.
    ///
    /// # Errors
    /// `Control` for anything that is not one.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        serde_json::from_slice(payload).map_err(|err| WireError::Control(err.to_string()))
    }

    /// A session message with these header frames (the source's messages).
    pub fn session(
        session: u64,
        live: bool,
        tracks: Vec<Track>,
        headers: &[Bytes],
        metadata: Option<Metadata>,
    ) -> Self {
        let headers = headers.iter().map(|h| BASE64.encode(h)).collect();
        Control::Session { session, live, tracks, headers, metadata }
    }
}

/// Decodes a session's header frames.
///
/// # Errors
/// `Header` when one is not base64 or not a valid frame.
pub fn decode_headers(headers: &[String]) -> Result<Vec<(FrameHeader, Bytes)>, WireError> {
    headers
        .iter()
        .map(|text| {
            let bytes = Bytes::from(BASE64.decode(text).map_err(|_| WireError::Header)?);
            let header = decode_frame_header(&bytes).map_err(|_| WireError::Header)?;
            if !header.is_header() {
                return Err(WireError::Header);
            }
            Ok((header, bytes))
        })
        .collect()
}

/// A node's listener counts, by stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Listeners per stream (streams with none may be left out).
    pub listeners: HashMap<String, usize>,
    /// HLS clients per stream, likewise (absent from nodes that predate it).
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub hls: HashMap<String, usize>,
}

/// Cuts `message` into parts of at most `max_payload` bytes each (header included).
pub fn split(message: &[u8], max_payload: usize) -> Vec<Bytes> {
    let room = max_payload.saturating_sub(PART_HEADER_BYTES).max(1);
    let total = u32::try_from(message.len()).unwrap_or(u32::MAX);
    message
        .chunks(room)
        .enumerate()
        .map(|(i, chunk)| {
            let mut part = BytesMut::with_capacity(PART_HEADER_BYTES + chunk.len());
            part.put_u32(total);
            part.put_u32(u32::try_from(i * room).unwrap_or(u32::MAX));
            part.put_slice(chunk);
            part.freeze()
        })
        .collect()
}

/// Puts a frame back together from its parts; holds at most one frame, of at most `max`
/// bytes.
#[derive(Debug)]
pub struct Reassembly {
    max: usize,
    total: usize,
    buf: BytesMut,
}

impl Reassembly {
    /// Frames of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { max, total: 0, buf: BytesMut::new() }
    }

    /// Adds a part; returns the frame when it is complete.
    ///
    /// # Errors
    /// When the part does not continue the current frame, is truncated or announces a frame
    /// larger than `max` (the frame is dropped; the next one starts afresh).
    pub fn push(&mut self, part: &[u8]) -> Result<Option<Bytes>, WireError> {
        let Some((head, data)) = part.split_at_checked(PART_HEADER_BYTES) else {
            return Err(WireError::PartTruncated);
        };
        let total = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let offset = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if total > self.max {
            self.buf.clear();
            return Err(WireError::TooLarge(total));
        }
        if offset == 0 {
            self.buf.clear();
            self.total = total;
        } else if offset != self.buf.len() || total != self.total {
            self.buf.clear();
            return Err(WireError::PartOrder);
        }
        if self.buf.len() + data.len() > total {
            self.buf.clear();
            return Err(WireError::PartOrder);
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() == total {
            self.total = 0;
            return Ok(Some(self.buf.split().freeze()));
        }
        Ok(None)
    }

    /// Forgets a frame in progress (its origin went away).
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode_frame, Codec, FLAG_HEADER, FLAG_KEYFRAME};

    #[test]
    fn control_messages_round_trip_and_garbage_is_an_error() {
        let head = encode_frame(FrameHeader { flags: FLAG_HEADER, track: 0, pts: 0 }, b"OpusHead");
        let tracks = vec![Track::audio(0, Codec::Opus, 48_000, 2, None)];
        let meta = Metadata { title: Some("Song".into()), ..Metadata::default() };
        let session =
            Control::session(7, true, tracks.clone(), std::slice::from_ref(&head), Some(meta));
        let back = Control::decode(&session.encode()).unwrap();
        assert_eq!(back, session);
        let Control::Session { headers, .. } = back else { panic!("a session") };
        assert_eq!(decode_headers(&headers).unwrap()[0].1, head);
        let end = Control::End { session: 7 };
        assert_eq!(Control::decode(&end.encode()).unwrap(), end);
        for garbage in [&b""[..], b"{", b"{\"type\":\"nope\"}", b"\xff\xfe", b"[1,2]"] {
            assert!(Control::decode(garbage).is_err(), "{garbage:?}");
        }
        let not_a_header =
            encode_frame(FrameHeader { flags: FLAG_KEYFRAME, track: 0, pts: 0 }, b"x");
        assert_eq!(decode_headers(&[BASE64.encode(not_a_header)]), Err(WireError::Header));
        assert_eq!(decode_headers(&["***".into()]), Err(WireError::Header));
        assert_eq!(decode_headers(&[BASE64.encode(b"short")]), Err(WireError::Header));
    }

    #[test]
    fn link_edges_round_trip_and_garbage_is_an_error() {
        for edge in [LinkEdge::First, LinkEdge::Last { trim: 0 }, LinkEdge::Last { trim: 312 }] {
            assert_eq!(decode_edge(&encode_edge(edge)), Ok(edge));
        }
        for garbage in ["", "last", "last ", "last -1", "last 99999999", "first 3", "LAST 3", "x"] {
            assert!(matches!(decode_edge(garbage), Err(WireError::Edge(_))), "{garbage:?}");
        }
    }

    #[test]
    fn large_frames_split_and_come_back_whole() {
        let frame: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let parts = split(&frame, 1024);
        assert_eq!(parts.len(), 10_000usize.div_ceil(1016));
        assert!(parts.iter().all(|p| p.len() <= 1024));
        let mut joiner = Reassembly::new(1 << 20);
        let mut whole = None;
        for part in &parts {
            assert!(whole.is_none(), "complete only at the last part");
            whole = joiner.push(part).unwrap();
        }
        assert_eq!(&whole.unwrap()[..], &frame[..]);
        // A lost part drops that frame only; the next one starts afresh.
        assert_eq!(joiner.push(&parts[0]).unwrap(), None);
        assert_eq!(joiner.push(&parts[2]), Err(WireError::PartOrder));
        for part in &parts[..parts.len() - 1] {
            assert_eq!(joiner.push(part).unwrap(), None);
        }
        assert!(joiner.push(&parts[parts.len() - 1]).unwrap().is_some());
        assert_eq!(Reassembly::new(100).push(&parts[0]), Err(WireError::TooLarge(10_000)));
        assert_eq!(joiner.push(b"short"), Err(WireError::PartTruncated));
        let mut evil = BytesMut::new();
        evil.put_u32(4);
        evil.put_u32(0);
        evil.put_slice(b"toolong");
        assert_eq!(joiner.push(&evil), Err(WireError::PartOrder), "more bytes than announced");
    }
}
