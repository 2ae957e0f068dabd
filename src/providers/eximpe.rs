//! EximPe (India): orders opened server-side, paid on EximPe's page opened by their JS SDK from
//! our own checkout page, results form-POSTed back through the shopper's browser.
//!
//! URLs, headers and which flow calls what live here; the wire format is in
//! [`transformers`].

mod config;
pub mod transformers;

pub use config::EximpeAccount;

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};

use self::transformers::{
    CallbackForm, CreateOrderProblem, CreateOrderRequest, CreateOrderResponse, GetOrderResponse, OpenedOrder,
    OrderParams,
};
use super::page::{CheckoutPage, PageContent, js_string};
use super::signature::{hex_matches, hmac_sha256, sha256_hex};
use super::{
    CallbackError, CallbackTransport, CheckoutContext, CheckoutCreated, PaymentRef, Provider, ProviderContext,
    ProviderError, RawCallback, VerifiedCallback, http,
};
use crate::config::Secret;
use crate::domain::{NewCheckout, Payment, StatusReport, ValidationError};

/// Provider name in the API and URLs.
pub const NAME: &str = "eximpe";
/// EximPe's browser SDK (document: "Include JS SDK").
pub const SDK_URL: &str = "https://cdn.eximpe.com/sdk/eximpe-sdk.min.js";
/// The production API host: with no `sdk_mode` configured, this base URL means SDK mode `production`.
pub const PRODUCTION_BASE_URL: &str = "https://api.eximpe.com";
/// Session lifetime when `session_ttl_secs` is unset (document: valid for 15 minutes).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(900);

/// Keys of `provider_data` (never shown to callers) that our checkout page reads.
pub const DATA_SESSION_ID: &str = "session_id";
pub const DATA_SDK_MODE: &str = "sdk_mode";

/// `EximPe({mode})` of the JS SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkMode {
    Sandbox,
    Production,
}

impl SdkMode {
    /// `sandbox` | `production`; empty → `production` for [`PRODUCTION_BASE_URL`], else `sandbox`.
    pub fn resolve(configured: &str, base_url: &str) -> Option<Self> {
        match configured {
            "sandbox" => Some(Self::Sandbox),
            "production" => Some(Self::Production),
            "" if base_url.trim_end_matches('/') == PRODUCTION_BASE_URL => Some(Self::Production),
            "" => Some(Self::Sandbox),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Production => "production",
        }
    }
}

/// One EximPe merchant account.
#[derive(Clone)]
pub struct Eximpe {
    account: String,
    base_url: String,
    /// `X-Client-ID`, `X-Client-Secret` and, when configured, `X-Merchant-ID` / `X-API-Version`.
    auth: HeaderMap,
    callback_key: Secret,
    hs_code: String,
    session_ttl: Duration,
    sdk_mode: SdkMode,
    public_base_url: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for Eximpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eximpe")
            .field("account", &self.account)
            .field("base_url", &crate::config::redact_url_password(&self.base_url))
            .field("credentials", &"<redacted>")
            .field("callback_key", &"<redacted>")
            .field("hs_code", &self.hs_code)
            .field("session_ttl", &self.session_ttl)
            .field("sdk_mode", &self.sdk_mode)
            .finish()
    }
}

fn header(name: &'static str, value: &str, key: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| anyhow::anyhow!("providers.eximpe: `{key}` is not a valid HTTP header value"))?;
    value.set_sensitive(true);
    Ok((HeaderName::from_static(name), value))
}

