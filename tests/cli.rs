//! The `onair` binary as a user runs it: config errors, startup, signals.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ONAIR: &str = env!("CARGO_BIN_EXE_onair");

/// Kills the child if the test fails before it exits.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("onair-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_errors_name_file_and_line_and_exit_non_zero() {
    let path =
        temp_config("bad", "listen = \"127.0.0.1:0\"\n[[streams]]\nname = \"radio\"\nkey = \"\"\n");
    let out = Command::new(ONAIR).args(["serve", "--config"]).arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:4:7: stream `radio`: key is empty", path.display())),
        "{stderr}"
    );

    let out = Command::new(ONAIR)
        .args(["serve", "--config", "/nonexistent/onair.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/onair.toml: cannot read"));
}

#[test]
fn keygen_prints_a_url_safe_key() {
    let out = Command::new(ONAIR).arg("keygen").output().unwrap();
    let key = String::from_utf8(out.stdout).unwrap();
    let key = key.trim();
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{key}");
}

/// Every line `read` gives, on a channel (the log on stderr, what the user reads on stdout).
fn lines_of(read: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(read).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    lines
}

/// The demo's generated key used to be written into the log: it is printed once on stdout for
/// the user, and the log never holds it.
#[test]
fn serve_prints_how_to_broadcast_and_exits_zero_on_sigterm() {
    let child = Command::new(ONAIR)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    let log = lines_of(child.0.stderr.take().unwrap());
    let out = lines_of(child.0.stdout.take().unwrap());
    let mut addr = None;
    let mut log_lines = Vec::new();
    while addr.is_none() {
        let line = log.recv_timeout(Duration::from_secs(10)).expect("relay logs its address");
        if line.contains("listening") {
            addr = line.split("addr=").nth(1).map(|a| a.trim().to_owned());
        }
        log_lines.push(line);
    }
    let addr = addr.unwrap();
    let how_to = loop {
        let line = out.recv_timeout(Duration::from_secs(10)).expect("the key is printed");
        if line.contains("onair push --to ws://") {
            break line;
        }
    };
    let prefix = format!("ws://{addr}/ingest/demo --key ");
    assert!(how_to.contains(&prefix), "{how_to}");
    let key = how_to.split(&prefix).nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    assert_eq!(key.len(), 32, "{how_to}");

    // A listener is connected when the signal comes: it is closed with 1001, the relay exits 0.
    let mut ws = tungstenite_connect(&addr);
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let code = loop {
        match ws.read() {
            Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) => {
                break frame.map(|f| u16::from(f.code))
            }
            Ok(_) => continue,
            Err(err) => panic!("no close frame: {err}"),
        }
    };
    assert_eq!(code, Some(1001));
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "relay did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    log_lines.extend(log.iter());
    assert!(log_lines.iter().any(|l| l.contains("stopped")), "the whole log was read");
    assert!(log_lines.iter().all(|l| !l.contains(&key)), "the key is in the log");
    let printed: Vec<String> = out.iter().collect();
    assert!(printed.iter().all(|l| !l.contains(&key)), "the key is printed once: {printed:?}");
}

fn tungstenite_connect(
    addr: &str,
) -> tokio_tungstenite::tungstenite::WebSocket<std::net::TcpStream> {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let url = format!("ws://{addr}/listen/demo");
    let (ws, _) = tokio_tungstenite::tungstenite::client(url, tcp).unwrap();
    ws
}

/// The soft and hard open-file limits of a running process, from /proc.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[test]
fn serve_raises_its_open_file_limit_and_warns_when_max_connections_does_not_fit() {
    use std::os::unix::process::CommandExt;
    // Like Debian's default: a low soft limit under a higher hard one.
    let mut command = Command::new(ONAIR);
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped());
    // SAFETY: setrlimit in the forked child before exec; no allocation.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 256, rlim_max: 2048 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = Guard(command.spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let mut warned = false;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        warned |= line.contains("open-file limit is below max_connections");
        if line.contains("listening") {
            break;
        }
    }
    assert_eq!(open_file_limits(child.0.id()), (2048, 2048), "soft limit raised to the hard one");
    assert!(warned, "the default max_connections (16 000) does not fit in 2 048 open files");
}

