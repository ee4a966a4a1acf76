//! The edit list of an MP4/M4A file's sound track: how many priming samples to drop at the
//! start and how long the track really is (gapless playback of AAC).
//!
//! NOTE: symphonia 0.6.1 parses `elst` but does not apply it, so every AAC track would start
//! with ~21 ms of encoder priming and end with padding: audible as a gap between tracks.
//! `decode.rs` trims with what this module reads. Pure parsing, bounded sizes, no panics.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Largest `moov` atom read (sample tables of a long file fit easily).
const MAX_MOOV_BYTES: u64 = 64 << 20;
/// Top-level atoms examined before giving up.
const MAX_TOP_LEVEL_ATOMS: usize = 64;

/// The first non-empty edit of the sound track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edit {
    /// Samples to skip at the start, in `media_timescale` units.
    pub media_time: u64,
    /// Units per second of `media_time`.
    pub media_timescale: u32,
    /// Presented duration, in `movie_timescale` units (0: unknown).
    pub duration: u64,
    /// Units per second of `duration`.
    pub movie_timescale: u32,
}

impl Edit {
    /// (frames to skip, frames to keep) at `rate`.
    pub fn frames(&self, rate: u32) -> (u64, Option<u64>) {
        let scale = |value: u64, timescale: u32| {
            (u128::from(value) * u128::from(rate) / u128::from(timescale.max(1))) as u64
        };
        let keep = (self.duration > 0).then(|| scale(self.duration, self.movie_timescale));
        (scale(self.media_time, self.media_timescale), keep)
    }
}

/// The sound track's edit, if `path` is an MP4 file that has one.
pub(crate) fn audio_edit(path: &Path) -> Option<Edit> {
    let mut file = File::open(path).ok()?;
    let moov = read_moov(&mut file)?;
    let movie_timescale = find(&moov, b"mvhd").and_then(mvhd_timescale)?;
    let edit = atoms(&moov).filter(|(kind, _)| kind == b"trak").find_map(|(_, trak)| {
        let mdia = find(trak, b"mdia")?;
        let handler = find(mdia, b"hdlr")?.get(8..12)?;
        if handler != b"soun" {
            return None;
        }
        let media_timescale = find(mdia, b"mdhd").and_then(mvhd_timescale)?;
        let elst = find(find(trak, b"edts")?, b"elst")?;
        let (media_time, duration) = first_edit(elst)?;
        Some(Edit { media_time, media_timescale, duration, movie_timescale })
    });
    edit
}

fn read_moov(file: &mut File) -> Option<Vec<u8>> {
    let mut pos = 0u64;
    for i in 0..MAX_TOP_LEVEL_ATOMS {
        let mut head = [0u8; 16];
        file.seek(SeekFrom::Start(pos)).ok()?;
        file.read_exact(&mut head[..8]).ok()?;
        let kind: [u8; 4] = head[4..8].try_into().ok()?;
        if i == 0 && &kind != b"ftyp" {
            return None;
        }
        let (size, header) = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
            1 => {
                file.read_exact(&mut head[8..16]).ok()?;
                (u64::from_be_bytes(head[8..16].try_into().ok()?), 16)
            }
            0 => return None, // "to the end of the file": only mdat does that
            size => (u64::from(size), 8),
        };
        if size < header {
            return None;
        }
        if &kind == b"moov" {
            let len = size - header;
            if len > MAX_MOOV_BYTES {
                return None;
            }
            let mut body = vec![0; len as usize];
            file.read_exact(&mut body).ok()?;
            return Some(body);
        }
        pos = pos.checked_add(size)?;
    }
    None
}

/// Child atoms of `body`: (type, payload).
fn atoms(mut body: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(body.get(..4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = body.get(4..8)?.try_into().ok()?;
        let (payload, size) = match size {
            1 => {
                let size = u64::from_be_bytes(body.get(8..16)?.try_into().ok()?) as usize;
                (body.get(16..size)?, size)
            }
            0 => (body.get(8..)?, body.len()),
            size => (body.get(8..size)?, size),
        };
        body = body.get(size..)?;
        Some((kind, payload))
    })
}

fn find<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    atoms(body).find(|(k, _)| k == kind).map(|(_, payload)| payload)
}

/// The timescale of an `mvhd` or `mdhd` (same layout up to it).
fn mvhd_timescale(body: &[u8]) -> Option<u32> {
    let at = match body.first()? {
        0 => 12,
        1 => 20,
        _ => return None,
    };
    let timescale = u32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
    (timescale > 0).then_some(timescale)
}

/// (media_time, segment_duration) of the first edit that is not an empty one (`-1`).
fn first_edit(body: &[u8]) -> Option<(u64, u64)> {
    let version = *body.first()?;
    let count = u32::from_be_bytes(body.get(4..8)?.try_into().ok()?) as usize;
    let entry_len = if version == 1 { 20 } else { 12 };
    (0..count.min(16)).find_map(|i| {
        let entry = body.get(8 + i * entry_len..8 + (i + 1) * entry_len)?;
        let (duration, media_time) = if version == 1 {
            let d = u64::from_be_bytes(entry[..8].try_into().ok()?);
            (d, i64::from_be_bytes(entry[8..16].try_into().ok()?))
        } else {
            let d = u64::from(u32::from_be_bytes(entry[..4].try_into().ok()?));
            (d, i64::from(i32::from_be_bytes(entry[4..8].try_into().ok()?)))
        };
        u64::try_from(media_time).ok().map(|t| (t, duration))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::decode::tests::sample;

    #[test]
    fn the_m4a_sample_has_1024_priming_samples_and_lasts_2_s() {
        let edit = audio_edit(&sample("tone-1k.m4a")).unwrap();
        assert_eq!(
            edit,
            Edit {
                media_time: 1024,
                media_timescale: 48_000,
                duration: 2000,
                movie_timescale: 1000
            }
        );
        assert_eq!(edit.frames(48_000), (1024, Some(96_000)));
    }

    #[test]
    fn other_files_have_no_edit() {
        assert_eq!(audio_edit(&sample("tone-440.flac")), None);
        assert_eq!(audio_edit(&sample("broken.mp3")), None);
    }

    #[test]
    fn truncated_atoms_are_not_trusted() {
        let body = [0, 0, 0, 40, b'e', b'l', b's', b't', 0, 0];
        assert_eq!(atoms(&body).count(), 0);
        assert_eq!(first_edit(&[0, 0, 0, 0, 0, 0, 0, 5]), None);
    }
}
