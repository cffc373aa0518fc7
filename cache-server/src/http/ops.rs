//! Operations endpoints: stats, Prometheus metrics, liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cache_proto::body::Stats;

use super::AppState;
use super::error::ApiError;

/// `GET /v1/stats`.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let stored = state.index.totals().await?;
    let stored = state.metrics.with_eviction(stored, state.quota());
    Ok(Json(state.metrics.stats(stored)))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stored = state.index.totals().await?;
    let stored = state.metrics.with_eviction(stored, state.quota());
    let text = state.metrics.render(&stored);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// `GET /`: the dashboard, one self-contained HTML page.
pub async fn dashboard(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stored = state.index.totals().await?;
    let stored = state.metrics.with_eviction(stored, state.quota());
    let now_ms = crate::index::now_ms();
    let since = now_ms - crate::dashboard::TREND_DAYS * 86_400_000;
    let data = crate::dashboard::DashboardData {
        stats: state.metrics.stats(stored),
        events: state.events.list(since, 5000).await?,
        now_ms,
    };
    let page = crate::dashboard::render(&data);
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response())
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the storage answers within its timeout.
pub async fn readyz(State(state): State<AppState>) -> Result<(StatusCode, &'static str), ApiError> {
    state.storage.probe().await?;
    Ok((StatusCode::OK, "ready\n"))
}
