//! No secret and no customer data reaches the logs or `check-config`: the real `paygate` binary,
//! configured by environment with one account of every provider (wiremock doubles on 127.0.0.1),
//! runs a whole flow per provider with canary credentials, caller tokens, provider-issued tokens,
//! e-mails and phone numbers, at the most verbose log level, once with text and once with JSON
//! logs. Everything it writes (standard output and error), and everything `check-config` prints
//! with the same environment, is searched for every canary.

use std::time::Duration;

use paygate::pb::{self, PaymentStatus};
use paygate::providers::signature::{hmac_sha256_hex, sha256_hex, sign_timestamped};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::common::{self, Process, fresh_database_url, sandbox_body, spawn_process_captured};
use crate::conformance::{CANCEL_URL, RETURN_URL};

// ---------------------------------------------------------------------------------------------
// Canaries: every one contains `CANARY` (or `canary`), so that even a part of one is found.
// ---------------------------------------------------------------------------------------------

const CALLER_TOKEN: &str = "CANARY-caller-token-5c1e";
const WRONG_TOKEN: &str = "CANARY-wrong-caller-token-93d0";
const DB_PASSWORD: &str = "CANARY-db-password-0b7e";
const SANDBOX_SECRET: &str = "CANARY-sandbox-webhook-secret-4d2a";

const XPAY_SECRET_KEY: &str = "CANARY-xpay-secret-key-7f3a";
const XPAY_OLD_WEBHOOK_SECRET: &str = "CANARY-xpay-old-webhook-secret-1b8c";
const XPAY_WEBHOOK_SECRET: &str = "CANARY-xpay-webhook-secret-e2d4";

const EXIMPE_CLIENT_SECRET: &str = "CANARY-eximpe-client-secret-6a0f";
const EXIMPE_CALLBACK_KEY: &str = "CANARY-eximpe-callback-key-9e31";
/// Issued by EximPe for the SDK; kept private.
const EXIMPE_SESSION: &str = "CANARY-eximpe-session-token-77b2";

const HITPAY_API_KEY: &str = "CANARY-hitpay-api-key-3f6d";
const HITPAY_SALT: &str = "CANARY-hitpay-salt-a41e";

const XSTAK_API_KEY: &str = "CANARY-xstak-api-key-c0d9";
const XSTAK_HMAC_SECRET: &str = "CANARY-xstak-hmac-secret-58fa";
const XSTAK_WEBHOOK_SECRET: &str = "CANARY-xstak-webhook-secret-2e67";
/// XStak's `pi_client_secret`, issued with each intent.
const XSTAK_CLIENT_SECRET: &str = "CANARY-xstak-pi-client-secret-d1c3";

const EXIROM_MERCHANT_KEY: &str = "CANARY-exirom-merchant-key-0e5b";
const EXIROM_MERCHANT_SECRET: &str = "CANARY-exirom-merchant-secret-b93a";
/// Name inside the bearer token Exirom issues (its `sig-…` part).
const EXIROM_TOKEN_NAME: &str = "CANARY-exirom-token-f47c";
const EXIROM_ACCOUNT_ID: &str = "12345";

/// Every provider of the flow, with the index of its shopper's phone.
const PROVIDERS: [&str; 6] = ["sandbox", "xpay", "eximpe", "hitpay", "xstak", "exirom"];

fn email(provider: &str) -> String {
    format!("canary.buyer+{provider}@example.com")
}

fn phone(provider: &str) -> String {
    let n = PROVIDERS.iter().position(|p| *p == provider).expect("a provider of the flow");
    format!("+20100CANARY{n}")
}

/// Every value that must never be written.
fn canaries() -> Vec<String> {
    let mut all: Vec<String> = [
        CALLER_TOKEN,
        WRONG_TOKEN,
        DB_PASSWORD,
        SANDBOX_SECRET,
        XPAY_SECRET_KEY,
        XPAY_OLD_WEBHOOK_SECRET,
        XPAY_WEBHOOK_SECRET,
        EXIMPE_CLIENT_SECRET,
        EXIMPE_CALLBACK_KEY,
        EXIMPE_SESSION,
        HITPAY_API_KEY,
        HITPAY_SALT,
        XSTAK_API_KEY,
        XSTAK_HMAC_SECRET,
        XSTAK_WEBHOOK_SECRET,
        XSTAK_CLIENT_SECRET,
        EXIROM_MERCHANT_KEY,
        EXIROM_MERCHANT_SECRET,
        EXIROM_TOKEN_NAME,
        &exirom_token(),
    ]
    .map(str::to_owned)
    .to_vec();
    for provider in PROVIDERS {
        let email = email(provider);
        let local = email.split('@').next().expect("a local part").to_owned();
        all.extend([email, local, phone(provider)]);
    }
    all
}

