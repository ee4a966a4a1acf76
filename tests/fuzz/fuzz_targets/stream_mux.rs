//! The HTTP listeners' muxer, fed once per stream with what a source sends (header frames are
//! peer bytes: an OpusHead or three Vorbis headers, parsed here): tracks, headers, frames (some
//! at a chained link's edge) and now playing in any order. Must never panic. Input: a codec
//! byte, then records of a kind byte and a u16 length (a Vorbis header frame is kilobytes).
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onair::format::mux::StreamMux;
use onair::format::LinkEdge;
use onair::protocol::{Codec, Metadata, Track};

fuzz_target!(|data: &[u8]| {
    let Some((&codec, mut rest)) = data.split_first() else { return };
    let codec = match codec % 3 {
        0 => Codec::Opus,
        1 => Codec::Vorbis,
        _ => Codec::Mp3,
    };
    let mut mux = StreamMux::default();
    mux.source(&[Track::audio(0, codec, 48_000, 2, None)]);
    while let Some((&[kind, hi, lo], tail)) = rest.split_first_chunk::<3>() {
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let (payload, tail) = tail.split_at(len.min(tail.len()));
        let payload = Bytes::copy_from_slice(payload);
        match kind % 5 {
            0 => mux.header(0, &payload),
            1 => {
                let edge = match kind >> 5 {
                    0 => None,
                    1 => Some(LinkEdge::First),
                    n => Some(LinkEdge::Last { trim: u32::from(n) * 300 }),
                };
                let _ = mux.frame_at_edge(0, &payload, edge);
            }
            2 => mux.metadata(Some(Metadata {
                title: Some(String::from_utf8_lossy(&payload).into_owned()),
                ..Metadata::default()
            })),
            3 => mux.source(&[Track::audio(kind >> 4, codec, 44_100, 1, None)]),
            _ => {
                let _ = mux.frame(kind >> 4, &payload);
            }
        }
        rest = tail;
    }
});
