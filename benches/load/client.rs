//! One load-client process: many listener connections on one epoll loop, a few dozen bytes
//! of state each, and one shared read buffer.
//!
//! The orchestrator drives it with one command per line on stdin and reads one JSON line per
//! reply on stdout:
//!   `add N STALL_EVERY TIMEOUT_MS`  open N more listeners (every STALL_EVERY-th may be stalled)
//!   `reset S0 PRECISE_STRIDE`       count frames from seq S0; every PRECISE_STRIDE-th listener
//!                                   reads each frame at once (exact latency), the others read
//!                                   in 16 KiB chunks (SO_RCVLOWAT) and give one sample per read
//!   `stall`                         the stall group stops reading
//!   `status`                        how many listeners stream now
//!   `report S1`                     read what is queued, then report frames up to seq S1
//!   `quit`                          close everything and exit

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

use serde::Serialize;

use crate::hist::{Hist, SparseHist};
use crate::wire::{self, Event, Parser};

/// One read takes at most this much.
const READ_BUF: usize = 256 << 10;
/// A connect that has not completed by then was probably dropped by a full accept queue
/// (Icecast listens with a backlog of 5): try again at once instead of waiting for the
/// kernel's one-second SYN retransmit.
const CONNECT_RETRY_NS: u64 = 150_000_000;
/// Connects and requests in flight at once.
const MAX_CONNECTING: usize = 64;
const MAX_AWAITING: usize = 2_000;
const MAX_RETRIES: u32 = 200;
const STDIN_TOKEN: u64 = u64::MAX;
const UNKNOWN: u64 = u64::MAX;

/// Which server protocol the listeners speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// onair: WebSocket `GET /listen/{stream}`.
    Ws,
    /// Icecast: plain HTTP `GET /mount`, Ogg pages.
    Http,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Connecting,
    AwaitingHead,
    Streaming,
    Closed,
    Failed,
}

struct Conn {
    fd: RawFd,
    state: State,
    precise: bool,
    stall_group: bool,
    stalled: bool,
    /// Progress through "\r\n\r\n" at the end of the response head.
    head_match: u8,
    status: [u8; 12],
    status_len: u8,
    parser: Parser,
    next_seq: u64,
    last_seq: u64,
    frames: u32,
    /// Frames of any age received while counting (a server far behind sends old ones).
    frames_any: u32,
    lost: u64,
    skipped: u32,
    bytes: u64,
    close_code: u16,
    since_ns: u64,
    retries: u32,
}

