//! The `onair` binary as a user runs it: config errors, startup, signals.
#![allow(clippy::unwrap_used)]

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

#[test]
fn serve_logs_how_to_broadcast_and_exits_zero_on_sigterm() {
    let child = Command::new(ONAIR)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    let stderr = child.0.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut addr = None;
    let mut how_to = None;
    while addr.is_none() || how_to.is_none() {
        let line = lines.recv_timeout(Duration::from_secs(10)).expect("relay logs its address");
        if line.contains("listening") {
            addr = line.split("addr=").nth(1).map(|a| a.trim().to_owned());
        }
        if line.contains("onair push --to ws://") {
            how_to = Some(line);
        }
    }
    let addr = addr.unwrap();
    assert!(how_to.unwrap().contains(&format!("ws://{addr}/ingest/demo --key ")));

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
             [[streams]]\nname = \"radio\"\nkey = \"k\"\n\
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
