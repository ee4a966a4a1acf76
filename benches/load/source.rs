//! The sources: one thread per server pushing the same stamped frames on the same schedule,
//! over onair's WebSocket ingest or the Icecast source protocol (PUT, which both servers
//! accept), as Ogg/Opus pages or MP3 frames.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::wire::{self, OggWriter};

/// What a source sends.
#[derive(Clone, Copy, Debug)]
pub struct Feed {
    /// Payload bytes per frame (the stamp included).
    pub frame_bytes: usize,
    /// Time between frames.
    pub interval: Duration,
    /// Video-like: a video track, a keyframe every `keyframe_every` frames.
    pub video: bool,
    /// Keyframe period in frames (video only).
    pub keyframe_every: u64,
    /// MP3 frames (`wire::mp3_frame`) instead of Opus-like payloads (Icecast protocol only).
    pub mp3: bool,
}

impl Feed {
    /// 128 kbit/s: 320-byte payloads every 20 ms.
    pub const AUDIO: Feed = Feed {
        frame_bytes: 320,
        interval: Duration::from_millis(20),
        video: false,
        keyframe_every: 1,
        mp3: false,
    };
    /// 128 kbit/s MP3: a 384-byte MPEG-1 Layer III frame (48 kHz) every 24 ms.
    pub const MP3: Feed = Feed {
        frame_bytes: wire::MP3_FRAME_BYTES,
        interval: Duration::from_millis(24),
        video: false,
        keyframe_every: 1,
        mp3: true,
    };
    /// 4 Mbit/s: 20 000-byte frames at 25 per second, a keyframe every 2 s.
    pub const VIDEO: Feed = Feed {
        frame_bytes: 20_000,
        interval: Duration::from_millis(40),
        video: true,
        keyframe_every: 50,
        mp3: false,
    };
}

/// Where a source pushes.
#[derive(Clone, Debug)]
pub enum Target {
    /// onair's WebSocket ingest.
    Onair {
        /// Relay address.
        addr: SocketAddr,
        /// Stream name.
        stream: String,
        /// Stream key.
        key: String,
    },
    /// The Icecast source protocol (Icecast, and onair's Icecast ingest, where the password
    /// is the stream's key).
    Icecast {
        /// Server address.
        addr: SocketAddr,
        /// Mount, e.g. `/bench.ogg`.
        mount: String,
        /// Source password.
        password: String,
    },
}

/// A running source thread.
pub struct Source {
    /// Sequence number of the newest frame sent (u64::MAX before the first).
    pub sent: Arc<AtomicU64>,
    /// Frames written more than 10 ms after their scheduled time (the server held us back).
    pub late: Arc<AtomicU64>,
    /// The worst such delay, µs.
    pub late_max_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Source {
    /// Connects and starts pushing frame 0 at `start_ns` (CLOCK_MONOTONIC); every source
    /// started with the same `start_ns` and feed sends frame k at the same instant.
    ///
    /// # Errors
    /// When the server refuses the source.
    pub fn start(target: Target, feed: Feed, start_ns: u64) -> anyhow::Result<Source> {
        let mut conn = connect(&target, feed)?;
        let sent = Arc::new(AtomicU64::new(u64::MAX));
        let late = Arc::new(AtomicU64::new(0));
        let late_max_us = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, l, lm, st) = (sent.clone(), late.clone(), late_max_us.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("source".into()).spawn(move || {
            let mut payload = wire::payload(feed.frame_bytes);
            let mut mp3 = wire::mp3_frame();
            let interval = feed.interval.as_nanos() as u64;
            let mut ogg = OggWriter::new(0x6f6e_6169);
            if let (Conn::Icecast(stream), false) = (&mut conn, feed.mp3) {
                stream.write_all(&ogg.page(&wire::opus_head(), 0, true))?;
                stream.write_all(&ogg.page(&wire::opus_tags(), 0, false))?;
            }
            let mut seq = 0u64;
            while !st.load(Ordering::Relaxed) {
                let due = start_ns + seq * interval;
                sleep_until(due);
                let now = wire::mono_ns();
                let lateness = now.saturating_sub(due) / 1_000;
                if lateness > 10_000 {
                    l.fetch_add(1, Ordering::Relaxed);
                    lm.fetch_max(lateness, Ordering::Relaxed);
                }
                if feed.mp3 {
                    wire::stamp(&mut mp3[wire::MP3_STAMP_AT..], seq, now);
                } else {
                    wire::stamp(&mut payload, seq, now);
                }
                match &mut conn {
                    Conn::Onair(stream) => {
                        let key = !feed.video || seq.is_multiple_of(feed.keyframe_every);
                        let mut message = Vec::with_capacity(10 + payload.len());
                        message.push(u8::from(key));
                        message.push(0);
                        message.extend_from_slice(&(seq * interval / 1_000).to_be_bytes());
                        message.extend_from_slice(&payload);
                        stream.write_all(&wire::client_frame(0x2, &message))?;
                    }
                    Conn::Icecast(stream) if feed.mp3 => stream.write_all(&mp3)?,
                    Conn::Icecast(stream) => {
                        let samples = interval / 1_000_000 * 48;
                        stream.write_all(&ogg.page(&payload, (seq + 1) * samples, false))?;
                    }
                }
                s.store(seq, Ordering::Release);
                seq += 1;
            }
            Ok(())
        })?;
        Ok(Source { sent, late, late_max_us, stop, thread: Some(thread) })
    }

    /// The newest frame sent, if any.
    pub fn newest(&self) -> Option<u64> {
        let s = self.sent.load(Ordering::Acquire);
        (s != u64::MAX).then_some(s)
    }

    /// Stops the thread (it closes its connection).
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Err(err)) => eprintln!("source ended: {err:#}"),
                Err(_) => eprintln!("source thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop_now();
    }
}

