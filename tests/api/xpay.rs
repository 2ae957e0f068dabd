//! The XPay adapter end to end: gRPC and the HTTP ingress against a `wiremock` XPay on 127.0.0.1
//! that enforces the documented API (method, path, headers, body shape and value formats).

use crate::common;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{TestApp, error_info, spawn_app_with};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::signature::sign_timestamped;
use paygate::providers::xpay::XPay;
use paygate::providers::xpay::XpayAccount;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockServer, Request, Respond, ResponseTemplate};

const SECRET_KEY: &str = "sk_test_51PaygateXpayKey";
/// Listed first in `webhook_secrets`: the secret being rotated out.
const OLD_SECRET: &str = "whsec_old_rotated";
const SECRET: &str = "whsec_test";
const AMOUNT: i64 = 149_900;

// ---------------------------------------------------------------------------------------------
// The XPay double
// ---------------------------------------------------------------------------------------------

/// Checks a `POST /checkout/sessions` body structurally: exactly the documented fields, integer
/// minor units, our return/cancel URLs with the literal `{CHECKOUT_SESSION_ID}` and our payment id
/// in `metadata.paygate_payment_id`, all naming the same payment.
struct CreateBody {
    public_base_url: String,
    currency: &'static str,
    total: i64,
    /// Exact `lineItems` when the test cares.
    line_items: Option<Value>,
}

impl CreateBody {
    fn check(&self, body: &Value) -> Result<(), String> {
        let obj = body.as_object().ok_or("body is not an object")?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        if keys != ["afterCompletion", "cancelUrl", "lineItems", "metadata"] {
            return Err(format!("unexpected top-level fields {keys:?}"));
        }
        let meta = body["metadata"].as_object().ok_or("metadata is not an object")?;
        let payment_id = meta.get("paygate_payment_id").and_then(Value::as_str).ok_or("no paygate_payment_id")?;
        if !(payment_id.len() == 30 && payment_id.starts_with("pay_")) {
            return Err(format!("bad payment id {payment_id}"));
        }
        let return_base = format!("{}/return/xpay/{payment_id}", self.public_base_url);
        if body["afterCompletion"]
            != json!({ "type": "redirect", "redirect": { "url": format!("{return_base}?session={{CHECKOUT_SESSION_ID}}") } })
        {
            return Err(format!("bad afterCompletion {}", body["afterCompletion"]));
        }
        if body["cancelUrl"] != format!("{return_base}?outcome=cancel") {
            return Err(format!("bad cancelUrl {}", body["cancelUrl"]));
        }
        let items = body["lineItems"].as_array().filter(|a| !a.is_empty()).ok_or("lineItems empty")?;
        let mut total = 0;
        for item in items {
            let quantity = item["quantity"].as_u64().filter(|q| *q >= 1).ok_or("quantity not a positive integer")?;
            let price = &item["priceData"];
            // `as_i64` is `None` for `1499.0`, `"149900"` and the like: only JSON integers pass.
            let unit = price["unitAmount"].as_i64().ok_or("unitAmount is not an integer")?;
            if price["currency"] != self.currency
                || price["productData"]["name"].as_str().is_none_or(str::is_empty)
                || price.as_object().map(|o| o.len()) != Some(3)
                || item.as_object().map(|o| o.len()) != Some(2)
            {
                return Err(format!("bad line item {item}"));
            }
            total += unit * i64::try_from(quantity).unwrap();
        }
        if total != self.total {
            return Err(format!("line items sum to {total}, not {}", self.total));
        }
        if let Some(expected) = &self.line_items
            && &body["lineItems"] != expected
        {
            return Err(format!("lineItems {} != {expected}", body["lineItems"]));
        }
        Ok(())
    }
}

impl Match for CreateBody {
    fn matches(&self, request: &Request) -> bool {
        let result = serde_json::from_slice::<Value>(&request.body)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|body| self.check(&body));
        if let Err(e) = &result {
            eprintln!("XPay double refused the create body: {e}");
        }
        result.is_ok()
    }
}

/// The documented create response; the session id is derived from our payment id so every
/// payment gets its own session.
struct SessionCreated;

fn session_id_for(payment_id: &str) -> String {
    format!("cs_test_{}", &payment_id[4..])
}

impl Respond for SessionCreated {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let payment_id = body["metadata"]["paygate_payment_id"].as_str().unwrap_or("pay_unknown");
        let id = session_id_for(payment_id);
        let total: i64 = body["lineItems"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i["priceData"]["unitAmount"].as_i64().unwrap_or(0) * i["quantity"].as_i64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        ResponseTemplate::new(200).set_body_json(json!({
            "id": id,
            "object": "checkout.session",
            "status": "open",
            "url": format!("https://checkout.xpay.app/c/{id}"),
            "amountTotal": total,
            "currency": body["lineItems"][0]["priceData"]["currency"],
            "afterCompletion": body["afterCompletion"],
        }))
    }
}

