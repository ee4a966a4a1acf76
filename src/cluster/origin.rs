//! The origin side: what this node's own sources play (live or auto-DJ), published once for
//! every other node.
//!
//! One task per stream reads the stream through a [`Tap`](crate::relay::Tap) (not a listener)
//! and publishes each frame as the source sent it (where a chained Ogg link ends or starts, in
//! a NATS header), a `session` control message when a local
//! source goes on air (and every heartbeat, so late nodes pick it up), `metadata` and `end`.
//! Sessions relayed from another node are never published again. The ring is the only queue:
//! if NATS is slow or away, the tap falls behind, frames are dropped and counted, and the
//! source is never held up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::subject::Kind;
use super::wire::{encode_edge, split, Control, EDGE_HEADER};
use super::Cluster;
use crate::format::LinkEdge;
use crate::protocol::{Metadata, Track};
use crate::relay::{SourceKind, Stream, Tap, Tapped};

/// Most tap entries handled per turn (others wait in the ring).
const TAP_BATCH: usize = 256;
/// Assumed until the server says otherwise (its default).
const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;

/// A session of a local source, as published.
struct Local {
    session: u64,
    live: bool,
    tracks: Vec<Track>,
    /// Header frames by track, as the source sent them.
    headers: Vec<(u8, Bytes)>,
    metadata: Option<Metadata>,
    /// The `session` message is sent once the headers that follow the switch are in.
    announced: bool,
}

/// The publishing side of one stream.
struct Publisher {
    cluster: Arc<Cluster>,
    stream: String,
    frame: Subject,
    part: Subject,
    control: Subject,
    local: Option<Local>,
    last_session: u64,
    max_payload: usize,
}

/// Publishes what `stream`'s local sources play until `cancel`.
pub(super) async fn run(cluster: Arc<Cluster>, stream: Arc<Stream>, cancel: CancellationToken) {
    let name = stream.config().name.clone();
    let me = cluster.config.node.clone();
    let subject = |kind| Subject::from(cluster.subjects.stream(&name, &me, kind));
    let mut publisher = Publisher {
        frame: subject(Kind::Frame),
        part: subject(Kind::Part),
        control: subject(Kind::Control),
        cluster: Arc::clone(&cluster),
        stream: name,
        local: None,
        last_session: 0,
        max_payload: DEFAULT_MAX_PAYLOAD,
    };
    let (mut tap, first): (Tap, Vec<Tapped>) = stream.session_tap();
    let mut batch: VecDeque<Tapped> = first.into();
    let mut heartbeat = interval(cluster.heartbeat());
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        while !batch.is_empty() {
            for item in batch.drain(..) {
                publisher.item(item).await;
            }
            publisher.announce().await;
            let lost = tap.fill(&mut batch, TAP_BATCH);
            if lost > 0 {
                cluster.metrics.dropped("lagged", lost);
                warn!(stream = %publisher.stream, entries = lost, "cluster: publishing fell behind the stream; skipped to the live edge");
            }
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tap.changed() => {
                tap.fill(&mut batch, TAP_BATCH);
            }
            _ = heartbeat.tick() => {
                // Zero until the first connection: keep the default until the server says.
                let max_payload = cluster.client.server_info().max_payload;
                if max_payload > 0 {
                    publisher.max_payload = max_payload.max(64);
                }
                publisher.heartbeat().await;
            }
        }
    }
    publisher.end().await;
}