/// One HTTP request on a fresh connection; returns the answer's status.
fn http_status(addr: &str, request: &str) -> u16 {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

/// Base64 of `user:password`, as Basic auth sends it.
fn basic(user: &str, password: &str) -> String {
    common::base64(&format!("{user}:{password}"))
}

/// SECURITY.md said keys are never logged, with no test behind it. A run at the most verbose
/// level that used every credential, right and wrong, in headers, query strings and Basic
/// auth: none of them, nor their base64, nor a signed link's signature, is in the log.
#[test]
fn keys_and_secrets_never_reach_the_log() {
    const KEY: &str = "stream-key-0f3a9c1d";
    const PRIVATE_KEY: &str = "private-key-7be21a44";
    const ADMIN: &str = "admin-password-c0ffee11";
    const SECRET: &str = "listen-secret-5d9e0b77";
    const WRONG: [&str; 4] =
        ["wrong-key-aaaa1111", "wrong-key-bbbb2222", "wrong-key-cccc3333", "wrong-key-dddd4444"];
    let path = temp_config(
        "keys",
        &format!(
            "listen = \"127.0.0.1:0\"\nadmin_password = \"{ADMIN}\"\n\
             [[streams]]\nname = \"radio\"\nkey = \"{KEY}\"\n\
             [[streams]]\nname = \"private\"\nkey = \"{PRIVATE_KEY}\"\nlisten_secret = \"{SECRET}\"\n"
        ),
    );
    let child = Command::new(ONAIR)
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    let log = lines_of(child.0.stderr.take().unwrap());
    let out = lines_of(child.0.stdout.take().unwrap());
    let mut lines = Vec::new();
    let addr = loop {
        let line = log.recv_timeout(Duration::from_secs(10)).expect("relay logs its address");
        let addr = line
            .contains("listening")
            .then(|| line.split("addr=").nth(1).map(|a| a.trim().to_owned()))
            .flatten();
        lines.push(line);
        if let Some(addr) = addr {
            break addr;
        }
    };

    // A WebSocket source with the key as a Bearer header; now playing and a frame.
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let mut request = format!("ws://{addr}/ingest/radio").into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {KEY}").parse().unwrap());
    let tcp = std::net::TcpStream::connect(&addr).unwrap();
    let (mut source, _) = tokio_tungstenite::tungstenite::client(request, tcp).unwrap();
    source
        .send(Message::text(
            r#"{"type":"start","tracks":[{"id":0,"kind":"audio","codec":"opus"}]}"#,
        ))
        .unwrap();
    source.send(Message::text(r#"{"type":"metadata","title":"On air"}"#)).unwrap();
    source.send(Message::binary(vec![1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFC])).unwrap();
    let upgrade = |path: &str, extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    };
    // Keys in query strings and headers, right (but busy) and wrong.
    assert_eq!(http_status(&addr, &upgrade(&format!("/ingest/radio?key={KEY}"), "")), 409);
    assert_eq!(http_status(&addr, &upgrade(&format!("/ingest/radio?key={}", WRONG[0]), "")), 401);
    let bearer = format!("Authorization: Bearer {}\r\n", WRONG[1]);
    assert_eq!(http_status(&addr, &upgrade("/ingest/radio", &bearer)), 401);
    // Icecast sources and the admin API with Basic auth, right and wrong.
    let icecast = |password: &str| {
        format!(
            "SOURCE /private.ogg HTTP/1.0\r\nAuthorization: Basic {}\r\n\r\n",
            basic("source", password)
        )
    };
    assert_eq!(http_status(&addr, &icecast(WRONG[2])), 401);
    let admin = |password: &str| {
        format!(
            "GET /admin/metadata?mount=/radio&mode=updinfo&song=x&pass={password} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\n\r\n",
            basic("admin", password)
        )
    };
    assert_eq!(http_status(&addr, &admin(ADMIN)), 200);
    assert_eq!(http_status(&addr, &admin(WRONG[3])), 401);
    let metrics =
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n");
    assert_eq!(http_status(&addr, &metrics), 200);
    // A signed listener link to the private stream, and a wrong one.
    let expires = onair::auth::unix_now() + 600;
    let sig = onair::auth::sign(SECRET, "private", expires);
    let link = format!("/listen/private?expires={expires}&sig={sig}");
    assert_eq!(http_status(&addr, &upgrade(&link, "")), 101);
    let forged = format!("/private.ogg?expires={expires}&sig={}", "0".repeat(64));
    assert_eq!(http_status(&addr, &format!("GET {forged} HTTP/1.1\r\nHost: x\r\n\r\n")), 403);
    let icecast_ok = icecast(PRIVATE_KEY);
    assert_eq!(http_status(&addr, &icecast_ok), 200);
    drop(source);

    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    while child.0.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "relay did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    lines.extend(log.iter());
    lines.extend(out.iter());
    let _ = std::fs::remove_file(&path);
    assert!(lines.iter().any(|l| l.contains("source connected")), "the run was logged");
    assert!(lines.iter().any(|l| l.contains("refused")), "the refusals were logged");
    let mut secrets = vec![KEY, PRIVATE_KEY, ADMIN, SECRET, &sig];
    secrets.extend(WRONG);
    let encoded: Vec<String> =
        [("source", WRONG[2]), ("source", PRIVATE_KEY), ("admin", ADMIN), ("admin", WRONG[3])]
            .iter()
            .map(|(user, password)| basic(user, password))
            .collect();
    secrets.extend(encoded.iter().map(String::as_str));
    for line in &lines {
        for secret in &secrets {
            assert!(!line.contains(secret), "{secret} is in the log: {line}");
        }
    }
}

fn check(path: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(ONAIR).args(["check", "--config"]).arg(path).output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[test]
fn check_passes_a_valid_config_with_a_one_line_summary() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let path = temp_config(
        "check-ok",
        &format!(
            "listen = \"0.0.0.0:8123\"\nweb_root = \"{repo}/web-player\"\n\
             [[streams]]\nname = \"radio\"\nkey = \"0123456789abcdef\"\n\
             [[streams]]\nname = \"jukebox\"\nplaylist = \"{repo}/samples/playlist.m3u\"\n"
        ),
    );
    let (ok, stdout, stderr) = check(&path);
    let _ = std::fs::remove_file(&path);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with(&format!("{}: ok: listen 0.0.0.0:8123", path.display())),
        "{stdout}"
    );
    assert!(stdout.contains("2 streams: radio (live), jukebox (auto-DJ)"), "{stdout}");
}

#[test]
fn check_fails_with_file_line_and_column() {
    let path =
        temp_config("check-bad", "listen = \"127.0.0.1:1\"\n\n[[streams]]\nname = \"a b\"\n");
    let (ok, stdout, stderr) = check(&path);
    let _ = std::fs::remove_file(&path);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains(&format!("{}:4:8: stream name `a b`", path.display())), "{stderr}");

    let (ok, _, stderr) = check(std::path::Path::new("/nonexistent/onair.toml"));
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/onair.toml: cannot read"), "{stderr}");
}

