//! WebSocket frames from listeners (and the echo endpoint), split at an arbitrary point.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onair::websocket::ClientReader;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    for keep in [false, true] {
        let mut reader = if keep {
            ClientReader::keeping_messages(1 << 16, &data[..split])
        } else {
            ClientReader::new(4096, &data[..split])
        };
        let mut fed = false;
        loop {
            match reader.next_event() {
                Ok(Some(_)) => continue,
                Ok(None) if !fed => {
                    reader.buffer().extend_from_slice(&data[split..]);
                    fed = true;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});
