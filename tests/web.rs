//! The web player's files: only its own assets, with the headers its pages need.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status and head of `GET path`.
async fn head_of(relay: &TestRelay, path: &str) -> (u16, String) {
    let mut tcp = within(tokio::net::TcpStream::connect(relay.addr)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: radio.example:8000\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within(tcp.read_to_end(&mut answer)).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap().to_owned();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), head)
}

/// `web_root` served any file under it: dot-files (`.git/config`), `package.json`, READMEs,
/// and whatever a symlink inside it pointed to, anywhere on the disk; pages had no CSP, and
/// their Referer could carry a signed link to other sites.
#[tokio::test]
async fn only_the_players_assets_are_served_with_a_content_security_policy() {
    let web = WebRoot::new("assets");
    web.file("index.html", "<!doctype html><title>player</title>")
        .file("broadcast.html", "<!doctype html><title>broadcast</title>")
        .file("ui.js", "export {};")
        .file("vendor/opus-decoder.min.js", "var x;")
        .file(".env", "KEY=secret")
        .file(".git/config", "[core]")
        .file("package.json", "{}")
        .file("README.md", "# notes")
        .file("vendor/opus-decoder.min.js.map", "{}");
    let outside = WebRoot::new("outside");
    outside.file("secret.js", "the key");
    std::os::unix::fs::symlink(outside.0.join("secret.js"), web.0.join("leak.js")).unwrap();
    std::os::unix::fs::symlink(web.0.join("ui.js"), web.0.join("alias.js")).unwrap();
    let mut config = config(&[("radio", "SECRET")]);
    config.web_root = Some(web.0.clone());
    let relay = TestRelay::start_with(config).await;

    for path in ["/ui.js", "/vendor/opus-decoder.min.js", "/alias.js"] {
        let (status, head) = head_of(&relay, path).await;
        assert_eq!(status, 200, "{path}: {head}");
        assert!(head.contains("X-Content-Type-Options: nosniff"), "{head}");
    }
    for path in [
        "/.env",
        "/.git/config",
        "/package.json",
        "/README.md",
        "/vendor/opus-decoder.min.js.map",
        "/leak.js",
    ] {
        assert_eq!(head_of(&relay, path).await.0, 404, "{path}");
    }
    for page in ["/", "/broadcast"] {
        let (status, head) = head_of(&relay, page).await;
        assert_eq!(status, 200, "{head}");
        let csp = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Security-Policy: "))
            .unwrap_or_else(|| panic!("{page} has no CSP: {head}"));
        for directive in [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "connect-src 'self' ws://radio.example:8000 wss://radio.example:8000",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(directive), "{page}: {directive} missing in {csp}");
        }
        assert!(head.contains("Referrer-Policy: no-referrer"), "{head}");
        assert!(head.contains("X-Content-Type-Options: nosniff"), "{head}");
    }
    relay.shutdown().await;
}
