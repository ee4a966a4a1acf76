//! Bytes on the wire: the stamped payload, WebSocket frames, Ogg pages, and the streaming
//! parsers the listeners run over them with a few dozen bytes of state each.

/// Marks a payload as ours (header frames, Ogg headers and JSON events do not carry it).
pub const MAGIC: [u8; 4] = *b"oNaB";
/// Bytes of the payload the parsers need: send time, sequence number, magic.
pub const STAMP_BYTES: usize = 20;

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Writes the stamp (send time, sequence number, magic) at the start of `payload`; the rest
/// is a fixed filler.
pub fn stamp(payload: &mut [u8], seq: u64, sent_ns: u64) {
    payload[..8].copy_from_slice(&sent_ns.to_be_bytes());
    payload[8..16].copy_from_slice(&seq.to_be_bytes());
    payload[16..20].copy_from_slice(&MAGIC);
}

/// A payload of `len` bytes (at least `STAMP_BYTES`) with a filler after the stamp.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len.max(STAMP_BYTES)).map(|i| (i * 7 + 3) as u8).collect()
}

/// Reads a stamp: (sequence number, send time), if the bytes carry our magic.
pub fn read_stamp(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() < STAMP_BYTES || bytes[16..20] != MAGIC {
        return None;
    }
    let ns = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let seq = u64::from_be_bytes(bytes[8..16].try_into().ok()?);
    Some((seq, ns))
}

/// A masked client→server WebSocket frame (mask key 0: the bytes stay as they are).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

/// Base64 (standard alphabet, padded).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn ogg_crc(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (i, entry) in table.iter_mut().enumerate() {
            let mut r = (i as u32) << 24;
            for _ in 0..8 {
                r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04C1_1DB7 } else { r << 1 };
            }
            *entry = r;
        }
        table
    });
    data.iter().fold(0u32, |crc, &b| (crc << 8) ^ table[((crc >> 24) as u8 ^ b) as usize])
}

/// Writes Ogg pages of one logical stream, one packet per page.
pub struct OggWriter {
    serial: u32,
    page_seq: u32,
}

impl OggWriter {
    /// A writer for a stream with this serial number.
    pub fn new(serial: u32) -> Self {
        Self { serial, page_seq: 0 }
    }

    /// One page holding exactly one packet (at most 65 025 bytes).
    pub fn page(&mut self, packet: &[u8], granule: u64, bos: bool) -> Vec<u8> {
        assert!(packet.len() < 255 * 255, "one packet per page");
        let mut lacing = vec![255u8; packet.len() / 255];
        lacing.push((packet.len() % 255) as u8);
        let mut page = Vec::with_capacity(27 + lacing.len() + packet.len());
        page.extend_from_slice(b"OggS");
        page.push(0);
        page.push(if bos { 0x02 } else { 0 });
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.page_seq.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(lacing.len() as u8);
        page.extend_from_slice(&lacing);
        page.extend_from_slice(packet);
        let crc = ogg_crc(&page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.page_seq += 1;
        page
    }
}

/// The OpusHead identification packet (stereo, 48 kHz).
pub fn opus_head() -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(2);
    head.extend_from_slice(&312u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

/// The OpusTags comment packet.
pub fn opus_tags() -> Vec<u8> {
    let vendor = b"onair-load";
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes());
    tags
}

/// What a parser found in the bytes it was fed.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// One of our stamped frames.
    Frame {
        /// Sequence number.
        seq: u64,
        /// Send time (CLOCK_MONOTONIC ns).
        sent_ns: u64,
    },
    /// onair said this listener skipped frames.
    Skipped(u64),
    /// The server pinged: answer with a pong.
    Ping,
    /// The server closed the WebSocket with this code.
    Close(u16),
}

/// Bytes of a message's start kept to decode it.
const STASH: usize = 40;

/// A streaming parser over server→client WebSocket frames (onair) or Ogg pages (Icecast).
/// It keeps only the first bytes of each message: about 60 bytes per connection.
#[derive(Debug)]
pub struct Parser {
    ogg: bool,
    /// Header bytes gathered so far (WebSocket: up to 10, Ogg: 27).
    head: [u8; 27],
    head_len: u8,
    /// Ogg: lacing values still to read.
    lacing_left: u8,
    /// WebSocket opcode of the current message.
    opcode: u8,
    /// Payload bytes still to come in the current message.
    body_left: u64,
    stash: [u8; STASH],
    stash_len: u8,
    in_body: bool,
}

impl Parser {
    /// A parser for WebSocket frames, or Ogg pages when `ogg`.
    pub fn new(ogg: bool) -> Self {
        Self {
            ogg,
            head: [0; 27],
            head_len: 0,
            lacing_left: 0,
            opcode: 0,
            body_left: 0,
            stash: [0; STASH],
            stash_len: 0,
            in_body: false,
        }
    }

    /// Consumes `data`, calling `on` for each event.
    ///
    /// # Errors
    /// A description of the first byte sequence that is not what the server should send.
    pub fn feed(&mut self, mut data: &[u8], on: &mut impl FnMut(Event)) -> Result<(), String> {
        loop {
            if self.in_body {
                if self.body_left == 0 {
                    self.finish_message(on);
                    continue;
                }
                if data.is_empty() {
                    return Ok(());
                }
                let take = (self.body_left.min(data.len() as u64)) as usize;
                let at = usize::from(self.stash_len);
                let keep = take.min(STASH - at);
                self.stash[at..at + keep].copy_from_slice(&data[..keep]);
                self.stash_len += keep as u8;
                self.body_left -= take as u64;
                data = &data[take..];
                continue;
            }
            if data.is_empty() {
                return Ok(());
            }
            data = if self.ogg { self.ogg_head(data)? } else { self.ws_head(data)? };
        }
    }

