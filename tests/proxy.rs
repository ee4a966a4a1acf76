//! onair behind real proxies: nginx (HTTP, WebSocket upgrades, `X-Forwarded-For`), HAProxy
//! (TCP mode, PROXY protocol v1 and v2; HTTP mode), Caddy, and nginx in front of HAProxy,
//! started here on free ports with the configurations of docs/DEPLOY.md (only addresses and
//! ports changed), stopped after. Clients bind to 127.0.0.2, 127.0.0.3 ... before they
//! connect, the proxies reach onair from 127.0.0.1, and onair trusts 127.0.0.1/32 alone: the
//! address onair reports tells who it believed.
//!
//! A missing nginx, haproxy or caddy skips its tests with a loud message, unless
//! ONAIR_REQUIRE_TOOLS is set (`make test` sets it; `make deps-test` installs them), which
//! fails them.
#![allow(clippy::unwrap_used)]

mod common;
mod icecast_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use icecast_support::{basic, opus_file, split_response};
use onair::proxy::TrustedProxies;
use onair::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

const KEY: &str = "radio-key-0123456789";
const ADMIN: &str = "admin-password-0123456789";
const DEPLOY: &str = include_str!("../docs/DEPLOY.md");

/// The path of `program`, or `None` (after a loud message) to skip the test; with
/// ONAIR_REQUIRE_TOOLS set a missing program fails the test instead.
fn tool(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    let found = dirs.map(|dir: PathBuf| dir.join(program)).find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("ONAIR_REQUIRE_TOOLS").is_none(),
            "{program} is not installed: run `make deps-test`"
        );
        eprintln!(
            "\n**********\nSKIPPED: {program} is not installed (`make deps-test` installs it; \
             ONAIR_REQUIRE_TOOLS=1 makes this a failure)\n**********\n"
        );
    }
    found
}

/// The `n`th fenced block of docs/DEPLOY.md in `lang`.
fn doc_block(lang: &str, n: usize) -> &'static str {
    let fence = format!("```{lang}\n");
    let block = DEPLOY.split(fence.as_str()).nth(n + 1).unwrap_or_else(|| panic!("{fence}#{n}"));
    block.split("```").next().unwrap()
}

