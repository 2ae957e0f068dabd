//! The sandbox hosted checkout end to end: page, form, signed callback over the HTTP ingress.

use crate::common;
use crate::common::{press, spawn_app, spawn_app_with};
use paygate::pb::{self, PaymentStatus};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn pay_on_the_page_marks_the_payment_succeeded() {
    let app = spawn_app().await;
    let mut request = app.checkout_request("order <1> & \"co\"", 1234, "USD");
    request.metadata.insert("cart".into(), "42".into());
    let created = app.grpc.clone().create_checkout(request).await.unwrap().into_inner();
    assert!(!created.replayed);
    let payment = created.payment.unwrap();
    assert!(payment.id.starts_with("pay_") && payment.id.len() == 30, "{}", payment.id);
    assert_eq!(payment.status(), PaymentStatus::Pending);
    assert_eq!(payment.checkout_url, format!("{}/sandbox/checkout/{}", app.http, payment.id));
    assert_eq!(payment.provider_checkout_id, payment.id);
    assert_eq!(payment.account, "default");
    assert_eq!(payment.version, 2, "created, then checkout opened");
    assert_eq!(payment.metadata.get("cart").map(String::as_str), Some("42"));
    let created_at = payment.created_at.unwrap().seconds;
    assert_eq!(payment.expires_at.unwrap().seconds - created_at, 24 * 3600);

    let page = app.client.get(&payment.checkout_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("12.34 USD"), "{html}");
    assert!(html.contains("order &lt;1&gt; &amp; &quot;co&quot;"), "reference is escaped: {html}");
    assert!(!html.contains("order <1>"));
    assert!(html.contains(&payment.id));
    assert!(html.contains("<form method=\"post\">"));
    for (value, label) in [("pay", "Pay"), ("fail", "Fail"), ("cancel", "Cancel")] {
        assert!(html.contains(&format!("name=\"action\" value=\"{value}\">{label}</button>")), "{value}");
    }

    let response = press(&app, &payment.id, "pay").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "https://shop.example/return?order=1");

    let paid = app.get_payment(&payment.id).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(paid.version, 3);
    assert!(paid.provider_payment_id.starts_with("sbx_") && paid.provider_payment_id.len() == 30);
    assert_eq!(paid.payment_method, "sandbox");
    let (a, b) = (paid.updated_at.unwrap(), payment.updated_at.unwrap());
    assert!((a.seconds, a.nanos) >= (b.seconds, b.nanos));

    // The page now shows the outcome and no form; a second POST is refused without a callback.
    let html = app.client.get(&payment.checkout_url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("succeeded") && !html.contains("<form"), "{html}");
    let receipts = app.count("SELECT COUNT(*) FROM callback_receipts").await;
    assert_eq!(press(&app, &payment.id, "pay").await.status(), 409);
    assert_eq!(app.count("SELECT COUNT(*) FROM callback_receipts").await, receipts);
}

#[tokio::test]
async fn fail_then_retry_then_cancel_rules() {
    let app = spawn_app().await;
    let payment = app.create_payment("order-fail").await;

    let response = press(&app, &payment.id, "fail").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "https://shop.example/return?order=1");
    let failed = app.get_payment(&payment.id).await;
    assert_eq!(failed.status(), PaymentStatus::Failed);
    assert_eq!(failed.failure_code, "SANDBOX_DECLINED");
    assert!(!failed.failure_message.is_empty());

    // A failed payment is still open: the shopper may retry, and success clears the failure.
    assert_eq!(press(&app, &payment.id, "pay").await.status(), 303);
    let paid = app.get_payment(&payment.id).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(paid.failure_code, "");
    assert_eq!(paid.failure_message, "");

    let other = app.create_payment("order-cancel").await;
    let response = press(&app, &other.id, "cancel").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "https://shop.example/cancel");
    assert_eq!(app.get_payment(&other.id).await.status(), PaymentStatus::Cancelled);
    assert_eq!(press(&app, &other.id, "fail").await.status(), 409);
}

