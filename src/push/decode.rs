//! Decoding inputs into interleaved `f32` PCM at their native rate: files through symphonia
//! (with their tags), and raw PCM from a reader (stdin).
//!
//! Synchronous and pure: called only from the playout thread. A file is "opened" only once its
//! first packet decodes, so an undecodable file fails in `open` and never starts a track.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::{MetadataOptions, MetadataRevision, RawValue, StandardTag, Tag};

use super::mp4;
use crate::protocol::{Metadata, MAX_METADATA_FIELD_BYTES};

/// Consecutive undecodable packets after which a file is given up.
const MAX_BAD_PACKETS: u32 = 50;
/// Frames read from stdin per chunk (about 85 ms at 48 kHz).
const STDIN_CHUNK_FRAMES: usize = 4096;

/// A run of decoded audio: interleaved samples in `[-1, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PcmChunk {
    /// Sample rate in Hz.
    pub rate: u32,
    /// Interleaved channels.
    pub channels: usize,
    /// `frames * channels` samples.
    pub samples: Vec<f32>,
}

impl PcmChunk {
    /// Number of frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels.max(1)
    }
}

/// Why a file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The file could not be opened or read.
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
    /// symphonia does not recognise the container or the codec.
    #[error("unsupported or not audio: {0}")]
    Unsupported(String),
    /// The file has no audio track.
    #[error("no audio track")]
    NoAudioTrack,
    /// The data is corrupt.
    #[error("corrupt audio: {0}")]
    Corrupt(String),
    /// The file holds no audio samples at all.
    #[error("no audio in the file")]
    Empty,
}

impl From<SymphoniaError> for DecodeError {
    fn from(err: SymphoniaError) -> Self {
        match err {
            SymphoniaError::IoError(err) => DecodeError::Io(err),
            SymphoniaError::Unsupported(what) => DecodeError::Unsupported(what.to_string()),
            other => DecodeError::Corrupt(other.to_string()),
        }
    }
}

/// An open audio file: its tags and its PCM, packet by packet.
pub struct FileDecoder {
    path: PathBuf,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    metadata: Metadata,
    primed: Option<PcmChunk>,
    ended: bool,
    /// An MP4 edit list still to apply (once the decoded rate is known).
    edit: Option<mp4::Edit>,
    /// Priming frames still to drop.
    skip_left: u64,
    /// Frames still to play, when the container says how long the track is.
    keep_left: Option<u64>,
}

impl std::fmt::Debug for FileDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDecoder").field("path", &self.path).finish_non_exhaustive()
    }
}

