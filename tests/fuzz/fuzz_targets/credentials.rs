//! What peers put where credentials go: `Authorization: Basic` (base64, then user:password),
//! `Bearer` and `?key=`, and the admin API's query strings (percent-decoding, Latin-1).
#![no_main]
use libfuzzer_sys::fuzz_target;
use onair::http::Request;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    for scheme in ["Basic ", "Bearer ", "basic  ", ""] {
        let request = Request {
            method: "GET".into(),
            path: "/admin/metadata".into(),
            query: Some(text.clone()),
            headers: vec![("Authorization".into(), format!("{scheme}{text}"))],
            version: 1,
        };
        if let Some((user, password)) = onair::auth::basic_auth(&request) {
            assert!(!user.contains(':'), "the user name ends at the first colon");
            assert!(user.len() + password.len() < text.len(), "base64 shrinks");
        }
        let _ = onair::auth::presents_source_key(&request);
        let _ = onair::auth::is_cross_site(&request);
    }
    let pairs = onair::icecast::admin::query_pairs(&text);
    assert!(pairs.len() <= 32);
    for (key, value) in pairs {
        assert!(key.chars().count() + value.chars().count() <= text.len());
    }
});
