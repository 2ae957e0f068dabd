//! EximPe adapter, black-box: gRPC and the HTTP ingress against a `wiremock` EximPe API on
//! 127.0.0.1 that enforces the documented requests (method, exact path, auth headers, JSON body
//! shape and value formats) and answers with the documented responses.

use crate::common;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{TestApp, error_info, spawn_app_with};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::eximpe::Eximpe;
use paygate::providers::eximpe::EximpeAccount;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

const CLIENT_ID: &str = "cid_test_123";
const CLIENT_SECRET: &str = "csec_test_do_not_echo";
const CALLBACK_KEY: &str = "cb_key_test";
const HS_CODE: &str = "49011010";
const SESSION_ID: &str = "session_abc123def456";

// Callback forms signed independently with Python 3 (key `cb_key_test`):
//   import hmac, hashlib
//   hmac.new(b"cb_key_test", MESSAGE.encode(), hashlib.sha256).hexdigest()
// MESSAGE = order_id|payment_id|status|mop_type|bank_ref_num|payment_completed_at (URL-decoded values).
/// `OD1000000001|PR1000000001|payment_successful|UPI|BR-0001|2026-11-23 10:00:00+00:00`
const SUCCESS_FORM: &str = "order_id=OD1000000001&payment_id=PR1000000001&status=payment_successful&message=Payment+captured+successfully&mop_type=UPI&bank_ref_num=BR-0001&payment_completed_at=2026-11-23+10%3A00%3A00%2B00%3A00&hash=c5000f617fc5a81d64d7f25783f9519fc71f14907089de31f4b51f59ec477546";
/// `OD1000000002|PR1000000002|payment_failed|CREDIT_CARD|BR-0002|2026-11-23 10:00:00+00:00`
const FAILURE_FORM: &str = "order_id=OD1000000002&payment_id=PR1000000002&status=payment_failed&message=Payment+failed&mop_type=CREDIT_CARD&bank_ref_num=BR-0002&payment_completed_at=2026-11-23+10%3A00%3A00%2B00%3A00&hash=67810ff34a2eaff582312d6e67c5f18fbc4b44ab0c584fe80d78963cca89aba3";
/// `OD1000000003||payment_cancelled|||` (missing fields sign as empty strings; hash in upper case)
const CANCEL_FORM: &str = "order_id=OD1000000003&status=payment_cancelled&message=Cancelled+by+user&hash=48F55317C5E88D6ACCAEFCC19401D66A50C1A6D8D95FD587D1E340736166514E";
/// `OD1000000004|PR1000000004|payment_successful|NET_BANKING|BR-0004|2026-11-23 10:00:00+00:00`
const GRPC_FORM: &str = "order_id=OD1000000004&payment_id=PR1000000004&status=payment_successful&message=ok&mop_type=NET_BANKING&bank_ref_num=BR-0004&payment_completed_at=2026-11-23+10%3A00%3A00%2B00%3A00&hash=cd61a5d8ee4213435491918f2e31387f195a2cdec58b764d09e37c9eb89031f2";
/// `OD1000000005|PR1000000005|payment_successful|UPI|BR-0005|2026-11-23 10:00:00+00:00`
const OTHER_FORM: &str = "order_id=OD1000000005&payment_id=PR1000000005&status=payment_successful&mop_type=UPI&bank_ref_num=BR-0005&payment_completed_at=2026-11-23+10%3A00%3A00%2B00%3A00&hash=ea413a0a542ba95bf4afc5bf1c08cc7224ae570676532f6925ac390969a9198e";

