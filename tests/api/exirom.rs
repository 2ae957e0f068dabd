//! The Exirom adapter end to end: gRPC and the HTTP ingress against a `wiremock` Exirom on
//! 127.0.0.1 that enforces the documented API (method, path, bearer token, body shape and value
//! formats, the request checksum).

use crate::common;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{TestApp, error_info, spawn_app_with};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::ProviderContext;
use paygate::providers::exirom::Exirom;
use paygate::providers::exirom::{ExiromAccount, ExiromMethod};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Match, Mock, MockServer, Request, Respond, ResponseTemplate};

const MERCHANT_KEY: &str = "mk_test_paygate";
const MERCHANT_SECRET: &str = "merchant_secret_test";
const ACCOUNT_ID: &str = "12345";
/// 100.00 USD.
const AMOUNT: i64 = 10_000;

/// Base64 HMAC-SHA256 with the `hmac` crate directly (not the adapter's code).
fn checksum(secret: &str, text: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// An unsigned JWT-shaped token whose payload says `exp`.
fn jwt(name: &str, exp: i64) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.sig-{name}", b64(&json!({ "alg": "HS256", "typ": "JWT" })), b64(&json!({ "sub": name, "exp": exp })))
}

fn in_30_days() -> i64 {
    chrono::Utc::now().timestamp() + 30 * 86_400
}

// ---------------------------------------------------------------------------------------------
// Signature vectors
// ---------------------------------------------------------------------------------------------

/// Computed independently with Python 3:
///   import hmac, hashlib, base64
///   base64.b64encode(hmac.new(b"merchant_secret_test", MESSAGE.encode(), hashlib.sha256).digest())
/// The first three are the note's self-made vectors (request, newer-guide callback, the document's
/// sample callback); the last two are the sample in the `2dp` and `minor` amount formats.
const PY_VECTORS: [(&str, &str); 5] = [
    ("merchant_001|10.00|USD|req-789123", "3hLj0f5qX1dqV2CdljQzGzoUgGLAgJi+qTLeLbiWbvk="),
    ("merchant_001|200.0|USD|tx-456789", "wYVueCxaewpqncPiPS0Useft+dOvnjOHk2aAPRhYKP4="),
    ("12345|100.0|USD|tx-987654321", "40M+vqVVr658+/TlUjZ9Js43Fw6nXIWg/HLUOSTilyw="),
    ("12345|100.00|USD|tx-987654321", "F7C74Cq9vsn1UnY6wBoLBnzBJKCT5Fcq4e3/H0GDaW8="),
    ("12345|10000|USD|tx-987654321", "fsZxTcHlR1LoLtFytsxpO8F1a/7ouXmCTS2BBLeXIJw="),
];

#[test]
fn signatures_match_python_vectors() {
    for (message, expected) in PY_VECTORS {
        assert_eq!(checksum(MERCHANT_SECRET, message), expected, "{message}");
    }
}

// ---------------------------------------------------------------------------------------------
// The Exirom double
// ---------------------------------------------------------------------------------------------

/// `POST /api/v1/auth`: exactly `{"merchantKey","merchantSecret"}` with our credentials.
struct AuthBody;

impl Match for AuthBody {
    fn matches(&self, request: &Request) -> bool {
        let ok = serde_json::from_slice::<Value>(&request.body).ok()
            == Some(json!({ "merchantKey": MERCHANT_KEY, "merchantSecret": MERCHANT_SECRET }));
        if !ok {
            eprintln!("Exirom double refused the auth body");
        }
        ok
    }
}

/// Answers auth calls with `tokens[n]` (the last one repeated), as a plain-text JWT.
struct Tokens {
    tokens: Vec<String>,
    calls: Arc<AtomicUsize>,
}

impl Respond for Tokens {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let token = &self.tokens[n.min(self.tokens.len() - 1)];
        ResponseTemplate::new(200).set_body_string(token.clone())
    }
}

/// Checks a `POST /api/v1/payments/apm` body: exactly the documented fields, the amount as a
/// decimal string, our URLs naming the payment in `requestId`, and the checksum over
/// `accountId|amount|currency|requestId`.
struct CreateBody {
    public_base_url: String,
    amount: &'static str,
    currency: &'static str,
    apm: Value,
}

impl CreateBody {
    fn check(&self, body: &Value) -> Result<(), String> {
        let obj = body.as_object().ok_or("body is not an object")?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let want = [
            "accountId",
            "amount",
            "apmPayload",
            "callbackUrl",
            "checksum",
            "currency",
            "failureRedirectUrl",
            "requestId",
            "successRedirectUrl",
        ];
        if keys != want {
            return Err(format!("unexpected fields {keys:?}"));
        }
        let request_id = body["requestId"].as_str().ok_or("requestId not a string")?;
        if !(request_id.len() == 30 && request_id.starts_with("pay_")) {
            return Err(format!("bad requestId {request_id}"));
        }
        // Strings, not numbers: `accountId` and the decimal `amount`.
        if body["accountId"] != ACCOUNT_ID {
            return Err(format!("bad accountId {}", body["accountId"]));
        }
        if body["amount"] != self.amount || body["currency"] != self.currency {
            return Err(format!("bad amount {} {}", body["amount"], body["currency"]));
        }
        if body["apmPayload"] != self.apm {
            return Err(format!("bad apmPayload {}", body["apmPayload"]));
        }
        if body["callbackUrl"] != format!("{}/callbacks/exirom/default", self.public_base_url) {
            return Err(format!("bad callbackUrl {}", body["callbackUrl"]));
        }
        let return_url = format!("{}/return/exirom/{request_id}", self.public_base_url);
        if body["successRedirectUrl"] != format!("{return_url}?outcome=success")
            || body["failureRedirectUrl"] != format!("{return_url}?outcome=failure")
        {
            return Err("bad redirect URLs".into());
        }
        let signed = format!("{ACCOUNT_ID}|{}|{}|{request_id}", self.amount, self.currency);
        if body["checksum"] != checksum(MERCHANT_SECRET, &signed) {
            return Err(format!("bad checksum {} over {signed}", body["checksum"]));
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
            eprintln!("Exirom double refused the create body: {e}");
        }
        result.is_ok()
    }
}

