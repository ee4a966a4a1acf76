//! One HTTP listener: `GET /{stream}.ogg` (Ogg/Opus), `/{stream}.mp3` (MP3) or `/{stream}`
//! (whichever the source sends), with Icecast's response headers and ICY metadata on request.
//!
//! Same policy as the WebSocket listeners (`listener/`), in a task of its own: the ring is the
//! only queue (`Consumer::fill` with `listener_batch_bytes`), a bounded outbox written with
//! vectored writes, skip ahead when lagging, close after `slow_listener_timeout` behind. `Mux` turns ring frames into the
//! container: each listener gets its own Ogg logical stream (fresh BOS headers, serial, page
//! sequence and granule positions); payloads are shared slices, only page headers are written
//! per listener.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::Instant as StdInstant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{cors_headers, parse_mount, Client, SERVER_ID};
use crate::config::Config;
use crate::format::icy::{metadata_block, IcyInterleaver};
use crate::format::ogg::{PageWriter, FLAG_BOS};
use crate::format::opus::{self, OpusHead};
use crate::format::vorbis::{self, Durations, VorbisInfo};
use crate::format::Container;
use crate::http::{Request, Response};
use crate::protocol::{
    decode_frame_header, Codec, ListenerEvent, Metadata, Track, TrackKind, FRAME_HEADER_BYTES,
};
use crate::relay::{Consumer, Stream};
use crate::server::{check_listen_access, Relay};
use crate::websocket::WireFrame;

/// Most Opus packets coalesced into one Ogg page when a listener is behind.
const MAX_PACKETS_PER_PAGE: usize = 50;
/// Time to write the response head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Vendor string of the `OpusTags` written for listeners.
const VENDOR: &str = concat!("onair ", env!("CARGO_PKG_VERSION"));

/// Serves one HTTP listener until it leaves, is too slow, or the relay shuts down.
///
/// # Errors
/// Socket errors; they end only this listener.
pub async fn serve(
    mut socket: TcpStream,
    peer: SocketAddr,
    relay: &Relay,
    request: &Request,
    _leftover: &[u8],
    cancel: CancellationToken,
) -> crate::Result<()> {
    let head_only = request.method == "HEAD";
    let refuse = |status: u16, reason: &str| {
        let mut response = Response::text(status, reason).with_header("Server", SERVER_ID);
        response.headers.extend(cors_headers(&relay.config, request));
        response
    };
    let Some((name, ext)) = parse_mount(&request.path) else {
        refuse(404, "no such stream").send(&mut socket, head_only).await?;
        return Ok(());
    };
    let Some(stream) = relay.streams.get(name) else {
        refuse(404, "no such stream").send(&mut socket, head_only).await?;
        return Ok(());
    };
    if let Err(denied) = check_listen_access(stream, request) {
        relay.metrics.refused(&denied.status().to_string());
        info!(%peer, path = %request.path, %denied, "http listener refused");
        refuse(denied.status(), &denied.to_string()).send(&mut socket, head_only).await?;
        return Ok(());
    }
    let wanted = match ext.map(str::to_ascii_lowercase).as_deref() {
        Some("ogg" | "opus" | "oga") => Some(Container::Ogg),
        Some("mp3" | "mpeg") => Some(Container::Mp3),
        Some(_) => {
            let reason = format!("WebM listening is not supported: try /{name}.ogg or /{name}.mp3");
            refuse(404, &reason).send(&mut socket, head_only).await?;
            return Ok(());
        }
        None => None,
    };
    let (consumer, first) = match Stream::subscribe(stream) {
        Ok(subscribed) => subscribed,
        Err(err) => {
            relay.metrics.refused("503");
            info!(%peer, path = %request.path, %err, "http listener refused");
            refuse(503, &err.to_string()).send(&mut socket, head_only).await?;
            return Ok(());
        }
    };
    let (tracks, metadata) =
        match first.first().map(|hello| serde_json::from_slice(hello.payload())) {
            Some(Ok(ListenerEvent::Hello { tracks, metadata, .. })) => (tracks, metadata),
            _ => (Vec::new(), None),
        };
    let container = match choose(name, wanted, &tracks) {
        Ok(container) => container,
        Err(reason) => {
            drop(consumer);
            refuse(404, &reason).send(&mut socket, head_only).await?;
            return Ok(());
        }
    };
    let icy = request.header("icy-metadata").map(str::trim) == Some("1");
    let head = response_head(relay, request, name, container, &tracks, icy);
    if head_only {
        drop(consumer);
        timeout(HEAD_TIMEOUT, async {
            socket.write_all(head.as_bytes()).await?;
            socket.shutdown().await
        })
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        return Ok(());
    }
    let client = Client {
        stream: name.to_owned(),
        peer,
        user_agent: request.header("user-agent").map(str::to_owned),
        connected: StdInstant::now(),
        kind: "http",
    };
    let _registration = relay.icecast.add_client(client, stream.listener_count());
    timeout(HEAD_TIMEOUT, socket.write_all(head.as_bytes()))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    tune(&socket, &relay.config);
    let mux = Mux::new(container, &tracks, metadata, icy.then_some(relay.config.icy_metaint));
    debug!(stream = %name, %peer, ?container, icy, "http listener connected");
    match run(socket, consumer, first, mux, &relay.config, cancel).await? {
        Ending::TooSlow => info!(stream = %name, %peer, "http listener closed: too slow"),
        Ending::CodecChanged(reason) => {
            info!(stream = %name, %peer, %reason, "http listener closed")
        }
        ending => debug!(stream = %name, %peer, ?ending, "http listener left"),
    }
    Ok(())
}

