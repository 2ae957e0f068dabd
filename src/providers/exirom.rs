//! Exirom (alternative payment methods, e.g. the ExPay e-wallet).
//!
//! - auth: `POST {base}/v1/auth` with the merchant key and secret → a bearer token (a JWT), cached
//!   until shortly before its `exp` and renewed once when a call answers 401;
//! - create: `POST {base}/v1/payments/apm` with `requestId` = our payment id (Exirom answers a
//!   repeated `requestId` with the original transaction, so a create that timed out may be
//!   retried) and a Base64 HMAC-SHA256 `checksum`;
//! - status: `GET {base}/v1/payments/apm/info/{transactionId}`;
//! - callbacks: server-to-server JSON, `X-Checksum` = Base64 HMAC-SHA256 (`merchant_secret`) of
//!   `accountId|orderAmount|orderCurrency|transactionId`. Nothing else is signed, so a verified
//!   callback only wakes the gateway up: it reports nothing and the status lookup decides.
//!
//! This file holds URLs, headers, the token cache and which flow calls what; the wire format is
//! in [`transformers`].

mod config;
pub mod transformers;

pub use config::{ExiromAccount, ExiromMethod};

use super::AccountConfig as _;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::{DateTime, Utc};
use reqwest::header::ACCEPT;
use subtle::ConstantTimeEq;

use self::transformers::{
    AmountFormat, ApmPayload, AuthRequest, CreateParams, CreatePaymentRequest, CreatePaymentResponse, CreateProblem,
    TxInfo, error_code,
};
use super::signature::{hmac_sha256, sha256_hex};
use super::{
    CallbackError, CallbackReport, CheckoutContext, CheckoutCreated, PaymentRef, Provider, ProviderContext,
    ProviderError, RawCallback, VerifiedCallback, http,
};
use crate::config::Secret;
use crate::domain::{NewCheckout, Payment, PaymentId, PaymentStatus, StatusReport, ValidationError};

/// Provider name in the API and in URLs.
pub const NAME: &str = "exirom";
/// Header carrying the callback checksum.
pub const CHECKSUM_HEADER: &str = "X-Checksum";
/// Token lifetime assumed when the token carries no `exp` (documented: 30 days); configurable
/// with `token_lifetime_secs`.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// A token is renewed this long before it expires (the note: about a day), or at half its
/// remaining life when that is shorter.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// A bearer token and when to stop using it.
struct CachedToken {
    value: String,
    renew_at: Instant,
}

/// One Exirom merchant account.
#[derive(Clone)]
pub struct Exirom {
    account: String,
    base_url: String,
    merchant_key: Secret,
    merchant_secret: Secret,
    account_id: String,
    methods: std::collections::BTreeMap<String, ApmPayload>,
    amount_formats: Vec<AmountFormat>,
    token_lifetime: Duration,
    /// Held across the auth call, so concurrent requests share one token request.
    token: Arc<tokio::sync::Mutex<Option<CachedToken>>>,
    ctx: ProviderContext,
}

impl std::fmt::Debug for Exirom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exirom")
            .field("account", &self.account)
            .field("base_url", &crate::config::redact_url_password(&self.base_url))
            .field("merchant_key", &"<redacted>")
            .field("merchant_secret", &"<redacted>")
            .field("account_id", &self.account_id)
            .field("methods", &self.methods.keys().collect::<Vec<_>>())
            .field("amount_formats", &self.amount_formats.iter().map(|f| f.as_str()).collect::<Vec<_>>())
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The error `http::send` gives for a 401: our token was refused.
fn is_unauthorized(e: &ProviderError) -> bool {
    matches!(e, ProviderError::Unavailable(m) if m == "HTTP 401")
}

fn unexpected(what: &str) -> ProviderError {
    ProviderError::OutcomeUnknown(format!("unexpected response shape: {what}"))
}

/// How long a token with `remaining` life may be used: until `TOKEN_REFRESH_MARGIN` before its
/// end, or half of it when the margin would eat more than half.
pub fn usable_for(remaining: Duration) -> Duration {
    remaining - TOKEN_REFRESH_MARGIN.min(remaining / 2)
}