/// What one process saw; the orchestrator sums these over processes.
#[derive(Serialize, Default, Debug, Clone, serde::Deserialize)]
pub struct Report {
    /// Listeners asked for.
    pub listeners: u64,
    /// Listeners receiving the stream now.
    pub streaming: u64,
    /// Healthy listeners (not in the stall group) that the server closed or that failed.
    pub closed: u64,
    /// Connections that never got a response.
    pub failed: u64,
    /// Healthy listeners counted.
    pub healthy: u64,
    /// Frames healthy listeners received from seq S0 on.
    pub frames: u64,
    /// Frames of any age healthy listeners received during the hold.
    pub frames_any: u64,
    /// Bytes healthy listeners received during the hold.
    pub bytes: u64,
    /// Frames missing in what healthy listeners received (sequence gaps).
    pub lost_frames: u64,
    /// Healthy listeners with a gap, a skip event, or closed.
    pub listeners_lost: u64,
    /// `skipped` events received.
    pub skipped_events: u64,
    /// Healthy listeners that had not received frame S1 after draining their sockets.
    pub listeners_behind: u64,
    /// Most frames a healthy listener was behind S1.
    pub behind_max: u64,
    /// Listeners in the stall group.
    pub stalled: u64,
    /// Of those, closed by the server.
    pub stalled_closed: u64,
    /// Close codes received, as (code, count).
    pub close_codes: Vec<(u16, u64)>,
    /// Precise listeners.
    pub precise: u64,
    /// Reads that brought frames at precise listeners: frames / reads ≈ frames per server write.
    pub precise_reads: u64,
    /// Latency of every frame at precise listeners, µs.
    pub latency_precise: SparseHist,
    /// Latency of the newest frame of each read at bulk listeners, µs.
    pub latency_bulk: SparseHist,
    /// Connect attempts that had to be retried.
    pub retries: u64,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn set_int(fd: RawFd, level: i32, opt: i32, value: i32) {
    // SAFETY: a valid fd and a pointer to an i32 of the stated length.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// Raises the soft open-file limit to the hard limit; returns the new limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

struct Client {
    epoll: RawFd,
    addr: SocketAddrV4,
    bind: Ipv4Addr,
    proto: Proto,
    request: Vec<u8>,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    hold_from: u64,
    precise: Hist,
    bulk: Hist,
    /// Reads that brought frames at precise listeners (about one per server write).
    precise_reads: u64,
    drain: bool,
    pending_add: Option<(usize, u64)>,
    stall_every: usize,
    /// Bulk listeners are woken once this many bytes are queued (perf.md: cuts client CPU
    /// tenfold).
    rcvlowat: i32,
}

/// Runs a client process until `quit` or stdin closes.
pub fn run(
    addr: SocketAddrV4,
    bind: Ipv4Addr,
    proto: Proto,
    path: &str,
    rcvlowat: i32,
) -> anyhow::Result<()> {
    raise_fd_limit();
    let request = match proto {
        Proto::Ws => format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
        Proto::Http => format!(
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: onair-load\r\nAccept: */*\r\n\r\n"
        ),
    }
    .into_bytes();
    // SAFETY: creating an epoll instance has no preconditions.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    anyhow::ensure!(epoll >= 0, "epoll_create1 failed");
    // SAFETY: fd 0 is our stdin pipe; making it non-blocking only affects this process.
    unsafe {
        let flags = libc::fcntl(0, libc::F_GETFL);
        libc::fcntl(0, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut client = Client {
        epoll,
        addr,
        bind,
        proto,
        request,
        conns: Vec::new(),
        buf: vec![0; READ_BUF],
        hold_from: UNKNOWN,
        precise: Hist::default(),
        bulk: Hist::default(),
        precise_reads: 0,
        drain: false,
        pending_add: None,
        stall_every: 0,
        rcvlowat,
    };
    client.watch(0, libc::EPOLLIN as u32, STDIN_TOKEN, libc::EPOLL_CTL_ADD);
    client.run_loop()
}

impl Client {
    fn watch(&self, fd: RawFd, events: u32, token: u64, op: i32) {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid epoll fd and event struct.
        unsafe { libc::epoll_ctl(self.epoll, op, fd, &mut ev) };
    }

    fn run_loop(&mut self) -> anyhow::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut line = Vec::new();
        loop {
            let busy = self.pending_add.is_some();
            let timeout = if busy { 5 } else { 100 };
            // SAFETY: the events buffer is valid for its length.
            let n = unsafe {
                libc::epoll_wait(self.epoll, events.as_mut_ptr(), events.len() as i32, timeout)
            };
            if n < 0 && errno() != libc::EINTR {
                anyhow::bail!("epoll_wait: {}", std::io::Error::last_os_error());
            }
            for ev in &events[..n.max(0) as usize] {
                let (token, flags) = (ev.u64, ev.events);
                if token == STDIN_TOKEN {
                    if !self.read_commands(&mut line)? {
                        return Ok(());
                    }
                    continue;
                }
                self.on_event(token as usize, flags);
            }
            if self.pending_add.is_some() {
                self.progress_connects();
            }
        }
    }

    /// Reads and runs commands; false when stdin closed or `quit`.
    fn read_commands(&mut self, line: &mut Vec<u8>) -> anyhow::Result<bool> {
        let mut chunk = [0u8; 4096];
        loop {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(0, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n == 0 {
                return Ok(false);
            }
            if n < 0 {
                return Ok(errno() == libc::EAGAIN || errno() == libc::EINTR);
            }
            line.extend_from_slice(&chunk[..n as usize]);
            while let Some(end) = line.iter().position(|&b| b == b'\n') {
                let cmd: Vec<u8> = line.drain(..=end).collect();
                let cmd = String::from_utf8_lossy(&cmd).trim().to_owned();
                if !self.command(&cmd)? {
                    return Ok(false);
                }
            }
        }
    }

    fn command(&mut self, cmd: &str) -> anyhow::Result<bool> {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let num = |i: usize| -> u64 { words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0) };
        match words.first().copied() {
            Some("add") => {
                let n = num(1) as usize;
                self.stall_every = num(2) as usize;
                let deadline = wire::mono_ns() + num(3) * 1_000_000;
                let first = self.conns.len();
                for _ in 0..n {
                    let i = self.conns.len();
                    let stall_group = self.stall_every > 0 && i.is_multiple_of(self.stall_every);
                    self.conns.push(Conn {
                        fd: -1,
                        state: State::Idle,
                        precise: false,
                        stall_group,
                        stalled: false,
                        head_match: 0,
                        status: [0; 12],
                        status_len: 0,
                        parser: Parser::new(self.proto == Proto::Http),
                        next_seq: UNKNOWN,
                        last_seq: UNKNOWN,
                        frames: 0,
                        frames_any: 0,
                        lost: 0,
                        skipped: 0,
                        bytes: 0,
                        close_code: 0,
                        since_ns: 0,
                        retries: 0,
                    });
                }
                let _ = first;
                self.pending_add = Some((n, deadline));
                self.progress_connects();
            }
            Some("reset") => {
                self.hold_from = num(1);
                let stride = num(2).max(1) as usize;
                self.precise = Hist::default();
                self.bulk = Hist::default();
                self.precise_reads = 0;
                for (i, c) in self.conns.iter_mut().enumerate() {
                    c.frames = 0;
                    c.frames_any = 0;
                    c.lost = 0;
                    c.skipped = 0;
                    c.bytes = 0;
                    c.precise = i % stride == stride / 2 && !c.stall_group;
                    if c.state == State::Streaming {
                        let lowat = if c.precise { 1 } else { self.rcvlowat };
                        set_int(c.fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, lowat);
                    }
                }
                reply(&serde_json::json!({"type": "reset"}))?;
            }
            Some("stall") => {
                for (i, c) in self.conns.iter_mut().enumerate() {
                    if c.stall_group && c.state == State::Streaming {
                        c.stalled = true;
                        let mut ev = libc::epoll_event { events: 0, u64: i as u64 };
                        // SAFETY: valid epoll fd and event struct.
                        unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_MOD, c.fd, &mut ev) };
                    }
                }
                reply(&serde_json::json!({"type": "stalled"}))?;
            }
            Some("status") => {
                let streaming = self.conns.iter().filter(|c| c.state == State::Streaming).count();
                reply(&serde_json::json!({"type": "status", "streaming": streaming}))?;
            }
            Some("report") => {
                let until = num(1);
                let report = self.report(until);
                reply(&report)?;
            }
            Some("quit") | None => {
                for c in &self.conns {
                    if c.fd >= 0 {
                        // SAFETY: closing a socket this process owns.
                        unsafe { libc::close(c.fd) };
                    }
                }
                return Ok(false);
            }
            Some(other) => anyhow::bail!("unknown command {other:?}"),
        }
        Ok(true)
    }

    /// Starts connects within the in-flight limits, retries stuck ones, and replies to `add`
    /// once every listener streams (or failed, or the deadline passed).
    fn progress_connects(&mut self) {
        let now = wire::mono_ns();
        let (mut connecting, mut awaiting, mut idle, mut failed, mut streaming) = (0, 0, 0, 0, 0);
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.state == State::Connecting && now - c.since_ns > CONNECT_RETRY_NS {
                self.close_conn(i);
                let c = &mut self.conns[i];
                c.retries += 1;
                c.state = if c.retries > MAX_RETRIES { State::Failed } else { State::Idle };
            }
            match self.conns[i].state {
                State::Connecting => connecting += 1,
                State::AwaitingHead => awaiting += 1,
                State::Idle => idle += 1,
                State::Failed | State::Closed => failed += 1,
                State::Streaming => streaming += 1,
            }
        }
        if idle > 0 {
            for i in 0..self.conns.len() {
                if connecting >= MAX_CONNECTING || connecting + awaiting >= MAX_AWAITING {
                    break;
                }
                if self.conns[i].state == State::Idle {
                    self.connect(i, now);
                    connecting += 1;
                    idle -= 1;
                }
            }
        }
        let Some((_, deadline)) = self.pending_add else { return };
        if idle + connecting + awaiting == 0 || now > deadline {
            self.pending_add = None;
            let retries: u64 = self.conns.iter().map(|c| u64::from(c.retries)).sum();
            let _ = reply(&serde_json::json!({
                "type": "added", "streaming": streaming, "failed": failed,
                "pending": idle + connecting + awaiting, "retries": retries,
            }));
        }
    }

    fn connect(&mut self, i: usize, now: u64) {
        // SAFETY: socket/bind/connect on a fresh fd with valid sockaddr structs.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        let c = &mut self.conns[i];
        c.since_ns = now;
        if fd < 0 {
            c.state = State::Failed;
            return;
        }
        set_int(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1);
        if c.stall_group {
            // A small receive window, like a phone on a bad link: once it stops reading, the
            // server feels it within seconds instead of after filling megabytes.
            set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 10);
        }
        let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
            sin_zero: [0; 8],
        };
        let local = sa(self.bind, 0);
        let remote = sa(*self.addr.ip(), self.addr.port());
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: as above.
        let rc = unsafe {
            libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
            libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len)
        };
        if rc < 0 && errno() != libc::EINPROGRESS {
            // SAFETY: closing the fd we just opened.
            unsafe { libc::close(fd) };
            c.retries += 1;
            c.state = if c.retries > MAX_RETRIES { State::Failed } else { State::Idle };
            return;
        }
        c.fd = fd;
        c.state = State::Connecting;
        self.watch(fd, libc::EPOLLOUT as u32, i as u64, libc::EPOLL_CTL_ADD);
    }

    fn close_conn(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.fd >= 0 {
            // SAFETY: closing a socket this process owns (epoll forgets it on close).
            unsafe { libc::close(c.fd) };
            c.fd = -1;
        }
    }

    fn on_event(&mut self, i: usize, flags: u32) {
        let Some(c) = self.conns.get(i) else { return };
        match c.state {
            State::Connecting => {
                let mut err: i32 = 0;
                let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
                // SAFETY: reading SO_ERROR into a local i32.
                unsafe {
                    libc::getsockopt(
                        c.fd,
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&mut err as *mut i32).cast(),
                        &mut len,
                    )
                };
                if err != 0 || flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                    self.close_conn(i);
                    let c = &mut self.conns[i];
                    c.retries += 1;
                    c.state = if c.retries > MAX_RETRIES { State::Failed } else { State::Idle };
                    return;
                }
                // SAFETY: writing our request from a live buffer.
                let n =
                    unsafe { libc::write(c.fd, self.request.as_ptr().cast(), self.request.len()) };
                if n != self.request.len() as isize {
                    self.close_conn(i);
                    self.conns[i].state = State::Failed;
                    return;
                }
                self.watch(c.fd, libc::EPOLLIN as u32, i as u64, libc::EPOLL_CTL_MOD);
                self.conns[i].state = State::AwaitingHead;
            }
            State::AwaitingHead | State::Streaming => self.read(i),
            _ => {}
        }
    }

    /// One read (or, when draining, reads until the socket is empty) and its parsing.
    fn read(&mut self, i: usize) {
        loop {
            let fd = self.conns[i].fd;
            // SAFETY: reading into our buffer, within its length.
            let n = unsafe { libc::read(fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n <= 0 {
                if n == 0 || (errno() != libc::EAGAIN && errno() != libc::EINTR) {
                    self.close_conn(i);
                    self.conns[i].state = State::Closed;
                }
                return;
            }
            let now = wire::mono_ns();
            let n = n as usize;
            let mut start = 0;
            let c = &mut self.conns[i];
            if c.state == State::AwaitingHead {
                while start < n && c.head_match < 4 {
                    let b = self.buf[start];
                    if usize::from(c.status_len) < c.status.len() {
                        c.status[usize::from(c.status_len)] = b;
                        c.status_len += 1;
                    }
                    let want = b"\r\n\r\n"[usize::from(c.head_match)];
                    c.head_match = if b == want {
                        c.head_match + 1
                    } else if b == b'\r' {
                        1
                    } else {
                        0
                    };
                    start += 1;
                }
                if c.head_match < 4 {
                    return;
                }
                let code = &c.status[9..12];
                if code != b"101" && code != b"200" {
                    self.close_conn(i);
                    self.conns[i].state = State::Failed;
                    return;
                }
                c.state = State::Streaming;
                let lowat = if c.precise { 1 } else { self.rcvlowat };
                set_int(c.fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, lowat);
            }
            let hold_from = self.hold_from;
            let counting = hold_from != UNKNOWN && !c.stall_group;
            let mut newest = None;
            let mut ping = false;
            let precise = c.precise;
            let mut lost = 0;
            let (next_seq, last_seq) = (&mut c.next_seq, &mut c.last_seq);
            let (mut frames, mut any, mut skipped, mut close_code) = (0u32, 0u32, 0u32, 0u16);
            let result = c.parser.feed(&self.buf[start..n], &mut |ev| match ev {
                Event::Frame { seq, sent_ns } => {
                    any += u32::from(counting);
                    if counting && seq >= hold_from {
                        if *next_seq != UNKNOWN && seq > *next_seq {
                            lost += seq - (*next_seq).max(hold_from);
                        }
                        frames += 1;
                        if precise {
                            self.precise.record(now.saturating_sub(sent_ns) / 1_000);
                        }
                        newest = Some(sent_ns);
                    }
                    *next_seq = seq + 1;
                    *last_seq = seq;
                }
                Event::Skipped(_) => skipped += 1,
                Event::Ping => ping = true,
                Event::Close(code) => close_code = code,
            });
            c.frames += frames;
            c.frames_any += any;
            c.lost += lost;
            if counting {
                c.skipped += skipped;
                c.bytes += n as u64;
            }
            if close_code != 0 {
                c.close_code = close_code;
            }
            if precise && frames > 0 && !self.drain {
                self.precise_reads += 1;
            }
            if let (Some(sent_ns), false, false) = (newest, precise, self.drain) {
                self.bulk.record(now.saturating_sub(sent_ns) / 1_000);
            }
            if ping {
                let pong: [u8; 6] = [0x8A, 0x80, 0, 0, 0, 0];
                // SAFETY: a 6-byte write from a local array.
                unsafe { libc::write(fd, pong.as_ptr().cast(), pong.len()) };
            }
            if result.is_err() {
                self.close_conn(i);
                self.conns[i].state = State::Closed;
                return;
            }
            if !self.drain {
                return;
            }
        }
    }

    fn report(&mut self, until: u64) -> Report {
        self.drain = true;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.state == State::Streaming && !c.stalled {
                self.read(i);
            }
        }
        self.drain = false;
        let mut r = Report { listeners: self.conns.len() as u64, ..Report::default() };
        let mut codes: std::collections::BTreeMap<u16, u64> = Default::default();
        for c in &self.conns {
            r.retries += u64::from(c.retries);
            if c.close_code != 0 {
                *codes.entry(c.close_code).or_default() += 1;
            }
            match c.state {
                State::Streaming => r.streaming += 1,
                State::Failed | State::Idle | State::Connecting | State::AwaitingHead => {
                    r.failed += 1
                }
                State::Closed => {}
            }
            if c.stall_group {
                r.stalled += 1;
                r.stalled_closed += u64::from(c.state == State::Closed);
                continue;
            }
            r.healthy += 1;
            r.precise += u64::from(c.precise);
            // Frames after S1 arrived during the drain: not part of the hold.
            let after = if c.last_seq == UNKNOWN { 0 } else { c.last_seq.saturating_sub(until) };
            r.frames += u64::from(c.frames).saturating_sub(after);
            r.bytes += c.bytes;
            r.frames_any += u64::from(c.frames_any);
            r.lost_frames += c.lost;
            r.skipped_events += u64::from(c.skipped);
            let closed = c.state != State::Streaming;
            r.closed += u64::from(closed);
            let behind = if c.last_seq == UNKNOWN {
                until.saturating_sub(self.hold_from) + 1
            } else {
                until.saturating_sub(c.last_seq)
            };
            if behind > 0 && !closed {
                r.listeners_behind += 1;
                r.behind_max = r.behind_max.max(behind);
            }
            if c.lost > 0 || c.skipped > 0 || closed {
                r.listeners_lost += 1;
            }
        }
        r.close_codes = codes.into_iter().collect();
        r.precise_reads = self.precise_reads;
        r.latency_precise = self.precise.sparse();
        r.latency_bulk = self.bulk.sparse();
        r
    }
}

fn reply<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
