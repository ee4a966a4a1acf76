//! The source client (`onair push`) and the playout engine it shares with the relay's auto-DJ.
//!
//! Data flow: `playlist` expands the inputs → `decode` yields PCM per file → `encode` resamples to
//! 48 kHz, mixes and encodes one unbroken Opus stream of 20 ms packets → `playout` runs those on
//! a dedicated thread behind a bounded channel → `pace` releases each packet on an absolute clock
//! → `publish` sends them to the relay's `/ingest/{stream}` and reconnects when it goes away.
//! Everything but `publish` and `pace` is synchronous and free of network I/O.

mod audience;
pub mod autodj;
#[cfg(feature = "capture")]
pub mod capture;
mod decode;
mod encode;
mod mp4;
mod pace;
mod playlist;
mod playout;
mod publish;
mod status;

use std::future::Future;
use std::path::PathBuf;

use crate::protocol;

pub use decode::{DecodeError, FileDecoder, PcmChunk, PcmFormat, PcmReader, PcmSpec};
pub use encode::{
    opus_head, EncodedFrame, StreamEncoder, FRAME_DURATION_US, FRAME_SAMPLES, SAMPLE_RATE,
};
pub use pace::{OutputSource, Paced, Pacer, MAX_LATENESS};
pub use playlist::{expand, Entry, Playlist};
pub use playout::{Output, Playout, PlayoutConfig, OUTPUT_CAPACITY};
pub use publish::{Backoff, Target, MAX_BACKOFF, MIN_BACKOFF};
pub use status::{log_writer, LogWriter};

/// Default Opus bitrate for a stereo stream, in bits per second.
pub const DEFAULT_STEREO_BITRATE: u32 = 128_000;
/// Default Opus bitrate for a mono stream, in bits per second.
pub const DEFAULT_MONO_BITRATE: u32 = 64_000;

/// `onair push --help`'s closing text; `$capture` holds what only the capture build offers.
macro_rules! exit_codes_help {
    ($code5:literal, $transient:literal, $examples:literal) => {
        concat!(
            "\
Exit codes:
  0  the playlist finished (never with --loop), or the push was stopped
  1  fatal error: no input could be decoded, the relay refused the source for good, ...
  2  usage error: bad flag, missing input file, malformed --to URL
  3  the relay refused the key (401): missing or wrong --key
  4  the relay has no stream of that name (404)
",
            $code5,
            "
Transient failures (connection refused, relay restarting, 409 another source is live,
503, any 5xx, a connection dropped mid-stream) are retried for ever, backing off from
0.5 s to 10 s; the playout pauses meanwhile and resumes where it stopped.",
            $transient,
            "

Examples:
  onair push --to ws://127.0.0.1:8000/ingest/radio --key SECRET music/ jingles/id.flac
  onair push --to ws://127.0.0.1:8000/ingest/radio --key SECRET --loop --shuffle music/
  onair push --to http://relay.example:8000/ingest/talk --channels 1 show.m3u
  ffmpeg -i input.mkv -f s16le -ar 48000 -ac 2 - | \\
      onair push --to ws://127.0.0.1:8000/ingest/radio --key SECRET --title Live -",
            $examples
        )
    };
}

#[cfg(feature = "capture")]
const EXIT_CODES_HELP: &str = exit_codes_help!(
    "  5  the input device (--input) is missing or cannot be opened, or it failed or
     stopped delivering audio while live (unplugged, its sound server died): no retry,
     the connection is closed so the relay's auto-DJ (if any) takes over at once
",
    " A live
input (--input) does not pause: what it captures while the relay is away is dropped
(counted) and the stream resumes at the live edge.",
    "
  onair push --list-inputs
  onair push --to ws://127.0.0.1:8000/ingest/radio --key SECRET --input --title \"Morning show\"
  onair push --to ws://127.0.0.1:8000/ingest/radio --key SECRET --input hw:CARD=USB,DEV=0 --quiet"
);
#[cfg(not(feature = "capture"))]
const EXIT_CODES_HELP: &str = exit_codes_help!("", "", "");

