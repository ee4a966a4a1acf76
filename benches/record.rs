//! The cost of recording a stream: CPU and memory per recorded stream, in real time.
//!
//! `cargo bench --bench record [-- --quick] [--streams N] [--seconds S]`: N streams (default
//! 20) each get a live source of 128 kbit/s Opus in 20 ms frames, paced by one thread; first
//! for S seconds (default 10) without recorders, then S seconds with a recorder on each (the
//! relay's own `record::run`, writing under target/bench/record-tmp/). Reported: CPU time of
//! the recorder threads (from /proc/self/task/*/schedstat, nanoseconds) per stream, the whole
//! process's extra CPU and memory against the run without them, and bytes written. Results
//! also go to target/bench/record.json.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use onair::config::Config;
use onair::metrics::Metrics;
use onair::protocol::{encode_frame, Codec, FrameHeader, Track, FLAG_HEADER, FLAG_KEYFRAME};
use onair::record::Recordings;
use onair::relay::{SourceKind, Stream};
use onair::StreamConfig;
use tokio_util::sync::CancellationToken;

const FRAME: Duration = Duration::from_millis(20);
/// 128 kbit/s at 20 ms per frame.
const PAYLOAD_BYTES: usize = 320;

struct Args {
    streams: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut args = Args { streams: 20, seconds: 10 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.seconds = 3,
            "--streams" => args.streams = it.next().and_then(|n| n.parse().ok()).unwrap_or(20),
            "--seconds" => args.seconds = it.next().and_then(|n| n.parse().ok()).unwrap_or(10),
            "--bench" => {}
            "--help" => {
                println!("cargo bench --bench record -- [--quick] [--streams N] [--seconds S]");
                std::process::exit(0);
            }
            _ => {}
        }
    }
    args
}

/// Process CPU (user + system) so far.
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we own.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of this process's threads whose name starts with `prefix`.
fn threads_cpu(prefix: &str) -> (Duration, usize) {
    let mut total = Duration::ZERO;
    let mut count = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let ns: u64 = stat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        total += Duration::from_nanos(ns);
        count += 1;
    }
    (total, count)
}

/// Resident memory of the process, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else { return 0 };
    read.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Pushes a frame to every stream every 20 ms (absolute clock) until `stop`.
fn pace(streams: Vec<Arc<Stream>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let track = Track::audio(0, Codec::Opus, 48_000, 2, Some(128_000));
            let mut sources: Vec<_> = streams
                .iter()
                .map(|s| {
                    let mut source = s.attach(SourceKind::Live).unwrap();
                    source.start(vec![track.clone()]).unwrap();
                    let head = onair::format::opus::OpusHead::synthesize(2, 48_000);
                    let header = FrameHeader { flags: FLAG_HEADER, track: 0, pts: 0 };
                    source.frame(header, encode_frame(header, &head)).unwrap();
                    source
                })
                .collect();
            // A CELT 20 ms stereo packet: TOC 0xFC and bytes that change per frame.
            let mut payload = vec![0u8; PAYLOAD_BYTES];
            payload[0] = 0xFC;
            let start = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                for (i, source) in sources.iter_mut().enumerate() {
                    payload[1 + i % (PAYLOAD_BYTES - 1)] = n as u8;
                    let header = FrameHeader { flags: FLAG_KEYFRAME, track: 0, pts: n * 20_000 };
                    source.frame(header, encode_frame(header, &payload)).unwrap();
                }
                n += 1;
                let next = start + FRAME * n as u32;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
        .unwrap()
}

struct Phase {
    wall: Duration,
    process: Duration,
    recorders: Duration,
    rss_kib: u64,
}

fn measure(seconds: u64) -> Phase {
    let (cpu0, rec0, t0) = (process_cpu(), threads_cpu("rec-").0, Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    Phase {
        wall: t0.elapsed(),
        process: process_cpu() - cpu0,
        recorders: threads_cpu("rec-").0.saturating_sub(rec0),
        rss_kib: rss_kib(),
    }
}

fn main() {
    let Args { streams: n, seconds } = args();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let dir = root.join("record-tmp");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = Config { recordings_dir: Some(dir.clone()), ..Config::default() };
    config.recordings_split = Duration::from_secs(3600);
    let metrics = Metrics::new();
    let streams: Vec<Arc<Stream>> = (0..n)
        .map(|i| {
            let mut c = StreamConfig::new(&format!("s{i}"), Some("k"));
            c.record = true;
            Stream::new(c, metrics.stream(&format!("s{i}")))
        })
        .collect();
    let recordings = Recordings::new(&config).unwrap();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = pace(streams.clone(), Arc::clone(&stop));

    println!(
        "recording cost: {n} streams of 128 kbit/s Opus (20 ms frames), {seconds} s per phase"
    );
    std::thread::sleep(Duration::from_secs(1));
    let base = measure(seconds);
    let cancel = CancellationToken::new();
    let tasks: Vec<_> = streams
        .iter()
        .map(|s| {
            let m = metrics.recording(&s.config().name);
            runtime.spawn(onair::record::run(
                Arc::clone(s),
                Arc::clone(&recordings),
                m,
                cancel.child_token(),
            ))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let threads = threads_cpu("rec-").1;
    let bytes0 = dir_bytes(&dir);
    let rec = measure(seconds);
    let written = dir_bytes(&dir) - bytes0;
    cancel.cancel();
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    stop.store(true, Ordering::Relaxed);
    pacer.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    let pct = |cpu: Duration, wall: Duration| 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    let per_stream_threads = pct(rec.recorders, rec.wall) / n as f64;
    let extra = pct(rec.process, rec.wall) - pct(base.process, base.wall);
    let per_stream_process = extra / n as f64;
    let rss_per_stream = (rec.rss_kib as f64 - base.rss_kib as f64) / n as f64;
    let rate = written as f64 / rec.wall.as_secs_f64() / n as f64;
    println!("| measure | value |");
    println!("| --- | --- |");
    println!("| recorder threads | {threads} |");
    println!("| recorder CPU per stream (its thread) | {per_stream_threads:.3} % of a core |");
    println!("| process CPU without recorders | {:.2} % |", pct(base.process, base.wall));
    println!("| process CPU with recorders | {:.2} % |", pct(rec.process, rec.wall));
    println!("| extra process CPU per recorded stream | {per_stream_process:.3} % of a core |");
    println!("| extra resident memory per recorded stream | {rss_per_stream:.0} KiB |");
    println!("| written per stream | {:.1} kB/s |", rate / 1000.0);
    let json = serde_json::json!({
        "streams": n,
        "seconds": seconds,
        "recorder_cpu_percent_per_stream": per_stream_threads,
        "process_cpu_percent_without": pct(base.process, base.wall),
        "process_cpu_percent_with": pct(rec.process, rec.wall),
        "extra_process_cpu_percent_per_stream": per_stream_process,
        "extra_rss_kib_per_stream": rss_per_stream,
        "written_bytes_per_second_per_stream": rate,
    });
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("record.json"), serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}
