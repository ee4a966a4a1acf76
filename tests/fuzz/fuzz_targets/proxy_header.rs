//! What a load balancer (or anyone who reaches a `proxy_protocol` port) sends first: PROXY
//! protocol v1 lines and v2 headers. A header is never longer than its bound or the input,
//! and every prefix of a complete header asks for more instead of failing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onair::proxy::protocol::{parse, MAX_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, len))) = parse(data) {
        assert!(len <= data.len() && len <= MAX_HEADER_BYTES);
        assert!(matches!(header.version, 1 | 2));
        for end in 0..len {
            assert!(matches!(parse(&data[..end]), Ok(None)), "a prefix of {len} bytes at {end}");
        }
    }
});
