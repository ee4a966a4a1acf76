//! The live status line of `onair push` on a terminal: track or live input, time, bitrate,
//! listeners, connection, and for a live input its level meter, clip light and drop counters.
//!
//! Drawn with indicatif only when stderr is a terminal and `--quiet` is not given; otherwise it
//! draws nothing and logs a summary line every `stats_every` instead. `log_writer` lets tracing
//! print above the status line.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
#[cfg(feature = "capture")]
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::audience::Audience;
#[cfg(feature = "capture")]
use super::capture::{InputSnapshot, InputStats, METER_FLOOR_DBFS};
use super::encode::FRAME_DURATION_US;
use crate::protocol::Metadata;

/// Frames over which the bitrate is measured (1 s).
const BITRATE_WINDOW_FRAMES: usize = 50;
/// Redraw the line every this many frames (200 ms of audio).
const REDRAW_EVERY_FRAMES: u64 = 10;
/// How often the terminal is refreshed (the meter moves even when no frame goes out).
const TICK: Duration = Duration::from_millis(200);
/// Longest title shown, in characters.
const MAX_TITLE_CHARS: usize = 60;
/// Cells of the level meter, one per `METER_DB_PER_CELL` dB, from -48 dBFS to 0.
#[cfg(feature = "capture")]
const METER_CELLS: usize = 24;
#[cfg(feature = "capture")]
const METER_DB_PER_CELL: f32 = 2.0;
/// At most one warning about dropped input per this long.
#[cfg(feature = "capture")]
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The status bar that log lines must be printed above, if one is shown.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Connection state shown on the status line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConnState {
    Connecting,
    Live,
    Retrying(Duration),
}

/// What the status shows besides the stream itself.
pub(crate) struct StatusConfig {
    /// Never draw a status line.
    pub(crate) quiet: bool,
    /// Summary lines without a status line; zero for none.
    pub(crate) stats_every: Duration,
    /// The stream's listener count.
    pub(crate) audience: Audience,
    /// The live input's meter and counters.
    #[cfg(feature = "capture")]
    pub(crate) input: Option<Arc<InputStats>>,
}

/// The status line, or the summary lines when there is none.
pub(crate) struct Status {
    bar: Option<ProgressBar>,
    cfg: StatusConfig,
    title: String,
    track_pts: u64,
    pts: u64,
    window: VecDeque<usize>,
    window_bytes: usize,
    state: ConnState,
    frames: u64,
    on_air_since: Option<Instant>,
    last_summary: Instant,
    #[cfg(feature = "capture")]
    drops_seen: (u64, Instant),
}

