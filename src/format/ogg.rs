//! Ogg pages (RFC 3533): the CRC, a bounded page parser that reassembles packets, and a page
//! writer for listeners.
//!
//! The Icecast ingest feeds `PageParser` with socket bytes and takes pages, then `Packetizer`
//! turns one logical stream's pages into packets (sliced from the page, copied only when a
//! packet spans pages). `PageWriter` lays shared packet payloads out as pages: it writes only
//! the small page header per listener and leaves the payload `Bytes` untouched.

use bytes::{BufMut, Bytes, BytesMut};

/// Every page starts with this capture pattern.
pub const CAPTURE_PATTERN: &[u8; 4] = b"OggS";
/// Fixed part of a page header, before the lacing values.
pub const PAGE_HEADER_BYTES: usize = 27;
/// Most lacing values (segments) in one page.
pub const MAX_SEGMENTS: usize = 255;
/// Largest possible page: header, 255 lacing values, 255 segments of 255 bytes.
pub const MAX_PAGE_BYTES: usize = PAGE_HEADER_BYTES + MAX_SEGMENTS + MAX_SEGMENTS * 255;
/// Header type flag: this page starts with the continuation of a packet.
pub const FLAG_CONTINUED: u8 = 0x01;
/// Header type flag: first page of a logical stream.
pub const FLAG_BOS: u8 = 0x02;
/// Header type flag: last page of a logical stream.
pub const FLAG_EOS: u8 = 0x04;
/// Granule position meaning "no packet ends on this page".
pub const NO_GRANULE: u64 = u64::MAX;

/// The Ogg CRC-32 lookup table: polynomial 0x04C11DB7, MSB first.
static CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04C1_1DB7 } else { r << 1 };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
}

/// Continues an Ogg CRC-32 (initial value 0, no final xor) over `data`.
pub fn crc32(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        crc = (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ byte) as usize];
    }
    crc
}

/// Why bytes are not a valid Ogg stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OggError {
    /// The bytes where a page should start are not `OggS`.
    #[error("lost Ogg page sync: expected `OggS`, got {0:02x?}")]
    NoCapturePattern([u8; 4]),
    /// A page of a stream structure version other than 0.
    #[error("unsupported Ogg version {0}")]
    Version(u8),
    /// A page whose checksum does not match its bytes.
    #[error("Ogg page {sequence} of stream {serial:#010x} fails its CRC check")]
    Crc {
        /// The page's stream serial number.
        serial: u32,
        /// The page's sequence number.
        sequence: u32,
    },
    /// A packet larger than the limit.
    #[error("Ogg packet larger than {0} bytes")]
    PacketTooLarge(usize),
}

/// One parsed page; `body` shares the parser's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Header type flags (`FLAG_CONTINUED`, `FLAG_BOS`, `FLAG_EOS`).
    pub flags: u8,
    /// Granule position (codec-defined; `NO_GRANULE` when no packet ends here).
    pub granule: u64,
    /// Logical stream serial number.
    pub serial: u32,
    /// Page sequence number within the logical stream.
    pub sequence: u32,
    /// Lacing values.
    pub lacing: Vec<u8>,
    /// The segments' bytes, back to back.
    pub body: Bytes,
}

impl Page {
    /// Whether this page begins a logical stream.
    pub fn is_bos(&self) -> bool {
        self.flags & FLAG_BOS != 0
    }

    /// Whether this page ends a logical stream.
    pub fn is_eos(&self) -> bool {
        self.flags & FLAG_EOS != 0
    }

    /// Whether the page starts with the rest of a packet begun on an earlier page.
    pub fn is_continued(&self) -> bool {
        self.flags & FLAG_CONTINUED != 0
    }
}

