//! Live capture from a sound card for `onair push --input`: cpal (ALSA) delivers PCM on its own
//! real-time thread and a bounded SPSC ring (ringbuf) hands it to the playout thread, which meters
//! and encodes it like any other PCM.
//!
//! Contract of the real-time side (`RingProducer::push` and the error callback): convert to `f32`,
//! push whole frames, bump atomic counters; no lock, no allocation, no blocking call. Frames that
//! do not fit (the encoder fell behind) are dropped and counted. The playout thread polls the ring
//! (`Capture::next_chunk`) and turns a device error or a device gone silent into `PushError::Input`.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, SupportedBufferSize};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::decode::PcmChunk;
use super::PushError;

/// Audio the ring between the capture callback and the encoder holds: what the encoder may fall
/// behind by before frames are dropped.
pub const RING_DURATION: Duration = Duration::from_secs(1);
/// ALSA period asked of the device (the buffer is two of them): the callback runs this often.
pub const CAPTURE_PERIOD: Duration = Duration::from_millis(20);
/// A device that delivers nothing for this long is considered gone.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(4);
/// How often the playout thread looks into the ring.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// The playout thread takes audio from the ring in runs of at least this much.
const MIN_CHUNK: Duration = Duration::from_millis(10);
/// A pause in the device's delivery longer than this (and than three periods) is an underrun.
const UNDERRUN_GAP: Duration = Duration::from_millis(150);
/// Errors the callback can queue for the playout thread before it drops them.
const ERROR_SLOTS: usize = 8;
/// A sample at or above this magnitude (about -0.01 dBFS) counts as clipped.
pub const CLIP_LEVEL: f32 = 0.999;
/// How long the clip indicator stays lit after the last clipped sample.
pub const CLIP_HOLD: Duration = Duration::from_secs(2);
/// Time constant of the RMS meter.
const RMS_WINDOW: Duration = Duration::from_millis(300);
/// How fast the peak meter falls back, in dB per second.
const PEAK_FALL_DB_PER_S: f32 = 20.0;
/// The meter's floor, in dBFS: silence reads as this.
pub const METER_FLOOR_DBFS: f32 = -90.0;

/// Which device to capture from and what the stream wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// An ALSA PCM name from `--list-inputs` (`hw:CARD=USB,DEV=0`, `default`, ...), or a unique
    /// part of a device's name or description; `None` is the system default.
    pub device: Option<String>,
    /// Channels of the stream (1 or 2): the device is opened with as many if it can be.
    pub channels: u8,
}

/// Counters and the level meter of a live input, shared by the capture callback (counters
/// only), the playout thread (meter) and the status line (reads).
#[derive(Debug)]
pub struct InputStats {
    started: Instant,
    frames: AtomicU64,
    overruns: AtomicU64,
    overrun_frames: AtomicU64,
    xruns: AtomicU64,
    underruns: AtomicU64,
    dropped_packets: AtomicU64,
    clipped_samples: AtomicU64,
    /// Milliseconds after `started` of the last clipped sample, plus one; 0 for never.
    last_clip_ms: AtomicU64,
    peak: AtomicU32,
    mean_square: AtomicU32,
    rate: AtomicU32,
    channels: AtomicU32,
}

/// A reading of `InputStats`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSnapshot {
    /// Peak level in dBFS (with a fall-back of 20 dB/s), at least `METER_FLOOR_DBFS`.
    pub peak_dbfs: f32,
    /// RMS level in dBFS over about 300 ms, at least `METER_FLOOR_DBFS`.
    pub rms_dbfs: f32,
    /// A sample clipped within the last `CLIP_HOLD`.
    pub clipping: bool,
    /// Samples at full scale since the start.
    pub clipped_samples: u64,
    /// Frames captured since the start.
    pub frames: u64,
    /// Times the ring was full and frames were dropped (the encoder fell behind).
    pub overruns: u64,
    /// Frames dropped for those overruns.
    pub overrun_frames: u64,
    /// ALSA xruns reported by the device (its own buffer over- or underran).
    pub xruns: u64,
    /// Times the device delivered nothing for longer than it should have.
    pub underruns: u64,
    /// Opus packets dropped because the relay was not taking them (disconnected or slow).
    pub dropped_packets: u64,
    /// The device's sample rate, 0 before it is open.
    pub rate: u32,
    /// The device's channel count, 0 before it is open.
    pub channels: u32,
}

