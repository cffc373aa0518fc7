//! Serving the gRPC API ([`crate::grpc`]'s services) on its own port:
//! accepted connections, plain or TLS ([`incoming`]), to tonic's HTTP/2
//! transport, each call counted by its method.

mod incoming;

use crate::grpc::routes;
use crate::state::AppState;

/// Serves the gRPC API on `listener` (over TLS with `tls`, which must
/// offer ALPN `h2`) until `shutdown` completes.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = incoming::accept(listener, tls);
    let metrics = state.metrics.clone();
    tonic::transport::Server::builder()
        // A peer that vanished without closing is found and dropped.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .layer(tower::util::MapRequestLayer::new(
            move |request: tonic::codegen::http::Request<tonic::body::Body>| {
                metrics.grpc_call(request.uri().path());
                request
            },
        ))
        .add_routes(routes(state))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
