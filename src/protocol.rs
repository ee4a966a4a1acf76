//! The onair wire protocol: the binary frame header and the JSON control messages.
//!
//! Pure encode/decode with size limits and no I/O. The ingest side, the listener side and the
//! source client all use these functions, so the format lives in one place (docs/PROTOCOL.md).
//! Codec knowledge stops here: the relay only sees `keyframe`, `header`, `track` and bytes.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Version of the protocol announced in the listener's `hello` message.
pub const PROTOCOL_VERSION: u32 = 1;
/// Size of the binary frame header: `u8 flags`, `u8 track`, `u64 pts` (big-endian).
pub const FRAME_HEADER_BYTES: usize = 10;
/// Flag bit 0: a listener may start decoding at this frame.
pub const FLAG_KEYFRAME: u8 = 0b01;
/// Flag bit 1: codec configuration (e.g. OpusHead) that replaces the track's stored header.
pub const FLAG_HEADER: u8 = 0b10;
/// Bits that must be zero.
pub const FLAG_RESERVED: u8 = !(FLAG_KEYFRAME | FLAG_HEADER);
/// Most tracks a source may declare.
pub const MAX_TRACKS: usize = 16;
/// Longest metadata string field, in bytes.
pub const MAX_METADATA_FIELD_BYTES: usize = 1024;

/// A decoded binary frame header; the payload follows it in the same message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Flag bits (`FLAG_KEYFRAME`, `FLAG_HEADER`).
    pub flags: u8,
    /// Track id, as declared in the `start` message.
    pub track: u8,
    /// Presentation time in microseconds.
    pub pts: u64,
}

impl FrameHeader {
    /// Whether a listener may start decoding at this frame.
    pub fn is_keyframe(&self) -> bool {
        self.flags & FLAG_KEYFRAME != 0
    }

    /// Whether this frame carries codec configuration.
    pub fn is_header(&self) -> bool {
        self.flags & FLAG_HEADER != 0
    }
}

/// Why a binary frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the fixed header.
    #[error("truncated frame: {0} bytes, the header alone is 10")]
    Truncated(usize),
    /// A reserved flag bit is set.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
}

/// Parses the fixed header at the start of a binary message.
///
/// # Errors
/// `Truncated` when the message is shorter than the header, `ReservedFlags` when a reserved bit is set.
pub fn decode_frame_header(message: &[u8]) -> Result<FrameHeader, FrameError> {
    let Some(head) = message.get(..FRAME_HEADER_BYTES) else {
        return Err(FrameError::Truncated(message.len()));
    };
    let flags = head[0];
    if flags & FLAG_RESERVED != 0 {
        return Err(FrameError::ReservedFlags(flags));
    }
    let mut pts = [0u8; 8];
    pts.copy_from_slice(&head[2..10]);
    Ok(FrameHeader { flags, track: head[1], pts: u64::from_be_bytes(pts) })
}

/// Builds one binary frame message: header then payload, in one allocation.
pub fn encode_frame(header: FrameHeader, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_BYTES + payload.len());
    buf.put_u8(header.flags);
    buf.put_u8(header.track);
    buf.put_u64(header.pts);
    buf.put_slice(payload);
    buf.freeze()
}

/// What kind of media a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// Sound.
    Audio,
    /// Pictures.
    Video,
}

/// Codecs a track may declare. The relay does not decode them; players need the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Opus (audio).
    Opus,
    /// MPEG-1/2 Layer III (audio).
    Mp3,
    /// AAC (audio).
    Aac,
    /// Vorbis (audio).
    Vorbis,
    /// FLAC (audio).
    Flac,
    /// VP8 (video).
    Vp8,
    /// VP9 (video).
    Vp9,
    /// H.264 / AVC (video).
    H264,
    /// AV1 (video).
    Av1,
}

impl Codec {
    /// Largest header frame payload (codec configuration) a track of this codec may send.
    /// An `OpusHead` is at most 276 bytes (19, plus a mapping table of up to 255 channels);
    /// AAC's AudioSpecificConfig a few bytes; MP3 has none. Vorbis headers are larger: the
    /// setup header holds the codebooks (libvorbis writes 2.5-11 KB, the most for 5.1 at
    /// q10), and the comment header tags, so 64 KiB leaves several times the largest seen;
    /// FLAC's metadata blocks and video configurations (avcC, av1C, vpcC) get the same.
    /// Cover art has no place in a header frame.
    pub fn max_header_bytes(self) -> usize {
        match self {
            Codec::Opus => 512,
            Codec::Mp3 | Codec::Aac => 1024,
            Codec::Vorbis | Codec::Flac | Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1 => {
                64 << 10
            }
        }
    }

