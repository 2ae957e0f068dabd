//! Request limits (issue 12): refused before anything is written.

use paygate::limits::{MAX_CALLBACK_BODY_BYTES, MAX_CALLBACK_HEADERS, MAX_GRPC_MESSAGE_BYTES, MAX_LINE_ITEMS};
use paygate::pb;

use crate::common::{TestApp, error_info, spawn_app};

async fn nothing_written(app: &TestApp) {
    for table in ["payments", "payment_events", "callback_receipts", "rejected_callbacks", "idempotency_keys"] {
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM {table}")).await, 0, "{table}");
    }
}

fn invalid_field(status: &tonic::Status) -> String {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let (reason, metadata) = error_info(status);
    assert_eq!(reason, "INVALID_FIELD");
    metadata.get("field").cloned().unwrap_or_default()
}

#[tokio::test]
async fn grpc_messages_over_4_mib_are_refused_by_the_transport() {
    let app = spawn_app().await;
    let mut request = app.checkout_request("big", 1234, "USD");
    request.description = "x".repeat(MAX_GRPC_MESSAGE_BYTES + 1);
    let status = app.grpc.clone().create_checkout(request).await.unwrap_err();
    assert!(
        matches!(status.code(), tonic::Code::ResourceExhausted | tonic::Code::OutOfRange),
        "{:?}: {}",
        status.code(),
        status.message()
    );
    nothing_written(&app).await;
}

#[tokio::test]
async fn at_most_100_line_items() {
    let app = spawn_app().await;
    let mut request = app.checkout_request("items", (MAX_LINE_ITEMS as i64) + 1, "USD");
    request.line_items = (0..=MAX_LINE_ITEMS)
        .map(|i| pb::LineItem { name: format!("item {i}"), unit_amount_minor: 1, quantity: 1 })
        .collect();
    let status = app.grpc.clone().create_checkout(request.clone()).await.unwrap_err();
    assert_eq!(invalid_field(&status), "line_items");
    nothing_written(&app).await;
    // 100 is fine.
    request.line_items.pop();
    request.amount = Some(pb::Money { amount_minor: MAX_LINE_ITEMS as i64, currency: "USD".into() });
    app.grpc.clone().create_checkout(request).await.expect("100 line items are allowed");
}

#[tokio::test]
async fn http_callback_bodies_over_1_mib_answer_413_body_too_large() {
    let app = spawn_app().await;
    let body = "x".repeat(MAX_CALLBACK_BODY_BYTES + 1);
    let response = app.post_callback("sandbox/default", &body, "t=1,v1=00").await;
    assert_eq!(response.status(), 413);
    let json: serde_json::Value = response.json().await.expect("JSON error body");
    assert_eq!(json["code"], "BODY_TOO_LARGE");
    assert!(json["message"].is_string());
    nothing_written(&app).await;
    // Just under the limit goes through to the signature check (and is audited as forged).
    let body = "x".repeat(MAX_CALLBACK_BODY_BYTES);
    let response = app.post_callback("sandbox/default", &body, "t=1,v1=00").await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn verify_callback_limits_name_body_and_headers() {
    let app = spawn_app().await;
    let big_body = "x".repeat(MAX_CALLBACK_BODY_BYTES + 1);
    let status = app.verify_raw("sandbox", &[], &big_body).await.unwrap_err();
    assert_eq!(invalid_field(&status), "body");

    let names: Vec<String> = (0..=MAX_CALLBACK_HEADERS).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let status = app.verify_raw("sandbox", &many, "{}").await.unwrap_err();
    assert_eq!(invalid_field(&status), "headers");

    let long = "v".repeat(64 * 1024);
    let status = app.verify_raw("sandbox", &[("x-long", &long)], "{}").await.unwrap_err();
    assert_eq!(invalid_field(&status), "headers");
    nothing_written(&app).await;
}
