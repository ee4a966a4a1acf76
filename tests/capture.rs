//! `onair push --input` end to end, headless: a capture device plays a known tone, and the tone
//! really goes through ALSA, cpal, the ring, Opus and a real relay to a listener that decodes it.
//!
//! The device. This machine (a container) has no sound card and no kernel modules (no
//! `snd-aloop`), and ALSA's `null` PCM is not timed: it "captures" 2 s in 16 ms, so a `file`
//! plugin over it (`infile` = a tone) floods the capture instead of pacing it in real time, and
//! the ALSA `plug` plugin cannot convert formats in front of the `pulse` one. What works: a
//! private PulseAudio daemon (its own socket in a temp dir, no D-Bus, no autospawn) with a null
//! sink, which its own clock drives in real time, and `module-sine` playing `TONE_HZ` into it at
//! amplitude 0.5 (-6 dBFS peak, -9 dBFS RMS). A test-only ALSA config (`ALSA_CONFIG_PATH` = the
//! system's alsa.conf, then ours) defines `pcm.tone` (and the default PCM) as ALSA's `pulse`
//! plugin (libasound2-plugins) recording that sink's monitor. onair opens an ordinary ALSA PCM
//! by name and knows nothing of PulseAudio; killing the daemon is a device that disappears.
//! `make test` installs pulseaudio, libasound2-plugins and libasound2-dev.
#![cfg(feature = "capture")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use onair::protocol::decode_frame_header;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const ONAIR: &str = env!("CARGO_BIN_EXE_onair");
/// The test device's tone; not a harmonic of anything else the tests look for.
const TONE_HZ: f64 = 660.0;

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A private PulseAudio daemon playing a tone into a null sink, and the ALSA config that makes
/// its monitor the capture device `tone` (and the default one).
struct ToneDevice {
    dir: PathBuf,
    daemon: Option<std::process::Child>,
}

