//! Real-time pacing: each frame is released when its `pts` is due on an absolute clock.
//!
//! Frame `pts` is due at `anchor_instant + (pts - anchor_pts)`; deadlines are computed from the
//! anchor, never by adding up sleeps, so there is no drift over hours. The anchor is set by the
//! first frame after `new` or `reanchor` (e.g. after a reconnect), and reset when the source
//! falls more than `MAX_LATENESS` behind (a stalled input), so it never bursts a backlog.

use std::future::Future;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use super::playout::{Output, Playout};

/// How late a frame may be before the clock is re-anchored instead of catching up.
pub const MAX_LATENESS: Duration = Duration::from_secs(1);

/// The absolute clock that decides when each frame is due.
#[derive(Debug, Clone)]
pub struct Pacer {
    fast: bool,
    anchor: Option<(Instant, u64)>,
}

impl Pacer {
    /// A pacer; with `fast` every frame is due at once.
    pub fn new(fast: bool) -> Self {
        Pacer { fast, anchor: None }
    }

    /// Makes the next frame due immediately and the following ones relative to it.
    pub fn reanchor(&mut self) {
        self.anchor = None;
    }

    /// When the frame with `pts` is due, or `None` if it is due now (or pacing is off).
    pub fn deadline(&mut self, pts: u64) -> Option<Instant> {
        if self.fast {
            return None;
        }
        let now = Instant::now();
        let Some((at, base)) = self.anchor else {
            self.anchor = Some((now, pts));
            return None;
        };
        let Some(offset) = pts.checked_sub(base) else {
            // pts went backwards: a new timeline.
            self.anchor = Some((now, pts));
            return None;
        };
        let due = at + Duration::from_micros(offset);
        if now > due + MAX_LATENESS {
            tracing::debug!(
                late_ms = (now - due).as_millis() as u64,
                "fell behind; re-anchored the clock"
            );
            self.anchor = Some((now, pts));
            return None;
        }
        (due > now).then_some(due)
    }

    /// Waits until the frame with `pts` is due. Cancel safe.
    pub async fn wait(&mut self, pts: u64) {
        if let Some(due) = self.deadline(pts) {
            sleep_until(due).await;
        }
    }
}

/// Anything that yields playout outputs in stream order.
pub trait OutputSource {
    /// The next output, or `None` at the end. Must be cancel safe.
    fn next(&mut self) -> impl Future<Output = Option<Output>> + Send;
}

impl OutputSource for Playout {
    fn next(&mut self) -> impl Future<Output = Option<Output>> + Send {
        Playout::next(self)
    }
}

/// A source whose outputs come out in real time: frames when due, metadata right away
/// (it precedes the frame it applies to).
#[derive(Debug)]
pub struct Paced<S> {
    source: S,
    pacer: Pacer,
    pending: Option<Output>,
}

impl<S: OutputSource> Paced<S> {
    /// Paces `source`; with `fast`, passes it through.
    pub fn new(source: S, fast: bool) -> Self {
        Paced { source, pacer: Pacer::new(fast), pending: None }
    }

    /// The next output at its due time; `None` at the end. Cancel safe: an output pulled
    /// but not yet due is kept for the next call.
    pub async fn next(&mut self) -> Option<Output> {
        if self.pending.is_none() {
            self.pending = Some(self.source.next().await?);
        }
        if let Some(Output::Frame { pts, .. }) = &self.pending {
            let pts = *pts;
            self.pacer.wait(pts).await;
        }
        self.pending.take()
    }

    /// Makes the next frame due immediately (e.g. after the consumer paused).
    pub fn reanchor(&mut self) {
        self.pacer.reanchor();
    }

    /// The wrapped source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The wrapped source, mutably (e.g. `Playout::take_error`).
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::encode::FRAME_DURATION_US;
    use bytes::Bytes;
    use futures_util::FutureExt;
    use std::collections::VecDeque;

    struct Frames(VecDeque<Output>);

    impl Frames {
        fn new(count: u64) -> Self {
            let mut out = VecDeque::new();
            out.push_back(Output::Metadata(crate::protocol::Metadata::default()));
            for n in 0..count {
                out.push_back(Output::Frame { pts: n * FRAME_DURATION_US, data: Bytes::new() });
            }
            Frames(out)
        }
    }

    impl OutputSource for Frames {
        fn next(&mut self) -> impl Future<Output = Option<Output>> + Send {
            std::future::ready(self.0.pop_front())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn frame_n_is_released_at_start_plus_n_times_20ms_without_drift() {
        let mut paced = Paced::new(Frames::new(10_000), false);
        assert!(matches!(paced.next().await, Some(Output::Metadata(_))));
        let start = Instant::now();
        let mut n = 0u64;
        while let Some(output) = paced.next().await {
            let Output::Frame { pts, .. } = output else { panic!("unexpected metadata") };
            assert_eq!(pts, n * FRAME_DURATION_US);
            assert_eq!(Instant::now() - start, Duration::from_millis(20 * n), "frame {n}");
            n += 1;
        }
        assert_eq!(n, 10_000);
        assert_eq!(Instant::now() - start, Duration::from_millis(20 * 9_999), "200 s, no drift");
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_is_not_released_early_and_next_is_cancel_safe() {
        let mut paced = Paced::new(Frames::new(3), false);
        paced.next().await; // metadata
        assert!(paced.next().now_or_never().is_some(), "frame 0 is due at once");
        assert!(paced.next().now_or_never().is_none(), "frame 1 is not due yet");
        tokio::time::advance(Duration::from_millis(19)).await;
        assert!(paced.next().now_or_never().is_none(), "still 1 ms early");
        tokio::time::advance(Duration::from_millis(1)).await;
        let Some(Some(Output::Frame { pts, .. })) = paced.next().now_or_never() else {
            panic!("frame 1 was due")
        };
        assert_eq!(pts, FRAME_DURATION_US, "the cancelled call kept the frame");
    }

    #[tokio::test(start_paused = true)]
    async fn fast_mode_is_not_paced() {
        let mut paced = Paced::new(Frames::new(1000), true);
        let start = Instant::now();
        let mut count = 0;
        while paced.next().now_or_never().expect("never waits").is_some() {
            count += 1;
        }
        assert_eq!(count, 1001);
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn reanchoring_restarts_the_clock_at_the_next_frame() {
        let mut pacer = Pacer::new(false);
        assert_eq!(pacer.deadline(0), None);
        tokio::time::advance(Duration::from_secs(30)).await; // e.g. disconnected
        pacer.reanchor();
        assert_eq!(pacer.deadline(FRAME_DURATION_US), None, "due at once after re-anchoring");
        let now = Instant::now();
        assert_eq!(pacer.deadline(3 * FRAME_DURATION_US), Some(now + Duration::from_millis(40)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_delay_is_caught_up_but_a_stall_reanchors() {
        let mut pacer = Pacer::new(false);
        pacer.deadline(0);
        tokio::time::advance(Duration::from_millis(100)).await;
        // Frames 1-5 are late by less than MAX_LATENESS: due now (caught up in a burst).
        assert_eq!(pacer.deadline(FRAME_DURATION_US), None);
        assert_eq!(pacer.deadline(5 * FRAME_DURATION_US), None);
        let start = Instant::now() - Duration::from_millis(100);
        assert_eq!(pacer.deadline(6 * FRAME_DURATION_US), Some(start + Duration::from_millis(120)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(pacer.deadline(7 * FRAME_DURATION_US), None);
        let now = Instant::now();
        assert_eq!(pacer.deadline(8 * FRAME_DURATION_US), Some(now + Duration::from_millis(20)));
    }
}