fn account(mock: &MockServer) -> EximpeAccount {
    EximpeAccount {
        base_url: mock.uri(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        callback_key: CALLBACK_KEY.into(),
        hs_code: HS_CODE.into(),
        ..Default::default()
    }
}

async fn spawn(adjust: impl FnOnce(&mut EximpeAccount)) -> (TestApp, MockServer) {
    let mock = MockServer::start().await;
    let mut acc = account(&mock);
    adjust(&mut acc);
    let app = spawn_app_with(
        move |config| {
            config.providers.eximpe.accounts.insert("default".into(), acc);
        },
        vec![],
    )
    .await;
    (app, mock)
}

/// 1000.00 INR with a buyer, description and UPI.
fn request(reference: &str) -> pb::CreateCheckoutRequest {
    pb::CreateCheckoutRequest {
        provider: "eximpe".into(),
        merchant_reference: reference.into(),
        amount: Some(pb::Money { amount_minor: 100_000, currency: "INR".into() }),
        customer: Some(pb::Customer {
            name: "Asha Rao".into(),
            email: "asha@example.in".into(),
            phone: "+919876543210".into(),
        }),
        payment_methods: vec!["UPI".into()],
        description: "Assam tea".into(),
        return_url: "https://shop.example/thanks?order=1".into(),
        cancel_url: "https://shop.example/cancelled".into(),
        ..Default::default()
    }
}

/// The documented create-order body, checked structurally: exactly these keys, value formats,
/// and `return_url` naming the same payment as `reference_id`.
struct OrderBody {
    public_base_url: String,
    amount: &'static str,
    mop_type: Option<&'static str>,
    buyer: Value,
    product: Value,
}

impl Match for OrderBody {
    fn matches(&self, request: &Request) -> bool {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&request.body) else { return false };
        let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = vec!["amount", "buyer", "currency", "product", "reference_id", "return_url"];
        if self.mop_type.is_some() {
            expected.push("mop_type");
        }
        expected.sort_unstable();
        let Some(reference) = body["reference_id"].as_str() else { return false };
        let amount = body["amount"].as_str().unwrap_or_default();
        let two_decimals = amount.split_once('.').is_some_and(|(i, f)| {
            !i.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && f.len() == 2
                && f.bytes().all(|b| b.is_ascii_digit())
        });
        keys == expected
            && two_decimals
            && amount == self.amount
            && body["currency"] == "INR"
            && reference.len() == 30
            && reference.starts_with("pay_")
            && body["return_url"]
                == format!("{}/callbacks/eximpe/default?payment_id={reference}", self.public_base_url).as_str()
            && body.get("mop_type").and_then(Value::as_str) == self.mop_type
            && body["buyer"] == self.buyer
            && body["product"] == self.product
    }
}

fn created(order_id: &str, session_id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "success": true,
        "message": "Checkout session created successfully",
        "data": { "session_id": session_id, "order_id": order_id },
    }))
}

/// A create-order mock enforcing the documented request for [`request`], answered once.
async fn mount_create(app: &TestApp, mock: &MockServer, order_id: &str, session_id: &str) {
    Mock::given(method("POST"))
        .and(path("/pg/orders/"))
        .and(header("x-client-id", CLIENT_ID))
        .and(header("x-client-secret", CLIENT_SECRET))
        .and(header("content-type", "application/json"))
        .and(OrderBody {
            public_base_url: app.http.clone(),
            amount: "1000.00",
            mop_type: Some("UPI"),
            buyer: json!({ "name": "Asha Rao", "email": "asha@example.in", "phone": "+919876543210" }),
            product: json!({ "name": "Assam tea", "description": "Assam tea", "hs_code": HS_CODE }),
        })
        .respond_with(created(order_id, session_id))
        .up_to_n_times(1)
        .expect(1)
        .mount(mock)
        .await;
}

async fn create(app: &TestApp, mock: &MockServer, reference: &str, order_id: &str) -> pb::Payment {
    mount_create(app, mock, order_id, SESSION_ID).await;
    let response = app.grpc.clone().create_checkout(request(reference)).await.expect("create checkout");
    response.into_inner().payment.expect("payment")
}

/// The Get Order answer for `order_id`.
fn order(order_id: &str, status: &str, amount: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "success": true,
        "message": "Order fetched successfully",
        "data": {
            "order_id": order_id, "reference_id": "x", "amount": amount, "currency": "INR", "mop_type": "UPI",
            "payments": [{ "payment_id": "PR1469384681", "mop_type": "UPI", "status": "captured", "status_message": null,
                           "settlement": { "status": "ready_for_settlement" }, "created_at": "2025-06-23T10:45:00Z" }],
            "status": status, "status_message": "whatever", "created_at": "2025-06-23T10:44:11.702363Z", "is_testing": true,
        },
    }))
}

/// A Get Order mock enforcing method, exact path and both auth headers, answered once.
async fn mount_status(mock: &MockServer, order_id: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(format!("/pg/orders/{order_id}")))
        .and(header("x-client-id", CLIENT_ID))
        .and(header("x-client-secret", CLIENT_SECRET))
        .respond_with(response)
        .up_to_n_times(1)
        .mount(mock)
        .await;
}

