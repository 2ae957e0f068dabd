//! XStak XPay wire format: the checkout request and the payment-intent envelope, webhooks, error
//! bodies, and their conversions to and from our domain types. Everything XStak puts on the wire
//! is in this file.
//!
//! Money: `amount` is a JSON number, in major units by default (`12.5` for 1250 paisa), written
//! from exact decimal text through a [`RawValue`] and read back through its text: never a float.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::money::{Currency, format_minor, parse_decimal_minor};
use crate::domain::{NewCheckout, PaymentId, PaymentStatus, StatusReport};
use crate::providers::{CallbackError, CallbackReport, PaymentRef};

/// The only currency XStak's checkout is documented with.
pub const CURRENCY: &str = "PKR";
/// The webhook `type` of a payment notification (the one type that reports a status).
pub const PAYMENT_INTENT_NOTIFICATION: &str = "PAYMENT_INTENT_NOTIFICATION";
/// `shipping.shipping_method`: we have no shipping method; this is the document's sample value.
pub const SHIPPING_METHOD: &str = "Standard";

// ---------------------------------------------------------------------------------------------
// Amounts
// ---------------------------------------------------------------------------------------------

/// The unit of `amount` on the wire (`amount_unit`): the document's sample (`5` PKR, echoed as
/// `5`) reads as major units; unofficial code sends paisa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountUnit {
    Major,
    Minor,
}

impl AmountUnit {
    /// `major` | `minor`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "major" => Some(Self::Major),
            "minor" => Some(Self::Minor),
            _ => None,
        }
    }

    /// The JSON number text for `minor` units of a currency with `exponent` digits: major units
    /// written exactly with no trailing zeros (`1250` → `12.5`, `500` → `5`, `1234` → `12.34`),
    /// or the integer itself in minor units.
    pub fn format(self, minor: i64, exponent: u32) -> String {
        match self {
            Self::Minor => minor.to_string(),
            Self::Major => {
                let text = format_minor(minor, exponent);
                if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
            }
        }
    }

    /// Minor units from the JSON text of an amount (a number, or a string holding one), exactly;
    /// `None` for exponents, more precision than the currency has, or overflow.
    pub fn parse_amount(self, raw: &RawValue, exponent: u32) -> Option<i64> {
        let text = raw.get().trim();
        let text = if text.starts_with('"') { serde_json::from_str::<String>(text).ok()? } else { text.to_owned() };
        let text = text.trim();
        match self {
            Self::Major => parse_decimal_minor(text, exponent),
            Self::Minor => {
                let digits = text.strip_prefix('-').unwrap_or(text);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                text.parse().ok()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Create: POST {base}/public/v1/payment/checkout
// ---------------------------------------------------------------------------------------------

/// The create body, fields in the document's order. Serialized once; those bytes are signed and
/// sent.
#[derive(Debug, Serialize)]
pub struct CreateCheckoutRequest {
    /// A JSON number written from exact decimal text.
    pub amount: Box<RawValue>,
    pub currency: String,
    pub customer: Customer,
    /// Always sent: the document lists `shipping` among the parameters that "must be passed"
    /// (only `payment_methods` is optional). Empty strings when the caller gave no address.
    pub shipping: Shipping,
    pub metadata: Metadata,
    pub success_url: String,
    pub failure_url: String,
    /// Omitted when empty: all of the store's enabled methods are shown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub payment_methods: Vec<String>,
}

/// The shopper. Personal data: never logged.
#[derive(Clone, PartialEq, Serialize)]
pub struct Customer {
    pub email: String,
    pub name: String,
    pub phone: String,
}

impl std::fmt::Debug for Customer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Customer(<redacted>)")
    }
}

/// The shipping address. Personal data: never logged.
#[derive(Clone, Default, PartialEq, Serialize)]
pub struct Shipping {
    pub address1: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address2: String,
    pub city: String,
    pub country: String,
    pub zip: String,
    pub shipping_method: String,
    pub province: String,
}

impl std::fmt::Debug for Shipping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shipping(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Our payment id.
    pub order_reference: String,
}

/// What a create body needs besides the checkout.
#[derive(Debug, Clone, Copy)]
pub struct CreateParams<'a> {
    pub payment_id: &'a str,
    /// `{public_base_url}/return/xstak/{payment_id}`.
    pub return_url: &'a str,
    pub unit: AmountUnit,
}

