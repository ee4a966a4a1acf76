//! A client's connection as every session sees it: plain TCP, or TLS over it (rustls, in
//! this process, so the relay knows the real peer and serves TLS listeners on the same
//! drivers as plain ones).
//!
//! `Conn` implements `AsyncRead` and `AsyncWrite` for the sessions on tokio (request heads,
//! sources, refusals); a listener's session takes it apart (`into_parts`) and hands the
//! socket and the TLS session's keys to a driver thread, which seals the records itself
//! (`listener::tls`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::io::Read;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::listener::tls::Records;

/// How long the last handshake and response bytes may take to leave before a listener is
/// handed to a driver.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain or TLS connection.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, its handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection taken apart for a listener driver.
#[derive(Debug)]
pub struct Parts {
    /// The socket, non-blocking.
    pub socket: std::net::TcpStream,
    /// A TLS listener's record layer.
    pub tls: Option<Box<Records>>,
    /// Plaintext the TLS session had decrypted and nobody read yet.
    pub unread: Vec<u8>,
}

impl Conn {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(socket) => socket,
            Conn::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// The plain socket, for what only speaks plain TCP (`/echo`).
    pub fn into_plain(self) -> Option<TcpStream> {
        match self {
            Conn::Plain(socket) => Some(socket),
            Conn::Tls(_) => None,
        }
    }

    /// The socket (out of tokio's reactor, non-blocking) and, for TLS, the session's keys;
    /// every TLS record queued so far is written first.
    ///
    /// # Errors
    /// When the socket cannot leave the reactor, the records cannot be written in time, or
    /// the session cannot be handed over.
    pub async fn into_parts(self) -> io::Result<Parts> {
        match self {
            Conn::Plain(socket) => {
                Ok(Parts { socket: socket.into_std()?, tls: None, unread: Vec::new() })
            }
            Conn::Tls(mut tls) => {
                tokio::time::timeout(FLUSH_TIMEOUT, tls.flush())
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
                let (socket, mut session) = tls.into_inner();
                let mut unread = Vec::new();
                match session.reader().read_to_end(&mut unread) {
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) => return Err(err),
                }
                let records = Records::take(session).map_err(io::Error::other)?;
                Ok(Parts { socket: socket.into_std()?, tls: Some(Box::new(records)), unread })
            }
        }
    }
}

impl From<TcpStream> for Conn {
    fn from(socket: TcpStream) -> Self {
        Conn::Plain(socket)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(socket) => Pin::new(socket).poll_read(cx, buf),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(socket) => Pin::new(socket).poll_write(cx, buf),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(socket) => Pin::new(socket).poll_flush(cx),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(socket) => Pin::new(socket).poll_shutdown(cx),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(socket) => Pin::new(socket).poll_write_vectored(cx, bufs),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(socket) => socket.is_write_vectored(),
            Conn::Tls(tls) => tls.is_write_vectored(),
        }
    }
}
