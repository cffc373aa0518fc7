//! A connection's idle clock: no byte moving in either direction for too
//! long ends it, however long a transfer that keeps moving takes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream that fails with [`io::ErrorKind::TimedOut`] once it has waited
/// on the peer for `limit` with no byte moving in either direction. Time
/// spent while the server itself works (not polling) does not count until
/// it waits on the peer again.
pub struct IdleTimeout<S> {
    inner: S,
    limit: Duration,
    last_progress: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    /// Wraps `inner` with an idle `limit`.
    pub fn new(inner: S, limit: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            limit,
            last_progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    fn progressed(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Called when the inner stream is not ready: an error once the peer
    /// has kept it waiting past the limit, else a wake-up at that time.
    ///
    /// The timer is moved only when it fires before the limit (progress
    /// was made since it was set), not on every wait: a busy keep-alive
    /// connection waits once per request, and re-arming the runtime's timer
    /// each time was a measurable share of a small read's CPU.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = self.last_progress + self.limit;
            if Instant::now() >= deadline {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer moved no byte within the idle timeout",
                ));
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl<S> IdleTimeout<S> {
    /// What a poll of the inner stream means for the idle clock: progress
    /// when `moved` says bytes moved with the peer, an error once it has
    /// kept us waiting too long.
    fn track<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        moved: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(Ok(done)) => {
                if moved(&done) {
                    self.progressed();
                }
                Poll::Ready(Ok(done))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        // Bytes or the end of the stream: either way the peer acted.
        this.track(cx, polled, |()| true)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        this.track(cx, polled, |written| *written > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.track(cx, polled, |written| *written > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// A flush that completes moved nothing the writes did not count
    /// already: hyper flushes on every turn of a connection, so counting
    /// it would let a peer that sends nothing keep the connection forever
    /// (every wake-up of the idle timer was followed by a flush).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.track(cx, polled, |()| false)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_a_talking_one_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_secs(5));
        let mut client = client;
        let talker = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                client.write_all(b"x").await.unwrap();
            }
            // Then silence, with the connection held open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(client);
        });
        let mut byte = [0u8; 1];
        for _ in 0..4 {
            server.read_exact(&mut byte).await.unwrap();
        }
        let started = Instant::now();
        let error = server.read_exact(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() <= Duration::from_secs(6));
        talker.abort();
    }

    /// hyper flushes on every turn of a connection, including the turns
    /// the idle timer itself wakes: a flush that moved nothing must not
    /// count as the peer's progress, or a silent peer is never cut off
    /// (seen as an upload stalled mid-body that held its connection).
    #[tokio::test(start_paused = true)]
    async fn flushes_on_every_turn_do_not_keep_a_silent_peer() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleTimeout::new(server, Duration::from_secs(5));
        // One byte a second after the start (after the timer was set),
        // then silence with the connection held open.
        let talker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            client.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(client);
        });
        let started = Instant::now();
        let turns = std::future::poll_fn(|cx| {
            loop {
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                let read = Pin::new(&mut server).poll_read(cx, &mut buf);
                let _ = Pin::new(&mut server).poll_flush(cx);
                match read {
                    Poll::Ready(Err(error)) => return Poll::Ready(error),
                    Poll::Ready(Ok(())) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            }
        });
        let error = tokio::time::timeout(Duration::from_secs(60), turns)
            .await
            .expect("the silent peer was never cut off");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() <= Duration::from_secs(7));
        talker.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_out_the_writer() {
        let (_client, server) = tokio::io::duplex(16);
        let mut server = IdleTimeout::new(server, Duration::from_secs(5));
        let error = server.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }
}
