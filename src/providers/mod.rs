//! Provider adapters behind one trait, and the registry that builds them from configuration.
//! Adapters never touch the database: they turn our requests into the provider's wire format and
//! the provider's callbacks into verified [`StatusReport`]s.

pub(crate) mod account;
pub mod eximpe;
pub mod exirom;
pub mod hitpay;
pub mod http;
pub mod page;
#[cfg(test)]
pub(crate) mod proptests;
pub mod registry;
pub mod sandbox;
pub mod signature;
pub mod xpay;
pub mod xstak;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::domain::{NewCheckout, Payment, StatusReport, ValidationError};

pub use crate::config::ProviderSection;
pub use registry::Registry;

/// What every adapter gets from the application when it is built.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// Base of our own URLs given to providers (callbacks, returns, hosted pages), no trailing `/`.
    pub public_base_url: String,
    /// The one HTTP client for all provider calls (timeouts set); see [`http::send`].
    pub client: reqwest::Client,
}

impl ProviderContext {
    /// `{public_base_url}/callbacks/{provider}/{account}`.
    pub fn callback_url(&self, provider: &str, account: &str) -> String {
        format!("{}/callbacks/{provider}/{account}", self.public_base_url)
    }

    /// `{public_base_url}/return/{provider}/{payment_id}`.
    pub fn return_url(&self, provider: &str, payment_id: &str) -> String {
        format!("{}/return/{provider}/{payment_id}", self.public_base_url)
    }
}

/// One provider account's configuration (`providers.<provider>.accounts.<name>`).
pub trait AccountConfig: serde::Serialize + serde::de::DeserializeOwned + Default + Clone + std::fmt::Debug {
    /// Everything that makes the account unusable, each as `key: reason` (never a value). Both
    /// `check-config` and startup use it, so they refuse the same accounts.
    fn problems(&self) -> Vec<String>;
}

/// One provider as the application knows it: its name, its account configuration and how a
/// configured account becomes an adapter. Each provider module implements it once; the list in
/// [`provider_list!`] below is the only other place a provider is named.
pub trait ProviderModule: Provider + Sized + 'static {
    /// Name in the API, in callback URLs and in configuration (`providers.<NAME>`).
    const NAME: &'static str;
    /// One account's configuration.
    type Account: AccountConfig;

    /// The section's default (enabled, no accounts).
    fn default_section() -> ProviderSection<Self::Account> {
        ProviderSection::default()
    }

    /// The adapter of a valid account (its problems were checked already).
    fn build(name: &str, account: &Self::Account, ctx: &ProviderContext) -> anyhow::Result<Self>;

    /// Builds the adapter and adds it to `registry`.
    fn register(
        registry: &mut Registry,
        name: &str,
        account: &Self::Account,
        ctx: &ProviderContext,
    ) -> anyhow::Result<()> {
        registry.add(std::sync::Arc::new(Self::build(name, account, ctx)?));
        Ok(())
    }
}

/// Declares the providers: the configuration sections, [`KNOWN_PROVIDERS`] and the registry
/// all follow from this one list. The field name is the provider's [`ProviderModule::NAME`].
macro_rules! provider_list {
    ($($name:ident => $module:ty),+ $(,)?) => {
        /// Names of every provider of the list.
        pub const KNOWN_PROVIDERS: &[&str] = &[$(stringify!($name)),+];

        /// `[providers.<name>]`: one section per provider of the list (unknown keys are errors).
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct ProvidersConfig {
            $(pub $name: ProviderSection<<$module as ProviderModule>::Account>,)+
        }

        impl Default for ProvidersConfig {
            fn default() -> Self {
                Self { $($name: <$module as ProviderModule>::default_section(),)+ }
            }
        }

        impl ProvidersConfig {
            /// Each provider's name and configured account names.
            pub fn account_names(&self) -> Vec<(&'static str, Vec<String>)> {
                vec![$((stringify!($name), self.$name.accounts.keys().cloned().collect()),)+]
            }

            /// Problems of every account of every enabled provider, each as
            /// `providers.<provider>.accounts.<name>.<key>: reason`.
            pub fn problems(&self) -> Vec<String> {
                let mut out = Vec::new();
                $(out.extend(section_problems::<$module>(stringify!($name), &self.$name));)+
                out
            }

            /// Registers every account of every enabled provider.
            pub fn register_all(&self, registry: &mut Registry, ctx: &ProviderContext) -> anyhow::Result<()> {
                $(register_section::<$module>(&self.$name, registry, ctx)?;)+
                Ok(())
            }
        }

        #[cfg(test)]
        #[test]
        fn list_names_are_the_modules_names() {
            $(assert_eq!(stringify!($name), <$module as ProviderModule>::NAME);)+
        }
    };
}

provider_list! {
    sandbox => sandbox::Sandbox,
    eximpe => eximpe::Eximpe,
    xpay => xpay::XPay,
    hitpay => hitpay::HitPay,
    xstak => xstak::Xstak,
    exirom => exirom::Exirom,
}

