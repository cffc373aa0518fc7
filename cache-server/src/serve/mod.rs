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

mod cpus;
mod idle_timeout;
mod tls;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

pub use cpus::CpuAffinity;
use cpus::Placement;
pub use idle_timeout::IdleTimeout;
pub use tls::{TlsError, load_tls, load_tls_for};
use workers::Workers;

use crate::http::App;

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

/// The threads that serve HTTP connections (see [`workers`]).
#[derive(Debug, Clone, Copy)]
pub struct HttpWorkers {
    /// How many (at least one).
    pub threads: usize,
    /// Whether each is bound to a CPU (see [`cpus`]).
    pub affinity: CpuAffinity,
}

impl HttpWorkers {
    /// Starts the threads, bound to CPUs as [`HttpWorkers::affinity`] says.
    pub fn start(self) -> std::io::Result<Workers> {
        let placement = Placement::plan(self.threads, self.affinity)?;
        let bound = placement.cpu_of(0).is_some();
        let workers = Workers::start(self.threads, placement)?;
        tracing::debug!(threads = workers.len(), bound, "HTTP workers started");
        Ok(workers)
    }
}

/// Serves `app` on `listener` with `workers` until `shutdown` completes,
/// then waits for the in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: App<Incoming>,
    settings: ServeSettings,
    workers: Workers,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
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
        let connection = Connection {
            peer,
            http: http.clone(),
            service: service.clone(),
            settings: settings.clone(),
            watcher: graceful.watcher(),
        };
        let handed = workers.hand(
            stream,
            Box::new(move |stream| Box::pin(connection.serve(stream))),
        );
        if let Err(error) = handed {
            tracing::warn!(%peer, %error, "could not hand a connection to a worker");
        }
    }
    drop(listener);
    graceful.shutdown().await;
    workers.finish().await;
    Ok(())
}

/// One accepted connection and what serving it takes.
struct Connection {
    peer: SocketAddr,
    http: http1::Builder,
    service: TowerToHyperService<App<Incoming>>,
    settings: ServeSettings,
    watcher: Watcher,
}

impl Connection {
    /// Serves the connection to its end: through its TLS handshake first
    /// when the server terminates TLS.
    async fn serve(self, stream: TcpStream) {
        let Self {
            peer,
            http,
            service,
            settings,
            watcher,
        } = self;
        let stream = IdleTimeout::new(stream, settings.idle_timeout);
        let result = match settings.tls {
            None => {
                watcher
                    .watch(http.serve_connection(TokioIo::new(stream), service))
                    .await
            }
            Some(acceptor) => {
                let accepted =
                    tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream)).await;
                let stream = match accepted {
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
    }
}
