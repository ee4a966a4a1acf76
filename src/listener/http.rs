//! One HTTP listener: `GET /{stream}.ogg` (Ogg/Opus), `/{stream}.mp3` (MP3) or `/{stream}`
//! (whichever the source sends), with Icecast's response headers and ICY metadata on request.
//!
//! Same policy as the WebSocket listeners, in a task of its own: the ring is the only queue
//! (`Consumer::fill` with `listener_batch_bytes`), a bounded outbox written with vectored
//! writes, skip ahead when lagging, close after `slow_listener_timeout` behind. A `Mux`
//! (`format::mux`) writes the stream into the listener's container.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant as StdInstant;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::auth::check_listen_access;
use crate::config::Config;
use crate::directory::Client;
use crate::error::Refusal;
use crate::format::mux::{Mux, MuxError};
use crate::format::Container;
use crate::http::{self, Request};
use crate::icecast::{parse_mount, SERVER_ID};
use crate::node::Node;
use crate::protocol::{Codec, ListenerEvent, Track, TrackKind};
use crate::relay::{Consumer, Item, Stream};

/// Time to write the response head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves one HTTP listener until it leaves, is too slow, or the relay shuts down.
///
/// # Errors
/// Socket errors; they end only this listener.
pub async fn serve(
    mut socket: TcpStream,
    peer: SocketAddr,
    node: &Node,
    request: &Request,
    cancel: CancellationToken,
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
    let (tracks, metadata) = match first.first() {
        Some(Item::Event(hello)) => match hello.get() {
            ListenerEvent::Hello { tracks, metadata, .. } => (tracks.clone(), metadata.clone()),
            _ => (Vec::new(), None),
        },
        _ => (Vec::new(), None),
    };
    let icy = request.header("icy-metadata").map(str::trim) == Some("1");
    let head = response_head(node, request, &name, container, &tracks, icy);
    if request.method == "HEAD" {
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
        stream: name.clone(),
        peer,
        user_agent: request.header("user-agent").map(str::to_owned),
        connected: StdInstant::now(),
        kind: "http",
    };
    let _registration = node.directory.add_client(client, consumer.stream().listener_count());
    timeout(HEAD_TIMEOUT, socket.write_all(head.as_bytes()))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    tune(&socket, &node.config);
    let mux = Mux::new(container, &tracks, metadata, icy.then_some(node.config.icy_metaint));
    debug!(stream = %name, %peer, ?container, icy, "http listener connected");
    match run(socket, consumer, first, mux, &node.config, cancel).await? {
        Ending::TooSlow => info!(stream = %name, %peer, "http listener closed: too slow"),
        Ending::CodecChanged(err) => {
            info!(stream = %name, %peer, reason = %err, "http listener closed")
        }
        ending => debug!(stream = %name, %peer, ?ending, "http listener left"),
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
    let tracks = match first.first() {
        Some(Item::Event(hello)) => match hello.get() {
            ListenerEvent::Hello { tracks, .. } => tracks.as_slice(),
            _ => &[],
        },
        _ => &[],
    };
    let container = choose(name, wanted, tracks).map_err(Refusal::Listen)?;
    Ok((consumer, first, container))
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
fn tune(socket: &TcpStream, config: &Config) {
    super::websocket::tune_socket(socket, config.listener_kernel_bytes);
    let sock = socket2::SockRef::from(socket);
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
    CodecChanged(MuxError),
}

/// Container bytes waiting to be written; each piece carries the media frames its last byte
/// completes.
type Outbox = super::outbox::Outbox<(Bytes, u32)>;

/// Writes a batch of the stream into the container.
fn feed(mux: &mut Mux, items: &mut VecDeque<Item>, out: &mut Outbox) -> Result<(), MuxError> {
    for item in items.drain(..) {
        match item {
            Item::Frame(frame) => mux.frame(frame.header(), frame.payload(), &mut out.items),
            Item::Event(event) => match event.get() {
                ListenerEvent::Metadata(meta) => mux.metadata(meta.clone(), &mut out.items),
                ListenerEvent::Source { tracks: Some(tracks), .. } => {
                    mux.source(tracks, &mut out.items)?;
                }
                _ => mux.flush(&mut out.items),
            },
        }
    }
    mux.flush(&mut out.items);
    Ok(())
}

async fn run(
    mut socket: TcpStream,
    mut consumer: Consumer,
    first: Vec<Item>,
    mut mux: Mux,
    config: &Config,
    cancel: CancellationToken,
) -> std::io::Result<Ending> {
    let metrics = consumer.stream().metrics().clone();
    let mut out = Outbox::default();
    let mut frames: VecDeque<Item> = first.into();
    if let Err(err) = feed(&mut mux, &mut frames, &mut out) {
        return Ok(Ending::CodecChanged(err));
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
            if let Err(err) = feed(&mut mux, &mut frames, &mut out) {
                return Ok(Ending::CodecChanged(err));
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
}