impl Default for InputStats {
    fn default() -> Self {
        InputStats {
            started: Instant::now(),
            frames: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
            overrun_frames: AtomicU64::new(0),
            xruns: AtomicU64::new(0),
            underruns: AtomicU64::new(0),
            dropped_packets: AtomicU64::new(0),
            clipped_samples: AtomicU64::new(0),
            last_clip_ms: AtomicU64::new(0),
            peak: AtomicU32::new(0),
            mean_square: AtomicU32::new(0),
            rate: AtomicU32::new(0),
            channels: AtomicU32::new(0),
        }
    }
}

impl InputStats {
    /// The current readings.
    pub fn snapshot(&self) -> InputSnapshot {
        let last_clip = self.last_clip_ms.load(Ordering::Relaxed);
        let now_ms = self.started.elapsed().as_millis() as u64 + 1;
        InputSnapshot {
            peak_dbfs: dbfs(f32::from_bits(self.peak.load(Ordering::Relaxed))),
            rms_dbfs: dbfs(f32::from_bits(self.mean_square.load(Ordering::Relaxed)).sqrt()),
            clipping: last_clip != 0 && now_ms - last_clip <= CLIP_HOLD.as_millis() as u64,
            clipped_samples: self.clipped_samples.load(Ordering::Relaxed),
            frames: self.frames.load(Ordering::Relaxed),
            overruns: self.overruns.load(Ordering::Relaxed),
            overrun_frames: self.overrun_frames.load(Ordering::Relaxed),
            xruns: self.xruns.load(Ordering::Relaxed),
            underruns: self.underruns.load(Ordering::Relaxed),
            dropped_packets: self.dropped_packets.load(Ordering::Relaxed),
            rate: self.rate.load(Ordering::Relaxed),
            channels: self.channels.load(Ordering::Relaxed),
        }
    }

    /// Counts Opus packets that were encoded but not sent (the relay was not taking them).
    pub fn count_dropped_packets(&self, packets: u64) {
        self.dropped_packets.fetch_add(packets, Ordering::Relaxed);
    }
}

/// Amplitude (0..1) to dBFS, floored at `METER_FLOOR_DBFS`.
pub fn dbfs(amplitude: f32) -> f32 {
    if amplitude <= 0.0 {
        return METER_FLOOR_DBFS;
    }
    (20.0 * amplitude.log10()).max(METER_FLOOR_DBFS)
}

/// The level meter's state, kept by the playout thread and published to `InputStats`.
#[derive(Debug)]
struct Meter {
    peak: f32,
    mean_square: f32,
}

impl Meter {
    /// Takes one run of interleaved samples lasting `duration`.
    fn update(&mut self, samples: &[f32], duration: Duration, stats: &InputStats) {
        let (mut peak, mut sum, mut clipped) = (0.0f32, 0.0f64, 0u64);
        for &s in samples {
            let a = s.abs();
            peak = peak.max(a);
            sum += f64::from(s) * f64::from(s);
            clipped += u64::from(a >= CLIP_LEVEL);
        }
        let secs = duration.as_secs_f32();
        let fall = 10f32.powf(-PEAK_FALL_DB_PER_S * secs / 20.0);
        self.peak = peak.max(self.peak * fall);
        if !samples.is_empty() {
            let alpha = 1.0 - (-secs / RMS_WINDOW.as_secs_f32()).exp();
            let ms = (sum / samples.len() as f64) as f32;
            self.mean_square += alpha * (ms - self.mean_square);
        }
        stats.peak.store(self.peak.to_bits(), Ordering::Relaxed);
        stats.mean_square.store(self.mean_square.to_bits(), Ordering::Relaxed);
        if clipped > 0 {
            stats.clipped_samples.fetch_add(clipped, Ordering::Relaxed);
            let now_ms = stats.started.elapsed().as_millis() as u64 + 1;
            stats.last_clip_ms.store(now_ms, Ordering::Relaxed);
        }
    }
}