/// `text` with `from` replaced, which must be there.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "docs/DEPLOY.md changed: no `{from}` in\n{text}");
    text.replace(from, to)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A proxy this test started: stopped with SIGTERM (nginx's master then stops its workers)
/// and, failing that, killed; its directory removed.
struct Daemon {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Daemon {
    fn spawn(program: PathBuf, args: &[&str], dir: PathBuf, port: u16) -> Self {
        let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
        let child = Command::new(&program)
            .args(args)
            // Caddy keeps its state under these (its own directory, not the user's).
            .env("XDG_DATA_HOME", &dir)
            .env("XDG_CONFIG_HOME", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("{}: {err}", program.display()));
        let mut daemon = Self { child, dir, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(daemon.addr).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("{} exited ({status}): {}", program.display(), daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen: {}",
                program.display(),
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn log(&self) -> String {
        let stderr = std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
        let error_log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        format!("{stderr}{error_log}")
    }

    fn scratch(name: &str, port: u16) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("onair-{name}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// nginx with DEPLOY.md's configuration in front of `upstream`.
    fn nginx(upstream: SocketAddr) -> Option<Self> {
        let program = tool("nginx")?;
        let port = free_port();
        let dir = Self::scratch("nginx", port);
        let block = substitute(
            doc_block("nginx", 0),
            "server 127.0.0.1:8000;",
            &format!("server {upstream};"),
        );
        let block = substitute(&block, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{}}\nhttp {{\naccess_log off;\n\
             client_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
             {block}}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let conf = format!("{d}/nginx.conf");
        let prefix = format!("{d}/");
        Some(Self::spawn(program, &["-c", &conf, "-p", &prefix], dir, port))
    }

    /// HAProxy with DEPLOY.md's TCP-mode configuration in front of `upstream`, sending
    /// `send_proxy` (`send-proxy-v2` or `send-proxy`); with `None`, its HTTP-mode one.
    fn haproxy(upstream: SocketAddr, send_proxy: Option<&str>) -> Option<Self> {
        let program = tool("haproxy")?;
        let port = free_port();
        let dir = Self::scratch("haproxy", port);
        let (n, documented, server) = match send_proxy {
            Some(send) => (
                0,
                "server onair 127.0.0.1:8000 send-proxy-v2",
                format!("server onair {upstream} {send}"),
            ),
            None => (1, "server onair 127.0.0.1:8000", format!("server onair {upstream}")),
        };
        let bind = format!("bind 127.0.0.1:{port}");
        let block = substitute(doc_block("haproxy", n), "bind :80", &bind);
        let block = substitute(&block, documented, &server);
        // A global section that needs no root: no user, chroot or log socket.
        let conf = format!("global\n    maxconn 512\n\n{block}");
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, conf).unwrap();
        let path = path.display().to_string();
        Some(Self::spawn(program, &["-f", &path, "-db"], dir, port))
    }

    /// Caddy with DEPLOY.md's configuration in front of `upstream`, plain HTTP on a free port
    /// of 127.0.0.1 for any host name (the documented site name would get a certificate), no
    /// admin endpoint (tests run side by side), its state in its own directory.
    fn caddy(upstream: SocketAddr) -> Option<Self> {
        let program = tool("caddy")?;
        let port = free_port();
        let dir = Self::scratch("caddy", port);
        // Any Host (the clients send the documented name), on loopback only.
        let site = format!("http://:{port} {{\n    bind 127.0.0.1");
        let block = substitute(doc_block("caddy", 0), "radio.example {", &site);
        let block = substitute(
            &block,
            "reverse_proxy 127.0.0.1:8000",
            &format!("reverse_proxy {upstream}"),
        );
        let conf = format!("{{\n    admin off\n}}\n{block}");
        let path = dir.join("Caddyfile");
        std::fs::write(&path, conf).unwrap();
        let path = path.display().to_string();
        let args = ["run", "--config", &path, "--adapter", "caddyfile"];
        Some(Self::spawn(program, &args, dir, port))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: signals our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A relay with stream `radio` that trusts 127.0.0.1/32 alone and exempts nobody from the
/// per-address limit: the proxy's address must be spared by trust alone.
fn relay_config(proxy_protocol: bool) -> Config {
    let mut config = config(&[("radio", KEY)]);
    config.trusted_proxies = TrustedProxies::new(vec!["127.0.0.1/32".parse().unwrap()]);
    config.ip_limit_exempt = Vec::new();
    config.admin_password = Some(ADMIN.into());
    config.proxy_protocol = proxy_protocol;
    config
}

/// A TCP connection from `local` (a loopback address) to `to`.
async fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    within(socket.connect(to)).await.unwrap()
}

type PlainWs = WebSocketStream<TcpStream>;

/// A WebSocket to `path` at `to` from `local`, with extra headers; the refusal's status.
async fn ws_from(
    local: &str,
    to: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    proxy_line: Option<&[u8]>,
) -> Result<PlainWs, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut socket = connect_from(local, to).await;
    if let Some(line) = proxy_line {
        socket.write_all(line).await.unwrap();
    }
    let mut request = format!("ws://{to}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes());
        request.headers_mut().append(name.unwrap(), value.parse().unwrap());
    }
    match within(tokio_tungstenite::client_async(request, socket)).await {
        Ok((mut ws, _)) => {
            let hello = next_plain_event(&mut ws).await;
            assert_eq!(hello["type"], "hello", "{hello}");
            Ok(ws)
        }
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("{path} via {to}: {err}"),
    }
}

/// A WebSocket source of `radio` from `local`; the refusal's status.
async fn ingest_from(
    local: &str,
    to: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<PlainWs, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = connect_from(local, to).await;
    let mut request = format!("ws://{to}/ingest/radio").into_client_request().unwrap();
    for (name, value) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes());
        request.headers_mut().append(name.unwrap(), value.parse().unwrap());
    }
    match within(tokio_tungstenite::client_async(request, socket)).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("ingest via {to}: {err}"),
    }
}

async fn next_plain_event(ws: &mut PlainWs) -> serde_json::Value {
    use futures_util::StreamExt;
    loop {
        match within(ws.next()).await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                return serde_json::from_str(&text).unwrap()
            }
            _ => continue,
        }
    }
}

/// A short request from `local` (its whole answer read): (status, head, body).
async fn request_from(
    local: &str,
    to: SocketAddr,
    request: &str,
    proxy_line: Option<&[u8]>,
) -> (u16, String, Vec<u8>) {
    let mut socket = connect_from(local, to).await;
    // A refused connection may be closed before it is written to (a broken pipe).
    let mut bytes = proxy_line.unwrap_or_default().to_vec();
    bytes.extend_from_slice(request.as_bytes());
    let _ = socket.write_all(&bytes).await;
    let mut response = Vec::new();
    let _ = within(socket.read_to_end(&mut response)).await;
    split_response(&response)
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: radio.example\r\nConnection: close\r\n{extra}\r\n")
}

/// The addresses `/admin/listclients` lists, asked through `via` (the relay or a proxy).
async fn listed_addresses(via: SocketAddr, proxy_line: Option<&[u8]>) -> Vec<String> {
    let auth = format!("{}\r\n", basic("admin", ADMIN));
    let request = get("/admin/listclients?mount=/radio.ogg", &auth);
    let (status, _, body) = request_from("127.0.0.1", via, &request, proxy_line).await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{body}");
    let mut ips: Vec<String> = body
        .split("<IP>")
        .skip(1)
        .map(|rest| rest.split("</IP>").next().unwrap().to_owned())
        .collect();
    ips.sort();
    ips
}

/// Waits until `listed_addresses` is `want`.
async fn wait_listed(via: SocketAddr, proxy_line: Option<&[u8]>, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = listed_addresses(via, proxy_line).await;
        if listed == want {
            return;
        }
        assert!(Instant::now() < deadline, "listed {listed:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket listener from 127.0.0.2 (sending `ws_headers`) and an HTTP one from 127.0.0.3,
/// both through `via`, then listed at their own addresses by the admin asked at `admin`;
/// returned so that they stay connected. `log` is the proxy's, for a failure.
async fn two_listeners_seen_through(
    via: SocketAddr,
    ws_headers: &[(&str, &str)],
    admin: SocketAddr,
    log: impl Fn() -> String,
) -> (PlainWs, TcpStream) {
    // ws_from checks the hello came through.
    let ws = ws_from("127.0.0.2", via, "/listen/radio", ws_headers, None).await;
    let ws =
        ws.unwrap_or_else(|status| panic!("WebSocket listener via {via}: {status}\n{}", log()));
    let (http, status, audio) = http_listener("127.0.0.3", via).await;
    assert_eq!((status, &audio[..4]), (200, &b"OggS"[..]), "{}", log());
    wait_listed(admin, None, &["127.0.0.2", "127.0.0.3"]).await;
    (ws, http)
}

/// Whether `radio` is live, asked through `via`.
async fn wait_live_via(via: SocketAddr, proxy_line: Option<&[u8]>) {
    wait_live_or(via, proxy_line, String::new).await;
}

/// `wait_live_via`, with `context` (a proxy's log) in the failure.
async fn wait_live_or(via: SocketAddr, proxy_line: Option<&[u8]>, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, body) =
            request_from("127.0.0.1", via, &get("/api/streams", ""), proxy_line).await;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let radio = &json["streams"][0];
        if radio["live"] == true && radio["frames_in"].as_u64().unwrap_or(0) > 10 {
            return;
        }
        assert!(Instant::now() < deadline, "radio did not go live: {json}\n{}", context());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Ogg/Opus bytes an Icecast source sends.
async fn ogg_body() -> Vec<u8> {
    let file = opus_file(4, "Proxied").await;
    std::fs::read(file.path()).unwrap()
}

/// An Icecast source from `local`: `PUT /radio.ogg` with a chunked body, as ffmpeg's
/// `http://` output sends it (nginx forwards only framed bodies). The body is left open.
async fn chunked_source(local: &str, to: SocketAddr, ogg: &[u8]) -> TcpStream {
    let mut socket = connect_from(local, to).await;
    socket.write_all(chunked_source_head(false).as_bytes()).await.unwrap();
    for piece in ogg.chunks(4096) {
        write_chunk(&mut socket, piece).await;
    }
    socket
}

fn chunked_source_head(expect: bool) -> String {
    let expect = if expect { "Expect: 100-continue\r\n" } else { "" };
    format!(
        "PUT /radio.ogg HTTP/1.1\r\nHost: radio.example\r\n{}\r\nContent-Type: application/ogg\r\n\
         Transfer-Encoding: chunked\r\nIce-Name: Proxied FM\r\n{expect}\r\n",
        basic("source", KEY)
    )
}

async fn write_chunk(socket: &mut TcpStream, piece: &[u8]) {
    socket.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await.unwrap();
    socket.write_all(piece).await.unwrap();
    socket.write_all(b"\r\n").await.unwrap();
}

/// A task stopped when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A chunked `PUT` as ffmpeg sends it: `Expect: 100-continue`, the body only after the
/// relay's `100 Continue`, a piece at a time (4 KiB every 100 ms: 2.5 times real time for this
/// file); the connection stays open after.
async fn ffmpeg_like_source(local: &str, to: SocketAddr, ogg: Vec<u8>) -> AbortOnDrop {
    let mut socket = connect_from(local, to).await;
    socket.write_all(chunked_source_head(true).as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 512];
        let n = within(socket.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed before 100 Continue: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 100"), "{text}");
    AbortOnDrop(tokio::spawn(async move {
        for piece in ogg.chunks(4096) {
            write_chunk(&mut socket, piece).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::future::pending::<()>().await;
    }))
}

/// An Icecast source from `local` as libshout sends it: `SOURCE` over HTTP/1.0, the body
/// unframed (only a TCP proxy can carry it). The body is left open.
async fn unframed_source(
    local: &str,
    to: SocketAddr,
    ogg: &[u8],
    proxy_line: Option<&[u8]>,
) -> TcpStream {
    let mut socket = connect_from(local, to).await;
    if let Some(line) = proxy_line {
        socket.write_all(line).await.unwrap();
    }
    let head = format!(
        "SOURCE /radio.ogg HTTP/1.0\r\n{}\r\nContent-Type: application/ogg\r\n\r\n",
        basic("source", KEY)
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(ogg).await.unwrap();
    socket
}

/// An HTTP listener of `/radio.ogg` from `local`: its status and the first bytes of audio.
async fn http_listener(local: &str, to: SocketAddr) -> (TcpStream, u16, Vec<u8>) {
    let mut socket = connect_from(local, to).await;
    socket.write_all(get("/radio.ogg", "").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = within(socket.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let (status, head, _) = split_response(&got[..head_end]);
    // nginx passes an HTTP/1.0 stream on to an HTTP/1.1 client chunked: skip the size line.
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let start = loop {
        let body = &got[head_end..];
        let start = match body.windows(2).position(|w| w == b"\r\n") {
            Some(i) if chunked => head_end + i + 2,
            None if chunked => usize::MAX,
            _ => head_end,
        };
        if status != 200 || got.len() >= start.saturating_add(4) {
            break start.min(got.len());
        }
        let n = within(socket.read(&mut buf)).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    };
    let body = got.split_off(start);
    (socket, status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_and_sources_through_nginx_are_seen_at_their_real_address() {
    let relay = TestRelay::start_with(relay_config(false)).await;
    let Some(nginx) = Daemon::nginx(relay.addr) else { return relay.shutdown().await };
    let ogg = ogg_body().await;

    // An Icecast source (chunked PUT with Basic auth) from 127.0.0.4.
    let _source = chunked_source("127.0.0.4", nginx.addr, &ogg).await;
    wait_live_via(relay.addr, None).await;
    // A WebSocket listener from 127.0.0.2, an HTTP one from 127.0.0.3.
    let _listeners = two_listeners_seen_through(nginx.addr, &[], relay.addr, || nginx.log()).await;
    // Asked through nginx, the admin is one more client there (and not listed).
    assert_eq!(listed_addresses(nginx.addr, None).await, ["127.0.0.2", "127.0.0.3"]);
    // HLS clients are told apart by address (and user agent): two players of one kind behind
    // one proxy are two listeners.
    for local in ["127.0.0.5", "127.0.0.6", "127.0.0.6"] {
        // A blocking reload for the first part, as a player asks: held until the relay's
        // segmenter has cut it (the source is live already, the part may not be).
        let playlist = get("/radio.m3u8?_HLS_msn=0&_HLS_part=0", "User-Agent: hls-test\r\n");
        let (status, _, body) = request_from(local, nginx.addr, &playlist, None).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let (_, _, body) = request_from("127.0.0.1", relay.addr, &get("/api/streams", ""), None).await;
    let streams: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(streams["streams"][0]["hls_listeners"], 2, "{streams}");

    drop(nginx);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_limit_and_the_login_throttle_apply_to_the_client_behind_nginx() {
    let mut config = relay_config(false);
    config.max_connections_per_ip = 1;
    config.max_login_failures = 3;
    let relay = TestRelay::start_with(config).await;
    let Some(nginx) = Daemon::nginx(relay.addr) else { return relay.shutdown().await };

    let _first = ws_from("127.0.0.2", nginx.addr, "/listen/radio", &[], None).await.unwrap();
    let second = ws_from("127.0.0.2", nginx.addr, "/listen/radio", &[], None).await;
    assert_eq!(second.err(), Some(503), "a second connection of 127.0.0.2");
    let _other = ws_from("127.0.0.3", nginx.addr, "/listen/radio", &[], None)
        .await
        .expect("127.0.0.3 is another client, though both came from nginx's address");
    wait_listed(relay.addr, None, &["127.0.0.2", "127.0.0.3"]).await;

    // Wrong passwords from 127.0.0.4 get it refused; 127.0.0.5 is not slowed.
    let metadata = "/admin/metadata?mount=/radio.ogg&mode=updinfo&song=x";
    let wrong = get(metadata, &format!("{}\r\n", basic("admin", "wrong-password-0123456")));
    let right = get(metadata, &format!("{}\r\n", basic("admin", ADMIN)));
    for _ in 0..3 {
        let (status, _, _) = request_from("127.0.0.4", nginx.addr, &wrong, None).await;
        assert_eq!(status, 401);
    }
    let (status, _, _) = request_from("127.0.0.4", nginx.addr, &right, None).await;
    assert_eq!(status, 429, "127.0.0.4 is throttled, right password or not");
    let (status, _, body) = request_from("127.0.0.5", nginx.addr, &right, None).await;
    assert_ne!(status, 429, "{}", String::from_utf8_lossy(&body));
    assert_ne!(status, 401);
    // The same for a WebSocket source: 127.0.0.4 is refused with the right key, 127.0.0.6
    // goes on air through the same proxy.
    let bearer = format!("Bearer {KEY}");
    let auth = [("Authorization", bearer.as_str())];
    let throttled = ingest_from("127.0.0.4", nginx.addr, &auth).await;
    assert_eq!(throttled.err(), Some(429));
    let _source = ingest_from("127.0.0.6", nginx.addr, &auth).await.expect("a source on air");

    drop(nginx);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let relay = TestRelay::start_with(relay_config(false)).await;
    let spoofs = [
        ("Forwarded", "for=203.0.113.66"),
        ("X-Forwarded-For", "203.0.113.77"),
        ("X-Real-IP", "203.0.113.88"),
    ];
    // Straight to the relay from an address it does not trust: the headers are ignored.
    let _direct = ws_from("127.0.0.2", relay.addr, "/listen/radio", &spoofs, None).await.unwrap();
    wait_listed(relay.addr, None, &["127.0.0.2"]).await;
    // Through nginx: its configuration drops the client's Forwarded and appends to its
    // X-Forwarded-For, so the right-most address is the one nginx saw.
    if let Some(nginx) = Daemon::nginx(relay.addr) {
        let _proxied =
            ws_from("127.0.0.3", nginx.addr, "/listen/radio", &spoofs, None).await.unwrap();
        wait_listed(relay.addr, None, &["127.0.0.2", "127.0.0.3"]).await;
    }
    relay.shutdown().await;
}

/// A proxy may carry several clients' HLS requests on one kept-alive connection (nginx with
/// upstream keepalive, HAProxy's connection reuse): each request's client comes from its own
/// headers, so two players behind it are two HLS listeners, not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_requests_on_one_kept_alive_proxy_connection_are_told_apart_by_client() {
    let relay = TestRelay::start_with(relay_config(false)).await;
    let ogg = ogg_body().await;
    let _source = chunked_source("127.0.0.4", relay.addr, &ogg).await;
    wait_live_via(relay.addr, None).await;
    // The proxy's connection: from 127.0.0.1 (trusted), HTTP/1.1, never closed by it.
    let mut proxy = connect_from("127.0.0.1", relay.addr).await;
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.2"] {
        // A blocking reload for the first part (see above).
        let request = format!(
            "GET /radio.m3u8?_HLS_msn=0&_HLS_part=0 HTTP/1.1\r\nHost: radio.example\r\nUser-Agent: hls-test\r\n\
             X-Forwarded-For: {client}\r\n\r\n"
        );
        proxy.write_all(request.as_bytes()).await.unwrap();
        // One whole answer (head, then Content-Length bytes): the connection stays open.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let (head_end, length) = loop {
            let n = within(proxy.read(&mut buf)).await.unwrap();
            assert!(n > 0, "the relay closed a kept-alive connection");
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                assert!(head.contains("connection: keep-alive"), "{head}");
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .expect("a Content-Length");
                break (end + 4, length);
            }
        };
        while got.len() < head_end + length {
            let n = within(proxy.read(&mut buf)).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got[head_end..].starts_with(b"#EXTM3U"));
    }
    let (_, _, body) = request_from("127.0.0.1", relay.addr, &get("/api/streams", ""), None).await;
    let streams: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(streams["streams"][0]["hls_listeners"], 2, "{streams}");
    drop(proxy);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_sends_the_client_address_with_proxy_protocol_v2_and_v1() {
    let mut config = relay_config(true);
    config.max_connections_per_ip = 1;
    let relay = TestRelay::start_with(config).await;
    let Some(v2) = Daemon::haproxy(relay.addr, Some("send-proxy-v2")) else {
        return relay.shutdown().await;
    };
    let v1 = Daemon::haproxy(relay.addr, Some("send-proxy")).unwrap();
    let ogg = ogg_body().await;

    // libshout's way (SOURCE, unframed body) goes through a TCP proxy.
    let _source = unframed_source("127.0.0.4", v2.addr, &ogg, None).await;
    wait_live_via(v1.addr, None).await;
    let _ws = ws_from("127.0.0.2", v2.addr, "/listen/radio", &[], None).await.unwrap();
    let (_http, status, audio) = http_listener("127.0.0.3", v1.addr).await;
    assert_eq!((status, &audio[..4]), (200, &b"OggS"[..]));
    wait_listed(v2.addr, None, &["127.0.0.2", "127.0.0.3"]).await;
    // The per-address limit counts the client, not HAProxy's address.
    let again = ws_from("127.0.0.2", v1.addr, "/listen/radio", &[], None).await;
    assert_eq!(again.err(), Some(503), "a second connection of 127.0.0.2");
    let _more = ws_from("127.0.0.5", v1.addr, "/listen/radio", &[], None).await.unwrap();
    wait_listed(v1.addr, None, &["127.0.0.2", "127.0.0.3", "127.0.0.5"]).await;

    drop((v1, v2));
    relay.shutdown().await;
}

/// Caddy (DEPLOY.md's configuration) sets `X-Forwarded-For` itself and drops `Forwarded`:
/// sources and listeners through it are seen at their own addresses, spoofed headers or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_and_sources_through_caddy_are_seen_at_their_real_address() {
    let relay = TestRelay::start_with(relay_config(false)).await;
    let Some(caddy) = Daemon::caddy(relay.addr) else { return relay.shutdown().await };
    let ogg = ogg_body().await;
    // ffmpeg's way: a chunked PUT after `100 Continue`, streamed on by Caddy as it comes.
    // Without `Expect: 100-continue` Caddy 2.6 may stop passing the body on (docs/DEPLOY.md).
    let _source = ffmpeg_like_source("127.0.0.4", caddy.addr, ogg).await;
    wait_live_or(relay.addr, None, || caddy.log()).await;
    let spoofs = [("Forwarded", "for=203.0.113.66"), ("X-Forwarded-For", "203.0.113.77")];
    let _listeners =
        two_listeners_seen_through(caddy.addr, &spoofs, relay.addr, || caddy.log()).await;
    drop(caddy);
    relay.shutdown().await;
}

/// nginx in front of HAProxy (TCP mode, PROXY protocol) in front of onair, both trusted: the
/// PROXY header names nginx, whose `X-Forwarded-For` names the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_then_haproxy_the_client_is_the_one_nginx_names() {
    let relay = TestRelay::start_with(relay_config(true)).await;
    let Some(haproxy) = Daemon::haproxy(relay.addr, Some("send-proxy-v2")) else {
        return relay.shutdown().await;
    };
    let Some(nginx) = Daemon::nginx(haproxy.addr) else { return relay.shutdown().await };
    let ogg = ogg_body().await;
    let _source = chunked_source("127.0.0.4", nginx.addr, &ogg).await;
    wait_live_via(haproxy.addr, None).await;
    let _listeners =
        two_listeners_seen_through(nginx.addr, &[], haproxy.addr, || nginx.log()).await;
    drop((nginx, haproxy));
    relay.shutdown().await;
}

/// HAProxy in HTTP mode appends the client to `X-Forwarded-For` and drops its `Forwarded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_http_mode_is_believed_through_x_forwarded_for() {
    let relay = TestRelay::start_with(relay_config(false)).await;
    let Some(haproxy) = Daemon::haproxy(relay.addr, None) else { return relay.shutdown().await };
    let spoofs = [("Forwarded", "for=203.0.113.66"), ("X-Forwarded-For", "203.0.113.77")];
    let _ws = ws_from("127.0.0.2", haproxy.addr, "/listen/radio", &spoofs, None).await.unwrap();
    let _other = ws_from("127.0.0.3", haproxy.addr, "/listen/radio", &[], None).await.unwrap();
    wait_listed(haproxy.addr, None, &["127.0.0.2", "127.0.0.3"]).await;
    drop(haproxy);
    relay.shutdown().await;
}

/// A listener on a `proxy_protocol` port that gets anything but a valid PROXY header from a
/// trusted proxy is closed without an answer; the relay serves the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_valid_proxy_header_are_refused_and_the_relay_carries_on() {
    let mut config = relay_config(true);
    config.handshake_timeout = Duration::from_millis(500);
    let relay = TestRelay::start_with(config).await;
    let healthz = get("/healthz", "");
    let line: &[u8] = b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 8000\r\n";
    let refused: [(&str, Option<&[u8]>, &str); 5] = [
        ("127.0.0.1", None, "no header"),
        ("127.0.0.1", Some(b"PROXY TCP4 192.0.2.7 nonsense 1 2\r\n"), "a broken v1 header"),
        ("127.0.0.1", Some(b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 8000\n"), "LF without CR"),
        ("127.0.0.1", Some(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff"), "a v2 header of 64 KiB"),
        ("127.0.0.2", Some(line), "a valid header from a peer that is not a trusted proxy"),
    ];
    for (local, proxy_line, what) in refused {
        let (status, head, _) = request_from(local, relay.addr, &healthz, proxy_line).await;
        assert_eq!((status, head.as_str()), (0, ""), "{what}: closed without an answer");
    }
    // A peer that sends nothing is closed after handshake_timeout.
    let mut silent = connect_from("127.0.0.1", relay.addr).await;
    let mut nothing = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read_to_end(&mut nothing)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed in time: {read:?}");

    let (status, _, body) = request_from("127.0.0.1", relay.addr, &healthz, Some(line)).await;
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]), "v1 works");
    let local: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let (status, _, _) = request_from("127.0.0.1", relay.addr, &healthz, Some(local)).await;
    assert_eq!(status, 200, "a v2 LOCAL header (a health check) works");
    let ws = ws_from("127.0.0.1", relay.addr, "/listen/radio", &[], Some(line)).await.unwrap();
    wait_listed(relay.addr, Some(line), &["192.0.2.7"]).await;
    drop(ws);
    let (_, _, body) =
        request_from("127.0.0.1", relay.addr, &get("/metrics", ""), Some(line)).await;
    let metrics = String::from_utf8(body).unwrap();
    assert!(metrics.contains("reason=\"proxy_protocol\"} 5"), "{metrics}");
    assert!(metrics.contains("reason=\"untrusted_proxy\"} 1"), "{metrics}");
    relay.shutdown().await;
}

/// HAProxy in TCP mode in front of onair's own TLS: the PROXY header comes first, then the
/// client's ClientHello, and onair answers with its certificate. The plain port of the same
/// relay takes no PROXY header (each port has its own switch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_of_onairs_own_tls_sends_the_proxy_header_before_the_handshake() {
    use std::sync::Arc;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

    let Some(haproxy_program) = tool("haproxy") else { return };
    drop(haproxy_program);
    let dir = std::env::temp_dir().join(format!("onair-proxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl makes a certificate");

    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (plain_addr, tls_addr) = (plain.local_addr().unwrap(), tls_listener.local_addr().unwrap());
    let tls_config = onair::config::TlsConfig {
        listen: tls_addr,
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        proxy_protocol: true,
    };
    let mut config = relay_config(false);
    config.tls = Some(tls_config.clone());
    let terminator = onair::server::tls::Terminator::new(tls_config).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = onair::server::Server::new(config);
    let serving = tokio::spawn(server.serve(
        plain,
        Some((tls_listener, terminator)),
        stop.clone().cancelled_owned(),
    ));
    let haproxy = Daemon::haproxy(tls_addr, Some("send-proxy-v2")).unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(dir.join("cert.pem")).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from("localhost").unwrap();

    let tcp = connect_from("127.0.0.2", haproxy.addr).await;
    let tls =
        within(connector.connect(name.clone(), tcp)).await.expect("handshake through HAProxy");
    let (mut ws, _) = within(tokio_tungstenite::client_async("wss://localhost/listen/radio", tls))
        .await
        .expect("wss listener through HAProxy");
    use futures_util::StreamExt;
    let hello = within(ws.next()).await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("\"hello\""), "{hello:?}");
    wait_listed(plain_addr, None, &["127.0.0.2"]).await;

    // Straight to the TLS port without a PROXY header: closed before any handshake.
    let tcp = connect_from("127.0.0.1", tls_addr).await;
    let refused = within(connector.connect(name, tcp)).await;
    assert!(refused.is_err(), "a ClientHello is no PROXY header");

    drop(ws);
    drop(haproxy);
    stop.cancel();
    within(serving).await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
