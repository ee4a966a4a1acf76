//! A Vorbis track's header frame as the relay parses it (once per stream, for HTTP
//! listeners): Xiph lacing (`unpack_headers`), the identification and setup headers
//! (`VorbisInfo`, whose modes are read backwards from the setup header) and packet durations
//! (`Durations`). Input: a u16 length, that many bytes of header frame, then packets each
//! prefixed with a u8 length.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onair::format::vorbis::{self, Durations, VorbisInfo};

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else { return };
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (frame, mut packets) = rest.split_at(len);
    let Ok([ident, comment, setup]) = vorbis::unpack_headers(&Bytes::copy_from_slice(frame)) else {
        return;
    };
    assert!(ident.len() + comment.len() + setup.len() <= frame.len());
    let Ok(info) = VorbisInfo::parse(&ident, &setup) else { return };
    // Packing the three headers again gives a frame that unpacks to the same headers.
    let again = vorbis::pack_headers(&ident, &comment, &setup);
    assert_eq!(vorbis::unpack_headers(&again).ok(), Some([ident, comment, setup]));
    let mut durations = Durations::new(info);
    while let Some((&n, rest)) = packets.split_first() {
        let (packet, rest) = rest.split_at(usize::from(n).min(rest.len()));
        if let Ok(samples) = durations.next(packet) {
            assert!(samples <= 8192, "a block is at most 8192 samples: {samples}");
        }
        packets = rest;
    }
});
