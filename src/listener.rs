//! One WebSocket listener: a `Consumer` drained into a socket, at the socket's pace.
//!
//! One task per listener and no queue of its own: the outbox holds at most one batch of
//! shared frames taken from the ring (`listener_batch_bytes`), written with one vectored write.
//! With a `send_window`, new frames wait until the oldest is that old, so several go out in
//! one write. The task also answers pings, pings idle peers, and closes listeners that stay
//! behind the live edge (4008) or go silent (4009). Called by `server.rs` after the upgrade.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::Config;
use crate::protocol::close;
use crate::relay::{Consumer, Fill};
use crate::websocket::{ClientEvent, ClientReader, WireFrame, OP_PING, OP_PONG};

/// Largest message a listener may send (it has nothing to say but pings and close).
pub const MAX_LISTENER_MESSAGE_BYTES: usize = 4096;
/// Time to deliver a close frame before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most buffers in one vectored write (Linux allows 1024).
const MAX_IOV: usize = 128;
/// Socket reads per wake-up, so a chatty peer cannot monopolise the task.
const MAX_READS_PER_WAKE: usize = 8;
/// A batch this large is written at once even with a send window: one write of 16 KiB costs
/// less than twice a write of 300 bytes, so there is little left to save by waiting.
const WINDOW_FULL_BYTES: usize = 16 << 10;
/// A hold shorter than this is not worth a wake-up: the batch leaves a little early.
const MIN_HOLD: Duration = Duration::from_millis(1);
/// An emptied outbox keeps room for this many frames; a larger one (after a burst or a
/// catch-up) is given back, so an idle listener costs little memory.
const OUTBOX_KEEP_FRAMES: usize = 4;

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
        if self.frames.is_empty() && self.frames.capacity() > 2 * OUTBOX_KEEP_FRAMES {
            self.frames.shrink_to(OUTBOX_KEEP_FRAMES);
        }
        Ok((written, media))
    }
}

