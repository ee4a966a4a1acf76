//! `/echo`: a WebSocket that sends every message back, for the Autobahn conformance suite.
//!
//! Enabled only by `echo_endpoint = true`. It uses the listeners' own parser (`ClientReader`)
//! and writer (`Outbox`), so the suite checks the frame code that thousands of listeners use,
//! not a separate implementation. The session loop is its own (on tokio): an echo server holds
//! and returns messages, which a listener driver never does.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::error::Closing;
use crate::listener::outbox::{Outbox, Piece};
use crate::websocket::{ClientEvent, ClientReader, WireFrame, OP_BINARY, OP_PONG, OP_TEXT};

/// Largest message echoed (Autobahn's biggest cases send 16 MiB).
pub const MAX_ECHO_MESSAGE_BYTES: usize = 32 << 20;
/// Most bytes waiting to be echoed: past it nothing more is read (the peer's sends block)
/// until the peer has taken some.
pub const MAX_ECHO_QUEUED_BYTES: usize = MAX_ECHO_MESSAGE_BYTES;
/// Most messages waiting to be echoed (each costs more than its bytes when it is tiny).
pub const MAX_ECHO_QUEUED_FRAMES: usize = 1024;
/// Time to finish the close handshake before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Echoes messages until the peer closes, breaks the protocol, or the relay shuts down. What
/// waits to be echoed is bounded (`MAX_ECHO_QUEUED_BYTES`, `MAX_ECHO_QUEUED_FRAMES`), and a
/// peer that takes nothing of it for `write_timeout` is dropped.
///
/// # Errors
/// Socket errors; `TimedOut` for a peer that stopped reading.
pub async fn serve(
    mut socket: TcpStream,
    leftover: &[u8],
    write_timeout: Duration,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let mut reader = ClientReader::keeping_messages(MAX_ECHO_MESSAGE_BYTES, leftover);
    let mut out = Outbox::default();
    let mut closing: Option<Instant> = None;
    let mut peer_closed = false;
    // When the peer has taken nothing of what waits for it for `write_timeout`.
    let mut stalled_at = Instant::now() + write_timeout;
    loop {
        let was_empty = out.is_empty();
        // Parse what is buffered while there is room for the echoes: a full queue leaves the
        // rest in the reader (and the socket), so the peer's sends wait instead of our memory.
        while !peer_closed && has_room(&out) {
            match reader.next_event() {
                Ok(None) => break,
                Ok(Some(ClientEvent::Data { text, payload })) if closing.is_none() => {
                    out.items.push_back(Piece::Ws(WireFrame::new(
                        if text { OP_TEXT } else { OP_BINARY },
                        payload,
                    )));
                }
                Ok(Some(ClientEvent::Ping(payload))) if closing.is_none() => {
                    out.push_control(WireFrame::new(OP_PONG, payload));
                }
                Ok(Some(ClientEvent::Close(code))) => {
                    peer_closed = true;
                    if closing.is_none() {
                        let reply = match code {
                            Some(code) => WireFrame::close(code, ""),
                            None => WireFrame::new(crate::websocket::OP_CLOSE, bytes::Bytes::new()),
                        };
                        out.items.push_back(Piece::Ws(reply));
                        closing = Some(Instant::now() + CLOSE_TIMEOUT);
                    }
                }
                Ok(Some(_)) => {}
                Err(err) => {
                    // Fail the connection: queued echoes are dropped, close follows.
                    out.truncate_to_boundary();
                    out.items.push_back(Piece::Ws(Closing::from(err).frame()));
                    closing = Some(Instant::now() + CLOSE_TIMEOUT);
                    peer_closed = true;
                }
            }
        }
        if was_empty && !out.is_empty() {
            stalled_at = Instant::now() + write_timeout;
        }
        if out.is_empty() && closing.is_some() && peer_closed {
            let _ = socket.shutdown().await;
            return Ok(());
        }
        let read = !peer_closed && has_room(&out);
        let interest = match (read, out.is_empty()) {
            (true, true) => Interest::READABLE,
            (true, false) => Interest::READABLE | Interest::WRITABLE,
            (false, _) => Interest::WRITABLE,
        };
        let deadline = closing.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            () = cancel.cancelled(), if closing.is_none() => {
                out.truncate_to_boundary();
                out.items.push_back(Piece::Ws(Closing::ShuttingDown.frame()));
                closing = Some(Instant::now() + CLOSE_TIMEOUT);
            }
            ready = socket.ready(interest) => {
                let ready = ready?;
                if ready.is_readable() && read {
                    match socket.try_read_buf(reader.buffer()) {
                        Ok(0) => return Ok(()),
                        Ok(_) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(err) => return Err(err),
                    }
                }
                if ready.is_writable() && !out.is_empty() {
                    match out.write_to(&socket) {
                        Ok((0, _)) => {}
                        Ok(_) => stalled_at = Instant::now() + write_timeout,
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(err) => return Err(err),
                    }
                }
            }
            () = sleep_until(deadline), if closing.is_some() => return Ok(()),
            () = sleep_until(stalled_at), if !out.is_empty() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the echo peer took nothing for {write_timeout:?}"),
                ));
            }
        }
    }
}

/// Whether more echoes may be queued.
fn has_room(out: &Outbox) -> bool {
    out.items.len() < MAX_ECHO_QUEUED_FRAMES
        && out.items.iter().map(Piece::wire_len).sum::<usize>() < MAX_ECHO_QUEUED_BYTES
}
