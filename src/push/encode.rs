//! Resampling to 48 kHz, channel mixing and Opus encoding into 20 ms packets.
//!
//! `StreamEncoder` is one unbroken Opus stream: the encoder and the partial frame carry over
//! from track to track, so a track's tail and the next track's head share a packet and nothing
//! is inserted between them. Each input segment (a run of one rate) gets its own resampler whose
//! delay is trimmed at the start and flushed at the end, so its output is exactly
//! `frames * 48000 / rate` long. Synchronous and pure: the playout thread drives it.

use bytes::Bytes;
use rubato::{FftFixedIn, Resampler};

use super::PushError;

/// The Opus stream's sample rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms packet.
pub const FRAME_SAMPLES: usize = 960;
/// Duration of one packet in microseconds: consecutive packets' `pts` differ by this.
pub const FRAME_DURATION_US: u64 = 20_000;
/// Largest Opus packet we accept from the encoder (RFC 6716 recommends 4000 bytes).
const MAX_PACKET_BYTES: usize = 4000;
/// Input frames per resampler call.
const RESAMPLER_CHUNK_FRAMES: usize = 1024;

/// One Opus packet and its presentation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// `index * FRAME_DURATION_US`, counted from the start of the stream.
    pub pts: u64,
    /// One Opus packet (20 ms).
    pub data: Bytes,
}

/// The RFC 7845 identification header ("OpusHead", 19 bytes, mapping family 0).
pub fn opus_head(channels: u8, pre_skip: u16) -> Bytes {
    crate::format::opus::OpusHead::build(channels, pre_skip, SAMPLE_RATE)
}

/// Resamples, mixes and encodes PCM into one continuous Opus stream.
pub struct StreamEncoder {
    opus: opus::Encoder,
    channels: usize,
    pre_skip: u16,
    frames_out: u64,
    /// 48 kHz interleaved samples not yet encoded: always less than one frame between calls.
    pending: Vec<f32>,
    segment: Option<Segment>,
    mixed: Vec<f32>,
    packet: Vec<u8>,
}

impl std::fmt::Debug for StreamEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEncoder")
            .field("channels", &self.channels)
            .field("frames_out", &self.frames_out)
            .finish_non_exhaustive()
    }
}

/// A run of input at one sample rate and channel count.
struct Segment {
    rate: u32,
    src_channels: usize,
    resampler: Option<SegmentResampler>,
}

struct SegmentResampler {
    inner: FftFixedIn<f32>,
    /// Planar input waiting for a full chunk.
    input: Vec<Vec<f32>>,
    output: Vec<Vec<f32>>,
    /// Output frames per input frame.
    ratio: f64,
    frames_in: u64,
    frames_out: u64,
    /// Output frames still to discard: the filter's delay.
    delay_left: usize,
}

