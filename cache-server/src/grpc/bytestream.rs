//! `google.bytestream.ByteStream` over the CAS: blobs of any size read
//! (with an offset and a limit) and written (verified against their digest,
//! nothing stored otherwise), plain or as zstd frames
//! (`compressed-blobs/zstd/`), writes resumable after a broken stream
//! (`QueryWriteStatus` gives where to go on from).

use std::io;

use async_compression::tokio::bufread::ZstdEncoder;
use bazel_remote_apis::google::bytestream as bs;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio_util::io::{ReaderStream, StreamReader};
use tonic::{Request, Response, Status};

use super::objects;
use super::resource::{Kind, ResourceName};
use super::uploads::{BeginError, UploadKey};
use super::{Cache, admit};
use crate::blob::download::BodyStream;
use crate::cache::object::{Content, Opened, RangeSpec, Read, ReadOptions};
use crate::index::Scope;
use crate::protocol_names::BazelObject;

/// The largest `data` of a `ReadResponse` sent (clients take 4 MiB).
const READ_CHUNK: usize = 1024 * 1024;

type ReadStream = std::pin::Pin<Box<dyn Stream<Item = Result<bs::ReadResponse, Status>> + Send>>;

/// The bytes of a read that found the blob whole; `NOT_FOUND` when absent.
fn opened(read: Option<Read>) -> Result<Opened, Status> {
    match read {
        Some(Read::Opened(opened)) => Ok(opened),
        Some(Read::Unsatisfiable(_)) => Err(Status::out_of_range("the range is past the blob")),
        None => Err(Status::not_found("no such blob")),
    }
}

/// The bytes of an opened object as one stream.
fn stream(content: Content) -> BodyStream {
    match content {
        Content::Whole(bytes) => futures::stream::iter([Ok(bytes)]).boxed(),
        Content::Stream(stream) => stream,
    }
}

