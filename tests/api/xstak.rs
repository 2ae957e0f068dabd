//! The XStak XPay (Pakistan) adapter end to end: gRPC and the HTTP ingress against a `wiremock`
//! XStak on 127.0.0.1 that enforces the documented API (method, path, auth headers, the request
//! signature over the exact received bytes, body shape and the raw number format of `amount`).
//! What every provider does is in [`crate::conformance`]; this module is the XStak double and what
//! is XStak's own.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{self, TestApp, spawn_app_with};
use crate::conformance::{
    self, Checked, CreateError, Delivery, Lifetime, Outcome, ProviderDouble, RETURN_URL, Refused, RequestCheck,
    Shopper, Statuses, Via, answer,
};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::signature::hmac_sha256_hex;
use paygate::providers::xstak::Xstak;
use paygate::providers::xstak::XstakAccount;
use paygate::providers::{Provider, ProviderContext};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, Request, ResponseTemplate};

const API_KEY: &str = "sk_test_xstak_api_key";
const ACCOUNT_ID: &str = "acc_6512";
const HMAC_SECRET: &str = "hmac_test";
const WEBHOOK_SECRET: &str = "whk_test_secret";
/// 12.50 PKR: on the wire `12.5`.
const AMOUNT: i64 = 1250;
/// The shopper of every request: their e-mail and phone never appear in an answer or an error.
const SHOPPER: Shopper = Shopper { name: "Ali", email: "ali@example.pk", phone: "03415682456" };
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

