//! One recorded stream's thread: reads the stream's ring a few times a second (a tap, not a
//! listener) and writes each show into files of its own.
//!
//! A show is a source session: it starts with `source online` (a live source, or the auto-DJ
//! with `record_autodj`) and ends with the next switch. Each file is a standalone Ogg stream
//! (its own serial, header pages first, granules from 0, an EOS page at the end) or plain MP3
//! frames, written by the same muxer as HTTP listeners get (`format::mux`), and split when it
//! holds `recordings_split` of media. The ring is the only queue: a disk slower than the
//! stream makes this reader fall off the ring and skip (counted), it never holds the ring.
//! Disk errors close the file (what it holds stays playable); a new file is tried with backoff.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::catalog::{self, Sidecar, Title};
use super::Recordings;
use crate::format::mp3;
use crate::format::mux::{container_for, http_track, Rendition, StreamMux};
use crate::format::Container;
use crate::metrics::RecordingMetrics;
use crate::protocol::{Codec, ListenerEvent, Metadata, SourceState, Track};
use crate::relay::{Frame, Item, SourceKind, Stream, MAX_FILL_ENTRIES};

/// How often the thread reads the ring. The ring holds seconds (`ring_frames`), so nothing is
/// lost by waking 5 times a second instead of 50.
pub const POLL: Duration = Duration::from_millis(200);
/// Buffered bytes that are written at once rather than at the end of the poll.
const FLUSH_BYTES: usize = 256 << 10;
/// First wait before a new file is tried after a disk error; doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Most title changes kept per file (a source that changes its title every frame would make
/// the sidecar grow without end).
const MAX_TITLES: usize = 2_000;
/// Longest title kept, in bytes.
const MAX_TITLE_BYTES: usize = 512;

