//! The HitPay adapter end to end: gRPC and the HTTP ingress against a `wiremock` HitPay API on
//! 127.0.0.1 that enforces the documented requests (method, path under `/v1`, the
//! `X-BUSINESS-API-KEY` header, form or JSON body shape and value formats) and answers with the
//! documented payment-request objects.

use crate::common;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{TestApp, error_info, spawn_app_with};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::hitpay::HitPay;
use paygate::providers::hitpay::HitpayAccount;
use paygate::providers::signature::hmac_sha256_hex;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockServer, Request, Respond, ResponseTemplate};

const API_KEY: &str = "hp_test_business_api_key";
const SALT: &str = "hitpay_salt_test";
/// 2,500.00 SGD.
const AMOUNT: i64 = 250_000;
const CUSTOMER_EMAIL: &str = "tan@example.sg";
const CUSTOMER_PHONE: &str = "+6591234567";

// ---------------------------------------------------------------------------------------------
// Signing like HitPay: the test's own implementation of the documented scheme
// ---------------------------------------------------------------------------------------------

/// `fields` (without `hmac`) sorted by key, `key + value` concatenated, hex HMAC-SHA256 under `salt`.
fn hitpay_hmac(salt: &str, fields: &[(&str, &str)]) -> String {
    let sorted: BTreeMap<&str, &str> = fields.iter().copied().collect();
    let message: String = sorted.iter().map(|(k, v)| format!("{k}{v}")).collect();
    hmac_sha256_hex(salt.as_bytes(), message.as_bytes())
}

/// The form body HitPay posts: `fields` in the given order, then `hmac`.
fn signed_form(salt: &str, fields: &[(&str, &str)]) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        form.append_pair(k, v);
    }
    form.append_pair("hmac", &hitpay_hmac(salt, fields));
    form.finish()
}

/// Vectors computed independently with Python 3:
///   import hmac, hashlib
///   msg = "".join(k + v for k, v in sorted(fields.items()) if k != "hmac")
///   hmac.new(SALT.encode(), msg.encode(), hashlib.sha256).hexdigest()
#[test]
fn signer_matches_python_vectors() {
    // The note's self-made vector: salt `salt_test`; message
    // `amount10.00currencySGDpayment_idp1payment_request_idr1phonereference_numberORD1statuscompleted`.
    let note = [
        ("payment_id", "p1"),
        ("payment_request_id", "r1"),
        ("phone", ""),
        ("amount", "10.00"),
        ("currency", "SGD"),
        ("status", "completed"),
        ("reference_number", "ORD1"),
    ];
    assert_eq!(hitpay_hmac("salt_test", &note), "dcb253cf1b727e8a8e7c95997b389366cbbe9f53fcb99b73960951dc45713992");
    // Thousands separator, lower-case currency, `+` in the phone, an extra field (signed too).
    let ours = [
        ("payment_id", "9741164c-06a1-4dd7-a649-72cca8f9603a"),
        ("payment_request_id", "9ef68e2e-3569-4f69-9f68-04c7e4bb007c"),
        ("phone", "+6591234567"),
        ("amount", "2,500.00"),
        ("currency", "sgd"),
        ("status", "completed"),
        ("reference_number", "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("payment_type", "paynow_online"),
    ];
    assert_eq!(hitpay_hmac(SALT, &ours), "27a62daaa33498560fbca9d96860bebb943db931c7875a85be29818f285ea51e");
    assert_eq!(
        signed_form(SALT, &ours),
        "payment_id=9741164c-06a1-4dd7-a649-72cca8f9603a&payment_request_id=9ef68e2e-3569-4f69-9f68-04c7e4bb007c\
         &phone=%2B6591234567&amount=2%2C500.00&currency=sgd&status=completed\
         &reference_number=pay_01ARZ3NDEKTSV4RRFFQ69G5FAV&payment_type=paynow_online\
         &hmac=27a62daaa33498560fbca9d96860bebb943db931c7875a85be29818f285ea51e"
    );
    let failed = [
        ("payment_id", "9741164c-0000-4dd7-a649-72cca8f9603b"),
        ("payment_request_id", "9ef68e2e-3569-4f69-9f68-04c7e4bb007c"),
        ("phone", ""),
        ("amount", "25.00"),
        ("currency", "SGD"),
        ("status", "failed"),
        ("reference_number", "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    ];
    assert_eq!(hitpay_hmac(SALT, &failed), "5479beb98209f735aaf1f87a2d8ad10699e31ee0ed4bf35ab2cd0ccc43759feb");
}

// ---------------------------------------------------------------------------------------------
// The HitPay double
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Form,
    Json,
}

/// A create body, decoded from either encoding into the same shape.
#[derive(Debug, Default)]
struct Decoded {
    scalars: BTreeMap<String, String>,
    methods: Vec<String>,
    allow_repeated: Option<String>,
    generate_qr: Option<String>,
}

fn decode(encoding: Encoding, body: &[u8]) -> Result<Decoded, String> {
    let mut d = Decoded::default();
    match encoding {
        Encoding::Form => {
            for (k, v) in url::form_urlencoded::parse(body) {
                let (k, v) = (k.into_owned(), v.into_owned());
                match k.as_str() {
                    "payment_methods[]" => d.methods.push(v),
                    "allow_repeated_payments" => d.allow_repeated = Some(v),
                    "generate_qr" => d.generate_qr = Some(v),
                    _ => {
                        if d.scalars.insert(k.clone(), v).is_some() {
                            return Err(format!("{k} repeated"));
                        }
                    }
                }
            }
        }
        Encoding::Json => {
            let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
                return Err("not a JSON object".into());
            };
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("payment_methods", Value::Array(items)) => {
                        for item in items {
                            d.methods.push(item.as_str().ok_or("payment_methods holds a non-string")?.to_owned());
                        }
                    }
                    ("allow_repeated_payments", Value::Bool(b)) => d.allow_repeated = Some(b.to_string()),
                    ("generate_qr", Value::Bool(b)) => d.generate_qr = Some(b.to_string()),
                    (_, Value::String(s)) => {
                        d.scalars.insert(k, s);
                    }
                    (k, v) => return Err(format!("{k} has the wrong JSON type: {v}")),
                }
            }
        }
    }
    Ok(d)
}

