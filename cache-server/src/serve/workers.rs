//! The threads that serve HTTP connections: a few, each running its own
//! single-threaded runtime, the way nginx runs one worker process per
//! core. The accept loop hands each connection to a worker (the one on
//! the CPU the connection arrives on when workers are bound to CPUs, see
//! [`super::cpus`], else the one with the fewest open connections), and
//! the connection stays there until it closes.
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

use super::cpus::Placement;

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
    placement: Arc<Placement>,
}

impl Workers {
    /// Starts `count` workers (at least one), placed on CPUs as
    /// `placement` says.
    pub fn start(count: usize, placement: Placement) -> io::Result<Self> {
        let placement = Arc::new(placement);
        let workers = (0..count.max(1))
            .map(|number| Worker::start(number, placement.clone()))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self { workers, placement })
    }

    /// The number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Serves `stream` with `serve` on the worker [`Placement::choose`]
    /// picks. The stream is taken off the caller's runtime.
    pub fn hand(&self, stream: TcpStream, serve: Connection) -> io::Result<()> {
        let stream = stream.into_std()?;
        let open: Vec<usize> = self
            .workers
            .iter()
            .map(|worker| worker.open.load(Ordering::Relaxed))
            .collect();
        let least = (0..open.len())
            .min_by_key(|&number| open[number])
            .ok_or_else(|| io::Error::other("no HTTP worker"))?;
        let worker = &self.workers[self.placement.choose(&stream, &open, least)];
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
    /// Starts worker `number`, returning once its thread runs (named, and
    /// bound to its CPU if it has one).
    fn start(number: usize, placement: Arc<Placement>) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Its blocking threads (the worker thread is named below).
            .thread_name(format!("http-io-{number}"))
            .on_thread_start({
                // The runtime's own threads do blocking work: every CPU.
                let placement = placement.clone();
                move || {
                    if let Err(error) = placement.release() {
                        tracing::warn!(%error, "could not unbind a blocking thread from its CPU");
                    }
                }
            })
            .build()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let (started, running) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("http-worker-{number}"))
            .spawn({
                let open = open.clone();
                move || {
                    if let Err(error) = placement.bind_worker(number) {
                        tracing::warn!(%error, worker = number, "could not bind an HTTP worker to its CPU");
                    }
                    let _ = started.send(());
                    runtime.block_on(run(receiver, open))
                }
            })?;
        // A moment at start-up; the thread cannot fail before it sends.
        running
            .recv()
            .map_err(|_| io::Error::other("an HTTP worker did not start"))?;
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
    use crate::serve::CpuAffinity;
    use rustix::thread::{CpuSet, sched_getaffinity, sched_getcpu, sched_setaffinity};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection that, once asked (one byte), answers with a line: its
    /// worker's name, the CPU it runs on, how many CPUs the worker and a
    /// blocking task it starts may use; then holds the connection until
    /// the client closes it.
    fn reporter() -> Connection {
        Box::new(|mut stream: TcpStream| {
            Box::pin(async move {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                let cpus = || sched_getaffinity(None).unwrap().count();
                let blocking = tokio::task::spawn_blocking(cpus).await.unwrap();
                let report = format!("{name} {} {} {blocking}\n", sched_getcpu(), cpus());
                let mut byte = [0u8; 1];
                if stream.read_exact(&mut byte).await.is_ok() {
                    let _ = stream.write_all(report.as_bytes()).await;
                    let _ = stream.read(&mut byte).await;
                }
            })
        })
    }

    /// What [`reporter`] answers `client`, which has sent its byte.
    async fn answer(client: &mut TcpStream) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while client.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap()
    }

    /// Connects to `address` from a thread bound to `cpu`, so that the
    /// connection's packets arrive on `cpu` (loopback processes them on
    /// the sender's CPU).
    fn connect_from(cpu: usize, address: std::net::SocketAddr) -> TcpStream {
        let stream = std::thread::spawn(move || {
            let mut set = CpuSet::new();
            set.set(cpu);
            sched_setaffinity(None, &set).unwrap();
            let stream = std::net::TcpStream::connect(address).unwrap();
            // A byte sent from `cpu` after the handshake: the server's
            // record of the connection's CPU is its last packet's.
            std::io::Write::write_all(&mut &stream, b"!").unwrap();
            stream
        })
        .join()
        .unwrap();
        stream.set_nonblocking(true).unwrap();
        TcpStream::from_std(stream).unwrap()
    }

    /// With one worker bound per allowed CPU, a connection is served on
    /// the worker of the CPU it arrives on, unless that worker is ahead;
    /// a worker's blocking tasks may still use every CPU.
    #[tokio::test]
    async fn connections_go_to_the_worker_on_their_cpu_within_a_bounded_lead() {
        let allowed = sched_getaffinity(None).unwrap();
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|&cpu| allowed.is_set(cpu))
            .collect();
        let placement = Placement::plan(cpus.len(), CpuAffinity::Auto).unwrap();
        if cpus.len() < 2 {
            assert_eq!(placement.cpu_of(0), None, "one CPU: nothing to bind");
            return;
        }
        let workers = Workers::start(cpus.len(), placement).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut reports = Vec::new();
        // One connection from each CPU: each lands on that CPU's worker.
        for &cpu in &cpus {
            let mut client = connect_from(cpu, address);
            let (stream, _) = listener.accept().await.unwrap();
            workers.hand(stream, reporter()).unwrap();
            let report = answer(&mut client).await;
            let fields: Vec<&str> = report.split(' ').collect();
            assert_eq!(
                fields[1],
                cpu.to_string(),
                "served on the CPU it came from: {report}"
            );
            assert_eq!(fields[2], "1", "the worker is bound to one CPU: {report}");
            assert_eq!(
                fields[3],
                cpus.len().to_string(),
                "blocking work may use every CPU: {report}"
            );
            reports.push(report);
            clients.push(client);
        }
        // Twenty more from the first CPU: its worker may lead the others
        // by a bounded margin only.
        for _ in 0..20 {
            let mut client = connect_from(cpus[0], address);
            let (stream, _) = listener.accept().await.unwrap();
            workers.hand(stream, reporter()).unwrap();
            reports.push(answer(&mut client).await);
            clients.push(client);
        }
        let served_on = |cpu: usize| {
            reports
                .iter()
                .filter(|report| report.split(' ').nth(1) == Some(cpu.to_string().as_str()))
                .count()
        };
        let first = served_on(cpus[0]);
        let others = cpus[1..].iter().map(|&cpu| served_on(cpu)).min().unwrap();
        assert!(
            first > others,
            "the first CPU's worker took more ({first} against {others})"
        );
        assert!(
            first < 21,
            "not all 21 from the first CPU stayed on its worker"
        );
        assert!(
            first <= others + super::super::cpus::lead_allowed(others) + 1,
            "the first CPU's worker leads by a bounded margin ({first} against {others})"
        );
        drop(clients);
        workers.finish().await;
    }

    /// Connections go to the worker with the fewest open, each is served
    /// on a worker thread, and `finish` waits for the open ones to end.
    #[tokio::test]
    async fn connections_are_spread_served_and_finished() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let workers = Workers::start(2, Placement::plan(2, CpuAffinity::Off).unwrap()).unwrap();
        assert_eq!(workers.len(), 2);
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(TcpStream::connect(address).await.unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            workers.hand(stream, reporter()).unwrap();
        }
        let mut names = Vec::new();
        for client in &mut clients {
            client.write_all(b"?").await.unwrap();
            let report = answer(client).await;
            names.push(report.split(' ').next().unwrap().to_owned());
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
