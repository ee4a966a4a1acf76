//! Listeners: thousands of sockets drained from the rings by a few driver threads.
//!
//! A WebSocket listener costs no task and no buffer of its own: after the upgrade (in
//! `server/`) its socket, its cursor into the ring (`Consumer`) and a little state move to a
//! driver, an epoll loop on its own thread (`listener_threads`, one per core by default). A
//! driver wakes when a stream's head moves, takes each due listener's batch of shared frames
//! from the ring and writes it with one vectored write (`outbox.rs`); `schedule.rs` decides
//! when each listener is due (the send window). Only what a socket did not take stays with the
//! listener. The driver also answers pings, pings idle peers, and closes listeners that stay
//! behind the live edge (4008) or go silent (4009).
//!
//! HTTP listeners (`http.rs`: Ogg, MP3, ICY) still run a task each, with the same policy;
//! `echo.rs` serves the Autobahn conformance suite on the same frame parser and writer.

mod driver;
pub mod echo;
pub mod http;
pub mod outbox;
mod schedule;
pub mod tls;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tracing::{error, warn};

use crate::config::Config;
use crate::relay::Consumer;

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

/// What a listener holds for as long as it is connected (its connection permit, its place
/// in the per-address count and in the client list); dropped when it leaves.
pub(crate) type Lease = Box<dyn Send>;

/// What a listener reads: the stream's WebSocket messages, or its container over HTTP.
pub(crate) enum ListenerKind {
    WebSocket,
    Http(Box<http::HttpWriter>),
}

/// A listener whose upgrade (or HTTP answer) is done, on its way to a driver.
pub(crate) struct NewListener {
    /// The socket, non-blocking.
    pub socket: std::net::TcpStream,
    /// A TLS listener's record layer (its handshake done, every record of it written).
    pub tls: Option<Box<tls::Records>>,
    pub peer: SocketAddr,
    /// Bytes the peer sent after its request head.
    pub leftover: Bytes,
    pub consumer: Consumer,
    /// `hello` and the stream's headers.
    pub first: Vec<crate::relay::Item>,
    pub kind: ListenerKind,
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
    http_send_window: Duration,
}

enum Command {
    Add(Box<NewListener>),
    /// Close every listener with 1001, then report and exit.
    Shutdown(tokio::sync::oneshot::Sender<()>),
    /// Panic, as a bug would (tests of the dead-driver handling).
    #[cfg(test)]
    Crash,
}

struct DriverHandle {
    index: usize,
    commands: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
    thread: std::thread::JoinHandle<()>,
}

/// The relay's listener drivers, started with the first listener.
pub struct Hub {
    settings: Settings,
    threads: usize,
    drivers: Mutex<Vec<DriverHandle>>,
    next: AtomicUsize,
    /// Driver threads started so far (their names' numbers).
    started: AtomicUsize,
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
            http_send_window: config.http_send_window,
        };
        Self {
            settings,
            threads: config.listener_threads.max(1),
            drivers: Mutex::default(),
            next: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
        }
    }

    /// Hands a listener to a driver (round robin). Gives it back if no driver can take it
    /// (the relay is shutting down, or no thread can be started).
    ///
    /// A driver thread that has died (a bug: it panicked) is found here, logged as an error
    /// and replaced, so new listeners never go to it; the listeners it held were dropped.
    pub(crate) fn add(&self, listener: NewListener) -> Result<(), Box<NewListener>> {
        let mut listener = Box::new(listener);
        let mut drivers = self.drivers.lock().expect("listener drivers lock poisoned");
        loop {
            drivers.retain(|handle| {
                let alive = !handle.thread.is_finished();
                if !alive {
                    error!(driver = handle.index, "a listener driver thread has died; its listeners were dropped and a new thread takes its place");
                }
                alive
            });
            while drivers.len() < self.threads {
                let index = self.started.fetch_add(1, Ordering::Relaxed);
                match driver::spawn(index, self.settings) {
                    Ok(handle) => drivers.push(handle),
                    Err(err) => {
                        warn!(%err, "cannot start a listener driver thread");
                        break;
                    }
                }
            }
            if drivers.is_empty() {
                return Err(listener);
            }
            let at = self.next.fetch_add(1, Ordering::Relaxed) % drivers.len();
            let handle = &drivers[at];
            match handle.commands.send(Command::Add(listener)) {
                Ok(()) => {
                    let _ = handle.waker.wake();
                    return Ok(());
                }
                // Its thread ended between the check and the send: find another.
                Err(mpsc::SendError(Command::Add(back))) => {
                    if !handle.thread.is_finished() {
                        return Err(back);
                    }
                    listener = back;
                }
                Err(mpsc::SendError(Command::Shutdown(_))) => return Ok(()),
                #[cfg(test)]
                Err(mpsc::SendError(Command::Crash)) => return Ok(()),
            }
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::StreamConfig;
    use crate::metrics::StreamMetrics;
    use crate::relay::Stream;

    /// A listener socket pair on loopback: the relay's end (non-blocking) and the client's.
    fn listener_of(stream: &Arc<Stream>, server: &TcpListener) -> (NewListener, TcpStream) {
        let client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let (socket, peer) = server.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        let (consumer, first) = stream.subscribe().unwrap();
        let listener = NewListener {
            socket,
            tls: None,
            peer,
            leftover: Bytes::new(),
            consumer,
            first,
            kind: ListenerKind::WebSocket,
            lease: Box::new(()),
        };
        (listener, client)
    }

    /// The first bytes a listener gets: its `hello` as a WebSocket text frame.
    fn hears_hello(client: &mut TcpStream) -> bool {
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 2];
        client.read_exact(&mut head).is_ok() && head[0] == 0x81
    }

    /// A driver thread that dies (a bug) used to keep getting every other new listener, which
    /// was then refused as if the relay were shutting down.
    #[test]
    fn a_dead_driver_is_replaced_and_gets_no_more_listeners() {
        let config = Config { listener_threads: 2, ..Config::default() };
        let hub = Hub::new(&config);
        let stream = Stream::new(StreamConfig::new("test", Some("k")), StreamMetrics::default());
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let (first, mut first_client) = listener_of(&stream, &server);
        assert!(hub.add(first).is_ok());
        assert!(hears_hello(&mut first_client));
        {
            let drivers = hub.drivers.lock().unwrap();
            drivers[0].commands.send(Command::Crash).unwrap();
            drivers[0].waker.wake().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !hub.drivers.lock().unwrap()[0].thread.is_finished() {
            assert!(Instant::now() < deadline, "the driver did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
        for _ in 0..6 {
            let (listener, mut client) = listener_of(&stream, &server);
            assert!(hub.add(listener).is_ok(), "a live driver takes every new listener");
            assert!(hears_hello(&mut client));
        }
        let drivers = hub.drivers.lock().unwrap();
        assert_eq!(drivers.len(), 2);
        assert!(drivers.iter().all(|d| !d.thread.is_finished()));
    }
}