/// Fails naming every canary `text` holds, and where.
fn assert_no_canary(what: &str, text: &str) {
    let mut found = Vec::new();
    for canary in canaries() {
        if let Some(at) = text.find(&canary) {
            found.push(format!("{canary} in: {}", line_at(text, at)));
        }
    }
    // Any part of one (a prefix, a value cut or re-cased): every canary spells CANARY.
    if found.is_empty()
        && let Some(at) = text.to_ascii_lowercase().find("canary")
    {
        found.push(format!("`canary` in: {}", line_at(text, at)));
    }
    assert!(found.is_empty(), "{what} leaks:\n{}", found.join("\n"));
}

fn line_at(text: &str, at: usize) -> &str {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    &text[start..end]
}

fn exirom_token() -> String {
    crate::exirom::jwt(EXIROM_TOKEN_NAME, chrono::Utc::now().timestamp() + 30 * 86_400)
}

// ---------------------------------------------------------------------------------------------
// The doubles: one wiremock server per provider, requiring the canary credentials
// ---------------------------------------------------------------------------------------------

struct Doubles {
    xpay: MockServer,
    eximpe: MockServer,
    hitpay: MockServer,
    xstak: MockServer,
    exirom: MockServer,
    /// The token Exirom's double issues.
    exirom_token: String,
}

impl Doubles {
    async fn start() -> Self {
        let doubles = Self {
            xpay: MockServer::start().await,
            eximpe: MockServer::start().await,
            hitpay: MockServer::start().await,
            xstak: MockServer::start().await,
            exirom: MockServer::start().await,
            exirom_token: exirom_token(),
        };
        let token = doubles.exirom_token.clone();
        Mock::given(method("POST"))
            .and(path("/api/v1/auth"))
            .and(move |r: &Request| {
                crate::conformance::json_body(r).ok()
                    == Some(json!({ "merchantKey": EXIROM_MERCHANT_KEY, "merchantSecret": EXIROM_MERCHANT_SECRET }))
            })
            .respond_with(ResponseTemplate::new(200).set_body_string(token))
            .mount(&doubles.exirom)
            .await;
        doubles
    }

    /// The configuration of the process: one `default` account per provider at its double,
    /// every credential a canary, and one caller whose token is a canary.
    fn env(&self, db_url: &str, log_format: &str) -> Vec<(String, String)> {
        let account = |provider: &str, key: &str| format!("PAYGATE_PROVIDERS__{provider}__ACCOUNTS__DEFAULT__{key}");
        let mut env = vec![
            ("PAYGATE_DATABASE__URL".to_owned(), db_url.to_owned()),
            ("PAYGATE_TELEMETRY__LOG_FORMAT".into(), log_format.into()),
            ("RUST_LOG".into(), "trace".into()),
            ("PAYGATE_AUTH__CALLERS__SHOP__TOKEN_SHA256".into(), sha256_hex(CALLER_TOKEN.as_bytes())),
            ("PAYGATE_AUTH__CALLERS__SHOP__PERMISSIONS".into(), "create,read,verify,cancel,list,watch".into()),
            // Checks queued by callbacks run at once.
            ("PAYGATE_RECONCILER__POLL_INTERVAL_MS".into(), "50".into()),
            ("PAYGATE_RECONCILER__UNTRUSTED_MIN_INTERVAL_SECS".into(), "0".into()),
            (account("SANDBOX", "WEBHOOK_SECRET"), SANDBOX_SECRET.into()),
        ];
        let accounts: [(&str, &str, String); 22] = [
            ("XPAY", "BASE_URL", self.xpay.uri()),
            ("XPAY", "SECRET_KEY", XPAY_SECRET_KEY.into()),
            ("XPAY", "WEBHOOK_SECRETS", format!("{XPAY_OLD_WEBHOOK_SECRET},{XPAY_WEBHOOK_SECRET}")),
            ("XPAY", "CUSTOMER_EMAIL_FIELD", "customerEmail".into()),
            ("EXIMPE", "BASE_URL", self.eximpe.uri()),
            ("EXIMPE", "CLIENT_ID", "cid-secrets-test".into()),
            ("EXIMPE", "CLIENT_SECRET", EXIMPE_CLIENT_SECRET.into()),
            ("EXIMPE", "CALLBACK_KEY", EXIMPE_CALLBACK_KEY.into()),
            ("EXIMPE", "HS_CODE", "49011010".into()),
            ("HITPAY", "BASE_URL", format!("{}/v1", self.hitpay.uri())),
            ("HITPAY", "API_KEY", HITPAY_API_KEY.into()),
            ("HITPAY", "SALT", HITPAY_SALT.into()),
            ("XSTAK", "BASE_URL", self.xstak.uri()),
            ("XSTAK", "API_KEY", XSTAK_API_KEY.into()),
            ("XSTAK", "ACCOUNT_ID", "acc_6512".into()),
            ("XSTAK", "HMAC_SECRET", XSTAK_HMAC_SECRET.into()),
            ("XSTAK", "WEBHOOK_SECRET", XSTAK_WEBHOOK_SECRET.into()),
            ("XSTAK", "STATUS_LOOKUP", "true".into()),
            ("EXIROM", "BASE_URL", format!("{}/api", self.exirom.uri())),
            ("EXIROM", "MERCHANT_KEY", EXIROM_MERCHANT_KEY.into()),
            ("EXIROM", "MERCHANT_SECRET", EXIROM_MERCHANT_SECRET.into()),
            ("EXIROM", "ACCOUNT_ID", EXIROM_ACCOUNT_ID.into()),
        ];
        env.extend(accounts.into_iter().map(|(provider, key, value)| (account(provider, key), value)));
        env.push((account("EXIROM", "METHODS__EXPAY__PAYMENT_METHOD"), "ExPay".into()));
        env.push((account("EXIROM", "METHODS__EXPAY__PAYMENT_TYPE"), "E_WALLET".into()));
        env
    }
}

