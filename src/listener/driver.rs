//! One listener driver: an epoll loop on its own thread that serves many listeners, WebSocket
//! and HTTP, plain and TLS.
//!
//! The loop does the I/O: it takes new listeners, reads what they send (pings, close),
//! writes their batches with one vectored write each (for TLS listeners, one record per
//! batch, sealed here: `tls.rs`), pings idle WebSocket peers and closes the slow and the silent. *When*
//! each listener is served is decided by its `Schedule` (pure, in `schedule.rs`): idle at its
//! stream's head, pending for a send window, ready, or blocked.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, info, warn};

use super::http::HttpWriter;
use super::outbox::{Outbox, Piece};
use super::schedule::{Place, Schedule};
use super::tls::{Opened, Records, MAX_PLAINTEXT};
use super::{
    Command, DriverHandle, Ending, Lease, ListenerKind, NewListener, Settings,
    MAX_LISTENER_MESSAGE_BYTES,
};
use crate::error::Closing;
use crate::protocol::close;
use crate::relay::{Consumer, Fill, Stream, Watcher, MAX_FILL_ENTRIES};
use crate::websocket::{ClientEvent, ClientReader, WireFrame, OP_PING, OP_PONG};

const WAKER: Token = Token(usize::MAX);
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;
/// Time to deliver a close frame before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pongs a listener may have queued; a ping flood past it gets no more answers.
const MAX_QUEUED_PONGS: usize = 8;
/// Bytes read from one socket per turn, so a chatty peer cannot hold up the others.
const READ_BUDGET: usize = 64 << 10;
/// Batches written to a listener that is behind before the others get a turn.
const BATCHES_PER_TURN: usize = 4;
/// Listeners joining or leaving a driver before freed memory is given back.
const TRIM_AFTER_CHANGE: usize = 500;
/// Least time between two trims.
const TRIM_EVERY: Duration = Duration::from_secs(2);
/// Bounds of the period of the sweep that checks pings and timeouts.
const SWEEP_MIN: Duration = Duration::from_millis(5);
const SWEEP_MAX: Duration = Duration::from_millis(250);

/// Starts a driver thread.
pub(super) fn spawn(index: usize, settings: Settings) -> std::io::Result<DriverHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (commands, inbox) = mpsc::channel();
    let watcher: Arc<dyn Watcher> = Arc::new(Wake(Arc::clone(&waker)));
    let driver = Driver::new(poll, watcher, inbox, settings);
    let thread = std::thread::Builder::new()
        .name(format!("onair-listeners-{index}"))
        .spawn(move || driver.run())?;
    Ok(DriverHandle { index, commands, waker, thread })
}

/// Wakes a driver's epoll loop when a stream it serves moves.
struct Wake(Arc<Waker>);

impl Watcher for Wake {
    fn wake(&self) {
        // A driver that has exited no longer listens; nothing to do then.
        let _ = self.0.wake();
    }
}

/// One listener. Most of a listener's memory is here: no task, no buffer when idle.
struct Conn {
    socket: TcpStream,
    /// A TLS listener's keys and sequence numbers: what it writes is sealed here.
    tls: Option<Box<Records>>,
    /// An HTTP listener's container state; `None` for a WebSocket listener.
    http: Option<Box<HttpWriter>>,
    consumer: Consumer,
    /// What the socket has not taken yet (control frames, or a batch it took in part);
    /// `None` when nothing is owed, which is most of the time.
    out: Option<Box<Outbox>>,
    /// Only while the peer has sent part of a frame: most listeners send nothing for minutes.
    reader: Option<Box<ClientReader>>,
    /// Times are milliseconds since the driver started (`Driver::now_ms`): half the size.
    closing: Option<(u16, u64)>,
    last_heard: u64,
    caught_up_at: u64,
    next_ping: u64,
    _lease: Lease,
}