fn section_problems<M: ProviderModule>(provider: &str, section: &ProviderSection<M::Account>) -> Vec<String> {
    if !section.enabled {
        return Vec::new();
    }
    section
        .accounts
        .iter()
        .flat_map(|(name, account)| {
            account.problems().into_iter().map(move |p| format!("providers.{provider}.accounts.{name}.{p}"))
        })
        .collect()
}

fn register_section<M: ProviderModule>(
    section: &ProviderSection<M::Account>,
    registry: &mut Registry,
    ctx: &ProviderContext,
) -> anyhow::Result<()> {
    if !section.enabled {
        return Ok(());
    }
    for (name, account) in &section.accounts {
        let problems = account.problems();
        if !problems.is_empty() {
            anyhow::bail!("providers.{}.accounts.{name}: {}", M::NAME, problems.join("; "));
        }
        M::register(registry, name, account, ctx)?;
    }
    Ok(())
}

/// What an adapter needs to open a checkout.
#[derive(Debug, Clone, Copy)]
pub struct CheckoutContext<'a> {
    pub payment_id: &'a str,
    pub checkout: &'a NewCheckout,
    pub created_at: DateTime<Utc>,
}

/// A checkout the provider opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckoutCreated {
    pub checkout_url: String,
    pub provider_checkout_id: Option<String>,
    pub provider_payment_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Extra data to merge into the payment's metadata, visible to the caller (e.g. a QR payload).
    pub metadata: BTreeMap<String, String>,
    /// Provider-private data kept with the payment, never shown to callers (e.g. a session id our
    /// own checkout page needs). Replaces what was stored before when `Some`.
    pub provider_data: Option<serde_json::Value>,
}

/// A failed call to a provider.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the request (4xx): definitive.
    #[error("provider rejected the request ({code}): {message}")]
    Rejected { code: String, message: String },
    /// The request was not processed (connection failed before it was written, HTTP 429, 503,
    /// our credentials refused): sending it again is safe.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider may have processed the request (HTTP 500, 502, 504, a read error, an answer
    /// we cannot use): a create must not be sent again, the payment is checked instead.
    #[error("provider outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// No answer in time: the outcome is unknown, as with [`ProviderError::OutcomeUnknown`].
    #[error("provider timed out")]
    Timeout,
    /// The provider has no such operation.
    #[error("operation not supported by this provider")]
    Unsupported,
}

impl ProviderError {
    /// Whether the provider may have acted on the request although we have no usable answer.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Self::OutcomeUnknown(_) | Self::Timeout)
    }

    /// A short description without provider text, fit for logs and `provider_checks.last_error`.
    pub fn summary(&self) -> String {
        match self {
            Self::Rejected { code, .. } => format!("rejected: {code}"),
            Self::Unavailable(detail) => format!("unavailable: {}", detail_head(detail)),
            Self::OutcomeUnknown(detail) => format!("outcome unknown: {}", detail_head(detail)),
            Self::Timeout => "timeout".into(),
            Self::Unsupported => "unsupported".into(),
        }
    }
}

/// The part of an error detail before any `:` (details may quote a provider's answer).
fn detail_head(detail: &str) -> &str {
    detail.split(':').next().unwrap_or_default().trim()
}

/// A callback exactly as delivered.
#[derive(Debug, Clone, Default)]
pub struct RawCallback {
    /// Header names lower-cased; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Raw query string without `?`.
    pub query: String,
}

impl RawCallback {
    /// The one way both transports build a callback: header names lower-cased, repeated headers
    /// joined with `, ` in the order received.
    pub fn new(
        headers: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
        body: Vec<u8>,
        query: String,
    ) -> Self {
        let mut joined: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in headers {
            let entry = joined.entry(name.as_ref().to_ascii_lowercase()).or_default();
            if !entry.is_empty() {
                entry.push_str(", ");
            }
            entry.push_str(value.as_ref());
        }
        Self { headers: joined, body, query }
    }

    /// A header by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// Why a callback was refused before it could touch a payment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("signature invalid")]
    SignatureInvalid,
    #[error("signature outside its time window")]
    SignatureExpired,
    /// Correctly signed but not of the documented shape; `field` names what is wrong.
    #[error("malformed callback: {field}")]
    Malformed { field: String },
}

/// How the payment a callback is about is identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentRef {
    /// Our payment id, echoed by the provider.
    Id(String),
    /// The provider's checkout id (unique per provider).
    CheckoutId(String),
    /// Both: matched by the checkout id; when no payment has it, by our id, and a payment that
    /// never stored a checkout id (its create timed out) adopts this one.
    Both { id: String, checkout_id: String },
}

