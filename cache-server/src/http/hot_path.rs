//! The hottest request answered before the router: `GET /v1/cas/{digest}`
//! of a blob held in the hot cache ([`crate::cache::hot`]), with the same
//! admission as every other request ([`admission::check`]) and the same
//! response as [`super::cas::get_blob`] gives from memory.
//!
//! Anything else, and any such GET the hot path cannot answer (not cached,
//! a range, `Accept-Encoding: zstd`, a namespace named by prefix or header,
//! a refused credential), goes to the router unchanged, which answers it
//! as it always did (refusals included). What the router costs a request
//! (matching, the middleware's boxed future and extensions, extractors)
//! was half of a small GET's user-space CPU (`docs/benchmarks.md`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::request::Parts;
use axum::http::{Method, Request};
use axum::response::Response;
use cache_proto::namespace::HEADER;
use tower::{Service, ServiceExt};

use super::auth::presented_secret;
use super::cas;
use super::endpoint::Endpoint;
use crate::admission;
use crate::state::AppState;

/// The path of a CAS blob before its digest.
const CAS_PREFIX: &str = "/v1/cas/";

/// `inner` (the router) with the hot path in front; see the module
/// documentation.
#[derive(Clone)]
pub struct HotPath<S> {
    state: AppState,
    inner: S,
    /// Off when requests are logged one by one: the hot path would skip
    /// the router's log span.
    enabled: bool,
}

impl<S> HotPath<S> {
    /// Puts the hot path in front of `inner`, unless `enabled` is false.
    pub fn new(state: AppState, inner: S, enabled: bool) -> Self {
        Self {
            state,
            inner,
            enabled,
        }
    }
}

/// The digest text of a request the hot path may answer: a GET of
/// `/v1/cas/{digest}` naming no namespace (the router answers the rest).
fn candidate(request: &Parts) -> Option<&str> {
    if request.method != Method::GET || request.headers.contains_key(HEADER) {
        return None;
    }
    let raw = request.uri.path().strip_prefix(CAS_PREFIX)?;
    (!raw.is_empty() && !raw.contains('/')).then_some(raw)
}

/// The response from memory, when the request is a candidate, its
/// credential is admitted to read and the blob is in the hot cache.
async fn answer(state: &AppState, request: &Parts) -> Option<Response> {
    let raw = candidate(request)?;
    let needed = Endpoint::Cas.required_scope(&request.method);
    admission::check(state, None, needed, presented_secret(&request.headers))
        .await
        .ok()?;
    let response = cas::get_hot_blob(state, raw, &request.headers)?;
    state.metrics.http_request(&request.method);
    Some(response)
}

impl<S, B> Service<Request<B>> for HotPath<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready; it is driven with `oneshot` below.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        // The body stays out of the future's borrows: it need not be `Sync`.
        let (parts, body) = request.into_parts();
        if !self.enabled || candidate(&parts).is_none() {
            return Box::pin(inner.oneshot(Request::from_parts(parts, body)));
        }
        let state = self.state.clone();
        Box::pin(async move {
            if let Some(response) = answer(&state, &parts).await {
                return Ok(response);
            }
            inner.oneshot(Request::from_parts(parts, body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Scope;

    fn request(method: Method, uri: &str) -> Parts {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn only_a_plain_cas_get_without_a_namespace_is_a_candidate() {
        let digest = "ab".repeat(32);
        let path = format!("/v1/cas/{digest}");
        assert_eq!(
            candidate(&request(Method::GET, &path)),
            Some(digest.as_str())
        );
        assert_eq!(candidate(&request(Method::HEAD, &path)), None);
        assert_eq!(candidate(&request(Method::PUT, &path)), None);
        assert_eq!(
            candidate(&request(Method::GET, &format!("/ns/pr-1{path}"))),
            None
        );
        assert_eq!(candidate(&request(Method::GET, "/v1/cas/missing/x")), None);
        assert_eq!(candidate(&request(Method::GET, "/v1/cas/")), None);
        let mut named = request(Method::GET, &path);
        named.headers.insert(HEADER, "pr-1".parse().unwrap());
        assert_eq!(candidate(&named), None);
    }

    /// The hot path admits as the middleware would for the route.
    #[test]
    fn a_cas_get_needs_the_read_scope() {
        assert_eq!(
            Endpoint::Cas.required_scope(&Method::GET),
            Some(Scope::Read)
        );
    }
}