fn parse(text: &str, kind: Kind) -> Result<ResourceName, Status> {
    ResourceName::parse(text, kind).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn offset(value: i64, what: &str) -> Result<u64, Status> {
    u64::try_from(value).map_err(|_| Status::out_of_range(format!("a negative {what}")))
}

#[tonic::async_trait]
impl bs::byte_stream_server::ByteStream for Cache {
    type ReadStream = ReadStream;

    async fn read(
        &self,
        request: Request<bs::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let body = request.get_ref();
        let resource = parse(&body.resource_name, Kind::Read)?;
        let namespaces = admit(
            &self.state,
            request.metadata(),
            &resource.instance,
            Scope::Read,
        )
        .await?;
        let start = offset(body.read_offset, "read_offset")?;
        let limit = offset(body.read_limit, "read_limit")?;
        let target = BazelObject::blob(resource.hash);
        let bytes: BodyStream = if resource.zstd {
            let options = ReadOptions {
                accept_zstd: true,
                range: None,
            };
            let opened = opened(objects::open(&self.state, &namespaces, &target, options).await?)?;
            let framed = opened.zstd;
            let stored = stream(opened.content);
            let frames: BodyStream = if framed {
                stored
            } else {
                ReaderStream::new(ZstdEncoder::new(StreamReader::new(stored))).boxed()
            };
            window(frames, start, limit)
        } else {
            if start > resource.size {
                return Err(Status::out_of_range(format!(
                    "read_offset {start} is past the blob's {} bytes",
                    resource.size
                )));
            }
            if start == resource.size && start > 0 {
                // Nothing left to send of a blob that is there (a size-0
                // digest is looked up: only the empty blob has no bytes).
                let present = objects::exists(&self.state, &namespaces, &target).await?;
                if !present {
                    return Err(Status::not_found("no such blob"));
                }
                return Ok(Response::new(futures::stream::empty().boxed()));
            }
            let range = match (start, limit) {
                (0, 0) => None,
                (start, 0) => Some(RangeSpec::From(start)),
                (start, limit) => Some(RangeSpec::Bounded(
                    start,
                    start.saturating_add(limit).min(resource.size) - 1,
                )),
            };
            let options = ReadOptions {
                accept_zstd: false,
                range,
            };
            match objects::open(&self.state, &namespaces, &target, options).await? {
                Some(Read::Unsatisfiable(_)) => {
                    return Err(Status::out_of_range(format!(
                        "read_offset {start} is past the stored blob"
                    )));
                }
                read => stream(opened(read)?.content),
            }
        };
        let messages = chunked(bytes).map(|chunk| match chunk {
            Ok(data) => Ok(bs::ReadResponse {
                data: data.to_vec(),
            }),
            Err(error) => Err(Status::unavailable(format!("reading the blob: {error}"))),
        });
        Ok(Response::new(messages.boxed()))
    }

    async fn write(
        &self,
        request: Request<tonic::Streaming<bs::WriteRequest>>,
    ) -> Result<Response<bs::WriteResponse>, Status> {
        let (metadata, _, mut stream) = request.into_parts();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("a Write without a request"))?;
        let resource = parse(&first.resource_name, Kind::Write)?;
        let namespaces = admit(&self.state, &metadata, &resource.instance, Scope::Write).await?;
        let target = BazelObject::blob(resource.hash);
        let name = first.resource_name.clone();
        let key = UploadKey {
            owner: namespaces.own.clone(),
            resource: name.clone(),
        };
        let mut upload = self.uploads.begin(key).map_err(|BeginError::Busy| {
            Status::aborted("another Write of this resource name is in progress")
        })?;
        let wanted = offset(first.write_offset, "write_offset")?;
        if wanted == 0 || wanted != upload.committed() || !upload.is_started() {
            if wanted != 0 {
                // Not a resume of what is here: done already, or start over.
                let exists = objects::exists(&self.state, &namespaces, &target).await?;
                // A parked upload stays parked for a resume at its offset.
                return if exists {
                    upload.abort();
                    Ok(Response::new(bs::WriteResponse {
                        committed_size: done_size(&resource),
                    }))
                } else {
                    Err(Status::failed_precondition(format!(
                        "write_offset {wanted}: no upload of this resource is waiting there; \
                         ask QueryWriteStatus, or start at 0"
                    )))
                };
            }
            let state = &self.state;
            upload.start(|body| {
                objects::write_streamed(
                    state,
                    &namespaces,
                    &target,
                    resource.zstd,
                    resource.size,
                    body,
                )
            })?;
        }
        let mut next = Some(first);
        loop {
            let message = match next.take() {
                Some(message) => message,
                None => match stream.message().await? {
                    Some(message) => message,
                    // Closed without finishing: what arrived is kept for a
                    // resume (the upload is parked when dropped).
                    None => {
                        return Ok(Response::new(bs::WriteResponse {
                            committed_size: upload.committed() as i64,
                        }));
                    }
                },
            };
            let committed = upload.committed();
            let refusal = if !message.resource_name.is_empty() && message.resource_name != name {
                Some("a later WriteRequest names another resource".to_owned())
            } else if offset(message.write_offset, "write_offset")? != committed {
                Some(format!(
                    "write_offset {} is not the {committed} bytes committed",
                    message.write_offset
                ))
            } else if !resource.zstd && committed + message.data.len() as u64 > resource.size {
                Some(format!(
                    "more bytes than the digest's size of {}",
                    resource.size
                ))
            } else {
                None
            };
            if let Some(refusal) = refusal {
                upload.abort();
                return Err(Status::invalid_argument(refusal));
            }
            if let Err(outcome) = upload.send(Bytes::from(message.data)).await {
                return Err(match outcome {
                    Err(error) => Status::from(error),
                    Ok(_) => Status::internal("the object write ended before its body"),
                });
            }
            if message.finish_write {
                let committed = upload.committed();
                if !resource.zstd && committed != resource.size {
                    upload.abort();
                    return Err(Status::invalid_argument(format!(
                        "finished after {committed} bytes; the digest's size is {}",
                        resource.size
                    )));
                }
                let written = upload.finish().await?;
                if written.size() != resource.size {
                    return Err(Status::invalid_argument(format!(
                        "the blob has {} bytes; the digest's size is {}",
                        written.size(),
                        resource.size
                    )));
                }
                return Ok(Response::new(bs::WriteResponse {
                    committed_size: committed as i64,
                }));
            }
        }
    }

    async fn query_write_status(
        &self,
        request: Request<bs::QueryWriteStatusRequest>,
    ) -> Result<Response<bs::QueryWriteStatusResponse>, Status> {
        let body = request.get_ref();
        let resource = parse(&body.resource_name, Kind::Write)?;
        let namespaces = admit(
            &self.state,
            request.metadata(),
            &resource.instance,
            Scope::Write,
        )
        .await?;
        let key = UploadKey {
            owner: namespaces.own.clone(),
            resource: body.resource_name.clone(),
        };
        if let Some(committed) = self.uploads.committed(&key) {
            return Ok(Response::new(bs::QueryWriteStatusResponse {
                committed_size: committed as i64,
                complete: false,
            }));
        }
        let target = BazelObject::blob(resource.hash);
        if objects::exists(&self.state, &namespaces, &target).await? {
            return Ok(Response::new(bs::QueryWriteStatusResponse {
                committed_size: done_size(&resource),
                complete: true,
            }));
        }
        Err(Status::not_found(
            "no upload of this resource is in progress",
        ))
    }
}

