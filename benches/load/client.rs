//! One load-client process: many listener connections on one epoll loop, a few dozen bytes
//! of state each (plus a rustls session over TLS), and one shared read buffer.
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

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use serde::Serialize;

use crate::hist::{Hist, SparseHist};
use crate::hls::{HlsConn, Next};
use crate::wire::{self, Event, Format, IcyStrip, Parser};

/// One read takes at most this much.
const READ_BUF: usize = 256 << 10;
/// Decrypted bytes taken from a TLS session at a time.
const PLAIN_BUF: usize = 64 << 10;
/// Longest response head kept.
const MAX_HEAD: usize = 8 << 10;
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

/// Which protocol the listeners speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// onair's WebSocket listeners: `GET /listen/{stream}`.
    Ws,
    /// Icecast-style HTTP listeners: `GET /mount`, Ogg pages or MP3 frames (by the mount's
    /// extension).
    Http,
    /// LL-HLS clients: `GET /{stream}.m3u8` and its parts on one kept-alive connection
    /// (`hls.rs`).
    Hls,
}

/// What a client process's listeners do.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Server address.
    pub addr: SocketAddrV4,
    /// Local address to connect from.
    pub bind: Ipv4Addr,
    /// WebSocket or HTTP.
    pub proto: Proto,
    /// Request path.
    pub path: String,
    /// SO_RCVLOWAT of bulk listeners.
    pub rcvlowat: i32,
    /// HTTP: ask for ICY metadata (`Icy-MetaData: 1`) and strip the blocks before parsing.
    pub icy: bool,
    /// TLS with this PEM certificate as the only root (the server's self-signed one).
    pub tls_root: Option<PathBuf>,
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
    /// The response head so far (empty, without an allocation, once streaming).
    head: Vec<u8>,
    /// ICY blocks to take out (the response head had `icy-metaint`).
    icy: Option<IcyStrip>,
    /// Non-empty ICY blocks received while counting.
    titles: u32,
    /// The TLS session, over TLS.
    tls: Option<Box<ClientConnection>>,
    /// The HLS client's state, for HLS listeners.
    hls: Option<Box<HlsConn>>,
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
    /// Listeners whose response head had `icy-metaint` (ICY blocks in the stream).
    pub icy_listeners: u64,
    /// Non-empty ICY metadata blocks (titles) healthy listeners received during the hold.
    pub icy_titles: u64,
    /// The TLS version and cipher suite negotiated (the first session's), over TLS.
    pub tls_suite: Option<String>,
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

/// Latency samples of the current hold.
#[derive(Default)]
struct Stats {
    precise: Hist,
    bulk: Hist,
    /// Reads that brought frames at precise listeners (about one per server write).
    precise_reads: u64,
}

struct Client {
    epoll: RawFd,
    addr: SocketAddrV4,
    bind: Ipv4Addr,
    format: Format,
    request: Vec<u8>,
    /// HLS: the playlist's path and the Host header.
    path: String,
    host: String,
    hls: bool,
    tls: Option<Arc<ClientConfig>>,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    plain: Vec<u8>,
    hold_from: u64,
    stats: Stats,
    drain: bool,
    pending_add: Option<(usize, u64)>,
    stall_every: usize,
    /// Bulk listeners are woken once this many bytes are queued (perf.md: cuts client CPU
    /// tenfold).
    rcvlowat: i32,
}