/// A provider's answer that echoes the shopper's e-mail and phone everywhere it can.
fn echoing_error(status: u16, provider: &str) -> ResponseTemplate {
    let (email, phone) = (email(provider), phone(provider));
    ResponseTemplate::new(status).set_body_json(json!({
        "success": false,
        "code": email, "message": format!("invalid buyer {email} / {phone}"), "responseStatus": phone,
        "error": { "code": format!("bad {email}"), "message": format!("{email} {phone}"), "details": { "email": email } },
        "errors": { "email": [format!("{email} is invalid")], "phone": [phone] },
    }))
}

/// A 200 answer to a status lookup that is not the documented shape and echoes the shopper.
fn echoing_lookup(provider: &str) -> ResponseTemplate {
    let (email, phone) = (email(provider), phone(provider));
    ResponseTemplate::new(200).set_body_json(json!({
        "success": true, "status": email, "pi_status": phone, "transactionStatus": email,
        "data": { "status": email, "_id": phone, "amount": email, "email": email, "phone": phone },
        "id": phone, "amountTotal": email, "email": email, "phone": phone,
    }))
}

// ---------------------------------------------------------------------------------------------
// The client side
// ---------------------------------------------------------------------------------------------

/// A running process and how to call it.
struct Client<'a> {
    process: &'a Process,
    http: reqwest::Client,
}

