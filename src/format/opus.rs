//! Opus in Ogg (RFC 7845): packet durations from the TOC byte, the `OpusHead` identification
//! header and `OpusTags` comments.
//!
//! The Icecast ingest uses these to give each packet a pts and to turn in-stream tags into
//! now-playing metadata; the Ogg listener uses them to compute granule positions and to write
//! a fresh `OpusTags` carrying the current title. Pure functions, every length checked.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::Metadata;

/// Magic of the identification header.
pub const HEAD_MAGIC: &[u8; 8] = b"OpusHead";
/// Magic of the comment header.
pub const TAGS_MAGIC: &[u8; 8] = b"OpusTags";
/// Opus always decodes at 48 kHz; granule positions count 48 kHz samples.
pub const SAMPLE_RATE: u32 = 48_000;
/// Longest packet allowed by RFC 6716: 120 ms.
pub const MAX_PACKET_SAMPLES: u32 = 5_760;
/// Most comments read from or written to `OpusTags`.
const MAX_COMMENTS: usize = 1_000;

/// Why Opus data is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpusError {
    /// An empty packet (RFC 6716 requires at least the TOC byte).
    #[error("empty Opus packet")]
    EmptyPacket,
    /// A code-3 packet without a valid frame count, or longer than 120 ms.
    #[error("malformed Opus packet: {0}")]
    BadPacket(&'static str),
    /// A header that is not a valid `OpusHead` / `OpusTags`.
    #[error("malformed {0}")]
    BadHeader(&'static str),
}

/// Samples (at 48 kHz) one Opus packet decodes to, from its TOC byte (RFC 6716 §3.1).
///
/// # Errors
/// `EmptyPacket`, or `BadPacket` for a bad frame count or a duration over 120 ms.
pub fn packet_samples(packet: &[u8]) -> Result<u32, OpusError> {
    let Some(&toc) = packet.first() else { return Err(OpusError::EmptyPacket) };
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => match packet.get(1) {
            Some(&count) if count & 0x3F > 0 => u32::from(count & 0x3F),
            Some(_) => return Err(OpusError::BadPacket("code 3 packet with zero frames")),
            None => return Err(OpusError::BadPacket("code 3 packet without a frame count")),
        },
    };
    let samples = frame * frames;
    if samples > MAX_PACKET_SAMPLES {
        return Err(OpusError::BadPacket("longer than 120 ms"));
    }
    Ok(samples)
}

/// The fields of an `OpusHead` the relay needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusHead {
    /// Output channels.
    pub channels: u8,
    /// Samples to discard at the start of decoding.
    pub pre_skip: u16,
    /// Sample rate of the original input (informational).
    pub input_sample_rate: u32,
    /// Gain to apply on output, in Q7.8 dB.
    pub output_gain: i16,
    /// Channel mapping family (0: mono/stereo).
    pub mapping_family: u8,
}

impl OpusHead {
    /// Parses an identification header.
    ///
    /// # Errors
    /// `BadHeader` when the magic, version, length or channel count is wrong.
    pub fn parse(packet: &[u8]) -> Result<Self, OpusError> {
        if packet.len() < 19 || &packet[..8] != HEAD_MAGIC {
            return Err(OpusError::BadHeader("OpusHead: too short or wrong magic"));
        }
        if packet[8] >> 4 != 0 {
            return Err(OpusError::BadHeader("OpusHead: unsupported major version"));
        }
        let channels = packet[9];
        let mapping_family = packet[18];
        if channels == 0 || (mapping_family == 0 && channels > 2) {
            return Err(OpusError::BadHeader("OpusHead: bad channel count"));
        }
        if mapping_family != 0 && packet.len() < 21 + usize::from(channels) {
            return Err(OpusError::BadHeader("OpusHead: truncated channel mapping table"));
        }
        Ok(Self {
            channels,
            pre_skip: u16::from_le_bytes([packet[10], packet[11]]),
            input_sample_rate: u32::from_le_bytes([packet[12], packet[13], packet[14], packet[15]]),
            output_gain: i16::from_le_bytes([packet[16], packet[17]]),
            mapping_family,
        })
    }

    /// A minimal mapping-family-0 header for a source that sent none (1 or 2 channels).
    pub fn synthesize(channels: u8, input_sample_rate: u32) -> Bytes {
        Self::build(channels.clamp(1, 2), 0, input_sample_rate)
    }

    /// The RFC 7845 identification header for a mono or stereo stream (mapping family 0):
    /// 19 bytes.
    pub fn build(channels: u8, pre_skip: u16, input_sample_rate: u32) -> Bytes {
        let mut head = BytesMut::with_capacity(19);
        head.put_slice(HEAD_MAGIC);
        head.put_u8(1); // version
        head.put_u8(channels);
        head.put_u16_le(pre_skip);
        head.put_u32_le(input_sample_rate);
        head.put_i16_le(0); // output gain
        head.put_u8(0); // mapping family: mono or stereo, no table
        head.freeze()
    }
}