/// `onair push --help`'s description; the second paragraph only where `--input` exists.
macro_rules! push_about {
    ($what:literal, $live:literal) => {
        concat!(
            "Play files, folders, playlists",
            $what,
            " into a relay stream in real time.\n\n\
            Each input is decoded (WAV, FLAC, MP3, Ogg Vorbis, AAC/M4A), resampled to 48 kHz and \
            encoded into one continuous Opus stream of 20 ms packets, paced by the clock. \
            Listeners see each track's title, artist and album (from its tags, or its file name). \
            Files that cannot be decoded are reported and skipped.",
            $live
        )
    };
}

#[cfg(feature = "capture")]
const PUSH_ABOUT: &str = push_about!(
    " or a sound card's input",
    "\n\n\
    With --input the audio comes live from an ALSA capture device instead, paced by the \
    device's own clock; the terminal shows the input level (peak and RMS in dBFS, a clip \
    indicator), the bitrate, the time on air and the listener count (from the relay's \
    /api/streams). Lines typed on standard input become the now-playing title \
    (`Artist - Title`, or just a title)."
);
#[cfg(not(feature = "capture"))]
const PUSH_ABOUT: &str = push_about!("", "");

/// Command-line flags of `onair push`.
#[derive(Debug, Clone, clap::Args)]
#[cfg_attr(
    feature = "capture",
    command(
        about = "Play files, playlists or a sound card's input into a relay stream in real time"
    )
)]
#[cfg_attr(
    not(feature = "capture"),
    command(about = "Play files, folders or playlists into a relay stream in real time")
)]
#[command(long_about = PUSH_ABOUT, after_help = EXIT_CODES_HELP)]
pub struct PushArgs {
    /// Ingest URL of the stream: ws://HOST:PORT/ingest/NAME (http://, https:// and wss:// too).
    #[arg(long, value_name = "URL", env = "ONAIR_PUSH_URL", hide_env_values = true)]
    #[cfg_attr(
        feature = "capture",
        arg(required_unless_present = "list_inputs", default_value = "")
    )]
    pub to: String,

    /// The stream's source key, sent as `Authorization: Bearer KEY`.
    #[arg(long, value_name = "KEY", env = "ONAIR_KEY", hide_env_values = true)]
    pub key: Option<String>,

    /// Files, folders (played recursively in name order) and .m3u/.m3u8 playlists, or `-` for
    /// raw PCM on standard input.
    #[cfg_attr(
        feature = "capture",
        arg(value_name = "INPUT", required_unless_present_any = ["input", "list_inputs"], conflicts_with = "input")
    )]
    #[cfg_attr(not(feature = "capture"), arg(value_name = "INPUT", required = true))]
    pub inputs: Vec<PathBuf>,

    /// Capture live from an ALSA input device instead of files: a name from --list-inputs
    /// (or a unique part of it); without a name, the system's default input.
    #[cfg(feature = "capture")]
    #[arg(
        long,
        value_name = "DEVICE",
        num_args = 0..=1,
        default_missing_value = "",
        conflicts_with_all = ["looping", "shuffle", "fast"]
    )]
    pub input: Option<String>,

    /// List the input devices (name, default marker, channels, rates, formats) and exit.
    #[cfg(feature = "capture")]
    #[arg(long, exclusive = true)]
    pub list_inputs: bool,

    /// Start over when the playlist ends (for ever).
    #[arg(long = "loop")]
    pub looping: bool,

    /// Play the inputs in random order (a new order on each pass with --loop).
    #[arg(long)]
    pub shuffle: bool,

    /// Channels of the stream, and of the PCM read from stdin.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub channels: u8,

    /// Opus bitrate, e.g. 96k or 96000 [default: 128k stereo, 64k mono].
    #[arg(long, value_name = "BITS", value_parser = parse_bitrate)]
    pub bitrate: Option<u32>,

    /// Send as fast as the relay accepts instead of in real time (tests, benchmarks).
    #[arg(long)]
    pub fast: bool,

    /// Sample format of the PCM on stdin (with `-`).
    #[arg(long, value_enum, default_value_t = PcmFormat::S16le)]
    pub pcm: PcmFormat,

    /// Sample rate of the PCM on stdin (with `-`), in Hz.
    #[arg(long, default_value_t = 48_000, value_parser = clap::value_parser!(u32).range(8_000..=384_000))]
    pub rate: u32,

    /// Title shown to listeners for stdin or live input [default: `stdin`, or `Live`].
    #[arg(long)]
    pub title: Option<String>,

    /// Artist shown to listeners for stdin or live input.
    #[arg(long)]
    pub artist: Option<String>,

    /// No status line, even on a terminal: plain log lines, and a summary line every
    /// --stats-every (for services; the default when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,

    /// Seconds between summary lines (level, listeners, drops) without a status line; 0: none.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub stats_every: u64,
}