async fn requests(mock: &MockServer, verb: &str) -> Vec<Request> {
    mock.received_requests().await.unwrap_or_default().into_iter().filter(|r| r.method.as_str() == verb).collect()
}

async fn post_form(app: &TestApp, query: &str, body: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/callbacks/eximpe/default?{query}", app.http))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("callback POST")
}

fn location(r: &reqwest::Response) -> &str {
    r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Waits (up to 5 s) until `payment` satisfies `done`, and returns it.
async fn wait_for(app: &TestApp, id: &str, done: impl Fn(&pb::Payment) -> bool) -> pb::Payment {
    let mut p = app.get_payment(id).await;
    for _ in 0..100 {
        if done(&p) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        p = app.get_payment(id).await;
    }
    p
}

/// Event kinds recorded for `id` from `source`, oldest first.
async fn event_kinds(app: &TestApp, id: &str, source: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM payment_events WHERE payment_id = $1 AND source = $2 ORDER BY sequence")
        .bind(id)
        .bind(source)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

async fn refresh(app: &TestApp, id: &str) -> Result<pb::Payment, tonic::Status> {
    let request = pb::GetPaymentStatusRequest { payment_id: id.into(), refresh: true, ..Default::default() };
    app.grpc.clone().get_payment_status(request).await.map(|r| r.into_inner().payment.expect("payment"))
}

#[tokio::test]
async fn create_sends_the_documented_order_and_returns_our_page() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-1", "OD1000000001").await;

    assert_eq!(payment.status(), PaymentStatus::Pending);
    assert_eq!(payment.checkout_url, format!("{}/checkout/eximpe/{}", app.http, payment.id));
    assert_eq!(payment.provider_checkout_id, "OD1000000001");
    let created_at = payment.created_at.unwrap().seconds;
    assert_eq!(payment.expires_at.unwrap().seconds - created_at, 900);
    // The session id is provider-private: stored, never shown to callers.
    assert!(!format!("{payment:?}").contains(SESSION_ID));
    let data: Value = sqlx::query_scalar("SELECT provider_data FROM payments WHERE id = $1")
        .bind(&payment.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(data["session_id"], SESSION_ID);
    assert_eq!(data["sdk_mode"], "sandbox");

    let posts = requests(&mock, "POST").await;
    assert_eq!(posts.len(), 1);
    let body: Value = posts[0].body_json().unwrap();
    assert_eq!(body["reference_id"], payment.id.as_str());
    assert_eq!(body["return_url"], format!("{}/callbacks/eximpe/default?payment_id={}", app.http, payment.id).as_str());
    // Not configured → not sent.
    assert!(posts[0].headers.get("x-merchant-id").is_none() && posts[0].headers.get("x-api-version").is_none());
    mock.verify().await;
}

#[tokio::test]
async fn merchant_id_and_api_version_are_sent_when_configured_and_ttl_shortens_expiry() {
    let (app, mock) = spawn(|a| {
        a.merchant_id = "MID-42".into();
        a.api_version = "v1".into();
        a.session_ttl_secs = Some(600);
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/pg/orders/"))
        .and(header("x-client-id", CLIENT_ID))
        .and(header("x-client-secret", CLIENT_SECRET))
        .and(header("x-merchant-id", "MID-42"))
        .and(header("x-api-version", "v1"))
        .respond_with(created("OD1000000009", SESSION_ID))
        .expect(1)
        .mount(&mock)
        .await;
    let mut req = request("order-mid");
    req.ttl = Some(prost_types::Duration { seconds: 120, nanos: 0 });
    let payment = app.grpc.clone().create_checkout(req).await.unwrap().into_inner().payment.unwrap();
    assert_eq!(payment.expires_at.unwrap().seconds - payment.created_at.unwrap().seconds, 120);
    mock.verify().await;
}

#[tokio::test]
async fn non_inr_is_invalid_argument_and_nothing_is_sent_or_written() {
    let (app, mock) = spawn(|_| {}).await;
    for currency in ["USD", "JPY"] {
        let mut req = request("order-usd");
        req.amount = Some(pb::Money { amount_minor: 100_000, currency: currency.into() });
        let err = app.grpc.clone().create_checkout(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let (reason, metadata) = error_info(&err);
        assert_eq!((reason.as_str(), metadata["field"].as_str()), ("INVALID_FIELD", "amount.currency"));
    }
    assert!(mock.received_requests().await.unwrap_or_default().is_empty());
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 0);
}

#[tokio::test]
async fn a_missing_buyer_field_is_invalid_argument_and_nothing_is_sent_or_written() {
    let (app, mock) = spawn(|_| {}).await;
    let customer = |name: &str, email: &str, phone: &str| pb::Customer {
        name: name.into(),
        email: email.into(),
        phone: phone.into(),
    };
    for (customer, field) in [
        (None, "customer.name"),
        (Some(customer("", "", "")), "customer.name"),
        (Some(customer("Asha Rao", "", "+919876543210")), "customer.email"),
        (Some(customer("Asha Rao", "asha@example.in", "")), "customer.phone"),
    ] {
        let mut req = request("order-no-buyer");
        req.customer = customer;
        let err = app.grpc.clone().create_checkout(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}");
        let (reason, metadata) = error_info(&err);
        assert_eq!((reason.as_str(), metadata["field"].as_str()), ("INVALID_FIELD", field));
    }
    assert!(mock.received_requests().await.unwrap_or_default().is_empty());
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 0);
}

#[tokio::test]
async fn a_create_that_times_out_is_never_sent_again() {
    // The shared client waits 15 s; an adapter with a 300 ms client shows the same mapping fast.
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/pg/orders/"))
        .respond_with(created("OD1000000001", SESSION_ID).set_delay(Duration::from_secs(5)))
        .mount(&mock)
        .await;
    let ctx = common::short_timeout_context();
    let adapter = Eximpe::new("default", &account(&mock), &ctx).unwrap();
    let app = spawn_app_with(|_| {}, vec![Arc::new(adapter)]).await;
    common::assert_create_outcome_unknown(&app, &mock, "/pg/orders/", request("order-timeout")).await;
}

#[tokio::test]
async fn checkout_page_opens_the_session_with_the_sdk() {
    let (app, mock) = spawn(|_| {}).await;
    let evil_session = "sess_</script><script>alert(1)</script>";
    mount_create(&app, &mock, "OD1000000001", evil_session).await;
    let mut req = request("<b>ref</b>");
    req.merchant_reference = "<b>ref</b>".into();
    let payment = app.grpc.clone().create_checkout(req).await.unwrap().into_inner().payment.unwrap();

    let page = app.client.get(&payment.checkout_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="https://cdn.eximpe.com/sdk/eximpe-sdk.min.js"></script>"#), "{html}");
    assert!(html.contains(r#"EximPe({ mode: "sandbox" })"#), "{html}");
    assert!(
        html.contains(r#"sessionId: "sess_\u003c/script\u003e\u003cscript\u003ealert(1)\u003c/script\u003e""#),
        "{html}"
    );
    assert!(html.contains("&lt;b&gt;ref&lt;") && !html.contains("<b>"), "{html}");
    assert!(html.contains("1000.00 INR"));
    assert_eq!(html.matches("</script>").count(), 2, "the session id cannot close a script element: {html}");

    // Unknown, malformed and non-EximPe ids → 404.
    let sandbox = app.create_payment("sbx").await;
    for id in ["pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", "garbage", sandbox.id.as_str()] {
        let r = app.client.get(format!("{}/checkout/eximpe/{id}", app.http)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{id}");
    }
}

#[tokio::test]
async fn a_closed_payment_page_shows_its_status_and_no_sdk() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-closed", "OD1000000001").await;
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_successful", json!("1000.00"))).await;
    let r = post_form(&app, &format!("payment_id={}", payment.id), SUCCESS_FORM).await;
    assert_eq!(r.status(), 303);
    let paid = wait_for(&app, &payment.id, |p| p.status() == PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    let html = app.client.get(&payment.checkout_url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("succeeded") && !html.contains("eximpe-sdk") && !html.contains(SESSION_ID), "{html}");
}

#[tokio::test]
async fn a_success_form_redirects_but_only_the_status_lookup_pays() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-ok", "OD1000000001").await;
    // EximPe confirms the success with the right amount, a little later than the redirect.
    let confirmed = order("OD1000000001", "payment_successful", json!("1000.00")).set_delay(Duration::from_millis(700));
    mount_status(&mock, "OD1000000001", confirmed).await;
    let query = format!("payment_id={}", payment.id);

    let r = post_form(&app, &query, SUCCESS_FORM).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "https://shop.example/thanks?order=1");
    // The genuine, signed form alone does not pay: its hash covers no amount.
    let after_form = app.get_payment(&payment.id).await;
    assert_eq!((after_form.status(), after_form.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(event_kinds(&app, &payment.id, "callback").await, ["look_up"]);

    // The browser posts it again: a duplicate, still a 303, and no second lookup.
    let again = post_form(&app, &query, SUCCESS_FORM).await;
    assert_eq!((again.status().as_u16(), location(&again)), (303, "https://shop.example/thanks?order=1"));
    assert_eq!(event_kinds(&app, &payment.id, "callback").await, ["look_up", "duplicate"]);

    // The one lookup (`GET /pg/orders/{order_id}`, amount and currency checked) pays it.
    let paid = wait_for(&app, &payment.id, |p| p.status() == PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!((paid.provider_payment_id.as_str(), paid.payment_method.as_str()), ("PR1469384681", "UPI"));
    assert_eq!(paid.failure_code, "");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gets = requests(&mock, "GET").await;
    assert_eq!(gets.len(), 1, "exactly one status lookup");
    assert_eq!(gets[0].url.path(), "/pg/orders/OD1000000001");
    assert!(event_kinds(&app, &payment.id, "callback").await.iter().all(|k| k != "status_changed"));
}

#[tokio::test]
async fn a_success_form_whose_lookup_reports_another_amount_never_pays() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-cheap", "OD1000000001").await;
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_successful", json!(1.0))).await;

    let r = post_form(&app, &format!("payment_id={}", payment.id), SUCCESS_FORM).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "https://shop.example/thanks?order=1"));
    let p = wait_for(&app, &payment.id, |p| p.failure_code == "AMOUNT_MISMATCH").await;
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, "AMOUNT_MISMATCH"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
    assert_eq!(requests(&mock, "GET").await.len(), 1);
}

#[tokio::test]
async fn browser_failure_and_cancel() {
    let (app, mock) = spawn(|_| {}).await;
    let failing = create(&app, &mock, "order-fail", "OD1000000002").await;
    let r = post_form(&app, &format!("payment_id={}", failing.id), FAILURE_FORM).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "https://shop.example/thanks?order=1"));
    let failed = app.get_payment(&failing.id).await;
    assert_eq!(failed.status(), PaymentStatus::Failed);
    assert_eq!(failed.failure_code, "PROVIDER_DECLINED");
    assert_eq!(failed.payment_method, "CREDIT_CARD");

    let cancelling = create(&app, &mock, "order-cancel", "OD1000000003").await;
    let r = post_form(&app, &format!("payment_id={}", cancelling.id), CANCEL_FORM).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, "https://shop.example/cancelled"));
    assert_eq!(app.get_payment(&cancelling.id).await.status(), PaymentStatus::Cancelled);
}

#[tokio::test]
async fn forged_callback_changes_nothing_and_triggers_one_status_lookup() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-forged", "OD1000000001").await;
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_pending", json!("1000.00"))).await;
    let forged = SUCCESS_FORM.replace("hash=c5", "hash=d5");
    let query = format!("payment_id={}", payment.id);

    for _ in 0..2 {
        let r = post_form(&app, &query, &forged).await;
        assert_eq!((r.status().as_u16(), location(&r)), (303, "https://shop.example/thanks?order=1"));
    }
    // The lookup (trusted) moves it to PROCESSING; the forged body's success is never applied.
    for _ in 0..100 {
        if app.get_payment(&payment.id).await.status() == PaymentStatus::Processing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Processing);
    let gets = requests(&mock, "GET").await;
    assert_eq!(gets.len(), 1, "exactly one rate-limited lookup");
    assert_eq!(gets[0].url.path(), "/pg/orders/OD1000000001");
    assert_eq!(app.count("SELECT COUNT(*) FROM rejected_callbacks WHERE reason = 'SIGNATURE_INVALID'").await, 2);
}

#[tokio::test]
async fn a_signed_callback_for_another_payment_than_the_query_names_is_refused() {
    let (app, mock) = spawn(|_| {}).await;
    let a = create(&app, &mock, "order-a", "OD1000000001").await;
    let b = create(&app, &mock, "order-b", "OD1000000005").await;
    // B's genuine success, replayed at A's return URL: not applied to anything.
    let r = post_form(&app, &format!("payment_id={}", a.id), OTHER_FORM).await;
    assert_eq!(r.status(), 303);
    assert_eq!(app.get_payment(&a.id).await.status(), PaymentStatus::Pending);
    assert_eq!(app.get_payment(&b.id).await.status(), PaymentStatus::Pending);
    // Only A (named by the query) may be looked up; B's order is not asked about.
    let looked_up_b = requests(&mock, "GET").await.iter().any(|r| r.url.path() == "/pg/orders/OD1000000005");
    assert!(!looked_up_b, "a refused callback schedules no lookup of B");
    // At its own URL it is accepted, and B's status lookup pays B.
    mount_status(&mock, "OD1000000005", order("OD1000000005", "payment_successful", json!(1000))).await;
    let r = post_form(&app, &format!("payment_id={}", b.id), OTHER_FORM).await;
    assert_eq!(r.status(), 303);
    let paid = wait_for(&app, &b.id, |p| p.status() == PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(app.get_payment(&a.id).await.status(), PaymentStatus::Pending);
}

fn verify_request(body: &str, query: &str) -> pb::VerifyCallbackRequest {
    let mut headers = HashMap::new();
    headers.insert("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned());
    pb::VerifyCallbackRequest {
        provider: "eximpe".into(),
        account: String::new(),
        body: body.as_bytes().to_vec(),
        headers,
        query: query.into(),
    }
}

#[tokio::test]
async fn verify_callback_over_grpc() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-grpc", "OD1000000004").await;
    let query = format!("payment_id={}", payment.id);

    // Verified, but a success form changes nothing by itself; the lookup it schedules pays.
    let confirmed = order("OD1000000004", "payment_successful", json!("1000.00")).set_delay(Duration::from_millis(500));
    mount_status(&mock, "OD1000000004", confirmed).await;
    let ok = app.grpc.clone().verify_callback(verify_request(GRPC_FORM, &query)).await.unwrap().into_inner();
    assert!(!ok.status_changed && !ok.duplicate);
    assert_eq!(ok.event_id, "OD1000000004:PR1000000004:payment_successful");
    assert_eq!(ok.payment.unwrap().status(), PaymentStatus::Pending);
    let paid = wait_for(&app, &payment.id, |p| p.status() == PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(requests(&mock, "GET").await.len(), 1);

    let forged = GRPC_FORM.replace("NET_BANKING", "UPI");
    let err = app.grpc.clone().verify_callback(verify_request(&forged, &query)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(error_info(&err).0, "SIGNATURE_INVALID");

    // Without the query it is found by order id alone; the same event is a duplicate.
    let dup = app.grpc.clone().verify_callback(verify_request(GRPC_FORM, "")).await.unwrap().into_inner();
    assert!(dup.duplicate && !dup.status_changed);
}

#[tokio::test]
async fn refresh_maps_statuses_reads_amounts_exactly_and_counts_unknown_values() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-refresh", "OD1000000001").await;

    // An undocumented value: unchanged, counted.
    mount_status(&mock, "OD1000000001", order("OD1000000001", "order_created", json!(1000))).await;
    let p = refresh(&app, &payment.id).await.unwrap();
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(app.gateway.metrics().unknown_statuses("eximpe"), 1);

    // Amount as a string.
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_pending", json!("1000.00"))).await;
    assert_eq!(refresh(&app, &payment.id).await.unwrap().status(), PaymentStatus::Processing);

    // A different amount never changes the status.
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_successful", json!("999.99"))).await;
    let p = refresh(&app, &payment.id).await.unwrap();
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Processing, "AMOUNT_MISMATCH"));

    // Amount as a JSON number with decimals.
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_successful", json!(1000.0))).await;
    let p = refresh(&app, &payment.id).await.unwrap();
    assert_eq!(p.status(), PaymentStatus::Succeeded);
    assert_eq!((p.provider_payment_id.as_str(), p.failure_code.as_str()), ("PR1469384681", ""));

    // SUCCEEDED: no further provider call.
    refresh(&app, &payment.id).await.unwrap();
    assert_eq!(requests(&mock, "GET").await.len(), 4);
    assert_eq!(app.gateway.metrics().unknown_statuses("eximpe"), 1);
}

#[tokio::test]
async fn refresh_failures_are_returned() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-refresh-err", "OD1000000001").await;
    mount_status(&mock, "OD1000000001", ResponseTemplate::new(503)).await;
    let err = refresh(&app, &payment.id).await.unwrap_err();
    assert_eq!(error_info(&err).0, "PROVIDER_UNAVAILABLE");
    // An amount with more precision than paise is not the documented API.
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_successful", json!("1000.001"))).await;
    let err = refresh(&app, &payment.id).await.unwrap_err();
    assert_eq!(error_info(&err).0, "PROVIDER_UNAVAILABLE");
    // A success without an amount is never taken on trust.
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_successful", Value::Null)).await;
    let err = refresh(&app, &payment.id).await.unwrap_err();
    assert_eq!(error_info(&err).0, "PROVIDER_UNAVAILABLE");
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
}

