//! What ends a connection whose peer stops taking what the relay writes.
//!
//! [`Deadline`] wraps a socket (plain or TLS, anything `AsyncRead + AsyncWrite`): a write or
//! flush that makes no progress for `write_timeout` fails with `TimedOut`, which ends the
//! session. Progress is any byte taken, so a slow reader that keeps reading is never cut off.
//! [`set_user_timeout`] gives the kernel the same bound (`TCP_USER_TIMEOUT`) for data it has
//! sent and nobody acknowledges. Listener drivers have their own bound (4008).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, Instant, Sleep};

/// A socket whose writes fail with `TimedOut` after `timeout` without progress.
#[derive(Debug)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
    /// Runs out `timeout` after the first write that found the socket full; allocated the first
    /// time that happens.
    stall: Option<Pin<Box<Sleep>>>,
    /// Whether the socket has taken nothing since the stall timer was set.
    stalled: bool,
}

impl<S> Deadline<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout, stall: None, stalled: false }
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The socket, unwrapped (to hand it to a listener driver, which has its own bound).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Called when a write could not go on: `Pending` until the deadline, then `TimedOut`.
    fn poll_stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let stall = self.stall.get_or_insert_with(|| Box::pin(sleep(timeout)));
        if !self.stalled {
            stall.as_mut().reset(Instant::now() + timeout);
            self.stalled = true;
        }
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer took nothing for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        polled: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.stalled = false;
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_stall(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(polled, cx)
    }
}

/// Asks the kernel to drop the connection when data it sent stays unacknowledged (or unsent
/// behind a zero window) for `timeout` (`TCP_USER_TIMEOUT`; Linux only, a no-op elsewhere).
pub fn set_user_timeout(socket: &tokio::net::TcpStream, timeout: Duration) {
    #[cfg(target_os = "linux")]
    if let Err(err) = socket2::SockRef::from(socket).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(%err, "cannot set TCP_USER_TIMEOUT");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, timeout);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_secs(20);

    /// The bug: a response written to a peer that never reads waited forever, holding the
    /// connection and the response's memory.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_times_out() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut socket = Deadline::new(ours, TIMEOUT);
        let started = Instant::now();
        let err = socket.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT, "a full timeout after the socket filled up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut socket = Deadline::new(ours, TIMEOUT);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 1024];
            while got < 64 * 1024 {
                // A byte rate far below the buffer: each gap is most of the timeout.
                tokio::time::sleep(TIMEOUT - Duration::from_secs(1)).await;
                got += theirs.read(&mut buf).await.unwrap();
            }
            got
        });
        socket.write_all(&[7u8; 64 * 1024]).await.expect("progress keeps the deadline away");
        assert_eq!(reader.await.unwrap(), 64 * 1024);
    }

    #[test]
    fn the_kernel_gets_the_same_bound() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let socket =
                tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            set_user_timeout(&socket, Duration::from_millis(2500));
            #[cfg(target_os = "linux")]
            assert_eq!(
                socket2::SockRef::from(&socket).tcp_user_timeout().unwrap(),
                Some(Duration::from_millis(2500))
            );
        });
    }
}
