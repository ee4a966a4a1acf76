//! Turns an Icecast source's body (Ogg/Opus, Ogg/Vorbis or MP3) into the relay's events: the track list,
//! header frames, timed audio frames and in-stream metadata.
//!
//! Pure and incremental: `source.rs` feeds body bytes as they arrive and applies the events to
//! its `SourceHandle`. The container is sniffed from the first bytes (the `Content-Type` of
//! sources is often wrong: ffmpeg says `audio/mpeg` unless told otherwise). Any violation is an
//! error for this source only.

use bytes::{Bytes, BytesMut};

use crate::format::mp3::{FrameReader, Mp3Error};
use crate::format::ogg::{self, OggError, Packetizer};
use crate::format::opus::{self, OpusError, OpusHead};
use crate::format::vorbis::{self, Durations, VorbisError, VorbisInfo};
use crate::format::{Container, LinkEdge};
use crate::protocol::{Codec, Metadata, Track};

/// The track id Icecast sources use (they carry a single audio track).
pub const TRACK: u8 = 0;
/// Most foreign logical streams (e.g. a skeleton track) an Ogg source may carry beside audio.
const MAX_IGNORED_STREAMS: usize = 8;

/// What the relay should do with a piece of the source's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The source's tracks are known (exactly once, first).
    Start(Vec<Track>),
    /// Codec configuration for the track (Opus: the `OpusHead` packet).
    Header(Bytes),
    /// One encoded frame with its presentation time in microseconds.
    Frame {
        /// Presentation time, microseconds from the start of this source.
        pts: u64,
        /// The encoded frame.
        data: Bytes,
        /// Set when the frame ends or begins a chained Ogg link of the source.
        edge: Option<LinkEdge>,
    },
    /// Now playing, from in-stream tags.
    Metadata(Metadata),
}