#[tokio::test]
async fn create_errors_map_to_the_error_table() {
    let (app, mock) = spawn(|_| {}).await;
    let envelope = |code: &str| {
        json!({ "success": false, "error": { "code": code, "message": "Missing credentials: asha@example.in",
                 "details": { "buyer.email": "asha@example.in" } } })
    };
    let cases = [
        (
            ResponseTemplate::new(400).set_body_json(envelope("ERR_VALIDATION_001")),
            tonic::Code::InvalidArgument,
            "PROVIDER_REJECTED",
            Some("ERR_VALIDATION_001"),
        ),
        (
            ResponseTemplate::new(422).set_body_string("<html>"),
            tonic::Code::InvalidArgument,
            "PROVIDER_REJECTED",
            Some("http_422"),
        ),
        (
            ResponseTemplate::new(200).set_body_json(envelope("ERR_ORDER_009")),
            tonic::Code::InvalidArgument,
            "PROVIDER_REJECTED",
            Some("ERR_ORDER_009"),
        ),
        // Codes that are not identifiers (they may echo shopper data) are not passed on.
        (
            ResponseTemplate::new(400).set_body_json(envelope("bad email asha@example.in")),
            tonic::Code::InvalidArgument,
            "PROVIDER_REJECTED",
            Some("http_400"),
        ),
        (
            ResponseTemplate::new(200).set_body_json(envelope("bad email asha@example.in")),
            tonic::Code::InvalidArgument,
            "PROVIDER_REJECTED",
            Some("eximpe_error"),
        ),
        (
            ResponseTemplate::new(401).set_body_json(envelope("ERR_AUTH_000")),
            tonic::Code::Unavailable,
            "PROVIDER_UNAVAILABLE",
            None,
        ),
        (
            ResponseTemplate::new(403).set_body_json(envelope("ERR_AUTH_001")),
            tonic::Code::Unavailable,
            "PROVIDER_UNAVAILABLE",
            None,
        ),
        (
            ResponseTemplate::new(503).set_body_json(envelope("ERR_DOWN")),
            tonic::Code::Unavailable,
            "PROVIDER_UNAVAILABLE",
            None,
        ),
        // The provider may have opened the order: never sent again, the payment is checked.
        (
            ResponseTemplate::new(500).set_body_json(envelope("ERR_INTERNAL")),
            tonic::Code::Unavailable,
            "PROVIDER_OUTCOME_UNKNOWN",
            None,
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!({ "success": true, "data": {} })),
            tonic::Code::Unavailable,
            "PROVIDER_OUTCOME_UNKNOWN",
            None,
        ),
    ];
    for (i, (response, code, reason, provider_code)) in cases.into_iter().enumerate() {
        Mock::given(method("POST")).and(path("/pg/orders/")).respond_with(response).up_to_n_times(1).mount(&mock).await;
        let err = app.grpc.clone().create_checkout(request(&format!("order-err-{i}"))).await.unwrap_err();
        assert_eq!(err.code(), code, "case {i}");
        let (got_reason, metadata) = error_info(&err);
        assert_eq!(got_reason, reason, "case {i}");
        assert_eq!(metadata.get("provider_code").map(String::as_str), provider_code, "case {i}");
        let text = format!("{err:?}");
        for secret in [CLIENT_ID, CLIENT_SECRET, CALLBACK_KEY, "asha@example.in"] {
            assert!(!text.contains(secret), "case {i} leaks {secret}: {text}");
        }
    }
    let rejected = "SELECT COUNT(*) FROM payments WHERE status = 'failed' AND failure_code = 'PROVIDER_REJECTED'";
    assert_eq!(app.count(rejected).await, 5);
}

