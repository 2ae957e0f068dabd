//! EximPe's wire format, and the conversions between it and our domain: the create-order request
//! and response, the Get Order response, the error envelope and the browser callback form.
//! Everything EximPe puts on the wire is in this file.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::money::parse_decimal_minor;
use crate::domain::{NewCheckout, PaymentStatus, StatusReport};
use crate::providers::CallbackReport;
use crate::providers::http::sanitize_code;

/// The only currency EximPe's orders carry.
pub const CURRENCY: &str = "INR";
/// Minor-unit digits of the amount strings EximPe sends and expects (INR paise).
pub const AMOUNT_EXPONENT: u32 = 2;
/// Longest product name or description we send.
const MAX_PRODUCT_TEXT: usize = 255;

// ---------------------------------------------------------------------------------------------
// Create order: `POST {base}/pg/orders/`
// ---------------------------------------------------------------------------------------------

/// The create-order body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateOrderRequest {
    /// Major units, exactly two decimals: `"1000.00"`.
    pub amount: String,
    pub currency: String,
    /// Our payment id: the merchant-unique reference that guards retries.
    pub reference_id: String,
    /// Where the shopper's browser form-POSTs the result.
    pub return_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mop_type: Option<String>,
    pub buyer: Buyer,
    pub product: Product,
}

/// The shopper. Personal data: never logged.
#[derive(Clone, PartialEq, Serialize)]
pub struct Buyer {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub phone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<BuyerAddress>,
}

impl std::fmt::Debug for Buyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Buyer(<redacted>)")
    }
}

/// The shopper's address (from the caller's shipping address).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuyerAddress {
    pub line_1: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub line_2: String,
    pub city: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub state: String,
    pub postal_code: String,
}

/// What is sold: cross-border payments need an HS code.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Product {
    pub name: String,
    pub description: String,
    pub hs_code: String,
}

/// The account-level values a create-order body needs besides the checkout.
#[derive(Debug, Clone, Copy)]
pub struct OrderParams<'a> {
    pub payment_id: &'a str,
    pub return_url: &'a str,
    pub hs_code: &'a str,
}

impl CreateOrderRequest {
    /// Builds the body; the currency was checked by `validate` (INR only).
    pub fn new(checkout: &NewCheckout, params: OrderParams<'_>) -> Self {
        let customer = &checkout.customer;
        let address = checkout.shipping_address.as_ref().filter(|a| !a.line1.is_empty()).map(|a| BuyerAddress {
            line_1: a.line1.clone(),
            line_2: a.line2.clone(),
            city: a.city.clone(),
            state: a.state.clone(),
            postal_code: a.postal_code.clone(),
        });
        Self {
            amount: crate::domain::money::format_minor(checkout.amount.minor, AMOUNT_EXPONENT),
            currency: checkout.amount.currency.code().to_owned(),
            reference_id: params.payment_id.to_owned(),
            return_url: params.return_url.to_owned(),
            mop_type: checkout.payment_methods.first().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()),
            buyer: Buyer {
                name: customer.name.clone(),
                email: customer.email.clone(),
                phone: customer.phone.clone(),
                address,
            },
            product: product(checkout, params.hs_code),
        }
    }
}

/// `product` from the caller's line items and description: the name lists the items
/// (`2 x Tea, Cup`) or else uses the description or the merchant reference; the description is
/// the caller's description or else the name.
fn product(checkout: &NewCheckout, hs_code: &str) -> Product {
    let items = checkout
        .line_items
        .iter()
        .filter(|i| !i.name.trim().is_empty())
        .map(|i| if i.quantity > 1 { format!("{} x {}", i.quantity, i.name.trim()) } else { i.name.trim().to_owned() })
        .collect::<Vec<_>>()
        .join(", ");
    let description = checkout.description.trim();
    let name = [items.as_str(), description, checkout.merchant_reference.as_str()]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    let name = truncate(name, MAX_PRODUCT_TEXT);
    let description = if description.is_empty() { name.clone() } else { truncate(description, MAX_PRODUCT_TEXT) };
    Product { name, description, hs_code: hs_code.to_owned() }
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// `{"success": true, "message": …, "data": {"session_id": …, "order_id": …}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateOrderResponse {
    #[serde(default)]
    pub success: Option<bool>,
    pub data: Option<CreateOrderData>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreateOrderData {
    pub session_id: Option<String>,
    pub order_id: Option<String>,
}

/// The order EximPe opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedOrder {
    pub order_id: String,
    pub session_id: String,
}