/// Checks a `POST /v1/payment-requests` body structurally: exactly the expected fields, a
/// two-decimal amount, our payment id as `reference_number`, and our return and callback URLs.
struct CreateBody {
    encoding: Encoding,
    public_base_url: String,
    amount: &'static str,
    /// Optional scalar fields that must be present with these values (all others absent).
    optional: Vec<(&'static str, String)>,
    methods: Vec<&'static str>,
    generate_qr: bool,
}

impl CreateBody {
    fn check(&self, body: &[u8]) -> Result<(), String> {
        let d = decode(self.encoding, body)?;
        let mut expected: Vec<&str> = vec!["amount", "currency", "reference_number", "redirect_url", "webhook"];
        expected.extend(self.optional.iter().map(|(k, _)| *k));
        expected.sort_unstable();
        let keys: Vec<&str> = d.scalars.keys().map(String::as_str).collect();
        if keys != expected {
            return Err(format!("fields {keys:?}, expected {expected:?}"));
        }
        let amount = &d.scalars["amount"];
        let two_decimals = amount.split_once('.').is_some_and(|(i, f)| {
            !i.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && f.len() == 2
                && f.bytes().all(|b| b.is_ascii_digit())
        });
        if !two_decimals || amount != self.amount {
            return Err(format!("amount {amount}"));
        }
        if d.scalars["currency"] != "SGD" {
            return Err("currency".into());
        }
        let reference = &d.scalars["reference_number"];
        if !(reference.len() == 30 && reference.starts_with("pay_")) {
            return Err(format!("reference_number {reference}"));
        }
        if d.scalars["redirect_url"] != format!("{}/return/hitpay/{reference}", self.public_base_url) {
            return Err(format!("redirect_url {}", d.scalars["redirect_url"]));
        }
        if d.scalars["webhook"] != format!("{}/callbacks/hitpay/default", self.public_base_url) {
            return Err(format!("webhook {}", d.scalars["webhook"]));
        }
        for (k, v) in &self.optional {
            if &d.scalars[*k] != v {
                return Err(format!("{k} = {}", d.scalars[*k]));
            }
        }
        if d.methods != self.methods {
            return Err(format!("payment_methods {:?}", d.methods));
        }
        if d.allow_repeated.as_deref() != Some("false") {
            return Err("allow_repeated_payments must be false".into());
        }
        if d.generate_qr.as_deref() != self.generate_qr.then_some("true") {
            return Err(format!("generate_qr {:?}", d.generate_qr));
        }
        Ok(())
    }
}

impl Match for CreateBody {
    fn matches(&self, request: &Request) -> bool {
        let result = self.check(&request.body);
        if let Err(e) = &result {
            eprintln!("HitPay double refused the create body: {e}");
        }
        result.is_ok()
    }
}

/// The documented create answer; the request id is derived from our payment id.
struct RequestCreated {
    encoding: Encoding,
}

fn request_id_for(payment_id: &str) -> String {
    format!("9ef68e2e-{}", payment_id[4..].to_lowercase())
}

const QR: &str = "00020101021226490009SG.PAYNOW010120213201234567X0301104122025052615100000000000000052040000530370254072500.005802SG5902NA6009Singapore6304ABCD";

/// A payment-request object as HitPay returns it (amount with a thousands separator, lower-case currency).
fn request_object(id: &str, payment_id: &str, status: &str, amount: &str) -> Value {
    json!({
        "id": id, "name": "Tan Ah Kow", "email": CUSTOMER_EMAIL, "phone": CUSTOMER_PHONE,
        "amount": amount, "currency": "sgd", "is_currency_editable": false, "status": status,
        "purpose": "FIFA 16", "reference_number": payment_id, "payment_methods": ["card"],
        "url": format!("https://securecheckout.sandbox.hit-pay.com/payment-request/@paygate/{id}/checkout"),
        "redirect_url": "https://ignored.example", "webhook": "https://ignored.example",
        "allow_repeated_payments": false, "expiry_date": null,
        "created_at": "2025-05-21T16:57:25", "updated_at": "2025-05-21T16:57:25",
    })
}

impl Respond for RequestCreated {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let d = decode(self.encoding, &request.body).unwrap_or_default();
        let payment_id = d.scalars.get("reference_number").cloned().unwrap_or_else(|| "pay_unknown".into());
        let mut object = request_object(&request_id_for(&payment_id), &payment_id, "pending", "2,500.00");
        if d.generate_qr.is_some() {
            object["qr_code_data"] = json!({ "qr_code": QR, "qr_code_expiry": null });
        }
        ResponseTemplate::new(201).set_body_json(object)
    }
}

