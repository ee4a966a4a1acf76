//! The side-by-side run: start onair (release) and a real Icecast 2, push the same stamped
//! stream to both, step the number of listeners, and record what each server costs and
//! delivers. Every process started here is stopped at the end, on error, and on a signal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::client::Report;
use crate::hist::Hist;
use crate::procs;
use crate::report::{self, Machine, Results, Step};
use crate::source::{Feed, Source, Target};
use crate::wire;

/// Listeners per load-client process (the open-file limit here is 20 000 per process).
const PER_CLIENT: usize = 10_000;
/// Time after the last listener connected before counting starts (`--quick`: 1 s).
const SETTLE: Duration = Duration::from_secs(3);
const KEY: &str = "bench-key-0123456789";
const ICECAST_PASSWORD: &str = "bench-source-pw";
/// onair's MP3 stream: `/bench.mp3` would be the Opus stream `bench` (onair names a stream,
/// not a mount), so the MP3 steps use `/bench-mp3.mp3` on both servers.
const MP3_STREAM: &str = "bench-mp3";
const MP3_MOUNT: &str = "/bench-mp3.mp3";

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Smoke-check sizes and times.
    pub quick: bool,
    /// Output folder.
    pub out: PathBuf,
    /// The onair release binary.
    pub onair: PathBuf,
    /// Seconds each step holds its listeners.
    pub hold_s: u64,
    /// Seconds each step of the http, icy and tls scenarios holds.
    pub suite_hold_s: u64,
    /// Listener counts for the 128 kbit/s stream.
    pub steps: Vec<usize>,
    /// Further counts tried while a server holds (no loss, p99 under a second).
    pub further: Vec<usize>,
    /// Listeners of the stalled scenario (10 % of them stall).
    pub stall_listeners: usize,
    /// onair's send windows to compare at `window_listeners` listeners.
    pub window_sweep: Vec<u64>,
    /// Listeners of the window sweep.
    pub window_listeners: usize,
    /// Listener counts for the 4 Mbit/s stream.
    pub video_steps: Vec<usize>,
    /// Listener counts of the HTTP scenario (`/bench.ogg` on both servers; then `further`).
    pub http_steps: Vec<usize>,
    /// Listener counts of each listener kind in the ICY scenario.
    pub icy_steps: Vec<usize>,
    /// Listener counts of each listener kind in the TLS scenario.
    pub tls_steps: Vec<usize>,
    /// Listener counts of each listener kind in the HLS scenario (onair only).
    pub hls_steps: Vec<usize>,
    /// Now-playing titles set during each hold of the ICY scenario.
    pub title_changes: u32,
    /// Seconds each video step holds.
    pub video_hold_s: u64,
    /// onair's `send_window_ms` (None: its default).
    pub send_window_ms: Option<u64>,
    /// Extra top-level lines for onair's config (experiments).
    pub onair_config: Vec<String>,
    /// Cores the servers run on: a taskset list, or `all`.
    pub server_cores: String,
    /// Servers to run.
    pub servers: Vec<Kind>,
    /// Scenarios to run.
    pub scenarios: Vec<String>,
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// onair.
    Onair,
    /// Icecast 2.
    Icecast,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Onair => "onair",
            Kind::Icecast => "icecast",
        }
    }
}

/// A server under test.
struct Server {
    kind: Kind,
    port: u16,
    /// The TLS port (`https://`, and `wss://` on onair), when started with a certificate.
    tls_port: Option<u16>,
    /// The process whose CPU and memory we measure.
    pid: i32,
    child: Child,
    dir: PathBuf,
}