// ---------------------------------------------------------------------------------------------
// Payment truth: durable checks; expiry asks EximPe first
// ---------------------------------------------------------------------------------------------

/// Moves `id` past its `expires_at` by `secs` seconds and makes its check due, instead of waiting.
async fn expire_now(app: &TestApp, id: &str, secs: f64) {
    sqlx::query("UPDATE payments SET expires_at = now() - make_interval(secs => $2) WHERE id = $1")
        .bind(id)
        .bind(secs)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("UPDATE provider_checks SET due_at = now() WHERE payment_id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
}

async fn expired_events(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM payment_events WHERE payment_id = $1 AND status = 'expired'")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_success_form_right_after_a_return_lookup_is_not_lost() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-lost", "OD1000000001").await;
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_pending", json!("1000.00"))).await;
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_successful", json!("1000.00"))).await;

    // The shopper's return: one lookup (pending).
    let r = app.client.get(format!("{}/return/eximpe/{}", app.http, payment.id)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let pending = wait_for(&app, &payment.id, |p| p.status() == PaymentStatus::Processing).await;
    assert_eq!(pending.status(), PaymentStatus::Processing);
    // Within the old 10 s window the signed success form arrives: its lookup is queued, not dropped.
    let r = post_form(&app, &format!("payment_id={}", payment.id), SUCCESS_FORM).await;
    assert_eq!(r.status(), 303);
    let paid = wait_for(&app, &payment.id, |p| p.status() == PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(requests(&mock, "GET").await.len(), 2);
}

#[tokio::test]
async fn pending_at_the_return_and_successful_at_expiry_ends_succeeded_never_expired() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-late", "OD1000000001").await;
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_pending", json!("1000.00"))).await;
    let r = app.client.get(format!("{}/return/eximpe/{}", app.http, payment.id)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        wait_for(&app, &payment.id, |p| p.status() == PaymentStatus::Processing).await.status(),
        PaymentStatus::Processing
    );

    // EximPe's callbacks are browser posts, never resent: only the check at expiry can learn this.
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_successful", json!("1000.00"))).await;
    expire_now(&app, &payment.id, 1.0).await;
    app.gateway.run_due_checks().await.unwrap();
    let p = app.get_payment(&payment.id).await;
    assert_eq!(p.status(), PaymentStatus::Succeeded);
    assert_eq!(expired_events(&app, &payment.id).await, 0, "never EXPIRED");
    assert_eq!(requests(&mock, "POST").await.len(), 1, "EximPe has no cancel: only the create");
}

#[tokio::test]
async fn processing_at_expiry_stays_open_until_the_grace_period_ends() {
    let (app, mock) = spawn(|_| {}).await;
    let payment = create(&app, &mock, "order-grace", "OD1000000001").await;
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_pending", json!("1000.00"))).await;

    expire_now(&app, &payment.id, 1.0).await;
    app.gateway.run_due_checks().await.unwrap();
    let p = app.get_payment(&payment.id).await;
    assert_eq!(p.status(), PaymentStatus::Processing, "pending at EximPe: kept open");
    let (due_at, expires_at): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT c.due_at, p.expires_at FROM provider_checks c JOIN payments p ON p.id = c.payment_id WHERE p.id = $1",
    )
    .bind(&payment.id)
    .fetch_one(&app.db)
    .await
    .expect("still checked");
    assert!(due_at > chrono::Utc::now() && due_at <= expires_at + chrono::TimeDelta::seconds(86_400));

    // Past the grace period (24 h) with no answer but "pending": EXPIRED, RECONCILIATION_FAILED.
    expire_now(&app, &payment.id, 86_401.0).await;
    app.gateway.run_due_checks().await.unwrap();
    let p = app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Expired, "RECONCILIATION_FAILED"));
    assert_eq!(app.gateway.metrics().events("eximpe", "reconciliation_failed"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_checks").await, 0);
}

#[tokio::test]
async fn a_lookup_answer_of_the_other_mode_is_refused() {
    // A live account (sdk_mode production) must never trust an answer about a test order.
    let (app, mock) = spawn(|a| a.sdk_mode = "production".into()).await;
    let payment = create(&app, &mock, "order-mode", "OD1000000001").await;
    mount_status(&mock, "OD1000000001", order("OD1000000001", "payment_successful", json!("1000.00"))).await;
    let status = refresh(&app, &payment.id).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");
    let p = app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
}
