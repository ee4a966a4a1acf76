//! The playout engine: decodes and encodes the playlist on a dedicated thread and hands Opus
//! packets and track metadata to async code over a bounded channel.
//!
//! Used by `onair push` and by the relay's in-process auto-DJ. The channel is the only buffer:
//! when the consumer stops pulling (e.g. while disconnected) the thread blocks, so the playout
//! pauses instead of dropping audio. A live input (`capture`) is the exception: the device does
//! not wait, so its packets are dropped (and counted) when the channel is full. Dropping the
//! `Playout` stops the thread at its next packet.

use std::path::PathBuf;
#[cfg(feature = "capture")]
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use tokio::sync::mpsc;

#[cfg(feature = "capture")]
use super::capture::{Capture, CaptureConfig, InputStats};
use super::decode::{bound_metadata, FileDecoder, PcmChunk, PcmReader, PcmSpec};
use super::encode::{EncodedFrame, StreamEncoder, SAMPLE_RATE};
use super::playlist::{Entry, Playlist};
use super::PushError;
use crate::protocol::{self, Codec};

/// Outputs buffered between the playout thread and its consumer: 0.5 s of audio.
pub const OUTPUT_CAPACITY: usize = 25;

/// What to play and how to encode it.
#[derive(Debug, Clone)]
pub struct PlayoutConfig {
    /// Files, folders, .m3u/.m3u8 playlists, or `-` for PCM on stdin.
    pub inputs: Vec<PathBuf>,
    /// Start over at the end (for ever).
    pub looping: bool,
    /// Random order, reshuffled on each pass.
    pub shuffle: bool,
    /// Opus bitrate in bits per second.
    pub bitrate: u32,
    /// Channels of the stream: 1 or 2.
    pub channels: u8,
    /// Layout of the PCM read from stdin (`-`).
    pub pcm: PcmSpec,
    /// Title and artist announced for stdin input.
    pub stdin_metadata: protocol::Metadata,
    /// Fixed shuffle seed (tests); `None` seeds from the clock.
    pub seed: Option<u64>,
    /// Capture live from this device instead of playing `inputs`.
    #[cfg(feature = "capture")]
    pub capture: Option<CaptureConfig>,
    /// With `capture`: each line read on stdin becomes the title (`Artist - Title` splits).
    #[cfg(feature = "capture")]
    pub titles_from_stdin: bool,
}

impl Default for PlayoutConfig {
    /// No inputs, no loop, no shuffle, 128 kbit/s stereo.
    fn default() -> Self {
        PlayoutConfig {
            inputs: Vec::new(),
            looping: false,
            shuffle: false,
            bitrate: super::DEFAULT_STEREO_BITRATE,
            channels: 2,
            pcm: PcmSpec::default(),
            stdin_metadata: protocol::Metadata::default(),
            seed: None,
            #[cfg(feature = "capture")]
            capture: None,
            #[cfg(feature = "capture")]
            titles_from_stdin: false,
        }
    }
}

/// One item of the playout, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// One 20 ms Opus packet of track 0; `pts` grows by 20 000 µs per packet from 0.
    Frame {
        /// Presentation time in microseconds from the start of the stream.
        pts: u64,
        /// One Opus packet.
        data: Bytes,
    },
    /// A new track starts; `pts` is set to that of its first packet, which follows.
    Metadata(protocol::Metadata),
}

enum Message {
    Output(Output),
    Done,
    Failed(PushError),
}

/// A running playout. Dropping it stops the playout thread.
#[derive(Debug)]
pub struct Playout {
    rx: mpsc::Receiver<Message>,
    header: Bytes,
    channels: u8,
    bitrate: u32,
    error: Option<PushError>,
    done: bool,
    #[cfg(feature = "capture")]
    input: Option<Arc<InputStats>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Output(o) => o.fmt(f),
            Message::Done => f.write_str("Done"),
            Message::Failed(e) => e.fmt(f),
        }
    }
}

