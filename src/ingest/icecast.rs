//! One Icecast source: `PUT /mount` (with `Expect: 100-continue`) or the legacy `SOURCE`,
//! HTTP Basic auth with the stream key, then a body of Ogg (Opus, Vorbis) or MP3 until the source hangs
//! up.
//!
//! The body is demuxed (`format::demux`) and pushed through the same `SourceHandle` API as the
//! WebSocket ingest, so every kind of listener hears it. Bad data ends this source only, with a
//! log line; a source silent for `dead_peer_timeout` is dropped. Nothing grows unbounded: the
//! body is parsed as it arrives, at most one page or frame is buffered.

use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::RateLimit;
use crate::auth;
use crate::conn::Conn;
use crate::deadline::Deadline;
use crate::directory::{IceInfo, Registration, SourceInfo};
use crate::error::Refusal;
use crate::format::demux::{Demuxer, Event, TRACK};
use crate::format::Container;
use crate::http::{self, Request, Response};
use crate::icecast::{parse_mount, REALM, SERVER_ID};
use crate::node::Node;
use crate::protocol::{encode_frame, FrameHeader, FLAG_HEADER, FLAG_KEYFRAME};
use crate::relay::{KickReason, SourceError, SourceHandle, SourceKind};

/// Bytes read from the socket at a time.
const READ_BYTES: usize = 16 << 10;
/// How long a refused source's extra bytes are read before the socket closes.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// Most bytes read from a refused source.
const LINGER_BYTES: usize = 256 << 10;
/// Longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// Serves one source request until the source leaves, misbehaves, is kicked, or the relay
/// shuts down.
///
/// # Errors
/// Socket errors while answering; everything after the answer is logged here.
pub async fn serve(
    mut socket: Deadline<Conn>,
    peer: SocketAddr,
    node: &Node,
    request: &Request,
    leftover: &[u8],
    cancel: CancellationToken,
) -> crate::Result<()> {
    let path = request.path.as_str();
    let (mut source, mut framing) = match admit(node, peer, request) {
        Ok(admitted) => admitted,
        Err(Refusal::WrongPassword) if request.header("authorization").is_none() => {
            // libshout always asks without credentials first and retries on this challenge.
            debug!(%peer, %path, "icecast source without credentials: sending a challenge");
            return challenge(&mut socket).await;
        }
        Err(refusal) => return refuse(&mut socket, node, peer, request, &refusal).await,
    };
    let name = source.stream().config().name.clone();
    let stream = std::sync::Arc::clone(source.stream());
    let mut answer = String::new();
    if request.header_has_token("expect", "100-continue") {
        // ffmpeg sends no audio before this; real Icecast then also sends `200 OK`.
        answer.push_str("HTTP/1.1 100 Continue\r\n\r\n");
    }
    answer.push_str(&format!("HTTP/1.0 200 OK\r\nServer: {SERVER_ID}\r\n\r\n"));
    socket.write_all(answer.as_bytes()).await?;

    let ice = IceInfo::from_request(request);
    let user_agent = request.header("user-agent").map(str::to_owned);
    info!(stream = %name, %peer, method = %request.method, agent = user_agent.as_deref().unwrap_or("-"), "icecast source connected");
    let proxied =
        ["forwarded", "x-forwarded-for", "x-real-ip"].iter().any(|h| request.header(h).is_some());
    if proxied && matches!(framing, Framing::UntilClose) {
        // nginx, HAProxy's HTTP mode and others forward only a framed body: this source's
        // audio will never arrive, and it would not say so (ffmpeg's icecast:// exits 0).
        warn!(stream = %name, %peer, "icecast source came through a proxy with a body that is neither chunked nor sized: the proxy forwards none of it (send a chunked PUT, or use a TCP proxy: docs/DEPLOY.md)");
    }
    let kick = source.kicked();
    let mut session = Session {
        source: &mut source,
        demux: Demuxer::new(
            node.config.max_message_bytes,
            ice.bitrate.map(|k| k.saturating_mul(1000)),
        ),
        frames: 0,
        registration: None,
    };
    let mut raw = BytesMut::with_capacity(READ_BYTES);
    raw.extend_from_slice(leftover);
    let mut received = leftover.len() as u64;
    let max_bitrate = stream.config().max_ingest_bitrate;
    let mut rate = RateLimit::new(max_bitrate);
    let _ = rate.take(leftover.len());
    let mut body = BytesMut::new();
    let mut events = Vec::new();
    let outcome = loop {
        let done = match framing.decode(&mut raw, &mut body) {
            Ok(done) => done,
            Err(reason) => break Outcome::Bad(reason.to_owned()),
        };
        if let Err(err) = session.demux.push(&mut body, &mut events) {
            break Outcome::Bad(err.to_string());
        }
        let mut failed = None;
        for event in events.drain(..) {
            if let Err(err) = session.apply(event) {
                failed = Some(err);
                break;
            }
            if session.registration.is_none() {
                if let Some(container) = session.demux.container() {
                    let info = SourceInfo {
                        ice: ice.clone(),
                        container,
                        started: SystemTime::now(),
                        peer,
                        user_agent: user_agent.clone(),
                    };
                    session.registration = Some(node.directory.add_source(&name, info));
                }
            }
        }
        if let Some(err) = failed {
            break Outcome::Bad(err.to_string());
        }
        if done {
            break Outcome::Ended;
        }
        raw.reserve(READ_BYTES);
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Outcome::Shutdown,
            () = kick.cancelled() => break Outcome::Kicked(session.source.kick_reason()),
            read = timeout(node.config.dead_peer_timeout, socket.read_buf(&mut raw)) => match read {
                Err(_) => break Outcome::Bad(format!("nothing received for {:?}", node.config.dead_peer_timeout)),
                Ok(Ok(0)) => break Outcome::Ended,
                Ok(Ok(n)) => {
                    received += n as u64;
                    if !rate.take(n) {
                        break Outcome::Bad(format!("over the stream's limit of {max_bitrate} bit/s"));
                    }
                }
                Ok(Err(err)) => break Outcome::Io(err),
            },
        }
    };
    let frames = session.frames;
    drop(session);
    match outcome {
        Outcome::Ended if frames == 0 && received > 0 => {
            warn!(stream = %name, %peer, bytes = received, "icecast source left without sending a single audio frame");
        }
        Outcome::Ended => info!(stream = %name, %peer, frames, "icecast source disconnected"),
        Outcome::Shutdown => {
            info!(stream = %name, %peer, frames, "closing icecast source: relay shutting down")
        }
        Outcome::Kicked(KickReason::Operator) => {
            info!(stream = %name, %peer, frames, "icecast source removed by an admin request")
        }
        Outcome::Kicked(KickReason::LiveElsewhere) => {
            warn!(stream = %name, %peer, frames, "closing icecast source: the stream is live on another node")
        }
        Outcome::Bad(reason) => {
            node.metrics.refused("bad_source_data");
            warn!(stream = %name, %peer, frames, %reason, "closing icecast source");
        }
        Outcome::Io(err) => {
            debug!(stream = %name, %peer, frames, %err, "icecast source connection failed")
        }
    }
    let _ = timeout(std::time::Duration::from_secs(1), socket.shutdown()).await;
    Ok(())
}