impl Client<'_> {
    /// `message` with the caller's canary token.
    fn authed<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {CALLER_TOKEN}").parse().expect("metadata value");
        request.metadata_mut().insert("authorization", value);
        request
    }

    fn request(&self, provider: &str, reference: &str, amount_minor: i64, currency: &str) -> pb::CreateCheckoutRequest {
        pb::CreateCheckoutRequest {
            provider: provider.into(),
            merchant_reference: reference.into(),
            amount: Some(pb::Money { amount_minor, currency: currency.into() }),
            return_url: RETURN_URL.into(),
            cancel_url: CANCEL_URL.into(),
            description: "Secrets test".into(),
            customer: Some(pb::Customer {
                name: "Canary Buyer".into(),
                email: email(provider),
                phone: phone(provider),
            }),
            ..Default::default()
        }
    }

    async fn create(&self, request: pb::CreateCheckoutRequest) -> Result<pb::Payment, tonic::Status> {
        let response = self.process.grpc.clone().create_checkout(Self::authed(request)).await?;
        Ok(response.into_inner().payment.expect("payment"))
    }

    async fn status(&self, id: &str, refresh: bool) -> Result<pb::Payment, tonic::Status> {
        let request = pb::GetPaymentStatusRequest { payment_id: id.into(), refresh, ..Default::default() };
        let response = self.process.grpc.clone().get_payment_status(Self::authed(request)).await?;
        Ok(response.into_inner().payment.expect("payment"))
    }

    /// Waits (up to 10 s) until `id` has `want` (a queued lookup changes it in the background).
    async fn wait_for(&self, id: &str, want: PaymentStatus) {
        let mut payment = self.status(id, false).await.expect("status");
        for _ in 0..200 {
            if payment.status() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            payment = self.status(id, false).await.expect("status");
        }
        panic!("{id} stayed {:?}, expected {want:?}", payment.status());
    }

    /// POSTs a callback to `/callbacks/{provider}/default[?query]`; returns the status code.
    async fn deliver(&self, provider: &str, query: &str, headers: &[(&str, &str)], body: &str) -> u16 {
        let mut url = format!("{}/callbacks/{provider}/default", self.process.http);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut request = self.http.post(url).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("callback POST").status().as_u16()
    }

    /// Hands a callback to VerifyCallback; the error's reason when refused.
    async fn verify(&self, provider: &str, query: &str, headers: &[(&str, &str)], body: &str) -> Result<(), String> {
        let request = pb::VerifyCallbackRequest {
            provider: provider.into(),
            account: "default".into(),
            body: body.as_bytes().to_vec(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            query: query.into(),
        };
        match self.process.grpc.clone().verify_callback(Self::authed(request)).await {
            Ok(_) => Ok(()),
            Err(status) => Err(common::error_info(&status).0),
        }
    }

    /// A create the provider refuses with an answer that echoes the shopper.
    async fn refused_create(&self, mock: &MockServer, create_path: &str, request: pb::CreateCheckoutRequest) {
        let provider = request.provider.clone();
        Mock::given(method("POST"))
            .and(path(create_path))
            .respond_with(echoing_error(400, &provider))
            .up_to_n_times(1)
            .mount(mock)
            .await;
        let status = self.create(request).await.expect_err("the provider refuses");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{provider}: {status:?}");
        assert_no_canary(&format!("{provider}'s refused create"), &format!("{status:?}"));
    }

    /// GetPaymentStatus with refresh against a lookup answer that echoes the shopper: an error
    /// (or the payment left as it was) that names no canary.
    async fn unusable_refresh(&self, provider: &str, id: &str) {
        match self.status(id, true).await {
            Ok(payment) => assert_no_canary(&format!("{provider}'s refresh"), &format!("{payment:?}")),
            Err(status) => assert_no_canary(&format!("{provider}'s refresh"), &format!("{status:?}")),
        }
    }
}

/// Mounts `answer` as the next (one) answer to `GET lookup_path`, requiring `auth`.
async fn mount_lookup(mock: &MockServer, lookup_path: &str, auth: (&str, &str), answer: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(lookup_path))
        .and(header(auth.0, auth.1))
        .respond_with(answer)
        .up_to_n_times(1)
        .mount(mock)
        .await;
}

// ---------------------------------------------------------------------------------------------
// One flow per provider
// ---------------------------------------------------------------------------------------------

async fn sandbox_flow(c: &Client<'_>) {
    let payment = c.create(c.request("sandbox", "sec-sandbox", 1234, "USD")).await.expect("create");
    c.status(&payment.id, true).await.expect("refresh");
    let body = sandbox_body("evt_sec_sbx", &payment.id, "succeeded", 1234, "USD");
    let forged = sign_timestamped(b"attacker", chrono::Utc::now().timestamp(), body.as_bytes());
    assert_eq!(c.deliver("sandbox", "", &[("Paygate-Sandbox-Signature", &forged)], &body).await, 401);
    let signature = sign_timestamped(SANDBOX_SECRET.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes());
    assert_eq!(c.deliver("sandbox", "", &[("Paygate-Sandbox-Signature", &signature)], &body).await, 200);
    c.wait_for(&payment.id, PaymentStatus::Succeeded).await;

    // The hosted page signs its own callback with the secret.
    let other = c.create(c.request("sandbox", "sec-sandbox-page", 1234, "USD")).await.expect("create");
    let page = format!("{}/sandbox/checkout/{}", c.process.http, other.id);
    let pressed = c.http.post(page).form(&[("action", "pay")]).send().await.expect("page POST");
    assert!(pressed.status().is_redirection(), "{}", pressed.status());
    c.wait_for(&other.id, PaymentStatus::Succeeded).await;
}

