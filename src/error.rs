//! The library's errors and the one table from each to what a peer sees.
//!
//! - [`Refusal`]: why a request is refused before any upgrade or stream, with its HTTP status
//!   (`Refusal::status`) and its metric label. Every refusal of every endpoint is a variant.
//! - [`Closing`]: why the relay ends a WebSocket session, with its close code
//!   (`Closing::code`, the codes themselves are in [`protocol::close`](crate::protocol::close)).
//! - [`Error`]: what ends a session unexpectedly (socket, WebSocket, HTTP parsing). It is
//!   logged in the session's task (debug when the peer simply went away, warn otherwise) and
//!   never reaches the accept loop.

use std::io;
use std::time::Duration;

use crate::auth::{Denied, Throttled};
use crate::http::MAX_REQUEST_HEAD_BYTES;
use crate::protocol::{close, FrameError, MessageError};
use crate::relay::{AttachError, KickReason, SourceError, StreamFull};
use crate::websocket::ClientError;

/// Everything that can end a session unexpectedly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// WebSocket protocol error on a source connection.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// Malformed HTTP request.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The peer did not complete its request head within the handshake timeout.
    #[error("request head not received within {0:?}")]
    HandshakeTimeout(Duration),
}

/// Result with the library's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A write that made no progress for `write_timeout` (the peer stopped reading).
    pub fn is_write_stall(&self) -> bool {
        match self {
            Error::Io(err) | Error::Http(crate::http::HttpError::Io(err)) => {
                err.kind() == io::ErrorKind::TimedOut
            }
            Error::WebSocket(tokio_tungstenite::tungstenite::Error::Io(err)) => {
                err.kind() == io::ErrorKind::TimedOut
            }
            _ => false,
        }
    }

    /// Routine hang-ups (reset, broken pipe, closed mid-handshake) are logged at debug.
    pub fn is_expected(&self) -> bool {
        use tokio_tungstenite::tungstenite::error::ProtocolError;
        use tokio_tungstenite::tungstenite::Error as Ws;
        let io_expected = |err: &io::Error| {
            matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionAborted
            )
        };
        match self {
            Error::Io(err) => io_expected(err),
            Error::WebSocket(Ws::Io(err)) => io_expected(err),
            Error::WebSocket(Ws::ConnectionClosed | Ws::AlreadyClosed) => true,
            Error::WebSocket(Ws::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => true,
            Error::Http(crate::http::HttpError::Io(err)) => io_expected(err),
            _ => false,
        }
    }
}

