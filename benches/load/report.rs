//! Results: per-step figures, the machine they were measured on, and three renderings of
//! them (JSON, Markdown tables, SVG charts).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::client::Report;
use crate::compare::merged;

/// The machine a run was measured on.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Machine {
    /// Online CPUs.
    pub nproc: usize,
    /// CPU model name.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// Memory, MiB.
    pub mem_mib: u64,
    /// Load average (1 min) when the run started.
    pub loadavg_start: f64,
    /// `icecast2 -v`.
    pub icecast: String,
    /// Commit of the onair tree measured.
    pub onair_commit: String,
}

impl Machine {
    /// Reads /proc and asks the tools for their versions.
    pub fn probe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_owned());
        let mem_kib: u64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        let output = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            mem_mib: mem_kib / 1024,
            loadavg_start: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            icecast: output("icecast2", &["-v"]),
            onair_commit: {
                let commit = output("git", &["rev-parse", "--short", "HEAD"]);
                // A relay built from a changed tree is not the commit: say so in every caption.
                let relay = ["src", "Cargo.toml", "Cargo.lock"];
                let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
                status.extend(relay);
                if output("git", &status).is_empty() {
                    commit
                } else {
                    format!("{commit} with uncommitted changes")
                }
            },
        }
    }

    /// One line for logs and captions.
    pub fn summary(&self) -> String {
        format!(
            "{} cores ({}), Linux {}, {} MiB; load {:.1} at start; {}; onair {}",
            self.nproc,
            self.cpu,
            self.kernel,
            self.mem_mib,
            self.loadavg_start,
            self.icecast,
            self.onair_commit
        )
    }
}

/// One step: a server, a scenario, a number of listeners, a hold.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct Step {
    /// `audio`, `stalled`, `window`, `video`, `http`, `icy`, `tls` or `hls`.
    pub scenario: String,
    /// `onair` or `icecast`.
    pub server: String,
    /// What the listeners were: `ws`, `wss`, `http ogg`, `https ogg`, `http mp3 + icy`,
    /// `http ll-hls`, ...
    pub listener_kind: String,
    /// Listeners asked for.
    pub n: usize,
    /// onair's send window for these listeners, ms (`send_window_ms` for WebSocket listeners,
    /// `http_send_window_ms` for HTTP ones).
    pub send_window_ms: Option<u64>,
    /// onair ran with its default config (only limits and a `[tls]` port set).
    pub default_config: bool,
    /// Listeners streaming at the end of the hold.
    pub connected: u64,
    /// Seconds to connect this step's new listeners.
    pub connect_s: f64,
    /// Seconds held.
    pub hold_s: f64,
    /// Server CPU-seconds during the hold (utime + stime from /proc).
    pub server_cpu_s: f64,
    /// Server CPU-seconds per 1 000 listener-seconds.
    pub cpu_per_1000_ls: f64,
    /// Seconds the server's threads waited for a CPU while runnable (other load).
    pub server_wait_s: f64,
    /// Server CPU-seconds per 1 000 listener-seconds of stream actually delivered (frames of
    /// any age that reached healthy listeners during the hold): a saturated server that
    /// falls behind delivers less than it holds.
    pub cpu_per_1000_delivered: f64,
    /// Load clients' CPU, percent of one core.
    pub client_cpu_pct: f64,
    /// CPU used by other processes on the machine during the hold, in cores.
    pub others_cores: f64,
    /// Server resident memory at the end of the hold, MiB.
    pub rss_mib: f64,
    /// Before any listener, MiB.
    pub rss_base_mib: f64,
    /// (RSS − idle RSS) / listeners, KiB.
    pub rss_per_listener_kib: f64,
    /// Frames the source sent during the hold.
    pub expected_frames: u64,
    /// Frames received by healthy listeners / (expected × healthy listeners).
    pub delivered_ratio: f64,
    /// Frames missing (sequence gaps) at healthy listeners.
    pub lost_frames: u64,
    /// Healthy listeners that lost anything or were closed.
    pub listeners_lost: u64,
    /// Healthy listeners that had not received the last frame after draining.
    pub listeners_behind: u64,
    /// Most frames one of them was behind.
    pub behind_max: u64,
    /// `skipped` events (onair).
    pub skipped_events: u64,
    /// Close codes seen.
    pub close_codes: Vec<(u16, u64)>,
    /// Latency at precise listeners: every frame, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Worst, ms.
    pub max_ms: f64,
    /// Precise listeners and samples.
    pub precise_listeners: u64,
    /// Latency samples at precise listeners.
    pub samples: u64,
    /// Frames per read at precise listeners: about the frames per server write.
    pub frames_per_write: f64,
    /// Latency of the newest frame of each read at every other listener: p50, ms.
    pub bulk_p50_ms: f64,
    /// Same, 99th percentile.
    pub bulk_p99_ms: f64,
    /// Same, worst.
    pub bulk_max_ms: f64,
    /// Payload + framing delivered to healthy listeners, Gbit/s.
    pub delivered_gbps: f64,
    /// Listeners the server counted at the end.
    pub server_listeners: Option<u64>,
    /// Listeners told to stall.
    pub stalled: u64,
    /// Source frames written more than 10 ms late (the server held the source back).
    pub source_late_frames: u64,
    /// The worst source lateness, ms.
    pub source_late_max_ms: f64,
    /// Healthy listeners whose response head announced `icy-metaint`.
    pub icy_listeners: u64,
    /// Non-empty ICY blocks (titles) those listeners received during the hold.
    pub icy_titles: u64,
    /// Titles set during the hold that the server said it applied (ICY scenario).
    pub titles_set: Option<u64>,
    /// TLS version and cipher suite negotiated, over TLS.
    pub tls_suite: Option<String>,
    /// What went wrong in this step (e.g. the server exited).
    pub note: Option<String>,
}

