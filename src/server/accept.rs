//! The accept loop both ports run (plain and TLS): accept until shutdown, and back off
//! briefly when the kernel refuses (out of file descriptors) instead of spinning.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::sleep;
use tracing::warn;

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Hands every accepted connection to `on_accept` until `shutdown` completes.
pub(super) async fn accept_loop(
    listener: &TcpListener,
    shutdown: impl Future<Output = ()>,
    mut on_accept: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => on_accept(socket, peer),
                Err(err) => {
                    warn!(%err, "accept failed");
                    sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}
