//! Operations endpoints: stats, Prometheus metrics, liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cache_proto::Namespace;
use cache_proto::body::{NamespaceStats, Stats};

use super::error::ApiError;
use crate::state::AppState;

/// `GET /v1/stats`.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    Ok(Json(current_stats(&state).await?))
}

/// The stored totals, the protocols' counters and each namespace's usage
/// (with its quota).
async fn current_stats(state: &AppState) -> Result<Stats, ApiError> {
    let stored = state.index.totals().await?;
    let stored = state.metrics.with_eviction(stored, state.quota());
    let mut stats = state.metrics.stats(stored);
    stats.namespaces = namespace_usage(state).await?;
    Ok(stats)
}

/// What each namespace is charged for, with its quota; empty while only
/// the default namespace holds anything and no namespace has a quota.
async fn namespace_usage(state: &AppState) -> Result<Vec<NamespaceStats>, ApiError> {
    let mut usage = state.index.usage_by_owner().await?;
    let only_default = usage
        .iter()
        .all(|usage| usage.namespace == Namespace::DEFAULT);
    if only_default && state.namespace_quotas.is_none() {
        return Ok(Vec::new());
    }
    if let Some(quotas) = &state.namespace_quotas {
        for entry in &mut usage {
            entry.quota_bytes = Namespace::parse(&entry.namespace)
                .ok()
                .and_then(|namespace| quotas.quota_of(&namespace));
        }
    }
    Ok(usage)
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stats = current_stats(&state).await?;
    let text = state.metrics.render(&stats.stored, &stats.namespaces);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// `GET /`: the dashboard, one self-contained HTML page.
pub async fn dashboard(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stats = current_stats(&state).await?;
    let now_ms = crate::index::now_ms();
    let since = now_ms - crate::dashboard::TREND_DAYS * 86_400_000;
    let data = crate::dashboard::DashboardData {
        stats,
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