/// Reads `stream` until `stop` is signalled (or its sender dropped), recording its shows.
pub(super) fn run(
    stream: Arc<Stream>,
    shared: Arc<Recordings>,
    metrics: RecordingMetrics,
    stop: Receiver<()>,
) {
    let (mut consumer, first) = stream.tap();
    let mut recorder = Recorder::new(Arc::clone(&stream), shared, metrics);
    for item in &first {
        recorder.item(item);
    }
    let mut batch = Vec::with_capacity(MAX_FILL_ENTRIES);
    loop {
        loop {
            batch.clear();
            let fill = consumer.fill_with(usize::MAX, MAX_FILL_ENTRIES, |i| batch.push(i.clone()));
            for item in &batch {
                recorder.item(item);
            }
            if fill.at_head {
                break;
            }
        }
        recorder.tick();
        match stop.recv_timeout(POLL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    recorder.end_show("the relay is stopping");
}

/// The show being recorded.
#[derive(Debug)]
struct Show {
    kind: SourceKind,
    container: Container,
    codec: Codec,
    /// Samples per second of the Ogg granule (Opus: always 48 kHz).
    rate: u32,
    /// The ID of its first file, once there is one.
    first: Option<String>,
    parts: u32,
    /// Frames lost while no file could be opened.
    lost: u64,
}

/// A disk error happened: when to try a new file, and how many tries failed.
#[derive(Debug)]
struct Retry {
    at: Instant,
    failures: u32,
}

/// An open recording file.
#[derive(Debug)]
struct Open {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Device and inode, to notice the file being deleted or replaced under us.
    inode: (u64, u64),
    pending: Vec<u8>,
    /// Media frames in `pending` (lost if writing it fails).
    pending_frames: u64,
    sidecar: Sidecar,
    sidecar_dirty: bool,
    /// The Ogg link written last (0: none yet).
    link: u64,
    granule: u64,
    media_us: u64,
    written: u64,
    last_sync: Instant,
}

impl Open {
    fn duration(&self) -> Duration {
        Duration::from_micros(self.media_us)
    }

    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }
}

struct Recorder {
    name: String,
    stream: Arc<Stream>,
    shared: Arc<Recordings>,
    metrics: RecordingMetrics,
    mux: StreamMux,
    metadata: Option<Metadata>,
    show: Option<Show>,
    file: Option<Open>,
    retry: Option<Retry>,
}

impl Recorder {
    fn new(stream: Arc<Stream>, shared: Arc<Recordings>, metrics: RecordingMetrics) -> Self {
        Self {
            name: stream.config().name.clone(),
            stream,
            shared,
            metrics,
            mux: StreamMux::default(),
            metadata: None,
            show: None,
            file: None,
            retry: None,
        }
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Frame(frame) => self.frame(frame),
            Item::Event(event) => match event.get() {
                ListenerEvent::Hello { live, tracks, metadata, .. } => {
                    self.set_metadata(metadata.clone());
                    if *live {
                        self.begin(self.stream.on_air_plays(), tracks);
                    }
                }
                ListenerEvent::Source { state: SourceState::Online, tracks } => {
                    // A consumer's resync after a skip does not say which slot is on air. A
                    // stream relayed from another node is recorded as what its origin plays.
                    let kind = event.plays().or_else(|| self.stream.on_air_plays());
                    self.set_metadata(None);
                    self.begin(kind, tracks.as_deref().unwrap_or_default());
                }
                ListenerEvent::Source { state: SourceState::Offline, .. } => {
                    self.end_show("the source left");
                    self.mux.source(&[]);
                }
                ListenerEvent::Metadata(meta) => self.set_metadata(Some(meta.clone())),
                ListenerEvent::Skipped { frames } => {
                    if self.show.is_some() {
                        warn!(stream = %self.name, frames, "recorder fell behind the ring: frames are missing from the recording");
                        self.lost(*frames);
                    }
                }
            },
        }
    }

    fn set_metadata(&mut self, meta: Option<Metadata>) {
        self.mux.metadata(meta.clone());
        self.metadata = meta;
        if let Some(file) = &mut self.file {
            add_title(file, self.metadata.as_ref(), SystemTime::now());
        }
    }

    /// A new source is on air: the show before it ends, and this one is recorded if it is
    /// live (or the auto-DJ with `record_autodj`) and has audio a file can hold.
    fn begin(&mut self, kind: Option<SourceKind>, tracks: &[Track]) {
        self.end_show("the source changed");
        self.mux.source(tracks);
        let config = self.stream.config();
        let recorded = match kind {
            Some(SourceKind::Live) => true,
            Some(SourceKind::AutoDj) => config.record_autodj,
            // `plays()` never says Remote: a relayed session plays live or the auto-DJ.
            Some(SourceKind::Remote) | None => false,
        };
        if !recorded {
            return;
        }
        let Some(track) = http_track(tracks) else {
            warn!(stream = %self.name, "show not recorded: it has no Opus, Vorbis or MP3 audio track");
            return;
        };
        let Some(container) = container_for(track.codec) else { return };
        let rate = match track.codec {
            Codec::Opus => 48_000,
            _ => track.sample_rate.filter(|r| *r > 0).unwrap_or(48_000),
        };
        let source = kind.map_or("unknown", SourceKind::as_str);
        info!(stream = %self.name, source, codec = ?track.codec, "recording a new show");
        self.show = Some(Show {
            kind: kind.unwrap_or(SourceKind::Live),
            container,
            codec: track.codec,
            rate,
            first: None,
            parts: 0,
            lost: 0,
        });
    }

    /// The show ended: its file is closed.
    fn end_show(&mut self, why: &str) {
        self.close(why);
        if let (Some(show), Some(retry)) = (self.show.take(), self.retry.take()) {
            warn!(
                stream = %self.name,
                failures = retry.failures,
                frames_lost = show.lost,
                "recording gave up: the show ended while the disk was failing"
            );
        }
    }

    fn frame(&mut self, frame: &Frame) {
        if self.show.is_none() {
            return;
        }
        let header = frame.header();
        if header.is_header() {
            self.mux.header(header.track, &frame.payload());
            return;
        }
        let Some(rendition) = self.mux.frame_at_edge(header.track, &frame.payload(), frame.edge())
        else {
            return;
        };
        if self.file.is_none() && !self.open() {
            // The mux's link must not outlive the file it was meant for.
            self.mux.finish();
            self.lost(1);
            return;
        }
        let Some(file) = self.file.as_mut() else { return };
        match rendition {
            Rendition::Mp3(bytes) => {
                if let Some(info) = mp3::parse_header(&bytes) {
                    let us =
                        u64::from(info.samples) * 1_000_000 / u64::from(info.sample_rate.max(1));
                    file.media_us += us;
                }
                file.push(&bytes);
            }
            Rendition::Ogg { head, body, chain } => {
                if chain.id() != file.link {
                    if let Some(eos) = chain.end_of(file.link) {
                        file.push(eos);
                    }
                    file.push(&chain.head());
                    file.link = chain.id();
                    file.granule = 0;
                }
                file.push(&head);
                file.push(&body);
                // The page header's granule (a packet spanning pages has none here: the next
                // page's granule covers it).
                if let Some(granule) = head.get(6..14).and_then(|g| g.try_into().ok()) {
                    let granule = u64::from_le_bytes(granule);
                    let rate = self.show.as_ref().map_or(48_000, |s| u64::from(s.rate));
                    file.media_us += granule.saturating_sub(file.granule) * 1_000_000 / rate;
                    file.granule = granule;
                }
            }
        }
        file.pending_frames += 1;
        let full = file.pending.len() >= FLUSH_BYTES;
        let split = file.duration() >= self.shared.split;
        if full {
            self.flush();
        }
        if split {
            self.close("split");
        }
    }

    /// Opens the show's next file, unless a disk error asked to wait; false when there is none.
    fn open(&mut self) -> bool {
        let Some(show) = self.show.as_mut() else { return false };
        let now = Instant::now();
        if self.retry.as_ref().is_some_and(|r| now < r.at) {
            return false;
        }
        let started = SystemTime::now();
        let dir = catalog::stream_dir(&self.shared.dir, &self.name);
        let ext = match show.container {
            Container::Mp3 => "mp3",
            _ => "ogg",
        };
        let made = create(&dir, started, ext);
        let (id, path, file) = match made {
            Ok(made) => made,
            Err(err) => {
                self.fail("open", &err, &dir.display().to_string());
                return false;
            }
        };
        let inode = match file.metadata() {
            Ok(meta) => (meta.dev(), meta.ino()),
            Err(_) => (0, 0),
        };
        show.parts += 1;
        let first = show.first.get_or_insert_with(|| id.clone()).clone();
        let sidecar = Sidecar {
            id: id.clone(),
            stream: self.name.clone(),
            source: show.kind.as_str().to_owned(),
            container: ext.to_owned(),
            codec: codec_name(show.codec).to_owned(),
            started: crate::time::rfc3339(started),
            ended: None,
            duration_s: 0.0,
            show: first,
            part: show.parts,
            titles: Vec::new(),
            frames_lost: 0,
        };
        let mut open = Open {
            dir: dir.clone(),
            path: path.clone(),
            file,
            inode,
            pending: Vec::with_capacity(64 << 10),
            pending_frames: 0,
            sidecar,
            sidecar_dirty: true,
            link: 0,
            granule: 0,
            media_us: 0,
            written: 0,
            last_sync: now,
        };
        add_title(&mut open, self.metadata.as_ref(), started);
        if let Err(err) = catalog::write_sidecar(&dir, &open.sidecar) {
            let _ = std::fs::remove_file(&path);
            self.fail("sidecar", &err, &path.display().to_string());
            return false;
        }
        open.sidecar_dirty = false;
        if let Some(retry) = self.retry.take() {
            info!(stream = %self.name, %id, failures = retry.failures, "recording resumed in a new file");
        } else {
            info!(stream = %self.name, %id, path = %path.display(), "recording");
        }
        self.shared.opened(&self.name, &id);
        self.metrics.active.set(1);
        self.file = Some(open);
        true
    }

    /// Writes what is buffered; a failure closes the file.
    fn flush(&mut self) {
        let Some(file) = self.file.as_mut() else { return };
        if file.pending.is_empty() {
            return;
        }
        match file.file.write_all(&file.pending) {
            Ok(()) => {
                file.written += file.pending.len() as u64;
                self.metrics.bytes.inc_by(file.pending.len() as u64);
                file.pending.clear();
                file.pending_frames = 0;
            }
            Err(err) => {
                let (path, frames) = (file.path.display().to_string(), file.pending_frames);
                self.abandon();
                self.lost(frames);
                self.fail("write", &err, &path);
            }
        }
    }

    /// Once per poll: writes what is buffered, and every `recordings_fsync` (or after a title
    /// change) syncs the file, checks it is still there, and rewrites the sidecar.
    fn tick(&mut self) {
        self.flush();
        let Some(file) = self.file.as_mut() else { return };
        let now = Instant::now();
        let due = now.duration_since(file.last_sync) >= self.shared.fsync;
        if due {
            file.last_sync = now;
            if let Err(err) = file.file.sync_data() {
                let path = file.path.display().to_string();
                self.abandon();
                self.fail("sync", &err, &path);
                return;
            }
            let here = std::fs::metadata(&file.path).map(|m| (m.dev(), m.ino()));
            if here.ok() != Some(file.inode) {
                // Deleted or replaced under us: what we write would go nowhere. The next frame
                // opens a new file (and makes the folder again if it went too).
                warn!(stream = %self.name, path = %file.path.display(), "recording file vanished: continuing in a new file");
                self.metrics.error("vanished");
                self.abandon();
                return;
            }
        }
        if due || file.sidecar_dirty {
            file.sidecar.duration_s = round_ms(file.duration());
            save_sidecar(file, &self.metrics, &self.name);
        }
    }

    /// Ends the file normally: the Ogg link's EOS page, a last flush and sync, the sidecar.
    fn close(&mut self, why: &str) {
        let Some(file) = self.file.as_mut() else { return };
        if let Some(eos) = self.mux.finish() {
            if file.link != 0 {
                file.push(&eos);
            }
        }
        self.flush();
        let Some(mut file) = self.file.take() else { return };
        if let Err(err) = file.file.sync_all() {
            self.metrics.error("sync");
            warn!(stream = %self.name, %err, path = %file.path.display(), "cannot sync the recording");
        }
        file.sidecar.ended = Some(crate::time::rfc3339(SystemTime::now()));
        file.sidecar.duration_s = round_ms(file.duration());
        save_sidecar(&mut file, &self.metrics, &self.name);
        let (id, bytes, duration_s) = (file.sidecar.id, file.written, file.sidecar.duration_s);
        self.shared.closed(&self.name, &id);
        self.metrics.active.set(0);
        info!(stream = %self.name, %id, duration_s, bytes, why, "recording closed");
    }

    /// Drops the file after a disk error, without writing to it again.
    fn abandon(&mut self) {
        self.mux.finish();
        if let Some(file) = self.file.take() {
            self.shared.closed(&self.name, &file.sidecar.id);
            self.metrics.active.set(0);
        }
    }

    /// Counts a disk error and schedules the next try.
    fn fail(&mut self, op: &str, err: &std::io::Error, path: &str) {
        self.metrics.error(op);
        let failures = self.retry.as_ref().map_or(0, |r| r.failures) + 1;
        let backoff = FIRST_BACKOFF.saturating_mul(1 << (failures - 1).min(6)).min(MAX_BACKOFF);
        if failures == 1 {
            warn!(stream = %self.name, op, %err, path, retry_in_s = backoff.as_secs(), "recording failed: the live stream goes on; retrying in a new file");
        } else {
            debug!(stream = %self.name, op, %err, path, failures, "recording still failing");
        }
        self.retry = Some(Retry { at: Instant::now() + backoff, failures });
    }

    fn lost(&mut self, frames: u64) {
        self.metrics.frames_lost.inc_by(frames);
        if let Some(file) = &mut self.file {
            file.sidecar.frames_lost += frames;
        } else if let Some(show) = &mut self.show {
            show.lost += frames;
        }
    }
}