/// Picks the container for a listener: the one its URL asks for, if the stream's codec fits.
fn choose(name: &str, wanted: Option<Container>, tracks: &[Track]) -> Result<Container, String> {
    let codec = tracks.iter().find(|t| t.kind == TrackKind::Audio).map(|t| t.codec);
    let natural = match codec {
        Some(Codec::Opus | Codec::Vorbis) => Some(Container::Ogg),
        Some(Codec::Mp3) => Some(Container::Mp3),
        Some(other) => {
            return Err(format!("stream {name} carries {other:?}, which is not served over HTTP"));
        }
        None => None,
    };
    match (wanted, natural) {
        (Some(w), Some(n)) if w != n => {
            let ext = if n == Container::Ogg { "ogg" } else { "mp3" };
            Err(format!("stream {name} carries {}: listen at /{name}.{ext}", codec_name(codec)))
        }
        (Some(c), _) | (None, Some(c)) => Ok(c),
        (None, None) => Err(format!(
            "stream {name} has no source yet: listen at /{name}.ogg or /{name}.mp3 to wait for one"
        )),
    }
}

fn codec_name(codec: Option<Codec>) -> &'static str {
    match codec {
        Some(Codec::Opus) => "Opus",
        Some(Codec::Vorbis) => "Vorbis",
        Some(Codec::Mp3) => "MP3",
        _ => "another codec",
    }
}