struct Harness {
    app: TestApp,
    mock: MockServer,
    encoding: Encoding,
}

impl Harness {
    async fn start(encoding: Encoding) -> Self {
        let mock = MockServer::start().await;
        assert!(mock.uri().starts_with("http://127.0.0.1:"), "{}", mock.uri());
        let account = HitpayAccount {
            base_url: format!("{}/v1", mock.uri()),
            api_key: API_KEY.into(),
            salt: SALT.into(),
            create_content_type: if encoding == Encoding::Json { "json".into() } else { String::new() },
        };
        let app = spawn_app_with(
            |config| {
                config.providers.hitpay.accounts.insert("default".into(), account);
            },
            Vec::new(),
        )
        .await;
        Self { app, mock, encoding }
    }

    /// The create endpoint enforcing the documented request for [`Harness::request`].
    fn create_mock(&self, optional: Vec<(&'static str, String)>, methods: Vec<&'static str>, qr: bool) -> Mock {
        let content_type =
            if self.encoding == Encoding::Json { "application/json" } else { "application/x-www-form-urlencoded" };
        Mock::given(method("POST"))
            .and(path("/v1/payment-requests"))
            .and(header("x-business-api-key", API_KEY))
            .and(header("content-type", content_type))
            .and(CreateBody {
                encoding: self.encoding,
                public_base_url: self.app.http.clone(),
                amount: "2500.00",
                optional,
                methods,
                generate_qr: qr,
            })
            .respond_with(RequestCreated { encoding: self.encoding })
    }

    /// The create mock for the default request (customer, description, card + PayNow).
    fn default_create(&self) -> Mock {
        self.create_mock(
            vec![
                ("email", CUSTOMER_EMAIL.into()),
                ("name", "Tan Ah Kow".into()),
                ("phone", CUSTOMER_PHONE.into()),
                ("purpose", "FIFA 16".into()),
            ],
            vec!["card", "paynow_online"],
            false,
        )
    }

    fn request(&self, reference: &str) -> pb::CreateCheckoutRequest {
        pb::CreateCheckoutRequest {
            provider: "hitpay".into(),
            merchant_reference: reference.into(),
            amount: Some(pb::Money { amount_minor: AMOUNT, currency: "SGD".into() }),
            description: "FIFA 16".into(),
            return_url: "https://shop.example/return?order=1".into(),
            cancel_url: "https://shop.example/cancel".into(),
            customer: Some(pb::Customer {
                name: "Tan Ah Kow".into(),
                email: CUSTOMER_EMAIL.into(),
                phone: CUSTOMER_PHONE.into(),
            }),
            payment_methods: vec!["card".into(), "paynow_online".into()],
            ..Default::default()
        }
    }

    async fn create(&self, reference: &str) -> pb::Payment {
        let response = self.app.grpc.clone().create_checkout(self.request(reference)).await.expect("create");
        response.into_inner().payment.expect("payment")
    }

    /// `GET /v1/payment-requests/{id}` answering `status` and `amount` for `payment`.
    async fn mount_lookup(&self, payment: &pb::Payment, status: &str, amount: &str) {
        let id = &payment.provider_checkout_id;
        let mut object = request_object(id, &payment.id, status, amount);
        object["payments"] = json!([
            { "id": "c-failed", "status": "failed", "payment_type": "card", "amount": amount, "currency": "sgd" },
            { "id": format!("charge-{}", &payment.id[4..]), "status": "succeeded", "payment_type": "paynow_online",
              "amount": amount, "currency": "sgd" },
        ]);
        Mock::given(method("GET"))
            .and(path(format!("/v1/payment-requests/{id}")))
            .and(header("x-business-api-key", API_KEY))
            .respond_with(ResponseTemplate::new(200).set_body_json(object))
            .mount(&self.mock)
            .await;
    }

    fn lookup_path(payment: &pb::Payment) -> String {
        format!("/v1/payment-requests/{}", payment.provider_checkout_id)
    }

    async fn lookups(&self, payment: &pb::Payment) -> usize {
        common::requests_to(&self.mock, "GET", &Self::lookup_path(payment)).await
    }

    async fn wait_for_lookups(&self, payment: &pb::Payment, n: usize) {
        common::wait_for_requests(&self.mock, "GET", &Self::lookup_path(payment), n).await;
    }

    async fn wait_for_status(&self, id: &str, status: PaymentStatus) -> pb::Payment {
        self.app.wait_for_status(id, status).await
    }

    async fn post_webhook(&self, body: &str) -> reqwest::Response {
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        self.app.post_raw_callback("hitpay/default", &headers, body).await
    }

    async fn verify(&self, body: &str) -> Result<pb::VerifyCallbackResponse, tonic::Status> {
        self.app.verify_raw("hitpay", &[("Content-Type", "application/x-www-form-urlencoded")], body).await
    }

    async fn refresh(&self, id: &str) -> Result<pb::Payment, tonic::Status> {
        let request = pb::GetPaymentStatusRequest { payment_id: id.into(), refresh: true, ..Default::default() };
        self.app.grpc.clone().get_payment_status(request).await.map(|r| r.into_inner().payment.unwrap())
    }
}

/// The v1 webhook for `payment`, signed with `salt`.
fn webhook(salt: &str, payment: &pb::Payment, charge: &str, status: &str, amount: &str, currency: &str) -> String {
    signed_form(
        salt,
        &[
            ("payment_id", charge),
            ("payment_request_id", &payment.provider_checkout_id),
            ("phone", CUSTOMER_PHONE),
            ("amount", amount),
            ("currency", currency),
            ("status", status),
            ("reference_number", &payment.id),
        ],
    )
}

fn seconds(ts: &Option<prost_types::Timestamp>) -> (i64, i32) {
    let ts = ts.as_ref().expect("timestamp");
    (ts.seconds, ts.nanos)
}

// ---------------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_sends_the_documented_form_and_records_the_request() {
    let h = Harness::start(Encoding::Form).await;
    h.default_create().expect(1).named("create, form").mount(&h.mock).await;