impl Exirom {
    /// Builds the adapter for account `name`. Errors name the key, never a value.
    pub fn new(name: &str, config: &ExiromAccount, ctx: &ProviderContext) -> anyhow::Result<Self> {
        if let Some(problem) = config.problems().into_iter().next() {
            bail!("providers.exirom.accounts.{name}.{problem}");
        }
        let amount_formats = if config.callback_amount_formats.is_empty() {
            AmountFormat::DEFAULT.to_vec()
        } else {
            config.callback_amount_formats.iter().filter_map(|f| AmountFormat::parse(f)).collect()
        };
        let methods = config
            .methods
            .iter()
            .map(|(k, m)| {
                let payload = ApmPayload {
                    payment_method: m.payment_method.trim().to_owned(),
                    payment_type: m.payment_type.trim().to_owned(),
                };
                (k.clone(), payload)
            })
            .collect();
        Ok(Self {
            account: name.to_owned(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            merchant_key: config.merchant_key.clone(),
            merchant_secret: config.merchant_secret.clone(),
            account_id: config.account_id.trim().to_owned(),
            methods,
            amount_formats,
            token_lifetime: config.token_lifetime_secs.map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs),
            token: Arc::new(tokio::sync::Mutex::new(None)),
            ctx: ctx.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `{base}/v1/payments/apm/info/{transactionId}`, the id percent-encoded as one segment.
    fn info_url(&self, transaction_id: &str) -> String {
        let segment: String = url::form_urlencoded::byte_serialize(transaction_id.as_bytes()).collect();
        self.url(&format!("/v1/payments/apm/info/{}", segment.replace('+', "%20")))
    }

    /// Base64 HMAC-SHA256 under `merchant_secret`.
    fn checksum(&self, text: &str) -> String {
        transformers::encode_checksum(&hmac_sha256(self.merchant_secret.expose().as_bytes(), text.as_bytes()))
    }

    /// The APM payload for the request's first payment method.
    fn method_for(&self, checkout: &NewCheckout) -> Option<&ApmPayload> {
        self.methods.get(checkout.payment_methods.first()?.trim())
    }

    /// A valid token: the cached one, or a new one from `/v1/auth` (one request at a time).
    async fn token(&self) -> Result<String, ProviderError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(t.value.clone());
        }
        let body =
            AuthRequest { merchant_key: self.merchant_key.expose(), merchant_secret: self.merchant_secret.expose() };
        let request = self.ctx.client.post(self.url("/v1/auth")).header(ACCEPT, "application/json").json(&body);
        // Whatever the auth endpoint refuses is our configuration, not the payment: never a
        // definitive rejection that would fail the payment.
        let success = http::send(request, error_code).await.map_err(|e| match e {
            ProviderError::Rejected { .. } => ProviderError::Unavailable("authentication refused".into()),
            other => other,
        })?;
        let value = transformers::parse_auth_token(&success.body).ok_or_else(|| unexpected("no auth token"))?;
        let now_unix = Utc::now().timestamp();
        let remaining = match transformers::jwt_expiry(&value) {
            Some(exp) => Duration::from_secs(u64::try_from(exp.saturating_sub(now_unix)).unwrap_or(0)),
            None => self.token_lifetime,
        };
        *cached = Some(CachedToken { value: value.clone(), renew_at: Instant::now() + usable_for(remaining) });
        Ok(value)
    }

    /// Forgets `token` if it is still the cached one (another request may have renewed it).
    async fn drop_token(&self, token: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == token) {
            *cached = None;
        }
    }

