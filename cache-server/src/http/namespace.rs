//! How a request names its namespace: a `/ns/{namespace}/` path prefix in
//! front of any route (every client that takes a base URL can send it), else
//! the `X-Cachectl-Namespace` header (our own client), else its credential's
//! default. The prefix is taken off before routing, so `/ns/pr-1/v1/ac/K`
//! is the route `/v1/ac/K` in namespace `pr-1`.

use axum::extract::Request;
use axum::http::Uri;
use axum::http::uri::PathAndQuery;
use cache_proto::namespace::{HEADER, split_path};
use cache_proto::{Invalid, Namespace};

use super::error::ApiError;

/// The namespace a request's path prefix named, as parsed (an invalid one
/// is refused with 400 by the auth middleware, which knows how to answer).
#[derive(Debug, Clone)]
pub struct PathNamespace(Result<Namespace, Invalid>);

/// Takes a `/ns/{namespace}` prefix off the request's path (keeping the
/// query) and notes the namespace in its extensions. It runs before the
/// router (see `http::app`), so `/ns/pr-1/v1/ac/K` is routed as `/v1/ac/K`.
pub fn strip_prefix<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let Some((named, rest)) = split_path(request.uri().path()) else {
        return request;
    };
    let parsed =
        Namespace::parse(named).map_err(|error| Invalid(format!("namespace {named:?}: {error}")));
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    // The rest of a valid path is a valid path.
    parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request.extensions_mut().insert(PathNamespace(parsed));
    request
}

/// The namespace a request names by its path prefix, else by the header;
/// `None` when it names none. A malformed one is 400.
pub fn named(request: &Request) -> Result<Option<Namespace>, ApiError> {
    let invalid = |reason: Invalid| ApiError::bad_request("invalid_namespace", reason);
    if let Some(PathNamespace(parsed)) = request.extensions().get::<PathNamespace>() {
        return parsed.clone().map(Some).map_err(invalid);
    }
    let Some(value) = request.headers().get(HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| invalid(Invalid(format!("{HEADER} is not text"))))?;
    Namespace::parse(text.trim())
        .map(Some)
        .map_err(|error| invalid(Invalid(format!("{HEADER}: {error}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    async fn stripped(uri: &str) -> Request {
        strip_prefix(Request::builder().uri(uri).body(Body::empty()).unwrap())
    }

    #[tokio::test]
    async fn the_prefix_comes_off_and_names_the_namespace() {
        let request = stripped("/ns/pr-42/v8/artifacts/abc?teamId=team_x").await;
        assert_eq!(request.uri().path(), "/v8/artifacts/abc");
        assert_eq!(request.uri().query(), Some("teamId=team_x"));
        assert_eq!(
            named(&request).unwrap(),
            Some(Namespace::parse("pr-42").unwrap())
        );

        let request = stripped("/v1/ac/abc").await;
        assert_eq!(request.uri().path(), "/v1/ac/abc");
        assert_eq!(named(&request).unwrap(), None);

        let request = stripped("/ns/../v1/ac/abc").await;
        assert!(named(&request).is_err());
    }

    #[tokio::test]
    async fn the_header_names_a_namespace_the_path_does_not() {
        let request = Request::builder()
            .uri("/v1/ac/abc")
            .header(HEADER, "main")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            named(&request).unwrap(),
            Some(Namespace::parse("main").unwrap())
        );
        let request = Request::builder()
            .uri("/v1/ac/abc")
            .header(HEADER, "a/b")
            .body(Body::empty())
            .unwrap();
        assert!(named(&request).is_err());
        // The prefix wins.
        let mut request = stripped("/ns/pr-1/v1/ac/abc").await;
        request
            .headers_mut()
            .insert(HEADER, "main".parse().unwrap());
        assert_eq!(
            named(&request).unwrap(),
            Some(Namespace::parse("pr-1").unwrap())
        );
    }
}