impl Eximpe {
    /// Builds the adapter for account `name`; fails on values that cannot work.
    pub fn new(name: &str, account: &EximpeAccount, ctx: &ProviderContext) -> anyhow::Result<Self> {
        let sdk_mode = SdkMode::resolve(&account.sdk_mode, &account.base_url).ok_or_else(|| {
            anyhow::anyhow!("providers.eximpe.accounts.{name}.sdk_mode: must be `sandbox` or `production`")
        })?;
        let mut auth = HeaderMap::new();
        for (header_name, value, key) in [
            ("x-client-id", account.client_id.as_str(), "client_id"),
            ("x-client-secret", account.client_secret.expose(), "client_secret"),
            ("x-merchant-id", account.merchant_id.as_str(), "merchant_id"),
            ("x-api-version", account.api_version.as_str(), "api_version"),
        ] {
            if !value.is_empty() {
                let (n, v) = header(header_name, value, key)?;
                auth.insert(n, v);
            }
        }
        Ok(Self {
            account: name.to_owned(),
            base_url: account.base_url.trim_end_matches('/').to_owned(),
            auth,
            callback_key: account.callback_key.clone(),
            hs_code: account.hs_code.clone(),
            session_ttl: account.session_ttl_secs.map_or(DEFAULT_SESSION_TTL, Duration::from_secs),
            sdk_mode,
            public_base_url: ctx.public_base_url.clone(),
            client: ctx.client.clone(),
        })
    }

    /// Where the shopper's browser posts the result: `{public}/callbacks/eximpe/{account}?payment_id={id}`.
    pub fn return_url(&self, payment_id: &str) -> String {
        let query: String =
            url::form_urlencoded::Serializer::new(String::new()).append_pair("payment_id", payment_id).finish();
        format!("{}/callbacks/{NAME}/{}?{query}", self.public_base_url, self.account)
    }

    /// Our page that opens the session with the SDK: `{public}/checkout/eximpe/{payment_id}`.
    pub fn checkout_page_url(&self, payment_id: &str) -> String {
        format!("{}/checkout/{NAME}/{payment_id}", self.public_base_url)
    }

    fn orders_url(&self) -> String {
        format!("{}/pg/orders/", self.base_url)
    }

    /// `{base}/pg/orders/{order_id}`, the id percent-encoded as one path segment.
    fn order_url(&self, order_id: &str) -> Result<String, ProviderError> {
        let bad_base = || ProviderError::Unavailable("base_url is not an http(s) URL".into());
        let mut url = url::Url::parse(&self.orders_url()).map_err(|_| bad_base())?;
        url.path_segments_mut().map_err(|_| bad_base())?.pop_if_empty().push(order_id);
        Ok(url.into())
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        self.client.request(method, url).headers(self.auth.clone()).header(ACCEPT, "application/json")
    }

    /// The HMAC-SHA256 of a callback form's signed message under `callback_key`.
    fn expected_hash(&self, form: &CallbackForm) -> [u8; 32] {
        hmac_sha256(self.callback_key.expose().as_bytes(), form.signed_message().as_bytes())
    }
}

/// Our payment id in the callback URL's query (`payment_id=…`), if any.
fn query_payment_id(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "payment_id")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

fn unexpected(what: &str) -> ProviderError {
    ProviderError::OutcomeUnknown(format!("unexpected response shape: {what}"))
}