/// Why a 2xx answer is not an opened order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOrderProblem {
    /// `success: false` with an error code.
    Refused(String),
    /// Not the documented shape (no `order_id` or `session_id`).
    Shape,
}

impl TryFrom<CreateOrderResponse> for OpenedOrder {
    type Error = CreateOrderProblem;

    fn try_from(r: CreateOrderResponse) -> Result<Self, Self::Error> {
        if r.success == Some(false) {
            let code =
                r.error.and_then(|e| e.code).and_then(|c| sanitize_code(&c)).unwrap_or_else(|| "eximpe_error".into());
            return Err(CreateOrderProblem::Refused(code));
        }
        let data = r.data.ok_or(CreateOrderProblem::Shape)?;
        match (data.order_id, data.session_id) {
            (Some(order_id), Some(session_id)) if !order_id.is_empty() && !session_id.is_empty() => {
                Ok(Self { order_id, session_id })
            }
            _ => Err(CreateOrderProblem::Shape),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors: `{"success": false, "error": {"code", "message", "details"}}`
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorEnvelope {
    pub error: Option<ErrorBody>,
}

/// Only the code is kept: `message` and `details` may echo request data.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub code: Option<String>,
}

/// `error.code` of an error envelope, for [`crate::providers::http::send`]; only an
/// identifier-like code is kept (free text could echo request data).
pub fn error_code(body: &[u8]) -> Option<String> {
    sanitize_code(&serde_json::from_slice::<ErrorEnvelope>(body).ok()?.error?.code?)
}

// ---------------------------------------------------------------------------------------------
// Status: EximPe's order status values
// ---------------------------------------------------------------------------------------------

/// `data.status` of an order, and `status` of a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EximpeStatus {
    PaymentSuccessful,
    PaymentFailed,
    PaymentPending,
    PaymentCancelled,
    /// Any value not documented: the payment's status is left alone.
    Unknown(String),
}

impl EximpeStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "payment_successful" => Self::PaymentSuccessful,
            "payment_failed" => Self::PaymentFailed,
            "payment_pending" => Self::PaymentPending,
            "payment_cancelled" => Self::PaymentCancelled,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

impl From<&EximpeStatus> for Option<PaymentStatus> {
    fn from(s: &EximpeStatus) -> Self {
        match s {
            EximpeStatus::PaymentSuccessful => Some(PaymentStatus::Succeeded),
            EximpeStatus::PaymentFailed => Some(PaymentStatus::Failed),
            EximpeStatus::PaymentPending => Some(PaymentStatus::Processing),
            EximpeStatus::PaymentCancelled => Some(PaymentStatus::Cancelled),
            EximpeStatus::Unknown(_) => None,
        }
    }
}

/// The report for an EximPe status value: status (None when unknown), the raw value, and a fixed
/// failure message (EximPe's own text stays out: it may echo shopper data).
fn status_report(raw: &str) -> StatusReport {
    let status: Option<PaymentStatus> = (&EximpeStatus::parse(raw)).into();
    StatusReport {
        status,
        provider_status: Some(raw.to_owned()),
        failure_message: (status == Some(PaymentStatus::Failed)).then(|| "EximPe reported payment_failed".to_owned()),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Get order: `GET {base}/pg/orders/{order_id}`
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct GetOrderResponse {
    pub data: Option<OrderData>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderData {
    pub order_id: Option<String>,
    pub status: Option<String>,
    /// A JSON number in one version of the API and a decimal string in another; read from its
    /// literal text.
    #[serde(default, deserialize_with = "AmountValue::deserialize_option")]
    pub amount: Option<AmountValue>,
    pub currency: Option<String>,
    pub mop_type: Option<String>,
    #[serde(default)]
    pub payments: Vec<OrderPayment>,
    /// `true` for orders of EximPe's test environment.
    pub is_testing: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderPayment {
    pub payment_id: Option<String>,
    pub mop_type: Option<String>,
}

/// An amount as EximPe sends it: `1000`, `1000.5` or `"1899.00"`. A JSON number is kept as the
/// literal text of the body (captured as a [`RawValue`]), never read through a float, so
/// `99999999999999.99` stays exactly that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountValue {
    /// A JSON string's value.
    Text(String),
    /// A JSON number's literal text.
    Number(String),
}

impl AmountValue {
    /// For `#[serde(deserialize_with)]`: `null`/absent → `None`; a string or number → its text;
    /// anything else is not the documented shape. Needs a `serde_json` byte or text deserializer
    /// (the raw text of the value is captured).
    fn deserialize_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
        let Some(raw) = Option::<Box<RawValue>>::deserialize(d)? else { return Ok(None) };
        let text = raw.get().trim();
        if text.starts_with('"') {
            let s: String = serde_json::from_str(text).map_err(serde::de::Error::custom)?;
            Ok(Some(Self::Text(s)))
        } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            Ok(Some(Self::Number(text.to_owned())))
        } else {
            Err(serde::de::Error::custom("amount is neither a string nor a number"))
        }
    }

    /// Minor units (paise), exactly; `None` when it is not a plain decimal (exponent notation
    /// included) or carries more precision than two decimals.
    pub fn to_minor(&self) -> Option<i64> {
        let text = match self {
            Self::Text(s) => s.trim(),
            Self::Number(n) => n.as_str(),
        };
        parse_decimal_minor(text, AMOUNT_EXPONENT)
    }
}

/// Why a Get Order answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderProblem {
    /// No `data.status`.
    MissingStatus,
    /// An amount that is not an exact two-decimal value.
    BadAmount,
    /// `payment_successful` without an amount: never reported as paid on trust.
    MissingAmount,
    /// The answer is about another order.
    OtherOrder,
    /// `is_testing` differs from the account's mode (a test order answering a live account, or
    /// the reverse): never trusted.
    ModeMismatch,
}

impl OrderData {
    /// The report for this order, checked to be about `order_id` and, when the answer says, of
    /// the account's mode (`testing` for a sandbox account).
    pub fn into_report(self, order_id: &str, testing: bool) -> Result<StatusReport, OrderProblem> {
        if self.order_id.as_deref().is_some_and(|id| id != order_id) {
            return Err(OrderProblem::OtherOrder);
        }
        if self.is_testing.is_some_and(|t| t != testing) {
            return Err(OrderProblem::ModeMismatch);
        }
        let raw = self.status.filter(|s| !s.is_empty()).ok_or(OrderProblem::MissingStatus)?;
        let mut report = status_report(&raw);
        // ISO codes compare case-insensitively; an absent currency is INR (EximPe's only one).
        let currency = self.currency.map(|c| c.trim().to_ascii_uppercase()).unwrap_or_else(|| CURRENCY.to_owned());
        report.amount = match self.amount {
            Some(amount) => Some((amount.to_minor().ok_or(OrderProblem::BadAmount)?, currency)),
            None => None,
        };
        if report.status == Some(PaymentStatus::Succeeded) && report.amount.is_none() {
            return Err(OrderProblem::MissingAmount);
        }
        let last = self.payments.last();
        report.provider_payment_id = last.and_then(|p| p.payment_id.clone()).filter(|s| !s.is_empty());
        report.payment_method =
            self.mop_type.or_else(|| last.and_then(|p| p.mop_type.clone())).filter(|s| !s.is_empty());
        Ok(report)
    }
}

// ---------------------------------------------------------------------------------------------
// Callback: the form the shopper's browser POSTs to `return_url`
// ---------------------------------------------------------------------------------------------

/// The fields whose values are signed, in signing order (`message` and `hash` are not signed).
pub const SIGNED_FIELDS: [&str; 6] =
    ["order_id", "payment_id", "status", "mop_type", "bank_ref_num", "payment_completed_at"];

/// A callback form, URL-decoded. Missing fields are empty strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackForm {
    pub order_id: String,
    pub payment_id: String,
    pub status: String,
    pub mop_type: String,
    pub bank_ref_num: String,
    pub payment_completed_at: String,
    /// `None` when absent.
    pub hash: Option<String>,
}