    let payment = h.create("hp-create").await;
    assert_eq!(payment.status(), PaymentStatus::Pending);
    let id = request_id_for(&payment.id);
    assert_eq!(payment.provider_checkout_id, id);
    assert_eq!(
        payment.checkout_url,
        format!("https://securecheckout.sandbox.hit-pay.com/payment-request/@paygate/{id}/checkout")
    );
    // No `ttl`: no `expires_after` sent, and the gateway's default lifetime (24 h) stays.
    let lifetime = seconds(&payment.expires_at).0 - seconds(&payment.created_at).0;
    assert!((86_399..=86_400).contains(&lifetime), "{lifetime}");
    assert!(payment.metadata.is_empty(), "no QR unless PayNow alone was asked for");
    let debug = format!("{payment:?}");
    assert!(!debug.contains(API_KEY) && !debug.contains(SALT) && !debug.contains(CUSTOMER_EMAIL), "{debug}");

    let requests = h.mock.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].headers["x-requested-with"], "XMLHttpRequest");
    h.mock.verify().await;
}

#[tokio::test]
async fn create_as_json_when_configured_with_ttl_as_expires_after() {
    let h = Harness::start(Encoding::Json).await;
    h.create_mock(
        vec![
            ("email", CUSTOMER_EMAIL.into()),
            ("name", "Tan Ah Kow".into()),
            ("phone", CUSTOMER_PHONE.into()),
            ("purpose", "FIFA 16".into()),
            ("expires_after", "30 mins".into()),
        ],
        vec!["card", "paynow_online"],
        false,
    )
    .expect(1)
    .named("create, json")
    .mount(&h.mock)
    .await;
    let mut request = h.request("hp-json");
    // 30 min 59 s: HitPay counts whole minutes, rounded down so it never outlives our expiry.
    request.ttl = Some(prost_types::Duration { seconds: 1859, nanos: 0 });
    let payment = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    let (created, nanos) = seconds(&payment.created_at);
    assert_eq!(seconds(&payment.expires_at), (created + 1859, nanos));
    assert_eq!(payment.provider_checkout_id, request_id_for(&payment.id));
    h.mock.verify().await;
}

