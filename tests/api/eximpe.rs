//! EximPe adapter, black-box: gRPC and the HTTP ingress against a `wiremock` EximPe API on
//! 127.0.0.1 that enforces the documented requests (method, exact path, auth headers, JSON body
//! shape and value formats) and answers with the documented responses. What every provider does
//! is in [`crate::conformance`]; this module is the EximPe double and what is EximPe's own.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{TestApp, error_info, spawn_app_with};
use crate::conformance::{
    self, CreateError, Delivery, Lifetime, ProviderDouble, Refused, Shopper, Statuses, Via, answer,
};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::eximpe::Eximpe;
use paygate::providers::eximpe::EximpeAccount;
use paygate::providers::signature::hmac_sha256_hex;
use paygate::providers::{Provider, ProviderContext};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockBuilder, MockServer, Request, ResponseTemplate};

const CLIENT_ID: &str = "cid_test_123";
const CLIENT_SECRET: &str = "csec_test_do_not_echo";
const CALLBACK_KEY: &str = "cb_key_test";
const HS_CODE: &str = "49011010";
const SESSION_ID: &str = "session_abc123def456";
/// The shopper of every request: their e-mail and phone never appear in an answer or an error.
const SHOPPER: Shopper = Shopper { name: "Asha Rao", email: "asha@example.in", phone: "+919876543210" };

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

/// The fields a form's `hash` covers, in order (a missing one signs as the empty string).
const SIGNED_FIELDS: [&str; 6] =
    ["order_id", "payment_id", "status", "mop_type", "bank_ref_num", "payment_completed_at"];

/// A callback form as EximPe posts it: `fields` in the given order, then `hash`, the hex
/// HMAC-SHA256 under `key` of the [`SIGNED_FIELDS`] joined by `|`. The test's own implementation
/// of the documented scheme.
pub(crate) fn signed_form(key: &str, fields: &[(&str, &str)]) -> String {
    let value = |name: &str| fields.iter().find(|(k, _)| *k == name).map_or("", |(_, v)| *v);
    let message = SIGNED_FIELDS.map(value).join("|");
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        form.append_pair(k, v);
    }
    form.append_pair("hash", &hmac_sha256_hex(key.as_bytes(), message.as_bytes()));
    form.finish()
}

