//! One stream's HLS window: its frames cut into parts and segments, kept in memory for the
//! last few segments, and the playlist that lists them. Pure: the stream's items and the time
//! go in; bytes and text come out.
//!
//! Opus streams become fragmented MP4 (an init segment per link, a `moof`+`mdat` per part);
//! MP3 streams become packed audio (MP3 frames after an ID3 tag with the timestamp). A new
//! source, or a new codec header, starts a new link: the next segment opens with
//! `EXT-X-DISCONTINUITY` (and, for MP4, a new `EXT-X-MAP`), with media time from 0 and its
//! `EXT-X-PROGRAM-DATE-TIME` from the wall clock of its first frame.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};

use crate::format::mp3;
use crate::format::mp4::{self, OPUS_TIMESCALE};
use crate::format::opus::{self, OpusHead};
use crate::format::{id3, Container};
use crate::protocol::{Codec, Metadata, Track, TrackKind};
use crate::time::rfc3339;

/// The packed-audio clock (RFC 8216 §3.4).
const PTS_HZ: u64 = 90_000;

/// How the window cuts.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Longest part (`EXT-X-PART-INF:PART-TARGET`).
    pub part: Duration,
    /// Longest segment (`EXT-X-TARGETDURATION`, rounded up to whole seconds).
    pub segment: Duration,
    /// Segments kept (the playlist lists them all).
    pub segments: usize,
}

/// What a link's segments are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opus in fragmented MP4.
    Mp4,
    /// MP3 packed audio.
    Mp3,
}

impl Kind {
    /// The file extension of segments and parts.
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Mp4 => "m4s",
            Kind::Mp3 => "mp3",
        }
    }

    /// The `Content-Type` of segments and parts.
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Mp4 => "audio/mp4",
            Kind::Mp3 => Container::Mp3.content_type(),
        }
    }
}

/// One part: its bytes and its duration. An MP3 part served on its own starts with its own
/// timestamp tag; inside a segment only the segment's first tag is written.
#[derive(Debug, Clone)]
pub struct Part {
    /// The part's ID3 tag (MP3 only).
    pub tag: Option<Bytes>,
    /// An MP4 fragment, or MP3 frames.
    pub data: Bytes,
    /// Seconds.
    pub duration: f64,
}

/// One segment of the window.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// The link it belongs to (its init segment for MP4).
    pub link: u64,
    /// Its format.
    pub kind: Kind,
    /// It starts a new link.
    pub discontinuity: bool,
    /// Wall-clock time of its first sample.
    pub date: SystemTime,
    /// Its parts so far.
    pub parts: Vec<Part>,
    /// No part will be added.
    pub complete: bool,
}

impl Segment {
    /// Seconds.
    pub fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }

    /// The pieces of the whole segment, in order.
    pub fn pieces(&self) -> Vec<Bytes> {
        let mut pieces = Vec::with_capacity(self.parts.len() + 1);
        if let Some(tag) = self.parts.first().and_then(|p| p.tag.clone()) {
            pieces.push(tag);
        }
        pieces.extend(self.parts.iter().map(|p| p.data.clone()));
        pieces
    }
}

/// A now-playing change, for `EXT-X-DATERANGE`.
#[derive(Debug, Clone)]
struct Title {
    id: u64,
    date: SystemTime,
    text: String,
}

/// The link being written.
#[derive(Debug)]
struct Link {
    id: u64,
    kind: Kind,
    /// A segment of this link is yet to start (it opens with a discontinuity).
    fresh: bool,
}

