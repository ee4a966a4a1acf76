//! One HTTP listener: `GET /{stream}.ogg` (Ogg/Opus, Ogg/Vorbis), `/{stream}.mp3` (MP3) or
//! `/{stream}` (whichever the source sends), with Icecast's response headers and ICY metadata
//! on request (`Icy-MetaData: 1`).
//!
//! The request is checked and answered here, on tokio; then the socket goes to a listener
//! driver like a WebSocket listener's, with the same policy (the ring is the only queue, one
//! vectored write per batch, skip ahead when lagging, close when behind for too long) and a
//! send window of its own (`http_send_window_ms`: players buffer seconds of HTTP audio). The
//! container is written once per stream (`format::mux`); what is per listener is only where it
//! is in the Ogg chain and its ICY byte count (`HttpWriter`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant as StdInstant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;
use tracing::debug;

use super::outbox::Piece;
use super::{Hub, Lease, ListenerKind, NewListener};
use crate::auth::check_listen_access;
use crate::conn::Conn;
use crate::directory::Client;
use crate::error::Refusal;
use crate::format::icy::IcyInterleaver;
use crate::format::mux::{container_for, http_track, Rendition};
use crate::format::Container;
use crate::http::{self, Request};
use crate::icecast::{parse_mount, SERVER_ID};
use crate::node::Node;
use crate::protocol::{Codec, ListenerEvent, Track, TrackKind};
use crate::relay::{Consumer, Item, Stream};

