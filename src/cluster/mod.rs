//! The cluster: several nodes serve one set of streams through NATS (docs/CLUSTER.md).
//!
//! ```text
//!  local source ─► ring ─► Tap ─► origin.rs ──publish──► NATS ──► follower.rs ─► SourceKind::Remote ─► ring
//!                                  (frames as sent,               (every node follows every stream:
//!                                   session, metadata, end)        warm rings, warm joins)
//!  lease.rs: JetStream KV leases: one live source and one auto-DJ per stream cluster-wide
//!  stats.rs: each node's listener counts, every few seconds
//! ```
//!
//! `Cluster::start` connects (in the background: a node serves its local streams while NATS
//! is away), sets itself as every stream's [`Gate`] and as the node's
//! [`ClusterView`], and spawns one publisher per stream, one follower,
//! one lease keeper per stream with a key, one auto-DJ keeper per stream with a playlist and
//! the stats exchange, all ending when `cancel` fires.

mod command;
mod follower;
mod lease;
mod origin;
mod stats;
pub mod subject;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::{ClusterConfig, SUBSCRIPTION_MESSAGES_PER_STREAM};
use crate::metrics::ClusterMetrics;
use crate::node::{ClusterView, Node};
use crate::protocol::Metadata;
use crate::relay::{AttachError, Gate, SourceKind, Stream};
use subject::Subjects;

/// How often each node publishes its listener counts.
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// A node's counts are forgotten after this many intervals without a report.
const STATS_EXPIRY_INTERVALS: u32 = 3;

/// One node's part of a cluster: its NATS connection and what it knows of the others.
pub struct Cluster {
    /// The node's streams, in config order (the node owns the cluster, not the reverse).
    streams: Vec<Arc<Stream>>,
    /// Largest frame a follower puts back together from parts.
    max_message_bytes: usize,
    config: ClusterConfig,
    subjects: Subjects,
    client: Client,
    metrics: ClusterMetrics,
    /// Streams relayed from another node: who their origin is (written by the follower).
    origins: Mutex<HashMap<String, Origin>>,
    /// The other nodes' listener counts (written by the stats exchange).
    peers: Mutex<HashMap<String, stats::Peer>>,
    /// Per stream with a key: whether a local live source is attached (and wants the lease).
    live_wanted: HashMap<String, watch::Sender<bool>>,
    /// Messages NATS dropped because this node read too slowly (slow consumer), so far: the
    /// follower resyncs when it moves.
    slow_consumer: Arc<AtomicU64>,
    /// Messages each subscription holds before NATS drops for it.
    subscription_capacity: usize,
}

/// Where a relayed stream comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    node: String,
    /// Its source is live (not an auto-DJ).
    live: bool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.config.node).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to NATS (in the background) and starts every cluster task on `tasks`.
    ///
    /// # Errors
    /// When the connection options are unusable (a TLS file that cannot be read is reported
    /// when connecting, in the log).
    pub async fn start(
        node: &Arc<Node>,
        config: ClusterConfig,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, async_nats::ConnectError> {
        let metrics = node.metrics.cluster.clone();
        let capacity = config
            .subscription_capacity
            .unwrap_or_else(|| SUBSCRIPTION_MESSAGES_PER_STREAM * node.config.streams.len().max(4));
        let slow_consumer = Arc::new(AtomicU64::new(0));
        let options = connect_options(&config, metrics.clone(), capacity, &slow_consumer);
        // Returns at once: with `retry_on_initial_connect` the client connects in the
        // background, and the node serves its own streams meanwhile.
        let client = options.connect(config.nats.clone()).await?;
        let live_wanted = node
            .config
            .streams
            .iter()
            .filter(|s| s.key.is_some())
            .map(|s| (s.name.clone(), watch::channel(false).0))
            .collect();
        let cluster = Arc::new(Self {
            streams: node.streams.iter().cloned().collect(),
            max_message_bytes: node.config.max_message_bytes,
            subjects: Subjects::new(&config.prefix),
            config,
            client,
            metrics,
            origins: Mutex::default(),
            peers: Mutex::default(),
            live_wanted,
            slow_consumer,
            subscription_capacity: capacity,
        });
        info!(node = %cluster.config.node, nats = ?cluster.config.nats, "cluster node starting");
        for stream in node.streams.iter() {
            stream.set_gate(&(Arc::clone(&cluster) as Arc<dyn Gate>));
            tasks.spawn(origin::run(Arc::clone(&cluster), Arc::clone(stream), cancel.clone()));
            if let Some(want) = cluster.live_wanted.get(&stream.config().name) {
                let lease = lease::live(
                    Arc::clone(&cluster),
                    Arc::clone(stream),
                    want.subscribe(),
                    cancel.clone(),
                );
                tasks.spawn(lease);
            }
        }
        tasks.spawn(follower::run(Arc::clone(&cluster), cancel.clone()));
        tasks.spawn(command::run(Arc::clone(&cluster), cancel.clone()));
        tasks.spawn(warn_unreachable(Arc::clone(&cluster), cancel.clone()));
        tasks.spawn(stats::run(Arc::clone(&cluster), cancel));
        let _ = node.cluster.set(Arc::clone(&cluster) as Arc<dyn ClusterView>);
        Ok(cluster)
    }

    /// Messages NATS dropped for this node so far because it read too slowly.
    fn slow_consumer_drops(&self) -> u64 {
        self.slow_consumer.load(Ordering::Relaxed)
    }

    /// Runs the auto-DJ of `stream` on whichever node holds its lease: this one while it does.
    #[cfg(feature = "source")]
    pub fn spawn_autodj(
        self: &Arc<Self>,
        tasks: &TaskTracker,
        stream: &Arc<Stream>,
        playlist: &std::path::Path,
        cancel: CancellationToken,
    ) {
        let keeper = lease::autodj(
            Arc::clone(self),
            Arc::clone(stream),
            playlist.to_owned(),
            tasks.clone(),
            cancel,
        );
        tasks.spawn(keeper);
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.config.node
    }

    /// Whether the NATS connection is up.
    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The renewal period of leases and the heartbeat of sessions: a third of the lease.
    fn heartbeat(&self) -> Duration {
        self.config.lease / 3
    }

    /// The stream of this name.
    fn stream(&self, name: &str) -> Option<&Arc<Stream>> {
        self.streams.iter().find(|s| s.config().name == name)
    }

    fn origins(&self) -> std::sync::MutexGuard<'_, HashMap<String, Origin>> {
        self.origins.lock().expect("cluster origins lock poisoned")
    }
}

