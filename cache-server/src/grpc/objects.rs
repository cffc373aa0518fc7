//! The object core as the gRPC services use it: blobs and action results
//! by REAPI digest, read and written through the same functions as the
//! HTTP protocols (verification, quota, eviction, metrics).

use bytes::Bytes;
use futures::TryStreamExt;

use crate::blob::download::BodyStream;
use crate::cache::object::{
    self, BodyEncoding, Content, IfExists, Opened, Read, ReadOptions, WriteOptions, Written,
};
use crate::error::ApiError;
use crate::metrics::Protocol;
use crate::namespaces::Namespaces;
use crate::protocol_names::BazelObject;
use crate::state::AppState;

/// Whether `target` is stored (readable in `namespaces`).
pub async fn exists(
    state: &AppState,
    namespaces: &Namespaces,
    target: &BazelObject,
) -> Result<bool, ApiError> {
    if target.is_empty_blob() {
        return Ok(true);
    }
    let reads = target.names(namespaces)?.reads;
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
    target: &BazelObject,
    options: ReadOptions,
) -> Result<Option<Read>, ApiError> {
    if target.is_empty_blob() {
        return Ok(Some(Read::Opened(Opened {
            content: Content::Whole(Bytes::new()),
            length: 0,
            zstd: false,
            range: None,
        })));
    }
    let reads = target.names(namespaces)?.reads;
    for name in &reads {
        let Some(record) = object::lookup(state, name, Protocol::Reapi).await? else {
            continue;
        };
        if let Some(read) = object::get(state, name, &record, Protocol::Reapi, options).await? {
            return Ok(Some(read));
        }
    }
    Ok(None)
}

/// The bytes of `target`, at most `limit` of them; `None` when absent.
pub async fn read(
    state: &AppState,
    namespaces: &Namespaces,
    target: &BazelObject,
    limit: usize,
) -> Result<Option<Bytes>, ApiError> {
    let Some(Read::Opened(opened)) =
        open(state, namespaces, target, ReadOptions::default()).await?
    else {
        return Ok(None);
    };
    if opened.length > limit as u64 {
        return Err(ApiError::Internal(format!(
            "a stored object of {} bytes is over the {limit} this call reads",
            opened.length
        )));
    }
    match opened.content {
        Content::Whole(bytes) => Ok(Some(bytes)),
        Content::Stream(stream) => {
            let bytes: Vec<u8> = stream
                .try_fold(Vec::new(), |mut all, chunk| async move {
                    all.extend_from_slice(&chunk);
                    Ok(all)
                })
                .await
                .map_err(|e| ApiError::Internal(format!("reading a stored object: {e}")))?;
            Ok(Some(Bytes::from(bytes)))
        }
    }
}

/// Stores `bytes` as `target`, verified against its digest for a blob
/// (nothing is stored on a mismatch); an action result is replaced.
pub async fn write(
    state: &AppState,
    namespaces: &Namespaces,
    target: &BazelObject,
    bytes: Bytes,
) -> Result<(), ApiError> {
    if target.is_empty_blob() && bytes.is_empty() {
        return Ok(());
    }
    let names = target.names(namespaces)?;
    let (name, check) = (names.write, names.check);
    let options = WriteOptions {
        encoding: BodyEncoding::Identity,
        declared_length: Some(bytes.len() as u64),
        check,
        if_exists: if target.action {
            IfExists::Replace
        } else {
            IfExists::Keep
        },
        meta: None,
        owner: namespaces.own.clone(),
    };
    let body = futures::stream::iter([Ok(bytes)]);
    object::put(state, &name, Protocol::Reapi, options, body).await?;
    Ok(())
}

/// Starts storing the blob `target` from `body` (zstd frames with `zstd`),
/// verified against its digest: the task ends with the write's outcome once
/// the body ends (an `Err` item in the body aborts it, nothing stored).
pub fn write_streamed(
    state: &AppState,
    namespaces: &Namespaces,
    target: &BazelObject,
    zstd: bool,
    size: u64,
    body: BodyStream,
) -> Result<tokio::task::JoinHandle<Result<Written, ApiError>>, ApiError> {
    let names = target.names(namespaces)?;
    let (name, check) = (names.write, names.check);
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
        Ok(object::put(&state, &name, Protocol::Reapi, options, body).await?)
    }))
}