impl StreamEncoder {
    /// An encoder for `channels` (1 or 2) at `bitrate` bits per second.
    ///
    /// # Errors
    /// `Encoder` when libopus refuses the settings.
    pub fn new(channels: u8, bitrate: u32) -> Result<Self, PushError> {
        let layout = match channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => return Err(PushError::Usage(format!("{n} channels: only 1 or 2 are supported"))),
        };
        let err = |e: opus::Error| PushError::Encoder(e.to_string());
        let mut opus =
            opus::Encoder::new(SAMPLE_RATE, layout, opus::Application::Audio).map_err(err)?;
        opus.set_bitrate(opus::Bitrate::Bits(bitrate as i32)).map_err(err)?;
        opus.set_signal(opus::Signal::Music).map_err(err)?;
        let lookahead = opus.get_lookahead().map_err(err)?;
        Ok(StreamEncoder {
            opus,
            channels: usize::from(channels),
            pre_skip: u16::try_from(lookahead).unwrap_or(312),
            frames_out: 0,
            pending: Vec::with_capacity(FRAME_SAMPLES * 4),
            segment: None,
            mixed: Vec::new(),
            packet: vec![0; MAX_PACKET_BYTES],
        })
    }

    /// The OpusHead header of this stream (its pre-skip is the encoder's lookahead).
    pub fn header(&self) -> Bytes {
        opus_head(self.channels as u8, self.pre_skip)
    }

    /// The stream's channel count.
    pub fn channels(&self) -> u8 {
        self.channels as u8
    }

    /// `pts` of the next packet, i.e. of the packet the next pushed sample will land in.
    pub fn next_pts(&self) -> u64 {
        self.frames_out * FRAME_DURATION_US
    }

    /// Adds PCM (interleaved, at `rate`) and returns the packets it completed.
    ///
    /// # Errors
    /// `Encoder` if the resampler or libopus fails.
    pub fn push(
        &mut self,
        rate: u32,
        src_channels: usize,
        samples: &[f32],
    ) -> Result<Vec<EncodedFrame>, PushError> {
        let mut out = Vec::new();
        if src_channels == 0 || rate == 0 {
            return Ok(out);
        }
        let same =
            self.segment.as_ref().is_some_and(|s| s.rate == rate && s.src_channels == src_channels);
        if !same {
            self.end_segment(&mut out)?;
            let resampler = if rate == SAMPLE_RATE {
                None
            } else {
                Some(SegmentResampler::new(rate, self.channels)?)
            };
            self.segment = Some(Segment { rate, src_channels, resampler });
        }
        let mut mixed = std::mem::take(&mut self.mixed);
        mix(samples, src_channels, self.channels, &mut mixed);
        match self.segment.as_mut().and_then(|s| s.resampler.as_mut()) {
            Some(resampler) => resampler.push(&mixed, self.channels, &mut self.pending)?,
            None => self.pending.extend_from_slice(&mixed),
        }
        self.mixed = mixed;
        self.encode_ready(&mut out)?;
        Ok(out)
    }

    /// Ends the current track: flushes the resampler so its tail is not lost. The partial frame
    /// stays pending and is completed by the next track's first samples.
    ///
    /// # Errors
    /// `Encoder` if the resampler or libopus fails.
    pub fn end_track(&mut self) -> Result<Vec<EncodedFrame>, PushError> {
        let mut out = Vec::new();
        self.end_segment(&mut out)?;
        Ok(out)
    }

    /// Ends the stream: flushes everything, padding the last packet with silence (and adding
    /// one more so the encoder's lookahead is heard too).
    ///
    /// # Errors
    /// `Encoder` if the resampler or libopus fails.
    pub fn finish(&mut self) -> Result<Vec<EncodedFrame>, PushError> {
        let mut out = Vec::new();
        self.end_segment(&mut out)?;
        if self.frames_out > 0 || !self.pending.is_empty() {
            // The decoder's output lags by the lookahead: feed that much silence too.
            let frames = self.pending.len() / self.channels + usize::from(self.pre_skip);
            let padded = frames.div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES;
            self.pending.resize(padded * self.channels, 0.0);
        }
        self.encode_ready(&mut out)?;
        Ok(out)
    }

    fn end_segment(&mut self, out: &mut Vec<EncodedFrame>) -> Result<(), PushError> {
        if let Some(Segment { resampler: Some(mut resampler), .. }) = self.segment.take() {
            resampler.flush(self.channels, &mut self.pending)?;
        }
        self.encode_ready(out)
    }

    fn encode_ready(&mut self, out: &mut Vec<EncodedFrame>) -> Result<(), PushError> {
        let frame_len = FRAME_SAMPLES * self.channels;
        let mut start = 0;
        while self.pending.len() - start >= frame_len {
            let pcm = &self.pending[start..start + frame_len];
            let len = self
                .opus
                .encode_float(pcm, &mut self.packet)
                .map_err(|e| PushError::Encoder(e.to_string()))?;
            out.push(EncodedFrame {
                pts: self.next_pts(),
                data: Bytes::copy_from_slice(&self.packet[..len]),
            });
            self.frames_out += 1;
            start += frame_len;
        }
        self.pending.drain(..start);
        Ok(())
    }
}