/// Everything a run produced.
#[derive(Serialize, Deserialize, Debug)]
pub struct Results {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub options: serde_json::Value,
    /// 128 kbit/s stream, N listeners.
    pub audio: Vec<Step>,
    /// 10 % of listeners stalled.
    pub stalled: Vec<Step>,
    /// onair alone at one listener count, one step per send window.
    pub window: Vec<Step>,
    /// 4 Mbit/s stream.
    pub video: Vec<Step>,
    /// HTTP listeners on both servers (`/bench.ogg`), onair with its default config.
    #[serde(default)]
    pub http: Vec<Step>,
    /// ICY metadata: Ogg and MP3 HTTP listeners with and without it.
    #[serde(default)]
    pub icy: Vec<Step>,
    /// Plain and TLS listeners on each server.
    #[serde(default)]
    pub tls: Vec<Step>,
    /// onair's LL-HLS clients, then its HTTP listeners at the same counts.
    #[serde(default)]
    pub hls: Vec<Step>,
    /// One loopback TCP connection, 128 KiB writes, measured in the same run.
    pub loopback_gbps: Option<f64>,
    /// Seconds the run took.
    pub duration_s: f64,
    /// Anything that went wrong.
    pub notes: Vec<String>,
}

/// Inputs of one step.
pub struct StepInput<'a> {
    /// Scenario name.
    pub scenario: &'a str,
    /// Server name.
    pub server: &'a str,
    /// Listeners asked for.
    pub n: usize,
    /// Client reports.
    pub reports: &'a [Report],
    /// Frames the source sent in the counted range.
    pub expected_frames: u64,
    /// Seconds of stream per frame.
    pub frame_s: f64,
    /// Seconds held.
    pub secs: f64,
    /// Server CPU-seconds.
    pub server_cpu: f64,
    /// Seconds the server was runnable but not running.
    pub server_wait: f64,
    /// Client CPU-seconds.
    pub client_cpu: f64,
    /// Other processes' CPU-seconds.
    pub others_cpu: f64,
    /// Server RSS, bytes.
    pub rss: u64,
    /// Server RSS before listeners, bytes.
    pub rss_base: u64,
    /// Seconds to connect.
    pub connect_s: f64,
    /// Source frames written late.
    pub source_late: u64,
    /// The worst lateness, ms.
    pub source_late_max_ms: f64,
    /// Listeners the server counts.
    pub server_listeners: Option<u64>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Combines the client reports of a step.