impl Playout {
    /// Checks the config, expands the inputs once and starts the playout thread.
    ///
    /// # Errors
    /// `Usage` for bad settings or a missing input, `NoPlayableInput` when the inputs hold no
    /// entries at all, `Encoder` when libopus refuses the settings.
    pub fn spawn(cfg: PlayoutConfig) -> Result<Playout, PushError> {
        #[cfg(feature = "capture")]
        if let Some(capture) = cfg.capture.clone() {
            return Self::spawn_capture(cfg, capture);
        }
        if cfg.inputs.is_empty() {
            return Err(PushError::Usage("no inputs given".into()));
        }
        if !(6_000..=510_000).contains(&cfg.bitrate) {
            return Err(PushError::Usage(format!("bitrate {} is outside 6k..510k", cfg.bitrate)));
        }
        let stdin_count = cfg.inputs.iter().filter(|p| p.as_os_str() == "-").count();
        if stdin_count > 0 && (cfg.inputs.len() > 1 || cfg.looping || cfg.shuffle) {
            return Err(PushError::Usage(
                "`-` (stdin) must be the only input, without --loop or --shuffle".into(),
            ));
        }
        if stdin_count > 0 && !(1..=2).contains(&cfg.pcm.channels) {
            return Err(PushError::Usage("stdin PCM must have 1 or 2 channels".into()));
        }
        let mut playlist = Playlist::new(cfg.inputs.clone(), cfg.shuffle, cfg.seed);
        let first = playlist.next_pass()?;
        if first.is_empty() {
            return Err(PushError::NoPlayableInput(format!(
                "no audio files in {}",
                display_inputs(&cfg.inputs)
            )));
        }
        let encoder = StreamEncoder::new(cfg.channels, cfg.bitrate)?;
        let header = encoder.header();
        let (tx, rx) = mpsc::channel(OUTPUT_CAPACITY);
        let (channels, bitrate) = (cfg.channels, cfg.bitrate);
        let engine = Engine {
            cfg,
            playlist,
            encoder,
            tx,
            #[cfg(feature = "capture")]
            live: None,
        };
        thread::Builder::new()
            .name("onair-playout".into())
            .spawn(move || engine.run(first))
            .map_err(|err| PushError::Fatal(format!("cannot start the playout thread: {err}")))?;
        Ok(Playout {
            rx,
            header,
            channels,
            bitrate,
            error: None,
            done: false,
            #[cfg(feature = "capture")]
            input: None,
        })
    }

    /// Starts a live playout: the thread opens the device, then encodes what it captures.
    /// A device that cannot be opened is reported as the playout's error before any output.
    #[cfg(feature = "capture")]
    fn spawn_capture(cfg: PlayoutConfig, capture: CaptureConfig) -> Result<Playout, PushError> {
        if !cfg.inputs.is_empty() {
            return Err(PushError::Usage("--input takes no files".into()));
        }
        if !(6_000..=510_000).contains(&cfg.bitrate) {
            return Err(PushError::Usage(format!("bitrate {} is outside 6k..510k", cfg.bitrate)));
        }
        let encoder = StreamEncoder::new(cfg.channels, cfg.bitrate)?;
        let header = encoder.header();
        let (tx, rx) = mpsc::channel(OUTPUT_CAPACITY);
        let (channels, bitrate) = (cfg.channels, cfg.bitrate);
        let stats = Arc::new(InputStats::default());
        let titles = cfg.titles_from_stdin.then(titles_from_stdin).flatten();
        let live = Live { capture, stats: stats.clone(), titles, held: None };
        let playlist = Playlist::new(Vec::new(), false, None);
        let engine = Engine { cfg, playlist, encoder, tx, live: Some(live) };
        thread::Builder::new()
            .name("onair-capture".into())
            .spawn(move || engine.run_live())
            .map_err(|err| PushError::Fatal(format!("cannot start the capture thread: {err}")))?;
        Ok(Playout { rx, header, channels, bitrate, error: None, done: false, input: Some(stats) })
    }

    /// The live input's level meter and counters, when the playout captures from a device.
    #[cfg(feature = "capture")]
    pub fn input_stats(&self) -> Option<Arc<InputStats>> {
        self.input.clone()
    }

