//! Writing a stream into the container its HTTP listeners read, once for all of them: Ogg
//! pages for Opus and Vorbis, MP3 frames as they are.
//!
//! Pure: a stream's source changes, header frames, media frames and now playing go in; each
//! media frame comes out with its [`Rendition`], shared by every HTTP listener (the way the
//! WebSocket header is framed once). An Ogg stream is a chain of logical streams: a new one
//! starts (with a fresh serial) when the source or its codec header changes or where the
//! source's own chained link ends ([`LinkEdge`]), and ends with an EOS page. A listener that
//! joins or skips gets the chain's header pages ([`Chain::head`], with the current now playing
//! in its comment) and then joins at a page boundary: every frame is a page of its own (but a
//! Vorbis link's first, which shares the second's). Players accept the jump in page sequence
//! numbers that this makes, as they do from Icecast.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::ogg::{PageWriter, FLAG_BOS};
use super::opus::{self, OpusHead};
use super::vorbis::{self, Durations, VorbisInfo};
use super::{Container, LinkEdge};
use crate::protocol::{Codec, Metadata, Track, TrackKind};

/// Vendor string of the `OpusTags` and Vorbis comments written for listeners.
const VENDOR: &str = concat!("onair ", env!("CARGO_PKG_VERSION"));

/// The container an HTTP listener reads for a codec; `None` when onair serves that codec
/// over WebSocket only.
pub fn container_for(codec: Codec) -> Option<Container> {
    match codec {
        Codec::Opus | Codec::Vorbis => Some(Container::Ogg),
        Codec::Mp3 => Some(Container::Mp3),
        _ => None,
    }
}

/// The audio track HTTP listeners hear: the first audio track whose codec has a container.
pub fn http_track(tracks: &[Track]) -> Option<&Track> {
    tracks.iter().find(|t| t.kind == TrackKind::Audio && container_for(t.codec).is_some())
}

/// A media frame as HTTP listeners receive it.
#[derive(Clone, Debug)]
pub enum Rendition {
    /// An MP3 frame, as the source sent it.
    Mp3(Bytes),
    /// An Ogg page holding the frame, and the logical stream it belongs to.
    Ogg {
        /// The page header (27 bytes and the lacing values).
        head: Bytes,
        /// The packet: the source's own bytes, shared (a packet too large for one page comes
        /// as whole pages here, and `head` is empty).
        body: Bytes,
        /// The chain link (logical stream) of the page.
        chain: Arc<Chain>,
    },
}

impl Rendition {
    /// Bytes this rendition holds that the source's frame does not (a page header).
    pub fn extra_bytes(&self) -> usize {
        match self {
            Rendition::Mp3(_) => 0,
            Rendition::Ogg { head, body, .. } => {
                head.len() + if head.is_empty() { body.len() } else { 0 }
            }
        }
    }
}

/// One logical Ogg stream of a stream's chain.
#[derive(Debug)]
pub struct Chain {
    id: u64,
    /// BOS page and comment (and Vorbis setup) pages; the comment follows now playing.
    head: Mutex<Bytes>,
    /// The end-of-stream page of the link before this one, and that link's id.
    after: Option<(u64, Bytes)>,
}

impl Chain {
    /// Numbers links in the order they started (never 0).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The header pages a listener writes before this link's first page.
    pub fn head(&self) -> Bytes {
        self.head.lock().expect("chain head lock poisoned").clone()
    }

    /// The EOS page that ends link `previous`, when this link follows it directly.
    pub fn end_of(&self, previous: u64) -> Option<&Bytes> {
        self.after.as_ref().filter(|(id, _)| *id == previous).map(|(_, eos)| eos)
    }
}

/// The open link of an Ogg chain.
#[derive(Debug)]
struct Link {
    shared: Arc<Chain>,
    writer: PageWriter,
    granule: u64,
    /// The codec header the link was opened with (OpusHead, or the three Vorbis headers).
    header: Bytes,
    /// Vorbis packet durations (Opus packets carry theirs in the TOC byte).
    vorbis: Option<Durations>,
    /// Pages the head takes (audio pages are numbered after them).
    head_pages: usize,
    /// A Vorbis link's first packet, until the second shares its page.
    held: Option<Bytes>,
}

