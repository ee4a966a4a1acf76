//! One WebSocket listener: a `Consumer` drained into a socket, at the socket's pace.
//!
//! One task per listener and no queue of its own: the outbox holds at most one batch of
//! shared frames taken from the ring (`listener_batch_bytes`), written with one vectored write.
//! The task also answers pings, pings idle peers, and closes listeners that stay behind the
//! live edge (4008) or go silent (4009). Called by `server.rs` after the upgrade.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Config;
use crate::protocol::close;
use crate::relay::Consumer;
use crate::websocket::{ClientEvent, ClientReader, WireFrame, OP_PING, OP_PONG};

/// Largest message a listener may send (it has nothing to say but pings and close).
pub const MAX_LISTENER_MESSAGE_BYTES: usize = 4096;
/// Time to deliver a close frame before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most buffers in one vectored write (Linux allows 1024).
const MAX_IOV: usize = 128;
/// Socket reads per wake-up, so a chatty peer cannot monopolise the task.
const MAX_READS_PER_WAKE: usize = 8;

/// How a listener session ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The peer closed (close frame or EOF).
    PeerClosed,
    /// We closed with this code.
    Closed(u16),
    /// The close frame could not be delivered in time; the socket was dropped.
    Dropped(u16),
}

/// Frames waiting to be written, the first possibly in part.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) frames: VecDeque<WireFrame>,
    /// Bytes of the first frame already written.
    pub(crate) offset: usize,
}

impl Outbox {
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Queues a control frame at the next frame boundary, ahead of media but behind other
    /// control frames (pongs answer pings in order).
    pub(crate) fn push_control(&mut self, frame: WireFrame) {
        let mut at = usize::from(self.offset > 0).min(self.frames.len());
        while self.frames.get(at).is_some_and(WireFrame::is_control) {
            at += 1;
        }
        self.frames.insert(at, frame);
    }

    /// Writes as much as the socket takes without blocking; returns (bytes, media frames).
    pub(crate) fn write_to(&mut self, socket: &TcpStream) -> std::io::Result<(usize, u64)> {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        let mut skip = self.offset;
        'frames: for frame in &self.frames {
            for part in [frame.head(), &frame.payload()[..]] {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                iov[n] = IoSlice::new(&part[skip..]);
                skip = 0;
                n += 1;
                if n == MAX_IOV {
                    break 'frames;
                }
            }
        }
        let written = socket.try_write_vectored(&iov[..n])?;
        let mut media = 0;
        self.offset += written;
        while let Some(front) = self.frames.front() {
            if self.offset < front.wire_len() {
                break;
            }
            self.offset -= front.wire_len();
            media += u64::from(front.is_binary());
            self.frames.pop_front();
        }
        Ok((written, media))
    }
}

/// Serves one listener until it leaves, is closed by policy, or the relay shuts down.
///
/// # Errors
/// Socket errors; they end only this listener.
pub async fn serve(
    mut socket: TcpStream,
    leftover: &[u8],
    mut consumer: Consumer,
    first: Vec<WireFrame>,
    config: &Config,
    cancel: CancellationToken,
) -> std::io::Result<Ending> {
    let metrics = consumer.stream().metrics().clone();
    let mut reader = ClientReader::new(MAX_LISTENER_MESSAGE_BYTES, leftover);
    let mut out = Outbox { frames: first.into(), offset: 0 };
    let mut closing: Option<(u16, Instant)> = None;
    let now = Instant::now();
    let (mut last_heard, mut caught_up_at) = (now, now);
    let mut next_ping = now + config.ping_interval;

    loop {
        if out.is_empty() {
            if let Some((code, _)) = closing {
                let _ = socket.shutdown().await;
                return Ok(Ending::Closed(code));
            }
            let fill = consumer.fill(&mut out.frames, config.listener_batch_bytes);
            if fill.skipped > 0 {
                metrics.frames_skipped.inc_by(fill.skipped);
                debug!(stream = %consumer.stream().config().name, skipped = fill.skipped, "listener lagged; resumed at a start point");
            }
            if out.is_empty() {
                caught_up_at = Instant::now();
            }
        }
        let interest = if out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let deadline = match closing {
            Some((_, deadline)) => deadline,
            None if !out.is_empty() => next_ping.min(caught_up_at + config.slow_listener_timeout),
            None => next_ping,
        };
        tokio::select! {
            biased;
            () = cancel.cancelled(), if closing.is_none() => {
                start_close(&mut out, &mut closing, close::GOING_AWAY, "relay shutting down");
            }
            ready = socket.ready(interest) => {
                let ready = ready?;
                if ready.is_readable() {
                    for _ in 0..MAX_READS_PER_WAKE {
                        match socket.try_read_buf(reader.buffer()) {
                            Ok(0) => return Ok(Ending::PeerClosed),
                            Ok(_) => last_heard = Instant::now(),
                            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(err) => return Err(err),
                        }
                    }
                    loop {
                        match reader.next_event() {
                            Ok(None) => break,
                            Ok(Some(ClientEvent::Ping(payload))) => {
                                if closing.is_none() {
                                    out.push_control(WireFrame::new(OP_PONG, payload));
                                }
                            }
                            Ok(Some(ClientEvent::Pong | ClientEvent::Message | ClientEvent::Data { .. })) => {}
                            Ok(Some(ClientEvent::Close(_))) => {
                                if closing.is_some() {
                                    return Ok(Ending::PeerClosed);
                                }
                                start_close(&mut out, &mut closing, 1000, "");
                                break;
                            }
                            Err(err) => {
                                if closing.is_none() {
                                    start_close(&mut out, &mut closing, err.close_code(), &err.to_string());
                                }
                                break;
                            }
                        }
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
            () = consumer.changed(), if out.is_empty() && closing.is_none() => {}
            () = sleep_until(deadline) => {
                let now = Instant::now();
                if let Some((code, deadline)) = closing {
                    if now >= deadline {
                        return Ok(Ending::Dropped(code));
                    }
                } else if !out.is_empty() && now >= caught_up_at + config.slow_listener_timeout {
                    metrics.too_slow.inc();
                    start_close(&mut out, &mut closing, close::TOO_SLOW, "listener too slow");
                } else if now >= last_heard + config.dead_peer_timeout {
                    start_close(&mut out, &mut closing, close::DEAD_PEER, "no answer to pings");
                } else if now >= next_ping {
                    out.push_control(WireFrame::new(OP_PING, bytes::Bytes::new()));
                    next_ping = now + config.ping_interval;
                }
            }
        }
    }
}

/// Drops queued media (keeping a frame already half written), queues a close frame and
/// starts the close timer.
fn start_close(out: &mut Outbox, closing: &mut Option<(u16, Instant)>, code: u16, reason: &str) {
    out.frames.truncate(usize::from(out.offset > 0));
    out.frames.push_back(WireFrame::close(code, reason));
    *closing = Some((code, Instant::now() + CLOSE_TIMEOUT));
}