    /// Whether the playout is live: paced by its device and never paused, so what queued
    /// while nobody pulled is stale.
    pub fn is_live(&self) -> bool {
        #[cfg(feature = "capture")]
        return self.input.is_some();
        #[cfg(not(feature = "capture"))]
        return false;
    }

    /// The next output if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Option<Output> {
        if self.done {
            return None;
        }
        match self.rx.try_recv() {
            Ok(Message::Output(output)) => Some(output),
            // Leave the end (or the error) for `next` to report.
            Ok(Message::Done) => {
                self.done = true;
                None
            }
            Ok(Message::Failed(err)) => {
                self.done = true;
                self.error = Some(err);
                None
            }
            Err(_) => None,
        }
    }

    /// The one track of the stream: id 0, Opus audio at 48 kHz.
    pub fn tracks(&self) -> Vec<protocol::Track> {
        vec![protocol::Track::audio(0, Codec::Opus, SAMPLE_RATE, self.channels, Some(self.bitrate))]
    }

    /// The OpusHead payload, to send as the track's header frame.
    pub fn header(&self) -> Bytes {
        self.header.clone()
    }

    /// The next output as soon as it is encoded (not paced); `None` when a non-looping
    /// playlist has ended or the playout failed (see `error`). Cancel safe.
    pub async fn next(&mut self) -> Option<Output> {
        if self.done {
            return None;
        }
        match self.rx.recv().await {
            Some(Message::Output(output)) => Some(output),
            Some(Message::Done) => {
                self.done = true;
                None
            }
            Some(Message::Failed(err)) => {
                self.done = true;
                self.error = Some(err);
                None
            }
            None => {
                self.done = true;
                self.error = Some(PushError::PlayoutDied);
                None
            }
        }
    }

    /// Why the playout stopped early, once `next` has returned `None`; `None` if it simply
    /// finished the playlist.
    pub fn error(&self) -> Option<&PushError> {
        self.error.as_ref()
    }

    /// Takes the error that stopped the playout, if any.
    pub fn take_error(&mut self) -> Option<PushError> {
        self.error.take()
    }
}

fn display_inputs(inputs: &[PathBuf]) -> String {
    inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Why the playout thread stops before the playlist ends.
enum Halt {
    /// The consumer went away: stop quietly.
    Stopped,
    /// A fatal error, reported to the consumer.
    Failed(PushError),
}

impl From<PushError> for Halt {
    fn from(err: PushError) -> Self {
        Halt::Failed(err)
    }
}

/// The playout thread's state.
struct Engine {
    cfg: PlayoutConfig,
    playlist: Playlist,
    encoder: StreamEncoder,
    tx: mpsc::Sender<Message>,
    #[cfg(feature = "capture")]
    live: Option<Live>,
}

/// What a live playout adds: the device, its meter and counters, typed titles.
#[cfg(feature = "capture")]
struct Live {
    capture: CaptureConfig,
    stats: Arc<InputStats>,
    titles: Option<std::sync::mpsc::Receiver<String>>,
    /// Metadata the full channel did not take yet: sent before any further frame.
    held: Option<protocol::Metadata>,
}

/// Reads lines from stdin on a thread of its own; `None` if the thread cannot start.
#[cfg(feature = "capture")]
fn titles_from_stdin() -> Option<std::sync::mpsc::Receiver<String>> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = thread::Builder::new().name("onair-titles".into()).spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { return };
            let line = line.trim();
            if !line.is_empty() && tx.send(line.to_owned()).is_err() {
                return;
            }
        }
    });
    spawned.ok().map(|_| rx)
}

/// A typed now-playing line: `Artist - Title`, or just a title.
#[cfg(feature = "capture")]
fn typed_metadata(line: &str) -> protocol::Metadata {
    let (artist, title) = match line.split_once(" - ") {
        Some((artist, title)) if !artist.trim().is_empty() && !title.trim().is_empty() => {
            (Some(artist.trim().to_owned()), title.trim().to_owned())
        }
        _ => (None, line.to_owned()),
    };
    protocol::Metadata { title: Some(title), artist, ..protocol::Metadata::default() }
}