    /// The kind of track this codec belongs on.
    pub fn kind(self) -> TrackKind {
        match self {
            Codec::Opus | Codec::Mp3 | Codec::Aac | Codec::Vorbis | Codec::Flac => TrackKind::Audio,
            Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1 => TrackKind::Video,
        }
    }
}

/// One track declared by a source's `start` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Track {
    /// Id used in the frame header (0-255), unique within the stream.
    pub id: u8,
    /// Audio or video.
    pub kind: TrackKind,
    /// Codec of the frames on this track.
    pub codec: Codec,
    /// Audio sample rate in Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// Audio channel count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Video width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Video height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Nominal bitrate in bits per second, if the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u32>,
}

impl Track {
    /// An audio track.
    pub fn audio(
        id: u8,
        codec: Codec,
        sample_rate: u32,
        channels: u8,
        bitrate: Option<u32>,
    ) -> Self {
        Self {
            id,
            kind: TrackKind::Audio,
            codec,
            sample_rate: Some(sample_rate),
            channels: Some(channels),
            width: None,
            height: None,
            bitrate,
        }
    }
}

/// Now-playing information. `pts` is the media time from which it applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Track title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Artist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// Album.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// A link about what is playing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Media time (microseconds) at which this applies; absent means "now".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pts: Option<u64>,
}

impl Metadata {
    /// `"artist - title"`, or whichever of the two is present.
    pub fn display_title(&self) -> String {
        match (&self.artist, &self.title) {
            (Some(a), Some(t)) => format!("{a} - {t}"),
            (None, Some(t)) => t.clone(),
            (Some(a), None) => a.clone(),
            (None, None) => String::new(),
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// A text message sent by a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceMessage {
    /// Must be the first message: the tracks that follow.
    Start {
        /// Declared tracks.
        tracks: Vec<Track>,
    },
    /// Now-playing update.
    Metadata(Metadata),
}

/// Why a source's text message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, or not one of the known message shapes.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A `start` message that is well formed but declares impossible tracks.
    #[error("invalid start message: {0}")]
    InvalidStart(String),
    /// A metadata field is longer than `MAX_METADATA_FIELD_BYTES`.
    #[error("metadata field `{0}` is longer than 1024 bytes")]
    MetadataTooLong(&'static str),
}

/// Parses and validates a source's text message.
///
/// # Errors
/// `Malformed` for anything that is not a known message, `InvalidStart` for bad track lists
/// (none, too many, duplicate ids, a codec on the wrong kind of track), `MetadataTooLong`.
pub fn decode_source_message(text: &str) -> Result<SourceMessage, MessageError> {
    let msg: SourceMessage =
        serde_json::from_str(text).map_err(|err| MessageError::Malformed(err.to_string()))?;
    match &msg {
        SourceMessage::Start { tracks } => validate_tracks(tracks)?,
        SourceMessage::Metadata(meta) => validate_metadata(meta)?,
    }
    Ok(msg)
}

/// Checks a track list as a `start` message must declare it (also used for tracks relayed by
/// another cluster node).
///
/// # Errors
/// `InvalidStart` with the reason.
pub fn validate_tracks(tracks: &[Track]) -> Result<(), MessageError> {
    let invalid = |why: String| Err(MessageError::InvalidStart(why));
    if tracks.is_empty() {
        return invalid("no tracks".into());
    }
    if tracks.len() > MAX_TRACKS {
        return invalid(format!("{} tracks, at most {MAX_TRACKS}", tracks.len()));
    }
    for (i, track) in tracks.iter().enumerate() {
        if tracks[..i].iter().any(|t| t.id == track.id) {
            return invalid(format!("track id {} declared twice", track.id));
        }
        if track.codec.kind() != track.kind {
            return invalid(format!(
                "track {}: codec {:?} is not {:?}",
                track.id, track.codec, track.kind
            ));
        }
        if track.kind == TrackKind::Audio && (track.width.is_some() || track.height.is_some()) {
            return invalid(format!("track {}: audio has no width or height", track.id));
        }
        if track.kind == TrackKind::Video
            && (track.sample_rate.is_some() || track.channels.is_some())
        {
            return invalid(format!("track {}: video has no sample_rate or channels", track.id));
        }
        if track.sample_rate == Some(0) || track.channels == Some(0) {
            return invalid(format!(
                "track {}: sample_rate and channels must be positive",
                track.id
            ));
        }
    }
    Ok(())
}

/// Checks now-playing fields against `MAX_METADATA_FIELD_BYTES`.
///
/// # Errors
/// `MetadataTooLong` naming the field.
pub fn validate_metadata(meta: &Metadata) -> Result<(), MessageError> {
    let fields = [
        ("title", &meta.title),
        ("artist", &meta.artist),
        ("album", &meta.album),
        ("url", &meta.url),
    ];
    for (name, value) in fields {
        if value.as_ref().is_some_and(|v| v.len() > MAX_METADATA_FIELD_BYTES) {
            return Err(MessageError::MetadataTooLong(name));
        }
    }
    Ok(())
}

/// Encodes a source's text message (used by `onair push` and tests).
pub fn encode_source_message(msg: &SourceMessage) -> String {
    serde_json::to_string(msg).expect("protocol messages always serialize")
}

/// A text message sent to a listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ListenerEvent {
    /// First message on every listener connection.
    Hello {
        /// `PROTOCOL_VERSION`.
        version: u32,
        /// Stream name.
        stream: String,
        /// Whether a source is connected now.
        live: bool,
        /// Tracks of the current (or last) source; empty before any source connected.
        tracks: Vec<Track>,
        /// Latest now-playing information.
        metadata: Option<Metadata>,
        /// Relay software and version.
        server: String,
    },
    /// Now-playing update (same fields as the source sent).
    Metadata(Metadata),
    /// The source connected or went away.
    Source {
        /// `online` or `offline`.
        state: SourceState,
        /// The new source's tracks (with `online` only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tracks: Option<Vec<Track>>,
    },
    /// The listener fell behind and jumped forward over this many frames.
    Skipped {
        /// Frames never sent to this listener.
        frames: u64,
    },
}

/// Whether a stream has a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// A source is connected.
    Online,
    /// No source is connected.
    Offline,
}

