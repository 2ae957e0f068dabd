//! Liveness and readiness probes.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;

use super::HttpState;

/// `GET /healthz`: the process serves HTTP.
pub async fn live() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok")
}

/// How long `/readyz` waits for the database before answering 503.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /readyz`: the database answers and the migrations are applied, within
/// [`READY_TIMEOUT`]; 503 otherwise (an unreachable database never makes the probe hang).
pub async fn ready(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if tokio::time::timeout(READY_TIMEOUT, state.gateway.store().ready()).await.unwrap_or(false) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
