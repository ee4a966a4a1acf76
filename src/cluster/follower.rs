//! The follower side: every node follows every stream of the cluster, feeding what other
//! nodes publish into its own ring through a `SourceKind::Remote` handle.
//!
//! One task and one wildcard subscription for all streams (one subscription keeps each
//! origin's order between frames and control messages). Per stream it follows one origin at a
//! time: the first session it hears, replaced by a live one if it follows an auto-DJ, or by a
//! new session of the same node. An origin silent for a lease and a heartbeat is gone: the
//! stream goes offline here (listeners stay connected). Malformed messages are logged and
//! dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::subject::{Kind, Parsed};
use super::wire::{decode_headers, Control, Reassembly, WireError};
use super::{Cluster, Origin};
use crate::protocol::{decode_frame_header, validate_metadata, validate_tracks, MessageError};
use crate::relay::{SourceHandle, SourceKind, Stream};

/// How often silent origins are looked for.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// A malformed message is logged at most this often per stream (the rest are counted).
const WARN_EVERY: Duration = Duration::from_secs(5);

/// What this node follows of one stream.
struct Follow {
    stream: Arc<Stream>,
    handle: Option<SourceHandle>,
    origin: Option<Following>,
    /// After the origin's `end`, the relayed source stays on air (silent) until then, waiting
    /// for the stream's auto-DJ to resume on its node: listeners hear a switch, not offline.
    grace_until: Option<Instant>,
    parts: Reassembly,
    last_warning: Option<Instant>,
    unwarned: u64,
}

struct Following {
    node: String,
    session: u64,
    live: bool,
    last_heard: Instant,
}

/// Follows every stream until `cancel`.
pub(super) async fn run(cluster: Arc<Cluster>, cancel: CancellationToken) {
    let max = cluster.max_message_bytes;
    let mut follows: HashMap<String, Follow> = cluster
        .streams
        .iter()
        .map(|stream| {
            let follow = Follow {
                stream: Arc::clone(stream),
                handle: None,
                origin: None,
                grace_until: None,
                parts: Reassembly::new(max),
                last_warning: None,
                unwarned: 0,
            };
            (stream.config().name.clone(), follow)
        })
        .collect();
    let mut subscription = loop {
        match cluster.client.subscribe(cluster.subjects.all_streams()).await {
            Ok(subscription) => break subscription,
            Err(err) => {
                warn!(%err, "cluster: cannot subscribe to the streams; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(cluster.heartbeat()) => {}
                }
            }
        }
    };
    let timeout = cluster.config.lease + cluster.heartbeat();
    let grace = cluster.heartbeat();
    let mut check = interval(CHECK_EVERY);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            message = subscription.next() => {
                let Some(message) = message else { break };
                let Some(Parsed::Stream { stream, node, kind }) =
                    cluster.subjects.parse(message.subject.as_str())
                else {
                    cluster.metrics.dropped("bad_subject", 1);
                    continue;
                };
                if node == cluster.config.node {
                    continue;
                }
                let Some(follow) = follows.get_mut(stream) else {
                    cluster.metrics.dropped("unknown_stream", 1);
                    debug!(%stream, %node, "cluster: a stream this node does not have");
                    continue;
                };
                if let Err(err) = follow.message(&cluster, node, kind, message.payload, grace) {
                    cluster.metrics.dropped("malformed", 1);
                    follow.warn(node, &err);
                }
            }
            _ = check.tick() => {
                let now = Instant::now();
                for follow in follows.values_mut() {
                    follow.check(&cluster, now, timeout);
                }
            }
        }
    }
    for follow in follows.values_mut() {
        follow.stop(&cluster);
    }
    let _ = subscription.unsubscribe().await;
}

impl Follow {
    fn name(&self) -> &str {
        &self.stream.config().name
    }

    fn message(
        &mut self,
        cluster: &Cluster,
        node: &str,
        kind: Kind,
        payload: Bytes,
        grace: Duration,
    ) -> Result<(), WireError> {
        let current = self.origin.as_mut().filter(|o| o.node == node);
        match kind {
            Kind::Control => self.control(cluster, node, Control::decode(&payload)?, grace),
            Kind::Frame => {
                let Some(origin) = current else { return Ok(()) };
                origin.last_heard = Instant::now();
                self.frame(cluster, payload);
                Ok(())
            }
            Kind::Part => {
                let Some(origin) = current else { return Ok(()) };
                origin.last_heard = Instant::now();
                if let Some(frame) = self.parts.push(&payload)? {
                    self.frame(cluster, frame);
                }
                Ok(())
            }
        }
    }

