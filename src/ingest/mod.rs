//! Where sources connect: a WebSocket source (`websocket.rs`, onair's own protocol) or an
//! Icecast source (`icecast.rs`, `SOURCE`/`PUT` from ffmpeg, libshout tools, liquidsoap).
//!
//! Both check the request (stream, key, who is already live) and answer before any media is
//! read, then run a session that ends in the same [`SourceHandle`](crate::relay::SourceHandle):
//! whatever the ingest, every listener kind hears the stream. Both share the bitrate limit.

pub mod icecast;
pub mod websocket;

use tokio::time::Instant;

/// A source may send this many seconds' worth of `max_ingest_bitrate` in one burst.
pub const INGEST_BURST_SECONDS: f64 = 2.0;

/// A token bucket over bytes: `max_ingest_bitrate` sustained, a couple of seconds of burst.
#[derive(Debug)]
pub(crate) struct RateLimit {
    bytes_per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(bits_per_second: u64) -> Self {
        let bytes_per_second = bits_per_second as f64 / 8.0;
        Self {
            bytes_per_second,
            tokens: bytes_per_second * INGEST_BURST_SECONDS,
            last: Instant::now(),
        }
    }

    /// Takes `bytes` from the bucket; false when the source is over its limit.
    pub(crate) fn take(&mut self, bytes: usize) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.bytes_per_second;
        self.tokens = (self.tokens + refill).min(self.bytes_per_second * INGEST_BURST_SECONDS);
        self.last = now;
        self.tokens -= bytes as f64;
        self.tokens >= 0.0
    }
}
