//! XStak XPay (Pakistan): hosted checkout pages opened server-side ("B2B Payments Checkout Page").
//!
//! - create: `POST {base}/public/v1/payment/checkout` with `x-api-key`, `x-account-id` and
//!   `x-signature` = hex HMAC-SHA256 (`hmac_secret`) of the exact body bytes sent (the body is
//!   serialized once; those bytes are signed and sent);
//! - status: undocumented, so only when `status_lookup = true`:
//!   `GET {base}/public/v1/payment/intent/{id}`, signed like a create over the (empty) body;
//! - webhooks: hex HMAC-SHA256 (`webhook_secret`) of the raw body in `webhook_signature_header`
//!   (default `x-signature`); no timestamp, so replays are handled by the dedupe key.
//!
//! This file holds URLs, headers and which flow calls what; the wire format is in
//! [`transformers`]. No idempotency header is documented: our payment id in
//! `metadata.order_reference` and the gateway's idempotency keys guard retries.

mod config;
pub mod transformers;

pub use config::XstakAccount;

use super::AccountConfig as _;

use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, Utc};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use self::transformers::{AmountUnit, CreateCheckoutRequest, CreateParams, CreateProblem, Envelope, error_code};
use super::signature::{hex_matches, hmac_sha256, hmac_sha256_hex, sha256_hex};
use super::{
    CallbackError, CheckoutContext, CheckoutCreated, PaymentRef, Provider, ProviderContext, ProviderError, RawCallback,
    VerifiedCallback, http,
};
use crate::config::Secret;
use crate::domain::{NewCheckout, Payment, StatusReport, ValidationError};

/// Provider name in the API and in URLs.
pub const NAME: &str = "xstak";
/// API base when `base_url` is not configured (production host as used by unofficial code;
/// staging is `https://xstak-pay-stg.xstak.com`).
pub const DEFAULT_BASE_URL: &str = "https://xstak-pay.xstak.com";
/// Create path (document).
pub const CHECKOUT_PATH: &str = "/public/v1/payment/checkout";
/// Status lookup path prefix (undocumented; behind `status_lookup`).
pub const INTENT_PATH: &str = "/public/v1/payment/intent/";
/// Local checkout lifetime when `checkout_ttl_secs` is unset (XStak documents no expiry).
pub const DEFAULT_CHECKOUT_TTL: Duration = Duration::from_secs(3600);

/// One XStak merchant account.
#[derive(Clone)]
pub struct Xstak {
    account: String,
    base_url: String,
    /// `x-api-key` and `x-account-id`, marked sensitive.
    auth: HeaderMap,
    hmac_secret: Secret,
    webhook_secret: Secret,
    signature_header: String,
    status_lookup: bool,
    unit: AmountUnit,
    checkout_ttl: Duration,
    ctx: ProviderContext,
}

impl std::fmt::Debug for Xstak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xstak")
            .field("account", &self.account)
            .field("base_url", &crate::config::redact_url_password(&self.base_url))
            .field("credentials", &"<redacted>")
            .field("hmac_secret", &"<redacted>")
            .field("webhook_secret", &"<redacted>")
            .field("signature_header", &self.signature_header)
            .field("status_lookup", &self.status_lookup)
            .field("unit", &self.unit)
            .field("checkout_ttl", &self.checkout_ttl)
            .finish()
    }
}

fn unexpected(what: &str) -> ProviderError {
    ProviderError::OutcomeUnknown(format!("unexpected response shape: {what}"))
}