/// Takes one complete page off the front of `buf`; `None` until a whole page is there.
/// `buf` never needs to hold more than `MAX_PAGE_BYTES` for this to make progress.
///
/// # Errors
/// `NoCapturePattern` as soon as the first four bytes are not `OggS`, `Version`, `Crc`.
pub fn parse_page(buf: &mut BytesMut) -> Result<Option<Page>, OggError> {
    let start = &buf[..buf.len().min(4)];
    if start != &CAPTURE_PATTERN[..start.len()] {
        let mut got = [0u8; 4];
        got[..start.len()].copy_from_slice(start);
        return Err(OggError::NoCapturePattern(got));
    }
    if buf.len() < PAGE_HEADER_BYTES {
        return Ok(None);
    }
    if buf[4] != 0 {
        return Err(OggError::Version(buf[4]));
    }
    let segments = usize::from(buf[26]);
    let Some(lacing) = buf.get(PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + segments) else {
        return Ok(None);
    };
    let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
    let total = PAGE_HEADER_BYTES + segments + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let le32 = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let serial = le32(14);
    let sequence = le32(18);
    let expected = le32(22);
    let crc = crc32(crc32(crc32(0, &buf[..22]), &[0; 4]), &buf[26..total]);
    if crc != expected {
        return Err(OggError::Crc { serial, sequence });
    }
    let mut granule = [0u8; 8];
    granule.copy_from_slice(&buf[6..14]);
    let flags = buf[5];
    let lacing = lacing.to_vec();
    let mut page = buf.split_to(total);
    let body = page.split_off(PAGE_HEADER_BYTES + segments).freeze();
    Ok(Some(Page { flags, granule: u64::from_le_bytes(granule), serial, sequence, lacing, body }))
}

/// Reassembles one logical stream's packets from its pages, with a size limit.
#[derive(Debug)]
pub struct Packetizer {
    partial: Option<BytesMut>,
    max_packet_bytes: usize,
}

impl Packetizer {
    /// A packetizer that refuses packets larger than `max_packet_bytes`.
    pub fn new(max_packet_bytes: usize) -> Self {
        Self { partial: None, max_packet_bytes }
    }

    /// Appends the packets that complete on `page` to `out`. A packet within one page is a
    /// slice of the page (no copy). A continuation without its start (or a start without its
    /// continuation) is dropped, as a demuxer joining mid-stream would.
    ///
    /// # Errors
    /// `PacketTooLarge` when a packet grows past the limit.
    pub fn push(&mut self, page: &Page, out: &mut Vec<Bytes>) -> Result<(), OggError> {
        if !page.is_continued() {
            self.partial = None;
        }
        let mut offset = 0;
        let mut seg_start = 0;
        let mut continuing = page.is_continued();
        for &lace in &page.lacing {
            offset += usize::from(lace);
            if lace == 255 {
                continue;
            }
            let piece = page.body.slice(seg_start..offset);
            seg_start = offset;
            if continuing {
                continuing = false;
                if let Some(mut partial) = self.partial.take() {
                    check(self.max_packet_bytes, partial.len() + piece.len())?;
                    partial.extend_from_slice(&piece);
                    out.push(partial.freeze());
                }
                continue;
            }
            check(self.max_packet_bytes, piece.len())?;
            out.push(piece);
        }
        if seg_start < page.body.len() {
            // The last packet goes on in the next page.
            let piece = &page.body[seg_start..];
            match (&mut self.partial, continuing) {
                (Some(partial), true) => {
                    check(self.max_packet_bytes, partial.len() + piece.len())?;
                    partial.extend_from_slice(piece);
                }
                (None, true) => {}
                (partial, false) => {
                    check(self.max_packet_bytes, piece.len())?;
                    *partial = Some(BytesMut::from(piece));
                }
            }
        } else if continuing {
            // A page entirely inside a packet that continues on the next page.
            if let Some(partial) = &self.partial {
                check(self.max_packet_bytes, partial.len())?;
            }
        }
        Ok(())
    }
}

fn check(max: usize, len: usize) -> Result<(), OggError> {
    if len > max {
        return Err(OggError::PacketTooLarge(max));
    }
    Ok(())
}

/// One listener's logical stream: its serial number and page sequence.
#[derive(Debug, Clone)]
pub struct PageWriter {
    serial: u32,
    sequence: u32,
}

/// A page being filled by `PageWriter::write`.
struct OpenPage {
    flags: u8,
    granule: u64,
    lacing: [u8; MAX_SEGMENTS],
    segments: usize,
    parts: Vec<Bytes>,
}

impl PageWriter {
    /// A logical stream with this serial number; its first page has sequence 0.
    pub fn new(serial: u32) -> Self {
        Self { serial, sequence: 0 }
    }

    /// The logical stream's serial number.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Leaves out `pages` sequence numbers (pages written elsewhere with this serial).
    pub fn skip(&mut self, pages: usize) {
        self.sequence = self.sequence.wrapping_add(pages as u32);
    }

    /// Ends the logical stream: an empty EOS page at `granule` (the last one written).
    pub fn end(&mut self, granule: u64, scratch: &mut BytesMut, out: &mut Vec<Bytes>) {
        let mut page = OpenPage {
            flags: FLAG_EOS,
            granule,
            lacing: [0; MAX_SEGMENTS],
            segments: 0,
            parts: Vec::new(),
        };
        self.flush(&mut page, scratch, out);
    }

