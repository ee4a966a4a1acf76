//! Signal checks of the playout: encode real files, decode the Opus packets back with libopus,
//! and check the frequency content and the absence of gaps or clicks at track boundaries.
#![cfg(feature = "source")]
#![allow(clippy::unwrap_used)]

mod common;

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use common::{sample, within_secs};
use onair::push::{Output, Playout, PlayoutConfig, FRAME_DURATION_US, FRAME_SAMPLES};

/// Decoding a whole file takes longer than `common::within`.
async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    within_secs(60, fut).await
}

/// Plays `inputs` and decodes the stream back: (left-channel PCM with pre-skip removed,
/// metadata pts).
async fn play_and_decode(inputs: Vec<PathBuf>) -> (Vec<f32>, Vec<u64>) {
    let cfg = PlayoutConfig { inputs, ..PlayoutConfig::default() };
    let mut playout = Playout::spawn(cfg).unwrap();
    let head = playout.header();
    let pre_skip = usize::from(u16::from_le_bytes([head[10], head[11]]));
    let mut decoder = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut left = Vec::new();
    let mut starts = Vec::new();
    let mut expected_pts = 0;
    let mut pcm = vec![0f32; FRAME_SAMPLES * 2 * 6];
    while let Some(output) = within(playout.next()).await {
        match output {
            Output::Metadata(meta) => starts.push(meta.pts.unwrap()),
            Output::Frame { pts, data } => {
                assert_eq!(pts, expected_pts, "pts are continuous");
                expected_pts += FRAME_DURATION_US;
                let n = decoder.decode_float(&data, &mut pcm, false).unwrap();
                assert_eq!(n, FRAME_SAMPLES);
                left.extend(pcm[..n * 2].chunks_exact(2).map(|f| f[0]));
            }
        }
    }
    assert!(playout.error().is_none(), "{:?}", playout.error());
    (left.split_off(pre_skip), starts)
}

/// Power of `freq` in `x` (Goertzel), normalised so a full-scale sine gives about 0.25.
fn goertzel(x: &[f32], freq: f64) -> f64 {
    let w = 2.0 * PI * freq / 48_000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power / (x.len() as f64).powi(2)
}

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len() as f64
}

/// Phase (radians) of `freq` in a Hann-windowed `x`, relative to its first sample.
fn phase(x: &[f32], freq: f64) -> f64 {
    let w = 2.0 * PI * freq / 48_000.0;
    let n = x.len() as f64;
    let (mut re, mut im) = (0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * PI * i as f64 / n).cos();
        re += f64::from(v) * hann * (w * i as f64).cos();
        im -= f64::from(v) * hann * (w * i as f64).sin();
    }
    im.atan2(re)
}

/// Asserts that the tone after `boundary` continues the phase of the tone before it: any
/// inserted or lost samples shift the phase by `2π·freq·samples/48000`.
fn assert_phase_continuous(pcm: &[f32], boundary: usize, freq: f64) {
    let (before, after) = (boundary - 2_400, boundary + 1_440);
    let measured = phase(&pcm[after..after + 960], freq) - phase(&pcm[before..before + 960], freq);
    let expected = 2.0 * PI * freq / 48_000.0 * (after - before) as f64;
    let error = (measured - expected).rem_euclid(2.0 * PI);
    let error = error.min(2.0 * PI - error);
    let samples_off = error / (2.0 * PI * freq) * 48_000.0;
    assert!(samples_off < 1.0, "the join shifts the tone by {samples_off:.1} samples");
}