    /// Sends the request `build` makes with a bearer token; on a 401 the token is dropped, a new
    /// one fetched, and the request sent once more.
    async fn send_authorized(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<http::Success, ProviderError> {
        let token = self.token().await?;
        match http::send(build(&token), error_code).await {
            Err(e) if is_unauthorized(&e) => {
                tracing::info!(provider = NAME, account = %self.account, "token refused; authenticating again");
                self.drop_token(&token).await;
                let token = self.token().await?;
                http::send(build(&token), error_code).await
            }
            other => other,
        }
    }

    /// Checks `X-Checksum` against each configured amount format, in order; the format that
    /// matched, or `SignatureInvalid`.
    fn verify_checksum(&self, header: &str, info: &TxInfo) -> Result<AmountFormat, CallbackError> {
        let received = transformers::decode_checksum(header).ok_or(CallbackError::SignatureInvalid)?;
        for format in &self.amount_formats {
            let Some(text) = info.callback_signed_text(*format) else { continue };
            let expected = hmac_sha256(self.merchant_secret.expose().as_bytes(), text.as_bytes());
            if received.len() == expected.len() && bool::from(received.ct_eq(&expected)) {
                return Ok(*format);
            }
        }
        Err(CallbackError::SignatureInvalid)
    }
}

/// What re-sending a create taught us about a payment whose create never answered.
enum Recovered {
    Transaction(String),
    /// Exirom answered the repeated create with a decline.
    Report(StatusReport),
    Nothing,
}

impl Exirom {
    /// For a PENDING payment with no transaction id (its create timed out): sends the create again
    /// with the same `requestId` (Exirom answers a repeated `requestId` with the original
    /// transaction) to learn the `transactionId`. The payment does not keep its payment methods,
    /// so the same body can only be rebuilt when the account maps exactly one method; otherwise
    /// nothing is sent and `Nothing` is returned (the gateway's ttl then expires the payment).
    async fn recover_transaction(&self, payment: &Payment) -> Result<Recovered, ProviderError> {
        if payment.status != PaymentStatus::Pending {
            return Ok(Recovered::Nothing);
        }
        let (Some(apm_payload), 1) = (self.methods.values().next(), self.methods.len()) else {
            tracing::warn!(provider = NAME, account = %self.account, "cannot rebuild the create of a payment with no transaction id: several methods configured");
            return Ok(Recovered::Nothing);
        };
        let callback_url = self.ctx.callback_url(NAME, &self.account);
        let return_url = self.ctx.return_url(NAME, payment.id.as_str());
        let params = CreateParams {
            payment_id: payment.id.as_str(),
            account_id: &self.account_id,
            minor: payment.amount.minor,
            currency: payment.amount.currency,
            apm_payload,
            callback_url: &callback_url,
            return_url: &return_url,
        };
        let Some(body) = CreatePaymentRequest::build(params, |text| self.checksum(text)) else {
            return Ok(Recovered::Nothing);
        };
        let url = self.url("/v1/payments/apm");
        let success = self
            .send_authorized(|token| {
                self.ctx.client.post(&url).bearer_auth(token).header(ACCEPT, "application/json").json(&body)
            })
            .await?;
        let response: CreatePaymentResponse = http::json(&success)?;
        match response.into_opened(payment.id.as_str()) {
            Ok(opened) => Ok(Recovered::Transaction(opened.transaction_id)),
            Err(CreateProblem::Shape) => Err(unexpected("no transactionId for our requestId")),
            Err(CreateProblem::Declined(code)) => Ok(Recovered::Report(StatusReport {
                status: Some(PaymentStatus::Failed),
                failure_message: Some(format!("Exirom reported {code}")),
                failure_code: Some(code),
                ..Default::default()
            })),
        }
    }
}

#[async_trait::async_trait]
impl Provider for Exirom {
    fn name(&self) -> &'static str {
        NAME
    }

    fn account(&self) -> &str {
        &self.account
    }

    /// A currency Exirom's two-decimal amounts can carry, and a first payment method that the
    /// account's `methods` maps onto an APM.
    fn validate(&self, checkout: &NewCheckout) -> Result<(), ValidationError> {
        if checkout.amount.currency.exponent() > transformers::MAX_AMOUNT_EXPONENT {
            return Err(ValidationError {
                field: "amount.currency".into(),
                reason: "Exirom amounts carry at most two decimals",
            });
        }
        if self.method_for(checkout).is_none() {
            return Err(ValidationError {
                field: "payment_methods".into(),
                reason: "the first payment method must be one configured for this Exirom account",
            });
        }
        Ok(())
    }

