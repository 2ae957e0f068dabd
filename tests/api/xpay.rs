//! The XPay adapter end to end: gRPC and the HTTP ingress against a `wiremock` XPay on 127.0.0.1
//! that enforces the documented API (method, path, headers, body shape and value formats). What
//! every provider does is in [`crate::conformance`]; this module is the XPay double and what is
//! XPay's own.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{self, TestApp, spawn_app_with};
use crate::conformance::{
    self, CANCEL_URL, Checked, CreateError, Delivery, Lifetime, Outcome, ProviderDouble, RETURN_URL, Refused,
    RequestCheck, Shopper, Statuses, Via, answer,
};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::signature::sign_timestamped;
use paygate::providers::xpay::XPay;
use paygate::providers::xpay::XpayAccount;
use paygate::providers::{Provider, ProviderContext};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, Request, ResponseTemplate};

const SECRET_KEY: &str = "sk_test_51PaygateXpayKey";
/// Listed first in `webhook_secrets`: the secret being rotated out.
const OLD_SECRET: &str = "whsec_old_rotated";
const SECRET: &str = "whsec_test";
const AMOUNT: i64 = 149_900;
/// The shopper of every request: their e-mail and phone never appear in an answer or an error.
const SHOPPER: Shopper = Shopper { name: "Mona", email: "mona@example.com", phone: "" };

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

impl RequestCheck for CreateBody {
    const DOUBLE: &'static str = "XPay";