/// One stream's window.
#[derive(Debug)]
pub struct Window {
    shape: Shape,
    track: Option<Track>,
    /// The newest codec header of the track (OpusHead).
    header: Option<Bytes>,
    link: Option<Link>,
    inits: VecDeque<(u64, Bytes)>,
    links: u64,
    segments: VecDeque<Segment>,
    next_msn: u64,
    /// Discontinuities that left the window (`EXT-X-DISCONTINUITY-SEQUENCE`).
    discontinuities: u64,
    /// The part being filled: samples (MP4) or frames (MP3), with their durations.
    pending: Vec<(Bytes, u32)>,
    pending_ticks: u64,
    /// Media time in the link's clock (48 kHz for Opus, the MP3 sample rate, 90 kHz PTS).
    clock: u64,
    rate: u32,
    /// Wall-clock time at media time 0 of the current clock.
    anchor: Option<(SystemTime, u64)>,
    fragments: u32,
    metadata: Option<Metadata>,
    titles: VecDeque<Title>,
    next_title: u64,
    /// Changes to what the playlist lists: a part, a segment's end, a title.
    version: u64,
}

impl Window {
    /// An empty window cut as `shape` says.
    pub fn new(shape: Shape) -> Self {
        Self {
            shape,
            track: None,
            header: None,
            link: None,
            inits: VecDeque::new(),
            links: 0,
            segments: VecDeque::new(),
            next_msn: 0,
            discontinuities: 0,
            pending: Vec::new(),
            pending_ticks: 0,
            clock: 0,
            rate: OPUS_TIMESCALE,
            anchor: None,
            fragments: 0,
            metadata: None,
            titles: VecDeque::new(),
            next_title: 0,
            version: 0,
        }
    }

    /// A source the window can cut is on, and nothing is cut yet: its first part is coming.
    pub fn is_starting(&self) -> bool {
        self.track.is_some() && self.segments.is_empty()
    }

    /// Grows whenever the playlist would read differently: the same version, the same text.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A new source with these tracks: the open part and segment end, a new link begins.
    pub fn source(&mut self, tracks: &[Track]) {
        self.end_segment();
        self.link = None;
        self.header = None;
        self.track = tracks
            .iter()
            .find(|t| t.kind == TrackKind::Audio && matches!(t.codec, Codec::Opus | Codec::Mp3))
            .cloned();
    }

    /// The source is gone: what is open ends.
    pub fn offline(&mut self) {
        self.end_segment();
        self.link = None;
        self.track = None;
    }

    /// A header frame on `track`: a different OpusHead starts a new link.
    pub fn header(&mut self, track: u8, payload: &Bytes) {
        let Some(t) = &self.track else { return };
        if t.id != track || t.codec != Codec::Opus || OpusHead::parse(payload).is_err() {
            return;
        }
        if self.header.as_ref().is_some_and(|h| h != payload) {
            self.end_segment();
            self.link = None;
        }
        self.header = Some(payload.clone());
    }

    /// Now playing changed at `now`.
    pub fn metadata(&mut self, meta: Option<Metadata>, now: SystemTime) {
        if let Some(meta) = &meta {
            let text = meta.display_title();
            if !text.is_empty() {
                self.next_title += 1;
                self.titles.push_back(Title { id: self.next_title, date: now, text });
                self.version += 1;
            }
        }
        self.metadata = meta;
    }

    /// A media frame on `track`, arrived at `now`. Returns whether a part was completed.
    pub fn frame(&mut self, track: u8, payload: &Bytes, now: SystemTime) -> bool {
        let Some(t) = &self.track else { return false };
        if t.id != track || payload.is_empty() {
            return false;
        }
        let ticks = match t.codec {
            Codec::Opus => match opus::packet_samples(payload) {
                Ok(samples) => samples,
                Err(_) => return false,
            },
            Codec::Mp3 => match mp3::parse_header(payload) {
                Some(info) if info.len <= payload.len() => {
                    if self.link.is_none() || self.rate != info.sample_rate {
                        self.rate = info.sample_rate;
                    }
                    info.samples
                }
                _ => return false,
            },
            _ => return false,
        };
        if self.link.is_none() && !self.open_link() {
            return false;
        }
        if self.anchor.is_none() {
            self.anchor = Some((now, self.clock));
        }
        self.pending.push((payload.clone(), ticks));
        self.pending_ticks += u64::from(ticks);
        let part = self.ticks(self.shape.part);
        // Close the part when one more frame like this one would make it too long.
        if self.pending_ticks + u64::from(ticks) > part {
            self.close_part();
            return true;
        }
        false
    }

