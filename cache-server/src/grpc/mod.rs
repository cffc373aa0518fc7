//! The Remote Execution API cache over gRPC (REAPI v2): `Capabilities`,
//! `ContentAddressableStorage` and `ActionCache`, on their own port
//! (`--grpc-listen`), over the same object core, index, quota, eviction,
//! metrics and tokens as the HTTP protocols. SHA-256 digests name the
//! entries Bazel's HTTP protocol uses and BLAKE3 digests the native CAS, so
//! a team moving from HTTP to gRPC keeps its cache. An instance name
//! `ns/NAME` is the namespace `NAME` (as the HTTP `/ns/NAME/` prefix);
//! any other instance name is accepted and ignored, as HTTP prefixes are.

mod action_cache;
mod bytestream;
mod capabilities;
mod cas;
mod objects;
pub mod resource;
mod uploads;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use bazel_remote_apis::google::bytestream::byte_stream_server as bytestream_server;
use cache_proto::Namespace;
use tonic::{Request, Status};

use crate::admission;
use crate::error::ApiError;
use crate::index::Scope;
use crate::namespaces::Namespaces;
use crate::protocol_names::BazelHash;
use crate::state::AppState;

/// The largest batch (`BatchUpdateBlobs`, `BatchReadBlobs`) the server
/// takes, advertised in its capabilities; larger blobs go through
/// ByteStream.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The services, over the server's state (one value serves them all).
#[derive(Clone)]
pub struct Cache {
    state: AppState,
    uploads: std::sync::Arc<uploads::Uploads>,
}

/// Room for a full batch and the message around it: the largest message
/// taken or sent.
pub const MAX_MESSAGE_BYTES: usize = MAX_BATCH_BYTES + 64 * 1024;

/// Every service, over `state`.
pub fn routes(state: AppState) -> tonic::service::Routes {
    let cache = Cache {
        state,
        uploads: Default::default(),
    };
    let limit = MAX_MESSAGE_BYTES;
    tonic::service::Routes::new(
        reapi::capabilities_server::CapabilitiesServer::new(cache.clone())
            .max_decoding_message_size(limit),
    )
    .add_service(
        reapi::content_addressable_storage_server::ContentAddressableStorageServer::new(
            cache.clone(),
        )
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit),
    )
    .add_service(
        reapi::action_cache_server::ActionCacheServer::new(cache.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    )
    .add_service(
        bytestream_server::ByteStreamServer::new(cache)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    )
}

/// A CAS or action-cache request: the instance it names and its digest
/// function.
trait CacheCall {
    fn instance_name(&self) -> &str;
    fn digest_function(&self) -> i32;
}

macro_rules! cache_call {
    ($($request:ty),*) => {$(
        impl CacheCall for $request {
            fn instance_name(&self) -> &str {
                &self.instance_name
            }
            fn digest_function(&self) -> i32 {
                self.digest_function
            }
        }
    )*};
}

cache_call!(
    reapi::GetActionResultRequest,
    reapi::UpdateActionResultRequest,
    reapi::FindMissingBlobsRequest,
    reapi::BatchUpdateBlobsRequest,
    reapi::BatchReadBlobsRequest,
    reapi::GetTreeRequest
);

impl Cache {
    /// What `request` may use: its namespaces, once its credentials hold
    /// `needed` for its instance, and whether its digests are BLAKE3.
    async fn open_call<B: CacheCall>(
        &self,
        request: &Request<B>,
        needed: Scope,
    ) -> Result<(Namespaces, bool), Status> {
        let body = request.get_ref();
        let namespaces = admit(
            &self.state,
            request.metadata(),
            body.instance_name(),
            needed,
        )
        .await?;
        Ok((namespaces, uses_blake3(body.digest_function())?))
    }
}

/// The gRPC status of an API error, the one mapping of every service. A
/// server-side failure is logged with its detail here; the client sees the
/// generic message.
impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        error.log();
        let message = error.to_string();
        match error {
            ApiError::Unauthorized(_) => Status::unauthenticated(message),
            ApiError::Forbidden(_) => Status::permission_denied(message),
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::TooLarge { .. } | ApiError::InsufficientStorage(_) => {
                Status::resource_exhausted(message)
            }
            ApiError::Conflict(_) => Status::already_exists(message),
            ApiError::BadRequest { .. }
            | ApiError::DigestMismatch { .. }
            | ApiError::UnsupportedEncoding(_)
            | ApiError::MethodNotAllowed(_) => Status::invalid_argument(message),
            ApiError::PreconditionFailed(_) => Status::failed_precondition(message),
            ApiError::StorageUnavailable(_) => Status::unavailable(message),
            ApiError::Internal(_) => Status::internal(message),
        }
    }
}

/// The namespaces a call may use, once its credentials (`authorization`
/// metadata: `Bearer TOKEN`, or Basic with the token as password) hold
/// `needed`. The instance name `ns/NAME` names the namespace.
async fn admit(
    state: &AppState,
    metadata: &tonic::metadata::MetadataMap,
    instance_name: &str,
    needed: Scope,
) -> Result<Namespaces, Status> {
    let named = match instance_name.strip_prefix("ns/") {
        Some(name) => Some(
            Namespace::parse(name.trim_end_matches('/'))
                .map_err(|e| Status::invalid_argument(format!("instance name: {e}")))?,
        ),
        None => None,
    };
    let secret = metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(admission::secret_of_authorization);
    Ok(admission::admit(state, named, Some(needed), secret).await?)
}

/// Which CAS a digest names: SHA-256 (Bazel's default, and an unset
/// digest function) or BLAKE3.
fn uses_blake3(digest_function: i32) -> Result<bool, Status> {
    use reapi::digest_function::Value;
    match Value::try_from(digest_function) {
        Ok(Value::Unknown | Value::Sha256) => Ok(false),
        Ok(Value::Blake3) => Ok(true),
        _ => Err(Status::invalid_argument(format!(
            "digest function {digest_function} is not served (SHA-256 and BLAKE3 are)"
        ))),
    }
}

/// The hash (of the call's function: BLAKE3 when `blake3`, else SHA-256)
/// and size of a REAPI digest.
fn checked(digest: Option<&reapi::Digest>, blake3: bool) -> Result<(BazelHash, u64), Status> {
    let digest = digest.ok_or_else(|| Status::invalid_argument("a digest is missing"))?;
    let hash = BazelHash::parse(&digest.hash, blake3)
        .map_err(|e| Status::invalid_argument(format!("digest {:?}: {e}", digest.hash)))?;
    let size = u64::try_from(digest.size_bytes)
        .map_err(|_| Status::invalid_argument("a digest's size is negative"))?;
    Ok((hash, size))
}
