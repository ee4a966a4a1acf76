//! What every connection of one onair process (a node) shares: its configuration, its
//! streams, its metrics and its directory of who is connected.
//!
//! Built once at start and shared read-only (`Arc<Node>`) by the server, the ingest and
//! listener sessions and the admin API; everything mutable inside has its own lock.

use std::sync::{Arc, OnceLock};

use crate::auth::LoginThrottle;
use crate::config::Config;
use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::protocol::Metadata;
use crate::relay::{SourceKind, Stream, Streams};

/// One node's shared state.
pub struct Node {
    /// The configuration it runs with.
    pub config: Config,
    /// Its streams, one per `[[streams]]` entry.
    pub streams: Streams,
    /// Its counters and gauges (`/metrics`).
    pub metrics: Metrics,
    /// Its connected sources and listeners (`/admin/listclients`, `/status-json.xsl`).
    pub directory: Directory,
    /// Failed logins per address, for every key and password check.
    pub logins: LoginThrottle,
    /// What the cluster knows, once it started (never set on a node that runs alone).
    pub cluster: OnceLock<Arc<dyn ClusterView>>,
}

/// What a cluster (`cluster/`) tells the rest of the node: for the API and the status pages.
pub trait ClusterView: Send + Sync {
    /// This node's name.
    fn node(&self) -> &str;
    /// Listeners of `stream` on the other nodes, as they last reported them.
    fn listeners_elsewhere(&self, stream: &str) -> usize;
    /// HLS clients of `stream` on the other nodes, as they last reported them.
    fn hls_listeners_elsewhere(&self, stream: &str) -> usize;
    /// The node whose source `stream` plays when it is relayed from another node.
    fn remote_origin(&self, stream: &str) -> Option<String>;
    /// Sends now playing to `origin`, the node `stream`'s source is on; false when it cannot.
    fn forward_metadata(&self, stream: &str, origin: &str, metadata: Metadata) -> bool;
    /// Asks `origin` to close `stream`'s live source; false when it cannot.
    fn forward_kick(&self, stream: &str, origin: &str) -> bool;
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("streams", &self.streams).finish_non_exhaustive()
    }
}

impl Node {
    /// Listeners of `stream` on every node: this node's and what the others last reported.
    pub fn cluster_listeners(&self, stream: &Stream) -> usize {
        let elsewhere =
            self.cluster.get().map_or(0, |c| c.listeners_elsewhere(&stream.config().name));
        stream.listener_count() + elsewhere
    }

    /// HLS clients of `stream` on every node: `here` (this node's, counted by the caller) and
    /// what the others last reported.
    pub fn cluster_hls_listeners(&self, stream: &Stream, here: usize) -> usize {
        let elsewhere =
            self.cluster.get().map_or(0, |c| c.hls_listeners_elsewhere(&stream.config().name));
        here + elsewhere
    }

    /// The other node `stream`'s source is on, when it is relayed from there.
    pub fn relayed_from(&self, stream: &Stream) -> Option<(&dyn ClusterView, String)> {
        let cluster = self.cluster.get()?;
        if stream.on_air_kind()? != SourceKind::Remote {
            return None;
        }
        Some((cluster.as_ref(), cluster.remote_origin(&stream.config().name)?))
    }

    /// The node whose source `stream` plays: this one's name when it is local, `None` when the
    /// stream is offline or the node runs alone.
    pub fn origin(&self, stream: &Stream) -> Option<String> {
        let cluster = self.cluster.get()?;
        match stream.on_air_kind()? {
            SourceKind::Remote => cluster.remote_origin(&stream.config().name),
            SourceKind::Live | SourceKind::AutoDj => Some(cluster.node().to_owned()),
        }
    }

    /// The streams and metrics for `config`.
    pub fn new(config: Config) -> Arc<Self> {
        let metrics = Metrics::new();
        let streams = Streams::new(&config.streams, &metrics);
        let logins = LoginThrottle::new(&config);
        Arc::new(Self {
            config,
            streams,
            metrics,
            directory: Directory::new(),
            logins,
            cluster: OnceLock::new(),
        })
    }
}
