//! Vorbis in Ogg: the three header packets, packet durations, and the relay's header frame
//! for a Vorbis track (the three headers in Xiph lacing, as Matroska's CodecPrivate and
//! WebCodecs' `description` carry them).
//!
//! A Vorbis packet's duration depends on its block size, chosen by a mode whose block flag is
//! only in the setup header: `VorbisInfo::parse` reads the modes from the end of the setup
//! header (the way FFmpeg's and liboggz's parsers do) instead of decoding the codebooks.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::Metadata;

/// Start of the identification header.
pub const IDENT_MAGIC: &[u8; 7] = b"\x01vorbis";
/// Start of the comment header.
pub const COMMENT_MAGIC: &[u8; 7] = b"\x03vorbis";
/// Start of the setup header.
pub const SETUP_MAGIC: &[u8; 7] = b"\x05vorbis";
/// Most modes a setup header may declare (a 6-bit field).
const MAX_MODES: usize = 64;

/// Why Vorbis data is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VorbisError {
    /// A header packet that does not parse.
    #[error("malformed Vorbis {0} header")]
    BadHeader(&'static str),
    /// An audio packet that does not fit the stream's setup.
    #[error("malformed Vorbis audio packet: {0}")]
    BadPacket(&'static str),
    /// A header frame that is not three Xiph-laced headers.
    #[error("malformed Vorbis header frame")]
    BadHeaderFrame,
}

/// What the relay needs from a stream's headers: format and the block flag of each mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VorbisInfo {
    /// Channels.
    pub channels: u8,
    /// Samples per second.
    pub sample_rate: u32,
    /// Short and long block sizes.
    pub blocksizes: [u32; 2],
    /// Per mode: whether it uses the long block.
    modes: Vec<bool>,
}

impl VorbisInfo {
    /// Parses the identification and setup headers.
    ///
    /// # Errors
    /// `BadHeader` for a wrong magic, version, channel count, rate, block sizes or mode list.
    pub fn parse(ident: &[u8], setup: &[u8]) -> Result<Self, VorbisError> {
        if ident.len() < 30 || !ident.starts_with(IDENT_MAGIC) {
            return Err(VorbisError::BadHeader("identification"));
        }
        let le32 = |at: usize| {
            u32::from_le_bytes([ident[at], ident[at + 1], ident[at + 2], ident[at + 3]])
        };
        let (version, channels, sample_rate) = (le32(7), ident[11], le32(12));
        let (small, large) = (ident[28] & 0x0F, ident[28] >> 4);
        if version != 0
            || channels == 0
            || sample_rate == 0
            || !(6..=13).contains(&small)
            || !(6..=13).contains(&large)
            || small > large
            || ident[29] & 1 == 0
        {
            return Err(VorbisError::BadHeader("identification"));
        }
        if !setup.starts_with(SETUP_MAGIC) {
            return Err(VorbisError::BadHeader("setup"));
        }
        Ok(Self {
            channels,
            sample_rate,
            blocksizes: [1 << small, 1 << large],
            modes: setup_modes(setup).ok_or(VorbisError::BadHeader("setup"))?,
        })
    }

    /// The block size of an audio packet, and the previous block's size when the packet says.
    ///
    /// # Errors
    /// `BadPacket` for a header packet or a mode the setup does not declare.
    pub fn block(&self, packet: &[u8]) -> Result<(u32, Option<u32>), VorbisError> {
        let Some(&first) = packet.first() else { return Err(VorbisError::BadPacket("empty")) };
        if first & 1 != 0 {
            return Err(VorbisError::BadPacket("header packet among audio packets"));
        }
        let mode_bits = ilog(self.modes.len() as u32 - 1);
        let mode = usize::from((first >> 1) & ((1u16 << mode_bits) - 1) as u8);
        let Some(&long) = self.modes.get(mode) else {
            return Err(VorbisError::BadPacket("undeclared mode"));
        };
        if !long {
            return Ok((self.blocksizes[0], None));
        }
        // A long block says which size the previous block had, in the bit after the mode.
        let previous = (u16::from(first) >> (1 + mode_bits)) & 1;
        Ok((self.blocksizes[1], Some(self.blocksizes[usize::from(previous)])))
    }
}

