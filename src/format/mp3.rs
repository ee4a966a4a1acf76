//! MPEG audio (MP3) frame sync: finds frames in a byte stream, skips ID3 tags and the
//! Xing/Info header frame, and gives each frame's length, sample rate and duration.
//!
//! The Icecast ingest pushes socket bytes in and takes whole frames out (each becomes one
//! keyframe in the ring); MP3 listeners get those frames back to back. Bounded: bytes that
//! are not frames are skipped only up to `MAX_RESYNC_BYTES`, then the stream is refused.

use bytes::{Buf, Bytes, BytesMut};

/// Most bytes skipped in a row while looking for a frame before the stream is refused.
pub const MAX_RESYNC_BYTES: usize = 16 << 10;
/// Largest MPEG audio frame (Layer II, 160 kbit/s at 8 kHz, padded).
pub const MAX_FRAME_BYTES: usize = 2_881;

/// Why a byte stream is not MPEG audio.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mp3Error {
    /// No frame sync within `MAX_RESYNC_BYTES`.
    #[error("no MPEG audio frame sync within {0} bytes")]
    NoSync(usize),
    /// Ogg pages arrived on an MP3 stream.
    #[error("Ogg data on an MP3 stream (container switch mid-stream)")]
    ContainerSwitch,
    /// A free-format stream (bitrate index 0), which has no frame length in its header.
    #[error("free-format MPEG audio is not supported")]
    FreeFormat,
}

/// The fields of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// 1 for MPEG-1, 2 for MPEG-2, 25 for MPEG-2.5.
    pub version: u8,
    /// Layer 1, 2 or 3.
    pub layer: u8,
    /// Bits per second.
    pub bitrate: u32,
    /// Samples per second.
    pub sample_rate: u32,
    /// 1 (mono) or 2.
    pub channels: u8,
    /// Samples per channel in this frame.
    pub samples: u32,
    /// Bytes in the frame, header included.
    pub len: usize,
    /// Whether a 16-bit CRC follows the header.
    pub crc: bool,
}

