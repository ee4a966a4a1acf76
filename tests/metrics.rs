//! `/metrics` is OpenMetrics text, served as such, and a real Prometheus parser reads it
//! (the Python `prometheus_client` OpenMetrics parser, installed by `make test` in
//! `.venv-tools`).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use futures_util::SinkExt;
use std::io::Write;

use tokio::io::{AsyncReadExt, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

/// The Python of the tools venv that `make test` makes.
fn tools_python() -> std::path::PathBuf {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin/python");
    assert!(python.exists(), "{} is missing: run `make deps-test`", python.display());
    python
}

#[tokio::test]
async fn metrics_are_openmetrics_that_a_prometheus_parser_reads() {
    let relay = TestRelay::start().await;
    let (mut listener, _) = listener(&relay, "radio").await;
    let mut src = source(&relay, "radio", "SECRET").await;
    src.send(Message::binary(frame(0, b"abc"))).await.unwrap();
    assert_eq!(next_event(&mut listener).await["state"], "online");
    assert_eq!(next_frame(&mut listener).await, frame(0, b"abc"));

    let mut socket = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    socket.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    within(socket.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("Content-Type: application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");

    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
def value(name, sample):
    return next(s.value for s in families[name].samples if s.name == sample and s.labels.get("stream") == "radio")
assert families["onair_frames_in"].type == "counter", families["onair_frames_in"].type
print(int(value("onair_frames_in", "onair_frames_in_total")), int(value("onair_listeners", "onair_listeners")))
"#;
    let mut parser = std::process::Command::new(tools_python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    parser.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1 1", "one frame in, one listener");
    relay.shutdown().await;
}