/// The `committed_size` of an upload the CAS holds already: its size, or
/// -1 for a compressed one (whose compressed size is not known).
fn done_size(resource: &ResourceName) -> i64 {
    if resource.zstd {
        -1
    } else {
        resource.size as i64
    }
}

/// The bytes of `stream` from `start`, at most `limit` of them (0: all).
fn window(stream: BodyStream, start: u64, limit: u64) -> BodyStream {
    let mut skip = start;
    let mut left = if limit == 0 { u64::MAX } else { limit };
    stream
        .try_filter_map(move |mut chunk| {
            let cut = skip.min(chunk.len() as u64) as usize;
            skip -= cut as u64;
            let _ = chunk.split_to(cut);
            let keep = left.min(chunk.len() as u64) as usize;
            left -= keep as u64;
            chunk.truncate(keep);
            futures::future::ready(Ok((!chunk.is_empty()).then_some(chunk)))
        })
        .boxed()
}

/// `stream` as chunks of at most [`READ_CHUNK`] bytes, small pieces joined.
fn chunked(stream: BodyStream) -> BodyStream {
    let pieces = stream.flat_map(|piece| {
        let parts: Vec<io::Result<Bytes>> = match piece {
            Ok(mut bytes) => {
                let mut parts = Vec::new();
                while bytes.len() > READ_CHUNK {
                    parts.push(Ok(bytes.split_to(READ_CHUNK)));
                }
                parts.push(Ok(bytes));
                parts
            }
            Err(error) => vec![Err(error)],
        };
        futures::stream::iter(parts)
    });
    futures::stream::unfold(
        (pieces.boxed(), BytesMut::new(), false),
        |(mut pieces, mut pending, mut ended)| async move {
            loop {
                if ended {
                    return None;
                }
                match pieces.next().await {
                    Some(Ok(bytes)) => {
                        if pending.len() + bytes.len() > READ_CHUNK {
                            let out = pending.split().freeze();
                            pending.extend_from_slice(&bytes);
                            return Some((Ok(out), (pieces, pending, ended)));
                        }
                        pending.extend_from_slice(&bytes);
                    }
                    Some(Err(error)) => {
                        ended = true;
                        return Some((Err(error), (pieces, pending, ended)));
                    }
                    None => {
                        ended = true;
                        if pending.is_empty() {
                            return None;
                        }
                        let out = pending.split().freeze();
                        return Some((Ok(out), (pieces, pending, ended)));
                    }
                }
            }
        },
    )
    .boxed()
}
