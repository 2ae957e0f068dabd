//! HitPay (Singapore): payment requests paid on HitPay's hosted checkout.
//!
//! - create: `POST {base}/payment-requests` (`X-BUSINESS-API-KEY`; form-encoded as the seed
//!   document says, or JSON with `create_content_type = "json"`);
//! - status: `GET {base}/payment-requests/{id}`; cancel: `DELETE {base}/payment-requests/{id}`;
//! - webhooks (v1, the per-request `webhook` URL): form fields plus `hmac` = hex HMAC-SHA256 under
//!   the dashboard salt of every other field, sorted by key, concatenated as `key + value`.
//!
//! URLs, headers and which flow calls what live here; the wire format is in [`transformers`].
//! HitPay documents no idempotency header: our payment id is the request's `reference_number`, and
//! the gateway's idempotency keys guard retries.

mod config;
pub mod transformers;

pub use config::HitpayAccount;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};

use self::transformers::{
    ContentType, CreateParams, CreatePaymentRequest, METADATA_PAYNOW_QR, PaymentRequestObject, RequestProblem,
    WebhookForm, error_code,
};
use super::signature::{hex_matches, hmac_sha256, sha256_hex};
use super::{
    CallbackError, CallbackReport, CheckoutContext, CheckoutCreated, PaymentRef, Provider, ProviderContext,
    ProviderError, RawCallback, VerifiedCallback, http,
};
use crate::config::Secret;
use crate::domain::{NewCheckout, Payment, StatusReport, ValidationError};

/// Provider name in the API and in URLs.
pub const NAME: &str = "hitpay";
/// The API key header (seed document).
pub const API_KEY_HEADER: &str = "X-BUSINESS-API-KEY";

/// One HitPay merchant account.
#[derive(Clone)]
pub struct HitPay {
    account: String,
    /// `…/v1`, no trailing `/`.
    base_url: String,
    api_key: HeaderValue,
    salt: Secret,
    content_type: ContentType,
    ctx: ProviderContext,
}

impl std::fmt::Debug for HitPay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HitPay")
            .field("account", &self.account)
            .field("base_url", &crate::config::redact_url_password(&self.base_url))
            .field("api_key", &"<redacted>")
            .field("salt", &"<redacted>")
            .field("content_type", &self.content_type)
            .finish()
    }
}

fn unexpected(what: &str) -> ProviderError {
    ProviderError::OutcomeUnknown(format!("unexpected response shape: {what}"))
}

impl HitPay {
    /// Builds the adapter for account `name`. Errors name the key, never a value.
    pub fn new(name: &str, config: &HitpayAccount, ctx: &ProviderContext) -> anyhow::Result<Self> {
        let key = |k: &str| format!("providers.hitpay.accounts.{name}.{k}");
        if config.base_url.is_empty() {
            bail!("{}: must be set (e.g. https://api.sandbox.hit-pay.com/v1)", key("base_url"));
        }
        let parsed = url::Url::parse(&config.base_url).with_context(|| format!("{}: not a URL", key("base_url")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            bail!("{}: must be an absolute http(s) URL", key("base_url"));
        }
        if config.api_key.is_empty() {
            bail!("{}: must be set", key("api_key"));
        }
        let mut api_key = HeaderValue::from_str(config.api_key.expose())
            .map_err(|_| anyhow::anyhow!("{}: not a valid HTTP header value", key("api_key")))?;
        api_key.set_sensitive(true);
        if config.salt.is_empty() {
            bail!("{}: must be set", key("salt"));
        }
        let content_type = ContentType::parse(&config.create_content_type)
            .with_context(|| format!("{}: must be `form` or `json`", key("create_content_type")))?;
        Ok(Self {
            account: name.to_owned(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            api_key,
            salt: config.salt.clone(),
            content_type,
            ctx: ctx.clone(),
        })
    }

    fn requests_url(&self) -> String {
        format!("{}/payment-requests", self.base_url)
    }

    /// `{base}/payment-requests/{id}`, the id percent-encoded as one path segment.
    fn request_url(&self, request_id: &str) -> Result<String, ProviderError> {
        let bad_base = || ProviderError::Unavailable("base_url is not an http(s) URL".into());
        let mut url = url::Url::parse(&self.requests_url()).map_err(|_| bad_base())?;
        url.path_segments_mut().map_err(|_| bad_base())?.push(request_id);
        Ok(url.into())
    }

    /// A request with the API key; `X-Requested-With` as in HitPay's examples (JSON errors).
    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        self.ctx
            .client
            .request(method, url)
            .header(API_KEY_HEADER, self.api_key.clone())
            .header(ACCEPT, "application/json")
            .header("X-Requested-With", "XMLHttpRequest")
    }

    /// The HMAC-SHA256 of a webhook form's signed text under the salt.
    fn expected_hmac(&self, form: &WebhookForm) -> [u8; 32] {
        hmac_sha256(self.salt.expose().as_bytes(), form.signed_message().as_bytes())
    }
}

#[async_trait::async_trait]
impl Provider for HitPay {
    fn name(&self) -> &'static str {
        NAME
    }

