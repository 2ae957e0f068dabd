//! `GET`/`POST /checkout/{provider}/{payment_id}`: the hosted page of providers whose checkout is
//! not a redirect URL of their own ([`Provider::checkout_page`]). `/sandbox/checkout/{id}` is
//! an alias kept for the `checkout_url`s open payments already carry. A form button makes the
//! page play the provider: it delivers the provider's signed callback over HTTP to our own
//! ingress, exactly as the provider would, then sends the shopper back to the caller.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::Utc;

use super::HttpState;
use super::page;
use crate::domain::{Payment, PaymentId, PaymentStatus};
use crate::gateway::PaymentLookup;
use crate::providers::Provider;
use crate::providers::page::{CheckoutPage, PageContent};

fn not_found() -> Response {
    page::message(StatusCode::NOT_FOUND, "Checkout not found", "There is no checkout with this id.")
}

/// The payment, its provider account (still enabled) and its page, when the page may be served.
async fn lookup(
    state: &HttpState,
    provider: &str,
    payment_id: &str,
) -> Option<(Payment, Arc<dyn Provider>, CheckoutPage)> {
    let id = PaymentId::parse(payment_id)?;
    let payment = state.gateway.find(&PaymentLookup::Id(id)).await.ok()?;
    if payment.provider != provider {
        return None;
    }
    let adapter = state.gateway.registry().resolve(provider, &payment.account).ok()?;
    let page = adapter.checkout_page(&payment)?;
    Some((payment, adapter, page))
}

/// `GET /checkout/{provider}/{payment_id}`.
pub async fn show(State(state): State<HttpState>, Path((provider, payment_id)): Path<(String, String)>) -> Response {
    show_page(&state, &provider, &payment_id).await
}

/// `GET /sandbox/checkout/{payment_id}`.
pub async fn show_sandbox(State(state): State<HttpState>, Path(payment_id): Path<String>) -> Response {
    show_page(&state, "sandbox", &payment_id).await
}

/// `POST /checkout/{provider}/{payment_id}` with form field `action`.
pub async fn submit(
    State(state): State<HttpState>,
    Path((provider, payment_id)): Path<(String, String)>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    submit_action(&state, &provider, &payment_id, form).await
}

/// `POST /sandbox/checkout/{payment_id}`.
pub async fn submit_sandbox(
    State(state): State<HttpState>,
    Path(payment_id): Path<String>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    submit_action(&state, "sandbox", &payment_id, form).await
}

async fn show_page(state: &HttpState, provider: &str, payment_id: &str) -> Response {
    let Some((payment, _, checkout)) = lookup(state, provider, payment_id).await else { return not_found() };
    let mut body = page::payment_summary(&payment);
    match (&checkout.content, page::is_payable(&payment)) {
        (PageContent::Form { actions }, true) => {
            body.push_str("<form method=\"post\">");
            for (value, label) in *actions {
                body.push_str(&format!(
                    "<button type=\"submit\" name=\"action\" value=\"{}\">{}</button>",
                    page::esc(value),
                    page::esc(label)
                ));
            }
            body.push_str("</form>");
        }
        // `src` is a constant of the adapter and `init` was written with `js_string`.
        (PageContent::Script { src, init }, true) => body.push_str(&format!(
            "<p><button type=\"button\" id=\"pay\">Pay now</button></p>\n\
<script src=\"{src}\"></script>\n<script>\n{init}\n</script>"
        )),
        _ => body.push_str("<p>This checkout is no longer open.</p>"),
    }
    no_store(page::render(StatusCode::OK, checkout.title, &body))
}

async fn submit_action(
    state: &HttpState,
    provider: &str,
    payment_id: &str,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Some((payment, adapter, checkout)) = lookup(state, provider, payment_id).await else { return not_found() };
    if !matches!(checkout.content, PageContent::Form { .. }) {
        return not_found();
    }
    if !page::is_payable(&payment) {
        return page::message(StatusCode::CONFLICT, "Checkout closed", "This checkout is no longer open.");
    }
    let action = form.as_ref().ok().and_then(|f| f.get("action")).map(String::as_str).unwrap_or_default();
    let Some(callback) = adapter.page_action(&payment, action, Utc::now()) else {
        return page::message(StatusCode::BAD_REQUEST, "Unknown action", "Choose one of the page's buttons.");
    };
    let mut request = state.client.post(&callback.url).body(callback.body);
    for (name, value) in &callback.headers {
        request = request.header(*name, value);
    }
    match request.send().await {
        Ok(resp) if resp.status().is_success() => {}
        Ok(resp) => {
            tracing::warn!(status = resp.status().as_u16(), "hosted page callback was not accepted");
            return page::message(
                StatusCode::BAD_GATEWAY,
                "Payment not recorded",
                "The callback was not accepted; nothing was charged.",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "hosted page callback could not be delivered");
            return page::message(
                StatusCode::BAD_GATEWAY,
                "Payment not recorded",
                "The callback could not be delivered.",
            );
        }
    }
    let cancelled = callback.outcome == PaymentStatus::Cancelled;
    let target = if cancelled { &payment.cancel_url } else { &payment.return_url };
    if target.is_empty() {
        let outcome = match callback.outcome {
            PaymentStatus::Succeeded => "Payment succeeded",
            PaymentStatus::Cancelled => "Payment cancelled",
            _ => "Payment failed",
        };
        return page::message(StatusCode::OK, outcome, &format!("{outcome} for {}.", payment.id));
    }
    page::see_other(target)
}

/// A page may carry a live session id: keep it out of caches and referrers.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