/// One stream's muxer.
#[derive(Debug)]
pub struct StreamMux {
    track: Option<Track>,
    /// The newest valid codec header of the track.
    header: Option<Bytes>,
    link: Option<Link>,
    /// The EOS page of the link that just ended, for the next one.
    ended: Option<(u64, Bytes)>,
    metadata: Option<Metadata>,
    links: u64,
    serials: RandomState,
    scratch: BytesMut,
    pages: Vec<Bytes>,
}

impl Default for StreamMux {
    fn default() -> Self {
        Self {
            track: None,
            header: None,
            link: None,
            ended: None,
            metadata: None,
            links: 0,
            serials: RandomState::new(),
            scratch: BytesMut::new(),
            pages: Vec::new(),
        }
    }
}

impl StreamMux {
    /// The container of the current source (`None` before any source, or for a codec that is
    /// not served over HTTP).
    pub fn container(&self) -> Option<Container> {
        self.track.as_ref().and_then(|t| container_for(t.codec))
    }

    /// A new source with these tracks: the current Ogg link ends.
    pub fn source(&mut self, tracks: &[Track]) {
        self.end_link();
        self.track = http_track(tracks).cloned();
        self.header = None;
    }

    /// A header frame (codec configuration) on `track`. An Ogg link opened with another
    /// header ends; invalid headers are ignored.
    pub fn header(&mut self, track: u8, payload: &Bytes) {
        let Some(t) = self.track.as_ref().filter(|t| t.id == track) else { return };
        let valid = match t.codec {
            Codec::Opus => OpusHead::parse(payload).is_ok(),
            Codec::Vorbis => vorbis_headers(payload).is_some(),
            _ => false,
        };
        if !valid {
            debug!(track, "header frame that HTTP listeners cannot use: ignored");
            return;
        }
        if self.link.as_ref().is_some_and(|link| link.header != *payload) {
            self.end_link();
        }
        self.header = Some(payload.clone());
    }

    /// Now playing changed: links opened from now on, and the open link's head, carry it in
    /// their comment header.
    pub fn metadata(&mut self, meta: Option<Metadata>) {
        self.metadata = meta;
        let Some(link) = &self.link else { return };
        let (shared, header, reserved) =
            (Arc::clone(&link.shared), link.header.clone(), link.head_pages);
        let (head, pages) = self.head_pages(shared.id, &header);
        // A head that would take more pages would collide with the audio pages' numbers.
        if pages <= reserved {
            *shared.head.lock().expect("chain head lock poisoned") = head;
        }
    }

    /// A media frame on `track`: what HTTP listeners write for it, if they hear that track.
    pub fn frame(&mut self, track: u8, payload: &Bytes) -> Option<Rendition> {
        self.frame_at_edge(track, payload, None)
    }

    /// [`frame`](Self::frame) for a frame at the edge of a chained link of the source. The
    /// last frame of a source's link ends the Ogg link too: its page is the EOS page, its
    /// granule cut by the same trim, and the next frame opens a new link (fresh serial, the
    /// header pages again) even if the codec header did not change. The first frame of a new
    /// source link ends the open link, if any, with an empty EOS page.
    pub fn frame_at_edge(
        &mut self,
        track: u8,
        payload: &Bytes,
        edge: Option<LinkEdge>,
    ) -> Option<Rendition> {
        let t = self.track.as_ref().filter(|t| t.id == track)?;
        match t.codec {
            Codec::Mp3 => Some(Rendition::Mp3(payload.clone())),
            Codec::Opus | Codec::Vorbis if !payload.is_empty() => {
                let trim = match edge {
                    Some(LinkEdge::Last { trim }) => Some(trim),
                    Some(LinkEdge::First) => {
                        self.end_link();
                        None
                    }
                    None => None,
                };
                self.page(payload, trim)
            }
            _ => None,
        }
    }

    /// Ends the open Ogg link and returns its EOS page (a recording's file ends with it); the
    /// next frame opens a new link with its header pages. `None` when no link is open.
    pub fn finish(&mut self) -> Option<Bytes> {
        let mut link = self.link.take()?;
        link.writer.end(link.granule, &mut self.scratch, &mut self.pages);
        self.ended = None;
        Some(concat(&mut self.pages))
    }