async fn xpay_flow(c: &Client<'_>, mock: &MockServer) {
    let bearer = format!("Bearer {XPAY_SECRET_KEY}");
    c.refused_create(mock, "/checkout/sessions", c.request("xpay", "sec-xpay-refused", 149_900, "EGP")).await;
    Mock::given(method("POST"))
        .and(path("/checkout/sessions"))
        .and(header("authorization", bearer.as_str()))
        .respond_with(crate::xpay::session_created)
        .mount(mock)
        .await;
    let payment = c.create(c.request("xpay", "sec-xpay", 149_900, "EGP")).await.expect("create");
    let lookup = format!("/checkout/sessions/{}", payment.provider_checkout_id);
    mount_lookup(mock, &lookup, ("authorization", &bearer), echoing_lookup("xpay")).await;
    c.unusable_refresh("xpay", &payment.id).await;
    let mut open = crate::xpay::session(&payment.provider_checkout_id, &payment.id, "open", 149_900, "EGP");
    open["customerEmail"] = json!(email("xpay"));
    mount_lookup(mock, &lookup, ("authorization", &bearer), ResponseTemplate::new(200).set_body_json(open)).await;
    c.status(&payment.id, true).await.expect("refresh");

    let mut object = crate::xpay::session(&payment.provider_checkout_id, &payment.id, "complete", 149_900, "EGP");
    object["customerEmail"] = json!(email("xpay"));
    object["customerDetails"] = json!({ "email": email("xpay"), "phone": phone("xpay") });
    let body = json!({ "id": "evt_sec_xpay", "object": "event", "type": "checkout.session.completed",
        "created": chrono::Utc::now().timestamp(), "data": { "object": object } })
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let forged = sign_timestamped(b"whsec_attacker", now, body.as_bytes());
    assert_eq!(c.deliver("xpay", "", &[("XPay-Signature", &forged)], &body).await, 401);
    assert_eq!(c.verify("xpay", "", &[("XPay-Signature", &forged)], &body).await, Err("SIGNATURE_INVALID".into()));
    let signature = sign_timestamped(XPAY_WEBHOOK_SECRET.as_bytes(), now, body.as_bytes());
    assert_eq!(c.deliver("xpay", "", &[("XPay-Signature", &signature)], &body).await, 200);
    c.wait_for(&payment.id, PaymentStatus::Succeeded).await;
}

async fn eximpe_flow(c: &Client<'_>, mock: &MockServer) {
    let request = |reference: &str| pb::CreateCheckoutRequest {
        payment_methods: vec!["UPI".into()],
        ..c.request("eximpe", reference, 100_000, "INR")
    };
    c.refused_create(mock, "/pg/orders/", request("sec-eximpe-refused")).await;
    Mock::given(method("POST"))
        .and(path("/pg/orders/"))
        .and(header("x-client-secret", EXIMPE_CLIENT_SECRET))
        .respond_with(|r: &Request| {
            let body = crate::conformance::json_body(r).unwrap_or_default();
            let reference = body["reference_id"].as_str().unwrap_or("pay_unknown");
            ResponseTemplate::new(200).set_body_json(json!({ "success": true, "message": "created",
                "data": { "session_id": EXIMPE_SESSION, "order_id": format!("OD{}", &reference[4..]) } }))
        })
        .mount(mock)
        .await;
    let payment = c.create(request("sec-eximpe")).await.expect("create");
    let order_id = payment.provider_checkout_id.clone();
    let lookup = format!("/pg/orders/{order_id}");
    let auth = ("x-client-secret", EXIMPE_CLIENT_SECRET);
    let order = |status: &str| {
        ResponseTemplate::new(200).set_body_json(json!({ "success": true, "message": "ok", "data": {
            "order_id": order_id, "reference_id": payment.id, "amount": "1000.00", "currency": "INR", "mop_type": "UPI",
            "buyer": { "name": "Canary Buyer", "email": email("eximpe"), "phone": phone("eximpe") },
            "payments": [{ "payment_id": "PR1469384681", "mop_type": "UPI", "status": "captured",
                           "status_message": email("eximpe"), "created_at": "2025-06-23T10:45:00Z" }],
            "status": status, "status_message": phone("eximpe"), "created_at": "2025-06-23T10:44:11Z", "is_testing": true } }))
    };
    mount_lookup(mock, &lookup, auth, echoing_lookup("eximpe")).await;
    c.unusable_refresh("eximpe", &payment.id).await;
    mount_lookup(mock, &lookup, auth, order("payment_pending")).await;
    c.status(&payment.id, true).await.expect("refresh");

    // The shopper's browser brings the signed result; it only queues a lookup, which pays.
    Mock::given(method("GET")).and(path(&lookup)).respond_with(order("payment_successful")).mount(mock).await;
    let fields = |key: &str| {
        crate::eximpe::signed_form(
            key,
            &[
                ("order_id", &order_id),
                ("payment_id", "PR1469384681"),
                ("status", "payment_successful"),
                ("message", &format!("Paid by {} {}", email("eximpe"), phone("eximpe"))),
                ("mop_type", "UPI"),
                ("bank_ref_num", "BR-0001"),
                ("payment_completed_at", "2026-11-23 10:00:00+00:00"),
            ],
        )
    };
    let query = format!("payment_id={}", payment.id);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(c.deliver("eximpe", &query, &form, &fields("attacker_key")).await, 303);
    assert_eq!(c.verify("eximpe", &query, &form, &fields("attacker_key")).await, Err("SIGNATURE_INVALID".into()));
    assert_eq!(c.deliver("eximpe", &query, &form, &fields(EXIMPE_CALLBACK_KEY)).await, 303);
    c.wait_for(&payment.id, PaymentStatus::Succeeded).await;
}