/// The Icecast-style response head.
fn response_head(
    relay: &Relay,
    request: &Request,
    name: &str,
    container: Container,
    tracks: &[Track],
    icy: bool,
) -> String {
    let source = relay.icecast.source(name);
    let ice = source.map(|s| s.ice).unwrap_or_default();
    let track = tracks.iter().find(|t| t.kind == TrackKind::Audio);
    let bitrate = ice.bitrate.or_else(|| track.and_then(|t| t.bitrate).map(|b| b / 1000));
    let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    let mut head = String::from("HTTP/1.0 200 OK\r\n");
    let mut header = |name: &str, value: &str| {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(&clean(value));
        head.push_str("\r\n");
    };
    header("Content-Type", container.content_type());
    header("Server", SERVER_ID);
    header("Cache-Control", "no-cache, no-store");
    header("Pragma", "no-cache");
    header("Expires", "Mon, 26 Jul 1997 05:00:00 GMT");
    header("Connection", "close");
    header("icy-name", ice.name.as_deref().unwrap_or(name));
    if let Some(description) = &ice.description {
        header("icy-description", description);
    }
    if let Some(genre) = &ice.genre {
        header("icy-genre", genre);
    }
    if let Some(url) = &ice.url {
        header("icy-url", url);
    }
    header("icy-pub", if ice.public == Some(true) { "1" } else { "0" });
    if let Some(bitrate) = bitrate {
        header("icy-br", &bitrate.to_string());
    }
    let audio_info = ice.audio_info.clone().or_else(|| {
        let t = track?;
        let mut parts = Vec::new();
        if let Some(c) = t.channels {
            parts.push(format!("channels={c}"));
        }
        if let Some(r) = t.sample_rate {
            parts.push(format!("samplerate={r}"));
        }
        if let Some(b) = bitrate {
            parts.push(format!("bitrate={b}"));
        }
        Some(parts.join(";"))
    });
    if let Some(info) = audio_info.filter(|i| !i.is_empty()) {
        header("ice-audio-info", &info);
    }
    if icy {
        header("icy-metaint", &relay.config.icy_metaint.to_string());
    }
    for (name, value) in cors_headers(&relay.config, request) {
        header(name, &value);
    }
    head.push_str("\r\n");
    head
}

/// No Nagle delay and a small kernel send buffer (as for WebSocket listeners), and TCP
/// keepalive: an HTTP listener cannot be pinged, and while the source is offline nothing is
/// written that would notice a vanished peer.
fn tune(socket: &TcpStream, config: &Config) {
    let _ = socket.set_nodelay(true);
    let sock = socket2::SockRef::from(socket);
    if let Err(err) = sock.set_send_buffer_size(config.listener_kernel_bytes) {
        debug!(%err, "cannot set SO_SNDBUF");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(config.ping_interval);
    if let Err(err) = sock.set_tcp_keepalive(&keepalive) {
        debug!(%err, "cannot set TCP keepalive");
    }
}

/// How an HTTP listener session ended.
#[derive(Debug)]
enum Ending {
    PeerClosed,
    Shutdown,
    TooSlow,
    CodecChanged(String),
}

/// Bytes waiting to be written; each piece carries the media frames its last byte completes.
pub type Outbox = crate::outbox::Outbox<(Bytes, u32)>;

impl Outbox {
    fn push(&mut self, piece: Bytes, frames: u32) {
        if !piece.is_empty() || frames > 0 {
            self.items.push_back((piece, frames));
        }
    }

    /// Everything queued, concatenated (tests).
    pub fn take_all(&mut self) -> (Vec<u8>, u64) {
        let mut bytes = Vec::new();
        let mut frames = 0;
        for (piece, n) in self.items.drain(..) {
            bytes.extend_from_slice(&piece);
            frames += u64::from(n);
        }
        self.offset = 0;
        (bytes, frames)
    }
}

async fn run(
    mut socket: TcpStream,
    mut consumer: Consumer,
    first: Vec<WireFrame>,
    mut mux: Mux,
    config: &Config,
    cancel: CancellationToken,
) -> std::io::Result<Ending> {
    let metrics = consumer.stream().metrics().clone();
    let mut out = Outbox::default();
    let mut frames: VecDeque<WireFrame> = first.into();
    if let Err(reason) = mux.feed(&mut frames, &mut out) {
        return Ok(Ending::CodecChanged(reason));
    }
    let mut caught_up_at = Instant::now();
    let mut discard = [0u8; 512];
    loop {
        while out.is_empty() {
            let fill = consumer.fill(&mut frames, config.listener_batch_bytes);
            if fill.skipped > 0 {
                metrics.frames_skipped.inc_by(fill.skipped);
                debug!(stream = %consumer.stream().config().name, skipped = fill.skipped, "http listener lagged; resumed at a start point");
            }
            if let Err(reason) = mux.feed(&mut frames, &mut out) {
                return Ok(Ending::CodecChanged(reason));
            }
            if fill.at_head {
                if out.is_empty() {
                    caught_up_at = Instant::now();
                }
                break;
            }
        }
        let interest = if out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                let _ = timeout(std::time::Duration::from_secs(1), socket.shutdown()).await;
                return Ok(Ending::Shutdown);
            }
            ready = socket.ready(interest) => {
                let ready = ready?;
                if ready.is_readable() {
                    // HTTP listeners have nothing to say after the request: read and drop.
                    match socket.try_read(&mut discard) {
                        Ok(0) => return Ok(Ending::PeerClosed),
                        Ok(_) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(err) => return Err(err),
                    }
                }
                if ready.is_writable() && !out.is_empty() {
                    match out.write_to(&socket) {
                        Ok((bytes, frames)) => {
                            metrics.bytes_out.inc_by(bytes as u64);
                            metrics.frames_out.inc_by(frames);
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(err) => return Err(err),
                    }
                }
            }
            () = consumer.changed(), if out.is_empty() => {}
            () = sleep_until(caught_up_at + config.slow_listener_timeout), if !out.is_empty() => {
                metrics.too_slow.inc();
                return Ok(Ending::TooSlow);
            }
        }
    }
}