impl PushArgs {
    /// The playout settings these flags describe.
    pub fn playout_config(&self) -> PlayoutConfig {
        let bitrate = self.bitrate.unwrap_or(if self.channels == 1 {
            DEFAULT_MONO_BITRATE
        } else {
            DEFAULT_STEREO_BITRATE
        });
        PlayoutConfig {
            inputs: self.inputs.clone(),
            looping: self.looping,
            shuffle: self.shuffle,
            bitrate,
            channels: self.channels,
            pcm: PcmSpec { format: self.pcm, rate: self.rate, channels: self.channels },
            stdin_metadata: protocol::Metadata {
                title: self.title.clone(),
                artist: self.artist.clone(),
                ..protocol::Metadata::default()
            },
            seed: None,
            #[cfg(feature = "capture")]
            capture: self.input.as_ref().map(|device| capture::CaptureConfig {
                device: Some(device.clone()).filter(|d| !d.is_empty()),
                channels: self.channels,
            }),
            #[cfg(feature = "capture")]
            titles_from_stdin: self.input.is_some(),
        }
    }
}

/// Parses `128k`, `128000` or `96kbit` into bits per second.
fn parse_bitrate(text: &str) -> Result<u32, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches("bit/s").trim_end_matches("bps").trim_end_matches("bit");
    let (number, scale) = match digits.strip_suffix('k') {
        Some(n) => (n, 1000.0),
        None => (digits, 1.0),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("not a bitrate: {text}"))?;
    let bits = value * scale;
    if !(6_000.0..=510_000.0).contains(&bits) {
        return Err(format!("{text} is outside Opus's 6k..510k"));
    }
    Ok(bits as u32)
}

/// Why `onair push` (or a playout) stopped; `exit_code()` maps it to the process exit status.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A bad command line: flags, inputs or URL.
    #[error("{0}")]
    Usage(String),
    /// The relay answered 401: the key is missing or wrong.
    #[error("the relay refused the key for {url} (401): {body}")]
    Unauthorized {
        /// The ingest URL, without any key.
        url: String,
        /// The relay's explanation.
        body: String,
    },
    /// The relay answered 404: no stream of that name.
    #[error("the relay has no stream at {url} (404): {body}")]
    UnknownStream {
        /// The ingest URL, without any key.
        url: String,
        /// The relay's explanation.
        body: String,
    },
    /// The relay refused the source with a status that retrying cannot fix.
    #[error("the relay refused the source with {status}: {body}")]
    Refused {
        /// HTTP status of the refused upgrade.
        status: u16,
        /// The relay's explanation.
        body: String,
    },
    /// The relay closed the connection with a code that retrying cannot fix.
    #[error("the relay closed the connection with {code}: {reason}")]
    Closed {
        /// WebSocket close code.
        code: u16,
        /// Close reason sent by the relay.
        reason: String,
    },
    /// The input device is missing, cannot be opened, failed or stopped delivering audio.
    #[error("{0}")]
    Input(String),
    /// None of the inputs could be decoded (or a folder held no audio files).
    #[error("nothing to play: {0}")]
    NoPlayableInput(String),
    /// The Opus encoder or the resampler failed.
    #[error("encoder: {0}")]
    Encoder(String),
    /// The playout thread stopped without saying why (a bug).
    #[error("the playout thread stopped unexpectedly")]
    PlayoutDied,
    /// Any other fatal error.
    #[error("{0}")]
    Fatal(String),
}