impl FileDecoder {
    /// Opens `path`, reads its tags and decodes its first packet.
    ///
    /// `fallback_title` (e.g. from a playlist's `#EXTINF`) is used when the file has no title
    /// tag; failing that, the file name without its extension.
    ///
    /// # Errors
    /// Any `DecodeError`: the caller logs it and skips the file.
    pub fn open(path: &Path, fallback_title: Option<&str>) -> Result<Self, DecodeError> {
        let file = File::open(path)?;
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let format = symphonia::default::get_probe().probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )?;
        let track = format.default_track(TrackType::Audio).ok_or(DecodeError::NoAudioTrack)?;
        let params =
            track.codec_params.as_ref().and_then(|p| p.audio()).ok_or(DecodeError::NoAudioTrack)?;
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())?;
        let track_id = track.id;
        let mut this = FileDecoder {
            path: path.to_path_buf(),
            format,
            decoder,
            track_id,
            metadata: Metadata::default(),
            primed: None,
            ended: false,
            edit: mp4::audio_edit(path),
            skip_left: 0,
            keep_left: None,
        };
        // Some containers (Ogg) deliver their tags with the first packets: decode first, then
        // read the tags. This also proves the file decodes before a track is announced.
        this.primed = Some(this.decode_next()?.ok_or(DecodeError::Empty)?);
        this.metadata = this.read_tags(fallback_title);
        Ok(this)
    }

    /// The file's title, artist and album (`pts` unset).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The next run of PCM, or `None` at the end of the file.
    ///
    /// # Errors
    /// `Corrupt` after too many undecodable packets in a row, or a read error.
    pub fn next_chunk(&mut self) -> Result<Option<PcmChunk>, DecodeError> {
        if let Some(chunk) = self.primed.take() {
            return Ok(Some(chunk));
        }
        self.decode_next()
    }

    fn decode_next(&mut self) -> Result<Option<PcmChunk>, DecodeError> {
        let mut bad_packets = 0;
        while !self.ended {
            let packet = match self.format.next_packet() {
                Ok(Some(packet)) => packet,
                // A chained Ogg stream changes its tracks: treat the first link as the file.
                Ok(None) | Err(SymphoniaError::ResetRequired) => break,
                // Truncated files end early rather than fail.
                Err(SymphoniaError::IoError(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    break
                }
                Err(err) => return Err(err.into()),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(buf) => {
                    if buf.frames() == 0 {
                        continue;
                    }
                    let spec = buf.spec();
                    let (rate, channels) = (spec.rate(), spec.channels().count());
                    let mut chunk = PcmChunk { rate, channels, samples: Vec::new() };
                    buf.copy_to_vec_interleaved(&mut chunk.samples);
                    if let Some(edit) = self.edit.take() {
                        (self.skip_left, self.keep_left) = edit.frames(rate);
                    }
                    self.trim(&mut chunk);
                    if chunk.samples.is_empty() {
                        continue;
                    }
                    return Ok(Some(chunk));
                }
                Err(SymphoniaError::DecodeError(why)) => {
                    bad_packets += 1;
                    tracing::debug!(path = %self.path.display(), why, "skipped a corrupt packet");
                    if bad_packets >= MAX_BAD_PACKETS {
                        return Err(DecodeError::Corrupt(format!(
                            "{bad_packets} packets in a row failed to decode ({why})"
                        )));
                    }
                }
                Err(err) => return Err(err.into()),
            }
        }
        self.ended = true;
        Ok(None)
    }

    /// Applies the edit list: drops priming frames and anything past the track's duration.
    fn trim(&mut self, chunk: &mut PcmChunk) {
        let channels = chunk.channels.max(1);
        let skip = (self.skip_left as usize).min(chunk.frames());
        chunk.samples.drain(..skip * channels);
        self.skip_left -= skip as u64;
        if let Some(keep) = &mut self.keep_left {
            let kept = (*keep as usize).min(chunk.frames());
            chunk.samples.truncate(kept * channels);
            *keep -= kept as u64;
            if *keep == 0 {
                self.ended = true;
            }
        }
    }

    fn read_tags(&mut self, fallback_title: Option<&str>) -> Metadata {
        let mut meta = Metadata::default();
        let track_id = u64::from(self.track_id);
        let mut log = self.format.metadata();
        // Later revisions (e.g. the container's own tags after an ID3v2 header) win.
        loop {
            if let Some(revision) = log.current() {
                merge_revision(&mut meta, revision, track_id);
            }
            if log.pop().is_none() {
                break;
            }
        }
        if meta.title.is_none() && meta.artist.is_none() && meta.album.is_none() {
            // NOTE: symphonia 0.6.1's WAV reader parses LIST/INFO but drops it; read it here.
            if let Some(info) = read_riff_info(&self.path) {
                meta = info;
            }
        }
        if meta.title.is_none() {
            meta.title = fallback_title
                .map(str::to_owned)
                .or_else(|| self.path.file_stem().map(|s| s.to_string_lossy().into_owned()));
        }
        bound_metadata(&mut meta);
        meta
    }
}

