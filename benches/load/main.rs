//! `load`: onair and Icecast 2 side by side under thousands of listeners.
//!
//! `make bench` runs `cargo bench --bench load -- compare`: it starts both servers, pushes the
//! same stamped stream to both, and steps the number of listeners (see docs/PERFORMANCE.md):
//! onair's WebSocket listeners against Icecast's HTTP ones, then HTTP against HTTP (Ogg, MP3,
//! ICY metadata), plain against TLS on each server, and onair's LL-HLS clients against its
//! HTTP listeners. `client` is the listener process it spawns (one epoll loop, thousands of
//! sockets, rustls sessions over TLS).

mod client;
mod compare;
mod hist;
mod hls;
mod procs;
mod report;
mod source;
mod wire;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "load", about = "onair vs Icecast under many listeners")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, global = true, hide = true)]
    bench: bool,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the comparison (needs root: Icecast runs as its own user).
    Compare {
        /// A short smoke check instead of the full run.
        #[arg(long)]
        quick: bool,
        /// Output folder (results.json, results.md, chart.svg, chart-http.svg, the TLS certificate,
        /// onair's configs and logs).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench"))]
        out: PathBuf,
        /// The onair release binary (default: the target folder's release/onair).
        #[arg(long)]
        onair: Option<PathBuf>,
        /// Seconds to hold each step (default 20; quick 5, and 3 in the http, icy and tls
        /// scenarios).
        #[arg(long)]
        hold: Option<u64>,
        /// Listener counts of the audio scenario, comma-separated (default 100,1000,5000,10000;
        /// quick 100,1000).
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<usize>>,
        /// Counts tried after the steps of the audio and http scenarios while a server holds
        /// (default 15000,19000; quick none).
        #[arg(long, value_delimiter = ',')]
        further: Option<Vec<usize>>,
        /// Listener counts of the http scenario (default 1000,2000,5000,10000; quick 100,1000).
        #[arg(long, value_delimiter = ',')]
        http_steps: Option<Vec<usize>>,
        /// Listener counts of each listener kind in the icy scenario (default 2000,5000;
        /// quick 500).
        #[arg(long, value_delimiter = ',')]
        icy_steps: Option<Vec<usize>>,
        /// Listener counts of each listener kind in the tls scenario (default 500,2000;
        /// quick 200).
        #[arg(long, value_delimiter = ',')]
        tls_steps: Option<Vec<usize>>,
        /// Listener counts of each listener kind in the hls scenario (default 500,1000,2000;
        /// quick 200).
        #[arg(long, value_delimiter = ',')]
        hls_steps: Option<Vec<usize>>,
        /// Now-playing titles set during each hold of the icy scenario (default 4, quick 2).
        #[arg(long)]
        title_changes: Option<u32>,
        /// onair's send_window_ms for the audio, stalled and video scenarios: 40 ms, the radio
        /// setting (the relay's own default is 0; the window scenario compares several). The
        /// http, icy and tls scenarios run onair with its default config instead.
        #[arg(long, default_value_t = 40)]
        send_window_ms: u64,
        /// Send windows compared in the window scenario (default 0,20,40,60,100).
        #[arg(long, value_delimiter = ',')]
        window_sweep: Option<Vec<u64>>,
        /// An extra top-level line for onair's config, e.g. "listener_kernel_bytes = 262144"
        /// (repeatable; applies to every scenario, so the http, icy and tls figures are then
        /// no longer out of the box).
        #[arg(long)]
        onair_config: Vec<String>,
        /// Cores the servers run on: `0` (one core; the load clients get the others) or
        /// `all` (servers and clients share the machine, as a relay would in production).
        #[arg(long, default_value = "0")]
        server_cores: String,
        /// Servers to run: onair, icecast.
        #[arg(long, value_delimiter = ',', default_value = "onair,icecast")]
        servers: Vec<String>,
        /// Scenarios to run: audio (WebSocket vs Icecast HTTP), stalled, window, video,
        /// http (HTTP vs HTTP, /bench.ogg), icy (ICY metadata, Ogg and MP3), tls (plain vs
        /// TLS on each server), hls (onair's LL-HLS clients vs its HTTP listeners).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "audio,stalled,window,video,http,icy,tls,hls"
        )]
        scenarios: Vec<String>,
    },
    /// Renders results.md and chart.svg again from a results folder's results.json.
    Render {
        /// The folder with results.json.
        dir: PathBuf,
    },
    /// Checks the load tool's own parsers (also run before every comparison).
    Selftest,
    /// One listener process (spawned by `compare`; commands on stdin).
    Client {
        /// Server address.
        #[arg(long)]
        addr: SocketAddrV4,
        /// Local address to connect from.
        #[arg(long, default_value = "127.0.0.1")]
        bind: Ipv4Addr,
        /// `ws` (onair's WebSocket listeners), `http` (Icecast-style: Ogg pages, or MP3
        /// frames when the path ends in .mp3) or `hls` (LL-HLS: the path is the playlist).
        #[arg(long)]
        proto: String,
        /// Request path.
        #[arg(long)]
        path: String,
        /// SO_RCVLOWAT of bulk listeners.
        #[arg(long, default_value_t = 16384)]
        rcvlowat: i32,
        /// HTTP: send `Icy-MetaData: 1` and strip the ICY blocks before parsing.
        #[arg(long)]
        icy: bool,
        /// Connect over TLS, trusting only this PEM certificate.
        #[arg(long)]
        tls_root: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = cli.bench;
    match cli.command {
        None => {
            eprintln!("load: run `make bench` (or `cargo bench --bench load -- compare --quick`)");
            Ok(())
        }
        Some(Command::Render { dir }) => {
            let results: report::Results =
                serde_json::from_str(&std::fs::read_to_string(dir.join("results.json"))?)?;
            std::fs::write(dir.join("results.md"), report::markdown(&results))?;
            report::write_charts(&dir, &results)
        }
        Some(Command::Selftest) => {
            selftest();
            eprintln!("load selftest: ok");
            Ok(())
        }
        Some(Command::Client { addr, bind, proto, path, rcvlowat, icy, tls_root }) => {
            let proto = match proto.as_str() {
                "ws" => client::Proto::Ws,
                "http" => client::Proto::Http,
                "hls" => client::Proto::Hls,
                other => anyhow::bail!("unknown protocol {other} (ws, http or hls)"),
            };
            client::run(client::Spec { addr, bind, proto, path, rcvlowat, icy, tls_root })
        }
        Some(Command::Compare {
            quick,
            out,
            onair,
            hold,
            steps,
            further,
            http_steps,
            icy_steps,
            tls_steps,
            hls_steps,
            title_changes,
            send_window_ms,
            window_sweep,
            onair_config,
            server_cores,
            servers,
            scenarios,
        }) => {
            // This binary is <target>/release/deps/load-HASH; the relay is <target>/release/onair.
            let release = std::env::current_exe()?
                .parent()
                .and_then(|deps| deps.parent())
                .map(PathBuf::from)
                .unwrap_or_default();
            let servers = servers
                .iter()
                .map(|s| match s.as_str() {
                    "onair" => Ok(compare::Kind::Onair),
                    "icecast" => Ok(compare::Kind::Icecast),
                    other => Err(anyhow::anyhow!("unknown server {other}")),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            const SCENARIOS: [&str; 8] =
                ["audio", "stalled", "window", "video", "http", "icy", "tls", "hls"];
            if let Some(bad) = scenarios.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
                anyhow::bail!("unknown scenario {bad} (known: {})", SCENARIOS.join(", "));
            }
            let opts = compare::Options {
                quick,
                out,
                onair: onair.unwrap_or_else(|| release.join("onair")),
                hold_s: hold.unwrap_or(if quick { 5 } else { 20 }),
                suite_hold_s: hold.unwrap_or(if quick { 3 } else { 20 }),
                steps: steps.unwrap_or_else(|| {
                    if quick {
                        vec![100, 1000]
                    } else {
                        vec![100, 1000, 5000, 10_000]
                    }
                }),
                further: further
                    .map(|f| f.into_iter().filter(|&n| n > 0).collect())
                    .unwrap_or_else(|| if quick { vec![] } else { vec![15_000, 19_000] }),
                stall_listeners: if quick { 500 } else { 2000 },
                video_steps: if quick {
                    vec![25, 50]
                } else {
                    vec![25, 50, 100, 200, 400, 800, 1600, 3200]
                },
                window_sweep: window_sweep.unwrap_or_else(|| {
                    if quick {
                        vec![0, 40]
                    } else {
                        vec![0, 20, 40, 60, 100]
                    }
                }),
                window_listeners: if quick { 500 } else { 2000 },
                video_hold_s: if quick { 3 } else { 6 },
                http_steps: http_steps.unwrap_or_else(|| {
                    if quick {
                        vec![100, 1000]
                    } else {
                        vec![1000, 2000, 5000, 10_000]
                    }
                }),
                icy_steps: icy_steps.unwrap_or_else(|| {
                    if quick {
                        vec![500]
                    } else {
                        vec![2000, 5000]
                    }
                }),
                tls_steps: tls_steps.unwrap_or_else(|| {
                    if quick {
                        vec![200]
                    } else {
                        vec![500, 2000]
                    }
                }),
                hls_steps: hls_steps.unwrap_or_else(|| {
                    if quick {
                        vec![200]
                    } else {
                        vec![500, 1000, 2000]
                    }
                }),
                title_changes: title_changes.unwrap_or(if quick { 2 } else { 4 }),
                send_window_ms: Some(send_window_ms),
                onair_config,
                server_cores,
                servers,
                scenarios,
            };
            selftest();
            compare::run(&opts)
        }
    }
}

/// Panics if the parsers disagree with the writers: a broken parser would report losses that
/// never happened.
fn selftest() {
    wire::selftest::websocket_frames_parse_in_any_split();
    wire::selftest::ogg_pages_parse_in_any_split();
    wire::selftest::mp3_frames_parse_in_any_split();
    wire::selftest::icy_blocks_are_stripped_in_any_split();
    wire::selftest::mp3_joined_mid_frame_finds_its_sync();
    wire::selftest::base64_matches_rfc4648();
    hls::selftest::parts_and_playlists_parse();
    hist::selftest::quantiles_are_within_a_few_percent();
}
