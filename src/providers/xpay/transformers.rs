//! XPay wire format: the checkout-session request and response, webhook events, error bodies, and
//! their conversions to and from our domain types. Everything XPay puts on the wire is in this file.
//!
//! Money is integer minor units end to end (`unitAmount`, `amountTotal` are JSON integers; a
//! decimal or float value is refused when parsing). Field names are camelCase as documented.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{NewCheckout, PaymentStatus, StatusReport};
use crate::providers::{CallbackError, CallbackReport, PaymentRef};

/// Key under `metadata` that carries our payment id.
pub const PAYMENT_ID_METADATA_KEY: &str = "paygate_payment_id";
/// The one event type that reports a payment (per the Hosted Checkout document).
pub const SESSION_COMPLETED: &str = "checkout.session.completed";
/// Placeholder XPay replaces with the session id in `afterCompletion.redirect.url`.
pub const SESSION_ID_PLACEHOLDER: &str = "{CHECKOUT_SESSION_ID}";

// ---------------------------------------------------------------------------------------------
// Create: POST /checkout/sessions
// ---------------------------------------------------------------------------------------------

/// `POST /checkout/sessions` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionRequest {
    pub after_completion: AfterCompletion,
    pub line_items: Vec<SessionLineItem>,
    pub cancel_url: String,
    pub metadata: BTreeMap<String, String>,
    /// The customer's email under the account's `customer_email_field`, when configured and given.
    #[serde(flatten)]
    pub customer: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AfterCompletion {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub redirect: Redirect,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Redirect {
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionLineItem {
    pub price_data: PriceData,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceData {
    pub currency: String,
    /// Minor units, a JSON integer (`149900` = 1,499.00 EGP).
    pub unit_amount: i64,
    pub product_data: ProductData,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductData {
    pub name: String,
}

/// Our URLs and ids a create request needs besides the checkout itself.
#[derive(Debug, Clone, Copy)]
pub struct CreateContext<'a> {
    pub payment_id: &'a str,
    /// `{public_base_url}/return/xpay/{payment_id}`.
    pub return_url: &'a str,
    /// The account's `customer_email_field` (empty: the email is not sent).
    pub customer_email_field: &'a str,
}

impl CreateSessionRequest {
    /// The caller's line items 1:1, or one item for the whole amount named from `description`
    /// (else `merchant_reference`). Items without a name take that name too (XPay requires one).
    pub fn build(checkout: &NewCheckout, ctx: CreateContext<'_>) -> Self {
        let currency = checkout.amount.currency.code().to_owned();
        let fallback_name =
            if checkout.description.trim().is_empty() { &checkout.merchant_reference } else { &checkout.description };
        let item = |name: &str, unit_amount: i64, quantity: u32| SessionLineItem {
            price_data: PriceData {
                currency: currency.clone(),
                unit_amount,
                product_data: ProductData {
                    name: if name.trim().is_empty() { fallback_name.clone() } else { name.to_owned() },
                },
            },
            quantity,
        };
        let line_items = if checkout.line_items.is_empty() {
            vec![item(fallback_name, checkout.amount.minor, 1)]
        } else {
            checkout.line_items.iter().map(|l| item(&l.name, l.unit_amount_minor, l.quantity)).collect()
        };
        let mut customer = BTreeMap::new();
        if !ctx.customer_email_field.is_empty() && !checkout.customer.email.is_empty() {
            customer.insert(ctx.customer_email_field.to_owned(), checkout.customer.email.clone());
        }
        Self {
            after_completion: AfterCompletion {
                kind: "redirect",
                redirect: Redirect { url: format!("{}?session={SESSION_ID_PLACEHOLDER}", ctx.return_url) },
            },
            line_items,
            cancel_url: format!("{}?outcome=cancel", ctx.return_url),
            metadata: BTreeMap::from([(PAYMENT_ID_METADATA_KEY.to_owned(), ctx.payment_id.to_owned())]),
            customer,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Checkout Session object (create response, GET /checkout/sessions/{id}, webhook data.object)
// ---------------------------------------------------------------------------------------------

/// A Checkout Session as XPay returns it. Only the fields we use; others are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutSession {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// Minor units; a non-integer value fails parsing (never rounded).
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<PaymentIntentRef>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,
}

/// `paymentIntent`: an object with `id` (as documented) or, Stripe-style, the bare id.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PaymentIntentRef {
    Object { id: String },
    Id(String),
}

impl PaymentIntentRef {
    pub fn id(&self) -> &str {
        match self {
            Self::Object { id } | Self::Id(id) => id,
        }
    }
}

/// `session.status`. Unknown values are kept, never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    Open,
    Complete,
    Expired,
    Unknown(String),
}

impl From<&str> for SessionStatus {
    fn from(s: &str) -> Self {
        match s {
            "open" => Self::Open,
            "complete" => Self::Complete,
            "expired" => Self::Expired,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

impl From<&SessionStatus> for Option<PaymentStatus> {
    /// `open` → PENDING (also after a declined attempt: the hosted page lets the shopper retry),
    /// `complete` → SUCCEEDED, `expired` → EXPIRED, anything else → unknown (left unchanged).
    fn from(s: &SessionStatus) -> Self {
        match s {
            SessionStatus::Open => Some(PaymentStatus::Pending),
            SessionStatus::Complete => Some(PaymentStatus::Succeeded),
            SessionStatus::Expired => Some(PaymentStatus::Expired),
            SessionStatus::Unknown(_) => None,
        }
    }
}

/// Why a session object cannot be turned into a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// `status` absent.
    MissingStatus,
    /// A `complete` session without `amountTotal` and `currency`: never paid on trust.
    MissingAmount,
}

impl CheckoutSession {
    /// Our payment id from `metadata.paygate_payment_id`, when present.
    pub fn paygate_payment_id(&self) -> Option<&str> {
        self.metadata.as_ref()?.get(PAYMENT_ID_METADATA_KEY)?.as_str().filter(|s| !s.is_empty())
    }

    /// `amountTotal`/`currency` (currency upper-cased: ISO codes compare case-insensitively).
    pub fn amount(&self) -> Option<(i64, String)> {
        Some((self.amount_total?, self.currency.as_deref()?.to_ascii_uppercase()))
    }

    /// The session as a status report. Amount and currency travel with it so the gateway catches
    /// a mismatch; a `complete` session must carry them.
    pub fn to_report(&self) -> Result<StatusReport, SessionError> {
        let raw = self.status.as_deref().ok_or(SessionError::MissingStatus)?;
        let status = SessionStatus::from(raw);
        let amount = self.amount();
        if status == SessionStatus::Complete && amount.is_none() {
            return Err(SessionError::MissingAmount);
        }
        let mapped: Option<PaymentStatus> = (&status).into();
        let succeeded = mapped == Some(PaymentStatus::Succeeded);
        Ok(StatusReport {
            status: mapped,
            provider_status: Some(raw.to_owned()),
            amount,
            provider_payment_id: if succeeded {
                self.payment_intent.as_ref().map(|p| p.id().to_owned()).filter(|id| !id.is_empty())
            } else {
                None
            },
            ..Default::default()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

/// The webhook envelope: `id` (event id, the dedupe key), `type`, `data.object`.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Option<EventData>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// A verified event, as the gateway needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEvent {
    pub event_id: String,
    pub payment: PaymentRef,
    /// A look-up for event types and statuses we do not trust from the body: the gateway
    /// changes nothing and asks XPay for the session instead.
    pub report: CallbackReport,
}

fn malformed(field: &str) -> CallbackError {
    CallbackError::Malformed { field: field.to_owned() }
}

/// The payment a `data.object` names: a checkout session's id and `metadata.paygate_payment_id`
/// (both when present, so a payment whose create timed out adopts the session), or either alone.
fn payment_ref(object: &serde_json::Value) -> Option<PaymentRef> {
    let ours = object
        .pointer("/metadata/paygate_payment_id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let session = object.get("id").and_then(|v| v.as_str()).filter(|id| {
        !id.is_empty()
            && (object.get("object").and_then(|o| o.as_str()) == Some("checkout.session") || id.starts_with("cs_"))
    });
    match (ours, session) {
        (Some(id), Some(session)) => Some(PaymentRef::Both { id, checkout_id: session.to_owned() }),
        (Some(id), None) => Some(PaymentRef::Id(id)),
        (None, Some(session)) => Some(PaymentRef::CheckoutId(session.to_owned())),
        (None, None) => None,
    }
}

/// Parses a verified body. `checkout.session.completed` with `status: complete` reports the
/// session (SUCCEEDED, with its amount); any other status on that event, and any other event
/// type, reports nothing.
pub fn parse_event(body: &[u8]) -> Result<ParsedEvent, CallbackError> {
    let event: WebhookEvent = serde_json::from_slice(body).map_err(|_| malformed("body"))?;
    if event.id.is_empty() {
        return Err(malformed("id"));
    }
    let object = event.data.map(|d| d.object).ok_or_else(|| malformed("data.object"))?;
    let payment = payment_ref(&object).ok_or_else(|| malformed("data.object"))?;
    let report = if event.kind == SESSION_COMPLETED {
        let session: CheckoutSession = serde_json::from_value(object).map_err(|_| malformed("data.object"))?;
        let report = session.to_report().map_err(|e| match e {
            SessionError::MissingStatus => malformed("data.object.status"),
            SessionError::MissingAmount => malformed("data.object.amountTotal"),
        })?;
        // Only `complete` is trusted from the body; any other status on this event (`open`,
        // `expired`, unknown) is treated like an unmapped event: the gateway asks XPay instead.
        if session.status.as_deref().map(SessionStatus::from) == Some(SessionStatus::Complete) {
            CallbackReport::Apply(report)
        } else {
            CallbackReport::LookUp { amount: None }
        }
    } else {
        CallbackReport::LookUp { amount: None }
    };
    Ok(ParsedEvent { event_id: event.id, payment, report })
}

/// For an unverified body: the payment it claims to be about, if it has that shape. Never trusted.
pub fn hint(body: &[u8]) -> Option<PaymentRef> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    payment_ref(value.pointer("/data/object")?)
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// The provider code of a Stripe-like `{"error":{"code":…}}` body (`type` when there is no
/// `code`). Only short identifier-like codes are kept: free text could echo customer data.
pub fn error_code(body: &[u8]) -> Option<String> {
    let envelope: ErrorEnvelope = serde_json::from_slice(body).ok()?;
    let code = envelope.error.code.filter(|c| !c.is_empty()).or(envelope.error.kind)?;
    crate::providers::http::sanitize_code(&code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::checkout::{CheckoutInput, LineItem};

    fn checkout(line_items: Vec<LineItem>, description: &str) -> NewCheckout {
        NewCheckout::parse(CheckoutInput {
            provider: "xpay".into(),
            merchant_reference: "order-7".into(),
            amount: Some((149_900, "EGP".into())),
            description: description.into(),
            line_items,
            customer: crate::domain::checkout::Customer {
                name: "Mona".into(),
                email: "mona@example.com".into(),
                phone: String::new(),
            },
            ..Default::default()
        })
        .unwrap()
    }

    const CTX: CreateContext<'static> = CreateContext {
        payment_id: "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        return_url: "https://pay.example/return/xpay/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        customer_email_field: "",
    };

    #[test]
    fn builds_the_documented_body_with_one_item_for_the_whole_amount() {
        let body = serde_json::to_value(CreateSessionRequest::build(&checkout(vec![], "Test product"), CTX)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "afterCompletion": { "type": "redirect", "redirect": {
                    "url": "https://pay.example/return/xpay/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV?session={CHECKOUT_SESSION_ID}" } },
                "lineItems": [{ "priceData": { "currency": "EGP", "unitAmount": 149_900,
                    "productData": { "name": "Test product" } }, "quantity": 1 }],
                "cancelUrl": "https://pay.example/return/xpay/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV?outcome=cancel",
                "metadata": { "paygate_payment_id": "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV" },
            })
        );
        // Integer minor units in the bytes themselves, no decimal point.
        let text = serde_json::to_string(&CreateSessionRequest::build(&checkout(vec![], ""), CTX)).unwrap();
        assert!(text.contains(r#""unitAmount":149900"#), "{text}");
        assert!(text.contains(r#""name":"order-7""#), "falls back to the reference: {text}");
        assert!(!text.contains("mona@example.com"), "no email unless configured: {text}");
    }

    #[test]
    fn maps_line_items_one_to_one_and_sends_email_only_when_configured() {
        let items = vec![
            LineItem { name: "Shirt".into(), unit_amount_minor: 50_000, quantity: 2 },
            LineItem { name: String::new(), unit_amount_minor: 49_900, quantity: 1 },
        ];
        let ctx = CreateContext { customer_email_field: "customerEmail", ..CTX };
        let body = serde_json::to_value(CreateSessionRequest::build(&checkout(items, "Order 7"), ctx)).unwrap();
        assert_eq!(
            body["lineItems"],
            serde_json::json!([
                { "priceData": { "currency": "EGP", "unitAmount": 50_000, "productData": { "name": "Shirt" } }, "quantity": 2 },
                { "priceData": { "currency": "EGP", "unitAmount": 49_900, "productData": { "name": "Order 7" } }, "quantity": 1 },
            ])
        );
        assert_eq!(body["customerEmail"], "mona@example.com");
    }

    #[test]
    fn parses_the_documented_session_and_maps_statuses() {
        let s: CheckoutSession = serde_json::from_str(
            r#"{"id":"cs_test_AbC123","object":"checkout.session","status":"open",
                "url":"https://checkout.xpay.app/c/cs_test_AbC123","amountTotal":149900,"currency":"EGP",
                "afterCompletion":{"type":"redirect","redirect":{"url":"..."}}}"#,
        )
        .unwrap();
        let r = s.to_report().unwrap();
        assert_eq!((r.status, r.amount), (Some(PaymentStatus::Pending), Some((149_900, "EGP".into()))));
        for (raw, want) in [
            ("open", Some(PaymentStatus::Pending)),
            ("complete", Some(PaymentStatus::Succeeded)),
            ("expired", Some(PaymentStatus::Expired)),
            ("processing", None),
        ] {
            let mapped: Option<PaymentStatus> = (&SessionStatus::from(raw)).into();
            assert_eq!(mapped, want, "{raw}");
        }
        let unknown = CheckoutSession { status: Some("weird".into()), ..s.clone() }.to_report().unwrap();
        assert_eq!((unknown.status, unknown.provider_status.as_deref()), (None, Some("weird")));
        let unpriced = CheckoutSession { status: Some("complete".into()), amount_total: None, ..s };
        assert_eq!(unpriced.to_report(), Err(SessionError::MissingAmount));
    }

    #[test]
    fn amounts_must_be_integers() {
        for bad in [r#"{"id":"cs_1","amountTotal":1499.5}"#, r#"{"id":"cs_1","amountTotal":"149900"}"#] {
            assert!(serde_json::from_str::<CheckoutSession>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn completed_event_reports_success_with_intent_and_payment_ref() {
        let body = br#"{"id":"evt_1","type":"checkout.session.completed","data":{"object":{"id":"cs_test_1",
            "object":"checkout.session","status":"complete","amountTotal":149900,"currency":"egp",
            "paymentIntent":{"id":"pi_1"},"metadata":{"paygate_payment_id":"pay_X"}}}}"#;
        let e = parse_event(body).unwrap();
        assert_eq!(e.event_id, "evt_1");
        assert_eq!(e.payment, PaymentRef::Both { id: "pay_X".into(), checkout_id: "cs_test_1".into() });
        assert_eq!(e.report.applied().status, Some(PaymentStatus::Succeeded));
        assert_eq!(e.report.applied().amount, Some((149_900, "EGP".into())));
        assert_eq!(e.report.applied().provider_payment_id.as_deref(), Some("pi_1"));

        // Without our metadata the session id identifies the payment; a bare intent id is accepted.
        let body = br#"{"id":"evt_2","type":"checkout.session.completed","data":{"object":{"id":"cs_test_1",
            "status":"complete","amountTotal":1,"currency":"EGP","paymentIntent":"pi_2","metadata":{}}}}"#;
        let e = parse_event(body).unwrap();
        assert_eq!(e.payment, PaymentRef::CheckoutId("cs_test_1".into()));
        assert_eq!(e.report.applied().provider_payment_id.as_deref(), Some("pi_2"));
    }

    #[test]
    fn other_event_types_report_nothing() {
        let body = br#"{"id":"evt_3","type":"checkout.session.expired","data":{"object":{"id":"cs_test_1",
            "status":"expired","amountTotal":5,"currency":"EGP"}}}"#;
        let e = parse_event(body).unwrap();
        assert_eq!(e.report, CallbackReport::LookUp { amount: None });
        assert_eq!(e.payment, PaymentRef::CheckoutId("cs_test_1".into()));
    }

    #[test]
    fn a_completed_event_with_another_status_reports_nothing() {
        for status in ["open", "expired", "processing"] {
            let body = format!(
                r#"{{"id":"evt_4","type":"checkout.session.completed","data":{{"object":{{"id":"cs_test_1",
                "object":"checkout.session","status":"{status}","amountTotal":149900,"currency":"EGP",
                "paymentIntent":{{"id":"pi_1"}},"metadata":{{"paygate_payment_id":"pay_X"}}}}}}}}"#
            );
            let e = parse_event(body.as_bytes()).unwrap();
            assert_eq!(e.report, CallbackReport::LookUp { amount: None }, "{status}");
            assert_eq!(e.payment, PaymentRef::Both { id: "pay_X".into(), checkout_id: "cs_test_1".into() });
        }
    }

    #[test]
    fn malformed_events() {
        for (body, field) in [
            (&br#"not json"#[..], "body"),
            (br#"{"type":"checkout.session.completed"}"#, "body"),
            (br#"{"id":"","type":"x","data":{"object":{"id":"cs_1"}}}"#, "id"),
            (br#"{"id":"evt_1","type":"checkout.session.completed"}"#, "data.object"),
            (br#"{"id":"e","type":"x","data":{"object":{"id":"pi_1","object":"payment_intent"}}}"#, "data.object"),
            (br#"{"id":"e","type":"checkout.session.completed","data":{"object":{"id":"cs_1"}}}"#, "data.object.status"),
            (
                br#"{"id":"e","type":"checkout.session.completed","data":{"object":{"id":"cs_1","status":"complete"}}}"#,
                "data.object.amountTotal",
            ),
            (
                br#"{"id":"e","type":"checkout.session.completed","data":{"object":{"id":"cs_1","status":"complete","amountTotal":10.5,"currency":"EGP"}}}"#,
                "data.object",
            ),
        ] {
            assert_eq!(parse_event(body), Err(malformed(field)), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn hints_name_the_payment_without_trusting_anything_else() {
        assert_eq!(
            hint(br#"{"data":{"object":{"id":"cs_1","metadata":{"paygate_payment_id":"pay_1"}}}}"#),
            Some(PaymentRef::Both { id: "pay_1".into(), checkout_id: "cs_1".into() })
        );
        assert_eq!(hint(br#"{"data":{"object":{"id":"cs_1"}}}"#), Some(PaymentRef::CheckoutId("cs_1".into())));
        assert_eq!(hint(b"garbage"), None);
        assert_eq!(hint(br#"{"id":"evt"}"#), None);
    }

    #[test]
    fn error_codes_from_stripe_like_bodies() {
        assert_eq!(
            error_code(br#"{"error":{"code":"amount_too_small","message":"x"}}"#).as_deref(),
            Some("amount_too_small")
        );
        assert_eq!(
            error_code(br#"{"error":{"type":"invalid_request_error"}}"#).as_deref(),
            Some("invalid_request_error")
        );
        assert_eq!(error_code(br#"{"error":{"code":"bad email mona@example.com"}}"#), None);
        assert_eq!(error_code(b"<html>"), None);
        assert_eq!(error_code(br#"{"code":"x"}"#), None);
    }
}