#[tokio::test]
async fn paynow_alone_asks_for_a_qr_and_exposes_it_in_metadata() {
    for encoding in [Encoding::Form, Encoding::Json] {
        let h = Harness::start(encoding).await;
        h.create_mock(vec![("expires_after", "2 hours".into())], vec!["paynow_online"], true)
            .expect(1)
            .mount(&h.mock)
            .await;
        let request = pb::CreateCheckoutRequest {
            payment_methods: vec!["paynow_online".into()],
            description: String::new(),
            customer: None,
            ttl: Some(prost_types::Duration { seconds: 7200, nanos: 0 }),
            ..h.request("hp-paynow")
        };
        let payment = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
        assert_eq!(payment.metadata.get("paynow_qr").map(String::as_str), Some(QR));
        assert_eq!(h.app.get_payment(&payment.id).await.metadata["paynow_qr"], QR);
        h.mock.verify().await;
    }
}

#[tokio::test]
async fn three_decimal_currencies_are_refused_before_any_call() {
    let h = Harness::start(Encoding::Form).await;
    let mut request = h.request("hp-kwd");
    request.amount = Some(pb::Money { amount_minor: 1234, currency: "KWD".into() });
    let status = h.app.grpc.clone().create_checkout(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let (reason, metadata) = error_info(&status);
    assert_eq!((reason.as_str(), metadata["field"].as_str()), ("INVALID_FIELD", "amount.currency"));
    assert!(h.mock.received_requests().await.unwrap().is_empty());
    assert_eq!(h.app.count("SELECT COUNT(*) FROM payments").await, 0);
}

#[tokio::test]
async fn provider_errors_on_create_map_to_the_error_table() {
    let h = Harness::start(Encoding::Form).await;
    let laravel = json!({ "message": "The given data was invalid.",
        "errors": { "amount": ["The amount must be at least 0.3."], "email": [format!("{CUSTOMER_EMAIL} is invalid")] } });
    let cases: [(u16, Value, tonic::Code, &str, Option<&str>); 8] = [
        (422, laravel, tonic::Code::InvalidArgument, "PROVIDER_REJECTED", Some("invalid_amount")),
        (400, json!({ "message": "bad" }), tonic::Code::InvalidArgument, "PROVIDER_REJECTED", Some("http_400")),
        (401, json!({ "message": "Invalid Business API Key" }), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
        (403, json!({}), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
        (503, json!({ "message": "down" }), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
        (429, json!({ "message": "slow down" }), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
        // HitPay may have opened the request: never sent again, the payment is checked.
        (502, json!({}), tonic::Code::Unavailable, "PROVIDER_OUTCOME_UNKNOWN", None),
        // A 2xx without `url` is not the documented API, but something was created.
        (201, json!({ "id": "x", "status": "pending" }), tonic::Code::Unavailable, "PROVIDER_OUTCOME_UNKNOWN", None),
    ];
    for (i, (http_status, body, code, reason, provider_code)) in cases.into_iter().enumerate() {
        h.mock.reset().await;
        Mock::given(method("POST"))
            .and(path("/v1/payment-requests"))
            .and(header("x-business-api-key", API_KEY))
            .respond_with(ResponseTemplate::new(http_status).set_body_json(body))
            .expect(1)
            .mount(&h.mock)
            .await;
        let status = h.app.grpc.clone().create_checkout(h.request(&format!("hp-err-{i}"))).await.unwrap_err();
        assert_eq!(status.code(), code, "{http_status}");
        let (got_reason, metadata) = error_info(&status);
        assert_eq!(got_reason, reason, "{http_status}");
        assert_eq!(metadata.get("provider_code").map(String::as_str), provider_code, "{http_status}");
        let text = format!("{status:?}");
        for secret in [API_KEY, SALT, CUSTOMER_EMAIL, CUSTOMER_PHONE] {
            assert!(!text.contains(secret), "{http_status} leaks {secret}: {text}");
        }
        h.mock.verify().await;
    }
    let rejected = "SELECT COUNT(*) FROM payments WHERE status = 'failed' AND failure_code = 'PROVIDER_REJECTED'";
    assert_eq!(h.app.count(rejected).await, 2);
}

#[tokio::test]
async fn a_create_that_times_out_is_never_sent_again() {
    // The shared client waits 15 s; an adapter with a 300 ms client shows the same mapping fast.
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment-requests"))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(5)))
        .mount(&mock)
        .await;
    let account = HitpayAccount {
        base_url: format!("{}/v1", mock.uri()),
        api_key: API_KEY.into(),
        salt: SALT.into(),
        ..Default::default()
    };
    let ctx = common::short_timeout_context();
    let adapter = HitPay::new("default", &account, &ctx).unwrap();
    let app = spawn_app_with(|_| {}, vec![Arc::new(adapter)]).await;
    let request = pb::CreateCheckoutRequest {
        provider: "hitpay".into(),
        merchant_reference: "hp-timeout".into(),
        amount: Some(pb::Money { amount_minor: AMOUNT, currency: "SGD".into() }),
        ..Default::default()
    };
    let payment_id = common::assert_create_outcome_unknown(&app, &mock, "/v1/payment-requests", request).await;

    // HitPay had in fact opened the request, and the shopper paid: its signed webhook names our
    // payment (`reference_number`) and the request we never stored. The payment adopts it.
    let payment = pb::Payment {
        id: payment_id.clone(),
        provider_checkout_id: "9ef68e2e-0000-4f69-9f68-04c7e4bb007c".into(),
        ..Default::default()
    };
    let body = webhook(SALT, &payment, "charge-late", "completed", "2,500.00", "sgd");
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let r = app.post_raw_callback("hitpay/default", &headers, &body).await;
    assert_eq!(r.status(), 200);
    let paid = app.get_payment(&payment_id).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(paid.provider_checkout_id, payment.provider_checkout_id);
    // A webhook naming our payment but another request than the adopted one is not ours.
    let stranger = pb::Payment { provider_checkout_id: "another-request".into(), ..payment };
    let body = webhook(SALT, &stranger, "charge-x", "completed", "2,500.00", "sgd");
    assert_eq!(app.post_raw_callback("hitpay/default", &headers, &body).await.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn completed_webhook_pays_and_duplicates_change_nothing() {
    let h = Harness::start(Encoding::Form).await;
    h.default_create().mount(&h.mock).await;
    let payment = h.create("hp-success").await;
    // HitPay echoes the amount with a thousands separator and the currency in lower case.
    let body = webhook(SALT, &payment, "charge-1", "completed", "2,500.00", "sgd");

    let r = h.post_webhook(&body).await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!(
        json,
        json!({ "payment_id": payment.id, "event_id": "charge-1:completed", "duplicate": false, "status_changed": true })
    );
    let paid = h.app.get_payment(&payment.id).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(paid.provider_payment_id, "charge-1");
    assert_eq!(paid.version, payment.version + 1);

    // HitPay retries: the same webhook again over HTTP, and through VerifyCallback.
    let again = h.post_webhook(&body).await;
    assert_eq!(again.status(), 200);
    let json: Value = again.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(true), Some(false)));
    let response = h.verify(&body).await.unwrap();
    assert!(response.duplicate && !response.status_changed);
    assert_eq!(h.app.get_payment(&payment.id).await.version, paid.version);
    assert_eq!(h.lookups(&payment).await, 0, "a verified webhook needs no lookup");
}

#[tokio::test]
async fn failed_webhook_over_verify_callback_then_a_retry_that_pays() {
    let h = Harness::start(Encoding::Form).await;
    h.default_create().mount(&h.mock).await;
    let payment = h.create("hp-fail").await;

    let failed = webhook(SALT, &payment, "charge-f", "failed", "2500.00", "SGD");
    let response = h.verify(&failed).await.unwrap();
    assert!(response.status_changed && !response.duplicate);
    let p = response.payment.unwrap();
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Failed, "PROVIDER_DECLINED"));
    assert_eq!(p.failure_message, "HitPay reported failed");

    // The shopper retries on the same request; that charge completes.
    let paid = webhook(SALT, &payment, "charge-s", "completed", "2500.00", "SGD");
    let r = h.post_webhook(&paid).await;
    assert_eq!(r.status(), 200);
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!(
        (p.status(), p.failure_code.as_str(), p.provider_payment_id.as_str()),
        (PaymentStatus::Succeeded, "", "charge-s")
    );
}

#[tokio::test]
async fn forged_webhooks_change_nothing_and_trigger_one_rate_limited_lookup() {
    let h = Harness::start(Encoding::Form).await;
    h.default_create().mount(&h.mock).await;
    let payment = h.create("hp-forged").await;
    h.mount_lookup(&payment, "pending", "2,500.00").await;
    let forged = webhook("attacker_salt", &payment, "charge-x", "completed", "2,500.00", "sgd");

    let r = h.post_webhook(&forged).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "SIGNATURE_INVALID");
    h.wait_for_lookups(&payment, 1).await;

    // Within 10 s: refused again (HTTP, gRPC, no hmac at all), but no further lookup.
    assert_eq!(h.post_webhook(&forged).await.status(), 401);
    let status = h.verify(&forged).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(error_info(&status).0, "SIGNATURE_INVALID");
    let unsigned = forged.split("&hmac=").next().unwrap().to_owned();
    assert_eq!(h.post_webhook(&unsigned).await.status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.lookups(&payment).await, 1);

    let unchanged = h.app.get_payment(&payment.id).await;
    assert_eq!((unchanged.status(), unchanged.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(h.app.count("SELECT COUNT(*) FROM callback_receipts").await, 0);
    assert_eq!(h.app.count("SELECT COUNT(*) FROM rejected_callbacks WHERE reason = 'SIGNATURE_INVALID'").await, 4);

    // The genuine webhook still goes through: nothing was marked seen.
    let genuine = webhook(SALT, &payment, "charge-x", "completed", "2,500.00", "sgd");
    assert_eq!(h.post_webhook(&genuine).await.status(), 200);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
}

#[tokio::test]
async fn a_forged_webhook_is_answered_by_the_lookup_when_hitpay_says_completed() {
    let h = Harness::start(Encoding::Form).await;
    h.default_create().mount(&h.mock).await;
    let payment = h.create("hp-forged-paid").await;
    // A rotated salt: the body is refused, the lookup (trusted) pays.
    h.mount_lookup(&payment, "completed", "2,500.00").await;
    let r = h.post_webhook(&webhook("old_salt", &payment, "charge-r", "completed", "2,500.00", "sgd")).await;
    assert_eq!(r.status(), 401);
    let paid = h.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(paid.provider_payment_id, format!("charge-{}", &payment.id[4..]));
    assert_eq!(paid.payment_method, "paynow_online");
    assert_eq!(h.lookups(&payment).await, 1);
}

#[tokio::test]
async fn amount_tampering_is_recorded_but_never_pays() {
    let h = Harness::start(Encoding::Form).await;
    h.default_create().mount(&h.mock).await;
    let payment = h.create("hp-amount").await;

    let cheap = webhook(SALT, &payment, "charge-c", "completed", "25.00", "sgd");
    let r = h.post_webhook(&cheap).await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(false)));
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, "AMOUNT_MISMATCH"));

    // Another currency, over gRPC: FAILED_PRECONDITION after commit, status unchanged.
    let usd = webhook(SALT, &payment, "charge-u", "completed", "2,500.00", "usd");
    let status = h.verify(&usd).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let (reason, metadata) = error_info(&status);
    assert_eq!((reason.as_str(), metadata["payment_id"].as_str()), ("AMOUNT_MISMATCH", payment.id.as_str()));
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
}