enum Conn {
    Onair(TcpStream),
    Icecast(TcpStream),
}

fn sleep_until(due_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (due_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (due_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: an absolute sleep on CLOCK_MONOTONIC with a valid timespec.
    unsafe {
        libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut())
    };
}

/// Reads an HTTP response head; returns its status code.
fn read_head(stream: &mut TcpStream) -> anyhow::Result<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            bail!("connection closed during the response head");
        }
        head.push(byte[0]);
        if head.len() > 16 << 10 {
            bail!("response head too long");
        }
    }
    let text = String::from_utf8_lossy(&head);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    code.with_context(|| format!("bad response head {text:?}"))
}

fn connect(target: &Target, feed: Feed) -> anyhow::Result<Conn> {
    match target {
        Target::Onair { addr, stream, key } => {
            let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.set_nodelay(true)?;
            write!(
                s,
                "GET /ingest/{stream} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: c291cmNlLWtleS0xMjM0NQ==\r\n\
                 Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {key}\r\n\r\n"
            )?;
            let code = read_head(&mut s)?;
            if code != 101 {
                bail!("onair refused the source: {code}");
            }
            let track = if feed.video {
                r#"{"id":0,"kind":"video","codec":"vp8","width":1280,"height":720}"#
            } else {
                r#"{"id":0,"kind":"audio","codec":"opus","sample_rate":48000,"channels":2}"#
            };
            let start = format!(r#"{{"type":"start","tracks":[{track}]}}"#);
            s.write_all(&wire::client_frame(0x1, start.as_bytes()))?;
            if !feed.video {
                let mut header = vec![0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                header.extend_from_slice(&wire::opus_head());
                s.write_all(&wire::client_frame(0x2, &header))?;
            }
            Ok(Conn::Onair(s))
        }
        Target::Icecast { addr, mount, password } => {
            let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.set_nodelay(true)?;
            let auth = wire::base64(format!("source:{password}").as_bytes());
            let content_type = if feed.mp3 { "audio/mpeg" } else { "application/ogg" };
            write!(
                s,
                "PUT {mount} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\n\
                 User-Agent: onair-load\r\nContent-Type: {content_type}\r\nIce-Public: 0\r\n\
                 Ice-Name: onair bench\r\nIce-Bitrate: 128\r\nExpect: 100-continue\r\n\r\n"
            )?;
            let code = read_head(&mut s)?;
            if code != 100 && code != 200 {
                bail!("{addr} refused the source on {mount}: {code}");
            }
            Ok(Conn::Icecast(s))
        }
    }
}