/// Why a callback form cannot even be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousForm;

impl CallbackForm {
    /// Parses an `application/x-www-form-urlencoded` body (`+` and `%XX` decoded). A signed field
    /// or `hash` given twice is refused: which copy was signed would be a guess.
    pub fn parse(body: &[u8]) -> Result<Self, AmbiguousForm> {
        let mut form = Self::default();
        let mut seen = std::collections::HashSet::new();
        for (key, value) in url::form_urlencoded::parse(body) {
            let slot = match key.as_ref() {
                "order_id" => &mut form.order_id,
                "payment_id" => &mut form.payment_id,
                "status" => &mut form.status,
                "mop_type" => &mut form.mop_type,
                "bank_ref_num" => &mut form.bank_ref_num,
                "payment_completed_at" => &mut form.payment_completed_at,
                "hash" => {
                    if form.hash.replace(value.into_owned()).is_some() {
                        return Err(AmbiguousForm);
                    }
                    continue;
                }
                _ => continue,
            };
            if !seen.insert(key.into_owned()) {
                return Err(AmbiguousForm);
            }
            *slot = value.into_owned();
        }
        Ok(form)
    }

    /// `order_id|payment_id|status|mop_type|bank_ref_num|payment_completed_at`.
    pub fn signed_message(&self) -> String {
        [&self.order_id, &self.payment_id, &self.status, &self.mop_type, &self.bank_ref_num, &self.payment_completed_at]
            .map(String::as_str)
            .join("|")
    }