    /// Puts one packet on a page of its own, opening a link first if there is none. With
    /// `last` (an end trim in samples) the page ends the link.
    fn page(&mut self, packet: &Bytes, last: Option<u32>) -> Option<Rendition> {
        if self.link.is_none() {
            self.open_link()?;
        }
        let link = self.link.as_mut()?;
        let samples = match &mut link.vorbis {
            Some(durations) => durations.next(packet).map_err(|e| e.to_string()),
            None => opus::packet_samples(packet).map_err(|e| e.to_string()),
        };
        let samples = match samples {
            Ok(samples) => samples,
            Err(err) => {
                debug!(%err, "a packet HTTP listeners cannot carry: dropped");
                return None;
            }
        };
        // NOTE: a Vorbis link's first packet decodes to nothing (granule 0), and ffmpeg takes
        // a page of granule 0 that holds a packet for a broken one: it guesses that packet's
        // time, twice at a chained link's start. It waits for the next packet's page instead,
        // as encoders lay it out; its frame has no page of its own.
        let first = samples == 0 && link.granule == 0 && link.vorbis.is_some();
        if first && link.held.is_none() && last.is_none() {
            link.held = Some(packet.clone());
            return None;
        }
        link.granule = link.granule.saturating_add(u64::from(samples));
        // The trim can only shorten this packet, never reach into the one before.
        let granule = link.granule - u64::from(last.map_or(0, |trim| trim.min(samples)));
        let packets = match link.held.take() {
            Some(held) => vec![(held, granule), (packet.clone(), granule)],
            None => vec![(packet.clone(), granule)],
        };
        link.writer.write(&packets, 0, last.is_some(), &mut self.scratch, &mut self.pages);
        let (head, body) = match self.pages.as_slice() {
            // The usual case: one page, its header and the packet itself (no copy).
            [head, body] if body == packet => (head.clone(), packet.clone()),
            _ => (Bytes::new(), concat(&mut self.pages)),
        };
        self.pages.clear();
        let chain = Arc::clone(&link.shared);
        if last.is_some() {
            // Its EOS page is this one: the next link has none to add.
            self.link = None;
            self.ended = None;
        }
        Some(Rendition::Ogg { head, body, chain })
    }

    /// Opens a link: the track's header (a synthesized OpusHead when an Opus source sent
    /// none; Vorbis cannot be decoded without the source's setup header, so it waits).
    fn open_link(&mut self) -> Option<()> {
        let track = self.track.as_ref()?;
        let header = match (&self.header, track.codec) {
            (Some(header), _) => header.clone(),
            (None, Codec::Opus) => {
                let head = OpusHead::synthesize(
                    track.channels.unwrap_or(2),
                    track.sample_rate.unwrap_or(48_000),
                );
                self.header = Some(head.clone());
                head
            }
            (None, _) => return None,
        };
        self.links += 1;
        let id = self.links;
        let (head, head_pages) = self.head_pages(id, &header);
        let vorbis = vorbis_headers(&header).map(|(_, info)| Durations::new(info));
        let mut writer = PageWriter::new(self.serial(id));
        writer.skip(head_pages);
        let shared = Arc::new(Chain { id, head: Mutex::new(head), after: self.ended.take() });
        self.link =
            Some(Link { shared, writer, granule: 0, header, vorbis, head_pages, held: None });
        Some(())
    }

    /// Ends the open link with an EOS page, kept for the next link's listeners.
    fn end_link(&mut self) {
        let Some(mut link) = self.link.take() else { return };
        link.writer.end(link.granule, &mut self.scratch, &mut self.pages);
        self.ended = Some((link.shared.id, concat(&mut self.pages)));
    }

    /// The header pages of link `id`: RFC 7845 and the Vorbis I spec put the identification
    /// header alone on the BOS page and the other headers on the following page(s).
    fn head_pages(&mut self, id: u64, header: &Bytes) -> (Bytes, usize) {
        let mut writer = PageWriter::new(self.serial(id));
        let (scratch, pages) = (&mut self.scratch, &mut self.pages);
        let count = match vorbis_headers(header) {
            Some(([ident, _, setup], _)) => {
                let comment = vorbis::write_comment(VENDOR, self.metadata.as_ref());
                writer.write(&[(ident, 0)], FLAG_BOS, false, scratch, pages)
                    + writer.write(&[(comment, 0), (setup, 0)], 0, false, scratch, pages)
            }
            None => {
                let tags = opus::write_tags(VENDOR, self.metadata.as_ref());
                writer.write(&[(header.clone(), 0)], FLAG_BOS, false, scratch, pages)
                    + writer.write(&[(tags, 0)], 0, false, scratch, pages)
            }
        };
        (concat(pages), count)
    }