impl Xstak {
    /// Builds the adapter for account `name`. Errors name the bad key, never a value.
    pub fn new(name: &str, config: &XstakAccount, ctx: &ProviderContext) -> anyhow::Result<Self> {
        let key = |k: &str| format!("providers.xstak.accounts.{name}.{k}");
        if let Some(problem) = config.problems().into_iter().next() {
            bail!("providers.xstak.accounts.{name}.{problem}");
        }
        let base_url = if config.base_url.is_empty() { DEFAULT_BASE_URL } else { config.base_url.as_str() };
        let mut auth = HeaderMap::new();
        for (header, value, k) in [
            ("x-api-key", config.api_key.expose(), "api_key"),
            ("x-account-id", config.account_id.as_str(), "account_id"),
        ] {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| anyhow::anyhow!("{}: not a valid HTTP header value", key(k)))?;
            value.set_sensitive(true);
            auth.insert(HeaderName::from_static(header), value);
        }
        let unit = AmountUnit::parse(&config.amount_unit)
            .ok_or_else(|| anyhow::anyhow!("{}: must be `major` or `minor`", key("amount_unit")))?;
        Ok(Self {
            account: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            auth,
            hmac_secret: config.hmac_secret.clone(),
            webhook_secret: config.webhook_secret.clone(),
            signature_header: config.webhook_signature_header.to_ascii_lowercase(),
            status_lookup: config.status_lookup,
            unit,
            checkout_ttl: config.checkout_ttl_secs.map_or(DEFAULT_CHECKOUT_TTL, Duration::from_secs),
            ctx: ctx.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `{base}/public/v1/payment/intent/{id}`, the id percent-encoded as one path segment.
    fn intent_url(&self, intent_id: &str) -> String {
        let segment: String = url::form_urlencoded::byte_serialize(intent_id.as_bytes()).collect();
        self.url(&format!("{INTENT_PATH}{}", segment.replace('+', "%20")))
    }

    /// A request carrying `body` exactly, with the auth headers and `x-signature` over those bytes.
    fn signed(&self, method: reqwest::Method, url: String, body: Vec<u8>) -> reqwest::RequestBuilder {
        let mut signature = HeaderValue::from_str(&hmac_sha256_hex(self.hmac_secret.expose().as_bytes(), &body))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        signature.set_sensitive(true);
        let request = self
            .ctx
            .client
            .request(method.clone(), url)
            .headers(self.auth.clone())
            .header("x-signature", signature)
            .header(ACCEPT, "application/json");
        if method == reqwest::Method::GET {
            request
        } else {
            request.header(CONTENT_TYPE, "application/json").body(body)
        }
    }
}

#[async_trait::async_trait]
impl Provider for Xstak {
    fn name(&self) -> &'static str {
        NAME
    }

    fn account(&self) -> &str {
        &self.account
    }

    /// PKR only (the only currency XStak's checkout is documented with; its exponent is 2, which
    /// a JSON number in either unit carries exactly).
    fn validate(&self, checkout: &NewCheckout) -> Result<(), ValidationError> {
        if checkout.amount.currency.code() == transformers::CURRENCY {
            Ok(())
        } else {
            Err(ValidationError { field: "amount.currency".into(), reason: "XStak accepts PKR only" })
        }
    }

    async fn create_checkout(&self, ctx: CheckoutContext<'_>) -> Result<CheckoutCreated, ProviderError> {
        let return_url = self.ctx.return_url(NAME, ctx.payment_id);
        let body = CreateCheckoutRequest::build(
            ctx.checkout,
            CreateParams { payment_id: ctx.payment_id, return_url: &return_url, unit: self.unit },
        )
        .and_then(|b| b.to_bytes())
        .map_err(|_| ProviderError::Unavailable("cannot encode the create request".into()))?;
        let request = self.signed(reqwest::Method::POST, self.url(CHECKOUT_PATH), body);
        let envelope: Envelope = http::json(&http::send(request, error_code).await?)?;
        let money = &ctx.checkout.amount;
        let intent = envelope.opened(money.minor, &money.currency, self.unit).map_err(|problem| match problem {
            CreateProblem::Refused(code) => ProviderError::Rejected { code, message: "success: false".into() },
            CreateProblem::Shape => unexpected("no data._id or data.checkout_page_url"),
            CreateProblem::AmountDiffers => unexpected("the intent's amount or currency differs from the request"),
        })?;
        // XStak documents no expiry: ours is local (`checkout_ttl_secs`, or the caller's `ttl`).
        let ttl = chrono::Duration::from_std(ctx.checkout.ttl.unwrap_or(self.checkout_ttl))
            .map_err(|_| unexpected("ttl out of range"))?;
        Ok(CheckoutCreated {
            checkout_url: intent.checkout_page_url,
            provider_checkout_id: Some(intent.id),
            provider_payment_id: None,
            expires_at: Some(ctx.created_at + ttl),
            metadata: Default::default(),
            provider_data: None,
        })
    }

    /// Only with `status_lookup = true` (the endpoint is undocumented); otherwise `Ok(None)`
    /// without any call, and webhooks are the only source of truth.
    async fn fetch_status(&self, payment: &Payment) -> Result<Option<StatusReport>, ProviderError> {
        if !self.status_lookup {
            return Ok(None);
        }
        let Some(intent_id) = payment.provider_checkout_id.as_deref().filter(|id| !id.is_empty()) else {
            return Ok(None);
        };
        let request = self.signed(reqwest::Method::GET, self.intent_url(intent_id), Vec::new());
        let envelope: Envelope = http::json(&http::send(request, error_code).await?)?;
        if envelope.success == Some(false) {
            return Err(ProviderError::Unavailable("status lookup answered success: false".into()));
        }
        let intent = envelope.data.ok_or_else(|| unexpected("no data"))?;
        intent.into_report(intent_id, self.unit).map(Some).map_err(|p| unexpected(&format!("{p:?}")))
    }

    fn verify_callback(&self, raw: &RawCallback, _now: DateTime<Utc>) -> Result<VerifiedCallback, CallbackError> {
        // No timestamp is signed: there is no window; the dedupe key and the state machine
        // handle replays.
        let signature = raw.header(&self.signature_header).ok_or(CallbackError::SignatureInvalid)?;
        if !hex_matches(&hmac_sha256(self.webhook_secret.expose().as_bytes(), &raw.body), signature) {
            return Err(CallbackError::SignatureInvalid);
        }
        let hook = transformers::parse_webhook(&raw.body, self.unit)?;
        // No event id in the body: its digest is the dedupe key, so a second signed webhook for
        // the same intent and status (another amount, say) is a new event, never a duplicate.
        Ok(VerifiedCallback {
            dedupe_key: sha256_hex(&raw.body),
            event_id: hook.event_key,
            payment: hook.payment,
            report: hook.report,
        })
    }

    /// Without status lookups there is nothing to schedule, so no hint.
    fn unverified_payment_hint(&self, raw: &RawCallback) -> Option<PaymentRef> {
        if !self.status_lookup {
            return None;
        }
        transformers::hint(&raw.body)
    }
}

impl super::ProviderModule for Xstak {
    const NAME: &'static str = NAME;
    type Account = XstakAccount;