/// Runs a client process until `quit` or stdin closes.
pub fn run(spec: Spec) -> anyhow::Result<()> {
    raise_fd_limit();
    let Spec { addr, bind, proto, path, rcvlowat, icy, tls_root } = spec;
    let request = match proto {
        Proto::Ws => format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
        Proto::Http => format!(
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: onair-load\r\nAccept: */*\r\n{}\r\n",
            if icy { "Icy-MetaData: 1\r\n" } else { "" }
        ),
        // Each HLS request is made by its listener's `HlsConn`.
        Proto::Hls => String::new(),
    }
    .into_bytes();
    let format = match proto {
        Proto::Ws => Format::Ws,
        Proto::Http if path.ends_with(".mp3") => Format::Mp3,
        Proto::Http | Proto::Hls => Format::Ogg,
    };
    let tls = tls_root.map(|root| tls_config(&root)).transpose()?;
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
        format,
        request,
        host: addr.to_string(),
        path,
        hls: proto == Proto::Hls,
        tls,
        conns: Vec::new(),
        buf: vec![0; READ_BUF],
        plain: vec![0; PLAIN_BUF],
        hold_from: UNKNOWN,
        stats: Stats::default(),
        drain: false,
        pending_add: None,
        stall_every: 0,
        rcvlowat,
    };
    client.watch(0, libc::EPOLLIN as u32, STDIN_TOKEN, libc::EPOLL_CTL_ADD);
    client.run_loop()
}

/// A TLS client that trusts exactly the server's certificate (`root`, PEM) and resumes no
/// session: every listener pays a full handshake, as distinct players would.
fn tls_config(root: &std::path::Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).with_context(|| root.display().to_string())? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Writes a TLS session's pending records to its socket; false on a socket error. Whatever
/// the socket does not take now waits for EPOLLOUT (`wants_write` stays true).
fn flush_tls(fd: RawFd, tls: &mut ClientConnection) -> bool {
    struct Fd(RawFd);
    impl Write for Fd {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            // SAFETY: writing from a live slice to a socket this process owns.
            let n = unsafe { libc::write(self.0, data.as_ptr().cast(), data.len()) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(n as usize)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    while tls.wants_write() {
        match tls.write_tls(&mut Fd(fd)) {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    true
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
                        head: Vec::new(),
                        icy: None,
                        titles: 0,
                        tls: None,
                        hls: None,
                        parser: Parser::new(self.format),
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
                self.stats = Stats::default();
                for (i, c) in self.conns.iter_mut().enumerate() {
                    c.titles = 0;
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
        if self.hls {
            // A fresh client per connection, as a player that reconnects starts over; the
            // session (source address and index) is counted once by the relay.
            c.hls = Some(Box::new(HlsConn::new(format!("{}-{i}", self.bind))));
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
                let fd = c.fd;
                let hls_request = self.conns[i]
                    .hls
                    .as_mut()
                    .map(|hls| hls.playlist_request(&self.path, &self.host));
                let request = hls_request.as_deref().unwrap_or(&self.request);
                let sent = match &self.tls {
                    // The request waits in the session until the handshake is done.
                    Some(config) => {
                        let name =
                            ServerName::IpAddress(std::net::IpAddr::V4(*self.addr.ip()).into());
                        match ClientConnection::new(Arc::clone(config), name) {
                            Ok(mut tls) => {
                                let ok = tls.writer().write_all(request).is_ok()
                                    && flush_tls(fd, &mut tls);
                                self.conns[i].tls = Some(Box::new(tls));
                                ok
                            }
                            Err(_) => false,
                        }
                    }
                    None => {
                        // SAFETY: writing our request from a live buffer.
                        let n = unsafe { libc::write(fd, request.as_ptr().cast(), request.len()) };
                        n == request.len() as isize
                    }
                };
                if !sent {
                    self.close_conn(i);
                    self.conns[i].state = State::Failed;
                    return;
                }
                self.conns[i].state = State::AwaitingHead;
                self.rearm(i);
            }
            State::AwaitingHead | State::Streaming => {
                if flags & libc::EPOLLOUT as u32 != 0 {
                    let c = &mut self.conns[i];
                    if let Some(tls) = &mut c.tls {
                        if !flush_tls(c.fd, tls) {
                            self.close_conn(i);
                            self.conns[i].state = State::Closed;
                            return;
                        }
                    }
                    self.rearm(i);
                }
                if flags & !(libc::EPOLLOUT as u32) != 0 {
                    self.read(i);
                }
            }
            _ => {}
        }
    }

    /// Watches a connection for reads, and for writes while its TLS session has records
    /// the socket did not take.
    fn rearm(&self, i: usize) {
        let c = &self.conns[i];
        if c.fd < 0 || c.stalled {
            return;
        }
        let out = c.tls.as_ref().is_some_and(|t| t.wants_write());
        let events = libc::EPOLLIN as u32 | if out { libc::EPOLLOUT as u32 } else { 0 };
        self.watch(c.fd, events, i as u64, libc::EPOLL_CTL_MOD);
    }

    /// One read (or, when draining, reads until the socket is empty), its decryption over
    /// TLS, and its parsing.
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
            let Client { conns, buf, plain, stats, hold_from, drain, rcvlowat, path, host, .. } =
                self;
            let mut ctx = Ctx {
                hold_from: *hold_from,
                drain: *drain,
                rcvlowat: *rcvlowat,
                path,
                host,
                stats,
                frames: 0,
                newest: None,
            };
            let c = &mut conns[i];
            let ok = match c.tls.take() {
                None => consume(c, None, &buf[..n], now, &mut ctx),
                Some(mut tls) => {
                    let ok = decrypt(c, &mut tls, &buf[..n], plain, now, &mut ctx);
                    c.tls = Some(tls);
                    ok
                }
            };
            // One sample per socket read (a TLS read is decrypted in several pieces).
            if !ctx.drain {
                if c.precise && ctx.frames > 0 {
                    ctx.stats.precise_reads += 1;
                }
                if let (Some(sent_ns), false) = (ctx.newest, c.precise) {
                    ctx.stats.bulk.record(now.saturating_sub(sent_ns) / 1_000);
                }
            }
            if !ok {
                self.close_conn(i);
                self.conns[i].state = State::Closed;
                return;
            }
            self.rearm_if_writing(i);
            if !self.drain {
                return;
            }
        }
    }

    /// After a read over TLS: a pong or a key update may wait to be written.
    fn rearm_if_writing(&self, i: usize) {
        if self.conns[i].tls.as_ref().is_some_and(|t| t.wants_write()) {
            self.rearm(i);
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
            r.icy_listeners += u64::from(c.icy.is_some());
            r.icy_titles += u64::from(c.titles);
            if r.tls_suite.is_none() {
                r.tls_suite = c.tls.as_ref().and_then(|t| {
                    let (version, suite) = (t.protocol_version()?, t.negotiated_cipher_suite()?);
                    Some(format!("{version:?} {:?}", suite.suite()))
                });
            }
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
        r.precise_reads = self.stats.precise_reads;
        r.latency_precise = self.stats.precise.sparse();
        r.latency_bulk = self.stats.bulk.sparse();
        r
    }
}

/// What `consume` needs of the client besides the connection.
struct Ctx<'a> {
    hold_from: u64,
    drain: bool,
    rcvlowat: i32,
    /// HLS: the playlist's path and the Host header.
    path: &'a str,
    host: &'a str,
    stats: &'a mut Stats,
    /// Counted frames in this socket read (over TLS: in all the records it held).
    frames: u32,
    /// The newest of them, as its send time.
    newest: Option<u64>,
}

/// Feeds bytes read from a TLS socket to the session and what it decrypts to `consume`;
/// false when the session or the stream is broken, or the server closed it.
fn decrypt(
    c: &mut Conn,
    tls: &mut ClientConnection,
    mut raw: &[u8],
    plain: &mut [u8],
    now: u64,
    ctx: &mut Ctx<'_>,
) -> bool {
    while !raw.is_empty() {
        if tls.read_tls(&mut raw).is_err() || tls.process_new_packets().is_err() {
            return false;
        }
        loop {
            match tls.reader().read(plain) {
                Ok(0) => return false,
                Ok(k) => {
                    if !consume(c, Some(&mut *tls), &plain[..k], now, ctx) {
                        return false;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
    }
    if c.state == State::Streaming && tls.wants_write() {
        // A pong (queued by `consume`) or a post-handshake message.
        return flush_tls(c.fd, tls);
    }
    true
}

/// Parses bytes a listener received (after TLS): the response head, ICY blocks, frames;
/// false when the stream is broken or refused. A pong goes into `tls` when the listener is
/// on TLS (its session is out of `c` meanwhile), else straight to the socket.
fn consume(
    c: &mut Conn,
    tls: Option<&mut ClientConnection>,
    data: &[u8],
    now: u64,
    ctx: &mut Ctx<'_>,
) -> bool {
    let mut start = 0;
    if c.state == State::AwaitingHead && c.hls.is_some() {
        // HLS responses (heads included) are parsed by `HlsConn`: the first bytes make it a
        // listener, and a refusal fails it there.
        c.state = State::Streaming;
        let lowat = if c.precise { 1 } else { ctx.rcvlowat };
        set_int(c.fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, lowat);
    } else if c.state == State::AwaitingHead {
        let before = c.head.len();
        let from = before.saturating_sub(3);
        c.head.extend_from_slice(&data[..data.len().min(MAX_HEAD - before)]);
        let Some(end) = c.head[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
            return c.head.len() < MAX_HEAD;
        };
        let head_len = from + end + 4;
        // The bytes of `data` after the head are the stream's.
        start = head_len - before;
        let head = String::from_utf8_lossy(&c.head[..head_len]).into_owned();
        c.head = Vec::new();
        let code = head.split_whitespace().nth(1).unwrap_or("");
        if code != "101" && code != "200" {
            c.state = State::Failed;
            return false;
        }
        let metaint = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("icy-metaint").then(|| value.trim().parse().ok())?
        });
        c.icy = metaint.filter(|&m: &u32| m > 0).map(IcyStrip::new);
        c.state = State::Streaming;
        let lowat = if c.precise { 1 } else { ctx.rcvlowat };
        set_int(c.fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, lowat);
    }
    let data = &data[start..];
    let hold_from = ctx.hold_from;
    let counting = hold_from != UNKNOWN && !c.stall_group;
    let mut newest = None;
    let mut ping = false;
    let precise = c.precise;
    let mut lost = 0;
    let (next_seq, last_seq) = (&mut c.next_seq, &mut c.last_seq);
    let (mut frames, mut any, mut skipped, mut close_code) = (0u32, 0u32, 0u32, 0u16);
    let stats = &mut *ctx.stats;
    let parser = &mut c.parser;
    let mut on = |ev| match ev {
        Event::Frame { seq, sent_ns } => {
            any += u32::from(counting);
            if counting && seq >= hold_from {
                if *next_seq != UNKNOWN && seq > *next_seq {
                    lost += seq - (*next_seq).max(hold_from);
                }
                frames += 1;
                if precise {
                    stats.precise.record(now.saturating_sub(sent_ns) / 1_000);
                }
                newest = Some(sent_ns);
            }
            *next_seq = seq + 1;
            *last_seq = seq;
        }
        Event::Skipped(_) => skipped += 1,
        Event::Ping => ping = true,
        Event::Close(code) => close_code = code,
    };
    let mut hls_request = None;
    let result = match (&mut c.icy, &mut c.hls) {
        (_, Some(hls)) => match hls.feed(data, ctx.path, ctx.host, &mut on) {
            Ok(Next::Request(request)) => {
                hls_request = Some(request);
                Ok(())
            }
            Ok(Next::More) => Ok(()),
            Err(err) => Err(err),
        },
        (None, None) => parser.feed(data, &mut on),
        (Some(icy), None) => match icy.strip(data, &mut |audio| parser.feed(audio, &mut on)) {
            Ok(titles) => {
                c.titles += titles * u32::from(counting);
                Ok(())
            }
            Err(err) => Err(err),
        },
    };
    c.frames += frames;
    c.frames_any += any;
    c.lost += lost;
    if counting {
        c.skipped += skipped;
        c.bytes += data.len() as u64;
    }
    if close_code != 0 {
        c.close_code = close_code;
    }
    ctx.frames += frames;
    ctx.newest = ctx.newest.max(newest);
    if let Some(request) = hls_request {
        let sent = match tls {
            // Sent by `decrypt` once the read is parsed.
            Some(tls) => tls.writer().write_all(&request).is_ok(),
            // SAFETY: writing a request from a live buffer; a request is a few hundred bytes,
            // which an empty send buffer takes whole (the response to the last one was read).
            None => unsafe {
                libc::write(c.fd, request.as_ptr().cast(), request.len()) == request.len() as isize
            },
        };
        return result.is_ok() && sent;
    }
    if ping {
        match tls {
            // Sent by `decrypt` once the read is parsed.
            Some(tls) => {
                let _ = tls.writer().write_all(&PONG);
            }
            // SAFETY: a 6-byte write from a static array.
            None => unsafe {
                libc::write(c.fd, PONG.as_ptr().cast(), PONG.len());
            },
        }
    }
    result.is_ok()
}

/// A masked, empty pong (the answer to the relay's pings).
const PONG: [u8; 6] = [0x8A, 0x80, 0, 0, 0, 0];

fn reply<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
