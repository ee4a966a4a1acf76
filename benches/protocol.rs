//! The wire format: frame header decode/encode and the listener-side WebSocket framing.
// criterion_group! generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use onair::protocol::{decode_frame_header, encode_frame, FrameHeader, FLAG_KEYFRAME};
use onair::websocket::{ClientReader, WireFrame};

fn frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for size in [320usize, 20_000] {
        let payload = vec![0x5A; size];
        let header = FrameHeader { flags: FLAG_KEYFRAME, track: 0, pts: 123_456_789 };
        let message = encode_frame(header, &payload);
        group.throughput(Throughput::Bytes(message.len() as u64));
        group.bench_with_input(BenchmarkId::new("decode_header", size), &message, |b, m| {
            b.iter(|| decode_frame_header(black_box(m)).expect("valid header"))
        });
        group.bench_with_input(BenchmarkId::new("encode", size), &payload, |b, p| {
            b.iter(|| encode_frame(black_box(header), black_box(p)))
        });
        // Framed once per frame for every listener: a header computed beside a shared payload.
        group.bench_with_input(BenchmarkId::new("websocket_frame", size), &message, |b, m| {
            b.iter(|| WireFrame::binary(black_box(m.clone())))
        });
    }
    group.finish();
}

fn client_frames(c: &mut Criterion) {
    // What a listener sends: masked pings and pongs.
    let mut wire = Vec::new();
    for _ in 0..64 {
        wire.extend_from_slice(&[0x89, 0x84, 1, 2, 3, 4, b'p' ^ 1, b'i' ^ 2, b'n' ^ 3, b'g' ^ 4]);
    }
    let wire = Bytes::from(wire);
    let mut group = c.benchmark_group("client_reader");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("64_pings", |b| {
        b.iter(|| {
            let mut reader = ClientReader::new(4096, black_box(&wire));
            let mut n = 0;
            while let Ok(Some(_)) = reader.next_event() {
                n += 1;
            }
            n
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = frames, client_frames
}
criterion_main!(benches);