pub fn step(i: StepInput<'_>) -> Step {
    let sum = |f: fn(&Report) -> u64| i.reports.iter().map(f).sum::<u64>();
    let precise = merged(i.reports, true);
    let bulk = merged(i.reports, false);
    let connected = sum(|r| r.streaming);
    let healthy = sum(|r| r.healthy);
    let mut codes: std::collections::BTreeMap<u16, u64> = Default::default();
    for r in i.reports {
        for &(c, k) in &r.close_codes {
            *codes.entry(c).or_default() += k;
        }
    }
    let listener_s = connected.max(1) as f64 * i.secs;
    Step {
        scenario: i.scenario.into(),
        server: i.server.into(),
        listener_kind: String::new(),
        n: i.n,
        send_window_ms: None,
        default_config: false,
        connected,
        connect_s: i.connect_s,
        hold_s: i.secs,
        server_cpu_s: i.server_cpu,
        cpu_per_1000_ls: i.server_cpu / listener_s * 1000.0,
        server_wait_s: i.server_wait,
        cpu_per_1000_delivered: i.server_cpu / (sum(|r| r.frames_any) as f64 * i.frame_s).max(1e-9)
            * 1000.0,
        client_cpu_pct: i.client_cpu / i.secs * 100.0,
        others_cores: i.others_cpu / i.secs,
        rss_mib: i.rss as f64 / 1048576.0,
        rss_base_mib: i.rss_base as f64 / 1048576.0,
        rss_per_listener_kib: i.rss.saturating_sub(i.rss_base) as f64 / i.n.max(1) as f64 / 1024.0,
        expected_frames: i.expected_frames,
        delivered_ratio: sum(|r| r.frames) as f64
            / (i.expected_frames.max(1) * healthy.max(1)) as f64,
        lost_frames: sum(|r| r.lost_frames),
        listeners_lost: sum(|r| r.listeners_lost),
        listeners_behind: sum(|r| r.listeners_behind),
        behind_max: i.reports.iter().map(|r| r.behind_max).max().unwrap_or(0),
        skipped_events: sum(|r| r.skipped_events),
        close_codes: codes.into_iter().collect(),
        p50_ms: ms(precise.quantile(0.5)),
        p99_ms: ms(precise.quantile(0.99)),
        p999_ms: ms(precise.quantile(0.999)),
        max_ms: ms(precise.max()),
        precise_listeners: sum(|r| r.precise),
        samples: precise.count(),
        frames_per_write: precise.count() as f64 / sum(|r| r.precise_reads).max(1) as f64,
        bulk_p50_ms: ms(bulk.quantile(0.5)),
        bulk_p99_ms: ms(bulk.quantile(0.99)),
        bulk_max_ms: ms(bulk.max()),
        delivered_gbps: sum(|r| r.bytes) as f64 * 8.0 / i.secs / 1e9,
        server_listeners: i.server_listeners,
        stalled: sum(|r| r.stalled),
        source_late_frames: i.source_late,
        source_late_max_ms: i.source_late_max_ms,
        icy_listeners: sum(|r| r.icy_listeners),
        icy_titles: sum(|r| r.icy_titles),
        titles_set: None,
        tls_suite: i.reports.iter().find_map(|r| r.tls_suite.clone()),
        note: None,
    }
}

/// A one-line summary for the progress log.
pub fn one_line(s: &Step) -> String {
    format!(
        "[{} {}] {} n={} conn={} cpu={:.3} CPU-s/1000ls ({:.2} s, waited {:.2} s) frames/write={:.2} rss/l={:.2} KiB lat p50={:.1} p99={:.1} max={:.1} ms (bulk p99 {:.1}) lost={} behind={} (max {}) delivered={:.0}% client={:.0}% others={:.2} cores src_late={} (max {:.0} ms) closes={:?} icy={}/{} titles{}",
        s.server,
        s.listener_kind,
        s.scenario,
        s.n,
        s.connected,
        s.cpu_per_1000_ls,
        s.server_cpu_s,
        s.server_wait_s,
        s.frames_per_write,
        s.rss_per_listener_kib,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.bulk_p99_ms,
        s.listeners_lost,
        s.listeners_behind,
        s.behind_max,
        s.delivered_ratio * 100.0,
        s.client_cpu_pct,
        s.others_cores,
        s.source_late_frames,
        s.source_late_max_ms,
        s.close_codes,
        s.icy_listeners,
        s.icy_titles,
        s.titles_set.map_or_else(String::new, |t| format!(" ({t} set)"))
    )
}

