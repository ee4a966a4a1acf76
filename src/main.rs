//! The `onair` command: `serve` runs the relay, `push` broadcasts files to it, `check`
//! validates a config without starting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use onair::config::{Config, StreamConfig};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "onair",
    version,
    about = "A live audio/video relay: WebSocket and Icecast ingest, fan-out to thousands of listeners"
)]
#[command(
    after_help = "Run `onair serve` and open http://127.0.0.1:8000/ to listen.\nLog level: RUST_LOG=debug onair serve"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    #[command(
        after_help = "Without --config: listens on 127.0.0.1:8000 with one stream `demo` whose key is \
printed in the log.\nSee docs/onair.example.toml for every setting; behind nginx, HAProxy or Caddy \
see docs/DEPLOY.md (trusted_proxies, proxy_protocol).\n\n\
Examples:\n  onair serve\n  onair serve --config onair.toml\n  onair serve --config onair.toml --listen 0.0.0.0:8000"
    )]
    Serve {
        /// TOML config file (see docs/onair.example.toml).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the config (e.g. 0.0.0.0:8000; port 0 picks a free port).
        #[arg(short, long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Check a config without starting: its values, then the files it names.
    #[command(
        after_help = "Reads the config as `serve` would (errors name file:line:column), then what `serve` \
reads at start: the [tls] certificate and key, each stream's playlist, web_root. Binds no port.\n\
Exit 0 with a one-line summary on stdout, 1 with the error on stderr. The systemd unit runs it \
as ExecStartPre=.\n\nExample:\n  onair check --config /etc/onair/onair.toml"
    )]
    Check {
        /// TOML config file (see docs/onair.example.toml).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    #[cfg(feature = "source")]
    Push(onair::push::PushArgs),
    /// Print a new random stream key.
    Keygen,
    /// Mint signed listener links (WebSocket, then web player) for a stream with a `listen_secret`.
    #[command(
        after_help = "Examples:\n  onair sign radio --config onair.toml --hours 24\n  onair sign radio --secret \"$SECRET\" --base https://radio.example"
    )]
    Sign {
        /// Stream name.
        stream: String,
        /// Config file to read the stream's listen_secret from.
        #[arg(
            short,
            long,
            value_name = "FILE",
            conflicts_with = "secret",
            required_unless_present = "secret"
        )]
        config: Option<PathBuf>,
        /// The stream's listen_secret (instead of --config).
        #[arg(long, env = "ONAIR_LISTEN_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// How long the link stays valid, in hours.
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
        /// Where listeners reach the relay.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        base: String,
    },
    /// Connect as a listener and print what a stream carries (hello, events, frames).
    #[command(
        after_help = "Examples:\n  onair listen ws://127.0.0.1:8000/listen/demo\n  onair listen --frames --seconds 2 ws://127.0.0.1:8000/listen/radio"
    )]
    Listen {
        /// Listener URL, ws://HOST:PORT/listen/STREAM.
        url: String,
        /// Print every frame header instead of a summary per second.
        #[arg(long)]
        frames: bool,
        /// Stop after this many seconds.
        #[arg(long, value_name = "N")]
        seconds: Option<f64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .with_writer(log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve { config, listen } => serve(config, listen),
        Command::Check { config } => check(&config).map(|summary| println!("{summary}")),
        #[cfg(feature = "source")]
        Command::Push(args) => return push(args),
        Command::Keygen => keygen().map(|key| println!("{key}")),
        Command::Listen { url, frames, seconds } => listen(url, frames, seconds),
        Command::Sign { stream, config, secret, hours, base } => {
            sign(&stream, config, secret, hours, &base)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("onair: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo station's playlist: samples/ beside the working directory, else in the source tree.
fn demo_playlist() -> Option<PathBuf> {
    if !cfg!(feature = "source") {
        return None;
    }
    [
        PathBuf::from("samples/playlist.m3u"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/playlist.m3u"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Log lines go to stderr, above `onair push`'s status line when it shows one.
#[cfg(feature = "source")]
use onair::push::log_writer;
#[cfg(not(feature = "source"))]
fn log_writer() -> std::io::Stderr {
    std::io::stderr()
}

/// `onair push`: the exit code comes from `PushError::exit_code` (2 usage, 3 for 401, 4 for 404,
/// 5 the input device).
#[cfg(feature = "source")]
fn push(args: onair::push::PushArgs) -> ExitCode {
    #[cfg(feature = "capture")]
    if args.list_inputs {
        return match onair::push::capture::list_inputs() {
            Ok(inputs) => {
                print!("{}", onair::push::capture::format_inputs(&inputs));
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("onair: error: {err}");
                ExitCode::from(err.exit_code())
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("onair: error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(onair::push::run(args, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("onair: error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn serve(config_path: Option<PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let (mut config, demo_key) = match &config_path {
        Some(path) => (Config::load(path)?, None),
        None => {
            let key = keygen()?;
            let mut demo = StreamConfig::new("demo", Some(&key));
            demo.playlist = demo_playlist();
            (Config { streams: vec![demo], ..Config::default() }, Some(key))
        }
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if !cfg!(feature = "cluster") && config.cluster.is_some() {
        anyhow::bail!("the config has a [cluster] table but this build has no `cluster` feature");
    }
    check_open_files(&config);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let how = "--listen or `listen` in the config";
        let listener =
            onair::server::bind(config.listen).map_err(|e| bind_error(e, config.listen, "", how))?;
        let addr = listener.local_addr()?;
        if let Some(key) = &demo_key {
            info!("its generated key is on standard output, once: keys are never logged");
            // NOTE: printed for the user, not logged: log lines end up in journals and
            // collectors, and no key may ever be in them.
            if cfg!(feature = "source") {
                info!("no --config: stream `demo` plays the auto-DJ (samples/); open the player at http://{addr}/");
                println!("Go live over the demo's auto-DJ (it returns when you stop):");
                println!("  onair push --to ws://{addr}/ingest/demo --key {key} FILES");
            } else {
                info!("no --config: stream `demo` waits for a source (this relay-only build has no auto-DJ); open the player at http://{addr}/");
                println!("Go live with the broadcaster page http://{addr}/broadcast?stream=demo (key {key}),");
                println!("or with ffmpeg: ffmpeg -re -i FILE -c:a libopus -f ogg icecast://source:{key}@{addr}/demo.ogg");
            }
        } else {
            for stream in &config.streams {
                info!(stream = %stream.name, "ingest at ws://{addr}/ingest/{}, listen at ws://{addr}/listen/{}", stream.name, stream.name);
            }
            info!("web player at http://{addr}/");
            if let Some(cluster) = &config.cluster {
                info!(node = %cluster.node, "cluster node: streams shared through nats at {}", cluster.nats.join(", "));
            }
            if let Some(tls) = &config.tls {
                info!("and over tls at https://{}/ (wss:// for WebSockets)", tls.listen);
            }
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        let tls = match &config.tls {
            Some(tls_config) => {
                let terminator = onair::server::tls::Terminator::new(tls_config.clone())
                    .context("loading the TLS certificate")?;
                let (tls_addr, how) = (tls_config.listen, "`listen` in [tls]");
                let tls_listener = onair::server::bind(tls_addr)
                    .map_err(|e| bind_error(e, tls_addr, " for tls", how))?;
                Some((terminator, tls_listener))
            }
            None => None,
        };
        let server = onair::server::Server::new(config);
        // NOTE: watched with or without TLS: SIGHUP's default action would end the relay, and
        // `systemctl reload` (the unit's ExecReload) sends it.
        tokio::spawn(reload_on_sighup(tls.as_ref().map(|(t, _)| std::sync::Arc::clone(t))));
        let tls = tls.map(|(terminator, tls_listener)| (tls_listener, terminator));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        });
        server.serve(listener, tls, shutdown.cancelled_owned()).await?;
        info!("stopped");
        Ok(())
    })
}

/// Why `addr` cannot be bound, and what to do about it; `how` names the setting that picks
/// another address.
fn bind_error(err: std::io::Error, addr: SocketAddr, what: &str, how: &str) -> anyhow::Error {
    let hint = match err.kind() {
        std::io::ErrorKind::AddrInUse => {
            let mut other = addr;
            other.set_port(addr.port().wrapping_add(1).max(1));
            format!(
                "another program (or another onair) listens there; pick another address with {how} \
(e.g. {other})"
            )
        }
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE (the systemd unit grants it)"
                .to_owned()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!(
                "no network interface of this machine has that address; pick another with {how}"
            )
        }
        _ => return anyhow::anyhow!("cannot listen on {addr}{what}: {err}"),
    };
    anyhow::anyhow!("cannot listen on {addr}{what}: {err}: {hint}")
}

/// `onair check`: everything `serve` validates or reads before it binds, without binding;
/// returns the one-line summary.
fn check(path: &Path) -> anyhow::Result<String> {
    let config = Config::load(path)?;
    let file = path.display();
    if let Some(root) = &config.web_root {
        anyhow::ensure!(
            root.join("index.html").is_file(),
            "{file}: web_root {}: no index.html there (the web player's folder)",
            root.display()
        );
    }
    if let Some(tls) = &config.tls {
        onair::server::tls::Terminator::new(tls.clone())
            .with_context(|| format!("{file}: [tls]"))?;
    }
    let mut streams = Vec::new();
    for stream in &config.streams {
        let mut roles = Vec::new();
        if let Some(playlist) = &stream.playlist {
            check_playlist(&stream.name, playlist).with_context(|| file.to_string())?;
            roles.push("auto-DJ");
        }
        if stream.key.is_some() {
            roles.push("live");
        }
        if stream.listen_secret.is_some() {
            roles.push("private");
        }
        streams.push(format!("{} ({})", stream.name, roles.join(", ")));
    }
    let mut summary = format!("{file}: ok: listen {}", config.listen);
    if config.proxy_protocol {
        summary.push_str(" (proxy protocol)");
    }
    if let Some(tls) = &config.tls {
        summary.push_str(&format!(", tls {}", tls.listen));
        if tls.proxy_protocol {
            summary.push_str(" (proxy protocol)");
        }
    }
    if !config.trusted_proxies.is_empty() {
        summary.push_str(&format!(", trusted proxies {}", config.trusted_proxies));
    }
    match streams.len() {
        0 => summary.push_str(", no streams"),
        1 => summary.push_str(&format!(", 1 stream: {}", streams[0])),
        n => summary.push_str(&format!(", {n} streams: {}", streams.join(", "))),
    }
    Ok(summary)
}

/// The auto-DJ must find something to play where the playlist points.
#[cfg(feature = "source")]
fn check_playlist(stream: &str, playlist: &Path) -> anyhow::Result<()> {
    let entries = onair::push::expand(std::slice::from_ref(&playlist.to_path_buf()))
        .map_err(|err| anyhow::anyhow!("stream `{stream}`: playlist: {err}"))?;
    anyhow::ensure!(
        !entries.is_empty(),
        "stream `{stream}`: playlist {}: no audio files in it",
        playlist.display()
    );
    Ok(())
}

#[cfg(not(feature = "source"))]
fn check_playlist(stream: &str, playlist: &Path) -> anyhow::Result<()> {
    eprintln!(
        "onair: warning: stream `{stream}`: this build has no auto-DJ (no `source` feature): {} \
will not be played",
        playlist.display()
    );
    Ok(())
}

fn sign(
    stream: &str,
    config: Option<PathBuf>,
    secret: Option<String>,
    hours: f64,
    base: &str,
) -> anyhow::Result<()> {
    anyhow::ensure!(hours.is_finite() && hours > 0.0, "--hours must be positive");
    let secret = match (secret, config) {
        (Some(secret), _) => secret,
        (None, Some(path)) => {
            let config = Config::load(&path)?;
            let found = config.streams.into_iter().find(|s| s.name == stream);
            let found =
                found.with_context(|| format!("no stream `{stream}` in {}", path.display()))?;
            let max_hours = found.max_link_lifetime.as_secs_f64() / 3600.0;
            anyhow::ensure!(
                hours <= max_hours,
                "stream `{stream}` refuses links valid for more than {max_hours} hours (max_link_lifetime_hours)"
            );
            found
                .listen_secret
                .with_context(|| format!("stream `{stream}` has no listen_secret"))?
        }
        (None, None) => anyhow::bail!("give --config or --secret"),
    };
    let expires = onair::auth::unix_now() + (hours * 3600.0) as u64;
    let query = format!("expires={expires}&sig={}", onair::auth::sign(&secret, stream, expires));
    let base = base.trim_end_matches('/');
    let ws_base = base.replacen("http", "ws", 1);
    println!("{ws_base}/listen/{stream}?{query}");
    println!("{base}/?stream={stream}&{query}");
    Ok(())
}

fn listen(url: String, frames: bool, seconds: Option<f64>) -> anyhow::Result<()> {
    let duration = match seconds {
        Some(s) if s.is_finite() && s > 0.0 => Some(std::time::Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--seconds must be a positive number, not {s}"),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(onair::inspect::run(onair::inspect::InspectOptions { url, frames, duration }))
}

/// Reloads the TLS certificate and key on every SIGHUP; listeners stay connected. Without TLS
/// a SIGHUP only says so. The signal is watched from the call on, not from the first poll.
fn reload_on_sighup(
    terminator: Option<std::sync::Arc<onair::server::tls::Terminator>>,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let Ok(mut hup) = hup else {
                return error!("cannot watch SIGHUP: the certificate will not be reloaded");
            };
            while hup.recv().await.is_some() {
                match &terminator {
                    Some(terminator) => {
                        if let Err(err) = terminator.reload() {
                            error!(%err, "tls reload failed; keeping the old certificate");
                        }
                    }
                    None => info!("sighup: no [tls] to reload; other settings take a restart"),
                }
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    error!(%err, "cannot watch SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// 24 random bytes from the OS, URL-safe base64 (32 characters).
fn keygen() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut key = String::with_capacity(32);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            key.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
        }
    }
    Ok(key)
}

/// Every listener is an open file: raises the soft limit to the hard one (Debian's soft limit
/// of 1 024 would refuse listeners past about a thousand) and says so when `max_connections`
/// still does not fit.
fn check_open_files(config: &Config) {
    match onair::server::raise_open_file_limit() {
        Ok(limit) => {
            let needed = u64::try_from(config.max_connections).unwrap_or(u64::MAX);
            if limit < needed.saturating_add(64) {
                tracing::warn!(
                    open_files = limit,
                    max_connections = config.max_connections,
                    "the open-file limit is below max_connections: connections past it are refused (raise it with `ulimit -n` or systemd's LimitNOFILE=)"
                );
            } else {
                tracing::debug!(open_files = limit, "open-file limit");
            }
        }
        Err(err) => tracing::warn!(%err, "cannot read or raise the open-file limit"),
    }
}
