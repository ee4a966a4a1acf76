//! Bytes on the wire: the stamped payload, WebSocket frames, Ogg pages, MP3 frames, ICY
//! metadata, and the streaming parsers the listeners run over them with a few dozen bytes of
//! state each.

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

/// The first byte of every stamp: an Opus TOC byte (config 31: CELT fullband 20 ms, stereo,
/// one frame), so that a payload is also a well-formed 20 ms Opus packet for a relay that reads
/// packet durations (onair's Ogg demuxer does). The send time keeps the other 56 bits of its
/// 8 bytes: CLOCK_MONOTONIC fits in them for 2.28 years of uptime.
pub const OPUS_TOC: u8 = 0xFC;
const TIME_MASK: u64 = (1 << 56) - 1;

/// Writes the stamp (Opus TOC byte and send time, sequence number, magic) at the start of
/// `payload`; the rest is a fixed filler.
pub fn stamp(payload: &mut [u8], seq: u64, sent_ns: u64) {
    payload[..8].copy_from_slice(&(sent_ns & TIME_MASK).to_be_bytes());
    payload[0] = OPUS_TOC;
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
    let ns = u64::from_be_bytes(bytes[..8].try_into().ok()?) & TIME_MASK;
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

/// The header of every MP3 frame the sources send: MPEG-1 Layer III, 128 kbit/s, 48 kHz, no
/// CRC, no padding, joint stereo, "original".
pub const MP3_HEADER: [u8; 4] = [0xFF, 0xFB, 0x94, 0x44];
/// Bytes in such a frame (144 × 128 000 / 48 000); it lasts 1152 / 48 000 s = 24 ms.
pub const MP3_FRAME_BYTES: usize = 384;
/// Where the stamp sits in an MP3 frame: after the header and 32 bytes of side information,
/// all zero (no granule carries audio data: a decoder plays silence and the stamp is ancillary
/// data, so the frame is valid MP3).
pub const MP3_STAMP_AT: usize = 36;

/// An MP3 frame template: `MP3_HEADER`, zero side information, a filler; `stamp` its bytes
/// from `MP3_STAMP_AT` on.
pub fn mp3_frame() -> Vec<u8> {
    let mut frame = payload(MP3_FRAME_BYTES);
    frame[..4].copy_from_slice(&MP3_HEADER);
    frame[4..MP3_STAMP_AT].fill(0);
    frame
}

/// Length of an MPEG audio frame from its 4-byte header (any version and layer; not
/// free-format): the relay's own header parser.
pub fn mp3_frame_len(h: &[u8]) -> Option<usize> {
    onair::format::mp3::parse_header(h).map(|frame| frame.len)
}

/// Takes the ICY metadata blocks out of a listener's byte stream, as a player does:
/// `icy-metaint` bytes of audio, a length byte, 16 × length bytes of metadata, and again.
#[derive(Debug, Clone, Copy)]
pub struct IcyStrip {
    metaint: u32,
    audio_left: u32,
    meta_left: u16,
}

impl IcyStrip {
    /// A stripper for the `icy-metaint` of the response head.
    pub fn new(metaint: u32) -> Self {
        Self { metaint, audio_left: metaint, meta_left: 0 }
    }

    /// Passes the audio bytes of `data` to `audio`, in order, and returns how many non-empty
    /// metadata blocks (titles) began in it.
    ///
    /// # Errors
    /// The first error of `audio`.
    pub fn strip(
        &mut self,
        mut data: &[u8],
        audio: &mut impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<u32, String> {
        let mut titles = 0;
        while !data.is_empty() {
            if self.meta_left > 0 {
                let k = usize::from(self.meta_left).min(data.len());
                data = &data[k..];
                self.meta_left -= k as u16;
                if self.meta_left == 0 {
                    self.audio_left = self.metaint;
                }
            } else if self.audio_left == 0 {
                let len = u16::from(data[0]) * 16;
                data = &data[1..];
                if len > 0 {
                    titles += 1;
                    self.meta_left = len;
                } else {
                    self.audio_left = self.metaint;
                }
            } else {
                let k = (self.audio_left as usize).min(data.len());
                audio(&data[..k])?;
                data = &data[k..];
                self.audio_left -= k as u32;
            }
        }
        Ok(titles)
    }
}

/// The container a parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// onair's WebSocket frames.
    Ws,
    /// Ogg pages, one stamped packet per page.
    Ogg,
    /// MP3 frames, the stamp at `MP3_STAMP_AT`.
    Mp3,
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

/// Bytes of a message's start kept to decode it (an MP3 frame's stamp ends at body byte 52).
const STASH: usize = 56;

/// A streaming parser over server→client WebSocket frames (onair), Ogg pages or MP3 frames
/// (HTTP listeners). It keeps only the first bytes of each message: about 90 bytes per
/// connection.
#[derive(Debug)]
pub struct Parser {
    format: Format,
    /// Header bytes gathered so far (WebSocket: up to 10, Ogg: 27, MP3: 4).
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
    /// MP3: frames found in a row since the parser last looked for a frame sync.
    mp3_run: u8,
}

impl Parser {
    /// A parser for this container.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            head: [0; 27],
            head_len: 0,
            lacing_left: 0,
            opcode: 0,
            body_left: 0,
            stash: [0; STASH],
            stash_len: 0,
            in_body: false,
            mp3_run: 0,
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
            data = match self.format {
                Format::Ws => self.ws_head(data)?,
                Format::Ogg => self.ogg_head(data)?,
                Format::Mp3 => self.mp3_head(data)?,
            };
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

    fn mp3_head<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], String> {
        let mut data = data;
        while self.head_len < 4 {
            let Some((&b, rest)) = data.split_first() else { return Ok(data) };
            self.head[usize::from(self.head_len)] = b;
            self.head_len += 1;
            data = rest;
        }
        let Some(len) = mp3_frame_len(&self.head[..4]).filter(|&len| len > 4) else {
            // A listener may join anywhere in an MP3 stream (Icecast's burst does not start
            // at a frame): a player looks for a frame sync, and so does this parser until two
            // frames in a row have been found. After that, a frame that is not where the
            // last one ended is a stream that lost bytes.
            if self.mp3_run >= 2 {
                return Err(format!("lost MP3 frame sync at {:02x?}", &self.head[..4]));
            }
            self.mp3_run = 0;
            self.head.copy_within(1..4, 0);
            self.head_len = 3;
            return Ok(data);
        };
        self.mp3_run = self.mp3_run.saturating_add(1);
        self.opcode = 0xFE;
        self.start_body(len as u64 - 4);
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
            // MP3 frame: the stamp after the side information.
            0xFE => {
                if let Some((seq, sent_ns)) = stash.get(MP3_STAMP_AT - 4..).and_then(read_stamp) {
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
            let events = collect(&mut Parser::new(Format::Ws), &wire, step);
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
            let events = collect(&mut Parser::new(Format::Ogg), &wire, step);
            let want: Vec<_> = (0..3).map(|s| Event::Frame { seq: s, sent_ns: s * 10 }).collect();
            assert_eq!(events, want, "step {step}");
        }
    }

    /// MP3 frames (with an ID3-free start), split at every size; our frame header agrees
    /// with the frame length tables.
    pub fn mp3_frames_parse_in_any_split() {
        assert_eq!(mp3_frame_len(&MP3_HEADER), Some(MP3_FRAME_BYTES));
        assert_eq!(mp3_frame_len(&[0xFF, 0xFB, 0x90, 0x44]), Some(417), "128k 44.1 kHz");
        assert_eq!(mp3_frame_len(&[0xFF, 0xFB, 0x92, 0x44]), Some(418), "padded");
        assert_eq!(mp3_frame_len(&[0xFF, 0xF3, 0x84, 0xC4]), Some(192), "MPEG-2 64k 24 kHz");
        let mut wire = Vec::new();
        for seq in 0..4 {
            let mut frame = mp3_frame();
            stamp(&mut frame[MP3_STAMP_AT..], seq, seq * 10 + 1);
            wire.extend(frame);
        }
        for step in [1, 5, 383, 384, 4096] {
            let events = collect(&mut Parser::new(Format::Mp3), &wire, step);
            let want: Vec<_> =
                (0..4).map(|s| Event::Frame { seq: s, sent_ns: s * 10 + 1 }).collect();
            assert_eq!(events, want, "step {step}");
        }
    }

    /// ICY blocks (empty and not) are taken out before parsing, at every split.
    pub fn icy_blocks_are_stripped_in_any_split() {
        let mut audio = Vec::new();
        for seq in 0..6 {
            let mut frame = mp3_frame();
            stamp(&mut frame[MP3_STAMP_AT..], seq, 5);
            audio.extend(frame);
        }
        let metaint = 500;
        let title = b"StreamTitle='a';";
        let mut wire = Vec::new();
        for (i, chunk) in audio.chunks(metaint).enumerate() {
            wire.extend_from_slice(chunk);
            if chunk.len() == metaint {
                if i % 2 == 0 {
                    wire.push(1);
                    wire.extend_from_slice(title);
                } else {
                    wire.push(0);
                }
            }
        }
        for step in [1, 17, 500, 501, 1 << 20] {
            let mut icy = IcyStrip::new(metaint as u32);
            let mut parser = Parser::new(Format::Mp3);
            let (mut events, mut titles) = (Vec::new(), 0);
            for chunk in wire.chunks(step) {
                titles += icy
                    .strip(chunk, &mut |a| parser.feed(a, &mut |e| events.push(e)))
                    .expect("valid stream");
            }
            let want: Vec<_> = (0..6).map(|s| Event::Frame { seq: s, sent_ns: 5 }).collect();
            assert_eq!(events, want, "step {step}");
            assert_eq!(titles, 2, "step {step}");
        }
    }

    /// An MP3 listener that joins mid-frame (Icecast's burst) finds the next frame sync, as a
    /// player does; once in sync, a frame that is not where the last one ended is an error.
    pub fn mp3_joined_mid_frame_finds_its_sync() {
        let mut audio = Vec::new();
        for seq in 0..5 {
            let mut frame = mp3_frame();
            stamp(&mut frame[MP3_STAMP_AT..], seq, 5);
            audio.extend(frame);
        }
        for step in [1, 7, 1 << 20] {
            let mut parser = Parser::new(Format::Mp3);
            let mut events = Vec::new();
            for chunk in audio[100..].chunks(step) {
                parser.feed(chunk, &mut |e| events.push(e)).expect("resynchronised");
            }
            let want: Vec<_> = (1..5).map(|s| Event::Frame { seq: s, sent_ns: 5 }).collect();
            assert_eq!(events, want, "step {step}");
        }
        let mut cut = audio.clone();
        cut.remove(MP3_FRAME_BYTES * 3 + 10);
        let mut parser = Parser::new(Format::Mp3);
        assert!(parser.feed(&cut, &mut |_| {}).is_err(), "a byte lost after the sync");
    }

    /// RFC 4648 vectors.
    pub fn base64_matches_rfc4648() {
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
