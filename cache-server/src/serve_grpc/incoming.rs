//! The gRPC port's connections: accepted TCP connections, each taken
//! through its TLS handshake (ALPN `h2`) when the server has `--tls-cert`,
//! or to its first byte without, in a task of its own: a client that
//! stalls there holds up no one else and is closed after
//! [`HANDSHAKE_WITHIN`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The longest a TLS handshake, or the wait for a plain connection's
/// first byte, may take.
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);
/// Connections accepted and not yet taken by the server.
const BACKLOG: usize = 128;

/// One client connection, plain (h2c) or TLS.
pub enum Connection {
    /// HTTP/2 without TLS.
    Plain(TcpStream),
    /// HTTP/2 over TLS.
    Tls(Box<TlsStream<TcpStream>>),
}

/// The connections of `listener`, through `tls` when given.
pub fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) -> impl futures::Stream<Item = io::Result<Connection>> + Send + 'static {
    let (sender, receiver) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(%error, "accepting a gRPC connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match &tls {
                None => {
                    // Served once it sends something: a connection that
                    // stays silent is closed, not kept forever.
                    let sender = sender.clone();
                    tokio::spawn(async move {
                        let mut first = [0u8; 1];
                        match tokio::time::timeout(HANDSHAKE_WITHIN, stream.peek(&mut first)).await
                        {
                            Ok(Ok(1..)) => {
                                let _ = sender.send(Ok(Connection::Plain(stream))).await;
                            }
                            _ => tracing::debug!("a gRPC connection sent nothing: closed"),
                        }
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let sender = sender.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => {
                                let _ = sender.send(Ok(Connection::Tls(Box::new(stream)))).await;
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%error, "a gRPC TLS handshake failed");
                            }
                            Err(_) => tracing::debug!("a gRPC TLS handshake timed out"),
                        }
                    });
                }
            }
            if sender.is_closed() {
                return;
            }
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Self::Plain(stream) => stream.connect_info(),
            Self::Tls(stream) => stream.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }
}
