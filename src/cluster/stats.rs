//! Cluster-wide listener counts: every node publishes its own every `STATS_INTERVAL` and
//! keeps the others' last report; a node silent for three intervals is forgotten.

use std::sync::Arc;

use async_nats::Subject;
use futures_util::StreamExt;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::subject::Parsed;
use super::wire::Stats;
use super::{Cluster, STATS_EXPIRY_INTERVALS, STATS_INTERVAL};
use crate::relay::Stream;

/// What another node last reported.
#[derive(Debug)]
pub(super) struct Peer {
    at: Instant,
    stats: Stats,
}

/// Listeners of `stream` on the other nodes that reported lately: stream listeners, or HLS
/// clients with `hls`.
pub(super) fn listeners_elsewhere(cluster: &Cluster, stream: &str, hls: bool) -> usize {
    let peers = cluster.peers.lock().expect("cluster peers lock poisoned");
    let fresh = STATS_INTERVAL * STATS_EXPIRY_INTERVALS;
    peers
        .values()
        .filter(|p| p.at.elapsed() < fresh)
        .filter_map(|p| if hls { &p.stats.hls } else { &p.stats.listeners }.get(stream))
        .sum()
}

/// Publishes this node's counts and collects the others' until `cancel`.
pub(super) async fn run(cluster: Arc<Cluster>, cancel: CancellationToken) {
    let mut subscription = loop {
        match cluster.client.subscribe(cluster.subjects.all_stats()).await {
            Ok(subscription) => break subscription,
            Err(err) => {
                warn!(%err, "cluster: cannot subscribe to node stats; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(STATS_INTERVAL) => {}
                }
            }
        }
    };
    let own = Subject::from(cluster.subjects.stats(&cluster.config.node));
    let mut tick = interval(STATS_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            message = subscription.next() => {
                let Some(message) = message else { break };
                let Some(Parsed::Stats { node }) = cluster.subjects.parse(message.subject.as_str()) else {
                    cluster.metrics.dropped("bad_subject", 1);
                    continue;
                };
                if node == cluster.config.node {
                    continue;
                }
                match serde_json::from_slice::<Stats>(&message.payload) {
                    Ok(stats) => {
                        let mut peers = cluster.peers.lock().expect("cluster peers lock poisoned");
                        // Bounded by the nodes that report; forgotten ones are swept here.
                        peers.retain(|_, p| p.at.elapsed() < STATS_INTERVAL * STATS_EXPIRY_INTERVALS);
                        peers.insert(node.to_owned(), Peer { at: Instant::now(), stats });
                    }
                    Err(err) => {
                        cluster.metrics.dropped("malformed", 1);
                        debug!(%node, %err, "cluster: malformed stats dropped");
                    }
                }
            }
            _ = tick.tick() => {
                if !cluster.connected() {
                    continue;
                }
                let counts = |count: fn(&Stream) -> usize| {
                    cluster
                        .streams
                        .iter()
                        .map(|s| (s.config().name.clone(), count(s)))
                        .filter(|(_, n)| *n > 0)
                        .collect()
                };
                let stats = Stats {
                    listeners: counts(Stream::listener_count),
                    hls: counts(Stream::hls_listener_count),
                };
                let payload = serde_json::to_vec(&stats).expect("stats serialize");
                if let Err(err) = cluster.client.publish(own.clone(), payload.into()).await {
                    debug!(%err, "cluster: stats not published");
                }
            }
        }
    }
}
