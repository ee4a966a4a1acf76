//! A WebSocket listener on `/listen/{stream}`: the upgrade checked and answered (404, 401/403
//! for private streams, 503 when full), then the socket handed to a driver with its lease on
//! the node's limits and directory; the connection's task ends there.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::{Hub, Lease, ListenerKind, NewListener};
use crate::auth::check_listen_access;
use crate::conn::Conn;
use crate::deadline::{set_user_timeout, Deadline};
use crate::directory::Client;
use crate::error::Refusal;
use crate::http::{self, Request};
use crate::node::Node;
use crate::relay::{Consumer, Item, Stream};

/// Checks a listener's upgrade, answers it and hands the listener to a driver.
///
/// # Errors
/// Socket errors while answering.
#[allow(clippy::too_many_arguments)] // TODO(#12): one hand-off for every kind of listener
pub async fn accept(
    mut socket: Deadline<Conn>,
    peer: SocketAddr,
    node: &Node,
    hub: &Hub,
    request: Request,
    name: &str,
    leftover: Bytes,
    lease: Lease,
) -> crate::Result<()> {
    let (accept, consumer, first) = match admit(node, &request, name) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            http::refuse(&mut socket, &node.metrics, peer, &request, &refusal, &[]).await?;
            return Ok(());
        }
    };
    socket.write_all(&http::switching_protocols(&accept)).await?;
    // From here the driver bounds what the listener is sent (4008), not the deadline.
    let socket = socket.into_inner();
    tune_socket(socket.tcp(), node.config.listener_kernel_bytes);
    set_user_timeout(socket.tcp(), node.config.write_timeout);
    debug!(stream = %name, %peer, "listener connected");
    let client = Client {
        stream: name.to_owned(),
        peer,
        user_agent: request.header("user-agent").map(str::to_owned),
        connected: std::time::Instant::now(),
        kind: "websocket",
    };
    let listed = node.directory.add_client(client, consumer.stream().listener_count());
    let parts = socket.into_parts().await?;
    let leftover = if parts.unread.is_empty() {
        leftover
    } else {
        [&leftover[..], &parts.unread].concat().into()
    };
    let listener = NewListener {
        socket: parts.socket,
        tls: parts.tls,
        peer,
        leftover,
        consumer,
        first,
        kind: ListenerKind::WebSocket,
        lease: Box::new((lease, listed)),
    };
    if let Err(listener) = hub.add(listener) {
        debug!(stream = %name, peer = %listener.peer, "listener refused: the relay is shutting down");
    }
    Ok(())
}

/// The checks before the upgrade: a WebSocket, a stream, a signed link if it is private, room.
fn admit(
    node: &Node,
    request: &Request,
    name: &str,
) -> Result<(String, Consumer, Vec<Item>), Refusal> {
    let accept = http::websocket_accept(request)?;
    let stream = node.streams.get(name).ok_or(Refusal::NoSuchStream)?;
    check_listen_access(stream, request)?;
    let (consumer, first) = Stream::subscribe(stream)?;
    Ok((accept, consumer, first))
}

/// No Nagle delay, and a small kernel send buffer: stale audio must wait in the ring, where
/// it can still be skipped, not in the kernel, where it cannot.
pub(crate) fn tune_socket(socket: &TcpStream, kernel_bytes: usize) {
    let _ = socket.set_nodelay(true);
    let sock = socket2::SockRef::from(socket);
    if let Err(err) = sock.set_send_buffer_size(kernel_bytes) {
        debug!(%err, "cannot set SO_SNDBUF");
    }
}