/// The server column: onair with the send window its listeners had.
fn server_label(s: &Step) -> String {
    match (s.server.as_str(), s.send_window_ms) {
        ("onair", Some(w)) if s.default_config => format!("onair (default config: {w} ms window)"),
        ("onair", Some(w)) => format!("onair ({w} ms window)"),
        (server, _) => server.to_owned(),
    }
}

fn delivered_cell(s: &Step) -> String {
    if s.cpu_per_1000_delivered < 1e6 {
        format!("{:.3}", s.cpu_per_1000_delivered)
    } else {
        "nothing delivered".into()
    }
}

/// The table of a ladder (audio, http): one row per step, then onair / Icecast ratios.
fn ladder_table(md: &mut String, steps: &[Step]) {
    let _ = writeln!(
        md,
        "| listeners | server | listener kind | CPU-s per 1000 listener-s (per 1000 delivered) | server CPU, waited (s) | KiB per listener | RSS MiB | latency p50 / p99 / max ms | listeners lost | load tool CPU | other load (cores) |"
    );
    let _ = writeln!(
        md,
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for s in steps {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} ({}) | {:.1}, {:.1} | {:.2} | {:.1} | {} | {} | {:.0} % | {:.2} |",
            s.n,
            server_label(s),
            s.listener_kind,
            s.cpu_per_1000_ls,
            delivered_cell(s),
            s.server_cpu_s,
            s.server_wait_s,
            s.rss_per_listener_kib,
            s.rss_mib,
            latency_cell(s),
            lost_cell(s),
            s.client_cpu_pct,
            s.others_cores
        );
    }
    let _ = writeln!(md, "\nRatios onair / Icecast (below 1: onair uses less):\n");
    let _ = writeln!(
        md,
        "| listeners | CPU per listener-s | CPU per delivered listener-s | memory per listener | p99 latency |"
    );
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: |");
    for o in steps.iter().filter(|s| s.server == "onair") {
        if let Some(i) = steps.iter().find(|s| s.server == "icecast" && s.n == o.n) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                o.n,
                ratio(o.cpu_per_1000_ls, i.cpu_per_1000_ls),
                ratio(o.cpu_per_1000_delivered, i.cpu_per_1000_delivered),
                ratio(o.rss_per_listener_kib, i.rss_per_listener_kib),
                if i.samples == 0 { "-".into() } else { ratio(o.p99_ms, i.p99_ms) }
            );
        }
    }
}

/// ICY: what each server announced and delivered, per listener kind.
fn icy_table(md: &mut String, steps: &[Step]) {
    let _ = writeln!(
        md,
        "| listeners | server | listener kind | CPU-s per 1000 listener-s (per 1000 delivered) | KiB per listener | latency p50 / p99 / max ms | listeners lost | icy-metaint in head | titles per listener (set) | load tool CPU | other load (cores) |"
    );
    let _ = writeln!(
        md,
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for s in steps {
        let healthy = s.connected.max(1) as f64;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} ({}) | {:.2} | {} | {} | {} | {:.1} ({}) | {:.0} % | {:.2} |",
            s.n,
            server_label(s),
            s.listener_kind,
            s.cpu_per_1000_ls,
            delivered_cell(s),
            s.rss_per_listener_kib,
            latency_cell(s),
            lost_cell(s),
            if s.icy_listeners > 0 {
                format!("{} listeners", s.icy_listeners)
            } else {
                "no".into()
            },
            s.icy_titles as f64 / healthy,
            s.titles_set.map_or_else(|| "-".into(), |t| t.to_string()),
            s.client_cpu_pct,
            s.others_cores
        );
    }
    let _ =
        writeln!(md, "\nRatios onair / Icecast per listener kind (below 1: onair uses less):\n");
    let _ = writeln!(
        md,
        "| listeners | listener kind | CPU per delivered listener-s | memory per listener | p99 latency |"
    );
    let _ = writeln!(md, "| ---: | --- | ---: | ---: | ---: |");
    for o in steps.iter().filter(|s| s.server == "onair") {
        let twin =
            |s: &&Step| s.server == "icecast" && s.n == o.n && s.listener_kind == o.listener_kind;
        if let Some(i) = steps.iter().find(twin) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                o.n,
                o.listener_kind,
                ratio(o.cpu_per_1000_delivered, i.cpu_per_1000_delivered),
                ratio(o.rss_per_listener_kib, i.rss_per_listener_kib),
                if i.samples == 0 { "-".into() } else { ratio(o.p99_ms, i.p99_ms) }
            );
        }
    }
}

