//! Bazel HTTP remote cache: `{prefix}/ac/{64 hex}` and `{prefix}/cas/{64 hex}`
//! under any prefix the user puts in `--remote_cache`. SHA-256 (Bazel's
//! default) unless a prefix segment is `blake3` (for
//! `--digest_function=blake3`): then CAS blobs are our native BLAKE3 blobs,
//! shared with every other client. CAS uploads are verified against their
//! digest (nothing is stored on a mismatch); `Content-Encoding: zstd`
//! uploads and `Accept-Encoding: zstd` downloads are supported. The empty
//! blob always exists.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, read, write};
use crate::http::object::IfExists;
use crate::metrics::Protocol;
use crate::namespaces::Namespaces;
use crate::protocol_names::BazelObject;

/// Serves a Bazel request; `None` when the path is not one.
pub async fn handle(
    state: AppState,
    namespaces: &Namespaces,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Body,
) -> Option<Result<Response, ApiError>> {
    let path = BazelObject::parse_path(uri.path())?;
    Some(serve(state, namespaces, method, path, headers, body).await)
}

async fn serve(
    state: AppState,
    namespaces: &Namespaces,
    method: Method,
    path: BazelObject,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let names = path.names(namespaces)?;
    match method {
        Method::GET | Method::HEAD if path.is_empty_blob() => {
            Ok(([(axum::http::header::CONTENT_LENGTH, "0")], "").into_response())
        }
        Method::GET | Method::HEAD => {
            let (response, _) =
                read(&state, &names.reads, Protocol::Bazel, &method, &headers).await?;
            Ok(response)
        }
        Method::PUT => {
            // CAS entries are content addresses: keep an existing one. AC
            // results are replaced.
            let if_exists = if path.action {
                IfExists::Replace
            } else {
                IfExists::Keep
            };
            let how = (names.check, if_exists, None);
            let target = (&names.write, &namespaces.own);
            let written = write(&state, target, Protocol::Bazel, &headers, body, how).await?;
            Ok(written.status().into_response())
        }
        other => Err(ApiError::MethodNotAllowed(format!(
            "{other} is not allowed on the Bazel cache"
        ))),
    }
}
