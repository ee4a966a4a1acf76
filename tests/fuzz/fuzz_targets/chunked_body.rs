//! An Icecast source's chunked body (`Framing::decode`), fed in three arbitrary pieces: the
//! body never holds more than what was sent, and size lines stay bounded.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use onair::ingest::icecast::Framing;

fuzz_target!(|data: &[u8]| {
    let (a, rest) = data.split_at(data.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut framing = Framing::chunked();
    let (mut raw, mut body) = (BytesMut::new(), BytesMut::new());
    for piece in [a, b, c] {
        raw.extend_from_slice(piece);
        match framing.decode(&mut raw, &mut body) {
            Ok(true) => {
                assert!(raw.is_empty(), "a complete body leaves nothing");
                break;
            }
            Ok(false) => assert!(raw.len() <= data.len()),
            Err(_) => break,
        }
        assert!(body.len() <= data.len(), "{} body bytes from {}", body.len(), data.len());
    }
});