    fn account(&self) -> &str {
        &self.account
    }

    /// HitPay amounts carry at most two decimals: a three-decimal currency (KWD, BHD, …) cannot be
    /// sent exactly and is refused before anything is written. Which currencies an account may
    /// take is HitPay's call (a refusal comes back as PROVIDER_REJECTED).
    fn validate(&self, checkout: &NewCheckout) -> Result<(), ValidationError> {
        if checkout.amount.currency.exponent() > transformers::MAX_EXPONENT {
            return Err(ValidationError {
                field: "amount.currency".into(),
                reason: "HitPay amounts carry at most two decimals",
            });
        }
        Ok(())
    }

    async fn create_checkout(&self, ctx: CheckoutContext<'_>) -> Result<CheckoutCreated, ProviderError> {
        let redirect_url = self.ctx.return_url(NAME, ctx.payment_id);
        let webhook = self.ctx.callback_url(NAME, &self.account);
        let body = CreatePaymentRequest::new(
            ctx.checkout,
            CreateParams { payment_id: ctx.payment_id, redirect_url: &redirect_url, webhook: &webhook },
        );
        let request = self.request(reqwest::Method::POST, self.requests_url());
        let request = match self.content_type {
            ContentType::Form => request.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body.to_form()),
            ContentType::Json => request.json(&body.to_json()),
        };
        let answer: PaymentRequestObject = http::json(&http::send(request, error_code).await?)?;
        let opened = answer.opened(&body, ctx.checkout.amount.minor).map_err(|problem| match problem {
            RequestProblem::MissingCheckout => unexpected("no id or url"),
            other => unexpected(&format!("{other:?}")),
        })?;
        let expires_at = match ctx.checkout.ttl {
            Some(ttl) => Some(ctx.created_at + chrono::Duration::from_std(ttl).map_err(|_| unexpected("ttl"))?),
            None => None,
        };
        Ok(CheckoutCreated {
            checkout_url: opened.url,
            provider_checkout_id: Some(opened.id),
            provider_payment_id: None,
            expires_at,
            metadata: opened.paynow_qr.map(|qr| (METADATA_PAYNOW_QR.to_owned(), qr)).into_iter().collect(),
            provider_data: None,
        })
    }

    async fn fetch_status(&self, payment: &Payment) -> Result<Option<StatusReport>, ProviderError> {
        // Without a request id (the create never answered) there is nothing to ask about: HitPay
        // documents no lookup by reference number.
        let Some(request_id) = payment.provider_checkout_id.as_deref().filter(|id| !id.is_empty()) else {
            return Ok(None);
        };
        let request = self.request(reqwest::Method::GET, self.request_url(request_id)?);
        let answer: PaymentRequestObject = http::json(&http::send(request, error_code).await?)?;
        let report = answer
            .into_report(request_id, payment.id.as_str())
            .map_err(|problem| unexpected(&format!("{problem:?}")))?;
        Ok(Some(report))
    }

    fn verify_callback(&self, raw: &RawCallback, _now: DateTime<Utc>) -> Result<VerifiedCallback, CallbackError> {
        // No timestamp is signed, so there is no window: replays are handled by the dedupe key
        // (`payment_id:status`) and the state machine.
        let form = WebhookForm::parse(&raw.body).map_err(|_| CallbackError::SignatureInvalid)?;
        if !hex_matches(&self.expected_hmac(&form), &form.hmac) {
            return Err(CallbackError::SignatureInvalid);
        }
        let event = form.into_event()?;
        // No event id in the form: the body's digest is the dedupe key.
        Ok(VerifiedCallback {
            dedupe_key: sha256_hex(&raw.body),
            event_id: event.key,
            payment: event.payment,
            report: CallbackReport::Apply(event.report),
        })
    }

    fn unverified_payment_hint(&self, raw: &RawCallback) -> Option<PaymentRef> {
        transformers::hint(&raw.body)
    }

    /// Deletes the payment request (`DELETE …/payment-requests/{id}` → `{"success": true}`);
    /// nothing to do when none was opened.
    async fn cancel(&self, payment: &Payment) -> Result<(), ProviderError> {
        let Some(request_id) = payment.provider_checkout_id.as_deref().filter(|id| !id.is_empty()) else {
            return Ok(());
        };
        let request = self.request(reqwest::Method::DELETE, self.request_url(request_id)?);
        let success = http::send(request, error_code).await?;
        let refused = serde_json::from_slice::<serde_json::Value>(&success.body)
            .ok()
            .and_then(|v| v.get("success").and_then(serde_json::Value::as_bool))
            == Some(false);
        if refused {
            return Err(ProviderError::Rejected { code: "success_false".into(), message: "success: false".into() });
        }
        Ok(())
    }
}