    fn start_body(&mut self, len: u64) {
        self.head_len = 0;
        self.stash_len = 0;
        self.body_left = len;
        self.in_body = true;
    }

    fn ws_head<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], String> {
        let need = |head: &[u8], len: usize| -> usize {
            if len < 2 {
                return 2;
            }
            match head[1] & 0x7F {
                126 => 4,
                127 => 10,
                _ => 2,
            }
        };
        let mut data = data;
        loop {
            let len = usize::from(self.head_len);
            let want = need(&self.head, len);
            if len >= want {
                break;
            }
            let Some((&b, rest)) = data.split_first() else { return Ok(data) };
            self.head[len] = b;
            self.head_len += 1;
            data = rest;
        }
        if self.head[1] & 0x80 != 0 {
            return Err("server frame is masked".into());
        }
        let body = match self.head[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().map_err(|_| "len")?),
            n => u64::from(n),
        };
        self.opcode = self.head[0] & 0x0F;
        self.start_body(body);
        Ok(data)
    }

    fn ogg_head<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], String> {
        let mut data = data;
        while usize::from(self.head_len) < 27 {
            let Some((&b, rest)) = data.split_first() else { return Ok(data) };
            self.head[usize::from(self.head_len)] = b;
            self.head_len += 1;
            data = rest;
            if self.head_len == 27 {
                if &self.head[..4] != b"OggS" {
                    return Err("lost Ogg page sync".into());
                }
                self.lacing_left = self.head[26];
                self.body_left = 0;
                self.opcode = 0xFF;
            }
        }
        while self.lacing_left > 0 {
            let Some((&b, rest)) = data.split_first() else { return Ok(data) };
            self.body_left += u64::from(b);
            self.lacing_left -= 1;
            data = rest;
        }
        self.start_body(self.body_left);
        Ok(data)
    }

    fn finish_message(&mut self, on: &mut impl FnMut(Event)) {
        self.in_body = false;
        let stash = &self.stash[..usize::from(self.stash_len)];
        match self.opcode {
            // Ogg page: the packet is our payload.
            0xFF => {
                if let Some((seq, sent_ns)) = read_stamp(stash) {
                    on(Event::Frame { seq, sent_ns });
                }
            }
            // Binary: onair's 10-byte frame header, then the payload.
            0x2 => {
                if let Some((seq, sent_ns)) = stash.get(10..).and_then(read_stamp) {
                    on(Event::Frame { seq, sent_ns });
                }
            }
            0x1 => {
                const SKIPPED: &[u8] = br#"{"type":"skipped","frames":"#;
                if let Some(rest) = stash.strip_prefix(SKIPPED) {
                    let digits: Vec<u8> =
                        rest.iter().copied().take_while(u8::is_ascii_digit).collect();
                    let n = std::str::from_utf8(&digits).ok().and_then(|s| s.parse().ok());
                    on(Event::Skipped(n.unwrap_or(1)));
                }
            }
            0x8 => {
                let code =
                    if stash.len() >= 2 { u16::from_be_bytes([stash[0], stash[1]]) } else { 1005 };
                on(Event::Close(code));
            }
            0x9 => on(Event::Ping),
            _ => {}
        }
    }
}

/// Checks the parsers against the writers; run before every comparison.
pub mod selftest {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = client_frame(opcode, payload);
        out[1] &= 0x7F;
        let at = out.len() - payload.len() - 4;
        out.drain(at..at + 4);
        out
    }

    fn collect(parser: &mut Parser, bytes: &[u8], step: usize) -> Vec<Event> {
        let mut events = Vec::new();
        for chunk in bytes.chunks(step) {
            parser.feed(chunk, &mut |e| events.push(e)).expect("valid stream");
        }
        events
    }

    /// WebSocket frames, split at every size.
    pub fn websocket_frames_parse_in_any_split() {
        let mut p = payload(320);
        stamp(&mut p, 7, 1234);
        let mut message = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        message.extend_from_slice(&p);
        let mut wire = server_frame(1, br#"{"type":"hello"}"#);
        wire.extend(server_frame(2, &message));
        wire.extend(server_frame(9, b""));
        wire.extend(server_frame(1, br#"{"type":"skipped","frames":24}"#));
        let mut big = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut p2 = payload(70_000);
        stamp(&mut p2, 8, 99);
        big.extend_from_slice(&p2);
        wire.extend(server_frame(2, &big));
        wire.extend(server_frame(8, &4008u16.to_be_bytes()));
        for step in [1, 3, 1000, 1 << 20] {
            let events = collect(&mut Parser::new(false), &wire, step);
            assert_eq!(
                events,
                vec![
                    Event::Frame { seq: 7, sent_ns: 1234 },
                    Event::Ping,
                    Event::Skipped(24),
                    Event::Frame { seq: 8, sent_ns: 99 },
                    Event::Close(4008)
                ],
                "step {step}"
            );
        }
    }

    /// Ogg pages, split at every size.
    pub fn ogg_pages_parse_in_any_split() {
        let mut w = OggWriter::new(5);
        let mut wire = w.page(&opus_head(), 0, true);
        wire.extend(w.page(&opus_tags(), 0, false));
        for seq in 0..3 {
            let mut p = payload(if seq == 1 { 20_000 } else { 320 });
            stamp(&mut p, seq, seq * 10);
            wire.extend(w.page(&p, 960 * (seq + 1), false));
        }
        for step in [1, 7, 4096] {
            let events = collect(&mut Parser::new(true), &wire, step);
            let want: Vec<_> = (0..3).map(|s| Event::Frame { seq: s, sent_ns: s * 10 }).collect();
            assert_eq!(events, want, "step {step}");
        }
    }

    /// RFC 4648 vectors.
    pub fn base64_matches_rfc4648() {
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