/// Parses a 4-byte frame header; `None` when it is not one (free-format headers, which
/// carry no frame length, included).
pub fn parse_header(b: &[u8]) -> Option<FrameInfo> {
    let b = b.get(..4)?;
    if b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = match (b[1] >> 3) & 3 {
        0 => 25,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let layer = match (b[1] >> 1) & 3 {
        1 => 3,
        2 => 2,
        3 => 1,
        _ => return None,
    };
    let bitrate_index = usize::from(b[2] >> 4);
    let rate_index = usize::from((b[2] >> 2) & 3);
    if bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    const V1: [[u16; 15]; 3] = [
        [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
        [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
        [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    ];
    const V2: [[u16; 15]; 2] = [
        [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
        [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    ];
    let kbps = match (version, layer) {
        (1, l) => V1[usize::from(l - 1)][bitrate_index],
        (_, 1) => V2[0][bitrate_index],
        _ => V2[1][bitrate_index],
    };
    let sample_rate = [44_100, 48_000, 32_000][rate_index]
        / match version {
            1 => 1,
            2 => 2,
            _ => 4,
        };
    let samples = match (layer, version) {
        (1, _) => 384,
        (2, _) | (3, 1) => 1152,
        _ => 576,
    };
    let bitrate = u32::from(kbps) * 1000;
    let padding = usize::from((b[2] >> 1) & 1);
    let len = if layer == 1 {
        (12 * bitrate / sample_rate) as usize * 4 + padding * 4
    } else {
        (samples / 8 * bitrate / sample_rate) as usize + padding
    };
    Some(FrameInfo {
        version,
        layer,
        bitrate,
        sample_rate,
        channels: if b[3] >> 6 == 3 { 1 } else { 2 },
        samples,
        len,
        crc: b[1] & 1 == 0,
    })
}

/// Whether `b` starts with a valid free-format header (bitrate index 0).
fn is_free_format(b: &[u8]) -> bool {
    b.len() >= 4
        && b[0] == 0xFF
        && b[1] & 0xE0 == 0xE0
        && (b[1] >> 3) & 3 != 1
        && (b[1] >> 1) & 3 != 0
        && b[2] >> 4 == 0
        && (b[2] >> 2) & 3 != 3
}

impl FrameInfo {
    /// Whether `other` can follow this frame in the same stream.
    fn same_stream(&self, other: &FrameInfo) -> bool {
        (self.version, self.layer, self.sample_rate)
            == (other.version, other.layer, other.sample_rate)
    }
}

/// Whether a Layer III frame is a Xing/Info/VBRI header rather than audio.
fn is_info_frame(frame: &[u8], info: &FrameInfo) -> bool {
    if info.layer != 3 {
        return false;
    }
    let side = match (info.version, info.channels) {
        (1, 1) => 17,
        (1, _) => 32,
        (_, 1) => 9,
        _ => 17,
    };
    let at = 4 + usize::from(info.crc) * 2 + side;
    let tag = frame.get(at..at + 4);
    matches!(tag, Some(b"Xing" | b"Info")) || frame.get(36..40) == Some(b"VBRI")
}

/// Finds MP3 frames in a byte stream fed piece by piece.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Bytes of an ID3 tag still to skip.
    skip: usize,
    /// Non-frame bytes skipped in a row.
    skipped: usize,
    /// The last frame's header, once in sync.
    synced: Option<FrameInfo>,
    /// Free-format headers seen while looking for sync (for a precise error).
    free_format: usize,
}

impl FrameReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next complete audio frame off the front of `buf`; `None` until one is there.
    ///
    /// # Errors
    /// `NoSync` after `MAX_RESYNC_BYTES` of non-frame bytes (`FreeFormat` when they held many
    /// free-format headers), `ContainerSwitch` when Ogg pages show up.
    pub fn next_frame(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<(FrameInfo, Bytes)>, Mp3Error> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            if buf.len() < 4 {
                return Ok(None);
            }
            if let Some(info) = parse_header(buf) {
                let len = info.len.max(4);
                // In sync, a header that fits the stream is trusted; otherwise the next header
                // must confirm it, so stray 0xFF bytes do not pass for frames.
                let trusted = self.synced.is_some_and(|s| s.same_stream(&info));
                if !trusted {
                    if buf.len() < len + 4 {
                        return Ok(None);
                    }
                    let confirmed = parse_header(&buf[len..]).is_some_and(|n| n.same_stream(&info));
                    if !confirmed {
                        self.skip_byte(buf)?;
                        continue;
                    }
                }
                if buf.len() < len {
                    return Ok(None);
                }
                let frame = buf.split_to(len).freeze();
                self.synced = Some(info);
                self.skipped = 0;
                if is_info_frame(&frame, &info) {
                    continue;
                }
                return Ok(Some((info, frame)));
            }
            if buf.starts_with(b"ID3") {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let size = buf[6..10].iter().fold(0usize, |n, &b| (n << 7) | usize::from(b & 0x7F));
                let footer = if buf[5] & 0x10 != 0 { 10 } else { 0 };
                self.skip = 10 + size + footer;
                continue;
            }
            if buf.starts_with(b"TAG") {
                self.skip = 128;
                continue;
            }
            if buf.starts_with(b"OggS") {
                return Err(Mp3Error::ContainerSwitch);
            }
            self.free_format += usize::from(is_free_format(buf));
            self.skip_byte(buf)?;
        }
    }

    fn skip_byte(&mut self, buf: &mut BytesMut) -> Result<(), Mp3Error> {
        buf.advance(1);
        self.synced = None;
        self.skipped += 1;
        if self.skipped > MAX_RESYNC_BYTES {
            // Many free-format headers and no frames: say what it really is.
            if self.free_format > 16 {
                return Err(Mp3Error::FreeFormat);
            }
            return Err(Mp3Error::NoSync(MAX_RESYNC_BYTES));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(data: &[u8], chunk: usize) -> Result<Vec<(FrameInfo, Bytes)>, Mp3Error> {
        let mut reader = FrameReader::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in data.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(frame) = reader.next_frame(&mut buf)? {
                out.push(frame);
            }
        }
        Ok(out)
    }

    #[test]
    fn headers_give_length_rate_and_duration() {
        // MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding, joint stereo.
        let info = parse_header(&[0xFF, 0xFB, 0x90, 0x44]).unwrap();
        assert_eq!(
            (info.version, info.layer, info.bitrate, info.sample_rate),
            (1, 3, 128_000, 44_100)
        );
        assert_eq!((info.len, info.samples, info.channels), (417, 1152, 2));
        // Padding adds a byte.
        assert_eq!(parse_header(&[0xFF, 0xFB, 0x92, 0x44]).unwrap().len, 418);
        // MPEG-2 Layer III, 64 kbit/s, 24 kHz, mono: 576 samples.
        let info = parse_header(&[0xFF, 0xF3, 0x84, 0xC4]).unwrap();
        assert_eq!(
            (info.version, info.sample_rate, info.samples, info.channels),
            (2, 24_000, 576, 1)
        );
        assert_eq!(info.len, 192);
        assert_eq!(parse_header(&[0xFF, 0xFB, 0xF0, 0x44]), None, "bad bitrate");
        assert_eq!(parse_header(&[0xFF, 0xFB, 0x0C, 0x44]), None, "bad sample rate");
        assert_eq!(parse_header(&[0xFF, 0xFB, 0x00, 0x44]), None, "free format");
        assert!(is_free_format(&[0xFF, 0xFB, 0x00, 0x44]));
    }

    #[test]
    fn a_real_file_splits_into_frames_without_its_tags() {
        let file = include_bytes!("../../samples/sweep.mp3");
        for chunk in [1, 100, 4096, file.len()] {
            let out = frames(file, chunk).unwrap();
            // 4.049 s at 44.1 kHz / 1152 samples per frame, without the Info frame.
            assert!((150..=160).contains(&out.len()), "{} frames in chunks of {chunk}", out.len());
            assert!(out.iter().all(|(i, f)| i.len == f.len() && f[0] == 0xFF));
            assert!(out.iter().all(|(i, _)| i.sample_rate == 44_100 && i.bitrate == 128_000));
            assert!(!is_info_frame(&out[0].1, &out[0].0), "the Info frame is dropped");
        }
    }

    #[test]
    fn garbage_is_refused_after_a_bounded_search() {
        let garbage = include_bytes!("../../samples/broken.mp3").repeat(10);
        assert_eq!(frames(&garbage, 512).unwrap_err(), Mp3Error::NoSync(MAX_RESYNC_BYTES));
        let mut switched = include_bytes!("../../samples/sweep.mp3").to_vec();
        switched.extend_from_slice(&include_bytes!("../../samples/music.ogg")[..1000]);
        assert_eq!(frames(&switched, 700).unwrap_err(), Mp3Error::ContainerSwitch);
    }

    #[test]
    fn stray_sync_bytes_between_frames_are_skipped() {
        let file = include_bytes!("../../samples/sweep.mp3");
        let clean = frames(file, 4096).unwrap();
        let first = clean[0].1.len();
        let start = file.len() - clean.iter().map(|(_, f)| f.len()).sum::<usize>();
        let mut dirty = file[..start + first].to_vec();
        dirty.extend_from_slice(&[0xFF, 0xFB, 0x00, 0x12, 0x34]);
        dirty.extend_from_slice(&file[start + first..]);
        let out = frames(&dirty, 333).unwrap();
        assert_eq!(out.len(), clean.len());
    }
}