#[tokio::test]
async fn malformed_unknown_and_stranger_webhooks() {
    let h = Harness::start(Encoding::Form).await;
    h.default_create().mount(&h.mock).await;
    let payment = h.create("hp-malformed").await;
    h.mount_lookup(&payment, "pending", "2,500.00").await;

    // Correctly signed, but an amount with more precision than cents, or no payment id: 400.
    for (fields, field) in [
        (vec![("payment_id", "c"), ("amount", "2500.001"), ("currency", "SGD"), ("status", "completed")], "amount"),
        (vec![("amount", "2500.00"), ("currency", "SGD"), ("status", "completed")], "payment_id"),
    ] {
        let mut fields = fields;
        fields.push(("reference_number", &payment.id));
        let r = h.post_webhook(&signed_form(SALT, &fields)).await;
        assert_eq!(r.status(), 400);
        let json: Value = r.json().await.unwrap();
        assert_eq!(json["code"], "INVALID_FIELD", "{json}");
        assert!(json["message"].as_str().unwrap().contains(field), "{json}");
    }
    // A field sent twice cannot be checked: refused as unsigned.
    let twice = format!("{}&status=completed", webhook(SALT, &payment, "c", "failed", "2500.00", "SGD"));
    assert_eq!(h.post_webhook(&twice).await.status(), 401);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);

    // A status HitPay never documented: unchanged, warned and counted.
    let odd = webhook(SALT, &payment, "charge-o", "refunded", "2500.00", "SGD");
    let response = h.verify(&odd).await.unwrap();
    assert!(!response.status_changed && !response.duplicate);
    assert_eq!(h.app.gateway.metrics().unknown_statuses("hitpay"), 1);
    assert_eq!(h.app.get_payment(&payment.id).await.version, payment.version);

    // A payment nobody created: 404, and a later genuine retry still works.
    let mut stranger = payment.clone();
    stranger.id = "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV".into();
    stranger.provider_checkout_id = "nobody".into();
    let r = h.post_webhook(&webhook(SALT, &stranger, "charge-n", "completed", "2500.00", "SGD")).await;
    assert_eq!(r.status(), 404);

    // Our reference with another payment request's id: matched by HitPay's id (not ours), so it
    // cannot apply to our payment: 404, unchanged.
    let mut other_request = payment.clone();
    other_request.provider_checkout_id = "9ef68e2e-0000-4f69-9f68-000000000000".into();
    let r = h.post_webhook(&webhook(SALT, &other_request, "charge-x", "completed", "2500.00", "SGD")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
}

