//! The live status line of `onair push` on a terminal: track, position, bitrate, connection.
//!
//! Drawn with indicatif only when stderr is a terminal; otherwise it does nothing and the
//! tracing log lines tell the story. `log_writer` lets tracing print above the status line.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::encode::FRAME_DURATION_US;
use crate::protocol::Metadata;

/// Frames over which the bitrate is measured (1 s).
const BITRATE_WINDOW_FRAMES: usize = 50;
/// Redraw the line every this many frames (200 ms of audio).
const REDRAW_EVERY_FRAMES: u64 = 10;
/// Longest title shown, in characters.
const MAX_TITLE_CHARS: usize = 60;

/// The status bar that log lines must be printed above, if one is shown.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Connection state shown on the status line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConnState {
    Connecting,
    Live,
    Retrying(Duration),
}

/// The status line; inert when stderr is not a terminal.
pub(crate) struct Status {
    bar: Option<ProgressBar>,
    title: String,
    track_pts: u64,
    pts: u64,
    window: VecDeque<usize>,
    window_bytes: usize,
    state: ConnState,
    frames: u64,
}

impl Status {
    /// A status line on stderr if it is a terminal.
    pub(crate) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(250));
            *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
            bar
        });
        Status {
            bar,
            title: String::new(),
            track_pts: 0,
            pts: 0,
            window: VecDeque::with_capacity(BITRATE_WINDOW_FRAMES),
            window_bytes: 0,
            state: ConnState::Connecting,
            frames: 0,
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
        self.state = state;
        self.redraw();
    }

    fn redraw(&self) {
        let Some(bar) = &self.bar else { return };
        let seconds = self.pts.saturating_sub(self.track_pts) / 1_000_000;
        let kbps = if self.window.is_empty() {
            0
        } else {
            let span_us = self.window.len() as u64 * FRAME_DURATION_US;
            self.window_bytes as u64 * 8 * 1000 / span_us
        };
        let state = match &self.state {
            ConnState::Connecting => "connecting".to_string(),
            ConnState::Live => "live".to_string(),
            ConnState::Retrying(after) => format!("retrying in {:.1} s", after.as_secs_f64()),
        };
        let title = if self.title.is_empty() { "(waiting for the relay)" } else { &self.title };
        bar.set_message(format!(
            "{title}  {:02}:{:02}  {kbps} kbit/s  [{state}]",
            seconds / 60,
            seconds % 60
        ));
    }
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
