//! `cluster`: what a second node costs (`make bench`, after the load comparison).
//!
//! Runs nats-server and two release `onair serve` nodes (a: origin, b: follower) on loopback
//! and measures, with clients in this process:
//! 1. latency: one stamped frame every 20 ms into a; the same frame's arrival at a listener
//!    of a and at a listener of b; b's extra delay per frame (p50, p99, max);
//! 2. CPU per remote stream: b's CPU-seconds per second while it follows N streams (no
//!    listeners), minus b idle; a's for publishing them;
//! 3. CPU per listener: K listeners of one stream on its origin (a) and on a node that only
//!    follows it (b), each minus that node's CPU without listeners.
//!
//! `cargo bench --bench cluster -- [--quick] [--out DIR] [--onair PATH]`; writes
//! `DIR/cluster.md`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const START: &str = r#"{"type":"start","tracks":[{"id":0,"kind":"audio","codec":"opus","sample_rate":48000,"channels":2}]}"#;
/// A 128 kbit/s Opus frame of 20 ms is 320 bytes.
const FRAME_BYTES: usize = 320;
const FRAME_EVERY: Duration = Duration::from_millis(20);

struct Options {
    quick: bool,
    out: PathBuf,
    onair: PathBuf,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        quick: false,
        out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench")),
        onair: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/onair")),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--out" => options.out = args.next().expect("--out DIR").into(),
            "--onair" => options.onair = args.next().expect("--onair PATH").into(),
            _ => {} // --bench from cargo
        }
    }
    assert!(options.onair.is_file(), "build the release relay first: cargo build --release");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let report = runtime.block_on(run(&options));
    std::fs::create_dir_all(&options.out).unwrap();
    let path = options.out.join("cluster.md");
    std::fs::write(&path, &report).unwrap();
    println!("{report}\n(written to {})", path.display());
}

/// A process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat (1-based), 12 and 13 after the name.
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn nats(dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (apt-get install nats-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc(child), port)
}

fn node(options: &Options, nats: u16, name: &str, streams: usize) -> (Proc, SocketAddr) {
    let mut config = format!("[cluster]\nnats = \"nats://127.0.0.1:{nats}\"\nnode = \"{name}\"\n");
    for i in 0..streams {
        config
            .push_str(&format!("[[streams]]\nname = \"s{i}\"\nkey = \"SECRET-KEY-0123456789\"\n"));
    }
    let path = std::env::temp_dir()
        .join(format!("onair-bench-cluster-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(&options.onair)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn,onair::server=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening addr=").nth(1) {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).expect("node address");
    let _ = std::fs::remove_file(&path);
    (Proc(child), addr.parse().unwrap())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn source(addr: SocketAddr, stream: &str) -> Ws {
    let mut request = format!("ws://{addr}/ingest/{stream}").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", "Bearer SECRET-KEY-0123456789".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text(START)).await.unwrap();
    let head = frame_message(0b10, 0, b"OpusHead\x01\x02\x38\x01\x80\xbb\0\0\0\0\0");
    ws.send(Message::binary(head)).await.unwrap();
    ws
}

fn frame_message(flags: u8, pts: u64, payload: &[u8]) -> Vec<u8> {
    let mut message = vec![flags, 0];
    message.extend_from_slice(&pts.to_be_bytes());
    message.extend_from_slice(payload);
    message
}

/// A frame stamped with its sequence number and the time it was sent (ns since `epoch`).
fn stamped(seq: u64, epoch: Instant) -> Vec<u8> {
    let mut payload = vec![0u8; FRAME_BYTES];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    payload[8..16].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
    frame_message(0b01, seq * 20_000, &payload)
}

/// Waits until `addr`'s `/api/streams` shows every stream of `names` live.
async fn wait_live(addr: SocketAddr, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut response = Vec::new();
        socket.read_to_end(&mut response).await.unwrap();
        let live = String::from_utf8_lossy(&response).matches("\"live\":true").count();
        if live >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{addr}: {live} of {count} streams live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Arrival times (ns since `epoch`) of stamped frames at one listener, by sequence number.
async fn timed_listener(
    addr: SocketAddr,
    epoch: Instant,
    arrivals: Arc<Mutex<Vec<(u64, u64, u64)>>>,
) {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/listen/s0")).await.unwrap();
    while let Some(Ok(message)) = ws.next().await {
        let now = epoch.elapsed().as_nanos() as u64;
        if let Message::Binary(data) = message {
            if data.len() == 10 + FRAME_BYTES && data[0] & 0b10 == 0 {
                let seq = u64::from_be_bytes(data[10..18].try_into().unwrap());
                let sent = u64::from_be_bytes(data[18..26].try_into().unwrap());
                arrivals.lock().unwrap().push((seq, sent, now));
            }
        }
    }
}

/// A listener that reads and drops everything (as a player would, minus decoding).
async fn bulk_listener(addr: SocketAddr) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /listen/s0 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 16384];
    while let Ok(n) = socket.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Sends stamped frames on every source every 20 ms until `stop`.
fn pump(mut sources: Vec<Ws>, epoch: Instant) -> tokio::task::JoinHandle<Vec<Ws>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FRAME_EVERY);
        let mut seq = 0;
        loop {
            tick.tick().await;
            for ws in &mut sources {
                if ws.send(Message::binary(stamped(seq, epoch))).await.is_err() {
                    return sources;
                }
            }
            seq += 1;
        }
    })
}