/// A Checkout Session object as `GET /checkout/sessions/{id}` returns it.
fn session(id: &str, payment_id: &str, status: &str, amount: i64, currency: &str) -> Value {
    json!({
        "id": id, "object": "checkout.session", "status": status,
        "url": format!("https://checkout.xpay.app/c/{id}"),
        "amountTotal": amount, "currency": currency,
        "paymentIntent": { "id": format!("pi_{}", &payment_id[4..]) },
        "metadata": { "paygate_payment_id": payment_id },
    })
}

struct Harness {
    app: TestApp,
    mock: MockServer,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut paygate::config::Config)) -> Self {
        let mock = MockServer::start().await;
        assert!(mock.uri().starts_with("http://127.0.0.1:"), "{}", mock.uri());
        let base_url = mock.uri();
        let app = spawn_app_with(
            |config| {
                adjust(config);
                config.providers.xpay.accounts.insert(
                    "default".into(),
                    XpayAccount {
                        base_url,
                        secret_key: SECRET_KEY.into(),
                        webhook_secrets: vec![OLD_SECRET.into(), SECRET.into()],
                        ..Default::default()
                    },
                );
            },
            Vec::new(),
        )
        .await;
        Self { app, mock }
    }

    /// The create endpoint, enforcing the documented request.
    fn create_mock(&self, total: i64, line_items: Option<Value>) -> Mock {
        Mock::given(method("POST"))
            .and(path("/checkout/sessions"))
            .and(header("authorization", format!("Bearer {SECRET_KEY}").as_str()))
            .and(header("content-type", "application/json"))
            .and(CreateBody { public_base_url: self.app.http.clone(), currency: "EGP", total, line_items })
            .respond_with(SessionCreated)
    }

    /// `GET /checkout/sessions/{id}` answering `status` for `payment`.
    async fn mount_lookup(&self, payment: &pb::Payment, status: &str, amount: i64) {
        let id = &payment.provider_checkout_id;
        Mock::given(method("GET"))
            .and(path(format!("/checkout/sessions/{id}")))
            .and(header("authorization", format!("Bearer {SECRET_KEY}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(session(id, &payment.id, status, amount, "EGP")))
            .mount(&self.mock)
            .await;
    }

    fn request(&self, reference: &str) -> pb::CreateCheckoutRequest {
        pb::CreateCheckoutRequest {
            provider: "xpay".into(),
            merchant_reference: reference.into(),
            amount: Some(pb::Money { amount_minor: AMOUNT, currency: "EGP".into() }),
            description: "Test product".into(),
            return_url: "https://shop.example/return?order=1".into(),
            cancel_url: "https://shop.example/cancel".into(),
            customer: Some(pb::Customer {
                name: "Mona".into(),
                email: "mona@example.com".into(),
                phone: String::new(),
            }),
            ..Default::default()
        }
    }

    async fn create(&self, reference: &str) -> pb::Payment {
        let response = self.app.grpc.clone().create_checkout(self.request(reference)).await.expect("create");
        response.into_inner().payment.expect("payment")
    }

    /// Requests XPay received for `method path`.
    async fn received(&self, method: &str, path: &str) -> usize {
        common::requests_to(&self.mock, method, path).await
    }

    /// Waits (up to 5 s) until XPay received `n` status lookups of `payment`'s session.
    async fn wait_for_lookups(&self, payment: &pb::Payment, n: usize) {
        common::wait_for_requests(
            &self.mock,
            "GET",
            &format!("/checkout/sessions/{}", payment.provider_checkout_id),
            n,
        )
        .await;
    }

    async fn lookups(&self, payment: &pb::Payment) -> usize {
        self.received("GET", &format!("/checkout/sessions/{}", payment.provider_checkout_id)).await
    }

    async fn post_webhook(&self, body: &str, signature: &str) -> reqwest::Response {
        let headers = [("content-type", "application/json"), ("XPay-Signature", signature)];
        self.app.post_raw_callback("xpay/default", &headers, body).await
    }

    async fn verify(&self, body: &str, signature: &str) -> Result<pb::VerifyCallbackResponse, tonic::Status> {
        self.app.verify_raw("xpay", &[("xpay-SIGNATURE", signature), ("Content-Type", "application/json")], body).await
    }
}

/// A webhook event about `payment`'s session; `with_metadata = false` leaves `metadata` empty so
/// only the session id identifies the payment.
fn event(id: &str, kind: &str, payment: &pb::Payment, status: &str, amount: i64, with_metadata: bool) -> String {
    let mut object = session(&payment.provider_checkout_id, &payment.id, status, amount, "EGP");
    if !with_metadata {
        object["metadata"] = json!({});
    }
    json!({ "id": id, "object": "event", "type": kind, "created": chrono::Utc::now().timestamp(), "data": { "object": object } })
        .to_string()
}

fn completed(id: &str, payment: &pb::Payment) -> String {
    event(id, "checkout.session.completed", payment, "complete", AMOUNT, true)
}

fn signed(secret: &str, body: &str) -> String {
    sign_timestamped(secret.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes())
}

fn seconds(ts: &Option<prost_types::Timestamp>) -> (i64, i32) {
    let ts = ts.as_ref().expect("timestamp");
    (ts.seconds, ts.nanos)
}

// ---------------------------------------------------------------------------------------------
// Signature vectors
// ---------------------------------------------------------------------------------------------

/// Vectors computed independently with Python 3 (`hmac`, `hashlib`):
///   hmac.new(b"whsec_test", b'1730000000.{"id":"evt_1","type":"checkout.session.completed"}',
///            hashlib.sha256).hexdigest()
///   → a0be1492ad89ec24cf43b785df5367889541992002539a5136c69e1934dfb575   (the note's self-made vector)
///   hmac.new(b"whsec_old_rotated", b'1730000000.{"id":"evt_rot","type":"checkout.session.completed"}',
///            hashlib.sha256).hexdigest()
///   → d3aedcc1796b5457814e6306f6e189640ca230d5b29ed1acaebd5d269bb24fbd
#[test]
fn signatures_match_python_vectors() {
    for (secret, body, expected) in [
        (
            "whsec_test",
            r#"{"id":"evt_1","type":"checkout.session.completed"}"#,
            "a0be1492ad89ec24cf43b785df5367889541992002539a5136c69e1934dfb575",
        ),
        (
            "whsec_old_rotated",
            r#"{"id":"evt_rot","type":"checkout.session.completed"}"#,
            "d3aedcc1796b5457814e6306f6e189640ca230d5b29ed1acaebd5d269bb24fbd",
        ),
    ] {
        assert_eq!(
            sign_timestamped(secret.as_bytes(), 1_730_000_000, body.as_bytes()),
            format!("t=1730000000,v1={expected}")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_sends_the_documented_request_and_records_the_session() {
    let h = Harness::start().await;
    let one_item = json!([{ "priceData": { "currency": "EGP", "unitAmount": AMOUNT,
        "productData": { "name": "Test product" } }, "quantity": 1 }]);
    h.create_mock(AMOUNT, Some(one_item)).expect(1).named("create, one item").mount(&h.mock).await;

    let payment = h.create("xp-create").await;
    assert_eq!(payment.status(), PaymentStatus::Pending);
    let session_id = session_id_for(&payment.id);
    assert_eq!(payment.provider_checkout_id, session_id);
    assert_eq!(payment.checkout_url, format!("https://checkout.xpay.app/c/{session_id}"));
    // No expiry field in the response: created + 24 h.
    let (created, nanos) = seconds(&payment.created_at);
    assert_eq!(seconds(&payment.expires_at), (created + 86_400, nanos));
    // Secrets and the customer's email never come back.
    let debug = format!("{payment:?}");
    assert!(!debug.contains(SECRET_KEY) && !debug.contains("mona@example.com"), "{debug}");

    // The request itself: the Bearer key, and no email (no customer_email_field configured).
    let requests = h.mock.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert!(!String::from_utf8_lossy(&requests[0].body).contains("mona@example.com"));
    h.mock.verify().await;
}

#[tokio::test]
async fn create_maps_line_items_and_honours_a_shorter_ttl() {
    let h = Harness::start().await;
    let items = json!([
        { "priceData": { "currency": "EGP", "unitAmount": 100_000, "productData": { "name": "Shirt" } }, "quantity": 1 },
        { "priceData": { "currency": "EGP", "unitAmount": 24_950, "productData": { "name": "Socks" } }, "quantity": 2 },
    ]);
    h.create_mock(AMOUNT, Some(items)).expect(2).mount(&h.mock).await;
    let line_items = vec![
        pb::LineItem { name: "Shirt".into(), unit_amount_minor: 100_000, quantity: 1 },
        pb::LineItem { name: "Socks".into(), unit_amount_minor: 24_950, quantity: 2 },
    ];

    let mut request = h.request("xp-ttl");
    request.line_items = line_items.clone();
    request.ttl = Some(prost_types::Duration { seconds: 600, nanos: 0 });
    let short = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    let (created, nanos) = seconds(&short.created_at);
    assert_eq!(seconds(&short.expires_at), (created + 600, nanos));

    // A ttl beyond XPay's 24 h is capped: the session cannot outlive it.
    let mut request = h.request("xp-ttl-long");
    request.line_items = line_items;
    request.ttl = Some(prost_types::Duration { seconds: 3 * 86_400, nanos: 0 });
    let long = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    let (created, nanos) = seconds(&long.created_at);
    assert_eq!(seconds(&long.expires_at), (created + 86_400, nanos));
    h.mock.verify().await;
}

#[tokio::test]
async fn currencies_outside_the_allow_list_are_refused_before_any_call() {
    let h = Harness::start().await;
    let mut request = h.request("xp-usd");
    request.amount = Some(pb::Money { amount_minor: 1234, currency: "USD".into() });
    let status = h.app.grpc.clone().create_checkout(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let (reason, metadata) = error_info(&status);
    assert_eq!((reason.as_str(), metadata["field"].as_str()), ("INVALID_FIELD", "amount.currency"));
    assert!(h.mock.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn provider_errors_on_create_map_to_the_error_table() {
    let h = Harness::start().await;
    let cases: [(u16, Value, tonic::Code, &str, Option<&str>); 5] = [
        (
            400,
            json!({ "error": { "code": "parameter_invalid", "message": "bad" } }),
            tonic::Code::InvalidArgument,
            "PROVIDER_REJECTED",
            Some("parameter_invalid"),
        ),
        (422, json!({ "oops": true }), tonic::Code::InvalidArgument, "PROVIDER_REJECTED", Some("http_422")),
        (
            401,
            json!({ "error": { "code": "invalid_api_key" } }),
            tonic::Code::Unavailable,
            "PROVIDER_UNAVAILABLE",
            None,
        ),
        (403, json!({}), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
        (503, json!({ "error": { "code": "unavailable" } }), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
    ];
    for (i, (http_status, body, code, reason, provider_code)) in cases.into_iter().enumerate() {
        h.mock.reset().await;
        Mock::given(method("POST"))
            .and(path("/checkout/sessions"))
            .and(header("authorization", format!("Bearer {SECRET_KEY}").as_str()))
            .respond_with(ResponseTemplate::new(http_status).set_body_json(body))
            .expect(1)
            .mount(&h.mock)
            .await;
        let status = h.app.grpc.clone().create_checkout(h.request(&format!("xp-err-{i}"))).await.unwrap_err();
        assert_eq!(status.code(), code, "{http_status}");
        let (got_reason, metadata) = error_info(&status);
        assert_eq!(got_reason, reason, "{http_status}");
        assert_eq!(metadata.get("provider_code").map(String::as_str), provider_code, "{http_status}");
        assert!(!status.message().contains(SECRET_KEY));
        h.mock.verify().await;
    }
}

#[tokio::test]
async fn a_create_that_times_out_is_never_sent_again() {
    // The shared client waits 15 s; an adapter with a 300 ms client shows the same mapping fast.
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&mock)
        .await;
    let account = XpayAccount {
        base_url: mock.uri(),
        secret_key: SECRET_KEY.into(),
        webhook_secrets: vec![SECRET.into()],
        ..Default::default()
    };
    let ctx = common::short_timeout_context();
    let adapter = XPay::new("default", &account, &ctx).unwrap();
    let app = spawn_app_with(|_| {}, vec![Arc::new(adapter)]).await;
    let request = pb::CreateCheckoutRequest {
        provider: "xpay".into(),
        merchant_reference: "xp-timeout".into(),
        amount: Some(pb::Money { amount_minor: AMOUNT, currency: "EGP".into() }),
        ..Default::default()
    };
    common::assert_create_outcome_unknown(&app, &mock, "/checkout/sessions", request).await;
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn completed_webhook_pays_then_duplicates_are_acknowledged() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-success").await;
    let body = completed("evt_success", &payment);

    let r = h.post_webhook(&body, &signed(SECRET, &body)).await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!(
        json,
        json!({ "payment_id": payment.id, "event_id": "evt_success", "duplicate": false, "status_changed": true })
    );
    let paid = h.app.get_payment(&payment.id).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(paid.provider_payment_id, format!("pi_{}", &payment.id[4..]));
    assert_eq!(paid.version, payment.version + 1);

    // XPay retries: the same event id again, over HTTP (fresh signature) and VerifyCallback.
    let again = h.post_webhook(&body, &signed(SECRET, &body)).await;
    assert_eq!(again.status(), 200);
    let json: Value = again.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(true), Some(false)));
    let response = h.verify(&body, &signed(SECRET, &body)).await.unwrap();
    assert!(response.duplicate && !response.status_changed);
    assert_eq!(response.event_id, "evt_success");
    assert_eq!(h.app.get_payment(&payment.id).await.version, paid.version);
    // A verified completion needs no status lookup.
    assert_eq!(h.lookups(&payment).await, 0);
}

#[tokio::test]
async fn completed_webhook_over_verify_callback_matches_by_session_id() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-verify").await;
    let body = event("evt_by_session", "checkout.session.completed", &payment, "complete", AMOUNT, false);
    let response = h.verify(&body, &signed(SECRET, &body)).await.unwrap();
    assert!(response.status_changed && !response.duplicate);
    let paid = response.payment.unwrap();
    assert_eq!((paid.id.as_str(), paid.status()), (payment.id.as_str(), PaymentStatus::Succeeded));

    // A session nobody created: 404, audited, not marked seen.
    let mut stranger = payment.clone();
    stranger.provider_checkout_id = "cs_test_nobody".into();
    let body = event("evt_stranger", "checkout.session.completed", &stranger, "complete", AMOUNT, false);
    let r = h.post_webhook(&body, &signed(SECRET, &body)).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn rotated_secrets_and_several_v1_values_are_accepted() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;

    // Signed with the first (older) secret only.
    let first = h.create("xp-rot-1").await;
    let body = completed("evt_rot_1", &first);
    let r = h.post_webhook(&body, &signed(OLD_SECRET, &body)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.app.get_payment(&first.id).await.status(), PaymentStatus::Succeeded);

    // Several v1 values (XPay signing with old and new secrets during rotation), one unknown key.
    let second = h.create("xp-rot-2").await;
    let body = completed("evt_rot_2", &second);
    let now = chrono::Utc::now().timestamp();
    let good = sign_timestamped(SECRET.as_bytes(), now, body.as_bytes());
    let v1 = good.split("v1=").nth(1).unwrap();
    let forged = sign_timestamped(b"whsec_unrelated", now, body.as_bytes());
    let forged_v1 = forged.split("v1=").nth(1).unwrap();
    let header = format!("t={now}, v1={forged_v1}, v0=ignored, v1={}", v1.to_uppercase());
    let response = h.verify(&body, &header).await.unwrap();
    assert!(response.status_changed);
    assert_eq!(h.app.get_payment(&second.id).await.status(), PaymentStatus::Succeeded);
}

#[tokio::test]
async fn forged_webhooks_change_nothing_and_trigger_one_rate_limited_lookup() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-forged").await;
    h.mount_lookup(&payment, "open", AMOUNT).await;
    let body = completed("evt_forged", &payment);

    let r = h.post_webhook(&body, &signed("whsec_attacker", &body)).await;
    assert_eq!(r.status(), 401);
    let json: Value = r.json().await.unwrap();
    assert_eq!(json["code"], "SIGNATURE_INVALID");
    h.wait_for_lookups(&payment, 1).await;

    // Within 10 s: refused again (HTTP, gRPC, no header at all), but no further lookup.
    assert_eq!(h.post_webhook(&body, &signed("whsec_attacker", &body)).await.status(), 401);
    let status = h.verify(&body, &signed("whsec_attacker", &body)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(error_info(&status).0, "SIGNATURE_INVALID");
    let no_header =
        h.app.client.post(format!("{}/callbacks/xpay/default", h.app.http)).body(body.clone()).send().await.unwrap();
    assert_eq!(no_header.status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.lookups(&payment).await, 1);

    let unchanged = h.app.get_payment(&payment.id).await;
    assert_eq!((unchanged.status(), unchanged.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(h.app.count("SELECT COUNT(*) FROM callback_receipts").await, 0);

    // The genuine event still goes through: nothing was marked seen.
    assert_eq!(h.post_webhook(&body, &signed(SECRET, &body)).await.status(), 200);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
}

#[tokio::test]
async fn stale_webhooks_are_refused_but_the_lookup_still_pays() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-stale").await;
    // XPay says the session is complete: the lookup result is trusted, the stale body is not.
    h.mount_lookup(&payment, "complete", AMOUNT).await;
    let body = completed("evt_stale", &payment);
    let now = chrono::Utc::now().timestamp();

    let stale = sign_timestamped(SECRET.as_bytes(), now - 301, body.as_bytes());
    let r = h.post_webhook(&body, &stale).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "SIGNATURE_EXPIRED");
    let future = sign_timestamped(SECRET.as_bytes(), now + 400, body.as_bytes());
    let status = h.verify(&body, &future).await.unwrap_err();
    assert_eq!(error_info(&status).0, "SIGNATURE_EXPIRED");

    h.wait_for_lookups(&payment, 1).await;
    let paid = h.app.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(paid.provider_payment_id, format!("pi_{}", &payment.id[4..]));
    assert_eq!(h.lookups(&payment).await, 1);
}

#[tokio::test]
async fn amount_tampering_is_recorded_but_never_pays() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-amount").await;

    let body = event("evt_cheap", "checkout.session.completed", &payment, "complete", 100, true);
    let r = h.post_webhook(&body, &signed(SECRET, &body)).await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(false)));
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, "AMOUNT_MISMATCH"));

    // Another currency, over gRPC: FAILED_PRECONDITION after commit.
    let mut object: Value = serde_json::from_str(&completed("evt_usd", &payment)).unwrap();
    object["data"]["object"]["currency"] = json!("USD");
    let body = object.to_string();
    let status = h.verify(&body, &signed(SECRET, &body)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let (reason, metadata) = error_info(&status);
    assert_eq!((reason.as_str(), metadata["payment_id"].as_str()), ("AMOUNT_MISMATCH", payment.id.as_str()));
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
}

#[tokio::test]
async fn other_event_types_change_nothing_and_schedule_one_lookup() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-other").await;
    h.mount_lookup(&payment, "open", AMOUNT).await;

    // Even a body that claims "complete" changes nothing when the type is not the documented one.
    let body = event("evt_other", "checkout.session.async_payment_succeeded", &payment, "complete", AMOUNT, true);
    let r = h.post_webhook(&body, &signed(SECRET, &body)).await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!(
        json,
        json!({ "payment_id": payment.id, "event_id": "evt_other", "duplicate": false, "status_changed": false })
    );
    h.wait_for_lookups(&payment, 1).await;
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM payment_events WHERE payment_id = $1 AND source = 'callback'")
            .bind(&payment.id)
            .fetch_all(&h.app.db)
            .await
            .unwrap();
    assert_eq!(kinds, ["look_up"]);
    assert_eq!(h.app.gateway.metrics().unknown_statuses("xpay"), 0, "an event type is not an unknown status");

    // Through VerifyCallback, for another payment whose session has expired at XPay.
    let second = h.create("xp-other-2").await;
    h.mount_lookup(&second, "expired", AMOUNT).await;
    let body = event("evt_expired", "checkout.session.expired", &second, "expired", AMOUNT, true);
    let response = h.verify(&body, &signed(SECRET, &body)).await.unwrap();
    assert!(!response.status_changed && !response.duplicate);
    h.wait_for_lookups(&second, 1).await;
    let p = h.app.wait_for_status(&second.id, PaymentStatus::Expired).await;
    assert_eq!(p.status(), PaymentStatus::Expired, "the lookup, not the body, moved it");
    assert_eq!(h.lookups(&payment).await, 1);
}

#[tokio::test]
async fn a_completed_event_with_another_status_changes_nothing_and_schedules_one_lookup() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-completed-open").await;
    h.mount_lookup(&payment, "open", AMOUNT).await;

    // Only `complete` is trusted from a `checkout.session.completed` body.
    let body = event("evt_completed_open", "checkout.session.completed", &payment, "open", AMOUNT, true);
    let r = h.post_webhook(&body, &signed(SECRET, &body)).await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!(
        json,
        json!({ "payment_id": payment.id, "event_id": "evt_completed_open", "duplicate": false, "status_changed": false })
    );
    h.wait_for_lookups(&payment, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM payment_events WHERE payment_id = $1 AND source = 'callback'")
            .bind(&payment.id)
            .fetch_all(&h.app.db)
            .await
            .unwrap();
    assert_eq!(kinds, ["look_up"]);
    assert_eq!(h.lookups(&payment).await, 1);

    // `expired` in the body is not applied either; XPay's answer to the lookup decides.
    let second = h.create("xp-completed-expired").await;
    h.mount_lookup(&second, "complete", AMOUNT).await;
    let body = event("evt_completed_expired", "checkout.session.completed", &second, "expired", AMOUNT, true);
    let response = h.verify(&body, &signed(SECRET, &body)).await.unwrap();
    assert!(!response.status_changed && !response.duplicate);
    assert_eq!(response.payment.unwrap().status(), PaymentStatus::Pending);
    h.wait_for_lookups(&second, 1).await;
    let p = h.app.wait_for_status(&second.id, PaymentStatus::Succeeded).await;
    assert_eq!(p.status(), PaymentStatus::Succeeded, "the lookup, not the body, decided");
    assert_eq!(h.lookups(&second).await, 1);
}

// ---------------------------------------------------------------------------------------------
// Status lookups and returns
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_maps_the_session_status() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-refresh").await;
    let refresh = |id: String| {
        let mut grpc = h.app.grpc.clone();
        async move {
            let request = pb::GetPaymentStatusRequest { payment_id: id, refresh: true, ..Default::default() };
            grpc.get_payment_status(request).await.map(|r| r.into_inner().payment.unwrap())
        }
    };

    h.mount_lookup(&payment, "open", AMOUNT).await;
    let p = refresh(payment.id.clone()).await.unwrap();
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));

    // An unknown session status leaves the payment alone and is counted.
    h.mock.reset().await;
    h.mount_lookup(&payment, "requires_review", AMOUNT).await;
    let p = refresh(payment.id.clone()).await.unwrap();
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(h.app.gateway.metrics().unknown_statuses("xpay"), 1);

    // An amount that differs never pays, even from the lookup.
    h.mock.reset().await;
    h.mount_lookup(&payment, "complete", AMOUNT + 1).await;
    let p = refresh(payment.id.clone()).await.unwrap();
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, "AMOUNT_MISMATCH"));

    h.mock.reset().await;
    h.mount_lookup(&payment, "complete", AMOUNT).await;
    let p = refresh(payment.id.clone()).await.unwrap();
    assert_eq!(p.status(), PaymentStatus::Succeeded);
    assert_eq!(p.provider_payment_id, format!("pi_{}", &payment.id[4..]));
    assert_eq!(p.failure_code, "");
    assert_eq!(h.lookups(&payment).await, 1);

    // Provider trouble during a refresh is returned, not hidden.
    let other = {
        h.create_mock(AMOUNT, None).mount(&h.mock).await;
        h.create("xp-refresh-2").await
    };
    Mock::given(method("GET"))
        .and(path(format!("/checkout/sessions/{}", other.provider_checkout_id)))
        .respond_with(ResponseTemplate::new(502))
        .mount(&h.mock)
        .await;
    let status = refresh(other.id.clone()).await.unwrap_err();
    assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");
}