impl RequestCheck for CreateBody {
    const DOUBLE: &'static str = "XStak";

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
        let body = conformance::json_body(request)?;
        let keys = conformance::field_names(&body)?;
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

fn intent_id_for(payment_id: &str) -> String {
    format!("xpay_pi_{}", payment_id[4..].to_lowercase())
}

/// The documented create response, echoing the amount's raw text.
fn intent_created(request: &Request) -> ResponseTemplate {
    let body = conformance::json_body(request).unwrap_or_default();
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

/// A payment intent in its envelope, as the (undocumented) status lookup is assumed to return it.
fn intent_envelope(id: &str, status: &str, amount_text: &str) -> String {
    json!({ "success": true, "responseStatus": "OK",
        "data": { "_id": id, "amount": "__AMOUNT__", "currency": "PKR", "pi_status": status, "object_name": "payment_intent" } })
    .to_string()
    .replace(r#""__AMOUNT__""#, amount_text)
}

fn account(base_url: String) -> XstakAccount {
    XstakAccount {
        base_url,
        api_key: API_KEY.into(),
        account_id: ACCOUNT_ID.into(),
        hmac_secret: HMAC_SECRET.into(),
        webhook_secret: WEBHOOK_SECRET.into(),
        ..Default::default()
    }
}

pub(crate) struct Harness {
    app: TestApp,
    mock: MockServer,
}

impl Harness {
    /// With `status_lookup = false` (the default): XStak documents no lookup.
    async fn start_without_lookups() -> Self {
        Self::start_with(|a| a.status_lookup = false).await
    }

    async fn start_with(adjust: impl FnOnce(&mut XstakAccount)) -> Self {
        let mock = MockServer::start().await;
        assert!(mock.uri().starts_with("http://127.0.0.1:"), "{}", mock.uri());
        let mut account = account(mock.uri());
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
            customer: json!({ "email": SHOPPER.email, "name": SHOPPER.name, "phone": SHOPPER.phone }),
        }
    }

    /// The create endpoint, enforcing the documented request with `body`.
    fn create_mock_with(&self, body: CreateBody) -> Mock {
        self.create_endpoint()
            .and(header("content-type", "application/json"))
            .and(Checked(body))
            .respond_with(intent_created)
    }

    /// The lookup of `payment` answering XStak's `status` and raw `amount_text`.
    async fn mount_intent(&self, payment: &pb::Payment, status: &str, amount_text: &str) {
        let envelope = intent_envelope(&payment.provider_checkout_id, status, amount_text);
        let answer = ResponseTemplate::new(200).set_body_raw(envelope, "application/json");
        self.lookup_endpoint(payment).respond_with(answer).mount(&self.mock).await;
    }

    async fn post_webhook(&self, body: &str, signature: &str) -> reqwest::Response {
        self.deliver(&webhook_as("x-signature", body, signature)).await
    }

    async fn verify_webhook(&self, body: &str, signature: &str) -> Result<pb::VerifyCallbackResponse, tonic::Status> {
        self.verify(&webhook_as("x-signature", body, signature)).await
    }
}

/// A webhook about `payment`'s intent, shaped like the public sample; `amount_text` is the raw
/// JSON number; `with_metadata` adds `metadata.order_reference` = our payment id.
pub(crate) fn webhook(payment: &pb::Payment, status: &str, amount_text: &str, with_metadata: bool) -> String {
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

/// A webhook delivery of `body` with `signature` in `header_name`.
fn webhook_as(header_name: &'static str, body: &str, signature: &str) -> Delivery {
    Delivery::new(body, &[("content-type", "application/json"), (header_name, signature)])
}

/// Minor units as XStak writes PKR: a JSON number in rupees (`12.5`).
fn pkr(minor: i64) -> String {
    let text = format!("{}.{:02}", minor / 100, minor % 100);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[async_trait::async_trait]
impl ProviderDouble for Harness {
    const SECRETS: &'static [&'static str] =
        &[API_KEY, HMAC_SECRET, WEBHOOK_SECRET, SHOPPER.email, SHOPPER.phone, "_cs_9e04"];

    /// With `status_lookup = true`, so that refused webhooks and returns can be looked up.
    async fn start() -> Self {
        Self::start_with(|a| a.status_lookup = true).await
    }

    fn parts(&self) -> (&TestApp, &MockServer) {
        (&self.app, &self.mock)
    }

    fn adapter(mock: &MockServer, ctx: &ProviderContext) -> Arc<dyn Provider> {
        Arc::new(Xstak::new("default", &account(mock.uri()), ctx).unwrap())
    }

    const UNSUPPORTED_CURRENCIES: &'static [&'static str] = &["USD", "JPY", "KWD"];
    const CREATE_PATH: &'static str = CHECKOUT_PATH;
    /// No expiry at XStak: local, created + `checkout_ttl_secs` (3600 by default).
    const LIFETIME: Lifetime = Lifetime::Provider(3600);

    fn request(reference: &str) -> pb::CreateCheckoutRequest {
        conformance::checkout_request("xstak", reference, AMOUNT, "PKR", &SHOPPER)
    }

    fn authorized(&self, endpoint: MockBuilder) -> MockBuilder {
        endpoint.and(header("x-api-key", API_KEY)).and(header("x-account-id", ACCOUNT_ID))
    }

    fn create_mock(&self) -> Mock {
        self.create_mock_with(self.create_body("12.5"))
    }

    fn checkout(&self, payment: &pb::Payment) -> (String, String) {
        let id = intent_id_for(&payment.id);
        let url = format!("https://xpay-checkout-stage.xstak.com/?source=headless&order_id={}&id={id}", payment.id);
        (id, url)
    }

    fn create_errors() -> Vec<CreateError> {
        let refused = json!({ "success": false, "responseStatus": "BAD_REQUEST", "message": format!("{} invalid", SHOPPER.email) });
        vec![
            CreateError::rejected(answer(400, refused.clone()), "BAD_REQUEST"),
            CreateError::rejected(answer(422, json!({ "oops": true })), "http_422"),
            CreateError::rejected(answer(200, refused), "BAD_REQUEST"),
            CreateError::unavailable(answer(401, json!({ "success": false }))),
            CreateError::unavailable(answer(403, json!({}))),
            CreateError::unavailable(answer(503, json!({ "success": false }))),
        ]
    }

    const STATUSES: Statuses =
        Statuses { pending: "requires_payment_method", paid: "succeeded", unknown: "requires_review" };

    fn lookup_path(payment: &pb::Payment) -> String {
        format!("/public/v1/payment/intent/{}", payment.provider_checkout_id)
    }

    /// `GET /public/v1/payment/intent/{id}`, signed over the empty body.
    fn lookup_endpoint(&self, payment: &pb::Payment) -> MockBuilder {
        let signature = hmac_sha256_hex(HMAC_SECRET.as_bytes(), b"");
        let endpoint = Mock::given(method("GET")).and(path(Self::lookup_path(payment)));
        self.authorized(endpoint).and(header("x-signature", signature.as_str()))
    }

    fn lookup_answer(&self, payment: &pb::Payment, status: &str, amount_minor: i64) -> ResponseTemplate {
        let envelope = intent_envelope(&payment.provider_checkout_id, status, &pkr(amount_minor));
        ResponseTemplate::new(200).set_body_raw(envelope, "application/json")
    }

    fn paid_as(payment: &pb::Payment, via: Via) -> (String, &'static str) {
        (payment.provider_checkout_id.clone(), if via == Via::Callback { "card" } else { "" })
    }

    fn paid_callback(&self, payment: &pb::Payment) -> Delivery {
        let body = webhook(payment, "succeeded", "12.5", false);
        webhook_as("x-signature", &body, &signed(&body))
    }

    fn event_id(&self, payment: &pb::Payment, _delivery: &Delivery) -> String {
        format!("{}:succeeded:", payment.provider_checkout_id)
    }

    /// Signed with another key, unsigned, and signed with the request key instead of the webhook's.
    fn refused_callbacks(&self, payment: &pb::Payment) -> Vec<Refused> {
        let body = webhook(payment, "succeeded", "12.5", false);
        let forged = hmac_sha256_hex(b"attacker", body.as_bytes());
        let request_key = hmac_sha256_hex(HMAC_SECRET.as_bytes(), body.as_bytes());
        vec![
            Refused::invalid(webhook_as("x-signature", &body, &forged)),
            Refused::invalid(Delivery::new(body.clone(), &[])),
            Refused::invalid(webhook_as("x-signature", &body, &request_key)),
        ]
    }

    fn callback_with_amount(&self, payment: &pb::Payment, amount_minor: i64, currency: &str) -> Option<Delivery> {
        let body = webhook(payment, "succeeded", &pkr(amount_minor), false)
            .replace(r#""currency":"PKR""#, &format!(r#""currency":"{currency}""#));
        Some(webhook_as("x-signature", &body, &signed(&body)))
    }

    fn lookup_trigger(&self, _payment: &pb::Payment) -> Option<Delivery> {
        None
    }

    fn returns(&self, _payment: &pb::Payment) -> Vec<(String, &'static str)> {
        vec![("outcome=success".into(), RETURN_URL), ("outcome=failure".into(), RETURN_URL)]
    }

    fn misconfigure(config: &mut paygate::config::Config) -> (&'static str, Vec<&'static str>) {
        let account = XstakAccount {
            account_id: String::new(),
            webhook_secret: Default::default(),
            webhook_signature_header: "bad header".into(),
            amount_unit: "paisa".into(),
            ..account("ftp://xstak-pay.xstak.com".into())
        };
        config.providers.xstak.accounts.insert("pk-shop".into(), account);
        ("pk-shop", vec!["base_url", "account_id", "webhook_secret", "webhook_signature_header", "amount_unit"])
    }
}

// ---------------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_sends_the_shipping_address_and_payment_methods() {
    let h = Harness::start_without_lookups().await;
    let mut body = h.create_body("12.5");
    body.shipping = json!({ "address1": "Gulberg", "address2": "Block B", "city": "Lahore",
        "country": "Pakistan", "zip": "65191", "shipping_method": "Standard", "province": "Punjab" });
    body.payment_methods = Some(json!(["card", "jazzcash"]));
    h.create_mock_with(body).expect(1).named("create with shipping").mount(&h.mock).await;

    let mut request = Harness::request("xs-create");
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
    assert_eq!(payment.provider_checkout_id, intent_id_for(&payment.id));
    h.mock.verify().await;
}

#[tokio::test]
async fn amounts_are_exact_json_numbers_and_a_caller_ttl_sets_the_local_expiry() {
    let h = Harness::start_without_lookups().await;
    for (minor, text) in [(500_i64, "5"), (1234, "12.34"), (5, "0.05"), (12_345_678_901, "123456789.01")] {
        h.mock.reset().await;
        h.create_mock_with(h.create_body(text)).expect(1).mount(&h.mock).await;
        let mut request = Harness::request(&format!("xs-amount-{minor}"));
        request.amount = Some(pb::Money { amount_minor: minor, currency: "PKR".into() });
        request.ttl = Some(prost_types::Duration { seconds: 600, nanos: 0 });
        let p = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
        let (created, nanos) = common::seconds(&p.created_at);
        assert_eq!(common::seconds(&p.expires_at), (created + 600, nanos));
        h.mock.verify().await;
    }
}

#[tokio::test]
async fn minor_amount_unit_sends_paisa() {
    let h = Harness::start_with(|a| a.amount_unit = "minor".into()).await;
    h.create_mock_with(h.create_body("1250")).expect(1).mount(&h.mock).await;
    let payment = h.create("xs-minor").await;
    // Webhook amounts are read in the same unit.
    let body = webhook(&payment, "succeeded", "1250", false);
    assert_eq!(h.post_webhook(&body, &signed(&body)).await.status(), 200);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
    h.mock.verify().await;
}

/// XStak had in fact created the intent of a create that timed out, and the shopper paid: the
/// signed webhook names our payment (`metadata.order_reference`) and the intent we never stored.
/// The payment adopts it.
#[tokio::test]
async fn a_timed_out_create_adopts_the_intent_its_signed_webhook_names() {
    let (app, payment_id) = conformance::create_outcome_unknown::<Harness>().await;
    let payment =
        pb::Payment { id: payment_id.clone(), provider_checkout_id: "xpay_pi_adopted".into(), ..Default::default() };
    let body = webhook(&payment, "succeeded", "12.5", true);
    let response = conformance::verify(&app, "xstak", &webhook_as("x-signature", &body, &signed(&body))).await.unwrap();
    assert!(response.status_changed);
    let paid = app.get_payment(&payment_id).await;
    assert_eq!((paid.status(), paid.provider_checkout_id.as_str()), (PaymentStatus::Succeeded, "xpay_pi_adopted"));
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn signatures_are_read_in_either_case() {
    let (h, payment) = Harness::start_without_lookups().await.and_payment("xs-upper").await;
    let body = webhook(&payment, "succeeded", "12.5", false);
    let response = h.verify_webhook(&body, &signed(&body).to_uppercase()).await.unwrap();
    assert!(response.status_changed && !response.duplicate);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
}

#[tokio::test]
async fn failed_and_cancelled_webhooks_over_verify_callback_match_by_intent_id() {
    let (h, payment) = Harness::start_without_lookups().await.and_payment("xs-failed").await;
    // The intent id in the body is one we never stored, with our id in metadata.order_reference:
    // matched by the intent id, so it cannot apply to our payment.
    let mut other = payment.clone();
    other.provider_checkout_id = "xpay_pi_not_ours".into();
    let body = webhook(&other, "failed", "12.5", true);
    let status = h.verify_webhook(&body, &signed(&body)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
    // Its own intent id (metadata too): applied.
    let body = webhook(&payment, "failed", "12.5", true);
    let response = h.verify_webhook(&body, &signed(&body)).await.unwrap();
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
    assert_eq!(h.deliver(&webhook_as("x-xpay-signature", &body, &signed(&body))).await.status(), 200);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
}

#[tokio::test]
async fn forged_webhook_with_lookups_off_makes_no_call() {
    let (h, payment) = Harness::start_without_lookups().await.and_payment("xs-forged-off").await;
    let body = webhook(&payment, "succeeded", "12.5", true);
    assert_eq!(h.post_webhook(&body, &hmac_sha256_hex(b"attacker", body.as_bytes())).await.status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Only the create: no lookup is attempted when `status_lookup = false`.
    assert_eq!(h.mock.received_requests().await.unwrap().len(), 1);
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
}

#[tokio::test]
async fn a_tampered_body_under_its_original_signature_is_forged_not_a_mismatch() {
    let (h, payment) = Harness::start_without_lookups().await.and_payment("xs-tampered").await;
    let genuine = webhook(&payment, "succeeded", "12.5", false);
    let tampered = genuine.replace(r#""amount":12.5"#, r#""amount":1.25"#);
    assert_eq!(h.post_webhook(&tampered, &signed(&genuine)).await.status(), 401);
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version, p.failure_code.as_str()), (PaymentStatus::Pending, payment.version, ""));
}

#[tokio::test]
async fn malformed_webhooks_are_refused() {
    let (h, payment) = Harness::start_without_lookups().await.and_payment("xs-malformed").await;
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
        let status = h.verify_webhook(&body, &signed(&body)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
}

#[tokio::test]
async fn unknown_statuses_refunds_and_other_types_change_nothing() {
    let (h, payment) = Harness::with_payment("xs-unknown").await;
    h.mount_lookup(&payment, Outcome::Pending).await;

    // An unknown status value: unchanged, counted.
    let body = webhook(&payment, "on_hold", "12.5", false);
    let r = h.post_webhook(&body, &signed(&body)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.app.gateway.metrics().unknown_statuses("xstak"), 1);
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));

    // A refund notification, though "succeeded", reports nothing: one lookup instead.
    let refund = webhook(&payment, "succeeded", "12.5", false).replace(r#""refund_id":null"#, r#""refund_id":"rf_1""#);
    let response = h.verify_webhook(&refund, &signed(&refund)).await.unwrap();
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
// Status lookups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_maps_processing_and_reads_trailing_zeros() {
    let (h, payment) = Harness::with_payment("xs-refresh").await;
    h.mount_status(&payment, "processing").await;
    assert_eq!(h.refresh(&payment.id).await.unwrap().status(), PaymentStatus::Processing);

    // Unknown: unchanged (still PROCESSING) and counted.
    h.mock.reset().await;
    h.mount_status(&payment, "requires_review").await;
    assert_eq!(h.refresh(&payment.id).await.unwrap().status(), PaymentStatus::Processing);
    assert_eq!(h.app.gateway.metrics().unknown_statuses("xstak"), 1);

    h.mock.reset().await;
    h.mount_intent(&payment, "succeeded", "12.50").await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Succeeded, ""));
}

#[tokio::test]
async fn refresh_without_lookups_makes_no_call() {
    let (h, payment) = Harness::start_without_lookups().await.and_payment("xs-no-lookup").await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(h.mock.received_requests().await.unwrap().len(), 1, "only the create");
}

#[test]
fn account_defaults_sign_in_x_signature_in_rupees_without_lookups() {
    let defaults = XstakAccount::default();
    assert_eq!((defaults.webhook_signature_header.as_str(), defaults.amount_unit.as_str()), ("x-signature", "major"));
    assert!(!defaults.status_lookup);
    // The serde defaults are the same when keys are left out of a file.
    let parsed: XstakAccount = toml::from_str("api_key = \"k\"").unwrap();
    assert_eq!((parsed.webhook_signature_header.as_str(), parsed.status_lookup), ("x-signature", false));
}