/// ISO 3166-1 alpha-2 `PK` is sent as the document's `Pakistan`; other codes as given.
fn country_name(code: &str) -> String {
    if code.trim().eq_ignore_ascii_case("PK") { "Pakistan".to_owned() } else { code.trim().to_owned() }
}

impl CreateCheckoutRequest {
    /// Builds the body; the currency was checked by `validate` (PKR only).
    pub fn build(checkout: &NewCheckout, params: CreateParams<'_>) -> Result<Self, serde_json::Error> {
        let amount = params.unit.format(checkout.amount.minor, checkout.amount.currency.exponent());
        let c = &checkout.customer;
        Ok(Self {
            amount: RawValue::from_string(amount)?,
            currency: checkout.amount.currency.code().to_owned(),
            customer: Customer { email: c.email.clone(), name: c.name.clone(), phone: c.phone.clone() },
            shipping: checkout.shipping_address.as_ref().map_or_else(
                || Shipping { shipping_method: SHIPPING_METHOD.to_owned(), ..Shipping::default() },
                |a| Shipping {
                    address1: a.line1.clone(),
                    address2: a.line2.clone(),
                    city: a.city.clone(),
                    country: country_name(&a.country),
                    zip: a.postal_code.clone(),
                    shipping_method: SHIPPING_METHOD.to_owned(),
                    province: a.state.clone(),
                },
            ),
            metadata: Metadata { order_reference: params.payment_id.to_owned() },
            success_url: format!("{}?outcome=success", params.return_url),
            failure_url: format!("{}?outcome=failure", params.return_url),
            payment_methods: checkout
                .payment_methods
                .iter()
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty())
                .collect(),
        })
    }

    /// The exact bytes that are signed and sent (compact JSON, fields in declaration order).
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

// ---------------------------------------------------------------------------------------------
// The payment intent (create response, status lookup) in its envelope
// ---------------------------------------------------------------------------------------------

/// `{"success", "responseStatus", "message", "data"}`. `message` is not read: it may echo
/// request data.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default, rename = "responseStatus")]
    pub response_status: Option<String>,
    #[serde(default)]
    pub data: Option<PaymentIntent>,
}

/// A payment intent: only the fields we use (`pi_client_secret` is never read or kept).
#[derive(Debug, Deserialize)]
pub struct PaymentIntent {
    #[serde(default, rename = "_id")]
    pub id: Option<String>,
    #[serde(default)]
    pub pi_status: Option<String>,
    #[serde(default)]
    pub amount: Option<Box<RawValue>>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub checkout_page_url: Option<String>,
}

/// The intent XStak opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedIntent {
    pub id: String,
    pub checkout_page_url: String,
}

/// Why a 2xx create answer is not an opened intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateProblem {
    /// `success: false`, with the `responseStatus` code when it is identifier-like.
    Refused(String),
    /// No `data._id` or `data.checkout_page_url`.
    Shape,
    /// The echoed amount or currency differs from what we sent (e.g. another amount unit).
    AmountDiffers,
}