/// TLS: every step, then each TLS kind against the same kind in plain text.
fn tls_table(md: &mut String, steps: &[Step]) {
    let _ = writeln!(
        md,
        "| server | listener kind | listeners | CPU-s per 1000 listener-s (per 1000 delivered) | KiB per listener | latency p50 / p99 / max ms | listeners lost | TLS | load tool CPU | other load (cores) |"
    );
    let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |");
    for s in steps {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.3} ({}) | {:.2} | {} | {} | {} | {:.0} % | {:.2} |",
            server_label(s),
            s.listener_kind,
            s.n,
            s.cpu_per_1000_ls,
            delivered_cell(s),
            s.rss_per_listener_kib,
            latency_cell(s),
            lost_cell(s),
            s.tls_suite.as_deref().unwrap_or("-"),
            s.client_cpu_pct,
            s.others_cores
        );
    }
    let _ = writeln!(
        md,
        "\nTLS against plain, same server, kind and count (issue 12's targets for onair: at most 1.5× the CPU, at most 8 KiB per listener):\n"
    );
    let _ = writeln!(
        md,
        "| server | listeners | kinds | CPU per delivered listener-s, TLS / plain | KiB per listener, plain → TLS | TLS extra KiB per listener |"
    );
    let _ = writeln!(md, "| --- | ---: | --- | ---: | ---: | ---: |");
    let secure =
        |s: &&Step| s.listener_kind.starts_with("https") || s.listener_kind.starts_with("wss");
    for t in steps.iter().filter(secure) {
        let plain_kind = t.listener_kind.replacen("https", "http", 1).replacen("wss", "ws", 1);
        let twin = |s: &&Step| s.server == t.server && s.n == t.n && s.listener_kind == plain_kind;
        if let Some(p) = steps.iter().find(twin) {
            let _ = writeln!(
                md,
                "| {} | {} | {} → {} | {} | {:.2} → {:.2} | {:.2} |",
                t.server,
                t.n,
                p.listener_kind,
                t.listener_kind,
                ratio(t.cpu_per_1000_delivered, p.cpu_per_1000_delivered),
                p.rss_per_listener_kib,
                t.rss_per_listener_kib,
                t.rss_per_listener_kib - p.rss_per_listener_kib
            );
        }
    }
}

/// HLS: every step, then each LL-HLS count against the HTTP listeners at the same count.
fn hls_table(md: &mut String, steps: &[Step]) {
    let _ = writeln!(
        md,
        "| listeners | listener kind | CPU-s per 1000 listener-s (per 1000 delivered) | server CPU (cores) | KiB per listener | RSS MiB | latency p50 / p99 / max ms | listeners lost | counted by onair | load tool CPU | other load (cores) |"
    );
    let _ = writeln!(
        md,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for s in steps {
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} ({}) | {:.3} | {:.2} | {:.1} | {} | {} | {} | {:.0} % | {:.2} |",
            s.n,
            s.listener_kind,
            s.cpu_per_1000_ls,
            delivered_cell(s),
            s.server_cpu_s / s.hold_s.max(1e-9),
            s.rss_per_listener_kib,
            s.rss_mib,
            latency_cell(s),
            lost_cell(s),
            s.server_listeners.map_or_else(|| "?".into(), |n| n.to_string()),
            s.client_cpu_pct,
            s.others_cores
        );
    }
    let _ = writeln!(
        md,
        "
LL-HLS / HTTP at the same count (above 1: an HLS client costs more):
"
    );
    let _ = writeln!(
        md,
        "| listeners | CPU per delivered listener-s | memory per listener | p99 latency |"
    );
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: |");
    for h in steps.iter().filter(|s| s.listener_kind.contains("hls")) {
        let twin = |s: &&Step| s.n == h.n && !s.listener_kind.contains("hls");
        if let Some(p) = steps.iter().find(twin) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                h.n,
                ratio(h.cpu_per_1000_delivered, p.cpu_per_1000_delivered),
                ratio(h.rss_per_listener_kib, p.rss_per_listener_kib),
                if p.samples == 0 { "-".into() } else { ratio(h.p99_ms, p.p99_ms) }
            );
        }
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn latency_cell(s: &Step) -> String {
    if s.samples == 0 {
        return "no frame of the hold arrived".into();
    }
    format!("{:.1} / {:.1} / {:.1}", s.p50_ms, s.p99_ms, s.max_ms)
}