    /// The serial of link `id`: random per stream, different per link.
    fn serial(&self, id: u64) -> u32 {
        let mut hasher = self.serials.build_hasher();
        hasher.write_u64(id);
        hasher.finish() as u32
    }
}

/// The pieces of some pages as one buffer (one iovec per page for every listener).
fn concat(pieces: &mut Vec<Bytes>) -> Bytes {
    let mut all = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
    for piece in pieces.drain(..) {
        all.extend_from_slice(&piece);
    }
    all.freeze()
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
    use crate::format::ogg::{parse_page, Packetizer, FLAG_EOS};

    fn opus_track() -> Track {
        Track::audio(0, Codec::Opus, 48_000, 2, None)
    }

    /// Parses an Ogg byte stream into (serial, sequence, granule, flags, packets) per page.
    fn parse_pages(bytes: &[u8]) -> Vec<(u32, u32, u64, u8, Vec<Bytes>)> {
        let mut bytes = BytesMut::from(bytes);
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

    fn ogg(rendition: Option<Rendition>) -> (Bytes, Arc<Chain>) {
        match rendition {
            Some(Rendition::Ogg { head, body, chain }) => ([head, body].concat().into(), chain),
            other => panic!("not an Ogg page: {other:?}"),
        }
    }

    #[test]
    fn opus_frames_become_one_page_each_after_the_head() {
        let mut mux = StreamMux::default();
        mux.source(&[opus_track()]);
        mux.metadata(Some(Metadata { title: Some("Song".into()), ..Metadata::default() }));
        let head = OpusHead::synthesize(2, 48_000);
        mux.header(0, &head);
        let (first, chain) = ogg(mux.frame(0, &Bytes::from_static(&[0xFC, 1])));
        let (second, same) = ogg(mux.frame(0, &Bytes::from_static(&[0xFD, 2, 3])));
        assert!(Arc::ptr_eq(&chain, &same));
        let mut stream = chain.head().to_vec();
        stream.extend_from_slice(&first);
        stream.extend_from_slice(&second);
        let pages = parse_pages(&stream);
        assert_eq!(pages.len(), 4, "OpusHead, OpusTags, then a page per frame");
        assert_eq!((pages[0].3, &pages[0].4[0]), (FLAG_BOS, &head));
        let tags = opus::parse_tags(&pages[1].4[0], opus::TAGS_MAGIC).unwrap();
        assert_eq!(tags.title.as_deref(), Some("Song"));
        assert_eq!((pages[2].2, pages[3].2), (960, 960 + 1920), "granules count samples");
        let serial = pages[0].0;
        assert!(pages.iter().enumerate().all(|(i, p)| p.0 == serial && p.1 == i as u32));
        // A late joiner's head carries the title of now, not of when the link opened.
        mux.metadata(Some(Metadata { title: Some("Next".into()), ..Metadata::default() }));
        let pages = parse_pages(&chain.head());
        let tags = opus::parse_tags(&pages[1].4[0], opus::TAGS_MAGIC).unwrap();
        assert_eq!(tags.title.as_deref(), Some("Next"));
        assert_eq!(pages[1].1, 1, "the same page numbers");
    }

    #[test]
    fn a_new_source_or_header_starts_a_new_link_after_an_eos_page() {
        let mut mux = StreamMux::default();
        mux.source(&[opus_track()]);
        mux.header(0, &OpusHead::synthesize(2, 48_000));
        let (_, first) = ogg(mux.frame(0, &Bytes::from_static(&[0xFC, 1])));
        // The same header again changes nothing.
        mux.header(0, &OpusHead::synthesize(2, 48_000));
        let (_, same) = ogg(mux.frame(0, &Bytes::from_static(&[0xFC, 1])));
        assert_eq!(first.id(), same.id());
        mux.source(&[opus_track()]);
        let (page, second) = ogg(mux.frame(0, &Bytes::from_static(&[0xFC, 9])));
        assert_ne!(first.id(), second.id());
        let eos = second.end_of(first.id()).expect("the EOS of the link before");
        let ended = parse_pages(eos);
        assert_eq!(ended[0].0, parse_pages(&first.head())[0].0, "the old serial");
        assert!(ended[0].3 & FLAG_EOS != 0);
        assert_eq!(ended[0].2, 1920, "the old link's last granule");
        assert!(second.end_of(second.id()).is_none());
        let pages = parse_pages(&second.head());
        assert_ne!(pages[0].0, ended[0].0, "a fresh serial");
        assert_eq!(
            OpusHead::parse(&pages[0].4[0]).unwrap().channels,
            2,
            "a synthesized head: this source sent none"
        );
        assert_eq!(parse_pages(&page)[0].2, 960, "granules restart");
        // A new header on the same source: another link.
        mux.header(0, &OpusHead::synthesize(1, 44_100));
        let (_, third) = ogg(mux.frame(0, &Bytes::from_static(&[0xFC, 9])));
        assert!(third.id() > second.id());
    }

    /// The packets of `samples/music.ogg` (three headers, then audio) and its track.
    fn vorbis_sample() -> (Vec<Bytes>, Track) {
        let mut file = BytesMut::from(&include_bytes!("../../samples/music.ogg")[..]);
        let mut packetizer = Packetizer::new(1 << 20);
        let mut packets = Vec::new();
        while let Some(page) = parse_page(&mut file).unwrap() {
            packetizer.push(&page, &mut packets).unwrap();
        }
        let mut track = opus_track();
        (track.codec, track.sample_rate) = (Codec::Vorbis, Some(44_100));
        (packets, track)
    }

    #[test]
    fn vorbis_waits_for_its_headers_and_counts_block_sizes() {
        let (packets, track) = vorbis_sample();
        let header = vorbis::pack_headers(&packets[0], &packets[1], &packets[2]);
        let mut mux = StreamMux::default();
        mux.source(&[track]);
        assert!(mux.frame(0, &packets[40]).is_none(), "no setup header yet");
        mux.header(0, &header);
        assert!(mux.frame(0, &packets[40]).is_none(), "a link's first packet waits for the next");
        let renditions: Vec<_> = packets[41..60].iter().map(|p| ogg(mux.frame(0, p))).collect();
        let first = parse_pages(&renditions[0].0);
        assert_eq!(first[0].4, [packets[40].clone(), packets[41].clone()], "one page for both");
        let head = parse_pages(&renditions[0].1.head());
        assert_eq!((head[0].3, &head[0].4[0]), (FLAG_BOS, &packets[0]));
        assert_eq!(head[1].4.len(), 2, "comment and setup headers on their own page");
        assert_eq!(head[1].4[1], packets[2]);
        let info = VorbisInfo::parse(&packets[0], &packets[2]).unwrap();
        let mut durations = Durations::new(info);
        let expected: u64 =
            packets[40..60].iter().map(|p| u64::from(durations.next(p).unwrap())).sum();
        let last = parse_pages(&renditions[18].0);
        assert_eq!(last[0].2, expected, "granule counts from the link's start");
    }

    #[test]
    fn a_source_links_last_frame_ends_the_link_with_its_trim_and_a_new_link_follows() {
        // Regression (#15): a new chained Vorbis link with the same setup was spliced into the
        // listener's link, its end trim lost: a dip at every title change.
        let (packets, track) = vorbis_sample();
        let header = vorbis::pack_headers(&packets[0], &packets[1], &packets[2]);
        let mut mux = StreamMux::default();
        mux.source(&[track]);
        mux.header(0, &header);
        let info = VorbisInfo::parse(&packets[0], &packets[2]).unwrap();
        let mut durations = Durations::new(info.clone());
        let full: u64 = packets[3..9].iter().map(|p| u64::from(durations.next(p).unwrap())).sum();
        let last_samples = durations.next(&packets[9]).unwrap();
        assert!(last_samples > 100);
        assert!(mux.frame(0, &packets[3]).is_none(), "the first packet waits for the next");
        let (_, chain) = ogg(mux.frame(0, &packets[4]));
        for packet in &packets[5..9] {
            ogg(mux.frame(0, packet));
        }
        let edge = Some(LinkEdge::Last { trim: 100 });
        let (end, same) = ogg(mux.frame_at_edge(0, &packets[9], edge));
        assert!(Arc::ptr_eq(&chain, &same), "the last page belongs to the link it ends");
        let end = parse_pages(&end);
        assert!(end[0].3 & FLAG_EOS != 0, "the last frame's page is the EOS page");
        assert_eq!(end[0].4, [packets[9].clone()]);
        assert_eq!(end[0].2, full + u64::from(last_samples) - 100, "the granule keeps the trim");
        assert!(mux.finish().is_none(), "no link is open after it");
        // The next frame opens a new link with the same setup: a fresh serial, the headers
        // again, granules from 0 and its own first packet waiting for the second.
        assert!(mux.frame(0, &packets[3]).is_none());
        let (page, next) = ogg(mux.frame(0, &packets[4]));
        assert_ne!(next.id(), chain.id());
        assert!(next.end_of(chain.id()).is_none(), "the old link's EOS page went out already");
        let (old, new) = (parse_pages(&chain.head()), parse_pages(&next.head()));
        assert_ne!(old[0].0, new[0].0);
        assert_eq!((new[0].3, &new[0].4[0], &new[1].4[1]), (FLAG_BOS, &packets[0], &packets[2]));
        let mut durations = Durations::new(info);
        let granule: u64 =
            packets[3..5].iter().map(|p| u64::from(durations.next(p).unwrap())).sum();
        assert_eq!(parse_pages(&page)[0].2, granule);
    }

    #[test]
    fn a_trim_longer_than_the_last_frame_cuts_that_frame_only() {
        let mut mux = StreamMux::default();
        mux.source(&[opus_track()]);
        ogg(mux.frame(0, &Bytes::from_static(&[0xFC, 1])));
        let edge = Some(LinkEdge::Last { trim: u32::MAX });
        let (end, _) = ogg(mux.frame_at_edge(0, &Bytes::from_static(&[0xFC, 2]), edge));
        assert_eq!(parse_pages(&end)[0].2, 960, "never before the last frame's start");
    }

    #[test]
    fn a_new_opus_link_with_the_same_head_starts_a_new_ogg_link() {
        let mut mux = StreamMux::default();
        mux.source(&[opus_track()]);
        mux.header(0, &OpusHead::synthesize(2, 48_000));
        let (_, first) = ogg(mux.frame(0, &Bytes::from_static(&[0xFC, 1])));
        // Its end was not marked: the link ends with an empty EOS page, kept for the next.
        let edge = Some(LinkEdge::First);
        let (page, second) = ogg(mux.frame_at_edge(0, &Bytes::from_static(&[0xFC, 2]), edge));
        assert_ne!(first.id(), second.id());
        let eos = parse_pages(second.end_of(first.id()).expect("the EOS page of the first"));
        assert_eq!((eos[0].2, eos[0].3 & FLAG_EOS), (960, FLAG_EOS));
        assert!(eos[0].4.is_empty());
        assert_eq!(parse_pages(&second.head())[0].4[0], OpusHead::synthesize(2, 48_000));
        assert_eq!(parse_pages(&page)[0].2, 960, "granules restart");
    }

    #[test]
    fn mp3_frames_go_out_as_they_are_and_other_codecs_not_at_all() {
        let mut mux = StreamMux::default();
        let mut mp3 = opus_track();
        mp3.codec = Codec::Mp3;
        mux.source(&[mp3]);
        assert_eq!(mux.container(), Some(Container::Mp3));
        let frame = Bytes::from_static(b"\xff\xfbframe");
        assert!(matches!(mux.frame(0, &frame), Some(Rendition::Mp3(b)) if b == frame));
        assert!(mux.frame(1, &frame).is_none(), "another track");
        let video = Track {
            id: 0,
            kind: TrackKind::Video,
            codec: Codec::Vp8,
            sample_rate: None,
            channels: None,
            width: None,
            height: None,
            bitrate: None,
        };
        mux.source(&[video]);
        assert_eq!(mux.container(), None);
        assert!(mux.frame(0, &frame).is_none());
    }
}
