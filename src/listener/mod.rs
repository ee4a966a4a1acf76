//! WebSocket listeners: thousands of sockets drained from the rings by a few driver threads.
//!
//! A listener costs no task and no buffer of its own: after the upgrade (in `server.rs`) its
//! socket, its cursor into the ring (`Consumer`) and a little state move to a `Driver`, an
//! epoll loop on its own thread (`listener_threads`, one per core by default). A driver wakes
//! when a stream's head moves, takes each due listener's batch of shared frames from the ring
//! and writes it with one vectored write. With a `send_window`, every listener that was
//! waiting when a frame arrived is due together once that frame is the window's age, so the
//! frames meanwhile go out in the same write. Only what a socket did not take stays with the
//! listener. The driver also answers pings, pings idle peers, and closes listeners that stay
//! behind the live edge (4008) or go silent (4009).

mod driver;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tracing::warn;

use crate::config::Config;
use crate::relay::Consumer;
use crate::websocket::WireFrame;

/// Largest message a listener may send (it has nothing to say but pings and close).
pub const MAX_LISTENER_MESSAGE_BYTES: usize = 4096;

/// How a listener session ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The peer closed (close frame or EOF).
    PeerClosed,
    /// We closed with this code.
    Closed(u16),
    /// The close frame could not be delivered in time; the socket was dropped.
    Dropped(u16),
    /// The socket failed.
    Failed,
}

/// Frames waiting to be written to a WebSocket listener.
pub(crate) type Outbox = crate::outbox::Outbox<WireFrame>;

/// What a listener holds for as long as it is connected (its connection permit, its place
/// in the per-address count and in the client list); dropped when it leaves.
pub(crate) type Lease = Box<dyn Send>;

/// A listener whose upgrade is done, on its way to a driver.
pub(crate) struct NewListener {
    /// The socket, non-blocking.
    pub socket: std::net::TcpStream,
    pub peer: SocketAddr,
    /// Bytes the peer sent after its request head.
    pub leftover: Bytes,
    pub consumer: Consumer,
    /// `hello` and the stream's headers.
    pub first: Vec<WireFrame>,
    pub lease: Lease,
}

/// What a driver needs from the config.
#[derive(Debug, Clone, Copy)]
struct Settings {
    ping_interval: Duration,
    dead_peer_timeout: Duration,
    slow_listener_timeout: Duration,
    batch_bytes: usize,
    send_window: Duration,
}

enum Command {
    Add(Box<NewListener>),
    /// Close every listener with 1001, then report and exit.
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

struct DriverHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
}

/// The relay's listener drivers, started with the first listener.
pub struct Hub {
    settings: Settings,
    threads: usize,
    drivers: Mutex<Vec<DriverHandle>>,
    next: AtomicUsize,
}

impl Hub {
    /// Drivers for `config` (`listener_threads` of them, started on demand).
    pub fn new(config: &Config) -> Self {
        let settings = Settings {
            ping_interval: config.ping_interval,
            dead_peer_timeout: config.dead_peer_timeout,
            slow_listener_timeout: config.slow_listener_timeout,
            batch_bytes: config.listener_batch_bytes,
            send_window: config.send_window,
        };
        Self {
            settings,
            threads: config.listener_threads.max(1),
            drivers: Mutex::default(),
            next: AtomicUsize::new(0),
        }
    }

    /// Hands a listener to a driver (round robin). Gives it back if no driver can take it
    /// (the relay is shutting down, or a thread cannot be started).
    pub(crate) fn add(&self, listener: NewListener) -> Result<(), Box<NewListener>> {
        let mut drivers = self.drivers.lock().expect("listener drivers lock poisoned");
        while drivers.len() < self.threads {
            match driver::spawn(drivers.len(), self.settings) {
                Ok(handle) => drivers.push(handle),
                Err(err) => {
                    warn!(%err, "cannot start a listener driver thread");
                    break;
                }
            }
        }
        if drivers.is_empty() {
            return Err(Box::new(listener));
        }
        let at = self.next.fetch_add(1, Ordering::Relaxed) % drivers.len();
        let handle = &drivers[at];
        match handle.commands.send(Command::Add(Box::new(listener))) {
            Ok(()) => {
                let _ = handle.waker.wake();
                Ok(())
            }
            Err(mpsc::SendError(command)) => match command {
                Command::Add(listener) => Err(listener),
                Command::Shutdown(_) => Ok(()),
            },
        }
    }

    /// Closes every listener with 1001 ("going away") and waits until the drivers are done
    /// (each gives a close frame at most a second to leave).
    pub async fn shutdown(&self) {
        let mut done = Vec::new();
        {
            let drivers = self.drivers.lock().expect("listener drivers lock poisoned");
            for handle in drivers.iter() {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if handle.commands.send(Command::Shutdown(tx)).is_ok() {
                    let _ = handle.waker.wake();
                    done.push(rx);
                }
            }
        }
        for rx in done {
            let _ = rx.await;
        }
    }
}
