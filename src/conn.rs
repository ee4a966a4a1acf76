//! A client's connection as every session sees it: plain TCP, or TLS over it (rustls, in
//! this process, so the relay knows the real peer and serves TLS listeners on the same
//! drivers as plain ones).
//!
//! `Conn` implements `AsyncRead` and `AsyncWrite` for the sessions on tokio (request heads,
//! sources, refusals); a listener's session takes it apart (`into_parts`) and hands the
//! socket and the TLS state to a driver thread.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConnection;
use tokio_rustls::server::TlsStream;

/// A plain or TLS connection.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, its handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection taken apart for a listener driver: the socket (non-blocking) and, for TLS,
/// the session state with whatever it still has to send.
pub type Parts = (std::net::TcpStream, Option<Box<ServerConnection>>);

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

    /// The socket (out of tokio's reactor, non-blocking) and the TLS state.
    ///
    /// # Errors
    /// When the socket cannot leave the reactor.
    pub fn into_parts(self) -> io::Result<Parts> {
        match self {
            Conn::Plain(socket) => Ok((socket.into_std()?, None)),
            Conn::Tls(tls) => {
                let (socket, session) = tls.into_inner();
                Ok((socket.into_std()?, Some(Box::new(session))))
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