/// Which way the socket is ready. Cancel safe: it only polls readiness.
fn poll_ready(
    socket: &TcpStream,
    cx: &mut Context<'_>,
    write: bool,
) -> Poll<std::io::Result<(bool, bool)>> {
    // poll_*_ready keep one waker per direction: no waiter list to join on every wake-up.
    let readable = match socket.poll_read_ready(cx) {
        Poll::Ready(Ok(())) => true,
        Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
        Poll::Pending => false,
    };
    let writable = write
        && match socket.poll_write_ready(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => false,
        };
    if readable || writable {
        Poll::Ready(Ok((readable, writable)))
    } else {
        Poll::Pending
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
    let mut reader = ClientReader::new(MAX_LISTENER_MESSAGE_BYTES, leftover);
    let mut out = Outbox { frames: first.into(), offset: 0 };
    let mut closing: Option<(u16, Instant)> = None;
    let now = Instant::now();
    let (mut last_heard, mut caught_up_at) = (now, now);
    let mut next_ping = now + config.ping_interval;
    // Frames in the outbox are held until then, to go out with the next ones in one write.
    let mut hold: Option<Instant> = None;
    let mut held_bytes = 0;
    // The last fill reached the head: wait for the stream to change before filling again.
    let mut at_head = false;
    // With a window, a listener at the head looks at the ring again when the next frames
    // should be due (from the cadence of its last batch) instead of waking on every frame.
    let mut recheck: Option<Instant> = None;
    let (mut last_at, mut cadence): (Option<Instant>, Option<Duration>) = (None, None);
    // Bytes of the batch being sent: large batches (video) are never held, so never predicted.
    let mut batch_bytes = 0;
    // Created once: re-creating these on every wake-up re-registers them every time.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let timer = sleep_until(next_ping);
    tokio::pin!(timer);

    loop {
        if out.is_empty() && hold.is_none() {
            if let Some((code, _)) = closing {
                let _ = socket.shutdown().await;
                return Ok(Ending::Closed(code));
            }
            if !at_head {
                let fill = take_batch(&mut consumer, &mut out, config.listener_batch_bytes);
                at_head = fill.at_head;
                batch_bytes += fill.bytes;
                let now = Instant::now();
                if fill.at_head {
                    caught_up_at = now;
                    last_at = fill.last_at.or(last_at);
                    cadence = batch_cadence(&fill).or(cadence);
                }
                if let Some(first_at) = fill.first_at.filter(|_| fill.at_head) {
                    let due = first_at + config.send_window;
                    let small = fill.bytes < WINDOW_FULL_BYTES;
                    // Leaving a little early is allowed; a wake-up for a millisecond is not worth it.
                    if !config.send_window.is_zero() && small && due > now + MIN_HOLD {
                        hold = Some(due);
                        held_bytes = fill.bytes;
                    }
                }
            }
        }
        let write = !out.is_empty() && hold.is_none();
        let idle = at_head && out.is_empty() && closing.is_none();
        let deadline = match closing {
            Some((_, deadline)) => deadline,
            None if write => next_ping.min(caught_up_at + config.slow_listener_timeout),
            None => hold.or(recheck.filter(|_| idle)).map_or(next_ping, |due| due.min(next_ping)),
        };
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            biased;
            () = &mut cancelled, if closing.is_none() => {
                start_close(&mut out, &mut closing, close::GOING_AWAY, "relay shutting down");
                hold = None;
            }
            ready = poll_fn(|cx| poll_ready(&socket, cx, write)) => {
                let (readable, writable) = ready?;
                if readable {
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
                                    hold = None;
                                }
                            }
                            Ok(Some(ClientEvent::Pong | ClientEvent::Message | ClientEvent::Data { .. })) => {}
                            Ok(Some(ClientEvent::Close(_))) => {
                                if closing.is_some() {
                                    return Ok(Ending::PeerClosed);
                                }
                                start_close(&mut out, &mut closing, 1000, "");
                                hold = None;
                                break;
                            }
                            Err(err) => {
                                if closing.is_none() {
                                    start_close(&mut out, &mut closing, err.close_code(), &err.to_string());
                                    hold = None;
                                }
                                break;
                            }
                        }
                    }
                    reader.release_idle_buffer();
                }
                if writable && !out.is_empty() {
                    match out.write_to(&socket) {
                        Ok((bytes, frames)) => {
                            let metrics = consumer.stream().metrics();
                            metrics.bytes_out.inc_by(bytes as u64);
                            metrics.frames_out.inc_by(frames);
                            let small = batch_bytes < WINDOW_FULL_BYTES;
                            if out.is_empty() && at_head && small && !config.send_window.is_zero() {
                                // The next frame should come one interval after the last one:
                                // look when it is due rather than wake when it arrives.
                                recheck = last_at
                                    .zip(cadence)
                                    .map(|(last, every)| last + every + config.send_window);
                            }
                            if out.is_empty() {
                                batch_bytes = 0;
                            }
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(err) => return Err(err),
                    }
                }
            }
            () = consumer.changed(), if idle && recheck.is_none() => {
                at_head = false;
            }
            () = &mut timer => {
                let now = Instant::now();
                if let Some((code, deadline)) = closing {
                    if now >= deadline {
                        return Ok(Ending::Dropped(code));
                    }
                } else if hold.is_some_and(|due| now >= due) {
                    // The window is over: add what came meanwhile, then write it all at once.
                    hold = None;
                    let room = config.listener_batch_bytes.saturating_sub(held_bytes);
                    if room > 0 {
                        let fill = take_batch(&mut consumer, &mut out, room);
                        at_head = fill.at_head;
                        batch_bytes += fill.bytes;
                        if fill.at_head {
                            caught_up_at = now;
                            last_at = fill.last_at.or(last_at);
                            cadence = batch_cadence(&fill).or(cadence);
                        }
                    }
                } else if idle && recheck.is_some_and(|due| now >= due) {
                    // Fill again; if nothing came (the source paused), wait for the stream.
                    recheck = None;
                    at_head = false;
                } else if write && now >= caught_up_at + config.slow_listener_timeout {
                    consumer.stream().metrics().too_slow.inc();
                    start_close(&mut out, &mut closing, close::TOO_SLOW, "listener too slow");
                } else if now >= last_heard + config.dead_peer_timeout {
                    start_close(&mut out, &mut closing, close::DEAD_PEER, "no answer to pings");
                    hold = None;
                } else if now >= next_ping {
                    out.push_control(WireFrame::new(OP_PING, bytes::Bytes::new()));
                    hold = None;
                    next_ping = now + config.ping_interval;
                }
            }
        }
    }
}

/// The time between the frames of a batch, if it has several.
fn batch_cadence(fill: &Fill) -> Option<Duration> {
    let (first, last) = (fill.first_at?, fill.last_at?);
    let gaps = u32::try_from(fill.frames.checked_sub(1)?).ok().filter(|&g| g > 0)?;
    Some((last - first) / gaps)
}

/// Takes the next batch from the ring into the outbox and counts skips.
fn take_batch(consumer: &mut Consumer, out: &mut Outbox, max_bytes: usize) -> Fill {
    let fill = consumer.fill(&mut out.frames, max_bytes);
    if fill.skipped > 0 {
        consumer.stream().metrics().frames_skipped.inc_by(fill.skipped);
        debug!(stream = %consumer.stream().config().name, skipped = fill.skipped, "listener lagged; resumed at a start point");
    }
    fill
}

/// Drops queued media (keeping a frame already half written), queues a close frame and
/// starts the close timer.
fn start_close(out: &mut Outbox, closing: &mut Option<(u16, Instant)>, code: u16, reason: &str) {
    out.frames.truncate(usize::from(out.offset > 0));
    out.frames.push_back(WireFrame::close(code, reason));
    *closing = Some((code, Instant::now() + CLOSE_TIMEOUT));
}