fn transaction_id_for(payment_id: &str) -> String {
    format!("tx-{}", &payment_id[4..])
}

/// The documented create answer: PENDING with a redirect URL, the transaction id derived from
/// our `requestId`.
struct PaymentOpened;

impl Respond for PaymentOpened {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let request_id = body["requestId"].as_str().unwrap_or("pay_unknown");
        let tx = transaction_id_for(request_id);
        ResponseTemplate::new(200).set_body_json(json!({
            "requestId": request_id,
            "transactionId": tx,
            "transactionStatus": "PENDING",
            "apmResponseData": {
                "paymentMethod": "ExPay", "paymentType": "E_WALLET",
                "redirectUrl": format!("https://pay.expay.example.com/checkout/{tx}"),
            },
        }))
    }
}

/// An `ApmPaymentTxInfoDto` as text, numbers written as Exirom (Java) writes doubles.
fn tx_info(payment: &pb::Payment, status: &str, order_amount: &str, extra: &str) -> String {
    let tx = &payment.provider_checkout_id;
    format!(
        r#"{{"transactionId":"{tx}","requestId":"{id}","accountId":{ACCOUNT_ID},"transactionStatus":"{status}",{extra}"orderCurrency":"USD","processedCurrency":"USD","orderAmount":{order_amount},"processedAmount":{order_amount},"conversionRate":1.0,"apmRequestPayload":{{"paymentMethod":"ExPay","paymentType":"E_WALLET"}},"apmResponseData":{{"paymentMethod":"ExPay","paymentType":"E_WALLET","redirectUrl":"https://pay.expay.example.com/checkout/{tx}","providerTransactionId":"ExPay-{tx}"}},"callbackUrl":"https://pg.example/callbacks/exirom/default","billingDetails":{{}},"order":{{}},"createdAt":"2026-01-01T12:00:00Z"}}"#,
        id = payment.id
    )
}

/// The `X-Checksum` Exirom sends: over `accountId|orderAmount|orderCurrency|transactionId`, the
/// amount as the raw token.
fn signed_for(payment: &pb::Payment, order_amount: &str) -> String {
    checksum(MERCHANT_SECRET, &format!("{ACCOUNT_ID}|{order_amount}|USD|{}", payment.provider_checkout_id))
}

fn account(base_url: String) -> ExiromAccount {
    ExiromAccount {
        base_url,
        merchant_key: MERCHANT_KEY.into(),
        merchant_secret: MERCHANT_SECRET.into(),
        account_id: ACCOUNT_ID.into(),
        methods: BTreeMap::from([
            ("expay".to_owned(), ExiromMethod { payment_method: "ExPay".into(), payment_type: "E_WALLET".into() }),
            ("mpesa".to_owned(), ExiromMethod { payment_method: "MPesa".into(), payment_type: "MOBILE_MONEY".into() }),
        ]),
        ..Default::default()
    }
}

