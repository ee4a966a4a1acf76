//! Fragmented MP4 (CMAF) for Opus, as HLS segments carry it: an init segment (`ftyp` and a
//! `moov` with an `Opus` sample entry and its `dOps` box) and media fragments (`moof` and
//! `mdat`), one per HLS part.
//!
//! Pure: sizes and durations in, bytes out. Boxes follow ISO/IEC 14496-12 and "Encapsulation
//! of Opus in ISO Base Media File Format" (the `dOps` box is big-endian, unlike `OpusHead`).

use bytes::{BufMut, Bytes, BytesMut};

use super::opus::OpusHead;

/// Opus in MP4 counts time in 48 kHz samples whatever the input rate.
pub const OPUS_TIMESCALE: u32 = 48_000;

/// Writes one box: its size and type around what `body` puts in.
fn boxed(out: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0);
    out.put_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - start).expect("boxes here are small");
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: a box whose body starts with a version and 24 bits of flags.
fn full(
    out: &mut BytesMut,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    boxed(out, kind, |out| {
        out.put_u32((u32::from(version) << 24) | (flags & 0x00FF_FFFF));
        body(out);
    });
}

/// The unity matrix of `mvhd` and `tkhd`.
fn matrix(out: &mut BytesMut) {
    for value in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        out.put_u32(value);
    }
}

/// The init segment of an Opus track described by `head` (an `OpusHead` packet).
pub fn opus_init(head: &OpusHead) -> Bytes {
    let mut out = BytesMut::with_capacity(700);
    boxed(&mut out, b"ftyp", |out| {
        out.put_slice(b"iso6");
        out.put_u32(0);
        for brand in [b"iso6", b"cmfc", b"mp41"] {
            out.put_slice(brand);
        }
    });
    boxed(&mut out, b"moov", |out| {
        full(out, b"mvhd", 0, 0, |out| {
            out.put_u32(0); // creation time
            out.put_u32(0); // modification time
            out.put_u32(1_000); // timescale
            out.put_u32(0); // duration: fragmented
            out.put_u32(0x0001_0000); // rate 1.0
            out.put_u16(0x0100); // volume 1.0
            out.put_bytes(0, 10);
            matrix(out);
            out.put_bytes(0, 24); // pre_defined
            out.put_u32(2); // next track id
        });
        boxed(out, b"trak", |out| {
            full(out, b"tkhd", 0, 0x3, |out| {
                out.put_u32(0);
                out.put_u32(0);
                out.put_u32(1); // track id
                out.put_u32(0);
                out.put_u32(0); // duration
                out.put_bytes(0, 8);
                out.put_u16(0); // layer
                out.put_u16(0); // alternate group
                out.put_u16(0x0100); // volume
                out.put_u16(0);
                matrix(out);
                out.put_u32(0); // width
                out.put_u32(0); // height
            });
            boxed(out, b"mdia", |out| {
                full(out, b"mdhd", 0, 0, |out| {
                    out.put_u32(0);
                    out.put_u32(0);
                    out.put_u32(OPUS_TIMESCALE);
                    out.put_u32(0);
                    out.put_u16(0x55C4); // language "und"
                    out.put_u16(0);
                });
                full(out, b"hdlr", 0, 0, |out| {
                    out.put_u32(0);
                    out.put_slice(b"soun");
                    out.put_bytes(0, 12);
                    out.put_slice(b"SoundHandler\0");
                });
                boxed(out, b"minf", |out| {
                    full(out, b"smhd", 0, 0, |out| out.put_u32(0));
                    boxed(out, b"dinf", |out| {
                        full(out, b"dref", 0, 0, |out| {
                            out.put_u32(1);
                            full(out, b"url ", 0, 1, |_| {});
                        });
                    });
                    boxed(out, b"stbl", |out| {
                        full(out, b"stsd", 0, 0, |out| {
                            out.put_u32(1);
                            opus_sample_entry(out, head);
                        });
                        full(out, b"stts", 0, 0, |out| out.put_u32(0));
                        full(out, b"stsc", 0, 0, |out| out.put_u32(0));
                        full(out, b"stsz", 0, 0, |out| {
                            out.put_u32(0);
                            out.put_u32(0);
                        });
                        full(out, b"stco", 0, 0, |out| out.put_u32(0));
                    });
                });
            });
        });
        boxed(out, b"mvex", |out| {
            full(out, b"trex", 0, 0, |out| {
                out.put_u32(1); // track id
                out.put_u32(1); // sample description index
                out.put_u32(0); // default duration
                out.put_u32(0); // default size
                out.put_u32(0); // default flags: every sample is a sync sample
            });
        });
    });
    out.freeze()
}