impl Engine {
    fn run(mut self, first: Vec<Entry>) {
        let result = self.play_all(first);
        let last = match result {
            Ok(()) => Message::Done,
            Err(Halt::Stopped) => return,
            Err(Halt::Failed(err)) => Message::Failed(err),
        };
        let _ = self.tx.blocking_send(last);
    }

    fn play_all(&mut self, first: Vec<Entry>) -> Result<(), Halt> {
        let mut pass = first;
        loop {
            let mut played = 0usize;
            let mut failures = Vec::new();
            for entry in &pass {
                match self.play(entry)? {
                    true => played += 1,
                    false => failures.push(entry),
                }
            }
            if played == 0 {
                let what = match failures.as_slice() {
                    [Entry::File { path, .. }] => {
                        format!("{} could not be decoded", path.display())
                    }
                    _ => format!("none of the {} inputs could be decoded", failures.len()),
                };
                return Err(PushError::NoPlayableInput(what).into());
            }
            if !self.cfg.looping {
                break;
            }
            pass = self.playlist.next_pass()?;
            if pass.is_empty() {
                let why = "the inputs no longer hold audio files".into();
                return Err(PushError::NoPlayableInput(why).into());
            }
        }
        let tail = self.encoder.finish()?;
        self.send_frames(tail)?;
        Ok(())
    }

    /// Plays one entry; `Ok(false)` when it could not be opened (logged and skipped).
    fn play(&mut self, entry: &Entry) -> Result<bool, Halt> {
        match entry {
            Entry::File { path, title } => {
                let mut file = match FileDecoder::open(path, title.as_deref()) {
                    Ok(file) => file,
                    Err(err) => {
                        tracing::warn!(path = %path.display(), %err, "cannot decode; skipped");
                        return Ok(false);
                    }
                };
                tracing::debug!(path = %path.display(), "opened");
                self.start_track(file.metadata().clone())?;
                loop {
                    match file.next_chunk() {
                        Ok(Some(chunk)) => self.push(chunk)?,
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!(path = %path.display(), %err, "decoding stopped early");
                            break;
                        }
                    }
                }
            }
            Entry::Stdin => {
                let mut meta = self.cfg.stdin_metadata.clone();
                if meta.title.is_none() && meta.artist.is_none() {
                    meta.title = Some("stdin".into());
                }
                self.start_track(meta)?;
                let mut reader = PcmReader::new(std::io::stdin().lock(), self.cfg.pcm);
                loop {
                    match reader.next_chunk() {
                        Ok(Some(chunk)) => self.push(chunk)?,
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!(%err, "reading stdin failed");
                            break;
                        }
                    }
                }
            }
        }
        let tail = self.encoder.end_track()?;
        self.send_frames(tail)?;
        Ok(true)
    }

    fn start_track(&mut self, mut meta: protocol::Metadata) -> Result<(), Halt> {
        bound_metadata(&mut meta);
        meta.pts = Some(self.encoder.next_pts());
        tracing::debug!(title = %meta.display_title(), pts = meta.pts, "track opened");
        self.send(Output::Metadata(meta))
    }

    fn push(&mut self, chunk: PcmChunk) -> Result<(), Halt> {
        let frames = self.encoder.push(chunk.rate, chunk.channels, &chunk.samples)?;
        self.send_frames(frames)
    }

    fn send_frames(&mut self, frames: Vec<EncodedFrame>) -> Result<(), Halt> {
        for EncodedFrame { pts, data } in frames {
            self.send(Output::Frame { pts, data })?;
        }
        Ok(())
    }

    fn send(&mut self, output: Output) -> Result<(), Halt> {
        #[cfg(feature = "capture")]
        if self.live.is_some() {
            return self.send_live(output);
        }
        self.tx.blocking_send(Message::Output(output)).map_err(|_| Halt::Stopped)
    }
}

