//! Icecast source bodies: container sniffing, Ogg pages and packets, Opus and Vorbis headers,
//! MP3 frame sync, fed in three arbitrary pieces. Must never panic or buffer without bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onair::format::demux::Demuxer;

fuzz_target!(|data: &[u8]| {
    let mut demuxer = Demuxer::new(1 << 16, Some(128_000));
    let mut events = Vec::new();
    let (a, rest) = data.split_at(data.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut buf = bytes::BytesMut::new();
    for piece in [a, b, c] {
        buf.extend_from_slice(piece);
        if demuxer.push(&mut buf, &mut events).is_err() {
            return;
        }
        assert!(buf.len() <= data.len());
        events.clear();
    }
});
