//! XPay (Egypt, api.xpay.app): Stripe-like hosted checkout sessions.
//!
//! - create: `POST {base}/checkout/sessions` (`Authorization: Bearer <secret_key>`, JSON);
//! - status: `GET {base}/checkout/sessions/{id}`; cancel: `POST {base}/checkout/sessions/{id}/expire`;
//! - webhooks: `XPay-Signature: t=<unix>,v1=<hex>[,v1=…]`, HMAC-SHA256 over `"{t}.{raw body}"`
//!   with each configured secret, checked by the shared [`signature`](super::signature) code.
//!
//! This file holds URLs, headers and which flow calls what; the wire format is in
//! [`transformers`]. No idempotency header is documented, so none is sent: our payment id in
//! `metadata.paygate_payment_id` and the gateway's idempotency keys guard retries.

mod config;
pub mod transformers;

pub use config::XpayAccount;

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use self::transformers::{CheckoutSession, CreateContext, CreateSessionRequest, error_code};
use super::http;
use super::signature::parse_timestamped;
use super::{
    CallbackError, CheckoutContext, CheckoutCreated, PaymentRef, Provider, ProviderContext, ProviderError, RawCallback,
    VerifiedCallback,
};
use crate::config::Secret;
use crate::domain::money::Currency;
use crate::domain::{NewCheckout, Payment, StatusReport, ValidationError};

/// Provider name in the API and in URLs.
pub const NAME: &str = "xpay";
/// Header carrying the webhook signature.
pub const SIGNATURE_HEADER: &str = "XPay-Signature";
/// API base when `base_url` is not configured (the same host serves test and live keys).
pub const DEFAULT_BASE_URL: &str = "https://api.xpay.app";
/// A session expires this long after creation if unpaid (documented); a shorter `ttl` wins.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Signature window when `webhook_tolerance_secs` is not configured.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// One XPay merchant account.
#[derive(Clone)]
pub struct XPay {
    account: String,
    base_url: String,
    secret_key: Secret,
    webhook_secrets: Vec<Secret>,
    tolerance_secs: u64,
    customer_email_field: String,
    currencies: Vec<Currency>,
    ctx: ProviderContext,
}

impl std::fmt::Debug for XPay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XPay")
            .field("account", &self.account)
            .field("base_url", &crate::config::redact_url_password(&self.base_url))
            .field("secret_key", &"<redacted>")
            .field("webhook_secrets", &format_args!("<{} redacted>", self.webhook_secrets.len()))
            .field("tolerance_secs", &self.tolerance_secs)
            .field("currencies", &self.currencies.iter().map(Currency::code).collect::<Vec<_>>())
            .finish()
    }
}

/// Test keys open test sessions and live keys live ones; a mix means a misrouted key or response.
fn mode_of(prefixed: &str, test: &str, live: &str) -> Option<bool> {
    if prefixed.starts_with(test) {
        Some(true)
    } else if prefixed.starts_with(live) {
        Some(false)
    } else {
        None
    }
}