impl Server {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The listeners of the audio, stalled, window and video scenarios.
    fn legacy_kind(&self) -> &'static str {
        if self.kind == Kind::Onair {
            "ws"
        } else {
            "http ogg"
        }
    }

    fn listen_path(&self, video: bool) -> &'static str {
        match (self.kind, video) {
            (Kind::Onair, false) => "/listen/bench",
            (Kind::Onair, true) => "/listen/video",
            (Kind::Icecast, false) => "/bench.ogg",
            (Kind::Icecast, true) => "/video.ogg",
        }
    }

    fn target(&self, video: bool) -> Target {
        match self.kind {
            Kind::Onair => Target::Onair {
                addr: self.addr(),
                stream: if video { "video" } else { "bench" }.into(),
                key: KEY.into(),
            },
            Kind::Icecast => Target::Icecast {
                addr: self.addr(),
                mount: self.listen_path(video).into(),
                password: ICECAST_PASSWORD.into(),
            },
        }
    }

    fn cpu(&self) -> f64 {
        procs::cpu_seconds(self.pid).unwrap_or(f64::NAN)
    }

    fn rss(&self) -> u64 {
        procs::rss_bytes(self.pid).unwrap_or(0)
    }

    /// Listeners the server itself counts on onair's stream `stream`, or Icecast's `mount`;
    /// onair's HLS sessions when the mount is a playlist.
    fn listeners(&self, (stream, mount): (&str, &str)) -> Option<u64> {
        let (path, name) = match self.kind {
            Kind::Onair => ("/api/streams", stream),
            Kind::Icecast => ("/status-json.xsl", mount),
        };
        let body = http_get(self.addr(), path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let field = if mount.ends_with(".m3u8") { "hls_listeners" } else { "listeners" };
        match self.kind {
            Kind::Onair => {
                json["streams"].as_array()?.iter().find(|s| s["name"] == name)?[field].as_u64()
            }
            Kind::Icecast => {
                let sources = &json["icestats"]["source"];
                let list = match sources {
                    serde_json::Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                list.iter().find(|s| s["listenurl"].as_str().is_some_and(|u| u.ends_with(name)))?
                    ["listeners"]
                    .as_u64()
            }
        }
    }

    fn stop(mut self) {
        procs::signal(self.pid, libc::SIGTERM);
        procs::stop_child(&mut self.child, Duration::from_secs(8));
        procs::untrack(self.pid);
        if self.kind == Kind::Icecast {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    http_get_as(addr, path, None)
}

/// A GET with Basic auth as `user:password` when given; returns the body.
fn http_get_as(addr: SocketAddr, path: &str, auth: Option<&str>) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = auth
        .map(|a| format!("Authorization: Basic {}\r\n", wire::base64(a.as_bytes())))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{what} exited at start: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on port {port} within 15 s")
}

/// Starts onair with `send_window_ms = window` (None: no window line, its default) and, with
/// `tls`, a `[tls]` port. Besides the windows only limits are set: the load needs more
/// connections than the defaults allow. A free port can be taken by another socket before
/// onair binds it (the load clients' outgoing connections use the same range): then onair
/// says so and exits, and it is started again on other ports, at most three times.
fn start_onair(
    opts: &Options,
    window: Option<u64>,
    cores: Option<&str>,
    tls: Option<&Tls>,
) -> anyhow::Result<Server> {
    // One config and log per start (a run starts onair many times): onair-N.toml, onair-N.log.
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = opts.out.join("onair");
    std::fs::create_dir_all(&dir)?;
    let mut attempt = 1;
    loop {
        let nth = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (config, log) =
            (dir.join(format!("onair-{nth}.toml")), dir.join(format!("onair-{nth}.log")));
        match start_onair_once(opts, window, cores, tls, &config, &log) {
            Err(err) if attempt < 3 && port_taken(&log) => {
                eprintln!("onair could not listen ({err}): a port was taken meanwhile; again");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Whether onair's log says a port it was given is in use.
fn port_taken(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains("Address already in use"))
}

/// One start, with its config written to `config_path` and its log to `log_path`.
fn start_onair_once(
    opts: &Options,
    window: Option<u64>,
    cores: Option<&str>,
    tls: Option<&Tls>,
    config_path: &Path,
    log_path: &Path,
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut window = window.map(|w| format!("send_window_ms = {w}\n")).unwrap_or_default();
    for line in &opts.onair_config {
        window.push_str(line);
        window.push('\n');
    }
    let tls_port = tls.map(|_| free_port()).transpose()?;
    let tls_table = match (tls, tls_port) {
        (Some(t), Some(p)) => format!(
            "[tls]\nlisten = \"127.0.0.1:{p}\"\ncert = {:?}\nkey = {:?}\n",
            t.cert.display().to_string(),
            t.key.display().to_string()
        ),
        _ => String::new(),
    };
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\nmax_connections = 40000\nmax_connections_per_ip = 40000\n{window}\
         {tls_table}\
         [[streams]]\nname = \"bench\"\nkey = \"{KEY}\"\nmax_listeners = 40000\n\
         [[streams]]\nname = \"{MP3_STREAM}\"\nkey = \"{KEY}\"\nmax_listeners = 40000\n\
         [[streams]]\nname = \"video\"\nkey = \"{KEY}\"\nmax_listeners = 40000\n"
    );
    std::fs::write(config_path, config)?;
    let log = std::fs::File::create(log_path)?;
    let bin = opts.onair.to_str().context("onair path is not UTF-8")?;
    let child = procs::command(bin, cores)
        .args(["serve", "--config"])
        .arg(config_path)
        .env("RUST_LOG", std::env::var("ONAIR_LOG").unwrap_or_else(|_| "warn".into()))
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {bin} (run `cargo build --release` first)"))?;
    let pid = child.id() as i32;
    procs::track(pid);
    let mut server =
        Server { kind: Kind::Onair, port, tls_port, pid, child, dir: opts.out.join("onair") };
    let ready = wait_for_port(port, &mut server.child, "onair")
        .and_then(|()| tls_port.map_or(Ok(()), |p| wait_for_port(p, &mut server.child, "onair")));
    if let Err(err) = ready {
        server.stop();
        return Err(err);
    }
    Ok(server)
}

const ICECAST_USER: &str = "icecast2";

/// Icecast's configuration: our limits, everything else as Debian ships it; with `tls_port`,
/// a second listen socket with `<ssl>1</ssl>` and the certificate and key in `dir/tls.pem`.
fn icecast_config(port: u16, tls_port: Option<u16>, dir: &Path) -> String {
    let dir = dir.display();
    let (tls_socket, tls_cert) = match tls_port {
        Some(p) => (
            format!(
                "<listen-socket>\n    <port>{p}</port>\n    <bind-address>127.0.0.1</bind-address>\n    <ssl>1</ssl>\n  </listen-socket>"
            ),
            format!("<ssl-certificate>{dir}/tls.pem</ssl-certificate>"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"<icecast>
  <location>onair bench</location>
  <admin>bench@localhost</admin>
  <limits>
    <!-- every listener of the largest step, plus sources -->
    <clients>40000</clients>
    <sources>4</sources>
    <!-- 4 MiB instead of 512 KiB: a lagging listener is kicked only after minutes, so a
         step measures latency instead of kicks (the stalled scenario shows both) -->
    <queue-size>4194304</queue-size>
    <client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout>
    <source-timeout>10</source-timeout>
    <!-- Debian's defaults: a 64 KiB burst to each new listener -->
    <burst-on-connect>1</burst-on-connect>
    <burst-size>65535</burst-size>
  </limits>
  <authentication>
    <source-password>{ICECAST_PASSWORD}</source-password>
    <admin-user>admin</admin-user>
    <admin-password>bench-admin-pw</admin-password>
  </authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket>
    <port>{port}</port>
    <bind-address>127.0.0.1</bind-address>
  </listen-socket>
  {tls_socket}
  <fileserve>1</fileserve>
  <paths>
    <basedir>/usr/share/icecast2</basedir>
    <logdir>{dir}</logdir>
    <webroot>/usr/share/icecast2/web</webroot>
    <adminroot>/usr/share/icecast2/admin</adminroot>
    <pidfile>{dir}/icecast.pid</pidfile>
    {tls_cert}
  </paths>
  <logging>
    <accesslog>access.log</accesslog>
    <errorlog>error.log</errorlog>
    <loglevel>2</loglevel>
  </logging>
  <security><chroot>0</chroot></security>
</icecast>
"#
    )
}

fn start_icecast(cores: Option<&str>, tls: Option<&Tls>) -> anyhow::Result<Server> {
    let port = free_port()?;
    let tls_port = tls.map(|_| free_port()).transpose()?;
    // Icecast refuses to run as root: its own user needs a folder it owns.
    let dir = std::env::temp_dir().join(format!("onair-bench-icecast-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if let Some(tls) = tls {
        // One PEM with certificate and key, readable by Icecast's user.
        let pem = [std::fs::read(&tls.cert)?, std::fs::read(&tls.key)?].concat();
        std::fs::write(dir.join("tls.pem"), pem)?;
    }
    std::fs::write(dir.join("icecast.xml"), icecast_config(port, tls_port, &dir))?;
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{ICECAST_USER}:")])
        .arg(&dir)
        .status()?;
    anyhow::ensure!(status.success(), "chown {} failed (the bench runs as root)", dir.display());
    // PAM gives the user a soft limit of 1 024 open files (Icecast refuses listeners past
    // it); the user may raise it to the hard limit itself, and Icecast does not.
    let mut child = procs::command("runuser", cores)
        .args(["-u", ICECAST_USER, "--", "/bin/sh", "-c"])
        .arg("ulimit -n \"$(ulimit -Hn)\" && exec icecast2 -c \"$0\"")
        .arg(dir.join("icecast.xml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting icecast2 with runuser (install icecast2; run as root)")?;
    procs::track(child.id() as i32);
    let pidfile = dir.join("icecast.pid");
    let deadline = Instant::now() + Duration::from_secs(15);
    let pid = loop {
        if let Some(pid) =
            std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            procs::untrack(child.id() as i32);
            bail!("icecast2 wrote no pid file in {}", dir.display());
        }
        if let Ok(Some(status)) = child.try_wait() {
            procs::untrack(child.id() as i32);
            bail!("icecast2 exited at start: {status} (see {}/error.log)", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    procs::track(pid);
    let mut server = Server { kind: Kind::Icecast, port, tls_port, pid, child, dir };
    let ready = wait_for_port(port, &mut server.child, "icecast2").and_then(|()| {
        tls_port.map_or(Ok(()), |p| wait_for_port(p, &mut server.child, "icecast2 (TLS)"))
    });
    if let Err(err) = ready {
        server.stop();
        return Err(err);
    }
    Ok(server)
}

/// One load-client process.
struct ClientProc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    listeners: usize,
}

impl ClientProc {
    fn send(&mut self, cmd: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        Ok(())
    }

    fn recv(&mut self, limit: Duration) -> anyhow::Result<serde_json::Value> {
        let line = self.lines.recv_timeout(limit).context("load client did not answer")?;
        Ok(serde_json::from_str(&line)?)
    }

    fn cpu(&self) -> f64 {
        procs::cpu_seconds(self.child.id() as i32).unwrap_or(0.0)
    }
}

/// The load clients attached to one server.
struct Clients {
    procs: Vec<ClientProc>,
    addr: SocketAddrV4,
    path: String,
    proto: &'static str,
    cores: Option<String>,
    rcvlowat: usize,
    icy: bool,
    tls_root: Option<PathBuf>,
}

impl Clients {
    /// The listeners of the audio, stalled, window and video scenarios: onair's WebSocket
    /// ones, Icecast's HTTP ones.
    fn new(server: &Server, video: bool, cores: Option<String>) -> Self {
        let SocketAddr::V4(addr) = server.addr() else { unreachable!("we bind IPv4") };
        Clients {
            procs: Vec::new(),
            addr,
            path: server.listen_path(video).to_owned(),
            proto: if server.kind == Kind::Onair { "ws" } else { "http" },
            cores,
            rcvlowat: if video { 128 << 10 } else { 16 << 10 },
            icy: false,
            tls_root: None,
        }
    }

    /// Listeners of one kind (HTTP, ICY and TLS scenarios).
    fn of(server: &Server, group: Group, tls: &Tls, cores: Option<String>) -> Self {
        let port = if group.tls { server.tls_port.unwrap_or(server.port) } else { server.port };
        Clients {
            procs: Vec::new(),
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            path: group.listen.path().to_owned(),
            proto: match group.listen {
                Listen::Ws => "ws",
                Listen::Hls => "hls",
                Listen::Ogg | Listen::Mp3 => "http",
            },
            cores,
            // An HLS client must wake for a playlist of a few hundred bytes.
            rcvlowat: if group.listen == Listen::Hls { 1 } else { 16 << 10 },
            icy: group.icy,
            tls_root: group.tls.then(|| tls.cert.clone()),
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let exe = exe.to_str().context("exe path is not UTF-8")?;
        // Each process has its own source address, so each has the whole port range.
        let bind = Ipv4Addr::new(127, 0, 0, 11 + self.procs.len() as u8);
        let mut child = procs::command(exe, self.cores.as_deref())
            .args(["client", "--addr", &self.addr.to_string(), "--bind", &bind.to_string()])
            .args(["--proto", self.proto, "--path", &self.path])
            .args(["--rcvlowat", &self.rcvlowat.to_string()])
            .args(if self.icy { &["--icy"][..] } else { &[] })
            .args(
                self.tls_root
                    .iter()
                    .flat_map(|p| [std::ffi::OsStr::new("--tls-root"), p.as_os_str()]),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        procs::track(child.id() as i32);
        let stdin = child.stdin.take().context("client stdin")?;
        let stdout = child.stdout.take().context("client stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.procs.push(ClientProc { child, stdin, lines, listeners: 0 });
        Ok(())
    }

    fn listeners(&self) -> usize {
        self.procs.iter().map(|p| p.listeners).sum()
    }

    /// Opens listeners until there are `n`; returns (streaming, seconds it took).
    fn grow_to(&mut self, n: usize, stall_every: usize, limit: Duration) -> anyhow::Result<u64> {
        let mut orders = Vec::new();
        let mut missing = n.saturating_sub(self.listeners());
        let mut i = 0;
        while missing > 0 {
            if i == self.procs.len() {
                self.spawn()?;
            }
            let room = PER_CLIENT - self.procs[i].listeners;
            let add = room.min(missing);
            if add > 0 {
                orders.push((i, add));
                missing -= add;
            }
            i += 1;
        }
        for &(i, add) in &orders {
            let p = &mut self.procs[i];
            p.send(&format!("add {add} {stall_every} {}", limit.as_millis()))?;
            p.listeners += add;
        }
        for (i, p) in self.procs.iter_mut().enumerate() {
            if orders.iter().any(|&(j, _)| j == i) {
                p.recv(limit + Duration::from_secs(10))?;
            }
        }
        let mut streaming = 0;
        for p in &mut self.procs {
            p.send("status")?;
            streaming += p.recv(Duration::from_secs(60))?["streaming"].as_u64().unwrap_or(0);
        }
        Ok(streaming)
    }

    fn broadcast(&mut self, cmd: &str) -> anyhow::Result<()> {
        for p in &mut self.procs {
            p.send(cmd)?;
        }
        for p in &mut self.procs {
            p.recv(Duration::from_secs(60))?;
        }
        Ok(())
    }

    fn report(&mut self, until: u64) -> anyhow::Result<Vec<Report>> {
        for p in &mut self.procs {
            p.send(&format!("report {until}"))?;
        }
        let mut out = Vec::new();
        for p in &mut self.procs {
            out.push(serde_json::from_value(p.recv(Duration::from_secs(60))?)?);
        }
        Ok(out)
    }

    fn cpu(&self) -> f64 {
        self.procs.iter().map(ClientProc::cpu).sum()
    }

    fn quit(mut self) {
        for p in &mut self.procs {
            let _ = p.send("quit");
        }
        for p in &mut self.procs {
            procs::stop_child(&mut p.child, Duration::from_secs(10));
        }
    }
}

/// Pins: by default the server on core 0, the load clients on the other cores; with
/// `--server-cores all`, nothing is pinned.
struct Pinning {
    server: Option<String>,
    clients: Option<String>,
}

fn pinning(opts: &Options) -> Pinning {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 || opts.server_cores == "all" {
        return Pinning { server: None, clients: None };
    }
    Pinning { server: Some(opts.server_cores.clone()), clients: Some(format!("1-{}", cores - 1)) }
}

/// A step's measurement window.
struct Window {
    t0: Instant,
    server_cpu: f64,
    server_wait: f64,
    client_cpu: f64,
    self_cpu: f64,
    busy: f64,
}

impl Window {
    fn open(server: &Server, clients: &Clients) -> Window {
        Window {
            t0: Instant::now(),
            server_cpu: server.cpu(),
            server_wait: procs::run_delay_seconds(server.pid),
            client_cpu: clients.cpu(),
            self_cpu: procs::cpu_seconds(std::process::id() as i32).unwrap_or(0.0),
            busy: procs::machine_busy_seconds(),
        }
    }
}

/// One hold's parameters.
struct Hold<'a> {
    scenario: &'a str,
    /// Listeners asked for.
    n: usize,
    hold: Duration,
    /// The server's RSS before these listeners.
    rss_base: u64,
    /// The stall group stops reading.
    stall: bool,
    feed: Feed,
    connect_s: f64,
    /// Wait after the hold for frames still in a send window.
    tail: Duration,
    /// (onair stream, Icecast mount) whose listeners the server counts.
    counted: (&'a str, &'a str),
}

fn measure(
    server: &Server,
    clients: &mut Clients,
    source: &Source,
    h: &Hold<'_>,
) -> anyhow::Result<Step> {
    let s0 = source.newest().context("source sent nothing")? + 1;
    let stride = (h.n / 200).max(1);
    clients.broadcast(&format!("reset {s0} {stride}"))?;
    if h.stall {
        clients.broadcast("stall")?;
    }
    let late0 = source.late.load(std::sync::atomic::Ordering::Relaxed);
    source.late_max_us.store(0, std::sync::atomic::Ordering::Relaxed);
    let w = Window::open(server, clients);
    std::thread::sleep(h.hold);
    let s1 = source.newest().context("source stopped")?;
    let secs = w.t0.elapsed().as_secs_f64();
    let server_cpu = server.cpu() - w.server_cpu;
    let server_wait = procs::run_delay_seconds(server.pid) - w.server_wait;
    let client_cpu = clients.cpu() - w.client_cpu;
    let self_cpu = procs::cpu_seconds(std::process::id() as i32).unwrap_or(0.0) - w.self_cpu;
    let busy = procs::machine_busy_seconds() - w.busy;
    let rss = server.rss();
    // Frames sent just before the end may still be in the server's send window.
    std::thread::sleep(h.tail);
    let server_listeners = server.listeners(h.counted);
    let reports = clients.report(s1)?;
    let late = source.late.load(std::sync::atomic::Ordering::Relaxed) - late0;
    Ok(report::step(report::StepInput {
        scenario: h.scenario,
        server: server.kind.name(),
        n: h.n,
        reports: &reports,
        expected_frames: s1 + 1 - s0,
        frame_s: h.feed.interval.as_secs_f64(),
        secs,
        server_cpu,
        server_wait,
        client_cpu,
        others_cpu: (busy - server_cpu - client_cpu - self_cpu).max(0.0),
        rss,
        rss_base: h.rss_base,
        connect_s: h.connect_s,
        source_late: late,
        source_late_max_ms: source.late_max_us.load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1000.0,
        server_listeners,
    }))
}

fn settle(opts: &Options) -> Duration {
    if opts.quick {
        Duration::from_secs(1)
    } else {
        SETTLE
    }
}

/// How long the source plays before the idle RSS is read: until onair holds all that it keeps
/// of a stream whoever listens (its ring, `ring_frames` or `ring_bytes`, and its HLS window,
/// `hls_window_segments` segments), so that those filling up during the first step are not
/// counted as the listeners' memory. Both servers wait the same. A quick run waits 1 s.
fn warm_up(opts: &Options, feed: Feed) -> Duration {
    if opts.quick {
        return Duration::from_secs(1);
    }
    let setting = |key, default| onair_setting(opts, key).unwrap_or(default);
    let frames = feed.interval * u32::try_from(setting("ring_frames", 1024)).unwrap_or(u32::MAX);
    let per_second = feed.frame_bytes as f64 / feed.interval.as_secs_f64();
    let bytes = Duration::from_secs_f64(setting("ring_bytes", 8 << 20) as f64 / per_second);
    let hls = Duration::from_millis(
        setting("hls_window_segments", 10).saturating_mul(setting("hls_segment_ms", 2000)),
    );
    (frames.min(bytes).max(hls) + Duration::from_secs(1)).min(Duration::from_secs(60))
}

fn healthy(step: &Step) -> bool {
    step.listeners_lost == 0
        && step.listeners_behind == 0
        && step.connected >= step.n as u64
        && step.p99_ms < 1_000.0
}

/// A ladder of listener counts on one server: each step adds listeners to those already
/// there, settles, holds and measures; then the `further` counts while the server holds.
struct Ladder<'a> {
    scenario: &'a str,
    hold: Duration,
    /// The listeners' kind (`Step::listener_kind`).
    kind: String,
    steps: &'a [usize],
    further: &'a [usize],
    feed: Feed,
    /// Wait after each hold for frames still in a send window.
    tail: Duration,
    /// (onair stream, Icecast mount) whose listeners the server counts.
    counted: (&'a str, &'a str),
    /// Now-playing titles set during each hold (ICY): (mount, password, changes per hold).
    titles: Option<(&'a str, &'a str, u32)>,
}

fn ladder(
    opts: &Options,
    server: &Server,
    source: &Source,
    clients: &mut Clients,
    l: &Ladder<'_>,
) -> anyhow::Result<Vec<Step>> {
    let mut steps: Vec<Step> = Vec::new();
    let warm = warm_up(opts, l.feed);
    eprintln!("[{}] idle RSS after {:.1} s of the source", server.kind.name(), warm.as_secs_f64());
    std::thread::sleep(warm);
    let rss_base = server.rss();
    let hold = l.hold;
    let mut counts = l.steps.to_vec();
    let mut extra = l.further.iter().copied();
    let mut i = 0;
    let name = server.kind.name();
    loop {
        let Some(&n) = counts.get(i) else {
            // Further only while the server holds.
            match (steps.last(), extra.next()) {
                (Some(last), Some(n)) if healthy(last) => {
                    counts.push(n);
                    continue;
                }
                _ => break,
            }
        };
        i += 1;
        let t = Instant::now();
        let limit = Duration::from_secs(if opts.quick { 30 } else { 120 });
        eprintln!("[{name}] {} {n} listeners: connecting", l.scenario);
        let connected = clients.grow_to(n, 0, limit)?;
        let connect_s = t.elapsed().as_secs_f64();
        eprintln!(
            "[{name}] {n} listeners: {connected} streaming after {connect_s:.1} s; holding {} s",
            hold.as_secs()
        );
        std::thread::sleep(settle(opts));
        let titles = l.titles.map(|(mount, password, changes)| {
            set_titles(server.addr(), mount, password, hold, changes, n)
        });
        let h = Hold {
            scenario: l.scenario,
            n,
            hold,
            rss_base,
            stall: false,
            feed: l.feed,
            connect_s,
            tail: l.tail,
            counted: l.counted,
        };
        let step = measure(server, clients, source, &h);
        let titles_set = titles.map(|t| t.join().unwrap_or(0));
        let mut step = step?;
        step.titles_set = titles_set;
        step.listener_kind.clone_from(&l.kind);
        let died = !procs::alive(server.pid);
        if died {
            let how = procs::how_it_ended(server.pid).unwrap_or_else(|| "reaped".into());
            step.note = Some(format!("{name} exited during this step: {how} (see its log)"));
        }
        eprintln!("{}", report::one_line(&step));
        let stop = step.connected * 2 < n as u64;
        steps.push(step);
        if died {
            let note = steps.last().and_then(|s| s.note.as_deref()).unwrap_or("");
            eprintln!("[{name}] {note}: stopping here");
            break;
        }
        if stop {
            eprintln!("[{name}] fewer than half connected: stopping here");
            break;
        }
    }
    Ok(steps)
}

/// Sets `changes` now-playing titles on `mount`, spread over `hold`, the way broadcaster
/// tools do (`/admin/metadata?mode=updinfo&song=...`, the source's credentials); returns how
/// many the server said it applied.
fn set_titles(
    addr: SocketAddr,
    mount: &str,
    password: &str,
    hold: Duration,
    changes: u32,
    n: usize,
) -> std::thread::JoinHandle<u64> {
    let (mount, auth) = (mount.to_owned(), format!("source:{password}"));
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut applied = 0;
        for k in 0..changes {
            let at = hold.mul_f64((f64::from(k) + 0.5) / f64::from(changes));
            std::thread::sleep(at.saturating_sub(t0.elapsed()));
            let song = format!("bench+title+{k}+at+{n}+listeners");
            let path = format!("/admin/metadata?mount={mount}&mode=updinfo&song={song}");
            match http_get_as(addr, &path, Some(&auth)) {
                Ok(body) if body.contains("successful") => applied += 1,
                Ok(body) => eprintln!("title on {mount} not applied: {}", body.trim()),
                Err(err) => eprintln!("title on {mount}: {err:#}"),
            }
        }
        applied
    })
}

fn audio_scenario(
    opts: &Options,
    server: &Server,
    source: &Source,
    pin: &Pinning,
) -> anyhow::Result<Vec<Step>> {
    let mut clients = Clients::new(server, false, pin.clients.clone());
    let l = Ladder {
        scenario: "audio",
        hold: Duration::from_secs(opts.hold_s),
        kind: server.legacy_kind().into(),
        steps: &opts.steps,
        further: &opts.further,
        feed: Feed::AUDIO,
        tail: Duration::from_millis(500 + opts.send_window_ms.unwrap_or(0) * 2),
        counted: ("bench", "/bench.ogg"),
        titles: None,
    };
    let steps = ladder(opts, server, source, &mut clients, &l);
    clients.quit();
    steps
}

fn stall_scenario(
    opts: &Options,
    server: &Server,
    source: &Source,
    pin: &Pinning,
) -> anyhow::Result<Step> {
    let mut clients = Clients::new(server, false, pin.clients.clone());
    std::thread::sleep(Duration::from_secs(1));
    let rss_base = server.rss();
    let n = opts.stall_listeners;
    let t = Instant::now();
    eprintln!("[{}] stalled scenario: {n} listeners, every 10th stops reading", server.kind.name());
    let connected = clients.grow_to(n, 10, Duration::from_secs(120))?;
    let connect_s = t.elapsed().as_secs_f64();
    eprintln!("[{}] {connected} streaming after {connect_s:.1} s", server.kind.name());
    std::thread::sleep(settle(opts));
    let tail = Duration::from_millis(500 + opts.send_window_ms.unwrap_or(0) * 2);
    let hold = Duration::from_secs(opts.hold_s);
    let h = Hold {
        scenario: "stalled",
        n,
        hold,
        rss_base,
        stall: true,
        feed: Feed::AUDIO,
        connect_s,
        tail,
        counted: ("bench", "/bench.ogg"),
    };
    let mut step = measure(server, &mut clients, source, &h)?;
    step.listener_kind = server.legacy_kind().into();
    eprintln!("{}", report::one_line(&step));
    clients.quit();
    Ok(step)
}

fn video_scenario(opts: &Options, server: &Server, pin: &Pinning) -> anyhow::Result<Vec<Step>> {
    let start = wire::mono_ns() + 200_000_000;
    let source = Source::start(server.target(true), Feed::VIDEO, start)?;
    std::thread::sleep(Duration::from_millis(1500));
    let mut clients = Clients::new(server, true, pin.clients.clone());
    let rss_base = server.rss();
    let hold = Duration::from_secs(opts.video_hold_s);
    let mut steps = Vec::new();
    for &n in &opts.video_steps {
        let t = Instant::now();
        let connected = clients.grow_to(n, 0, Duration::from_secs(60))?;
        let connect_s = t.elapsed().as_secs_f64();
        eprintln!("[{}] video: {connected} streaming; holding", server.kind.name());
        std::thread::sleep(Duration::from_secs(2));
        let tail = Duration::from_millis(800 + opts.send_window_ms.unwrap_or(0) * 2);
        let h = Hold {
            scenario: "video",
            n,
            hold,
            rss_base,
            stall: false,
            feed: Feed::VIDEO,
            connect_s,
            tail,
            counted: ("video", "/video.ogg"),
        };
        let mut step = measure(server, &mut clients, &source, &h)?;
        step.listener_kind = server.legacy_kind().into();
        eprintln!("{}", report::one_line(&step));
        let ok = healthy(&step) && step.p99_ms < 500.0;
        steps.push(step);
        if !ok {
            break;
        }
    }
    clients.quit();
    source.stop();
    Ok(steps)
}

/// onair alone at one listener count, once per send window: what each window costs and adds.
fn window_scenario(opts: &Options, pin: &Pinning) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    let n = opts.window_listeners;
    let hold = Duration::from_secs(if opts.quick { 3 } else { 10 });
    for &window in &opts.window_sweep {
        let server = start_onair(opts, Some(window), pin.server.as_deref(), None)?;
        let result = (|| -> anyhow::Result<Step> {
            let start = wire::mono_ns() + 200_000_000;
            let source = Source::start(server.target(false), Feed::AUDIO, start)?;
            std::thread::sleep(Duration::from_millis(1200));
            let rss_base = server.rss();
            let mut clients = Clients::new(&server, false, pin.clients.clone());
            let t = Instant::now();
            clients.grow_to(n, 0, Duration::from_secs(60))?;
            let connect_s = t.elapsed().as_secs_f64();
            std::thread::sleep(settle(opts));
            let tail = Duration::from_millis(500 + window * 2);
            let h = Hold {
                scenario: "window",
                n,
                hold,
                rss_base,
                stall: false,
                feed: Feed::AUDIO,
                connect_s,
                tail,
                counted: ("bench", "/bench.ogg"),
            };
            let mut step = measure(&server, &mut clients, &source, &h)?;
            step.send_window_ms = Some(window);
            step.listener_kind = server.legacy_kind().into();
            clients.quit();
            source.stop();
            Ok(step)
        })();
        server.stop();
        let step = result?;
        eprintln!("send_window_ms={window}: {}", report::one_line(&step));
        steps.push(step);
    }
    Ok(steps)
}

/// The self-signed certificate both servers use on their TLS ports, and that the load
/// clients trust.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
}

/// Makes a P-256 self-signed certificate for 127.0.0.1 (as docs/tooling says, plus
/// `CA:FALSE`: rustls' verifier refuses a CA certificate as a server's own).
fn make_cert(out: &Path) -> anyhow::Result<Tls> {
    let dir = out.join("tls");
    std::fs::create_dir_all(&dir)?;
    let tls = Tls { cert: dir.join("cert.pem"), key: dir.join("key.pem") };
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&tls.key)
        .arg("-out")
        .arg(&tls.cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running openssl")?;
    anyhow::ensure!(status.success(), "openssl could not make a certificate in {}", dir.display());
    Ok(tls)
}

/// What a listener asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listen {
    /// onair's WebSocket listeners, `/listen/bench`.
    Ws,
    /// HTTP, `/bench.ogg`: Ogg/Opus.
    Ogg,
    /// HTTP, `/bench-mp3.mp3`: MP3.
    Mp3,
    /// LL-HLS, `/bench.m3u8` (onair only): a blocking playlist reload and a part per 200 ms.
    Hls,
}

impl Listen {
    fn path(self) -> &'static str {
        match self {
            Listen::Ws => "/listen/bench",
            Listen::Ogg => "/bench.ogg",
            Listen::Mp3 => MP3_MOUNT,
            Listen::Hls => "/bench.m3u8",
        }
    }
}

/// One kind of listener: what it asks for, with ICY metadata or not, over TLS or not.
#[derive(Clone, Copy, Debug)]
struct Group {
    listen: Listen,
    icy: bool,
    tls: bool,
}

impl Group {
    const fn new(listen: Listen, icy: bool, tls: bool) -> Self {
        Self { listen, icy, tls }
    }

    /// `ws`, `wss`, `http ogg`, `https ogg`, `http mp3 + icy`, ...
    fn label(self) -> String {
        let scheme = match (self.listen, self.tls) {
            (Listen::Ws, false) => "ws",
            (Listen::Ws, true) => "wss",
            (_, false) => "http",
            (_, true) => "https",
        };
        let container = match self.listen {
            Listen::Ws => "",
            Listen::Ogg => " ogg",
            Listen::Mp3 => " mp3",
            Listen::Hls => " ll-hls",
        };
        format!("{scheme}{container}{}", if self.icy { " + icy" } else { "" })
    }

    fn feed(self) -> Feed {
        if self.listen == Listen::Mp3 {
            Feed::MP3
        } else {
            Feed::AUDIO
        }
    }

    /// The source's mount (Icecast protocol, on both servers).
    fn mount(self) -> &'static str {
        if self.listen == Listen::Mp3 {
            MP3_MOUNT
        } else {
            "/bench.ogg"
        }
    }

    /// What the server counts these listeners as: (onair stream, Icecast mount or, for HLS,
    /// the playlist).
    fn counted(self) -> (&'static str, &'static str) {
        (self.stream(), if self.listen == Listen::Hls { Listen::Hls.path() } else { self.mount() })
    }

    /// onair's stream.
    fn stream(self) -> &'static str {
        if self.listen == Listen::Mp3 {
            MP3_STREAM
        } else {
            "bench"
        }
    }
}

/// onair's value of a top-level setting in these runs: an `--onair-config` line if one sets
/// it, else the default documented in docs/onair.example.toml (whose values are the
/// defaults).
fn onair_setting(opts: &Options, key: &str) -> Option<u64> {
    let value = |line: &str| -> Option<u64> {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.split('#').next()?.trim().parse().ok())?
    };
    opts.onair_config.iter().find_map(|l| value(l)).or_else(|| {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/onair.example.toml");
        std::fs::read_to_string(example).ok()?.lines().find_map(value)
    })
}

/// One kind of listener on one server, on its own fresh server (so that memory per listener
/// starts from an idle server): onair with its default config (a `[tls]` port added), or
/// Icecast with a TLS listen socket; the source pushed with the Icecast protocol (PUT) to
/// both; then the ladder of `steps`.
#[allow(clippy::too_many_arguments)]
fn group_run(
    opts: &Options,
    kind: Kind,
    group: Group,
    tls: &Tls,
    pin: &Pinning,
    scenario: &str,
    steps: &[usize],
    further: &[usize],
    titles: Option<u32>,
) -> anyhow::Result<Vec<Step>> {
    let server = match kind {
        Kind::Onair => start_onair(opts, None, pin.server.as_deref(), Some(tls))?,
        Kind::Icecast => start_icecast(pin.server.as_deref(), Some(tls))?,
    };
    eprintln!(
        "started {} (pid {}) on ports {} and {} (TLS): {scenario}, {} listeners",
        kind.name(),
        server.pid,
        server.port,
        server.tls_port.unwrap_or(0),
        group.label()
    );
    // The window these listeners get from onair's defaults.
    let window = match (kind, group.listen) {
        (Kind::Icecast, _) => None,
        (Kind::Onair, Listen::Ws) => Some(onair_setting(opts, "send_window_ms").unwrap_or(0)),
        // HLS clients fetch whole parts: no send window.
        (Kind::Onair, Listen::Hls) => None,
        (Kind::Onair, _) => onair_setting(opts, "http_send_window_ms"),
    };
    let result = (|| -> anyhow::Result<Vec<Step>> {
        let password = if kind == Kind::Onair { KEY } else { ICECAST_PASSWORD };
        let target = Target::Icecast {
            addr: server.addr(),
            mount: group.mount().into(),
            password: password.into(),
        };
        let source = Source::start(target, group.feed(), wire::mono_ns() + 200_000_000)?;
        std::thread::sleep(Duration::from_millis(1200));
        if group.listen == Listen::Hls {
            wait_for_playlist(server.addr(), group.listen.path())?;
        }
        let mut clients = Clients::of(&server, group, tls, pin.clients.clone());
        let l = Ladder {
            scenario,
            hold: Duration::from_secs(opts.suite_hold_s),
            kind: group.label(),
            steps,
            further,
            feed: group.feed(),
            // HLS clients get the last frames with the part that holds them: up to a part
            // (200 ms) after they were sent, plus a request.
            tail: Duration::from_millis(
                500 + window.unwrap_or(0) * 2 + if group.listen == Listen::Hls { 500 } else { 0 },
            ),
            counted: group.counted(),
            titles: titles.map(|changes| (group.mount(), password, changes)),
        };
        let steps = ladder(opts, &server, &source, &mut clients, &l);
        clients.quit();
        source.stop();
        steps
    })();
    server.stop();
    let mut steps = result?;
    for step in &mut steps {
        step.send_window_ms = window;
        step.default_config = kind == Kind::Onair && opts.onair_config.is_empty();
    }
    Ok(steps)
}

/// HTTP listeners of `/bench.ogg` on both servers, the same Ogg/Opus source pushed to each.
fn http_scenario(opts: &Options, tls: &Tls, pin: &Pinning) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for &kind in &opts.servers {
        let group = Group::new(Listen::Ogg, false, false);
        steps.extend(group_run(
            opts,
            kind,
            group,
            tls,
            pin,
            "http",
            &opts.http_steps,
            &opts.further,
            None,
        )?);
    }
    Ok(steps)
}