    /// Lays `packets` (each with the granule position after it) out as pages and appends
    /// them to `out`: each page's header is written into `scratch` and frozen, followed by
    /// slices of the packets. `flags` (e.g. `FLAG_BOS`) go on the first page, `FLAG_EOS` on the
    /// last when `eos`. With no packets and `eos`, writes an empty end-of-stream page.
    /// Returns how many pages were written.
    pub fn write(
        &mut self,
        packets: &[(Bytes, u64)],
        flags: u8,
        eos: bool,
        scratch: &mut BytesMut,
        out: &mut Vec<Bytes>,
    ) -> usize {
        let mut page = OpenPage {
            flags,
            granule: NO_GRANULE,
            lacing: [0; MAX_SEGMENTS],
            segments: 0,
            parts: Vec::new(),
        };
        let mut pages = 0;
        for (packet, granule) in packets {
            let mut offset = 0;
            loop {
                let rest = packet.len() - offset;
                let needed = rest / 255 + 1;
                let room = MAX_SEGMENTS - page.segments;
                if needed <= room {
                    page.lacing[page.segments..page.segments + needed - 1].fill(255);
                    page.lacing[page.segments + needed - 1] = (rest % 255) as u8;
                    page.segments += needed;
                    if rest > 0 {
                        page.parts.push(packet.slice(offset..));
                    }
                    page.granule = *granule;
                    break;
                }
                // Fill this page with whole 255-byte segments; the packet continues.
                let take = room * 255;
                page.lacing[page.segments..].fill(255);
                page.segments = MAX_SEGMENTS;
                if take > 0 {
                    page.parts.push(packet.slice(offset..offset + take));
                }
                offset += take;
                self.flush(&mut page, scratch, out);
                pages += 1;
                page.flags = FLAG_CONTINUED;
            }
        }
        if page.segments > 0 || eos {
            if eos {
                page.flags |= FLAG_EOS;
            }
            self.flush(&mut page, scratch, out);
            pages += 1;
        }
        pages
    }

