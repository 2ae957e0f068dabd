//! The built-in sandbox provider: a hosted checkout served by paygate itself, whose page plays
//! the provider and sends signed server-to-server callbacks, so the whole flow runs offline.

mod config;

pub use config::SandboxAccount;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::page::{CheckoutPage, PageCallback, PageContent};
use super::signature::{parse_timestamped, sign_timestamped};
use super::{
    CallbackError, CallbackReport, CheckoutContext, CheckoutCreated, PaymentRef, Provider, ProviderError, RawCallback,
    VerifiedCallback,
};
use crate::domain::ids::prefixed_ulid;
use crate::domain::{Payment, PaymentStatus, StatusReport};

/// Header carrying the callback signature.
pub const SIGNATURE_HEADER: &str = "Paygate-Sandbox-Signature";
/// Checkout lifetime when the request gives no `ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// `failure_code` of a payment declined on the page.
pub const DECLINED_CODE: &str = "SANDBOX_DECLINED";

/// One sandbox account.
#[derive(Clone)]
pub struct Sandbox {
    account: String,
    secret: String,
    tolerance_secs: u64,
    public_base_url: String,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("account", &self.account).field("secret", &"<redacted>").finish()
    }
}

/// The callback body the page sends. Every field is required.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackBody {
    pub event_id: String,
    pub payment_id: String,
    pub status: String,
    pub amount: CallbackAmount,
    pub occurred_at: String,
}

/// Amount in a sandbox callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackAmount {
    pub amount_minor: i64,
    pub currency: String,
}

/// What the shopper chose on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pay,
    Fail,
    Cancel,
}

impl Action {
    /// Parses the form's `action` value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pay" => Some(Self::Pay),
            "fail" => Some(Self::Fail),
            "cancel" => Some(Self::Cancel),
            _ => None,
        }
    }

    /// The status the callback reports.
    pub fn status(self) -> PaymentStatus {
        match self {
            Self::Pay => PaymentStatus::Succeeded,
            Self::Fail => PaymentStatus::Failed,
            Self::Cancel => PaymentStatus::Cancelled,
        }
    }
}

impl Sandbox {
    pub fn new(account: String, secret: String, tolerance_secs: u64, public_base_url: String) -> Self {
        Self { account, secret, tolerance_secs, public_base_url }
    }

    /// Where the page posts its callbacks: the same ingress an outside provider uses.
    pub fn callback_url(&self) -> String {
        format!("{}/callbacks/sandbox/{}", self.public_base_url, self.account)
    }

    /// Builds and signs the callback for `action` on `payment`: (body, signature header value).
    pub fn build_callback(&self, payment: &Payment, action: Action, now: DateTime<Utc>) -> (Vec<u8>, String) {
        let body = CallbackBody {
            event_id: prefixed_ulid("evt_"),
            payment_id: payment.id.to_string(),
            status: action.status().as_str().to_owned(),
            amount: CallbackAmount {
                amount_minor: payment.amount.minor,
                currency: payment.amount.currency.code().to_owned(),
            },
            occurred_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let header = sign_timestamped(self.secret.as_bytes(), now.timestamp(), &bytes);
        (bytes, header)
    }
}

fn malformed() -> CallbackError {
    CallbackError::Malformed { field: "body".into() }
}

#[async_trait::async_trait]
impl Provider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn account(&self) -> &str {
        &self.account
    }

    /// The sandbox answers in process: no account limits apply.
    fn calls_out(&self) -> bool {
        false
    }

    /// The no-JavaScript page with Pay, Fail and Cancel.
    fn checkout_page(&self, _payment: &Payment) -> Option<CheckoutPage> {
        let actions = &[("pay", "Pay"), ("fail", "Fail"), ("cancel", "Cancel")];
        Some(CheckoutPage { title: "Sandbox checkout", content: PageContent::Form { actions } })
    }

    /// The page plays the provider: a signed callback for our own ingress.
    fn page_action(&self, payment: &Payment, action: &str, now: DateTime<Utc>) -> Option<PageCallback> {
        let action = Action::parse(action)?;
        let (body, signature) = self.build_callback(payment, action, now);
        Some(PageCallback {
            url: self.callback_url(),
            headers: vec![("content-type", "application/json".to_owned()), (SIGNATURE_HEADER, signature)],
            body,
            outcome: action.status(),
        })
    }