// ---------------------------------------------------------------------------------------------
// Status lookups, cancel and expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_maps_statuses_reads_amounts_exactly_and_counts_unknown_values() {
    let h = Harness::start(Encoding::Form).await;
    h.default_create().mount(&h.mock).await;
    let payment = h.create("hp-refresh").await;

    h.mount_lookup(&payment, "pending", "2,500.00").await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));

    h.mock.reset().await;
    h.mount_lookup(&payment, "on_hold", "2,500.00").await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(h.app.gateway.metrics().unknown_statuses("hitpay"), 1);

    h.mock.reset().await;
    h.mount_lookup(&payment, "completed", "2,500.01").await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, "AMOUNT_MISMATCH"));

    // Not an exact amount: the provider is not speaking the documented API.
    h.mock.reset().await;
    h.mount_lookup(&payment, "completed", "2,50.00").await;
    let status = h.refresh(&payment.id).await.unwrap_err();
    assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");

    h.mock.reset().await;
    h.mount_lookup(&payment, "completed", "2,500.00").await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!(p.status(), PaymentStatus::Succeeded);
    assert_eq!(p.provider_payment_id, format!("charge-{}", &payment.id[4..]));
    assert_eq!((p.payment_method.as_str(), p.failure_code.as_str()), ("paynow_online", ""));
    h.refresh(&payment.id).await.unwrap();
    assert_eq!(h.lookups(&payment).await, 1, "SUCCEEDED is not looked up again");

    // Provider trouble during a refresh is returned, not hidden.
    h.default_create().mount(&h.mock).await;
    let other = h.create("hp-refresh-2").await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/payment-requests/{}", other.provider_checkout_id)))
        .respond_with(ResponseTemplate::new(502))
        .mount(&h.mock)
        .await;
    let status = h.refresh(&other.id).await.unwrap_err();
    assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");
}