impl Envelope {
    /// The opened intent, checked against the amount we asked for.
    pub fn opened(self, minor: i64, currency: &Currency, unit: AmountUnit) -> Result<OpenedIntent, CreateProblem> {
        if self.success == Some(false) {
            let code = self.response_status.as_deref().and_then(identifier).unwrap_or("xstak_error");
            return Err(CreateProblem::Refused(code.to_owned()));
        }
        let data = self.data.ok_or(CreateProblem::Shape)?;
        if let Some(amount) = &data.amount
            && unit.parse_amount(amount, currency.exponent()) != Some(minor)
        {
            return Err(CreateProblem::AmountDiffers);
        }
        if data.currency.as_deref().is_some_and(|c| !c.eq_ignore_ascii_case(currency.code())) {
            return Err(CreateProblem::AmountDiffers);
        }
        match (data.id, data.checkout_page_url) {
            (Some(id), Some(url)) if !id.is_empty() && !url.is_empty() => {
                Ok(OpenedIntent { id, checkout_page_url: url })
            }
            _ => Err(CreateProblem::Shape),
        }
    }
}

/// Why an intent cannot be turned into a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentProblem {
    MissingStatus,
    /// A `succeeded` intent without an exact amount and currency: never paid on trust.
    MissingAmount,
    BadAmount,
    /// The answer is about another intent.
    OtherIntent,
}

impl PaymentIntent {
    /// The intent as a status report, checked to be about `intent_id`.
    pub fn into_report(self, intent_id: &str, unit: AmountUnit) -> Result<StatusReport, IntentProblem> {
        if self.id.as_deref().is_some_and(|id| id != intent_id) {
            return Err(IntentProblem::OtherIntent);
        }
        let raw = self.pi_status.filter(|s| !s.is_empty()).ok_or(IntentProblem::MissingStatus)?;
        let amount = match (&self.amount, &self.currency) {
            (Some(a), Some(c)) => Some(amount_of(a, c, unit).ok_or(IntentProblem::BadAmount)?),
            _ => None,
        };
        let mut report = status_report(&raw, intent_id);
        if report.status == Some(PaymentStatus::Succeeded) && amount.is_none() {
            return Err(IntentProblem::MissingAmount);
        }
        report.amount = amount;
        Ok(report)
    }
}

/// `(minor, CURRENCY)` from an amount's JSON text and a currency code (compared upper-cased).
fn amount_of(raw: &RawValue, currency: &str, unit: AmountUnit) -> Option<(i64, String)> {
    let code = currency.trim().to_ascii_uppercase();
    let exponent = Currency::parse(&code)?.exponent();
    Some((unit.parse_amount(raw, exponent)?, code))
}

// ---------------------------------------------------------------------------------------------
// Status values (`pi_status`, webhook `status`)
// ---------------------------------------------------------------------------------------------

/// XStak's payment-intent status. Only `requires_payment_method` (document) and `succeeded`
/// (webhook guide) are documented; the rest are Stripe-like names, assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XstakStatus {
    RequiresPaymentMethod,
    RequiresAction,
    Processing,
    Succeeded,
    Failed,
    Canceled,
    /// Anything else: the payment's status is left alone.
    Unknown(String),
}