/// Why a request is refused, answered with a plain-text reason before any upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `max_connections` are open.
    #[error("the relay is at its connection limit, try again later")]
    ConnectionLimit,
    /// `max_connections_per_ip` are open from the peer's address.
    #[error("too many connections from your address")]
    AddressLimit,
    /// The request head took longer than `handshake_timeout`.
    #[error("request head not received in time")]
    HeadTimeout,
    /// The request head is larger than `MAX_REQUEST_HEAD_BYTES`.
    #[error("request head larger than {MAX_REQUEST_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// Not an HTTP/1.x request.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A method the endpoint does not take.
    #[error("method not allowed")]
    Method,
    /// A WebSocket endpoint asked with another method than GET.
    #[error("WebSocket endpoints take GET")]
    UpgradeMethod,
    /// A WebSocket endpoint asked without `Upgrade: websocket`.
    #[error("this is a WebSocket endpoint: send Upgrade: websocket")]
    NotWebSocket,
    /// Another WebSocket version than 13.
    #[error("only WebSocket version 13 is supported")]
    WebSocketVersion,
    /// No `Sec-WebSocket-Key`.
    #[error("missing Sec-WebSocket-Key")]
    NoWebSocketKey,
    /// A source sent data before the upgrade was answered.
    #[error("data sent before the handshake completed")]
    EarlyData,
    /// No stream of that name.
    #[error("no such stream")]
    NoSuchStream,
    /// An Icecast mount that names no stream.
    #[error("no such mount")]
    NoSuchMount,
    /// A WebSocket source without the stream's key (or with a wrong one).
    #[error("missing or wrong stream key")]
    WrongKey,
    /// An Icecast source without the stream's key as its Basic password (or a wrong one).
    #[error("missing or wrong source password")]
    WrongPassword,
    /// An admin request without valid credentials.
    #[error("authentication required")]
    AdminCredentials,
    /// Too many failed logins from the peer's address lately.
    #[error(transparent)]
    Throttled(#[from] Throttled),
    /// An admin command for the operator (`admin_password`), asked with a stream's key.
    #[error("this command needs the admin password")]
    AdminOnly,
    /// An `/admin` request sent by a page of another site (`Sec-Fetch-Site`, `Origin`).
    #[error("cross-site admin requests are refused")]
    CrossSite,
    /// The page's `Origin` is not in `allowed_origins`.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// A listener without a valid signed link to a private stream.
    #[error(transparent)]
    Link(#[from] Denied),
    /// A second live WebSocket source.
    #[error("another source is already live on this stream")]
    Busy,
    /// A second live Icecast source. Icecast answers 403 "Mountpoint in use" here, and
    /// libshout-based tools read that status as "the mount is taken", so we do too.
    #[error("Mountpoint in use")]
    MountInUse,
    /// The stream has its `max_listeners`.
    #[error(transparent)]
    StreamFull(#[from] StreamFull),
    /// An Icecast source whose body framing headers are unusable.
    #[error("bad Content-Length or Transfer-Encoding")]
    BodyFraming,
    /// An Icecast source in a container the relay cannot read.
    #[error("WebM sources are not supported: send Ogg/Opus, Ogg/Vorbis or MP3")]
    SourceContainer,
    /// An HTTP listener asked for a container or stream the relay cannot serve it as; the
    /// reason says which URL works.
    #[error("{0}")]
    Listen(String),
}

impl Refusal {
    /// The HTTP status answered.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_)
            | Refusal::NoWebSocketKey
            | Refusal::EarlyData
            | Refusal::BodyFraming => 400,
            Refusal::WrongKey | Refusal::WrongPassword | Refusal::AdminCredentials => 401,
            Refusal::Link(denied) => denied.status(),
            Refusal::OriginNotAllowed
            | Refusal::MountInUse
            | Refusal::CrossSite
            | Refusal::AdminOnly => 403,
            Refusal::NoSuchStream | Refusal::NoSuchMount | Refusal::Listen(_) => 404,
            Refusal::Method | Refusal::UpgradeMethod => 405,
            Refusal::HeadTimeout => 408,
            Refusal::Busy => 409,
            Refusal::SourceContainer => 415,
            Refusal::NotWebSocket | Refusal::WebSocketVersion => 426,
            Refusal::Throttled(_) => 429,
            Refusal::HeadTooLarge => 431,
            Refusal::ConnectionLimit | Refusal::AddressLimit | Refusal::StreamFull(_) => 503,
        }
    }

    /// The `reason` label of `onair_refusals_total`: the limit's name for the connection
    /// limits, the status otherwise.
    pub fn label(&self) -> String {
        match self {
            Refusal::ConnectionLimit => "max_connections".into(),
            Refusal::AddressLimit => "max_connections_per_ip".into(),
            Refusal::HeadTimeout => "handshake_timeout".into(),
            Refusal::Throttled(_) => "login_throttle".into(),
            Refusal::CrossSite => "cross_site".into(),
            other => other.status().to_string(),
        }
    }
}

impl From<AttachError> for Refusal {
    fn from(err: AttachError) -> Self {
        match err {
            AttachError::Busy => Refusal::Busy,
        }
    }
}

