//! The cache protocols of the tools a team already runs, each a thin
//! adapter over the same object core, index, auth and metrics: parse the
//! request into a stored name and options, then read or write.
//!
//! | protocol | routes |
//! | --- | --- |
//! | Bazel HTTP cache | `{prefix}/ac/{64 hex}`, `{prefix}/cas/{64 hex}` (any prefix; a `blake3` segment selects BLAKE3) |
//! | Turborepo | `/v8/artifacts/status`, `/v8/artifacts/{hash}`, `POST /v8/artifacts`, `POST /v8/artifacts/events` |
//! | ccache | `/ccache/{2}/{38}` (subdirs) and `/ccache/{40}` (flat) |
//! | Gradle | `/cache/{key}` |
//! | Nx | `/v1/cache/{hash}` |

pub mod bazel;
pub mod ccache;
pub mod gradle;
pub mod nx;
pub mod turbo;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cache_proto::Namespace;

use super::error::ApiError;
use super::object::{self, IfExists, ReadOptions, WriteOptions, Written};
use super::request;
use crate::blob::upload::ContentCheck;
use crate::blob::{Space, StoredName};
use crate::index::ObjectRecord;
use crate::metrics::{Protocol, ReadResult};
use crate::namespaces::Namespaces;
use crate::protocol_names::{opaque_key, read_names, write_name};
use crate::state::AppState;

/// `GET` or `HEAD` of the first of `names` that exists (one hit or miss
/// counted): the answer and the found object's row. 404 on a miss.
async fn read(
    state: &AppState,
    names: &[StoredName],
    protocol: Protocol,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Response, ObjectRecord), ApiError> {
    let miss = || ApiError::NotFound("no such entry".into());
    let options = ReadOptions {
        accept_zstd: request::accepts_zstd(headers),
        range: None,
    };
    let mut found = None;
    for name in names {
        if method == Method::GET
            && let Some((cached, response)) = object::get_hot(state, name, protocol, options)
        {
            return Ok((response, cached.record.clone()));
        }
        if let Some(record) = state.catalog.find(name).await? {
            found = Some((name, record));
            break;
        }
    }
    let result = if found.is_some() {
        ReadResult::Hit
    } else {
        ReadResult::Miss
    };
    state.metrics.read(protocol, result);
    let (name, record) = found.ok_or_else(miss)?;
    if method == Method::HEAD {
        return Ok((object::head(&record), record));
    }
    let opened = object::open(state, name, &record, protocol, options)
        .await?
        .ok_or_else(miss)?;
    Ok((object::respond(opened), record))
}

/// `PUT` of an entry.
async fn write(
    state: &AppState,
    (name, owner): (&StoredName, &Namespace),
    protocol: Protocol,
    headers: &HeaderMap,
    body: Body,
    (check, if_exists, meta): (ContentCheck, IfExists, Option<String>),
) -> Result<Written, ApiError> {
    let options = WriteOptions {
        encoding: request::body_encoding(headers)?,
        declared_length: request::content_length(headers)?,
        check,
        if_exists,
        meta,
        owner: owner.clone(),
    };
    object::put(state, name, protocol, options, body).await
}

/// A protocol whose entries are opaque keys in one space, read with
/// `GET`/`HEAD` and written with `PUT` (Gradle, Nx): its handlers are
/// [`keyed_get`] and [`keyed_put`].
pub trait KeyedProtocol {
    /// The entries' space.
    const SPACE: Space;
    /// Whose counters they count in.
    const PROTOCOL: Protocol;
    /// What a `PUT` does when the entry exists.
    const IF_EXISTS: IfExists;
    /// The status of a successful `PUT`; `None`: 201 created, 200 replaced.
    const STORED: Option<StatusCode>;
}

/// `GET`/`HEAD` of an entry of `P`.
pub async fn keyed_get<P: KeyedProtocol>(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(raw): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let names = read_names(&namespaces, &P::SPACE, &opaque_key(&raw)?);
    let (response, _) = read(&state, &names, P::PROTOCOL, &method, &headers).await?;
    Ok(response)
}

/// `PUT` of an entry of `P`.
pub async fn keyed_put<P: KeyedProtocol>(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = write_name(&namespaces, P::SPACE, opaque_key(&raw)?);
    let how = (ContentCheck::Unverified, P::IF_EXISTS, None);
    let written = write(
        &state,
        (&name, &namespaces.own),
        P::PROTOCOL,
        &headers,
        body,
        how,
    )
    .await?;
    Ok(P::STORED.unwrap_or(written.status()).into_response())
}

/// `DELETE` of an entry: 204, or 404 when absent.
async fn delete(state: &AppState, name: &StoredName) -> Result<Response, ApiError> {
    if object::delete(state, name).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound("no such entry".into()))
    }
}