    /// Time as ticks of the current clock.
    fn ticks(&self, duration: Duration) -> u64 {
        (duration.as_secs_f64() * f64::from(self.rate)).round() as u64
    }

    /// Opens a link for the current track; false when it cannot be written yet.
    fn open_link(&mut self) -> bool {
        let Some(track) = &self.track else { return false };
        let (kind, init) = match track.codec {
            Codec::Opus => {
                let header = self.header.clone().unwrap_or_else(|| {
                    OpusHead::synthesize(
                        track.channels.unwrap_or(2),
                        track.sample_rate.unwrap_or(48_000),
                    )
                });
                let Ok(head) = OpusHead::parse(&header) else { return false };
                if head.mapping_family != 0 {
                    return false; // TODO(#16): multichannel Opus in MP4 needs the mapping table
                }
                self.header = Some(header);
                self.rate = OPUS_TIMESCALE;
                (Kind::Mp4, Some(mp4::opus_init(&head)))
            }
            Codec::Mp3 => (Kind::Mp3, None),
            _ => return false,
        };
        // A link has a clock of its own (the discontinuity tells players), set against the
        // wall clock when its first frame arrives: a source may have been gone for a while.
        self.anchor = None;
        self.clock = 0;
        self.links += 1;
        if let Some(init) = &init {
            self.inits.push_back((self.links, init.clone()));
        }
        self.link = Some(Link { id: self.links, kind, fresh: true });
        true
    }

    /// Turns the pending frames into a part of the open segment (opening one if needed).
    fn close_part(&mut self) {
        let Some(link) = &mut self.link else { return };
        if self.pending.is_empty() {
            return;
        }
        let start = self.clock;
        let duration = self.pending_ticks as f64 / f64::from(self.rate);
        let (tag, data) = match link.kind {
            Kind::Mp4 => {
                self.fragments = self.fragments.wrapping_add(1);
                (None, mp4::fragment(self.fragments, start, &self.pending))
            }
            Kind::Mp3 => {
                let pts = start * PTS_HZ / u64::from(self.rate.max(1));
                let mut frames =
                    BytesMut::with_capacity(self.pending.iter().map(|(f, _)| f.len()).sum());
                for (frame, _) in &self.pending {
                    frames.extend_from_slice(frame);
                }
                (Some(id3::segment_tag(pts, self.metadata.as_ref())), frames.freeze())
            }
        };
        self.pending.clear();
        self.clock += self.pending_ticks;
        self.pending_ticks = 0;
        let part = Part { tag, data, duration };
        let open = self.segments.back_mut().filter(|s| !s.complete);
        let segment = match open {
            Some(segment) => segment,
            None => {
                let date = self.anchor.map_or(SystemTime::now(), |(date, at)| {
                    date + Duration::from_secs_f64(
                        start.saturating_sub(at) as f64 / f64::from(self.rate),
                    )
                });
                let discontinuity = std::mem::take(&mut link.fresh) && self.next_msn > 0;
                self.segments.push_back(Segment {
                    msn: self.next_msn,
                    link: link.id,
                    kind: link.kind,
                    discontinuity,
                    date,
                    parts: Vec::new(),
                    complete: false,
                });
                self.next_msn += 1;
                self.segments.back_mut().expect("just pushed")
            }
        };
        segment.parts.push(part);
        self.version += 1;
        let full = segment.duration() + self.shape.part.as_secs_f64()
            > self.shape.segment.as_secs_f64() + 1e-6;
        if full {
            segment.complete = true;
            self.trim();
        }
    }

    /// Ends the open part and segment (a source change, a new header, going offline).
    fn end_segment(&mut self) {
        self.close_part();
        if let Some(segment) = self.segments.back_mut() {
            if !segment.complete {
                segment.complete = true;
                self.version += 1;
                self.trim();
            }
        }
    }