#[tokio::test]
async fn shopper_return_redirects_and_looks_the_session_up() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-return").await;
    h.mount_lookup(&payment, "complete", AMOUNT).await;
    // What XPay's redirect looks like once it substituted the placeholder.
    let url = format!("{}/return/xpay/{}?session={}", h.app.http, payment.id, payment.provider_checkout_id);
    let r = h.app.client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://shop.example/return?order=1");
    let cancel = format!("{}/return/xpay/{}?outcome=cancel", h.app.http, payment.id);
    let r = h.app.client.get(cancel).send().await.unwrap();
    assert_eq!(r.headers()["location"], "https://shop.example/cancel");
    h.wait_for_lookups(&payment, 1).await;
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn config_checks_xpay_value_formats_without_leaking_secrets() {
    let mut config = paygate::config::Config::default();
    config.providers.xpay.accounts.insert(
        "eg-shop".into(),
        XpayAccount {
            base_url: "ftp://api.xpay.app".into(),
            secret_key: SECRET_KEY.into(),
            webhook_secrets: vec![SECRET.into(), Default::default()],
            currencies: vec!["EGP".into(), "egp".into()],
            ..Default::default()
        },
    );
    let errors = config.validate().unwrap_err().join("\n");
    for key in ["base_url", "webhook_secrets", "currencies"] {
        assert!(errors.contains(&format!("providers.xpay.accounts.eg-shop.{key}")), "{errors}");
    }
    assert!(!errors.contains(SECRET_KEY) && !errors.contains(SECRET), "{errors}");
    assert_eq!(XpayAccount::default().currencies, ["EGP"]);
    let out = config.to_redacted_toml();
    assert!(!out.contains(SECRET_KEY) && !out.contains(SECRET), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Payment truth: durable checks, expiry at XPay, late success
// ---------------------------------------------------------------------------------------------

/// Moves `payment` past its `expires_at` and makes its check due, instead of waiting.
async fn expire_now(app: &TestApp, id: &str) {
    sqlx::query("UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("UPDATE provider_checks SET due_at = now() WHERE payment_id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
}

/// Sources of the applied events that gave `id` each status, oldest first.
async fn applied(app: &TestApp, id: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT status, source FROM payment_events WHERE payment_id = $1 AND version IS NOT NULL ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_trigger_right_after_a_return_lookup_is_not_lost() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-lost").await;
    // The shopper comes back while the session is open: one lookup.
    h.mount_lookup(&payment, "open", AMOUNT).await;
    let r = h.app.client.get(format!("{}/return/xpay/{}", h.app.http, payment.id)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    h.wait_for_lookups(&payment, 1).await;

    // XPay completes the session; within a second a webhook we only trust as a trigger arrives
    // (once, in the old 10 s rate window that used to drop it).
    h.mock.reset().await;
    h.mount_lookup(&payment, "complete", AMOUNT).await;
    let body = event("evt_async", "checkout.session.async_payment_succeeded", &payment, "complete", AMOUNT, true);
    assert_eq!(h.post_webhook(&body, &signed(SECRET, &body)).await.status(), 200);
    let paid = h.app.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded, "the queued check ran with no further request");
    assert_eq!(applied(&h.app, &payment.id).await.last().unwrap(), &("succeeded".to_owned(), "reconciler".to_owned()));
    assert_eq!(h.app.count("SELECT COUNT(*) FROM provider_checks").await, 0, "nothing left to check");
}

#[tokio::test]
async fn lookups_that_fail_back_off_and_resolve_after_recovery() {
    let h = Harness::start_with(|c| {
        c.reconciler.backoff_initial_ms = 300;
        c.reconciler.backoff_max_secs = 1;
    })
    .await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-flaky").await;
    let session_path = format!("/checkout/sessions/{}", payment.provider_checkout_id);
    // XPay's lookup fails three times, then answers.
    Mock::given(method("GET"))
        .and(path(session_path.as_str()))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(3)
        .mount(&h.mock)
        .await;
    h.mount_lookup(&payment, "complete", AMOUNT).await;
    let body = event("evt_trigger", "checkout.session.async_payment_succeeded", &payment, "complete", AMOUNT, true);
    assert_eq!(h.post_webhook(&body, &signed(SECRET, &body)).await.status(), 200);

    // While it fails, the queue shows the attempts, the error and a later due time.
    let mut seen = None;
    for _ in 0..100 {
        let row: Option<(i32, Option<String>, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
            "SELECT attempts, last_error, due_at FROM provider_checks WHERE payment_id = $1 AND attempts >= 2",
        )
        .bind(&payment.id)
        .fetch_optional(&h.app.db)
        .await
        .unwrap();
        if row.is_some() {
            seen = row;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (attempts, last_error, due_at) = seen.expect("the failures are visible in provider_checks");
    assert!(attempts >= 2);
    assert_eq!(last_error.as_deref(), Some("outcome unknown: HTTP 500"));
    assert!(due_at.is_some_and(|d| d > chrono::Utc::now() - chrono::TimeDelta::seconds(1)));

    let paid = h.app.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded, "resolved after recovery");
    assert_eq!(h.received("GET", &session_path).await, 4);
    assert_eq!(h.app.count("SELECT COUNT(*) FROM provider_checks").await, 0);
}

#[tokio::test]
async fn a_short_ttl_is_enforced_at_xpay_when_the_payment_expires() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let mut request = h.request("xp-ttl");
    request.ttl = Some(prost_types::Duration { seconds: 600, nanos: 0 });
    let payment = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    let expire_path = format!("/checkout/sessions/{}/expire", payment.provider_checkout_id);
    Mock::given(method("POST"))
        .and(path(expire_path.as_str()))
        .and(header("authorization", format!("Bearer {SECRET_KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(session(
            &payment.provider_checkout_id,
            &payment.id,
            "expired",
            AMOUNT,
            "EGP",
        )))
        .expect(1)
        .mount(&h.mock)
        .await;
    h.mount_lookup(&payment, "expired", AMOUNT).await;

    expire_now(&h.app, &payment.id).await;
    h.app.gateway.run_due_checks().await.unwrap();
    h.mock.verify().await;
    // Expired at XPay first, then the final lookup, then EXPIRED here.
    let order: Vec<String> = h
        .mock
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() != "/checkout/sessions")
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    let lookup = format!("GET /checkout/sessions/{}", payment.provider_checkout_id);
    assert_eq!(order, [format!("POST {expire_path}"), lookup]);
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!(p.status(), PaymentStatus::Expired);
    assert_eq!(applied(&h.app, &payment.id).await.last().unwrap(), &("expired".to_owned(), "expiry".to_owned()));
}

#[tokio::test]
async fn an_expiry_xpay_refuses_because_the_session_completed_ends_succeeded() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-refused").await;
    Mock::given(method("POST"))
        .and(path(format!("/checkout/sessions/{}/expire", payment.provider_checkout_id)))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({ "error": { "type": "invalid_request_error", "code": "session_not_open" } })),
        )
        .expect(1)
        .mount(&h.mock)
        .await;
    h.mount_lookup(&payment, "complete", AMOUNT).await;

    expire_now(&h.app, &payment.id).await;
    h.app.gateway.run_due_checks().await.unwrap();
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!(p.status(), PaymentStatus::Succeeded);
    let statuses: Vec<String> = applied(&h.app, &payment.id).await.into_iter().map(|(s, _)| s).collect();
    assert!(!statuses.contains(&"expired".to_owned()), "never EXPIRED: {statuses:?}");
    assert_eq!(h.app.gateway.metrics().events("xpay", "late_success"), 0);
}

#[tokio::test]
async fn a_success_after_expiry_is_applied_and_counted_as_late() {
    let h = Harness::start().await;
    h.create_mock(AMOUNT, None).mount(&h.mock).await;
    let payment = h.create("xp-late").await;
    Mock::given(method("POST"))
        .and(path(format!("/checkout/sessions/{}/expire", payment.provider_checkout_id)))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&h.mock)
        .await;
    h.mount_lookup(&payment, "expired", AMOUNT).await;
    expire_now(&h.app, &payment.id).await;
    h.app.gateway.run_due_checks().await.unwrap();
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Expired);

    // XPay says the session completed after all (money was taken): SUCCEEDED, loudly.
    let body = completed("evt_late", &payment);
    let response = h.verify(&body, &signed(SECRET, &body)).await.unwrap();
    assert!(response.status_changed);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
    assert_eq!(h.app.gateway.metrics().events("xpay", "late_success"), 1);
    let statuses: Vec<String> = applied(&h.app, &payment.id).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses[statuses.len() - 2..], ["expired".to_owned(), "succeeded".to_owned()]);
}