/// Why a source's body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    /// The first bytes are not a container the relay reads.
    #[error("not an Ogg or MP3 stream (first bytes {0:02x?})")]
    Unrecognised(Vec<u8>),
    /// A container the relay recognises but does not ingest.
    #[error("{0} sources are not supported: send Ogg/Opus, Ogg/Vorbis or MP3")]
    Unsupported(&'static str),
    /// Ogg structure error.
    #[error(transparent)]
    Ogg(#[from] OggError),
    /// MP3 sync error.
    #[error(transparent)]
    Mp3(#[from] Mp3Error),
    /// Opus data error.
    #[error(transparent)]
    Opus(#[from] OpusError),
    /// Vorbis data error.
    #[error(transparent)]
    Vorbis(#[from] VorbisError),
    /// The codec changed between chained Ogg streams.
    #[error("codec switch mid-stream: {0}")]
    CodecSwitch(&'static str),
    /// A page of a logical stream that never began.
    #[error("Ogg page of unknown stream {0:#010x}")]
    UnknownStream(u32),
    /// Too many logical streams the relay does not carry.
    #[error("more than {MAX_IGNORED_STREAMS} extra Ogg streams")]
    TooManyStreams,
}

/// Demuxer state for one source connection.
#[derive(Debug)]
pub struct Demuxer {
    inner: Inner,
    max_packet_bytes: usize,
    bitrate: Option<u32>,
}

#[derive(Debug)]
enum Inner {
    Sniffing,
    Ogg(Box<OggDemux>),
    Mp3(Mp3Demux),
}

impl Demuxer {
    /// A demuxer that refuses packets over `max_packet_bytes`; `bitrate` (bits/s, from the
    /// source's `ice-bitrate`) goes into the track description.
    pub fn new(max_packet_bytes: usize, bitrate: Option<u32>) -> Self {
        Self { inner: Inner::Sniffing, max_packet_bytes, bitrate }
    }

    /// The container, once recognised.
    pub fn container(&self) -> Option<Container> {
        match self.inner {
            Inner::Sniffing => None,
            Inner::Ogg(_) => Some(Container::Ogg),
            Inner::Mp3(_) => Some(Container::Mp3),
        }
    }

    /// Consumes what it can of `buf` and appends the resulting events to `out`. Bytes of an
    /// incomplete page or frame stay in `buf` (at most one page or frame).
    ///
    /// # Errors
    /// A `DemuxError` when the body is not a stream the relay can carry; the source must go.
    pub fn push(&mut self, buf: &mut BytesMut, out: &mut Vec<Event>) -> Result<(), DemuxError> {
        if let Inner::Sniffing = self.inner {
            if buf.len() < 4 {
                return Ok(());
            }
            self.inner = match Container::sniff(buf) {
                Some(Container::Ogg) => Inner::Ogg(Box::new(OggDemux::new(self.max_packet_bytes))),
                Some(Container::Mp3) => Inner::Mp3(Mp3Demux::default()),
                Some(Container::WebM) => return Err(DemuxError::Unsupported("WebM")),
                None => return Err(DemuxError::Unrecognised(buf[..buf.len().min(8)].to_vec())),
            };
        }
        match &mut self.inner {
            Inner::Sniffing => Ok(()),
            Inner::Ogg(ogg) => ogg.push(buf, self.bitrate, out),
            Inner::Mp3(mp3) => mp3.push(buf, self.bitrate, out),
        }
    }
}

/// Vendor string of the comment header inside a Vorbis header frame (titles travel as
/// metadata events, so the header frame only changes when the codec setup does).
const VENDOR: &str = concat!("onair ", env!("CARGO_PKG_VERSION"));

/// Where the current Ogg link is.
#[derive(Debug)]
enum OggStage {
    /// Waiting for a BOS page that starts an Opus or Vorbis stream.
    Idle,
    /// OpusHead seen; next comes OpusTags.
    OpusTags,
    /// Vorbis identification header seen; next comes the comment header.
    VorbisComment(Bytes),
    /// Then the setup header (the comment's metadata waits for the track to be declared).
    VorbisSetup(Bytes, Metadata),
    /// Opus audio packets.
    Opus,
    /// Vorbis audio packets.
    Vorbis(Durations),
}

#[derive(Debug)]
struct OggDemux {
    serial: Option<u32>,
    stage: OggStage,
    packets: Packetizer,
    max_packet_bytes: usize,
    /// The codec of the first link; chained links must keep it.
    codec: Option<Codec>,
    header: Option<Bytes>,
    clock: Clock,
    ignored: Vec<u32>,
    scratch: Vec<Bytes>,
    /// Samples of the current link's audio packets so far, and of its latest packet.
    link_samples: u64,
    last_samples: u32,
    /// An audio link gave frames and its last frame was not marked as such.
    open: bool,
    /// The next frame begins a new link after an open one.
    first_pending: bool,
}

impl OggDemux {
    fn new(max_packet_bytes: usize) -> Self {
        Self {
            serial: None,
            stage: OggStage::Idle,
            packets: Packetizer::new(max_packet_bytes),
            max_packet_bytes,
            codec: None,
            header: None,
            clock: Clock::default(),
            ignored: Vec::new(),
            scratch: Vec::new(),
            link_samples: 0,
            last_samples: 0,
            open: false,
            first_pending: false,
        }
    }

    fn push(
        &mut self,
        buf: &mut BytesMut,
        bitrate: Option<u32>,
        out: &mut Vec<Event>,
    ) -> Result<(), DemuxError> {
        while let Some(page) = ogg::parse_page(buf)? {
            if page.is_bos() {
                self.begin(&page, bitrate, out)?;
                continue;
            }
            if Some(page.serial) != self.serial {
                if self.ignored.contains(&page.serial) {
                    continue;
                }
                return Err(DemuxError::UnknownStream(page.serial));
            }
            let mut packets = std::mem::take(&mut self.scratch);
            self.packets.push(&page, &mut packets)?;
            let from = out.len();
            for packet in packets.drain(..) {
                self.packet(packet, bitrate, out)?;
            }
            self.scratch = packets;
            if page.is_eos() {
                self.end_link(page.granule, &mut out[from..]);
                self.serial = None;
                self.stage = OggStage::Idle;
            }
        }
        Ok(())
    }

    /// A beginning-of-stream page: a new chained link, or a foreign stream to ignore.
    fn begin(
        &mut self,
        page: &ogg::Page,
        bitrate: Option<u32>,
        out: &mut Vec<Event>,
    ) -> Result<(), DemuxError> {
        let body = &page.body[..];
        let (codec, stage) = if body.starts_with(opus::HEAD_MAGIC) {
            (Codec::Opus, OggStage::OpusTags)
        } else if body.starts_with(vorbis::IDENT_MAGIC) {
            (Codec::Vorbis, OggStage::VorbisComment(page.body.clone()))
        } else if body.starts_with(b"\x7fFLAC") {
            return Err(self.unsupported("Ogg FLAC"));
        } else if body.starts_with(b"Speex") {
            return Err(self.unsupported("Ogg Speex"));
        } else {
            // Skeleton, video or other streams beside the audio: not carried.
            if self.ignored.len() >= MAX_IGNORED_STREAMS {
                return Err(DemuxError::TooManyStreams);
            }
            self.ignored.push(page.serial);
            return Ok(());
        };
        match self.codec {
            Some(Codec::Opus) if codec != Codec::Opus => {
                return Err(DemuxError::CodecSwitch("Ogg Opus, then Ogg Vorbis"))
            }
            Some(Codec::Vorbis) if codec != Codec::Vorbis => {
                return Err(DemuxError::CodecSwitch("Ogg Vorbis, then Ogg Opus"))
            }
            _ => {}
        }
        if codec == Codec::Opus {
            // OpusHead is the whole configuration: announce it now.
            let head = OpusHead::parse(body)?;
            let track = Track::audio(TRACK, Codec::Opus, opus::SAMPLE_RATE, head.channels, bitrate);
            self.announce(track, page.body.clone(), out);
        }
        // A link that gave frames and did not end on one: its successor's first frame says so.
        self.first_pending |= self.open;
        self.open = false;
        self.link_samples = 0;
        self.serial = Some(page.serial);
        self.stage = stage;
        self.packets = Packetizer::new(self.max_packet_bytes);
        Ok(())
    }

    fn unsupported(&self, what: &'static str) -> DemuxError {
        if self.codec.is_some() {
            DemuxError::CodecSwitch(what)
        } else {
            DemuxError::Unsupported(what)
        }
    }

    fn packet(
        &mut self,
        packet: Bytes,
        bitrate: Option<u32>,
        out: &mut Vec<Event>,
    ) -> Result<(), DemuxError> {
        match std::mem::replace(&mut self.stage, OggStage::Idle) {
            OggStage::Idle => {}
            OggStage::OpusTags => {
                let meta = opus::parse_tags(&packet, opus::TAGS_MAGIC)?;
                if meta != Metadata::default() {
                    out.push(Event::Metadata(meta));
                }
                self.stage = OggStage::Opus;
            }
            OggStage::VorbisComment(ident) => {
                let meta = opus::parse_tags(&packet, vorbis::COMMENT_MAGIC)?;
                self.stage = OggStage::VorbisSetup(ident, meta);
            }
            OggStage::VorbisSetup(ident, meta) => {
                let info = VorbisInfo::parse(&ident, &packet)?;
                let comment = vorbis::write_comment(VENDOR, None);
                let header = vorbis::pack_headers(&ident, &comment, &packet);
                let track =
                    Track::audio(TRACK, Codec::Vorbis, info.sample_rate, info.channels, bitrate);
                self.announce(track, header, out);
                if meta != Metadata::default() {
                    out.push(Event::Metadata(meta));
                }
                self.stage = OggStage::Vorbis(Durations::new(info));
            }
            OggStage::Opus => {
                // Ogg allows zero-length packets and liquidsoap ends every chained link with
                // one on its EOS page. It holds no Opus frame (no TOC, no duration): drop it,
                // as libopusfile does, instead of forwarding what no decoder can take.
                if !packet.is_empty() {
                    let samples = opus::packet_samples(&packet)?;
                    let pts = self.clock.advance(opus::SAMPLE_RATE, samples);
                    let edge = self.counted(samples);
                    out.push(Event::Frame { pts, data: packet, edge });
                }
                self.stage = OggStage::Opus;
            }
            OggStage::Vorbis(mut durations) => {
                // An empty Vorbis packet is legal and decodes to nothing.
                if !packet.is_empty() {
                    let samples = durations.next(&packet)?;
                    let pts = self.clock.advance(durations.info().sample_rate, samples);
                    let edge = self.counted(samples);
                    out.push(Event::Frame { pts, data: packet, edge });
                }
                self.stage = OggStage::Vorbis(durations);
            }
        }
        Ok(())
    }

    /// Counts an audio packet of the current link; the edge its frame begins, if any.
    fn counted(&mut self, samples: u32) -> Option<LinkEdge> {
        self.link_samples = self.link_samples.saturating_add(u64::from(samples));
        self.last_samples = samples;
        self.open = true;
        std::mem::take(&mut self.first_pending).then_some(LinkEdge::First)
    }

    /// The link ends on a page of final granule position `granule`, whose events are
    /// `events`: its last frame, when on this page, is marked with the end trim the granule
    /// says. The Vorbis and Opus specs let the last page's granule end before its packets'
    /// full durations; a granule that makes no sense (-1, at or before the last packet's
    /// start, or a link that did not start at 0) trims nothing.
    fn end_link(&mut self, granule: u64, events: &mut [Event]) {
        let last = events.iter_mut().rev().find_map(|e| match e {
            Event::Frame { edge, .. } => Some(edge),
            _ => None,
        });
        if let Some(edge @ None) = last {
            let trim = self
                .link_samples
                .checked_sub(granule)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t < self.last_samples)
                .unwrap_or(0);
            *edge = Some(LinkEdge::Last { trim });
            self.open = false;
        }
        self.link_samples = 0;
    }

    /// The first link declares the track; any link whose header differs sends it again.
    fn announce(&mut self, track: Track, header: Bytes, out: &mut Vec<Event>) {
        if self.codec.is_none() {
            self.codec = Some(track.codec);
            out.push(Event::Start(vec![track]));
        }
        if self.header.as_ref() != Some(&header) {
            out.push(Event::Header(header.clone()));
            self.header = Some(header);
        }
    }
}

/// Presentation time from sample counts, in microseconds; survives sample-rate changes.
#[derive(Debug, Default)]
struct Clock {
    base_us: u64,
    samples: u64,
    rate: u32,
}

impl Clock {
    /// The pts of a frame of `samples` at `rate`, then moves past it.
    /// Saturates at `u64::MAX` microseconds rather than wrapping: the rate and the sample
    /// counts come from the source.
    fn advance(&mut self, rate: u32, samples: u32) -> u64 {
        if rate != self.rate {
            if self.rate > 0 {
                self.base_us = self.base_us.saturating_add(micros(self.samples, self.rate));
            }
            self.samples = 0;
            self.rate = rate;
        }
        let pts = self.base_us.saturating_add(micros(self.samples, rate));
        self.samples = self.samples.saturating_add(u64::from(samples));
        pts
    }
}

/// `samples` at `rate` in microseconds, computed in 128 bits (`samples * 1_000_000` overflows
/// u64 long before the result does).
fn micros(samples: u64, rate: u32) -> u64 {
    let us = u128::from(samples) * 1_000_000 / u128::from(rate.max(1));
    u64::try_from(us).unwrap_or(u64::MAX)
}

#[derive(Debug, Default)]
struct Mp3Demux {
    reader: FrameReader,
    started: bool,
    clock: Clock,
}

impl Mp3Demux {
    fn push(
        &mut self,
        buf: &mut BytesMut,
        bitrate: Option<u32>,
        out: &mut Vec<Event>,
    ) -> Result<(), DemuxError> {
        while let Some((info, data)) = self.reader.next_frame(buf)? {
            if !self.started {
                self.started = true;
                let bitrate = bitrate.or(Some(info.bitrate));
                let track =
                    Track::audio(TRACK, Codec::Mp3, info.sample_rate, info.channels, bitrate);
                out.push(Event::Start(vec![track]));
            }
            let pts = self.clock.advance(info.sample_rate, info.samples);
            out.push(Event::Frame { pts, data, edge: None });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ogg::{PageWriter, FLAG_BOS};

    /// The pts of each event, which must all be frames.
    fn frame_pts(events: &[Event]) -> Vec<u64> {
        events
            .iter()
            .map(|e| match e {
                Event::Frame { pts, .. } => *pts,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn opus_ogg(serial: u32, title: &str, packets: usize) -> BytesMut {
        let (mut scratch, mut pages) = (BytesMut::new(), Vec::new());
        let mut writer = PageWriter::new(serial);
        let head = OpusHead::synthesize(2, 48_000);
        writer.write(&[(head, 0)], FLAG_BOS, false, &mut scratch, &mut pages);
        let meta = Metadata { title: Some(title.into()), ..Metadata::default() };
        writer.write(
            &[(opus::write_tags("test", Some(&meta)), 0)],
            0,
            false,
            &mut scratch,
            &mut pages,
        );
        let audio: Vec<(Bytes, u64)> = (0..packets)
            .map(|i| (Bytes::from(vec![0xFC, i as u8, 1, 2, 3]), (i as u64 + 1) * 960))
            .collect();
        writer.write(&audio, 0, true, &mut scratch, &mut pages);
        pages.iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>().as_slice().into()
    }

    fn run(data: &[u8], chunk: usize) -> Result<Vec<Event>, DemuxError> {
        let mut demux = Demuxer::new(1 << 20, None);
        let (mut buf, mut out) = (BytesMut::new(), Vec::new());
        for piece in data.chunks(chunk) {
            buf.extend_from_slice(piece);
            demux.push(&mut buf, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn ogg_opus_becomes_start_header_metadata_and_timed_frames() {
        let events = run(&opus_ogg(1, "Song", 5), 7).unwrap();
        let Event::Start(tracks) = &events[0] else { panic!("{events:?}") };
        assert_eq!((tracks[0].codec, tracks[0].channels), (Codec::Opus, Some(2)));
        assert!(matches!(&events[1], Event::Header(h) if h.starts_with(b"OpusHead")));
        assert!(matches!(&events[2], Event::Metadata(m) if m.title.as_deref() == Some("Song")));
        let pts = frame_pts(&events[3..]);
        assert_eq!(pts, vec![0, 20_000, 40_000, 60_000, 80_000]);
    }

    #[test]
    fn chained_links_continue_the_timeline_and_update_the_title() {
        let mut data = opus_ogg(1, "One", 2);
        data.extend_from_slice(&opus_ogg(2, "Two", 2));
        let events = run(&data, 4096).unwrap();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                Event::Start(_) => "start",
                Event::Header(_) => "header",
                Event::Metadata(_) => "meta",
                Event::Frame { .. } => "frame",
            })
            .collect();
        assert_eq!(kinds, ["start", "header", "meta", "frame", "frame", "meta", "frame", "frame"]);
        assert!(matches!(&events[5], Event::Metadata(m) if m.title.as_deref() == Some("Two")));
        assert!(matches!(events[7], Event::Frame { pts: 60_000, .. }));
    }

    #[test]
    fn garbage_and_switches_are_errors() {
        let broken = include_bytes!("../../samples/broken.mp3");
        assert!(matches!(run(broken, 100), Err(DemuxError::Unrecognised(_))));
        let vorbis = include_bytes!("../../samples/music.ogg");
        let mut switch = opus_ogg(1, "x", 2);
        switch.extend_from_slice(&vorbis[..4096]);
        assert_eq!(
            run(&switch, 100).unwrap_err(),
            DemuxError::CodecSwitch("Ogg Opus, then Ogg Vorbis")
        );
        let mut to_mp3 = opus_ogg(1, "x", 2);
        to_mp3.extend_from_slice(include_bytes!("../../samples/sweep.mp3"));
        assert!(matches!(run(&to_mp3, 100), Err(DemuxError::Ogg(OggError::NoCapturePattern(_)))));
        let bad_opus = {
            let (mut scratch, mut pages) = (BytesMut::new(), Vec::new());
            let mut w = PageWriter::new(3);
            w.write(
                &[(OpusHead::synthesize(1, 48_000), 0)],
                FLAG_BOS,
                false,
                &mut scratch,
                &mut pages,
            );
            w.write(&[(opus::write_tags("t", None), 0)], 0, false, &mut scratch, &mut pages);
            w.write(&[(Bytes::from_static(&[0xFB]), 0)], 0, false, &mut scratch, &mut pages);
            pages.concat()
        };
        assert_eq!(
            run(&bad_opus, 50).unwrap_err(),
            DemuxError::Opus(OpusError::BadPacket("code 3 packet without a frame count"))
        );
    }

    /// Link `serial` as liquidsoap's `%opus` writes it: its EOS page ends with a zero-length
    /// packet after the audio.
    fn liquidsoap_link(serial: u32, title: &str) -> Vec<u8> {
        let (mut scratch, mut pages) = (BytesMut::new(), Vec::new());
        let mut writer = PageWriter::new(serial);
        writer.write(
            &[(OpusHead::synthesize(2, 48_000), 0)],
            FLAG_BOS,
            false,
            &mut scratch,
            &mut pages,
        );
        let meta = Metadata { title: Some(title.into()), ..Metadata::default() };
        let tags = opus::write_tags("Liquidsoap", Some(&meta));
        writer.write(&[(tags, 0)], 0, false, &mut scratch, &mut pages);
        let audio = [
            (Bytes::from_static(&[0xFC, 1, 2]), 960),
            (Bytes::from_static(&[0xFC, 3, 4]), 1920),
            (Bytes::new(), 1920),
        ];
        writer.write(&audio, 0, true, &mut scratch, &mut pages);
        pages.concat()
    }

    #[test]
    fn an_empty_packet_ending_a_chained_link_is_skipped_and_the_source_stays() {
        // Regression: liquidsoap's `%opus` with a track change every few seconds was closed at
        // every change ("empty Opus packet").
        let mut data = liquidsoap_link(7, "One");
        data.extend_from_slice(&liquidsoap_link(8, "Two"));
        let events = run(&data, 33).unwrap();
        let titles: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Metadata(m) => m.title.as_deref(),
                _ => None,
            })
            .collect();
        assert_eq!(titles, ["One", "Two"]);
        let frames: Vec<&Event> =
            events.iter().filter(|e| matches!(e, Event::Frame { .. })).collect();
        assert_eq!(frames.len(), 4, "the empty packets are not frames: {events:?}");
        let pts: Vec<u64> = frames
            .iter()
            .map(|e| match e {
                Event::Frame { pts, .. } => *pts,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(pts, [0, 20_000, 40_000, 60_000], "they take no time either");
    }

    /// An Opus link of `packets` 20 ms packets whose last page says `end` (its final granule;
    /// `None`: the link has no EOS page).
    fn opus_link(serial: u32, packets: u64, end: Option<u64>) -> Vec<u8> {
        let (mut scratch, mut pages) = (BytesMut::new(), Vec::new());
        let mut writer = PageWriter::new(serial);
        let head = OpusHead::synthesize(2, 48_000);
        writer.write(&[(head, 0)], FLAG_BOS, false, &mut scratch, &mut pages);
        writer.write(&[(opus::write_tags("t", None), 0)], 0, false, &mut scratch, &mut pages);
        let audio: Vec<(Bytes, u64)> =
            (1..=packets).map(|i| (Bytes::from(vec![0xFC, i as u8]), i * 960)).collect();
        let (body, last) = audio.split_at(audio.len() - 1);
        writer.write(body, 0, false, &mut scratch, &mut pages);
        let last = [(last[0].0.clone(), end.unwrap_or(last[0].1))];
        writer.write(&last, 0, end.is_some(), &mut scratch, &mut pages);
        pages.concat()
    }

    fn edges(events: &[Event]) -> Vec<Option<LinkEdge>> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame { edge, .. } => Some(*edge),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_links_last_frame_carries_the_end_trim_of_its_final_granule() {
        // Regression (#15): chained links with the same codec setup reached listeners as one
        // link, the end trim of each lost.
        let mut data = opus_link(1, 3, Some(3 * 960 - 100));
        data.extend_from_slice(&opus_link(2, 2, Some(2 * 960)));
        let events = run(&data, 50).unwrap();
        let last = |trim| Some(LinkEdge::Last { trim });
        assert_eq!(edges(&events), [None, None, last(100), None, last(0)]);
        assert_eq!(events.iter().filter(|e| matches!(e, Event::Header(_))).count(), 1);
    }

    #[test]
    fn a_final_granule_that_makes_no_sense_trims_nothing() {
        // At or before the last packet's start, -1, past the end: the link still ends there.
        for end in [960, u64::MAX, 4 * 960, 0] {
            let events = run(&opus_link(1, 2, Some(end)), 4096).unwrap();
            assert_eq!(edges(&events), [None, Some(LinkEdge::Last { trim: 0 })], "granule {end}");
        }
    }

    #[test]
    fn a_link_that_ends_without_a_frame_on_its_eos_page_marks_the_next_links_first() {
        let mut data = opus_link(1, 2, None);
        data.extend_from_slice(&opus_link(2, 2, None));
        data.extend_from_slice(&opus_link(3, 1, Some(960)));
        let events = run(&data, 4096).unwrap();
        let first = Some(LinkEdge::First);
        let last = Some(LinkEdge::Last { trim: 0 });
        assert_eq!(edges(&events), [None, None, first, None, first]);
        // The one frame of the third link begins it: the link after it is told.
        let mut data = opus_link(3, 1, Some(960));
        data.extend_from_slice(&opus_link(4, 1, Some(960)));
        assert_eq!(edges(&run(&data, 4096).unwrap()), [last, last]);
    }

    /// xorshift64: deterministic noise for the robustness test.
    fn noise(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn mangled_input_never_panics_and_stays_bounded() {
        let mp3 = include_bytes!("../../samples/sweep.mp3");
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..400 {
            let mut data = match round % 3 {
                0 => opus_ogg(round, "x", 20).to_vec(),
                1 => mp3[..8000].to_vec(),
                _ => {
                    // Valid pages (good CRCs) around random packets: reaches the Opus checks.
                    let (mut scratch, mut pages) = (BytesMut::new(), Vec::new());
                    let mut w = PageWriter::new(round);
                    for i in 0..10 {
                        let len = (noise(&mut seed) % 300) as usize;
                        let mut packet: Vec<u8> =
                            (0..len).map(|_| noise(&mut seed) as u8).collect();
                        if i == 0 && len >= 19 {
                            packet[..8].copy_from_slice(opus::HEAD_MAGIC);
                        }
                        let flags = if i == 0 { FLAG_BOS } else { (noise(&mut seed) % 8) as u8 };
                        w.write(
                            &[(Bytes::from(packet), 0)],
                            flags,
                            false,
                            &mut scratch,
                            &mut pages,
                        );
                    }
                    pages.concat()
                }
            };
            for _ in 0..(noise(&mut seed) % 8) {
                let at = (noise(&mut seed) as usize) % data.len();
                data[at] = noise(&mut seed) as u8;
            }
            let mut demux = Demuxer::new(64 << 10, None);
            let (mut buf, mut out) = (BytesMut::new(), Vec::new());
            let chunk = 1 + (noise(&mut seed) % 3000) as usize;
            for piece in data.chunks(chunk) {
                buf.extend_from_slice(piece);
                if demux.push(&mut buf, &mut out).is_err() {
                    break;
                }
                assert!(
                    buf.len() <= ogg::MAX_PAGE_BYTES + chunk,
                    "round {round}: {} buffered",
                    buf.len()
                );
            }
        }
    }

    #[test]
    fn ogg_vorbis_becomes_one_header_frame_and_timed_frames() {
        let events = run(include_bytes!("../../samples/music.ogg"), 999).unwrap();
        let Event::Start(tracks) = &events[0] else { panic!("{:?}", events[0]) };
        assert_eq!((tracks[0].codec, tracks[0].sample_rate), (Codec::Vorbis, Some(44_100)));
        let Event::Header(header) = &events[1] else { panic!("{:?}", events[1]) };
        let Event::Metadata(meta) = &events[2] else { panic!("{:?}", events[2]) };
        assert_eq!(meta.title.as_deref(), Some("Onair Arpeggio"));
        let [ident, _, setup] = vorbis::unpack_headers(header).unwrap();
        assert!(VorbisInfo::parse(&ident, &setup).is_ok());
        let pts = frame_pts(&events[3..]);
        assert!(pts.windows(2).all(|w| w[0] <= w[1]), "monotonic");
        let last = *pts.last().unwrap();
        assert!((8_900_000..9_100_000).contains(&last), "the last frame starts near 9 s: {last}");
    }

    /// `samples * 1_000_000` overflowed u64 (a panic in debug builds) once a link had counted
    /// about 1.8e13 samples, which a source declaring a tiny Vorbis rate reaches far sooner.
    #[test]
    fn the_clock_does_not_overflow_on_huge_sample_counts() {
        let mut clock = Clock::default();
        clock.advance(1, 0);
        clock.samples = u64::MAX / 1000;
        let pts = clock.advance(1, 4096);
        assert_eq!(pts, u64::MAX, "saturates instead of wrapping");
        assert_eq!(clock.advance(2, 4096), u64::MAX, "a rate change keeps it saturated");
        let mut clock = Clock::default();
        clock.advance(48_000, 960);
        assert_eq!(clock.advance(48_000, 960), 20_000);
    }

    #[test]
    fn mp3_frames_get_pts_from_sample_counts() {
        let events = run(include_bytes!("../../samples/sweep.mp3"), 1000).unwrap();
        let Event::Start(tracks) = &events[0] else { panic!() };
        assert_eq!((tracks[0].codec, tracks[0].sample_rate), (Codec::Mp3, Some(44_100)));
        assert!(matches!(events[1], Event::Frame { pts: 0, .. }));
        assert!(matches!(events[2], Event::Frame { pts: 26_122, .. }), "{:?}", events[2]);
    }
}