impl Status {
    /// A status line on stderr if it is a terminal and `cfg.quiet` is off.
    pub(crate) fn new(cfg: StatusConfig) -> Self {
        let draw = !cfg.quiet && std::io::stderr().is_terminal();
        let bar = draw.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            bar.set_style(style(&cfg));
            bar.enable_steady_tick(TICK);
            *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
            bar
        });
        Status {
            bar,
            cfg,
            title: String::new(),
            track_pts: 0,
            pts: 0,
            window: VecDeque::with_capacity(BITRATE_WINDOW_FRAMES),
            window_bytes: 0,
            state: ConnState::Connecting,
            frames: 0,
            on_air_since: None,
            last_summary: Instant::now(),
            #[cfg(feature = "capture")]
            drops_seen: (0, Instant::now()),
        }
    }

    pub(crate) fn track(&mut self, meta: &Metadata) {
        self.title = meta.display_title().chars().take(MAX_TITLE_CHARS).collect();
        self.track_pts = meta.pts.unwrap_or(self.pts);
        self.redraw();
    }

    pub(crate) fn frame(&mut self, pts: u64, bytes: usize) {
        self.pts = pts;
        if self.window.len() == BITRATE_WINDOW_FRAMES {
            self.window_bytes -= self.window.pop_front().unwrap_or(0);
        }
        self.window.push_back(bytes);
        self.window_bytes += bytes;
        self.frames += 1;
        if self.frames.is_multiple_of(REDRAW_EVERY_FRAMES) {
            self.redraw();
        }
    }

    pub(crate) fn state(&mut self, state: ConnState) {
        match state {
            ConnState::Live => {
                self.on_air_since = self.on_air_since.or(Some(Instant::now()));
                self.cfg.audience.start();
            }
            _ => self.on_air_since = None,
        }
        if state != ConnState::Live {
            // Nothing went out meanwhile: the bitrate starts over with the next frames.
            self.window.clear();
            self.window_bytes = 0;
        }
        self.state = state;
        self.redraw();
    }

    fn kbps(&self) -> u64 {
        if self.window.is_empty() {
            return 0;
        }
        let span_us = self.window.len() as u64 * FRAME_DURATION_US;
        self.window_bytes as u64 * 8 * 1000 / span_us
    }

    fn on_air(&self) -> Duration {
        self.on_air_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn redraw(&mut self) {
        #[cfg(feature = "capture")]
        self.warn_about_drops();
        let Some(bar) = &self.bar else {
            self.summary();
            return;
        };
        let state = match &self.state {
            ConnState::Connecting => "connecting".to_string(),
            ConnState::Live => "live".to_string(),
            ConnState::Retrying(after) => format!("retrying in {:.1} s", after.as_secs_f64()),
        };
        let title = if self.title.is_empty() { "(waiting for the relay)" } else { &self.title };
        let time = if self.is_live_input() {
            format!("on air {}", clock(self.on_air()))
        } else {
            let seconds = self.pts.saturating_sub(self.track_pts) / 1_000_000;
            format!("{:02}:{:02}", seconds / 60, seconds % 60)
        };
        let listeners = listeners_text(self.cfg.audience.listeners());
        bar.set_message(format!("{title}  {time}  {} kbit/s  {listeners}  [{state}]", self.kbps()));
    }

    fn is_live_input(&self) -> bool {
        #[cfg(feature = "capture")]
        return self.cfg.input.is_some();
        #[cfg(not(feature = "capture"))]
        return false;
    }

    /// One log line with everything the status line would show, every `stats_every`.
    fn summary(&mut self) {
        let every = self.cfg.stats_every;
        if every.is_zero() || self.last_summary.elapsed() < every {
            return;
        }
        self.last_summary = Instant::now();
        let listeners = self.cfg.audience.listeners().map_or(-1, |n| n as i64);
        let (on_air_s, kbps) = (self.on_air().as_secs(), self.kbps());
        #[cfg(feature = "capture")]
        if let Some(input) = &self.cfg.input {
            let s = input.snapshot();
            tracing::info!(
                on_air_s,
                kbps,
                listeners,
                peak_dbfs = format_args!("{:.1}", s.peak_dbfs),
                rms_dbfs = format_args!("{:.1}", s.rms_dbfs),
                clipped = s.clipped_samples,
                overruns = s.overruns,
                xruns = s.xruns,
                underruns = s.underruns,
                dropped_packets = s.dropped_packets,
                "live input"
            );
            return;
        }
        tracing::info!(title = %self.title, on_air_s, kbps, listeners, "pushing");
    }

    /// A warning when the input lost audio since the last one (at most every 10 s).
    #[cfg(feature = "capture")]
    fn warn_about_drops(&mut self) {
        let Some(input) = &self.cfg.input else { return };
        let (seen, at) = self.drops_seen;
        if at.elapsed() < DROP_WARNING_EVERY {
            return;
        }
        let s = input.snapshot();
        let now = s.overruns + s.xruns + s.underruns;
        if now > seen {
            tracing::warn!(
                overruns = s.overruns,
                dropped_ms = s.overrun_frames * 1000 / u64::from(s.rate.max(1)),
                xruns = s.xruns,
                underruns = s.underruns,
                "the live input lost audio"
            );
        }
        self.drops_seen = (now, Instant::now());
    }
}

fn listeners_text(count: Option<u64>) -> String {
    match count {
        Some(1) => "1 listener".into(),
        Some(n) => format!("{n} listeners"),
        None => "? listeners".into(),
    }
}