    fn check(&self, request: &Request) -> Result<(), String> {
        let body = &conformance::json_body(request)?;
        let keys = conformance::field_names(body)?;
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

pub(crate) fn session_id_for(payment_id: &str) -> String {
    format!("cs_test_{}", &payment_id[4..])
}

/// The documented create response; the session id is derived from our payment id so every
/// payment gets its own session.
pub(crate) fn session_created(request: &Request) -> ResponseTemplate {
    let body = conformance::json_body(request).unwrap_or_default();
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

/// A Checkout Session object as `GET /checkout/sessions/{id}` returns it.
pub(crate) fn session(id: &str, payment_id: &str, status: &str, amount: i64, currency: &str) -> Value {
    json!({
        "id": id, "object": "checkout.session", "status": status,
        "url": format!("https://checkout.xpay.app/c/{id}"),
        "amountTotal": amount, "currency": currency,
        "paymentIntent": { "id": format!("pi_{}", &payment_id[4..]) },
        "metadata": { "paygate_payment_id": payment_id },
    })
}

fn account(base_url: String) -> XpayAccount {
    XpayAccount {
        base_url,
        secret_key: SECRET_KEY.into(),
        webhook_secrets: vec![OLD_SECRET.into(), SECRET.into()],
        ..Default::default()
    }
}

pub(crate) struct Harness {
    app: TestApp,
    mock: MockServer,
}

impl Harness {
    async fn start_with(adjust: impl FnOnce(&mut paygate::config::Config)) -> Self {
        let mock = MockServer::start().await;
        assert!(mock.uri().starts_with("http://127.0.0.1:"), "{}", mock.uri());
        let account = account(mock.uri());
        let app = spawn_app_with(
            |config| {
                adjust(config);
                config.providers.xpay.accounts.insert("default".into(), account);
            },
            Vec::new(),
        )
        .await;
        Self { app, mock }
    }

    /// The create endpoint, enforcing the documented request for `total` (and `line_items`).
    fn create_mock_for(&self, total: i64, line_items: Option<Value>) -> Mock {
        let body = CreateBody { public_base_url: self.app.http.clone(), currency: "EGP", total, line_items };
        self.create_endpoint()
            .and(header("content-type", "application/json"))
            .and(Checked(body))
            .respond_with(session_created)
    }

    async fn post_webhook(&self, body: &str, signature: &str) -> reqwest::Response {
        self.deliver(&webhook(body, signature)).await
    }

    async fn verify_webhook(&self, body: &str, signature: &str) -> Result<pb::VerifyCallbackResponse, tonic::Status> {
        self.verify(&webhook(body, signature)).await
    }
}

#[async_trait::async_trait]
impl ProviderDouble for Harness {
    const SECRETS: &'static [&'static str] = &[SECRET_KEY, OLD_SECRET, SECRET, SHOPPER.email];

    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    fn parts(&self) -> (&TestApp, &MockServer) {
        (&self.app, &self.mock)
    }

    fn adapter(mock: &MockServer, ctx: &ProviderContext) -> Arc<dyn Provider> {
        Arc::new(XPay::new("default", &account(mock.uri()), ctx).unwrap())
    }

    const UNSUPPORTED_CURRENCIES: &'static [&'static str] = &["USD"];
    const CREATE_PATH: &'static str = "/checkout/sessions";
    /// No expiry in the response: created + 24 h.
    const LIFETIME: Lifetime = Lifetime::Provider(86_400);

    fn request(reference: &str) -> pb::CreateCheckoutRequest {
        let request = conformance::checkout_request("xpay", reference, AMOUNT, "EGP", &SHOPPER);
        pb::CreateCheckoutRequest { description: "Test product".into(), ..request }
    }

    fn authorized(&self, endpoint: MockBuilder) -> MockBuilder {
        endpoint.and(header("authorization", format!("Bearer {SECRET_KEY}").as_str()))
    }

    fn create_mock(&self) -> Mock {
        self.create_mock_for(AMOUNT, None)
    }

    fn checkout(&self, payment: &pb::Payment) -> (String, String) {
        let id = session_id_for(&payment.id);
        let url = format!("https://checkout.xpay.app/c/{id}");
        (id, url)
    }

    fn create_errors() -> Vec<CreateError> {
        vec![
            CreateError::rejected(
                answer(400, json!({ "error": { "code": "parameter_invalid", "message": "bad" } })),
                "parameter_invalid",
            ),
            CreateError::rejected(answer(422, json!({ "oops": true })), "http_422"),
            CreateError::unavailable(answer(401, json!({ "error": { "code": "invalid_api_key" } }))),
            CreateError::unavailable(answer(403, json!({}))),
            CreateError::unavailable(answer(503, json!({ "error": { "code": "unavailable" } }))),
        ]
    }

    const STATUSES: Statuses = Statuses { pending: "open", paid: "complete", unknown: "requires_review" };

    fn lookup_path(payment: &pb::Payment) -> String {
        format!("/checkout/sessions/{}", payment.provider_checkout_id)
    }

    fn lookup_answer(&self, payment: &pb::Payment, status: &str, amount_minor: i64) -> ResponseTemplate {
        let id = &payment.provider_checkout_id;
        ResponseTemplate::new(200).set_body_json(session(id, &payment.id, status, amount_minor, "EGP"))
    }

    fn paid_as(payment: &pb::Payment, _via: Via) -> (String, &'static str) {
        (format!("pi_{}", &payment.id[4..]), "")
    }

    fn paid_callback(&self, payment: &pb::Payment) -> Delivery {
        let body = completed("evt_paid", payment);
        webhook(&body, &signed(SECRET, &body))
    }

    fn event_id(&self, _payment: &pb::Payment, _delivery: &Delivery) -> String {
        "evt_paid".into()
    }

    fn refused_callbacks(&self, payment: &pb::Payment) -> Vec<Refused> {
        let body = completed("evt_paid", payment);
        let now = chrono::Utc::now().timestamp();
        let stale = sign_timestamped(SECRET.as_bytes(), now - 301, body.as_bytes());
        let future = sign_timestamped(SECRET.as_bytes(), now + 400, body.as_bytes());
        vec![
            Refused::invalid(webhook(&body, &signed("whsec_attacker", &body))),
            Refused::invalid(Delivery::new(body.clone(), &[])),
            Refused::expired(webhook(&body, &stale)),
            Refused::expired(webhook(&body, &future)),
        ]
    }

    fn callback_with_amount(&self, payment: &pb::Payment, amount_minor: i64, currency: &str) -> Option<Delivery> {
        let object = session(&payment.provider_checkout_id, &payment.id, "complete", amount_minor, currency);
        let body = json!({ "id": format!("evt_{amount_minor}_{currency}"), "object": "event",
            "type": "checkout.session.completed", "created": chrono::Utc::now().timestamp(), "data": { "object": object } })
        .to_string();
        Some(webhook(&body, &signed(SECRET, &body)))
    }

    fn lookup_trigger(&self, payment: &pb::Payment) -> Option<Delivery> {
        let body = event("evt_async", "checkout.session.async_payment_succeeded", payment, "complete", AMOUNT, true);
        Some(webhook(&body, &signed(SECRET, &body)))
    }

    /// What XPay's redirects look like once it substituted the placeholder.
    fn returns(&self, payment: &pb::Payment) -> Vec<(String, &'static str)> {
        vec![(format!("session={}", payment.provider_checkout_id), RETURN_URL), ("outcome=cancel".into(), CANCEL_URL)]
    }

    fn misconfigure(config: &mut paygate::config::Config) -> (&'static str, Vec<&'static str>) {
        let account = XpayAccount {
            webhook_secrets: vec![SECRET.into(), Default::default()],
            currencies: vec!["EGP".into(), "egp".into()],
            ..account("ftp://api.xpay.app".into())
        };
        config.providers.xpay.accounts.insert("eg-shop".into(), account);
        ("eg-shop", vec!["base_url", "webhook_secrets", "currencies"])
    }
}

/// A webhook delivery of `body` with `signature`.
fn webhook(body: &str, signature: &str) -> Delivery {
    Delivery::new(body, &[("content-type", "application/json"), ("XPay-Signature", signature)])
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
async fn create_sends_one_line_item_and_no_customer_email() {
    let h = Harness::start().await;
    let one_item = json!([{ "priceData": { "currency": "EGP", "unitAmount": AMOUNT,
        "productData": { "name": "Test product" } }, "quantity": 1 }]);
    h.create_mock_for(AMOUNT, Some(one_item)).expect(1).named("create, one item").mount(&h.mock).await;
    h.create("xp-create").await;
    // No email (no customer_email_field configured).
    let requests = h.mock.received_requests().await.unwrap();
    assert!(!String::from_utf8_lossy(&requests[0].body).contains(SHOPPER.email));
    h.mock.verify().await;
}

#[tokio::test]
async fn create_maps_line_items_and_honours_a_shorter_ttl() {
    let h = Harness::start().await;
    let items = json!([
        { "priceData": { "currency": "EGP", "unitAmount": 100_000, "productData": { "name": "Shirt" } }, "quantity": 1 },
        { "priceData": { "currency": "EGP", "unitAmount": 24_950, "productData": { "name": "Socks" } }, "quantity": 2 },
    ]);
    h.create_mock_for(AMOUNT, Some(items)).expect(2).mount(&h.mock).await;
    let line_items = vec![
        pb::LineItem { name: "Shirt".into(), unit_amount_minor: 100_000, quantity: 1 },
        pb::LineItem { name: "Socks".into(), unit_amount_minor: 24_950, quantity: 2 },
    ];

    // A ttl within XPay's 24 h is kept; one beyond is capped: the session cannot outlive it.
    for (reference, ttl, lifetime) in [("xp-ttl", 600, 600), ("xp-ttl-long", 3 * 86_400, 86_400)] {
        let mut request = Harness::request(reference);
        request.line_items = line_items.clone();
        request.ttl = Some(prost_types::Duration { seconds: ttl, nanos: 0 });
        let payment = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
        let (created, nanos) = common::seconds(&payment.created_at);
        assert_eq!(common::seconds(&payment.expires_at), (created + lifetime, nanos), "{reference}");
    }
    h.mock.verify().await;
}

#[test]
fn only_egp_is_accepted_by_default() {
    assert_eq!(XpayAccount::default().currencies, ["EGP"]);
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn completed_webhook_over_verify_callback_matches_by_session_id() {
    let (h, payment) = Harness::with_payment("xp-verify").await;
    let body = event("evt_by_session", "checkout.session.completed", &payment, "complete", AMOUNT, false);
    let response = h.verify_webhook(&body, &signed(SECRET, &body)).await.unwrap();
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
    h.mount_create().await;

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
    let response = h.verify_webhook(&body, &header).await.unwrap();
    assert!(response.status_changed);
    assert_eq!(h.app.get_payment(&second.id).await.status(), PaymentStatus::Succeeded);
}

/// Signed events that are not a `checkout.session.completed` with status `complete` report
/// nothing: whatever the body says, they change nothing and queue one lookup, whose answer
/// decides. (Over HTTP and over VerifyCallback; an event type is not an unknown status.)
#[tokio::test]
async fn signed_events_that_are_no_completion_only_queue_a_lookup() {
    let h = Harness::start().await;
    h.mount_create().await;
    let cases = [
        ("evt_other", "checkout.session.async_payment_succeeded", "complete", "open", PaymentStatus::Pending),
        ("evt_expired", "checkout.session.expired", "expired", "expired", PaymentStatus::Expired),
        ("evt_completed_open", "checkout.session.completed", "open", "open", PaymentStatus::Pending),
        ("evt_completed_expired", "checkout.session.completed", "expired", "complete", PaymentStatus::Succeeded),
    ];
    for (i, (event_id, kind, body_status, lookup, want)) in cases.into_iter().enumerate() {
        let payment = h.create(&format!("xp-event-{i}")).await;
        h.mount_status(&payment, lookup).await;
        let body = event(event_id, kind, &payment, body_status, AMOUNT, true);
        if i.is_multiple_of(2) {
            let r = h.post_webhook(&body, &signed(SECRET, &body)).await;
            assert_eq!(r.status(), 200, "{event_id}");
            let json: Value = r.json().await.unwrap();
            let want =
                json!({ "payment_id": payment.id, "event_id": event_id, "duplicate": false, "status_changed": false });
            assert_eq!(json, want);
        } else {
            let response = h.verify_webhook(&body, &signed(SECRET, &body)).await.unwrap();
            assert!(!response.status_changed && !response.duplicate, "{event_id}");
            assert_eq!(response.payment.unwrap().status(), PaymentStatus::Pending, "{event_id}");
        }
        assert_eq!(h.app.event_kinds(&payment.id, "callback").await, ["look_up"], "{event_id}");
        h.wait_for_lookups(&payment, 1).await;
        let p = h.wait_for_status(&payment.id, want).await;
        assert_eq!(p.status(), want, "{event_id}: the lookup, not the body, decided");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let p = h.app.get_payment(&payment.id).await;
        assert_eq!(p.status(), want, "{event_id}");
        if want == PaymentStatus::Pending {
            assert_eq!(p.version, payment.version, "{event_id}");
        }
        assert_eq!(h.lookups(&payment).await, 1, "{event_id}");
    }
    assert_eq!(h.app.gateway.metrics().unknown_statuses("xpay"), 0, "an event type is not an unknown status");
}

// ---------------------------------------------------------------------------------------------
// Payment truth: durable checks, expiry at XPay, late success
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn lookups_that_fail_back_off_and_resolve_after_recovery() {
    let h = Harness::start_with(|c| {
        c.reconciler.backoff_initial_ms = 300;
        c.reconciler.backoff_max_secs = 1;
    })
    .await;
    h.mount_create().await;
    let payment = h.create("xp-flaky").await;
    let session_path = Harness::lookup_path(&payment);
    // XPay's lookup fails three times, then answers.
    h.lookup_endpoint(&payment).respond_with(ResponseTemplate::new(500)).up_to_n_times(3).mount(&h.mock).await;
    h.mount_lookup(&payment, Outcome::Paid).await;
    let trigger = h.lookup_trigger(&payment).unwrap();
    assert_eq!(h.deliver(&trigger).await.status(), 200);

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
    assert_eq!(common::requests_to(&h.mock, "GET", &session_path).await, 4);
    assert_eq!(h.app.count("SELECT COUNT(*) FROM provider_checks").await, 0);
}

/// `POST /checkout/sessions/{id}/expire` of `payment`, answering `response`, expected once.
async fn mount_expire(h: &Harness, payment: &pb::Payment, response: ResponseTemplate) -> String {
    let expire_path = format!("/checkout/sessions/{}/expire", payment.provider_checkout_id);
    h.authorized(Mock::given(method("POST")).and(path(expire_path.as_str())))
        .respond_with(response)
        .expect(1)
        .mount(&h.mock)
        .await;
    expire_path
}

#[tokio::test]
async fn a_short_ttl_is_enforced_at_xpay_when_the_payment_expires() {
    let h = Harness::start().await;
    h.mount_create().await;
    let mut request = Harness::request("xp-ttl");
    request.ttl = Some(prost_types::Duration { seconds: 600, nanos: 0 });
    let payment = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    let expired = session(&payment.provider_checkout_id, &payment.id, "expired", AMOUNT, "EGP");
    let expire_path = mount_expire(&h, &payment, ResponseTemplate::new(200).set_body_json(expired)).await;
    h.mount_status(&payment, "expired").await;

    h.app.expire_now(&payment.id, 1.0).await;
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
    assert_eq!(h.app.applied(&payment.id).await.last().unwrap(), &("expired".to_owned(), "expiry".to_owned()));
}

#[tokio::test]
async fn an_expiry_xpay_refuses_because_the_session_completed_ends_succeeded() {
    let (h, payment) = Harness::with_payment("xp-refused").await;
    let refusal = answer(400, json!({ "error": { "type": "invalid_request_error", "code": "session_not_open" } }));
    mount_expire(&h, &payment, refusal).await;
    h.mount_lookup(&payment, Outcome::Paid).await;

    h.app.expire_now(&payment.id, 1.0).await;
    h.app.gateway.run_due_checks().await.unwrap();
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!(p.status(), PaymentStatus::Succeeded);
    let statuses: Vec<String> = h.app.applied(&payment.id).await.into_iter().map(|(s, _)| s).collect();
    assert!(!statuses.contains(&"expired".to_owned()), "never EXPIRED: {statuses:?}");
    assert_eq!(h.app.gateway.metrics().events("xpay", "late_success"), 0);
    h.mock.verify().await;
}

#[tokio::test]
async fn a_success_after_expiry_is_applied_and_counted_as_late() {
    let (h, payment) = Harness::with_payment("xp-late").await;
    Mock::given(method("POST"))
        .and(path(format!("/checkout/sessions/{}/expire", payment.provider_checkout_id)))
        .respond_with(answer(200, json!({})))
        .mount(&h.mock)
        .await;
    h.mount_status(&payment, "expired").await;
    h.app.expire_now(&payment.id, 1.0).await;
    h.app.gateway.run_due_checks().await.unwrap();
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Expired);

    // XPay says the session completed after all (money was taken): SUCCEEDED, loudly.
    let body = completed("evt_late", &payment);
    let response = h.verify_webhook(&body, &signed(SECRET, &body)).await.unwrap();
    assert!(response.status_changed);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
    assert_eq!(h.app.gateway.metrics().events("xpay", "late_success"), 1);
    let statuses: Vec<String> = h.app.applied(&payment.id).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses[statuses.len() - 2..], ["expired".to_owned(), "succeeded".to_owned()]);
}

impl crate::cancel::CancelDouble for Harness {
    fn cancel_endpoint(&self, payment: &pb::Payment) -> MockBuilder {
        let expire = format!("/checkout/sessions/{}/expire", payment.provider_checkout_id);
        self.authorized(Mock::given(method("POST")).and(path(expire.as_str())))
    }

    fn cancelled(&self, payment: &pb::Payment) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(session(
            &payment.provider_checkout_id,
            &payment.id,
            "expired",
            AMOUNT,
            "EGP",
        ))
    }

    fn not_open() -> ResponseTemplate {
        answer(400, json!({ "error": { "type": "invalid_request_error", "code": "session_not_open" } }))
    }

    const CLOSED_STATUS: &'static str = "expired";

    fn slow_create(&self, delay: Duration) -> Mock {
        self.create_endpoint().respond_with(move |r: &Request| session_created(r).set_delay(delay))
    }
}