impl From<&str> for XstakStatus {
    fn from(s: &str) -> Self {
        match s {
            "requires_payment_method" => Self::RequiresPaymentMethod,
            "requires_action" => Self::RequiresAction,
            "processing" => Self::Processing,
            "succeeded" => Self::Succeeded,
            "failed" | "payment_failed" => Self::Failed,
            "canceled" | "cancelled" => Self::Canceled,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

impl From<&XstakStatus> for Option<PaymentStatus> {
    fn from(s: &XstakStatus) -> Self {
        match s {
            XstakStatus::RequiresPaymentMethod => Some(PaymentStatus::Pending),
            XstakStatus::RequiresAction | XstakStatus::Processing => Some(PaymentStatus::Processing),
            XstakStatus::Succeeded => Some(PaymentStatus::Succeeded),
            XstakStatus::Failed => Some(PaymentStatus::Failed),
            XstakStatus::Canceled => Some(PaymentStatus::Cancelled),
            XstakStatus::Unknown(_) => None,
        }
    }
}

/// The report for a status value (None when unknown, the raw value kept); the intent id becomes
/// `provider_payment_id` on success; a failure gets a fixed message (XStak's bank text may echo
/// shopper data).
fn status_report(raw: &str, intent_id: &str) -> StatusReport {
    let status: Option<PaymentStatus> = (&XstakStatus::from(raw)).into();
    StatusReport {
        status,
        provider_status: Some(raw.to_owned()),
        provider_payment_id: (status == Some(PaymentStatus::Succeeded)).then(|| intent_id.to_owned()),
        failure_message: (status == Some(PaymentStatus::Failed)).then(|| format!("XStak reported {raw}")),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

/// A webhook body (the public webhook guide's sample); other fields are ignored.
#[derive(Debug, Deserialize)]
pub struct Webhook {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub payment_intent_id: Option<String>,
    /// `null` for a payment; set for a refund notification.
    #[serde(default)]
    pub refund_id: Option<serde_json::Value>,
    #[serde(default)]
    pub amount: Option<Box<RawValue>>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    /// `"card"` in the sample; a list is read by its first entry.
    #[serde(default)]
    pub payment_method_types: Option<serde_json::Value>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// A verified webhook, as the gateway needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedWebhook {
    /// `{payment_intent_id}:{status}:{refund_id}`: the event id shown to callers.
    pub event_key: String,
    pub payment: PaymentRef,
    /// A look-up for other types and refunds: the gateway changes nothing and asks XStak
    /// instead (when lookups are enabled).
    pub report: CallbackReport,
}

fn malformed(field: &str) -> CallbackError {
    CallbackError::Malformed { field: field.to_owned() }
}

/// The payment a body names: the intent id whenever the body carries one (the gateway matches
/// it against the stored `provider_checkout_id`, so an intent that is not the payment's own can
/// never be applied to it), else `metadata.order_reference` when it is one of our payment ids.
/// With both, a payment whose create timed out (no intent stored) adopts the intent.
fn payment_ref(order_reference: Option<&str>, intent_id: Option<&str>) -> Option<PaymentRef> {
    let ours = order_reference.and_then(PaymentId::parse).map(|id| id.as_str().to_owned());
    match (intent_id.filter(|s| !s.is_empty()), ours) {
        (Some(intent), Some(id)) => Some(PaymentRef::Both { id, checkout_id: intent.to_owned() }),
        (Some(intent), None) => Some(PaymentRef::CheckoutId(intent.to_owned())),
        (None, ours) => ours.map(PaymentRef::Id),
    }
}

fn text_of(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Parses a verified body.
pub fn parse_webhook(body: &[u8], unit: AmountUnit) -> Result<ParsedWebhook, CallbackError> {
    let hook: Webhook = serde_json::from_slice(body).map_err(|_| malformed("body"))?;
    let intent_id = hook.payment_intent_id.filter(|s| !s.is_empty()).ok_or_else(|| malformed("payment_intent_id"))?;
    let raw_status = hook.status.filter(|s| !s.is_empty()).ok_or_else(|| malformed("status"))?;
    let refund = hook.refund_id.as_ref().and_then(text_of).filter(|s| !s.is_empty());
    let order_reference = hook.metadata.as_ref().and_then(|m| m.get("order_reference")).and_then(|v| v.as_str());
    let payment = payment_ref(order_reference, Some(&intent_id)).ok_or_else(|| malformed("payment_intent_id"))?;
    let event_key = format!("{intent_id}:{raw_status}:{}", refund.as_deref().unwrap_or(""));

    if hook.kind.as_deref() != Some(PAYMENT_INTENT_NOTIFICATION) || refund.is_some() {
        return Ok(ParsedWebhook { event_key, payment, report: CallbackReport::LookUp { amount: None } });
    }
    let amount = match (&hook.amount, &hook.currency) {
        (Some(a), Some(c)) => Some(amount_of(a, c, unit).ok_or_else(|| malformed("amount"))?),
        _ => None,
    };
    let mut report = status_report(&raw_status, &intent_id);
    if report.status == Some(PaymentStatus::Succeeded) && amount.is_none() {
        return Err(malformed("amount"));
    }
    report.amount = amount;
    report.payment_method = hook
        .payment_method_types
        .as_ref()
        .and_then(
            |v| if let serde_json::Value::Array(items) = v { items.first().and_then(text_of) } else { text_of(v) },
        )
        .filter(|m| identifier(m).is_some());
    Ok(ParsedWebhook { event_key, payment, report: CallbackReport::Apply(report) })
}

/// For an unverified body: the payment it claims to be about, if it has that shape. Never trusted.
pub fn hint(body: &[u8]) -> Option<PaymentRef> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    payment_ref(
        value.pointer("/metadata/order_reference").and_then(|v| v.as_str()),
        value.get("payment_intent_id").and_then(|v| v.as_str()),
    )
}

// ---------------------------------------------------------------------------------------------
// Errors: the same envelope with `success: false` (assumed)
// ---------------------------------------------------------------------------------------------

/// Short identifier-like text only: free text could echo customer data.
fn identifier(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then_some(s)
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    #[serde(default, rename = "responseStatus")]
    response_status: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

/// The provider code of an error body: `responseStatus` (e.g. `BAD_REQUEST`), else a top-level
/// `code`, when identifier-like.
pub fn error_code(body: &[u8]) -> Option<String> {
    let envelope: ErrorEnvelope = serde_json::from_slice(body).ok()?;
    let from_status = envelope.response_status.as_deref().and_then(identifier).map(str::to_owned);
    from_status.or_else(|| envelope.code.as_ref().and_then(text_of).filter(|c| identifier(c).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::checkout::{Address, CheckoutInput, Customer as InputCustomer};

    const PAYMENT_ID: &str = "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    const RETURN: &str = "https://pay.example/return/xstak/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV";

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn checkout(minor: i64, methods: &[&str], shipping: bool) -> NewCheckout {
        NewCheckout::parse(CheckoutInput {
            provider: "xstak".into(),
            merchant_reference: "order-1".into(),
            amount: Some((minor, "PKR".into())),
            customer: InputCustomer {
                name: "user".into(),
                email: "testuser@gmail.com".into(),
                phone: "03415682456".into(),
            },
            payment_methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            shipping_address: shipping.then(|| Address {
                line1: "Gulberg".into(),
                line2: String::new(),
                city: "Lahore".into(),
                state: "Punjab".into(),
                postal_code: "65191".into(),
                country: "PK".into(),
            }),
            ..Default::default()
        })
        .unwrap()
    }

    fn params(unit: AmountUnit) -> CreateParams<'static> {
        CreateParams { payment_id: PAYMENT_ID, return_url: RETURN, unit }
    }

    #[test]
    fn amounts_are_written_and_read_exactly() {
        for (minor, text) in
            [(1250, "12.5"), (500, "5"), (1234, "12.34"), (5, "0.05"), (100_000_000_001, "1000000000.01")]
        {
            assert_eq!(AmountUnit::Major.format(minor, 2), text);
            assert_eq!(AmountUnit::Major.parse_amount(&raw(text), 2), Some(minor), "{text}");
            assert_eq!(AmountUnit::Minor.format(minor, 2), minor.to_string());
        }
        assert_eq!(AmountUnit::Major.format(1234, 0), "1234");
        assert_eq!(AmountUnit::Major.parse_amount(&raw("12.50"), 2), Some(1250));
        assert_eq!(AmountUnit::Major.parse_amount(&raw(r#""12.5""#), 2), Some(1250));
        for bad in ["12.345", "1.25e1", "true", r#""abc""#, "1,250"] {
            assert_eq!(
                AmountUnit::Major.parse_amount(&RawValue::from_string(bad.into()).unwrap_or_else(|_| raw("null")), 2),
                None,
                "{bad}"
            );
        }
        assert_eq!(AmountUnit::Minor.parse_amount(&raw("1250"), 2), Some(1250));
        assert_eq!(AmountUnit::Minor.parse_amount(&raw("12.5"), 2), None);
        assert_eq!(AmountUnit::parse("major"), Some(AmountUnit::Major));
        assert_eq!(AmountUnit::parse("paisa"), None);
    }

    #[test]
    fn builds_the_documented_body_in_the_documented_order() {
        let body =
            CreateCheckoutRequest::build(&checkout(1250, &["card", " jazzcash "], true), params(AmountUnit::Major))
                .unwrap()
                .to_bytes()
                .unwrap();
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"amount":12.5,"currency":"PKR","#,
                r#""customer":{"email":"testuser@gmail.com","name":"user","phone":"03415682456"},"#,
                r#""shipping":{"address1":"Gulberg","city":"Lahore","country":"Pakistan","zip":"65191","shipping_method":"Standard","province":"Punjab"},"#,
                r#""metadata":{"order_reference":"pay_01ARZ3NDEKTSV4RRFFQ69G5FAV"},"#,
                r#""success_url":"https://pay.example/return/xstak/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV?outcome=success","#,
                r#""failure_url":"https://pay.example/return/xstak/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV?outcome=failure","#,
                r#""payment_methods":["card","jazzcash"]}"#
            )
        );
        // No shipping address, no methods, minor units: `shipping` still sent (empty strings, the
        // document says it must be passed), `payment_methods` omitted, an integer amount.
        let text = String::from_utf8(
            CreateCheckoutRequest::build(&checkout(1250, &[], false), params(AmountUnit::Minor))
                .unwrap()
                .to_bytes()
                .unwrap(),
        )
        .unwrap();
        assert!(text.starts_with(r#"{"amount":1250,"currency":"PKR","#), "{text}");
        assert!(
            text.contains(r#""shipping":{"address1":"","city":"","country":"","zip":"","shipping_method":"Standard","province":""}"#),
            "{text}"
        );
        assert!(!text.contains("payment_methods"), "{text}");
        let debug =
            format!("{:?}", CreateCheckoutRequest::build(&checkout(1, &[], true), params(AmountUnit::Major)).unwrap());
        assert!(!debug.contains("testuser") && !debug.contains("Gulberg"), "{debug}");
    }

    #[test]
    fn parses_the_documented_create_response() {
        let body = br#"{"success":true,"responseStatus":"OK","message":"Request processed successfully.",
            "data":{"_id":"xpay_pi_60be","pi_client_secret":"xpay_pi_60be_cs_9e04","amount":5,"currency":"PKR",
            "pi_status":"requires_payment_method","metadata":{"order_reference":"checkout-pl-03"},
            "checkout_page_url":"https://xpay-checkout-stage.xstak.com/?source=headless&order_id=checkout-pl-03&id=670cc"}}"#;
        let pkr = Currency::parse("PKR").unwrap();
        let envelope = || serde_json::from_slice::<Envelope>(body).unwrap();
        assert_eq!(
            envelope().opened(500, &pkr, AmountUnit::Major),
            Ok(OpenedIntent {
                id: "xpay_pi_60be".into(),
                checkout_page_url:
                    "https://xpay-checkout-stage.xstak.com/?source=headless&order_id=checkout-pl-03&id=670cc".into()
            })
        );
        assert_eq!(envelope().opened(501, &pkr, AmountUnit::Major), Err(CreateProblem::AmountDiffers));
        assert_eq!(envelope().opened(500, &pkr, AmountUnit::Minor), Err(CreateProblem::AmountDiffers));
        let refused: Envelope =
            serde_json::from_str(r#"{"success":false,"responseStatus":"BAD_REQUEST","message":"x"}"#).unwrap();
        assert_eq!(refused.opened(500, &pkr, AmountUnit::Major), Err(CreateProblem::Refused("BAD_REQUEST".into())));
        let empty: Envelope = serde_json::from_str(r#"{"success":true,"data":{"_id":"x"}}"#).unwrap();
        assert_eq!(empty.opened(500, &pkr, AmountUnit::Major), Err(CreateProblem::Shape));
    }

    #[test]
    fn maps_statuses_and_keeps_unknown_values() {
        for (raw_status, want) in [
            ("requires_payment_method", Some(PaymentStatus::Pending)),
            ("requires_action", Some(PaymentStatus::Processing)),
            ("processing", Some(PaymentStatus::Processing)),
            ("succeeded", Some(PaymentStatus::Succeeded)),
            ("failed", Some(PaymentStatus::Failed)),
            ("payment_failed", Some(PaymentStatus::Failed)),
            ("canceled", Some(PaymentStatus::Cancelled)),
            ("cancelled", Some(PaymentStatus::Cancelled)),
            ("on_hold", None),
        ] {
            let mapped: Option<PaymentStatus> = (&XstakStatus::from(raw_status)).into();
            assert_eq!(mapped, want, "{raw_status}");
        }
        let intent = |status: &str, amount: Option<&str>| PaymentIntent {
            id: Some("xpay_pi_1".into()),
            pi_status: Some(status.into()),
            amount: amount.map(raw),
            currency: Some("pkr".into()),
            checkout_page_url: None,
        };
        let r = intent("succeeded", Some("12.5")).into_report("xpay_pi_1", AmountUnit::Major).unwrap();
        assert_eq!((r.status, r.amount.clone()), (Some(PaymentStatus::Succeeded), Some((1250, "PKR".into()))));
        assert_eq!(r.provider_payment_id.as_deref(), Some("xpay_pi_1"));
        let r = intent("on_hold", None).into_report("xpay_pi_1", AmountUnit::Major).unwrap();
        assert_eq!((r.status, r.provider_status.as_deref()), (None, Some("on_hold")));
        assert_eq!(
            intent("succeeded", None).into_report("xpay_pi_1", AmountUnit::Major),
            Err(IntentProblem::MissingAmount)
        );
        assert_eq!(
            intent("succeeded", Some("1.234")).into_report("xpay_pi_1", AmountUnit::Major),
            Err(IntentProblem::BadAmount)
        );
        assert_eq!(
            intent("succeeded", Some("5")).into_report("xpay_pi_2", AmountUnit::Major),
            Err(IntentProblem::OtherIntent)
        );
    }

    #[test]
    fn parses_the_documented_webhook() {
        // The public webhook guide's sample (abridged there too).
        let body = br#"{"type":"PAYMENT_INTENT_NOTIFICATION",
            "payment_intent_id":"xpay_pi_1573edc2074d54b60eb265e448cdf1eb5c09bfad5cac10153b107b0c780515fb",
            "refund_id":null,"amount":10,"currency":"PKR","status":"succeeded",
            "customer":{"name":"","email":"","phone":null},"payment_method_types":"card",
            "transaction_details":{"status":"CAPTURED","secure":"3DS2","gateway":"bank-alfalah",
            "response_from_bank":"The payment was completed successfully"}}"#;
        let w = parse_webhook(body, AmountUnit::Major).unwrap();
        let pi = "xpay_pi_1573edc2074d54b60eb265e448cdf1eb5c09bfad5cac10153b107b0c780515fb";
        assert_eq!(w.payment, PaymentRef::CheckoutId(pi.into()));
        assert_eq!(w.event_key, format!("{pi}:succeeded:"));
        assert_eq!(w.report.applied().status, Some(PaymentStatus::Succeeded));
        assert_eq!(w.report.applied().amount, Some((1000, "PKR".into())));
        assert_eq!(w.report.applied().payment_method.as_deref(), Some("card"));
        assert_eq!(w.report.applied().provider_payment_id.as_deref(), Some(pi));

        // The intent id wins over our id in metadata (which is only a fallback without one).
        let body = format!(
            r#"{{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"xpay_pi_2","amount":12.5,"currency":"PKR",
            "status":"failed","metadata":{{"order_reference":"{PAYMENT_ID}"}}}}"#
        );
        let w = parse_webhook(body.as_bytes(), AmountUnit::Major).unwrap();
        assert_eq!(w.payment, PaymentRef::Both { id: PAYMENT_ID.into(), checkout_id: "xpay_pi_2".into() });
        assert_eq!(
            (w.report.applied().status, w.report.applied().failure_message.as_deref()),
            (Some(PaymentStatus::Failed), Some("XStak reported failed"))
        );
        let body = br#"{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"xpay_pi_3","status":"canceled",
            "metadata":{"order_reference":"checkout-pl-02"}}"#;
        let w = parse_webhook(body, AmountUnit::Major).unwrap();
        assert_eq!(
            (w.payment, w.report.applied().status),
            (PaymentRef::CheckoutId("xpay_pi_3".into()), Some(PaymentStatus::Cancelled))
        );
    }

    #[test]
    fn refunds_and_other_types_report_nothing() {
        for body in [
            &br#"{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"xpay_pi_1","refund_id":"rf_1","amount":10,"currency":"PKR","status":"succeeded"}"#[..],
            br#"{"type":"SUBSCRIPTION_NOTIFICATION","payment_intent_id":"xpay_pi_1","amount":10,"currency":"PKR","status":"succeeded"}"#,
        ] {
            let w = parse_webhook(body, AmountUnit::Major).unwrap();
            assert_eq!(w.report, CallbackReport::LookUp { amount: None });
        }
        let w = parse_webhook(br#"{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"pi","refund_id":"rf_1","status":"succeeded"}"#, AmountUnit::Major).unwrap();
        assert_eq!(w.event_key, "pi:succeeded:rf_1");
    }

    #[test]
    fn malformed_webhooks() {
        for (body, field) in [
            (&b"not json"[..], "body"),
            (br#"{"type":"PAYMENT_INTENT_NOTIFICATION","status":"succeeded"}"#, "payment_intent_id"),
            (br#"{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"pi"}"#, "status"),
            (br#"{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"pi","status":"succeeded"}"#, "amount"),
            (br#"{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"pi","status":"succeeded","amount":10.001,"currency":"PKR"}"#, "amount"),
            (br#"{"type":"PAYMENT_INTENT_NOTIFICATION","payment_intent_id":"pi","status":"succeeded","amount":10,"currency":"pkrx"}"#, "amount"),
        ] {
            assert_eq!(parse_webhook(body, AmountUnit::Major), Err(malformed(field)), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn hints_name_the_payment_without_trusting_anything_else() {
        assert_eq!(
            hint(
                format!(r#"{{"payment_intent_id":"pi_1","metadata":{{"order_reference":"{PAYMENT_ID}"}}}}"#).as_bytes()
            ),
            Some(PaymentRef::Both { id: PAYMENT_ID.into(), checkout_id: "pi_1".into() })
        );
        assert_eq!(
            hint(format!(r#"{{"metadata":{{"order_reference":"{PAYMENT_ID}"}}}}"#).as_bytes()),
            Some(PaymentRef::Id(PAYMENT_ID.into()))
        );
        assert_eq!(hint(br#"{"payment_intent_id":"pi_1"}"#), Some(PaymentRef::CheckoutId("pi_1".into())));
        assert_eq!(hint(b"garbage"), None);
        assert_eq!(hint(br#"{"status":"succeeded"}"#), None);
    }

    #[test]
    fn error_codes_from_envelopes() {
        assert_eq!(
            error_code(br#"{"success":false,"responseStatus":"BAD_REQUEST","message":"x"}"#).as_deref(),
            Some("BAD_REQUEST")
        );
        assert_eq!(error_code(br#"{"success":false,"code":422}"#).as_deref(), Some("422"));
        assert_eq!(error_code(br#"{"responseStatus":"bad email testuser@gmail.com"}"#), None);
        assert_eq!(error_code(b"<html>"), None);
    }
}
