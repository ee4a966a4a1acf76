//! The stream ring: a source pushing frames, and N listener cursors reading them with
//! `Consumer::fill`, as a listener driver does on every wake-up; single-threaded (the work per
//! listener) and with the publisher and readers on threads of their own (the lock contended,
//! as between a source's task and the driver threads).
// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use onair::metrics::StreamMetrics;
use onair::protocol::{encode_frame, Codec, FrameHeader, Track, FLAG_KEYFRAME};
use onair::relay::{SourceHandle, SourceKind, Stream};
use onair::websocket::WireFrame;
use onair::StreamConfig;

fn opus() -> Vec<Track> {
    vec![Track::audio(0, Codec::Opus, 48_000, 2, None)]
}

fn stream() -> (Arc<Stream>, SourceHandle) {
    let mut config = StreamConfig::new("bench", Some("k"));
    config.max_listeners = 1 << 20;
    config.burst = Duration::ZERO;
    let stream = Stream::new(config, StreamMetrics::default());
    let mut source = stream.attach(SourceKind::Live).expect("no other source");
    source.start(opus()).expect("first start");
    (stream, source)
}

fn frame(pts: u64) -> (FrameHeader, bytes::Bytes) {
    let header = FrameHeader { flags: FLAG_KEYFRAME, track: 0, pts };
    (header, encode_frame(header, &[0x55; 320]))
}

fn push(c: &mut Criterion) {
    let (_stream, mut source) = stream();
    let (header, message) = frame(0);
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    // A full ring: every push also evicts the oldest frame.
    for _ in 0..2_000 {
        source.frame(header, message.clone()).expect("started");
    }
    group.bench_function("push_320B_full_ring", |b| {
        b.iter(|| source.frame(black_box(header), message.clone()).expect("started"))
    });
    group.finish();
}

/// One frame pushed, then each of N consumers takes it: the per-listener work of a fan-out.
fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_fan_out");
    for n in [1usize, 100, 1_000, 10_000] {
        let (stream, mut source) = stream();
        let mut consumers: Vec<_> =
            (0..n).map(|_| stream.subscribe().expect("room for listeners").0).collect();
        let mut out: VecDeque<WireFrame> = VecDeque::with_capacity(8);
        let (header, message) = frame(0);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                source.frame(header, message.clone()).expect("started");
                for consumer in &mut consumers {
                    let fill = consumer.fill(&mut out, 64 << 10);
                    black_box(fill);
                    out.clear();
                }
            })
        });
    }
    group.finish();
}

/// Frames one publisher pushes per measured run of `fan_out_threads`.
const PUBLISHED: u64 = 2_000;

/// A publisher on this thread and `threads` reader threads holding `per_thread` consumers
/// each, all reading as fast as they can: how long until every consumer has had (or skipped)
/// every frame. Elements: frames handed to consumers.
fn fan_out_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_fan_out_threads");
    for (threads, per_thread) in [(1usize, 1_000usize), (2, 500), (4, 250)] {
        group.throughput(Throughput::Elements(PUBLISHED * (threads * per_thread) as u64));
        let id = BenchmarkId::from_parameter(format!("{threads}x{per_thread}"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                (0..iters).map(|_| publish_to_reader_threads(threads, per_thread)).sum()
            })
        });
    }
    group.finish();
}

fn publish_to_reader_threads(threads: usize, per_thread: usize) -> Duration {
    let (stream, mut source) = stream();
    let start = Arc::new(std::sync::Barrier::new(threads + 1));
    let readers: Vec<_> = (0..threads)
        .map(|_| {
            let mut consumers: Vec<_> =
                (0..per_thread).map(|_| stream.subscribe().expect("room").0).collect();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let mut out: VecDeque<WireFrame> = VecDeque::with_capacity(64);
                let mut seen = vec![0u64; consumers.len()];
                start.wait();
                while seen.iter().any(|&n| n < PUBLISHED) {
                    let mut progress = false;
                    for (consumer, seen) in consumers.iter_mut().zip(&mut seen) {
                        let fill = consumer.fill(&mut out, 64 << 10);
                        *seen += fill.frames + fill.skipped;
                        progress |= fill.frames > 0;
                        out.clear();
                    }
                    if !progress {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    start.wait();
    let began = std::time::Instant::now();
    for pts in 0..PUBLISHED {
        let (header, message) = frame(pts);
        source.frame(header, message).expect("started");
    }
    for reader in readers {
        reader.join().expect("reader thread");
    }
    began.elapsed()
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = push, fan_out, fan_out_threads
}
criterion_main!(benches);