    async fn create_checkout(&self, ctx: CheckoutContext<'_>) -> Result<CheckoutCreated, ProviderError> {
        let refused =
            |code: &str| ProviderError::Rejected { code: code.into(), message: "refused before sending".into() };
        let apm_payload = self.method_for(ctx.checkout).ok_or_else(|| refused("payment_methods"))?;
        let callback_url = self.ctx.callback_url(NAME, &self.account);
        let return_url = self.ctx.return_url(NAME, ctx.payment_id);
        let body = CreatePaymentRequest::build(
            CreateParams {
                payment_id: ctx.payment_id,
                account_id: &self.account_id,
                minor: ctx.checkout.amount.minor,
                currency: ctx.checkout.amount.currency,
                apm_payload,
                callback_url: &callback_url,
                return_url: &return_url,
            },
            |text| self.checksum(text),
        )
        .ok_or_else(|| refused("currency"))?;
        let url = self.url("/v1/payments/apm");
        let success = self
            .send_authorized(|token| {
                self.ctx.client.post(&url).bearer_auth(token).header(ACCEPT, "application/json").json(&body)
            })
            .await?;
        let response: CreatePaymentResponse = http::json(&success)?;
        let opened = response.into_opened(ctx.payment_id).map_err(|problem| match problem {
            CreateProblem::Shape => unexpected("no transactionId for our requestId"),
            CreateProblem::Declined(code) => ProviderError::Rejected { code, message: "declined at creation".into() },
        })?;
        Ok(CheckoutCreated {
            checkout_url: opened.checkout_url,
            provider_checkout_id: Some(opened.transaction_id),
            provider_payment_id: None,
            // Exirom sets no expiry; EXPIRED arrives as a status. The gateway's own ttl stands.
            expires_at: None,
            metadata: Default::default(),
            provider_data: None,
        })
    }

    async fn fetch_status(&self, payment: &Payment) -> Result<Option<StatusReport>, ProviderError> {
        let stored = payment.provider_checkout_id.as_deref().filter(|id| !id.is_empty());
        let transaction_id = match stored {
            Some(id) => id.to_owned(),
            // The create never answered: Exirom dedupes on `requestId`, so the same create again
            // names the original transaction (see `recover_transaction`).
            None => match self.recover_transaction(payment).await? {
                Recovered::Transaction(id) => id,
                Recovered::Report(report) => return Ok(Some(report)),
                Recovered::Nothing => return Ok(None),
            },
        };
        let url = self.info_url(&transaction_id);
        let success = self
            .send_authorized(|token| self.ctx.client.get(&url).bearer_auth(token).header(ACCEPT, "application/json"))
            .await?;
        let info = TxInfo::parse(&success.body).map_err(|e| unexpected(&e.to_string()))?;
        if info.transaction_id != transaction_id {
            return Err(ProviderError::Unavailable("status lookup answered for another transaction".into()));
        }
        info.to_report().map(Some).map_err(|e| unexpected(&e.to_string()))
    }

    /// Only `accountId|orderAmount|orderCurrency|transactionId` is signed: everything else in the
    /// body (status, decline fields, processed amount, conversion rate, provider ids,
    /// `requestId`) could be edited in a replayed genuine callback. So a verified callback only
    /// queues a lookup (`GET /v1/payments/apm/info/{transactionId}`), and only that answer
    /// changes the status; the signed order amount is checked against the payment.
    fn verify_callback(&self, raw: &RawCallback, _now: DateTime<Utc>) -> Result<VerifiedCallback, CallbackError> {
        let header = raw.header(CHECKSUM_HEADER).ok_or(CallbackError::SignatureInvalid)?;
        // A body we cannot read cannot be checked: it is refused as unsigned, never trusted.
        let info = TxInfo::parse(&raw.body).map_err(|_| CallbackError::SignatureInvalid)?;
        let format = self.verify_checksum(header, &info)?;
        if format != AmountFormat::RawToken {
            tracing::warn!(
                provider = NAME,
                account = %self.account,
                format = format.as_str(),
                "callback checksum matched a non-raw amount format; check callback_amount_formats"
            );
        }
        if info.account_id.as_deref() != Some(self.account_id.as_str()) {
            return Err(CallbackError::Malformed { field: "accountId".into() });
        }
        // The documented shape carries a status; its value is not used (unsigned).
        if info.transaction_status.is_none() {
            return Err(CallbackError::Malformed { field: "transactionStatus".into() });
        }
        // The raw body's digest: the same delivery twice is a duplicate, an edited replay is not.
        let digest = sha256_hex(&raw.body);
        let event_id = format!("{}:{}", info.transaction_id, &digest[..16]);
        // The payment to look up: the one with the signed `transactionId`; only when none has
        // it, the one our (unsigned) `requestId` names, if its create never stored a transaction
        // (it timed out). The gateway then neither adopts the transaction nor trusts the amount
        // (both unsigned for that payment): it only queues a deferred lookup of the payment's
        // own transaction, so pointing a replay at another payment gains nothing.
        let amount = info.order_minor().map(|(minor, currency)| (minor, currency.code().to_owned()));
        let payment = match info.request_id.as_deref().and_then(PaymentId::parse) {
            Some(id) => PaymentRef::Both { id: id.as_str().to_owned(), checkout_id: info.transaction_id },
            None => PaymentRef::CheckoutId(info.transaction_id),
        };
        Ok(VerifiedCallback { dedupe_key: digest, event_id, payment, report: CallbackReport::LookUp { amount } })
    }

