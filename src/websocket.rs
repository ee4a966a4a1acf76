//! The lean WebSocket path for listeners, who mostly receive.
//!
//! A server→client frame header is unmasked, so it is the same for every listener: `WireFrame`
//! carries that header inline beside the shared payload, framed once per frame at ingest and
//! written to each listener with one vectored write. `ClientReader` parses what a listener may
//! send (pings, pongs, close, small messages) with a hard size limit. Sources use tungstenite.

use bytes::{Buf, Bytes, BytesMut};

/// Opcode of a text message.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary message.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;
const OP_CONTINUATION: u8 = 0x0;
/// Largest server→client frame header: 2 bytes + 8-byte length.
const MAX_HEAD_BYTES: usize = 10;
/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_BYTES: usize = 125;

/// One complete server→client frame: an inline header and a shared payload.
#[derive(Clone, Debug)]
pub struct WireFrame {
    head: [u8; MAX_HEAD_BYTES],
    head_len: u8,
    payload: Bytes,
}

impl WireFrame {
    /// A final, unmasked frame with this opcode around `payload`.
    pub fn new(opcode: u8, payload: Bytes) -> Self {
        let mut head = [0u8; MAX_HEAD_BYTES];
        head[0] = 0x80 | opcode;
        let len = payload.len();
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if len <= usize::from(u16::MAX) {
            head[1] = 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self { head, head_len, payload }
    }

    /// A binary message.
    pub fn binary(payload: Bytes) -> Self {
        Self::new(OP_BINARY, payload)
    }

    /// A text message; `text` must be UTF-8 (it comes from `String`).
    pub fn text(text: String) -> Self {
        Self::new(OP_TEXT, Bytes::from(text))
    }

    /// A close frame with a code and a reason (cut to fit a control frame).
    pub fn close(code: u16, reason: &str) -> Self {
        let mut body = Vec::with_capacity(2 + reason.len());
        body.extend_from_slice(&code.to_be_bytes());
        body.extend_from_slice(crate::protocol::truncate(reason, MAX_CONTROL_BYTES - 2).as_bytes());
        Self::new(OP_CLOSE, Bytes::from(body))
    }

    /// Whether this is a binary (media) frame.
    pub fn is_binary(&self) -> bool {
        self.head[0] & 0x0F == OP_BINARY
    }

    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(&self) -> bool {
        self.head[0] & 0x08 != 0
    }

    /// The frame header bytes.
    pub fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    /// The payload, shared with every other holder of this frame.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Header plus payload length.
    pub fn wire_len(&self) -> usize {
        usize::from(self.head_len) + self.payload.len()
    }

    /// The frame as one contiguous buffer (tests and rare paths only: it copies).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        out.extend_from_slice(self.head());
        out.extend_from_slice(&self.payload);
        out
    }
}

/// What a listener sent.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A ping; answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong (or any other sign of life).
    Pong,
    /// A complete data message, discarded (a reader made with `new`).
    Message,
    /// A complete data message with its payload (a reader made with `keeping_messages`).
    Data {
        /// Text (valid UTF-8) or binary.
        text: bool,
        /// The reassembled payload.
        payload: Bytes,
    },
    /// The peer closes, with its code if it gave one.
    Close(Option<u16>),
}

/// Why a listener's bytes are not acceptable; each maps to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// RFC 6455 violation (unmasked frame, bad opcode, fragmented control frame...).
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A message or frame larger than the limit.
    #[error("message larger than {0} bytes")]
    TooBig(usize),
    /// A text message or close reason that is not UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
}

/// Incremental parser of client→server frames over a caller-fed buffer.
#[derive(Debug)]
pub struct ClientReader {
    buf: BytesMut,
    max_message_bytes: usize,
    /// Bytes of the data message being assembled.
    message_bytes: Option<usize>,
    /// Keep data payloads (echo) instead of only counting them (listeners).
    keep: bool,
    message: BytesMut,
    message_is_text: bool,
}

