//! One WebSocket source: its messages decoded and pushed into its stream.
//!
//! `server.rs` authenticates and attaches the source (401/403/404/409 happen there, before
//! the upgrade); this module runs the session: `start`, frames, metadata, pings, and a
//! precise close code for every kind of bad input. Dropping the `SourceHandle` at the end
//! puts the stream offline (or hands it back to the auto-DJ).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::protocol::{self, close, FrameError, MessageError, SourceMessage};
use crate::relay::{SourceError, SourceHandle};

/// Time allowed to send a ping or a close frame to a source.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// A source may send this many seconds' worth of `max_ingest_bitrate` in one burst.
pub const INGEST_BURST_SECONDS: f64 = 2.0;

/// A token bucket over bytes: `max_ingest_bitrate` sustained, a couple of seconds of burst.
/// Shared by every kind of source (WebSocket here, Icecast in `icecast::source`).
#[derive(Debug)]
pub(crate) struct RateLimit {
    bytes_per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(bits_per_second: u64) -> Self {
        let bytes_per_second = bits_per_second as f64 / 8.0;
        Self {
            bytes_per_second,
            tokens: bytes_per_second * INGEST_BURST_SECONDS,
            last: Instant::now(),
        }
    }

    /// Takes `bytes` from the bucket; false when the source is over its limit.
    pub(crate) fn take(&mut self, bytes: usize) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.bytes_per_second;
        self.tokens = (self.tokens + refill).min(self.bytes_per_second * INGEST_BURST_SECONDS);
        self.last = now;
        self.tokens -= bytes as f64;
        self.tokens >= 0.0
    }
}

/// Why a source session was closed by the relay: a close code and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal(u16, String);

/// tungstenite settings for sources: messages up to `max_message_bytes`, modest buffers.
pub fn websocket_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(64 << 10)
        .write_buffer_size(0)
        .max_write_buffer_size(256 << 10)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
}

/// Runs a source session on an upgraded socket until it ends.
///
/// # Errors
/// Socket and WebSocket errors; protocol violations are handled here with a close code.
pub async fn serve(
    socket: TcpStream,
    mut source: SourceHandle,
    config: &Config,
    peer: SocketAddr,
    cancel: CancellationToken,
) -> crate::Result<()> {
    let stream = source.stream().config().name.clone();
    let mut ws =
        WebSocketStream::from_raw_socket(socket, Role::Server, Some(websocket_config(config)))
            .await;
    let mut ping = interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut started = false;
    let max_bitrate = source.stream().config().max_ingest_bitrate;
    let mut rate = RateLimit::new(max_bitrate);
    let kicked = source.kicked();
    let refusal = loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Refusal(close::GOING_AWAY, "relay shutting down".into()),
            () = kicked.cancelled() => break Refusal(close::KICKED, "removed by an operator".into()),
            _ = ping.tick() => {
                if last_heard.elapsed() > config.dead_peer_timeout {
                    break Refusal(close::DEAD_PEER, "no answer to pings".into());
                }
                if timeout(SEND_TIMEOUT, ws.send(Message::Ping(Default::default()))).await.is_err() {
                    break Refusal(close::DEAD_PEER, "source does not read".into());
                }
            }
            msg = ws.next() => {
                last_heard = Instant::now();
                let msg = match msg {
                    None => return Ok(()),
                    Some(Ok(msg)) => msg,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                        break Refusal(close::TOO_BIG, format!("message of {size} bytes, limit {max_size}"));
                    }
                    Some(Err(err)) => return Err(err.into()),
                };
                if let Message::Binary(data) = &msg {
                    if !rate.take(data.len()) {
                        break Refusal(close::RATE_LIMITED, format!("over the stream's limit of {max_bitrate} bit/s"));
                    }
                }
                match handle(&mut source, &mut started, msg) {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(refusal) => break refusal,
                }
            }
        }
    };
    let Refusal(code, reason) = refusal;
    if code == close::GOING_AWAY {
        info!(%stream, %peer, "closing source: relay shutting down");
    } else {
        warn!(%stream, %peer, code, %reason, "closing source");
    }
    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
    match timeout(SEND_TIMEOUT, ws.close(Some(frame))).await {
        Ok(Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {}
        Ok(Err(err)) => debug!(%stream, %peer, %err, "close handshake failed"),
        Err(_) => debug!(%stream, %peer, "close handshake timed out"),
    }
    Ok(())
}

/// Applies one message; `Ok(false)` when the peer closed.
fn handle(source: &mut SourceHandle, started: &mut bool, msg: Message) -> Result<bool, Refusal> {
    match msg {
        Message::Binary(message) => {
            if !*started {
                return Err(Refusal(close::NOT_STARTED, "send the start message first".into()));
            }
            let header = protocol::decode_frame_header(&message).map_err(|err| match err {
                FrameError::Truncated(_) => Refusal(close::TRUNCATED_FRAME, err.to_string()),
                FrameError::ReservedFlags(_) => Refusal(close::RESERVED_FLAGS, err.to_string()),
            })?;
            source.frame(header, message).map_err(refuse_source_error)?;
        }
        Message::Text(text) => match protocol::decode_source_message(text.as_str()) {
            Ok(SourceMessage::Start { tracks }) => {
                source.start(tracks).map_err(refuse_source_error)?;
                *started = true;
            }
            Ok(SourceMessage::Metadata(meta)) => {
                if !*started {
                    return Err(Refusal(close::NOT_STARTED, "send the start message first".into()));
                }
                source.metadata(meta).map_err(refuse_source_error)?;
            }
            Err(err @ (MessageError::Malformed(_) | MessageError::InvalidStart(_)))
                if !*started =>
            {
                return Err(Refusal(close::BAD_START, err.to_string()));
            }
            Err(err) => return Err(Refusal(close::BAD_MESSAGE, err.to_string())),
        },
        Message::Close(_) => return Ok(false),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
    }
    Ok(true)
}

fn refuse_source_error(err: SourceError) -> Refusal {
    let code = match err {
        SourceError::AlreadyStarted => close::BAD_START,
        SourceError::NotStarted => close::NOT_STARTED,
        SourceError::UnknownTrack(_) => close::UNKNOWN_TRACK,
    };
    Refusal(code, err.to_string())
}