impl PushError {
    /// Process exit status: 1 fatal, 2 usage, 3 unauthorized (401), 4 unknown stream (404),
    /// 5 input device.
    pub fn exit_code(&self) -> u8 {
        match self {
            PushError::Usage(_) => 2,
            PushError::Unauthorized { .. } => 3,
            PushError::UnknownStream { .. } => 4,
            PushError::Input(_) => 5,
            _ => 1,
        }
    }
}

/// Runs `onair push` until the playlist ends. Stops only on a permanent error.
///
/// # Errors
/// See `PushError::exit_code` for the mapping to exit codes.
pub async fn push(args: PushArgs) -> Result<(), PushError> {
    run(args, std::future::pending()).await
}

/// Like `push`, but also stops (with `Ok`) when `shutdown` completes, closing the connection
/// cleanly; `main.rs` passes Ctrl-C here.
///
/// # Errors
/// See `PushError::exit_code`.
pub async fn run(args: PushArgs, shutdown: impl Future<Output = ()>) -> Result<(), PushError> {
    let target = Target::parse(&args.to, args.key.clone())?;
    let playout = Playout::spawn(args.playout_config())?;
    let options = publish::Options {
        fast: args.fast,
        quiet: args.quiet,
        stats_every: std::time::Duration::from_secs(args.stats_every),
    };
    publish::publish(playout, &target, options, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        push: PushArgs,
    }

    #[test]
    fn bitrates_parse_with_and_without_suffix() {
        assert_eq!(parse_bitrate("128k"), Ok(128_000));
        assert_eq!(parse_bitrate("96000"), Ok(96_000));
        assert_eq!(parse_bitrate("64kbit"), Ok(64_000));
        assert!(parse_bitrate("5k").is_err());
        assert!(parse_bitrate("fast").is_err());
    }

    #[test]
    fn default_bitrate_follows_the_channel_count() {
        let cli = Cli::parse_from(["push", "--to", "ws://h/ingest/a", "x.flac"]);
        assert_eq!(cli.push.playout_config().bitrate, DEFAULT_STEREO_BITRATE);
        let cli = Cli::parse_from(["push", "--to", "ws://h/ingest/a", "--channels", "1", "x"]);
        assert_eq!(cli.push.playout_config().bitrate, DEFAULT_MONO_BITRATE);
        assert!(Cli::try_parse_from(["push", "--to", "ws://h/ingest/a", "--channels", "3", "x"])
            .is_err());
    }

    #[test]
    fn help_documents_exit_codes_and_examples() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("3  the relay refused the key"), "{help}");
        assert!(help.contains("onair push --to ws://"), "{help}");
    }

    #[test]
    fn exit_codes_are_distinct() {
        let url = String::from("ws://h/ingest/a");
        let body = String::new();
        assert_eq!(PushError::Usage(String::new()).exit_code(), 2);
        assert_eq!(PushError::Unauthorized { url: url.clone(), body: body.clone() }.exit_code(), 3);
        assert_eq!(PushError::UnknownStream { url, body }.exit_code(), 4);
        assert_eq!(PushError::NoPlayableInput(String::new()).exit_code(), 1);
        assert_eq!(PushError::Input(String::new()).exit_code(), 5);
    }
}
