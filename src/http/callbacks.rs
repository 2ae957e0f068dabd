//! `POST /callbacks/{provider}[/{account}]`: provider callbacks, the same code path as
//! VerifyCallback. Server-to-server callbacks get status codes and JSON; callbacks a provider
//! delivers through the shopper's browser (a form POST) get a redirect back to the caller's page.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{HttpState, error_response, page};
use crate::domain::{Payment, PaymentId, PaymentStatus};
use crate::error::ApiError;
use crate::gateway::{CallbackOutcome, PaymentLookup};
use crate::limits::MAX_CALLBACK_BODY_BYTES;
use crate::providers::{CallbackTransport, RawCallback};
use crate::store::checks::CheckReason;

pub async fn default_account(
    State(state): State<HttpState>,
    Path(provider): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, &provider, "default", query, headers, body).await
}

pub async fn with_account(
    State(state): State<HttpState>,
    Path((provider, account)): Path<(String, String)>,
    query: RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, &provider, &account, query, headers, body).await
}

async fn handle(
    state: HttpState,
    provider: &str,
    account: &str,
    query: RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Over the limit (`DefaultBodyLimit` in the router): refused before anything is read or written.
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_response(ApiError::BodyTooLarge { limit: MAX_CALLBACK_BODY_BYTES });
        }
        Err(_) => return error_response(ApiError::invalid("body", "cannot be read")),
    };
    let pairs = headers.iter().map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes())));
    let raw = RawCallback::new(pairs, body.to_vec(), query.0.unwrap_or_default());
    let transport = state
        .gateway
        .registry()
        .resolve(provider, account)
        .map(|p| p.callback_transport())
        .unwrap_or(CallbackTransport::ServerToServer);
    let result = state.gateway.handle_callback(provider, account, &raw, None).await;
    match (transport, result) {
        // Accepted, duplicate and amount-mismatch alike: 200 after commit, so the provider stops retrying.
        (CallbackTransport::ServerToServer, Ok(outcome)) => {
            let body = serde_json::json!({
                "payment_id": outcome.payment.id,
                "event_id": outcome.event_id,
                "duplicate": outcome.duplicate,
                "status_changed": outcome.status_changed,
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        (CallbackTransport::ServerToServer, Err(e)) => error_response(e),
        (CallbackTransport::Browser, Ok(CallbackOutcome { payment, .. })) => back_to_caller(&payment),
        // Nothing could be checked or queued: say so rather than "not found"; the shopper retries.
        (CallbackTransport::Browser, Err(ApiError::DatabaseUnavailable)) => page::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again shortly",
            "The payment service is briefly unavailable. Please reload this page in a moment.",
        ),
        (CallbackTransport::Browser, Err(e)) => {
            // The browser's post could not be trusted: change nothing, ask the provider instead,
            // and still send the shopper back to the caller's page.
            tracing::info!(reason = e.reason(), "browser-delivered callback refused; queueing a provider check");
            let Some(payment) = payment_named_in_query(&state, provider, &raw.query).await else {
                return page::message(StatusCode::NOT_FOUND, "Payment not found", "This payment does not exist.");
            };
            if let Err(e) = state.gateway.request_check(&payment, CheckReason::ShopperReturn).await {
                tracing::warn!(error = %e, "cannot queue a provider check for a refused browser callback");
            }
            back_to_caller(&payment)
        }
    }
}

/// 303 to the caller's `cancel_url` for a cancelled payment, else its `return_url`; a small page when empty.
fn back_to_caller(payment: &Payment) -> Response {
    let target = if payment.status == PaymentStatus::Cancelled { &payment.cancel_url } else { &payment.return_url };
    if target.is_empty() {
        let text = format!("Payment {} is {}. You can close this window.", payment.id, payment.status);
        return page::message(StatusCode::OK, "Thank you", &text);
    }
    page::see_other(target)
}

/// The payment a browser-delivered callback URL names (`?payment_id=…`), if it belongs to `provider`.
async fn payment_named_in_query(state: &HttpState, provider: &str, query: &str) -> Option<Payment> {
    let id =
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "payment_id").map(|(_, v)| v.into_owned())?;
    let id = PaymentId::parse(&id)?;
    let payment = state.gateway.find(&PaymentLookup::Id(id)).await.ok()?;
    (payment.provider == provider).then_some(payment)
}
