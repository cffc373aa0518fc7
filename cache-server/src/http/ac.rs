//! `/v1/ac/{key}`: the action cache, small values under client-chosen keys,
//! with `If-Match` / `If-None-Match` compare-and-set.

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cache_proto::headers::MAX_AC_VALUE_BYTES;
use cache_proto::{Key, Namespace};

use super::error::ApiError;
use super::request::{self, Preconditions};
use crate::blob::{StoredName, ac_path};
use crate::index::{NewObject, action_etag};
use crate::metrics::{Protocol, ReadResult, WriteResult};
use crate::namespaces::Namespaces;
use crate::state::AppState;

fn not_found(key: &Key) -> ApiError {
    ApiError::NotFound(format!("action-cache entry {key} not found"))
}

fn with_etag(mut response: Response, etag: Option<&str>) -> Response {
    if let Some(value) = etag.and_then(|etag| HeaderValue::from_str(etag).ok()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The entry's current value as far as preconditions go.
struct Current {
    /// Its entity tag.
    etag: String,
    /// The store's version of it, when read from storage.
    version: Option<object_store::UpdateVersion>,
}

/// The entry's current value, `None` when absent: from the index on a
/// single server, from storage itself when replicas share it (another
/// replica may have changed it a moment ago).
async fn current(
    state: &AppState,
    namespace: &Namespace,
    key: &Key,
) -> Result<Option<Current>, ApiError> {
    if state.catalog.is_shared() {
        let read = state
            .storage
            .read_versioned(&ac_path(namespace, key))
            .await?;
        return Ok(read.map(|read| Current {
            etag: action_etag(&read.bytes),
            version: Some(read.version),
        }));
    }
    let record = state
        .index
        .get(&StoredName::Action(namespace.clone(), *key))
        .await?;
    Ok(record.and_then(|record| record.etag).map(|etag| Current {
        etag,
        version: None,
    }))
}

/// Writes `value`; with replicas over a store that honours conditional
/// puts, a write under preconditions lands only if the entry is still what
/// they were checked against (another replica may write in between).
async fn write_value(
    state: &AppState,
    (namespace, key): (&Namespace, &Key),
    value: Bytes,
    checked: Option<&Current>,
    preconditions: &Preconditions,
) -> Result<(), ApiError> {
    let path = ac_path(namespace, key);
    if !(preconditions.any() && state.catalog.is_shared() && state.leases.conditional_puts()) {
        state.storage.put_small(&path, value).await?;
        return Ok(());
    }
    let landed = match checked.and_then(|current| current.version.clone()) {
        Some(version) => state.storage.replace_if(&path, value, version).await?,
        None => state.storage.create_small(&path, value).await?,
    };
    if landed {
        Ok(())
    } else {
        Err(ApiError::PreconditionFailed(
            "the entry changed while it was being written".into(),
        ))
    }
}

/// `GET /v1/ac/{key}`: the value in the first namespace the request reads
/// that has one (its own, then its fallbacks).
pub async fn get_entry(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let key = request::key(&raw)?;
    for namespace in &namespaces.reads {
        let name = StoredName::Action(namespace.clone(), key);
        if let Some(value) = read_value(&state, &name).await? {
            state.metrics.read(Protocol::Ac, ReadResult::Hit);
            state.metrics.served(Protocol::Ac, value.len() as u64);
            state.index.record_access(&name);
            let etag = action_etag(&value);
            let response =
                ([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response();
            return Ok(with_etag(response, Some(&etag)));
        }
    }
    state.metrics.read(Protocol::Ac, ReadResult::Miss);
    Err(not_found(&key))
}

/// The value of the entry `name`, `None` when absent.
async fn read_value(state: &AppState, name: &StoredName) -> Result<Option<Bytes>, ApiError> {
    let record = state.index.get(name).await?;
    // A single server's index knows every entry; with replicas sharing the
    // bucket, storage decides (another replica may have written or deleted
    // the entry), read once.
    let value = if record.is_some() || state.catalog.is_shared() {
        state.storage.read_small(&name.path()).await?
    } else {
        None
    };
    match (&record, &value) {
        // The index outlived the object (deleted behind our back): heal it.
        (Some(_), None) => {
            state.index.remove(name).await?;
        }
        (None, Some(value)) => state.index.put(name, NewObject::action(value)).await?,
        _ => {}
    }
    Ok(value)
}

/// `HEAD /v1/ac/{key}`: answered from the index.
pub async fn head_entry(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let key = request::key(&raw)?;
    let mut found = None;
    for namespace in &namespaces.reads {
        found = state
            .catalog
            .find(&StoredName::Action(namespace.clone(), key))
            .await?;
        if found.is_some() {
            break;
        }
    }
    let Some(record) = found else {
        state.metrics.read(Protocol::Ac, ReadResult::Miss);
        return Err(not_found(&key));
    };
    state.metrics.read(Protocol::Ac, ReadResult::Hit);
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(record.size));
    Ok(with_etag(response, record.etag.as_deref()))
}

/// `PUT /v1/ac/{key}`: creates or replaces, subject to the preconditions.
pub async fn put_entry(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = request::key(&raw)?;
    let preconditions = Preconditions::parse(&headers);
    let result = replace(&state, &namespaces.own, key, &preconditions, body).await;
    let outcome = if result.is_ok() {
        WriteResult::Stored
    } else {
        WriteResult::Rejected
    };
    state.metrics.write(Protocol::Ac, outcome);
    result
}

async fn replace(
    state: &AppState,
    namespace: &Namespace,
    key: Key,
    preconditions: &Preconditions,
    body: Body,
) -> Result<Response, ApiError> {
    let value: Bytes = axum::body::to_bytes(body, MAX_AC_VALUE_BYTES as usize)
        .await
        .map_err(|_| ApiError::TooLarge {
            limit: MAX_AC_VALUE_BYTES,
        })?;
    let name = StoredName::Action(namespace.clone(), key);
    let _guard = state.ac_locks.lock(&key).await;
    let current = current(state, namespace, &key).await?;
    preconditions.check(current.as_ref().map(|c| c.etag.as_str()))?;
    let object = NewObject::action(&value);
    let (etag, size) = (action_etag(&value), object.size);
    write_value(
        state,
        (namespace, &key),
        value,
        current.as_ref(),
        preconditions,
    )
    .await?;
    state.index.put(&name, object).await?;
    if let Some(quotas) = &state.namespace_quotas {
        quotas.enforce(namespace).await?;
    }
    state.metrics.received(Protocol::Ac, size);
    let status = if current.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_etag(status.into_response(), Some(&etag)))
}

/// `DELETE /v1/ac/{key}`: 204, or 404 when absent; honours `If-Match`.
pub async fn delete_entry(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = request::key(&raw)?;
    let preconditions = Preconditions::parse(&headers);
    let namespace = &namespaces.own;
    let name = StoredName::Action(namespace.clone(), key);
    let _guard = state.ac_locks.lock(&key).await;
    let current = current(&state, namespace, &key).await?;
    preconditions.check(current.as_ref().map(|c| c.etag.as_str()))?;
    let existed = state.storage.delete(&name.path()).await?;
    let indexed = state.index.remove(&name).await?;
    if existed || indexed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&key))
    }
}
