//! An instant XPay double for the HTTP-adapter CreateCheckout point: `POST /checkout/sessions`
//! opens a `cs_test_` session for the payment named in its metadata, `GET /checkout/sessions/{id}`
//! says it is still open (the reconciler's scheduled checks).

use axum::Json;
use axum::extract::Path;
use axum::routing::{get, post};
use serde_json::{Value, json};

pub const SECRET_KEY: &str = "sk_test_bench";
pub const WEBHOOK_SECRET: &str = "whsec_bench_xpay";

async fn create_session(Json(body): Json<Value>) -> Json<Value> {
    let payment_id = body["metadata"]["paygate_payment_id"].as_str().unwrap_or("pay_unknown");
    let id = format!("cs_test_{}", payment_id.strip_prefix("pay_").unwrap_or(payment_id));
    let total: i64 = body["lineItems"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["priceData"]["unitAmount"].as_i64().unwrap_or(0) * i["quantity"].as_i64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    Json(json!({
        "id": id,
        "object": "checkout.session",
        "status": "open",
        "url": format!("https://checkout.example/{id}"),
        "amountTotal": total,
        "currency": body["lineItems"][0]["priceData"]["currency"],
        "metadata": body["metadata"],
    }))
}

async fn get_session(Path(id): Path<String>) -> Json<Value> {
    Json(json!({ "id": id, "object": "checkout.session", "status": "open" }))
}

/// Serves the double on a free loopback port in this process; returns its base URL.
pub async fn start() -> anyhow::Result<String> {
    let app = axum::Router::new()
        .route("/checkout/sessions", post(create_session))
        .route("/checkout/sessions/{id}", get(get_session));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("xpay mock stopped: {e}");
        }
    });
    Ok(url)
}
