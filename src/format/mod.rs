//! Containers at the edges, pure and fuzzed: parsing what Icecast sources send and writing
//! what HTTP listeners read. The ring in between only holds codec frames (see `relay`).
//!
//! - [`demux`]: an Icecast source's body (Ogg/Opus, Ogg/Vorbis, MP3) into tracks, headers,
//!   frames and now playing; [`mux`]: frames back into Ogg or MP3 (with ICY) for a listener.
//! - [`ogg`]: pages, CRC, packets; [`opus`] and [`vorbis`]: their Ogg headers and packet
//!   durations; [`mp3`]: MPEG audio frame sync; [`icy`]: ICY metadata interleaving;
//!   [`mp4`]: fragmented MP4 for Opus; [`id3`]: the ID3 tags of HLS packed audio.

pub mod demux;
pub mod icy;
pub mod id3;
pub mod mp3;
pub mod mp4;
pub mod mux;
pub mod ogg;
pub mod opus;
pub mod vorbis;

/// Where a frame stands at the edge of its source's chained Ogg stream (a new link per title,
/// as liquidsoap, ices2 and ezstream send): the demuxer marks it, the ring carries it, and the
/// muxer ends and starts its own links there, so a listener's decoder restarts as it would
/// playing the source's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEdge {
    /// The last frame of its link: the link's final granule position ends `trim` samples
    /// before this frame's full duration does (the encoder's padding, not to be heard).
    Last {
        /// Samples to cut from the end of this frame.
        trim: u32,
    },
    /// The first frame of a new link whose last frame was not marked (its end page held no
    /// audio, or it had none).
    First,
}

/// A container format recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// Ogg pages (`OggS`).
    Ogg,
    /// MPEG audio frames, possibly after an ID3v2 tag.
    Mp3,
    /// Matroska/WebM (EBML magic).
    WebM,
}

impl Container {
    /// Recognises a container from the first bytes of a stream; `None` when unknown.
    /// Needs at least 4 bytes to decide.
    pub fn sniff(start: &[u8]) -> Option<Container> {
        let start = start.get(..4)?;
        if start == ogg::CAPTURE_PATTERN {
            Some(Container::Ogg)
        } else if start.starts_with(b"ID3") || mp3::parse_header(start).is_some() {
            Some(Container::Mp3)
        } else if start == [0x1A, 0x45, 0xDF, 0xA3] {
            Some(Container::WebM)
        } else {
            None
        }
    }

    /// The container a `Content-Type` names, if any.
    pub fn from_content_type(content_type: &str) -> Option<Container> {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "audio/ogg" | "application/ogg" | "audio/x-ogg" | "audio/opus" | "audio/vorbis"
            | "application/x-ogg" => Some(Container::Ogg),
            "audio/mpeg" | "audio/mp3" | "audio/x-mpeg" | "audio/mpeg3" | "audio/x-mp3" => {
                Some(Container::Mp3)
            }
            "audio/webm" | "video/webm" | "audio/x-matroska" | "video/x-matroska" => {
                Some(Container::WebM)
            }
            _ => None,
        }
    }

    /// The `Content-Type` listeners get for this container.
    pub fn content_type(self) -> &'static str {
        match self {
            Container::Ogg => "audio/ogg",
            Container::Mp3 => "audio/mpeg",
            Container::WebM => "audio/webm",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_recognised_by_their_first_bytes() {
        assert_eq!(Container::sniff(b"OggS\0\x02"), Some(Container::Ogg));
        assert_eq!(Container::sniff(b"ID3\x04"), Some(Container::Mp3));
        assert_eq!(Container::sniff(&[0xFF, 0xFB, 0x90, 0x44]), Some(Container::Mp3));
        assert_eq!(Container::sniff(&[0x1A, 0x45, 0xDF, 0xA3]), Some(Container::WebM));
        assert_eq!(Container::sniff(b"\x0d\x33\x67\xa9"), None);
        assert_eq!(Container::sniff(b"Ogg"), None, "too short to tell");
        assert_eq!(Container::from_content_type("application/ogg"), Some(Container::Ogg));
        assert_eq!(Container::from_content_type("Audio/MPEG; charset=x"), Some(Container::Mp3));
        assert_eq!(Container::from_content_type("text/plain"), None);
    }
}
