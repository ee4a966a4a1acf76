//! Admin commands for another node: `/admin/metadata` and `/admin/killsource` on a node that
//! only relays a stream are sent to the stream's origin, which applies them to its source (an
//! MP3 source's titles come this way, and a balancer may send them to any node).
//!
//! `{prefix}.n.{node}.admin` carries JSON: the stream and what to do. The request was
//! authenticated by the node that received it; the origin trusts its NATS.

use std::sync::Arc;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Cluster;
use crate::protocol::{validate_metadata, Metadata};
use crate::relay::KickReason;

/// A command for the origin of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Command {
    /// Set now playing of the source on air.
    Metadata {
        /// The stream.
        stream: String,
        /// Now playing.
        metadata: Metadata,
    },
    /// Close the live source.
    Kick {
        /// The stream.
        stream: String,
    },
}

impl Cluster {
    /// Sends `command` to `origin` (fire and forget); false when NATS is away.
    pub(super) fn send_command(&self, origin: &str, command: &Command) -> bool {
        if !self.connected() {
            return false;
        }
        let subject = async_nats::Subject::from(self.subjects.admin(origin));
        let payload = serde_json::to_vec(command).expect("commands serialize");
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(err) = client.publish(subject, payload.into()).await {
                debug!(%err, "cluster: admin command not sent");
            }
        });
        true
    }
}

/// Applies the commands other nodes send to this one until `cancel`.
pub(super) async fn run(cluster: Arc<Cluster>, cancel: CancellationToken) {
    let subject = cluster.subjects.admin(&cluster.config.node);
    let mut subscription = loop {
        match cluster.client.subscribe(subject.clone()).await {
            Ok(subscription) => break subscription,
            Err(err) => {
                warn!(%err, "cluster: cannot subscribe to admin commands; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(cluster.heartbeat()) => {}
                }
            }
        }
    };
    loop {
        let message = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            message = subscription.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let command = match serde_json::from_slice::<Command>(&message.payload) {
            Ok(command) => command,
            Err(err) => {
                cluster.metrics.dropped("malformed", 1);
                debug!(%err, "cluster: malformed admin command dropped");
                continue;
            }
        };
        let name = match &command {
            Command::Metadata { stream, .. } | Command::Kick { stream } => stream.clone(),
        };
        let Some(stream) = cluster.stream(&name) else {
            cluster.metrics.dropped("unknown_stream", 1);
            continue;
        };
        match command {
            Command::Metadata { metadata, .. } => {
                if validate_metadata(&metadata).is_err() {
                    cluster.metrics.dropped("malformed", 1);
                    continue;
                }
                let title = metadata.display_title();
                if stream.set_metadata(metadata) {
                    info!(stream = %name, %title, "now playing set by an admin request to another node");
                }
            }
            Command::Kick { .. } => {
                if stream.kick_live(KickReason::Operator) {
                    info!(stream = %name, "source removal requested by an admin request to another node");
                }
            }
        }
    }
}
