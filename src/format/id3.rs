//! The ID3v2.4 tag at the start of each HLS packed-audio segment (MP3 streams): a `PRIV`
//! frame with the segment's timestamp (`com.apple.streaming.transportStreamTimestamp`, a
//! 33-bit 90 kHz clock, as RFC 8216 §3.4 requires), and now playing as `TIT2`/`TPE1`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::Metadata;

/// The owner of the timestamp `PRIV` frame.
const TIMESTAMP_OWNER: &[u8] = b"com.apple.streaming.transportStreamTimestamp\0";
/// The 90 kHz clock wraps at 33 bits.
const PTS_MASK: u64 = (1 << 33) - 1;

/// A 28-bit size as ID3's four "syncsafe" bytes (7 bits each).
fn syncsafe(size: usize) -> [u8; 4] {
    let size = u32::try_from(size).unwrap_or(u32::MAX).min((1 << 28) - 1);
    [
        (size >> 21) as u8 & 0x7F,
        (size >> 14) as u8 & 0x7F,
        (size >> 7) as u8 & 0x7F,
        size as u8 & 0x7F,
    ]
}

fn frame(out: &mut BytesMut, id: &[u8; 4], body: &[u8]) {
    out.put_slice(id);
    out.put_slice(&syncsafe(body.len()));
    out.put_u16(0);
    out.put_slice(body);
}

/// A text frame in UTF-8 (encoding byte 3).
fn text(out: &mut BytesMut, id: &[u8; 4], value: &str) {
    let mut body = Vec::with_capacity(1 + value.len());
    body.push(3);
    body.extend_from_slice(value.as_bytes());
    frame(out, id, &body);
}

/// The tag for a segment that starts at `pts_90k` (a 90 kHz clock), with now playing.
pub fn segment_tag(pts_90k: u64, metadata: Option<&Metadata>) -> Bytes {
    let mut frames = BytesMut::with_capacity(128);
    let mut private = Vec::with_capacity(TIMESTAMP_OWNER.len() + 8);
    private.extend_from_slice(TIMESTAMP_OWNER);
    private.extend_from_slice(&(pts_90k & PTS_MASK).to_be_bytes());
    frame(&mut frames, b"PRIV", &private);
    if let Some(meta) = metadata {
        if let Some(title) = &meta.title {
            text(&mut frames, b"TIT2", title);
        }
        if let Some(artist) = &meta.artist {
            text(&mut frames, b"TPE1", artist);
        }
    }
    let mut tag = BytesMut::with_capacity(10 + frames.len());
    tag.put_slice(b"ID3\x04\x00\x00");
    tag.put_slice(&syncsafe(frames.len()));
    tag.put_slice(&frames);
    tag.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timestamp_is_a_33_bit_priv_frame() {
        let tag = segment_tag((1 << 33) + 90_000, None);
        assert_eq!(&tag[..6], b"ID3\x04\x00\x00");
        let size = tag[6..10].iter().fold(0usize, |n, b| (n << 7) | usize::from(*b));
        assert_eq!(size, tag.len() - 10);
        assert_eq!(&tag[10..14], b"PRIV");
        let body = &tag[20..];
        assert!(body.starts_with(TIMESTAMP_OWNER));
        assert_eq!(body[TIMESTAMP_OWNER.len()..], 90_000u64.to_be_bytes(), "wrapped at 33 bits");
        let meta = Metadata { title: Some("Song".into()), ..Metadata::default() };
        let tag = segment_tag(0, Some(&meta));
        assert!(tag.windows(4).any(|w| w == b"TIT2"));
        assert!(tag.ends_with(b"\x03Song"));
    }
}