async fn hitpay_flow(c: &Client<'_>, mock: &MockServer) {
    let request = |reference: &str| pb::CreateCheckoutRequest {
        payment_methods: vec!["card".into(), "paynow_online".into()],
        ..c.request("hitpay", reference, 250_000, "SGD")
    };
    c.refused_create(mock, "/v1/payment-requests", request("sec-hitpay-refused")).await;
    let object = |id: &str, payment_id: &str, status: &str| {
        json!({ "id": id, "name": "Canary Buyer", "email": email("hitpay"), "phone": phone("hitpay"),
            "amount": "2,500.00", "currency": "sgd", "status": status, "purpose": "Secrets test",
            "reference_number": payment_id, "payment_methods": ["card"],
            "url": format!("https://securecheckout.sandbox.hit-pay.com/payment-request/@paygate/{id}/checkout"),
            "allow_repeated_payments": false, "expiry_date": null,
            "created_at": "2025-05-21T16:57:25", "updated_at": "2025-05-21T16:57:25" })
    };
    Mock::given(method("POST"))
        .and(path("/v1/payment-requests"))
        .and(header("x-business-api-key", HITPAY_API_KEY))
        .respond_with(crate::hitpay::RequestCreated { encoding: crate::hitpay::Encoding::Form })
        .mount(mock)
        .await;
    let payment = c.create(request("sec-hitpay")).await.expect("create");
    let lookup = format!("/v1/payment-requests/{}", payment.provider_checkout_id);
    let auth = ("x-business-api-key", HITPAY_API_KEY);
    mount_lookup(mock, &lookup, auth, echoing_lookup("hitpay")).await;
    c.unusable_refresh("hitpay", &payment.id).await;
    let pending = object(&payment.provider_checkout_id, &payment.id, "pending");
    mount_lookup(mock, &lookup, auth, ResponseTemplate::new(200).set_body_json(pending)).await;
    c.status(&payment.id, true).await.expect("refresh");

    let webhook = |salt: &str| {
        crate::hitpay::signed_form(
            salt,
            &[
                ("payment_id", "charge-secrets"),
                ("payment_request_id", &payment.provider_checkout_id),
                ("phone", &phone("hitpay")),
                ("amount", "2,500.00"),
                ("currency", "sgd"),
                ("status", "completed"),
                ("reference_number", &payment.id),
            ],
        )
    };
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(c.deliver("hitpay", "", &form, &webhook("attacker_salt")).await, 401);
    assert_eq!(c.verify("hitpay", "", &form, &webhook("attacker_salt")).await, Err("SIGNATURE_INVALID".into()));
    assert_eq!(c.deliver("hitpay", "", &form, &webhook(HITPAY_SALT)).await, 200);
    c.wait_for(&payment.id, PaymentStatus::Succeeded).await;
}