/// The listeners of one stream with one send window on this driver.
struct Group {
    stream: Arc<Stream>,
    window: Duration,
    /// The stream's head when last looked at.
    seen: u64,
    /// Written since the stream's counters were last told: they are shared with the other
    /// drivers, so they are added to once a turn, not once a write.
    sent: Sent,
}

/// Bytes and media frames written.
#[derive(Default)]
struct Sent {
    bytes: u64,
    frames: u64,
}

/// How a write went.
enum Wrote {
    All,
    Blocked,
    Failed,
}

struct Driver {
    poll: Poll,
    watcher: Arc<dyn Watcher>,
    inbox: mpsc::Receiver<Command>,
    settings: Settings,
    /// Boxed: a slab of pointers grows by doubling, the listeners themselves do not.
    conns: Vec<Option<Box<Conn>>>,
    free: Vec<u32>,
    live: usize,
    groups: Vec<Group>,
    schedule: Schedule,
    /// Listeners to serve this turn (a buffer kept between turns).
    turn: Vec<u32>,
    /// Listeners that had more to read than one turn's budget.
    reread: Vec<u32>,
    /// The batch being written; only what a socket does not take moves to the listener.
    scratch: Outbox,
    read_buf: Box<[u8]>,
    /// TLS records being sealed, and plaintext being opened, for one listener at a time.
    wire: Vec<u8>,
    plaintext: bytes::BytesMut,
    now: Instant,
    /// `now` in milliseconds since `epoch`.
    now_ms: u64,
    epoch: Instant,
    next_sweep: Instant,
    sweep_every: Duration,
    stopping: bool,
    /// Listeners when the allocator was last asked to give freed memory back.
    trimmed_at: usize,
    next_trim: Instant,
    reporters: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Driver {
    fn new(
        poll: Poll,
        watcher: Arc<dyn Watcher>,
        inbox: mpsc::Receiver<Command>,
        settings: Settings,
    ) -> Self {
        let shortest = [
            settings.ping_interval,
            settings.dead_peer_timeout,
            settings.slow_listener_timeout,
            CLOSE_TIMEOUT,
        ]
        .into_iter()
        .min()
        .unwrap_or(CLOSE_TIMEOUT);
        let sweep_every = (shortest / 4).clamp(SWEEP_MIN, SWEEP_MAX);
        let now = Instant::now();
        Self {
            poll,
            watcher,
            inbox,
            settings,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            groups: Vec::new(),
            schedule: Schedule::default(),
            turn: Vec::new(),
            reread: Vec::new(),
            scratch: Outbox::default(),
            read_buf: vec![0; 16 << 10].into_boxed_slice(),
            wire: Vec::with_capacity(MAX_PLAINTEXT + 512),
            plaintext: bytes::BytesMut::new(),
            now,
            now_ms: 0,
            epoch: now,
            next_sweep: now + sweep_every,
            sweep_every,
            stopping: false,
            trimmed_at: 0,
            next_trim: now,
            reporters: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = if !self.schedule.has_ready() && self.reread.is_empty() {
                let next =
                    self.schedule.next_due().map_or(self.next_sweep, |at| at.min(self.next_sweep));
                next.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() != ErrorKind::Interrupted {
                    warn!(%err, "listener driver cannot wait for events");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            self.now = Instant::now();
            self.now_ms = ms(self.now.duration_since(self.epoch));
            for event in &events {
                let Token(slot) = event.token();
                if event.token() == WAKER {
                    continue;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(slot);
                }
                if event.is_writable() || event.is_write_closed() {
                    self.on_writable(slot);
                }
            }
            self.take_commands();
            self.check_streams();
            self.run_due();
            self.run_ready();
            for slot in std::mem::take(&mut self.reread) {
                self.on_readable(slot as usize);
            }
            if self.now >= self.next_sweep {
                self.sweep();
                self.next_sweep = self.now + self.sweep_every;
            }
            self.count_sent();
            if self.stopping && self.live == 0 {
                for reporter in self.reporters.drain(..) {
                    let _ = reporter.send(());
                }
                // Commands that raced with the shutdown: their sockets just close.
                drop(self.inbox);
                return;
            }
        }
    }

    /// Adds what this turn wrote to the streams' counters.
    fn count_sent(&mut self) {
        for group in &mut self.groups {
            let Sent { bytes, frames } = std::mem::take(&mut group.sent);
            if bytes > 0 {
                let metrics = group.stream.metrics();
                metrics.bytes_out.inc_by(bytes);
                metrics.frames_out.inc_by(frames);
            }
        }
    }

    fn take_commands(&mut self) {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Add(listener)) => self.add(*listener),
                #[cfg(test)]
                Ok(Command::Crash) => panic!("listener driver crash requested by a test"),
                Ok(Command::Shutdown(reporter)) => {
                    self.reporters.push(reporter);
                    self.stop();
                }
                Err(mpsc::TryRecvError::Empty) => return,
                // The relay is gone: close what is left and exit.
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.stop();
                    return;
                }
            }
        }
    }

    fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for slot in 0..self.conns.len() {
            self.close(slot, &Closing::ShuttingDown);
        }
    }

    fn add(&mut self, listener: NewListener) {
        let NewListener { socket, tls, peer, leftover, consumer, first, kind, lease } = listener;
        let mut socket = TcpStream::from_std(socket);
        let slot = self.free.pop().map_or(self.conns.len(), |slot| slot as usize);
        let Ok(token_slot) = u32::try_from(slot) else {
            warn!(%peer, "listener driver is full");
            return;
        };
        if let Err(err) = self.poll.registry().register(
            &mut socket,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!(%peer, %err, "cannot watch a listener socket");
            self.free.push(token_slot);
            return;
        }
        let (mut http, window) = match kind {
            ListenerKind::WebSocket => (None, self.settings.send_window),
            ListenerKind::Http(writer) => (Some(writer), self.settings.http_send_window),
        };
        let group = self.group_of(consumer.stream(), window);
        let now = self.now_ms;
        let mut out = Outbox::default();
        for item in &first {
            match &mut http {
                None => out.items.push_back(Piece::from(item)),
                // A codec change cannot come first; a listener that got one leaves on its
                // next batch.
                Some(writer) => drop(writer.push(item, &mut out.items)),
            }
        }
        let conn = Conn {
            socket,
            tls,
            http,
            consumer,
            out: Some(Box::new(out)),
            reader: None,
            closing: None,
            last_heard: now,
            caught_up_at: now,
            next_ping: now + ms(self.settings.ping_interval),
            _lease: lease,
        };
        if slot == self.conns.len() {
            self.conns.push(Some(Box::new(conn)));
        } else {
            self.conns[slot] = Some(Box::new(conn));
        }
        self.live += 1;
        self.schedule.add(token_slot, group);
        // Frames that came with the request head (a ping, a close) are answered like others.
        if !leftover.is_empty() {
            if let Some(conn) = self.conn(slot) {
                let reader = ClientReader::new(MAX_LISTENER_MESSAGE_BYTES, &leftover);
                conn.reader = Some(Box::new(reader));
            }
            self.handle_client_frames(slot);
            self.release_idle_reader(slot);
        }
        if self.stopping {
            self.close(slot, &Closing::ShuttingDown);
        }
    }

    fn group_of(&mut self, stream: &Arc<Stream>, window: Duration) -> u32 {
        let known = |g: &Group| Arc::ptr_eq(&g.stream, stream) && g.window == window;
        if let Some(at) = self.groups.iter().position(known) {
            return at as u32;
        }
        stream.watch(&self.watcher);
        let seen = stream.head_seq();
        let stream = Arc::clone(stream);
        self.groups.push(Group { stream, window, seen, sent: Sent::default() });
        (self.groups.len() - 1) as u32
    }

    fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        self.conns.get_mut(slot).and_then(Option::as_deref_mut)
    }

    /// Frees a listener's reader once it holds nothing.
    fn release_idle_reader(&mut self, slot: usize) {
        if let Some(conn) = self.conn(slot) {
            if conn.reader.as_ref().is_some_and(|r| r.is_idle()) {
                conn.reader = None;
            }
        }
    }

    /// Streams whose head moved: their idle listeners become due when the first new frame
    /// is `send_window` old (at once without a window, or when the new frames are large).
    fn check_streams(&mut self) {
        for (at, group) in self.groups.iter_mut().enumerate() {
            let head = group.stream.head_seq();
            if head == group.seen {
                continue;
            }
            let (first_at, bytes) = group.stream.arrivals_since(group.seen);
            group.seen = head;
            self.schedule.head_moved(at as u32, first_at, bytes, group.window, self.now);
        }
    }

    fn run_due(&mut self) {
        let mut turn = std::mem::take(&mut self.turn);
        self.schedule.take_due(self.now, &mut turn);
        for slot in turn.drain(..) {
            self.serve(slot as usize);
        }
        self.turn = turn;
    }

    fn run_ready(&mut self) {
        let mut turn = std::mem::take(&mut self.turn);
        self.schedule.take_ready(&mut turn);
        for slot in turn.drain(..) {
            self.serve(slot as usize);
        }
        self.turn = turn;
    }

    /// Writes what the listener is owed and new batches from the ring until it is at the
    /// head, blocked, or has had its share of this turn.
    fn serve(&mut self, slot: usize) {
        let batch_bytes = self.settings.batch_bytes;
        let now = self.now_ms;
        for _ in 0..BATCHES_PER_TURN {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_deref_mut) else {
                return;
            };
            let group = self.schedule.group(slot as u32) as usize;
            let sent = &mut self.groups[group].sent;
            let owed = conn.out.as_deref_mut().filter(|out| !out.is_empty());
            if owed.is_some() || conn.tls.as_ref().is_some_and(|tls| tls.pending().is_some()) {
                let mut empty = Outbox::default();
                let out = owed.unwrap_or(&mut empty);
                match write_out(&conn.socket, conn.tls.as_deref_mut(), out, sent, &mut self.wire) {
                    // An idle listener keeps no buffer.
                    Wrote::All => conn.out = None,
                    Wrote::Blocked => return self.schedule.block(slot as u32),
                    Wrote::Failed => return self.remove(slot, Ending::Failed),
                }
            }
            if let Some((code, _)) = conn.closing {
                end_session(conn, &mut self.wire);
                return self.remove(slot, Ending::Closed(code));
            }
            let fill = match take_batch(conn, &mut self.scratch, batch_bytes) {
                Ok(fill) => fill,
                Err(err) => {
                    self.scratch.clear();
                    debug!(stream = %conn.consumer.stream().config().name, %err, "http listener closed");
                    end_session(conn, &mut self.wire);
                    return self.remove(slot, Ending::Closed(close::NORMAL));
                }
            };
            if fill.at_head {
                conn.caught_up_at = now;
            }
            if self.scratch.is_empty() {
                if fill.at_head {
                    return self.schedule.make_idle(slot as u32);
                }
                continue;
            }
            let sent = &mut self.groups[group].sent;
            let tls = conn.tls.as_deref_mut();
            match write_out(&conn.socket, tls, &mut self.scratch, sent, &mut self.wire) {
                Wrote::All if fill.at_head => return self.schedule.make_idle(slot as u32),
                Wrote::All => {}
                Wrote::Blocked => {
                    // What is left moves to a queue of its own size; the batch queue
                    // keeps its room for the next listener.
                    let items = self.scratch.items.drain(..).collect();
                    let offset = std::mem::take(&mut self.scratch.offset);
                    conn.out = Some(Box::new(Outbox { items, offset }));
                    return self.schedule.block(slot as u32);
                }
                Wrote::Failed => {
                    self.scratch.clear();
                    return self.remove(slot, Ending::Failed);
                }
            }
        }
        self.schedule.make_ready(slot as u32);
    }

    fn on_writable(&mut self, slot: usize) {
        if self.schedule.place(slot as u32) == Place::Blocked {
            self.serve(slot);
        }
    }

    fn on_readable(&mut self, slot: usize) {
        let mut total = 0;
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_deref_mut) else {
                return;
            };
            let n = match conn.socket.read(&mut self.read_buf) {
                Ok(0) => return self.remove(slot, Ending::PeerClosed),
                Ok(n) => n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.remove(slot, Ending::Failed),
            };
            conn.last_heard = self.now_ms;
            total += n;
            let mut peer_closed = false;
            let data = match conn.tls.as_deref_mut() {
                None => &self.read_buf[..n],
                Some(records) => {
                    self.plaintext.clear();
                    match records.open(&self.read_buf[..n], &mut self.plaintext) {
                        Ok(Opened::Data) => {}
                        Ok(Opened::Closed) => peer_closed = true,
                        Err(err) => {
                            debug!(stream = %conn.consumer.stream().config().name, %err, "tls listener dropped");
                            return self.remove(slot, Ending::Failed);
                        }
                    }
                    &self.plaintext[..]
                }
            };
            // An HTTP listener has nothing to say after its request: read and drop.
            if conn.http.is_none() && !data.is_empty() {
                conn.reader
                    .get_or_insert_with(|| {
                        Box::new(ClientReader::new(MAX_LISTENER_MESSAGE_BYTES, &[]))
                    })
                    .buffer()
                    .extend_from_slice(data);
                if !self.handle_client_frames(slot) {
                    return;
                }
            }
            if peer_closed {
                return self.remove(slot, Ending::PeerClosed);
            }
            if total >= READ_BUDGET {
                self.reread.push(slot as u32);
                return;
            }
        }
        self.release_idle_reader(slot);
    }

    /// Acts on the complete frames the listener sent. False when it is gone or closing
    /// (there is no point reading more).
    fn handle_client_frames(&mut self, slot: usize) -> bool {
        let mut answered = false;
        loop {
            let Some(conn) = self.conn(slot) else { return false };
            let Some(reader) = conn.reader.as_mut() else { break };
            match reader.next_event() {
                Ok(None) => break,
                Ok(Some(ClientEvent::Ping(payload))) => {
                    let queued = conn.out.as_ref().map_or(0, |out| out.control_frames());
                    if conn.closing.is_none() && queued < MAX_QUEUED_PONGS {
                        let out = conn.out.get_or_insert_with(Box::default);
                        out.push_control(WireFrame::new(OP_PONG, payload));
                        answered = true;
                    }
                }
                Ok(Some(ClientEvent::Pong | ClientEvent::Message | ClientEvent::Data { .. })) => {}
                Ok(Some(ClientEvent::Close(_))) => {
                    if conn.closing.is_some() {
                        self.remove(slot, Ending::PeerClosed);
                    } else {
                        self.close(slot, &Closing::Normal);
                    }
                    return false;
                }
                Err(err) => {
                    self.close(slot, &Closing::from(err));
                    return false;
                }
            }
        }
        if answered {
            self.flush_control(slot);
        }
        self.conn(slot).is_some_and(|conn| conn.closing.is_none())
    }

    /// Starts closing: drops queued media (keeping a frame already half written), queues a
    /// close frame and sends it as soon as the socket takes it.
    fn close(&mut self, slot: usize, why: &Closing) {
        let now = self.now_ms;
        let Some(conn) = self.conn(slot) else { return };
        if conn.closing.is_some() {
            return;
        }
        let out = conn.out.get_or_insert_with(Box::default);
        out.truncate_to_boundary();
        // An HTTP listener has no close frame: what is half written is finished, then the
        // connection ends.
        if conn.http.is_none() {
            out.items.push_back(Piece::Ws(why.frame()));
        }
        conn.closing = Some((why.code(), now + ms(CLOSE_TIMEOUT)));
        self.flush_control(slot);
    }

    /// Writes queued control frames now for a listener that owes no media (idle or
    /// pending); others write them with their next batch.
    fn flush_control(&mut self, slot: usize) {
        if !matches!(self.schedule.place(slot as u32), Place::Idle | Place::Pending) {
            return;
        }
        let group = self.schedule.group(slot as u32) as usize;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_deref_mut) else { return };
        let mut empty = Outbox::default();
        let out = conn.out.as_deref_mut().unwrap_or(&mut empty);
        let sent = &mut self.groups[group].sent;
        match write_out(&conn.socket, conn.tls.as_deref_mut(), out, sent, &mut self.wire) {
            Wrote::All => {
                conn.out = None;
                if let Some((code, _)) = conn.closing {
                    end_session(conn, &mut self.wire);
                    self.remove(slot, Ending::Closed(code));
                }
            }
            Wrote::Blocked => self.schedule.block(slot as u32),
            Wrote::Failed => self.remove(slot, Ending::Failed),
        }
    }

    /// Pings, dead peers, listeners stuck behind, close frames not delivered in time.
    fn sweep(&mut self) {
        let now = self.now_ms;
        self.trim_after_bursts();
        let settings = self.settings;
        for slot in 0..self.conns.len() {
            let place = self.schedule.place(slot as u32);
            let Some(conn) = self.conn(slot) else { continue };
            if let Some((code, deadline)) = conn.closing {
                if now >= deadline {
                    self.remove(slot, Ending::Dropped(code));
                }
            } else if matches!(place, Place::Blocked | Place::Ready)
                && now >= conn.caught_up_at + ms(settings.slow_listener_timeout)
            {
                conn.consumer.stream().metrics().too_slow.inc();
                self.close(slot, &Closing::TooSlow);
            } else if conn.http.is_some() {
                // HTTP listeners cannot be pinged: TCP keepalive and failed writes find the
                // vanished ones.
            } else if now >= conn.last_heard + ms(settings.dead_peer_timeout) {
                self.close(slot, &Closing::DeadPeer("no answer to pings"));
            } else if now >= conn.next_ping {
                conn.next_ping = now + ms(settings.ping_interval);
                conn.out
                    .get_or_insert_with(Box::default)
                    .push_control(WireFrame::new(OP_PING, bytes::Bytes::new()));
                self.flush_control(slot);
            }
        }
    }

    /// After a burst of connections (or departures), gives the memory their handshakes used
    /// back to the system: glibc keeps freed memory for reuse, and a burst of thousands of
    /// handshakes would otherwise stay in the relay's RSS as if every listener still used it.
    fn trim_after_bursts(&mut self) {
        if self.now < self.next_trim || self.live.abs_diff(self.trimmed_at) < TRIM_AFTER_CHANGE {
            return;
        }
        self.trimmed_at = self.live;
        self.next_trim = self.now + TRIM_EVERY;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    fn remove(&mut self, slot: usize, ending: Ending) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else { return };
        let _ = self.poll.registry().deregister(&mut conn.socket);
        self.schedule.remove(slot as u32);
        self.live -= 1;
        self.free.push(slot as u32);
        let name = &conn.consumer.stream().config().name;
        // Asked of the socket (still open) rather than kept: 32 bytes per listener.
        let peer = conn.socket.peer_addr().map_or_else(|_| "?".to_owned(), |p| p.to_string());
        let kind = if conn.http.is_some() { "http" } else { "websocket" };
        let tls = conn.tls.is_some();
        match ending {
            Ending::Closed(close::TOO_SLOW) | Ending::Dropped(close::TOO_SLOW) => {
                info!(stream = %name, %peer, kind, tls, "listener closed: too slow");
            }
            ending => debug!(stream = %name, %peer, kind, tls, ?ending, "listener left"),
        }
    }
}