/// Creates `{dir}/{id}.{ext}` for a file starting at `started`, never over an existing one
/// (a second file in the same second gets `-2`, and so on). Makes the folder if it is missing.
fn create(
    dir: &std::path::Path,
    started: SystemTime,
    ext: &str,
) -> std::io::Result<(String, PathBuf, File)> {
    std::fs::create_dir_all(dir)?;
    for n in 1..=catalog::MAX_SUFFIX {
        let id = catalog::make_id(started, n);
        if dir.join(format!("{id}.json")).exists() {
            continue;
        }
        let path = dir.join(format!("{id}.{ext}"));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => {
                // The new name must survive a crash too, not only the bytes in it.
                if let Ok(folder) = File::open(dir) {
                    let _ = folder.sync_all();
                }
                return Ok((id, path, file));
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
    Err(std::io::Error::other("too many recordings started in the same second"))
}

/// Rewrites a file's sidecar. A failure is counted; the next sync tries again (the media file
/// is what matters).
fn save_sidecar(file: &mut Open, metrics: &RecordingMetrics, stream: &str) {
    file.sidecar_dirty = false;
    if let Err(err) = catalog::write_sidecar(&file.dir, &file.sidecar) {
        file.sidecar_dirty = true;
        metrics.error("sidecar");
        debug!(stream, %err, "cannot write the recording's sidecar");
    }
}

/// Notes now playing in the file's sidecar, at the media time reached so far.
fn add_title(file: &mut Open, meta: Option<&Metadata>, at: SystemTime) {
    let Some(meta) = meta else { return };
    let mut title = meta.display_title();
    if title.is_empty() || file.sidecar.titles.len() >= MAX_TITLES {
        return;
    }
    if title.len() > MAX_TITLE_BYTES {
        let mut end = MAX_TITLE_BYTES;
        while !title.is_char_boundary(end) {
            end -= 1;
        }
        title.truncate(end);
    }
    if file.sidecar.titles.last().is_some_and(|t| t.title == title) {
        return;
    }
    let offset_s = round_ms(file.duration());
    file.sidecar.titles.push(Title { offset_s, at: crate::time::rfc3339(at), title });
    file.sidecar_dirty = true;
}

fn round_ms(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Opus => "opus",
        Codec::Vorbis => "vorbis",
        Codec::Mp3 => "mp3",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, StreamConfig};
    use crate::format::ogg::{parse_page, FLAG_BOS, FLAG_EOS};
    use crate::format::opus::OpusHead;
    use crate::metrics::Metrics;
    use crate::protocol::{encode_frame, FrameHeader, FLAG_HEADER, FLAG_KEYFRAME};
    use crate::relay::{Consumer, SourceHandle};

    struct Bench {
        dir: PathBuf,
        stream: Arc<Stream>,
        consumer: Consumer,
        recorder: Recorder,
        metrics: Metrics,
    }

    impl Bench {
        fn new(name: &str, split: Duration) -> Self {
            let dir =
                std::env::temp_dir().join(format!("onair-recorder-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let config = Config {
                recordings_dir: Some(dir.clone()),
                recordings_split: split,
                ..Config::default()
            };
            let mut stream_config = StreamConfig::new("radio", Some("k"));
            stream_config.record = true;
            let metrics = Metrics::new();
            let stream = Stream::new(stream_config, metrics.stream("radio"));
            let shared = Recordings::new(&config).unwrap();
            let (consumer, first) = stream.tap();
            let mut recorder =
                Recorder::new(Arc::clone(&stream), shared, metrics.recording("radio"));
            for item in &first {
                recorder.item(item);
            }
            Self { dir, stream, consumer, recorder, metrics }
        }

        /// What the recorder thread does once per poll.
        fn poll(&mut self) {
            let mut batch = Vec::new();
            loop {
                let fill = self.consumer.fill_with(usize::MAX, 64, |i| batch.push(i.clone()));
                for item in batch.drain(..) {
                    self.recorder.item(&item);
                }
                if fill.at_head {
                    break;
                }
            }
            self.recorder.tick();
        }

        /// The stream's recordings, oldest first: (sidecar, file bytes).
        fn files(&self) -> Vec<(Sidecar, Vec<u8>)> {
            let dir = self.dir.join("radio");
            let mut entries = catalog::scan(&dir, true).unwrap();
            entries.reverse();
            entries
                .into_iter()
                .map(|e| {
                    let bytes = std::fs::read(dir.join(e.media_name().unwrap())).unwrap();
                    (e.sidecar.unwrap(), bytes)
                })
                .collect()
        }
    }

    impl Drop for Bench {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn push(source: &mut SourceHandle, flags: u8, pts: u64, body: &[u8]) {
        let header = FrameHeader { flags, track: 0, pts };
        source.frame(header, encode_frame(header, body)).unwrap();
    }

    /// (serial, flags, granule) per page.
    fn pages(bytes: &[u8]) -> Vec<(u32, u8, u64)> {
        let mut buf = bytes::BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(page) = parse_page(&mut buf).unwrap() {
            out.push((page.serial, page.flags, page.granule));
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn a_new_codec_header_mid_show_ends_the_link_and_starts_another_in_the_same_file() {
        let mut bench = Bench::new("links", Duration::from_secs(3600));
        let mut live = bench.stream.attach(SourceKind::Live).unwrap();
        live.start(vec![Track::audio(0, Codec::Opus, 48_000, 2, None)]).unwrap();
        push(&mut live, FLAG_HEADER, 0, &OpusHead::synthesize(2, 48_000));
        for i in 0..50 {
            push(&mut live, FLAG_KEYFRAME, i * 20_000, &[0xFC, i as u8]);
        }
        bench.poll();
        push(&mut live, FLAG_HEADER, 0, &OpusHead::synthesize(1, 48_000));
        for i in 50..75 {
            push(&mut live, FLAG_KEYFRAME, i * 20_000, &[0xFC, i as u8]);
        }
        bench.poll();
        drop(live);
        bench.poll();
        let files = bench.files();
        assert_eq!(files.len(), 1, "one show, one file");
        let (sidecar, bytes) = &files[0];
        assert_eq!((sidecar.duration_s, sidecar.part), (1.5, 1));
        assert!(sidecar.ended.is_some());
        let pages = pages(bytes);
        let links: Vec<_> = pages.iter().filter(|p| p.1 & (FLAG_BOS | FLAG_EOS) != 0).collect();
        assert_eq!(links.len(), 4, "BOS, EOS, BOS, EOS: {links:?}");
        assert_eq!(
            (links[0].1, links[1].1, links[2].1, links[3].1),
            (FLAG_BOS, FLAG_EOS, FLAG_BOS, FLAG_EOS)
        );
        assert_eq!(links[0].0, links[1].0);
        assert_ne!(links[1].0, links[2].0, "a new serial");
        assert_eq!((links[1].2, links[3].2), (50 * 960, 25 * 960), "granules restart per link");
        assert_eq!(bench.metrics.recording("radio").bytes.get(), bytes.len() as u64);
    }

    // Paused clock: titles reach the ring at most every METADATA_INTERVAL of wall time, and
    // this test pushes 0.5 s of frames in microseconds.
    #[tokio::test(start_paused = true)]
    async fn mp3_shows_are_split_by_media_time_and_titles_keep_their_offsets() {
        let mut bench = Bench::new("mp3", Duration::from_secs(1));
        let mut live = bench.stream.attach(SourceKind::Live).unwrap();
        live.start(vec![Track::audio(0, Codec::Mp3, 44_100, 2, None)]).unwrap();
        // MPEG-1 Layer III, 128 kbit/s, 44.1 kHz: 1152 samples (26.1 ms), 417 bytes.
        let mut frame = vec![0u8; 417];
        frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x44]);
        let meta = |title: &str| Metadata { title: Some(title.into()), ..Metadata::default() };
        live.metadata(meta("First")).unwrap();
        for i in 0..60 {
            if i == 20 {
                tokio::time::advance(crate::relay::METADATA_INTERVAL).await;
                live.metadata(meta("Second")).unwrap();
            }
            push(&mut live, FLAG_KEYFRAME, i * 26_122, &frame);
            bench.poll();
        }
        drop(live);
        bench.poll();
        let files = bench.files();
        // 39 frames make 1.0187 s: the first file ends there, the rest (21 frames) follow.
        assert_eq!(files.len(), 2);
        let (first, second) = (&files[0].0, &files[1].0);
        assert_eq!((files[0].1.len(), files[1].1.len()), (39 * 417, 21 * 417));
        assert_eq!((first.duration_s, second.duration_s), (1.018, 0.548));
        assert_eq!((first.part, second.part, &second.show), (1, 2, &first.id));
        let titles: Vec<_> = first.titles.iter().map(|t| (t.title.as_str(), t.offset_s)).collect();
        assert_eq!(titles, [("First", 0.0), ("Second", 0.522)]);
        assert_eq!(second.titles[0].title, "Second", "a part starts with the title of now");
        assert_eq!(second.titles[0].offset_s, 0.0);
    }

    #[test]
    fn the_auto_dj_is_not_recorded_unless_asked_and_a_skip_is_counted() {
        let mut bench = Bench::new("autodj", Duration::from_secs(3600));
        let mut autodj = bench.stream.attach(SourceKind::AutoDj).unwrap();
        autodj.start(vec![Track::audio(0, Codec::Opus, 48_000, 2, None)]).unwrap();
        push(&mut autodj, FLAG_KEYFRAME, 0, &[0xFC, 1]);
        bench.poll();
        assert!(bench.files().is_empty());
        let mut live = bench.stream.attach(SourceKind::Live).unwrap();
        live.start(vec![Track::audio(0, Codec::Opus, 48_000, 2, None)]).unwrap();
        push(&mut live, FLAG_KEYFRAME, 0, &[0xFC, 2]);
        bench.poll();
        // More than the ring holds arrives between two polls: the recorder skips and counts.
        for i in 1..=3000 {
            push(&mut live, FLAG_KEYFRAME, i * 20_000, &[0xFC, 3]);
        }
        bench.poll();
        drop(live);
        bench.poll();
        let files = bench.files();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0.source, "live");
        let lost = files[0].0.frames_lost;
        assert!(lost > 1500, "{lost} frames lost");
        assert_eq!(bench.metrics.recording("radio").frames_lost.get(), lost);
    }
}