struct Harness {
    app: TestApp,
    mock: MockServer,
    auth_calls: Arc<AtomicUsize>,
    token: String,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with_tokens(vec![jwt("first", in_30_days())]).await
    }

    async fn start_with_tokens(tokens: Vec<String>) -> Self {
        let mock = MockServer::start().await;
        assert!(mock.uri().starts_with("http://127.0.0.1:"), "{}", mock.uri());
        let base_url = format!("{}/api", mock.uri());
        let app = spawn_app_with(
            |config| {
                config.providers.exirom.accounts.insert("default".into(), account(base_url));
            },
            Vec::new(),
        )
        .await;
        let auth_calls = Arc::new(AtomicUsize::new(0));
        let token = tokens[0].clone();
        Self::auth_mock(tokens, auth_calls.clone()).mount(&mock).await;
        Self { app, mock, auth_calls, token }
    }

    fn auth_mock(tokens: Vec<String>, calls: Arc<AtomicUsize>) -> Mock {
        Mock::given(method("POST"))
            .and(path("/api/v1/auth"))
            .and(header("content-type", "application/json"))
            .and(AuthBody)
            .respond_with(Tokens { tokens, calls })
    }

    /// The create endpoint with `token`, enforcing the documented request.
    fn create_mock_with(&self, token: &str, amount: &'static str, currency: &'static str) -> Mock {
        Mock::given(method("POST"))
            .and(path("/api/v1/payments/apm"))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .and(header("content-type", "application/json"))
            .and(CreateBody {
                public_base_url: self.app.http.clone(),
                amount,
                currency,
                apm: json!({ "paymentMethod": "ExPay", "paymentType": "E_WALLET" }),
            })
            .respond_with(PaymentOpened)
    }

    fn create_mock(&self) -> Mock {
        self.create_mock_with(&self.token, "100.00", "USD")
    }

    /// `GET /api/v1/payments/apm/info/{transactionId}` answering `body`.
    async fn mount_lookup(&self, payment: &pb::Payment, body: String) {
        Mock::given(method("GET"))
            .and(path(format!("/api/v1/payments/apm/info/{}", payment.provider_checkout_id)))
            .and(header("authorization", format!("Bearer {}", self.token).as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
            .mount(&self.mock)
            .await;
    }

    fn request(&self, reference: &str) -> pb::CreateCheckoutRequest {
        pb::CreateCheckoutRequest {
            provider: "exirom".into(),
            merchant_reference: reference.into(),
            amount: Some(pb::Money { amount_minor: AMOUNT, currency: "USD".into() }),
            payment_methods: vec!["expay".into()],
            return_url: "https://shop.example/return?order=1".into(),
            cancel_url: "https://shop.example/cancel".into(),
            customer: Some(pb::Customer {
                name: "Amir".into(),
                email: "amir@example.com".into(),
                phone: "+971501234567".into(),
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
        format!("/api/v1/payments/apm/info/{}", payment.provider_checkout_id)
    }

    async fn lookups(&self, payment: &pb::Payment) -> usize {
        self.received("GET", &Self::lookup_path(payment)).await
    }

    async fn wait_for_lookups(&self, payment: &pb::Payment, n: usize) {
        common::wait_for_requests(&self.mock, "GET", &Self::lookup_path(payment), n).await;
    }

    /// Waits until the payment (changed by a background lookup) has `want`.
    async fn wait_for_status(&self, id: &str, want: PaymentStatus) -> pb::Payment {
        let p = self.app.wait_for_status(id, want).await;
        assert_eq!(p.status(), want, "expected {want:?}, got {:?}", p.status());
        p
    }

    async fn post_callback(&self, body: &str, checksum: &str) -> reqwest::Response {
        let headers = [("content-type", "application/json"), ("X-Checksum", checksum)];
        self.app.post_raw_callback("exirom/default", &headers, body).await
    }

    async fn verify(&self, body: &str, checksum: &str) -> Result<pb::VerifyCallbackResponse, tonic::Status> {
        self.app.verify_raw("exirom", &[("x-CHECKSUM", checksum), ("Content-Type", "application/json")], body).await
    }

    async fn refresh(&self, id: &str) -> Result<pb::Payment, tonic::Status> {
        let request = pb::GetPaymentStatusRequest { payment_id: id.into(), refresh: true, ..Default::default() };
        self.app.grpc.clone().get_payment_status(request).await.map(|r| r.into_inner().payment.unwrap())
    }
}

// ---------------------------------------------------------------------------------------------
// Auth and create
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creates_send_the_documented_request_with_one_cached_token() {
    let h = Harness::start().await;
    h.create_mock().expect(3).named("create").mount(&h.mock).await;

    let mut payments = Vec::new();
    for i in 0..3 {
        payments.push(h.create(&format!("ex-create-{i}")).await);
    }
    for p in &payments {
        assert_eq!(p.status(), PaymentStatus::Pending);
        let tx = transaction_id_for(&p.id);
        assert_eq!(p.provider_checkout_id, tx);
        assert_eq!(p.checkout_url, format!("https://pay.expay.example.com/checkout/{tx}"));
        let debug = format!("{p:?}");
        assert!(!debug.contains(MERCHANT_SECRET) && !debug.contains(&h.token), "{debug}");
    }
    assert_eq!(h.auth_calls.load(Ordering::SeqCst), 1, "one token for every create");
    // No customer data travels to Exirom.
    for r in h.mock.received_requests().await.unwrap() {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert!(!body.contains("amir@example.com") && !body.contains("+971501234567") && !body.contains("Amir"));
    }
    h.mock.verify().await;
}

#[tokio::test]
async fn concurrent_creates_share_one_auth_call_and_other_currencies_are_exact() {
    let h = Harness::start().await;
    h.create_mock().expect(4).mount(&h.mock).await;
    h.create_mock_with(&h.token, "1234", "JPY").expect(1).mount(&h.mock).await;
    let creates = (0..4).map(|i| h.create_owned(format!("ex-conc-{i}")));
    let results = futures::future::join_all(creates).await;
    assert!(results.iter().all(|p| p.status() == PaymentStatus::Pending));
    let mut request = h.request("ex-jpy");
    request.amount = Some(pb::Money { amount_minor: 1234, currency: "JPY".into() });
    let jpy = h.app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    assert_eq!(jpy.provider_checkout_id, transaction_id_for(&jpy.id));
    assert_eq!(h.auth_calls.load(Ordering::SeqCst), 1);
    h.mock.verify().await;
}

impl Harness {
    async fn create_owned(&self, reference: String) -> pb::Payment {
        self.create(&reference).await
    }
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_and_an_expiring_one_early() {
    // The first token expires within the refresh margin: the second create asks for a new one.
    let soon = chrono::Utc::now().timestamp() + 2;
    let tokens = vec![jwt("short", soon), jwt("renewed", in_30_days()), jwt("third", in_30_days())];
    let h = Harness::start_with_tokens(tokens.clone()).await;
    h.create_mock_with(&tokens[0], "100.00", "USD").expect(1).mount(&h.mock).await;
    h.create_mock_with(&tokens[1], "100.00", "USD").mount(&h.mock).await;
    h.create("ex-tok-1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.create("ex-tok-2").await;
    assert_eq!(h.auth_calls.load(Ordering::SeqCst), 2);

    // Exirom revokes the token: the create answers 401, the adapter authenticates again and
    // retries once with the new token (`requestId` makes the retry safe).
    h.mock.reset().await;
    Harness::auth_mock(vec![tokens[2].clone()], h.auth_calls.clone()).mount(&h.mock).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/payments/apm"))
        .and(header("authorization", format!("Bearer {}", tokens[1]).as_str()))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({ "error": "Unauthorized" })))
        .expect(1)
        .mount(&h.mock)
        .await;
    h.create_mock_with(&tokens[2], "100.00", "USD").expect(1).mount(&h.mock).await;
    let p = h.create("ex-tok-401").await;
    assert_eq!(p.provider_checkout_id, transaction_id_for(&p.id));
    assert_eq!(h.auth_calls.load(Ordering::SeqCst), 3);
    h.mock.verify().await;

    // A 401 that persists is retried exactly once, then PROVIDER_UNAVAILABLE (no loop).
    h.mock.reset().await;
    let before = h.auth_calls.load(Ordering::SeqCst);
    Harness::auth_mock(vec![tokens[2].clone()], h.auth_calls.clone()).mount(&h.mock).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/payments/apm"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&h.mock)
        .await;
    let status = h.app.grpc.clone().create_checkout(h.request("ex-tok-dead")).await.unwrap_err();
    assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");
    assert_eq!(h.auth_calls.load(Ordering::SeqCst), before + 1);
    h.mock.verify().await;
}

#[tokio::test]
async fn auth_answers_as_a_json_object_and_auth_failures_are_unavailable() {
    let h = Harness::start().await;
    h.mock.reset().await;
    // `{"merchantKey", "token"}`, as one guide shows.
    Mock::given(method("POST"))
        .and(path("/api/v1/auth"))
        .and(AuthBody)
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "merchantKey": MERCHANT_KEY, "token": h.token })),
        )
        .expect(1)
        .mount(&h.mock)
        .await;
    h.create_mock().expect(1).mount(&h.mock).await;
    h.create("ex-auth-json").await;
    h.mock.verify().await;

    // Refused credentials are our configuration, never a rejection that fails the payment.
    for (i, http_status) in [400_u16, 401, 500].into_iter().enumerate() {
        let h = Harness::start().await;
        h.mock.reset().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/auth"))
            .respond_with(ResponseTemplate::new(http_status).set_body_json(json!({ "code": "BAD_CREDENTIALS" })))
            .mount(&h.mock)
            .await;
        let status = h.app.grpc.clone().create_checkout(h.request(&format!("ex-auth-{i}"))).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{http_status}");
        assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");
        assert!(!status.message().contains(MERCHANT_SECRET) && !status.message().contains(MERCHANT_KEY));
        assert_eq!(h.received("POST", "/api/v1/payments/apm").await, 0);
    }
}

