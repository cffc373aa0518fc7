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
use cache_proto::{Digest, Namespace};

use super::{ApiError, AppState, opaque_key, read, read_names, write, write_name};
use crate::blob::upload::ContentCheck;
use crate::blob::{Space, StoredName};
use crate::http::object::IfExists;
use crate::metrics::Protocol;
use crate::namespaces::Namespaces;

/// SHA-256 of nothing.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A Bazel request, parsed from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BazelPath {
    /// Action cache (`ac`) rather than CAS.
    pub action: bool,
    /// `--digest_function=blake3`.
    pub blake3: bool,
    /// The 64 lowercase hex digest.
    pub hex: String,
}

impl BazelPath {
    /// Recognises `.../ac/{64 hex}` and `.../cas/{64 hex}`; `None` for any
    /// other path (which is then no route at all).
    pub fn parse(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let [prefix @ .., kind, hex] = segments.as_slice() else {
            return None;
        };
        let action = match *kind {
            "ac" => true,
            "cas" => false,
            _ => return None,
        };
        let is_hex = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        is_hex.then(|| Self {
            action,
            blake3: prefix.iter().any(|s| s.eq_ignore_ascii_case("blake3")),
            hex: (*hex).to_owned(),
        })
    }

    /// The names the object is read under (in order) and the one it is
    /// written under, with the check its content must pass. Action results
    /// live in namespaces; CAS content is verified against its name, so it
    /// is global (in `default`, where it always was).
    pub(crate) fn names(
        &self,
        namespaces: &Namespaces,
    ) -> Result<(Vec<StoredName>, StoredName, ContentCheck), ApiError> {
        let key = opaque_key(&self.hex)?;
        Ok(match (self.action, self.blake3) {
            (true, blake3) => {
                let space = Space::BazelAc { blake3 };
                (
                    read_names(namespaces, &space, &key),
                    write_name(namespaces, space, key),
                    ContentCheck::Unverified,
                )
            }
            (false, true) => {
                let digest = Digest::parse(&self.hex)
                    .map_err(|e| ApiError::bad_request("invalid_digest", e.to_string()))?;
                let name = StoredName::Blob(digest);
                (vec![name.clone()], name, ContentCheck::Blake3(digest))
            }
            (false, false) => {
                let mut bytes = [0u8; 32];
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&self.hex[2 * i..2 * i + 2], 16)
                        .map_err(|_| ApiError::bad_request("invalid_digest", "not hex"))?;
                }
                let name = StoredName::Entry(Namespace::default(), Space::BazelCasSha256, key);
                (vec![name.clone()], name, ContentCheck::Sha256(bytes))
            }
        })
    }

    /// Whether this is the empty blob, which always exists.
    pub(crate) fn is_empty_blob(&self) -> bool {
        !self.action
            && if self.blake3 {
                self.hex == Digest::of(b"").to_string()
            } else {
                self.hex == EMPTY_SHA256
            }
    }
}

/// Serves a Bazel request; `None` when the path is not one.
pub async fn handle(
    state: AppState,
    namespaces: &Namespaces,
    method: Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Body,
) -> Option<Result<Response, ApiError>> {
    let path = BazelPath::parse(uri.path())?;
    Some(serve(state, namespaces, method, path, headers, body).await)
}

async fn serve(
    state: AppState,
    namespaces: &Namespaces,
    method: Method,
    path: BazelPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (read_names, name, check) = path.names(namespaces)?;
    match method {
        Method::GET | Method::HEAD if path.is_empty_blob() => {
            Ok(([(axum::http::header::CONTENT_LENGTH, "0")], "").into_response())
        }
        Method::GET | Method::HEAD => {
            let (response, _) =
                read(&state, &read_names, Protocol::Bazel, &method, &headers).await?;
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
            let how = (check, if_exists, None);
            let target = (&name, &namespaces.own);
            let written = write(&state, target, Protocol::Bazel, &headers, body, how).await?;
            Ok(written.status().into_response())
        }
        other => Err(ApiError::MethodNotAllowed(format!(
            "{other} is not allowed on the Bazel cache"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_any_prefix_and_the_digest_function() {
        let hex = "ab".repeat(32);
        assert_eq!(
            BazelPath::parse(&format!("/cas/{hex}")),
            Some(BazelPath {
                action: false,
                blake3: false,
                hex: hex.clone()
            })
        );
        let parsed = BazelPath::parse(&format!("/team/blake3/ac/{hex}")).unwrap();
        assert!(parsed.action && parsed.blake3);
        assert!(BazelPath::parse(&format!("/cas/{}", "AB".repeat(32))).is_none());
        assert!(BazelPath::parse("/cas/abc").is_none());
        assert!(BazelPath::parse(&format!("/other/{hex}")).is_none());
        assert!(BazelPath::parse("/").is_none());
    }
}
