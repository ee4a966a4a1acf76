//! A private stream's signed links: `expires` and `sig` as a listener sends them. A link that
//! verifies is exactly what `sign` writes (one spelling per link), and within the lifetime.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onair::auth::{sign, verify};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (Some(stream), Some(expires), sig) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let now = 1_700_000_000;
    let max = 7 * 86_400;
    if verify("a-listen-secret-of-16+", stream, Some(expires), sig, now, max).is_ok() {
        let expires: u64 = expires.parse().expect("a valid link's expiry is a number");
        assert_eq!(sig, Some(sign("a-listen-secret-of-16+", stream, expires).as_str()));
        assert!(expires >= now && expires - now <= max);
    }
    // A link minted now verifies, whatever the stream name.
    let good = sign("a-listen-secret-of-16+", stream, now + 60);
    let expiry = (now + 60).to_string();
    assert!(verify("a-listen-secret-of-16+", stream, Some(&expiry), Some(&good), now, max).is_ok());
});
