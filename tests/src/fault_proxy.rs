//! A TCP proxy on a loopback port that injects faults between a client and
//! a real service (the S3 server): passes bytes through, delays them,
//! swallows them, cuts connections, answers every request with an HTTP
//! 500 of its own, or makes the service distant (a fixed delay each way). The mode can change at any time; it applies to new
//! connections and to the bytes still to come on open ones.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward everything as it comes.
    None = 0,
    /// Forward each chunk two seconds late, 1 KiB at a time.
    Slow = 1,
    /// Accept and read, but never forward or answer (a black hole).
    Silent = 2,
    /// Close every connection at once, and open ones at their next byte.
    Reset = 3,
    /// Answer every request with `500 Internal Server Error`.
    ServerError = 4,
    /// Forward each chunk [`LATENCY`] late in each direction: a distant
    /// service, one round trip costing twice that.
    Distant = 5,
}

/// The one-way delay of [`Fault::Distant`].
pub const LATENCY: Duration = Duration::from_millis(1000);

impl Fault {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Slow,
            2 => Self::Silent,
            3 => Self::Reset,
            4 => Self::ServerError,
            5 => Self::Distant,
            _ => Self::None,
        }
    }
}

/// A running proxy; it stops with its thread when dropped.
pub struct FaultProxy {
    address: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    /// A proxy to `upstream`, passing traffic through until told otherwise.
    /// It runs on a thread of its own, so it works from sync and async
    /// tests alike.
    pub fn start(upstream: SocketAddr) -> Self {
        let mode = Arc::new(AtomicU8::new(Fault::None as u8));
        let accepting = mode.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("binding the proxy");
                let _ = bound.send(listener.local_addr().expect("proxy address"));
                let accept = async {
                    while let Ok((client, _)) = listener.accept().await {
                        let mode = accepting.clone();
                        tokio::spawn(async move {
                            let _ = relay(client, upstream, mode).await;
                        });
                    }
                };
                tokio::select! {
                    () = accept => {},
                    _ = stopped => {},
                }
            });
            runtime.shutdown_background();
        });
        let address = address.recv().expect("the proxy started");
        Self {
            address,
            mode,
            stop: Some(stop),
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Switches the fault injected from now on.
    pub fn set(&self, fault: Fault) {
        self.mode.store(fault as u8, Ordering::SeqCst);
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mode: Arc<AtomicU8>,
) -> std::io::Result<()> {
    let current = || Fault::from_u8(mode.load(Ordering::SeqCst));
    match current() {
        Fault::Reset => return Ok(()),
        Fault::ServerError => return answer_500(client).await,
        Fault::Silent => return swallow(client).await,
        Fault::None | Fault::Slow | Fault::Distant => {}
    }
    let server = TcpStream::connect(upstream).await?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, mode.clone());
    let down = pump(server_read, client_write, mode);
    let _ = tokio::join!(up, down);
    Ok(())
}

/// Copies `from` to `to`, applying the current fault to every chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return to.shutdown().await;
        }
        let mut chunk = &buffer[..read];
        loop {
            match Fault::from_u8(mode.load(Ordering::SeqCst)) {
                Fault::None => {
                    to.write_all(chunk).await?;
                    break;
                }
                Fault::Distant => {
                    tokio::time::sleep(LATENCY).await;
                    to.write_all(chunk).await?;
                    break;
                }
                Fault::Slow => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let (now, rest) = chunk.split_at(chunk.len().min(1024));
                    to.write_all(now).await?;
                    chunk = rest;
                    if chunk.is_empty() {
                        break;
                    }
                }
                Fault::Silent => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Fault::Reset | Fault::ServerError => return Ok(()),
            }
        }
    }
}

async fn answer_500(mut client: TcpStream) -> std::io::Result<()> {
    // Answer at the first bytes of the request, then close.
    let mut buffer = vec![0u8; 64 * 1024];
    if client.read(&mut buffer).await? == 0 {
        return Ok(());
    }
    let body = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
    let response = format!(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

async fn swallow(mut client: TcpStream) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    while client.read(&mut buffer).await? > 0 {}
    Ok(())
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
