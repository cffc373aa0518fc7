//! A small HTTP service: `GET /` answers with a greeting and the request
//! count, `GET /healthz` with `ok`. Listens on `$PORT` (default 8080) on
//! every address, one request at a time; std only, so the binary links
//! statically and runs on an empty base image.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn answer(stream: TcpStream, served: u64) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers up to the blank line.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/" => ("200 OK", format!("hello from hello-service, request {served}\n")),
        "/healthz" => ("200 OK", "ok\n".to_owned()),
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = TcpListener::bind(format!("0.0.0.0:{port}"))?;
    eprintln!("hello-service listening on {}", listener.local_addr()?);
    for (served, stream) in (1u64..).zip(listener.incoming()) {
        if let Err(error) = stream.and_then(|stream| answer(stream, served)) {
            eprintln!("request {served}: {error}");
        }
    }
    Ok(())
}