impl ClientReader {
    /// A reader that refuses messages larger than `max_message_bytes`; `leftover` are bytes
    /// that arrived with the HTTP request head.
    pub fn new(max_message_bytes: usize, leftover: &[u8]) -> Self {
        // No allocation until the peer sends something: thousands of listeners send nothing
        // but a pong now and then.
        let buf = BytesMut::from(leftover);
        Self {
            buf,
            max_message_bytes,
            message_bytes: None,
            keep: false,
            message: BytesMut::new(),
            message_is_text: false,
        }
    }

    /// A reader that returns each data message's payload (`ClientEvent::Data`).
    pub fn keeping_messages(max_message_bytes: usize, leftover: &[u8]) -> Self {
        Self { keep: true, ..Self::new(max_message_bytes, leftover) }
    }

    /// Whether it holds nothing: no partial frame, no message being assembled.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.message_bytes.is_none()
    }

    /// Frees the buffer when it holds no partial frame (call after draining events).
    pub fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Space to read socket bytes into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < 128 {
            self.buf.reserve(256);
        }
        &mut self.buf
    }

    /// The next complete event in the buffer, if any.
    ///
    /// # Errors
    /// A `ClientError` when the peer broke the protocol or a limit; close the connection.
    pub fn next_event(&mut self) -> Result<Option<ClientEvent>, ClientError> {
        loop {
            let Some((fin, opcode, payload)) = self.take_frame()? else { return Ok(None) };
            match opcode {
                OP_PING => return Ok(Some(ClientEvent::Ping(payload))),
                OP_PONG => return Ok(Some(ClientEvent::Pong)),
                OP_CLOSE => return close_event(&payload).map(Some),
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                    let so_far = match (opcode, self.message_bytes) {
                        (OP_CONTINUATION, Some(n)) => n,
                        (OP_CONTINUATION, None) => {
                            return Err(ClientError::Protocol("continuation without a message"))
                        }
                        (_, Some(_)) => {
                            return Err(ClientError::Protocol(
                                "new message inside a fragmented one",
                            ))
                        }
                        (_, None) => 0,
                    };
                    let total = so_far + payload.len();
                    if total > self.max_message_bytes {
                        return Err(ClientError::TooBig(self.max_message_bytes));
                    }
                    if self.keep {
                        if opcode != OP_CONTINUATION {
                            self.message_is_text = opcode == OP_TEXT;
                        }
                        self.message.extend_from_slice(&payload);
                    }
                    if !fin {
                        self.message_bytes = Some(total);
                        continue;
                    }
                    self.message_bytes = None;
                    if !self.keep {
                        return Ok(Some(ClientEvent::Message));
                    }
                    let payload = self.message.split().freeze();
                    if self.message_is_text && std::str::from_utf8(&payload).is_err() {
                        return Err(ClientError::InvalidUtf8);
                    }
                    return Ok(Some(ClientEvent::Data { text: self.message_is_text, payload }));
                }
                _ => return Err(ClientError::Protocol("reserved opcode")),
            }
        }
    }

    /// Removes one whole frame from the buffer and unmasks it.
    fn take_frame(&mut self) -> Result<Option<(bool, u8, Bytes)>, ClientError> {
        let buf = &self.buf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        if b0 & 0x70 != 0 {
            return Err(ClientError::Protocol("reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(ClientError::Protocol("client frame not masked"));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        let (len, len_bytes) = match b1 & 0x7F {
            126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 2),
            127 if buf.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(n), 8)
            }
            126 | 127 => return Ok(None),
            n => (u64::from(n), 0),
        };
        if opcode >= OP_CLOSE && (!fin || len > MAX_CONTROL_BYTES as u64) {
            return Err(ClientError::Protocol("fragmented or oversized control frame"));
        }
        // The limit applies before buffering, so a peer cannot make us hold a huge frame.
        if len > self.max_message_bytes as u64 {
            return Err(ClientError::TooBig(self.max_message_bytes));
        }
        let len = len as usize;
        let start = 2 + len_bytes + 4;
        if buf.len() < start + len {
            return Ok(None);
        }
        let mask = [buf[start - 4], buf[start - 3], buf[start - 2], buf[start - 1]];
        self.buf.advance(start);
        let mut payload = self.buf.split_to(len);
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        Ok(Some((fin, opcode, payload.freeze())))
    }
}