    /// Drops the oldest segments past the window, with the inits and titles only they used.
    fn trim(&mut self) {
        while self.segments.len() > self.shape.segments {
            let Some(old) = self.segments.pop_front() else { break };
            if old.discontinuity {
                self.discontinuities += 1;
            }
        }
        let oldest_link = self.segments.front().map_or(self.links, |s| s.link);
        while self.inits.front().is_some_and(|(id, _)| *id < oldest_link) {
            self.inits.pop_front();
        }
        if let Some(first) = self.segments.front().map(|s| s.date) {
            // Keep the title playing when the window starts, and the ones after it.
            while self.titles.len() > 1 && self.titles.get(1).is_some_and(|t| t.date <= first) {
                self.titles.pop_front();
            }
        }
    }

    /// The init segment of link `id`, while a segment of the window uses it.
    pub fn init(&self, id: u64) -> Option<Bytes> {
        self.inits.iter().find(|(link, _)| *link == id).map(|(_, init)| init.clone())
    }

    /// Segment `msn`, while in the window.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        self.segments.get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }

    /// The newest part: (msn, part index), or `None` before the first.
    pub fn newest_part(&self) -> Option<(u64, usize)> {
        let last = self.segments.back()?;
        match last.parts.len() {
            0 => None,
            n => Some((last.msn, n - 1)),
        }
    }

    /// Whether part `part` of segment `msn` exists (or is older than the window).
    pub fn has_part(&self, msn: u64, part: usize) -> bool {
        match self.newest_part() {
            Some((newest_msn, newest_part)) => {
                msn < newest_msn || (msn == newest_msn && part <= newest_part)
            }
            None => false,
        }
    }

    /// Whether `msn` is past what the window will ever list next (a client asking too far).
    pub fn is_far_future(&self, msn: u64) -> bool {
        msn > self.next_msn + 1
    }

    /// The media playlist. `uri` makes a path (under `base`) for a file name; `query` is
    /// appended to every URI (a signed link's parameters).
    pub fn playlist(&self, base: &str, query: &str) -> Option<String> {
        let first = self.segments.front()?;
        let kind = first.kind;
        let target = self.shape.segment.as_secs_f64().ceil().max(1.0) as u64;
        let part_target = self.shape.part.as_secs_f64();
        let mut out = String::with_capacity(2048);
        out.push_str("#EXTM3U\n#EXT-X-VERSION:9\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},HOLD-BACK={:.3}",
            part_target * 3.0,
            target as f64 * 3.0
        );
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", first.msn);
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.discontinuities);
        let uri = |name: String| format!("{base}{name}{query}");
        // Parts are listed for the last segments only (RFC 8216bis: three target durations).
        let parts_from = self.segments.len().saturating_sub(3);
        let mut map = None;
        for (at, segment) in self.segments.iter().enumerate() {
            if segment.discontinuity && at > 0 {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if segment.kind == Kind::Mp4 && map != Some(segment.link) {
                let _ = writeln!(
                    out,
                    "#EXT-X-MAP:URI=\"{}\"",
                    uri(format!("init-{}.mp4", segment.link))
                );
                map = Some(segment.link);
            }
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339(segment.date));
            // A title is listed with the segment it starts in (one that started before the
            // window with the first segment, one that started after the last with the last).
            let end = segment.date + Duration::from_secs_f64(segment.duration());
            let last = at + 1 == self.segments.len();
            let starts_here =
                |t: &&Title| (at == 0 || t.date >= segment.date) && (last || t.date < end);
            for title in self.titles.iter().filter(starts_here) {
                let _ = writeln!(
                    out,
                    "#EXT-X-DATERANGE:ID=\"title-{}\",CLASS=\"com.onair.now-playing\",START-DATE=\"{}\",X-TITLE=\"{}\"",
                    title.id,
                    rfc3339(title.date),
                    quoted(&title.text)
                );
            }
            if at >= parts_from {
                for (index, part) in segment.parts.iter().enumerate() {
                    let name = format!("{}.{index}.{}", segment.msn, kind.extension());
                    let _ = writeln!(
                        out,
                        "#EXT-X-PART:DURATION={:.5},URI=\"{}\",INDEPENDENT=YES",
                        part.duration,
                        uri(name)
                    );
                }
            }
            if segment.complete {
                let _ = writeln!(out, "#EXTINF:{:.5},", segment.duration());
                out.push_str(&uri(format!("{}.{}", segment.msn, kind.extension())));
                out.push('\n');
            }
        }
        // The next part, which a client may ask for before it exists (it is held until then).
        let (msn, part) = match self.segments.back() {
            Some(last) if !last.complete => (last.msn, last.parts.len()),
            _ => (self.next_msn, 0),
        };
        let hint = uri(format!("{msn}.{part}.{}", kind.extension()));
        let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
        Some(out)
    }
}

