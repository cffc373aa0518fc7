//! HTTP/1.1 spoken by hand over a TCP socket, for requests no well-behaved
//! client library would send: raw paths with `..` and NUL, lying
//! `Content-Length`, huge headers, bytes trickled one at a time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Everything read: status line, headers and (part of) the body.
    pub text: String,
}

/// How an exchange ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The server answered.
    Answered(RawResponse),
    /// The server closed the connection without a status line.
    Closed,
    /// Nothing came back within the wait.
    TimedOut,
}

impl Outcome {
    /// The status code, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Answered(response) => Some(response.status),
            _ => None,
        }
    }
}

/// Opens a connection with read and write timeouts of `wait`.
pub fn connect(address: SocketAddr, wait: Duration) -> TcpStream {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connecting");
    stream.set_read_timeout(Some(wait)).expect("read timeout");
    stream.set_write_timeout(Some(wait)).expect("write timeout");
    stream
}

/// Sends `request` as is and reads the answer (until the server closes, or
/// the headers and `Content-Length` bytes of body arrived, or `wait`).
pub fn exchange(address: SocketAddr, request: &[u8], wait: Duration) -> Outcome {
    let mut stream = connect(address, wait);
    // A server may answer (and close) before taking the whole request.
    let _ = stream.write_all(request);
    read_response(&mut stream, wait)
}

/// Reads one response from `stream`.
pub fn read_response(stream: &mut TcpStream, wait: Duration) -> Outcome {
    let deadline = Instant::now() + wait;
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if let Some(response) = complete_response(&received) {
            return Outcome::Answered(response);
        }
        if Instant::now() >= deadline {
            return Outcome::TimedOut;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return parse_status(&received).map_or(Outcome::TimedOut, Outcome::Answered);
            }
            Err(_) => break,
        }
    }
    parse_status(&received).map_or(Outcome::Closed, Outcome::Answered)
}

fn parse_status(received: &[u8]) -> Option<RawResponse> {
    let text = String::from_utf8_lossy(received).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()?;
    Some(RawResponse { status, text })
}

/// A response whose headers and declared body have fully arrived.
fn complete_response(received: &[u8]) -> Option<RawResponse> {
    let end = received.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    (received.len() >= end + length)
        .then(|| parse_status(received))
        .flatten()
}

/// Whether the server closed `stream` (a read returns end of file or a
/// reset) within `wait`.
pub fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}