/// The real-time end of the ring: what cpal's capture callback calls.
pub struct RingProducer {
    ring: HeapProd<f32>,
    channels: usize,
    stats: Arc<InputStats>,
}

/// The playout thread's end of the ring.
pub struct RingConsumer {
    ring: HeapCons<f32>,
    channels: usize,
}

impl std::fmt::Debug for RingProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingProducer").field("channels", &self.channels).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RingConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingConsumer").field("channels", &self.channels).finish_non_exhaustive()
    }
}

/// A ring of `frames` frames of `channels` interleaved `f32` samples, allocated once here.
pub fn ring(
    frames: usize,
    channels: usize,
    stats: Arc<InputStats>,
) -> (RingProducer, RingConsumer) {
    let channels = channels.max(1);
    let (ring, cons) = HeapRb::<f32>::new(frames.max(1) * channels).split();
    (RingProducer { ring, channels, stats }, RingConsumer { ring: cons, channels })
}

impl RingProducer {
    /// Hands one callback's interleaved samples to the encoder thread. Real-time safe: it
    /// converts and copies into the preallocated ring, and when the ring is full it drops the
    /// whole frames that do not fit and counts them; it never waits.
    pub fn push<T>(&mut self, data: &[T])
    where
        T: Sample,
        f32: FromSample<T>,
    {
        let ch = self.channels;
        let whole = data.len() - data.len() % ch;
        let vacant = self.ring.vacant_len();
        let fits = whole.min(vacant - vacant % ch);
        let pushed = self.ring.push_iter(data[..fits].iter().map(|s| s.to_sample::<f32>()));
        self.stats.frames.fetch_add((pushed / ch) as u64, Ordering::Relaxed);
        let dropped = (whole - pushed) / ch;
        if dropped > 0 {
            self.stats.overruns.fetch_add(1, Ordering::Relaxed);
            self.stats.overrun_frames.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    /// The ring's size in samples: fixed when it is made, it never grows.
    pub fn capacity(&self) -> NonZeroUsize {
        self.ring.capacity()
    }
}

impl RingConsumer {
    /// Whole frames waiting in the ring.
    pub fn frames_available(&self) -> usize {
        self.ring.occupied_len() / self.channels
    }

    /// Moves up to `max_frames` whole frames into `out` (appended); returns how many.
    pub fn pop_frames(&mut self, max_frames: usize, out: &mut Vec<f32>) -> usize {
        let frames = self.frames_available().min(max_frames);
        let start = out.len();
        out.resize(start + frames * self.channels, 0.0);
        let popped = self.ring.pop_slice(&mut out[start..]);
        out.truncate(start + popped);
        popped / self.channels
    }
}

/// An open, running capture stream. Dropping it stops the device.
pub struct Capture {
    /// Dropping it stops and joins cpal's capture thread.
    _stream: cpal::Stream,
    ring: RingConsumer,
    errors: HeapCons<cpal::Error>,
    stats: Arc<InputStats>,
    meter: Meter,
    device: String,
    rate: u32,
    channels: usize,
    min_chunk_frames: usize,
    gap: Duration,
    last_data: Instant,
    had_data: bool,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("device", &self.device)
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Opens the device and starts capturing into a new ring.
    ///
    /// # Errors
    /// `Input` when the device does not exist, cannot be opened or offers no usable format.
    pub fn open(cfg: &CaptureConfig, stats: Arc<InputStats>) -> Result<Capture, PushError> {
        let host = alsa_host()?;
        let device = find_device(&host, cfg.device.as_deref())?;
        let name = device_name(&device);
        let open_err = |err: cpal::Error| {
            PushError::Input(format!(
                "cannot open the input device {name}: {} (see `onair push --list-inputs`)",
                describe(&err)
            ))
        };
        let (config, format) = choose_config(&device, cfg.channels).map_err(open_err)?;
        let (rate, channels) = (config.sample_rate, usize::from(config.channels));
        let ring_frames = frames_in(RING_DURATION, rate);
        let (producer, consumer) = ring(ring_frames, channels, stats.clone());
        let (errors_tx, errors) = HeapRb::<cpal::Error>::new(ERROR_SLOTS).split();
        let stream = build_stream(&device, &config, format, producer, errors_tx, stats.clone())
            .map_err(open_err)?;
        stream.play().map_err(open_err)?;
        let period = stream.buffer_size().ok().map(|frames| frames_duration(frames, rate));
        let gap = period.map_or(UNDERRUN_GAP, |p| (p * 3).max(UNDERRUN_GAP));
        stats.rate.store(rate, Ordering::Relaxed);
        stats.channels.store(channels as u32, Ordering::Relaxed);
        tracing::info!(
            device = %name,
            rate,
            channels,
            format = %format,
            period_ms = period.map(|p| p.as_millis() as u64),
            "capturing"
        );
        Ok(Capture {
            _stream: stream,
            ring: consumer,
            errors,
            stats,
            meter: Meter { peak: 0.0, mean_square: 0.0 },
            device: name,
            rate,
            channels,
            min_chunk_frames: frames_in(MIN_CHUNK, rate),
            gap,
            last_data: Instant::now(),
            had_data: false,
        })
    }

    /// The device's name, as `--list-inputs` shows it.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The next run of captured PCM (at least 10 ms), waiting for it.
    ///
    /// # Errors
    /// `Input` when the device reports an error or delivers nothing for `STALL_TIMEOUT`.
    pub fn next_chunk(&mut self) -> Result<PcmChunk, PushError> {
        loop {
            self.check_errors()?;
            let now = Instant::now();
            if self.ring.frames_available() >= self.min_chunk_frames {
                if self.had_data && now - self.last_data > self.gap {
                    self.stats.underruns.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        device = %self.device,
                        gap_ms = (now - self.last_data).as_millis() as u64,
                        "input underrun: the device delivered no audio for a while"
                    );
                }
                self.had_data = true;
                self.last_data = now;
                let mut samples = Vec::with_capacity(self.ring.frames_available() * self.channels);
                let frames = self.ring.pop_frames(usize::MAX, &mut samples);
                self.meter.update(&samples, frames_duration(frames as u32, self.rate), &self.stats);
                return Ok(PcmChunk { rate: self.rate, channels: self.channels, samples });
            }
            if now - self.last_data > STALL_TIMEOUT {
                return Err(PushError::Input(format!(
                    "the input device {} delivered no audio for {} s",
                    self.device,
                    STALL_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn check_errors(&mut self) -> Result<(), PushError> {
        while let Some(err) = self.errors.try_pop() {
            match err.kind() {
                cpal::ErrorKind::RealtimeDenied | cpal::ErrorKind::DeviceChanged => {
                    tracing::warn!(device = %self.device, %err, "input device");
                }
                _ => {
                    return Err(PushError::Input(format!(
                        "the input device {} failed: {}",
                        self.device,
                        describe(&err)
                    )));
                }
            }
        }
        Ok(())
    }
}

/// cpal's message, or a short one for its wordy kinds.
fn describe(err: &cpal::Error) -> String {
    if let Some(message) = err.message() {
        return message.to_owned();
    }
    match err.kind() {
        cpal::ErrorKind::DeviceNotAvailable => "not available".into(),
        cpal::ErrorKind::DeviceBusy => "busy (another program is using it)".into(),
        cpal::ErrorKind::PermissionDenied => "permission denied".into(),
        cpal::ErrorKind::UnsupportedConfig => "no supported configuration".into(),
        _ => err.to_string(),
    }
}

fn frames_in(duration: Duration, rate: u32) -> usize {
    (duration.as_secs_f64() * f64::from(rate)).ceil() as usize
}

fn frames_duration(frames: u32, rate: u32) -> Duration {
    Duration::from_secs_f64(f64::from(frames) / f64::from(rate.max(1)))
}

fn alsa_host() -> Result<cpal::Host, PushError> {
    cpal::host_from_id(cpal::HostId::Alsa)
        .map_err(|err| PushError::Input(format!("ALSA is not available: {err}")))
}

/// The PCM name a device is opened by (`default`, `hw:CARD=USB,DEV=0`, ...).
fn device_name(device: &cpal::Device) -> String {
    device.id().map(|id| id.id().to_owned()).unwrap_or_else(|_| "(unnamed)".into())
}

/// The named device: an exact PCM name first, else a unique case-insensitive match on part of a
/// capture device's name or description.
fn find_device(host: &cpal::Host, wanted: Option<&str>) -> Result<cpal::Device, PushError> {
    let Some(wanted) = wanted else {
        return host.default_input_device().ok_or_else(|| {
            PushError::Input(
                "there is no default input device (see `onair push --list-inputs`)".into(),
            )
        });
    };
    let devices: Vec<cpal::Device> = host
        .devices()
        .map_err(|err| PushError::Input(format!("cannot list the input devices: {err}")))?
        .filter(|d| d.supports_input() || device_name(d) == wanted)
        .collect();
    if let Some(device) = devices.iter().find(|d| device_name(d) == wanted) {
        return Ok(device.clone());
    }
    if wanted == "default" {
        if let Some(device) = host.default_input_device() {
            return Ok(device);
        }
    }
    let needle = wanted.to_lowercase();
    let matches: Vec<&cpal::Device> = devices
        .iter()
        .filter(|d| {
            let description = d.description().map(|x| x.name().to_lowercase()).unwrap_or_default();
            device_name(d).to_lowercase().contains(&needle) || description.contains(&needle)
        })
        .collect();
    match matches.as_slice() {
        [device] => Ok((*device).clone()),
        [] => Err(PushError::Input(format!(
            "no input device named {wanted} (see `onair push --list-inputs`)"
        ))),
        several => Err(PushError::Input(format!(
            "{wanted} names several input devices: {}; give the full name",
            several.iter().map(|d| device_name(d)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Sample formats the capture converts from (all of cpal's linear PCM).
fn supported_format(format: SampleFormat) -> bool {
    format.is_int() || format.is_uint() || format.is_float()
}

/// The device's best configuration for a stream of `channels`: that many channels if it offers
/// them, else its own preference (the encoder mixes); 48 kHz, else 44.1 kHz, else its highest
/// rate (the encoder resamples); a `CAPTURE_PERIOD` period when the device accepts it.
fn choose_config(
    device: &cpal::Device,
    channels: u8,
) -> Result<(cpal::StreamConfig, SampleFormat), cpal::Error> {
    let ranges: Vec<cpal::SupportedStreamConfigRange> = device
        .supported_input_configs()?
        .filter(|r| supported_format(r.sample_format()) && r.channels() > 0)
        .collect();
    let best = |want: Option<u16>| {
        ranges
            .iter()
            .filter(|r| want.is_none_or(|c| r.channels() == c))
            .max_by(|a, b| a.cmp_default_heuristics(b))
            .copied()
    };
    let range = best(Some(u16::from(channels))).or_else(|| best(None)).ok_or_else(|| {
        cpal::Error::with_message(cpal::ErrorKind::UnsupportedConfig, "no linear PCM format")
    })?;
    let supported =
        range.try_with_standard_sample_rate().unwrap_or_else(|| range.with_max_sample_rate());
    let format = supported.sample_format();
    let mut config = supported.config();
    let period = frames_in(CAPTURE_PERIOD, config.sample_rate) as u32;
    config.buffer_size = match supported.buffer_size() {
        SupportedBufferSize::Range { min, max } if (*min..=*max).contains(&period) => {
            cpal::BufferSize::Fixed(period)
        }
        _ => cpal::BufferSize::Default,
    };
    Ok((config, format))
}

fn build_stream(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    format: SampleFormat,
    producer: RingProducer,
    errors: HeapProd<cpal::Error>,
    stats: Arc<InputStats>,
) -> Result<cpal::Stream, cpal::Error> {
    macro_rules! build {
        ($t:ty) => {
            build_typed::<$t>(device, config, producer, errors, stats)
        };
    }
    match format {
        SampleFormat::I8 => build!(i8),
        SampleFormat::I16 => build!(i16),
        SampleFormat::I24 => build!(cpal::I24),
        SampleFormat::I32 => build!(i32),
        SampleFormat::I64 => build!(i64),
        SampleFormat::U8 => build!(u8),
        SampleFormat::U16 => build!(u16),
        SampleFormat::U24 => build!(cpal::U24),
        SampleFormat::U32 => build!(u32),
        SampleFormat::U64 => build!(u64),
        SampleFormat::F32 => build!(f32),
        SampleFormat::F64 => build!(f64),
        other => Err(cpal::Error::with_message(
            cpal::ErrorKind::UnsupportedConfig,
            format!("sample format {other} is not linear PCM"),
        )),
    }
}

fn build_typed<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut producer: RingProducer,
    mut errors: HeapProd<cpal::Error>,
    stats: Arc<InputStats>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    // Both closures run on cpal's capture thread, the data one once per period: see the
    // module's contract.
    let on_data = move |data: &[T], _: &cpal::InputCallbackInfo| producer.push(data);
    let on_error = move |err: cpal::Error| {
        if err.kind() == cpal::ErrorKind::Xrun {
            stats.xruns.fetch_add(1, Ordering::Relaxed);
        } else {
            // Full: the playout thread has not looked yet, and it stops at the first fatal one.
            let _ = errors.try_push(err);
        }
    };
    device.build_input_stream::<T, _, _>(*config, on_data, on_error, None)
}

/// A capture device as `--list-inputs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputInfo {
    /// The name `--input` takes.
    pub name: String,
    /// What ALSA calls it, one line.
    pub description: String,
    /// This is the system's default input.
    pub is_default: bool,
    /// Channel counts, rates and formats, or why the device could not be opened.
    pub formats: Result<String, String>,
}

/// The capture devices ALSA knows, the default first.
///
/// # Errors
/// `Input` when ALSA cannot be initialised or asked for its devices.
///
/// NOTE: ALSA plugins and libjack print their failures to stderr while devices are probed;
/// file descriptor 2 goes to /dev/null meanwhile (the listing says why a device cannot open).
pub fn list_inputs() -> Result<Vec<InputInfo>, PushError> {
    let host = alsa_host()?;
    let mut devices: Vec<cpal::Device> = host
        .devices()
        .map_err(|err| PushError::Input(format!("cannot list the input devices: {err}")))?
        .filter(|d| d.supports_input())
        .collect();
    let default = host.default_input_device();
    let default_name = default.as_ref().map(device_name);
    if let Some(default) = default {
        if !devices.iter().any(|d| Some(device_name(d)) == default_name) {
            devices.insert(0, default);
        }
    }
    let mut inputs: Vec<InputInfo> = without_stderr(|| {
        devices
            .iter()
            .map(|d| {
                let name = device_name(d);
                let description = d.description().map(|x| x.name().to_owned()).unwrap_or_default();
                let formats =
                    d.supported_input_configs().map_err(|e| describe(&e)).and_then(|ranges| {
                        summarize(ranges.filter(|r| supported_format(r.sample_format())).collect())
                    });
                InputInfo {
                    is_default: default_name.as_ref() == Some(&name),
                    name,
                    description,
                    formats,
                }
            })
            .collect()
    });
    inputs.sort_by_key(|i| !i.is_default);
    Ok(inputs)
}

/// Runs `f` with file descriptor 2 pointed at /dev/null.
fn without_stderr<T>(f: impl FnOnce() -> T) -> T {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null");
    // SAFETY: plain descriptor calls; the saved copy is restored and closed below.
    let saved = unsafe { libc::dup(2) };
    let redirected = match (&null, saved >= 0) {
        (Ok(null), true) => unsafe { libc::dup2(null.as_raw_fd(), 2) >= 0 },
        _ => false,
    };
    let out = f();
    if redirected {
        // SAFETY: `saved` is a descriptor this function owns.
        unsafe { libc::dup2(saved, 2) };
    }
    if saved >= 0 {
        // SAFETY: as above; closed once.
        unsafe { libc::close(saved) };
    }
    out
}

/// `1-2 ch, 8000-192000 Hz, f32 i16`: what the ranges offer.
fn summarize(ranges: Vec<cpal::SupportedStreamConfigRange>) -> Result<String, String> {
    if ranges.is_empty() {
        return Err("no linear PCM capture format".into());
    }
    let min_ch = ranges.iter().map(|r| r.channels()).min().unwrap_or(0);
    let max_ch = ranges.iter().map(|r| r.channels()).max().unwrap_or(0);
    let min_rate = ranges.iter().map(|r| r.min_sample_rate()).min().unwrap_or(0);
    let max_rate = ranges.iter().map(|r| r.max_sample_rate()).max().unwrap_or(0);
    let mut formats: Vec<SampleFormat> = Vec::new();
    for r in &ranges {
        if !formats.contains(&r.sample_format()) {
            formats.push(r.sample_format());
        }
    }
    let channels =
        if min_ch == max_ch { format!("{min_ch} ch") } else { format!("{min_ch}-{max_ch} ch") };
    let rates = if min_rate == max_rate {
        format!("{min_rate} Hz")
    } else {
        format!("{min_rate}-{max_rate} Hz")
    };
    let formats: Vec<String> = formats.iter().map(|f| f.to_string()).collect();
    Ok(format!("{channels}, {rates}, {}", formats.join(" ")))
}

/// The listing `onair push --list-inputs` prints: the devices that open, then those ALSA
/// knows but that cannot capture now, with the reason.
pub fn format_inputs(inputs: &[InputInfo]) -> String {
    let width = inputs.iter().map(|i| i.name.len()).max().unwrap_or(0);
    let line = |input: &InputInfo, detail: &str| {
        let mark = if input.is_default { '*' } else { ' ' };
        format!("{mark} {:width$}  {}  [{detail}]\n", input.name, input.description)
    };
    let mut out = String::from("Input devices (pass the name to --input; * is the default):\n");
    let (usable, unusable): (Vec<&InputInfo>, Vec<&InputInfo>) =
        inputs.iter().partition(|i| i.formats.is_ok());
    if usable.is_empty() {
        out.push_str("  (none can capture now)\n");
    }
    for input in usable {
        out.push_str(&line(input, input.formats.as_deref().unwrap_or_default()));
    }
    if !unusable.is_empty() {
        out.push_str("Known to ALSA but cannot capture now:\n");
        for input in unusable {
            out.push_str(&line(input, input.formats.as_ref().err().map_or("", |e| e.as_str())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Arc<InputStats> {
        Arc::new(InputStats::default())
    }

    #[test]
    fn the_ring_is_bounded_and_drops_whole_frames_when_full() {
        let stats = stats();
        let (mut producer, mut consumer) = ring(100, 2, stats.clone());
        assert_eq!(producer.capacity().get(), 200);
        // 150 frames into room for 100: 50 dropped, counted, and the ring holds exactly 100.
        let data: Vec<i16> = (0..300).map(|i| i as i16).collect();
        producer.push(&data);
        let snap = stats.snapshot();
        assert_eq!((snap.frames, snap.overruns, snap.overrun_frames), (100, 1, 50));
        assert_eq!(consumer.frames_available(), 100);
        // Full: everything is dropped, nothing grows.
        producer.push(&data[..20]);
        assert_eq!(consumer.frames_available(), 100);
        assert_eq!(stats.snapshot().overrun_frames, 60);
        let mut out = Vec::new();
        assert_eq!(consumer.pop_frames(usize::MAX, &mut out), 100);
        assert_eq!(out.len(), 200);
        // The first frames are kept, in order, converted to f32.
        assert_eq!(out[1], 1.0 / 32768.0);
        assert_eq!(producer.capacity().get(), 200);
    }

    #[test]
    fn odd_room_never_splits_a_frame() {
        let (mut producer, mut consumer) = ring(3, 2, stats());
        producer.push(&[0.1f32, 0.2, 0.3]); // one frame and a half: the half is dropped
        producer.push(&[0.4f32, 0.5, 0.6, 0.7, 0.8, 0.9]);
        let mut out = Vec::new();
        consumer.pop_frames(usize::MAX, &mut out);
        assert_eq!(out, [0.1, 0.2, 0.4, 0.5, 0.6, 0.7]);
    }

    #[test]
    fn the_meter_reads_peak_rms_and_clipping_in_dbfs() {
        let stats = stats();
        let mut meter = Meter { peak: 0.0, mean_square: 0.0 };
        let sine: Vec<f32> = (0..48_000)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin())
            .collect();
        // 3 s: ten times the RMS meter's time constant, so it has risen to the tone's level.
        for chunk in sine.chunks(480).cycle().take(300) {
            meter.update(chunk, Duration::from_millis(10), &stats);
        }
        let snap = stats.snapshot();
        assert!((snap.peak_dbfs - -6.02).abs() < 0.1, "{snap:?}");
        assert!((snap.rms_dbfs - -9.03).abs() < 0.1, "{snap:?}");
        assert!(!snap.clipping);
        meter.update(&[0.2, 1.0, -1.0], Duration::from_millis(1), &stats);
        let snap = stats.snapshot();
        assert!(snap.clipping && snap.clipped_samples == 2, "{snap:?}");
        assert_eq!(snap.peak_dbfs, 0.0);
        // Silence falls to the floor, not to minus infinity.
        let mut meter = Meter { peak: 0.0, mean_square: 0.0 };
        meter.update(&[0.0; 480], Duration::from_millis(10), &stats);
        assert_eq!(stats.snapshot().peak_dbfs, METER_FLOOR_DBFS);
    }

    #[test]
    fn the_listing_marks_the_default_and_says_why_a_device_cannot_open() {
        let inputs = [
            InputInfo {
                name: "default".into(),
                description: "Default Audio Device".into(),
                is_default: true,
                formats: Ok("1-2 ch, 48000 Hz, f32".into()),
            },
            InputInfo {
                name: "hw:CARD=USB,DEV=0".into(),
                description: "USB Mixer".into(),
                is_default: false,
                formats: Err("Device or resource busy".into()),
            },
        ];
        let text = format_inputs(&inputs);
        let want = "Input devices (pass the name to --input; * is the default):\n\
            * default            Default Audio Device  [1-2 ch, 48000 Hz, f32]\n\
            Known to ALSA but cannot capture now:\n  \
            hw:CARD=USB,DEV=0  USB Mixer  [Device or resource busy]\n";
        assert_eq!(text, want);
    }
}
