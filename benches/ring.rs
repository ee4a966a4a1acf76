//! The stream ring: a source pushing frames, and N listener cursors reading them with
//! `Consumer::fill`, as `listener.rs` does on every wake-up.
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
        let mut out = VecDeque::with_capacity(8);
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = push, fan_out
}
criterion_main!(benches);
