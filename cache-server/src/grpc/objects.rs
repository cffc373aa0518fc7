//! The object core as the gRPC services use it: blobs and action results
//! by REAPI digest, read and written through the same functions as the
//! HTTP protocols (verification, quota, eviction, metrics).

use axum::body::Body;
use bytes::Bytes;

use crate::blob::StoredName;
use crate::blob::upload::ContentCheck;
use crate::http::compat::bazel::BazelPath;
use crate::http::error::ApiError;
use crate::http::object::{self, IfExists, ReadOptions, WriteOptions};
use crate::http::request::BodyEncoding;
use crate::metrics::Protocol;
use crate::namespaces::Namespaces;
use crate::state::AppState;

/// A CAS blob or an action result, by hash.
pub struct Target {
    path: BazelPath,
}

impl Target {
    /// The CAS blob `hex` (BLAKE3 or SHA-256).
    pub fn blob(hex: &str, blake3: bool) -> Self {
        Self {
            path: BazelPath {
                action: false,
                blake3,
                hex: hex.to_owned(),
            },
        }
    }

    /// The action result of action `hex`.
    pub fn action(hex: &str, blake3: bool) -> Self {
        Self {
            path: BazelPath {
                action: true,
                blake3,
                hex: hex.to_owned(),
            },
        }
    }

    fn is_empty_blob(&self) -> bool {
        self.path.is_empty_blob()
    }

    fn names(
        &self,
        namespaces: &Namespaces,
    ) -> Result<(Vec<StoredName>, StoredName, ContentCheck), ApiError> {
        self.path.names(namespaces)
    }
}

/// Whether `target` is stored (readable in `namespaces`).
pub async fn exists(
    state: &AppState,
    namespaces: &Namespaces,
    target: &Target,
) -> Result<bool, ApiError> {
    if target.is_empty_blob() {
        return Ok(true);
    }
    let (reads, _, _) = target.names(namespaces)?;
    for name in &reads {
        if state.catalog.find(name).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `target` as stored, read with `options` (a range, zstd frames taken);
/// `None` when absent. The empty blob is always present.
pub async fn open(
    state: &AppState,
    namespaces: &Namespaces,
    target: &Target,
    options: ReadOptions,
) -> Result<Option<axum::response::Response>, ApiError> {
    if target.is_empty_blob() {
        return Ok(Some(axum::response::Response::new(Body::empty())));
    }
    let (reads, _, _) = target.names(namespaces)?;
    for name in &reads {
        let Some(record) = object::lookup(state, name, Protocol::Reapi).await? else {
            continue;
        };
        if let Some(response) = object::get(state, name, &record, Protocol::Reapi, options).await? {
            return Ok(Some(response));
        }
    }
    Ok(None)
}

/// The bytes of `target`, at most `limit` of them; `None` when absent.
pub async fn read(
    state: &AppState,
    namespaces: &Namespaces,
    target: &Target,
    limit: usize,
) -> Result<Option<Bytes>, ApiError> {
    if target.is_empty_blob() {
        return Ok(Some(Bytes::new()));
    }
    let (reads, _, _) = target.names(namespaces)?;
    for name in &reads {
        let Some(record) = object::lookup(state, name, Protocol::Reapi).await? else {
            continue;
        };
        let Some(response) = object::get(
            state,
            name,
            &record,
            Protocol::Reapi,
            ReadOptions::default(),
        )
        .await?
        else {
            continue;
        };
        let bytes = axum::body::to_bytes(response.into_body(), limit)
            .await
            .map_err(|e| ApiError::Internal(format!("reading a stored object: {e}")))?;
        return Ok(Some(bytes));
    }
    Ok(None)
}

/// Stores `bytes` as `target`, verified against its digest for a blob
/// (nothing is stored on a mismatch); an action result is replaced.
pub async fn write(
    state: &AppState,
    namespaces: &Namespaces,
    target: &Target,
    bytes: Bytes,
) -> Result<(), ApiError> {
    if target.is_empty_blob() && bytes.is_empty() {
        return Ok(());
    }
    let (_, name, check) = target.names(namespaces)?;
    let options = WriteOptions {
        encoding: BodyEncoding::Identity,
        declared_length: Some(bytes.len() as u64),
        check,
        if_exists: if target.path.action {
            IfExists::Replace
        } else {
            IfExists::Keep
        },
        meta: None,
        owner: namespaces.own.clone(),
    };
    object::put(state, &name, Protocol::Reapi, options, Body::from(bytes)).await?;
    Ok(())
}

/// Starts storing the blob `target` from `body` (zstd frames with `zstd`),
/// verified against its digest: the task ends with the write's outcome once
/// the body ends (an `Err` item in the body aborts it, nothing stored).
pub fn write_streamed(
    state: &AppState,
    namespaces: &Namespaces,
    target: &Target,
    zstd: bool,
    size: u64,
    body: Body,
) -> Result<tokio::task::JoinHandle<Result<object::Written, ApiError>>, ApiError> {
    let (_, name, check) = target.names(namespaces)?;
    let options = WriteOptions {
        encoding: if zstd {
            BodyEncoding::Zstd
        } else {
            BodyEncoding::Identity
        },
        declared_length: (!zstd).then_some(size),
        check,
        if_exists: IfExists::Keep,
        meta: None,
        owner: namespaces.own.clone(),
    };
    let state = state.clone();
    Ok(tokio::spawn(async move {
        object::put(&state, &name, Protocol::Reapi, options, body).await
    }))
}