fn lost_cell(s: &Step) -> String {
    let mut cell = format!("{}", s.listeners_lost);
    if s.listeners_behind > 0 {
        let _ = write!(cell, " (+{} behind, up to {} frames)", s.listeners_behind, s.behind_max);
    }
    if s.connected < s.n as u64 {
        let _ = write!(cell, " ({} of {} connected)", s.connected, s.n);
    }
    cell
}

/// The results as Markdown tables.
pub fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## onair vs Icecast\n\nMachine: {}  ", r.machine.summary());
    let placement = match r.options.get("server_cores").and_then(|v| v.as_str()).unwrap_or("0") {
        "all" => "Servers and load clients share all cores (nothing pinned).".to_owned(),
        cores => format!("Server pinned to core {cores}, load clients to the other cores."),
    };
    let _ = writeln!(
        md,
        "Run took {:.0} s. {placement} CPU = utime+stime from /proc over the hold; memory = VmRSS minus the idle RSS, per listener.\n",
        r.duration_s
    );
    if !r.audio.is_empty() {
        let _ = writeln!(
            md,
            "### 128 kbit/s (320 B every 20 ms): onair's WebSocket listeners, Icecast's HTTP listeners\n"
        );
        ladder_table(&mut md, &r.audio);
    }
    if !r.stalled.is_empty() {
        let _ = writeln!(md, "\n### 10 % of listeners stalled (they stop reading)\n");
        let _ = writeln!(
            md,
            "| server | listeners | stalled | healthy latency p50 / p99 / max ms | healthy listeners lost | listeners the server still holds at the end | CPU-s per 1000 listener-s |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for s in &r.stalled {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:.3} |",
                s.server,
                s.n,
                s.stalled,
                latency_cell(s),
                lost_cell(s),
                s.server_listeners.map_or_else(|| "?".into(), |n| n.to_string()),
                s.cpu_per_1000_ls
            );
        }
    }
    if !r.window.is_empty() {
        let n = r.window[0].n;
        let _ = writeln!(md, "\n### onair's send window: {n} listeners of the 128 kbit/s stream\n");
        let _ = writeln!(
            md,
            "| send_window_ms | frames per write | CPU-s per 1000 listener-s | vs no window | latency p50 / p99 / max ms | listeners lost | KiB per listener |"
        );
        let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let base = r.window.iter().find(|s| s.send_window_ms == Some(0)).map(|s| s.cpu_per_1000_ls);
        for s in &r.window {
            let saved = base.map_or_else(
                || "-".into(),
                |b| format!("{:.0} % less CPU", (1.0 - s.cpu_per_1000_ls / b) * 100.0),
            );
            let _ = writeln!(
                md,
                "| {} | {:.2} | {:.3} | {} | {} | {} | {:.2} |",
                s.send_window_ms.unwrap_or(0),
                s.frames_per_write,
                s.cpu_per_1000_ls,
                saved,
                latency_cell(s),
                lost_cell(s),
                s.rss_per_listener_kib
            );
        }
    }
    if !r.video.is_empty() {
        let lo = r.loopback_gbps.unwrap_or(0.0);
        let _ = writeln!(
            md,
            "\n### 4 Mbit/s (20 kB frames, 25 per second); loopback TCP in this run: {lo:.1} Gbit/s\n"
        );
        let _ = writeln!(
            md,
            "| server | listeners | delivered Gbit/s | of loopback | server CPU (cores) | latency p50 / p99 / max ms | listeners lost | load tool CPU |"
        );
        let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for s in &r.video {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.0} % | {:.2} | {} | {} | {:.0} % |",
                s.server,
                s.n,
                s.delivered_gbps,
                if lo > 0.0 { s.delivered_gbps / lo * 100.0 } else { 0.0 },
                s.server_cpu_s / s.hold_s,
                latency_cell(s),
                lost_cell(s),
                s.client_cpu_pct
            );
        }
    }
    if !r.http.is_empty() {
        let _ = writeln!(
            md,
            "\n### HTTP listeners on both: `/bench.ogg`, the same Ogg/Opus source (128 kbit/s, one 320 B packet per 20 ms page) pushed with PUT to each; onair with its default config\n"
        );
        ladder_table(&mut md, &r.http);
    }
    if !r.icy.is_empty() {
        let _ = writeln!(
            md,
            "\n### ICY metadata (`Icy-MetaData: 1`): Ogg/Opus `/bench.ogg`, and MP3 `/bench-mp3.mp3` (128 kbit/s, a 384 B MPEG-1 Layer III frame per 24 ms) without and with it; titles set with `/admin/metadata` during each hold\n"
        );
        icy_table(&mut md, &r.icy);
    }
    if !r.tls.is_empty() {
        let _ = writeln!(
            md,
            "\n### TLS: the same listeners in plain text and over TLS (one self-signed P-256 certificate for both servers; Icecast's own `<ssl>` port)\n"
        );
        tls_table(&mut md, &r.tls);
    }
    if !r.hls.is_empty() {
        let _ = writeln!(
            md,
            "\n### LL-HLS clients and HTTP listeners on onair (default config): the same Ogg/Opus source; each HLS client on one kept-alive connection does a blocking playlist reload and fetches each new 200 ms part (about a playlist and a part per 200 ms, as hls.js in low-latency mode); HTTP listeners read `/bench.ogg`\n"
        );
        hls_table(&mut md, &r.hls);
    }
    let all = [&r.audio, &r.stalled, &r.window, &r.video, &r.http, &r.icy, &r.tls, &r.hls];
    for s in all.into_iter().flatten() {
        if let Some(note) = &s.note {
            let _ = writeln!(
                md,
                "\nNote ({} scenario, {} listeners, {} {}): {note}",
                s.scenario, s.n, s.server, s.listener_kind
            );
        }
    }
    for note in &r.notes {
        let _ = writeln!(md, "\nNote: {note}");
    }
    md
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Writes chart.svg (the audio scenario) and chart-http.svg (the http scenario) when they
/// have steps.
///
/// # Errors
/// When a file cannot be written.
pub fn write_charts(dir: &std::path::Path, r: &Results) -> anyhow::Result<()> {
    if !r.audio.is_empty() {
        let title = "onair vs Icecast 2: one 128 kbit/s stream (320 B every 20 ms), N listeners on loopback; onair: WebSocket listeners, Icecast: HTTP";
        std::fs::write(dir.join("chart.svg"), svg(r, &r.audio, title))?;
    }
    if !r.http.is_empty() {
        let title = "onair vs Icecast 2: HTTP listeners of /bench.ogg on both (128 kbit/s Ogg/Opus, 20 ms pages), onair's default config";
        std::fs::write(dir.join("chart-http.svg"), svg(r, &r.http, title))?;
    }
    Ok(())
}