/// Time to write the response head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Checks an HTTP listener's request, answers it, and hands the listener to a driver.
///
/// # Errors
/// Socket errors while answering.
pub async fn accept(
    mut socket: Conn,
    peer: SocketAddr,
    node: &Node,
    hub: &Hub,
    request: &Request,
    lease: Lease,
) -> crate::Result<()> {
    let (consumer, first, container) = match admit(node, request) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let mut extra = vec![("Server", SERVER_ID.to_owned())];
            extra.extend(http::cors_headers(&node.config, request));
            http::refuse(&mut socket, &node.metrics, peer, request, &refusal, &extra).await?;
            return Ok(());
        }
    };
    let name = consumer.stream().config().name.clone();
    let tracks = hello_tracks(&first).to_vec();
    let icy = request.header("icy-metadata").map(str::trim) == Some("1");
    let head = response_head(node, request, &name, container, &tracks, icy);
    let written = timeout(HEAD_TIMEOUT, async {
        socket.write_all(head.as_bytes()).await?;
        if request.method == "HEAD" {
            socket.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
    written?;
    if request.method == "HEAD" {
        return Ok(());
    }
    tune(socket.tcp(), &node.config);
    let client = Client {
        stream: name.clone(),
        peer,
        user_agent: request.header("user-agent").map(str::to_owned),
        connected: StdInstant::now(),
        kind: "http",
    };
    let listed = node.directory.add_client(client, consumer.stream().listener_count());
    let crate::conn::Parts { socket, tls, .. } = socket.into_parts().await?;
    let writer = HttpWriter::new(container, icy.then_some(node.config.icy_metaint));
    debug!(stream = %name, %peer, ?container, icy, tls = tls.is_some(), "http listener connected");
    let listener = NewListener {
        socket,
        tls,
        peer,
        leftover: Bytes::new(),
        consumer,
        first,
        kind: ListenerKind::Http(Box::new(writer)),
        lease: Box::new((lease, listed)),
    };
    if let Err(listener) = hub.add(listener) {
        debug!(stream = %name, peer = %listener.peer, "http listener refused: the relay is shutting down");
    }
    Ok(())
}

/// The checks before the answer: a stream, a signed link if it is private, room, and a
/// container its codec fits.
fn admit(node: &Node, request: &Request) -> Result<(Consumer, Vec<Item>, Container), Refusal> {
    let (name, ext) = parse_mount(&request.path).ok_or(Refusal::NoSuchStream)?;
    let stream = node.streams.get(name).ok_or(Refusal::NoSuchStream)?;
    check_listen_access(stream, request)?;
    let wanted = match ext.map(str::to_ascii_lowercase).as_deref() {
        Some("ogg" | "opus" | "oga") => Some(Container::Ogg),
        Some("mp3" | "mpeg") => Some(Container::Mp3),
        Some(_) => {
            let reason = format!("WebM listening is not supported: try /{name}.ogg or /{name}.mp3");
            return Err(Refusal::Listen(reason));
        }
        None => None,
    };
    let (consumer, first) = Stream::subscribe(stream)?;
    let container = choose(name, wanted, hello_tracks(&first)).map_err(Refusal::Listen)?;
    Ok((consumer, first, container))
}

/// The tracks `hello` announces (the first item a listener gets).
fn hello_tracks(first: &[Item]) -> &[Track] {
    match first.first() {
        Some(Item::Event(hello)) => match hello.get() {
            ListenerEvent::Hello { tracks, .. } => tracks,
            _ => &[],
        },
        _ => &[],
    }
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
    node: &Node,
    request: &Request,
    name: &str,
    container: Container,
    tracks: &[Track],
    icy: bool,
) -> String {
    let source = node.directory.source(name);
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
        header("icy-metaint", &node.config.icy_metaint.to_string());
    }
    for (name, value) in http::cors_headers(&node.config, request) {
        header(name, &value);
    }
    head.push_str("\r\n");
    head
}

/// No Nagle delay and a small kernel send buffer (as for WebSocket listeners), and TCP
/// keepalive: an HTTP listener cannot be pinged, and while the source is offline nothing is
/// written that would notice a vanished peer.
fn tune(socket: &tokio::net::TcpStream, config: &crate::config::Config) {
    super::websocket::tune_socket(socket, config.listener_kernel_bytes);
    let sock = socket2::SockRef::from(socket);
    let keepalive = socket2::TcpKeepalive::new().with_time(config.ping_interval);
    if let Err(err) = sock.set_tcp_keepalive(&keepalive) {
        debug!(%err, "cannot set TCP keepalive");
    }
}

/// The stream's source changed to a codec this listener's container cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the new source sends {codec:?}, which {container:?} does not carry")]
pub struct CodecChanged {
    /// The listener's container.
    pub container: Container,
    /// The new source's audio codec, if it has audio.
    pub codec: Option<Codec>,
}

/// What one HTTP listener's bytes are, beyond the stream's: where it is in the Ogg chain, and
/// its ICY byte count. Pure: items in, pieces out.
#[derive(Debug)]
pub struct HttpWriter {
    container: Container,
    /// The Ogg link it is in (0: none yet).
    link: u64,
    icy: Option<IcyInterleaver>,
    split: Vec<Bytes>,
}

impl HttpWriter {
    /// A writer for `container`; `icy_metaint` turns on ICY metadata blocks.
    pub fn new(container: Container, icy_metaint: Option<usize>) -> Self {
        Self { container, link: 0, icy: icy_metaint.map(IcyInterleaver::new), split: Vec::new() }
    }

    /// Appends what the listener writes for `item` to `out`.
    ///
    /// # Errors
    /// `CodecChanged` when a new source's codec does not fit the listener's container.
    pub fn push(&mut self, item: &Item, out: &mut VecDeque<Piece>) -> Result<(), CodecChanged> {
        match item {
            Item::Frame(frame) => match frame.http() {
                Some(Rendition::Mp3(bytes)) if self.container == Container::Mp3 => {
                    self.emit(bytes.clone(), 1, out);
                }
                Some(Rendition::Ogg { head, body, chain }) if self.container == Container::Ogg => {
                    if chain.id() != self.link {
                        if let Some(eos) = chain.end_of(self.link) {
                            self.emit(eos.clone(), 0, out);
                        }
                        self.emit(chain.head(), 0, out);
                        self.link = chain.id();
                    }
                    self.emit(head.clone(), 0, out);
                    self.emit(body.clone(), 1, out);
                }
                _ => {}
            },
            Item::Event(event) => match event.get() {
                ListenerEvent::Metadata(_) | ListenerEvent::Hello { .. } => {
                    if let (Some(icy), Some(block)) = (&mut self.icy, event.icy_block()) {
                        icy.set_block(block.clone());
                    }
                }
                ListenerEvent::Source { tracks: Some(tracks), .. } => {
                    let fits = http_track(tracks).and_then(|t| container_for(t.codec));
                    if fits != Some(self.container) {
                        let codec =
                            tracks.iter().find(|t| t.kind == TrackKind::Audio).map(|t| t.codec);
                        return Err(CodecChanged { container: self.container, codec });
                    }
                }
                ListenerEvent::Source { tracks: None, .. } | ListenerEvent::Skipped { .. } => {}
            },
        }
        Ok(())
    }

    /// Queues container bytes, through the ICY interleaver if there is one.
    fn emit(&mut self, piece: Bytes, frames: u32, out: &mut VecDeque<Piece>) {
        if piece.is_empty() && frames == 0 {
            return;
        }
        let Some(icy) = &mut self.icy else {
            out.push_back(Piece::Bytes(piece, frames));
            return;
        };
        icy.push(piece, &mut self.split);
        let last = self.split.len().saturating_sub(1);
        for (i, part) in self.split.drain(..).enumerate() {
            out.push_back(Piece::Bytes(part, if i == last { frames } else { 0 }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opus_track() -> Track {
        Track::audio(0, Codec::Opus, 48_000, 2, None)
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

    use std::sync::Arc;

    use crate::config::StreamConfig;
    use crate::format::icy::metadata_block;
    use crate::format::ogg::{parse_page, Packetizer, FLAG_BOS, FLAG_EOS};
    use crate::format::opus::OpusHead;
    use crate::metrics::StreamMetrics;
    use crate::protocol::{encode_frame, FrameHeader, Metadata, FLAG_HEADER, FLAG_KEYFRAME};
    use crate::relay::{SourceHandle, SourceKind};

    fn stream() -> Arc<Stream> {
        let mut config = StreamConfig::new("test", Some("k"));
        config.burst = std::time::Duration::ZERO;
        Stream::new(config, StreamMetrics::default())
    }

    fn push(source: &mut SourceHandle, flags: u8, pts: u64, body: &[u8]) {
        let header = FrameHeader { flags, track: 0, pts };
        source.frame(header, encode_frame(header, body)).unwrap();
    }

    /// What a listener has been written so far: everything its consumer has, through `writer`.
    fn written(
        consumer: &mut Consumer,
        first: &[Item],
        writer: &mut HttpWriter,
    ) -> Result<(Vec<u8>, u64), CodecChanged> {
        let mut out = VecDeque::new();
        for item in first {
            writer.push(item, &mut out)?;
        }
        let mut failed = None;
        consumer.fill_with(usize::MAX, usize::MAX, |item| {
            if failed.is_none() {
                failed = writer.push(item, &mut out).err();
            }
        });
        if let Some(err) = failed {
            return Err(err);
        }
        let (mut bytes, mut frames) = (Vec::new(), 0);
        for piece in out {
            let Piece::Bytes(piece, n) = piece else { panic!("an HTTP listener writes bytes") };
            bytes.extend_from_slice(&piece);
            frames += u64::from(n);
        }
        Ok((bytes, frames))
    }

    /// (serial, sequence, flags, packets) of each page.
    fn pages(bytes: &[u8]) -> Vec<(u32, u32, u8, Vec<Bytes>)> {
        let mut buf = bytes::BytesMut::from(bytes);
        let mut packetizer = Packetizer::new(1 << 20);
        let mut out = Vec::new();
        while let Some(page) = parse_page(&mut buf).unwrap() {
            let mut packets = Vec::new();
            packetizer.push(&page, &mut packets).unwrap();
            out.push((page.serial, page.sequence, page.flags, packets));
        }
        assert!(buf.is_empty(), "whole pages only");
        out
    }

    #[test]
    fn an_ogg_listener_joins_at_a_link_head_and_hears_a_switch_as_a_new_link() {
        let stream = stream();
        let mut dj = stream.attach(SourceKind::AutoDj).unwrap();
        dj.start(vec![opus_track()]).unwrap();
        push(&mut dj, FLAG_HEADER, 0, &OpusHead::synthesize(2, 48_000));
        for i in 0..5 {
            push(&mut dj, FLAG_KEYFRAME, i * 20_000, &[0xFC, i as u8]);
        }
        let (mut consumer, first) = stream.subscribe().unwrap();
        let mut writer = HttpWriter::new(Container::Ogg, None);
        // Burst 0: it joins at the newest frame, after the link's head.
        let (bytes, frames) = written(&mut consumer, &first, &mut writer).unwrap();
        let joined = pages(&bytes);
        assert_eq!(frames, 1);
        assert_eq!(joined.len(), 3, "BOS, tags, one audio page: {joined:?}");
        assert_eq!((joined[0].2, joined[0].1), (FLAG_BOS, 0));
        assert_eq!(joined[2].1, 6, "the stream's own page number: a jump players accept");
        let serial = joined[0].0;

        let mut live = stream.attach(SourceKind::Live).unwrap();
        live.start(vec![opus_track()]).unwrap();
        push(&mut live, FLAG_HEADER, 0, &OpusHead::synthesize(1, 44_100));
        push(&mut live, FLAG_KEYFRAME, 0, &[0xFC, 9]);
        let (bytes, frames) = written(&mut consumer, &[], &mut writer).unwrap();
        let switched = pages(&bytes);
        assert_eq!(frames, 1);
        assert_eq!(
            (switched[0].0, switched[0].2 & FLAG_EOS),
            (serial, FLAG_EOS),
            "the old link ends"
        );
        assert_ne!(switched[1].0, serial, "a new link");
        assert_eq!(switched[1].2, FLAG_BOS);
        assert_eq!(
            OpusHead::parse(&switched[1].3[0]).unwrap().channels,
            1,
            "the live source's head"
        );
        assert_eq!(switched[3].3[0], Bytes::from_static(&[0xFC, 9]));
    }

    #[test]
    fn icy_blocks_come_every_metaint_bytes_with_the_title_once() {
        let stream = stream();
        let mut source = stream.attach(SourceKind::Live).unwrap();
        let mut mp3 = opus_track();
        mp3.codec = Codec::Mp3;
        source.start(vec![mp3]).unwrap();
        let (mut consumer, first) = stream.subscribe().unwrap();
        let mut writer = HttpWriter::new(Container::Mp3, Some(10));
        push(&mut source, FLAG_KEYFRAME, 0, b"0123456");
        source.metadata(Metadata { title: Some("T".into()), ..Metadata::default() }).unwrap();
        push(&mut source, FLAG_KEYFRAME, 1, b"789abcdef");
        push(&mut source, FLAG_KEYFRAME, 2, b"ghijklmnopq");
        let (bytes, frames) = written(&mut consumer, &first, &mut writer).unwrap();
        assert_eq!(frames, 3);
        let mut expected = b"0123456789".to_vec();
        expected.extend_from_slice(&metadata_block("T", None));
        expected.extend_from_slice(b"abcdefghij");
        expected.push(0); // unchanged title: an empty block
        expected.extend_from_slice(b"klmnopq");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_source_in_another_codec_ends_the_listener() {
        let stream = stream();
        let mut source = stream.attach(SourceKind::Live).unwrap();
        source.start(vec![opus_track()]).unwrap();
        let (mut consumer, first) = stream.subscribe().unwrap();
        let mut writer = HttpWriter::new(Container::Ogg, None);
        assert!(written(&mut consumer, &first, &mut writer).is_ok());
        drop(source);
        let mut mp3 = opus_track();
        mp3.codec = Codec::Mp3;
        let mut other = stream.attach(SourceKind::Live).unwrap();
        other.start(vec![mp3]).unwrap();
        let err = written(&mut consumer, &[], &mut writer).unwrap_err();
        assert_eq!(err.codec, Some(Codec::Mp3));
    }
}