/// A close frame's payload: an optional valid code, then a UTF-8 reason (RFC 6455 §7.4).
fn close_event(payload: &[u8]) -> Result<ClientEvent, ClientError> {
    match payload {
        [] => Ok(ClientEvent::Close(None)),
        [_] => Err(ClientError::Protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            // RFC 6455 §7.4: the codes a peer may send (1004-1006 and 1015 are reserved).
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(ClientError::Protocol("invalid close code"));
            }
            std::str::from_utf8(reason).map_err(|_| ClientError::InvalidUtf8)?;
            Ok(ClientEvent::Close(Some(code)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn server_frames_use_the_shortest_length_encoding() {
        assert_eq!(WireFrame::binary(Bytes::from_static(b"abc")).head(), &[0x82, 3]);
        assert_eq!(WireFrame::binary(Bytes::from(vec![0; 300])).head(), &[0x82, 126, 1, 44]);
        let big = WireFrame::binary(Bytes::from(vec![0; 70_000]));
        assert_eq!(big.head(), &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(big.wire_len(), 70_010);
        assert_eq!(WireFrame::close(4008, "too slow").to_vec(), b"\x88\x0a\x0f\xa8too slow");
    }

    #[test]
    fn client_frames_parse_across_partial_reads() {
        let mut reader = ClientReader::new(4096, &[]);
        let mut wire = masked(true, OP_PING, b"hi");
        wire.extend(masked(false, OP_TEXT, b"hello "));
        wire.extend(masked(true, OP_PONG, b""));
        wire.extend(masked(true, OP_CONTINUATION, b"world"));
        wire.extend(masked(true, OP_CLOSE, &crate::protocol::close::NORMAL.to_be_bytes()));
        let mut events = Vec::new();
        for byte in wire {
            reader.buffer().extend_from_slice(&[byte]);
            while let Some(event) = reader.next_event().unwrap() {
                events.push(event);
            }
        }
        assert_eq!(
            events,
            vec![
                ClientEvent::Ping(Bytes::from_static(b"hi")),
                ClientEvent::Pong,
                ClientEvent::Message,
                ClientEvent::Close(Some(crate::protocol::close::NORMAL))
            ]
        );
    }

    #[test]
    fn bad_client_frames_are_refused() {
        let unmasked = [0x81, 0x01, b'x'];
        let mut reader = ClientReader::new(4096, &unmasked);
        assert_eq!(reader.next_event(), Err(ClientError::Protocol("client frame not masked")));

        let mut reader = ClientReader::new(100, &masked(true, OP_BINARY, &[0; 200]));
        assert_eq!(reader.next_event(), Err(ClientError::TooBig(100)));

        let mut two_halves = masked(false, OP_BINARY, &[0; 80]);
        two_halves.extend(masked(true, OP_CONTINUATION, &[0; 80]));
        let mut reader = ClientReader::new(100, &two_halves);
        assert_eq!(reader.next_event(), Err(ClientError::TooBig(100)));

        let mut reader = ClientReader::new(4096, &masked(false, OP_PING, b""));
        assert!(matches!(reader.next_event(), Err(ClientError::Protocol(_))));
        let mut reader = ClientReader::new(4096, &masked(true, 0x3, b""));
        assert_eq!(reader.next_event(), Err(ClientError::Protocol("reserved opcode")));
    }
}