/// How a source session ended.
enum Outcome {
    Ended,
    Shutdown,
    Kicked(KickReason),
    Bad(String),
    Io(std::io::Error),
}

/// A connected source's moving parts.
struct Session<'a> {
    source: &'a mut SourceHandle,
    demux: Demuxer,
    frames: u64,
    /// Keeps the source listed in the Icecast status while it is on air.
    registration: Option<Registration>,
}

impl Session<'_> {
    fn apply(&mut self, event: Event) -> Result<(), SourceError> {
        match event {
            Event::Start(tracks) => self.source.start(tracks),
            Event::Header(head) => {
                let header = FrameHeader { flags: FLAG_HEADER, track: TRACK, pts: 0 };
                self.source.frame(header, encode_frame(header, &head)).map(drop)
            }
            Event::Frame { pts, data, edge } => {
                self.frames += 1;
                let header = FrameHeader { flags: FLAG_KEYFRAME, track: TRACK, pts };
                self.source.frame_at_edge(header, encode_frame(header, &data), edge).map(drop)
            }
            Event::Metadata(meta) => self.source.metadata(meta),
        }
    }
}

/// The checks before the answer: a stream, its key as the password, a container the relay
/// reads, a body it can delimit, no other live source.
fn admit(
    node: &Node,
    peer: SocketAddr,
    request: &Request,
) -> Result<(SourceHandle, Framing), Refusal> {
    let stream = parse_mount(&request.path)
        .and_then(|(name, _)| node.streams.get(name))
        .ok_or(Refusal::NoSuchMount)?;
    let presented = request.header("authorization").is_some();
    let matches = || auth::source_password_matches(stream, request);
    if !node.logins.verify(peer.ip(), presented, matches)? {
        return Err(Refusal::WrongPassword);
    }
    let hint = request.header("content-type").and_then(Container::from_content_type);
    if hint == Some(Container::WebM) {
        return Err(Refusal::SourceContainer);
    }
    let framing = Framing::of(request).ok_or(Refusal::BodyFraming)?;
    let source = stream.attach(SourceKind::Live).map_err(|_| Refusal::MountInUse)?;
    Ok((source, framing))
}

