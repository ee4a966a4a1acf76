//! One WebSocket source on `/ingest/{stream}`: the request checked and answered before the
//! upgrade (401/403/404/409, one log line each), then the session: `start`, frames,
//! metadata, pings, and a precise close code for every kind of bad input (`error::Closing`).
//! Dropping the `SourceHandle` at the end puts the stream offline (or hands it back to the
//! auto-DJ).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::RateLimit;
use crate::auth;
use crate::config::Config;
use crate::conn::Conn;
use crate::deadline::Deadline;
use crate::error::{Closing, Refusal};
use crate::http::{self, Request};
use crate::node::Node;
use crate::protocol::{self, SourceMessage};
use crate::relay::{SourceHandle, SourceKind};

/// Checks a source's upgrade request, answers it, and runs the session.
///
/// # Errors
/// Socket and WebSocket errors; refusals and protocol violations are answered here.
pub async fn accept(
    mut socket: Deadline<Conn>,
    peer: SocketAddr,
    node: &Node,
    request: &Request,
    name: &str,
    leftover: &[u8],
    cancel: CancellationToken,
) -> crate::Result<()> {
    let (source, accept) = match admit(node, peer, request, name, leftover) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let challenge = [("WWW-Authenticate", "Bearer realm=\"onair\"".to_owned())];
            let extra = if refusal.status() == 401 { &challenge[..] } else { &[] };
            http::refuse(&mut socket, &node.metrics, peer, request, &refusal, extra).await?;
            return Ok(());
        }
    };
    socket.write_all(&http::switching_protocols(&accept)).await?;
    info!(stream = %name, %peer, tls = socket.get_ref().is_tls(), "source connected");
    let result = serve(socket, source, &node.config, peer, cancel).await;
    info!(stream = %name, %peer, "source disconnected");
    result
}

/// The checks before the upgrade, in the order a broadcaster fixes them: a WebSocket, from an
/// allowed page, to a stream that exists, with its key, not taken.
fn admit(
    node: &Node,
    peer: SocketAddr,
    request: &Request,
    name: &str,
    leftover: &[u8],
) -> Result<(SourceHandle, String), Refusal> {
    let accept = http::websocket_accept(request)?;
    if !auth::origin_allowed(&node.config, request) {
        return Err(Refusal::OriginNotAllowed);
    }
    let stream = node.streams.get(name).ok_or(Refusal::NoSuchStream)?;
    let presented = auth::presents_source_key(request);
    if !node.logins.verify(peer.ip(), presented, || auth::source_key_matches(stream, request))? {
        return Err(Refusal::WrongKey);
    }
    if !leftover.is_empty() {
        return Err(Refusal::EarlyData);
    }
    Ok((stream.attach(SourceKind::Live)?, accept))
}

/// Time allowed to send a ping or a close frame to a source.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

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
    socket: impl AsyncRead + AsyncWrite + Unpin,
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
    let closing = loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Closing::ShuttingDown,
            () = kicked.cancelled() => break Closing::from(source.kick_reason()),
            _ = ping.tick() => {
                if last_heard.elapsed() > config.dead_peer_timeout {
                    break Closing::DeadPeer("no answer to pings");
                }
                if timeout(SEND_TIMEOUT, ws.send(Message::Ping(Default::default()))).await.is_err() {
                    break Closing::DeadPeer("source does not read");
                }
            }
            msg = ws.next() => {
                last_heard = Instant::now();
                let msg = match msg {
                    None => return Ok(()),
                    Some(Ok(msg)) => msg,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                        break Closing::TooBig { size, max: max_size };
                    }
                    Some(Err(err)) => return Err(err.into()),
                };
                // Text is charged like media: a flood of metadata is a flood.
                let len = match &msg {
                    Message::Binary(data) => data.len(),
                    Message::Text(text) => {
                        let max = config.max_text_message_bytes;
                        if text.len() > max {
                            break Closing::TooBig { size: text.len(), max };
                        }
                        text.len()
                    }
                    _ => 0,
                };
                if !rate.take(len) {
                    break Closing::RateLimited(max_bitrate);
                }
                match handle(&mut source, &mut started, msg) {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(closing) => break closing,
                }
            }
        }
    };
    let code = closing.code();
    if closing == Closing::ShuttingDown {
        info!(%stream, %peer, "closing source: relay shutting down");
    } else {
        warn!(%stream, %peer, code, reason = %closing, "closing source");
    }
    let frame = CloseFrame { code: CloseCode::from(code), reason: closing.to_string().into() };
    match timeout(SEND_TIMEOUT, ws.close(Some(frame))).await {
        Ok(Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {}
        Ok(Err(err)) => debug!(%stream, %peer, %err, "close handshake failed"),
        Err(_) => debug!(%stream, %peer, "close handshake timed out"),
    }
    Ok(())
}

/// Applies one message; `Ok(false)` when the peer closed.
fn handle(source: &mut SourceHandle, started: &mut bool, msg: Message) -> Result<bool, Closing> {
    match msg {
        Message::Binary(message) => {
            if !*started {
                return Err(Closing::NotStarted);
            }
            let header = protocol::decode_frame_header(&message)?;
            source.frame(header, message)?;
        }
        Message::Text(text) => match protocol::decode_source_message(text.as_str()) {
            Ok(SourceMessage::Start { tracks }) => {
                source.start(tracks)?;
                *started = true;
            }
            Ok(SourceMessage::Metadata(meta)) => {
                if !*started {
                    return Err(Closing::NotStarted);
                }
                source.metadata(meta)?;
            }
            Err(err) => return Err(Closing::from_message(err, *started)),
        },
        Message::Close(_) => return Ok(false),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
    }
    Ok(true)
}
