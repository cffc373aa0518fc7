//! `ContentAddressableStorage`: which blobs are missing, batches of small
//! blobs up and down (every upload verified against its digest, nothing
//! stored otherwise).

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::rpc;
use prost::Message;
use tonic::{Request, Response, Status};

use super::objects;
use super::{Cache, MAX_BATCH_BYTES, checked};
use crate::index::Scope;
use crate::protocol_names::BazelObject;

/// The most directories a `GetTree` page holds.
const TREE_PAGE: usize = 1024;

/// A per-blob status of a batch: OK, or the error's code and message.
fn rpc_status(result: Result<(), Status>) -> Option<rpc::Status> {
    Some(match result {
        Ok(()) => rpc::Status::default(),
        Err(error) => rpc::Status {
            code: error.code() as i32,
            message: error.message().to_owned(),
            details: Vec::new(),
        },
    })
}

type Stream<T> = std::pin::Pin<
    Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl reapi::content_addressable_storage_server::ContentAddressableStorage for Cache {
    async fn find_missing_blobs(
        &self,
        request: Request<reapi::FindMissingBlobsRequest>,
    ) -> Result<Response<reapi::FindMissingBlobsResponse>, Status> {
        let body = request.get_ref();
        let (namespaces, blake3) = self.open_call(&request, Scope::Read).await?;
        let mut missing = Vec::new();
        for digest in &body.blob_digests {
            let (hash, _) = checked(Some(digest), blake3)?;
            let present =
                objects::exists(&self.state, &namespaces, &BazelObject::blob(hash)).await?;
            if !present {
                missing.push(digest.clone());
            }
        }
        Ok(Response::new(reapi::FindMissingBlobsResponse {
            missing_blob_digests: missing,
        }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<reapi::BatchUpdateBlobsRequest>,
    ) -> Result<Response<reapi::BatchUpdateBlobsResponse>, Status> {
        let body = request.get_ref();
        let (namespaces, blake3) = self.open_call(&request, Scope::Write).await?;
        let total: usize = body.requests.iter().map(|r| r.data.len()).sum();
        if total > MAX_BATCH_BYTES {
            return Err(Status::invalid_argument(format!(
                "the batch holds {total} bytes, more than the {MAX_BATCH_BYTES} this server takes \
                 (max_batch_total_size_bytes): send large blobs through ByteStream"
            )));
        }
        let mut responses = Vec::with_capacity(body.requests.len());
        for blob in &body.requests {
            let result = async {
                let (hash, size) = checked(blob.digest.as_ref(), blake3)?;
                let data = match reapi::compressor::Value::try_from(blob.compressor) {
                    Ok(reapi::compressor::Value::Identity) => blob.data.clone(),
                    Ok(reapi::compressor::Value::Zstd) if size <= MAX_BATCH_BYTES as u64 => {
                        // At most the digest's size is decompressed.
                        zstd::bulk::decompress(&blob.data, size as usize).map_err(|e| {
                            Status::invalid_argument(format!(
                                "the zstd data does not decompress to at most {size} bytes: {e}"
                            ))
                        })?
                    }
                    Ok(reapi::compressor::Value::Zstd) => {
                        return Err(Status::invalid_argument(format!(
                            "a {size}-byte blob is above the batch limit: send it through ByteStream"
                        )));
                    }
                    _ => {
                        return Err(Status::invalid_argument(format!(
                            "compressor {} is not served (identity and zstd are)",
                            blob.compressor
                        )));
                    }
                };
                if data.len() as u64 != size {
                    return Err(Status::invalid_argument(format!(
                        "the digest says {size} bytes, the data has {}",
                        data.len()
                    )));
                }
                objects::write(
                    &self.state,
                    &namespaces,
                    &BazelObject::blob(hash),
                    bytes::Bytes::from(data),
                )
                .await
                .map_err(Status::from)
            }
            .await;
            responses.push(reapi::batch_update_blobs_response::Response {
                digest: blob.digest.clone(),
                status: rpc_status(result),
            });
        }
        Ok(Response::new(reapi::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<reapi::BatchReadBlobsRequest>,
    ) -> Result<Response<reapi::BatchReadBlobsResponse>, Status> {
        let body = request.get_ref();
        let (namespaces, blake3) = self.open_call(&request, Scope::Read).await?;
        let mut total: u64 = 0;
        for digest in &body.digests {
            total += checked(Some(digest), blake3)?.1;
        }
        if total > MAX_BATCH_BYTES as u64 {
            return Err(Status::invalid_argument(format!(
                "the blobs asked for hold {total} bytes, more than the {MAX_BATCH_BYTES} of a batch"
            )));
        }
        let mut responses = Vec::with_capacity(body.digests.len());
        for digest in &body.digests {
            let (hash, size) = checked(Some(digest), blake3)?;
            let read = objects::read(
                &self.state,
                &namespaces,
                &BazelObject::blob(hash),
                MAX_BATCH_BYTES,
            )
            .await
            .map_err(Status::from);
            let (data, result) = match read {
                Ok(Some(data)) if data.len() as u64 == size => (data.to_vec(), Ok(())),
                Ok(Some(_)) => (
                    Vec::new(),
                    Err(Status::invalid_argument(
                        "the digest's size is not the blob's",
                    )),
                ),
                Ok(None) => (Vec::new(), Err(Status::not_found("no such blob"))),
                Err(error) => (Vec::new(), Err(error)),
            };
            responses.push(reapi::batch_read_blobs_response::Response {
                digest: Some(digest.clone()),
                data,
                compressor: 0,
                status: rpc_status(result),
            });
        }
        Ok(Response::new(reapi::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = Stream<reapi::GetTreeResponse>;

    async fn get_tree(
        &self,
        request: Request<reapi::GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        let body = request.get_ref();
        let (namespaces, blake3) = self.open_call(&request, Scope::Read).await?;
        let (root, _) = checked(body.root_digest.as_ref(), blake3)?;
        let page_size = match usize::try_from(body.page_size) {
            Ok(0) => TREE_PAGE,
            Ok(size) => size.min(TREE_PAGE),
            Err(_) => return Err(Status::invalid_argument("a negative page_size")),
        };
        let skip: usize = if body.page_token.is_empty() {
            0
        } else {
            body.page_token
                .parse()
                .map_err(|_| Status::invalid_argument("page_token is not one this server gave"))?
        };
        // Breadth first from the root, each directory once; a directory
        // the CAS lacks is left out with what is under it.
        let mut queue = std::collections::VecDeque::from([root]);
        let mut seen = std::collections::HashSet::new();
        let mut found = Vec::new();
        let mut walked = 0usize;
        while let Some(hash) = queue.pop_front() {
            if !seen.insert(hash) {
                continue;
            }
            let Some(bytes) = objects::read(
                &self.state,
                &namespaces,
                &BazelObject::blob(hash),
                MAX_BATCH_BYTES,
            )
            .await?
            else {
                continue;
            };
            let directory = reapi::Directory::decode(bytes).map_err(|e| {
                Status::invalid_argument(format!("directory {hash} is not a Directory: {e}"))
            })?;
            for child in &directory.directories {
                queue.push_back(checked(child.digest.as_ref(), blake3)?.0);
            }
            walked += 1;
            if walked > skip {
                found.push(directory);
                if found.len() == page_size {
                    break;
                }
            }
        }
        let next_page_token = if queue.iter().any(|hash| !seen.contains(hash)) {
            walked.to_string()
        } else {
            String::new()
        };
        let page = reapi::GetTreeResponse {
            directories: found,
            next_page_token,
        };
        Ok(Response::new(Box::pin(tonic::codegen::tokio_stream::iter(
            [Ok(page)],
        ))))
    }

    async fn split_blob(
        &self,
        _request: Request<reapi::SplitBlobRequest>,
    ) -> Result<Response<reapi::SplitBlobResponse>, Status> {
        Err(Status::unimplemented("SplitBlob is not served"))
    }

    type GetChunkMappingStream = Stream<reapi::GetChunkMappingResponse>;

    async fn get_chunk_mapping(
        &self,
        _request: Request<reapi::GetChunkMappingRequest>,
    ) -> Result<Response<Self::GetChunkMappingStream>, Status> {
        Err(Status::unimplemented("GetChunkMapping is not served"))
    }

    async fn splice_blob(
        &self,
        _request: Request<reapi::SpliceBlobRequest>,
    ) -> Result<Response<reapi::SpliceBlobResponse>, Status> {
        Err(Status::unimplemented("SpliceBlob is not served"))
    }

    async fn register_chunk_mapping(
        &self,
        _request: Request<tonic::Streaming<reapi::RegisterChunkMappingRequest>>,
    ) -> Result<Response<reapi::RegisterChunkMappingResponse>, Status> {
        Err(Status::unimplemented("RegisterChunkMapping is not served"))
    }
}
