//! ICY (SHOUTcast/Icecast) in-band metadata: a block after every `metaint` bytes of audio.
//!
//! A block is one length byte (in units of 16) followed by `StreamTitle='...';` padded with
//! zeros; an unchanged title is sent as a single zero byte. HTTP listeners that asked with
//! `Icy-MetaData: 1` pass their audio through an `IcyInterleaver`; payloads are sliced, never
//! copied.

use bytes::{BufMut, Bytes, BytesMut};

/// Audio bytes between two metadata blocks, as Icecast uses by default.
pub const DEFAULT_METAINT: usize = 16_000;
/// Largest metadata block body: the length byte counts 16-byte units.
pub const MAX_BLOCK_BYTES: usize = 255 * 16;

/// A metadata block for this title (and URL): length byte, text, zero padding.
pub fn metadata_block(title: &str, url: Option<&str>) -> Bytes {
    // A quote inside the title would end StreamTitle early for most parsers.
    let clean = |s: &str| s.replace('\'', "\u{2019}").replace(['\r', '\n', '\0'], " ");
    let mut text = String::from("StreamTitle='");
    let room = MAX_BLOCK_BYTES - "StreamTitle='';".len();
    text.push_str(crate::protocol::truncate(&clean(title), room));
    text.push_str("';");
    if let Some(url) = url {
        let url = format!("StreamUrl='{}';", clean(url));
        if text.len() + url.len() <= MAX_BLOCK_BYTES {
            text.push_str(&url);
        }
    }
    let units = text.len().div_ceil(16);
    let mut block = BytesMut::with_capacity(1 + units * 16);
    block.put_u8(units as u8);
    block.put_slice(text.as_bytes());
    block.resize(1 + units * 16, 0);
    block.freeze()
}

/// Inserts metadata blocks into an audio byte stream every `metaint` bytes.
#[derive(Debug)]
pub struct IcyInterleaver {
    metaint: usize,
    until_block: usize,
    pending: Option<Bytes>,
}

/// The single zero byte of an empty block.
static EMPTY_BLOCK: [u8; 1] = [0];

impl IcyInterleaver {
    /// An interleaver with this interval; the first block comes after `metaint` bytes.
    pub fn new(metaint: usize) -> Self {
        Self { metaint: metaint.max(1), until_block: metaint.max(1), pending: None }
    }

    /// Sets the block to send at the next boundary (replacing one not yet sent).
    pub fn set_block(&mut self, block: Bytes) {
        self.pending = Some(block);
    }

    /// Gives `data` to `emit` in pieces, with a block between two where one goes.
    pub fn push(&mut self, mut data: Bytes, mut emit: impl FnMut(Bytes)) {
        while data.len() >= self.until_block {
            emit(data.split_to(self.until_block));
            emit(self.pending.take().unwrap_or_else(|| Bytes::from_static(&EMPTY_BLOCK)));
            self.until_block = self.metaint;
        }
        if !data.is_empty() {
            self.until_block -= data.len();
            emit(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits an ICY stream back into audio and the metadata texts, as a player does.
    fn unweave(stream: &[u8], metaint: usize) -> (Vec<u8>, Vec<String>) {
        let (mut audio, mut titles, mut at) = (Vec::new(), Vec::new(), 0);
        while at < stream.len() {
            let n = metaint.min(stream.len() - at);
            audio.extend_from_slice(&stream[at..at + n]);
            at += n;
            if at >= stream.len() {
                break;
            }
            let len = usize::from(stream[at]) * 16;
            let text = &stream[at + 1..at + 1 + len];
            if len > 0 {
                titles.push(
                    String::from_utf8(text.to_vec()).unwrap().trim_end_matches('\0').to_owned(),
                );
            }
            at += 1 + len;
        }
        (audio, titles)
    }

    #[test]
    fn blocks_are_padded_to_16_bytes() {
        let block = metadata_block("Band - Song", None);
        assert_eq!(block[0], 2);
        assert_eq!(block.len(), 33);
        assert_eq!(&block[1..27], b"StreamTitle='Band - Song';");
        assert!(block[27..].iter().all(|&b| b == 0));
        let long = metadata_block(&"x".repeat(10_000), Some("http://u"));
        assert_eq!(long.len(), 1 + MAX_BLOCK_BYTES);
        assert!(long.ends_with(b"';"), "cut inside the quotes, not through them");
        let quoted = metadata_block("it's", None);
        assert_eq!(&quoted[1..22], "StreamTitle='it\u{2019}s';".as_bytes());
    }

    #[test]
    fn audio_is_interleaved_at_exact_offsets_across_pushes() {
        let metaint = 100;
        let mut icy = IcyInterleaver::new(metaint);
        let audio: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        let mut sent = 0;
        for (i, size) in [30, 70, 1, 250, 149, 500].into_iter().enumerate() {
            if i == 2 {
                icy.set_block(metadata_block("First", None));
            }
            if i == 4 {
                icy.set_block(metadata_block("Second", Some("http://x")));
            }
            icy.push(Bytes::copy_from_slice(&audio[sent..sent + size]), |piece| out.push(piece));
            sent += size;
        }
        let stream: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        let (back, titles) = unweave(&stream, metaint);
        assert_eq!(back, audio);
        assert_eq!(
            titles,
            vec!["StreamTitle='First';", "StreamTitle='Second';StreamUrl='http://x';"]
        );
        assert_eq!(stream.len(), 1000 + 8 + 33 + 49, "ten blocks: eight empty, two with text");
    }
}