/// Answers 401 with a Basic challenge, without counting it as a refusal.
async fn challenge(socket: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> crate::Result<()> {
    let response = Response::refusal(&Refusal::WrongPassword)
        .with_header("Server", SERVER_ID)
        .with_header("WWW-Authenticate", format!("Basic realm=\"{REALM}\""));
    response.send(socket, false).await?;
    linger(socket).await;
    Ok(())
}

/// Refuses a source request (with Icecast's headers), then drains what it still sends.
async fn refuse(
    socket: &mut (impl AsyncRead + AsyncWrite + Unpin),
    node: &Node,
    peer: SocketAddr,
    request: &Request,
    refusal: &Refusal,
) -> crate::Result<()> {
    let mut extra = vec![("Server", SERVER_ID.to_owned())];
    if refusal.status() == 401 {
        extra.push(("WWW-Authenticate", format!("Basic realm=\"{REALM}\"")));
    }
    http::refuse(socket, &node.metrics, peer, request, refusal, &extra).await?;
    linger(socket).await;
    Ok(())
}

/// Reads and drops what a refused source is still sending, briefly: closing a socket with
/// unread data resets the connection, and the peer may lose our answer with it.
async fn linger(socket: &mut (impl AsyncRead + Unpin)) {
    let mut sink = [0u8; 4096];
    let _ = timeout(LINGER, async {
        let mut total = 0;
        while total < LINGER_BYTES {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// How a source's request body is delimited, and its decoder (public for the fuzz target).
#[derive(Debug)]
pub enum Framing {
    /// Until the source closes (what Icecast sources do).
    UntilClose,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkState),
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkState(Chunk);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

impl Framing {
    /// A chunked body's decoder at its start.
    pub fn chunked() -> Self {
        Framing::Chunked(ChunkState(Chunk::Size))
    }

    /// The framing a request's headers announce; `None` for a bad `Content-Length`.
    pub fn of(request: &Request) -> Option<Self> {
        if request.header_has_token("transfer-encoding", "chunked") {
            return Some(Self::chunked());
        }
        match request.header("content-length") {
            Some(len) => len.trim().parse().ok().map(Framing::Length),
            None => Some(Framing::UntilClose),
        }
    }

    /// Moves body bytes from `raw` to `body`; true once the body is complete. A chunk-size
    /// or trailer line longer than `MAX_CHUNK_LINE_BYTES` is an error, not a wait.
    ///
    /// # Errors
    /// What is wrong with a chunked body's framing.
    pub fn decode(
        &mut self,
        raw: &mut BytesMut,
        body: &mut BytesMut,
    ) -> Result<bool, &'static str> {
        match self {
            Framing::UntilClose => {
                if body.is_empty() {
                    std::mem::swap(body, raw);
                } else {
                    body.extend_from_slice(raw);
                    raw.clear();
                }
                Ok(false)
            }
            Framing::Length(left) => {
                let n = raw.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                body.extend_from_slice(&raw[..n]);
                raw.advance(n);
                *left -= n as u64;
                Ok(*left == 0)
            }
            Framing::Chunked(ChunkState(state)) => loop {
                match *state {
                    Chunk::Size | Chunk::Trailer => {
                        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
                            if raw.len() > MAX_CHUNK_LINE_BYTES {
                                return Err("chunk size line too long");
                            }
                            return Ok(false);
                        };
                        if end > MAX_CHUNK_LINE_BYTES {
                            return Err("chunk size line too long");
                        }
                        let line = raw.split_to(end + 2);
                        let line = &line[..end];
                        if *state == Chunk::Trailer {
                            if line.is_empty() {
                                *state = Chunk::Done;
                            }
                            continue;
                        }
                        let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                        let hex = std::str::from_utf8(hex).map_err(|_| "bad chunk size")?;
                        let size =
                            u64::from_str_radix(hex.trim(), 16).map_err(|_| "bad chunk size")?;
                        *state = if size == 0 { Chunk::Trailer } else { Chunk::Data(size) };
                    }
                    Chunk::Data(left) => {
                        if raw.is_empty() {
                            return Ok(false);
                        }
                        let n = raw.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        body.extend_from_slice(&raw[..n]);
                        raw.advance(n);
                        *state = if left == n as u64 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - n as u64)
                        };
                    }
                    Chunk::DataEnd => {
                        if raw.len() < 2 {
                            return Ok(false);
                        }
                        if &raw[..2] != b"\r\n" {
                            return Err("chunk not followed by CRLF");
                        }
                        raw.advance(2);
                        *state = Chunk::Size;
                    }
                    Chunk::Done => {
                        raw.clear();
                        return Ok(true);
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode_across_arbitrary_splits() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for split in 1..wire.len() {
            let mut framing = Framing::chunked();
            let (mut raw, mut body) = (BytesMut::new(), BytesMut::new());
            let mut done = false;
            for piece in wire.chunks(split) {
                raw.extend_from_slice(piece);
                done = framing.decode(&mut raw, &mut body).unwrap();
            }
            assert!(done, "split {split}");
            assert_eq!(&body[..], b"helloabcdefghijklmnopqrstuvwxyz", "split {split}");
        }
        let mut framing = Framing::chunked();
        let mut raw = BytesMut::from(&b"zz\r\n"[..]);
        assert!(framing.decode(&mut raw, &mut BytesMut::new()).is_err());
        let mut framing = Framing::chunked();
        let mut raw = BytesMut::from(&vec![b'1'; 2000][..]);
        assert!(framing.decode(&mut raw, &mut BytesMut::new()).is_err(), "unbounded size line");
    }

    #[test]
    fn length_delimited_bodies_stop_at_the_length() {
        let mut framing = Framing::Length(4);
        let (mut raw, mut body) = (BytesMut::from(&b"abcdef"[..]), BytesMut::new());
        assert!(framing.decode(&mut raw, &mut body).unwrap());
        assert_eq!(&body[..], b"abcd");
    }
}