/// What a verified callback tells the gateway to do.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackReport {
    /// Apply this report through the state machine.
    Apply(StatusReport),
    /// The callback proves nothing about the status by itself (a trigger, an event type we do
    /// not map, a redirect): queue a status lookup. `amount` is a signed amount and currency
    /// the callback carries; one that differs from the payment is recorded as a mismatch.
    LookUp { amount: Option<(i64, String)> },
}

#[cfg(test)]
impl CallbackReport {
    /// The report to apply; panics on a look-up (tests only).
    pub fn applied(&self) -> &StatusReport {
        match self {
            Self::Apply(report) => report,
            Self::LookUp { .. } => panic!("expected a report to apply, got a look-up"),
        }
    }
}

/// A callback whose signature checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCallback {
    /// The provider's event id where it has one, else the SHA-256 of the raw body: a receipt
    /// never makes a different event look like a duplicate.
    pub dedupe_key: String,
    /// Returned to the caller as `event_id`.
    pub event_id: String,
    pub payment: PaymentRef,
    pub report: CallbackReport,
}

/// Who delivers a provider's callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackTransport {
    /// Another server: answer with status codes and JSON.
    ServerToServer,
    /// The shopper's browser (form POST): answer with a redirect.
    Browser,
}

/// One configured merchant account of one provider.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Provider name as used in the API (`sandbox`, `xpay`, …).
    fn name(&self) -> &'static str;

    /// Account name.
    fn account(&self) -> &str;

    /// Provider-specific checks (currencies, methods) before anything is written.
    fn validate(&self, _checkout: &NewCheckout) -> Result<(), ValidationError> {
        Ok(())
    }

    /// Opens a hosted checkout; our payment id is the provider-side reference.
    async fn create_checkout(&self, ctx: CheckoutContext<'_>) -> Result<CheckoutCreated, ProviderError>;

    /// Asks the provider for the payment's status now. `Ok(None)`: nothing to learn.
    async fn fetch_status(&self, payment: &Payment) -> Result<Option<StatusReport>, ProviderError>;

    /// Verifies a callback's signature and parses it.
    fn verify_callback(&self, raw: &RawCallback, now: DateTime<Utc>) -> Result<VerifiedCallback, CallbackError>;

    /// For a callback that failed verification: the payment it *claims* to be about, if the
    /// provider's format says. The body is never trusted; the gateway only schedules one
    /// rate-limited status lookup of that payment, so a rotated or misconfigured secret never
    /// strands a paid payment.
    fn unverified_payment_hint(&self, _raw: &RawCallback) -> Option<PaymentRef> {
        None
    }

    /// Who delivers this provider's callbacks.
    fn callback_transport(&self) -> CallbackTransport {
        CallbackTransport::ServerToServer
    }

    /// Whether status lookups and cancels call out to the provider (they then count against the
    /// account's `check_concurrency` and `check_rate_per_sec`).
    fn calls_out(&self) -> bool {
        true
    }

    /// Whether sending the same create again opens no second checkout (the provider dedupes on
    /// our reference, so a resend is its lookup). Then a create whose outcome is unknown leaves
    /// the idempotency key retryable; otherwise a retry with the same key never calls create.
    fn create_is_idempotent(&self) -> bool {
        false
    }

    /// The page paygate serves as this payment's `checkout_url`, for providers whose checkout
    /// is not a redirect URL of their own (`None`: no page; 404).
    fn checkout_page(&self, _payment: &Payment) -> Option<page::CheckoutPage> {
        None
    }

    /// What a button of a [`page::PageContent::Form`] does: the signed callback to deliver, or
    /// `None` for an action the page does not offer.
    fn page_action(&self, _payment: &Payment, _action: &str, _now: DateTime<Utc>) -> Option<page::PageCallback> {
        None
    }

    /// Cancels or expires the checkout at the provider, where supported.
    async fn cancel(&self, _payment: &Payment) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_callbacks_lower_case_names_and_join_repeats_in_order() {
        let raw = RawCallback::new(
            [("X-Sig", "a"), ("content-type", "application/json"), ("x-sig", "b")],
            b"{}".to_vec(),
            "q=1".into(),
        );
        assert_eq!(raw.header("X-SIG"), Some("a, b"));
        assert_eq!(raw.header("Content-Type"), Some("application/json"));
        assert_eq!(raw.headers.len(), 2);
        assert_eq!((raw.body.as_slice(), raw.query.as_str()), (&b"{}"[..], "q=1"));
    }

    #[test]
    fn error_summaries_carry_no_provider_text() {
        let e = ProviderError::OutcomeUnknown("unexpected response shape: mona@example.com".into());
        assert_eq!(e.summary(), "outcome unknown: unexpected response shape");
        assert!(e.outcome_unknown() && ProviderError::Timeout.outcome_unknown());
        assert!(!ProviderError::Unavailable("HTTP 503".into()).outcome_unknown());
        assert_eq!(ProviderError::Unavailable("HTTP 503".into()).summary(), "unavailable: HTTP 503");
    }
}