#[cfg(feature = "capture")]
impl Engine {
    fn run_live(mut self) {
        let last = match self.play_live() {
            Ok(()) => Message::Done,
            Err(Halt::Stopped) => return,
            Err(Halt::Failed(err)) => Message::Failed(err),
        };
        let _ = self.tx.blocking_send(last);
    }

    /// Like stdin in `play`: one track, PCM chunks into the encoder, until the consumer goes
    /// away or the device fails; typed lines start new tracks.
    fn play_live(&mut self) -> Result<(), Halt> {
        let live = self.live.as_ref().expect("play_live runs only for a live playout");
        let (cfg, stats) = (live.capture.clone(), live.stats.clone());
        // Open first: a device that cannot be opened fails before anything goes on air.
        let mut capture = Capture::open(&cfg, stats)?;
        let mut meta = self.cfg.stdin_metadata.clone();
        if meta.title.is_none() && meta.artist.is_none() {
            meta.title = Some("Live".into());
        }
        self.start_track(meta)?;
        loop {
            let chunk = capture.next_chunk()?;
            let typed = self.live.as_ref().and_then(|l| l.titles.as_ref()?.try_recv().ok());
            if let Some(line) = typed {
                tracing::info!(device = capture.device(), title = %line, "typed title");
                self.start_track(typed_metadata(&line))?;
            }
            self.push(chunk)?;
        }
    }