impl super::ProviderModule for HitPay {
    const NAME: &'static str = NAME;
    type Account = HitpayAccount;

    fn build(name: &str, account: &HitpayAccount, ctx: &ProviderContext) -> anyhow::Result<Self> {
        Self::new(name, account, ctx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::domain::PaymentStatus;
    use crate::domain::checkout::CheckoutInput;

    const SALT: &str = "hitpay_salt_test";

    fn account(base_url: &str) -> HitpayAccount {
        HitpayAccount {
            base_url: base_url.into(),
            api_key: "hp_key_unit".into(),
            salt: SALT.into(),
            ..Default::default()
        }
    }

    fn ctx(timeout: Duration) -> ProviderContext {
        ProviderContext {
            public_base_url: "https://pay.example".into(),
            client: reqwest::Client::builder().timeout(timeout).build().unwrap(),
        }
    }

    fn hitpay(base_url: &str) -> HitPay {
        HitPay::new("default", &account(base_url), &ctx(Duration::from_secs(5))).unwrap()
    }

    fn raw(body: &str) -> RawCallback {
        let mut raw = RawCallback { body: body.as_bytes().to_vec(), ..Default::default() };
        raw.headers.insert("content-type".into(), "application/x-www-form-urlencoded".into());
        raw
    }

    fn payment(request_id: Option<&str>) -> Payment {
        Payment { provider_checkout_id: request_id.map(String::from), ..Payment::fixture(NAME, 250_000, "SGD") }
    }

    fn new_checkout(currency: &str) -> NewCheckout {
        NewCheckout::parse(CheckoutInput {
            provider: NAME.into(),
            merchant_reference: "order-1".into(),
            amount: Some((250_000, currency.into())),
            ..Default::default()
        })
        .unwrap()
    }

    // Independent vectors (Python 3):
    //   import hmac, hashlib
    //   msg = "".join(k + v for k, v in sorted(fields.items()) if k != "hmac")
    //   hmac.new(b"hitpay_salt_test", msg.encode(), hashlib.sha256).hexdigest()
    // fields = payment_id=9741164c-06a1-4dd7-a649-72cca8f9603a, payment_request_id=9ef68e2e-3569-4f69-9f68-04c7e4bb007c,
    //   phone=+6591234567, amount=2,500.00, currency=sgd, status=completed,
    //   reference_number=pay_01ARZ3NDEKTSV4RRFFQ69G5FAV, payment_type=paynow_online (an extra field: signed too)
    const PY_FORM: &str = "payment_id=9741164c-06a1-4dd7-a649-72cca8f9603a&payment_request_id=9ef68e2e-3569-4f69-9f68-04c7e4bb007c&phone=%2B6591234567&amount=2%2C500.00&currency=sgd&status=completed&reference_number=pay_01ARZ3NDEKTSV4RRFFQ69G5FAV&payment_type=paynow_online&hmac=27a62daaa33498560fbca9d96860bebb943db931c7875a85be29818f285ea51e";
    const PY_MESSAGE: &str = "amount2,500.00currencysgdpayment_id9741164c-06a1-4dd7-a649-72cca8f9603apayment_request_id9ef68e2e-3569-4f69-9f68-04c7e4bb007cpayment_typepaynow_onlinephone+6591234567reference_numberpay_01ARZ3NDEKTSV4RRFFQ69G5FAVstatuscompleted";
    /// The note's self-made vector: salt `salt_test`.
    const NOTE_FORM: &str = "payment_id=p1&payment_request_id=r1&phone=&amount=10.00&currency=SGD&status=completed&reference_number=ORD1&hmac=dcb253cf1b727e8a8e7c95997b389366cbbe9f53fcb99b73960951dc45713992";

    #[test]
    fn python_vectors_verify() {
        let h = hitpay("http://x/v1");
        let form = WebhookForm::parse(PY_FORM.as_bytes()).unwrap();
        assert_eq!(form.signed_message(), PY_MESSAGE);
        let v = h.verify_callback(&raw(PY_FORM), Utc::now()).unwrap();
        assert_eq!(v.event_id, "9741164c-06a1-4dd7-a649-72cca8f9603a:completed");
        assert_eq!(v.dedupe_key, sha256_hex(PY_FORM.as_bytes()), "no event id: the body's digest");
        let both = PaymentRef::Both {
            id: "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            checkout_id: "9ef68e2e-3569-4f69-9f68-04c7e4bb007c".into(),
        };
        assert_eq!(v.payment, both);
        assert_eq!(v.report.applied().status, Some(PaymentStatus::Succeeded));
        assert_eq!(v.report.applied().amount, Some((250_000, "SGD".into())));
        // Upper-case hex passes too.
        let upper = PY_FORM.replace(
            "27a62daaa33498560fbca9d96860bebb943db931c7875a85be29818f285ea51e",
            &"27a62daaa33498560fbca9d96860bebb943db931c7875a85be29818f285ea51e".to_uppercase(),
        );
        assert!(h.verify_callback(&raw(&upper), Utc::now()).is_ok());

        let note = HitPay::new(
            "default",
            &HitpayAccount { salt: "salt_test".into(), ..account("http://x/v1") },
            &ctx(Duration::from_secs(1)),
        )
        .unwrap();
        let v = note.verify_callback(&raw(NOTE_FORM), Utc::now()).unwrap();
        assert_eq!(
            (v.payment, v.report.applied().amount.clone()),
            (PaymentRef::Both { id: "ORD1".into(), checkout_id: "r1".into() }, Some((1000, "SGD".into())))
        );
    }

    #[test]
    fn tampered_forged_and_unsigned_forms_are_refused() {
        let h = hitpay("http://x/v1");
        for body in [
            PY_FORM.replace("2%2C500.00", "2%2C400.00"),
            PY_FORM.replace("status=completed", "status=failed"),
            format!("{PY_FORM}&extra=1"),
            PY_FORM.replace("&hmac=", "&hmac=00"),
            PY_FORM.split("&hmac=").next().unwrap().to_owned(),
            format!("{PY_FORM}&status=completed"),
        ] {
            assert_eq!(h.verify_callback(&raw(&body), Utc::now()), Err(CallbackError::SignatureInvalid), "{body}");
        }
        assert_eq!(h.verify_callback(&raw(NOTE_FORM), Utc::now()), Err(CallbackError::SignatureInvalid));
        assert_eq!(
            h.unverified_payment_hint(&raw(PY_FORM)),
            Some(PaymentRef::Both {
                id: "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                checkout_id: "9ef68e2e-3569-4f69-9f68-04c7e4bb007c".into()
            })
        );
    }

    #[test]
    fn debug_redacts_secrets_and_config_is_checked() {
        let h = hitpay("http://x/v1/");
        let text = format!("{h:?}");
        assert!(!text.contains("hp_key_unit") && !text.contains(SALT), "{text}");
        assert_eq!(h.base_url, "http://x/v1");
        for (bad, key) in [
            (HitpayAccount { api_key: Secret::default(), ..account("http://x/v1") }, "api_key"),
            (HitpayAccount { api_key: "bad\nkey".into(), ..account("http://x/v1") }, "api_key"),
            (HitpayAccount { salt: Secret::default(), ..account("http://x/v1") }, "salt"),
            (HitpayAccount { create_content_type: "xml".into(), ..account("http://x/v1") }, "create_content_type"),
            (account(""), "base_url"),
            (account("ftp://x/v1"), "base_url"),
        ] {
            let e = HitPay::new("default", &bad, &ctx(Duration::from_secs(1))).unwrap_err().to_string();
            assert!(e.contains(key) && !e.contains("hp_key_unit") && !e.contains(SALT), "{e}");
        }
    }

    #[test]
    fn three_decimal_currencies_are_refused() {
        let h = hitpay("http://x/v1");
        assert!(h.validate(&new_checkout("SGD")).is_ok());
        assert!(h.validate(&new_checkout("JPY")).is_ok());
        assert_eq!(h.validate(&new_checkout("KWD")).unwrap_err().field, "amount.currency");
    }

    #[tokio::test]
    async fn status_and_cancel_call_the_documented_endpoints() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/payment-requests/9ef68e2e"))
            .and(header("x-business-api-key", "hp_key_unit"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": "9ef68e2e", "status": "expired", "amount": "2,500.00", "currency": "sgd",
                "reference_number": "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", "payments": [],
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .and(path("/v1/payment-requests/9ef68e2e"))
            .and(header("x-business-api-key", "hp_key_unit"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({ "success": true })))
            .expect(1)
            .mount(&server)
            .await;
        let h = hitpay(&format!("{}/v1", server.uri()));
        let report = h.fetch_status(&payment(Some("9ef68e2e"))).await.unwrap().unwrap();
        assert_eq!(report.status, Some(PaymentStatus::Expired));
        assert_eq!(report.amount, Some((250_000, "SGD".into())));
        h.cancel(&payment(Some("9ef68e2e"))).await.unwrap();
        assert_eq!(h.fetch_status(&payment(None)).await, Ok(None));
        assert_eq!(h.cancel(&payment(None)).await, Ok(()));
    }

    #[tokio::test]
    async fn cancel_maps_provider_errors() {
        let server = MockServer::start().await;
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({ "message": "Not found" })))
            .mount(&server)
            .await;
        let err = hitpay(&format!("{}/v1", server.uri())).cancel(&payment(Some("r1"))).await.unwrap_err();
        assert_eq!(err, ProviderError::Rejected { code: "http_404".into(), message: "HTTP 404".into() });
    }

    #[test]
    fn arbitrary_callbacks_never_panic_and_never_verify_without_the_key() {
        crate::providers::proptests::never_verifies_without_the_key(
            &hitpay("http://127.0.0.1:9"),
            &["hitpay-signature", "x-signature"],
        );
    }
}