#[test]
fn signer_matches_python_vectors() {
    let completed = ("payment_completed_at", "2026-11-23 10:00:00+00:00");
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[
                ("order_id", "OD1000000001"),
                ("payment_id", "PR1000000001"),
                ("status", "payment_successful"),
                ("message", "Payment captured successfully"),
                ("mop_type", "UPI"),
                ("bank_ref_num", "BR-0001"),
                completed,
            ],
            SUCCESS_FORM,
        ),
        (
            &[
                ("order_id", "OD1000000002"),
                ("payment_id", "PR1000000002"),
                ("status", "payment_failed"),
                ("message", "Payment failed"),
                ("mop_type", "CREDIT_CARD"),
                ("bank_ref_num", "BR-0002"),
                completed,
            ],
            FAILURE_FORM,
        ),
        (
            &[("order_id", "OD1000000003"), ("status", "payment_cancelled"), ("message", "Cancelled by user")],
            CANCEL_FORM,
        ),
        (
            &[
                ("order_id", "OD1000000004"),
                ("payment_id", "PR1000000004"),
                ("status", "payment_successful"),
                ("message", "ok"),
                ("mop_type", "NET_BANKING"),
                ("bank_ref_num", "BR-0004"),
                completed,
            ],
            GRPC_FORM,
        ),
        (
            &[
                ("order_id", "OD1000000005"),
                ("payment_id", "PR1000000005"),
                ("status", "payment_successful"),
                ("mop_type", "UPI"),
                ("bank_ref_num", "BR-0005"),
                completed,
            ],
            OTHER_FORM,
        ),
    ];
    for (fields, form) in cases {
        // The cancel form's hash is in upper case: hex is compared without regard to case.
        assert_eq!(
            signed_form(CALLBACK_KEY, fields),
            form.replace(&form[form.len() - 64..], &form[form.len() - 64..].to_lowercase())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The EximPe double
// ---------------------------------------------------------------------------------------------

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

/// EximPe's payment id in the Get Order answers.
const EXIMPE_PAYMENT_ID: &str = "PR1469384681";

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

fn order_id_for(payment_id: &str) -> String {
    format!("OD{}", &payment_id[4..])
}

/// The documented create answer; the order id is derived from our payment id.
fn order_opened(request: &Request) -> ResponseTemplate {
    let body = conformance::json_body(request).unwrap_or_default();
    created(&order_id_for(body["reference_id"].as_str().unwrap_or("pay_unknown")), SESSION_ID)
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

pub(crate) struct Harness {
    app: TestApp,
    mock: MockServer,
}

impl Harness {
    async fn start_with(adjust: impl FnOnce(&mut EximpeAccount)) -> Self {
        let mock = MockServer::start().await;
        let mut account = account(&mock);
        adjust(&mut account);
        let app = spawn_app_with(
            move |config| {
                config.providers.eximpe.accounts.insert("default".into(), account);
            },
            vec![],
        )
        .await;
        Self { app, mock }
    }

    /// The documented create-order body of [`ProviderDouble::request`].
    fn order_body(&self) -> OrderBody {
        OrderBody {
            public_base_url: self.app.http.clone(),
            amount: "1000.00",
            mop_type: Some("UPI"),
            buyer: json!({ "name": SHOPPER.name, "email": SHOPPER.email, "phone": SHOPPER.phone }),
            product: json!({ "name": "Assam tea", "description": "Assam tea", "hs_code": HS_CODE }),
        }
    }

    /// A create-order mock enforcing the documented request, answered once with `order_id`.
    async fn mount_order_create(&self, order_id: &str, session_id: &str) {
        self.create_endpoint()
            .and(header("content-type", "application/json"))
            .and(self.order_body())
            .respond_with(created(order_id, session_id))
            .up_to_n_times(1)
            .expect(1)
            .mount(&self.mock)
            .await;
    }

    /// Creates a payment whose order EximPe opens as `order_id` (the signed forms above name it).
    async fn create_order(&self, reference: &str, order_id: &str) -> pb::Payment {
        self.mount_order_create(order_id, SESSION_ID).await;
        self.create(reference).await
    }

    /// A Get Order mock enforcing method, exact path and both auth headers, answered once.
    async fn mount_order(&self, order_id: &str, response: ResponseTemplate) {
        self.authorized(Mock::given(method("GET")).and(path(format!("/pg/orders/{order_id}"))))
            .respond_with(response)
            .up_to_n_times(1)
            .mount(&self.mock)
            .await;
    }

    async fn requests(&self, verb: &str) -> Vec<Request> {
        let all = self.mock.received_requests().await.unwrap_or_default();
        all.into_iter().filter(|r| r.method.as_str() == verb).collect()
    }

    async fn post_form(&self, query: &str, body: &str) -> reqwest::Response {
        self.deliver(&form(body).with_query(query)).await
    }

    /// Waits (up to 5 s) until `payment` satisfies `done`, and returns it.
    async fn wait_until(&self, id: &str, done: impl Fn(&pb::Payment) -> bool) -> pb::Payment {
        let mut p = self.app.get_payment(id).await;
        for _ in 0..100 {
            if done(&p) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            p = self.app.get_payment(id).await;
        }
        p
    }
}

/// A form POST of `body`, as the shopper's browser delivers EximPe's callbacks.
fn form(body: &str) -> Delivery {
    Delivery::new(body, &[("content-type", "application/x-www-form-urlencoded")])
}

/// A success form for `payment`'s order signed with `key`, at its return URL.
fn success_form(key: &str, payment: &pb::Payment) -> Delivery {
    let body = signed_form(
        key,
        &[
            ("order_id", &payment.provider_checkout_id),
            ("payment_id", EXIMPE_PAYMENT_ID),
            ("status", "payment_successful"),
            ("message", "Payment captured successfully"),
            ("mop_type", "UPI"),
            ("bank_ref_num", "BR-0001"),
            ("payment_completed_at", "2026-11-23 10:00:00+00:00"),
        ],
    );
    form(&body).with_query(format!("payment_id={}", payment.id))
}

#[async_trait::async_trait]
impl ProviderDouble for Harness {
    const SECRETS: &'static [&'static str] = &[CLIENT_ID, CLIENT_SECRET, CALLBACK_KEY, SHOPPER.email, SHOPPER.phone];
    /// `payment_pending`: the shopper is paying.
    const OPEN_STATUS: PaymentStatus = PaymentStatus::Processing;
    const BROWSER_DELIVERY: bool = true;
    /// A success form's hash covers no amount: it only queues a lookup.
    const TRIGGER_ONLY: bool = true;

    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    fn parts(&self) -> (&TestApp, &MockServer) {
        (&self.app, &self.mock)
    }

    fn adapter(mock: &MockServer, ctx: &ProviderContext) -> Arc<dyn Provider> {
        Arc::new(Eximpe::new("default", &account(mock), ctx).unwrap())
    }

    const UNSUPPORTED_CURRENCIES: &'static [&'static str] = &["USD", "JPY"];
    const CREATE_PATH: &'static str = "/pg/orders/";
    /// The session's default lifetime: 15 minutes.
    const LIFETIME: Lifetime = Lifetime::Provider(900);

    /// 1000.00 INR with a buyer, description and UPI.
    fn request(reference: &str) -> pb::CreateCheckoutRequest {
        pb::CreateCheckoutRequest {
            payment_methods: vec!["UPI".into()],
            description: "Assam tea".into(),
            return_url: "https://shop.example/thanks?order=1".into(),
            cancel_url: "https://shop.example/cancelled".into(),
            ..conformance::checkout_request("eximpe", reference, 100_000, "INR", &SHOPPER)
        }
    }

    fn authorized(&self, endpoint: MockBuilder) -> MockBuilder {
        endpoint.and(header("x-client-id", CLIENT_ID)).and(header("x-client-secret", CLIENT_SECRET))
    }

    fn create_mock(&self) -> Mock {
        self.create_endpoint()
            .and(header("content-type", "application/json"))
            .and(self.order_body())
            .respond_with(order_opened)
    }

    /// Our own page, which opens EximPe's session with its SDK.
    fn checkout(&self, payment: &pb::Payment) -> (String, String) {
        (order_id_for(&payment.id), format!("{}/checkout/eximpe/{}", self.app.http, payment.id))
    }

    fn create_errors() -> Vec<CreateError> {
        let envelope = |code: &str| {
            json!({ "success": false, "error": { "code": code, "message": format!("Missing credentials: {}", SHOPPER.email),
                     "details": { "buyer.email": SHOPPER.email } } })
        };
        let shopper_data = format!("bad email {}", SHOPPER.email);
        vec![
            CreateError::rejected(answer(400, envelope("ERR_VALIDATION_001")), "ERR_VALIDATION_001"),
            CreateError::rejected(ResponseTemplate::new(422).set_body_string("<html>"), "http_422"),
            CreateError::rejected(answer(200, envelope("ERR_ORDER_009")), "ERR_ORDER_009"),
            // Codes that are not identifiers (they may echo shopper data) are not passed on.
            CreateError::rejected(answer(400, envelope(&shopper_data)), "http_400"),
            CreateError::rejected(answer(200, envelope(&shopper_data)), "eximpe_error"),
            CreateError::unavailable(answer(401, envelope("ERR_AUTH_000"))),
            CreateError::unavailable(answer(403, envelope("ERR_AUTH_001"))),
            CreateError::unavailable(answer(503, envelope("ERR_DOWN"))),
            // The provider may have opened the order: never sent again, the payment is checked.
            CreateError::outcome_unknown(answer(500, envelope("ERR_INTERNAL"))),
            CreateError::outcome_unknown(answer(200, json!({ "success": true, "data": {} }))),
        ]
    }

    const STATUSES: Statuses =
        Statuses { pending: "payment_pending", paid: "payment_successful", unknown: "order_created" };

    fn lookup_path(payment: &pb::Payment) -> String {
        format!("/pg/orders/{}", payment.provider_checkout_id)
    }

    fn lookup_answer(&self, payment: &pb::Payment, status: &str, amount_minor: i64) -> ResponseTemplate {
        let amount = format!("{}.{:02}", amount_minor / 100, amount_minor % 100);
        order(&payment.provider_checkout_id, status, json!(amount))
    }

    fn paid_as(_payment: &pb::Payment, _via: Via) -> (String, &'static str) {
        (EXIMPE_PAYMENT_ID.into(), "UPI")
    }

    fn paid_callback(&self, payment: &pb::Payment) -> Delivery {
        success_form(CALLBACK_KEY, payment)
    }

    fn event_id(&self, payment: &pb::Payment, _delivery: &Delivery) -> String {
        format!("{}:{EXIMPE_PAYMENT_ID}:payment_successful", payment.provider_checkout_id)
    }

    fn refused_callbacks(&self, payment: &pb::Payment) -> Vec<Refused> {
        let forged = success_form("attacker_key", payment);
        let unsigned = Delivery { body: forged.body.split("&hash=").next().unwrap().to_owned(), ..forged.clone() };
        vec![Refused::invalid(forged), Refused::invalid(unsigned)]
    }

    fn callback_with_amount(&self, _payment: &pb::Payment, _amount_minor: i64, _currency: &str) -> Option<Delivery> {
        None
    }

    fn lookup_trigger(&self, payment: &pb::Payment) -> Option<Delivery> {
        Some(self.paid_callback(payment))
    }

    fn returns(&self, _payment: &pb::Payment) -> Vec<(String, &'static str)> {
        vec![(String::new(), "https://shop.example/thanks?order=1")]
    }

    fn misconfigure(config: &mut paygate::config::Config) -> (&'static str, Vec<&'static str>) {
        let account = EximpeAccount {
            base_url: "ftp://api.eximpe.com".into(),
            client_secret: CLIENT_SECRET.into(),
            callback_key: CALLBACK_KEY.into(),
            hs_code: HS_CODE.into(),
            sdk_mode: "live".into(),
            session_ttl_secs: Some(5),
            ..Default::default()
        };
        config.providers.eximpe.accounts.insert("in-shop".into(), account);
        ("in-shop", vec!["base_url", "client_id", "sdk_mode", "session_ttl_secs"])
    }
}

// ---------------------------------------------------------------------------------------------
// Create and the checkout page
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_keeps_the_session_private_and_sends_no_unconfigured_header() {
    let h = Harness::start().await;
    let payment = h.create_order("order-1", "OD1000000001").await;
    assert_eq!(payment.provider_checkout_id, "OD1000000001");
    // The session id is provider-private: stored, never shown to callers.
    assert!(!format!("{payment:?}").contains(SESSION_ID));
    let data: Value = sqlx::query_scalar("SELECT provider_data FROM payments WHERE id = $1")
        .bind(&payment.id)
        .fetch_one(&h.app.db)
        .await
        .unwrap();
    assert_eq!((data["session_id"].as_str(), data["sdk_mode"].as_str()), (Some(SESSION_ID), Some("sandbox")));
    let posts = h.requests("POST").await;
    // Not configured → not sent.
    assert!(posts[0].headers.get("x-merchant-id").is_none() && posts[0].headers.get("x-api-version").is_none());
    h.mock.verify().await;
}

#[tokio::test]
async fn merchant_id_and_api_version_are_sent_when_configured_and_ttl_shortens_expiry() {
    let h = Harness::start_with(|a| {
        a.merchant_id = "MID-42".into();
        a.api_version = "v1".into();
        a.session_ttl_secs = Some(600);
    })
    .await;
    h.create_endpoint()
        .and(header("x-merchant-id", "MID-42"))
        .and(header("x-api-version", "v1"))
        .respond_with(created("OD1000000009", SESSION_ID))
        .expect(1)
        .mount(&h.mock)
        .await;
    let mut req = Harness::request("order-mid");
    req.ttl = Some(prost_types::Duration { seconds: 120, nanos: 0 });
    let payment = h.app.grpc.clone().create_checkout(req).await.unwrap().into_inner().payment.unwrap();
    assert_eq!(payment.expires_at.unwrap().seconds - payment.created_at.unwrap().seconds, 120);
    h.mock.verify().await;
}

#[tokio::test]
async fn a_missing_buyer_field_is_invalid_argument_and_nothing_is_sent_or_written() {
    let h = Harness::start().await;
    let customer = |name: &str, email: &str, phone: &str| pb::Customer {
        name: name.into(),
        email: email.into(),
        phone: phone.into(),
    };
    for (customer, field) in [
        (None, "customer.name"),
        (Some(customer("", "", "")), "customer.name"),
        (Some(customer(SHOPPER.name, "", SHOPPER.phone)), "customer.email"),
        (Some(customer(SHOPPER.name, SHOPPER.email, "")), "customer.phone"),
    ] {
        let mut req = Harness::request("order-no-buyer");
        req.customer = customer;
        let err = h.app.grpc.clone().create_checkout(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}");
        let (reason, metadata) = error_info(&err);
        assert_eq!((reason.as_str(), metadata["field"].as_str()), ("INVALID_FIELD", field));
    }
    assert!(h.mock.received_requests().await.unwrap_or_default().is_empty());
    assert_eq!(h.app.count("SELECT COUNT(*) FROM payments").await, 0);
}

#[tokio::test]
async fn checkout_page_opens_the_session_with_the_sdk() {
    let h = Harness::start().await;
    let evil_session = "sess_</script><script>alert(1)</script>";
    h.mount_order_create("OD1000000001", evil_session).await;
    let mut req = Harness::request("<b>ref</b>");
    req.merchant_reference = "<b>ref</b>".into();
    let payment = h.app.grpc.clone().create_checkout(req).await.unwrap().into_inner().payment.unwrap();

    let page = h.app.client.get(&payment.checkout_url).send().await.unwrap();
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
    let sandbox = h.app.create_payment("sbx").await;
    for id in ["pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", "garbage", sandbox.id.as_str()] {
        let r = h.app.client.get(format!("{}/checkout/eximpe/{id}", h.app.http)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{id}");
    }
}

#[tokio::test]
async fn a_closed_payment_page_shows_its_status_and_no_sdk() {
    let h = Harness::start().await;
    let payment = h.create_order("order-closed", "OD1000000001").await;
    h.mount_order("OD1000000001", order("OD1000000001", "payment_successful", json!("1000.00"))).await;
    let r = h.post_form(&format!("payment_id={}", payment.id), SUCCESS_FORM).await;
    assert_eq!(r.status(), 303);
    let paid = h.wait_until(&payment.id, |p| p.status() == PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    let html = h.app.client.get(&payment.checkout_url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("succeeded") && !html.contains("eximpe-sdk") && !html.contains(SESSION_ID), "{html}");
}

// ---------------------------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_success_form_whose_lookup_reports_another_amount_never_pays() {
    let h = Harness::start().await;
    let payment = h.create_order("order-cheap", "OD1000000001").await;
    h.mount_order("OD1000000001", order("OD1000000001", "payment_successful", json!(1.0))).await;

    let r = h.post_form(&format!("payment_id={}", payment.id), SUCCESS_FORM).await;
    assert_eq!((r.status().as_u16(), conformance::location(&r)), (303, "https://shop.example/thanks?order=1"));
    let p = h.wait_until(&payment.id, |p| p.failure_code == "AMOUNT_MISMATCH").await;
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, "AMOUNT_MISMATCH"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
    assert_eq!(h.requests("GET").await.len(), 1);
}

#[tokio::test]
async fn browser_failure_and_cancel() {
    let h = Harness::start().await;
    let failing = h.create_order("order-fail", "OD1000000002").await;
    let r = h.post_form(&format!("payment_id={}", failing.id), FAILURE_FORM).await;
    assert_eq!((r.status().as_u16(), conformance::location(&r)), (303, "https://shop.example/thanks?order=1"));
    let failed = h.app.get_payment(&failing.id).await;
    assert_eq!(failed.status(), PaymentStatus::Failed);
    assert_eq!(failed.failure_code, "PROVIDER_DECLINED");
    assert_eq!(failed.payment_method, "CREDIT_CARD");

    let cancelling = h.create_order("order-cancel", "OD1000000003").await;
    let r = h.post_form(&format!("payment_id={}", cancelling.id), CANCEL_FORM).await;
    assert_eq!((r.status().as_u16(), conformance::location(&r)), (303, "https://shop.example/cancelled"));
    assert_eq!(h.app.get_payment(&cancelling.id).await.status(), PaymentStatus::Cancelled);
}

#[tokio::test]
async fn a_signed_callback_for_another_payment_than_the_query_names_is_refused() {
    let h = Harness::start().await;
    let a = h.create_order("order-a", "OD1000000001").await;
    let b = h.create_order("order-b", "OD1000000005").await;
    // B's genuine success, replayed at A's return URL: not applied to anything.
    let r = h.post_form(&format!("payment_id={}", a.id), OTHER_FORM).await;
    assert_eq!(r.status(), 303);
    assert_eq!(h.app.get_payment(&a.id).await.status(), PaymentStatus::Pending);
    assert_eq!(h.app.get_payment(&b.id).await.status(), PaymentStatus::Pending);
    // Only A (named by the query) may be looked up; B's order is not asked about.
    let looked_up_b = h.requests("GET").await.iter().any(|r| r.url.path() == "/pg/orders/OD1000000005");
    assert!(!looked_up_b, "a refused callback schedules no lookup of B");
    // At its own URL it is accepted, and B's status lookup pays B.
    h.mount_order("OD1000000005", order("OD1000000005", "payment_successful", json!(1000))).await;
    let r = h.post_form(&format!("payment_id={}", b.id), OTHER_FORM).await;
    assert_eq!(r.status(), 303);
    let paid = h.wait_until(&b.id, |p| p.status() == PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(h.app.get_payment(&a.id).await.status(), PaymentStatus::Pending);
}

#[tokio::test]
async fn verify_callback_over_grpc_and_without_the_query() {
    let h = Harness::start().await;
    let payment = h.create_order("order-grpc", "OD1000000004").await;
    let at_return_url = form(GRPC_FORM).with_query(format!("payment_id={}", payment.id));

    // Verified, but a success form changes nothing by itself; the lookup it schedules pays.
    let confirmed = order("OD1000000004", "payment_successful", json!("1000.00")).set_delay(Duration::from_millis(500));
    h.mount_order("OD1000000004", confirmed).await;
    let ok = h.verify(&at_return_url).await.unwrap();
    assert!(!ok.status_changed && !ok.duplicate);
    assert_eq!(ok.event_id, "OD1000000004:PR1000000004:payment_successful");
    assert_eq!(ok.payment.unwrap().status(), PaymentStatus::Pending);
    let paid = h.wait_until(&payment.id, |p| p.status() == PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(h.requests("GET").await.len(), 1);

    // Without the query it is found by order id alone; the same event is a duplicate.
    let dup = h.verify(&form(GRPC_FORM)).await.unwrap();
    assert!(dup.duplicate && !dup.status_changed);
}

// ---------------------------------------------------------------------------------------------
// Status lookups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_reads_the_amount_as_a_string_or_a_json_number() {
    let h = Harness::start().await;
    for (i, amount) in [json!("1000.00"), json!(1000), json!(1000.0)].into_iter().enumerate() {
        let order_id = format!("OD100000000{i}");
        let payment = h.create_order(&format!("order-refresh-{i}"), &order_id).await;
        h.mount_order(&order_id, order(&order_id, "payment_successful", amount.clone())).await;
        let p = h.refresh(&payment.id).await.unwrap();
        assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Succeeded, ""), "{amount}");
    }
}

#[tokio::test]
async fn refresh_failures_are_returned() {
    let h = Harness::start().await;
    let payment = h.create_order("order-refresh-err", "OD1000000001").await;
    h.mount_order("OD1000000001", ResponseTemplate::new(503)).await;
    let err = h.refresh(&payment.id).await.unwrap_err();
    assert_eq!(error_info(&err).0, "PROVIDER_UNAVAILABLE");
    // An amount with more precision than paise is not the documented API.
    h.mount_order("OD1000000001", order("OD1000000001", "payment_successful", json!("1000.001"))).await;
    let err = h.refresh(&payment.id).await.unwrap_err();
    assert_eq!(error_info(&err).0, "PROVIDER_UNAVAILABLE");
    // A success without an amount is never taken on trust.
    h.mount_order("OD1000000001", order("OD1000000001", "payment_successful", Value::Null)).await;
    let err = h.refresh(&payment.id).await.unwrap_err();
    assert_eq!(error_info(&err).0, "PROVIDER_UNAVAILABLE");
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
}

// ---------------------------------------------------------------------------------------------
// Payment truth: durable checks; expiry asks EximPe first
// ---------------------------------------------------------------------------------------------

async fn expired_events(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM payment_events WHERE payment_id = $1 AND status = 'expired'")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn pending_at_the_return_and_successful_at_expiry_ends_succeeded_never_expired() {
    let h = Harness::start().await;
    let payment = h.create_order("order-late", "OD1000000001").await;
    h.mount_order("OD1000000001", order("OD1000000001", "payment_pending", json!("1000.00"))).await;
    let r = h.app.client.get(format!("{}/return/eximpe/{}", h.app.http, payment.id)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        h.wait_until(&payment.id, |p| p.status() == PaymentStatus::Processing).await.status(),
        PaymentStatus::Processing
    );

    // EximPe's callbacks are browser posts, never resent: only the check at expiry can learn this.
    h.mount_order("OD1000000001", order("OD1000000001", "payment_successful", json!("1000.00"))).await;
    h.app.expire_now(&payment.id, 1.0).await;
    h.app.gateway.run_due_checks().await.unwrap();
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!(p.status(), PaymentStatus::Succeeded);
    assert_eq!(expired_events(&h.app, &payment.id).await, 0, "never EXPIRED");
    assert_eq!(h.requests("POST").await.len(), 1, "EximPe has no cancel: only the create");
}

#[tokio::test]
async fn processing_at_expiry_stays_open_until_the_grace_period_ends() {
    let h = Harness::start().await;
    let payment = h.create_order("order-grace", "OD1000000001").await;
    h.mount_order("OD1000000001", order("OD1000000001", "payment_pending", json!("1000.00"))).await;

    h.app.expire_now(&payment.id, 1.0).await;
    h.app.gateway.run_due_checks().await.unwrap();
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!(p.status(), PaymentStatus::Processing, "pending at EximPe: kept open");
    let (due_at, expires_at): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT c.due_at, p.expires_at FROM provider_checks c JOIN payments p ON p.id = c.payment_id WHERE p.id = $1",
    )
    .bind(&payment.id)
    .fetch_one(&h.app.db)
    .await
    .expect("still checked");
    assert!(due_at > chrono::Utc::now() && due_at <= expires_at + chrono::TimeDelta::seconds(86_400));

    // Past the grace period (24 h) with no answer but "pending": EXPIRED, RECONCILIATION_FAILED.
    h.app.expire_now(&payment.id, 86_401.0).await;
    h.app.gateway.run_due_checks().await.unwrap();
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Expired, "RECONCILIATION_FAILED"));
    assert_eq!(h.app.gateway.metrics().events("eximpe", "reconciliation_failed"), 1);
    let due = "SELECT COUNT(*) FROM provider_checks WHERE due_at < now() + interval '1 year'";
    assert_eq!(h.app.count(due).await, 0, "nothing left to check: a closed payment's row is parked");
}

#[tokio::test]
async fn a_lookup_answer_of_the_other_mode_is_refused() {
    // A live account (sdk_mode production) must never trust an answer about a test order.
    let h = Harness::start_with(|a| a.sdk_mode = "production".into()).await;
    let payment = h.create_order("order-mode", "OD1000000001").await;
    h.mount_order("OD1000000001", order("OD1000000001", "payment_successful", json!("1000.00"))).await;
    let status = h.refresh(&payment.id).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
}