    /// Never waits: a frame the full channel does not take is dropped and counted; metadata is
    /// held and goes first once there is room, so titles are neither lost nor reordered.
    fn send_live(&mut self, output: Output) -> Result<(), Halt> {
        use tokio::sync::mpsc::error::TrySendError;
        let live = self.live.as_mut().expect("send_live runs only for a live playout");
        if let Some(held) = live.held.take() {
            match self.tx.try_send(Message::Output(Output::Metadata(held))) {
                Ok(()) => {}
                Err(TrySendError::Full(Message::Output(Output::Metadata(held)))) => {
                    live.held = Some(held);
                }
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Closed(_)) => return Err(Halt::Stopped),
            }
        }
        let output = match output {
            Output::Metadata(meta) if live.held.is_some() => {
                live.held = Some(meta); // the newer title replaces the held one
                return Ok(());
            }
            Output::Frame { .. } if live.held.is_some() => {
                live.stats.count_dropped_packets(1);
                return Ok(());
            }
            output => output,
        };
        match self.tx.try_send(Message::Output(output)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Message::Output(Output::Metadata(meta)))) => {
                live.held = Some(meta);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                live.stats.count_dropped_packets(1);
                Ok(())
            }
            Err(TrySendError::Closed(_)) => Err(Halt::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::decode::tests::sample;
    use crate::push::encode::{FRAME_DURATION_US, FRAME_SAMPLES};

    /// Pulls everything: (metadata, frames).
    pub(crate) async fn drain(
        playout: &mut Playout,
    ) -> (Vec<protocol::Metadata>, Vec<(u64, Bytes)>) {
        let (mut metas, mut frames) = (Vec::new(), Vec::new());
        while let Some(output) = playout.next().await {
            match output {
                Output::Frame { pts, data } => frames.push((pts, data)),
                Output::Metadata(meta) => {
                    assert_eq!(meta.pts, Some(frames.len() as u64 * FRAME_DURATION_US));
                    metas.push(meta);
                }
            }
        }
        (metas, frames)
    }

    fn config(inputs: &[&str]) -> PlayoutConfig {
        PlayoutConfig { inputs: inputs.iter().map(|n| sample(n)).collect(), ..Default::default() }
    }

    #[tokio::test]
    async fn each_format_encodes_to_its_duration_in_20ms_frames() {
        for (name, seconds) in [
            ("station-id.wav", 3.266_757),
            ("tone-440.flac", 4.0),
            ("sweep.mp3", 4.0),
            ("music.ogg", 9.0),
            ("tone-1k.m4a", 2.0),
        ] {
            let mut playout = Playout::spawn(config(&[name])).unwrap();
            let (metas, frames) = drain(&mut playout).await;
            assert!(playout.error().is_none(), "{name}: {:?}", playout.error());
            assert_eq!(metas.len(), 1);
            // The audio plus the encoder's lookahead, the last packet padded with silence.
            let head = playout.header();
            let pre_skip = f64::from(u16::from_le_bytes([head[10], head[11]]));
            let want = ((seconds * 48_000.0_f64).round() + pre_skip) / FRAME_SAMPLES as f64;
            assert_eq!(frames.len(), want.ceil() as usize, "{name}: want {want} frames");
            for (i, (pts, data)) in frames.iter().enumerate() {
                assert_eq!(*pts, i as u64 * FRAME_DURATION_US, "{name}");
                assert_eq!(opus::packet::get_nb_samples(data, 48_000).unwrap(), FRAME_SAMPLES);
            }
        }
    }

    #[tokio::test]
    async fn undecodable_files_are_skipped_and_the_playlist_goes_on() {
        let mut playout =
            Playout::spawn(config(&["broken.mp3", "tone-1k.m4a", "broken.mp3", "station-id.wav"]))
                .unwrap();
        let (metas, frames) = drain(&mut playout).await;
        assert!(playout.error().is_none());
        let titles: Vec<_> = metas.iter().map(|m| m.title.clone().unwrap()).collect();
        assert_eq!(titles, ["Tone 1 kHz", "Station ID"]);
        // 2 s + 3.267 s + the encoder's lookahead, the last packet padded.
        assert_eq!(frames.len(), 264);
    }

    #[tokio::test]
    async fn all_inputs_undecodable_is_an_error_not_a_spin() {
        let mut cfg = config(&["broken.mp3", "broken.mp3"]);
        cfg.looping = true;
        let mut playout = Playout::spawn(cfg).unwrap();
        let (metas, frames) = drain(&mut playout).await;
        assert!(metas.is_empty() && frames.is_empty());
        let err = playout.take_error().unwrap();
        assert!(matches!(err, PushError::NoPlayableInput(_)), "{err}");
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test]
    async fn looping_replays_the_playlist_with_continuous_pts() {
        let mut cfg = config(&["tone-440.flac"]);
        cfg.looping = true;
        let mut playout = Playout::spawn(cfg).unwrap();
        let mut starts = Vec::new();
        let mut next_pts = 0;
        while starts.len() < 3 {
            match playout.next().await.unwrap() {
                Output::Metadata(meta) => starts.push(meta.pts.unwrap()),
                Output::Frame { pts, .. } => {
                    assert_eq!(pts, next_pts);
                    next_pts += FRAME_DURATION_US;
                }
            }
        }
        // Exactly 4 s (200 frames) per pass.
        assert_eq!(starts, [0, 4_000_000, 8_000_000]);
    }

    #[test]
    fn playouts_can_move_into_spawned_tasks() {
        fn is_send<T: Send>(_: &T) {}
        let mut playout = Playout::spawn(config(&["tone-1k.m4a"])).unwrap();
        is_send(&playout.next());
        let mut paced = crate::push::Paced::new(playout, false);
        is_send(&paced.next());
        let task = async move { paced.next().await.is_some() };
        is_send(&task);
    }

    #[test]
    fn stdin_must_be_the_only_input() {
        let cfg =
            PlayoutConfig { inputs: vec!["-".into(), sample("tone-1k.m4a")], ..Default::default() };
        assert_eq!(Playout::spawn(cfg).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn tracks_declare_one_opus_track() {
        let mut cfg = config(&["tone-1k.m4a"]);
        cfg.channels = 1;
        cfg.bitrate = 64_000;
        let playout = Playout::spawn(cfg).unwrap();
        let tracks = playout.tracks();
        assert_eq!(tracks.len(), 1);
        assert_eq!((tracks[0].id, tracks[0].codec, tracks[0].channels), (0, Codec::Opus, Some(1)));
        assert_eq!(tracks[0].bitrate, Some(64_000));
        assert_eq!(playout.header()[9], 1);
    }
}
