//! The XStak XPay (Pakistan) adapter end to end: gRPC and the HTTP ingress against a `wiremock`
//! XStak on 127.0.0.1 that enforces the documented API (method, path, auth headers, the request
//! signature over the exact received bytes, body shape and the raw number format of `amount`).

use crate::common;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{TestApp, error_info, spawn_app_with};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::signature::hmac_sha256_hex;
use paygate::providers::xstak::Xstak;
use paygate::providers::xstak::XstakAccount;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockServer, Request, Respond, ResponseTemplate};

const API_KEY: &str = "sk_test_xstak_api_key";
const ACCOUNT_ID: &str = "acc_6512";
const HMAC_SECRET: &str = "hmac_test";
const WEBHOOK_SECRET: &str = "whk_test_secret";
/// 12.50 PKR: on the wire `12.5`.
const AMOUNT: i64 = 1250;
const CHECKOUT_PATH: &str = "/public/v1/payment/checkout";

// ---------------------------------------------------------------------------------------------
// Signature vectors
// ---------------------------------------------------------------------------------------------

/// Vectors computed independently with Python 3:
///   import hmac, hashlib
///   hmac.new(KEY.encode(), BODY.encode(), hashlib.sha256).hexdigest()
/// - the note's self-made vector: KEY `hmac_test`, BODY `{"amount":5,"currency":"PKR"}`
///   → 5955699da350de26ee2bbb753e063c163e65916796dc41f36aea3bd6c3add862
/// - KEY `whk_test_secret`, BODY = the public webhook sample (`SAMPLE_WEBHOOK`)
///   → 5eafeb9148338e354f6ac6b6893f3c886b5d58421fc9d12ec02c263beef42914
/// - KEY `whk_test_secret`, BODY = `SUCCESS_WEBHOOK`
///   → 195d15743ff7deffdacdb97167acfd1e3aa8561f0fc41b257d6458ba0e1ffc25
const NOTE_BODY: &str = r#"{"amount":5,"currency":"PKR"}"#;
const NOTE_SIG: &str = "5955699da350de26ee2bbb753e063c163e65916796dc41f36aea3bd6c3add862";
const SAMPLE_WEBHOOK: &str = r#"{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"xpay_pi_1573edc2074d54b60eb265e448cdf1eb5c09bfad5cac10153b107b0c780515fb","refund_id":null,"amount":10,"currency":"PKR","status":"succeeded","customer":{"name":"","email":"","phone":null},"payment_method_types":"card","transaction_details":{"status":"CAPTURED","secure":"3DS2","gateway":"bank-alfalah","response_from_bank":"The payment was completed successfully"}}"#;
const SAMPLE_WEBHOOK_SIG: &str = "5eafeb9148338e354f6ac6b6893f3c886b5d58421fc9d12ec02c263beef42914";
const SUCCESS_WEBHOOK: &str = r#"{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"xpay_pi_abc","refund_id":null,"amount":12.5,"currency":"PKR","status":"succeeded"}"#;
const SUCCESS_WEBHOOK_SIG: &str = "195d15743ff7deffdacdb97167acfd1e3aa8561f0fc41b257d6458ba0e1ffc25";

#[test]
fn signatures_match_python_vectors() {
    for (key, body, expected) in [
        (HMAC_SECRET, NOTE_BODY, NOTE_SIG),
        (WEBHOOK_SECRET, SAMPLE_WEBHOOK, SAMPLE_WEBHOOK_SIG),
        (WEBHOOK_SECRET, SUCCESS_WEBHOOK, SUCCESS_WEBHOOK_SIG),
    ] {
        assert_eq!(hmac_sha256_hex(key.as_bytes(), body.as_bytes()), expected, "{body}");
    }
}

// ---------------------------------------------------------------------------------------------
// The XStak double
// ---------------------------------------------------------------------------------------------

/// Checks a create request: `x-signature` is the hex HMAC-SHA256 (`hmac_secret`) of the exact
/// received bytes; `amount` appears in those bytes as the expected JSON number text; the JSON has
/// exactly the documented fields with our return URLs and payment id.
struct CreateBody {
    public_base_url: String,
    /// e.g. `12.5`: matched against the raw bytes, `"amount":12.5,`.
    amount_text: &'static str,
    /// Exact `shipping`: always sent (the document says it must be passed), empty strings when the
    /// request has no shipping address.
    shipping: Value,
    /// Exact `payment_methods`, or `None` when it must be absent.
    payment_methods: Option<Value>,
    customer: Value,
}