impl Publisher {
    async fn item(&mut self, item: Tapped) {
        match item {
            Tapped::Session {
                kind: Some(kind @ (SourceKind::Live | SourceKind::AutoDj)),
                tracks,
            } => {
                self.end().await;
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
                let session =
                    u64::try_from(now.as_micros()).unwrap_or(u64::MAX).max(self.last_session + 1);
                self.last_session = session;
                let live = kind == SourceKind::Live;
                info!(stream = %self.stream, session, source = kind.as_str(), "cluster: publishing this node's source");
                self.local = Some(Local {
                    session,
                    live,
                    tracks,
                    headers: Vec::new(),
                    metadata: None,
                    announced: false,
                });
            }
            // Offline, relayed from elsewhere, or too old to tell: not ours to publish.
            Tapped::Session { .. } => self.end().await,
            Tapped::Frame(frame) => {
                let Some(local) = &mut self.local else { return };
                let header = frame.header();
                if header.is_header() {
                    match local.headers.iter_mut().find(|(t, _)| *t == header.track) {
                        Some(stored) => stored.1 = frame.message().clone(),
                        None => local.headers.push((header.track, frame.message().clone())),
                    }
                    if !local.announced {
                        return;
                    }
                }
                self.announce().await;
                self.publish_frame(frame.message().clone(), frame.edge()).await;
            }
            Tapped::Metadata(meta) => {
                let Some(local) = &mut self.local else { return };
                local.metadata = Some(meta.clone());
                if local.announced {
                    let control = Control::Metadata { session: local.session, metadata: meta };
                    self.publish(self.control.clone(), control.encode()).await;
                }
            }
        }
    }

    /// Sends the session message of a new local session, once.
    async fn announce(&mut self) {
        let Some(local) = &mut self.local else { return };
        if local.announced {
            return;
        }
        local.announced = true;
        self.heartbeat().await;
    }

    /// The current session's state, again (a late node picks it up).
    async fn heartbeat(&mut self) {
        let Some(local) = &self.local else { return };
        if !local.announced {
            return;
        }
        let headers: Vec<Bytes> = local.headers.iter().map(|(_, h)| h.clone()).collect();
        let control = Control::session(
            local.session,
            local.live,
            local.tracks.clone(),
            &headers,
            local.metadata.clone(),
        );
        self.publish(self.control.clone(), control.encode()).await;
    }

    /// The local session is over.
    async fn end(&mut self) {
        if let Some(local) = self.local.take() {
            debug!(stream = %self.stream, session = local.session, "cluster: local session ended");
            if local.announced {
                let control = Control::End { session: local.session };
                self.publish(self.control.clone(), control.encode()).await;
            }
        }
    }

    /// Publishes a frame whole or in parts; its link edge, if any, rides on the message that
    /// completes it.
    async fn publish_frame(&mut self, message: Bytes, edge: Option<LinkEdge>) {
        let metrics = &self.cluster.metrics;
        if !self.cluster.connected() {
            metrics.dropped("disconnected", 1);
            return;
        }
        let len = message.len() as u64;
        if message.len() <= self.max_payload {
            self.publish_with_edge(self.frame.clone(), message, edge).await;
        } else {
            debug!(stream = %self.stream, bytes = message.len(), max_payload = self.max_payload, "cluster: frame sent in parts");
            let mut parts = split(&message, self.max_payload).into_iter().peekable();
            while let Some(part) = parts.next() {
                let last = parts.peek().is_none();
                self.publish_with_edge(self.part.clone(), part, edge.filter(|_| last)).await;
            }
        }
        metrics.published_frames.inc();
        metrics.published_bytes.inc_by(len);
    }

    async fn publish(&self, subject: Subject, payload: Bytes) {
        self.publish_with_edge(subject, payload, None).await;
    }

    async fn publish_with_edge(&self, subject: Subject, payload: Bytes, edge: Option<LinkEdge>) {
        if !self.cluster.connected() {
            self.cluster.metrics.dropped("disconnected", 1);
            return;
        }
        let client = &self.cluster.client;
        let published = match edge {
            None => client.publish(subject, payload).await,
            Some(edge) => {
                let mut headers = HeaderMap::new();
                headers.insert(EDGE_HEADER, encode_edge(edge));
                client.publish_with_headers(subject, headers, payload).await
            }
        };
        if let Err(err) = published {
            self.cluster.metrics.dropped("publish_failed", 1);
            debug!(stream = %self.stream, %err, "cluster: publish failed");
        }
    }
}