#[async_trait::async_trait]
impl Provider for Eximpe {
    fn name(&self) -> &'static str {
        NAME
    }

    fn account(&self) -> &str {
        &self.account
    }

    /// EximPe's orders are INR only and need the buyer's name, email and phone; anything else is
    /// refused before a payment is written or EximPe is called.
    fn validate(&self, checkout: &NewCheckout) -> Result<(), ValidationError> {
        if checkout.amount.currency.code() != transformers::CURRENCY
            || checkout.amount.currency.exponent() != transformers::AMOUNT_EXPONENT
        {
            return Err(ValidationError { field: "amount.currency".into(), reason: "EximPe accepts INR only" });
        }
        let customer = &checkout.customer;
        for (field, value) in [
            ("customer.name", &customer.name),
            ("customer.email", &customer.email),
            ("customer.phone", &customer.phone),
        ] {
            if value.trim().is_empty() {
                return Err(ValidationError {
                    field: field.into(),
                    reason: "EximPe requires the buyer's name, email and phone",
                });
            }
        }
        Ok(())
    }

    async fn create_checkout(&self, ctx: CheckoutContext<'_>) -> Result<CheckoutCreated, ProviderError> {
        let return_url = self.return_url(ctx.payment_id);
        let body = CreateOrderRequest::new(
            ctx.checkout,
            OrderParams { payment_id: ctx.payment_id, return_url: &return_url, hs_code: &self.hs_code },
        );
        let request = self.request(reqwest::Method::POST, self.orders_url()).json(&body);
        let success = http::send(request, transformers::error_code).await?;
        let response: CreateOrderResponse = http::json(&success)?;
        let order = OpenedOrder::try_from(response).map_err(|problem| match problem {
            CreateOrderProblem::Refused(code) => ProviderError::Rejected { code, message: "success: false".into() },
            CreateOrderProblem::Shape => unexpected("no data.order_id or data.session_id"),
        })?;
        // The session lives `session_ttl`; a shorter `ttl` from the caller wins.
        let ttl = ctx.checkout.ttl.map_or(self.session_ttl, |t| t.min(self.session_ttl));
        let ttl = chrono::Duration::from_std(ttl).map_err(|_| unexpected("session ttl out of range"))?;
        Ok(CheckoutCreated {
            checkout_url: self.checkout_page_url(ctx.payment_id),
            provider_checkout_id: Some(order.order_id),
            provider_payment_id: None,
            expires_at: Some(ctx.created_at + ttl),
            metadata: Default::default(),
            provider_data: Some(serde_json::json!({
                DATA_SESSION_ID: order.session_id,
                DATA_SDK_MODE: self.sdk_mode.as_str(),
            })),
        })
    }

    async fn fetch_status(&self, payment: &Payment) -> Result<Option<StatusReport>, ProviderError> {
        // Without an order id (the create never answered) there is nothing to ask about: EximPe
        // documents no lookup by reference.
        let Some(order_id) = payment.provider_checkout_id.as_deref().filter(|id| !id.is_empty()) else {
            return Ok(None);
        };
        let request = self.request(reqwest::Method::GET, self.order_url(order_id)?);
        let success = http::send(request, transformers::error_code).await?;
        let response: GetOrderResponse = http::json(&success)?;
        let data = response.data.ok_or_else(|| unexpected("no data"))?;
        let testing = self.sdk_mode == SdkMode::Sandbox;
        let report = data.into_report(order_id, testing).map_err(|problem| unexpected(&format!("{problem:?}")))?;
        Ok(Some(report))
    }

    fn verify_callback(&self, raw: &RawCallback, _now: DateTime<Utc>) -> Result<VerifiedCallback, CallbackError> {
        // No timestamp is signed, so there is no window: replays are handled by the dedupe key
        // and the state machine.
        let form = CallbackForm::parse(&raw.body).map_err(|_| CallbackError::SignatureInvalid)?;
        let hash = form.hash.as_deref().ok_or(CallbackError::SignatureInvalid)?;
        if !hex_matches(&self.expected_hash(&form), hash) {
            return Err(CallbackError::SignatureInvalid);
        }
        if form.order_id.is_empty() {
            return Err(CallbackError::Malformed { field: "order_id".into() });
        }
        if form.status.is_empty() {
            return Err(CallbackError::Malformed { field: "status".into() });
        }
        // No event id in the form: the body's digest is the dedupe key.
        Ok(VerifiedCallback {
            dedupe_key: sha256_hex(&raw.body),
            event_id: form.event_key(),
            payment: PaymentRef::CheckoutId(form.order_id.clone()),
            report: form.report(),
        })
    }

    fn unverified_payment_hint(&self, raw: &RawCallback) -> Option<PaymentRef> {
        if let Some(id) = query_payment_id(&raw.query) {
            return Some(PaymentRef::Id(id));
        }
        let form = CallbackForm::parse(&raw.body).ok()?;
        (!form.order_id.is_empty()).then_some(PaymentRef::CheckoutId(form.order_id))
    }

    /// EximPe returns no redirect URL, only a session that its JS SDK opens in the browser: our
    /// page loads the SDK and opens the payment's session (kept in provider-private data).
    fn checkout_page(&self, payment: &Payment) -> Option<CheckoutPage> {
        let data = |key: &str| payment.provider_data.get(key).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
        let mode = data(DATA_SDK_MODE).unwrap_or("sandbox");
        let content = match data(DATA_SESSION_ID) {
            Some(session) => PageContent::Script {
                src: SDK_URL,
                init: format!(
                    "const eximpe = EximPe({{ mode: {mode} }});\n\
const openCheckout = () => eximpe.checkout({{ sessionId: {session} }});\n\
document.getElementById(\"pay\").addEventListener(\"click\", openCheckout);\n\
openCheckout();",
                    mode = js_string(mode),
                    session = js_string(session),
                ),
            },
            None => PageContent::Closed,
        };
        Some(CheckoutPage { title: "EximPe checkout", content })
    }

    fn callback_transport(&self) -> CallbackTransport {
        CallbackTransport::Browser
    }
}