/// Why the relay ends a WebSocket session; `code` is the close code sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Closing {
    /// The peer closed, or the session is done.
    #[error("normal closure")]
    Normal,
    /// The relay is shutting down.
    #[error("relay shutting down")]
    ShuttingDown,
    /// The peer broke RFC 6455.
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A message larger than the limit.
    #[error("message of {size} bytes, limit {max}")]
    TooBig {
        /// Its size, when known.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A bad `start` message, or a second one.
    #[error("{0}")]
    BadStart(String),
    /// A frame or metadata before `start`.
    #[error("send the start message first")]
    NotStarted,
    /// A binary message shorter than the frame header.
    #[error(transparent)]
    Frame(FrameError),
    /// A frame on a track the `start` message did not declare.
    #[error("frame on track {0}, which the start message did not declare")]
    UnknownTrack(u8),
    /// A text message that is not valid metadata.
    #[error("{0}")]
    BadMessage(String),
    /// The source sends faster than `max_ingest_bitrate`.
    #[error("over the stream's limit of {0} bit/s")]
    RateLimited(u64),
    /// A listener stayed behind the live edge longer than `slow_listener_timeout`.
    #[error("listener too slow")]
    TooSlow,
    /// The peer did not answer pings, or does not read.
    #[error("{0}")]
    DeadPeer(&'static str),
    /// An operator removed the source.
    #[error("removed by an operator")]
    Kicked,
    /// Another node of the cluster holds the stream's live lease.
    #[error("the stream is live on another node")]
    LiveElsewhere,
}

impl Closing {
    /// The close frame sent to the peer: the code and this reason.
    pub fn frame(&self) -> crate::websocket::WireFrame {
        crate::websocket::WireFrame::close(self.code(), &self.to_string())
    }

    /// The WebSocket close code.
    pub fn code(&self) -> u16 {
        match self {
            Closing::Normal => close::NORMAL,
            Closing::ShuttingDown => close::GOING_AWAY,
            Closing::Protocol(_) => close::PROTOCOL_ERROR,
            Closing::InvalidUtf8 => close::INVALID_DATA,
            Closing::TooBig { .. } => close::TOO_BIG,
            Closing::BadStart(_) => close::BAD_START,
            Closing::NotStarted => close::NOT_STARTED,
            Closing::Frame(FrameError::Truncated(_)) => close::TRUNCATED_FRAME,
            Closing::Frame(FrameError::ReservedFlags(_)) => close::RESERVED_FLAGS,
            Closing::UnknownTrack(_) => close::UNKNOWN_TRACK,
            Closing::BadMessage(_) => close::BAD_MESSAGE,
            Closing::RateLimited(_) => close::RATE_LIMITED,
            Closing::TooSlow => close::TOO_SLOW,
            Closing::DeadPeer(_) => close::DEAD_PEER,
            Closing::Kicked => close::KICKED,
            Closing::LiveElsewhere => close::LIVE_ELSEWHERE,
        }
    }
}

impl From<SourceError> for Closing {
    fn from(err: SourceError) -> Self {
        match err {
            SourceError::AlreadyStarted => Closing::BadStart(err.to_string()),
            SourceError::NotStarted => Closing::NotStarted,
            SourceError::UnknownTrack(track) => Closing::UnknownTrack(track),
            SourceError::HeaderTooLarge { size, max } => Closing::TooBig { size, max },
        }
    }
}

impl From<KickReason> for Closing {
    fn from(reason: KickReason) -> Self {
        match reason {
            KickReason::Operator => Closing::Kicked,
            KickReason::LiveElsewhere => Closing::LiveElsewhere,
        }
    }
}

impl From<FrameError> for Closing {
    fn from(err: FrameError) -> Self {
        Closing::Frame(err)
    }
}

impl From<ClientError> for Closing {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Protocol(why) => Closing::Protocol(why),
            ClientError::TooBig(max) => Closing::TooBig { size: max + 1, max },
            ClientError::InvalidUtf8 => Closing::InvalidUtf8,
        }
    }
}

impl Closing {
    /// A source's text message was refused; before `start`, a malformed message is a bad
    /// start.
    pub fn from_message(err: MessageError, started: bool) -> Self {
        match err {
            MessageError::Malformed(_) | MessageError::InvalidStart(_) if !started => {
                Closing::BadStart(err.to_string())
            }
            err => Closing::BadMessage(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_closing_has_its_documented_code() {
        let table = [
            (Closing::Normal, 1000),
            (Closing::ShuttingDown, 1001),
            (Closing::Protocol("x"), 1002),
            (Closing::InvalidUtf8, 1007),
            (Closing::TooBig { size: 2, max: 1 }, 1009),
            (Closing::BadStart("x".into()), 4000),
            (Closing::NotStarted, 4001),
            (Closing::Frame(FrameError::Truncated(3)), 4002),
            (Closing::Frame(FrameError::ReservedFlags(4)), 4003),
            (Closing::UnknownTrack(9), 4004),
            (Closing::BadMessage("x".into()), 4005),
            (Closing::RateLimited(1), 4006),
            (Closing::TooSlow, 4008),
            (Closing::DeadPeer("x"), 4009),
            (Closing::Kicked, 4010),
            (Closing::LiveElsewhere, 4011),
        ];
        for (closing, code) in table {
            assert_eq!(closing.code(), code, "{closing:?}");
        }
    }

    #[test]
    fn a_busy_stream_is_409_over_websocket_and_403_for_icecast_tools() {
        assert_eq!(Refusal::from(AttachError::Busy).status(), 409);
        assert_eq!(Refusal::MountInUse.status(), 403);
        assert_eq!(Refusal::ConnectionLimit.label(), "max_connections");
        assert_eq!(Refusal::WrongKey.label(), "401");
    }
}
