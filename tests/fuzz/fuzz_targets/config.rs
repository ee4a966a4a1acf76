//! The TOML config file: errors must point inside the file, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(err) = onair::Config::parse(text, "fuzz.toml") {
            assert!(err.line <= text.lines().count().max(1) + 1, "{err}");
        }
    }
});