/// Number of bits needed to write `value` (Vorbis `ilog`).
fn ilog(value: u32) -> u32 {
    32 - value.leading_zeros()
}

/// Reads a packet's bits from the end backwards (Vorbis packs bits LSB first, so a field read
/// this way comes out most significant bit first, as its value).
struct BackBits<'a> {
    data: &'a [u8],
    left: usize,
}

impl BackBits<'_> {
    fn bit(&mut self) -> Option<u32> {
        self.left = self.left.checked_sub(1)?;
        Some(u32::from(self.data[self.left / 8] >> (self.left % 8)) & 1)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |value, _| Some((value << 1) | self.bit()?))
    }
}

/// The block flag of each mode, read backwards from the framing bit: each mode is
/// `blockflag:1 windowtype:16 transformtype:16 mapping:8` and the count (6 bits, minus one)
/// precedes them. Counting stops where the pattern (zero window and transform types, a mapping
/// below 64) ends; the longest run whose count field agrees is the mode list.
fn setup_modes(setup: &[u8]) -> Option<Vec<bool>> {
    let mut bits = BackBits { data: setup, left: setup.len() * 8 };
    while bits.bit()? == 0 {}
    let after_framing = bits.left;
    let (mut count, mut confirmed) = (0usize, 0usize);
    while bits.left >= 41 + 6 {
        if bits.bits(8)? > 63 || bits.bits(16)? != 0 || bits.bits(16)? != 0 {
            break;
        }
        bits.bit()?;
        count += 1;
        if count > MAX_MODES {
            break;
        }
        let mut field = BackBits { data: setup, left: bits.left };
        if field.bits(6)? as usize + 1 == count {
            confirmed = count;
        }
    }
    if confirmed == 0 {
        return None;
    }
    let mut bits = BackBits { data: setup, left: after_framing };
    let mut modes = vec![false; confirmed];
    for mode in modes.iter_mut().rev() {
        bits.bits(40)?;
        *mode = bits.bit()? == 1;
    }
    Some(modes)
}

/// Tracks packet durations along a stream: a packet returns a quarter of the previous block
/// plus a quarter of its own; the first packet after the headers returns nothing.
#[derive(Debug, Clone)]
pub struct Durations {
    info: VorbisInfo,
    previous: Option<u32>,
}

impl Durations {
    /// Durations for a stream with these headers, from its first audio packet.
    pub fn new(info: VorbisInfo) -> Self {
        Self { info, previous: None }
    }

    /// The stream's format.
    pub fn info(&self) -> &VorbisInfo {
        &self.info
    }

    /// Samples the next audio packet completes.
    ///
    /// # Errors
    /// `BadPacket` when the packet does not fit the setup.
    pub fn next(&mut self, packet: &[u8]) -> Result<u32, VorbisError> {
        let (current, said_previous) = self.info.block(packet)?;
        let samples = match self.previous {
            None => 0,
            Some(tracked) => (said_previous.unwrap_or(tracked) + current) / 4,
        };
        self.previous = Some(current);
        Ok(samples)
    }
}

/// The relay's header frame for a Vorbis track: the three headers, Xiph-laced.
pub fn pack_headers(ident: &[u8], comment: &[u8], setup: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(ident.len() + comment.len() + setup.len() + 16);
    out.put_u8(2);
    for len in [ident.len(), comment.len()] {
        out.put_bytes(255, len / 255);
        out.put_u8((len % 255) as u8);
    }
    out.put_slice(ident);
    out.put_slice(comment);
    out.put_slice(setup);
    out.freeze()
}