    fn flush(&mut self, page: &mut OpenPage, scratch: &mut BytesMut, out: &mut Vec<Bytes>) {
        let head_len = PAGE_HEADER_BYTES + page.segments;
        if scratch.capacity() < head_len {
            // One allocation holds many page headers; frozen ones keep their part alive.
            scratch.reserve(head_len.max(4096));
        }
        scratch.put_slice(CAPTURE_PATTERN);
        scratch.put_u8(0);
        scratch.put_u8(page.flags);
        scratch.put_u64_le(page.granule);
        scratch.put_u32_le(self.serial);
        scratch.put_u32_le(self.sequence);
        scratch.put_u32_le(0);
        scratch.put_u8(page.segments as u8);
        scratch.put_slice(&page.lacing[..page.segments]);
        let mut crc = crc32(0, &scratch[..]);
        for part in &page.parts {
            crc = crc32(crc, part);
        }
        scratch[22..26].copy_from_slice(&crc.to_le_bytes());
        out.push(scratch.split().freeze());
        out.append(&mut page.parts);
        self.sequence = self.sequence.wrapping_add(1);
        page.segments = 0;
        page.granule = NO_GRANULE;
        page.flags = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(parts: &[Bytes]) -> BytesMut {
        let mut all = BytesMut::new();
        for part in parts {
            all.extend_from_slice(part);
        }
        all
    }

    fn pages(mut buf: BytesMut) -> Vec<Page> {
        let mut pages = Vec::new();
        while let Some(page) = parse_page(&mut buf).unwrap() {
            pages.push(page);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        pages
    }

    #[test]
    fn crc_matches_the_reference_check_value() {
        // CRC-32 with polynomial 0x04C11DB7, init 0, no reflection, no final xor.
        assert_eq!(crc32(0, b"123456789"), 0x89A1_897F);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0x89A1_897F);
    }

    #[test]
    fn a_real_ogg_file_parses_page_by_page() {
        let file = include_bytes!("../../samples/music.ogg");
        let mut buf = BytesMut::new();
        let mut packets = Packetizer::new(1 << 20);
        let (mut out, mut count) = (Vec::new(), 0);
        // Feed it in awkward pieces, as a socket would.
        for chunk in file.chunks(1000) {
            buf.extend_from_slice(chunk);
            while let Some(page) = parse_page(&mut buf).unwrap() {
                if count == 0 {
                    assert!(page.is_bos());
                }
                count += 1;
                packets.push(&page, &mut out).unwrap();
            }
        }
        assert!(buf.is_empty());
        assert!(count > 10, "{count} pages");
        assert_eq!(&out[0][1..7], b"vorbis", "identification header");
        assert_eq!(out[0][0], 1);
        assert_eq!(out[1][0], 3, "comment header");
        assert_eq!(out[2][0], 5, "setup header (it spans pages in this file)");
    }

    #[test]
    fn corrupt_bytes_are_refused() {
        let mut garbage = BytesMut::from(&b"ID3\x04garbage"[..]);
        assert!(matches!(parse_page(&mut garbage), Err(OggError::NoCapturePattern(_))));
        assert!(matches!(parse_page(&mut BytesMut::from(&b"Og"[..])), Ok(None)));
        assert!(parse_page(&mut BytesMut::from(&b"Ox"[..])).is_err());

        let mut scratch = BytesMut::new();
        let mut out = Vec::new();
        PageWriter::new(7).write(
            &[(Bytes::from_static(b"hello"), 5)],
            0,
            false,
            &mut scratch,
            &mut out,
        );
        let mut page = concat(&out);
        let last = page.len() - 1;
        page[last] ^= 1;
        assert_eq!(parse_page(&mut page), Err(OggError::Crc { serial: 7, sequence: 0 }));
    }

    #[test]
    fn written_pages_round_trip_with_lacing_and_spanning_packets() {
        let sizes = [0usize, 1, 254, 255, 256, 510, 1000, 200_000, 3];
        let packets: Vec<(Bytes, u64)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                (Bytes::from((0..n).map(|j| (i * 7 + j) as u8).collect::<Vec<_>>()), i as u64 * 960)
            })
            .collect();
        let mut writer = PageWriter::new(0x1234_5678);
        let (mut scratch, mut out) = (BytesMut::new(), Vec::new());
        let n = writer.write(&packets, FLAG_BOS, true, &mut scratch, &mut out);
        let parsed = pages(concat(&out));
        assert_eq!(parsed.len(), n);
        assert!(n >= 4, "the 200 kB packet spans pages");
        assert!(parsed[0].is_bos() && !parsed[0].is_continued());
        assert!(parsed[n - 1].is_eos());
        assert!(parsed[1].is_continued());
        for (i, page) in parsed.iter().enumerate() {
            assert_eq!((page.serial, page.sequence), (0x1234_5678, i as u32));
            assert!(page.lacing.len() <= MAX_SEGMENTS);
        }
        assert_eq!(parsed[n - 1].granule, 8 * 960, "granule of the last packet");
        let mut packetizer = Packetizer::new(1 << 20);
        let mut back = Vec::new();
        for page in &parsed {
            packetizer.push(page, &mut back).unwrap();
        }
        assert_eq!(back.len(), packets.len());
        for ((got, (want, _)), size) in back.iter().zip(&packets).zip(sizes) {
            assert_eq!(got, want, "packet of {size} bytes");
        }
        // A page in the middle of the big packet completes nothing: granule -1.
        assert!(parsed.iter().any(|p| p.granule == NO_GRANULE));
    }

    #[test]
    fn packet_limit_holds_across_pages() {
        let big = Bytes::from(vec![1u8; 200_000]);
        let (mut scratch, mut out) = (BytesMut::new(), Vec::new());
        PageWriter::new(1).write(&[(big, 0)], 0, false, &mut scratch, &mut out);
        let mut packetizer = Packetizer::new(100_000);
        let mut back = Vec::new();
        let result: Result<(), _> =
            pages(concat(&out)).iter().try_for_each(|p| packetizer.push(p, &mut back));
        assert_eq!(result, Err(OggError::PacketTooLarge(100_000)));
    }

    #[test]
    fn an_empty_eos_page_is_valid() {
        let (mut scratch, mut out) = (BytesMut::new(), Vec::new());
        let mut writer = PageWriter::new(9);
        writer.write(&[(Bytes::from_static(b"x"), 960)], FLAG_BOS, false, &mut scratch, &mut out);
        writer.write(&[], 0, true, &mut scratch, &mut out);
        let parsed = pages(concat(&out));
        assert_eq!(parsed.len(), 2);
        assert!(parsed[1].is_eos() && parsed[1].lacing.is_empty());
        assert_eq!(parsed[1].sequence, 1);
    }
}