fn merge_revision(meta: &mut Metadata, revision: &MetadataRevision, track_id: u64) {
    let per_track = revision.per_track.iter().filter(|t| t.track_id == track_id);
    let tags = revision.media.tags.iter().chain(per_track.flat_map(|t| t.metadata.tags.iter()));
    for tag in tags {
        if let Some((field, value)) = tag_field(tag) {
            let slot = match field {
                Field::Title => &mut meta.title,
                Field::Artist => &mut meta.artist,
                Field::Album => &mut meta.album,
            };
            let value = value.trim();
            if !value.is_empty() {
                *slot = Some(value.to_owned());
            }
        }
    }
}

enum Field {
    Title,
    Artist,
    Album,
}

fn tag_field(tag: &Tag) -> Option<(Field, &str)> {
    match &tag.std {
        Some(StandardTag::TrackTitle(v)) => Some((Field::Title, v.as_str())),
        Some(StandardTag::Artist(v)) => Some((Field::Artist, v.as_str())),
        Some(StandardTag::Album(v)) => Some((Field::Album, v.as_str())),
        Some(_) => None,
        // Formats whose keys symphonia does not map: match the common raw names.
        None => {
            let RawValue::String(value) = &tag.raw.value else { return None };
            let field = match tag.raw.key.to_ascii_lowercase().as_str() {
                "title" | "inam" | "tit2" => Field::Title,
                "artist" | "iart" | "tpe1" => Field::Artist,
                "album" | "iprd" | "talb" => Field::Album,
                _ => return None,
            };
            Some((field, value.as_str()))
        }
    }
}

/// Title, artist and album from a WAV file's `LIST/INFO` chunk, if it has one.
fn read_riff_info(path: &Path) -> Option<Metadata> {
    use std::io::{Seek, SeekFrom};
    const MAX_CHUNKS: usize = 64;
    const MAX_INFO_BYTES: u32 = 1 << 20;
    let mut file = File::open(path).ok()?;
    let mut head = [0u8; 12];
    file.read_exact(&mut head).ok()?;
    if &head[..4] != b"RIFF" || &head[8..] != b"WAVE" {
        return None;
    }
    for _ in 0..MAX_CHUNKS {
        let mut chunk = [0u8; 8];
        file.read_exact(&mut chunk).ok()?;
        let len = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        let padded = i64::from(len) + i64::from(len % 2);
        if &chunk[..4] == b"LIST" && (4..=MAX_INFO_BYTES).contains(&len) {
            let mut body = vec![0; len as usize];
            file.read_exact(&mut body).ok()?;
            if &body[..4] == b"INFO" {
                return Some(parse_riff_info(&body[4..]));
            }
            file.seek(SeekFrom::Current(padded - i64::from(len))).ok()?;
        } else {
            file.seek(SeekFrom::Current(padded)).ok()?;
        }
    }
    None
}

fn parse_riff_info(mut body: &[u8]) -> Metadata {
    let mut meta = Metadata::default();
    while body.len() >= 8 {
        let len = u32::from_le_bytes([body[4], body[5], body[6], body[7]]) as usize;
        let Some(value) = body.get(8..8 + len) else { break };
        let text = String::from_utf8_lossy(value.split(|b| *b == 0).next().unwrap_or_default());
        let text = text.trim();
        let slot = match &body[..4] {
            b"INAM" => Some(&mut meta.title),
            b"IART" => Some(&mut meta.artist),
            b"IPRD" => Some(&mut meta.album),
            _ => None,
        };
        if let Some(slot) = slot.filter(|_| !text.is_empty()) {
            *slot = Some(text.to_owned());
        }
        body = body.get(8 + len + len % 2..).unwrap_or_default();
    }
    meta
}

/// Cuts every field to the protocol's limit (the relay closes a source that sends longer ones).
pub(crate) fn bound_metadata(meta: &mut Metadata) {
    let fields = [&mut meta.title, &mut meta.artist, &mut meta.album, &mut meta.url];
    for value in fields.into_iter().flatten() {
        let end = crate::protocol::truncate(value, MAX_METADATA_FIELD_BYTES).len();
        value.truncate(end);
    }
}