    /// Dedupe key and event id: `(order_id, payment_id, status)`.
    pub fn event_key(&self) -> String {
        format!("{}:{}:{}", self.order_id, self.payment_id, self.status)
    }

    /// What a verified form says. The hash does not cover an amount and EximPe says never to rely
    /// on the redirect alone, so `payment_successful` only queues a lookup of EximPe's Get Order,
    /// whose amount and currency are checked. Failed, cancelled and pending forms apply: they
    /// cannot take money.
    pub fn report(&self) -> CallbackReport {
        if EximpeStatus::parse(&self.status) == EximpeStatus::PaymentSuccessful {
            return CallbackReport::LookUp { amount: None };
        }
        let mut report = status_report(&self.status);
        report.provider_payment_id = Some(self.payment_id.clone()).filter(|s| !s.is_empty());
        report.payment_method = Some(self.mop_type.clone()).filter(|s| !s.is_empty());
        report.occurred_at = parse_completed_at(&self.payment_completed_at);
        CallbackReport::Apply(report)
    }
}

/// `2025-06-25 12:15:48+00:00` (the documented form) or RFC 3339.
fn parse_completed_at(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok().map(|t| t.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::checkout::{Address, CheckoutInput, Customer, LineItem};

    fn checkout(currency: &str, items: Vec<LineItem>, description: &str) -> NewCheckout {
        NewCheckout::parse(CheckoutInput {
            provider: "eximpe".into(),
            merchant_reference: "order-77".into(),
            amount: Some((100_000, currency.into())),
            customer: Customer {
                name: "Asha Rao".into(),
                email: "asha@example.in".into(),
                phone: "+919876543210".into(),
            },
            payment_methods: vec!["UPI".into(), "CREDIT_CARD".into()],
            description: description.into(),
            line_items: items,
            ..Default::default()
        })
        .unwrap()
    }

    const PARAMS: OrderParams<'static> = OrderParams {
        payment_id: "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        return_url: "https://pg.example/callbacks/eximpe/default?payment_id=pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        hs_code: "49011010",
    };

    #[test]
    fn create_body_has_the_documented_shape() {
        let body = serde_json::to_value(CreateOrderRequest::new(&checkout("INR", vec![], "Books"), PARAMS)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "amount": "1000.00",
                "currency": "INR",
                "reference_id": "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
                "return_url": "https://pg.example/callbacks/eximpe/default?payment_id=pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
                "mop_type": "UPI",
                "buyer": { "name": "Asha Rao", "email": "asha@example.in", "phone": "+919876543210" },
                "product": { "name": "Books", "description": "Books", "hs_code": "49011010" },
            })
        );
    }

    #[test]
    fn amounts_are_exact_two_decimal_strings() {
        for (minor, text) in [(1, "0.01"), (10, "0.10"), (100_000, "1000.00"), (123_456_789, "1234567.89")] {
            let mut c = checkout("INR", vec![], "");
            c.amount.minor = minor;
            assert_eq!(CreateOrderRequest::new(&c, PARAMS).amount, text);
        }
    }

    #[test]
    fn product_from_line_items_then_description_then_reference() {
        let items = vec![
            LineItem { name: "Tea".into(), unit_amount_minor: 40_000, quantity: 2 },
            LineItem { name: "Cup".into(), unit_amount_minor: 20_000, quantity: 1 },
        ];
        let p = CreateOrderRequest::new(&checkout("INR", items, "Assam gift box"), PARAMS).product;
        assert_eq!((p.name.as_str(), p.description.as_str()), ("2 x Tea, Cup", "Assam gift box"));
        let p = CreateOrderRequest::new(&checkout("INR", vec![], ""), PARAMS).product;
        assert_eq!((p.name.as_str(), p.description.as_str(), p.hs_code.as_str()), ("order-77", "order-77", "49011010"));
    }

    #[test]
    fn optional_parts_are_left_out_and_address_is_mapped() {
        let mut c = checkout("INR", vec![], "x");
        c.payment_methods.clear();
        c.customer = Customer::default();
        c.shipping_address = Some(Address {
            line1: "1 MG Road".into(),
            city: "Bengaluru".into(),
            postal_code: "560001".into(),
            country: "IN".into(),
            ..Default::default()
        });
        let body = serde_json::to_value(CreateOrderRequest::new(&c, PARAMS)).unwrap();
        assert!(body.get("mop_type").is_none());
        assert_eq!(
            body["buyer"],
            serde_json::json!({ "address": { "line_1": "1 MG Road", "city": "Bengaluru", "postal_code": "560001" } })
        );
        assert_eq!(format!("{:?}", CreateOrderRequest::new(&c, PARAMS).buyer), "Buyer(<redacted>)");
    }

    #[test]
    fn create_response_parsing() {
        let ok: CreateOrderResponse = serde_json::from_str(
            r#"{"success":true,"message":"Checkout session created successfully","data":{"session_id":"session_abc123def456","order_id":"OD2000992103"}}"#,
        )
        .unwrap();
        assert_eq!(
            OpenedOrder::try_from(ok),
            Ok(OpenedOrder { order_id: "OD2000992103".into(), session_id: "session_abc123def456".into() })
        );
        let missing: CreateOrderResponse =
            serde_json::from_str(r#"{"success":true,"data":{"order_id":"OD1"}}"#).unwrap();
        assert_eq!(OpenedOrder::try_from(missing), Err(CreateOrderProblem::Shape));
        let refused: CreateOrderResponse =
            serde_json::from_str(r#"{"success":false,"error":{"code":"ERR_X","message":"m","details":{}}}"#).unwrap();
        assert_eq!(OpenedOrder::try_from(refused), Err(CreateOrderProblem::Refused("ERR_X".into())));
        // A code that is not an identifier (it could echo request data) is not passed on.
        let chatty: CreateOrderResponse =
            serde_json::from_str(r#"{"success":false,"error":{"code":"bad buyer asha@example.in","message":"m"}}"#)
                .unwrap();
        assert_eq!(OpenedOrder::try_from(chatty), Err(CreateOrderProblem::Refused("eximpe_error".into())));
    }

    #[test]
    fn error_code_from_the_documented_envelope() {
        let body = br#"{"success":false,"error":{"code":"ERR_AUTH_000","message":"Missing credentials","details":{"session_id":"Invalid or expired session"}}}"#;
        assert_eq!(error_code(body).as_deref(), Some("ERR_AUTH_000"));
        assert_eq!(error_code(b"<html>"), None);
        assert_eq!(error_code(br#"{"success":false}"#), None);
        let chatty = br#"{"success":false,"error":{"code":"Invalid email asha@example.in","message":"m"}}"#;
        assert_eq!(error_code(chatty), None);
        assert_eq!(error_code(br#"{"success":false,"error":{"code":""}}"#), None);
    }

    #[test]
    fn statuses_map_and_unknown_is_explicit() {
        let s = |raw| -> Option<PaymentStatus> { (&EximpeStatus::parse(raw)).into() };
        assert_eq!(s("payment_successful"), Some(PaymentStatus::Succeeded));
        assert_eq!(s("payment_failed"), Some(PaymentStatus::Failed));
        assert_eq!(s("payment_pending"), Some(PaymentStatus::Processing));
        assert_eq!(s("payment_cancelled"), Some(PaymentStatus::Cancelled));
        assert_eq!(EximpeStatus::parse("order_created"), EximpeStatus::Unknown("order_created".into()));
        assert_eq!(s("PAYMENT_SUCCESSFUL"), None);
    }

    fn order(json: &str) -> Result<StatusReport, OrderProblem> {
        let r: GetOrderResponse = serde_json::from_str(json).unwrap();
        r.data.unwrap().into_report("OD9411897512", true)
    }

    #[test]
    fn an_answer_of_the_other_mode_is_refused() {
        let body = |testing: &str| {
            format!(
                r#"{{"data":{{"order_id":"OD9411897512","amount":1000,"currency":"INR","status":"payment_successful","is_testing":{testing}}}}}"#
            )
        };
        let parse = |json: &str, testing: bool| {
            serde_json::from_str::<GetOrderResponse>(json).unwrap().data.unwrap().into_report("OD9411897512", testing)
        };
        assert_eq!(parse(&body("true"), false).unwrap_err(), OrderProblem::ModeMismatch);
        assert_eq!(parse(&body("false"), true).unwrap_err(), OrderProblem::ModeMismatch);
        assert!(parse(&body("true"), true).is_ok());
        assert!(parse(&body("false"), false).is_ok());
        // An answer that does not say is taken as of the account's mode.
        let silent = r#"{"data":{"order_id":"OD9411897512","amount":1000,"status":"payment_successful"}}"#;
        assert!(parse(silent, false).is_ok());
    }

    #[test]
    fn get_order_amount_as_number_or_string_exactly() {
        let documented = r#"{"success":true,"message":"Order fetched successfully","data":{"order_id":"OD9411897512","reference_id":"TEST_FOB46D","amount":1000,"currency":"INR","mop_type":"UPI","payments":[{"payment_id":"PR1469384681","mop_type":"UPI","status":"captured","status_message":null,"settlement":{"status":"ready_for_settlement"},"created_at":"2025-06-23T10:45:11Z"}],"status":"payment_successful","status_message":"Payment captured successfully","created_at":"2025-06-23T10:44:11.702363Z","is_testing":true}}"#;
        let r = order(documented).unwrap();
        assert_eq!(r.status, Some(PaymentStatus::Succeeded));
        assert_eq!(r.provider_status.as_deref(), Some("payment_successful"));
        assert_eq!(r.amount, Some((100_000, "INR".into())));
        assert_eq!(r.provider_payment_id.as_deref(), Some("PR1469384681"));
        assert_eq!(r.payment_method.as_deref(), Some("UPI"));
        for (amount, minor) in [
            (r#""1899.00""#, 189_900),
            (r#""1899.5""#, 189_950),
            ("1899.00", 189_900),
            ("1899.5", 189_950),
            ("0.07", 7),
            ("12345678.91", 1_234_567_891),
        ] {
            let json = format!(r#"{{"data":{{"status":"payment_pending","amount":{amount},"currency":"INR"}}}}"#);
            assert_eq!(order(&json).unwrap().amount, Some((minor, "INR".into())), "{amount}");
        }
        for bad in [r#""1899.001""#, "1899.001", r#""1,899.00""#, r#""abc""#, "-0.5e-9", "1e3", "1899.0000001"] {
            let json = format!(r#"{{"data":{{"status":"payment_pending","amount":{bad},"currency":"INR"}}}}"#);
            assert_eq!(order(&json), Err(OrderProblem::BadAmount), "{bad}");
        }
        // Neither a string nor a number: not the documented shape.
        for bad in ["true", "{}", "[1]"] {
            let json = format!(r#"{{"data":{{"status":"payment_pending","amount":{bad}}}}}"#);
            assert!(serde_json::from_str::<GetOrderResponse>(&json).is_err(), "{bad}");
        }
        let null = order(r#"{"data":{"status":"payment_pending","amount":null}}"#).unwrap();
        assert_eq!(null.amount, None);
    }

    #[test]
    fn seventeen_significant_digit_numbers_are_exact_or_refused_never_rounded() {
        // As an f64, 99999999999999.99 is 99999999999999.984375, which prints as
        // 99999999999999.98: one paisa off. The literal text is read instead.
        let r = order(r#"{"data":{"status":"payment_successful","amount":99999999999999.99,"currency":"INR"}}"#);
        assert_eq!(r.unwrap().amount, Some((9_999_999_999_999_999, "INR".into())));
        // 17 significant digits with three decimals (an f64 would print 12345678901234.566).
        let r = order(r#"{"data":{"status":"payment_successful","amount":12345678901234.567,"currency":"INR"}}"#);
        assert_eq!(r, Err(OrderProblem::BadAmount));
        // Too large for minor units in an i64: refused, not saturated.
        let r = order(r#"{"data":{"status":"payment_successful","amount":99999999999999999.99,"currency":"INR"}}"#);
        assert_eq!(r, Err(OrderProblem::BadAmount));
    }

    #[test]
    fn success_needs_an_amount_and_currency_is_compared_upper_cased() {
        assert_eq!(
            order(r#"{"data":{"status":"payment_successful","currency":"INR"}}"#),
            Err(OrderProblem::MissingAmount)
        );
        assert_eq!(
            order(r#"{"data":{"status":"payment_successful","amount":null}}"#),
            Err(OrderProblem::MissingAmount)
        );
        let r = order(r#"{"data":{"status":"payment_successful","amount":"1000.00","currency":"inr"}}"#).unwrap();
        assert_eq!((r.status, r.amount), (Some(PaymentStatus::Succeeded), Some((100_000, "INR".into()))));
        // No currency: INR, EximPe's only one.
        let r = order(r#"{"data":{"status":"payment_successful","amount":1000}}"#).unwrap();
        assert_eq!(r.amount, Some((100_000, "INR".into())));
        // Other statuses may come without an amount.
        assert_eq!(order(r#"{"data":{"status":"payment_cancelled"}}"#).unwrap().status, Some(PaymentStatus::Cancelled));
    }

    #[test]
    fn get_order_unknown_status_other_order_and_missing_status() {
        let r = order(r#"{"data":{"status":"order_created","amount":"10.00","currency":"INR"}}"#).unwrap();
        assert_eq!((r.status, r.provider_status.as_deref()), (None, Some("order_created")));
        assert_eq!(order(r#"{"data":{"order_id":"OD1","status":"payment_failed"}}"#), Err(OrderProblem::OtherOrder));
        assert_eq!(order(r#"{"data":{"amount":1}}"#), Err(OrderProblem::MissingStatus));
        let failed = order(r#"{"data":{"status":"payment_failed"}}"#).unwrap();
        assert_eq!(failed.failure_message.as_deref(), Some("EximPe reported payment_failed"));
        assert_eq!(failed.amount, None);
    }

    /// The document's sample form body.
    pub const SAMPLE_FORM: &str = "order_id=OD6567064038&payment_id=PR2352113376&status=payment_successful&message=Payment+captured+successfully&mop_type=UPI&bank_ref_num=OD6567064038-PR2352113376&payment_completed_at=2025-06-25+12%3A15%3A48%2B00%3A00&hash=078692abdb83a5873a5e17d416f326a4589ed6ac02aed36739a5900fd8b5650f";

    #[test]
    fn sample_form_url_decodes_to_the_signed_message() {
        // Python: dict(urllib.parse.parse_qsl(SAMPLE_FORM)) gives these values.
        let form = CallbackForm::parse(SAMPLE_FORM.as_bytes()).unwrap();
        assert_eq!(form.payment_completed_at, "2025-06-25 12:15:48+00:00");
        assert_eq!(
            form.signed_message(),
            "OD6567064038|PR2352113376|payment_successful|UPI|OD6567064038-PR2352113376|2025-06-25 12:15:48+00:00"
        );
        assert_eq!(form.hash.as_deref(), Some("078692abdb83a5873a5e17d416f326a4589ed6ac02aed36739a5900fd8b5650f"));
        assert_eq!(form.event_key(), "OD6567064038:PR2352113376:payment_successful");
        assert_eq!(
            parse_completed_at(&form.payment_completed_at),
            DateTime::parse_from_rfc3339("2025-06-25T12:15:48Z").ok().map(|t| t.to_utc())
        );
    }

    #[test]
    fn a_success_form_says_nothing_and_other_outcomes_apply() {
        // The hash covers no amount: success is left to the status lookup.
        let form = CallbackForm::parse(SAMPLE_FORM.as_bytes()).unwrap();
        assert_eq!(form.report(), CallbackReport::LookUp { amount: None });
        for (status, want) in [
            ("payment_failed", PaymentStatus::Failed),
            ("payment_cancelled", PaymentStatus::Cancelled),
            ("payment_pending", PaymentStatus::Processing),
        ] {
            let form = CallbackForm { status: status.into(), ..form.clone() };
            let CallbackReport::Apply(report) = form.report() else { panic!("{status} applies") };
            assert_eq!(report.status, Some(want), "{status}");
            assert_eq!(report.amount, None);
            assert_eq!(report.provider_payment_id.as_deref(), Some("PR2352113376"));
            assert_eq!(report.payment_method.as_deref(), Some("UPI"));
            assert_eq!(
                report.occurred_at,
                DateTime::parse_from_rfc3339("2025-06-25T12:15:48Z").ok().map(|t| t.to_utc())
            );
        }
    }

    #[test]
    fn missing_fields_are_empty_and_repeated_fields_refused() {
        let form = CallbackForm::parse(b"order_id=OD1&hash=ab").unwrap();
        assert_eq!(form.signed_message(), "OD1|||||");
        assert_eq!(CallbackForm::parse(b"order_id=OD1&status=a&status=b"), Err(AmbiguousForm));
        assert_eq!(CallbackForm::parse(b"order_id=OD1&hash=a&hash=a"), Err(AmbiguousForm));
        assert_eq!(CallbackForm::parse(b"order_id=OD1&message=a&message=b").unwrap().order_id, "OD1");
    }
}
