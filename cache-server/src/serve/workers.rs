//! The threads that serve HTTP connections: a few, each running its own
//! single-threaded runtime, the way nginx runs one worker process per
//! core. The accept loop hands each connection to the worker with the
//! fewest open connections, and the connection stays there until it
//! closes.
//!
//! Why not the multi-threaded runtime: there a small request can cost a
//! wake-up of another thread (a futex, and an inter-processor interrupt,
//! which a virtual machine charges dearly) whenever a worker parks and the
//! next request's readiness arrives on another. On a 2-core machine the
//! same binary served 4 KiB GETs 12 to 20 % faster this way
//! (`docs/benchmarks.md`, "What one request costs"). A worker here sleeps
//! only in its own `epoll_wait`, on its own sockets.
//!
//! What a request spawns (`tokio::spawn`, `spawn_blocking`) runs on its
//! worker's runtime; the rest of the server (eviction, gRPC, the index
//! flusher) stays on the main runtime.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

/// A connection's whole life, started on the worker's runtime.
pub type Connection = Box<dyn FnOnce(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Handed {
    stream: std::net::TcpStream,
    serve: Connection,
}

struct Worker {
    sender: mpsc::UnboundedSender<Handed>,
    open: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

/// The worker threads; see the module documentation.
pub struct Workers {
    workers: Vec<Worker>,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> io::Result<Self> {
        let workers = (0..count.max(1))
            .map(Worker::start)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { workers })
    }

    /// The number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Serves `stream` with `serve` on the worker with the fewest open
    /// connections. The stream is taken off the caller's runtime.
    pub fn hand(&self, stream: TcpStream, serve: Connection) -> io::Result<()> {
        let stream = stream.into_std()?;
        let worker = self
            .workers
            .iter()
            .min_by_key(|worker| worker.open.load(Ordering::Relaxed))
            .ok_or_else(|| io::Error::other("no HTTP worker"))?;
        worker.open.fetch_add(1, Ordering::Relaxed);
        worker
            .sender
            .send(Handed { stream, serve })
            .map_err(|_| io::Error::other("an HTTP worker has stopped"))
    }

    /// Stops taking connections and waits until every worker has finished
    /// the ones it has.
    pub async fn finish(self) {
        let threads: Vec<_> = self
            .workers
            .into_iter()
            .map(|worker| {
                drop(worker.sender);
                worker.thread
            })
            .collect();
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("an HTTP worker panicked");
                }
            }
        });
        if joined.await.is_err() {
            tracing::error!("waiting for the HTTP workers failed");
        }
    }
}

impl Worker {
    fn start(number: usize) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("http-worker-{number}"))
            .build()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name(format!("http-worker-{number}"))
            .spawn({
                let open = open.clone();
                move || runtime.block_on(run(receiver, open))
            })?;
        Ok(Self {
            sender,
            open,
            thread,
        })
    }
}

/// A worker's loop: serves what it is handed until the sender is gone,
/// then waits for its connections to end.
async fn run(mut receiver: mpsc::UnboundedReceiver<Handed>, open: Arc<AtomicUsize>) {
    let connections = TaskTracker::new();
    while let Some(Handed { stream, serve }) = receiver.recv().await {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "taking a connection into an HTTP worker");
                open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
        };
        let open = open.clone();
        connections.spawn(async move {
            serve(stream).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections go to the worker with the fewest open, each is served
    /// on a worker thread, and `finish` waits for the open ones to end.
    #[tokio::test]
    async fn connections_are_spread_served_and_finished() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(address).await.unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            workers
                .hand(
                    stream,
                    Box::new(|mut stream: TcpStream| {
                        Box::pin(async move {
                            let name = std::thread::current().name().unwrap_or("").to_owned();
                            let mut byte = [0u8; 1];
                            // Answers once asked, then holds the connection
                            // until the client closes it.
                            if stream.read_exact(&mut byte).await.is_ok() {
                                let _ = stream.write_all(name.as_bytes()).await;
                                let _ = stream.write_all(b"\n").await;
                                let _ = stream.read(&mut byte).await;
                            }
                        })
                    }),
                )
                .unwrap();
        }
        let mut names = Vec::new();
        for client in &mut clients {
            client.write_all(b"?").await.unwrap();
            let mut name = Vec::new();
            let mut byte = [0u8; 1];
            while client.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
                name.push(byte[0]);
            }
            names.push(String::from_utf8(name).unwrap());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "http-worker-0",
                "http-worker-0",
                "http-worker-1",
                "http-worker-1"
            ]
        );
        let finishing = tokio::spawn(workers.finish());
        drop(clients);
        tokio::time::timeout(std::time::Duration::from_secs(60), finishing)
            .await
            .expect("the workers finished once their connections closed")
            .unwrap();
    }
}