/// One listener's container writer: ring frames in, container bytes out.
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

    /// Turns the frames in `frames` (all of them are taken) into container bytes in `out`.
    ///
    /// # Errors
    /// The reason to close the listener when the stream's codec no longer fits its container.
    pub fn feed(
        &mut self,
        frames: &mut VecDeque<WireFrame>,
        out: &mut Outbox,
    ) -> Result<(), String> {
        for frame in frames.drain(..) {
            if frame.is_binary() {
                self.frame(frame.payload(), out);
                continue;
            }
            let Ok(event) = serde_json::from_slice::<ListenerEvent>(frame.payload()) else {
                continue;
            };
            self.flush(out);
            match event {
                ListenerEvent::Hello { .. } | ListenerEvent::Skipped { .. } => {}
                ListenerEvent::Metadata(meta) => {
                    if let Some(icy) = &mut self.icy {
                        icy.set_block(metadata_block(&meta.display_title(), meta.url.as_deref()));
                    }
                    self.metadata = Some(meta);
                }
                ListenerEvent::Source { tracks: Some(tracks), .. } => {
                    self.head = None;
                    self.track = pick_track(self.container, &tracks);
                    if self.track.is_none() {
                        let codec =
                            tracks.iter().find(|t| t.kind == TrackKind::Audio).map(|t| t.codec);
                        return Err(format!(
                            "the new source sends {codec:?}, not {:?}",
                            self.container
                        ));
                    }
                }
                ListenerEvent::Source { tracks: None, .. } => {}
            }
        }
        self.flush(out);
        Ok(())
    }

    fn frame(&mut self, message: &Bytes, out: &mut Outbox) {
        let Ok(header) = decode_frame_header(message) else { return };
        let Some(track) = &self.track else { return };
        if header.track != track.id {
            return;
        }
        let payload = message.slice(FRAME_HEADER_BYTES..);
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
    fn open_chain(&mut self, out: &mut Outbox) {
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

    /// Writes the batched Opus packets as a page.
    fn flush(&mut self, out: &mut Outbox) {
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

    fn emit_pages(&mut self, frames: u32, out: &mut Outbox) {
        let last = self.pages.len().saturating_sub(1);
        let pages = std::mem::take(&mut self.pages);
        for (i, piece) in pages.into_iter().enumerate() {
            self.emit_one(piece, if i == last { frames } else { 0 }, out);
        }
    }

    /// Queues one piece of container bytes, through the ICY interleaver if there is one.
    fn emit_one(&mut self, piece: Bytes, frames: u32, out: &mut Outbox) {
        let Some(icy) = &mut self.icy else {
            out.push(piece, frames);
            return;
        };
        icy.push(piece, &mut self.split);
        let last = self.split.len().saturating_sub(1);
        for (i, part) in self.split.drain(..).enumerate() {
            out.push(part, if i == last { frames } else { 0 });
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
    use crate::protocol::{encode_frame, FrameHeader, SourceState, FLAG_HEADER, FLAG_KEYFRAME};

    fn opus_track() -> Track {
        Track::audio(0, Codec::Opus, 48_000, 2, None)
    }

    fn binary(flags: u8, pts: u64, payload: &[u8]) -> WireFrame {
        WireFrame::binary(encode_frame(FrameHeader { flags, track: 0, pts }, payload))
    }

    fn event(event: &ListenerEvent) -> WireFrame {
        WireFrame::text(event.to_json())
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
        let mut frames: VecDeque<WireFrame> = vec![
            binary(FLAG_HEADER, 0, &head),
            binary(FLAG_KEYFRAME, 0, &[0xFC, 1]),
            binary(FLAG_KEYFRAME, 20_000, &[0xFC | 1, 2, 3]),
        ]
        .into();
        let mut out = Outbox::default();
        mux.feed(&mut frames, &mut out).unwrap();
        let (bytes, count) = out.take_all();
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
        let mut frames: VecDeque<WireFrame> = vec![
            event(&ListenerEvent::Source {
                state: SourceState::Online,
                tracks: Some(vec![opus_track()]),
            }),
            binary(FLAG_HEADER, 0, &other),
            binary(FLAG_KEYFRAME, 0, &[0xFC, 9]),
        ]
        .into();
        mux.feed(&mut frames, &mut out).unwrap();
        let (bytes, _) = out.take_all();
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
        let mut frames: VecDeque<WireFrame> = vec![binary(FLAG_HEADER, 0, &header)].into();
        // A late joiner: audio from the middle of the stream.
        frames.extend(packets[40..60].iter().map(|p| binary(FLAG_KEYFRAME, 0, p)));
        let mut out = Outbox::default();
        mux.feed(&mut frames, &mut out).unwrap();
        let (bytes, count) = out.take_all();
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
        let mut frames: VecDeque<WireFrame> = vec![binary(FLAG_KEYFRAME, 0, &[0xFC, 1])].into();
        let mut out = Outbox::default();
        mux.feed(&mut frames, &mut out).unwrap();
        let (bytes, _) = out.take_all();
        let pages = parse_pages(BytesMut::from(&bytes[..]));
        assert_eq!(OpusHead::parse(&pages[0].4[0]).unwrap().channels, 2);
    }

    #[test]
    fn mp3_listener_with_icy_gets_frames_and_titles() {
        let mut track = opus_track();
        track.codec = Codec::Mp3;
        let mut mux = Mux::new(Container::Mp3, &[track.clone()], None, Some(10));
        let mut frames: VecDeque<WireFrame> = vec![
            binary(FLAG_KEYFRAME, 0, b"0123456"),
            event(&ListenerEvent::Metadata(Metadata {
                title: Some("T".into()),
                ..Metadata::default()
            })),
            binary(FLAG_KEYFRAME, 0, b"789abcdef"),
        ]
        .into();
        let mut out = Outbox::default();
        mux.feed(&mut frames, &mut out).unwrap();
        let (bytes, count) = out.take_all();
        assert_eq!(count, 2);
        let mut expected = b"0123456789".to_vec();
        expected.extend_from_slice(&metadata_block("T", None));
        expected.extend_from_slice(b"abcdef");
        assert_eq!(bytes, expected);
        let mut frames: VecDeque<WireFrame> = vec![event(&ListenerEvent::Source {
            state: SourceState::Online,
            tracks: Some(vec![opus_track()]),
        })]
        .into();
        assert!(mux.feed(&mut frames, &mut out).is_err(), "an Opus source on an MP3 listener");
    }

    #[test]
    fn containers_are_chosen_from_the_url_and_the_codec() {
        let opus = [opus_track()];
        assert_eq!(choose("r", None, &opus), Ok(Container::Ogg));
        assert_eq!(choose("r", Some(Container::Ogg), &opus), Ok(Container::Ogg));
        assert!(choose("r", Some(Container::Mp3), &opus).unwrap_err().contains("/r.ogg"));
        assert_eq!(
            choose("r", Some(Container::Mp3), &[]),
            Ok(Container::Mp3),
            "waits for a source"
        );
        assert!(choose("r", None, &[]).is_err());
    }
}