/// ICY metadata: Ogg listeners that ask for it, then MP3 listeners without and with it,
/// titles changing during each hold.
fn icy_scenario(
    opts: &Options,
    tls: &Tls,
    pin: &Pinning,
    results: &mut Results,
    started: Instant,
) -> anyhow::Result<()> {
    let groups = [
        Group::new(Listen::Ogg, true, false),
        Group::new(Listen::Mp3, false, false),
        Group::new(Listen::Mp3, true, false),
    ];
    for &kind in &opts.servers {
        for group in groups {
            let steps = group_run(
                opts,
                kind,
                group,
                tls,
                pin,
                "icy",
                &opts.icy_steps,
                &[],
                Some(opts.title_changes),
            )?;
            results.icy.extend(steps);
            write_outputs(opts, results, started)?;
        }
    }
    Ok(())
}

/// Plain and TLS listeners side by side: WebSocket and HTTP on onair, HTTP on Icecast.
fn tls_scenario(
    opts: &Options,
    tls: &Tls,
    pin: &Pinning,
    results: &mut Results,
    started: Instant,
) -> anyhow::Result<()> {
    for &kind in &opts.servers {
        let listens: &[Listen] =
            if kind == Kind::Onair { &[Listen::Ws, Listen::Ogg] } else { &[Listen::Ogg] };
        for &listen in listens {
            for secure in [false, true] {
                let group = Group::new(listen, false, secure);
                let steps =
                    group_run(opts, kind, group, tls, pin, "tls", &opts.tls_steps, &[], None)?;
                results.tls.extend(steps);
                write_outputs(opts, results, started)?;
            }
        }
    }
    Ok(())
}