#[tokio::test]
async fn unmapped_methods_and_three_decimal_currencies_are_refused_before_any_call() {
    let h = Harness::start().await;
    for methods in [vec![], vec!["card".to_owned(), "expay".to_owned()]] {
        let mut request = h.request("ex-method");
        request.payment_methods = methods;
        let status = h.app.grpc.clone().create_checkout(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let (reason, metadata) = error_info(&status);
        assert_eq!((reason.as_str(), metadata["field"].as_str()), ("INVALID_FIELD", "payment_methods"));
    }
    let mut request = h.request("ex-kwd");
    request.amount = Some(pb::Money { amount_minor: 1234, currency: "KWD".into() });
    let status = h.app.grpc.clone().create_checkout(request).await.unwrap_err();
    assert_eq!(error_info(&status).1["field"], "amount.currency");
    assert!(h.mock.received_requests().await.unwrap().is_empty(), "not even an auth call");
}

#[tokio::test]
async fn provider_errors_on_create_map_to_the_error_table() {
    let h = Harness::start().await;
    let cases: [(u16, Value, tonic::Code, &str, Option<&str>); 5] = [
        (
            400,
            json!({ "code": "INVALID_AMOUNT", "message": "amount invalid", "details": [{ "field": "amount" }] }),
            tonic::Code::InvalidArgument,
            "PROVIDER_REJECTED",
            Some("INVALID_AMOUNT"),
        ),
        (404, json!({ "error": "Not Found" }), tonic::Code::InvalidArgument, "PROVIDER_REJECTED", Some("http_404")),
        (403, json!({}), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
        (500, json!({ "code": "INTERNAL" }), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
        (503, json!({}), tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE", None),
    ];
    for (i, (http_status, body, code, reason, provider_code)) in cases.into_iter().enumerate() {
        h.mock.reset().await;
        Harness::auth_mock(vec![h.token.clone()], h.auth_calls.clone()).mount(&h.mock).await;
        Mock::given(method("POST"))
            .and(path("/api/v1/payments/apm"))
            .and(header("authorization", format!("Bearer {}", h.token).as_str()))
            .respond_with(ResponseTemplate::new(http_status).set_body_json(body))
            .expect(1)
            .mount(&h.mock)
            .await;
        let status = h.app.grpc.clone().create_checkout(h.request(&format!("ex-err-{i}"))).await.unwrap_err();
        assert_eq!(status.code(), code, "{http_status}");
        let (got_reason, metadata) = error_info(&status);
        assert_eq!(got_reason, reason, "{http_status}");
        assert_eq!(metadata.get("provider_code").map(String::as_str), provider_code, "{http_status}");
        assert!(!status.message().contains(MERCHANT_SECRET));
        h.mock.verify().await;
    }

    // A transaction declined at once is a rejection with the decline code.
    h.mock.reset().await;
    Harness::auth_mock(vec![h.token.clone()], h.auth_calls.clone()).mount(&h.mock).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/payments/apm"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "transactionId": "tx-declined", "transactionStatus": "DECLINED", "declineCode": 4051,
        })))
        .mount(&h.mock)
        .await;
    let status = h.app.grpc.clone().create_checkout(h.request("ex-declined-now")).await.unwrap_err();
    assert_eq!(error_info(&status).1["provider_code"], "EXIROM_DECLINE_4051");
}

#[tokio::test]
async fn a_create_that_times_out_is_retried_with_the_same_request_id() {
    let mock = MockServer::start().await;
    Harness::auth_mock(vec![jwt("t", in_30_days())], Arc::new(AtomicUsize::new(0))).mount(&mock).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/payments/apm"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&mock)
        .await;
    let ctx = common::short_timeout_context();
    let adapter = Exirom::new("default", &account(format!("{}/api", mock.uri())), &ctx).unwrap();
    let app = spawn_app_with(|_| {}, vec![Arc::new(adapter)]).await;
    let request = pb::CreateCheckoutRequest {
        provider: "exirom".into(),
        merchant_reference: "ex-timeout".into(),
        amount: Some(pb::Money { amount_minor: AMOUNT, currency: "USD".into() }),
        payment_methods: vec!["expay".into()],
        ..Default::default()
    };
    // Exirom dedupes creates on our `requestId`: the key stays retryable (PROVIDER_TIMEOUT), a
    // retry re-sends the same create for the same payment, and the payment has a check queued.
    let mut request = request;
    request.idempotency_key = "ex-timeout-key".into();
    let mut payment_ids = Vec::new();
    for attempt in 1..=2 {
        let started = std::time::Instant::now();
        let status = app.grpc.clone().create_checkout(request.clone()).await.expect_err("create must time out");
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(error_info(&status).0, "PROVIDER_TIMEOUT");
        common::wait_for_requests(&mock, "POST", "/api/v1/payments/apm", attempt).await;
        let bodies: Vec<serde_json::Value> = mock
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == "/api/v1/payments/apm")
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        payment_ids.push(bodies.last().unwrap()["requestId"].as_str().unwrap().to_owned());
    }
    assert_eq!(payment_ids[0], payment_ids[1], "the same requestId: Exirom answers with the same transaction");
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_checks WHERE reason = 'create_outcome_unknown'").await, 1);
}

