//! Writing a stream back into a container for an HTTP listener: Ogg (Opus, Vorbis) or MP3,
//! with ICY metadata blocks when asked for.
//!
//! Pure: frames, now playing and source changes in, pieces of container bytes out (each with
//! the media frames its last byte completes). An Ogg listener gets its own logical stream:
//! fresh BOS headers, its own serial, page sequence and granule positions; payloads are shared
//! slices of the source's frames, only page headers are written per listener.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::icy::{metadata_block, IcyInterleaver};
use super::ogg::{PageWriter, FLAG_BOS};
use super::opus::{self, OpusHead};
use super::vorbis::{self, Durations, VorbisInfo};
use super::Container;
use crate::protocol::{Codec, FrameHeader, Metadata, Track, TrackKind};

/// Most packets coalesced into one Ogg page when a listener is behind.
const MAX_PACKETS_PER_PAGE: usize = 50;
/// Vendor string of the `OpusTags` and Vorbis comments written for listeners.
const VENDOR: &str = concat!("onair ", env!("CARGO_PKG_VERSION"));

/// Container bytes to write, in order, each with the media frames its last byte completes.
pub type Pieces = VecDeque<(Bytes, u32)>;

/// Why a listener's container can no longer carry the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    /// The new source sends a codec this container does not carry.
    #[error("the new source sends {codec:?}, which {container:?} does not carry")]
    CodecChanged {
        /// The listener's container.
        container: Container,
        /// The new source's audio codec, if it has audio.
        codec: Option<Codec>,
    },
}

fn push(out: &mut Pieces, piece: Bytes, frames: u32) {
    if !piece.is_empty() || frames > 0 {
        out.push_back((piece, frames));
    }
}

/// One listener's container writer: stream frames and events in, container bytes out.
#[derive(Debug)]
pub struct Mux {
    container: Container,
    track: Option<Track>,
    /// The newest `OpusHead` of the track.
    head: Option<Bytes>,
    chain: Option<Chain>,
    metadata: Option<Metadata>,
    icy: Option<IcyInterleaver>,
    scratch: BytesMut,
    pages: Vec<Bytes>,
    batch: Vec<(Bytes, u64)>,
    split: Vec<Bytes>,
    serials: RandomState,
    chains: u64,
}

/// The listener's current Ogg logical stream.
#[derive(Debug)]
struct Chain {
    writer: PageWriter,
    head: Bytes,
    granule: u64,
    /// Vorbis packet durations (Opus packets carry theirs in the TOC byte).
    vorbis: Option<Durations>,
}

impl Mux {
    /// A muxer for `container`, starting from the stream's tracks and now playing; `icy_metaint`
    /// turns on ICY metadata blocks.
    pub fn new(
        container: Container,
        tracks: &[Track],
        metadata: Option<Metadata>,
        icy_metaint: Option<usize>,
    ) -> Self {
        let mut icy = icy_metaint.map(IcyInterleaver::new);
        if let (Some(icy), Some(meta)) = (&mut icy, &metadata) {
            icy.set_block(metadata_block(&meta.display_title(), meta.url.as_deref()));
        }
        Self {
            container,
            track: pick_track(container, tracks),
            head: None,
            chain: None,
            metadata,
            icy,
            scratch: BytesMut::new(),
            pages: Vec::new(),
            batch: Vec::new(),
            split: Vec::new(),
            serials: RandomState::new(),
            chains: 0,
        }
    }

    /// Now playing changed: ICY listeners get the new title in their next metadata block.
    pub fn metadata(&mut self, meta: Metadata, out: &mut Pieces) {
        self.flush(out);
        if let Some(icy) = &mut self.icy {
            icy.set_block(metadata_block(&meta.display_title(), meta.url.as_deref()));
        }
        self.metadata = Some(meta);
    }

    /// A new source with these tracks: its header starts a new Ogg stream.
    ///
    /// # Errors
    /// `CodecChanged` when the new source's codec does not fit this container.
    pub fn source(&mut self, tracks: &[Track], out: &mut Pieces) -> Result<(), MuxError> {
        self.flush(out);
        self.head = None;
        self.track = pick_track(self.container, tracks);
        if self.track.is_none() {
            let codec = tracks.iter().find(|t| t.kind == TrackKind::Audio).map(|t| t.codec);
            return Err(MuxError::CodecChanged { container: self.container, codec });
        }
        Ok(())
    }

