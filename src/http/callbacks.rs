//! `POST /callbacks/{provider}[/{account}]`: server-to-server callbacks, the same code path as
//! VerifyCallback.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{HttpState, error_response};
use crate::providers::RawCallback;

pub async fn default_account(
    State(state): State<HttpState>,
    Path(provider): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, &provider, "default", query, headers, body).await
}

pub async fn with_account(
    State(state): State<HttpState>,
    Path((provider, account)): Path<(String, String)>,
    query: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, &provider, &account, query, headers, body).await
}

async fn handle(
    state: HttpState,
    provider: &str,
    account: &str,
    query: RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw = RawCallback { headers: join_headers(&headers), body: body.to_vec(), query: query.0.unwrap_or_default() };
    match state.gateway.handle_callback(provider, account, &raw).await {
        // Accepted, duplicate and amount-mismatch alike: 200 after commit, so the provider stops retrying.
        Ok(outcome) => {
            let body = serde_json::json!({
                "payment_id": outcome.payment.id,
                "event_id": outcome.event_id,
                "duplicate": outcome.duplicate,
                "status_changed": outcome.status_changed,
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// Header names lower-cased, repeated headers joined with `, `.
fn join_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let entry = out.entry(name.as_str().to_owned()).or_default();
        if !entry.is_empty() {
            entry.push_str(", ");
        }
        entry.push_str(&String::from_utf8_lossy(value.as_bytes()));
    }
    out
}
