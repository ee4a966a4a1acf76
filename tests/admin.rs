//! The admin API, every credential check and what public endpoints reveal, probed the way a
//! web page, a guesser or a scraper would.
#![allow(clippy::unwrap_used)]

mod common;
mod icecast_support;

use common::*;
use icecast_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `request` from the local address `source` (any of 127.0.0.0/8) and returns the
/// status and head of the answer, without waiting for the body (a 101 keeps the socket open).
async fn head_from(source: &str, relay: &TestRelay, request: &str) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut tcp = within(socket.connect(relay.addr)).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if within(tcp.read(&mut byte)).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    (head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), head)
}

/// A source's WebSocket upgrade with this `Authorization` or query.
fn ingest(path_and_query: &str, authorization: Option<&str>) -> String {
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    )
}

/// A GET with extra header lines.
fn get_request(path: &str, headers: &[&str]) -> String {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request + "\r\n"
}

const KEY: &str = "the-radio-key-0123";
const ADMIN: &str = "the-admin-password";

/// A page on any site could run admin commands through a logged-in admin's browser
/// (`<img src=.../admin/killsource?...>`), and read the answers (`Access-Control-Allow-Origin:
/// *`, a preflight that allowed `Authorization`). Measured in the issue: a killsource with
/// `Origin: http://evil.example` and `Sec-Fetch-Site: cross-site` took the source off air.
#[tokio::test]
async fn cross_site_admin_requests_are_refused_and_admin_answers_carry_no_cors() {
    let mut config = config(&[("radio", KEY)]);
    config.admin_password = Some(ADMIN.into());
    let relay = TestRelay::start_with(config).await;
    let _src = source(&relay, "radio", KEY).await;
    wait_live(&relay, "radio", 0, None).await;
    let admin = basic("admin", ADMIN);
    let kill = "/admin/killsource?mount=/radio.ogg";
    for page in [
        vec!["Origin: http://evil.example", "Sec-Fetch-Site: cross-site"],
        vec!["Sec-Fetch-Site: cross-site"], // an <img>: no Origin
        vec!["Sec-Fetch-Site: same-site"],
        vec!["Origin: http://evil.example"],
    ] {
        let headers: Vec<&str> = page.iter().copied().chain([admin.as_str()]).collect();
        let (status, head, _) = get(&relay, kill, &headers).await;
        assert_eq!(status, 403, "{page:?}: {head}");
        assert!(!head.contains("Access-Control-Allow-Origin"), "{head}");
    }
    assert_eq!(stream_info(&relay, "radio").await["live"], true, "still on air");
    let preflight = format!(
        "OPTIONS {kill} HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\n\
         Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n\r\n"
    );
    let (_, head, _) = exchange(&relay, preflight.as_bytes()).await;
    assert!(!head.contains("Access-Control-Allow"), "no CORS for /admin: {head}");
    let preflight = preflight.replace(kill, "/radio.ogg");
    let (_, head, _) = exchange(&relay, preflight.as_bytes()).await;
    assert!(head.contains("Access-Control-Allow-Origin"), "CORS for streams: {head}");
    assert!(!head.to_ascii_lowercase().contains("allow-headers: authorization"), "{head}");
    // The status stays readable by pages; the relay's own page and tools may run commands.
    let (_, head, _) = get(&relay, "/status-json.xsl", &["Origin: http://evil.example"]).await;
    assert!(head.contains("Access-Control-Allow-Origin: *"), "{head}");
    let own = format!("Origin: http://{}", relay.addr);
    let path = "/admin/metadata?mount=/radio.ogg&mode=updinfo&song=Fine";
    let (status, head, _) = get(&relay, path, &[&own, "Sec-Fetch-Site: same-origin", &admin]).await;
    assert_eq!(status, 200, "{head}");
    assert!(!head.contains("Access-Control-Allow-Origin"), "{head}");
    let (status, _, _) = get(&relay, kill, &[&admin]).await;
    assert_eq!(status, 200, "curl, liquidsoap and butt send neither header");
    relay.shutdown().await;
}

/// Keys and passwords could be guessed as fast as the network allowed.
#[tokio::test]
async fn failed_logins_from_one_address_are_throttled_without_slowing_others() {
    let mut config = config(&[("radio", KEY)]);
    config.admin_password = Some(ADMIN.into());
    let relay = TestRelay::start_with(config).await;
    let guesser = "127.0.0.2";
    // Ten failures a minute, mixed over every kind of check.
    for wrong in ["Bearer nope", "Bearer the-radio-key-0124"] {
        assert_eq!(head_from(guesser, &relay, &ingest("/ingest/radio", Some(wrong))).await.0, 401);
    }
    assert_eq!(head_from(guesser, &relay, &ingest("/ingest/radio?key=x", None)).await.0, 401);
    for password in ["hackme", "the-radio-key", "changeme"] {
        let request = format!(
            "SOURCE /radio.ogg HTTP/1.0\r\n{}\r\nContent-Type: application/ogg\r\n\r\n",
            basic("source", password)
        );
        assert_eq!(head_from(guesser, &relay, &request).await.0, 401, "{password}");
    }
    for password in ["admin", "hackme", "the-admin-passwore", "the-radio-key-0122"] {
        let request = get_request("/admin/listclients?mount=/radio", &[&basic("admin", password)]);
        assert_eq!(head_from(guesser, &relay, &request).await.0, 401, "{password}");
    }
    // Asking without credentials (libshout's first request, a browser's) is no guess.
    for _ in 0..20 {
        let request = "SOURCE /radio.ogg HTTP/1.0\r\nContent-Type: application/ogg\r\n\r\n";
        assert_eq!(head_from("127.0.0.4", &relay, request).await.0, 401);
    }
    // The guesser is refused now, even with the right key; nobody else is.
    let right = format!("Bearer {KEY}");
    let (status, head) = head_from(guesser, &relay, &ingest("/ingest/radio", Some(&right))).await;
    assert_eq!(status, 429, "{head}");
    assert!(head.contains("Retry-After: "), "{head}");
    let admin = get_request("/admin/listclients?mount=/radio", &[&basic("admin", ADMIN)]);
    assert_eq!(head_from(guesser, &relay, &admin).await.0, 429);
    assert_eq!(head_from("127.0.0.3", &relay, &admin).await.0, 200);
    let icecast = format!("SOURCE /radio.ogg HTTP/1.0\r\n{}\r\n\r\n", basic("source", KEY));
    assert_eq!(head_from("127.0.0.4", &relay, &icecast).await.0, 200, "no guesses counted");
    let (_, metrics) = http_get(&relay, "/metrics").await;
    assert!(metrics.contains("onair_refusals_total{reason=\"login_throttle\"} 2"), "{metrics}");
    relay.shutdown().await;
}