/// Says once, a lease after start, that NATS cannot be reached (a client that never connected
/// reports nothing else but a debug line per attempt); "connected" follows when it can.
async fn warn_unreachable(cluster: Arc<Cluster>, cancel: CancellationToken) {
    tokio::select! {
        biased;
        () = cancel.cancelled() => return,
        () = tokio::time::sleep(cluster.config.lease) => {}
    }
    if !cluster.connected() {
        warn!(
            nats = %cluster.config.nats.join(", "),
            "cluster: cannot reach nats; serving this node's own streams, other nodes' streams are offline here until it can; retrying"
        );
    }
}

/// The NATS connection: reconnects for ever, never echoes our own messages, logs its events
/// (a slow consumer is counted here and logged by the follower, once per burst).
fn connect_options(
    config: &ClusterConfig,
    metrics: ClusterMetrics,
    capacity: usize,
    slow_consumer: &Arc<AtomicU64>,
) -> ConnectOptions {
    let slow_consumer = Arc::clone(slow_consumer);
    let heartbeat = config.lease / 3;
    let mut options = ConnectOptions::new()
        .name(format!("onair {}", config.node))
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        // Back within a second or two of NATS: 100 ms, doubling, at most the heartbeat.
        .reconnect_delay_callback(move |attempts| {
            let doubled = 100u64 << attempts.min(10);
            Duration::from_millis(doubled).min(heartbeat)
        })
        .subscription_capacity(capacity)
        .connection_timeout(config.lease)
        .event_callback(move |event| {
            let metrics = metrics.clone();
            let slow_consumer = Arc::clone(&slow_consumer);
            async move {
                match event {
                    Event::Connected => {
                        metrics.connected.set(1);
                        info!("cluster: connected to nats");
                    }
                    Event::Disconnected => {
                        metrics.connected.set(0);
                        warn!(
                            "cluster: disconnected from nats; local streams carry on, reconnecting"
                        );
                    }
                    // One per message dropped: counted, logged by the follower once per burst.
                    Event::SlowConsumer(_) => {
                        metrics.dropped("slow_consumer", 1);
                        slow_consumer.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::ServerError(err) => error!(%err, "cluster: nats server error"),
                    // Every failed reconnection attempt: `Disconnected` said it once.
                    Event::ClientError(err) => debug!(%err, "cluster: nats client error"),
                    other => info!(event = %other, "cluster: nats"),
                }
            }
        });
    if let Some((user, password)) = &config.user {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &config.tls_client {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.tls_required {
        options = options.require_tls(true);
    }
    options
}

impl Gate for Cluster {
    fn admit(&self, stream: &Stream, kind: SourceKind) -> Result<(), AttachError> {
        if kind != SourceKind::Live {
            return Ok(());
        }
        let name = &stream.config().name;
        match self.origins().get(name) {
            Some(origin) if origin.live => {
                info!(stream = %name, origin = %origin.node, "live source refused: the stream is live on another node");
                Err(AttachError::Busy)
            }
            _ => Ok(()),
        }
    }

    fn attached(&self, stream: &Stream, kind: SourceKind) {
        if kind == SourceKind::Live {
            if let Some(want) = self.live_wanted.get(&stream.config().name) {
                want.send_replace(true);
            }
        }
    }

    fn detached(&self, stream: &Stream, kind: SourceKind) {
        if kind == SourceKind::Live {
            if let Some(want) = self.live_wanted.get(&stream.config().name) {
                want.send_replace(false);
            }
        }
    }
}

impl ClusterView for Cluster {
    fn node(&self) -> &str {
        &self.config.node
    }

    fn listeners_elsewhere(&self, stream: &str) -> usize {
        stats::listeners_elsewhere(self, stream, false)
    }

    fn hls_listeners_elsewhere(&self, stream: &str) -> usize {
        stats::listeners_elsewhere(self, stream, true)
    }

    fn remote_origin(&self, stream: &str) -> Option<String> {
        self.origins().get(stream).map(|o| o.node.clone())
    }

    fn forward_metadata(&self, stream: &str, origin: &str, metadata: Metadata) -> bool {
        let command = command::Command::Metadata { stream: stream.to_owned(), metadata };
        self.send_command(origin, &command)
    }

    fn forward_kick(&self, stream: &str, origin: &str) -> bool {
        self.send_command(origin, &command::Command::Kick { stream: stream.to_owned() })
    }
}