#[tokio::test]
async fn expired_and_deleted_requests_and_cancel_deletes_the_request() {
    let h = Harness::start(Encoding::Form).await;
    h.default_create().mount(&h.mock).await;

    let expiring = h.create("hp-expired").await;
    h.mount_lookup(&expiring, "expired", "2,500.00").await;
    assert_eq!(h.refresh(&expiring.id).await.unwrap().status(), PaymentStatus::Expired);

    // Cancel through the adapter (for the reconciler and a future Cancel RPC): DELETE the request.
    let cancelling = h.create("hp-cancel").await;
    Mock::given(method("DELETE"))
        .and(path(format!("/v1/payment-requests/{}", cancelling.provider_checkout_id)))
        .and(header("x-business-api-key", API_KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "success": true })))
        .expect(1)
        .mount(&h.mock)
        .await;
    let adapter = h.app.gateway.registry().resolve("hitpay", "default").unwrap();
    let stored = h.app.gateway.get_status(&cancelling.id, "", false).await.unwrap();
    adapter.cancel(&stored).await.unwrap();
    h.mount_lookup(&cancelling, "canceled", "2,500.00").await;
    assert_eq!(h.refresh(&cancelling.id).await.unwrap().status(), PaymentStatus::Cancelled);
    h.mock.verify().await;
}

#[tokio::test]
async fn shopper_return_redirects_and_looks_the_request_up() {
    let h = Harness::start(Encoding::Form).await;
    h.default_create().mount(&h.mock).await;
    let payment = h.create("hp-return").await;
    h.mount_lookup(&payment, "completed", "2,500.00").await;
    // What HitPay's redirect looks like: our URL plus `reference` and `status` (unsigned, a hint only).
    let url = format!(
        "{}/return/hitpay/{}?reference={}&status=completed",
        h.app.http, payment.id, payment.provider_checkout_id
    );
    let r = h.app.client.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://shop.example/return?order=1");
    h.wait_for_lookups(&payment, 1).await;
    assert_eq!(h.wait_for_status(&payment.id, PaymentStatus::Succeeded).await.status(), PaymentStatus::Succeeded);
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn config_checks_hitpay_value_formats_without_leaking_secrets() {
    let mut config = paygate::config::Config::default();
    config.providers.hitpay.accounts.insert(
        "sg-shop".into(),
        HitpayAccount {
            base_url: "ftp://api.hit-pay.com/v1".into(),
            api_key: API_KEY.into(),
            salt: SALT.into(),
            create_content_type: "xml".into(),
        },
    );
    let errors = config.validate().unwrap_err().join("\n");
    for key in ["base_url", "create_content_type"] {
        assert!(errors.contains(&format!("providers.hitpay.accounts.sg-shop.{key}")), "{errors}");
    }
    assert!(!errors.contains(API_KEY) && !errors.contains(SALT), "{errors}");
    let out = config.to_redacted_toml();
    assert!(!out.contains(API_KEY) && !out.contains(SALT), "{out}");
}
