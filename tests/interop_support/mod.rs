//! Real broadcaster tools and players driven against a relay on 127.0.0.1:0, for reuse by any
//! test: push a tone with liquidsoap, ezstream, darkice or ffmpeg; decode N seconds of a URL
//! with ffmpeg, mpv, VLC or GStreamer into PCM; check the tone (Goertzel); watch the titles and
//! source events a WebSocket or ICY listener sees.
//!
//! Every process runs under a kill-on-drop guard (`Tool`) with its output in a per-test
//! `WorkDir`; waits poll something observable with a bound. VLC (which refuses root) runs as
//! `nobody` when the tests run as root. The Debian packages come from `make deps-test`.
#![allow(dead_code)]

use std::f64::consts::PI;
use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use onair::protocol::{ListenerEvent, Metadata, SourceState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{connect, http_get, TestRelay};

/// Sample rate every player's output is converted to.
pub const RATE: u32 = 48_000;
/// How often the helpers poll what they wait for.
const POLL: Duration = Duration::from_millis(25);
/// Time a tool gets to go live. liquidsoap type-checks its standard library first: 2.5 s of
/// CPU here, several times that while other builds and tests share the two cores.
pub const LIVE_WITHIN: Duration = Duration::from_secs(45);
/// Time a player gets beyond the seconds it decodes (start-up, connecting, buffering).
const PLAYER_SLACK: Duration = Duration::from_secs(20);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A scratch directory for one test's files, removed when dropped.
pub struct WorkDir(PathBuf);

impl WorkDir {
    /// A fresh directory named after `label`.
    pub fn new(label: &str) -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("onair-interop-{}-{n}-{label}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create work dir");
        // Tools that run as another user reach their own subdirectory through this one.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        WorkDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` with `mode`; returns the path.
    pub fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.file(name);
        std::fs::write(&path, text).expect("write work file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    /// A subdirectory that `user` (uid, gid) owns, for a tool that runs as that user.
    pub fn owned_by(&self, name: &str, user: Option<(u32, u32)>) -> PathBuf {
        let path = self.file(name);
        std::fs::create_dir_all(&path).expect("create subdir");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown subdir");
        }
        path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The user tools that refuse root run as: `nobody` when this process is root, else none.
pub fn unprivileged_user() -> Option<(u32, u32)> {
    let euid = std::fs::metadata("/proc/self").expect("stat /proc/self").uid();
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let entry = passwd.lines().find(|l| l.starts_with("nobody:")).expect("a nobody user");
    let fields: Vec<&str> = entry.split(':').collect();
    Some((fields[2].parse().expect("uid"), fields[3].parse().expect("gid")))
}

/// An external process, killed and reaped when dropped; stdout and stderr go to files.
pub struct Tool {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Tool {
    /// Starts `command` (stdin empty unless the command sets it), output in `dir` as `name.*`.
    pub fn spawn(dir: &WorkDir, name: &str, mut command: Command) -> Tool {
        let stdout = dir.file(&format!("{name}.stdout"));
        let stderr = dir.file(&format!("{name}.stderr"));
        let label = format!("{command:?}");
        let child = command
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {label} (is it installed?): {err}"));
        Tool { child, label, stdout, stderr }
    }

    /// A command for `program` with its stdin closed.
    pub fn command(program: &str) -> Command {
        let mut command = Command::new(program);
        command.stdin(Stdio::null());
        command
    }

    /// What it printed so far, stdout then stderr.
    pub fn output(&self) -> String {
        let mut text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(&self.stderr).unwrap_or_default());
        text
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asserts it is still running, with its output when it is not.
    pub fn assert_running(&mut self) {
        assert!(self.running(), "{} exited early:\n{}", self.label, self.output());
    }

    /// Waits for it to exit, failing the test after `limit`.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish in {limit:?}:\n{}",
                self.label,
                self.output()
            );
            sleep(POLL).await;
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills it now (dropping does the same).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` until it returns `Some`, failing with `what()` after `limit`.
pub async fn poll_until<T>(
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
    what: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "after {limit:?}: {}", what());
        sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// PCM and tone analysis

/// Decoded audio: interleaved samples in [-1, 1].
#[derive(Debug, Clone, Default)]
pub struct Pcm {
    /// Frames per second.
    pub rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Samples, interleaved.
    pub samples: Vec<f32>,
}

impl Pcm {
    /// Signed 16-bit little-endian interleaved samples.
    pub fn from_s16le(bytes: &[u8], rate: u32, channels: u16) -> Self {
        let samples =
            bytes.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0);
        Pcm { rate, channels, samples: samples.collect() }
    }

    /// A WAV file: PCM 16/24/32-bit or float 32-bit, plain or `WAVE_FORMAT_EXTENSIBLE`. A data
    /// size that was never filled in (a writer that was stopped) means "to the end".
    pub fn from_wav(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
            return Err(format!("not a WAV file ({} bytes)", bytes.len()));
        }
        let (mut at, mut format) = (12, None);
        while at + 8 <= bytes.len() {
            let id = &bytes[at..at + 4];
            let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
            let body = at + 8;
            let end = body.saturating_add(size as usize);
            if id == b"fmt " {
                let f = bytes.get(body..body + 16).ok_or("short fmt chunk")?;
                let mut tag = u16::from_le_bytes([f[0], f[1]]);
                if tag == 0xFFFE {
                    let sub = bytes.get(body + 24..body + 26).ok_or("short extensible fmt")?;
                    tag = u16::from_le_bytes([sub[0], sub[1]]);
                }
                let channels = u16::from_le_bytes([f[2], f[3]]);
                let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
                let bits = u16::from_le_bytes([f[14], f[15]]);
                format = Some((tag, channels, rate, bits));
            } else if id == b"data" {
                let (tag, channels, rate, bits) = format.ok_or("data before fmt")?;
                let end = if size == 0 || end > bytes.len() { bytes.len() } else { end };
                let data = &bytes[body..end];
                let samples: Vec<f32> = match (tag, bits) {
                    (1, 16) => return Ok(Pcm::from_s16le(data, rate, channels)),
                    (1, 24) => data
                        .chunks_exact(3)
                        .map(|b| {
                            (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0
                        })
                        .collect(),
                    (1, 32) => data
                        .chunks_exact(4)
                        .map(|b| {
                            i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0
                        })
                        .collect(),
                    (3, 32) => data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                    other => return Err(format!("unsupported WAV format {other:?}")),
                };
                return Ok(Pcm { rate, channels, samples });
            }
            at = end + (size as usize & 1);
        }
        Err("no data chunk".into())
    }

    /// Frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// Duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.frames() as f64 / f64::from(self.rate.max(1))
    }

    /// One channel's samples.
    pub fn channel(&self, index: u16) -> Vec<f32> {
        let n = usize::from(self.channels.max(1));
        self.samples.iter().skip(usize::from(index)).step_by(n).copied().collect()
    }

    /// The part from `from` to `to` seconds (clamped).
    pub fn slice(&self, from: f64, to: f64) -> Pcm {
        let n = usize::from(self.channels.max(1));
        let at = |s: f64| ((s.max(0.0) * f64::from(self.rate)) as usize).min(self.frames()) * n;
        Pcm {
            rate: self.rate,
            channels: self.channels,
            samples: self.samples[at(from)..at(to)].to_vec(),
        }
    }

    /// RMS of channel 0.
    pub fn rms(&self) -> f64 {
        rms(&self.channel(0))
    }

    /// The frequency (1 Hz resolution, 40..8000 Hz) with the most power in channel 0.
    pub fn dominant_frequency(&self) -> f64 {
        dominant_frequency(&self.channel(0), self.rate)
    }

    /// Share of channel 0's power at `freq` (about 1 for a pure tone, 0 for none of it).
    pub fn tone_purity(&self, freq: f64) -> f64 {
        tone_purity(&self.channel(0), self.rate, freq)
    }

    /// Dropouts in channel 0: runs of 10 ms windows under half the overall level, as
    /// (start, length) in seconds.
    pub fn dropouts(&self) -> Vec<(f64, f64)> {
        let x = self.channel(0);
        let overall = rms(&x);
        let window = (self.rate / 100) as usize;
        let mut runs: Vec<(f64, f64)> = Vec::new();
        let mut previous_low = false;
        for (i, w) in x.chunks_exact(window.max(1)).enumerate() {
            let low = rms(w) < overall * 0.5;
            match runs.last_mut() {
                Some(run) if low && previous_low => run.1 += 0.01,
                _ if low => runs.push((i as f64 / 100.0, 0.01)),
                _ => {}
            }
            previous_low = low;
        }
        runs
    }

    /// Dominant frequency of each `window`-second piece of channel 0, in order.
    pub fn frequencies(&self, window: f64) -> Vec<f64> {
        let x = self.channel(0);
        let len = ((window * f64::from(self.rate)) as usize).max(1);
        x.chunks_exact(len).map(|w| dominant_frequency(w, self.rate)).collect()
    }
}

/// Power of `freq` in `x` (Goertzel), normalised so a sine of amplitude `a` gives about `a²/4`.
pub fn goertzel(x: &[f32], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (x.len().max(1) as f64).powi(2)
}

/// Root mean square.
pub fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// Share of `x`'s whole power at `freq`: Goertzel power over half the mean power (a pure sine
/// → ~1; noise, clicks or any other sound lower it). `common::tone_share` compares `freq` with
/// the other test tones only.
pub fn tone_purity(x: &[f32], rate: u32, freq: f64) -> f64 {
    let power = rms(x).powi(2) / 2.0;
    if power == 0.0 {
        return 0.0;
    }
    goertzel(x, rate, freq) / power
}

/// The strongest frequency in `x`: a 10 Hz scan of 40..8000 Hz over at most a second, then
/// 1 Hz steps around the best.
pub fn dominant_frequency(x: &[f32], rate: u32) -> f64 {
    let x = &x[..x.len().min(rate as usize)];
    let best = |freqs: &mut dyn Iterator<Item = f64>| {
        freqs
            .map(|f| (f, goertzel(x, rate, f)))
            .fold((0.0, -1.0), |a, b| if b.1 > a.1 { b } else { a })
            .0
    };
    let coarse = best(&mut (4..800).map(|i| f64::from(i) * 10.0));
    best(&mut (-10..=10).map(|d| coarse + f64::from(d)))
}

/// Asserts that `pcm` (after its first 0.2 s) is a steady `freq` tone: that frequency
/// dominates, no 10 ms window drops below half the level (a dropout), and every 100 ms
/// window holds the tone (no other sound, no broken-up signal).
pub fn assert_tone(pcm: &Pcm, freq: f64, what: &str) {
    assert_tone_with_seams(pcm, freq, 0, Duration::ZERO, what);
}

/// `assert_tone`, except that up to `jumps` of the 100 ms windows may hold a jump in the tone's
/// phase, without a dropout: where liquidsoap starts a new chained Vorbis link, ffmpeg 5.1 plays
/// 128 samples more than libvorbisfile (2.9 ms at 44.1 kHz), from liquidsoap's own files too.
pub fn assert_tone_with_phase_jumps(pcm: &Pcm, freq: f64, jumps: usize, what: &str) {
    assert_tone_checked(pcm, freq, 0, Duration::ZERO, jumps, what);
}

/// `assert_tone`, except that up to `seams` dropouts of at most `longest` each are allowed;
/// the 100 ms windows around them are not checked for the tone.
pub fn assert_tone_with_seams(pcm: &Pcm, freq: f64, seams: usize, longest: Duration, what: &str) {
    assert_tone_checked(pcm, freq, seams, longest, 0, what);
}

fn assert_tone_checked(
    pcm: &Pcm,
    freq: f64,
    seams: usize,
    longest: Duration,
    jumps: usize,
    what: &str,
) {
    let steady = pcm.slice(0.2, pcm.seconds() - 0.05);
    assert!(steady.seconds() >= 0.9, "{what}: only {:.2} s of audio", pcm.seconds());
    let found = steady.dominant_frequency();
    assert!((found - freq).abs() <= 3.0, "{what}: dominant {found} Hz, want {freq} Hz");
    let x = steady.channel(0);
    let overall = rms(&x);
    assert!(overall > 0.01, "{what}: near silence (rms {overall:.4})");
    let dropouts = steady.dropouts();
    let at = |s: f64| 0.2 + s;
    assert!(
        dropouts.len() <= seams && dropouts.iter().all(|d| d.1 <= longest.as_secs_f64()),
        "{what}: dropouts (start s, length s) {:?}, at most {seams} of {longest:?} allowed",
        dropouts.iter().map(|d| (at(d.0), d.1)).collect::<Vec<_>>()
    );
    let long = (steady.rate / 10) as usize;
    let mut jumped = Vec::new();
    for (i, w) in x.chunks_exact(long).enumerate() {
        let (from, to) = (i as f64 / 10.0, (i + 1) as f64 / 10.0);
        if dropouts.iter().any(|d| d.0 < to + 0.05 && d.0 + d.1 > from - 0.05) {
            continue;
        }
        let share = tone_purity(w, steady.rate, freq);
        if share <= 0.8 && jumped.len() < jumps {
            jumped.push((at(from), share));
            continue;
        }
        assert!(
            share > 0.8,
            "{what}: {:.1} s in: {freq} Hz share {share:.2} (phase jumps allowed: {jumped:?})",
            at(from)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Players

/// A player that decodes a URL into PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Player {
    /// `ffmpeg -i URL` to s16le (asks for ICY metadata).
    Ffmpeg,
    /// `mpv --ao=pcm` (ffmpeg's HTTP client inside: asks for ICY).
    Mpv,
    /// `cvlc` with `--sout` transcoding to a WAV file, as an ordinary user (asks for ICY);
    /// stopped once it has written enough.
    Vlc,
    /// `gst-launch-1.0 playbin` with a sink writing raw PCM (souphttpsrc asks for ICY).
    GstPlaybin,
    /// `gst-launch-1.0 uridecodebin ! audioconvert ! audioresample ! filesink`.
    GstUridecodebin,
}

/// What a player produced.
#[derive(Debug)]
pub struct Playback {
    /// The decoded audio, 48 kHz.
    pub pcm: Pcm,
    /// The ICY titles the player reported, in order: every `StreamTitle` block that changed
    /// the title (ffmpeg, mpv, VLC) or every tag message (GStreamer).
    pub titles: Vec<String>,
    /// Its log.
    pub log: String,
}

/// The audio of a byte stream of WAV files back to back (VLC's output reopened at each new
/// elementary stream), as one piece at the first header's rate; every header must agree.
fn wav_segments(bytes: &[u8]) -> Pcm {
    let starts: Vec<usize> = bytes
        .windows(12)
        .enumerate()
        .filter(|(_, w)| &w[..4] == b"RIFF" && &w[8..12] == b"WAVE")
        .map(|(at, _)| at)
        .collect();
    assert!(starts.first() == Some(&0), "VLC's output starts with a WAV header");
    let mut data = Vec::with_capacity(bytes.len());
    let mut format = None;
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(bytes.len());
        let piece = Pcm::from_wav(&bytes[start..end]).expect("a WAV header VLC wrote");
        let this = (piece.rate, piece.channels);
        assert!(format.is_none_or(|f| f == this), "VLC changed its output format");
        format = Some(this);
        data.extend_from_slice(&bytes[(start + 44).min(end)..end]);
    }
    let (rate, channels) = format.expect("one header");
    Pcm::from_s16le(&data, rate, channels)
}

/// Decodes `seconds` of `url` with `player`, from wherever the stream is when it connects.
/// Fails the test if the player fails, logs a decode error, or gives less than 80 % of
/// `seconds`.
pub async fn play(player: Player, url: &str, seconds: f64) -> Playback {
    let dir = WorkDir::new("player");
    let limit = Duration::from_secs_f64(seconds) + PLAYER_SLACK;
    let secs = format!("{seconds}");
    let playback = match player {
        Player::Ffmpeg => {
            let out = dir.file("out.raw");
            let mut command = Tool::command("ffmpeg");
            // `verbose` is the level of ffmpeg's "Metadata update for StreamTitle" lines.
            command.args(["-hide_banner", "-nostdin", "-loglevel", "level+verbose", "-i", url]);
            command.args(["-t", &secs, "-f", "s16le", "-ac", "2", "-ar", "48000", "-y"]).arg(&out);
            let mut tool = Tool::spawn(&dir, "ffmpeg", command);
            let status = tool.wait(limit).await;
            let log = tool.output();
            let errors: Vec<&str> = log
                .lines()
                .filter(|l| {
                    ["[warning]", "[error]", "[fatal]", "[panic]"].iter().any(|e| l.contains(e))
                })
                .collect();
            assert!(
                status.success() && errors.is_empty(),
                "ffmpeg on {url}: {status}\n{errors:#?}"
            );
            let pcm = Pcm::from_s16le(&std::fs::read(&out).expect("ffmpeg output"), RATE, 2);
            Playback { pcm, titles: icy_updates(&log), log }
        }
        Player::Mpv => {
            let out = dir.file("out.wav");
            let log_file = dir.file("mpv.log");
            let mut command = Tool::command("mpv");
            command.args(["--no-config", "--no-video", "--no-terminal", url]);
            command.arg(format!("--length={secs}"));
            command.args(["--ao=pcm", "--audio-format=s16", "--audio-samplerate=48000"]);
            command
                .args(["--audio-channels=stereo"])
                .arg(format!("--ao-pcm-file={}", out.display()));
            // The log file has every module at debug level, ffmpeg's HTTP client included.
            command.arg(format!("--log-file={}", log_file.display()));
            let mut tool = Tool::spawn(&dir, "mpv", command);
            let status = tool.wait(limit).await;
            let log = std::fs::read_to_string(&log_file).unwrap_or_default();
            let errors: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("][e][") || l.contains("][w]["))
                // A new chained Ogg stream restarts its timeline: mpv says so and plays on.
                .filter(|l| !l.contains("Linearizing discontinuity"))
                .collect();
            assert!(status.success() && errors.is_empty(), "mpv on {url}: {status}\n{errors:#?}");
            let wav = std::fs::read(&out).expect("mpv output");
            Playback { pcm: Pcm::from_wav(&wav).expect("mpv WAV"), titles: icy_updates(&log), log }
        }
        Player::Vlc => {
            let user = unprivileged_user();
            let home = dir.owned_by("vlc", user);
            // VLC plays through its audio output (`afile`: raw s16 to a file), as a listener's
            // VLC would, so a chained stream's new elementary stream restarts the output and
            // playback goes on (a `--sout` WAV mux refuses a new stream). The file is a FIFO
            // read here: a restarted output reopens it without losing what came before.
            let fifo = home.join("audio.fifo");
            let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
            assert!(status.success(), "mkfifo {}", fifo.display());
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(&fifo, Some(uid), Some(gid)).expect("chown the FIFO");
            }
            // Each (re)opening of the output writes a WAV header, then the audio.
            let want = (seconds * f64::from(RATE)) as usize * 4 + 44;
            let reader = {
                use std::os::unix::fs::OpenOptionsExt;
                // Open for reading and writing: the FIFO never reports the end while VLC
                // closes and reopens it. Non-blocking, so the reader gives up in time.
                let fifo = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&fifo);
                let mut fifo = fifo.expect("open the FIFO");
                let deadline = Instant::now() + limit;
                std::thread::spawn(move || {
                    use std::io::Read;
                    let mut pcm = Vec::with_capacity(want);
                    let mut chunk = vec![0u8; 64 << 10];
                    while pcm.len() < want && Instant::now() < deadline {
                        match fifo.read(&mut chunk) {
                            Ok(n) => pcm.extend_from_slice(&chunk[..n]),
                            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            Err(_) => break,
                        }
                    }
                    pcm
                })
            };
            let mut command = Tool::command("cvlc");
            command.args(["-I", "dummy", "--no-video", "-vv", "--aout=afile"]);
            command.arg(format!("--audiofile-file={}", fifo.display()));
            command.args(["--audiofile-format=s16", "--audiofile-channels=2", "--audiofile-wav"]);
            command.arg(url);
            command.env("HOME", &home);
            if let Some((uid, gid)) = user {
                command.uid(uid).gid(gid);
            }
            let mut tool = Tool::spawn(&dir, "vlc", command);
            // NOTE: not `--run-time`: it counts from the first Ogg timestamp VLC sees, and a
            // listener that joins mid-stream (Icecast 2.4.4's too) gets the headers at 0 and
            // then pages seconds later, so VLC stops after a fraction of the time. Stop it
            // once enough audio came out instead.
            poll_until(
                limit,
                || (reader.is_finished() || !tool.running()).then_some(()),
                || format!("VLC on {url} played too little"),
            )
            .await;
            let exited = !tool.running();
            tool.stop();
            let bytes = reader.join().expect("the FIFO reader");
            let log = tool.output();
            // The dummy set-up has no D-Bus, no hotkeys and no sound card: those modules fail
            // to load, which says nothing about the stream. A FIFO cannot seek, and VLC logs
            // its buffering at the start of a live stream as an error.
            let errors: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(" error: ") || l.contains(" error:\t"))
                .filter(|l| !l.contains("interface") && !l.contains("audio output"))
                .filter(|l| !l.contains("is called too late"))
                .collect();
            assert!(!exited && errors.is_empty(), "VLC on {url} (exited: {exited}):\n{errors:#?}");
            let titles = log
                .lines()
                .filter_map(|l| l.split_once("New Icy-Title=").map(|(_, t)| t.trim().to_owned()))
                .collect();
            let pcm = wav_segments(&bytes).slice(0.0, seconds);
            Playback { pcm, titles, log }
        }
        Player::GstPlaybin | Player::GstUridecodebin => {
            let out = dir.file("out.raw");
            let sink = format!(
                "audioconvert ! audioresample ! audio/x-raw,format=S16LE,channels=2,rate=48000 ! filesink location={}",
                out.display()
            );
            let mut command = Tool::command("gst-launch-1.0");
            command.arg("-t");
            if player == Player::GstPlaybin {
                command.args(["playbin", &format!("uri={url}"), "video-sink=fakesink"]);
                command.arg(format!("audio-sink={sink}"));
            } else {
                command.args(["uridecodebin", &format!("uri={url}"), "!"]);
                command.args(sink.split(' '));
            }
            let mut tool = Tool::spawn(&dir, "gst", command);
            // gst-launch plays until the stream ends: stop it once it has written enough.
            let want = (seconds * f64::from(RATE)) as u64 * 4;
            poll_until(
                limit,
                || {
                    let size = std::fs::metadata(&out).map_or(0, |m| m.len());
                    (size >= want || !tool.running()).then_some(())
                },
                || format!("GStreamer on {url} wrote too little"),
            )
            .await;
            let exited = !tool.running();
            tool.stop();
            let log = tool.output();
            let errors: Vec<&str> = log
                .lines()
                .filter(|l| l.starts_with("ERROR") || l.starts_with("WARNING"))
                .collect();
            assert!(!exited && errors.is_empty(), "GStreamer on {url} (exited: {exited}):\n{log}");
            let titles = log
                .lines()
                .filter_map(|l| l.trim().strip_prefix("title: ").map(str::to_owned))
                .collect();
            let raw = std::fs::read(&out).expect("GStreamer output");
            let raw = &raw[..raw.len().min(want as usize)];
            Playback { pcm: Pcm::from_s16le(raw, RATE, 2), titles, log }
        }
    };
    // VLC plays at the stream's own rate (44.1 kHz MP3); the others resample to `RATE`.
    assert!(matches!(playback.pcm.rate, 44_100 | RATE), "{player:?} output rate");
    assert!(
        playback.pcm.seconds() >= seconds * 0.8,
        "{player:?} on {url}: {:.2} s decoded, asked for {seconds} s",
        playback.pcm.seconds()
    );
    playback
}

/// The titles in ffmpeg's "Metadata update for StreamTitle: ..." lines (ffmpeg and mpv).
fn icy_updates(log: &str) -> Vec<String> {
    let mut titles: Vec<String> = Vec::new();
    for line in log.lines() {
        if let Some((_, title)) = line.split_once("Metadata update for StreamTitle: ") {
            titles.push(title.trim().to_owned());
        }
    }
    titles
}

/// Decodes container bytes (e.g. what a test's own HTTP listener read) with ffmpeg from stdin:
/// returns the PCM (48 kHz stereo) and ffmpeg's error log (empty when it decoded cleanly).
pub async fn decode_bytes(bytes: &[u8]) -> (Pcm, String) {
    let dir = WorkDir::new("decode");
    let input = dir.file("in.bin");
    std::fs::write(&input, bytes).expect("write input");
    let out = dir.file("out.raw");
    let mut command = Tool::command("ffmpeg");
    command.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"]).arg(&input);
    command.args(["-f", "s16le", "-ac", "2", "-ar", "48000", "-y"]).arg(&out);
    let mut tool = Tool::spawn(&dir, "ffmpeg", command);
    tool.wait(PLAYER_SLACK).await;
    let pcm = Pcm::from_s16le(&std::fs::read(&out).unwrap_or_default(), RATE, 2);
    (pcm, tool.output())
}

// ---------------------------------------------------------------------------------------------
// Sources

/// The codecs broadcaster tools push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Ogg/Opus.
    Opus,
    /// Ogg/Vorbis.
    Vorbis,
    /// MP3.
    Mp3,
}

impl Codec {
    /// The mount for stream `name`: `/name.ogg` or `/name.mp3`.
    pub fn mount(self, name: &str) -> String {
        match self {
            Codec::Mp3 => format!("/{name}.mp3"),
            _ => format!("/{name}.ogg"),
        }
    }

    /// The sample rate the tools encode at (Opus is always 48 kHz).
    pub fn rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            _ => 44_100,
        }
    }
}

/// liquidsoap pushing a sine of `freq` Hz to `mount` with `codec`. It sets the title
/// `Song 1` at once, then `Song 2`, `Song 3`... every `every` (artist `Liquidsoap`): for Ogg
/// each change starts a new chained stream, for MP3 it is an `/admin/metadata` request.
pub fn liquidsoap(
    dir: &WorkDir,
    addr: SocketAddr,
    mount: &str,
    key: &str,
    codec: Codec,
    freq: u32,
    every: Duration,
) -> Tool {
    let format = match codec {
        Codec::Opus => "%opus(bitrate=96, samplerate=48000, channels=2)",
        Codec::Vorbis => "%vorbis(samplerate=44100, channels=2, quality=0.3)",
        Codec::Mp3 => "%mp3(bitrate=128, samplerate=44100, stereo=true)",
    };
    let script = format!(
        r#"settings.init.allow_root.set(true)
settings.log.stdout.set(true)
settings.log.file.set(false)
settings.log.level.set(3)
s = insert_metadata(sine(amplitude=0.5, {freq}.))
n = ref(0)
def next_title() =
  n := !n + 1
  s.insert_metadata([("artist", "Liquidsoap"), ("title", "Song #{{!n}}")])
  {every:.3}
end
thread.run.recurrent(delay=0., next_title)
output.icecast({format}, host="{host}", port={port}, password="{key}", mount="{mount}", s)
"#,
        every = every.as_secs_f64(),
        host = addr.ip(),
        port = addr.port(),
    );
    let path = dir.write("source.liq", &script, 0o600);
    let mut command = Tool::command("liquidsoap");
    command.arg(path);
    Tool::spawn(dir, "liquidsoap", command)
}

/// The display title liquidsoap's `n`th track gets (see `liquidsoap`).
pub fn liquidsoap_title(n: u32) -> String {
    format!("Liquidsoap - Song {n}")
}

/// Makes a `seconds`-long file of a `freq` Hz sine in `codec`, tagged with title and artist.
pub async fn tone_file(
    dir: &WorkDir,
    name: &str,
    codec: Codec,
    freq: u32,
    seconds: u32,
    title: &str,
    artist: &str,
) -> PathBuf {
    let path = dir.file(name);
    let encoder: &[&str] = match codec {
        Codec::Opus => &["-c:a", "libopus", "-b:a", "96k", "-f", "ogg"],
        Codec::Vorbis => &["-c:a", "libvorbis", "-q:a", "3", "-f", "ogg"],
        Codec::Mp3 => &["-c:a", "libmp3lame", "-b:a", "128k", "-id3v2_version", "3", "-f", "mp3"],
    };
    let input = format!("sine=frequency={freq}:sample_rate={}:duration={seconds}", codec.rate());
    let mut command = Tool::command("ffmpeg");
    command.args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", &input]);
    command.args(["-ac", "2"]).args(encoder);
    command.args([
        "-metadata",
        &format!("title={title}"),
        "-metadata",
        &format!("artist={artist}"),
    ]);
    command.arg(&path);
    let mut tool = Tool::spawn(dir, &format!("make-{name}"), command);
    let status = tool.wait(PLAYER_SLACK).await;
    assert!(status.success(), "making {name}: {}", tool.output());
    path
}

/// ezstream playing `files` once each, in order, to `mount` (`Codec::Mp3` or an Ogg codec),
/// with libshout's default TLS mode (it probes with `OPTIONS *` first) unless `plain`.
pub fn ezstream(
    dir: &WorkDir,
    addr: SocketAddr,
    mount: &str,
    key: &str,
    codec: Codec,
    files: &[PathBuf],
    plain: bool,
) -> Tool {
    let mut playlist = String::new();
    for file in files {
        let _ = writeln!(playlist, "{}", file.display());
    }
    let playlist = dir.write("playlist.m3u", &playlist, 0o600);
    let format = if codec == Codec::Mp3 { "MP3" } else { "Ogg" };
    let tls = if plain { "<tls>None</tls>" } else { "" };
    let config = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ezstream>
  <servers><server>
    <hostname>{host}</hostname><port>{port}</port><user>source</user><password>{key}</password>{tls}
  </server></servers>
  <streams><stream>
    <mountpoint>{mount}</mountpoint><format>{format}</format><stream_name>ezstream test</stream_name>
  </stream></streams>
  <intakes><intake>
    <type>playlist</type><filename>{playlist}</filename><stream_once>Yes</stream_once>
  </intake></intakes>
</ezstream>
"#,
        host = addr.ip(),
        port = addr.port(),
        playlist = playlist.display(),
    );
    // ezstream refuses a config that others can read or write.
    let config = dir.write("ezstream.xml", &config, 0o600);
    let mut command = Tool::command("ezstream");
    command.arg("-v").arg("-c").arg(config);
    Tool::spawn(dir, "ezstream", command)
}

/// darkice capturing from an ALSA device that plays a `freq` Hz sine (48 kHz) and pushing
/// it to several mounts at once, one encoder each. The device is ALSA's `file` plugin over the
/// `null` plugin, reading its capture data from a FIFO that ffmpeg fills in real time (`null`
/// alone is not paced).
pub struct Darkice {
    /// darkice itself.
    pub darkice: Tool,
    /// ffmpeg writing the tone into the capture FIFO.
    pub feeder: Tool,
}

impl Darkice {
    /// Starts both; darkice pushes `outputs` (codec, mount) until it is stopped.
    pub fn start(
        dir: &WorkDir,
        addr: SocketAddr,
        key: &str,
        outputs: &[(Codec, &str)],
        freq: u32,
    ) -> Darkice {
        let (fifo, feeder) = tone_fifo(dir, "capture.fifo", freq, 48_000);
        let asoundrc = format!(
            "pcm.tone {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n}}\n",
            fifo.display()
        );
        dir.write(".asoundrc", &asoundrc, 0o600);
        let mut config = String::from(
            "[general]\nduration = 0\nbufferSecs = 1\nreconnect = no\nrealtime = no\n\n\
             [input]\ndevice = tone\nsampleRate = 48000\nbitsPerSample = 16\nchannel = 2\n",
        );
        for (i, (codec, mount)) in outputs.iter().enumerate() {
            let format = match codec {
                Codec::Opus => "opus",
                Codec::Vorbis => "vorbis",
                Codec::Mp3 => "mp3",
            };
            let _ = write!(
                config,
                "\n[icecast2-{i}]\nbitrateMode = cbr\nformat = {format}\nbitrate = 128\n\
                 sampleRate = 48000\nserver = {host}\nport = {port}\npassword = {key}\n\
                 mountPoint = {mount}\nname = darkice test\n",
                host = addr.ip(),
                port = addr.port(),
                mount = mount.trim_start_matches('/'),
            );
        }
        let config = dir.write("darkice.cfg", &config, 0o600);
        let mut command = Tool::command("darkice");
        // ALSA reads ~/.asoundrc: the test's device definition, nothing of the machine's.
        command.arg("-c").arg(config).env("HOME", dir.path());
        let darkice = Tool::spawn(dir, "darkice", command);
        Darkice { darkice, feeder }
    }
}

/// ffmpeg writing a `freq` Hz sine (s16le, stereo, `rate`) into a new FIFO `name` in real
/// time: a capture device or stdin for tools that read raw PCM unpaced.
fn tone_fifo(dir: &WorkDir, name: &str, freq: u32, rate: u32) -> (PathBuf, Tool) {
    let fifo = dir.file(name);
    let status = Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    let input = format!("sine=frequency={freq}:sample_rate={rate}");
    let mut feeder = Tool::command("ffmpeg");
    feeder.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi"]);
    feeder.args(["-i", &input, "-ac", "2", "-f", "s16le", "-y"]).arg(&fifo);
    let feeder = Tool::spawn(dir, &format!("feeder-{name}"), feeder);
    (fifo, feeder)
}

/// ices2 (libshout) encoding Ogg Vorbis from raw PCM on its stdin (`stdinpcm`), a `freq` Hz
/// sine written in real time into a FIFO. Titles come from a file it reads on SIGUSR1; each
/// one starts a new chained Ogg stream.
pub struct Ices {
    /// ices2 itself.
    pub ices: Tool,
    /// ffmpeg writing the tone into the FIFO.
    pub feeder: Tool,
    metadata: PathBuf,
}

impl Ices {
    /// Starts both; ices2 connects at once.
    pub fn start(dir: &WorkDir, addr: SocketAddr, mount: &str, key: &str, freq: u32) -> Ices {
        let (fifo, feeder) = tone_fifo(dir, "ices.fifo", freq, 44_100);
        let metadata = dir.write("metadata.txt", "", 0o600);
        let config = format!(
            r#"<?xml version="1.0"?>
<ices>
  <background>0</background><consolelog>1</consolelog><loglevel>3</loglevel>
  <logpath>{logs}</logpath><logfile>ices.log</logfile>
  <stream>
    <metadata><name>ices test</name><genre>Testing</genre><description>a tone</description></metadata>
    <input>
      <module>stdinpcm</module>
      <param name="rate">44100</param><param name="channels">2</param>
      <param name="metadata">1</param><param name="metadatafilename">{metadata}</param>
    </input>
    <instance>
      <hostname>{host}</hostname><port>{port}</port><password>{key}</password><mount>{mount}</mount>
      <reconnectattempts>0</reconnectattempts>
      <encode><nominal-bitrate>96000</nominal-bitrate><samplerate>44100</samplerate><channels>2</channels></encode>
    </instance>
  </stream>
</ices>
"#,
            logs = dir.path().display(),
            metadata = metadata.display(),
            host = addr.ip(),
            port = addr.port(),
        );
        let config = dir.write("ices.xml", &config, 0o600);
        // Read and write: opening a FIFO that way does not wait for the other end.
        let stdin = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).expect("fifo");
        let mut command = Tool::command("ices2");
        command.arg(config).stdin(stdin);
        let ices = Tool::spawn(dir, "ices2", command);
        Ices { ices, feeder, metadata }
    }

    /// Sets the title: writes the metadata file and sends SIGUSR1. Only once ices2 streams
    /// (before, the signal's default action would end it).
    pub fn set_title(&mut self, artist: &str, title: &str) {
        std::fs::write(&self.metadata, format!("artist={artist}\ntitle={title}\n")).expect("write");
        let pid = self.ices.id().to_string();
        let status = Command::new("kill").args(["-USR1", &pid]).status().expect("run kill");
        assert!(status.success(), "kill -USR1 {pid}");
    }
}

/// ffmpeg pushing a `freq` Hz sine to `mount` with the Icecast protocol, paced in real time.
pub fn ffmpeg_source(
    dir: &WorkDir,
    addr: SocketAddr,
    mount: &str,
    key: &str,
    codec: Codec,
    freq: u32,
) -> Tool {
    let encoder: &[&str] = match codec {
        Codec::Opus => {
            &["-c:a", "libopus", "-b:a", "96k", "-f", "ogg", "-content_type", "application/ogg"]
        }
        Codec::Vorbis => {
            &["-c:a", "libvorbis", "-q:a", "3", "-f", "ogg", "-content_type", "application/ogg"]
        }
        Codec::Mp3 => {
            &["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3", "-content_type", "audio/mpeg"]
        }
    };
    let input = format!("sine=frequency={freq}:sample_rate={}", codec.rate());
    let mut command = Tool::command("ffmpeg");
    command.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi"]);
    command.args(["-i", &input, "-ac", "2"]).args(encoder);
    command.arg(format!("icecast://source:{key}@{addr}{mount}"));
    Tool::spawn(dir, &format!("ffmpeg-source{}", mount.replace('/', "-")), command)
}

// ---------------------------------------------------------------------------------------------
// The relay's side

/// `/api/streams` for one stream.
pub async fn stream_info(relay: &TestRelay, name: &str) -> serde_json::Value {
    let (_, body) = http_get(relay, "/api/streams").await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("streams JSON");
    json["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .cloned()
        .expect("stream listed")
}

/// Waits until `name` is live and has taken `frames` frames, failing early if `source` exits.
pub async fn wait_live(relay: &TestRelay, name: &str, frames: u64, source: &mut Tool) {
    let deadline = Instant::now() + LIVE_WITHIN;
    loop {
        let info = stream_info(relay, name).await;
        if info["live"] == true && info["frames_in"].as_u64().unwrap_or(0) >= frames {
            return;
        }
        source.assert_running();
        assert!(Instant::now() < deadline, "{name} did not go live: {info}\n{}", source.output());
        sleep(POLL).await;
    }
}

/// Sets the title with an `/admin/metadata` request (as `source:key`), asserting success.
pub async fn set_title(relay: &TestRelay, mount: &str, key: &str, title: &str) {
    let song: String = form_urlencoded::byte_serialize(title.as_bytes()).collect();
    let path = format!("/admin/metadata?mount={mount}&mode=updinfo&song={song}");
    let auth = crate::common::base64(&format!("source:{key}"));
    let request = format!("GET {path} HTTP/1.0\r\nAuthorization: Basic {auth}\r\n\r\n");
    let mut socket = TcpStream::connect(relay.addr).await.expect("connect");
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    timeout(Duration::from_secs(5), socket.read_to_string(&mut response))
        .await
        .expect("admin answer in time")
        .expect("read admin answer");
    assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
}

/// What a background listener has seen so far.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Display titles (`Artist - Title`), in order, repeats of the previous one left out.
    pub titles: Vec<String>,
    /// Source events (`online`/`offline`), in order (WebSocket listeners only).
    pub sources: Vec<SourceState>,
    /// ICY listeners: the audio byte offset at which each title's block came.
    pub icy_offsets: Vec<(u64, String)>,
    /// Audio bytes received (ICY listeners) or binary frames (WebSocket listeners).
    pub media: u64,
    /// Why the connection ended, if it did.
    pub ended: Option<String>,
}

impl Seen {
    fn title(&mut self, title: String) {
        if !title.is_empty() && self.titles.last() != Some(&title) {
            self.titles.push(title);
        }
    }

    /// How many times the source went offline.
    pub fn offline(&self) -> usize {
        self.sources.iter().filter(|s| **s == SourceState::Offline).count()
    }
}

/// A listener reading in the background: a WebSocket one (events) or an HTTP one with
/// `Icy-MetaData: 1` (StreamTitle blocks). Dropping it disconnects.
pub struct Watch {
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Watch {
    /// A WebSocket listener on `stream`: its hello's title, `metadata` and `source` events.
    pub async fn websocket(relay: &TestRelay, stream: &str) -> Watch {
        let mut ws = connect(relay, &format!("/listen/{stream}"), &[]).await.expect("listener");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let display = |m: &Metadata| m.display_title();
            let ended = loop {
                let message = match ws.next().await {
                    Some(Ok(message)) => message,
                    Some(Err(err)) => break err.to_string(),
                    None => break "closed".to_owned(),
                };
                let mut seen = shared.lock().expect("seen lock");
                match message {
                    Message::Binary(_) => seen.media += 1,
                    Message::Text(text) => match serde_json::from_str(&text) {
                        Ok(ListenerEvent::Hello { metadata, .. }) => {
                            seen.title(metadata.as_ref().map(display).unwrap_or_default())
                        }
                        Ok(ListenerEvent::Metadata(meta)) => seen.title(display(&meta)),
                        Ok(ListenerEvent::Source { state, .. }) => seen.sources.push(state),
                        _ => {}
                    },
                    Message::Close(frame) => break format!("close {frame:?}"),
                    _ => {}
                }
            };
            shared.lock().expect("seen lock").ended = Some(ended);
        });
        Watch { seen, task }
    }

    /// An HTTP listener on `path` asking for ICY metadata; collects each `StreamTitle` with
    /// the audio byte offset where its block was.
    pub async fn icy(relay: &TestRelay, path: &str) -> Watch {
        let mut socket = TcpStream::connect(relay.addr).await.expect("connect");
        let request =
            format!("GET {path} HTTP/1.0\r\nIcy-MetaData: 1\r\nUser-Agent: icy-watch\r\n\r\n");
        socket.write_all(request.as_bytes()).await.expect("send");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(Duration::from_secs(5), socket.read(&mut chunk))
                .await
                .expect("head in time")
                .expect("read head");
            assert!(n > 0, "closed before the head: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.0 200"), "{path}: {head}");
        let metaint: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("icy-metaint:").map(|v| v.trim().parse())
            })
            .expect("icy-metaint header")
            .expect("numeric icy-metaint");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        let mut pending = buf.split_off(end);
        let task = tokio::spawn(async move {
            let mut parser = IcyParser { metaint, audio_left: metaint, block: None };
            let mut chunk = vec![0u8; 16384];
            let ended = loop {
                parser.feed(&pending, &mut shared.lock().expect("seen lock"));
                pending.clear();
                match socket.read(&mut chunk).await {
                    Ok(0) => break "closed".to_owned(),
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                    Err(err) => break err.to_string(),
                }
            };
            shared.lock().expect("seen lock").ended = Some(ended);
        });
        Watch { seen, task }
    }

    /// A copy of what it has seen.
    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("seen lock").clone()
    }

    /// Waits until `titles` have all been seen, in this order (others may come between).
    pub async fn wait_titles(&self, titles: &[String], limit: Duration) {
        poll_until(
            limit,
            || {
                let seen = self.seen();
                let mut want = titles.iter().peekable();
                for title in &seen.titles {
                    if want.peek() == Some(&title) {
                        want.next();
                    }
                }
                want.peek().is_none().then_some(())
            },
            || format!("want titles {titles:?}, seen {:?}", self.seen()),
        )
        .await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Splits an ICY body into audio runs of `metaint` bytes and metadata blocks.
struct IcyParser {
    metaint: usize,
    /// Audio bytes left in the current run.
    audio_left: usize,
    /// The metadata block being read: its length and what came of it.
    block: Option<(usize, Vec<u8>)>,
}

impl IcyParser {
    fn feed(&mut self, mut bytes: &[u8], seen: &mut Seen) {
        while !bytes.is_empty() {
            match &mut self.block {
                None if self.audio_left > 0 => {
                    let n = self.audio_left.min(bytes.len());
                    seen.media += n as u64;
                    self.audio_left -= n;
                    bytes = &bytes[n..];
                }
                None => {
                    self.block = Some((usize::from(bytes[0]) * 16, Vec::new()));
                    bytes = &bytes[1..];
                }
                Some((len, text)) => {
                    let n = (*len - text.len()).min(bytes.len());
                    text.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                }
            }
            let Some((len, text)) = &self.block else { continue };
            if text.len() < *len {
                continue;
            }
            let text = String::from_utf8_lossy(text);
            let title = text
                .split_once("StreamTitle='")
                .and_then(|(_, rest)| rest.split_once("';"))
                .map(|(title, _)| title.to_owned());
            if let Some(title) = title {
                if seen.titles.last() != Some(&title) {
                    seen.icy_offsets.push((seen.media, title.clone()));
                }
                seen.title(title);
            }
            self.block = None;
            self.audio_left = self.metaint;
        }
    }
}
