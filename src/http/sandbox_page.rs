//! The sandbox hosted checkout page. On POST the server plays the provider: it signs a callback
//! and delivers it over HTTP to its own callback ingress, exactly as an outside provider would.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;

use super::HttpState;
use super::page;
use crate::domain::{Payment, PaymentId};
use crate::providers::sandbox::{Action, SIGNATURE_HEADER, Sandbox};

fn not_found() -> Response {
    page::message(StatusCode::NOT_FOUND, "Checkout not found", "There is no sandbox checkout with this id.")
}

/// The payment and its sandbox account, when the page may be served at all.
async fn lookup(state: &HttpState, payment_id: &str) -> Option<(Payment, Arc<Sandbox>)> {
    if !state.gateway.registry().sandbox_enabled() {
        return None;
    }
    let id = PaymentId::parse(payment_id)?;
    let payment = state.gateway.get_status(id.as_str(), "", false).await.ok()?;
    if payment.provider != "sandbox" {
        return None;
    }
    let sandbox = state.gateway.registry().sandbox(&payment.account)?;
    Some((payment, sandbox))
}

/// `GET /sandbox/checkout/{payment_id}`.
pub async fn show(State(state): State<HttpState>, Path(payment_id): Path<String>) -> Response {
    let Some((payment, _)) = lookup(&state, &payment_id).await else { return not_found() };
    let open = page::is_payable(&payment);
    let mut body = page::payment_summary(&payment);
    if open {
        body.push_str(
            "<form method=\"post\">\
<button type=\"submit\" name=\"action\" value=\"pay\">Pay</button>\
<button type=\"submit\" name=\"action\" value=\"fail\">Fail</button>\
<button type=\"submit\" name=\"action\" value=\"cancel\">Cancel</button>\
</form>",
        );
    } else {
        body.push_str("<p>This checkout is no longer open.</p>");
    }
    page::render(StatusCode::OK, "Sandbox checkout", &body)
}

/// `POST /sandbox/checkout/{payment_id}` with form field `action` = `pay` | `fail` | `cancel`.
pub async fn submit(
    State(state): State<HttpState>,
    Path(payment_id): Path<String>,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some((payment, sandbox)) = lookup(&state, &payment_id).await else { return not_found() };
    if !page::is_payable(&payment) {
        return page::message(StatusCode::CONFLICT, "Checkout closed", "This checkout is no longer open.");
    }
    let action = form.as_ref().ok().and_then(|f| f.get("action")).and_then(|a| Action::parse(a));
    let Some(action) = action else {
        return page::message(StatusCode::BAD_REQUEST, "Unknown action", "Choose Pay, Fail or Cancel.");
    };

    let (body, signature) = sandbox.build_callback(&payment, action, Utc::now());
    let delivered = state
        .client
        .post(sandbox.callback_url())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await;
    match delivered {
        Ok(resp) if resp.status().is_success() => {}
        Ok(resp) => {
            tracing::warn!(status = resp.status().as_u16(), "sandbox callback was not accepted");
            return page::message(
                StatusCode::BAD_GATEWAY,
                "Payment not recorded",
                "The callback was not accepted; nothing was charged.",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "sandbox callback could not be delivered");
            return page::message(
                StatusCode::BAD_GATEWAY,
                "Payment not recorded",
                "The callback could not be delivered.",
            );
        }
    }

    let target = if action == Action::Cancel { &payment.cancel_url } else { &payment.return_url };
    if target.is_empty() {
        let outcome = match action {
            Action::Pay => "Payment succeeded",
            Action::Fail => "Payment failed",
            Action::Cancel => "Payment cancelled",
        };
        return page::message(StatusCode::OK, outcome, &format!("{outcome} for {}.", payment.id));
    }
    page::see_other(target)
}