impl super::ProviderModule for Eximpe {
    const NAME: &'static str = NAME;
    type Account = EximpeAccount;

    fn build(name: &str, account: &EximpeAccount, ctx: &ProviderContext) -> anyhow::Result<Self> {
        Self::new(name, account, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::AccountConfig as _;

    // Independent vectors, computed with Python 3:
    //   import hmac, hashlib
    //   hmac.new(KEY.encode(), MESSAGE.encode(), hashlib.sha256).hexdigest()
    /// The engineering note's vector over the document's sample callback fields, key `test_secret`.
    const NOTE_KEY: &str = "test_secret";
    const SAMPLE_MESSAGE: &str =
        "OD6567064038|PR2352113376|payment_successful|UPI|OD6567064038-PR2352113376|2025-06-25 12:15:48+00:00";
    const PY_SAMPLE_HASH: &str = "8e635168fc0307b9956e161c77ff63d4a8aad61e545f1249a707a6c6cc9c7697";
    /// Key `test_secret` over `OD1|||||` (only `order_id` present: missing fields are empty).
    const PY_MISSING_HASH: &str = "c0980c24024688bd94c202838f24b4b04fdc081f407b35e5bd23d0028a97f7cf";
    /// The document's sample form body with the document's own hash (its key is not given).
    const DOC_FORM_PREFIX: &str = "order_id=OD6567064038&payment_id=PR2352113376&status=payment_successful&message=Payment+captured+successfully&mop_type=UPI&bank_ref_num=OD6567064038-PR2352113376&payment_completed_at=2025-06-25+12%3A15%3A48%2B00%3A00";
    const DOC_HASH: &str = "078692abdb83a5873a5e17d416f326a4589ed6ac02aed36739a5900fd8b5650f";

    fn adapter(key: &str) -> Eximpe {
        let account = EximpeAccount {
            base_url: "https://api-staging.eximpe.com/".into(),
            client_id: "cid".into(),
            client_secret: "csecret".into(),
            callback_key: key.into(),
            hs_code: "49011010".into(),
            ..Default::default()
        };
        let ctx = ProviderContext { public_base_url: "https://pg.example".into(), client: reqwest::Client::new() };
        Eximpe::new("default", &account, &ctx).unwrap()
    }

    fn form(body: &str, query: &str) -> RawCallback {
        let mut raw = RawCallback { body: body.as_bytes().to_vec(), query: query.into(), ..Default::default() };
        raw.headers.insert("content-type".into(), "application/x-www-form-urlencoded".into());
        raw
    }

    #[test]
    fn python_vectors() {
        let a = adapter(NOTE_KEY);
        let sample = CallbackForm::parse(DOC_FORM_PREFIX.as_bytes()).unwrap();
        assert_eq!(sample.signed_message(), SAMPLE_MESSAGE);
        assert_eq!(hex::encode(a.expected_hash(&sample)), PY_SAMPLE_HASH);
        let missing = CallbackForm::parse(b"order_id=OD1").unwrap();
        assert_eq!(hex::encode(a.expected_hash(&missing)), PY_MISSING_HASH);
    }

    #[test]
    fn verifies_the_sample_form_signed_with_the_note_key_in_either_case() {
        let a = adapter(NOTE_KEY);
        for hash in [PY_SAMPLE_HASH.to_owned(), PY_SAMPLE_HASH.to_uppercase()] {
            let raw = form(&format!("{DOC_FORM_PREFIX}&hash={hash}"), "payment_id=pay_01ARZ3NDEKTSV4RRFFQ69G5FAV");
            let v = a.verify_callback(&raw, Utc::now()).unwrap();
            assert_eq!(v.payment, PaymentRef::CheckoutId("OD6567064038".into()));
            assert_eq!(v.event_id, "OD6567064038:PR2352113376:payment_successful");
            assert_eq!(v.dedupe_key, crate::providers::signature::sha256_hex(&raw.body));
            // A success form is verified but proves nothing: the status lookup decides.
            assert_eq!(v.report, crate::providers::CallbackReport::LookUp { amount: None });
        }
    }

    #[test]
    fn the_documents_own_hash_does_not_verify_under_a_guessed_key() {
        // The document's key is unknown; the sample only proves the field set and order.
        let raw = form(&format!("{DOC_FORM_PREFIX}&hash={DOC_HASH}"), "");
        assert_eq!(adapter(NOTE_KEY).verify_callback(&raw, Utc::now()), Err(CallbackError::SignatureInvalid));
    }

    #[test]
    fn forged_tampered_missing_and_malformed() {
        let a = adapter(NOTE_KEY);
        let now = Utc::now();
        // The message is not signed: changing it keeps the hash valid.
        let ok = DOC_FORM_PREFIX.replace("Payment+captured+successfully", "anything");
        assert!(a.verify_callback(&form(&format!("{ok}&hash={PY_SAMPLE_HASH}"), ""), now).is_ok());
        for body in [
            DOC_FORM_PREFIX.replace("payment_successful", "payment_failed") + "&hash=" + PY_SAMPLE_HASH,
            DOC_FORM_PREFIX.to_owned(),
            format!("{DOC_FORM_PREFIX}&hash="),
            format!("{DOC_FORM_PREFIX}&hash=zz{}", &PY_SAMPLE_HASH[2..]),
            format!("{DOC_FORM_PREFIX}&hash={}", &PY_SAMPLE_HASH[..62]),
            format!("{DOC_FORM_PREFIX}&status=payment_successful&hash={PY_SAMPLE_HASH}"),
        ] {
            assert_eq!(a.verify_callback(&form(&body, ""), now), Err(CallbackError::SignatureInvalid), "{body}");
        }
        assert_eq!(
            adapter("other").verify_callback(&form(&format!("{DOC_FORM_PREFIX}&hash={PY_SAMPLE_HASH}"), ""), now),
            Err(CallbackError::SignatureInvalid)
        );
        // Correctly signed but without a status: malformed.
        let raw = form(&format!("order_id=OD1&hash={PY_MISSING_HASH}"), "");
        assert_eq!(a.verify_callback(&raw, now), Err(CallbackError::Malformed { field: "status".into() }));
    }

    #[test]
    fn unverified_hint_prefers_our_id_in_the_query() {
        let a = adapter(NOTE_KEY);
        let raw = form("order_id=OD9&hash=00", "payment_id=pay_01ARZ3NDEKTSV4RRFFQ69G5FAV");
        assert_eq!(a.unverified_payment_hint(&raw), Some(PaymentRef::Id("pay_01ARZ3NDEKTSV4RRFFQ69G5FAV".into())));
        assert_eq!(a.unverified_payment_hint(&form("order_id=OD9", "")), Some(PaymentRef::CheckoutId("OD9".into())));
        assert_eq!(a.unverified_payment_hint(&form("status=x", "")), None);
    }

    #[test]
    fn urls_and_modes() {
        let a = adapter("k");
        assert_eq!(a.orders_url(), "https://api-staging.eximpe.com/pg/orders/");
        assert_eq!(a.order_url("OD 1/2").unwrap(), "https://api-staging.eximpe.com/pg/orders/OD%201%2F2");
        assert_eq!(a.order_url("OD9411897512").unwrap(), "https://api-staging.eximpe.com/pg/orders/OD9411897512");
        assert_eq!(
            a.return_url("pay_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            "https://pg.example/callbacks/eximpe/default?payment_id=pay_01ARZ3NDEKTSV4RRFFQ69G5FAV"
        );
        assert_eq!(a.checkout_page_url("pay_1"), "https://pg.example/checkout/eximpe/pay_1");
        assert_eq!(a.sdk_mode, SdkMode::Sandbox);
        assert_eq!(SdkMode::resolve("", "https://api.eximpe.com/"), Some(SdkMode::Production));
        assert_eq!(SdkMode::resolve("sandbox", "https://api.eximpe.com"), Some(SdkMode::Sandbox));
        assert_eq!(SdkMode::resolve("live", ""), None);
    }

    #[test]
    fn config_problems_name_each_bad_key() {
        let good = EximpeAccount {
            base_url: "https://api.eximpe.com".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            callback_key: "k".into(),
            hs_code: "49011010".into(),
            ..Default::default()
        };
        assert!(good.problems().is_empty());
        let bad = EximpeAccount {
            base_url: "api.eximpe.com".into(),
            sdk_mode: "live".into(),
            session_ttl_secs: Some(10),
            ..Default::default()
        };
        let problems = bad.problems();
        for key in ["base_url", "client_id", "client_secret", "callback_key", "hs_code", "sdk_mode", "session_ttl_secs"]
        {
            assert!(problems.iter().any(|p| p.starts_with(&format!("{key}:"))), "{key}: {problems:?}");
        }
    }

    #[test]
    fn debug_redacts_credentials() {
        let text = format!("{:?}", adapter("very-secret-callback-key"));
        assert!(!text.contains("very-secret-callback-key") && !text.contains("csecret") && !text.contains("cid"));
        assert!(text.contains("<redacted>"));
        assert!(text.contains("https://api-staging.eximpe.com"), "a plain base URL is shown: {text}");
        let account = EximpeAccount {
            base_url: "https://user:url-password@api.eximpe.example/".into(),
            client_id: "cid".into(),
            client_secret: "csecret".into(),
            callback_key: "k".into(),
            hs_code: "49011010".into(),
            ..Default::default()
        };
        let ctx = ProviderContext { public_base_url: "https://pg.example".into(), client: reqwest::Client::new() };
        let text = format!("{:?}", Eximpe::new("default", &account, &ctx).unwrap());
        assert!(!text.contains("url-password") && !text.contains("user:"), "{text}");
    }

    fn checkout(currency: &str, customer: crate::domain::checkout::Customer) -> NewCheckout {
        use crate::domain::checkout::CheckoutInput;
        NewCheckout::parse(CheckoutInput {
            provider: NAME.into(),
            merchant_reference: "r".into(),
            amount: Some((100, currency.into())),
            customer,
            ..Default::default()
        })
        .unwrap()
    }

    fn buyer() -> crate::domain::checkout::Customer {
        crate::domain::checkout::Customer {
            name: "Asha Rao".into(),
            email: "asha@example.in".into(),
            phone: "+919876543210".into(),
        }
    }

    #[test]
    fn only_inr_is_accepted() {
        let a = adapter("k");
        assert!(a.validate(&checkout("INR", buyer())).is_ok());
        for other in ["USD", "JPY", "KWD"] {
            assert_eq!(a.validate(&checkout(other, buyer())).unwrap_err().field, "amount.currency", "{other}");
        }
    }

    #[test]
    fn the_buyer_s_name_email_and_phone_are_required_first_missing_named() {
        use crate::domain::checkout::Customer;
        let a = adapter("k");
        let field = |customer: Customer| a.validate(&checkout("INR", customer)).unwrap_err().field;
        assert_eq!(field(Customer::default()), "customer.name");
        assert_eq!(field(Customer { name: " ".into(), ..buyer() }), "customer.name");
        assert_eq!(field(Customer { email: String::new(), phone: String::new(), ..buyer() }), "customer.email");
        assert_eq!(field(Customer { phone: String::new(), ..buyer() }), "customer.phone");
    }

    #[test]
    fn arbitrary_callbacks_never_panic_and_never_verify_without_the_key() {
        crate::providers::proptests::never_verifies_without_the_key(&adapter("eximpe_callback_key"), &["x-signature"]);
    }
}
