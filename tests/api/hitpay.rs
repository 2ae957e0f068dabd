//! The HitPay adapter end to end: gRPC and the HTTP ingress against a `wiremock` HitPay API on
//! 127.0.0.1 that enforces the documented requests (method, path under `/v1`, the
//! `X-BUSINESS-API-KEY` header, form or JSON body shape and value formats) and answers with the
//! documented payment-request objects. What every provider does is in [`crate::conformance`];
//! this module is the HitPay double and what is HitPay's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common::{self, TestApp, error_info, spawn_app_with};
use crate::conformance::{
    self, Checked, CreateError, Delivery, Lifetime, ProviderDouble, RETURN_URL, Refused, RequestCheck, Shopper,
    Statuses, Via, answer,
};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::hitpay::HitPay;
use paygate::providers::hitpay::HitpayAccount;
use paygate::providers::signature::hmac_sha256_hex;
use paygate::providers::{Provider, ProviderContext};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, Request, Respond, ResponseTemplate};

pub(crate) const API_KEY: &str = "hp_test_business_api_key";
pub(crate) const SALT: &str = "hitpay_salt_test";
/// 2,500.00 SGD.
const AMOUNT: i64 = 250_000;
/// The shopper of every request: their e-mail and phone never appear in an answer or an error.
const SHOPPER: Shopper = Shopper { name: "Tan Ah Kow", email: "tan@example.sg", phone: "+6591234567" };

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
pub(crate) fn signed_form(salt: &str, fields: &[(&str, &str)]) -> String {
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
pub(crate) enum Encoding {
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

impl RequestCheck for CreateBody {
    const DOUBLE: &'static str = "HitPay";

    fn check(&self, request: &Request) -> Result<(), String> {
        let d = decode(self.encoding, &request.body)?;
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

/// The documented create answer; the request id is derived from our payment id.
pub(crate) struct RequestCreated {
    pub(crate) encoding: Encoding,
}

fn request_id_for(payment_id: &str) -> String {
    format!("9ef68e2e-{}", payment_id[4..].to_lowercase())
}

const QR: &str = "00020101021226490009SG.PAYNOW010120213201234567X0301104122025052615100000000000000052040000530370254072500.005802SG5902NA6009Singapore6304ABCD";

/// A payment-request object as HitPay returns it (amount with a thousands separator, lower-case currency).
fn request_object(id: &str, payment_id: &str, status: &str, amount: &str) -> Value {
    json!({
        "id": id, "name": SHOPPER.name, "email": SHOPPER.email, "phone": SHOPPER.phone,
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

fn account(base_url: String, encoding: Encoding) -> HitpayAccount {
    HitpayAccount {
        base_url,
        api_key: API_KEY.into(),
        salt: SALT.into(),
        create_content_type: if encoding == Encoding::Json { "json".into() } else { String::new() },
    }
}

pub(crate) struct Harness {
    app: TestApp,
    mock: MockServer,
    encoding: Encoding,
}

impl Harness {
    async fn start_with(encoding: Encoding) -> Self {
        let mock = MockServer::start().await;
        assert!(mock.uri().starts_with("http://127.0.0.1:"), "{}", mock.uri());
        let account = account(format!("{}/v1", mock.uri()), encoding);
        let app = spawn_app_with(
            |config| {
                config.providers.hitpay.accounts.insert("default".into(), account);
            },
            Vec::new(),
        )
        .await;
        Self { app, mock, encoding }
    }

    /// The create endpoint enforcing the documented request for [`ProviderDouble::request`].
    fn create_mock_with(&self, optional: Vec<(&'static str, String)>, methods: Vec<&'static str>, qr: bool) -> Mock {
        let content_type =
            if self.encoding == Encoding::Json { "application/json" } else { "application/x-www-form-urlencoded" };
        self.create_endpoint()
            .and(header("content-type", content_type))
            .and(Checked(CreateBody {
                encoding: self.encoding,
                public_base_url: self.app.http.clone(),
                amount: "2500.00",
                optional,
                methods,
                generate_qr: qr,
            }))
            .respond_with(RequestCreated { encoding: self.encoding })
    }

    /// The lookup of `payment` answering HitPay's `status` and `amount` text.
    async fn mount_request(&self, payment: &pb::Payment, status: &str, amount: &str) {
        self.lookup_endpoint(payment).respond_with(lookup_object(payment, status, amount)).mount(&self.mock).await;
    }

    async fn post_webhook(&self, body: &str) -> reqwest::Response {
        self.deliver(&form(body)).await
    }

    async fn verify_webhook(&self, body: &str) -> Result<pb::VerifyCallbackResponse, tonic::Status> {
        self.verify(&form(body)).await
    }
}

/// The optional fields of the default request (customer and description).
fn default_optional() -> Vec<(&'static str, String)> {
    vec![
        ("email", SHOPPER.email.into()),
        ("name", SHOPPER.name.into()),
        ("phone", SHOPPER.phone.into()),
        ("purpose", "FIFA 16".into()),
    ]
}

/// `GET /v1/payment-requests/{id}`'s answer: the request with a failed and a succeeded charge.
fn lookup_object(payment: &pb::Payment, status: &str, amount: &str) -> ResponseTemplate {
    let mut object = request_object(&payment.provider_checkout_id, &payment.id, status, amount);
    object["payments"] = json!([
        { "id": "c-failed", "status": "failed", "payment_type": "card", "amount": amount, "currency": "sgd" },
        { "id": charge_for(payment), "status": "succeeded", "payment_type": "paynow_online",
          "amount": amount, "currency": "sgd" },
    ]);
    ResponseTemplate::new(200).set_body_json(object)
}

fn charge_for(payment: &pb::Payment) -> String {
    format!("charge-{}", &payment.id[4..])
}

/// Minor units as HitPay writes SGD: two decimals and a thousands separator (`2,500.00`).
fn sgd(minor: i64) -> String {
    let units = (minor / 100).to_string();
    let mut grouped = String::new();
    for (i, digit) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{grouped}.{:02}", minor % 100)
}

/// A form POST of `body`, as HitPay sends its webhooks.
fn form(body: &str) -> Delivery {
    Delivery::new(body, &[("content-type", "application/x-www-form-urlencoded")])
}

#[async_trait::async_trait]
impl ProviderDouble for Harness {
    const SECRETS: &'static [&'static str] = &[API_KEY, SALT, SHOPPER.email, SHOPPER.phone];

    async fn start() -> Self {
        Self::start_with(Encoding::Form).await
    }

    fn parts(&self) -> (&TestApp, &MockServer) {
        (&self.app, &self.mock)
    }

    fn adapter(mock: &MockServer, ctx: &ProviderContext) -> Arc<dyn Provider> {
        Arc::new(HitPay::new("default", &account(format!("{}/v1", mock.uri()), Encoding::Form), ctx).unwrap())
    }

    const UNSUPPORTED_CURRENCIES: &'static [&'static str] = &["KWD"];
    const CREATE_PATH: &'static str = "/v1/payment-requests";
    /// No `ttl`: no `expires_after` sent, and the gateway's default lifetime (24 h) stays.
    const LIFETIME: Lifetime = Lifetime::GatewayDefault;

    /// 2,500.00 SGD with a customer, a description, card and PayNow.
    fn request(reference: &str) -> pb::CreateCheckoutRequest {
        pb::CreateCheckoutRequest {
            description: "FIFA 16".into(),
            payment_methods: vec!["card".into(), "paynow_online".into()],
            ..conformance::checkout_request("hitpay", reference, AMOUNT, "SGD", &SHOPPER)
        }
    }

    fn authorized(&self, endpoint: MockBuilder) -> MockBuilder {
        endpoint.and(header("x-business-api-key", API_KEY)).and(header("x-requested-with", "XMLHttpRequest"))
    }

    fn create_mock(&self) -> Mock {
        self.create_mock_with(default_optional(), vec!["card", "paynow_online"], false)
    }

    fn checkout(&self, payment: &pb::Payment) -> (String, String) {
        let id = request_id_for(&payment.id);
        let url = format!("https://securecheckout.sandbox.hit-pay.com/payment-request/@paygate/{id}/checkout");
        (id, url)
    }

    fn create_errors() -> Vec<CreateError> {
        let laravel = json!({ "message": "The given data was invalid.",
            "errors": { "amount": ["The amount must be at least 0.3."], "email": [format!("{} is invalid", SHOPPER.email)] } });
        vec![
            CreateError::rejected(answer(422, laravel), "invalid_amount"),
            CreateError::rejected(answer(400, json!({ "message": "bad" })), "http_400"),
            CreateError::unavailable(answer(401, json!({ "message": "Invalid Business API Key" }))),
            CreateError::unavailable(answer(403, json!({}))),
            CreateError::unavailable(answer(503, json!({ "message": "down" }))),
            CreateError::unavailable(answer(429, json!({ "message": "slow down" }))),
            // HitPay may have opened the request: never sent again, the payment is checked.
            CreateError::outcome_unknown(answer(502, json!({}))),
            // A 2xx without `url` is not the documented API, but something was created.
            CreateError::outcome_unknown(answer(201, json!({ "id": "x", "status": "pending" }))),
        ]
    }

    const STATUSES: Statuses = Statuses { pending: "pending", paid: "completed", unknown: "on_hold" };

    fn lookup_path(payment: &pb::Payment) -> String {
        format!("/v1/payment-requests/{}", payment.provider_checkout_id)
    }

    fn lookup_answer(&self, payment: &pb::Payment, status: &str, amount_minor: i64) -> ResponseTemplate {
        lookup_object(payment, status, &sgd(amount_minor))
    }

    fn paid_as(payment: &pb::Payment, via: Via) -> (String, &'static str) {
        (charge_for(payment), if via == Via::Lookup { "paynow_online" } else { "" })
    }

    /// HitPay echoes the amount with a thousands separator and the currency in lower case.
    fn paid_callback(&self, payment: &pb::Payment) -> Delivery {
        form(&webhook(SALT, payment, &charge_for(payment), "completed", "2,500.00", "sgd"))
    }

    fn event_id(&self, payment: &pb::Payment, _delivery: &Delivery) -> String {
        format!("{}:completed", charge_for(payment))
    }

    fn refused_callbacks(&self, payment: &pb::Payment) -> Vec<Refused> {
        let forged = webhook("attacker_salt", payment, &charge_for(payment), "completed", "2,500.00", "sgd");
        let unsigned = forged.split("&hmac=").next().unwrap().to_owned();
        vec![Refused::invalid(form(&forged)), Refused::invalid(form(&unsigned))]
    }

    fn callback_with_amount(&self, payment: &pb::Payment, amount_minor: i64, currency: &str) -> Option<Delivery> {
        let charge = format!("charge-{amount_minor}-{currency}");
        Some(form(&webhook(SALT, payment, &charge, "completed", &sgd(amount_minor), &currency.to_lowercase())))
    }

    fn lookup_trigger(&self, _payment: &pb::Payment) -> Option<Delivery> {
        None
    }

    fn returns(&self, payment: &pb::Payment) -> Vec<(String, &'static str)> {
        vec![(format!("reference={}&status=completed", payment.provider_checkout_id), RETURN_URL)]
    }

    fn misconfigure(config: &mut paygate::config::Config) -> (&'static str, Vec<&'static str>) {
        let mut account = account("ftp://api.hit-pay.com/v1".into(), Encoding::Form);
        account.create_content_type = "xml".into();
        config.providers.hitpay.accounts.insert("sg-shop".into(), account);
        ("sg-shop", vec!["base_url", "create_content_type"])
    }
}

/// The v1 webhook for `payment`, signed with `salt`.
fn webhook(salt: &str, payment: &pb::Payment, charge: &str, status: &str, amount: &str, currency: &str) -> String {
    signed_form(
        salt,
        &[
            ("payment_id", charge),
            ("payment_request_id", &payment.provider_checkout_id),
            ("phone", SHOPPER.phone),
            ("amount", amount),
            ("currency", currency),
            ("status", status),
            ("reference_number", &payment.id),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_as_json_when_configured_with_ttl_as_expires_after() {
    let h = Harness::start_with(Encoding::Json).await;
    let mut optional = default_optional();
    optional.push(("expires_after", "30 mins".into()));
    h.create_mock_with(optional, vec!["card", "paynow_online"], false)
        .expect(1)
        .named("create, json")
        .mount(&h.mock)
        .await;
    let mut request = Harness::request("hp-json");
    // 30 min 59 s: HitPay counts whole minutes, rounded down so it never outlives our expiry.
    request.ttl = Some(prost_types::Duration { seconds: 1859, nanos: 0 });
    let payment = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    let (created, nanos) = common::seconds(&payment.created_at);
    assert_eq!(common::seconds(&payment.expires_at), (created + 1859, nanos));
    assert_eq!(payment.provider_checkout_id, request_id_for(&payment.id));
    h.mock.verify().await;
}

#[tokio::test]
async fn paynow_alone_asks_for_a_qr_and_exposes_it_in_metadata() {
    for encoding in [Encoding::Form, Encoding::Json] {
        let h = Harness::start_with(encoding).await;
        h.create_mock_with(vec![("expires_after", "2 hours".into())], vec!["paynow_online"], true)
            .expect(1)
            .mount(&h.mock)
            .await;
        let request = pb::CreateCheckoutRequest {
            payment_methods: vec!["paynow_online".into()],
            description: String::new(),
            customer: None,
            ttl: Some(prost_types::Duration { seconds: 7200, nanos: 0 }),
            ..Harness::request("hp-paynow")
        };
        let payment = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
        assert_eq!(payment.metadata.get("paynow_qr").map(String::as_str), Some(QR));
        assert_eq!(h.app.get_payment(&payment.id).await.metadata["paynow_qr"], QR);
        h.mock.verify().await;
    }
}

/// HitPay had in fact opened the request of a create that timed out, and the shopper paid: its
/// signed webhook names our payment (`reference_number`) and the request we never stored. The
/// payment adopts it; a webhook naming another request than the adopted one is not ours.
#[tokio::test]
async fn a_timed_out_create_adopts_the_request_its_signed_webhook_names() {
    let (app, payment_id) = conformance::create_outcome_unknown::<Harness>().await;
    let payment = pb::Payment {
        id: payment_id.clone(),
        provider_checkout_id: "9ef68e2e-0000-4f69-9f68-04c7e4bb007c".into(),
        ..Default::default()
    };
    let body = webhook(SALT, &payment, "charge-late", "completed", "2,500.00", "sgd");
    assert_eq!(conformance::deliver(&app, "hitpay", &form(&body)).await.status(), 200);
    let paid = app.get_payment(&payment_id).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(paid.provider_checkout_id, payment.provider_checkout_id);
    let stranger = pb::Payment { provider_checkout_id: "another-request".into(), ..payment };
    let body = webhook(SALT, &stranger, "charge-x", "completed", "2,500.00", "sgd");
    assert_eq!(conformance::deliver(&app, "hitpay", &form(&body)).await.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn failed_webhook_over_verify_callback_then_a_retry_that_pays() {
    let (h, payment) = Harness::with_payment("hp-fail").await;

    let failed = webhook(SALT, &payment, "charge-f", "failed", "2500.00", "SGD");
    let response = h.verify_webhook(&failed).await.unwrap();
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
async fn malformed_unknown_and_stranger_webhooks() {
    let (h, payment) = Harness::with_payment("hp-malformed").await;
    h.mount_status(&payment, "pending").await;

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
    let response = h.verify_webhook(&odd).await.unwrap();
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
async fn a_lookup_amount_that_is_not_exact_is_provider_trouble() {
    let (h, payment) = Harness::with_payment("hp-refresh").await;
    // Not an exact amount: the provider is not speaking the documented API.
    h.mount_request(&payment, "completed", "2,50.00").await;
    let status = h.refresh(&payment.id).await.unwrap_err();
    assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");
    assert_eq!(h.app.get_payment(&payment.id).await.version, payment.version);
}

#[tokio::test]
async fn expired_and_deleted_requests_and_cancel_deletes_the_request() {
    let h = Harness::start().await;
    h.mount_create().await;

    let expiring = h.create("hp-expired").await;
    h.mount_status(&expiring, "expired").await;
    assert_eq!(h.refresh(&expiring.id).await.unwrap().status(), PaymentStatus::Expired);

    // Cancel through the adapter (for the reconciler and a future Cancel RPC): DELETE the request.
    let cancelling = h.create("hp-cancel").await;
    h.authorized(Mock::given(method("DELETE")).and(path(Harness::lookup_path(&cancelling))))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "success": true })))
        .expect(1)
        .mount(&h.mock)
        .await;
    let adapter = h.app.gateway.registry().resolve("hitpay", "default").unwrap();
    let lookup = paygate::gateway::PaymentLookup::from_request(&cancelling.id, "").unwrap();
    let stored = h.app.gateway.find(&lookup).await.unwrap();
    adapter.cancel(&stored).await.unwrap();
    h.mount_status(&cancelling, "canceled").await;
    assert_eq!(h.refresh(&cancelling.id).await.unwrap().status(), PaymentStatus::Cancelled);
    h.mock.verify().await;
}

impl crate::cancel::CancelDouble for Harness {
    fn cancel_endpoint(&self, payment: &pb::Payment) -> MockBuilder {
        self.authorized(Mock::given(method("DELETE")).and(path(Harness::lookup_path(payment))))
    }

    fn cancelled(&self, _payment: &pb::Payment) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({ "success": true }))
    }

    /// A deleted or completed request is gone: 404.
    fn not_open() -> ResponseTemplate {
        ResponseTemplate::new(404).set_body_json(json!({ "message": "Not found" }))
    }

    const CLOSED_STATUS: &'static str = "expired";

    fn slow_create(&self, delay: std::time::Duration) -> wiremock::Mock {
        let created = RequestCreated { encoding: self.encoding };
        self.create_endpoint().respond_with(move |r: &Request| created.respond(r).set_delay(delay))
    }
}