/// Parses a comment header (`OpusTags`, or a Vorbis comment block after `magic`) into
/// now-playing metadata: `TITLE`, `ARTIST`, `ALBUM`, and a URL from `PURL`/`URL`.
///
/// # Errors
/// `BadHeader` when the magic is wrong or a length runs past the end.
pub fn parse_tags(packet: &[u8], magic: &[u8]) -> Result<Metadata, OpusError> {
    let bad = || OpusError::BadHeader("comment header: truncated or wrong magic");
    let rest = packet.strip_prefix(magic).ok_or_else(bad)?;
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], OpusError> {
        let end = at.checked_add(n).ok_or_else(bad)?;
        let slice = rest.get(at..end).ok_or_else(bad)?;
        at = end;
        Ok(slice)
    };
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let vendor_len = le32(take(4)?);
    take(vendor_len)?;
    let count = le32(take(4)?);
    let mut meta = Metadata::default();
    for _ in 0..count.min(MAX_COMMENTS) {
        let len = le32(take(4)?);
        let comment = String::from_utf8_lossy(take(len)?);
        let Some((key, value)) = comment.split_once('=') else { continue };
        let value = crate::protocol::truncate(value, crate::protocol::MAX_METADATA_FIELD_BYTES);
        let field = match key.to_ascii_uppercase().as_str() {
            "TITLE" => &mut meta.title,
            "ARTIST" => &mut meta.artist,
            "ALBUM" => &mut meta.album,
            "PURL" | "URL" => &mut meta.url,
            _ => continue,
        };
        if field.is_none() && !value.is_empty() {
            *field = Some(value.to_owned());
        }
    }
    Ok(meta)
}

/// Writes an `OpusTags` header with this vendor string and the metadata's fields.
pub fn write_tags(vendor: &str, meta: Option<&Metadata>) -> Bytes {
    let mut comments = Vec::new();
    if let Some(meta) = meta {
        for (key, value) in [
            ("TITLE", &meta.title),
            ("ARTIST", &meta.artist),
            ("ALBUM", &meta.album),
            ("PURL", &meta.url),
        ] {
            if let Some(value) = value {
                comments.push(format!("{key}={value}"));
            }
        }
    }
    let mut out = BytesMut::with_capacity(
        16 + vendor.len() + comments.iter().map(|c| c.len() + 4).sum::<usize>(),
    );
    out.put_slice(TAGS_MAGIC);
    out.put_u32_le(vendor.len() as u32);
    out.put_slice(vendor.as_bytes());
    out.put_u32_le(comments.len() as u32);
    for comment in &comments {
        out.put_u32_le(comment.len() as u32);
        out.put_slice(comment.as_bytes());
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_gives_the_packet_duration() {
        assert_eq!(packet_samples(&[0xFC]), Ok(960), "CELT 20 ms, one frame (config 31)");
        assert_eq!(packet_samples(&[0xF8 | 1]), Ok(1920), "two 20 ms frames");
        assert_eq!(packet_samples(&[0xF8 | 3, 3]), Ok(2880), "code 3, three frames");
        assert_eq!(packet_samples(&[(3 << 3)]), Ok(2880), "SILK 60 ms");
        assert_eq!(packet_samples(&[(13 << 3)]), Ok(960), "hybrid 20 ms");
        assert_eq!(packet_samples(&[(16 << 3)]), Ok(120), "CELT 2.5 ms");
        assert_eq!(packet_samples(&[]), Err(OpusError::EmptyPacket));
        assert!(packet_samples(&[0xFB]).is_err(), "code 3 without a count");
        assert!(packet_samples(&[0xFB, 0]).is_err(), "code 3 with zero frames");
        assert!(packet_samples(&[(3 << 3) | 3, 3]).is_err(), "3 x 60 ms is over 120 ms");
    }

    #[test]
    fn heads_parse_and_synthesize() {
        let head = OpusHead::synthesize(2, 44_100);
        assert_eq!(head.len(), 19);
        let parsed = OpusHead::parse(&head).unwrap();
        assert_eq!(
            (parsed.channels, parsed.input_sample_rate, parsed.mapping_family),
            (2, 44_100, 0)
        );
        assert!(OpusHead::parse(b"OpusHead").is_err());
        let mut bad = head.to_vec();
        bad[9] = 6;
        assert!(OpusHead::parse(&bad).is_err(), "6 channels need mapping family 1");
    }

    #[test]
    fn tags_round_trip_and_bad_lengths_are_refused() {
        let meta = Metadata {
            title: Some("Sång".into()),
            artist: Some("Band".into()),
            ..Metadata::default()
        };
        let tags = write_tags("onair", Some(&meta));
        let back = parse_tags(&tags, TAGS_MAGIC).unwrap();
        assert_eq!(back.title.as_deref(), Some("Sång"));
        assert_eq!(back.artist.as_deref(), Some("Band"));
        assert_eq!(parse_tags(&write_tags("x", None), TAGS_MAGIC).unwrap(), Metadata::default());
        let mut truncated = tags.to_vec();
        truncated.truncate(tags.len() - 2);
        assert!(parse_tags(&truncated, TAGS_MAGIC).is_err());
        let mut huge = tags.to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_tags(&huge, TAGS_MAGIC).is_err());
        assert!(parse_tags(b"OpusHead", TAGS_MAGIC).is_err());
    }
}
