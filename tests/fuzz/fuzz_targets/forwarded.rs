//! What clients and proxies put in `Forwarded`, `X-Forwarded-For` and `X-Real-IP`: the
//! client's address comes out of one of them or none, and never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onair::http::Request;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let mut parts = text.splitn(3, '\n');
    let (first, second, third) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    for name in ["Forwarded", "X-Forwarded-For", "X-Real-IP"] {
        let request = Request {
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: vec![
                (name.into(), first.into()),
                (name.into(), second.into()),
                ("X-Forwarded-For".into(), third.into()),
            ],
            version: 1,
        };
        // Trust every other address, so chains are walked as far as they go.
        let found = onair::proxy::client_address(&request, |ip| ip.to_string().len() % 2 == 0);
        if let Some((addr, _via)) = found {
            // An address is only ever read from the text: it has a `.` or a `:` at least.
            assert!(text.contains(['.', ':']), "{addr} from {text:?}");
        }
    }
});