fn clock(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The template: `{msg}`, plus the live input's meter, redrawn on every tick.
fn style(cfg: &StatusConfig) -> ProgressStyle {
    let base = ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    #[cfg(feature = "capture")]
    if let Some(input) = cfg.input.clone() {
        let meter = move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&meter_text(&input.snapshot()));
        };
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}  {meter}") {
            return style.with_key("meter", meter);
        }
    }
    let _ = cfg;
    base
}

/// `▕██████████████████  │   ▏  -6.0/-12.0 dBFS CLIP`: RMS as the bar, the peak as a tick,
/// from -48 dBFS on the left to 0 on the right, then peak/RMS in figures; the loss counters
/// follow once anything was lost.
#[cfg(feature = "capture")]
pub(crate) fn meter_text(s: &InputSnapshot) -> String {
    let cell = |db: f32| -> usize {
        let from_top = (-db / METER_DB_PER_CELL).max(0.0);
        METER_CELLS.saturating_sub(from_top.ceil() as usize)
    };
    let (rms, peak) = (cell(s.rms_dbfs), cell(s.peak_dbfs));
    let mut bar = String::with_capacity(METER_CELLS * 3);
    for i in 0..METER_CELLS {
        bar.push(if i < rms {
            '█'
        } else if i + 1 == peak.max(1) && s.peak_dbfs > METER_FLOOR_DBFS {
            '│'
        } else {
            ' '
        });
    }
    let clip = if s.clipping { " CLIP" } else { "     " };
    let mut text = format!("▕{bar}▏ {:>5.1}/{:>5.1} dBFS{clip}", s.peak_dbfs, s.rms_dbfs);
    if s.overruns + s.xruns + s.underruns > 0 {
        text.push_str(&format!(
            "  lost: {} overruns {} xruns {} underruns",
            s.overruns, s.xruns, s.underruns
        ));
    }
    text
}

impl Drop for Status {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// A tracing writer that prints above `onair push`'s status line instead of through it:
/// `tracing_subscriber::fmt().with_writer(onair::source::log_writer)`.
pub fn log_writer() -> LogWriter {
    LogWriter { buf: Vec::new() }
}

/// One log record, written to stderr when dropped (see `log_writer`).
#[derive(Debug)]
pub struct LogWriter {
    buf: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let bar = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let write = || {
            let _ = std::io::stderr().write_all(&self.buf);
        };
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

#[cfg(all(test, feature = "capture"))]
mod tests {
    use super::*;

    fn snapshot(peak: f32, rms: f32, clipping: bool) -> InputSnapshot {
        InputSnapshot {
            peak_dbfs: peak,
            rms_dbfs: rms,
            clipping,
            clipped_samples: 0,
            frames: 0,
            overruns: 2,
            overrun_frames: 0,
            xruns: 1,
            underruns: 0,
            dropped_packets: 0,
            rate: 48_000,
            channels: 2,
        }
    }

    #[test]
    fn the_meter_shows_rms_as_a_bar_and_peak_as_a_tick() {
        let text = meter_text(&snapshot(-6.0, -12.0, false));
        // -12 dBFS RMS fills 18 of 24 cells; the -6 dBFS peak sits in cell 21.
        assert_eq!(
            text,
            format!(
                "▕{}  │   ▏  -6.0/-12.0 dBFS       lost: 2 overruns 1 xruns 0 underruns",
                "█".repeat(18)
            )
        );
        let mut clean = snapshot(0.0, -3.0, true);
        (clean.overruns, clean.xruns) = (0, 0);
        let text = meter_text(&clean);
        assert!(text.ends_with("   0.0/ -3.0 dBFS CLIP"), "{text}");
        let silent = meter_text(&snapshot(METER_FLOOR_DBFS, METER_FLOOR_DBFS, false));
        assert!(silent.starts_with(&format!("▕{}▏", " ".repeat(METER_CELLS))), "{silent}");
    }
}
