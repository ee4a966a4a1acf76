//! What every connection of one onair process (a node) shares: its configuration, its
//! streams, its metrics and its directory of who is connected.
//!
//! Built once at start and shared read-only (`Arc<Node>`) by the server, the ingest and
//! listener sessions and the admin API; everything mutable inside has its own lock.

use std::sync::Arc;

use crate::auth::LoginThrottle;
use crate::config::Config;
use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::relay::Streams;

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
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("streams", &self.streams).finish_non_exhaustive()
    }
}

impl Node {
    /// The streams and metrics for `config`.
    pub fn new(config: Config) -> Arc<Self> {
        let metrics = Metrics::new();
        let streams = Streams::new(&config.streams, &metrics);
        let logins = LoginThrottle::new(&config);
        Arc::new(Self { config, streams, metrics, directory: Directory::new(), logins })
    }
}
