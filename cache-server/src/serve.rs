//! Accepting connections: plain TCP or TLS (rustls), HTTP/1.1, with every
//! wait on a client bounded so a slow or silent peer cannot hold a
//! connection (and its task and file descriptor) forever:
//!
//! - the TLS handshake must finish within [`ServeSettings::handshake_timeout`];
//! - a request's headers must arrive within [`ServeSettings::header_timeout`]
//!   (slowloris), and a header block larger than hyper's buffer limit is
//!   refused with `431`;
//! - a connection on which no byte moves in either direction for
//!   [`ServeSettings::idle_timeout`] is closed: an idle keep-alive
//!   connection, an upload whose body stalls, a download whose client stops
//!   reading. A long transfer that keeps moving is never cut.
//!
//! SIGTERM (the `shutdown` future) stops accepting, lets in-flight requests
//! finish (each still bounded by the idle timeout) and returns.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::Incoming;

use crate::http::App;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How connections are served.
#[derive(Clone)]
pub struct ServeSettings {
    /// Longest wait for a request's complete header block.
    pub header_timeout: Duration,
    /// Longest time with no byte read or written on a connection.
    pub idle_timeout: Duration,
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
    /// TLS, when the server terminates it itself.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for ServeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeSettings")
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Why the TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("reading the certificate chain {path}: {reason}")]
    Certificate {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key file is unreadable or holds no PEM private key.
    #[error("reading the private key {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor for the PEM certificate chain `cert` and private key `key`
/// (PKCS#8, PKCS#1 or SEC1), speaking HTTP/1.1 over TLS 1.2 and 1.3.
pub fn load_tls(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    load_tls_for(cert, key, b"http/1.1")
}

/// The same acceptor offering `protocol` by ALPN (`h2` for gRPC).
pub fn load_tls_for(cert: &Path, key: &Path, protocol: &[u8]) -> Result<TlsAcceptor, TlsError> {
    let certificates = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::Certificate {
            path: cert.display().to_string(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.display().to_string(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    // The key's bytes never go into an error message.
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::Key {
        path: key.display().to_string(),
        reason: match error {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in the file".into(),
            rustls::pki_types::pem::Error::Io(error) => error.to_string(),
            _ => "not a PEM private key".into(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, private_key)?;
    config.alpn_protocols = vec![protocol.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for
/// the in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: App<Incoming>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    let service = TowerToHyperService::new(app);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly
                    // rather than spin; the listener itself stays usable.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written as headers then body: without TCP_NODELAY,
        // Nagle's algorithm and delayed ACKs hold each small response ~40 ms.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let stream = IdleTimeout::new(stream, settings.idle_timeout);
        let watcher = graceful.watcher();
        let http = http.clone();
        let service = service.clone();
        let tls = settings.tls.clone();
        let handshake_timeout = settings.handshake_timeout;
        tokio::spawn(async move {
            let result =
                match tls {
                    None => {
                        watcher
                            .watch(http.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(error)) => {
                                    tracing::debug!(%peer, %error, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        watcher
                            .watch(http.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

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

    #[test]
    fn tls_errors_name_the_file_and_never_the_key() {
        let folder = tempfile::tempdir().unwrap();
        let cert = folder.path().join("cert.pem");
        let key = folder.path().join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = load_tls(&cert, &key).err().unwrap().to_string();
        assert!(error.contains("cert.pem"), "{error}");
        let missing = load_tls(&folder.path().join("absent.pem"), &key)
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("absent.pem"), "{missing}");
    }
}
