//! Counters and gauges, kept in a Prometheus registry and rendered at `GET /metrics`.
//!
//! Each stream takes its own handles (`StreamMetrics`) once, so the hot path only adds to an
//! atomic; `/api/streams` reads the very same values, so the two views never disagree.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of `Metrics::render`'s text: OpenMetrics 1.0, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `stream` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    /// Stream name.
    pub stream: String,
}

/// The `reason` label of refused connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why the connection was refused or closed (e.g. `unauthorized`, `too_slow`).
    pub reason: String,
}

/// The labels of a recording's disk errors: the stream and what failed (`open`, `write`,
/// `sync`, `sidecar`, `vanished`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordingErrorLabel {
    /// Stream name.
    pub stream: String,
    /// The operation that failed.
    pub op: String,
}

/// One recorded stream's handles into `Metrics`.
#[derive(Clone, Debug, Default)]
pub struct RecordingMetrics {
    /// Bytes written to recordings.
    pub bytes: Counter,
    /// Media frames that did not reach a recording (the recorder fell off the ring, or the
    /// disk was failing).
    pub frames_lost: Counter,
    /// 1 while a recording file is open.
    pub active: Gauge,
    /// Recordings removed by retention.
    pub removed: Counter,
    errors: Family<RecordingErrorLabel, Counter>,
    stream: String,
}

impl RecordingMetrics {
    /// Counts a disk error of operation `op`.
    pub fn error(&self, op: &str) {
        let label = RecordingErrorLabel { stream: self.stream.clone(), op: op.to_owned() };
        self.errors.get_or_create(&label).inc();
    }
}

/// Every metric the relay exports.
pub struct Metrics {
    registry: Registry,
    frames_in: Family<StreamLabel, Counter>,
    bytes_in: Family<StreamLabel, Counter>,
    frames_out: Family<StreamLabel, Counter>,
    bytes_out: Family<StreamLabel, Counter>,
    frames_skipped: Family<StreamLabel, Counter>,
    listeners: Family<StreamLabel, Gauge>,
    too_slow: Family<StreamLabel, Counter>,
    live: Family<StreamLabel, Gauge>,
    bitrate: Family<StreamLabel, Gauge>,
    uptime: Family<StreamLabel, Gauge>,
    hls_listeners: Family<StreamLabel, Gauge>,
    recording_bytes: Family<StreamLabel, Counter>,
    recording_frames_lost: Family<StreamLabel, Counter>,
    recording_active: Family<StreamLabel, Gauge>,
    recordings_removed: Family<StreamLabel, Counter>,
    recording_errors: Family<RecordingErrorLabel, Counter>,
    /// Open TCP connections of every kind.
    pub connections: Gauge,
    /// Connections refused or closed by policy, by reason.
    pub refusals: Family<ReasonLabel, Counter>,
    /// The cluster's figures (all zero on a node that runs alone).
    pub cluster: ClusterMetrics,
}

/// What a cluster node counts (`cluster/`).
#[derive(Clone, Debug, Default)]
pub struct ClusterMetrics {
    /// 1 while the node is connected to NATS.
    pub connected: Gauge,
    /// Frames this node published for its own sources.
    pub published_frames: Counter,
    /// Bytes of those frames.
    pub published_bytes: Counter,
    /// Frames received from other nodes and fed to the local rings.
    pub relayed_frames: Counter,
    /// Messages dropped, by reason (`disconnected`, `lagged`, `malformed`, `slow_consumer`, ...).
    pub dropped: Family<ReasonLabel, Counter>,
    /// Listeners of each stream on every node of the cluster.
    pub listeners: Family<StreamLabel, Gauge>,
    /// HLS clients of each stream on every node of the cluster.
    pub hls_listeners: Family<StreamLabel, Gauge>,
}

impl ClusterMetrics {
    /// Counts `n` dropped messages.
    pub fn dropped(&self, reason: &str, n: u64) {
        self.dropped.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc_by(n);
    }
}