/// A create that timed out leaves the payment without a transaction id. A genuine callback still
/// finds it (by our `requestId`) and schedules a lookup; the lookup re-sends the same create
/// (Exirom dedupes on `requestId`) to learn the transaction, then asks for its status.
#[tokio::test]
async fn a_timed_out_create_is_recovered_by_the_lookup() {
    let mock = MockServer::start().await;
    let token = jwt("t", in_30_days());
    Harness::auth_mock(vec![token.clone()], Arc::new(AtomicUsize::new(0))).mount(&mock).await;
    let public = "http://127.0.0.1:9";
    let same_body = || CreateBody {
        public_base_url: public.into(),
        amount: "100.00",
        currency: "USD",
        apm: json!({ "paymentMethod": "ExPay", "paymentType": "E_WALLET" }),
    };
    Mock::given(method("POST"))
        .and(path("/api/v1/payments/apm"))
        .and(same_body())
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .up_to_n_times(1)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/payments/apm"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .and(same_body())
        .respond_with(PaymentOpened)
        .mount(&mock)
        .await;
    let ctx = ProviderContext {
        public_base_url: public.into(),
        client: reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap(),
    };
    let mut config = account(format!("{}/api", mock.uri()));
    config.methods.remove("mpesa");
    let adapter = Exirom::new("default", &config, &ctx).unwrap();
    let app = spawn_app_with(|_| {}, vec![Arc::new(adapter)]).await;
    let request = pb::CreateCheckoutRequest {
        provider: "exirom".into(),
        merchant_reference: "ex-timeout-recover".into(),
        amount: Some(pb::Money { amount_minor: AMOUNT, currency: "USD".into() }),
        payment_methods: vec!["expay".into()],
        ..Default::default()
    };
    let status = app.grpc.clone().create_checkout(request).await.unwrap_err();
    assert_eq!(error_info(&status).0, "PROVIDER_TIMEOUT");
    let sent = mock.received_requests().await.unwrap();
    let create = sent.iter().find(|r| r.url.path() == "/api/v1/payments/apm").unwrap();
    let id = serde_json::from_slice::<Value>(&create.body).unwrap()["requestId"].as_str().unwrap().to_owned();
    let stored = app.get_payment(&id).await;
    assert_eq!((stored.status(), stored.provider_checkout_id.as_str()), (PaymentStatus::Pending, ""));

    let tx = transaction_id_for(&id);
    let known = pb::Payment { id: id.clone(), provider_checkout_id: tx.clone(), ..Default::default() };
    Mock::given(method("GET"))
        .and(path(format!("/api/v1/payments/apm/info/{tx}")))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(tx_info(&known, "COMPLETED", "100.0", ""), "application/json"),
        )
        .expect(1)
        .mount(&mock)
        .await;
    let r = app
        .client
        .post(format!("{}/callbacks/exirom/default", app.http))
        .header("content-type", "application/json")
        .header("X-Checksum", signed_for(&known, "100.0"))
        .body(tx_info(&known, "COMPLETED", "100.0", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "found by requestId, not 404");
    let mut p = app.get_payment(&id).await;
    for _ in 0..100 {
        if p.status() == PaymentStatus::Succeeded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        p = app.get_payment(&id).await;
    }
    assert_eq!(p.status(), PaymentStatus::Succeeded, "paid by the lookup after the repeated create");
    let creates = mock.received_requests().await.unwrap();
    let bodies: Vec<&[u8]> =
        creates.iter().filter(|r| r.url.path() == "/api/v1/payments/apm").map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0], bodies[1], "the repeated create is the same request");
    mock.verify().await;
}

// ---------------------------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn completed_callback_pays_only_through_the_lookup_then_duplicates_are_acknowledged() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    let payment = h.create("ex-success").await;
    h.mount_lookup(&payment, tx_info(&payment, "COMPLETED", "100.0", "")).await;
    let body = tx_info(&payment, "COMPLETED", "100.0", "");

    // The body's status is unsigned: the callback itself changes nothing ...
    let r = h.post_callback(&body, &signed_for(&payment, "100.0")).await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(false)));
    assert!(json["event_id"].as_str().unwrap().starts_with(&format!("{}:", payment.provider_checkout_id)));
    // ... it schedules the lookup, whose answer pays the payment.
    h.wait_for_lookups(&payment, 1).await;
    let paid = h.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
    assert_eq!(paid.provider_payment_id, format!("ExPay-{}", payment.provider_checkout_id));
    assert_eq!(paid.payment_method, "ExPay");
    assert_eq!(paid.version, payment.version + 1);
    assert!(paid.metadata.is_empty(), "no conversion: nothing added");

    // Exirom may retry the same body: 200 again, over HTTP and VerifyCallback, nothing changes.
    let again = h.post_callback(&body, &signed_for(&payment, "100.0")).await;
    assert_eq!(again.status(), 200);
    let json: Value = again.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(true), Some(false)));
    let response = h.verify(&body, &signed_for(&payment, "100.0")).await.unwrap();
    assert!(response.duplicate && !response.status_changed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.app.get_payment(&payment.id).await.version, paid.version);
    assert_eq!(h.lookups(&payment).await, 1, "duplicates schedule no further lookup");
}

