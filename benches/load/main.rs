//! `load`: onair and Icecast 2 side by side under thousands of listeners.
//!
//! `make bench` runs `cargo bench --bench load -- compare`: it starts both servers, pushes the
//! same stamped stream to each, and steps the number of listeners (see docs/PERFORMANCE.md).
//! `client` is the listener process it spawns (one epoll loop, thousands of sockets).

mod client;
mod compare;
mod hist;
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

#[derive(Subcommand)]
enum Command {
    /// Run the comparison (needs root: Icecast runs as its own user).
    Compare {
        /// A short smoke check instead of the full run.
        #[arg(long)]
        quick: bool,
        /// Output folder (results.json, results.md, chart.svg).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench"))]
        out: PathBuf,
        /// The onair release binary (default: the target folder's release/onair).
        #[arg(long)]
        onair: Option<PathBuf>,
        /// Seconds to hold each step (default 20, quick 5).
        #[arg(long)]
        hold: Option<u64>,
        /// Listener counts, comma-separated (default 100,1000,5000,10000).
        #[arg(long, value_delimiter = ',')]
        steps: Option<Vec<usize>>,
        /// Counts tried after the steps while a server holds (default 15000,19000).
        #[arg(long, value_delimiter = ',')]
        further: Option<Vec<usize>>,
        /// onair's send_window_ms for the side-by-side runs: 40 ms, the radio setting
        /// (the relay's own default is 0; the window scenario compares several).
        #[arg(long, default_value_t = 40)]
        send_window_ms: u64,
        /// Send windows compared in the window scenario (default 0,20,40,60,100).
        #[arg(long, value_delimiter = ',')]
        window_sweep: Option<Vec<u64>>,
        /// An extra top-level line for onair's config, e.g. "listener_kernel_bytes = 262144"
        /// (repeatable).
        #[arg(long)]
        onair_config: Vec<String>,
        /// Cores the servers run on: `0` (one core; the load clients get the others) or
        /// `all` (servers and clients share the machine, as a relay would in production).
        #[arg(long, default_value = "0")]
        server_cores: String,
        /// Servers to run: onair, icecast.
        #[arg(long, value_delimiter = ',', default_value = "onair,icecast")]
        servers: Vec<String>,
        /// Scenarios to run: audio, stalled, window, video.
        #[arg(long, value_delimiter = ',', default_value = "audio,stalled,window,video")]
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
        /// `ws` (onair) or `http` (Icecast).
        #[arg(long)]
        proto: String,
        /// Request path.
        #[arg(long)]
        path: String,
        /// SO_RCVLOWAT of bulk listeners.
        #[arg(long, default_value_t = 16384)]
        rcvlowat: i32,
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
            std::fs::write(dir.join("chart.svg"), report::svg(&results))?;
            Ok(())
        }
        Some(Command::Selftest) => {
            selftest();
            eprintln!("load selftest: ok");
            Ok(())
        }
        Some(Command::Client { addr, bind, proto, path, rcvlowat }) => {
            let proto = if proto == "ws" { client::Proto::Ws } else { client::Proto::Http };
            client::run(addr, bind, proto, &path, rcvlowat)
        }
        Some(Command::Compare {
            quick,
            out,
            onair,
            hold,
            steps,
            further,
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
            let opts = compare::Options {
                quick,
                out,
                onair: onair.unwrap_or_else(|| release.join("onair")),
                hold_s: hold.unwrap_or(if quick { 5 } else { 20 }),
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
    wire::selftest::base64_matches_rfc4648();
    hist::selftest::quantiles_are_within_a_few_percent();
}