async fn xstak_flow(c: &Client<'_>, mock: &MockServer) {
    c.refused_create(mock, "/public/v1/payment/checkout", c.request("xstak", "sec-xstak-refused", 1250, "PKR")).await;
    Mock::given(method("POST"))
        .and(path("/public/v1/payment/checkout"))
        .and(header("x-api-key", XSTAK_API_KEY))
        .and(|r: &Request| {
            let signature = r.headers.get("x-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
            signature == hmac_sha256_hex(XSTAK_HMAC_SECRET.as_bytes(), &r.body)
        })
        .respond_with(|r: &Request| {
            let body = crate::conformance::json_body(r).unwrap_or_default();
            let reference = body["metadata"]["order_reference"].as_str().unwrap_or("pay_unknown").to_owned();
            let id = format!("xpay_pi_{}", reference[4..].to_lowercase());
            let answer = json!({ "success": true, "responseStatus": "OK", "message": "ok", "data": {
                "_id": id, "pi_client_secret": XSTAK_CLIENT_SECRET, "amount": "__AMOUNT__", "currency": "PKR",
                "object_name": "payment_intent", "pi_status": "requires_payment_method",
                "customer": body["customer"], "metadata": { "order_reference": reference },
                "checkout_page_url": format!("https://xpay-checkout-stage.xstak.com/?order_id={reference}&id={id}") } })
            .to_string()
            .replace(r#""__AMOUNT__""#, "12.5");
            ResponseTemplate::new(200).set_body_raw(answer, "application/json")
        })
        .mount(mock)
        .await;
    let payment = c.create(c.request("xstak", "sec-xstak", 1250, "PKR")).await.expect("create");
    let lookup = format!("/public/v1/payment/intent/{}", payment.provider_checkout_id);
    let auth = ("x-api-key", XSTAK_API_KEY);
    mount_lookup(mock, &lookup, auth, echoing_lookup("xstak")).await;
    c.unusable_refresh("xstak", &payment.id).await;
    let pending = json!({ "success": true, "responseStatus": "OK", "data": { "_id": payment.provider_checkout_id,
        "amount": 12.5, "currency": "PKR", "pi_status": "requires_payment_method", "object_name": "payment_intent",
        "pi_client_secret": XSTAK_CLIENT_SECRET, "customer": { "email": email("xstak"), "phone": phone("xstak") } } });
    mount_lookup(mock, &lookup, auth, ResponseTemplate::new(200).set_body_json(pending)).await;
    c.status(&payment.id, true).await.expect("refresh");

    let mut body: Value = serde_json::from_str(&crate::xstak::webhook(&payment, "succeeded", "12.5", true)).unwrap();
    body["customer"] = json!({ "name": "Canary Buyer", "email": email("xstak"), "phone": phone("xstak") });
    let body = body.to_string();
    let forged = hmac_sha256_hex(b"attacker", body.as_bytes());
    let json_type = ("content-type", "application/json");
    assert_eq!(c.deliver("xstak", "", &[json_type, ("x-signature", &forged)], &body).await, 401);
    let refused = c.verify("xstak", "", &[json_type, ("x-signature", &forged)], &body).await;
    assert_eq!(refused, Err("SIGNATURE_INVALID".into()));
    let signature = hmac_sha256_hex(XSTAK_WEBHOOK_SECRET.as_bytes(), body.as_bytes());
    assert_eq!(c.deliver("xstak", "", &[json_type, ("x-signature", &signature)], &body).await, 200);
    c.wait_for(&payment.id, PaymentStatus::Succeeded).await;
}

async fn exirom_flow(c: &Client<'_>, mock: &MockServer, token: &str) {
    let request = |reference: &str| pb::CreateCheckoutRequest {
        payment_methods: vec!["expay".into()],
        ..c.request("exirom", reference, 10_000, "USD")
    };
    let bearer = format!("Bearer {token}");
    c.refused_create(mock, "/api/v1/payments/apm", request("sec-exirom-refused")).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/payments/apm"))
        .and(header("authorization", bearer.as_str()))
        .respond_with(|r: &Request| {
            let body = crate::conformance::json_body(r).unwrap_or_default();
            let request_id = body["requestId"].as_str().unwrap_or("pay_unknown");
            let tx = format!("tx-{}", &request_id[4..]);
            ResponseTemplate::new(200).set_body_json(json!({ "requestId": request_id, "transactionId": tx,
                "transactionStatus": "PENDING", "apmResponseData": { "paymentMethod": "ExPay", "paymentType": "E_WALLET",
                "redirectUrl": format!("https://pay.expay.example.com/checkout/{tx}") } }))
        })
        .mount(mock)
        .await;
    let payment = c.create(request("sec-exirom")).await.expect("create");
    let lookup = format!("/api/v1/payments/apm/info/{}", payment.provider_checkout_id);
    let auth = ("authorization", bearer.as_str());
    let shopper = format!(r#""billingEmail":"{}","billingPhone":"{}","#, email("exirom"), phone("exirom"));
    let info = |status: &str| {
        let body = crate::exirom::tx_info(&payment, status, "100.0", &shopper);
        ResponseTemplate::new(200).set_body_raw(body, "application/json")
    };
    mount_lookup(mock, &lookup, auth, echoing_lookup("exirom")).await;
    c.unusable_refresh("exirom", &payment.id).await;
    mount_lookup(mock, &lookup, auth, info("PENDING")).await;
    c.status(&payment.id, true).await.expect("refresh");

    // Every callback only queues a lookup, which pays.
    Mock::given(method("GET"))
        .and(path(&lookup))
        .and(header(auth.0, auth.1))
        .respond_with(info("COMPLETED"))
        .mount(mock)
        .await;
    let body = crate::exirom::tx_info(&payment, "COMPLETED", "100.0", &shopper);
    let signed = format!("{EXIROM_ACCOUNT_ID}|100.0|USD|{}", payment.provider_checkout_id);
    let forged = crate::exirom::checksum("attacker_secret", &signed);
    let json_type = ("content-type", "application/json");
    assert_eq!(c.deliver("exirom", "", &[json_type, ("X-Checksum", &forged)], &body).await, 401);
    let refused = c.verify("exirom", "", &[json_type, ("X-Checksum", &forged)], &body).await;
    assert_eq!(refused, Err("SIGNATURE_INVALID".into()));
    let checksum = crate::exirom::checksum(EXIROM_MERCHANT_SECRET, &signed);
    assert_eq!(c.deliver("exirom", "", &[json_type, ("X-Checksum", &checksum)], &body).await, 200);
    c.wait_for(&payment.id, PaymentStatus::Succeeded).await;
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// The database URL with the canary as its password (the test server trusts loopback, so the
/// password is never checked; a URL that has one already keeps it).
async fn database_url_with_password() -> String {
    let mut url = url::Url::parse(&fresh_database_url().await).expect("a URL");
    if url.password().is_none() {
        url.set_password(Some(DB_PASSWORD)).expect("a password can be set");
    }
    url.to_string()
}

/// Runs every flow against a process logging in `log_format`, at fresh doubles; returns all it
/// wrote.
async fn run_flows(log_format: &str) -> String {
    let doubles = &Doubles::start().await;
    let db_url = database_url_with_password().await;
    let env = doubles.env(&db_url, log_format);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut process = spawn_process_captured(&db_url, &env).await;
    let output = process.output.clone().expect("captured output");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let c = Client { process: &process, http: client };

    // A wrong token is refused (and neither token is written anywhere).
    let mut wrong =
        tonic::Request::new(pb::GetPaymentStatusRequest { payment_id: "pay_x".into(), ..Default::default() });
    wrong.metadata_mut().insert("authorization", format!("Bearer {WRONG_TOKEN}").parse().unwrap());
    let refused = process.grpc.clone().get_payment_status(wrong).await.expect_err("a wrong token is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    sandbox_flow(&c).await;
    xpay_flow(&c, &doubles.xpay).await;
    eximpe_flow(&c, &doubles.eximpe).await;
    hitpay_flow(&c, &doubles.hitpay).await;
    xstak_flow(&c, &doubles.xstak).await;
    exirom_flow(&c, &doubles.exirom, &doubles.exirom_token).await;

    process.sigterm();
    let status = process.wait_exit(Duration::from_secs(15)).await.expect("paygate stops on SIGTERM");
    assert!(status.success(), "{status}");
    // The readers reach the end of both pipes once the process is gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = output.text();
    assert!(logs.contains("paygate listening"), "the logs were captured:\n{logs}");
    if log_format == "json" {
        assert!(logs.lines().filter(|l| l.starts_with('{')).all(|l| serde_json::from_str::<Value>(l).is_ok()));
    }
    logs
}

/// `paygate check-config` with the environment of the flows: its standard output and error.
fn check_config(doubles: &Doubles, db_url: &str) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_paygate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PAYGATE_") || k.starts_with("OTEL_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("check-config")
        .env("PAYGATE_SERVER__GRPC_ADDR", "127.0.0.1:0")
        .env("PAYGATE_SERVER__HTTP_ADDR", "127.0.0.1:0")
        .envs(doubles.env(db_url, "json"))
        .output()
        .expect("run check-config");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check-config refused the configuration:\n{stdout}\n{stderr}");
    assert!(stdout.contains("[providers.exirom.accounts.default]"), "{stdout}");
    format!("{stdout}\n{stderr}")
}

#[tokio::test]
async fn no_canary_reaches_logs_or_check_config() {
    let doubles = Doubles::start().await;
    let db_url = database_url_with_password().await;
    let config = check_config(&doubles, &db_url);
    assert!(config.contains("<redacted>"), "{config}");
    assert_no_canary("check-config", &config);

    // A configuration that fails its checks names the keys, never the secrets.
    for (key, value) in [
        ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__DEFAULT__BASE_URL", "ftp://api.xpay.app".to_owned()),
        ("PAYGATE_PROVIDERS__HITPAY__ACCOUNTS__DEFAULT__SALT_FILE", "/dev/null".to_owned()),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_paygate"));
        let mut env = doubles.env(&db_url, "text");
        env.retain(|(k, _)| k != key);
        cmd.env_clear()
            .arg("check-config")
            .env("PAYGATE_SERVER__GRPC_ADDR", "127.0.0.1:0")
            .env("PAYGATE_SERVER__HTTP_ADDR", "127.0.0.1:0")
            .envs(env)
            .env(key, value);
        let out = cmd.output().expect("run check-config");
        let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success() && text.contains("invalid configuration"), "{key}: {text}");
        assert_no_canary("a refused check-config", &text);
    }

    for format in ["text", "json"] {
        let logs = run_flows(format).await;
        assert_no_canary(&format!("{format} logs"), &logs);
    }
}