#[tokio::test]
async fn empty_urls_show_a_result_page() {
    let app = spawn_app().await;
    for (action, text) in [("pay", "Payment succeeded"), ("fail", "Payment failed"), ("cancel", "Payment cancelled")] {
        let mut request = app.checkout_request(&format!("order-{action}"), 500, "JPY");
        request.return_url.clear();
        request.cancel_url.clear();
        let payment = app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
        let html = app.client.get(&payment.checkout_url).send().await.unwrap().text().await.unwrap();
        assert!(html.contains("500 JPY"), "{html}");
        let response = press(&app, &payment.id, action).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(response.text().await.unwrap().contains(text));
    }
}

#[tokio::test]
async fn page_errors() {
    let app = spawn_app().await;
    let payment = app.create_payment("order-errors").await;
    let page = |id: &str| app.client.get(format!("{}/sandbox/checkout/{id}", app.http)).send();

    assert_eq!(page("pay_01ARZ3NDEKTSV4RRFFQ69G5FAV").await.unwrap().status(), 404);
    assert_eq!(page("nonsense").await.unwrap().status(), 404);
    assert_eq!(press(&app, "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", "pay").await.status(), 404);
    assert_eq!(press(&app, &payment.id, "refund").await.status(), 400);
    let no_action = app
        .client
        .post(format!("{}/sandbox/checkout/{}", app.http, payment.id))
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_action.status(), 400);
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);

    // Past expires_at: status shown, no form, POST refused.
    sqlx::query("UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(&payment.id)
        .execute(&app.db)
        .await
        .unwrap();
    let html = page(&payment.id).await.unwrap().text().await.unwrap();
    assert!(html.contains("expired") && !html.contains("<form"), "{html}");
    assert_eq!(press(&app, &payment.id, "pay").await.status(), 409);
    assert_eq!(app.count("SELECT COUNT(*) FROM callback_receipts").await, 0);
}

#[tokio::test]
async fn kwd_amounts_use_three_decimals() {
    let app = spawn_app().await;
    let request = app.checkout_request("order-kwd", 1234, "KWD");
    let payment = app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    let html = app.client.get(&payment.checkout_url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("1.234 KWD"), "{html}");
}

#[tokio::test]
async fn disabled_sandbox_serves_no_page_and_takes_no_payments() {
    let app = spawn_app_with(|c| c.providers.sandbox.enabled = false, Vec::new()).await;
    let request = app.checkout_request("order-off", 100, "USD");
    let status = app.grpc.clone().create_checkout(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(common::error_info(&status).0, "PROVIDER_NOT_FOUND");
    let page =
        app.client.get(format!("{}/sandbox/checkout/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", app.http)).send().await.unwrap();
    assert_eq!(page.status(), 404);
}

#[tokio::test]
async fn a_refused_callback_gives_a_502_page_and_no_redirect() {
    // The page delivers its callback to public_base_url; point that at a server that refuses it.
    let refuser = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex("^/callbacks/sandbox/default$"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&refuser)
        .await;
    let base = refuser.uri();
    let app = spawn_app_with(move |c| c.server.public_base_url = base, Vec::new()).await;
    let payment = app.create_payment("order-502").await;
    let response = press(&app, &payment.id, "pay").await;
    assert_eq!(response.status(), 502);
    assert!(response.headers().get("location").is_none());
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
}

#[tokio::test]
async fn payment_can_be_found_by_newest_reference() {
    let app = spawn_app().await;
    let first = app.create_payment("shared-ref").await;
    let second = app.create_payment("shared-ref").await;
    let request = pb::GetPaymentStatusRequest { merchant_reference: "shared-ref".into(), ..Default::default() };
    let found = app.grpc.clone().get_payment_status(request).await.unwrap().into_inner().payment.unwrap();
    assert_eq!(found.id, second.id);
    assert_ne!(first.id, second.id);
    // refresh on the sandbox is a no-op that still answers.
    let request = pb::GetPaymentStatusRequest { payment_id: first.id.clone(), refresh: true, ..Default::default() };
    let refreshed = app.grpc.clone().get_payment_status(request).await.unwrap().into_inner().payment.unwrap();
    assert_eq!(refreshed.version, first.version);
}
