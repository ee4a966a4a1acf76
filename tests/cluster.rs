//! The cluster end to end: a real nats-server (started here on a free port, stopped after),
//! real relays on 127.0.0.1:0 (in this process, or as `onair serve` processes where one must
//! die by SIGKILL) and real clients. Every wait polls something observable, with a bound.
#![cfg(feature = "cluster")]
#![allow(clippy::unwrap_used)]

mod common;
mod icecast_support;
mod interop_support;

use std::net::SocketAddr;
use std::time::Duration;

use common::nats::Nats;
use common::*;
use futures_util::{SinkExt, StreamExt};
use icecast_support::{
    basic, exchange, ffmpeg_source, get, stream_info, wait_live, HttpListener, OggReader,
};
use onair::config::ClusterConfig;
use onair::protocol::decode_frame_header;
use onair::{Config, StreamConfig};
use serde_json::Value;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A node of a cluster on `nats` with these streams.
fn node_config(nats: &Nats, node: &str, streams: &[StreamConfig]) -> Config {
    Config {
        cluster: Some(ClusterConfig::new(&nats.url(), node)),
        streams: streams.to_vec(),
        ..Config::default()
    }
}

async fn start_nodes(nats: &Nats, names: &[&str], streams: &[StreamConfig]) -> Vec<TestRelay> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(TestRelay::start_with(node_config(nats, name, streams)).await);
    }
    nodes
}

fn radio() -> StreamConfig {
    StreamConfig::new("radio", Some("SECRET-KEY-0123456789"))
}

/// Polls `check` every 50 ms until it gives a value; fails after `secs`.
async fn poll<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `relay` relays `stream` live from `origin`.
async fn wait_relayed(relay: &TestRelay, stream: &str, origin: &str) {
    poll(&format!("{stream} relayed from {origin} at {}", relay.addr), 10, || async {
        let info = stream_info(relay, stream).await;
        (info["live"] == true && info["origin"] == origin).then_some(())
    })
    .await;
}

/// ffmpeg pushing a 440 Hz Opus tone to `radio` on `nodes[0]` (node "a") over the Icecast
/// protocol, once it is live there and relayed on every other node.
async fn tone_on_a_relayed(nodes: &[TestRelay]) -> icecast_support::Proc {
    let mut ffmpeg = ffmpeg_source(&nodes[0], "/radio.ogg", "SECRET-KEY-0123456789", "opus");
    wait_live(&nodes[0], "radio", 20, Some(&mut ffmpeg)).await;
    for node in &nodes[1..] {
        wait_relayed(node, "radio", "a").await;
    }
    ffmpeg
}