/// An attribute value for a quoted string: no quotes, no line breaks.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' {
                '\''
            } else if c.is_control() {
                ' '
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::opus::OpusHead;

    const SHAPE: Shape = Shape {
        part: Duration::from_millis(200),
        segment: Duration::from_millis(2000),
        segments: 3,
    };

    fn opus() -> Vec<Track> {
        vec![Track::audio(0, Codec::Opus, 48_000, 2, None)]
    }

    /// A 20 ms Opus packet (TOC config 31: CELT FB 20 ms, one frame).
    fn packet(n: u8) -> Bytes {
        Bytes::from(vec![0xF8, n, n, n])
    }

    fn feed(window: &mut Window, frames: usize, now: SystemTime) -> usize {
        (0..frames).filter(|i| window.frame(0, &packet(*i as u8), now)).count()
    }

    #[test]
    fn opus_frames_make_200_ms_parts_and_2_s_segments() {
        let now = SystemTime::now();
        let mut window = Window::new(SHAPE);
        window.source(&opus());
        window.header(0, &OpusHead::synthesize(2, 48_000));
        assert_eq!(feed(&mut window, 25, now), 2, "10 frames a part");
        assert_eq!(window.newest_part(), Some((0, 1)));
        assert!(window.has_part(0, 1) && !window.has_part(0, 2));
        let text = window.playlist("/hls/r/", "").unwrap();
        assert!(text.contains("#EXT-X-MAP:URI=\"/hls/r/init-1.mp4\""), "{text}");
        assert!(text.contains("URI=\"/hls/r/0.1.m4s\""), "{text}");
        assert!(!text.contains("#EXTINF"), "no segment is complete yet: {text}");
        assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"/hls/r/0.2.m4s\"\n"), "{text}");
        feed(&mut window, 75, now);
        let segment = window.segment(0).unwrap();
        assert!(segment.complete);
        assert_eq!(segment.parts.len(), 10);
        assert!((segment.duration() - 2.0).abs() < 1e-9);
        assert!(window.init(1).is_some());
        // The window keeps three segments: the media sequence moves on.
        feed(&mut window, 300, now);
        let text = window.playlist("/hls/r/", "?sig=x").unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{text}");
        assert!(text.contains("#EXTINF:2.00000,\n/hls/r/3.m4s?sig=x\n"), "{text}");
        assert!(window.segment(0).is_none(), "gone from the window");
        assert!(
            window.is_far_future(window.next_msn + 2) && !window.is_far_future(window.next_msn)
        );
    }

    #[test]
    fn a_new_source_starts_a_new_link_after_a_discontinuity() {
        let now = SystemTime::now();
        let mut window = Window::new(SHAPE);
        window.source(&opus());
        feed(&mut window, 130, now);
        // The live source comes: the open segment ends short, the next opens a new link.
        window.source(&[Track::audio(0, Codec::Opus, 48_000, 1, None)]);
        window.header(0, &OpusHead::synthesize(1, 48_000));
        assert!(window.segment(1).unwrap().complete);
        feed(&mut window, 30, now);
        let text = window.playlist("/", "").unwrap();
        let after = text.split("#EXT-X-DISCONTINUITY\n").nth(1).expect("a discontinuity");
        assert!(after.starts_with("#EXT-X-MAP:URI=\"/init-2.mp4\""), "{text}");
        assert!(window.init(2).is_some());
        assert!(text.contains("#EXTINF:0.60000,\n/1.m4s"), "the short segment: {text}");
        // Once the discontinuity leaves the window it is counted.
        feed(&mut window, 1000, now);
        assert!(window.playlist("/", "").unwrap().contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert!(window.init(1).is_none(), "the old init left with its segments");
    }

    #[test]
    fn mp3_parts_are_packed_audio_with_their_timestamp() {
        let now = SystemTime::now();
        let mut window = Window::new(SHAPE);
        let mut track = Track::audio(0, Codec::Mp3, 44_100, 2, None);
        track.bitrate = Some(128_000);
        window.source(&[track]);
        // MPEG-1 Layer III, 128 kbit/s, 44.1 kHz: 417 bytes, 1152 samples (26.1 ms).
        let mut frame = vec![0u8; 417];
        frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
        let frame = Bytes::from(frame);
        let parts = (0..160).filter(|_| window.frame(0, &frame, now)).count();
        assert!(parts >= 20, "{parts} parts");
        let segment = window.segment(0).unwrap();
        assert_eq!(segment.kind, Kind::Mp3);
        assert!(segment.parts.iter().all(|p| p.duration <= 0.2), "parts within the target");
        assert!(segment.duration() <= 2.0 && segment.duration() > 1.7);
        let pieces = segment.pieces();
        assert!(pieces[0].starts_with(b"ID3"), "one tag at the start");
        assert!(pieces[1..].iter().all(|p| p.starts_with(&[0xFF, 0xFB])), "then frames");
        let second = &window.segment(0).unwrap().parts[1];
        assert!(second.tag.as_ref().is_some_and(|t| t.starts_with(b"ID3")), "a part's own tag");
        assert!(!window.playlist("/", "").unwrap().contains("EXT-X-MAP"), "no init for MP3");
    }

    #[test]
    fn the_playlist_reads_the_same_while_the_version_does_not_change() {
        // The relay renders a playlist once per version for every client: a change the
        // version misses would serve a stale playlist.
        let start = SystemTime::now();
        let mut window = Window::new(SHAPE);
        let meta = |t: &str| Some(Metadata { title: Some(t.into()), ..Metadata::default() });
        let mut seen = (window.version(), window.playlist("/", ""));
        let mut versions = 0;
        let mut check = |window: &Window, what: &str| {
            let now = (window.version(), window.playlist("/", ""));
            if now.0 == seen.0 {
                assert_eq!(now.1, seen.1, "{what}: the text changed, the version did not");
            } else {
                assert!(now.0 > seen.0, "{what}: versions only grow");
                versions += 1;
            }
            seen = now;
        };
        for step in 0..400u32 {
            let at = start + Duration::from_millis(u64::from(step) * 20);
            match step {
                0 | 250 => window.source(&opus()),
                120 => window.metadata(meta("A title"), at),
                180 => window.offline(),
                300 => window.header(0, &OpusHead::synthesize(1, 48_000)),
                _ => {
                    window.frame(0, &packet(step as u8), at);
                }
            }
            check(&window, &format!("step {step}"));
        }
        assert!(versions > 20, "parts, segment ends and titles each change it: {versions}");
    }

    #[test]
    fn titles_are_listed_with_the_segment_they_start_in() {
        let start = SystemTime::now();
        let mut window = Window::new(SHAPE);
        window.source(&opus());
        let meta = |t: &str| Some(Metadata { title: Some(t.into()), ..Metadata::default() });
        window.metadata(meta("First"), start);
        feed(&mut window, 100, start);
        window.metadata(meta("Second \"quoted\""), start + Duration::from_millis(2500));
        feed(&mut window, 100, start);
        let text = window.playlist("/", "").unwrap();
        let first = text.find("X-TITLE=\"First\"").unwrap();
        let second = text.find("X-TITLE=\"Second 'quoted'\"").unwrap();
        let segment_1 = text.find("/1.m4s").unwrap();
        assert!(first < text.find("/0.m4s").unwrap());
        assert!(second > text.find("/0.m4s").unwrap() && second < segment_1, "{text}");
    }
}