/// Waits until onair's playlist at `path` hints at a part (the segmenter has begun).
fn wait_for_playlist(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if http_get(addr, path).is_ok_and(|body| body.contains("#EXT-X-PRELOAD-HINT")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("onair served no playlist at {path} within 15 s")
}

/// onair's LL-HLS clients and its HTTP listeners of the same Ogg/Opus source, in the same
/// run, each on a fresh onair with its default config (Icecast has no HLS).
fn hls_scenario(
    opts: &Options,
    tls: &Tls,
    pin: &Pinning,
    results: &mut Results,
    started: Instant,
) -> anyhow::Result<()> {
    if !opts.servers.contains(&Kind::Onair) {
        return Ok(());
    }
    for listen in [Listen::Hls, Listen::Ogg] {
        let group = Group::new(listen, false, false);
        let steps =
            group_run(opts, Kind::Onair, group, tls, pin, "hls", &opts.hls_steps, &[], None)?;
        results.hls.extend(steps);
        write_outputs(opts, results, started)?;
    }
    Ok(())
}

/// Loopback TCP throughput on this machine now: one connection, 128 KiB writes from core 0,
/// 256 KiB reads on core 1, for `secs`.
fn loopback_gbps(secs: f64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> anyhow::Result<(u64, f64)> {
        procs::pin_thread(1);
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 << 10];
        let t = Instant::now();
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        Ok((total, t.elapsed().as_secs_f64()))
    });
    procs::pin_thread(0);
    let mut s = TcpStream::connect(addr)?;
    let chunk = vec![7u8; 128 << 10];
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        s.write_all(&chunk)?;
    }
    drop(s);
    // Back to every core for the rest of the run.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..cores {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let (bytes, elapsed) = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    Ok(bytes as f64 * 8.0 / elapsed / 1e9)
}