impl ListenerEvent {
    /// The event as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("protocol messages always serialize")
    }
}

/// WebSocket close codes used by onair: the standard ones it sends and its own (4000-4011).
/// `error::Closing` maps every reason to one of these; nothing else names a code.
pub mod close {
    /// The session is over (standard "normal closure").
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down (standard "going away").
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke RFC 6455 (standard "protocol error").
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8 (standard "invalid frame payload data").
    pub const INVALID_DATA: u16 = 1007;
    /// A message exceeded `max_message_bytes` (standard "message too big").
    pub const TOO_BIG: u16 = 1009;
    /// The `start` message is malformed or invalid, or was sent twice.
    pub const BAD_START: u16 = 4000;
    /// A binary frame or metadata arrived before the `start` message.
    pub const NOT_STARTED: u16 = 4001;
    /// A binary message is shorter than the 10-byte frame header.
    pub const TRUNCATED_FRAME: u16 = 4002;
    /// A reserved flag bit is set in a frame header.
    pub const RESERVED_FLAGS: u16 = 4003;
    /// A frame names a track the `start` message did not declare.
    pub const UNKNOWN_TRACK: u16 = 4004;
    /// A text message that is not valid metadata.
    pub const BAD_MESSAGE: u16 = 4005;
    /// The source sends faster than the stream's `max_ingest_bitrate`.
    pub const RATE_LIMITED: u16 = 4006;
    /// A listener stayed behind the live edge longer than `slow_listener_timeout`.
    pub const TOO_SLOW: u16 = 4008;
    /// No message (or pong) from the peer within `dead_peer_timeout`.
    pub const DEAD_PEER: u16 = 4009;
    /// An operator removed the source (admin action).
    pub const KICKED: u16 = 4010;
    /// The stream is live on another node of the cluster: this source lost the race for its
    /// live lease. Like a 409, worth retrying later.
    pub const LIVE_ELSEWHERE: u16 = 4011;