impl ToneDevice {
    fn start() -> Self {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("onair-capture-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("native");
        let log = std::fs::File::create(dir.join("pulseaudio.log")).unwrap();
        let daemon = std::process::Command::new("pulseaudio")
            .args(["-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no"])
            .args(["--disable-shm=yes", "--log-target=stderr", "--log-level=warn"])
            .arg(format!("--load=module-native-protocol-unix socket={} auth-anonymous=1", socket.display()))
            .arg("--load=module-null-sink sink_name=bus rate=48000 channels=2")
            .arg(format!("--load=module-sine sink=bus frequency={TONE_HZ}"))
            .envs(Self::private_env(&dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("pulseaudio runs the test's capture device: `make test` installs it (apt-get install pulseaudio libasound2-plugins)");
        let conf = format!(
            r#"pcm.tone {{
    type pulse
    server "unix:{socket}"
    device "bus.monitor"
    hint {{ show on description "onair test tone" }}
}}
pcm.!default "tone"
"#,
            socket = socket.display()
        );
        std::fs::write(dir.join("asound.conf"), conf).unwrap();
        let device = ToneDevice { dir, daemon: Some(daemon) };
        device.wait_until_ready();
        device
    }

    /// HOME and runtime dirs of our own, so nothing reads or writes the real user's.
    fn private_env(dir: &std::path::Path) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("HOME", dir.into()),
            ("XDG_RUNTIME_DIR", dir.into()),
            ("XDG_CONFIG_HOME", dir.join("config").into()),
            ("PULSE_RUNTIME_PATH", dir.join("pulse").into()),
            ("DBUS_SESSION_BUS_ADDRESS", "disabled:".into()),
        ]
    }

    fn server(&self) -> String {
        format!("unix:{}", self.dir.join("native").display())
    }

    fn pactl(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("pactl")
            .arg(format!("--server={}", self.server()))
            .args(args)
            .envs(Self::private_env(&self.dir))
            .output()
            .expect("pactl (pulseaudio-utils) is installed with pulseaudio")
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.pactl(&["list", "short", "sink-inputs"]);
            if out.status.success() && !out.stdout.is_empty() {
                return;
            }
            let log = std::fs::read_to_string(self.dir.join("pulseaudio.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "pulseaudio did not come up: {log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Makes the tone `factor` times louder (3.0: amplitude 1.5, clipped by the sink).
    fn set_volume(&self, factor: f64) {
        let inputs = self.pactl(&["list", "short", "sink-inputs"]);
        let text = String::from_utf8_lossy(&inputs.stdout);
        let index = text.split_whitespace().next().expect("module-sine's sink input");
        let out = self.pactl(&["set-sink-input-volume", index, &format!("{factor:.3}")]);
        assert!(out.status.success(), "{out:?}");
    }

    /// The device disappears: its sound server dies.
    fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }

    /// `onair ARGS` seeing this device through ALSA.
    fn onair(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ONAIR);
        cmd.args(args)
            .env("ALSA_CONFIG_PATH", format!("/usr/share/alsa/alsa.conf:{}", self.alsa_conf()))
            .envs(Self::private_env(&self.dir))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    fn alsa_conf(&self) -> String {
        self.dir.join("asound.conf").display().to_string()
    }
}

impl Drop for ToneDevice {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `onair push` whose stderr lines are collected as they come.
struct Push {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Push {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Push { child, lines }
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for a stderr line containing `needle`; returns it.
    async fn line_with(&self, needle: &str) -> String {
        let found = within_secs(15, async {
            loop {
                if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                    return line.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        match tokio::time::timeout(Duration::from_secs(15), found).await {
            Ok(line) => line,
            Err(_) => panic!("no line with {needle:?} in:\n{}", self.stderr()),
        }
    }

    /// Summary lines (`live input ...`) seen after `skip` of them, parsed to fields.
    async fn summaries_after(&self, skip: usize, count: usize) -> Vec<Summary> {
        within_secs(20, async {
            loop {
                let all: Vec<Summary> = self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|l| l.contains(SUMMARY))
                    .map(|l| Summary::parse(l))
                    .collect();
                if all.len() >= skip + count {
                    return all[skip..skip + count].to_vec();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    fn summaries(&self) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| l.contains(SUMMARY)).count()
    }

    async fn interrupt(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().unwrap() as libc::pid_t;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let status = within_secs(10, self.child.wait()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await; // the last stderr lines
        (status.code(), self.stderr())
    }
}

impl Drop for Push {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("onair push's stderr:\n{}", self.stderr());
        }
    }
}

/// What starts a summary line (`Status::summary`).
const SUMMARY: &str = "status: live input ";

/// One `live input` summary line's fields.
#[derive(Debug, Clone, Default)]
struct Summary {
    peak_dbfs: f64,
    rms_dbfs: f64,
    listeners: i64,
    clipped: u64,
    overruns: u64,
    kbps: u64,
}

impl Summary {
    fn parse(line: &str) -> Self {
        let field = |name: &str| -> f64 {
            let at = line.find(&format!(" {name}=")).unwrap_or_else(|| panic!("{name} in {line}"));
            let rest = &line[at + name.len() + 2..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        Summary {
            peak_dbfs: field("peak_dbfs"),
            rms_dbfs: field("rms_dbfs"),
            listeners: field("listeners") as i64,
            clipped: field("clipped") as u64,
            overruns: field("overruns") as u64,
            kbps: field("kbps") as u64,
        }
    }
}

/// What a listener heard: decoded PCM (stereo, 48 kHz, interleaved) and the events.
#[derive(Default)]
struct Heard {
    pcm: Vec<f32>,
    events: Vec<serde_json::Value>,
}

/// Reads `ws` until `enough` says so, decoding every Opus frame.
async fn hear(ws: &mut Ws, heard: &mut Heard, enough: impl Fn(&Heard) -> bool) {
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut out = vec![0f32; 5760 * 2];
    while !enough(heard) {
        match within(ws.next()).await {
            Some(Ok(Message::Binary(data))) => {
                let head = decode_frame_header(&data).unwrap();
                if head.is_header() {
                    continue;
                }
                let n = decoder.decode_float(&data[10..], &mut out, false).unwrap();
                heard.pcm.extend_from_slice(&out[..n * 2]);
            }
            Some(Ok(Message::Text(text))) => {
                heard.events.push(serde_json::from_str(&text).unwrap())
            }
            Some(Ok(_)) => {}
            other => panic!("listener: {other:?}"),
        }
    }
}

/// The share of the signal's power at `freq` against a few other frequencies (Goertzel).
fn tone_share(samples: &[f32], freq: f64, others: &[f64]) -> f64 {
    let power = |f: f64| {
        let w = 2.0 * std::f64::consts::PI * f / 48_000.0;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in samples {
            let s0 = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    };
    let at = power(freq);
    at / (at + others.iter().map(|&f| power(f)).sum::<f64>())
}

/// The left channel of interleaved stereo.
fn left(pcm: &[f32]) -> Vec<f32> {
    pcm.iter().step_by(2).copied().collect()
}

fn rms_dbfs(samples: &[f32]) -> f64 {
    let ms =
        samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / samples.len() as f64;
    10.0 * ms.log10()
}

#[tokio::test]
async fn a_live_input_reaches_a_listener_as_the_same_tone_with_level_titles_and_listeners() {
    let device = ToneDevice::start();
    let relay = TestRelay::start().await;
    let (mut ws, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["live"], false);
    let url = relay.url("/ingest/radio");
    // `--input` without a name: the system default, which the test config points at the tone.
    let mut cmd = device.onair(&["push", "--to", &url, "--key", "SECRET", "--input"]);
    cmd.args(["--title", "Morning show", "--quiet", "--stats-every", "1"]);
    cmd.stdin(Stdio::piped());
    let mut push = Push::spawn(cmd);
    let mut stdin = push.child.stdin.take().unwrap();

    let opened = push.line_with("capturing").await;
    assert!(opened.contains("device=default") && opened.contains("rate=48000"), "{opened}");
    // 2.5 s of live audio: the source comes online with the title, then the tone.
    let mut heard = Heard::default();
    within_secs(15, hear(&mut ws, &mut heard, |h| h.pcm.len() >= 48_000 * 2 * 5 / 2)).await;
    let online = heard.events.iter().find(|e| e["type"] == "source").unwrap();
    assert_eq!(
        (online["state"].as_str(), online["tracks"][0]["codec"].as_str()),
        (Some("online"), Some("opus"))
    );
    let title = heard.events.iter().find(|e| e["type"] == "metadata").unwrap();
    assert_eq!(title["title"], "Morning show");

    // Past the encoder's start, what the listener decodes is the device's tone, at its level.
    let steady = left(&heard.pcm[48_000 * 2 / 2..]);
    let share = tone_share(&steady, TONE_HZ, &[220.0, 440.0, 880.0, 1000.0, 1320.0, 2000.0]);
    assert!(share > 0.99, "{TONE_HZ} Hz holds {share:.4} of the power");
    let level = rms_dbfs(&steady);
    assert!((level - -9.03).abs() < 0.5, "decoded RMS {level:.2} dBFS, the tone is -9.03");

    // The summary lines (the status line's content for services) show the input's level, the
    // bitrate and our one listener, and nothing was lost.
    let seen = push.summaries();
    let summaries = push.summaries_after(seen, 2).await;
    let last = summaries.last().unwrap();
    assert!((last.peak_dbfs - -6.0).abs() < 0.3, "{last:?}");
    assert!((last.rms_dbfs - -9.0).abs() < 0.3, "{last:?}");
    assert_eq!((last.clipped, last.overruns, last.listeners), (0, 0, 1), "{last:?}");
    assert!((100..=160).contains(&last.kbps), "{last:?}");

    // A line typed on stdin becomes the title: `Artist - Title`.
    stdin.write_all(b"The Band - A Song\n").await.unwrap();
    within_secs(10, hear(&mut ws, &mut heard, |h| h.events.iter().any(|e| e["title"] == "A Song")))
        .await;
    let typed = heard.events.iter().find(|e| e["title"] == "A Song").unwrap();
    assert_eq!(typed["artist"], "The Band");

    // Three times louder: amplitude 1.5, clipped at full scale, and the meter says so.
    device.set_volume(3.0);
    let clipped = within_secs(15, async {
        loop {
            let seen = push.summaries();
            let s = push.summaries_after(seen, 1).await.pop().unwrap();
            if s.clipped > 0 {
                return s;
            }
        }
    })
    .await;
    assert!(clipped.peak_dbfs > -0.1, "{clipped:?}");
    assert!(!push.stderr().contains("lost audio"), "no warning about lost input");

    // Ctrl-C: a clean end, exit 0, and the listener hears the source go offline.
    let (code, stderr) = push.interrupt().await;
    assert_eq!(code, Some(0), "{stderr}");

    within_secs(
        10,
        hear(&mut ws, &mut heard, |h| {
            h.events.iter().any(|e| e["type"] == "source" && e["state"] == "offline")
        }),
    )
    .await;
    relay.shutdown().await;
}

#[tokio::test]
async fn a_device_that_disappears_ends_the_push_with_exit_5_and_listeners_see_offline() {
    let mut device = ToneDevice::start();
    let relay = TestRelay::start().await;
    let (mut ws, _) = listener(&relay, "radio").await;
    let url = relay.url("/ingest/radio");
    let mut push =
        Push::spawn(device.onair(&["push", "--to", &url, "--key", "SECRET", "--input", "tone"]));
    let mut heard = Heard::default();
    within_secs(15, hear(&mut ws, &mut heard, |h| h.pcm.len() >= 48_000)).await;

    let lost_at = Instant::now();
    device.kill();
    let status = within_secs(15, push.child.wait()).await.unwrap();
    let waited = lost_at.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stderr = push.stderr();
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("onair: error: the input device tone failed"), "{stderr}");
    assert!(waited < Duration::from_secs(3), "noticed after {waited:?}");
    // The connection was closed, not just dropped: the listeners hear the source go offline.
    within_secs(
        10,
        hear(&mut ws, &mut heard, |h| {
            h.events.iter().any(|e| e["type"] == "source" && e["state"] == "offline")
        }),
    )
    .await;
    relay.shutdown().await;
}

#[tokio::test]
async fn list_inputs_shows_names_the_default_and_formats() {
    let device = ToneDevice::start();
    let out = device.onair(&["push", "--list-inputs"]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.starts_with("Input devices (pass the name to --input; * is the default):\n"),
        "{stdout}"
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l[2..].starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {stdout}"))
    };
    // The default PCM is the tone here; both open, with channels, rates and formats.
    let default = line("default");
    assert!(default.starts_with("* default "), "{default}");
    let tone = line("tone");
    assert!(tone.starts_with("  tone ") && tone.contains("onair test tone"), "{tone}");
    assert!(tone.contains(" ch, ") && tone.contains(" Hz, ") && tone.contains("f32"), "{tone}");
    // ALSA's and JACK's complaints about other plugins do not reach the terminal.
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_missing_device_exits_5_with_a_clear_message_before_going_on_air() {
    let device = ToneDevice::start();
    let relay = TestRelay::start().await;
    let url = relay.url("/ingest/radio");
    let mut cmd = device.onair(&["push", "--to", &url, "--key", "SECRET", "--input", "nosuch"]);
    let out = within_secs(15, cmd.output()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains(
            "onair: error: no input device named nosuch (see `onair push --list-inputs`)"
        ),
        "{stderr}"
    );
    // A device ALSA knows but that cannot open (its server is not running): 5 too, with why.
    let mut gone = ToneDevice::start();
    gone.kill();
    let mut cmd = gone.onair(&["push", "--to", &url, "--key", "SECRET", "--input", "tone"]);
    let out = within_secs(15, cmd.output()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("onair: error: cannot open the input device tone: "), "{stderr}");
    // Neither went on air.
    let (_, hello) = listener(&relay, "radio").await;
    assert_eq!(hello["live"], false);
    // Files and a device at once, or a device with playlist flags, are usage errors.
    for extra in ["x.flac", "--loop", "--shuffle", "--fast"] {
        let out = device.onair(&["push", "--to", &url, "--input", "tone", extra]).output().await;
        assert_eq!(out.unwrap().status.code(), Some(2), "--input with {extra}");
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn help_documents_live_input_and_exit_code_5() {
    let out = Command::new(ONAIR).args(["push", "--help"]).output().await.unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["--input [<DEVICE>]", "--list-inputs", "--quiet", "--stats-every", "dBFS"] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    assert!(help.contains("5  the input device (--input) is missing"), "{help}");
    assert!(help.contains("onair push --list-inputs"), "{help}");
}