/// Splits a header frame into the identification, comment and setup headers.
///
/// # Errors
/// `BadHeaderFrame` when it is not three Xiph-laced packets.
pub fn unpack_headers(frame: &Bytes) -> Result<[Bytes; 3], VorbisError> {
    if frame.first() != Some(&2) {
        return Err(VorbisError::BadHeaderFrame);
    }
    let mut at = 1;
    let mut lens = [0usize; 2];
    for len in &mut lens {
        loop {
            let byte = *frame.get(at).ok_or(VorbisError::BadHeaderFrame)?;
            at += 1;
            *len += usize::from(byte);
            if byte < 255 {
                break;
            }
        }
    }
    let comment_at = at + lens[0];
    let setup_at = comment_at + lens[1];
    if setup_at > frame.len() {
        return Err(VorbisError::BadHeaderFrame);
    }
    Ok([frame.slice(at..comment_at), frame.slice(comment_at..setup_at), frame.slice(setup_at..)])
}

/// A comment header with this vendor and the metadata's fields (and the framing bit).
pub fn write_comment(vendor: &str, meta: Option<&Metadata>) -> Bytes {
    let tags = crate::format::opus::write_tags(vendor, meta);
    let mut out = BytesMut::with_capacity(tags.len());
    out.put_slice(COMMENT_MAGIC);
    out.put_slice(&tags[crate::format::opus::TAGS_MAGIC.len()..]);
    out.put_u8(1);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ogg::{parse_page, Packetizer};

    /// The packets of the Vorbis sample file.
    fn sample_packets() -> Vec<Bytes> {
        let mut buf = BytesMut::from(&include_bytes!("../../samples/music.ogg")[..]);
        let mut packetizer = Packetizer::new(1 << 20);
        let mut packets = Vec::new();
        while let Some(page) = parse_page(&mut buf).unwrap() {
            packetizer.push(&page, &mut packets).unwrap();
        }
        packets
    }

    #[test]
    fn the_sample_file_has_the_duration_ffprobe_reports() {
        let packets = sample_packets();
        let info = VorbisInfo::parse(&packets[0], &packets[2]).unwrap();
        assert_eq!((info.channels, info.sample_rate, info.blocksizes), (2, 44_100, [256, 2048]));
        assert_eq!(info.modes, vec![false, true], "libvorbis: a short and a long mode");
        let mut durations = Durations::new(info);
        let total: u64 = packets[3..].iter().map(|p| u64::from(durations.next(p).unwrap())).sum();
        // 9.000 s at 44.1 kHz, give or take the encoder's padding of the last block.
        assert!((396_900..=396_900 + 2048).contains(&total), "{total} samples");
    }

    #[test]
    fn header_frames_round_trip_and_bad_ones_are_refused() {
        let packets = sample_packets();
        let frame = pack_headers(&packets[0], &packets[1], &packets[2]);
        let [ident, comment, setup] = unpack_headers(&frame).unwrap();
        assert_eq!(
            (ident, comment, setup),
            (packets[0].clone(), packets[1].clone(), packets[2].clone())
        );
        assert!(unpack_headers(&Bytes::from_static(b"\x02\xff")).is_err());
        assert!(unpack_headers(&Bytes::from_static(b"\x01\x01\x01x")).is_err());
        let meta = Metadata { title: Some("Song".into()), ..Metadata::default() };
        let comment = write_comment("onair", Some(&meta));
        let back = crate::format::opus::parse_tags(&comment, COMMENT_MAGIC).unwrap();
        assert_eq!(back.title.as_deref(), Some("Song"));
        assert_eq!(comment.last(), Some(&1), "framing bit");
    }

    #[test]
    fn bad_headers_and_packets_are_refused() {
        let packets = sample_packets();
        assert!(VorbisInfo::parse(&packets[1], &packets[2]).is_err());
        assert!(VorbisInfo::parse(&packets[0], b"\x05vorbis").is_err());
        assert!(VorbisInfo::parse(
            &packets[0],
            &[0x05, b'v', b'o', b'r', b'b', b'i', b's', 0, 0, 0]
        )
        .is_err());
        let info = VorbisInfo::parse(&packets[0], &packets[2]).unwrap();
        assert!(info.block(&[]).is_err());
        assert!(info.block(&[0x01]).is_err(), "a header packet");
    }
}