/// Three panels against listeners (log scale): CPU per delivered listener-second, memory per
/// listener, p99 latency (log scale); onair vs Icecast, over `steps` (one scenario).
pub fn svg(r: &Results, steps: &[Step], title: &str) -> String {
    let (w, h) = (1060.0, 380.0);
    let onair =
        steps.iter().find(|s| s.server == "onair").map_or_else(|| "onair".into(), server_label);
    let placement = match r.options.get("server_cores").and_then(|v| v.as_str()).unwrap_or("0") {
        "all" => "servers and listeners share every core",
        _ => "server on one core, listeners on the other",
    };
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="16" y="22" font-size="14" font-weight="bold">{}</text>
<text x="16" y="40" fill="#555">{}</text>
<rect x="16" y="50" width="12" height="4" fill="#d9480f"/><text x="34" y="56">{}</text>
<rect x="300" y="50" width="12" height="4" fill="#1864ab"/><text x="318" y="56">Icecast {}</text>
<text x="480" y="56" fill="#555">{placement}; a hollow dot: nothing of the hold arrived</text>
"##,
        esc(title),
        esc(&r.machine.summary()),
        esc(&onair),
        esc(r.machine.icecast.trim_start_matches("Icecast "))
    );
    type Metric = fn(&Step) -> Option<f64>;
    let panels: [(&str, Metric, bool); 3] = [
        (
            "server CPU-s per 1000 listener-s delivered",
            |s| (s.cpu_per_1000_delivered < 1e6).then_some(s.cpu_per_1000_delivered),
            false,
        ),
        ("server memory per listener, KiB", |s| Some(s.rss_per_listener_kib), false),
        ("p99 ingest-to-listener latency, ms (log)", |s| (s.samples > 0).then_some(s.p99_ms), true),
    ];
    let ns: Vec<f64> = steps.iter().map(|s| s.n as f64).collect();
    let nmin = ns.iter().copied().fold(f64::MAX, f64::min).min(100.0);
    let nmax = ns.iter().copied().fold(0.0, f64::max).max(1000.0);
    let (pw, ph, top) = (290.0, 230.0, 96.0);
    for (k, (title, metric, log)) in panels.iter().enumerate() {
        let left = 60.0 + k as f64 * (pw + 50.0);
        let values: Vec<f64> = steps.iter().filter_map(metric).filter(|v| v.is_finite()).collect();
        let vmax = values.iter().copied().fold(0.0f64, f64::max);
        let x = |n: f64| left + (n.ln() - nmin.ln()) / (nmax.ln() - nmin.ln()) * pw;
        let (ymax, ticks): (f64, Vec<f64>) = if *log {
            let top_decade = 10f64.powf(vmax.max(10.0).log10().ceil());
            let mut t = vec![1.0];
            while *t.last().unwrap_or(&1.0) < top_decade {
                t.push(t.last().unwrap_or(&1.0) * 10.0);
            }
            (top_decade, t)
        } else {
            let m = nice_ceiling(vmax);
            (m, (0..=4).map(|i| m * f64::from(i) / 4.0).collect())
        };
        let y = |v: f64| {
            let f = if *log { v.max(1.0).log10() / ymax.log10() } else { v / ymax };
            top + ph - f.clamp(0.0, 1.0) * ph
        };
        let _ = writeln!(
            out,
            r##"<text x="{left}" y="{}" font-weight="bold">{}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
            top - 10.0,
            esc(title),
            top + ph,
            left + pw,
            top + ph,
            top + ph
        );
        for v in ticks {
            let _ = writeln!(
                out,
                r##"<line x1="{left}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#eee"/><text x="{2}" y="{3:.1}" text-anchor="end" fill="#555">{4}</text>"##,
                y(v),
                left + pw,
                left - 4.0,
                y(v) + 4.0,
                fmt_tick(v)
            );
        }
        for n in [100.0, 1000.0, 10_000.0, 100_000.0] {
            if n >= nmin && n <= nmax {
                let _ = writeln!(
                    out,
                    r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
                    x(n),
                    top + ph + 16.0,
                    if n >= 1000.0 { format!("{}k", n / 1000.0) } else { format!("{n}") }
                );
            }
        }
        for (server, color) in [("onair", "#d9480f"), ("icecast", "#1864ab")] {
            let mine: Vec<&Step> = steps.iter().filter(|s| s.server == server).collect();
            let pts: Vec<(f64, f64)> =
                mine.iter().filter_map(|s| Some((x(s.n as f64), y(metric(s)?)))).collect();
            let path: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let _ = writeln!(
                out,
                r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
                path.join(" ")
            );
            for s in mine {
                match metric(s) {
                    Some(v) => {
                        let _ = writeln!(
                            out,
                            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"##,
                            x(s.n as f64),
                            y(v)
                        );
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            r##"<circle cx="{:.1}" cy="{top}" r="4" fill="#fff" stroke="{color}" stroke-width="2"/>"##,
                            x(s.n as f64)
                        );
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">listeners (log scale)</text>"##,
            left + pw / 2.0,
            top + ph + 32.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 10_000.0 {
        format!("{}k", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
