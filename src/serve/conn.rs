//! What one connection may cost `serve`: a connection where no byte moves either way
//! for a while is closed (a client that stops reading a response, or an idle
//! keep-alive), and the number of connections is capped to fit the file descriptors.

use crate::limits;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream that fails with `TimedOut` once neither a read nor a write has made progress
/// for `idle`. A response still being written keeps a connection alive as long as the
/// client takes its bytes; one the client stopped reading ends after `idle`.
pub struct Guarded<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, idle: Duration) -> Guarded<S> {
        Guarded {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn progressed(&mut self) {
        let at = Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }

    /// After a `Pending`: has the connection been idle too long?
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle too long")
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns how many connections
/// fit: [`limits::MAX_CONNECTIONS`], or fewer when the descriptors (less
/// [`limits::RESERVED_FDS`] for blob files and the rest) are fewer.
pub fn connection_cap() -> usize {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let fds = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return limits::MAX_CONNECTIONS.min(256);
        }
        if rl.rlim_cur < rl.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
        rl.rlim_cur
    };
    let usable = fds.saturating_sub(limits::RESERVED_FDS).max(16);
    limits::MAX_CONNECTIONS.min(usable.try_into().unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_connection_where_nothing_moves_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut g = Guarded::new(a, IDLE);
        let mut buf = [0u8; 8];
        let start = Instant::now();
        let e = g.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let t = start.elapsed();
        assert!(t >= IDLE && t < IDLE * 3, "{t:?}");
    }

    #[tokio::test]
    async fn a_reader_that_stops_draining_times_the_writer_out() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut g = Guarded::new(a, IDLE);
        // The peer takes 64 bytes after 200 ms, 64 more 200 ms later, then nothing.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                b.read_exact(&mut buf).await.unwrap();
            }
            std::future::pending::<()>().await;
        });
        let start = Instant::now();
        let e = g.write_all(&[7u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // Progress at 200 and 400 ms kept it alive; IDLE after the last, it ends.
        let t = start.elapsed();
        assert!(
            t >= Duration::from_millis(400) + IDLE && t < Duration::from_millis(1500),
            "{t:?}"
        );
        reader.abort();
    }

    #[test]
    fn the_cap_fits_the_descriptors() {
        let cap = connection_cap();
        assert!((16..=limits::MAX_CONNECTIONS).contains(&cap), "{cap}");
    }
}
