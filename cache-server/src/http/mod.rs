//! HTTP: the native v1 API, health and metrics, over [`AppState`].

mod ac;
pub(crate) mod auth;
mod cas;
pub(crate) mod compat;
pub mod endpoint;
pub mod error;
mod events;
mod hot_path;
mod leases;
pub mod namespace;
pub(crate) mod object;
mod ops;
pub mod request;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{MethodRouter, any, delete, get, post};
use tower::util::MapRequest;
use tower_http::trace::TraceLayer;

use crate::namespaces::Namespaces;
use crate::state::AppState;
use compat::gradle::Gradle;
use compat::nx::Nx;
use endpoint::Endpoint;
use error::ApiError;
use hot_path::HotPath;

/// The handlers of a routed endpoint, by method.
fn handlers(endpoint: Endpoint) -> MethodRouter<AppState> {
    match endpoint {
        Endpoint::Healthz => get(ops::healthz),
        Endpoint::Readyz => get(ops::readyz),
        Endpoint::Metrics => get(ops::metrics),
        Endpoint::Stats => get(ops::stats),
        Endpoint::Dashboard => get(ops::dashboard),
        Endpoint::Tokens => get(auth::list).post(auth::create),
        Endpoint::Token => delete(auth::revoke),
        Endpoint::Cas => get(cas::get_blob).head(cas::head_blob).put(cas::put_blob),
        Endpoint::CasMissing => post(cas::missing),
        Endpoint::CasBatch => post(cas::put_batch),
        Endpoint::CasBatchGet => post(cas::get_batch),
        Endpoint::Ac => get(ac::get_entry)
            .head(ac::head_entry)
            .put(ac::put_entry)
            .delete(ac::delete_entry),
        Endpoint::Lease => post(leases::acquire).delete(leases::release),
        Endpoint::Events => get(events::list).post(events::add),
        Endpoint::TurboStatus => get(compat::turbo::status),
        Endpoint::TurboEvents => post(compat::turbo::events),
        Endpoint::TurboQuery => post(compat::turbo::query),
        Endpoint::TurboArtifact => get(compat::turbo::get)
            .head(compat::turbo::get)
            .put(compat::turbo::put),
        Endpoint::Nx => get(compat::keyed_get::<Nx>)
            .head(compat::keyed_get::<Nx>)
            .put(compat::keyed_put::<Nx>),
        Endpoint::Gradle => get(compat::keyed_get::<Gradle>)
            .head(compat::keyed_get::<Gradle>)
            .put(compat::keyed_put::<Gradle>),
        Endpoint::CcacheFlat => any(compat::ccache::flat),
        Endpoint::CcacheSubdirs => any(compat::ccache::subdirs),
        Endpoint::Fallback => any(no_route),
    }
}

/// The served application: the router behind the `/ns/{namespace}` prefix
/// rewrite, which runs before routing (a plain function in front of the
/// one router, not a second router), behind the hot path of small blob
/// reads ([`hot_path`]), for request bodies of type `B`.
pub type App<B = axum::body::Body> =
    HotPath<MapRequest<Router, fn(axum::http::Request<B>) -> axum::http::Request<B>>>;

/// The whole HTTP surface: every routed [`Endpoint`] at its template, the
/// Bazel adapter (or 404) for the rest, all behind the auth middleware, and
/// all of it also under a `/ns/{namespace}` prefix (taken off before
/// routing).
pub fn app<B>(state: AppState) -> App<B> {
    let mut router = Router::new();
    for endpoint in Endpoint::ROUTED {
        if let Some(template) = endpoint.template() {
            router = router.route(template, handlers(endpoint));
        }
    }
    let mut routed = router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ));
    let logged = request_log_enabled();
    if logged {
        routed = routed.layer(TraceLayer::new_for_http().make_span_with(request_span));
    }
    let routed = routed.with_state(state.clone());
    let rewrite: fn(axum::http::Request<B>) -> axum::http::Request<B> =
        namespace::strip_prefix::<B>;
    HotPath::new(state, MapRequest::new(routed, rewrite), !logged)
}

/// Whether requests are logged one by one (`RUST_LOG=tower_http=debug`, or
/// `debug`): only then does the app carry a tracing layer, whose span, clock
/// reads and body wrapper cost a small read about a tenth of its CPU. A
/// server error is logged where it is answered either way (`ApiError`, and
/// a body that fails mid-stream in `object::counted`).
fn request_log_enabled() -> bool {
    tracing::enabled!(target: "tower_http::trace::on_response", tracing::Level::DEBUG)
        || tracing::enabled!(target: "tower_http::trace::on_request", tracing::Level::DEBUG)
}

/// The log span of a request: its method and route template, never the
/// concrete path (keys and digests stay out of the logs, like tokens).
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("(unmatched)", axum::extract::MatchedPath::as_str);
    tracing::debug_span!("request", method = %request.method(), route)
}

/// Paths no route matched: a Bazel cache path under any prefix, else 404.
async fn no_route(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let namespaces = parts
        .extensions
        .get::<Namespaces>()
        .cloned()
        .unwrap_or_else(Namespaces::default_only);
    if let Some(result) = compat::bazel::handle(
        state,
        &namespaces,
        parts.method.clone(),
        &parts.uri,
        parts.headers,
        body,
    )
    .await
    {
        return result;
    }
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        parts.method,
        parts.uri.path()
    )))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

#[cfg(test)]
mod tests;