    fn control(
        &mut self,
        cluster: &Cluster,
        node: &str,
        control: Control,
        grace: Duration,
    ) -> Result<(), WireError> {
        let now = Instant::now();
        match control {
            Control::Session { session, live, tracks, headers, metadata } => {
                if let Some(origin) = &mut self.origin {
                    if origin.node == node && origin.session == session {
                        origin.last_heard = now;
                        return Ok(());
                    }
                    // Another node's session replaces the one followed only if it outranks it
                    // (a live source over an auto-DJ); while two claim one stream, the leases
                    // settle it and the loser sends `end`.
                    if origin.node != node && (origin.live || !live) {
                        let name = &self.stream.config().name;
                        debug!(stream = %name, %node, followed = %origin.node, "cluster: a second origin for a followed stream; ignored");
                        return Ok(());
                    }
                }
                let headers = decode_headers(&headers)?;
                let invalid = |err: MessageError| WireError::Control(err.to_string());
                validate_tracks(&tracks).map_err(invalid)?;
                if let Some(meta) = &metadata {
                    validate_metadata(meta).map_err(invalid)?;
                }
                let stream = Arc::clone(&self.stream);
                let handle = match &mut self.handle {
                    Some(handle) => handle,
                    None => match stream.attach(SourceKind::Remote) {
                        Ok(handle) => self.handle.insert(handle),
                        Err(err) => {
                            warn!(stream = %self.name(), %err, "cluster: cannot relay the stream");
                            return Ok(());
                        }
                    },
                };
                handle.restart(tracks, headers, metadata, live);
                self.parts.clear();
                self.grace_until = None;
                info!(stream = %self.name(), origin = %node, session, source = if live { "live" } else { "autodj" }, "cluster: relaying the stream from its origin");
                self.origin =
                    Some(Following { node: node.to_owned(), session, live, last_heard: now });
                self.publish_origin(cluster);
            }
            Control::Metadata { session, metadata } => {
                validate_metadata(&metadata).map_err(|err| WireError::Control(err.to_string()))?;
                if self.origin.as_ref().is_some_and(|o| o.node == node && o.session == session) {
                    if let Some(handle) = &mut self.handle {
                        if let Err(err) = handle.metadata(metadata) {
                            debug!(stream = %self.name(), %err, "cluster: relayed metadata refused");
                        }
                    }
                }
            }
            Control::End { session } => {
                if self.origin.as_ref().is_some_and(|o| o.node == node && o.session == session) {
                    info!(stream = %self.name(), origin = %node, "cluster: the origin's source left");
                    self.origin = None;
                    self.publish_origin(cluster);
                    // The stream's auto-DJ (on whichever node holds it) resumes next: wait
                    // for it a moment rather than telling listeners the stream is offline.
                    let autodj_elsewhere = self.stream.config().playlist.is_some()
                        && !self.stream.has_source(SourceKind::AutoDj);
                    if autodj_elsewhere {
                        self.grace_until = Some(now + grace);
                    } else {
                        self.handle = None;
                    }
                }
            }
        }
        Ok(())
    }

    fn frame(&mut self, cluster: &Cluster, message: Bytes) {
        let Some(handle) = &mut self.handle else { return };
        let header = match decode_frame_header(&message) {
            Ok(header) => header,
            Err(err) => {
                cluster.metrics.dropped("malformed", 1);
                let node = self.origin.as_ref().map(|o| o.node.clone()).unwrap_or_default();
                return self.warn(&node, &WireError::Control(err.to_string()));
            }
        };
        match handle.frame(header, message) {
            Ok(_) => {
                cluster.metrics.relayed_frames.inc();
            }
            Err(err) => {
                cluster.metrics.dropped("malformed", 1);
                let node = self.origin.as_ref().map(|o| o.node.clone()).unwrap_or_default();
                self.warn(&node, &WireError::Control(err.to_string()));
            }
        }
    }

    /// Gives up on a silent origin, or on waiting for the auto-DJ.
    fn check(&mut self, cluster: &Cluster, now: Instant, timeout: Duration) {
        if let Some(origin) = &self.origin {
            if now.duration_since(origin.last_heard) > timeout {
                warn!(stream = %self.name(), origin = %origin.node, silent_ms = timeout.as_millis() as u64, "cluster: the origin went silent; the stream is offline here");
                self.stop(cluster);
            }
        } else if self.grace_until.is_some_and(|until| now >= until) {
            self.stop(cluster);
        }
    }

    fn stop(&mut self, cluster: &Cluster) {
        self.origin = None;
        self.grace_until = None;
        self.handle = None;
        self.parts.clear();
        self.publish_origin(cluster);
    }

    /// Tells the gate and the API who the origin is now.
    fn publish_origin(&self, cluster: &Cluster) {
        let mut origins = cluster.origins();
        match &self.origin {
            Some(o) => origins
                .insert(self.name().to_owned(), Origin { node: o.node.clone(), live: o.live }),
            None => origins.remove(self.name()),
        };
    }

    /// Logs a dropped message, at most once per `WARN_EVERY` per stream.
    fn warn(&mut self, node: &str, err: &WireError) {
        let now = Instant::now();
        if self.last_warning.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            self.unwarned += 1;
            return;
        }
        let also = std::mem::take(&mut self.unwarned);
        warn!(stream = %self.name(), %node, %err, also_dropped = also, "cluster: message dropped");
        self.last_warning = Some(now);
    }
}