    fn build(name: &str, account: &XstakAccount, ctx: &ProviderContext) -> anyhow::Result<Self> {
        Self::new(name, account, ctx)
    }
}

#[cfg(test)]
mod tests {

    use wiremock::matchers::{body_string, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::domain::PaymentStatus;
    use crate::domain::checkout::CheckoutInput;

    const HMAC_SECRET: &str = "hmac_test";
    const WEBHOOK_SECRET: &str = "whk_test_secret";
    const PAYMENT_ID: &str = "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV";

    // Independent vectors, computed with Python 3:
    //   import hmac, hashlib
    //   hmac.new(KEY.encode(), BODY.encode(), hashlib.sha256).hexdigest()
    /// The note's self-made vector: key `hmac_test`, body `{"amount":5,"currency":"PKR"}`.
    const NOTE_BODY: &str = r#"{"amount":5,"currency":"PKR"}"#;
    const NOTE_SIG: &str = "5955699da350de26ee2bbb753e063c163e65916796dc41f36aea3bd6c3add862";
    /// Key `hmac_test` over the exact create body below.
    const CREATE_BODY: &str = concat!(
        r#"{"amount":12.5,"currency":"PKR","customer":{"email":"","name":"","phone":""},"#,
        r#""shipping":{"address1":"","city":"","country":"","zip":"","shipping_method":"Standard","province":""},"#,
        r#""metadata":{"order_reference":"pay_01ARZ3NDEKTSV4RRFFQ69G5FAV"},"#,
        r#""success_url":"https://pay.example/return/xstak/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV?outcome=success","#,
        r#""failure_url":"https://pay.example/return/xstak/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV?outcome=failure"}"#
    );
    const CREATE_SIG: &str = "9acc098fdae4d4603c0f2759061614be2bc661cded65c8dc1fb5bddcaed4326b";
    /// Key `hmac_test` over the empty body (the status lookup's signature).
    const EMPTY_SIG: &str = "0575f5623388f8c772fbee97ec5705eeaddc34c408f46df11de5bcc46593d5ff";
    /// Key `whk_test_secret` over the public webhook sample below.
    const WEBHOOK_BODY: &str = r#"{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"xpay_pi_1573edc2074d54b60eb265e448cdf1eb5c09bfad5cac10153b107b0c780515fb","refund_id":null,"amount":10,"currency":"PKR","status":"succeeded","customer":{"name":"","email":"","phone":null},"payment_method_types":"card","transaction_details":{"status":"CAPTURED","secure":"3DS2","gateway":"bank-alfalah","response_from_bank":"The payment was completed successfully"}}"#;
    const WEBHOOK_SIG: &str = "5eafeb9148338e354f6ac6b6893f3c886b5d58421fc9d12ec02c263beef42914";

    fn account(base_url: &str) -> XstakAccount {
        XstakAccount {
            base_url: base_url.into(),
            api_key: "sk_unit_key".into(),
            account_id: "acc_unit".into(),
            hmac_secret: HMAC_SECRET.into(),
            webhook_secret: WEBHOOK_SECRET.into(),
            ..Default::default()
        }
    }

    fn ctx(timeout: Duration) -> ProviderContext {
        ProviderContext {
            public_base_url: "https://pay.example".into(),
            client: reqwest::Client::builder().timeout(timeout).build().unwrap(),
        }
    }

    fn xstak(config: &XstakAccount) -> Xstak {
        Xstak::new("default", config, &ctx(Duration::from_secs(5))).unwrap()
    }

    fn raw(body: &str, header_name: &str, signature: &str) -> RawCallback {
        let mut raw = RawCallback { body: body.as_bytes().to_vec(), ..Default::default() };
        raw.headers.insert(header_name.into(), signature.into());
        raw
    }

    fn checkout(minor: i64, currency: &str) -> NewCheckout {
        NewCheckout::parse(CheckoutInput {
            provider: NAME.into(),
            merchant_reference: "order-1".into(),
            amount: Some((minor, currency.into())),
            ..Default::default()
        })
        .unwrap()
    }

    fn payment(checkout_id: Option<&str>) -> Payment {
        Payment { provider_checkout_id: checkout_id.map(String::from), ..Payment::fixture(NAME, 1250, "PKR") }
    }

    #[test]
    fn python_vectors() {
        assert_eq!(hmac_sha256_hex(HMAC_SECRET.as_bytes(), NOTE_BODY.as_bytes()), NOTE_SIG);
        assert_eq!(hmac_sha256_hex(HMAC_SECRET.as_bytes(), CREATE_BODY.as_bytes()), CREATE_SIG);
        assert_eq!(hmac_sha256_hex(HMAC_SECRET.as_bytes(), b""), EMPTY_SIG);
        assert_eq!(hmac_sha256_hex(WEBHOOK_SECRET.as_bytes(), WEBHOOK_BODY.as_bytes()), WEBHOOK_SIG);
    }

    #[test]
    fn verifies_the_webhook_sample_in_the_configured_header() {
        let x = xstak(&account("http://x"));
        for sig in [WEBHOOK_SIG.to_owned(), WEBHOOK_SIG.to_uppercase()] {
            let v = x.verify_callback(&raw(WEBHOOK_BODY, "x-signature", &sig), Utc::now()).unwrap();
            assert_eq!(v.report.applied().status, Some(PaymentStatus::Succeeded));
            assert_eq!(v.report.applied().amount, Some((1000, "PKR".into())));
        }
        // The note's vector is a correct signature over a body that names no payment: malformed.
        let note = xstak(&XstakAccount { webhook_secret: HMAC_SECRET.into(), ..account("http://x") });
        assert_eq!(
            note.verify_callback(&raw(NOTE_BODY, "x-signature", NOTE_SIG), Utc::now()),
            Err(CallbackError::Malformed { field: "payment_intent_id".into() })
        );
        // Another header name, configured (compared case-insensitively).
        let custom =
            xstak(&XstakAccount { webhook_signature_header: "X-XPay-Signature".into(), ..account("http://x") });
        assert!(custom.verify_callback(&raw(WEBHOOK_BODY, "x-xpay-signature", WEBHOOK_SIG), Utc::now()).is_ok());
        assert_eq!(
            custom.verify_callback(&raw(WEBHOOK_BODY, "x-signature", WEBHOOK_SIG), Utc::now()),
            Err(CallbackError::SignatureInvalid)
        );
    }

    #[test]
    fn forged_tampered_and_missing_signatures() {
        let x = xstak(&account("http://x"));
        let now = Utc::now();
        let tampered = WEBHOOK_BODY.replace(r#""amount":10"#, r#""amount":1"#);
        for r in [
            RawCallback { body: WEBHOOK_BODY.as_bytes().to_vec(), ..Default::default() },
            raw(&tampered, "x-signature", WEBHOOK_SIG),
            raw(WEBHOOK_BODY, "x-signature", ""),
            raw(WEBHOOK_BODY, "x-signature", &WEBHOOK_SIG[..62]),
            raw(WEBHOOK_BODY, "x-signature", &format!("sha256={WEBHOOK_SIG}")),
            raw(WEBHOOK_BODY, "x-signature", &hmac_sha256_hex(b"other", WEBHOOK_BODY.as_bytes())),
            // Signed with the request key instead of the webhook key.
            raw(WEBHOOK_BODY, "x-signature", &hmac_sha256_hex(HMAC_SECRET.as_bytes(), WEBHOOK_BODY.as_bytes())),
        ] {
            assert_eq!(x.verify_callback(&r, now), Err(CallbackError::SignatureInvalid));
        }
    }

    #[test]
    fn hints_only_when_lookups_are_enabled() {
        let body = r#"{"payment_intent_id":"xpay_pi_1","status":"succeeded"}"#;
        let r = raw(body, "x-signature", "00");
        assert_eq!(xstak(&account("http://x")).unverified_payment_hint(&r), None);
        let on = xstak(&XstakAccount { status_lookup: true, ..account("http://x") });
        assert_eq!(on.unverified_payment_hint(&r), Some(PaymentRef::CheckoutId("xpay_pi_1".into())));
    }

    #[test]
    fn config_is_checked_and_debug_redacts() {
        let x = xstak(&account("http://x/"));
        assert_eq!(x.base_url, "http://x");
        assert_eq!(x.intent_url("pi 1/2"), "http://x/public/v1/payment/intent/pi%201%2F2");
        let text = format!("{x:?}");
        for secret in ["sk_unit_key", "acc_unit", HMAC_SECRET, WEBHOOK_SECRET] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(xstak(&account("")).base_url, DEFAULT_BASE_URL);
        assert_eq!(XstakAccount::default().webhook_signature_header, "x-signature");
        for (bad, key) in [
            (XstakAccount { api_key: Secret::default(), ..account("http://x") }, "api_key"),
            (XstakAccount { account_id: String::new(), ..account("http://x") }, "account_id"),
            (XstakAccount { hmac_secret: Secret::default(), ..account("http://x") }, "hmac_secret"),
            (XstakAccount { webhook_secret: Secret::default(), ..account("http://x") }, "webhook_secret"),
            (
                XstakAccount { webhook_signature_header: "bad header".into(), ..account("http://x") },
                "webhook_signature_header",
            ),
            (XstakAccount { amount_unit: "paisa".into(), ..account("http://x") }, "amount_unit"),
            (XstakAccount { checkout_ttl_secs: Some(10), ..account("http://x") }, "checkout_ttl_secs"),
            (XstakAccount { api_key: "bad\nkey".into(), ..account("http://x") }, "api_key"),
            (account("ftp://x"), "base_url"),
        ] {
            let e = Xstak::new("default", &bad, &ctx(Duration::from_secs(1))).unwrap_err().to_string();
            assert!(e.starts_with(&format!("providers.xstak.accounts.default.{key}")), "{e}");
            assert!(!e.contains(HMAC_SECRET) && !e.contains("sk_unit_key"), "{e}");
        }
    }

    #[test]
    fn only_pkr_is_accepted() {
        let x = xstak(&account("http://x"));
        assert!(x.validate(&checkout(1250, "PKR")).is_ok());
        for other in ["USD", "JPY", "KWD"] {
            assert_eq!(x.validate(&checkout(1250, other)).unwrap_err().field, "amount.currency");
        }
    }

    #[tokio::test]
    async fn create_signs_and_sends_the_same_bytes() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(CHECKOUT_PATH))
            .and(header("x-api-key", "sk_unit_key"))
            .and(header("x-account-id", "acc_unit"))
            .and(header("x-signature", CREATE_SIG))
            .and(header("content-type", "application/json"))
            .and(body_string(CREATE_BODY))
            .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
                "success": true, "responseStatus": "OK",
                "data": { "_id": "xpay_pi_1", "amount": 12.5, "currency": "PKR",
                    "pi_status": "requires_payment_method", "checkout_page_url": "https://checkout.example/?id=1" },
            })))
            .expect(1)
            .mount(&server)
            .await;
        let x = xstak(&account(&server.uri()));
        let checkout = checkout(1250, "PKR");
        let created_at = DateTime::from_timestamp(1_760_000_000, 0).unwrap();
        let created = x
            .create_checkout(CheckoutContext { payment_id: PAYMENT_ID, checkout: &checkout, created_at })
            .await
            .unwrap();
        assert_eq!(created.provider_checkout_id.as_deref(), Some("xpay_pi_1"));
        assert_eq!(created.checkout_url, "https://checkout.example/?id=1");
        assert_eq!(created.expires_at, Some(created_at + chrono::Duration::seconds(3600)));
    }

    #[tokio::test]
    async fn status_lookup_only_when_enabled() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/public/v1/payment/intent/xpay_pi_1"))
            .and(header("x-api-key", "sk_unit_key"))
            .and(header("x-account-id", "acc_unit"))
            .and(header("x-signature", EMPTY_SIG))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "success": true, "responseStatus": "OK",
                "data": { "_id": "xpay_pi_1", "amount": 12.5, "currency": "PKR", "pi_status": "succeeded" },
            })))
            .expect(1)
            .mount(&server)
            .await;
        let off = xstak(&account(&server.uri()));
        assert_eq!(off.fetch_status(&payment(Some("xpay_pi_1"))).await, Ok(None));
        let on = xstak(&XstakAccount { status_lookup: true, ..account(&server.uri()) });
        let report = on.fetch_status(&payment(Some("xpay_pi_1"))).await.unwrap().unwrap();
        assert_eq!(report.status, Some(PaymentStatus::Succeeded));
        assert_eq!(report.amount, Some((1250, "PKR".into())));
        assert_eq!(on.fetch_status(&payment(None)).await, Ok(None));
    }

    #[test]
    fn arbitrary_callbacks_never_panic_and_never_verify_without_the_key() {
        crate::providers::proptests::never_verifies_without_the_key(
            &xstak(&account("http://127.0.0.1:9")),
            &["x-signature"],
        );
    }
}