    /// One frame of the stream: codec configuration (a header frame) or media. Media frames
    /// are batched into pages until `flush` (or the batch is full).
    pub fn frame(&mut self, header: FrameHeader, payload: Bytes, out: &mut Pieces) {
        let Some(track) = &self.track else { return };
        if header.track != track.id {
            return;
        }
        match self.container {
            Container::Mp3 if !header.is_header() => self.emit_one(payload, 1, out),
            Container::Ogg if header.is_header() => {
                let valid = match track.codec {
                    Codec::Vorbis => vorbis_headers(&payload).is_some(),
                    _ => OpusHead::parse(&payload).is_ok(),
                };
                if valid {
                    self.head = Some(payload);
                }
            }
            Container::Ogg => {
                if payload.is_empty() {
                    return;
                }
                self.open_chain(out);
                let Some(chain) = &mut self.chain else { return };
                let samples = match &mut chain.vorbis {
                    Some(durations) => durations.next(&payload).map_err(|e| e.to_string()),
                    None => opus::packet_samples(&payload).map_err(|e| e.to_string()),
                };
                let samples = match samples {
                    Ok(samples) => samples,
                    Err(err) => {
                        debug!(%err, "dropping a packet an Ogg listener cannot carry");
                        return;
                    }
                };
                chain.granule += u64::from(samples);
                self.batch.push((payload, chain.granule));
                if self.batch.len() >= MAX_PACKETS_PER_PAGE {
                    self.flush(out);
                }
            }
            Container::Mp3 | Container::WebM => {}
        }
    }

    /// Starts a new logical stream when there is none or the header changed: EOS on the old
    /// one, then the BOS page (`OpusHead`, or Vorbis's identification header) and the comment
    /// (and Vorbis setup) pages, with a fresh serial.
    fn open_chain(&mut self, out: &mut Pieces) {
        let Some(track) = &self.track else { return };
        let head = match (&self.head, track.codec) {
            (Some(head), _) => head.clone(),
            (None, Codec::Opus) => {
                let head = OpusHead::synthesize(
                    track.channels.unwrap_or(2),
                    track.sample_rate.unwrap_or(48_000),
                );
                self.head = Some(head.clone());
                head
            }
            // Vorbis cannot be decoded without the source's setup header: wait for it.
            (None, _) => return,
        };
        if self.chain.as_ref().is_some_and(|c| c.head == head) {
            return;
        }
        self.flush(out);
        if let Some(mut old) = self.chain.take() {
            old.writer.write(&[], 0, true, &mut self.scratch, &mut self.pages);
        }
        let mut hasher = self.serials.build_hasher();
        hasher.write_u64(self.chains);
        self.chains += 1;
        let mut writer = PageWriter::new(hasher.finish() as u32);
        // RFC 7845 and the Vorbis I spec: the identification header alone on the BOS page, the
        // other headers on the following page(s), audio on pages after that.
        let (scratch, pages) = (&mut self.scratch, &mut self.pages);
        let vorbis = match vorbis_headers(&head) {
            Some(([ident, _, setup], info)) => {
                let comment = vorbis::write_comment(VENDOR, self.metadata.as_ref());
                writer.write(&[(ident, 0)], FLAG_BOS, false, scratch, pages);
                writer.write(&[(comment, 0), (setup, 0)], 0, false, scratch, pages);
                Some(Durations::new(info))
            }
            None => {
                let tags = opus::write_tags(VENDOR, self.metadata.as_ref());
                writer.write(&[(head.clone(), 0)], FLAG_BOS, false, scratch, pages);
                writer.write(&[(tags, 0)], 0, false, scratch, pages);
                None
            }
        };
        self.emit_pages(0, out);
        self.chain = Some(Chain { writer, head, granule: 0, vorbis });
    }

    /// Writes the batched packets as a page.
    pub fn flush(&mut self, out: &mut Pieces) {
        if self.batch.is_empty() {
            return;
        }
        let Some(chain) = &mut self.chain else {
            self.batch.clear();
            return;
        };
        chain.writer.write(&self.batch, 0, false, &mut self.scratch, &mut self.pages);
        let frames = self.batch.len() as u32;
        self.batch.clear();
        self.emit_pages(frames, out);
    }

    fn emit_pages(&mut self, frames: u32, out: &mut Pieces) {
        let last = self.pages.len().saturating_sub(1);
        let pages = std::mem::take(&mut self.pages);
        for (i, piece) in pages.into_iter().enumerate() {
            self.emit_one(piece, if i == last { frames } else { 0 }, out);
        }
    }

    /// Queues one piece of container bytes, through the ICY interleaver if there is one.
    fn emit_one(&mut self, piece: Bytes, frames: u32, out: &mut Pieces) {
        let Some(icy) = &mut self.icy else {
            push(out, piece, frames);
            return;
        };
        icy.push(piece, &mut self.split);
        let last = self.split.len().saturating_sub(1);
        for (i, part) in self.split.drain(..).enumerate() {
            push(out, part, if i == last { frames } else { 0 });
        }
    }
}

