//! The follower side: every node follows every stream of the cluster, feeding what other
//! nodes publish into its own ring through a `SourceKind::Remote` handle.
//!
//! One task and one wildcard subscription for all streams (one subscription keeps each
//! origin's order between frames and control messages). Per stream it follows one origin at a
//! time: the first session it hears, replaced by a live one if it follows an auto-DJ, or by a
//! new session of the same node. An origin silent for a lease and a heartbeat is gone: the
//! stream goes offline here (listeners stay connected). Malformed messages are logged and
//! dropped.
//!
//! When this node reads too slowly and NATS drops messages for it (a slow consumer), what
//! waits in the subscription is stale: like a lagging listener, the follower skips the frames
//! queued there (control messages still count), and each stream resumes at its next keyframe.
//! It logs once per burst; the origin and the other nodes never wait for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Message, Subscriber};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::subject::{Kind, Parsed};
use super::wire::{decode_edge, decode_headers, Control, Reassembly, WireError, EDGE_HEADER};
use super::{Cluster, Origin};
use crate::format::LinkEdge;
use crate::protocol::{decode_frame_header, validate_metadata, validate_tracks, MessageError};
use crate::relay::{SourceHandle, SourceKind, Stream};

/// How often silent origins are looked for.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// A malformed message is logged at most this often per stream (the rest are counted).
const WARN_EVERY: Duration = Duration::from_secs(5);
/// A slow-consumer burst is over once NATS dropped nothing for this long.
const BURST_QUIET: Duration = Duration::from_secs(1);

/// What this node follows of one stream.
struct Follow {
    stream: Arc<Stream>,
    handle: Option<SourceHandle>,
    origin: Option<Following>,
    /// After the origin's `end`, the relayed source stays on air (silent) until then, waiting
    /// for the stream's auto-DJ to resume on its node: listeners hear a switch, not offline.
    grace_until: Option<Instant>,
    parts: Reassembly,
    /// Frames were lost (slow consumer): the next frame on air must be a keyframe.
    resync: bool,
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
                resync: false,
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
    let mut slow = SlowBurst::new(cluster.slow_consumer_drops());
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            message = subscription.next() => {
                let Some(message) = message else { break };
                let dropped = slow.new_drops(cluster.slow_consumer_drops());
                if dropped == 0 {
                    dispatch(&cluster, &mut follows, message, grace, false);
                    continue;
                }
                // NATS dropped messages for us: this one and those queued behind it are stale.
                let mut skipped = dispatch(&cluster, &mut follows, message, grace, true);
                skipped += drain(&cluster, &mut subscription, &mut follows, grace);
                for follow in follows.values_mut() {
                    follow.lost_frames();
                }
                cluster.metrics.dropped("stale", skipped);
                slow.record(dropped, skipped, Instant::now());
            }
            _ = check.tick() => {
                let now = Instant::now();
                for follow in follows.values_mut() {
                    follow.check(&cluster, now, timeout);
                }
                slow.check(now);
            }
        }
    }
    for follow in follows.values_mut() {
        follow.stop(&cluster);
    }
    let _ = subscription.unsubscribe().await;
}

/// Hands one message to the stream it is for; a `stale` frame or part is skipped instead.
/// Returns how many frames were skipped (0 or 1).
fn dispatch(
    cluster: &Cluster,
    follows: &mut HashMap<String, Follow>,
    message: Message,
    grace: Duration,
    stale: bool,
) -> u64 {
    let Some(Parsed::Stream { stream, node, kind }) =
        cluster.subjects.parse(message.subject.as_str())
    else {
        cluster.metrics.dropped("bad_subject", 1);
        return 0;
    };
    if node == cluster.config.node {
        return 0;
    }
    let Some(follow) = follows.get_mut(stream) else {
        cluster.metrics.dropped("unknown_stream", 1);
        debug!(%stream, %node, "cluster: a stream this node does not have");
        return 0;
    };
    if stale && kind != Kind::Control {
        return 1;
    }
    let edge = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(EDGE_HEADER))
        .map(|value| decode_edge(value.as_str()))
        .transpose();
    let handled =
        edge.and_then(|edge| follow.message(cluster, node, kind, message.payload, edge, grace));
    if let Err(err) = handled {
        cluster.metrics.dropped("malformed", 1);
        follow.warn(node, &err);
    }
    0
}

/// Skips what waits in the subscription (at most its capacity: what was queued when NATS
/// started dropping), applying control messages; returns the frames skipped.
fn drain(
    cluster: &Cluster,
    subscription: &mut Subscriber,
    follows: &mut HashMap<String, Follow>,
    grace: Duration,
) -> u64 {
    let mut skipped = 0;
    for _ in 0..cluster.subscription_capacity {
        match subscription.next().now_or_never() {
            Some(Some(message)) => skipped += dispatch(cluster, follows, message, grace, true),
            _ => break,
        }
    }
    skipped
}

