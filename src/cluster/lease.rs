//! Leases in a JetStream KV bucket: one live source and one auto-DJ per stream, cluster-wide.
//!
//! The bucket keeps one value per key (`{stream}.live`, `{stream}.autodj`: the holder's node
//! name) for `lease_ms` after its last write (`max_age`), so a dead node's lease lapses by
//! itself. A holder renews every third of that with a compare-and-set on its revision and
//! releases with a delete on leaving, so the next node takes over at once. A node that cannot
//! reach NATS keeps what it runs (its local listeners keep listening) and settles with the
//! others when it is back: whoever holds the lease then keeps the stream, the other stops.

use std::sync::Arc;

use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::subject::{Lease, Subjects};
use super::Cluster;
use crate::relay::{KickReason, Stream};

/// What trying to take a lease found.
#[derive(Debug)]
enum Claim {
    /// This node holds it, at this revision.
    Held(u64),
    /// Another node does.
    Taken(String),
}

/// Why a lease could not be checked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unavailable(String);

fn unavailable(err: impl std::fmt::Display) -> Unavailable {
    Unavailable(err.to_string())
}

impl Cluster {
    /// The lease bucket (created with this node's `lease_ms` if it does not exist).
    ///
    /// NOTE: the bucket's stream is made here with the KV conventions rather than with
    /// `create_key_value`, which first reads account figures that nats-server 2.9 (Debian's)
    /// does not send.
    async fn bucket(&self) -> Result<Store, Unavailable> {
        use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
        let js = async_nats::jetstream::new(self.client.clone());
        let name = self.subjects.bucket();
        let wait = self.config.lease;
        let config = Config {
            name: format!("KV_{name}"),
            description: Some("onair leases: one live source and one auto-DJ per stream".into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age: self.config.lease,
            storage: StorageType::Memory,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            num_replicas: 1,
            ..Config::default()
        };
        let made = timeout(wait, js.get_or_create_stream(config))
            .await
            .map_err(|_| unavailable("nats did not answer"))?;
        if let Err(err) = made {
            return Err(unavailable(format!("cannot make the lease bucket {name}: {err}")));
        }
        timeout(wait, js.get_key_value(name))
            .await
            .map_err(|_| unavailable("nats did not answer"))?
            .map_err(unavailable)
    }

    /// Takes the lease `key` if it is free (or already ours).
    async fn claim(&self, store: &Store, key: &str) -> Result<Claim, Unavailable> {
        let me = Bytes::from(self.config.node.clone());
        let wait = self.config.lease;
        let created = timeout(wait, store.create(key, me.clone()))
            .await
            .map_err(|_| unavailable("nats did not answer"))?;
        match created {
            Ok(revision) => return Ok(Claim::Held(revision)),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {}
            Err(err) => return Err(unavailable(err)),
        }
        let entry = timeout(wait, store.entry(key))
            .await
            .map_err(|_| unavailable("nats did not answer"))?
            .map_err(unavailable)?;
        match entry {
            Some(entry) if entry.operation == Operation::Put && entry.value == me => {
                // Ours from before (a quick reconnect): carry on with it.
                let revision = timeout(wait, store.update(key, me, entry.revision))
                    .await
                    .map_err(|_| unavailable("nats did not answer"))?
                    .map_err(unavailable)?;
                Ok(Claim::Held(revision))
            }
            Some(entry) if entry.operation == Operation::Put => {
                Ok(Claim::Taken(String::from_utf8_lossy(&entry.value).into_owned()))
            }
            // Deleted or lapsed between the two requests: try again next time.
            _ => Err(unavailable("the lease changed hands while it was read")),
        }
    }

    /// Renews the lease `key` held at `revision`.
    async fn renew(&self, store: &Store, key: &str, revision: u64) -> Result<Claim, Unavailable> {
        let me = Bytes::from(self.config.node.clone());
        let updated = timeout(self.config.lease, store.update(key, me, revision))
            .await
            .map_err(|_| unavailable("nats did not answer"))?;
        match updated {
            Ok(revision) => Ok(Claim::Held(revision)),
            // Lapsed (NATS was away longer than the lease) or taken: claim it again.
            Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {
                self.claim(store, key).await
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Gives the lease up so another node can take it at once.
    async fn release(&self, store: &Store, key: &str, revision: u64) {
        match timeout(self.heartbeat(), store.delete_expect_revision(key, Some(revision))).await {
            Ok(Ok(())) => debug!(%key, "cluster: lease released"),
            Ok(Err(err)) => debug!(%key, %err, "cluster: lease not released (it lapses by itself)"),
            Err(_) => debug!(%key, "cluster: lease not released in time (it lapses by itself)"),
        }
    }
}

/// A lease being taken and kept.
struct Keeper {
    cluster: Arc<Cluster>,
    key: String,
    store: Option<Store>,
    /// The revision while this node holds the lease.
    held: Option<u64>,
}

impl Keeper {
    fn new(cluster: Arc<Cluster>, stream: &str, lease: Lease) -> Self {
        Self { cluster, key: Subjects::lease_key(stream, lease), store: None, held: None }
    }

    /// Takes or renews the lease.
    async fn step(&mut self) -> Result<Claim, Unavailable> {
        let store = match &self.store {
            Some(store) => store.clone(),
            None => self.store.insert(self.cluster.bucket().await?).clone(),
        };
        let result = match self.held {
            Some(revision) => self.cluster.renew(&store, &self.key, revision).await,
            None => self.cluster.claim(&store, &self.key).await,
        };
        match &result {
            Ok(Claim::Held(revision)) => self.held = Some(*revision),
            Ok(Claim::Taken(_)) => self.held = None,
            // NATS restarted without the bucket, or is away: look the bucket up again.
            Err(_) => self.store = None,
        }
        result
    }

    async fn release(&mut self) {
        if let (Some(store), Some(revision)) = (&self.store, self.held.take()) {
            self.cluster.release(store, &self.key, revision).await;
        }
    }
}

/// Keeps the live lease of `stream` while a local live source is attached (`want`); a source
/// that finds the stream live on another node is closed.
pub(super) async fn live(
    cluster: Arc<Cluster>,
    stream: Arc<Stream>,
    mut want: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let name = stream.config().name.clone();
    let period = cluster.heartbeat();
    let mut keeper = Keeper::new(Arc::clone(&cluster), &name, Lease::Live);
    let mut warned = false;
    loop {
        let wanted = *want.borrow_and_update();
        if wanted {
            match keeper.step().await {
                Ok(Claim::Held(_)) => warned = false,
                Ok(Claim::Taken(node)) => {
                    warn!(stream = %name, %node, "cluster: the stream is live on another node: closing this node's live source");
                    cluster.metrics.dropped("live_elsewhere", 1);
                    stream.kick_live(KickReason::LiveElsewhere);
                }
                Err(err) => {
                    if !warned {
                        warn!(stream = %name, %err, "cluster: cannot check the live lease; the source stays on air here");
                        warned = true;
                    }
                }
            }
        } else if keeper.held.is_some() {
            keeper.release().await;
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            changed = want.changed() => if changed.is_err() { break },
            () = sleep(period), if wanted => {}
        }
    }
    keeper.release().await;
}

/// Runs the auto-DJ of `stream` on this node while it holds the stream's auto-DJ lease. When
/// NATS cannot be reached for a whole lease, it plays anyway (listeners here hear it) and
/// stops if another node turns out to hold the lease.
#[cfg(feature = "source")]
pub(super) async fn autodj(
    cluster: Arc<Cluster>,
    stream: Arc<Stream>,
    playlist: std::path::PathBuf,
    tasks: tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) {
    let name = stream.config().name.clone();
    let period = cluster.heartbeat();
    let mut keeper = Keeper::new(Arc::clone(&cluster), &name, Lease::AutoDj);
    let mut playing: Option<CancellationToken> = None;
    let mut unreachable_since: Option<tokio::time::Instant> = None;
    loop {
        let play = match keeper.step().await {
            Ok(Claim::Held(_)) => {
                unreachable_since = None;
                true
            }
            Ok(Claim::Taken(node)) => {
                unreachable_since = None;
                if playing.is_some() {
                    tracing::info!(stream = %name, %node, "cluster: another node runs the auto-DJ; stopping it here");
                } else {
                    debug!(stream = %name, %node, "cluster: the auto-DJ runs on another node");
                }
                false
            }
            Err(err) => {
                let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                let alone = since.elapsed() >= cluster.config.lease;
                if alone && playing.is_none() {
                    warn!(stream = %name, %err, "cluster: nats unreachable: playing the auto-DJ here until it is back");
                }
                playing.is_some() || alone
            }
        };
        match (&playing, play) {
            (None, true) => {
                tracing::info!(stream = %name, node = %cluster.config.node, "cluster: running the stream's auto-DJ on this node");
                let token = cancel.child_token();
                tasks.spawn(crate::push::autodj::run(
                    Arc::clone(&stream),
                    playlist.clone(),
                    token.clone(),
                ));
                playing = Some(token);
            }
            (Some(token), false) => {
                token.cancel();
                playing = None;
            }
            _ => {}
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = sleep(period) => {}
        }
    }
    if let Some(token) = playing {
        token.cancel();
    }
    keeper.release().await;
}