    fn unverified_payment_hint(&self, raw: &RawCallback) -> Option<PaymentRef> {
        transformers::hint(&raw.body).map(PaymentRef::CheckoutId)
    }

    /// Exirom dedupes creates on our `requestId`: sending the same create again is its lookup.
    fn create_is_idempotent(&self) -> bool {
        true
    }
}

impl super::ProviderModule for Exirom {
    const NAME: &'static str = NAME;
    type Account = ExiromAccount;

    fn build(name: &str, account: &ExiromAccount, ctx: &ProviderContext) -> anyhow::Result<Self> {
        Self::new(name, account, ctx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::checkout::CheckoutInput;

    const SECRET: &str = "merchant_secret_test";

    fn account(base_url: &str) -> ExiromAccount {
        ExiromAccount {
            base_url: base_url.into(),
            merchant_key: "mk_unit".into(),
            merchant_secret: SECRET.into(),
            account_id: "12345".into(),
            methods: BTreeMap::from([(
                "expay".to_owned(),
                ExiromMethod { payment_method: "ExPay".into(), payment_type: "E_WALLET".into() },
            )]),
            ..Default::default()
        }
    }

    fn adapter(config: &ExiromAccount) -> Exirom {
        let ctx = ProviderContext { public_base_url: "https://pg.example".into(), client: reqwest::Client::new() };
        Exirom::new("default", config, &ctx).unwrap()
    }

    fn raw(body: &str, checksum: &str) -> RawCallback {
        let mut raw = RawCallback { body: body.as_bytes().to_vec(), ..Default::default() };
        raw.headers.insert("x-checksum".into(), checksum.into());
        raw
    }

    // Independent vectors, Python 3:
    //   import hmac, hashlib, base64
    //   base64.b64encode(hmac.new(b"merchant_secret_test", MESSAGE.encode(), hashlib.sha256).digest())
    // The note's three self-made vectors, plus the document's sample in the other amount formats.
    const VECTORS: [(&str, &str); 5] = [
        ("merchant_001|10.00|USD|req-789123", "3hLj0f5qX1dqV2CdljQzGzoUgGLAgJi+qTLeLbiWbvk="),
        ("merchant_001|200.0|USD|tx-456789", "wYVueCxaewpqncPiPS0Useft+dOvnjOHk2aAPRhYKP4="),
        ("12345|100.0|USD|tx-987654321", "40M+vqVVr658+/TlUjZ9Js43Fw6nXIWg/HLUOSTilyw="),
        ("12345|100.00|USD|tx-987654321", "F7C74Cq9vsn1UnY6wBoLBnzBJKCT5Fcq4e3/H0GDaW8="),
        ("12345|10000|USD|tx-987654321", "fsZxTcHlR1LoLtFytsxpO8F1a/7ouXmCTS2BBLeXIJw="),
    ];

    /// The document's sample callback, comments stripped.
    const DOC_CALLBACK: &str = r#"{"transactionId":"tx-987654321","requestId":"req-123456789","accountId":12345,"transactionStatus":"COMPLETED","declineCode":null,"declineSubReason":null,"orderCurrency":"USD","processedCurrency":"USD","orderAmount":100.0,"processedAmount":100.0,"conversionRate":1.0,"apmRequestPayload":{"paymentMethod":"ExPay","paymentType":"E_WALLET"},"apmResponseData":{"paymentMethod":"ExPay","paymentType":"E_WALLET","redirectUrl":"https://pay.expay.example.com/checkout/tx-987654321","providerTransactionId":"ExPay-tx-12345"},"callbackUrl":"https://merchant.example.com/callbacks/payments","billingDetails":{},"order":{},"createdAt":"2023-01-01T12:00:00Z"}"#;

    #[test]
    fn python_vectors() {
        let a = adapter(&account("https://sandbox.api.exirom.com/api"));
        for (message, expected) in VECTORS {
            assert_eq!(a.checksum(message), expected, "{message}");
        }
        assert_eq!(transformers::request_signed_text("merchant_001", "10.00", "USD", "req-789123"), VECTORS[0].0);
    }

    #[test]
    fn verifies_the_document_sample_in_each_amount_format() {
        let a = adapter(&account("http://x"));
        for (i, want) in [(2, AmountFormat::RawToken), (3, AmountFormat::TwoDp), (4, AmountFormat::Minor)] {
            let v = a.verify_callback(&raw(DOC_CALLBACK, VECTORS[i].1), Utc::now()).unwrap();
            // `req-123456789` is not one of our ids: the signed transaction id is used.
            assert_eq!(v.payment, PaymentRef::CheckoutId("tx-987654321".into()));
            assert_eq!(v.dedupe_key, sha256_hex(DOC_CALLBACK.as_bytes()));
            // Nothing unsigned is reported: the gateway looks the transaction up instead, and
            // checks the signed order amount (100.0 USD) against the payment.
            assert_eq!(v.report, CallbackReport::LookUp { amount: Some((10_000, "USD".into())) });
            let info = TxInfo::parse(DOC_CALLBACK.as_bytes()).unwrap();
            assert_eq!(a.verify_checksum(VECTORS[i].1, &info), Ok(want));
        }
        // URL-safe and unpadded encodings of the same MAC pass too.
        let url_safe = VECTORS[2].1.replace('+', "-").replace('/', "_").trim_end_matches('=').to_owned();
        assert!(a.verify_callback(&raw(DOC_CALLBACK, &url_safe), Utc::now()).is_ok());
        // Only the configured formats are tried.
        let raw_only =
            adapter(&ExiromAccount { callback_amount_formats: vec!["raw_token".into()], ..account("http://x") });
        assert_eq!(
            raw_only.verify_callback(&raw(DOC_CALLBACK, VECTORS[3].1), Utc::now()),
            Err(CallbackError::SignatureInvalid)
        );
    }

    #[test]
    fn forged_tampered_and_foreign_callbacks() {
        let a = adapter(&account("http://x"));
        let good = VECTORS[2].1;
        assert_eq!(
            a.verify_callback(&RawCallback { body: DOC_CALLBACK.into(), ..Default::default() }, Utc::now()),
            Err(CallbackError::SignatureInvalid)
        );
        for bad in ["", "not base64!", "AAAA", VECTORS[0].1] {
            assert_eq!(a.verify_callback(&raw(DOC_CALLBACK, bad), Utc::now()), Err(CallbackError::SignatureInvalid));
        }
        let tampered = DOC_CALLBACK.replace("\"orderAmount\":100.0", "\"orderAmount\":1.0");
        assert_eq!(a.verify_callback(&raw(&tampered, good), Utc::now()), Err(CallbackError::SignatureInvalid));
        assert_eq!(a.verify_callback(&raw("nope", good), Utc::now()), Err(CallbackError::SignatureInvalid));
        let other_account = adapter(&ExiromAccount { account_id: "999".into(), ..account("http://x") });
        let forged_for_999 = other_account.checksum("12345|100.0|USD|tx-987654321");
        assert_eq!(forged_for_999, good, "same secret, same text");
        assert_eq!(
            other_account.verify_callback(&raw(DOC_CALLBACK, good), Utc::now()),
            Err(CallbackError::Malformed { field: "accountId".into() })
        );
        assert_eq!(
            a.unverified_payment_hint(&raw(DOC_CALLBACK, "x")),
            Some(PaymentRef::CheckoutId("tx-987654321".into()))
        );
        assert_eq!(a.unverified_payment_hint(&raw("garbage", "x")), None);
    }

    #[test]
    fn unsigned_fields_are_never_reported_and_edited_replays_are_not_duplicates() {
        let a = adapter(&account("http://x"));
        let good = VECTORS[2].1;
        let genuine = a.verify_callback(&raw(DOC_CALLBACK, good), Utc::now()).unwrap();
        let edited = DOC_CALLBACK
            .replace("\"transactionStatus\":\"COMPLETED\"", "\"transactionStatus\":\"DECLINED\"")
            .replace("\"declineCode\":null", "\"declineCode\":4051")
            .replace("\"processedCurrency\":\"USD\"", "\"processedCurrency\":\"EUR\"");
        let replay = a.verify_callback(&raw(&edited, good), Utc::now()).unwrap();
        assert_eq!(replay.report, genuine.report);
        assert_ne!(replay.dedupe_key, genuine.dedupe_key);
        assert_eq!(a.verify_callback(&raw(DOC_CALLBACK, good), Utc::now()).unwrap().dedupe_key, genuine.dedupe_key);
        // Our own `requestId` names the payment (only to schedule its lookup).
        let id = PaymentId::new();
        let ours = DOC_CALLBACK.replace("req-123456789", id.as_str());
        let v = a.verify_callback(&raw(&ours, good), Utc::now()).unwrap();
        assert_eq!(v.payment, PaymentRef::Both { id: id.as_str().to_owned(), checkout_id: "tx-987654321".into() });
    }

    #[test]
    fn validate_needs_a_configured_method_and_two_decimals() {
        let a = adapter(&account("http://x"));
        let parse = |currency: &str, methods: &[&str]| {
            NewCheckout::parse(CheckoutInput {
                provider: NAME.into(),
                merchant_reference: "r".into(),
                amount: Some((100, currency.into())),
                payment_methods: methods.iter().map(|m| (*m).to_owned()).collect(),
                ..Default::default()
            })
            .unwrap()
        };
        assert!(a.validate(&parse("USD", &["expay"])).is_ok());
        assert!(a.validate(&parse("JPY", &["expay", "other"])).is_ok());
        assert_eq!(a.validate(&parse("USD", &[])).unwrap_err().field, "payment_methods");
        assert_eq!(a.validate(&parse("USD", &["card", "expay"])).unwrap_err().field, "payment_methods");
        assert_eq!(a.validate(&parse("KWD", &["expay"])).unwrap_err().field, "amount.currency");
    }

    #[test]
    fn token_lifetimes_and_the_401_marker() {
        let day = 24 * 3600;
        assert_eq!(usable_for(Duration::from_secs(30 * day)), Duration::from_secs(29 * day));
        assert_eq!(usable_for(Duration::from_secs(3600)), Duration::from_secs(1800));
        assert_eq!(usable_for(Duration::ZERO), Duration::ZERO);
        // The marker `send_authorized` relies on is exactly what the shared mapping produces.
        let e = http::classify(reqwest::StatusCode::UNAUTHORIZED, Vec::new(), error_code).unwrap_err();
        assert!(is_unauthorized(&e));
        let e = http::classify(reqwest::StatusCode::FORBIDDEN, Vec::new(), error_code).unwrap_err();
        assert!(!is_unauthorized(&e));
    }

    #[test]
    fn config_problems_and_redaction() {
        let a = adapter(&account("http://x/api/"));
        assert_eq!(a.base_url, "http://x/api");
        assert_eq!(a.info_url("tx 1/2"), "http://x/api/v1/payments/apm/info/tx%201%2F2");
        let text = format!("{a:?}");
        assert!(!text.contains(SECRET) && !text.contains("mk_unit"), "{text}");
        let ctx = ProviderContext { public_base_url: "https://pg.example".into(), client: reqwest::Client::new() };
        for (bad, key) in [
            (ExiromAccount { merchant_secret: Secret::default(), ..account("http://x") }, "merchant_secret"),
            (ExiromAccount { merchant_key: Secret::default(), ..account("http://x") }, "merchant_key"),
            (ExiromAccount { account_id: String::new(), ..account("http://x") }, "account_id"),
            (ExiromAccount { methods: BTreeMap::new(), ..account("http://x") }, "methods"),
            (
                ExiromAccount { callback_amount_formats: vec!["cents".into()], ..account("http://x") },
                "callback_amount_formats",
            ),
            (account("sandbox.api.exirom.com"), "base_url"),
        ] {
            let e = Exirom::new("default", &bad, &ctx).unwrap_err().to_string();
            assert!(e.contains(&format!("providers.exirom.accounts.default.{key}")), "{e}");
            assert!(!e.contains(SECRET) && !e.contains("mk_unit"), "{e}");
        }
    }

    #[test]
    fn arbitrary_callbacks_never_panic_and_never_verify_without_the_key() {
        crate::providers::proptests::never_verifies_without_the_key(
            &adapter(&account("http://127.0.0.1:9")),
            &["x-checksum"],
        );
    }
}
