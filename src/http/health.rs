//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;

use super::HttpState;

/// `GET /healthz`: the process serves HTTP.
pub async fn live() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok")
}

/// `GET /readyz`: the database answers and the migrations are applied.
pub async fn ready(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.gateway.store().ready().await {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