/// Sample format of raw PCM input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PcmFormat {
    /// Signed 16-bit little-endian (ffmpeg `-f s16le`).
    S16le,
    /// 32-bit float little-endian (ffmpeg `-f f32le`).
    F32le,
}

impl PcmFormat {
    fn bytes_per_sample(self) -> usize {
        match self {
            PcmFormat::S16le => 2,
            PcmFormat::F32le => 4,
        }
    }
}

/// Layout of raw PCM input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmSpec {
    /// Sample format.
    pub format: PcmFormat,
    /// Sample rate in Hz.
    pub rate: u32,
    /// Interleaved channels.
    pub channels: u8,
}

impl Default for PcmSpec {
    fn default() -> Self {
        PcmSpec { format: PcmFormat::S16le, rate: 48_000, channels: 2 }
    }
}

/// Raw interleaved PCM from a reader (stdin for `onair push -`).
#[derive(Debug)]
pub struct PcmReader<R> {
    reader: R,
    spec: PcmSpec,
    buf: Vec<u8>,
    filled: usize,
    ended: bool,
}

impl<R: Read> PcmReader<R> {
    /// Reads PCM laid out as `spec` from `reader`.
    pub fn new(reader: R, spec: PcmSpec) -> Self {
        let frame_bytes = spec.format.bytes_per_sample() * usize::from(spec.channels.max(1));
        PcmReader {
            reader,
            spec,
            buf: vec![0; STDIN_CHUNK_FRAMES * frame_bytes],
            filled: 0,
            ended: false,
        }
    }

    /// The next run of PCM (blocks until a chunk is full), or `None` at end of input. A trailing
    /// partial frame is dropped.
    ///
    /// # Errors
    /// A read error other than an interruption.
    pub fn next_chunk(&mut self) -> Result<Option<PcmChunk>, DecodeError> {
        while !self.ended && self.filled < self.buf.len() {
            match self.reader.read(&mut self.buf[self.filled..]) {
                Ok(0) => self.ended = true,
                Ok(n) => self.filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
        let channels = usize::from(self.spec.channels.max(1));
        let sample_bytes = self.spec.format.bytes_per_sample();
        let usable = self.filled - self.filled % (sample_bytes * channels);
        if usable == 0 {
            self.filled = 0;
            return Ok(None);
        }
        let bytes = &self.buf[..usable];
        let samples = match self.spec.format {
            PcmFormat::S16le => bytes
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
                .collect(),
            PcmFormat::F32le => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).clamp(-1.0, 1.0))
                .collect(),
        };
        self.buf.copy_within(usable..self.filled, 0);
        self.filled -= usable;
        Ok(Some(PcmChunk { rate: self.spec.rate, channels, samples }))
    }
}

/// The WAV writer the integration tests use too.
#[cfg(test)]
#[path = "../../tests/common/wav.rs"]
mod test_wav;

#[cfg(test)]
pub(crate) mod tests {
    use super::test_wav::write_wav;
    use super::*;

    pub(crate) fn sample(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join(name)
    }

    /// Decodes a whole file: (metadata, rate, channels, frames).
    pub(crate) fn decode_all(name: &str) -> (Metadata, u32, usize, usize) {
        let mut file = FileDecoder::open(&sample(name), None).unwrap();
        let (mut rate, mut channels, mut frames) = (0, 0, 0);
        while let Some(chunk) = file.next_chunk().unwrap() {
            (rate, channels) = (chunk.rate, chunk.channels);
            frames += chunk.frames();
        }
        (file.metadata().clone(), rate, channels, frames)
    }