/// The first audio track whose codec the container carries.
fn pick_track(container: Container, tracks: &[Track]) -> Option<Track> {
    let fits = |codec: Codec| match container {
        Container::Ogg => matches!(codec, Codec::Opus | Codec::Vorbis),
        Container::Mp3 => codec == Codec::Mp3,
        Container::WebM => false,
    };
    tracks.iter().find(|t| t.kind == TrackKind::Audio && fits(t.codec)).cloned()
}

/// A Vorbis header frame's three headers and what they say; `None` when it is not one.
fn vorbis_headers(frame: &Bytes) -> Option<([Bytes; 3], VorbisInfo)> {
    let headers = vorbis::unpack_headers(frame).ok()?;
    let info = VorbisInfo::parse(&headers[0], &headers[2]).ok()?;
    Some((headers, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ogg::{parse_page, Packetizer};
    use crate::protocol::{FLAG_HEADER, FLAG_KEYFRAME};

    fn opus_track() -> Track {
        Track::audio(0, Codec::Opus, 48_000, 2, None)
    }

    /// What a listener's stream carries, in order.
    enum In {
        Frame(FrameHeader, Bytes),
        Metadata(Metadata),
        Source(Vec<Track>),
    }

    fn binary(flags: u8, pts: u64, payload: &[u8]) -> In {
        In::Frame(FrameHeader { flags, track: 0, pts }, Bytes::copy_from_slice(payload))
    }

    /// Feeds everything, then flushes, as a listener does with one batch.
    fn feed(mux: &mut Mux, input: Vec<In>, out: &mut Pieces) -> Result<(), MuxError> {
        for item in input {
            match item {
                In::Frame(header, payload) => mux.frame(header, payload, out),
                In::Metadata(meta) => mux.metadata(meta, out),
                In::Source(tracks) => mux.source(&tracks, out)?,
            }
        }
        mux.flush(out);
        Ok(())
    }

    /// Everything queued, concatenated, and the frames it completes.
    fn take_all(out: &mut Pieces) -> (Vec<u8>, u64) {
        let mut bytes = Vec::new();
        let mut frames = 0;
        for (piece, n) in out.drain(..) {
            bytes.extend_from_slice(&piece);
            frames += u64::from(n);
        }
        (bytes, frames)
    }

    /// Parses an Ogg byte stream into (serial, sequence, granule, flags, packets) per page.
    fn parse_pages(mut bytes: BytesMut) -> Vec<(u32, u32, u64, u8, Vec<Bytes>)> {
        let mut out = Vec::new();
        let mut packetizer = Packetizer::new(1 << 20);
        while let Some(page) = parse_page(&mut bytes).unwrap() {
            let mut packets = Vec::new();
            packetizer.push(&page, &mut packets).unwrap();
            out.push((page.serial, page.sequence, page.granule, page.flags, packets));
        }
        assert!(bytes.is_empty());
        out
    }

    #[test]
    fn ogg_listener_gets_headers_then_audio_with_granules() {
        let mut mux = Mux::new(
            Container::Ogg,
            &[opus_track()],
            Some(Metadata { title: Some("Song".into()), ..Metadata::default() }),
            None,
        );
        let head = OpusHead::synthesize(2, 48_000);
        let frames = vec![
            binary(FLAG_HEADER, 0, &head),
            binary(FLAG_KEYFRAME, 0, &[0xFC, 1]),
            binary(FLAG_KEYFRAME, 20_000, &[0xFC | 1, 2, 3]),
        ];
        let mut out = Pieces::new();
        feed(&mut mux, frames, &mut out).unwrap();
        let (bytes, count) = take_all(&mut out);
        assert_eq!(count, 2);
        let pages = parse_pages(BytesMut::from(&bytes[..]));
        assert_eq!(pages.len(), 3, "OpusHead, OpusTags, one page of audio");
        assert_eq!(pages[0].3, FLAG_BOS);
        assert_eq!(pages[0].4[0], head);
        let tags = opus::parse_tags(&pages[1].4[0], opus::TAGS_MAGIC).unwrap();
        assert_eq!(tags.title.as_deref(), Some("Song"));
        assert_eq!(pages[2].2, 960 + 1920);
        assert_eq!(
            pages[2].4,
            vec![Bytes::from_static(&[0xFC, 1]), Bytes::from_static(&[0xFD, 2, 3])]
        );
        let serial = pages[0].0;
        assert!(pages.iter().enumerate().all(|(i, p)| p.0 == serial && p.1 == i as u32));

        // A new source with a different header: the old stream ends, a new one begins.
        let other = OpusHead::synthesize(1, 44_100);
        let frames = vec![
            In::Source(vec![opus_track()]),
            binary(FLAG_HEADER, 0, &other),
            binary(FLAG_KEYFRAME, 0, &[0xFC, 9]),
        ];
        feed(&mut mux, frames, &mut out).unwrap();
        let (bytes, _) = take_all(&mut out);
        let pages = parse_pages(BytesMut::from(&bytes[..]));
        assert_eq!(pages[0].0, serial);
        assert!(pages[0].3 & crate::format::ogg::FLAG_EOS != 0);
        assert_ne!(pages[1].0, serial, "a fresh serial");
        assert_eq!((pages[1].1, pages[1].3), (0, FLAG_BOS));
        assert_eq!(pages[3].2, 960, "granule restarts");
    }

    #[test]
    fn vorbis_listener_gets_three_header_packets_then_audio_with_granules() {
        let mut file = BytesMut::from(&include_bytes!("../../samples/music.ogg")[..]);
        let mut packetizer = Packetizer::new(1 << 20);
        let mut packets = Vec::new();
        while let Some(page) = parse_page(&mut file).unwrap() {
            packetizer.push(&page, &mut packets).unwrap();
        }
        let header = vorbis::pack_headers(&packets[0], &packets[1], &packets[2]);
        let mut track = opus_track();
        (track.codec, track.sample_rate) = (Codec::Vorbis, Some(44_100));
        let meta = Metadata { title: Some("Live".into()), ..Metadata::default() };
        let mut mux = Mux::new(Container::Ogg, &[track], Some(meta), None);
        let mut frames = vec![binary(FLAG_HEADER, 0, &header)];
        // A late joiner: audio from the middle of the stream.
        frames.extend(packets[40..60].iter().map(|p| binary(FLAG_KEYFRAME, 0, p)));
        let mut out = Pieces::new();
        feed(&mut mux, frames, &mut out).unwrap();
        let (bytes, count) = take_all(&mut out);
        assert_eq!(count, 20);
        let pages = parse_pages(BytesMut::from(&bytes[..]));
        assert_eq!((pages[0].3, &pages[0].4[0]), (FLAG_BOS, &packets[0]));
        assert_eq!(pages[1].4.len(), 2, "comment and setup headers on their own page");
        let comment = opus::parse_tags(&pages[1].4[0], vorbis::COMMENT_MAGIC).unwrap();
        assert_eq!(comment.title.as_deref(), Some("Live"), "a fresh comment with now playing");
        assert_eq!(pages[1].4[1], packets[2]);
        let info = VorbisInfo::parse(&packets[0], &packets[2]).unwrap();
        let mut durations = Durations::new(info);
        let expected: u64 =
            packets[40..60].iter().map(|p| u64::from(durations.next(p).unwrap())).sum();
        assert_eq!(pages.last().unwrap().2, expected, "granule counts from this listener's start");
    }

    #[test]
    fn a_source_without_a_header_gets_a_synthesized_one() {
        let mut mux = Mux::new(Container::Ogg, &[opus_track()], None, None);
        let frames = vec![binary(FLAG_KEYFRAME, 0, &[0xFC, 1])];
        let mut out = Pieces::new();
        feed(&mut mux, frames, &mut out).unwrap();
        let (bytes, _) = take_all(&mut out);
        let pages = parse_pages(BytesMut::from(&bytes[..]));
        assert_eq!(OpusHead::parse(&pages[0].4[0]).unwrap().channels, 2);
    }

    #[test]
    fn mp3_listener_with_icy_gets_frames_and_titles() {
        let mut track = opus_track();
        track.codec = Codec::Mp3;
        let mut mux = Mux::new(Container::Mp3, &[track.clone()], None, Some(10));
        let frames = vec![
            binary(FLAG_KEYFRAME, 0, b"0123456"),
            In::Metadata(Metadata { title: Some("T".into()), ..Metadata::default() }),
            binary(FLAG_KEYFRAME, 0, b"789abcdef"),
        ];
        let mut out = Pieces::new();
        feed(&mut mux, frames, &mut out).unwrap();
        let (bytes, count) = take_all(&mut out);
        assert_eq!(count, 2);
        let mut expected = b"0123456789".to_vec();
        expected.extend_from_slice(&metadata_block("T", None));
        expected.extend_from_slice(b"abcdef");
        assert_eq!(bytes, expected);
        let frames = vec![In::Source(vec![opus_track()])];
        assert!(feed(&mut mux, frames, &mut out).is_err(), "an Opus source on an MP3 listener");
    }
}
