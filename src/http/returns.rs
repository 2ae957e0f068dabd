//! `GET /return/{provider}/{payment_id}`: where provider pages send the shopper back. It never
//! changes a status itself; it queues a provider check and redirects to the caller's URL.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{HttpState, page};
use crate::domain::PaymentId;
use crate::gateway::PaymentLookup;
use crate::store::checks::CheckReason;

pub async fn shopper_return(
    State(state): State<HttpState>,
    Path((provider, payment_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let not_found = || page::message(StatusCode::NOT_FOUND, "Payment not found", "This payment does not exist.");
    let Some(id) = PaymentId::parse(&payment_id) else { return not_found() };
    let payment = match state.gateway.find(&PaymentLookup::Id(id)).await {
        Ok(p) if p.provider == provider => p,
        _ => return not_found(),
    };
    if let Err(e) = state.gateway.request_check(&payment, CheckReason::ShopperReturn).await {
        tracing::warn!(error = %e, "cannot queue a provider check for a shopper return");
    }
    let cancelled = query.get("outcome").is_some_and(|o| o == "cancel");
    let target = if cancelled { &payment.cancel_url } else { &payment.return_url };
    if target.is_empty() {
        let text = format!("Payment {} is {}. You can close this window.", payment.id, payment.status);
        return page::message(StatusCode::OK, "Thank you", &text);
    }
    page::see_other(target)
}
