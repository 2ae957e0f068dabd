//! The HTTP side (axum): provider callback ingress, shopper returns, hosted checkout pages and
//! health probes.

mod callbacks;
mod checkout_page;
mod health;
mod page;
mod returns;
mod trace;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::gateway::Gateway;

/// Shared state of the HTTP handlers.
#[derive(Clone, Debug)]
pub struct HttpState {
    pub gateway: Gateway,
    /// Client the sandbox page uses to deliver its callbacks like an outside provider.
    pub client: reqwest::Client,
}

/// All HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/callbacks/{provider}", post(callbacks::default_account).fallback(method_not_allowed))
        .route("/callbacks/{provider}/{account}", post(callbacks::with_account).fallback(method_not_allowed))
        .route("/return/{provider}/{payment_id}", get(returns::shopper_return))
        .route("/checkout/{provider}/{payment_id}", get(checkout_page::show).post(checkout_page::submit))
        // Alias: open sandbox payments carry this `checkout_url`.
        .route("/sandbox/checkout/{payment_id}", get(checkout_page::show_sandbox).post(checkout_page::submit_sandbox))
        // Probes stay out of traces: the kubelet calls them every few seconds.
        .route_layer(axum::middleware::from_fn(trace::traced))
        .layer(axum::extract::DefaultBodyLimit::max(crate::limits::MAX_CALLBACK_BODY_BYTES))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .with_state(state)
}

/// An [`ApiError`] as a JSON error response `{"code", "message"}`.
pub fn error_response(e: ApiError) -> Response {
    let e = e.answered();
    if let ApiError::Internal(source) = &e {
        tracing::error!(error = format!("{source:#}"), "internal error");
    }
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(e.http_body())).into_response()
}

async fn method_not_allowed() -> Response {
    let body = serde_json::json!({ "code": "METHOD_NOT_ALLOWED", "message": "callbacks must be POSTed" });
    (StatusCode::METHOD_NOT_ALLOWED, [(axum::http::header::ALLOW, "POST")], axum::Json(body)).into_response()
}
