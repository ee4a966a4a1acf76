//! The library's error type and its mapping to log levels.
//!
//! A session error ends only that session: it is logged in the session's task (debug when the
//! peer simply went away, warn otherwise) and never reaches the accept loop.

use std::io;

/// Everything that can end a session.
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
    HandshakeTimeout(std::time::Duration),
}

/// Result with the library's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Routine hang-ups (reset, broken pipe, closed mid-handshake) are logged at debug.
    pub fn is_expected(&self) -> bool {
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
            Error::WebSocket(Ws::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => true,
            Error::Http(crate::http::HttpError::Io(err)) => io_expected(err),
            _ => false,
        }
    }
}