    /// Whether a source closed with `code` would be refused again for the same reason if it
    /// reconnected and sent the same thing (its messages were refused, or an operator removed
    /// it): a source client should stop instead of retrying.
    pub fn is_permanent(code: u16) -> bool {
        matches!(
            code,
            TOO_BIG
                | BAD_START
                | NOT_STARTED
                | TRUNCATED_FRAME
                | RESERVED_FLAGS
                | UNKNOWN_TRACK
                | BAD_MESSAGE
                | KICKED
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_round_trips() {
        let header = FrameHeader {
            flags: FLAG_KEYFRAME | FLAG_HEADER,
            track: 7,
            pts: 0x0102_0304_0506_0708,
        };
        let msg = encode_frame(header, b"payload");
        assert_eq!(&msg[..10], &[3, 7, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&msg[10..], b"payload");
        let back = decode_frame_header(&msg).unwrap();
        assert_eq!(back, header);
        assert!(back.is_keyframe() && back.is_header());
    }

    #[test]
    fn truncated_and_reserved_frames_are_refused() {
        assert_eq!(decode_frame_header(&[1, 0, 0]), Err(FrameError::Truncated(3)));
        assert_eq!(decode_frame_header(&[0x04; 10]), Err(FrameError::ReservedFlags(0x04)));
        assert!(decode_frame_header(&[0; 10]).is_ok(), "an empty payload is allowed");
    }

    #[test]
    fn start_message_parses_the_documented_example() {
        let text = r#"{"type":"start","tracks":[{"id":0,"kind":"audio","codec":"opus","sample_rate":48000,"channels":2}]}"#;
        let SourceMessage::Start { tracks } = decode_source_message(text).unwrap() else {
            panic!("not a start message")
        };
        assert_eq!(tracks[0].codec, Codec::Opus);
        assert_eq!(tracks[0].channels, Some(2));
    }

    #[test]
    fn invalid_start_messages_are_refused_with_a_reason() {
        for (text, why) in [
            (r#"{"type":"start","tracks":[]}"#, "no tracks"),
            (
                r#"{"type":"start","tracks":[{"id":0,"kind":"audio","codec":"opus"},{"id":0,"kind":"audio","codec":"mp3"}]}"#,
                "twice",
            ),
            (r#"{"type":"start","tracks":[{"id":0,"kind":"audio","codec":"vp8"}]}"#, "is not"),
            (
                r#"{"type":"start","tracks":[{"id":0,"kind":"video","codec":"vp8","channels":2}]}"#,
                "video has no",
            ),
        ] {
            let err = decode_source_message(text).unwrap_err();
            assert!(matches!(err, MessageError::InvalidStart(_)), "{text}: {err}");
            assert!(err.to_string().contains(why), "{text}: {err}");
        }
        for text in [
            "",
            "{",
            r#"{"type":"nope"}"#,
            r#"{"type":"start","tracks":[{"id":300,"kind":"audio","codec":"opus"}]}"#,
            r#"{"type":"start","tracks":[{"id":0,"kind":"audio","codec":"wav"}]}"#,
        ] {
            assert!(
                matches!(decode_source_message(text), Err(MessageError::Malformed(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn metadata_fields_are_bounded() {
        let long = "x".repeat(MAX_METADATA_FIELD_BYTES + 1);
        let text = format!(r#"{{"type":"metadata","title":"{long}"}}"#);
        assert_eq!(decode_source_message(&text), Err(MessageError::MetadataTooLong("title")));
        let ok = decode_source_message(
            r#"{"type":"metadata","title":"Song","artist":"Band","pts":40000}"#,
        )
        .unwrap();
        let SourceMessage::Metadata(meta) = ok else { panic!("not metadata") };
        assert_eq!(meta.display_title(), "Band - Song");
        assert_eq!(meta.pts, Some(40000));
    }

    #[test]
    fn listener_events_have_the_documented_shape() {
        let skipped = ListenerEvent::Skipped { frames: 12 }.to_json();
        assert_eq!(skipped, r#"{"type":"skipped","frames":12}"#);
        let offline = ListenerEvent::Source { state: SourceState::Offline, tracks: None }.to_json();
        assert_eq!(offline, r#"{"type":"source","state":"offline"}"#);
    }
}