/// Writes `out` until it is empty or the socket is full (edge-triggered readiness needs a
/// `WouldBlock` before the next writable event). A TLS listener's pieces are sealed into one
/// record of up to 16 KiB per write, after what the socket did not take last time.
fn write_out(
    socket: &TcpStream,
    tls: Option<&mut Records>,
    out: &mut Outbox,
    sent: &mut Sent,
    wire: &mut Vec<u8>,
) -> Wrote {
    let mut socket = socket;
    let Some(records) = tls else {
        while !out.is_empty() {
            match out.write_with(|iov| socket.write_vectored(iov)) {
                Ok((0, _)) => return Wrote::Failed,
                Ok((bytes, frames)) => {
                    sent.bytes += bytes as u64;
                    sent.frames += frames;
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Wrote::Blocked,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Wrote::Failed,
            }
        }
        return Wrote::All;
    };
    while let Some(pending) = records.pending() {
        match socket.write(pending) {
            Ok(0) => return Wrote::Failed,
            Ok(n) => records.advance(n),
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Wrote::Blocked,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Wrote::Failed,
        }
    }
    while !out.is_empty() {
        wire.clear();
        let taken = records.seal_data(wire, |plaintext| {
            out.write_with(|iov| {
                let before = plaintext.len();
                for part in iov {
                    let room = MAX_PLAINTEXT - (plaintext.len() - before);
                    plaintext.extend_from_slice(&part[..part.len().min(room)]);
                }
                Ok(plaintext.len() - before)
            })
        });
        match taken {
            Ok((0, _)) | Err(_) => return Wrote::Failed,
            Ok((bytes, frames)) => {
                sent.bytes += bytes as u64;
                sent.frames += frames;
            }
        }
        let mut at = 0;
        while at < wire.len() {
            match socket.write(&wire[at..]) {
                Ok(0) => return Wrote::Failed,
                Ok(n) => at += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => {
                    records.keep(&wire[at..]);
                    return Wrote::Blocked;
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Wrote::Failed,
            }
        }
    }
    Wrote::All
}

/// The end of a listener's session on our side: a TLS close_notify (best effort), then no
/// more writes.
fn end_session(conn: &mut Conn, wire: &mut Vec<u8>) {
    if let Some(records) = conn.tls.as_deref_mut() {
        if records.pending().is_none() {
            wire.clear();
            records.seal_close(wire);
            let _ = (&conn.socket).write(wire);
        }
    }
    let _ = conn.socket.shutdown(Shutdown::Write);
}

/// Takes the next batch from the ring into the outbox and counts skips.
///
/// # Errors
/// An HTTP listener whose container no longer fits the stream's codec.
fn take_batch(
    conn: &mut Conn,
    out: &mut Outbox,
    max_bytes: usize,
) -> Result<Fill, super::http::CodecChanged> {
    let consumer = &mut conn.consumer;
    let fill = match conn.http.as_deref_mut() {
        None => consumer.fill(&mut out.items, max_bytes),
        Some(writer) => {
            let mut failed = None;
            let fill = consumer.fill_with(max_bytes, MAX_FILL_ENTRIES, |item| {
                if failed.is_none() {
                    failed = writer.push(item, &mut out.items).err();
                }
            });
            if let Some(err) = failed {
                return Err(err);
            }
            fill
        }
    };
    if fill.skipped > 0 {
        consumer.stream().metrics().frames_skipped.inc_by(fill.skipped);
        debug!(stream = %consumer.stream().config().name, skipped = fill.skipped, "listener lagged; resumed at a start point");
    }
    Ok(fill)
}

/// A duration in whole milliseconds (the unit of a listener's times).
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