/// `/admin/listclients` gave every listener's address and User-Agent to whoever held a
/// stream's key (a presenter's tool); Icecast gives them to the admin only.
#[tokio::test]
async fn listener_addresses_are_for_the_admin_only() {
    let mut config = config(&[("radio", KEY)]);
    config.admin_password = Some(ADMIN.into());
    let relay = TestRelay::start_with(config.clone()).await;
    let (_ws, _) = listener(&relay, "radio").await;
    let path = "/admin/listclients?mount=/radio";
    let (status, _, body) = get(&relay, path, &[&basic("source", KEY)]).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(!String::from_utf8_lossy(&body).contains("127.0.0.1"));
    let (status, _, body) = get(&relay, path, &[&basic("admin", ADMIN)]).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("<IP>127.0.0.1</IP>"));
    // The key still runs its own stream's other commands.
    let song = "/admin/metadata?mount=/radio&mode=updinfo&song=x";
    let (status, _, _) = get(&relay, song, &[&basic("source", KEY)]).await;
    assert_eq!(status, 400, "authenticated; the stream just has no source");
    relay.shutdown().await;
    // Without an admin_password nobody lists listeners.
    config.admin_password = None;
    let relay = TestRelay::start_with(config).await;
    assert_eq!(get(&relay, path, &[&basic("source", KEY)]).await.0, 403);
    relay.shutdown().await;
}

/// A private stream (`listen_secret`) showed its title, artist and tracks in `/api/streams`
/// and `/status-json.xsl`, and its name and figures in `/metrics`, to anyone.
#[tokio::test]
async fn public_listings_show_a_private_stream_at_most_as_name_and_live() {
    let mut config = config(&[("radio", KEY), ("secret", "the-secret-key-0123")]);
    config.streams[1].listen_secret = Some("a-long-listen-secret".into());
    config.admin_password = Some(ADMIN.into());
    let relay = TestRelay::start_with(config).await;
    let mut src = source(&relay, "secret", "the-secret-key-0123").await;
    let meta = r#"{"type":"metadata","title":"Hidden Title","artist":"Hidden Artist"}"#;
    futures_util::SinkExt::send(&mut src, tokio_tungstenite::tungstenite::Message::text(meta))
        .await
        .unwrap();
    futures_util::SinkExt::send(
        &mut src,
        tokio_tungstenite::tungstenite::Message::binary(frame(0, b"x")),
    )
    .await
    .unwrap();
    let _public = source(&relay, "radio", KEY).await;
    wait_live(&relay, "radio", 0, None).await;
    // The private source's metadata came before its frame: once the frame is counted, both are in.
    within(async {
        loop {
            let (_, _, full) = get(&relay, "/metrics", &[&basic("admin", ADMIN)]).await;
            if String::from_utf8_lossy(&full).contains("onair_frames_in_total{stream=\"secret\"} 1")
            {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;

    let (_, body) = http_get(&relay, "/api/streams").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let secret = json["streams"].as_array().unwrap().iter().find(|s| s["name"] == "secret");
    let secret = secret.unwrap().as_object().unwrap();
    let mut keys: Vec<&str> = secret.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["live", "name", "private"], "{body}");
    assert_eq!((&secret["live"], &secret["private"]), (&true.into(), &true.into()));
    assert!(!body.contains("Hidden"), "{body}");

    for path in ["/status-json.xsl", "/status-json.xsl?mount=/secret.ogg"] {
        let (_, _, body) = get(&relay, path, &[]).await;
        let body = String::from_utf8_lossy(&body);
        assert!(!body.contains("secret") && !body.contains("Hidden"), "{path}: {body}");
    }
    assert!(String::from_utf8_lossy(&get(&relay, "/status-json.xsl", &[]).await.2)
        .contains("/radio.ogg"));

    let (_, _, anonymous) = get(&relay, "/metrics", &[]).await;
    let anonymous = String::from_utf8_lossy(&anonymous);
    assert!(!anonymous.contains("stream=\"secret\""), "{anonymous}");
    assert!(anonymous.contains("onair_live{stream=\"radio\"} 1"), "{anonymous}");
    for credentials in [basic("prometheus", ADMIN), format!("Authorization: Bearer {ADMIN}")] {
        let (status, _, full) = get(&relay, "/metrics", &[&credentials]).await;
        assert_eq!(status, 200);
        let full = String::from_utf8_lossy(&full);
        assert!(full.contains("onair_live{stream=\"secret\"} 1"), "{full}");
    }
    assert_eq!(get(&relay, "/metrics", &[&basic("prometheus", KEY)]).await.0, 401);
    relay.shutdown().await;
}