    async fn create_checkout(&self, ctx: CheckoutContext<'_>) -> Result<CheckoutCreated, ProviderError> {
        let ttl = ctx.checkout.ttl.unwrap_or(DEFAULT_TTL);
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| ProviderError::Rejected { code: "ttl".into(), message: "ttl out of range".into() })?;
        Ok(CheckoutCreated {
            checkout_url: format!("{}/sandbox/checkout/{}", self.public_base_url, ctx.payment_id),
            provider_checkout_id: Some(ctx.payment_id.to_owned()),
            provider_payment_id: None,
            expires_at: Some(ctx.created_at + ttl),
            metadata: Default::default(),
            provider_data: None,
        })
    }

    async fn fetch_status(&self, _payment: &Payment) -> Result<Option<StatusReport>, ProviderError> {
        // The sandbox's only source of truth is its callbacks, already applied.
        Ok(None)
    }

    fn verify_callback(&self, raw: &RawCallback, now: DateTime<Utc>) -> Result<VerifiedCallback, CallbackError> {
        let header = raw.header(SIGNATURE_HEADER).ok_or(CallbackError::SignatureInvalid)?;
        let signature = parse_timestamped(header)?;
        signature.verify(&[self.secret.as_bytes()], &raw.body, now, self.tolerance_secs)?;

        let body: CallbackBody = serde_json::from_slice(&raw.body).map_err(|_| malformed())?;
        let status: PaymentStatus = body.status.parse().map_err(|_| malformed())?;
        let occurred_at = DateTime::parse_from_rfc3339(&body.occurred_at).map_err(|_| malformed())?.with_timezone(&Utc);
        if body.event_id.is_empty() || body.payment_id.is_empty() {
            return Err(malformed());
        }
        let succeeded = status == PaymentStatus::Succeeded;
        let failed = status == PaymentStatus::Failed;
        Ok(VerifiedCallback {
            dedupe_key: body.event_id.clone(),
            event_id: body.event_id,
            payment: PaymentRef::Id(body.payment_id),
            report: CallbackReport::Apply(StatusReport {
                status: Some(status),
                provider_status: Some(status.as_str().to_owned()),
                amount: Some((body.amount.amount_minor, body.amount.currency)),
                provider_payment_id: succeeded.then(|| prefixed_ulid("sbx_")),
                payment_method: succeeded.then(|| "sandbox".to_owned()),
                failure_code: failed.then(|| DECLINED_CODE.to_owned()),
                failure_message: failed.then(|| "Declined on the sandbox checkout page".to_owned()),
                occurred_at: Some(occurred_at),
                ..Default::default()
            }),
        })
    }
}

impl super::ProviderModule for Sandbox {
    const NAME: &'static str = "sandbox";
    type Account = SandboxAccount;

    /// Enabled, with the `default` account.
    fn default_section() -> super::ProviderSection<SandboxAccount> {
        let mut section = super::ProviderSection::default();
        section.accounts.insert("default".into(), SandboxAccount::default());
        section
    }

    /// The webhook secret is the configured one, or the one generated and stored at startup
    /// (handed in through the account: adapters never touch the database).
    fn build(name: &str, account: &SandboxAccount, ctx: &super::ProviderContext) -> anyhow::Result<Self> {
        let secret = account
            .webhook_secret
            .as_ref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow::anyhow!("providers.sandbox.accounts.{name}.webhook_secret: not resolved"))?;
        Ok(Sandbox::new(
            name.to_owned(),
            secret.expose().to_owned(),
            account.webhook_tolerance_secs,
            ctx.public_base_url.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox::new("default".into(), "sbx_secret".into(), 300, "http://127.0.0.1:8080".into())
    }

    fn raw(body: &[u8], header: &str) -> RawCallback {
        let mut raw = RawCallback { body: body.to_vec(), ..Default::default() };
        raw.headers.insert("paygate-sandbox-signature".into(), header.into());
        raw
    }

    // Independent vector (Python):
    //   body = b'{"event_id":"evt_1","payment_id":"pay_01ARZ3NDEKTSV4RRFFQ69G5FAV","status":"succeeded",'
    //          b'"amount":{"amount_minor":1234,"currency":"USD"},"occurred_at":"2023-11-14T22:13:20Z"}'
    //   hmac.new(b"sbx_secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    const BODY: &str = r#"{"event_id":"evt_1","payment_id":"pay_01ARZ3NDEKTSV4RRFFQ69G5FAV","status":"succeeded","amount":{"amount_minor":1234,"currency":"USD"},"occurred_at":"2023-11-14T22:13:20Z"}"#;
    const PY_SIG: &str = "0dd0f91d0751af28beb15c4069edfb55959f4379fd5cccb0d364e9a13384a999";

    #[test]
    fn verifies_python_signed_callback() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let v = sandbox().verify_callback(&raw(BODY.as_bytes(), &format!("t=1700000000,v1={PY_SIG}")), now).unwrap();
        assert_eq!(v.dedupe_key, "evt_1");
        assert_eq!(v.payment, PaymentRef::Id("pay_01ARZ3NDEKTSV4RRFFQ69G5FAV".into()));
        assert_eq!(v.report.applied().status, Some(PaymentStatus::Succeeded));
        assert_eq!(v.report.applied().amount, Some((1234, "USD".into())));
        assert!(v.report.applied().provider_payment_id.clone().unwrap().starts_with("sbx_"));
    }