/// The `Opus` sample entry with its `dOps` box.
fn opus_sample_entry(out: &mut BytesMut, head: &OpusHead) {
    boxed(out, b"Opus", |out| {
        out.put_bytes(0, 6);
        out.put_u16(1); // data reference index
        out.put_bytes(0, 8);
        out.put_u16(u16::from(head.channels));
        out.put_u16(16); // sample size
        out.put_u16(0);
        out.put_u16(0);
        out.put_u32(OPUS_TIMESCALE << 16);
        boxed(out, b"dOps", |out| {
            out.put_u8(0); // version
            out.put_u8(head.channels);
            out.put_u16(head.pre_skip);
            out.put_u32(head.input_sample_rate);
            out.put_i16(head.output_gain);
            out.put_u8(0); // channel mapping family 0 (mono or stereo)
        });
    });
}

/// One fragment (`moof` then `mdat`) of `samples` (each with its duration in 48 kHz
/// samples), starting at `decode_time`; `sequence` numbers the fragment.
pub fn fragment(sequence: u32, decode_time: u64, samples: &[(Bytes, u32)]) -> Bytes {
    let data: usize = samples.iter().map(|(s, _)| s.len()).sum();
    let mut out = BytesMut::with_capacity(100 + 8 * samples.len() + data);
    let mut offset_at = 0;
    boxed(&mut out, b"moof", |out| {
        full(out, b"mfhd", 0, 0, |out| out.put_u32(sequence));
        boxed(out, b"traf", |out| {
            // default-base-is-moof: data offsets count from this moof's first byte.
            full(out, b"tfhd", 0, 0x02_0000, |out| out.put_u32(1));
            full(out, b"tfdt", 1, 0, |out| out.put_u64(decode_time));
            // data offset, sample durations and sizes present
            full(out, b"trun", 0, 0x00_0301, |out| {
                out.put_u32(u32::try_from(samples.len()).expect("a part holds few samples"));
                offset_at = out.len();
                out.put_u32(0);
                for (sample, duration) in samples {
                    out.put_u32(*duration);
                    out.put_u32(u32::try_from(sample.len()).expect("audio samples are small"));
                }
            });
        });
    });
    // The data starts after the mdat's 8-byte header.
    let data_offset = u32::try_from(out.len() + 8).expect("a moof is small");
    out[offset_at..offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
    let mdat_size = u32::try_from(8 + data).expect("a part is small");
    out.put_u32(mdat_size);
    out.put_slice(b"mdat");
    for (sample, _) in samples {
        out.put_slice(sample);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (type, body) of each box at this level.
    fn boxes(mut data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        while data.len() >= 8 {
            let size = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
            assert!(size >= 8 && size <= data.len(), "box size {size} of {}", data.len());
            out.push((data[4..8].try_into().unwrap(), &data[8..size]));
            data = &data[size..];
        }
        assert!(data.is_empty(), "trailing bytes");
        out
    }

    fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
        boxes(data).into_iter().find(|(k, _)| k == kind).map(|(_, b)| b).unwrap()
    }

    #[test]
    fn the_init_segment_describes_the_opus_track() {
        let head = OpusHead::parse(&OpusHead::build(2, 312, 44_100)).unwrap();
        let init = opus_init(&head);
        let top: Vec<_> = boxes(&init).into_iter().map(|(k, _)| k).collect();
        assert_eq!(top, [*b"ftyp", *b"moov"]);
        let moov = child(&init, b"moov");
        let stbl = child(child(child(child(moov, b"trak"), b"mdia"), b"minf"), b"stbl");
        let stsd = child(stbl, b"stsd");
        let entry = child(&stsd[8..], b"Opus");
        assert_eq!(u16::from_be_bytes([entry[16], entry[17]]), 2, "channel count");
        let dops = child(&entry[28..], b"dOps");
        assert_eq!(dops, [0, 2, 0x01, 0x38, 0, 0, 0xAC, 0x44, 0, 0, 0], "big-endian dOps");
        let mdhd = child(child(child(moov, b"trak"), b"mdia"), b"mdhd");
        assert_eq!(u32::from_be_bytes(mdhd[12..16].try_into().unwrap()), 48_000);
        assert!(boxes(moov).iter().any(|(k, _)| k == b"mvex"));
    }

    #[test]
    fn a_fragment_points_at_its_samples() {
        let samples = vec![(Bytes::from_static(b"abc"), 960), (Bytes::from_static(b"defgh"), 1920)];
        let frag = fragment(7, 96_000, &samples);
        let parts = boxes(&frag);
        assert_eq!((parts[0].0, parts[1].0), (*b"moof", *b"mdat"));
        assert_eq!(parts[1].1, b"abcdefgh");
        let traf = child(parts[0].1, b"traf");
        let tfdt = child(traf, b"tfdt");
        assert_eq!(u64::from_be_bytes(tfdt[4..12].try_into().unwrap()), 96_000);
        let trun = child(traf, b"trun");
        assert_eq!(u32::from_be_bytes(trun[4..8].try_into().unwrap()), 2);
        let offset = u32::from_be_bytes(trun[8..12].try_into().unwrap()) as usize;
        assert_eq!(&frag[offset..offset + 3], b"abc", "data offset counts from the moof");
        assert_eq!(&trun[12..20], [0, 0, 3, 0xC0, 0, 0, 0, 3], "duration 960, size 3");
    }
}