/// NATS dropping messages for this node: one warning when a burst starts, one line when it
/// has been quiet for `BURST_QUIET`, whatever the number of drops between.
#[derive(Debug)]
struct SlowBurst {
    /// The slow-consumer count last seen.
    seen: u64,
    /// The burst under way: last drop, messages dropped by NATS, frames skipped here.
    burst: Option<(Instant, u64, u64)>,
}

impl SlowBurst {
    fn new(seen: u64) -> Self {
        Self { seen, burst: None }
    }

    /// Messages dropped since the last look, given the count so far.
    fn new_drops(&mut self, total: u64) -> u64 {
        let new = total.saturating_sub(self.seen);
        self.seen = total;
        new
    }

    /// NATS dropped `dropped` messages and the follower skipped `skipped` stale frames.
    /// Returns whether this started a burst (and was logged).
    fn record(&mut self, dropped: u64, skipped: u64, now: Instant) -> bool {
        match &mut self.burst {
            Some((last, total_dropped, total_skipped)) => {
                *last = now;
                *total_dropped += dropped;
                *total_skipped += skipped;
                false
            }
            None => {
                warn!(dropped, skipped, "cluster: this node reads nats too slowly (slow consumer): messages were dropped; skipping stale frames to the live edge");
                self.burst = Some((now, dropped, skipped));
                true
            }
        }
    }

    /// Ends a burst that has been quiet long enough; returns whether it did.
    fn check(&mut self, now: Instant) -> bool {
        match self.burst {
            Some((last, dropped, skipped)) if now.duration_since(last) >= BURST_QUIET => {
                info!(dropped, skipped, "cluster: caught up with nats after a slow-consumer burst");
                self.burst = None;
                true
            }
            _ => false,
        }
    }
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
        edge: Option<LinkEdge>,
        grace: Duration,
    ) -> Result<(), WireError> {
        let current = self.origin.as_mut().filter(|o| o.node == node);
        match kind {
            Kind::Control => self.control(cluster, node, Control::decode(&payload)?, grace),
            Kind::Frame => {
                let Some(origin) = current else { return Ok(()) };
                origin.last_heard = Instant::now();
                self.frame(cluster, payload, edge);
                Ok(())
            }
            Kind::Part => {
                let Some(origin) = current else { return Ok(()) };
                origin.last_heard = Instant::now();
                if let Some(frame) = self.parts.push(&payload)? {
                    self.frame(cluster, frame, edge);
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

    /// Frames of this stream may have been lost: a part put together is incomplete, and the
    /// next frame to go on air is a keyframe (decoders restart there, as after a skip).
    fn lost_frames(&mut self) {
        self.parts.clear();
        self.resync = self.handle.is_some();
    }

    /// Puts a frame from the origin on air here, at its link's edge if it is at one.
    fn frame(&mut self, cluster: &Cluster, message: Bytes, edge: Option<LinkEdge>) {
        let Some(handle) = &mut self.handle else { return };
        let header = match decode_frame_header(&message) {
            Ok(header) => header,
            Err(err) => {
                cluster.metrics.dropped("malformed", 1);
                let node = self.origin.as_ref().map(|o| o.node.clone()).unwrap_or_default();
                return self.warn(&node, &WireError::Control(err.to_string()));
            }
        };
        if self.resync {
            if !header.is_keyframe() && !header.is_header() {
                cluster.metrics.dropped("stale", 1);
                return;
            }
            debug!(stream = %self.stream.config().name, pts = header.pts, "cluster: resumed at a keyframe after frames were lost");
            self.resync = false;
        }
        match handle.frame_at_edge(header, message, edge) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_consumer_burst_is_logged_once_and_ends_after_a_quiet_second() {
        let start = Instant::now();
        let mut slow = SlowBurst::new(5);
        assert_eq!(slow.new_drops(5), 0, "drops from before the follower started are old");
        assert_eq!(slow.new_drops(9), 4);
        assert!(slow.record(4, 10, start), "the first drop starts a burst: one warning");
        for i in 1..100 {
            let at = start + Duration::from_millis(i * 10);
            assert!(!slow.record(1, 1, at), "more drops in the burst: no more lines");
            assert!(!slow.check(at));
        }
        let last = start + Duration::from_millis(990);
        assert!(!slow.check(last + BURST_QUIET - Duration::from_millis(1)));
        assert!(slow.check(last + BURST_QUIET), "quiet for a second: over, one line");
        assert!(slow.burst.is_none());
        assert!(slow.record(1, 0, last + BURST_QUIET * 2), "a new burst warns again");
    }
}