    #[test]
    fn every_sample_format_decodes_with_its_tags() {
        // (file, rate, channels, seconds from the samples README, title)
        let cases = [
            ("station-id.wav", 44_100, 1, 3.266_757, "Station ID"),
            ("tone-440.flac", 48_000, 2, 4.0, "Tone 440 Hz"),
            ("sweep.mp3", 44_100, 2, 4.0, "Sweep"),
            ("music.ogg", 44_100, 2, 9.0, "Onair Arpeggio"),
            ("tone-1k.m4a", 48_000, 2, 2.0, "Tone 1 kHz"),
        ];
        for (name, want_rate, want_channels, seconds, title) in cases {
            let (meta, rate, channels, frames) = decode_all(name);
            assert_eq!((rate, channels), (want_rate, want_channels), "{name}");
            let got = frames as f64 / f64::from(rate);
            // Gapless: encoder delay and padding are trimmed (MP3 by symphonia, MP4 by us).
            assert!((got - seconds).abs() < 0.001, "{name}: {got} s, want {seconds} s");
            assert_eq!(meta.title.as_deref(), Some(title), "{name}");
            assert_eq!(meta.artist.as_deref(), Some("onair samples"), "{name}");
            assert_eq!(meta.album.as_deref(), Some("onair test signals"), "{name}");
        }
    }

    #[test]
    fn garbage_and_missing_files_fail_to_open() {
        let err = FileDecoder::open(&sample("broken.mp3"), None).unwrap_err();
        assert!(!err.to_string().is_empty());
        let err = FileDecoder::open(&sample("no-such-file.flac"), None).unwrap_err();
        assert!(matches!(err, DecodeError::Io(_)), "{err}");
    }

    #[test]
    fn untagged_files_fall_back_to_playlist_title_then_file_name() {
        let dir = tempdir("untagged");
        let path = dir.join("My Song.wav");
        write_wav(&path, 8_000, &[0i16; 1600]);
        let file = FileDecoder::open(&path, None).unwrap();
        assert_eq!(file.metadata().title.as_deref(), Some("My Song"));
        let file = FileDecoder::open(&path, Some("From EXTINF")).unwrap();
        assert_eq!(file.metadata().title.as_deref(), Some("From EXTINF"));
    }

    #[test]
    fn long_metadata_is_cut_on_a_char_boundary() {
        let mut meta = Metadata { title: Some("é".repeat(600)), ..Metadata::default() };
        bound_metadata(&mut meta);
        let title = meta.title.unwrap();
        assert!(title.len() <= MAX_METADATA_FIELD_BYTES && title.len() >= 1022);
    }

    #[test]
    fn stdin_pcm_is_read_in_whole_frames() {
        let mut bytes = Vec::new();
        for i in 0..5000i16 {
            bytes.extend_from_slice(&i.to_le_bytes()); // left
            bytes.extend_from_slice(&(-i).to_le_bytes()); // right
        }
        bytes.push(7); // a torn trailing sample is dropped
        let spec = PcmSpec { format: PcmFormat::S16le, rate: 44_100, channels: 2 };
        let mut reader = PcmReader::new(io::Cursor::new(bytes), spec);
        let first = reader.next_chunk().unwrap().unwrap();
        assert_eq!((first.rate, first.channels, first.frames()), (44_100, 2, STDIN_CHUNK_FRAMES));
        assert_eq!(first.samples[2], 1.0 / 32768.0);
        assert_eq!(first.samples[3], -1.0 / 32768.0);
        let second = reader.next_chunk().unwrap().unwrap();
        assert_eq!(second.frames(), 5000 - STDIN_CHUNK_FRAMES);
        assert!(reader.next_chunk().unwrap().is_none());

        let floats: Vec<u8> = [0.5f32, -0.25].iter().flat_map(|s| s.to_le_bytes()).collect();
        let spec = PcmSpec { format: PcmFormat::F32le, rate: 48_000, channels: 1 };
        let chunk = PcmReader::new(io::Cursor::new(floats), spec).next_chunk().unwrap().unwrap();
        assert_eq!(chunk.samples, vec![0.5, -0.25]);
    }

    /// A fresh directory under the system's temp dir, removed when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn tempdir(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "onair-source-{}-{name}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn unique() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