impl SegmentResampler {
    fn new(rate: u32, channels: usize) -> Result<Self, PushError> {
        let inner = FftFixedIn::new(
            rate as usize,
            SAMPLE_RATE as usize,
            RESAMPLER_CHUNK_FRAMES,
            2,
            channels,
        )
        .map_err(|e| PushError::Encoder(format!("resampler for {rate} Hz: {e}")))?;
        let delay_left = inner.output_delay();
        let output = inner.output_buffer_allocate(true);
        Ok(SegmentResampler {
            inner,
            input: vec![Vec::with_capacity(RESAMPLER_CHUNK_FRAMES * 2); channels],
            output,
            ratio: f64::from(SAMPLE_RATE) / f64::from(rate),
            frames_in: 0,
            frames_out: 0,
            delay_left,
        })
    }

    fn push(
        &mut self,
        interleaved: &[f32],
        channels: usize,
        dst: &mut Vec<f32>,
    ) -> Result<(), PushError> {
        for frame in interleaved.chunks_exact(channels) {
            for (plane, sample) in self.input.iter_mut().zip(frame) {
                plane.push(*sample);
            }
        }
        self.frames_in += (interleaved.len() / channels) as u64;
        while self.input[0].len() >= self.inner.input_frames_next() {
            let (used, produced) = self
                .inner
                .process_into_buffer(&self.input, &mut self.output, None)
                .map_err(|e| PushError::Encoder(format!("resampler: {e}")))?;
            for plane in &mut self.input {
                plane.drain(..used);
            }
            self.emit(produced, channels, u64::MAX, dst);
        }
        Ok(())
    }

    /// Pushes the remaining input through, then the delayed tail, and stops at exactly the
    /// output length that the input implies.
    fn flush(&mut self, channels: usize, dst: &mut Vec<f32>) -> Result<(), PushError> {
        let expected = (self.frames_in as f64 * self.ratio).round() as u64;
        let mut input = Some(std::mem::take(&mut self.input));
        // Each round yields at least one chunk; the bound only guards against a logic error.
        for _ in 0..64 {
            if self.frames_out >= expected {
                break;
            }
            let (_, produced) = self
                .inner
                .process_partial_into_buffer(input.take().as_deref(), &mut self.output, None)
                .map_err(|e| PushError::Encoder(format!("resampler: {e}")))?;
            self.emit(produced, channels, expected, dst);
        }
        Ok(())
    }

    /// Appends up to `produced` output frames, skipping the delay and stopping at `limit`.
    fn emit(&mut self, produced: usize, channels: usize, limit: u64, dst: &mut Vec<f32>) {
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        let room = limit.saturating_sub(self.frames_out);
        let take = ((produced - skip) as u64).min(room) as usize;
        dst.reserve(take * channels);
        for i in skip..skip + take {
            for plane in &self.output[..channels] {
                dst.push(plane[i]);
            }
        }
        self.frames_out += take as u64;
    }
}

