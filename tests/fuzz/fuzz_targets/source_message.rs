//! The `start` and `metadata` JSON a source sends.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(msg) = onair::protocol::decode_source_message(text) {
            let again = onair::protocol::encode_source_message(&msg);
            assert_eq!(onair::protocol::decode_source_message(&again).ok(), Some(msg));
        }
    }
});