#[tokio::test]
async fn a_replayed_genuine_callback_with_an_edited_status_pays_nothing() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;

    // A genuine DECLINED callback; Exirom's lookup says DECLINED too.
    let declined = h.create("ex-replay-declined").await;
    h.mount_lookup(&declined, tx_info(&declined, "DECLINED", "100.0", r#""declineCode":4051,"#)).await;
    let genuine = tx_info(&declined, "DECLINED", "100.0", r#""declineCode":4051,"#);
    let checksum = signed_for(&declined, "100.0");
    assert_eq!(h.post_callback(&genuine, &checksum).await.status(), 200);
    let failed = h.wait_for_status(&declined.id, PaymentStatus::Failed).await;
    assert_eq!(failed.failure_code, "EXIROM_DECLINE_4051");

    // Replayed with `COMPLETED` (and a conversion) under the same, still valid, checksum: not a
    // duplicate of the original, but nothing in it is applied.
    let replay = genuine
        .replace(r#""transactionStatus":"DECLINED","declineCode":4051,"#, r#""transactionStatus":"COMPLETED","#)
        .replace(r#""processedCurrency":"USD","#, r#""processedCurrency":"EUR","#);
    let r = h.verify(&replay, &checksum).await.unwrap();
    assert!(!r.duplicate && !r.status_changed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = h.app.get_payment(&declined.id).await;
    assert_eq!((after.status(), after.version), (PaymentStatus::Failed, failed.version));
    assert!(after.metadata.is_empty());

    // A PENDING payment, a genuine body replayed as COMPLETED: the lookup (PENDING) decides.
    let pending = h.create("ex-replay-pending").await;
    h.mount_lookup(&pending, tx_info(&pending, "PENDING", "100.0", "")).await;
    let forged_status = tx_info(&pending, "COMPLETED", "100.0", "");
    assert_eq!(h.post_callback(&forged_status, &signed_for(&pending, "100.0")).await.status(), 200);
    h.wait_for_lookups(&pending, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.app.get_payment(&pending.id).await.status(), PaymentStatus::Pending);
}

#[tokio::test]
async fn checksums_in_other_amount_formats_and_encodings_are_accepted() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    // `2dp` (`100.00`) and `minor` (`10000`) signed texts, the second URL-safe and unpadded.
    let first = h.create("ex-2dp").await;
    let body = tx_info(&first, "COMPLETED", "100.0", "");
    let two_dp = checksum(MERCHANT_SECRET, &format!("{ACCOUNT_ID}|100.00|USD|{}", first.provider_checkout_id));
    h.mount_lookup(&first, body.clone()).await;
    assert_eq!(h.post_callback(&body, &two_dp).await.status(), 200);
    h.wait_for_status(&first.id, PaymentStatus::Succeeded).await;

    let second = h.create("ex-minor").await;
    let body = tx_info(&second, "COMPLETED", "100.0", "");
    let minor = checksum(MERCHANT_SECRET, &format!("{ACCOUNT_ID}|10000|USD|{}", second.provider_checkout_id));
    let url_safe = minor.replace('+', "-").replace('/', "_").trim_end_matches('=').to_owned();
    let r = h.verify(&body, &url_safe).await.unwrap();
    assert!(!r.duplicate && r.payment.unwrap().id == second.id);
}

#[tokio::test]
async fn declined_callback_records_a_short_safe_failure() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    let payment = h.create("ex-declined").await;
    let body = tx_info(&payment, "DECLINED", "100.0", r#""declineCode":4051,"declineSubReason":"Insufficient funds","#);
    h.mount_lookup(&payment, body.clone()).await;
    let response = h.verify(&body, &signed_for(&payment, "100.0")).await.unwrap();
    assert!(!response.status_changed, "only the lookup changes the status");
    let failed = h.wait_for_status(&payment.id, PaymentStatus::Failed).await;
    assert_eq!(failed.failure_code, "EXIROM_DECLINE_4051");
    assert_eq!(failed.failure_message, "Insufficient funds");

    // Personal data in the sub-reason never reaches the payment.
    let second = h.create("ex-declined-pii").await;
    let body =
        tx_info(&second, "FAILED", "100.0", r#""declineCode":null,"declineSubReason":"wallet +971501234567 locked","#);
    h.mount_lookup(&second, body.clone()).await;
    assert_eq!(h.post_callback(&body, &signed_for(&second, "100.0")).await.status(), 200);
    let failed = h.wait_for_status(&second.id, PaymentStatus::Failed).await;
    assert_eq!(
        (failed.failure_code.as_str(), failed.failure_message.as_str()),
        ("EXIROM_FAILED", "Exirom reported EXIROM_FAILED")
    );
}

#[tokio::test]
async fn expired_and_cancelled_callbacks() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    for (status, want) in [("EXPIRED", PaymentStatus::Expired), ("CANCELLED", PaymentStatus::Cancelled)] {
        let payment = h.create(&format!("ex-{status}")).await;
        let body = tx_info(&payment, status, "100.0", "");
        h.mount_lookup(&payment, body.clone()).await;
        let r = h.post_callback(&body, &signed_for(&payment, "100.0")).await;
        assert_eq!(r.status(), 200, "{status}");
        h.wait_for_status(&payment.id, want).await;
    }
}

#[tokio::test]
async fn forged_callbacks_change_nothing_and_trigger_one_rate_limited_lookup() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    let payment = h.create("ex-forged").await;
    h.mount_lookup(&payment, tx_info(&payment, "PENDING", "100.0", "")).await;
    let body = tx_info(&payment, "COMPLETED", "100.0", "");
    let forged = checksum("attacker_secret", &format!("{ACCOUNT_ID}|100.0|USD|{}", payment.provider_checkout_id));

    let r = h.post_callback(&body, &forged).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "SIGNATURE_INVALID");
    h.wait_for_lookups(&payment, 1).await;

    // Again within the rate limit (HTTP, gRPC, no header): refused, no further lookup.
    assert_eq!(h.post_callback(&body, &forged).await.status(), 401);
    let status = h.verify(&body, &forged).await.unwrap_err();
    assert_eq!((status.code(), error_info(&status).0.as_str()), (tonic::Code::PermissionDenied, "SIGNATURE_INVALID"));
    let no_header = h
        .app
        .client
        .post(format!("{}/callbacks/exirom/default", h.app.http))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.lookups(&payment).await, 1);
    let unchanged = h.app.get_payment(&payment.id).await;
    assert_eq!((unchanged.status(), unchanged.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(h.app.count("SELECT COUNT(*) FROM callback_receipts").await, 0);

    // A genuine callback still goes through (nothing was marked seen); it schedules a lookup
    // (rate-limited here) and applies nothing itself.
    let r = h.post_callback(&body, &signed_for(&payment, "100.0")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], false);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
}

#[tokio::test]
async fn a_genuine_callback_cannot_be_repointed_at_another_payment() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    let cheap = h.create("ex-own").await;
    let victim = h.create("ex-victim").await;
    h.mount_lookup(&victim, tx_info(&victim, "PENDING", "100.0", "")).await;
    // `requestId` is not signed: swapping it leaves a valid checksum and names `victim`, but a
    // callback applies nothing: `victim` only gets a lookup of its own transaction.
    let body = tx_info(&cheap, "COMPLETED", "100.0", "").replace(&cheap.id, &victim.id);
    let response = h.verify(&body, &signed_for(&cheap, "100.0")).await.unwrap();
    assert!(!response.status_changed);
    h.wait_for_lookups(&victim, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.app.get_payment(&victim.id).await.status(), PaymentStatus::Pending);
    assert_eq!(h.app.get_payment(&cheap.id).await.status(), PaymentStatus::Pending);
    // A transaction nobody created, for an id nobody has: 404.
    let mut stranger = cheap.clone();
    stranger.provider_checkout_id = "tx-nobody".into();
    stranger.id = "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV".into();
    let body = tx_info(&stranger, "COMPLETED", "100.0", "");
    assert_eq!(h.post_callback(&body, &signed_for(&stranger, "100.0")).await.status(), 404);
}

#[tokio::test]
async fn amount_tampering_is_refused_or_recorded_as_a_mismatch_but_never_pays() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    let payment = h.create("ex-amount").await;
    h.mount_lookup(&payment, tx_info(&payment, "PENDING", "100.0", "")).await;

    // The amount changed in transit: the checksum no longer matches.
    let tampered = tx_info(&payment, "COMPLETED", "1.0", "");
    assert_eq!(h.post_callback(&tampered, &signed_for(&payment, "100.0")).await.status(), 401);

    // COMPLETED swapped for PROCESSING under the same checksum: the body's status is not
    // applied; the lookup it queues (PENDING) is what counts.
    let body = tx_info(&payment, "COMPLETED", "100.0", "").replace(":\"COMPLETED\"", ":\"PROCESSING\"");
    let response = h.verify(&body, &signed_for(&payment, "100.0")).await.unwrap();
    assert!(!response.status_changed && !response.duplicate);
    h.wait_for_lookups(&payment, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, ""));

    // Another order amount, signed: recorded as AMOUNT_MISMATCH (the ingress answers 200 so
    // Exirom stops resending), status unchanged, no lookup queued.
    let r = h.post_callback(&tampered, &signed_for(&payment, "1.0")).await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(false)));
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, "AMOUNT_MISMATCH"));
    // The same over VerifyCallback (another delivery): FAILED_PRECONDITION AMOUNT_MISMATCH.
    let other = tampered.replace("\"COMPLETED\"", "\"DECLINED\"");
    let status = h.verify(&other, &signed_for(&payment, "1.0")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(error_info(&status).0, "AMOUNT_MISMATCH");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        common::requests_to(&h.mock, "GET", &Harness::lookup_path(&payment)).await,
        1,
        "no lookup for a mismatch"
    );
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);

    // Exirom's lookup reports another order amount: recorded, status unchanged.
    h.mock.reset().await;
    Harness::auth_mock(vec![h.token.clone()], h.auth_calls.clone()).mount(&h.mock).await;
    h.mount_lookup(&payment, tx_info(&payment, "COMPLETED", "1.0", "")).await;
    let p = h.refresh(&payment.id).await;
    let p = match p {
        Ok(p) => p,
        Err(status) => {
            assert_eq!(error_info(&status).0, "AMOUNT_MISMATCH", "{status:?}");
            h.app.get_payment(&payment.id).await
        }
    };
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, "AMOUNT_MISMATCH"));
}

