//! `ContentAddressableStorage`: which blobs are missing, batches of small
//! blobs up and down (every upload verified against its digest, nothing
//! stored otherwise).

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::rpc;
use tonic::{Request, Response, Status};

use super::objects::{self, Target};
use super::{Cache, MAX_BATCH_BYTES, admit, checked, status, uses_blake3};
use crate::index::Scope;

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
        let namespaces = admit(&self.state, &request, &body.instance_name, Scope::Read).await?;
        let blake3 = uses_blake3(body.digest_function)?;
        let mut missing = Vec::new();
        for digest in &body.blob_digests {
            let (hex, _) = checked(Some(digest))?;
            let present = objects::exists(&self.state, &namespaces, &Target::blob(&hex, blake3))
                .await
                .map_err(status)?;
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
        let namespaces = admit(&self.state, &request, &body.instance_name, Scope::Write).await?;
        let blake3 = uses_blake3(body.digest_function)?;
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
                let (hex, size) = checked(blob.digest.as_ref())?;
                if blob.compressor != 0 {
                    return Err(Status::invalid_argument(
                        "compressed batch uploads are not supported: send identity",
                    ));
                }
                if blob.data.len() as u64 != size {
                    return Err(Status::invalid_argument(format!(
                        "the digest says {size} bytes, the data has {}",
                        blob.data.len()
                    )));
                }
                objects::write(
                    &self.state,
                    &namespaces,
                    &Target::blob(&hex, blake3),
                    bytes::Bytes::from(blob.data.clone()),
                )
                .await
                .map_err(status)
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
        let namespaces = admit(&self.state, &request, &body.instance_name, Scope::Read).await?;
        let blake3 = uses_blake3(body.digest_function)?;
        let mut total: u64 = 0;
        for digest in &body.digests {
            total += checked(Some(digest))?.1;
        }
        if total > MAX_BATCH_BYTES as u64 {
            return Err(Status::invalid_argument(format!(
                "the blobs asked for hold {total} bytes, more than the {MAX_BATCH_BYTES} of a batch"
            )));
        }
        let mut responses = Vec::with_capacity(body.digests.len());
        for digest in &body.digests {
            let (hex, size) = checked(Some(digest))?;
            let read = objects::read(
                &self.state,
                &namespaces,
                &Target::blob(&hex, blake3),
                MAX_BATCH_BYTES,
            )
            .await
            .map_err(status);
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
        _request: Request<reapi::GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        Err(Status::unimplemented("GetTree is not served yet"))
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
