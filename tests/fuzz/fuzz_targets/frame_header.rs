//! The 10-byte frame header every source message starts with.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = onair::protocol::decode_frame_header(data) {
        let again = onair::protocol::encode_frame(header, &data[10..]);
        assert_eq!(&again[..], data, "decode then encode gives back the same bytes");
    }
});