    #[test]
    fn check_order_signature_then_window_then_body() {
        let s = sandbox();
        let now = Utc::now();
        assert_eq!(s.verify_callback(&RawCallback::default(), now), Err(CallbackError::SignatureInvalid));
        let bad_body = b"not json";
        let stale = sign_timestamped(b"sbx_secret", now.timestamp() - 301, bad_body);
        assert_eq!(s.verify_callback(&raw(bad_body, &stale), now), Err(CallbackError::SignatureExpired));
        let forged = sign_timestamped(b"other", now.timestamp(), bad_body);
        assert_eq!(s.verify_callback(&raw(bad_body, &forged), now), Err(CallbackError::SignatureInvalid));
        let fresh = sign_timestamped(b"sbx_secret", now.timestamp(), bad_body);
        assert_eq!(s.verify_callback(&raw(bad_body, &fresh), now), Err(malformed()));
    }

    #[test]
    fn rejects_missing_fields_and_float_amounts() {
        let s = sandbox();
        let now = Utc::now();
        for body in [
            r#"{"event_id":"e","payment_id":"p","status":"succeeded","amount":{"amount_minor":1234,"currency":"USD"}}"#,
            r#"{"event_id":"e","payment_id":"p","status":"succeeded","amount":{"amount_minor":12.5,"currency":"USD"},"occurred_at":"2023-11-14T22:13:20Z"}"#,
            r#"{"event_id":"e","payment_id":"p","status":"paid","amount":{"amount_minor":1234,"currency":"USD"},"occurred_at":"2023-11-14T22:13:20Z"}"#,
            r#"{"event_id":"e","payment_id":"p","status":"failed","amount":{"amount_minor":1234,"currency":"USD"},"occurred_at":"yesterday"}"#,
        ] {
            let header = sign_timestamped(b"sbx_secret", now.timestamp(), body.as_bytes());
            assert_eq!(s.verify_callback(&raw(body.as_bytes(), &header), now), Err(malformed()), "{body}");
        }
    }

    #[test]
    fn built_callbacks_verify() {
        let s = sandbox();
        let now = Utc::now();
        let payment = Payment::fixture("sandbox", 500, "JPY");
        let (body, header) = s.build_callback(&payment, Action::Fail, now);
        let v = s.verify_callback(&raw(&body, &header), now).unwrap();
        assert_eq!(v.report.applied().status, Some(PaymentStatus::Failed));
        assert_eq!(v.report.applied().failure_code.as_deref(), Some(DECLINED_CODE));
        assert_eq!(v.report.applied().amount, Some((500, "JPY".into())));
    }

    #[test]
    fn arbitrary_callbacks_never_panic_and_never_verify_without_the_key() {
        crate::providers::proptests::never_verifies_without_the_key(&sandbox(), &["paygate-sandbox-signature"]);
    }

    proptest::proptest! {
        #![proptest_config(crate::providers::proptests::config())]

        /// A well-formed callback verifies only when signed with the account's secret.
        #[test]
        fn a_valid_callback_verifies_only_with_the_key(
            key in "[ -~]{1,40}",
            event in "[a-z0-9_]{1,20}",
            status in proptest::sample::select(vec!["pending", "processing", "succeeded", "failed", "cancelled", "expired"]),
            amount in 1i64..1_000_000,
        ) {
            proptest::prop_assume!(key != "sbx_secret");
            let body = serde_json::json!({
                "event_id": event, "payment_id": "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", "status": status,
                "amount": { "amount_minor": amount, "currency": "USD" }, "occurred_at": "2023-11-14T22:13:20Z",
            })
            .to_string();
            let now = Utc::now();
            let forged = sign_timestamped(key.as_bytes(), now.timestamp(), body.as_bytes());
            proptest::prop_assert_eq!(
                sandbox().verify_callback(&raw(body.as_bytes(), &forged), now).err(),
                Some(CallbackError::SignatureInvalid)
            );
            let genuine = sign_timestamped(b"sbx_secret", now.timestamp(), body.as_bytes());
            proptest::prop_assert!(sandbox().verify_callback(&raw(body.as_bytes(), &genuine), now).is_ok());
        }
    }
}