impl XPay {
    /// Builds the adapter for account `name`. Errors name the missing key, never a value.
    pub fn new(name: &str, config: &XpayAccount, ctx: &ProviderContext) -> anyhow::Result<Self> {
        let key = |k: &str| format!("providers.xpay.accounts.{name}.{k}");
        let base_url = if config.base_url.is_empty() { DEFAULT_BASE_URL } else { config.base_url.as_str() };
        let parsed = url::Url::parse(base_url).with_context(|| format!("{}: not a URL", key("base_url")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("{}: must be an http(s) URL", key("base_url"));
        }
        if config.secret_key.is_empty() {
            bail!("{}: must be set", key("secret_key"));
        }
        if config.webhook_secrets.is_empty() || config.webhook_secrets.iter().any(Secret::is_empty) {
            bail!("{}: at least one non-empty secret is required", key("webhook_secrets"));
        }
        let currencies = config
            .currencies
            .iter()
            .map(|c| {
                Currency::parse(c).with_context(|| format!("{}: `{c}` is not an ISO 4217 code", key("currencies")))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if currencies.is_empty() {
            bail!("{}: at least one currency is required", key("currencies"));
        }
        Ok(Self {
            account: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret_key: config.secret_key.clone(),
            webhook_secrets: config.webhook_secrets.clone(),
            tolerance_secs: config.webhook_tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS),
            customer_email_field: config.customer_email_field.clone(),
            currencies,
            ctx: ctx.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn session_url(&self, session_id: &str, suffix: &str) -> String {
        // Session ids are opaque: percent-encode them as one path segment.
        let segment: String = url::form_urlencoded::byte_serialize(session_id.as_bytes()).collect();
        self.url(&format!("/checkout/sessions/{}{suffix}", segment.replace('+', "%20")))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header(AUTHORIZATION, format!("Bearer {}", self.secret_key.expose()))
    }

    /// Rejects a session whose id says another mode than our key (`sk_test_*` → `cs_test_*`).
    fn check_mode(&self, session_id: &str) -> Result<(), ProviderError> {
        let key_mode = mode_of(self.secret_key.expose(), "sk_test_", "sk_live_");
        let session_mode = mode_of(session_id, "cs_test_", "cs_live_");
        match (key_mode, session_mode) {
            (Some(k), Some(s)) if k != s => {
                Err(ProviderError::OutcomeUnknown("session mode differs from the secret key's mode".into()))
            }
            _ => Ok(()),
        }
    }

    fn expires_at(created_at: DateTime<Utc>, ttl: Option<Duration>) -> Result<DateTime<Utc>, ProviderError> {
        let lifetime = ttl.map_or(SESSION_LIFETIME, |t| t.min(SESSION_LIFETIME));
        let lifetime = chrono::Duration::from_std(lifetime)
            .map_err(|_| ProviderError::Rejected { code: "ttl".into(), message: "ttl out of range".into() })?;
        Ok(created_at + lifetime)
    }
}

#[async_trait::async_trait]
impl Provider for XPay {
    fn name(&self) -> &'static str {
        NAME
    }

    fn account(&self) -> &str {
        &self.account
    }

    /// Only the account's `currencies` (default EGP). Every ISO exponent fits XPay's integer
    /// minor units, so the allow list is the only currency rule.
    fn validate(&self, checkout: &NewCheckout) -> Result<(), ValidationError> {
        if self.currencies.contains(&checkout.amount.currency) {
            Ok(())
        } else {
            Err(ValidationError {
                field: "amount.currency".into(),
                reason: "currency not enabled for this XPay account",
            })
        }
    }

    async fn create_checkout(&self, ctx: CheckoutContext<'_>) -> Result<CheckoutCreated, ProviderError> {
        let return_url = self.ctx.return_url(NAME, ctx.payment_id);
        let body = CreateSessionRequest::build(
            ctx.checkout,
            CreateContext {
                payment_id: ctx.payment_id,
                return_url: &return_url,
                customer_email_field: &self.customer_email_field,
            },
        );
        let request = self.authorized(self.ctx.client.post(self.url("/checkout/sessions"))).json(&body);
        let session: CheckoutSession = http::json(&http::send(request, error_code).await?)?;
        let checkout_url = session.url.clone().filter(|u| !u.is_empty());
        let (Some(checkout_url), false) = (checkout_url, session.id.is_empty()) else {
            return Err(ProviderError::OutcomeUnknown("unexpected response shape: no session id or url".into()));
        };
        self.check_mode(&session.id)?;
        Ok(CheckoutCreated {
            checkout_url,
            provider_checkout_id: Some(session.id),
            provider_payment_id: None,
            expires_at: Some(Self::expires_at(ctx.created_at, ctx.checkout.ttl)?),
            metadata: Default::default(),
            provider_data: None,
        })
    }

    async fn fetch_status(&self, payment: &Payment) -> Result<Option<StatusReport>, ProviderError> {
        let Some(session_id) = payment.provider_checkout_id.as_deref() else {
            // No session was opened (or its id never came back): nothing to ask about.
            return Ok(None);
        };
        let request = self.authorized(self.ctx.client.get(self.session_url(session_id, "")));
        let session: CheckoutSession = http::json(&http::send(request, error_code).await?)?;
        if session.id != session_id {
            return Err(ProviderError::Unavailable("status lookup answered for another session".into()));
        }
        session.to_report().map(Some).map_err(|e| ProviderError::Unavailable(format!("unusable session: {e:?}")))
    }

    fn verify_callback(&self, raw: &RawCallback, now: DateTime<Utc>) -> Result<VerifiedCallback, CallbackError> {
        let header = raw.header(SIGNATURE_HEADER).ok_or(CallbackError::SignatureInvalid)?;
        let signature = parse_timestamped(header)?;
        let secrets: Vec<&[u8]> = self.webhook_secrets.iter().map(|s| s.expose().as_bytes()).collect();
        signature.verify(&secrets, &raw.body, now, self.tolerance_secs)?;
        let event = transformers::parse_event(&raw.body)?;
        Ok(VerifiedCallback {
            dedupe_key: event.event_id.clone(),
            event_id: event.event_id,
            payment: event.payment,
            report: event.report,
        })
    }

    fn unverified_payment_hint(&self, raw: &RawCallback) -> Option<PaymentRef> {
        transformers::hint(&raw.body)
    }

    /// Expires the open session (`POST …/expire`); nothing to do when none was opened.
    async fn cancel(&self, payment: &Payment) -> Result<(), ProviderError> {
        let Some(session_id) = payment.provider_checkout_id.as_deref() else { return Ok(()) };
        let request = self
            .authorized(self.ctx.client.post(self.session_url(session_id, "/expire")))
            .header(CONTENT_TYPE, "application/json")
            .body("{}");
        http::send(request, error_code).await?;
        Ok(())
    }
}

impl super::ProviderModule for XPay {
    const NAME: &'static str = NAME;
    type Account = XpayAccount;

    fn build(name: &str, account: &XpayAccount, ctx: &ProviderContext) -> anyhow::Result<Self> {
        Self::new(name, account, ctx)
    }
}

#[cfg(test)]
mod tests {

    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::domain::PaymentStatus;
    use crate::domain::checkout::CheckoutInput;
    use crate::providers::signature::sign_timestamped;

    const SECRET: &str = "whsec_test";

    fn account(base_url: &str) -> XpayAccount {
        XpayAccount {
            base_url: base_url.into(),
            secret_key: "sk_test_unit".into(),
            webhook_secrets: vec!["whsec_old".into(), SECRET.into()],
            ..Default::default()
        }
    }

    fn ctx(timeout: Duration) -> ProviderContext {
        ProviderContext {
            public_base_url: "https://pay.example".into(),
            client: reqwest::Client::builder().timeout(timeout).build().unwrap(),
        }
    }

    fn xpay(base_url: &str) -> XPay {
        XPay::new("default", &account(base_url), &ctx(Duration::from_secs(5))).unwrap()
    }

    fn raw(body: &[u8], header: &str) -> RawCallback {
        let mut raw = RawCallback { body: body.to_vec(), ..Default::default() };
        raw.headers.insert("xpay-signature".into(), header.into());
        raw
    }

    fn at(ts: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(ts, 0).unwrap()
    }

    fn payment(checkout_id: Option<&str>) -> Payment {
        Payment { provider_checkout_id: checkout_id.map(String::from), ..Payment::fixture("xpay", 149_900, "EGP") }
    }

    fn new_checkout(currency: &str, ttl: Option<(i64, i32)>) -> NewCheckout {
        NewCheckout::parse(CheckoutInput {
            provider: "xpay".into(),
            merchant_reference: "order-1".into(),
            amount: Some((149_900, currency.into())),
            ttl,
            ..Default::default()
        })
        .unwrap()
    }

    // Independent vectors (Python 3):
    //   import hmac, hashlib
    //   hmac.new(b"whsec_test", b'1730000000.{"id":"evt_1","type":"checkout.session.completed"}',
    //            hashlib.sha256).hexdigest()
    //   → a0be1492ad89ec24cf43b785df5367889541992002539a5136c69e1934dfb575 (the note's self-made vector)
    const NOTE_BODY: &str = r#"{"id":"evt_1","type":"checkout.session.completed"}"#;
    const NOTE_SIG: &str = "a0be1492ad89ec24cf43b785df5367889541992002539a5136c69e1934dfb575";
    //   body = b'{"id":"evt_9","type":"checkout.session.completed","data":{"object":{"id":"cs_test_AbC123",'
    //          b'"object":"checkout.session","status":"complete","amountTotal":149900,"currency":"EGP",'
    //          b'"paymentIntent":{"id":"pi_9"},"metadata":{"paygate_payment_id":"pay_01ARZ3NDEKTSV4RRFFQ69G5FAV"}}}}'
    //   hmac.new(b"whsec_test", b"1730000000." + body, hashlib.sha256).hexdigest()
    const FULL_BODY: &str = r#"{"id":"evt_9","type":"checkout.session.completed","data":{"object":{"id":"cs_test_AbC123","object":"checkout.session","status":"complete","amountTotal":149900,"currency":"EGP","paymentIntent":{"id":"pi_9"},"metadata":{"paygate_payment_id":"pay_01ARZ3NDEKTSV4RRFFQ69G5FAV"}}}}"#;
    const FULL_SIG: &str = "6a89e0967c7151d61b597069c1db812151999ab505473f3006dfdafa4cfc670b";

    #[test]
    fn note_vector_matches_python() {
        assert_eq!(
            sign_timestamped(SECRET.as_bytes(), 1_730_000_000, NOTE_BODY.as_bytes()),
            format!("t=1730000000,v1={NOTE_SIG}")
        );
        // Signed correctly, but without `data.object` it names no payment: malformed, not forged.
        let r = raw(NOTE_BODY.as_bytes(), &format!("t=1730000000,v1={NOTE_SIG}"));
        assert_eq!(
            xpay("http://x").verify_callback(&r, at(1_730_000_000)),
            Err(CallbackError::Malformed { field: "data.object".into() })
        );
    }

    #[test]
    fn verifies_python_signed_completed_event_with_rotated_secrets() {
        let header = format!("t=1730000000,v1=00ff,v1={FULL_SIG}");
        let v = xpay("http://x").verify_callback(&raw(FULL_BODY.as_bytes(), &header), at(1_730_000_300)).unwrap();
        assert_eq!((v.dedupe_key.as_str(), v.event_id.as_str()), ("evt_9", "evt_9"));
        assert_eq!(
            v.payment,
            PaymentRef::Both { id: "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(), checkout_id: "cs_test_AbC123".into() }
        );
        assert_eq!(v.report.applied().status, Some(PaymentStatus::Succeeded));
        assert_eq!(v.report.applied().amount, Some((149_900, "EGP".into())));
        assert_eq!(v.report.applied().provider_payment_id.as_deref(), Some("pi_9"));
    }

    #[test]
    fn signature_then_window_then_body() {
        let x = xpay("http://x");
        let body = FULL_BODY.as_bytes();
        let good = format!("t=1730000000,v1={FULL_SIG}");
        assert_eq!(
            x.verify_callback(&RawCallback { body: body.to_vec(), ..Default::default() }, at(1_730_000_000)),
            Err(CallbackError::SignatureInvalid)
        );
        assert_eq!(x.verify_callback(&raw(body, &good), at(1_730_000_301)), Err(CallbackError::SignatureExpired));
        assert_eq!(x.verify_callback(&raw(body, &good), at(1_729_999_699)), Err(CallbackError::SignatureExpired));
        let forged = sign_timestamped(b"whsec_other", 1_730_000_000, body);
        assert_eq!(x.verify_callback(&raw(body, &forged), at(1_730_000_000)), Err(CallbackError::SignatureInvalid));
        let tampered = FULL_BODY.replace("149900", "1");
        assert_eq!(
            x.verify_callback(&raw(tampered.as_bytes(), &good), at(1_730_000_000)),
            Err(CallbackError::SignatureInvalid)
        );
        let garbage = sign_timestamped(SECRET.as_bytes(), 1_730_000_000, b"nope");
        assert_eq!(
            x.verify_callback(&raw(b"nope", &garbage), at(1_730_000_000)),
            Err(CallbackError::Malformed { field: "body".into() })
        );
        let custom = XPay::new(
            "default",
            &XpayAccount { webhook_tolerance_secs: Some(10), ..account("http://x") },
            &ctx(Duration::from_secs(1)),
        )
        .unwrap();
        assert_eq!(custom.verify_callback(&raw(body, &good), at(1_730_000_011)), Err(CallbackError::SignatureExpired));
        assert!(custom.verify_callback(&raw(body, &good), at(1_730_000_010)).is_ok());
    }

    #[test]
    fn debug_redacts_secrets_and_config_is_checked() {
        let x = xpay("http://x/");
        let text = format!("{x:?}");
        assert!(!text.contains("sk_test_unit") && !text.contains("whsec_"), "{text}");
        assert_eq!(x.base_url, "http://x");
        for (bad, key) in [
            (XpayAccount { secret_key: Secret::default(), ..account("http://x") }, "secret_key"),
            (XpayAccount { webhook_secrets: vec![], ..account("http://x") }, "webhook_secrets"),
            (XpayAccount { currencies: vec!["egp".into()], ..account("http://x") }, "currencies"),
            (XpayAccount { currencies: vec![], ..account("http://x") }, "currencies"),
            (XpayAccount { base_url: "ftp://x".into(), ..account("") }, "base_url"),
        ] {
            let e = XPay::new("default", &bad, &ctx(Duration::from_secs(1))).unwrap_err().to_string();
            assert!(e.contains(key) && !e.contains("sk_test_unit"), "{e}");
        }
        let default_base = XPay::new("default", &account(""), &ctx(Duration::from_secs(1))).unwrap();
        assert_eq!(default_base.base_url, DEFAULT_BASE_URL);
    }

    #[test]
    fn currency_allow_list_and_expiry() {
        let x = xpay("http://x");
        assert!(x.validate(&new_checkout("EGP", None)).is_ok());
        assert_eq!(x.validate(&new_checkout("USD", None)).unwrap_err().field, "amount.currency");
        let created = at(1_730_000_000);
        assert_eq!(XPay::expires_at(created, None).unwrap(), at(1_730_000_000 + 86_400));
        assert_eq!(XPay::expires_at(created, Some(Duration::from_secs(600))).unwrap(), at(1_730_000_600));
        assert_eq!(XPay::expires_at(created, Some(Duration::from_secs(3 * 86_400))).unwrap(), at(1_730_086_400));
    }

    #[tokio::test]
    async fn create_timeout_maps_to_timeout() {
        // The shared client times out after 15 s; the mapping is the same with a short one.
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/checkout/sessions"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
            .mount(&server)
            .await;
        let x = XPay::new("default", &account(&server.uri()), &ctx(Duration::from_millis(200))).unwrap();
        let checkout = new_checkout("EGP", None);
        let c = CheckoutContext {
            payment_id: "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            checkout: &checkout,
            created_at: Utc::now(),
        };
        assert_eq!(x.create_checkout(c).await, Err(ProviderError::Timeout));
    }

    #[tokio::test]
    async fn create_rejects_a_session_of_the_other_mode() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/checkout/sessions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": "cs_live_1", "object": "checkout.session", "status": "open",
                "url": "https://checkout.xpay.app/c/cs_live_1", "amountTotal": 149_900, "currency": "EGP",
            })))
            .mount(&server)
            .await;
        let x = xpay(&server.uri());
        let checkout = new_checkout("EGP", None);
        let c = CheckoutContext {
            payment_id: "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            checkout: &checkout,
            created_at: Utc::now(),
        };
        assert!(matches!(x.create_checkout(c).await, Err(ProviderError::OutcomeUnknown(_))));
    }