/// Reads until `n` binary frames arrived; returns the text events and the frames, in order.
async fn read_frames(ws: &mut Ws, n: usize) -> (Vec<Value>, Vec<Vec<u8>>) {
    let (mut events, mut frames) = (Vec::new(), Vec::new());
    while frames.len() < n {
        match next_message(ws).await {
            Message::Binary(data) => frames.push(data.to_vec()),
            Message::Text(text) => events.push(serde_json::from_str(&text).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    (events, frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_reach_listeners_of_other_nodes_byte_identical_and_a_second_source_is_refused_everywhere(
) {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, &["a", "b", "c"], &[radio()]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (mut on_b, hello) = listener(b, "radio").await;
    assert_eq!(hello["live"], false);
    let (mut on_c, _) = listener(c, "radio").await;

    let mut source = source(a, "radio", "SECRET-KEY-0123456789").await;
    let head = header_frame(b"OpusHead of the source");
    source.send(Message::binary(head.clone())).await.unwrap();
    wait_relayed(b, "radio", "a").await;
    wait_relayed(c, "radio", "a").await;

    // One live source cluster-wide: the same 409 (WebSocket) and 403 (Icecast) everywhere.
    for node in [a, b, c] {
        let bearer = [("Authorization", "Bearer SECRET-KEY-0123456789")];
        assert_eq!(refused_status(node, "/ingest/radio", &bearer).await, 409, "{}", node.addr);
        let put = format!(
            "PUT /radio.ogg HTTP/1.1\r\nHost: x\r\n{}\r\nContent-Type: application/ogg\r\n\r\n",
            basic("source", "SECRET-KEY-0123456789")
        );
        let (status, _, body) = exchange(node, put.as_bytes()).await;
        assert_eq!(status, 403, "{}: {}", node.addr, String::from_utf8_lossy(&body));
    }

    let sent: Vec<Vec<u8>> =
        (0..50).map(|i| frame(i * 20_000, &payload(i, 100 + i as usize))).collect();
    for message in &sent {
        source.send(Message::binary(message.clone())).await.unwrap();
    }
    source.send(Message::text(r#"{"type":"metadata","title":"Across"}"#)).await.unwrap();
    for ws in [&mut on_b, &mut on_c] {
        let (events, frames) = read_frames(ws, 51).await;
        assert_eq!(events[0]["type"], "source");
        assert_eq!(events[0]["state"], "online");
        assert_eq!(frames[0], head, "the header, byte for byte");
        assert_eq!(&frames[1..], &sent[..], "every frame, byte for byte, in order");
        assert_eq!(next_event(ws).await["title"], "Across", "now playing follows");
    }

    // Numbers: live everywhere, this node's listeners and the cluster's.
    for (node, here) in [(a, 0), (b, 1), (c, 1)] {
        let info = poll("cluster listener counts", 10, || async {
            let info = stream_info(node, "radio").await;
            (info["cluster_listeners"] == 2).then_some(info)
        })
        .await;
        assert_eq!((info["live"].as_bool(), info["listeners"].as_u64()), (Some(true), Some(here)));
        assert_eq!(info["origin"], "a");
        assert_eq!(info["metadata"]["title"], "Across", "now playing is the same everywhere");
    }
    let (_, status) = http_get(b, "/status-json.xsl").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["icestats"]["source"]["cluster_listeners"], 2, "{status}");
    assert_eq!(status["icestats"]["source"]["title"], "Across");
    let (_, metrics) = http_get(c, "/metrics").await;
    assert!(metrics.contains("onair_cluster_listeners{stream=\"radio\"} 2"), "{metrics}");
    assert!(metrics.contains("onair_cluster_connected 1"), "{metrics}");

    // Admin requests to a node that relays the stream go to its origin: now playing for every
    // listener, then the source removed (a balancer may send them to any node).
    let auth = basic("source", "SECRET-KEY-0123456789");
    let update = "/admin/metadata?mount=/radio.ogg&mode=updinfo&song=Forwarded";
    let (status, _, body) = get(c, update, &[&auth]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    for ws in [&mut on_b, &mut on_c] {
        assert_eq!(next_event(ws).await["title"], "Forwarded");
    }
    let (status, _, _) = get(b, "/admin/killsource?mount=/radio.ogg", &[&auth]).await;
    assert_eq!(status, 200);
    assert_eq!(close_code(&mut source).await, 4010, "the origin closed its source");
    for ws in [&mut on_b, &mut on_c] {
        let event = next_event(ws).await;
        assert_eq!(
            (event["type"].as_str(), event["state"].as_str()),
            (Some("source"), Some("offline"))
        );
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// Reads the hello, the headers and every frame that comes within 300 ms of the previous one;
/// returns the time to the first frame and the frames' pts.
async fn late_join(relay: &TestRelay) -> (Duration, Vec<u64>) {
    let started = Instant::now();
    let (mut ws, hello) = listener(relay, "radio").await;
    assert_eq!(hello["live"], true);
    let mut first = None;
    let mut pts = Vec::new();
    while let Ok(Some(Ok(message))) = timeout(Duration::from_millis(300), ws.next()).await {
        if let Message::Binary(data) = message {
            first.get_or_insert_with(|| started.elapsed());
            let header = decode_frame_header(&data).unwrap();
            if !header.is_header() {
                pts.push(header.pts);
            }
        }
    }
    (first.expect("frames at once"), pts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_larger_than_the_servers_max_payload_arrive_whole() {
    let nats = Nats::start_with("max_payload: 4096\n");
    let nodes = start_nodes(&nats, &["a", "b"], &[radio()]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut on_b, _) = listener(b, "radio").await;
    let mut source = source(a, "radio", "SECRET-KEY-0123456789").await;
    source.send(Message::binary(header_frame(b"OpusHead"))).await.unwrap();
    wait_relayed(b, "radio", "a").await;
    // A video keyframe's size: 10 parts of at most 4 KiB each, then small frames around it.
    let sent =
        [frame(0, &payload(0, 100)), frame(1, &payload(1, 40_000)), frame(2, &payload(2, 100))];
    for message in &sent {
        source.send(Message::binary(message.clone())).await.unwrap();
    }
    let (_, frames) = read_frames(&mut on_b, 4).await;
    assert_eq!(&frames[1..], &sent[..], "whole, byte for byte, in order");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_joiner_on_a_cold_node_gets_the_headers_and_the_burst_at_once() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, &["a", "b", "c"], &[radio()]).await;
    let (a, c) = (&nodes[0], &nodes[2]);
    let mut source = source(a, "radio", "SECRET-KEY-0123456789").await;
    source.send(Message::binary(header_frame(b"OpusHead"))).await.unwrap();
    wait_relayed(c, "radio", "a").await;
    for i in 0..100 {
        source.send(Message::binary(frame(i * 20_000, &payload(i, 200)))).await.unwrap();
    }
    // Node c has no listener: it followed the stream all the same.
    poll("node c holds every frame", 10, || async {
        (stream_info(c, "radio").await["frames_in"].as_u64() >= Some(101)).then_some(())
    })
    .await;
    let (on_origin, origin_burst) = late_join(a).await;
    let (on_cold, cold_burst) = late_join(c).await;
    assert!(cold_burst.len() >= 45, "about burst_ms (1 s) of audio: {cold_burst:?}");
    assert_eq!(cold_burst, origin_burst, "the same burst as on the origin");
    assert!(
        on_cold < Duration::from_millis(500),
        "first frame on the cold node after {on_cold:?} (origin: {on_origin:?})"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_icecast_source_on_one_node_plays_to_http_listeners_on_another() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, &["a", "b"], &[radio()]).await;
    let mut ffmpeg = tone_on_a_relayed(&nodes).await;
    let b = &nodes[1];
    wait_live(b, "radio", 20, Some(&mut ffmpeg)).await;

    let http = HttpListener::open(b, "/radio.ogg", &[]).await;
    assert_eq!(http.status, 200, "{}", http.head);
    let mut ogg = OggReader::new(http);
    let first = ogg.next_page().await;
    assert!(first.packets[0].starts_with(b"OpusHead"), "a fresh Ogg stream starts with OpusHead");
    let mut audio_pages = 0;
    let mut last_granule = 0;
    while audio_pages < 20 {
        let page = ogg.next_page().await;
        assert_eq!(page.serial, first.serial);
        if page.granule > 0 && page.granule != u64::MAX {
            assert!(page.granule >= last_granule, "granules only grow");
            last_granule = page.granule;
            audio_pages += 1;
        }
    }
    let (mut ws, hello) = listener(b, "radio").await;
    assert_eq!(hello["tracks"][0]["codec"], "opus");
    let (_, frames) = read_frames(&mut ws, 10).await;
    assert!(frames.iter().any(|f| f.len() > 10), "Opus packets over WebSocket too");
    drop(ffmpeg);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hls_clients_on_one_node_are_counted_on_every_node() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, &["a", "b"], &[radio()]).await;
    let ffmpeg = tone_on_a_relayed(&nodes).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let counts = |relay: &TestRelay| {
        let addr = relay.addr;
        async move {
            let radio = api(addr, "radio").await;
            (radio["hls_listeners"].as_u64(), radio["cluster_hls_listeners"].as_u64())
        }
    };
    // One HLS client on b, reloading the playlist as a player does, with its own session.
    let polling = async {
        loop {
            let (status, body) = http_get(b, "/radio.m3u8?session=car-radio").await;
            assert!(status == 200 || status == 503, "{status}: {body}");
            sleep(Duration::from_millis(300)).await;
        }
    };
    let counted = async {
        poll("b's HLS client counted on a", 15, || async {
            (counts(a).await == (Some(0), Some(1))).then_some(())
        })
        .await;
        assert_eq!(counts(b).await, (Some(1), Some(1)), "b counts its own client once");
        let (_, metrics) = http_get(a, "/metrics").await;
        assert!(metrics.contains("onair_cluster_hls_listeners{stream=\"radio\"} 1"), "{metrics}");
        let (_, status) = http_get(a, "/status-json.xsl").await;
        let status: Value = serde_json::from_str(&status).unwrap();
        assert_eq!(status["icestats"]["source"]["cluster_hls_listeners"], 1, "{status}");
    };
    tokio::select! {
        () = polling => unreachable!("the client polls until the counts are seen"),
        () = counted => {}
    }
    // The client stopped: once its session is stale, no node counts it.
    poll("b's HLS client forgotten on a", 20, || async {
        (counts(a).await == (Some(0), Some(0))).then_some(())
    })
    .await;
    drop(ffmpeg);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_chained_vorbis_source_on_one_node_plays_without_a_dropout_on_another() {
    // Regression: a follower rebuilt each frame from the origin's bytes alone, so where the
    // source's chained Ogg link ended (a title change in ezstream, ices2, liquidsoap) never
    // reached it: its HTTP listeners heard the links spliced, 10-20 ms of near silence at
    // each, as listeners of the origin did before #15's fix.
    use interop_support::{assert_tone, ezstream, play, tone_file, Codec, Player, WorkDir};
    let nats = Nats::start();
    let nodes = start_nodes(&nats, &["a", "b"], &[radio()]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let dir = WorkDir::new("cluster-chained-vorbis");
    // 2 s of 440 Hz is a whole number of cycles: the tone runs on across the files unbroken.
    // Three files: whenever the listener joins, its 3.5 s span a link's edge.
    let mut files = Vec::new();
    for title in ["One", "Two", "Three"] {
        let name = format!("{title}.ogg");
        files.push(tone_file(&dir, &name, Codec::Vorbis, 440, 2, title, "Chain").await);
    }
    let key = "SECRET-KEY-0123456789";
    let mut source = ezstream(&dir, a.addr, "/radio.ogg", key, Codec::Vorbis, &files, true);
    interop_support::wait_live(a, "radio", 1, &mut source).await;
    wait_relayed(b, "radio", "a").await;
    let playback = play(Player::Ffmpeg, &format!("http://{}/radio.ogg", b.addr), 3.5).await;
    assert_tone(&playback.pcm, 440.0, "chained Vorbis links relayed to another node");
    drop(source);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_autodj_runs_once_a_live_source_anywhere_outranks_it_and_it_moves_when_its_node_leaves()
{
    let nats = Nats::start();
    let mut stream = radio();
    stream.playlist = Some(sample("tone-440.flac"));
    stream.burst = Duration::ZERO;
    let nodes = start_nodes(&nats, &["a", "b", "c"], std::slice::from_ref(&stream)).await;
    let sources = || async {
        let mut kinds = Vec::new();
        for node in &nodes {
            kinds.push(stream_info(node, "radio").await["source"].as_str().map(str::to_owned));
        }
        kinds
    };
    let dj = poll("one auto-DJ in the cluster, relayed by the others", 10, || async {
        let kinds = sources().await;
        let djs: Vec<usize> = (0..3).filter(|&i| kinds[i].as_deref() == Some("autodj")).collect();
        let relayed = kinds.iter().filter(|k| k.as_deref() == Some("remote")).count();
        (djs.len() == 1 && relayed == 2).then(|| djs[0])
    })
    .await;
    let (live_at, listen_at) = ((dj + 1) % 3, (dj + 2) % 3);
    let (mut ws, _) = listener(&nodes[listen_at], "radio").await;

    // A live source on a third node takes over, exactly as on one node: `source online`,
    // its header, its frames; never offline.
    let mut live = source(&nodes[live_at], "radio", "SECRET-KEY-0123456789").await;
    live.send(Message::binary(header_frame(b"live OpusHead"))).await.unwrap();
    let pumping = tokio::spawn(async move {
        for i in 0..300u64 {
            if live.send(Message::binary(frame(1_000_000_000 + i * 20_000, b"live"))).await.is_err()
            {
                break;
            }
            sleep(Duration::from_millis(20)).await;
            if i == 50 {
                break;
            }
        }
        live
    });
    let mut events = Vec::new();
    let mut live_frames = 0;
    while live_frames < 20 {
        match next_message(&mut ws).await {
            Message::Text(text) => events.push(serde_json::from_str::<Value>(&text).unwrap()),
            Message::Binary(data) => {
                if &data[10..] == b"live" {
                    live_frames += 1;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut live = pumping.await.unwrap();
    // The live source leaves: the auto-DJ is back, on its own node, with its own header.
    live.close(None).await.unwrap();
    let mut autodj_head = false;
    while !autodj_head {
        match next_message(&mut ws).await {
            Message::Text(text) => events.push(serde_json::from_str::<Value>(&text).unwrap()),
            Message::Binary(data) => autodj_head = data[10..].starts_with(b"OpusHead"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        events.iter().all(|e| e["state"] != "offline"),
        "listeners never hear the stream go offline: {events:?}"
    );
    assert!(events.iter().filter(|e| e["state"] == "online").count() >= 2, "{events:?}");
    poll("the auto-DJ back on its node", 10, || async {
        (sources().await[dj].as_deref() == Some("autodj")).then_some(())
    })
    .await;

    // Its node leaves: another node takes the auto-DJ over; listeners stay connected.
    let mut nodes = nodes;
    let leaving = nodes.remove(dj);
    leaving.shutdown().await;
    poll("another node runs the auto-DJ", 10, || async {
        let mut kinds = Vec::new();
        for node in &nodes {
            kinds.push(stream_info(node, "radio").await["source"].clone());
        }
        let djs = kinds.iter().filter(|k| *k == "autodj").count();
        (djs == 1 && kinds.iter().all(|k| k == "autodj" || k == "remote")).then_some(())
    })
    .await;
    let (_, frames) = read_frames(&mut ws, 5).await;
    assert_eq!(frames.len(), 5, "the listener hears the auto-DJ from its new node");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_nats_restart_remote_streams_resume_on_the_same_connections() {
    let mut nats = Nats::start();
    let nodes = start_nodes(&nats, &["a", "b"], &[radio()]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut on_a, _) = listener(a, "radio").await;
    let (mut on_b, _) = listener(b, "radio").await;
    let mut source = source(a, "radio", "SECRET-KEY-0123456789").await;
    source.send(Message::binary(header_frame(b"OpusHead"))).await.unwrap();
    wait_relayed(b, "radio", "a").await;
    let pump = tokio::spawn(async move {
        for i in 0..1500u64 {
            if source.send(Message::binary(frame(i * 20_000, &i.to_be_bytes()))).await.is_err() {
                return;
            }
            sleep(Duration::from_millis(20)).await;
        }
    });
    read_frames(&mut on_b, 10).await;

    nats.stop();
    // NATS is away: the origin's own listeners hear the source without a pause.
    let (_, frames) = within_secs(3, read_frames(&mut on_a, 50)).await;
    let pts = |frame: &Vec<u8>| decode_frame_header(frame).unwrap().pts;
    let during = frames.iter().map(pts).max().unwrap();
    nats.restart();
    // Node b's listener hears the stream again, on the same connection, from where it is now.
    within_secs(20, async {
        loop {
            let (_, frames) = read_frames(&mut on_b, 1).await;
            if pts(&frames[0]) > during {
                break;
            }
        }
    })
    .await;
    let (_, frames) = read_frames(&mut on_b, 25).await;
    assert!(frames.windows(2).all(|w| pts(&w[1]) > pts(&w[0])), "in order, live");
    pump.abort();
    for node in nodes {
        node.shutdown().await;
    }
}

/// An `onair serve` process, killed (SIGKILL) when dropped.
struct Serve {
    child: std::process::Child,
    addr: SocketAddr,
    /// Its log lines so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Serve {
    fn start(config: &str) -> Self {
        use std::io::{BufRead, BufReader};
        let path = std::env::temp_dir().join(format!(
            "onair-cluster-{}-{}.toml",
            std::process::id(),
            config.len() ^ config.as_ptr() as usize
        ));
        std::fs::write(&path, config).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_onair"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::default();
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening addr=").nth(1) {
                    let _ = tx.send(addr.trim().to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).expect("the node logs its address");
        let _ = std::fs::remove_file(&path);
        Self { child, addr: addr.parse().unwrap(), log }
    }

    /// Waits until a log line contains `text`.
    async fn logged(&self, text: &str) {
        poll(&format!("`{text}` in the log"), 10, || async {
            self.log.lock().unwrap().iter().any(|l| l.contains(text)).then_some(())
        })
        .await;
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn api(addr: SocketAddr, stream: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    socket.write_all(b"GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    within(socket.read_to_end(&mut response)).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").unwrap().1;
    let json: Value = serde_json::from_str(body).unwrap();
    json["streams"].as_array().unwrap().iter().find(|s| s["name"] == stream).unwrap().clone()
}

async fn ws(addr: SocketAddr, path: &str, key: Option<&str>) -> Result<Ws, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(key) = key {
        request.headers_mut().insert("Authorization", format!("Bearer {key}").parse().unwrap());
    }
    match within(tokio_tungstenite::connect_async(request)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(err) => panic!("{path}: {err}"),
    }
}

/// Reads until an event with this `state` arrives; returns the frames' count before it.
async fn until_state(ws: &mut Ws, state: &str) -> usize {
    let mut frames = 0;
    loop {
        match next_message(ws).await {
            Message::Text(text) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                if event["type"] == "source" && event["state"] == state {
                    return frames;
                }
            }
            Message::Binary(_) => frames += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_origin_killed_with_sigkill_goes_offline_elsewhere_and_its_source_and_autodj_resume_on_other_nodes(
) {
    let nats = Nats::start();
    let config = |node: &str| {
        format!(
            "[cluster]\nnats = \"{}\"\nnode = \"{node}\"\n\
             [[streams]]\nname = \"radio\"\nkey = \"SECRET-KEY-0123456789\"\n\
             [[streams]]\nname = \"jukebox\"\nplaylist = \"{}\"\nburst_ms = 0\n",
            nats.url(),
            sample("tone-440.flac").display()
        )
    };
    // Node a starts first and takes the auto-DJ; b and c relay it.
    let mut a = Serve::start(&config("a"));
    poll("the auto-DJ on node a", 10, || async {
        (api(a.addr, "jukebox").await["source"] == "autodj").then_some(())
    })
    .await;
    let (b, c) = (Serve::start(&config("b")), Serve::start(&config("c")));
    let mut source = ws(a.addr, "/ingest/radio", Some("SECRET-KEY-0123456789")).await.unwrap();
    source.send(Message::text(OPUS_START)).await.unwrap();
    source.send(Message::binary(header_frame(b"OpusHead"))).await.unwrap();
    poll("radio relayed by b", 10, || async {
        (api(b.addr, "radio").await["origin"] == "a").then_some(())
    })
    .await;
    let mut radio = ws(b.addr, "/listen/radio", None).await.unwrap();
    let mut jukebox = ws(b.addr, "/listen/jukebox", None).await.unwrap();
    for i in 0..10 {
        source.send(Message::binary(frame(i * 20_000, b"before"))).await.unwrap();
    }
    assert_eq!(next_event(&mut radio).await["type"], "hello");
    read_frames(&mut radio, 11).await;

    a.kill();
    let killed = Instant::now();
    drop(source);
    within_secs(10, until_state(&mut radio, "offline")).await;
    let offline_after = killed.elapsed();
    assert!(offline_after < Duration::from_secs(6), "offline after {offline_after:?}");

    // The broadcaster reconnects to another node: refused while a's lease lasts, then on air.
    let mut source = poll("the broadcaster back on node c", 15, || async {
        ws(c.addr, "/ingest/radio", Some("SECRET-KEY-0123456789")).await.ok()
    })
    .await;
    let back = killed.elapsed();
    source.send(Message::text(OPUS_START)).await.unwrap();
    source.send(Message::binary(header_frame(b"OpusHead"))).await.unwrap();
    within_secs(10, until_state(&mut radio, "online")).await;
    for i in 0..10 {
        source.send(Message::binary(frame(i * 20_000, b"after"))).await.unwrap();
    }
    let (_, frames) = read_frames(&mut radio, 11).await;
    assert!(frames.iter().filter(|f| &f[10..] == b"after").count() == 10, "the same connection");

    // The auto-DJ lapsed with node a and runs on b or c now; b's listener hears it again.
    within_secs(15, until_state(&mut jukebox, "online")).await;
    let djs = [
        api(b.addr, "jukebox").await["source"].clone(),
        api(c.addr, "jukebox").await["source"].clone(),
    ];
    assert_eq!(djs.iter().filter(|s| *s == "autodj").count(), 1, "{djs:?}");
    eprintln!(
        "offline on b {offline_after:?} after the kill; broadcaster accepted on c after {back:?}"
    );
    drop((b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_whose_node_finds_the_live_lease_taken_is_closed() {
    use async_nats::jetstream::stream::{Config as StreamSettings, DiscardPolicy, StorageType};
    let nats = Nats::start();
    let nodes = start_nodes(&nats, &["a"], &[radio()]).await;
    // Another node (not running here) holds the stream's live lease: the same bucket the
    // nodes make, with the default lease.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(StreamSettings {
        name: "KV_onair_leases".into(),
        description: Some("onair leases: one live source and one auto-DJ per stream".into()),
        subjects: vec!["$KV.onair_leases.>".into()],
        max_messages_per_subject: 1,
        max_age: Duration::from_millis(onair::config::DEFAULT_LEASE_MS),
        storage: StorageType::Memory,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        num_replicas: 1,
        ..StreamSettings::default()
    })
    .await
    .unwrap();
    let kv = js.get_key_value("onair_leases").await.unwrap();
    kv.create("radio.live", "elsewhere".into()).await.unwrap();
    let mut source = source(&nodes[0], "radio", "SECRET-KEY-0123456789").await;
    // Its own code (4011, as a 409: worth retrying), not 4010, which says an operator removed
    // the source (and makes a source client give up).
    let close = loop {
        match within(source.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 4011, "closed as soon as its node sees the lease");
    assert_eq!(close.reason.as_str(), "the stream is live on another node");
    let (_, metrics) = http_get(&nodes[0], "/metrics").await;
    let lost = "onair_cluster_dropped_total{reason=\"live_elsewhere\"} 1";
    assert!(metrics.contains(lost), "{metrics}");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_messages_from_nats_are_dropped_and_the_stream_plays_on() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, &["a", "b"], &[radio()]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let session = |tracks: &str| {
        format!(r#"{{"type":"session","session":1,"live":true,"tracks":{tracks},"headers":[]}}"#)
    };
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("onair.s.radio.x.c", b"{".to_vec()),
        ("onair.s.radio.x.c", b"\xff\xfe\x00".to_vec()),
        ("onair.s.radio.x.c", br#"{"type":"session"}"#.to_vec()),
        ("onair.s.radio.x.c", session(r#"[{"id":0,"kind":"audio","codec":"vp8"}]"#).into_bytes()),
        ("onair.s.radio.x.c", session("[]").into_bytes()),
        (
            "onair.s.radio.x.c",
            br#"{"type":"session","session":1,"live":true,"tracks":[],"headers":["***"]}"#.to_vec(),
        ),
        ("onair.s.radio.x.f", vec![0xff; 3]),
        ("onair.s.radio.x.p", vec![0xff; 20]),
        ("onair.s.radio.x.q", vec![1]),
        ("onair.s.nostream.x.f", frame(0, b"x")),
        ("onair.s.radio.x.f.extra", frame(0, b"x")),
        ("onair.n.x.stats", b"[1,2".to_vec()),
        ("onair.n.x.stats", br#"{"listeners":{"radio":-1}}"#.to_vec()),
    ];
    // Sent until node b counts them (it may not be subscribed yet when the test starts).
    let (_, metrics) = poll("the malformed messages counted", 10, || async {
        for (subject, payload) in &garbage {
            client.publish(*subject, payload.clone().into()).await.unwrap();
        }
        client.flush().await.unwrap();
        let (_, metrics) = http_get(b, "/metrics").await;
        metrics
            .contains("onair_cluster_dropped_total{reason=\"malformed\"}")
            .then_some(((), metrics))
    })
    .await;
    assert!(metrics.contains("onair_cluster_connected 1"), "{metrics}");

    let (mut on_b, _) = listener(b, "radio").await;
    let mut source = source(a, "radio", "SECRET-KEY-0123456789").await;
    source.send(Message::binary(header_frame(b"OpusHead"))).await.unwrap();
    wait_relayed(b, "radio", "a").await;
    for i in 0..10 {
        source.send(Message::binary(frame(i * 20_000, &payload(i, 50)))).await.unwrap();
    }
    let (_, frames) = read_frames(&mut on_b, 11).await;
    assert_eq!(frames[10], frame(9 * 20_000, &payload(9, 50)), "the stream plays on");
    // A frame in a's name whose link-edge header is garbage is dropped; the next one plays.
    let mut bad_edge = async_nats::HeaderMap::new();
    bad_edge.insert("Onair-Link-Edge", "last forever");
    let forged = frame(10 * 20_000, b"forged");
    client.publish_with_headers("onair.s.radio.a.f", bad_edge, forged.into()).await.unwrap();
    client.flush().await.unwrap();
    source.send(Message::binary(frame(11 * 20_000, &payload(11, 50)))).await.unwrap();
    let (_, frames) = read_frames(&mut on_b, 1).await;
    assert_eq!(frames[0], frame(11 * 20_000, &payload(11, 50)), "the forged frame was dropped");
    for node in nodes {
        node.shutdown().await;
    }
}

/// nginx with docs/CLUSTER.md's configuration, in front of `nodes`, on a free port.
struct Nginx {
    child: std::process::Child,
    dir: std::path::PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    fn start(nodes: &[&TestRelay]) -> Self {
        let doc = include_str!("../docs/CLUSTER.md");
        let block = doc.split("```nginx\n").nth(1).unwrap().split("```").next().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let servers: String = nodes.iter().map(|n| format!("    server {};\n", n.addr)).collect();
        let mut lines = Vec::new();
        let mut servers_written = false;
        for line in block.lines() {
            if line.starts_with("upstream ") {
                servers_written = false;
                lines.push(line.to_owned());
            } else if line.trim_start().starts_with("server 10.0.0.") {
                if !servers_written {
                    lines.push(servers.trim_end().to_owned());
                    servers_written = true;
                }
            } else if line.trim() == "listen 80;" {
                lines.push(format!("    listen 127.0.0.1:{port};"));
            } else {
                lines.push(line.to_owned());
            }
        }
        let dir = std::env::temp_dir().join(format!("onair-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let conf = format!(
            "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n{}\n}}\n",
            lines.join("\n")
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new("nginx")
            .args(["-c", &format!("{d}/nginx.conf"), "-p", &d.to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx runs (make test installs nginx-light)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nginx did not start: see {d}/error.log");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then itself (SIGKILL would orphan them).
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: signals our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_documented_nginx_config_spreads_sources_and_listeners_over_three_nodes() {
    let nats = Nats::start();
    let nodes = start_nodes(&nats, &["a", "b", "c"], &[radio()]).await;
    let nginx = Nginx::start(&[&nodes[0], &nodes[1], &nodes[2]]);
    // Listeners through the balancer land on any node (least_conn spreads them).
    let mut listeners = Vec::new();
    for _ in 0..6 {
        listeners.push(ws(nginx.addr, "/listen/radio", None).await.unwrap());
    }
    let mut source = ws(nginx.addr, "/ingest/radio", Some("SECRET-KEY-0123456789")).await.unwrap();
    source.send(Message::text(OPUS_START)).await.unwrap();
    source.send(Message::binary(header_frame(b"OpusHead"))).await.unwrap();
    for node in &nodes {
        poll("the stream live on every node", 10, || async {
            (stream_info(node, "radio").await["live"] == true).then_some(())
        })
        .await;
    }
    let counts: Vec<u64> = {
        let mut counts = Vec::new();
        for node in &nodes {
            counts.push(stream_info(node, "radio").await["listeners"].as_u64().unwrap());
        }
        counts
    };
    assert!(counts.iter().filter(|&&n| n > 0).count() >= 2, "spread: {counts:?}");
    let sent = frame(0, b"through the balancer");
    source.send(Message::binary(sent.clone())).await.unwrap();
    for ws in &mut listeners {
        assert_eq!(next_event(ws).await["type"], "hello");
        let (_, frames) = read_frames(ws, 2).await;
        assert_eq!(frames[1], sent);
    }
    // A second source through the balancer is refused whichever node it reaches.
    for _ in 0..3 {
        assert_eq!(
            ws(nginx.addr, "/ingest/radio", Some("SECRET-KEY-0123456789")).await.err(),
            Some(409)
        );
    }
    drop(nginx);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_documented_nginx_config_keeps_an_hls_player_on_one_node() {
    // Parts and segments are numbered per node: a player whose requests were spread over the
    // nodes would ask one node for another's parts.
    let nats = Nats::start();
    let nodes = start_nodes(&nats, &["a", "b", "c"], &[radio()]).await;
    let nginx = Nginx::start(&[&nodes[0], &nodes[1], &nodes[2]]);
    let ffmpeg = tone_on_a_relayed(&nodes).await;
    poll("a segment in the playlist through the balancer", 15, || async {
        let (status, body) = get_from(nginx.addr, "/radio.m3u8?session=probe").await;
        (status == 200 && body.contains("#EXTINF")).then_some(())
    })
    .await;
    let samples = decode_hls(&format!("http://{}/radio.m3u8", nginx.addr), 3).await;
    assert!(samples.len() >= 48_000 * 2, "ffmpeg decoded {} samples", samples.len());
    assert!(tone_share(&samples[4_800..], 440.0) > 0.95, "the source's tone through nginx");
    // Every request (the probe's and ffmpeg's) reached one node: it counts both clients.
    let mut counts = Vec::new();
    for node in &nodes {
        counts.push(stream_info(node, "radio").await["hls_listeners"].as_u64().unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, [0, 0, 2], "HLS clients per node");
    drop(ffmpeg);
    drop(nginx);
    for node in nodes {
        node.shutdown().await;
    }
}

/// `GET path` from `addr` on a connection of its own: (status, body).
async fn get_from(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within(socket.read_to_end(&mut response)).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// A fresh, empty folder, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = icecast_support::temp_path(name);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Mono 48 kHz samples ffmpeg decodes from the first `seconds` of a live HLS playlist.
async fn decode_hls(url: &str, seconds: u32) -> Vec<f32> {
    let seconds = seconds.to_string();
    let args = ["-hide_banner", "-loglevel", "error", "-live_start_index", "-2", "-i", url, "-t"]
        .into_iter()
        .chain([seconds.as_str(), "-ac", "1", "-ar", "48000", "-f", "f32le", "-"]);
    let out = within_secs(
        40,
        tokio::process::Command::new("ffmpeg").args(args).kill_on_drop(true).output(),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// The recordings `relay` lists for `stream`.
async fn recordings(relay: &TestRelay, stream: &str) -> Vec<Value> {
    let (status, body) = http_get(relay, &format!("/api/recordings/{stream}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["recordings"].as_array().unwrap().clone()
}

#[cfg(feature = "source")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_followed_stream_is_served_over_hls_and_recorded_on_the_follower_as_its_config_says() {
    let nats = Nats::start();
    let mut stream = radio();
    stream.playlist = Some(sample("tone-440.flac"));
    let a = TestRelay::start_with(node_config(&nats, "a", &[stream.clone()])).await;
    poll("the auto-DJ on node a", 10, || async {
        (stream_info(&a, "radio").await["source"] == "autodj").then_some(())
    })
    .await;
    // Node b records `radio`'s live shows, not its auto-DJ (record_autodj = false).
    let dir = TempDir::new("cluster-recordings");
    stream.record = true;
    let mut config = node_config(&nats, "b", &[stream]);
    config.recordings_dir = Some(dir.0.clone());
    config.recordings_fsync = Duration::from_secs(1);
    let b = TestRelay::start_with(config).await;
    wait_relayed(&b, "radio", "a").await;

    // HLS on the follower: ffmpeg hears the auto-DJ's tone from b's playlist.
    let url = format!("http://{}/radio.m3u8", b.addr);
    poll("a playlist with a segment on b", 15, || async {
        let (status, body) = http_get(&b, "/radio.m3u8").await;
        (status == 200 && body.contains("#EXTINF")).then_some(())
    })
    .await;
    let samples = decode_hls(&url, 3).await;
    assert!(samples.len() >= 48_000 * 2, "ffmpeg decoded {} samples", samples.len());
    assert!(tone_share(&samples[4_800..], 440.0) > 0.95, "the origin's tone on b");
    assert!(recordings(&b, "radio").await.is_empty(), "a relayed auto-DJ is not recorded");

    // A live show on a is recorded on b, as live; a records nothing (no recordings_dir).
    let mut ffmpeg =
        icecast_support::ffmpeg_source(&a, "/radio.ogg", "SECRET-KEY-0123456789", "opus");
    let deadline = Instant::now() + Duration::from_secs(15);
    let show = loop {
        assert!(ffmpeg.running(), "ffmpeg exited: {}", ffmpeg.stderr());
        let list = recordings(&b, "radio").await;
        if let Some(first) = list.first().filter(|r| r["duration_s"].as_f64() > Some(1.0)) {
            break first.clone();
        }
        assert!(Instant::now() < deadline, "b did not record the live show: {list:?}");
        sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (&show["source"], &show["state"]),
        (&Value::from("live"), &Value::from("recording"))
    );
    drop(ffmpeg);
    let done = poll("the show complete on b", 15, || async {
        let list = recordings(&b, "radio").await;
        list.first().filter(|r| r["state"] == "complete").cloned()
    })
    .await;
    let (status, _) = http_get(&b, done["url"].as_str().unwrap()).await;
    assert_eq!(status, 200, "the follower serves its recording");
    assert_eq!(http_get(&a, "/api/recordings/radio").await.0, 404, "a records nothing");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_stream_followed_on_another_node_keeps_its_signed_link_and_stays_unlisted() {
    let nats = Nats::start();
    let secret = "a-long-listen-secret";
    let mut hidden = StreamConfig::new("hidden", Some("SECRET-KEY-0123456789"));
    hidden.listen_secret = Some(secret.into());
    let admin = "cluster-admin-password";
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let mut config = node_config(&nats, name, &[radio(), hidden.clone()]);
        config.admin_password = Some(admin.into());
        nodes.push(TestRelay::start_with(config).await);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut source = source(a, "hidden", "SECRET-KEY-0123456789").await;
    source.send(Message::binary(header_frame(b"OpusHead"))).await.unwrap();
    poll("hidden live on b", 10, || async {
        (stream_info(b, "hidden").await["live"] == true).then_some(())
    })
    .await;

    // Listening on the follower needs the link, as on the origin.
    assert_eq!(refused_status(b, "/listen/hidden", &[]).await, 401);
    let (status, _) = http_get(b, "/hidden.m3u8").await;
    assert_eq!(status, 401, "no link, no playlist");
    let expires = onair::auth::unix_now() + 3600;
    let sig = onair::auth::sign(secret, "hidden", expires);
    let path = format!("/listen/hidden?expires={expires}&sig={sig}");
    let mut on_b = connect(b, &path, &[]).await.unwrap();
    assert_eq!(next_event(&mut on_b).await["type"], "hello");
    let sent = frame(0, b"private audio");
    source.send(Message::binary(sent.clone())).await.unwrap();
    let (_, frames) = read_frames(&mut on_b, 2).await;
    assert_eq!(frames[1], sent, "the listener with a link hears it");

    // Public pages of the follower say no more than the origin's: name, live, private.
    let info = stream_info(b, "hidden").await;
    let keys: Vec<&str> = info.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["live", "name", "private"], "{info}");
    assert!(stream_info(b, "radio").await["cluster_listeners"].is_number(), "public: counted");
    let (_, status_json) = http_get(b, "/status-json.xsl").await;
    assert!(!status_json.contains("hidden"), "{status_json}");
    let (_, metrics) = http_get(b, "/metrics").await;
    assert!(!metrics.contains("stream=\"hidden\""), "anonymous scrape: {metrics}");
    assert!(metrics.contains("onair_cluster_listeners{stream=\"radio\"}"), "{metrics}");
    let bearer = format!("Bearer {admin}");
    let (status, _, body) =
        icecast_support::get(b, "/metrics", &[&format!("Authorization: {bearer}")]).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200);
    assert!(body.contains("onair_cluster_listeners{stream=\"hidden\"} 1"), "admin: {body}");
    drop(on_b);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_falls_behind_nats_counts_it_skips_stale_frames_and_recovers() {
    let nats = Nats::start();
    // Node b's subscription holds 2 messages: a burst of large frames overflows it at once.
    let mut config = node_config(&nats, "b", &[radio(), StreamConfig::new("other", None)]);
    config.cluster.as_mut().unwrap().subscription_capacity = Some(2);
    let b = TestRelay::start_with(config).await;
    let (mut radio_on_b, _) = listener(&b, "radio").await;
    let (mut other_on_b, _) = listener(&b, "other").await;
    // The test plays origin x of both streams, straight on NATS.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let session = format!(
        r#"{{"type":"session","session":1,"live":true,"tracks":{},"headers":[]}}"#,
        r#"[{"id":0,"kind":"audio","codec":"opus","sample_rate":48000,"channels":2}]"#
    );
    poll("b following x", 10, || async {
        for stream in ["radio", "other"] {
            let subject = format!("onair.s.{stream}.x.c");
            client.publish(subject, session.clone().into()).await.unwrap();
        }
        client.flush().await.unwrap();
        let (radio, other) = (stream_info(&b, "radio").await, stream_info(&b, "other").await);
        (radio["origin"] == "x" && other["origin"] == "x").then_some(())
    })
    .await;
    assert_eq!(next_event(&mut radio_on_b).await["state"], "online");
    assert_eq!(next_event(&mut other_on_b).await["state"], "online");

    let big = vec![0x55u8; 32 << 10];
    for i in 0..600u64 {
        client.publish("onair.s.radio.x.f", frame(i * 20_000, &big).into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let counted = |metrics: &str, reason: &str| {
        let series = format!("onair_cluster_dropped_total{{reason=\"{reason}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&series))?;
        line.rsplit(' ').next()?.parse::<u64>().ok()
    };
    // Counted, and what waited behind the drop was stale: skipped, not played late.
    poll("the slow consumer counted and stale frames skipped", 10, || async {
        let (_, metrics) = http_get(&b, "/metrics").await;
        let moved = |reason| counted(&metrics, reason).is_some_and(|n| n > 0);
        (moved("slow_consumer") && moved("stale")).then_some(())
    })
    .await;

    // Both streams recover at once: frames sent now reach b's listeners, on the same
    // connections, and nothing older arrives after them.
    let pts = |frame: &Vec<u8>| decode_frame_header(frame).unwrap().pts;
    let after = 1_000_000_000u64;
    let pump = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..250u64 {
                for stream in ["radio", "other"] {
                    let message = frame(after + i * 20_000, b"after the burst");
                    client.publish(format!("onair.s.{stream}.x.f"), message.into()).await.unwrap();
                }
                client.flush().await.unwrap();
                sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for ws in [&mut radio_on_b, &mut other_on_b] {
        within_secs(5, async {
            loop {
                let (_, frames) = read_frames(ws, 1).await;
                if pts(&frames[0]) >= after {
                    break;
                }
            }
        })
        .await;
        let (events, frames) = read_frames(ws, 10).await;
        assert!(frames.iter().all(|f| pts(f) >= after), "live, nothing stale after it");
        assert!(events.iter().all(|e| e["state"] != "offline"), "{events:?}");
    }
    pump.abort();
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_nats_a_node_serves_its_own_streams_and_followed_streams_come_back_with_it() {
    // NATS is down when the nodes start: they start anyway and serve their own streams.
    let mut nats = Nats::unstarted();
    let nodes = within_secs(10, start_nodes(&nats, &["a", "b"], &[radio()])).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let (mut on_a, _) = listener(a, "radio").await;
    let (mut on_b, hello) = listener(b, "radio").await;
    assert_eq!(hello["live"], false);
    let mut source = source(a, "radio", "SECRET-KEY-0123456789").await;
    source.send(Message::binary(header_frame(b"OpusHead"))).await.unwrap();
    let pump = tokio::spawn(async move {
        for i in 0..3000u64 {
            if source.send(Message::binary(frame(i * 20_000, &i.to_be_bytes()))).await.is_err() {
                return;
            }
            sleep(Duration::from_millis(20)).await;
        }
    });
    read_frames(&mut on_a, 20).await;
    let (_, metrics) = http_get(a, "/metrics").await;
    assert!(metrics.contains("onair_cluster_connected 0"), "{metrics}");
    assert_eq!(stream_info(b, "radio").await["live"], false, "nothing to follow without NATS");

    // NATS comes up: b follows a's stream, on the listener's connection of before.
    nats.restart();
    within_secs(15, until_state(&mut on_b, "online")).await;
    read_frames(&mut on_b, 10).await;
    wait_relayed(b, "radio", "a").await;

    // NATS goes down while they run: a's listener hears on, b's hears the stream go offline.
    nats.stop();
    let pts = |frame: &Vec<u8>| decode_frame_header(frame).unwrap().pts;
    let (_, frames) = within_secs(3, read_frames(&mut on_a, 50)).await;
    assert!(frames.windows(2).all(|w| pts(&w[1]) > pts(&w[0])), "a plays on without a pause");
    within_secs(10, until_state(&mut on_b, "offline")).await;
    let (_, metrics) = http_get(b, "/metrics").await;
    assert!(metrics.contains("onair_cluster_connected 0"), "{metrics}");
    assert_eq!(stream_info(b, "radio").await["live"], false);

    // NATS is back on the same port: the stream resumes on b's connection, live.
    let during = {
        let (_, frames) = read_frames(&mut on_a, 1).await;
        pts(&frames[0])
    };
    nats.restart();
    within_secs(15, until_state(&mut on_b, "online")).await;
    let (_, frames) = read_frames(&mut on_b, 10).await;
    assert!(frames.iter().skip(1).all(|f| pts(f) > during), "from where a is now");
    pump.abort();
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_cannot_reach_nats_says_so_once_and_when_it_connects() {
    let mut nats = Nats::unstarted();
    let config = format!(
        "[cluster]\nnats = \"{}\"\nnode = \"a\"\nlease_ms = 500\n\
         [[streams]]\nname = \"radio\"\nkey = \"SECRET-KEY-0123456789\"\n",
        nats.url()
    );
    let node = Serve::start(&config);
    node.logged("cluster: cannot reach nats; serving this node's own streams").await;
    assert_eq!(api(node.addr, "radio").await["live"], false, "it serves meanwhile");
    nats.restart();
    node.logged("cluster: connected to nats").await;
    let warnings = node.log.lock().unwrap().iter().filter(|l| l.contains("cannot reach")).count();
    assert_eq!(warnings, 1, "said once, not per attempt");
}
