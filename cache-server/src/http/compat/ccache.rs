//! ccache HTTP remote storage under `/ccache`: the `subdirs` layout
//! (`/ccache/{2}/{38}`, ccache's default) and the `flat` layout
//! (`/ccache/{40}`) name the same entry. `GET`, `HEAD`, `PUT` (replaces;
//! ccache sends `HEAD` first when it must not overwrite) and `DELETE`.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, delete, opaque_key, read, read_names, write, write_name};
use crate::blob::upload::ContentCheck;
use crate::blob::{EntryKey, Space};
use crate::http::object::IfExists;
use crate::metrics::Protocol;
use crate::namespaces::Namespaces;

/// The key of a flat path, or of a subdirs pair (2 characters, then the rest).
fn name(first: &str, rest: Option<&str>) -> Result<EntryKey, ApiError> {
    let key = match rest {
        None => opaque_key(first)?,
        // Each segment is a key fragment: a dot segment (`/ccache/ab/..`)
        // would mean another path to a proxy that normalises it.
        Some(rest) if first.len() == 2 && !rest.starts_with('.') => {
            opaque_key(&format!("{first}{rest}"))?
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_key",
                "a subdirs path is /ccache/{2 characters}/{rest of the key, no leading dot}",
            ));
        }
    };
    Ok(key)
}

async fn any(
    state: AppState,
    namespaces: Namespaces,
    key: EntryKey,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    match method {
        Method::GET | Method::HEAD => {
            let names = read_names(&namespaces, &Space::Ccache, &key);
            let (response, _) = read(&state, &names, Protocol::Ccache, &method, &headers).await?;
            Ok(response)
        }
        Method::PUT => {
            let name = write_name(&namespaces, Space::Ccache, key);
            let how = (ContentCheck::Unverified, IfExists::Replace, None);
            let target = (&name, &namespaces.own);
            let written = write(&state, target, Protocol::Ccache, &headers, body, how).await?;
            Ok(written.status().into_response())
        }
        Method::DELETE => delete(&state, &write_name(&namespaces, Space::Ccache, key)).await,
        other => Err(ApiError::MethodNotAllowed(format!(
            "{other} is not allowed on ccache entries"
        ))),
    }
}

/// `/ccache/{key}` (flat layout).
pub async fn flat(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path(key): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = name(&key, None)?;
    any(state, namespaces, name, method, headers, body).await
}

/// `/ccache/{xx}/{rest}` (subdirs layout).
pub async fn subdirs(
    State(state): State<AppState>,
    Extension(namespaces): Extension<Namespaces>,
    Path((first, rest)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = name(&first, Some(&rest))?;
    any(state, namespaces, name, method, headers, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_name_the_same_entry() {
        let key = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            name(&key[..2], Some(&key[2..])).unwrap(),
            name(key, None).unwrap()
        );
        assert!(name("abc", Some("def")).is_err());
        assert!(name("..", None).is_err());
    }

    #[test]
    fn a_dot_segment_is_not_part_of_a_subdirs_key() {
        // Regression: `/ccache/ab/..` was stored as the entry `ab..`.
        assert!(name("ab", Some("..")).is_err());
        assert!(name("ab", Some(".x")).is_err());
        assert!(name("..", Some("ab")).is_err());
    }
}