/// Asserts a steady tone over `range` (in samples): no near-silent 20 ms window, and no
/// sample step much larger than the sine's own slope (a click).
fn assert_continuous_tone(pcm: &[f32], range: std::ops::Range<usize>, freq: f64, amplitude: f64) {
    let expected_rms = amplitude / 2f64.sqrt();
    for (i, window) in pcm[range.clone()].chunks_exact(FRAME_SAMPLES).enumerate() {
        let rms = energy(window).sqrt();
        assert!(
            rms > expected_rms * 0.7 && rms < expected_rms * 1.3,
            "window {i} after sample {}: rms {rms:.4}, want ~{expected_rms:.4}",
            range.start
        );
    }
    let max_slope = 2.0 * PI * freq / 48_000.0 * amplitude;
    let worst =
        pcm[range.clone()].windows(2).map(|w| f64::from((w[1] - w[0]).abs())).fold(0.0, f64::max);
    assert!(worst < max_slope * 2.0, "a click: step {worst:.4}, sine slope {max_slope:.4}");
}

#[tokio::test]
async fn a_440_hz_tone_comes_back_at_440_hz_without_a_gap_between_two_tracks() {
    let tone = sample("tone-440.flac");
    let (pcm, starts) = play_and_decode(vec![tone.clone(), tone]).await;
    // 4 s per track: the second starts exactly at frame 200.
    assert_eq!(starts, [0, 4_000_000]);
    assert!(pcm.len() >= 8 * 48_000, "{} samples", pcm.len());

    let steady = &pcm[4_800..8 * 48_000 - 4_800];
    let at_440 = goertzel(steady, 440.0);
    let total = energy(steady) / 2.0; // goertzel's normalisation: a sine of power p gives p/2
    assert!(at_440 > total * 0.95, "440 Hz holds {at_440:.5} of {total:.5}");
    for off in [220.0, 880.0, 1000.0] {
        assert!(goertzel(steady, off) < at_440 * 0.001, "energy at {off} Hz");
    }
    // Amplitude 0.5 (-6 dBFS) across the boundary at sample 192 000, in 20 ms windows.
    assert_continuous_tone(&pcm, 4 * 48_000 - 20 * 960..4 * 48_000 + 20 * 960, 440.0, 0.5);
    assert_phase_continuous(&pcm, 4 * 48_000, 440.0);
}

/// Writes a 44.1 kHz mono 16-bit WAV of a sine.
fn write_sine_wav(path: &Path, freq: f64, seconds: f64) {
    let rate = 44_100u32;
    let samples: Vec<i16> = (0..(seconds * f64::from(rate)) as usize)
        .map(|i| ((2.0 * PI * freq * i as f64 / f64::from(rate)).sin() * 0.5 * 32767.0) as i16)
        .collect();
    common::wav::write_wav(path, rate, &samples);
}

#[tokio::test]
async fn resampled_tracks_join_without_a_gap_or_click() {
    let dir = std::env::temp_dir().join(format!("onair-signal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 1 s of 441 Hz at 44.1 kHz is exactly 441 cycles: the second file continues the phase,
    // so any gap or glitch at the join comes from the playout.
    let (a, b) = (dir.join("a.wav"), dir.join("b.wav"));
    write_sine_wav(&a, 441.0, 1.0);
    write_sine_wav(&b, 441.0, 1.0);
    let (pcm, starts) = play_and_decode(vec![a, b]).await;
    assert_eq!(starts, [0, 1_000_000], "1 s resampled to exactly 48 000 samples");
    assert!(pcm.len() >= 2 * 48_000);
    assert_continuous_tone(&pcm, 48_000 - 10 * 960..48_000 + 10 * 960, 441.0, 0.5);
    assert_phase_continuous(&pcm, 48_000, 441.0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn aac_tracks_join_gaplessly_once_the_priming_is_trimmed() {
    let tone = sample("tone-1k.m4a");
    let (pcm, starts) = play_and_decode(vec![tone.clone(), tone]).await;
    // 2 s per track once the 1024 priming samples are dropped (the MP4 edit list).
    assert_eq!(starts, [0, 2_000_000]);
    assert_continuous_tone(&pcm, 2 * 48_000 - 10 * 960..2 * 48_000 + 10 * 960, 1000.0, 0.5);
    assert_phase_continuous(&pcm, 2 * 48_000, 1000.0);
}
