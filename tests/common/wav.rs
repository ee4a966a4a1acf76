//! A minimal WAV writer for tests (mono, 16-bit PCM). Shared by the integration tests
//! (`tests/common`) and the library's unit tests (`src/push/decode.rs` includes this file).

use std::path::Path;

/// The bytes of a mono 16-bit PCM WAV file.
pub fn wav_bytes(rate: u32, samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes()); // bytes per second
    out.extend_from_slice(&2u16.to_le_bytes()); // bytes per frame
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for sample in samples {
        out.extend_from_slice(&sample.to_le_bytes());
    }
    out
}

/// Writes a mono 16-bit PCM WAV file.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    std::fs::write(path, wav_bytes(rate, samples)).expect("write a WAV file");
}
