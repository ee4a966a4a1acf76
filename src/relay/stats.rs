//! What a stream reports about itself: the snapshot behind `/api/streams` and the gauges
//! behind `/metrics`. Reading a snapshot changes nothing; `Stream::update_gauges` is the one
//! place that refreshes the gauges that are computed when read (bitrate, uptime).

use std::time::{Duration, Instant};

use super::stream::Stream;
use crate::protocol::{Metadata, Track};

/// Ingest bitrate is averaged over windows of this length.
const BITRATE_WINDOW: Duration = Duration::from_secs(2);

/// Ingest bitrate over the last window or two.
#[derive(Debug)]
pub(super) struct Bitrate {
    window_start: Instant,
    window_bytes: u64,
    bits_per_second: u64,
}

impl Bitrate {
    pub fn new(now: Instant) -> Self {
        Self { window_start: now, window_bytes: 0, bits_per_second: 0 }
    }

    /// Counts bytes received at `now`.
    pub fn add(&mut self, bytes: u64, now: Instant) {
        self.window_bytes += bytes;
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= BITRATE_WINDOW {
            self.bits_per_second = (self.window_bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
            self.window_bytes = 0;
            self.window_start = now;
        }
    }

    /// The bitrate at `now`: 0 once nothing has arrived for two windows.
    pub fn at(&self, now: Instant) -> u64 {
        if now.duration_since(self.window_start) > 2 * BITRATE_WINDOW {
            0
        } else {
            self.bits_per_second
        }
    }
}

/// A snapshot of a stream for `/api/streams`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// Whether a source is on air.
    pub live: bool,
    /// `live`, `autodj` or null.
    pub source: Option<&'static str>,
    /// Whether listeners need a signed link (`listen_secret`).
    pub private: bool,
    /// Tracks of the current (or last) source.
    pub tracks: Vec<Track>,
    /// Connected listeners.
    pub listeners: usize,
    /// Ingest bitrate over the last couple of seconds.
    pub bitrate_bps: u64,
    /// Frames accepted from sources.
    pub frames_in: u64,
    /// Frames written to listeners (sum over listeners).
    pub frames_out: u64,
    /// Frames lagging listeners jumped over.
    pub frames_skipped: u64,
    /// Bytes received from sources.
    pub bytes_in: u64,
    /// Bytes written to listeners.
    pub bytes_out: u64,
    /// Seconds the current source has been on air (0 when offline).
    pub uptime_s: u64,
    /// Latest now-playing information.
    pub metadata: Option<Metadata>,
}

impl Stream {
    /// A snapshot for the JSON API and the Icecast status.
    pub fn info(&self) -> StreamInfo {
        let state = self.lock();
        let now = Instant::now();
        let m = &self.metrics;
        StreamInfo {
            name: self.config.name.clone(),
            live: state.sources.on_air.is_some(),
            source: state.sources.on_air.map(|(kind, _)| kind.as_str()),
            private: self.config.listen_secret.is_some(),
            tracks: state.on_air.tracks.clone(),
            listeners: self.listener_count(),
            bitrate_bps: state.bitrate.at(now),
            frames_in: m.frames_in.get(),
            frames_out: m.frames_out.get(),
            frames_skipped: m.frames_skipped.get(),
            bytes_in: m.bytes_in.get(),
            bytes_out: m.bytes_out.get(),
            uptime_s: state.sources.on_air_since.map_or(0, |t| now.duration_since(t).as_secs()),
            metadata: state.on_air.metadata.clone(),
        }
    }

    /// Refreshes the gauges computed when read (bitrate, uptime), before `/metrics` renders.
    pub fn update_gauges(&self) {
        let info = self.info();
        self.metrics.bitrate.set(i64::try_from(info.bitrate_bps).unwrap_or(i64::MAX));
        self.metrics.uptime.set(i64::try_from(info.uptime_s).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrate_is_averaged_per_window_and_fades_when_nothing_arrives() {
        let start = Instant::now();
        let mut bitrate = Bitrate::new(start);
        bitrate.add(16_000, start + Duration::from_secs(1));
        assert_eq!(bitrate.at(start + Duration::from_secs(1)), 0, "the first window is open");
        bitrate.add(16_000, start + Duration::from_secs(2));
        assert_eq!(bitrate.at(start + Duration::from_secs(2)), 128_000);
        assert_eq!(bitrate.at(start + Duration::from_secs(7)), 0, "silent for two windows");
    }
}