#[tokio::test]
async fn a_converted_payment_keeps_both_amounts_in_metadata() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    let payment = h.create("ex-fx").await;
    let body = tx_info(&payment, "COMPLETED", "100.0", "")
        .replace(r#""processedCurrency":"USD","#, r#""processedCurrency":"EUR","#)
        .replace(r#""processedAmount":100.0"#, r#""processedAmount":92.5"#)
        .replace(r#""conversionRate":1.0"#, r#""conversionRate":0.925"#);
    h.mount_lookup(&payment, body.clone()).await;
    assert_eq!(h.post_callback(&body, &signed_for(&payment, "100.0")).await.status(), 200);
    let paid = h.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
    let want: HashMap<String, String> = [
        ("exirom_order_amount", "100.00"),
        ("exirom_order_currency", "USD"),
        ("exirom_processed_amount", "92.50"),
        ("exirom_processed_currency", "EUR"),
        ("exirom_conversion_rate", "0.925"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(paid.metadata, want);
}

#[tokio::test]
async fn malformed_and_unknown_callbacks() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    let payment = h.create("ex-malformed").await;

    // Signed, but with no status: 400 INVALID_FIELD.
    let no_status = tx_info(&payment, "X", "100.0", "").replace(r#""transactionStatus":"X","#, "");
    let r = h.post_callback(&no_status, &signed_for(&payment, "100.0")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "INVALID_FIELD");
    // Signed, but for another Exirom account.
    let other = tx_info(&payment, "COMPLETED", "100.0", "").replace("\"accountId\":12345", "\"accountId\":999");
    let other_sig = checksum(MERCHANT_SECRET, &format!("999|100.0|USD|{}", payment.provider_checkout_id));
    let status = h.verify(&other, &other_sig).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // Not JSON, or a key given twice: nothing can be checked, so it is refused as unsigned.
    assert_eq!(h.post_callback("not json", &signed_for(&payment, "100.0")).await.status(), 401);
    let twice = tx_info(&payment, "COMPLETED", "100.0", r#""orderAmount":1.0,"#);
    assert_eq!(h.post_callback(&twice, &signed_for(&payment, "100.0")).await.status(), 401);
    assert_eq!(h.app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);

    // An unknown status (as the lookup reports it): 200, unchanged, warned and counted. (A fresh
    // payment: the refused callbacks above already used this one's rate-limited lookup.)
    let payment = h.create("ex-unknown").await;
    let unknown = tx_info(&payment, "ON_HOLD", "100.0", "");
    h.mount_lookup(&payment, unknown.clone()).await;
    let r = h.post_callback(&unknown, &signed_for(&payment, "100.0")).await;
    assert_eq!(r.status(), 200);
    h.wait_for_lookups(&payment, 1).await;
    for _ in 0..50 {
        if h.app.gateway.metrics().unknown_statuses("exirom") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = h.app.get_payment(&payment.id).await;
    assert_eq!((p.status(), p.version), (PaymentStatus::Pending, payment.version));
    assert_eq!(h.app.gateway.metrics().unknown_statuses("exirom"), 1);
}

// ---------------------------------------------------------------------------------------------
// Status lookups and returns
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_maps_the_transaction_status() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    let payment = h.create("ex-refresh").await;

    h.mount_lookup(&payment, tx_info(&payment, "PROCESSING", "100.0", "")).await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!(p.status(), PaymentStatus::Processing);

    h.mock.reset().await;
    Harness::auth_mock(vec![h.token.clone()], h.auth_calls.clone()).mount(&h.mock).await;
    h.mount_lookup(&payment, tx_info(&payment, "REFUNDED", "100.0", "")).await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!(p.status(), PaymentStatus::Processing);
    assert_eq!(h.app.gateway.metrics().unknown_statuses("exirom"), 1);

    h.mock.reset().await;
    Harness::auth_mock(vec![h.token.clone()], h.auth_calls.clone()).mount(&h.mock).await;
    h.mount_lookup(&payment, tx_info(&payment, "COMPLETED", "1.0E2", "")).await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!(p.status(), PaymentStatus::Succeeded, "1.0E2 is exactly 100.00");
    assert_eq!(h.lookups(&payment).await, 1);
    assert_eq!(h.auth_calls.load(Ordering::SeqCst), 1, "the token is still cached");

    // Provider trouble during a refresh is returned, not hidden.
    h.create_mock().mount(&h.mock).await;
    let other = h.create("ex-refresh-2").await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/v1/payments/apm/info/"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&h.mock)
        .await;
    let status = h.refresh(&other.id).await.unwrap_err();
    assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");
}

#[tokio::test]
async fn shopper_returns_redirect_and_look_the_transaction_up() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    let payment = h.create("ex-return").await;
    h.mount_lookup(&payment, tx_info(&payment, "COMPLETED", "100.0", "")).await;
    for outcome in ["success", "failure"] {
        let url = format!("{}/return/exirom/{}?outcome={outcome}", h.app.http, payment.id);
        let r = h.app.client.get(url).send().await.unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "https://shop.example/return?order=1");
    }
    h.wait_for_lookups(&payment, 1).await;
    let p = h.app.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
    assert_eq!(p.status(), PaymentStatus::Succeeded, "the lookup, not the browser, paid it");
    assert_eq!(h.lookups(&payment).await, 1, "rate-limited");
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn config_checks_exirom_accounts_without_leaking_secrets() {
    let mut config = paygate::config::Config::default();
    let mut bad = account("sandbox.api.exirom.com/api".into());
    bad.account_id = String::new();
    bad.callback_amount_formats = vec!["raw_token".into(), "cents".into()];
    bad.methods.insert("broken".into(), ExiromMethod::default());
    config.providers.exirom.accounts.insert("ae-shop".into(), bad);
    let errors = config.validate().unwrap_err().join("\n");
    for key in ["base_url", "account_id", "callback_amount_formats", "methods.broken"] {
        assert!(errors.contains(&format!("providers.exirom.accounts.ae-shop.{key}")), "{errors}");
    }
    assert!(!errors.contains(MERCHANT_SECRET) && !errors.contains(MERCHANT_KEY), "{errors}");
    let out = config.to_redacted_toml();
    assert!(!out.contains(MERCHANT_SECRET) && !out.contains(MERCHANT_KEY), "{out}");
    let mut disabled = paygate::config::Config::default();
    disabled.providers.exirom.enabled = false;
    disabled.providers.exirom.accounts.insert("off".into(), ExiromAccount::default());
    assert!(disabled.validate().is_ok(), "a disabled provider's accounts are not checked");
}

/// The failure the durable check queue fixes: a shopper return looks the payment up (PENDING),
/// and a genuine COMPLETED callback arrives a second later. Its lookup used to be dropped by a
/// 10 s in-memory rate limit; now it is a queued check and the payment reaches SUCCEEDED.
#[tokio::test]
async fn a_callback_right_after_a_return_lookup_is_not_lost() {
    let h = Harness::start().await;
    h.create_mock().mount(&h.mock).await;
    let payment = h.create("ex-lost").await;
    h.mount_lookup(&payment, tx_info(&payment, "PENDING", "100.0", "")).await;
    let r = h.app.client.get(format!("{}/return/exirom/{}", h.app.http, payment.id)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    h.wait_for_lookups(&payment, 1).await;

    h.mock.reset().await;
    Harness::auth_mock(vec![h.token.clone()], h.auth_calls.clone()).mount(&h.mock).await;
    h.mount_lookup(&payment, tx_info(&payment, "COMPLETED", "100.0", "")).await;
    let callback = tx_info(&payment, "COMPLETED", "100.0", "");
    assert_eq!(h.post_callback(&callback, &signed_for(&payment, "100.0")).await.status(), 200);
    let paid = h.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(h.lookups(&payment).await, 1, "one lookup after the callback");
    assert_eq!(h.app.count("SELECT COUNT(*) FROM provider_checks").await, 0);
}