/// One stream's handles into `Metrics`.
#[derive(Clone, Debug, Default)]
pub struct StreamMetrics {
    /// Frames accepted into the ring.
    pub frames_in: Counter,
    /// Bytes of those frames (payload and frame header).
    pub bytes_in: Counter,
    /// Frames written to listeners, summed over listeners.
    pub frames_out: Counter,
    /// Bytes written to listeners, summed over listeners.
    pub bytes_out: Counter,
    /// Frames listeners jumped over because they lagged.
    pub frames_skipped: Counter,
    /// Connected listeners.
    pub listeners: Gauge,
    /// Listeners closed because they stayed behind the live edge (4008).
    pub too_slow: Counter,
    /// 1 while a source is on air.
    pub live: Gauge,
    /// Ingest bitrate, bits per second (updated when read).
    pub bitrate: Gauge,
    /// Seconds the current source has been on air (updated when read).
    pub uptime: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("onair");
        let metrics = Self {
            registry: Registry::default(),
            frames_in: Family::default(),
            bytes_in: Family::default(),
            frames_out: Family::default(),
            bytes_out: Family::default(),
            frames_skipped: Family::default(),
            listeners: Family::default(),
            too_slow: Family::default(),
            live: Family::default(),
            bitrate: Family::default(),
            uptime: Family::default(),
            hls_listeners: Family::default(),
            recording_bytes: Family::default(),
            recording_frames_lost: Family::default(),
            recording_active: Family::default(),
            recordings_removed: Family::default(),
            recording_errors: Family::default(),
            connections: Gauge::default(),
            refusals: Family::default(),
            cluster: ClusterMetrics::default(),
        };
        registry.register("frames_in", "Frames received from sources", metrics.frames_in.clone());
        registry.register("bytes_in", "Bytes received from sources", metrics.bytes_in.clone());
        registry.register("frames_out", "Frames sent to listeners", metrics.frames_out.clone());
        registry.register("bytes_out", "Bytes sent to listeners", metrics.bytes_out.clone());
        registry.register(
            "frames_skipped",
            "Frames lagging listeners jumped over",
            metrics.frames_skipped.clone(),
        );
        registry.register("listeners", "Connected listeners", metrics.listeners.clone());
        registry.register(
            "listeners_too_slow",
            "Listeners closed for staying behind the live edge",
            metrics.too_slow.clone(),
        );
        registry.register("live", "1 while a source is on air", metrics.live.clone());
        registry.register("ingest_bitrate_bps", "Ingest bitrate", metrics.bitrate.clone());
        registry.register(
            "uptime_seconds",
            "Seconds the source has been on air",
            metrics.uptime.clone(),
        );
        registry.register(
            "hls_listeners",
            "HLS clients that polled the playlist in the last three target durations",
            metrics.hls_listeners.clone(),
        );
        registry.register(
            "recording_bytes",
            "Bytes written to recordings",
            metrics.recording_bytes.clone(),
        );
        registry.register(
            "recording_frames_lost",
            "Media frames that did not reach a recording (ring overrun or disk failing)",
            metrics.recording_frames_lost.clone(),
        );
        registry.register(
            "recording_active",
            "1 while a recording file is open",
            metrics.recording_active.clone(),
        );
        registry.register(
            "recordings_removed",
            "Recordings removed by retention",
            metrics.recordings_removed.clone(),
        );
        registry.register(
            "recording_errors",
            "Disk errors of the recorder, by operation",
            metrics.recording_errors.clone(),
        );
        registry.register("connections", "Open connections", metrics.connections.clone());
        registry.register(
            "refusals",
            "Connections refused or closed by policy",
            metrics.refusals.clone(),
        );
        let cluster = &metrics.cluster;
        let sub = registry.sub_registry_with_prefix("cluster");
        sub.register("connected", "1 while connected to NATS", cluster.connected.clone());
        sub.register(
            "published_frames",
            "Frames published for this node's sources",
            cluster.published_frames.clone(),
        );
        sub.register(
            "published_bytes",
            "Bytes of the frames published",
            cluster.published_bytes.clone(),
        );
        sub.register(
            "relayed_frames",
            "Frames received from other nodes",
            cluster.relayed_frames.clone(),
        );
        sub.register("dropped", "Cluster messages dropped, by reason", cluster.dropped.clone());
        sub.register(
            "listeners",
            "Listeners on every node of the cluster",
            cluster.listeners.clone(),
        );
        sub.register(
            "hls_listeners",
            "HLS clients on every node of the cluster",
            cluster.hls_listeners.clone(),
        );
        Self { registry, ..metrics }
    }

    /// The handles for one stream (created on first use).
    pub fn stream(&self, name: &str) -> StreamMetrics {
        let label = StreamLabel { stream: name.to_owned() };
        StreamMetrics {
            frames_in: self.frames_in.get_or_create_owned(&label),
            bytes_in: self.bytes_in.get_or_create_owned(&label),
            frames_out: self.frames_out.get_or_create_owned(&label),
            bytes_out: self.bytes_out.get_or_create_owned(&label),
            frames_skipped: self.frames_skipped.get_or_create_owned(&label),
            listeners: self.listeners.get_or_create_owned(&label),
            too_slow: self.too_slow.get_or_create_owned(&label),
            live: self.live.get_or_create_owned(&label),
            bitrate: self.bitrate.get_or_create_owned(&label),
            uptime: self.uptime.get_or_create_owned(&label),
        }
    }

    /// The recorder's handles for one stream (created on first use).
    pub fn recording(&self, name: &str) -> RecordingMetrics {
        let label = StreamLabel { stream: name.to_owned() };
        RecordingMetrics {
            bytes: self.recording_bytes.get_or_create_owned(&label),
            frames_lost: self.recording_frames_lost.get_or_create_owned(&label),
            active: self.recording_active.get_or_create_owned(&label),
            removed: self.recordings_removed.get_or_create_owned(&label),
            errors: self.recording_errors.clone(),
            stream: name.to_owned(),
        }
    }

    /// Sets a stream's HLS listener count (counted when `/metrics` is read).
    pub fn set_hls_listeners(&self, stream: &str, count: usize) {
        let label = StreamLabel { stream: stream.to_owned() };
        self.hls_listeners.get_or_create(&label).set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts one refusal.
    pub fn refused(&self, reason: &str) {
        self.refusals.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The exposition without the series of the streams named in `hidden` (private streams,
    /// for a scraper that is not the admin).
    pub fn render_without(&self, hidden: &[&str]) -> String {
        let text = self.render();
        if hidden.is_empty() {
            return text;
        }
        // Stream names are [A-Za-z0-9_-] (config), so a label is exactly `stream="NAME"`.
        let labels: Vec<String> = hidden.iter().map(|name| format!("stream=\"{name}\"")).collect();
        let mut out = String::with_capacity(text.len());
        for line in text.lines().filter(|l| !labels.iter().any(|label| l.contains(label))) {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_streams_leave_no_series() {
        let metrics = Metrics::new();
        for name in ["radio", "radio2", "private"] {
            metrics.stream(name).frames_in.inc();
        }
        let text = metrics.render_without(&["radio", "private"]);
        assert!(text.contains("onair_frames_in_total{stream=\"radio2\"} 1"), "{text}");
        assert!(!text.contains("stream=\"radio\"") && !text.contains("private"), "{text}");
        assert!(text.contains("# TYPE onair_frames_in counter"), "{text}");
    }
}