/// Runs everything and writes the results.
///
/// # Errors
/// When a server or a client cannot be started or stops answering.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    procs::install_signal_handlers();
    procs::raise_priority();
    std::fs::create_dir_all(&opts.out)?;
    let started = Instant::now();
    let machine = Machine::probe();
    eprintln!("machine: {}", machine.summary());
    let pin = pinning(opts);
    let mut results = Results {
        machine,
        options: serde_json::to_value(opts)?,
        audio: Vec::new(),
        stalled: Vec::new(),
        window: Vec::new(),
        video: Vec::new(),
        http: Vec::new(),
        icy: Vec::new(),
        tls: Vec::new(),
        hls: Vec::new(),
        loopback_gbps: None,
        duration_s: 0.0,
        notes: Vec::new(),
    };
    let has = |s: &str| opts.scenarios.iter().any(|x| x == s);
    let mut servers = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        // The WebSocket scenarios share one server of each kind (onair with its send window).
        if ["audio", "stalled", "video"].iter().any(|s| has(s)) {
            for &kind in &opts.servers {
                let server = match kind {
                    Kind::Onair => {
                        start_onair(opts, opts.send_window_ms, pin.server.as_deref(), None)?
                    }
                    Kind::Icecast => start_icecast(pin.server.as_deref(), None)?,
                };
                eprintln!("started {} (pid {}) on port {}", kind.name(), server.pid, server.port);
                servers.push(server);
            }
        }
        let start = wire::mono_ns() + 300_000_000;
        let mut sources = Vec::new();
        if has("audio") || has("stalled") {
            for server in &servers {
                sources.push(Source::start(server.target(false), Feed::AUDIO, start)?);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        if has("audio") {
            for (server, source) in servers.iter().zip(&sources) {
                let mut steps = audio_scenario(opts, server, source, &pin)?;
                for step in &mut steps {
                    if server.kind == Kind::Onair {
                        step.send_window_ms = Some(opts.send_window_ms.unwrap_or(0));
                    }
                }
                results.audio.extend(steps);
                write_outputs(opts, &mut results, started)?;
            }
        }
        if has("stalled") {
            for (server, source) in servers.iter().zip(&sources) {
                results.stalled.push(stall_scenario(opts, server, source, &pin)?);
                write_outputs(opts, &mut results, started)?;
            }
        }
        for source in sources {
            source.stop();
        }
        if has("window") && opts.servers.contains(&Kind::Onair) {
            results.window = window_scenario(opts, &pin)?;
            write_outputs(opts, &mut results, started)?;
        }
        if has("video") {
            results.loopback_gbps = Some(loopback_gbps(if opts.quick { 1.0 } else { 3.0 })?);
            for server in &servers {
                results.video.extend(video_scenario(opts, server, &pin)?);
                write_outputs(opts, &mut results, started)?;
            }
        }
        for server in servers.drain(..) {
            server.stop();
        }
        // The HTTP, ICY, TLS and HLS scenarios start a fresh server per listener kind.
        if has("http") || has("icy") || has("tls") || has("hls") {
            let tls = make_cert(&opts.out)?;
            if has("http") {
                results.http = http_scenario(opts, &tls, &pin)?;
                write_outputs(opts, &mut results, started)?;
            }
            if has("icy") {
                icy_scenario(opts, &tls, &pin, &mut results, started)?;
            }
            if has("tls") {
                tls_scenario(opts, &tls, &pin, &mut results, started)?;
            }
            if has("hls") {
                hls_scenario(opts, &tls, &pin, &mut results, started)?;
            }
        }
        Ok(())
    })();
    for server in servers {
        server.stop();
    }
    if let Err(err) = &result {
        results.notes.push(format!("run aborted: {err:#}"));
    }
    write_outputs(opts, &mut results, started)?;
    println!("{}", report::markdown(&results));
    eprintln!("results: {}", opts.out.display());
    result
}

fn write_outputs(opts: &Options, results: &mut Results, started: Instant) -> anyhow::Result<()> {
    results.duration_s = started.elapsed().as_secs_f64();
    std::fs::write(opts.out.join("results.json"), serde_json::to_string_pretty(results)?)?;
    std::fs::write(opts.out.join("results.md"), report::markdown(results))?;
    report::write_charts(&opts.out, results)?;
    Ok(())
}

/// Merges the latency histograms of several client reports.
pub fn merged(reports: &[Report], precise: bool) -> Hist {
    let mut h = Hist::default();
    for r in reports {
        h.merge(if precise { &r.latency_precise } else { &r.latency_bulk });
    }
    h
}
