//! Soak: listeners joining and leaving at random, a source that drops and returns, stalled
//! listeners. At the end nothing has leaked and every healthy listener heard every frame sent
//! while it was connected. Ignored by `cargo test`; `make soak` runs it (SOAK_SECONDS, default 60).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use onair::StreamConfig;
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A tiny deterministic PRNG (xorshift64*), so a failing run can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A healthy listener: reads until `stay` is over and checks that the frames it got are
/// consecutive (the source numbers them in the payload). Returns how many it heard.
async fn healthy_listener(relay: &TestRelay, stay: Duration) -> u64 {
    let (mut ws, _) = listener(relay, "radio").await;
    let until = Instant::now() + stay;
    let mut last: Option<u64> = None;
    let mut heard = 0;
    while let Ok(next) = tokio::time::timeout_at(until, ws.next()).await {
        match next.expect("the relay never ends a healthy listener").unwrap() {
            Message::Binary(data) => {
                let n = u64::from_be_bytes(data[10..18].try_into().unwrap());
                if let Some(last) = last {
                    assert_eq!(n, last + 1, "a healthy listener missed frames");
                }
                last = Some(n);
                heard += 1;
            }
            Message::Text(text) => {
                assert!(!text.contains("skipped"), "healthy listener skipped: {text}")
            }
            _ => {}
        }
    }
    ws.close(None).await.ok();
    heard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: run with `make soak`"]
async fn soak_leaves_nothing_behind_and_healthy_listeners_hear_everything() {
    let seconds: u64 =
        std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed = std::env::var("SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0a1e);
    eprintln!("soak: {seconds} s, SOAK_SEED={seed}");
    let mut config = config(&[]);
    let mut stream = StreamConfig::new("radio", Some("SECRET"));
    stream.burst = Duration::ZERO;
    stream.ring_bytes = 256 << 10;
    config.streams.push(stream);
    config.slow_listener_timeout = Duration::from_secs(2);
    config.ping_interval = Duration::from_millis(500);
    config.dead_peer_timeout = Duration::from_secs(5);

    let metrics = tokio::runtime::Handle::current().metrics();
    let (fds_before, tasks_before, rss_before) =
        (open_fds(), metrics.num_alive_tasks(), rss_bytes());
    let relay = Arc::new(TestRelay::start_with(config).await);
    let end = Instant::now() + Duration::from_secs(seconds);

    // The source: 100 frames/s of 1 kB, numbered; drops its connection every few seconds.
    let counter = Arc::new(AtomicU64::new(0));
    let source_task = {
        let (relay, counter) = (Arc::clone(&relay), Arc::clone(&counter));
        tokio::spawn(async move {
            let mut rng = Rng(seed ^ 1);
            while Instant::now() < end {
                let mut src = source(&relay, "radio", "SECRET").await;
                let session_end = Instant::now() + Duration::from_millis(2_000 + rng.below(4_000));
                while Instant::now() < session_end.min(end) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let mut body = n.to_be_bytes().to_vec();
                    body.resize(1000, 0);
                    src.send(Message::binary(frame(n * 10_000, &body))).await.unwrap();
                    sleep(Duration::from_millis(10)).await;
                }
                src.close(None).await.ok();
                sleep(Duration::from_millis(rng.below(1_000))).await;
            }
        })
    };

    // Listeners come and go; one in eight stalls (never reads) for a while.
    let mut rng = Rng(seed);
    let mut tasks = Vec::new();
    let (mut healthy, mut stalled, mut heard) = (0, 0, 0);
    while Instant::now() < end {
        let relay = Arc::clone(&relay);
        let stay = Duration::from_millis(200 + rng.below(4_000));
        if rng.below(8) == 0 {
            stalled += 1;
            tasks.push(tokio::spawn(async move {
                let ws = stalled_listener(&relay, "radio").await;
                sleep(stay).await;
                drop(ws);
                0
            }));
        } else {
            healthy += 1;
            tasks.push(tokio::spawn(async move { healthy_listener(&relay, stay).await }));
        }
        // Finished listeners are joined as we go, so a failed check surfaces here.
        let (done, running): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|t| t.is_finished());
        tasks = running;
        for task in done {
            heard += task.await.expect("a listener's checks failed");
        }
        sleep(Duration::from_millis(20 + rng.below(60))).await;
    }
    for task in tasks {
        heard += tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
    }
    source_task.await.unwrap();
    eprintln!(
        "soak: {healthy} healthy and {stalled} stalled listeners, {} frames sent, {heard} frames heard in all",
        counter.load(Ordering::Relaxed)
    );

    // Everything is released: listener counts, connections, tasks, sockets, memory.
    within(async {
        loop {
            let (_, body) = http_get(&relay, "/api/streams").await;
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            if json["streams"][0]["listeners"] == 0 {
                break;
            }
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (_, text) = http_get(&relay, "/metrics").await;
    assert!(text.contains("onair_connections 1\n"), "only the /metrics request is open:\n{text}");
    Arc::into_inner(relay).expect("no task holds the relay").shutdown().await;
    within(async {
        while metrics.num_alive_tasks() > tasks_before {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(open_fds(), fds_before, "sockets leaked");
    let growth = rss_bytes().saturating_sub(rss_before);
    assert!(growth < 64 << 20, "memory grew by {growth} bytes");
}