/// Mixes interleaved `src` with `from` channels into `to` (1 or 2) channels.
///
/// Mono is the mean of all channels; stereo from mono duplicates it; more than two channels
/// (WAV/FLAC order FL FR FC LFE BL BR) fold centre and surround in at -3 dB, dropping the LFE.
fn mix(src: &[f32], from: usize, to: usize, dst: &mut Vec<f32>) {
    dst.clear();
    if from == to {
        dst.extend_from_slice(src);
        return;
    }
    let frames = src.chunks_exact(from);
    dst.reserve(frames.len() * to);
    const C: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for f in frames {
        match (from, to) {
            (_, 1) => dst.push(f.iter().sum::<f32>() / from as f32),
            (1, _) => dst.extend_from_slice(&[f[0], f[0]]),
            _ => {
                let centre = f.get(2).map_or(0.0, |c| c * C);
                let back_left = f.get(4).map_or(0.0, |c| c * C);
                let back_right = f.get(5).map_or(0.0, |c| c * C);
                let norm = 1.0 + if from > 2 { C } else { 0.0 } + if from > 4 { C } else { 0.0 };
                dst.push((f[0] + centre + back_left) / norm);
                dst.push((f[1] + centre + back_right) / norm);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, channels: usize, freq: f32, frames: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                let s = (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5;
                std::iter::repeat_n(s, channels)
            })
            .collect()
    }

    #[test]
    fn opus_head_has_the_rfc_7845_layout() {
        let head = opus_head(2, 312);
        assert_eq!(head.len(), 19);
        assert_eq!(&head[..8], b"OpusHead");
        assert_eq!(head[8], 1);
        assert_eq!(head[9], 2);
        assert_eq!(u16::from_le_bytes([head[10], head[11]]), 312);
        assert_eq!(u32::from_le_bytes([head[12], head[13], head[14], head[15]]), 48_000);
        assert_eq!(&head[16..], &[0, 0, 0]);
    }

    #[test]
    fn header_pre_skip_is_the_encoder_lookahead() {
        let enc = StreamEncoder::new(2, 128_000).unwrap();
        let head = enc.header();
        let pre_skip = u16::from_le_bytes([head[10], head[11]]);
        assert!((100..1000).contains(&pre_skip), "{pre_skip}");
    }

    #[test]
    fn resampled_segments_keep_their_exact_length() {
        for (rate, frames) in
            [(44_100u32, 44_100usize), (22_050, 1234), (96_000, 50_000), (8_000, 7)]
        {
            let mut enc = StreamEncoder::new(2, 96_000).unwrap();
            let mut packets = enc.push(rate, 1, &sine(rate, 1, 440.0, frames)).unwrap();
            packets.extend(enc.end_track().unwrap());
            let expected = (frames as f64 * 48_000.0 / f64::from(rate)).round() as usize;
            let samples = packets.len() * FRAME_SAMPLES + enc.pending.len() / 2;
            assert_eq!(samples, expected, "{rate} Hz, {frames} frames");
        }
    }

    #[test]
    fn tracks_share_packets_and_pts_are_continuous() {
        let mut enc = StreamEncoder::new(2, 128_000).unwrap();
        let mut all = Vec::new();
        // 1000 + 1000 frames at 48 kHz: the first packet straddles the track boundary.
        all.extend(enc.push(48_000, 2, &sine(48_000, 2, 440.0, 1000)).unwrap());
        all.extend(enc.end_track().unwrap());
        assert_eq!(all.len(), 1);
        assert_eq!(enc.next_pts(), 20_000, "the second track's first sample lands in packet 1");
        all.extend(enc.push(44_100, 1, &sine(44_100, 1, 440.0, 919)).unwrap());
        all.extend(enc.end_track().unwrap());
        all.extend(enc.finish().unwrap());
        for (i, frame) in all.iter().enumerate() {
            assert_eq!(frame.pts, i as u64 * FRAME_DURATION_US);
            assert!(!frame.data.is_empty());
        }
        // 1000 + 1000 samples + the lookahead (< 960) → 3 packets, the last one padded.
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn mixing_keeps_level_and_layout() {
        let mut out = Vec::new();
        mix(&[0.5, -0.5, 1.0, 0.0], 2, 1, &mut out);
        assert_eq!(out, vec![0.0, 0.5]);
        mix(&[0.25, -1.0], 1, 2, &mut out);
        assert_eq!(out, vec![0.25, 0.25, -1.0, -1.0]);
        // 5.1: a centre-only signal lands equally in both channels.
        mix(&[0.0, 0.0, 1.0, 1.0, 0.0, 0.0], 6, 2, &mut out);
        assert!((out[0] - out[1]).abs() < 1e-6 && out[0] > 0.2, "{out:?}");
    }
}