#[test]
fn check_shows_trusted_proxies_and_names_a_bad_one() {
    let good =
        "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\"]\n";
    let path = temp_config("check-proxies", good);
    let (ok, stdout, stderr) = check(&path);
    let _ = std::fs::remove_file(&path);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("(proxy protocol)"), "{stdout}");
    assert!(stdout.contains("trusted proxies 127.0.0.1/32, 10.0.0.0/8, fd00::/8"), "{stdout}");
    let path = temp_config("check-bad-proxy", "\ntrusted_proxies = [\"10.0.0.0/8\", \"nginx\"]\n");
    let (ok, _, stderr) = check(&path);
    let _ = std::fs::remove_file(&path);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "{}:2:34: trusted_proxies: `nginx` is not an IP address or CIDR range",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn check_reads_the_files_the_config_names() {
    let cases = [
        ("web_root = \"/nonexistent\"\n", "web_root /nonexistent: no index.html"),
        (
            "[[streams]]\nname = \"dj\"\nplaylist = \"/nonexistent/music\"\n",
            "stream `dj`: playlist: no such file or folder: /nonexistent/music",
        ),
        (
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"/nonexistent/cert.pem\"\nkey = \"/k.pem\"\n",
            "[tls]: /nonexistent/cert.pem:",
        ),
    ];
    for (i, (text, message)) in cases.into_iter().enumerate() {
        let path = temp_config(&format!("check-files-{i}"), text);
        let (ok, _, stderr) = check(&path);
        let _ = std::fs::remove_file(&path);
        assert!(!ok, "{text}");
        assert!(stderr.contains(&format!("{}: ", path.display())), "{stderr}");
        assert!(stderr.contains(message), "{text}: {stderr}");
    }
}

#[test]
fn an_address_in_use_says_how_to_pick_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(ONAIR).args(["serve", "--listen", &addr.to_string()]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    assert!(stderr.contains("pick another address with --listen"), "{stderr}");
}

#[test]
fn sighup_without_tls_leaves_the_relay_running() {
    // `systemctl reload onair` sends SIGHUP; without a [tls] table the relay used to die of it.
    let child = Command::new(ONAIR)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines().map_while(Result::ok);
    assert!(lines.by_ref().any(|line| line.contains("listening")), "relay did not start");
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    assert!(lines.by_ref().any(|line| line.contains("sighup: no [tls] to reload")));
    assert!(child.0.try_wait().unwrap().is_none(), "the relay exited on SIGHUP");
}