/// CPU-seconds per second of `proc` over `secs`.
async fn cpu_rate(proc: &Proc, secs: u64) -> f64 {
    let (start, at) = (proc.cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    (proc.cpu_seconds() - start) / at.elapsed().as_secs_f64()
}

async fn run(options: &Options) -> String {
    let hold = if options.quick { 5 } else { 20 };
    let streams = if options.quick { 20 } else { 100 };
    let listeners = if options.quick { 200 } else { 1000 };
    let dir = std::env::temp_dir().join(format!("onair-bench-nats-{}", std::process::id()));
    let (_nats, port) = nats(&dir);
    let (a, a_addr) = node(options, port, "a", streams);
    let (b, b_addr) = node(options, port, "b", streams);
    let epoch = Instant::now();
    let mut report = String::from("## Cluster (two nodes on one nats-server, loopback)\n\n");

    // 2 (baseline first): both nodes idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a_idle, b_idle) = tokio::join!(cpu_rate(&a, hold), cpu_rate(&b, hold));

    // 1 and 2: every stream live on a, followed by b.
    let mut sources = Vec::new();
    for i in 0..streams {
        sources.push(source(a_addr, &format!("s{i}")).await);
    }
    let pumping = pump(sources, epoch);
    wait_live(b_addr, streams).await;
    let arrivals_a = Arc::new(Mutex::new(Vec::new()));
    let arrivals_b = Arc::new(Mutex::new(Vec::new()));
    let la = tokio::spawn(timed_listener(a_addr, epoch, Arc::clone(&arrivals_a)));
    let lb = tokio::spawn(timed_listener(b_addr, epoch, Arc::clone(&arrivals_b)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    arrivals_a.lock().unwrap().clear();
    arrivals_b.lock().unwrap().clear();
    let (a_streams, b_streams) = tokio::join!(cpu_rate(&a, hold), cpu_rate(&b, hold));
    la.abort();
    lb.abort();
    let on_a: std::collections::HashMap<u64, (u64, u64)> =
        arrivals_a.lock().unwrap().iter().map(|&(seq, sent, at)| (seq, (sent, at))).collect();
    let mut extra = Vec::new();
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for &(seq, sent, at_b) in arrivals_b.lock().unwrap().iter() {
        if let Some(&(_, at_a)) = on_a.get(&seq) {
            extra.push((at_b as f64 - at_a as f64) / 1e6);
            local.push((at_a - sent) as f64 / 1e6);
            remote.push((at_b - sent) as f64 / 1e6);
        }
    }
    for v in [&mut extra, &mut local, &mut remote] {
        v.sort_by(f64::total_cmp);
    }
    assert!(!extra.is_empty(), "no frame reached both listeners");
    report.push_str(&format!(
        "### Latency of a remote listener over a local one ({} frames of stream s0, {streams} streams live)\n\n\
         | | p50 | p99 | max |\n| --- | --- | --- | --- |\n\
         | source → listener on the origin (ms) | {:.2} | {:.2} | {:.2} |\n\
         | source → listener on the other node (ms) | {:.2} | {:.2} | {:.2} |\n\
         | **added by the cluster, same frame (ms)** | **{:.2}** | **{:.2}** | **{:.2}** |\n\n",
        extra.len(),
        quantile(&local, 0.5), quantile(&local, 0.99), local[local.len() - 1],
        quantile(&remote, 0.5), quantile(&remote, 0.99), remote[remote.len() - 1],
        quantile(&extra, 0.5), quantile(&extra, 0.99), extra[extra.len() - 1],
    ));
    let per_stream = |busy: f64, idle: f64| (busy - idle).max(0.0) / streams as f64 * 1000.0;
    report.push_str(&format!(
        "### CPU per stream ({streams} streams of 50 frames/s × {FRAME_BYTES} bytes, {hold} s, no listeners)\n\n\
         | node | idle (CPU-s/s) | streams live (CPU-s/s) | per stream (CPU-ms/s) |\n| --- | --- | --- | --- |\n\
         | a: origin (ingest, ring, publish) | {a_idle:.4} | {a_streams:.4} | {:.3} |\n\
         | b: follower (subscribe, ring) | {b_idle:.4} | {b_streams:.4} | **{:.3}** |\n\n",
        per_stream(a_streams, a_idle),
        per_stream(b_streams, b_idle),
    ));

    // 3: listeners of s0 on the origin, then on the follower.
    let mut rows = String::new();
    let mut per = Vec::new();
    for (label, proc, addr) in
        [("a: its own stream", &a, a_addr), ("b: a remote stream", &b, b_addr)]
    {
        let base = cpu_rate(proc, hold).await;
        let tasks: Vec<_> = (0..listeners).map(|_| tokio::spawn(bulk_listener(addr))).collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let busy = cpu_rate(proc, hold).await;
        for task in tasks {
            task.abort();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let each = (busy - base).max(0.0) / listeners as f64 * 1e6;
        per.push(each);
        rows.push_str(&format!("| {label} | {base:.4} | {busy:.4} | {each:.1} |\n"));
    }
    report.push_str(&format!(
        "### CPU per listener ({listeners} WebSocket listeners of one stream, {hold} s)\n\n\
         | node serving | without listeners (CPU-s/s) | with (CPU-s/s) | per listener (CPU-µs/s) |\n\
         | --- | --- | --- | --- |\n{rows}\nremote / local: **{:.2}**\n",
        per[1] / per[0]
    ));
    pumping.abort();
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
    report
}