impl CreateBody {
    fn check(&self, request: &Request) -> Result<(), String> {
        let signature = request.headers.get("x-signature").and_then(|v| v.to_str().ok()).ok_or("no x-signature")?;
        let expected = hmac_sha256_hex(HMAC_SECRET.as_bytes(), &request.body);
        if signature != expected {
            return Err(format!("x-signature {signature} is not the HMAC of the received bytes ({expected})"));
        }
        let text = std::str::from_utf8(&request.body).map_err(|_| "body not UTF-8")?;
        let raw_amount = format!(r#"{{"amount":{},"currency":"PKR","#, self.amount_text);
        if !text.starts_with(&raw_amount) {
            return Err(format!("amount is not the raw number {} first: {text}", self.amount_text));
        }
        let body: Value = serde_json::from_slice(&request.body).map_err(|e| format!("not JSON: {e}"))?;
        let obj = body.as_object().ok_or("not an object")?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = vec!["amount", "currency", "customer", "failure_url", "metadata", "shipping", "success_url"];
        if self.payment_methods.is_some() {
            want.push("payment_methods");
        }
        want.sort_unstable();
        if keys != want {
            return Err(format!("fields {keys:?}, want {want:?}"));
        }
        if !body["amount"].is_number() {
            return Err("amount is not a JSON number".into());
        }
        let meta = body["metadata"].as_object().filter(|m| m.len() == 1).ok_or("metadata")?;
        let id = meta.get("order_reference").and_then(Value::as_str).ok_or("no order_reference")?;
        if !(id.len() == 30 && id.starts_with("pay_")) {
            return Err(format!("order_reference {id} is not a payment id"));
        }
        let base = format!("{}/return/xstak/{id}", self.public_base_url);
        if body["success_url"] != format!("{base}?outcome=success")
            || body["failure_url"] != format!("{base}?outcome=failure")
        {
            return Err(format!("return URLs {} {}", body["success_url"], body["failure_url"]));
        }
        if body["customer"] != self.customer {
            return Err(format!("customer {}", body["customer"]));
        }
        if body["shipping"] != self.shipping {
            return Err(format!("shipping {}", body["shipping"]));
        }
        if let Some(methods) = &self.payment_methods
            && &body["payment_methods"] != methods
        {
            return Err(format!("payment_methods {}", body["payment_methods"]));
        }
        Ok(())
    }
}

impl Match for CreateBody {
    fn matches(&self, request: &Request) -> bool {
        let result = self.check(request);
        if let Err(e) = &result {
            eprintln!("XStak double refused the create request: {e}");
        }
        result.is_ok()
    }
}

fn intent_id_for(payment_id: &str) -> String {
    format!("xpay_pi_{}", payment_id[4..].to_lowercase())
}

/// The documented create response, echoing the amount's raw text.
struct IntentCreated;

impl Respond for IntentCreated {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let reference = body["metadata"]["order_reference"].as_str().unwrap_or("pay_unknown").to_owned();
        let id = intent_id_for(&reference);
        let text = std::str::from_utf8(&request.body).unwrap_or_default();
        let amount = text.strip_prefix(r#"{"amount":"#).and_then(|t| t.split(',').next()).unwrap_or("0");
        let response = json!({
            "success": true, "responseStatus": "OK", "message": "Request processed successfully.",
            "data": {
                "_id": id, "pi_client_secret": format!("{id}_cs_9e04a0a842e5"),
                "created_at": "2025-09-16T13:00:11.045Z", "amount": "__AMOUNT__", "currency": "PKR",
                "object_name": "payment_intent", "pi_status": "requires_payment_method",
                "capture_method": "automatic", "metadata": { "order_reference": reference },
                "refund": { "refunded_amount": 0, "refund_object_id": null },
                "checkout_page_url": format!("https://xpay-checkout-stage.xstak.com/?source=headless&order_id={reference}&id={id}"),
            }
        })
        .to_string()
        .replace(r#""__AMOUNT__""#, amount);
        ResponseTemplate::new(200).set_body_raw(response, "application/json")
    }
}

/// A payment intent in its envelope, as the (undocumented) status lookup is assumed to return it.
fn intent_envelope(id: &str, status: &str, amount_text: &str) -> String {
    json!({ "success": true, "responseStatus": "OK",
        "data": { "_id": id, "amount": "__AMOUNT__", "currency": "PKR", "pi_status": status, "object_name": "payment_intent" } })
    .to_string()
    .replace(r#""__AMOUNT__""#, amount_text)
}

struct Harness {
    app: TestApp,
    mock: MockServer,
}

impl Harness {
    async fn start(status_lookup: bool) -> Self {
        Self::start_with(|a| a.status_lookup = status_lookup).await
    }

    async fn start_with(adjust: impl FnOnce(&mut XstakAccount)) -> Self {
        let mock = MockServer::start().await;
        assert!(mock.uri().starts_with("http://127.0.0.1:"), "{}", mock.uri());
        let mut account = XstakAccount {
            base_url: mock.uri(),
            api_key: API_KEY.into(),
            account_id: ACCOUNT_ID.into(),
            hmac_secret: HMAC_SECRET.into(),
            webhook_secret: WEBHOOK_SECRET.into(),
            ..Default::default()
        };
        adjust(&mut account);
        let app = spawn_app_with(
            |config| {
                config.providers.xstak.accounts.insert("default".into(), account);
            },
            Vec::new(),
        )
        .await;
        Self { app, mock }
    }

    fn create_body(&self, amount_text: &'static str) -> CreateBody {
        CreateBody {
            public_base_url: self.app.http.clone(),
            amount_text,
            shipping: json!({ "address1": "", "city": "", "country": "", "zip": "",
                "shipping_method": "Standard", "province": "" }),
            payment_methods: None,
            customer: json!({ "email": "ali@example.pk", "name": "Ali", "phone": "03415682456" }),
        }
    }

    /// The create endpoint, enforcing the documented request.
    fn create_mock(&self, body: CreateBody) -> Mock {
        Mock::given(method("POST"))
            .and(path(CHECKOUT_PATH))
            .and(header("x-api-key", API_KEY))
            .and(header("x-account-id", ACCOUNT_ID))
            .and(header("content-type", "application/json"))
            .and(body)
            .respond_with(IntentCreated)
    }

    async fn mount_create(&self) {
        self.create_mock(self.create_body("12.5")).mount(&self.mock).await;
    }

    /// `GET /public/v1/payment/intent/{id}` answering `status`, signed over the empty body.
    async fn mount_lookup(&self, payment: &pb::Payment, status: &str, amount_text: &str) {
        Mock::given(method("GET"))
            .and(path(format!("/public/v1/payment/intent/{}", payment.provider_checkout_id)))
            .and(header("x-api-key", API_KEY))
            .and(header("x-account-id", ACCOUNT_ID))
            .and(header("x-signature", hmac_sha256_hex(HMAC_SECRET.as_bytes(), b"").as_str()))
            .respond_with(
                ResponseTemplate::new(200).set_body_raw(
                    intent_envelope(&payment.provider_checkout_id, status, amount_text),
                    "application/json",
                ),
            )
            .mount(&self.mock)
            .await;
    }

    fn request(&self, reference: &str) -> pb::CreateCheckoutRequest {
        pb::CreateCheckoutRequest {
            provider: "xstak".into(),
            merchant_reference: reference.into(),
            amount: Some(pb::Money { amount_minor: AMOUNT, currency: "PKR".into() }),
            return_url: "https://shop.example/return?order=1".into(),
            cancel_url: "https://shop.example/cancel".into(),
            customer: Some(pb::Customer {
                name: "Ali".into(),
                email: "ali@example.pk".into(),
                phone: "03415682456".into(),
            }),
            ..Default::default()
        }
    }

    async fn create(&self, reference: &str) -> pb::Payment {
        let response = self.app.grpc.clone().create_checkout(self.request(reference)).await.expect("create");
        response.into_inner().payment.expect("payment")
    }

    async fn received(&self, method: &str, path: &str) -> usize {
        common::requests_to(&self.mock, method, path).await
    }

    fn lookup_path(payment: &pb::Payment) -> String {
        format!("/public/v1/payment/intent/{}", payment.provider_checkout_id)
    }

    async fn lookups(&self, payment: &pb::Payment) -> usize {
        self.received("GET", &Self::lookup_path(payment)).await
    }

    async fn wait_for_lookups(&self, payment: &pb::Payment, n: usize) {
        common::wait_for_requests(&self.mock, "GET", &Self::lookup_path(payment), n).await;
    }

    async fn wait_for_status(&self, payment: &pb::Payment, status: PaymentStatus) -> pb::Payment {
        self.app.wait_for_status(&payment.id, status).await
    }

    async fn post_webhook_as(&self, header_name: &str, body: &str, signature: &str) -> reqwest::Response {
        let headers = [("content-type", "application/json"), (header_name, signature)];
        self.app.post_raw_callback("xstak/default", &headers, body).await
    }

    async fn post_webhook(&self, body: &str, signature: &str) -> reqwest::Response {
        self.post_webhook_as("x-signature", body, signature).await
    }

    async fn verify(&self, body: &str, signature: &str) -> Result<pb::VerifyCallbackResponse, tonic::Status> {
        self.app.verify_raw("xstak", &[("X-Signature", signature), ("Content-Type", "application/json")], body).await
    }

    async fn refresh(&self, id: &str) -> Result<pb::Payment, tonic::Status> {
        let request = pb::GetPaymentStatusRequest { payment_id: id.into(), refresh: true, ..Default::default() };
        self.app.grpc.clone().get_payment_status(request).await.map(|r| r.into_inner().payment.unwrap())
    }
}

/// A webhook about `payment`'s intent, shaped like the public sample; `amount_text` is the raw
/// JSON number; `with_metadata` adds `metadata.order_reference` = our payment id.
fn webhook(payment: &pb::Payment, status: &str, amount_text: &str, with_metadata: bool) -> String {
    let mut body = json!({
        "type": "PAYMENT_INTENT_NOTIFICATION",
        "payment_intent_id": payment.provider_checkout_id,
        "refund_id": null,
        "amount": "__AMOUNT__",
        "currency": "PKR",
        "status": status,
        "customer": { "name": "", "email": "", "phone": null },
        "payment_method_types": "card",
        "transaction_details": { "status": "CAPTURED", "secure": "3DS2", "gateway": "bank-alfalah" },
    });
    if with_metadata {
        body["metadata"] = json!({ "order_reference": payment.id });
    }
    body.to_string().replace(r#""__AMOUNT__""#, amount_text)
}

fn signed(body: &str) -> String {
    hmac_sha256_hex(WEBHOOK_SECRET.as_bytes(), body.as_bytes())
}

fn seconds(ts: &Option<prost_types::Timestamp>) -> (i64, i32) {
    let ts = ts.as_ref().expect("timestamp");
    (ts.seconds, ts.nanos)
}

// ---------------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_signs_the_exact_bytes_and_records_the_intent() {
    let h = Harness::start(false).await;
    let mut body = h.create_body("12.5");
    body.shipping = json!({ "address1": "Gulberg", "address2": "Block B", "city": "Lahore",
        "country": "Pakistan", "zip": "65191", "shipping_method": "Standard", "province": "Punjab" });
    body.payment_methods = Some(json!(["card", "jazzcash"]));
    h.create_mock(body).expect(1).named("create with shipping").mount(&h.mock).await;

    let mut request = h.request("xs-create");
    request.payment_methods = vec!["card".into(), "jazzcash".into()];
    request.shipping_address = Some(pb::Address {
        line1: "Gulberg".into(),
        line2: "Block B".into(),
        city: "Lahore".into(),
        state: "Punjab".into(),
        postal_code: "65191".into(),
        country: "PK".into(),
    });
    let payment = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    assert_eq!(payment.status(), PaymentStatus::Pending);
    let id = intent_id_for(&payment.id);
    assert_eq!(payment.provider_checkout_id, id);
    assert_eq!(
        payment.checkout_url,
        format!("https://xpay-checkout-stage.xstak.com/?source=headless&order_id={}&id={id}", payment.id)
    );
    // No expiry at XStak: local, created + checkout_ttl_secs (3600 by default).
    let (created, nanos) = seconds(&payment.created_at);
    assert_eq!(seconds(&payment.expires_at), (created + 3600, nanos));
    let debug = format!("{payment:?}");
    for secret in [API_KEY, HMAC_SECRET, "_cs_9e04", "ali@example.pk"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    h.mock.verify().await;
}

#[tokio::test]
async fn amounts_are_exact_json_numbers_and_a_caller_ttl_sets_the_local_expiry() {
    let h = Harness::start(false).await;
    for (minor, text) in [(500_i64, "5"), (1234, "12.34"), (5, "0.05"), (12_345_678_901, "123456789.01")] {
        h.mock.reset().await;
        h.create_mock(h.create_body(text)).expect(1).mount(&h.mock).await;
        let mut request = h.request(&format!("xs-amount-{minor}"));
        request.amount = Some(pb::Money { amount_minor: minor, currency: "PKR".into() });
        request.ttl = Some(prost_types::Duration { seconds: 600, nanos: 0 });
        let p = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
        let (created, nanos) = seconds(&p.created_at);
        assert_eq!(seconds(&p.expires_at), (created + 600, nanos));
        h.mock.verify().await;
    }
}

#[tokio::test]
async fn minor_amount_unit_sends_paisa() {
    let h = Harness::start_with(|a| a.amount_unit = "minor".into()).await;
    h.create_mock(h.create_body("1250")).expect(1).mount(&h.mock).await;
    let payment = h.create("xs-minor").await;
    // Webhook amounts are read in the same unit.
    let body = webhook(&payment, "succeeded", "1250", false);
    assert_eq!(h.post_webhook(&body, &signed(&body)).await.status(), 200);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
    h.mock.verify().await;
}

#[tokio::test]
async fn other_currencies_are_refused_before_any_call() {
    let h = Harness::start(false).await;
    for currency in ["USD", "JPY", "KWD"] {
        let mut request = h.request(&format!("xs-{currency}"));
        request.amount = Some(pb::Money { amount_minor: 1234, currency: currency.into() });
        let status = h.app.grpc.clone().create_checkout(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let (reason, metadata) = error_info(&status);
        assert_eq!((reason.as_str(), metadata["field"].as_str()), ("INVALID_FIELD", "amount.currency"));
    }
    assert!(h.mock.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn provider_errors_on_create_map_to_the_error_table() {
    let h = Harness::start(false).await;
    let refused = json!({ "success": false, "responseStatus": "BAD_REQUEST", "message": "ali@example.pk invalid" });
    let cases: [(u16, Value, tonic::Code, &str, Option<&str>); 6] = [
        (400, refused.clone(), tonic::Code::InvalidArgument, "PROVIDER_REJECTED", Some("BAD_REQUEST")),
        (422, json!({ "oops": true }), tonic::Code::InvalidArgument, "PROVIDER_REJECTED", Some("http_422")),
        (200, refused, tonic::Code::InvalidArgument, "PROVIDER_REJECTED", Some("BAD_REQUEST")),
        (401, json!({ "success": false }), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
        (403, json!({}), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
        (503, json!({ "success": false }), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
    ];
    for (i, (http_status, body, code, reason, provider_code)) in cases.into_iter().enumerate() {
        h.mock.reset().await;
        Mock::given(method("POST"))
            .and(path(CHECKOUT_PATH))
            .and(header("x-api-key", API_KEY))
            .and(header("x-account-id", ACCOUNT_ID))
            .respond_with(ResponseTemplate::new(http_status).set_body_json(body))
            .expect(1)
            .mount(&h.mock)
            .await;
        let status = h.app.grpc.clone().create_checkout(h.request(&format!("xs-err-{i}"))).await.unwrap_err();
        assert_eq!(status.code(), code, "{http_status}");
        let (got_reason, metadata) = error_info(&status);
        assert_eq!(got_reason, reason, "{http_status}");
        assert_eq!(metadata.get("provider_code").map(String::as_str), provider_code, "{http_status}");
        for secret in [API_KEY, HMAC_SECRET, "ali@example.pk"] {
            assert!(!status.message().contains(secret), "{}", status.message());
        }
        h.mock.verify().await;
    }
}

#[tokio::test]
async fn a_create_that_times_out_is_never_sent_again() {
    // The shared client waits 15 s; an adapter with a 300 ms client shows the same mapping fast.
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CHECKOUT_PATH))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&mock)
        .await;
    let account = XstakAccount {
        base_url: mock.uri(),
        api_key: API_KEY.into(),
        account_id: ACCOUNT_ID.into(),
        hmac_secret: HMAC_SECRET.into(),
        webhook_secret: WEBHOOK_SECRET.into(),
        ..Default::default()
    };
    let ctx = common::short_timeout_context();
    let adapter = Xstak::new("default", &account, &ctx).unwrap();
    let app = spawn_app_with(|_| {}, vec![Arc::new(adapter)]).await;
    let request = pb::CreateCheckoutRequest {
        provider: "xstak".into(),
        merchant_reference: "xs-timeout".into(),
        amount: Some(pb::Money { amount_minor: AMOUNT, currency: "PKR".into() }),
        ..Default::default()
    };
    let payment_id = common::assert_create_outcome_unknown(&app, &mock, CHECKOUT_PATH, request).await;

    // XStak had in fact created the intent, and the shopper paid: the signed webhook names our
    // payment (`metadata.order_reference`) and the intent we never stored. The payment adopts it.
    let payment =
        pb::Payment { id: payment_id.clone(), provider_checkout_id: "xpay_pi_adopted".into(), ..Default::default() };
    let body = webhook(&payment, "succeeded", "12.5", true);
    let response = app
        .verify_raw("xstak", &[("X-Signature", &signed(&body)), ("Content-Type", "application/json")], &body)
        .await
        .unwrap();
    assert!(response.status_changed);
    let paid = app.get_payment(&payment_id).await;
    assert_eq!((paid.status(), paid.provider_checkout_id.as_str()), (PaymentStatus::Succeeded, "xpay_pi_adopted"));
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn succeeded_webhook_pays_then_duplicates_are_acknowledged() {
    let h = Harness::start(false).await;
    h.mount_create().await;
    let payment = h.create("xs-success").await;
    let body = webhook(&payment, "succeeded", "12.5", false);
    let event_id = format!("{}:succeeded:", payment.provider_checkout_id);

    let r = h.post_webhook(&body, &signed(&body)).await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!(
        json,
        json!({ "payment_id": payment.id, "event_id": event_id, "duplicate": false, "status_changed": true })
    );
    let paid = h.app.get_payment(&payment.id).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(paid.provider_payment_id, payment.provider_checkout_id);
    assert_eq!(paid.payment_method, "card");
    assert_eq!(paid.version, payment.version + 1);

    // XStak retries: the same body again, over HTTP and VerifyCallback.
    let again = h.post_webhook(&body, &signed(&body)).await;
    assert_eq!(again.status(), 200);
    let json: Value = again.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(true), Some(false)));
    let response = h.verify(&body, &signed(&body).to_uppercase()).await.unwrap();
    assert!(response.duplicate && !response.status_changed);
    assert_eq!(response.event_id, event_id);
    assert_eq!(h.app.get_payment(&payment.id).await.version, paid.version);
    // Only the create reached XStak: status lookups are off.
    assert_eq!(h.mock.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn failed_and_cancelled_webhooks_over_verify_callback_match_by_intent_id() {
    let h = Harness::start(false).await;
    h.mount_create().await;
    let payment = h.create("xs-failed").await;
    // The intent id in the body is one we never stored, with our id in metadata.order_reference:
    // matched by the intent id, so it cannot apply to our payment.
    let mut other = payment.clone();
    other.provider_checkout_id = "xpay_pi_not_ours".into();
    let body = webhook(&other, "failed", "12.5", true);
    let status = h.verify(&body, &signed(&body)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
    // Its own intent id (metadata too): applied.
    let body = webhook(&payment, "failed", "12.5", true);
    let response = h.verify(&body, &signed(&body)).await.unwrap();
    assert!(response.status_changed && !response.duplicate);
    let failed = response.payment.unwrap();
    assert_eq!((failed.id.as_str(), failed.status()), (payment.id.as_str(), PaymentStatus::Failed));
    assert_eq!(failed.failure_code, "PROVIDER_DECLINED");
    assert_eq!(failed.failure_message, "XStak reported failed");

    let second = h.create("xs-cancelled").await;
    let body = webhook(&second, "canceled", "12.5", false);
    let r = h.post_webhook(&body, &signed(&body)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.app.get_payment(&second.id).await.status(), PaymentStatus::Cancelled);

    // An intent nobody created, without our metadata: 404, audited, not marked seen.
    let mut stranger = payment.clone();
    stranger.provider_checkout_id = "xpay_pi_nobody".into();
    let body = webhook(&stranger, "succeeded", "12.5", false);
    assert_eq!(h.post_webhook(&body, &signed(&body)).await.status(), 404);
}

#[tokio::test]
async fn a_configured_signature_header_is_used() {
    let h = Harness::start_with(|a| a.webhook_signature_header = "X-XPay-Signature".into()).await;
    h.mount_create().await;
    let payment = h.create("xs-header").await;
    let body = webhook(&payment, "succeeded", "12.5", false);
    assert_eq!(h.post_webhook(&body, &signed(&body)).await.status(), 401, "x-signature is not read");
    assert_eq!(h.post_webhook_as("x-xpay-signature", &body, &signed(&body)).await.status(), 200);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
}

#[tokio::test]
async fn forged_webhooks_change_nothing_and_trigger_one_rate_limited_lookup() {
    let h = Harness::start(true).await;
    h.mount_create().await;
    let payment = h.create("xs-forged").await;
    h.mount_lookup(&payment, "requires_payment_method", "12.5").await;
    let body = webhook(&payment, "succeeded", "12.5", false);
    let forged = hmac_sha256_hex(b"attacker", body.as_bytes());

    let r = h.post_webhook(&body, &forged).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "SIGNATURE_INVALID");
    h.wait_for_lookups(&payment, 1).await;

    // Within the rate limit: refused again (HTTP, gRPC, no header, request key), no further lookup.
    assert_eq!(h.post_webhook(&body, &forged).await.status(), 401);
    let status = h.verify(&body, &forged).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(error_info(&status).0, "SIGNATURE_INVALID");
    let no_header =
        h.app.client.post(format!("{}/callbacks/xstak/default", h.app.http)).body(body.clone()).send().await.unwrap();
    assert_eq!(no_header.status(), 401);
    let with_request_key = hmac_sha256_hex(HMAC_SECRET.as_bytes(), body.as_bytes());
    assert_eq!(h.post_webhook(&body, &with_request_key).await.status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.lookups(&payment).await, 1);

    let unchanged = h.app.get_payment(&payment.id).await;
    assert_eq!((unchanged.status(), unchanged.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(h.app.count("SELECT COUNT(*) FROM callback_receipts").await, 0);

    // The genuine webhook still goes through: nothing was marked seen.
    assert_eq!(h.post_webhook(&body, &signed(&body)).await.status(), 200);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
}

#[tokio::test]
async fn forged_webhook_with_lookups_off_makes_no_call() {
    let h = Harness::start(false).await;
    h.mount_create().await;
    let payment = h.create("xs-forged-off").await;
    let body = webhook(&payment, "succeeded", "12.5", true);
    assert_eq!(h.post_webhook(&body, &hmac_sha256_hex(b"attacker", body.as_bytes())).await.status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Only the create: no lookup is attempted when `status_lookup = false`.
    assert_eq!(h.mock.received_requests().await.unwrap().len(), 1);
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
}

#[tokio::test]
async fn amount_tampering_is_recorded_but_never_pays() {
    let h = Harness::start(false).await;
    h.mount_create().await;
    let payment = h.create("xs-amount").await;

    // Correctly signed, but 1.25 PKR instead of 12.5.
    let body = webhook(&payment, "succeeded", "1.25", false);
    let r = h.post_webhook(&body, &signed(&body)).await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(false)));
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, "AMOUNT_MISMATCH"));

    // A second signed webhook for the same intent and status with another amount is another
    // event (the dedupe key is the body's digest): FAILED_PRECONDITION over VerifyCallback.
    let again = webhook(&payment, "succeeded", "2.5", false);
    let status = h.verify(&again, &signed(&again)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(error_info(&status).0, "AMOUNT_MISMATCH");
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
    // The very same body again is a duplicate: OK, `duplicate`.
    let duplicate = h.verify(&again, &signed(&again)).await.unwrap();
    assert!(duplicate.duplicate && !duplicate.status_changed);
    // And the genuine success for the right amount is not swallowed as a duplicate: it pays.
    let genuine = webhook(&payment, "succeeded", "12.5", false);
    let json: Value = h.post_webhook(&genuine, &signed(&genuine)).await.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(true)));
    let paid = h.app.get_payment(&payment.id).await;
    assert_eq!((paid.status(), paid.failure_code.as_str()), (PaymentStatus::Succeeded, ""));

    // Another currency, over gRPC: FAILED_PRECONDITION after commit.
    let second = h.create("xs-currency").await;
    let body = webhook(&second, "succeeded", "12.5", true).replace(r#""currency":"PKR""#, r#""currency":"USD""#);
    let status = h.verify(&body, &signed(&body)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let (reason, metadata) = error_info(&status);
    assert_eq!((reason.as_str(), metadata["payment_id"].as_str()), ("AMOUNT_MISMATCH", second.id.as_str()));
    assert_eq!(h.app.get_payment(&second.id).await.status(), PaymentStatus::Pending);

    // A tampered body under the original signature is forged, not a mismatch.
    let genuine = webhook(&payment, "succeeded", "12.5", false);
    let tampered = genuine.replace(r#""amount":12.5"#, r#""amount":1.25"#);
    assert_eq!(h.post_webhook(&tampered, &signed(&genuine)).await.status(), 401);
}

#[tokio::test]
async fn malformed_webhooks_are_refused() {
    let h = Harness::start(false).await;
    h.mount_create().await;
    let payment = h.create("xs-malformed").await;
    for (body, _why) in [
        ("not json".to_owned(), "body"),
        (
            r#"{"type":"PAYMENT_INTENT_NOTIFICATION","status":"succeeded","amount":12.5,"currency":"PKR"}"#.to_owned(),
            "no intent id",
        ),
        (webhook(&payment, "succeeded", "12.505", false), "more precision than PKR"),
        (webhook(&payment, "succeeded", "1.25e1", false), "an exponent"),
        (webhook(&payment, "succeeded", "12.5", false).replace(r#""amount":12.5,"#, ""), "no amount on success"),
    ] {
        let r = h.post_webhook(&body, &signed(&body)).await;
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "INVALID_FIELD");
        let status = h.verify(&body, &signed(&body)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
}

#[tokio::test]
async fn unknown_statuses_refunds_and_other_types_change_nothing() {
    let h = Harness::start(true).await;
    h.mount_create().await;
    let payment = h.create("xs-unknown").await;
    h.mount_lookup(&payment, "requires_payment_method", "12.5").await;

    // An unknown status value: unchanged, counted.
    let body = webhook(&payment, "on_hold", "12.5", false);
    let r = h.post_webhook(&body, &signed(&body)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.app.gateway.metrics().unknown_statuses("xstak"), 1);
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));

    // A refund notification, though "succeeded", reports nothing: one lookup instead.
    let refund = webhook(&payment, "succeeded", "12.5", false).replace(r#""refund_id":null"#, r#""refund_id":"rf_1""#);
    let response = h.verify(&refund, &signed(&refund)).await.unwrap();
    assert!(!response.status_changed && !response.duplicate);
    assert_eq!(response.event_id, format!("{}:succeeded:rf_1", payment.provider_checkout_id));
    h.wait_for_lookups(&payment, 1).await;
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM payment_events WHERE payment_id = $1 AND source = 'callback' ORDER BY sequence",
    )
    .bind(&payment.id)
    .fetch_all(&h.app.db)
    .await
    .unwrap();
    assert_eq!(kinds, ["unknown_status", "look_up"]);
    assert_eq!(h.app.gateway.metrics().unknown_statuses("xstak"), 1);
}

// ---------------------------------------------------------------------------------------------
// Status lookups and returns
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_maps_the_intent_status_when_lookups_are_enabled() {
    let h = Harness::start(true).await;
    h.mount_create().await;
    let payment = h.create("xs-refresh").await;

    h.mount_lookup(&payment, "requires_payment_method", "12.5").await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));

    h.mock.reset().await;
    h.mount_lookup(&payment, "processing", "12.5").await;
    assert_eq!(h.refresh(&payment.id).await.unwrap().status(), PaymentStatus::Processing);

    // Unknown: unchanged and counted.
    h.mock.reset().await;
    h.mount_lookup(&payment, "requires_review", "12.5").await;
    assert_eq!(h.refresh(&payment.id).await.unwrap().status(), PaymentStatus::Processing);
    assert_eq!(h.app.gateway.metrics().unknown_statuses("xstak"), 1);

    // An amount that differs never pays, even from the lookup.
    h.mock.reset().await;
    h.mount_lookup(&payment, "succeeded", "12.51").await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Processing, "AMOUNT_MISMATCH"));

    h.mock.reset().await;
    h.mount_lookup(&payment, "succeeded", "12.50").await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Succeeded, ""));
    assert_eq!(p.provider_payment_id, payment.provider_checkout_id);
    assert_eq!(h.lookups(&payment).await, 1);

    // Provider trouble during a refresh is returned, not hidden.
    h.mount_create().await;
    let other = h.create("xs-refresh-2").await;
    Mock::given(method("GET"))
        .and(path(format!("/public/v1/payment/intent/{}", other.provider_checkout_id)))
        .respond_with(ResponseTemplate::new(502))
        .mount(&h.mock)
        .await;
    assert_eq!(error_info(&h.refresh(&other.id).await.unwrap_err()).0, "PROVIDER_UNAVAILABLE");
}

#[tokio::test]
async fn refresh_without_lookups_makes_no_call() {
    let h = Harness::start(false).await;
    h.mount_create().await;
    let payment = h.create("xs-no-lookup").await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(h.mock.received_requests().await.unwrap().len(), 1, "only the create");
}

#[tokio::test]
async fn shopper_returns_never_finalize_a_payment() {
    let h = Harness::start(true).await;
    h.mount_create().await;
    let payment = h.create("xs-return").await;
    // XStak says it is still open: the `outcome=success` in the URL is only a hint.
    h.mount_lookup(&payment, "requires_payment_method", "12.5").await;
    let url = format!("{}/return/xstak/{}?outcome=success", h.app.http, payment.id);
    let r = h.app.client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://shop.example/return?order=1");
    h.wait_for_lookups(&payment, 1).await;
    let p = h.wait_for_status(&payment, PaymentStatus::Succeeded).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
    let url = format!("{}/return/xstak/{}?outcome=failure", h.app.http, payment.id);
    let r = h.app.client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn config_checks_xstak_accounts_without_leaking_secrets() {
    let mut config = paygate::config::Config::default();
    config.providers.xstak.accounts.insert(
        "pk-shop".into(),
        XstakAccount {
            base_url: "ftp://xstak-pay.xstak.com".into(),
            api_key: API_KEY.into(),
            hmac_secret: HMAC_SECRET.into(),
            webhook_signature_header: "bad header".into(),
            amount_unit: "paisa".into(),
            ..Default::default()
        },
    );
    let errors = config.validate().unwrap_err().join("\n");
    for key in ["base_url", "account_id", "webhook_secret", "webhook_signature_header", "amount_unit"] {
        assert!(errors.contains(&format!("providers.xstak.accounts.pk-shop.{key}")), "{key}: {errors}");
    }
    assert!(!errors.contains(API_KEY) && !errors.contains(HMAC_SECRET), "{errors}");
    let out = config.to_redacted_toml();
    assert!(!out.contains(API_KEY) && !out.contains(HMAC_SECRET), "{out}");

    let defaults = XstakAccount::default();
    assert_eq!((defaults.webhook_signature_header.as_str(), defaults.amount_unit.as_str()), ("x-signature", "major"));
    assert!(!defaults.status_lookup);
    // The serde defaults are the same when keys are left out of a file.
    let parsed: XstakAccount = toml::from_str("api_key = \"k\"").unwrap();
    assert_eq!((parsed.webhook_signature_header.as_str(), parsed.status_lookup), ("x-signature", false));
}
