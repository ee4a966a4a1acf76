//! HTTP request heads from any peer, fed in arbitrary pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = bytes::BytesMut::from(data);
    if let Ok(Some(request)) = onair::http::parse_request(&mut buf) {
        let _ = request.query_param("key");
        let _ = request.header_has_token("connection", "upgrade");
        assert!(buf.len() < data.len(), "a parsed head is consumed");
    }
});