    #[tokio::test]
    async fn status_and_cancel_call_the_documented_endpoints() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/checkout/sessions/cs_test_1"))
            .and(header("authorization", "Bearer sk_test_unit"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": "cs_test_1", "status": "expired", "amountTotal": 149_900, "currency": "EGP",
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/checkout/sessions/cs_test_1/expire"))
            .and(header("authorization", "Bearer sk_test_unit"))
            .and(body_json(serde_json::json!({})))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({ "id": "cs_test_1", "status": "expired" })),
            )
            .expect(1)
            .mount(&server)
            .await;
        let x = xpay(&server.uri());
        let report = x.fetch_status(&payment(Some("cs_test_1"))).await.unwrap().unwrap();
        assert_eq!(report.status, Some(PaymentStatus::Expired));
        assert_eq!(report.amount, Some((149_900, "EGP".into())));
        x.cancel(&payment(Some("cs_test_1"))).await.unwrap();
        assert_eq!(x.fetch_status(&payment(None)).await, Ok(None));
        assert_eq!(x.cancel(&payment(None)).await, Ok(()));
    }

    #[tokio::test]
    async fn cancel_maps_provider_errors() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(400)
                    .set_body_json(serde_json::json!({ "error": { "code": "session_not_open" } })),
            )
            .mount(&server)
            .await;
        let err = xpay(&server.uri()).cancel(&payment(Some("cs_test_1"))).await.unwrap_err();
        assert_eq!(err, ProviderError::Rejected { code: "session_not_open".into(), message: "HTTP 400".into() });
    }

    #[test]
    fn arbitrary_callbacks_never_panic_and_never_verify_without_the_key() {
        crate::providers::proptests::never_verifies_without_the_key(&xpay("http://127.0.0.1:9"), &["xpay-signature"]);
    }
}
