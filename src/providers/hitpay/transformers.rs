//! HitPay wire format: the payment-request create body (form or JSON), the payment-request object
//! (create response and status lookup), the v1 webhook form and its signed text, error bodies,
//! and their conversions to and from our domain types. Everything HitPay puts on the wire is here.
//!
//! Money goes out as an exact decimal string in major units (`2500.00`) and comes back as a string
//! that may carry thousands separators (`"900,000.00"`) next to a lower-case currency (`sgd`): both
//! are parsed exactly, never through a float.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::domain::money::{Currency, parse_decimal_minor};
use crate::domain::{NewCheckout, PaymentStatus, StatusReport};
use crate::providers::{CallbackError, PaymentRef};

/// HitPay amounts carry at most two decimals (the API reference's range is `0.3 < x < 999999999.99`).
pub const MAX_EXPONENT: u32 = 2;
/// The PayNow method: alone, it gets a QR code generated with the request.
pub const PAYNOW: &str = "paynow_online";
/// Metadata key (visible to the caller) that carries the PayNow QR payload.
pub const METADATA_PAYNOW_QR: &str = "paynow_qr";
/// The webhook field that carries the signature; every other field is signed.
pub const SIGNATURE_FIELD: &str = "hmac";
/// HitPay's limit on `purpose`.
pub const MAX_PURPOSE_CHARS: usize = 255;

// ---------------------------------------------------------------------------------------------
// Create: POST {base}/payment-requests
// ---------------------------------------------------------------------------------------------

/// Body encoding of the create call (`create_content_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// `application/x-www-form-urlencoded`, repeated `payment_methods[]` (the seed document).
    Form,
    /// `application/json`, `payment_methods` as an array (HitPay's API reference).
    Json,
}

impl ContentType {
    /// `form` (or empty) | `json`.
    pub fn parse(configured: &str) -> Option<Self> {
        match configured {
            "" | "form" => Some(Self::Form),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Our URLs and ids a create request needs besides the checkout itself.
#[derive(Debug, Clone, Copy)]
pub struct CreateParams<'a> {
    pub payment_id: &'a str,
    /// `{public_base_url}/return/hitpay/{payment_id}`.
    pub redirect_url: &'a str,
    /// `{public_base_url}/callbacks/hitpay/{account}`.
    pub webhook: &'a str,
}

/// `POST /payment-requests` fields. Customer fields are personal data: never logged.
#[derive(Clone, PartialEq)]
pub struct CreatePaymentRequest {
    /// Major units, exactly `exponent` decimals (`2500.00`; `1234` for a zero-decimal currency).
    pub amount: String,
    pub currency: String,
    pub reference_number: String,
    pub redirect_url: String,
    pub webhook: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub purpose: Option<String>,
    pub payment_methods: Vec<String>,
    pub expires_after: Option<String>,
    /// Only PayNow was asked for: HitPay returns `qr_code_data` for an embedded QR.
    pub generate_qr: bool,
}

impl std::fmt::Debug for CreatePaymentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatePaymentRequest")
            .field("amount", &self.amount)
            .field("currency", &self.currency)
            .field("reference_number", &self.reference_number)
            .field("customer", &"<redacted>")
            .field("payment_methods", &self.payment_methods)
            .field("expires_after", &self.expires_after)
            .field("generate_qr", &self.generate_qr)
            .finish_non_exhaustive()
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A `ttl` as HitPay's `expires_after` (`"30 mins"`, `"2 hours"`, `"1 days"`), rounded *down* to
/// whole minutes so HitPay never takes a payment after our `expires_at`; the largest exact unit.
pub fn expires_after(ttl: Duration) -> String {
    let mins = (ttl.as_secs() / 60).max(1);
    if mins.is_multiple_of(1440) {
        format!("{} days", mins / 1440)
    } else if mins.is_multiple_of(60) {
        format!("{} hours", mins / 60)
    } else {
        format!("{mins} mins")
    }
}

impl CreatePaymentRequest {
    pub fn new(checkout: &NewCheckout, params: CreateParams<'_>) -> Self {
        let purpose = non_empty(&checkout.description).map(|d| d.chars().take(MAX_PURPOSE_CHARS).collect());
        let generate_qr = checkout.payment_methods.len() == 1 && checkout.payment_methods[0] == PAYNOW;
        Self {
            amount: checkout.amount.to_decimal_string(),
            currency: checkout.amount.currency.code().to_owned(),
            reference_number: params.payment_id.to_owned(),
            redirect_url: params.redirect_url.to_owned(),
            webhook: params.webhook.to_owned(),
            email: non_empty(&checkout.customer.email),
            name: non_empty(&checkout.customer.name),
            phone: non_empty(&checkout.customer.phone),
            purpose,
            payment_methods: checkout.payment_methods.clone(),
            expires_after: checkout.ttl.map(expires_after),
            generate_qr,
        }
    }

    /// Scalar fields in a fixed order (`payment_methods` and the booleans are encoded per format).
    fn scalars(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            ("amount", self.amount.as_str()),
            ("currency", self.currency.as_str()),
            ("reference_number", self.reference_number.as_str()),
            ("redirect_url", self.redirect_url.as_str()),
            ("webhook", self.webhook.as_str()),
        ];
        for (key, value) in
            [("email", &self.email), ("name", &self.name), ("phone", &self.phone), ("purpose", &self.purpose)]
        {
            if let Some(v) = value {
                out.push((key, v.as_str()));
            }
        }
        if let Some(e) = &self.expires_after {
            out.push(("expires_after", e.as_str()));
        }
        out
    }

    /// `application/x-www-form-urlencoded`: `payment_methods[]` repeated, booleans as `true`/`false`.
    pub fn to_form(&self) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in self.scalars() {
            form.append_pair(key, value);
        }
        for method in &self.payment_methods {
            form.append_pair("payment_methods[]", method);
        }
        form.append_pair("allow_repeated_payments", "false");
        if self.generate_qr {
            form.append_pair("generate_qr", "true");
        }
        form.finish()
    }

    /// `application/json`: the same fields, `payment_methods` an array, booleans JSON booleans,
    /// `amount` still an exact decimal string.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (key, value) in self.scalars() {
            map.insert(key.to_owned(), value.into());
        }
        if !self.payment_methods.is_empty() {
            map.insert("payment_methods".into(), self.payment_methods.clone().into());
        }
        map.insert("allow_repeated_payments".into(), false.into());
        if self.generate_qr {
            map.insert("generate_qr".into(), true.into());
        }
        serde_json::Value::Object(map)
    }
}

// ---------------------------------------------------------------------------------------------
// Amounts as HitPay writes them
// ---------------------------------------------------------------------------------------------

/// An amount as HitPay sends it: a string (documented, possibly `"900,000.00"`) or a JSON number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum WireAmount {
    Text(String),
    Number(serde_json::Number),
}

impl WireAmount {
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
        }
    }
}

/// Parses HitPay's amount text exactly into minor units of a currency with `exponent` digits.
/// Thousands separators are accepted only in well-formed groups (`1,234,567.00`, not `1,23.00`);
/// more precision than the currency has, signs, exponents and anything else are refused.
pub fn parse_amount(text: &str, exponent: u32) -> Option<i64> {
    let text = text.trim();
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let digits = if int.contains(',') {
        let groups: Vec<&str> = int.split(',').collect();
        if !(1..=3).contains(&groups[0].len()) || groups[1..].iter().any(|g| g.len() != 3) {
            return None;
        }
        groups.concat()
    } else {
        int.to_owned()
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let plain = match frac {
        Some(f) => format!("{digits}.{f}"),
        None => digits,
    };
    parse_decimal_minor(&plain, exponent)
}

/// Amount and currency as reported (currency read case-insensitively, returned upper-case).
pub fn parse_money(amount: &str, currency: &str) -> Option<(i64, String)> {
    let code = currency.trim().to_ascii_uppercase();
    let currency = Currency::parse(&code)?;
    Some((parse_amount(amount, currency.exponent())?, code))
}

// ---------------------------------------------------------------------------------------------
// Statuses
// ---------------------------------------------------------------------------------------------

/// A payment-request or webhook `status`. Unknown values are kept, never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HitpayStatus {
    Pending,
    Completed,
    Failed,
    Expired,
    Canceled,
    Unknown(String),
}

impl From<&str> for HitpayStatus {
    fn from(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            "canceled" | "cancelled" => Self::Canceled,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

impl From<&HitpayStatus> for Option<PaymentStatus> {
    /// `pending`/`completed`/`failed` as documented; `expired` and `canceled` (a deleted request)
    /// assumed; anything else unknown (status left unchanged, warned and counted).
    fn from(s: &HitpayStatus) -> Self {
        match s {
            HitpayStatus::Pending => Some(PaymentStatus::Pending),
            HitpayStatus::Completed => Some(PaymentStatus::Succeeded),
            HitpayStatus::Failed => Some(PaymentStatus::Failed),
            HitpayStatus::Expired => Some(PaymentStatus::Expired),
            HitpayStatus::Canceled => Some(PaymentStatus::Cancelled),
            HitpayStatus::Unknown(_) => None,
        }
    }
}

/// Message recorded with a FAILED report (HitPay's own text is never stored: it may echo shopper data).
fn status_report(raw: &str) -> StatusReport {
    let status: Option<PaymentStatus> = (&HitpayStatus::from(raw)).into();
    StatusReport {
        status,
        provider_status: Some(raw.to_owned()),
        failure_message: (status == Some(PaymentStatus::Failed)).then(|| format!("HitPay reported {raw}")),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The payment-request object (create response, GET /payment-requests/{id})
// ---------------------------------------------------------------------------------------------

/// A payment request as HitPay returns it. Only the fields we use; others are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PaymentRequestObject {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub amount: Option<WireAmount>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub reference_number: Option<String>,
    #[serde(default)]
    pub qr_code_data: Option<QrCodeData>,
    #[serde(default)]
    pub payments: Vec<ChargeObject>,
}

/// `qr_code_data` (create with `generate_qr`): `qr_code` is the payload to render.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QrCodeData {
    #[serde(default)]
    pub qr_code: Option<String>,
}

/// One entry of `payments[]` (a charge).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChargeObject {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub payment_type: Option<String>,
}

/// Why a payment-request object cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestProblem {
    /// No `id`/`url` in a create answer.
    MissingCheckout,
    /// No `status` in a lookup answer.
    MissingStatus,
    /// An amount or currency that does not parse exactly.
    BadAmount,
    /// A `completed` request without amount and currency: never paid on trust.
    MissingAmount,
    /// The answer is about another request or payment, or echoes another amount than we sent.
    Other,
}

/// A payment request HitPay opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedRequest {
    pub id: String,
    pub url: String,
    /// The PayNow QR payload, when asked for and given.
    pub paynow_qr: Option<String>,
}

impl PaymentRequestObject {
    /// Reported amount/currency, when both are present.
    pub fn money(&self) -> Result<Option<(i64, String)>, RequestProblem> {
        match (&self.amount, &self.currency) {
            (Some(a), Some(c)) => parse_money(&a.text(), c).map(Some).ok_or(RequestProblem::BadAmount),
            _ => Ok(None),
        }
    }

    /// The create answer: `id` and `url` required; an echoed amount, currency or reference must
    /// be what we sent.
    pub fn opened(self, sent: &CreatePaymentRequest, minor: i64) -> Result<OpenedRequest, RequestProblem> {
        let url = self.url.clone().filter(|u| !u.is_empty());
        let (Some(url), false) = (url, self.id.is_empty()) else {
            return Err(RequestProblem::MissingCheckout);
        };
        if let Some((amount, currency)) = self.money()?
            && (amount != minor || currency != sent.currency)
        {
            return Err(RequestProblem::Other);
        }
        if self.reference_number.as_deref().is_some_and(|r| !r.is_empty() && r != sent.reference_number) {
            return Err(RequestProblem::Other);
        }
        let paynow_qr =
            if sent.generate_qr { self.qr_code_data.and_then(|q| q.qr_code).filter(|q| !q.is_empty()) } else { None };
        Ok(OpenedRequest { id: self.id, url, paynow_qr })
    }

    /// The lookup answer as a report, checked to be about `request_id` and our `payment_id`.
    pub fn into_report(self, request_id: &str, payment_id: &str) -> Result<StatusReport, RequestProblem> {
        if !self.id.is_empty() && self.id != request_id {
            return Err(RequestProblem::Other);
        }
        if self.reference_number.as_deref().is_some_and(|r| !r.is_empty() && r != payment_id) {
            return Err(RequestProblem::Other);
        }
        let raw = self.status.clone().filter(|s| !s.is_empty()).ok_or(RequestProblem::MissingStatus)?;
        let mut report = status_report(&raw);
        report.amount = self.money()?;
        if report.status == Some(PaymentStatus::Succeeded) {
            if report.amount.is_none() {
                return Err(RequestProblem::MissingAmount);
            }
            let paid = self.payments.iter().rev().find(|p| {
                matches!(p.status.as_deref(), Some("succeeded" | "completed"))
                    && p.id.as_deref().is_some_and(|id| !id.is_empty())
            });
            report.provider_payment_id = paid.and_then(|p| p.id.clone());
            report.payment_method = paid.and_then(|p| p.payment_type.clone()).filter(|t| !t.is_empty());
        }
        Ok(report)
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook (v1, the per-request `webhook` URL): form fields + `hmac`
// ---------------------------------------------------------------------------------------------

/// Why a webhook body cannot even be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormProblem {
    /// A field given twice: which copy was signed would be a guess.
    Ambiguous,
    /// No `hmac` field.
    Unsigned,
}

/// A webhook form, URL-decoded: every field but `hmac`, sorted by key (byte order), and `hmac`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookForm {
    pub fields: BTreeMap<String, String>,
    pub hmac: String,
}

/// A verified webhook, as the gateway needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// `{payment_id}:{status}`.
    pub key: String,
    pub payment: PaymentRef,
    pub report: StatusReport,
}

fn malformed(field: &str) -> CallbackError {
    CallbackError::Malformed { field: field.to_owned() }
}

impl WebhookForm {
    /// Parses an `application/x-www-form-urlencoded` body (`+` and `%XX` decoded).
    pub fn parse(body: &[u8]) -> Result<Self, FormProblem> {
        let mut fields = BTreeMap::new();
        let mut hmac = None;
        for (key, value) in url::form_urlencoded::parse(body) {
            let duplicate = if key == SIGNATURE_FIELD {
                hmac.replace(value.into_owned()).is_some()
            } else {
                fields.insert(key.into_owned(), value.into_owned()).is_some()
            };
            if duplicate {
                return Err(FormProblem::Ambiguous);
            }
        }
        Ok(Self { fields, hmac: hmac.ok_or(FormProblem::Unsigned)? })
    }

    /// Every received field but `hmac`, sorted by key, as `key + value` with no separators.
    pub fn signed_message(&self) -> String {
        self.fields.iter().map(|(k, v)| format!("{k}{v}")).collect()
    }

    fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or_default()
    }

    /// HitPay's request id whenever the form carries one (the gateway matches it against the
    /// stored `provider_checkout_id`, so another request's webhook can never be applied to our
    /// payment), with our payment id (`reference_number`) when present too, so a payment whose
    /// create timed out (no request id stored) adopts it; else our payment id alone.
    pub fn payment_ref(&self) -> Option<PaymentRef> {
        let request = self.get("payment_request_id");
        let reference = self.get("reference_number");
        match (request.is_empty(), reference.is_empty()) {
            (false, false) => Some(PaymentRef::Both { id: reference.to_owned(), checkout_id: request.to_owned() }),
            (false, true) => Some(PaymentRef::CheckoutId(request.to_owned())),
            (true, false) => Some(PaymentRef::Id(reference.to_owned())),
            (true, true) => None,
        }
    }

    /// What a verified form says. Amount and currency are required: the gateway checks them.
    pub fn into_event(self) -> Result<WebhookEvent, CallbackError> {
        let payment = self.payment_ref().ok_or_else(|| malformed("reference_number"))?;
        let payment_id = self.get("payment_id");
        if payment_id.is_empty() {
            return Err(malformed("payment_id"));
        }
        let status = self.get("status");
        if status.is_empty() {
            return Err(malformed("status"));
        }
        let amount = parse_money(self.get("amount"), self.get("currency")).ok_or_else(|| malformed("amount"))?;
        let mut report = status_report(status);
        report.amount = Some(amount);
        report.provider_payment_id = Some(payment_id.to_owned());
        Ok(WebhookEvent { key: format!("{payment_id}:{status}"), payment, report })
    }
}

/// For an unverified body: the payment it claims to be about. Never trusted.
pub fn hint(body: &[u8]) -> Option<PaymentRef> {
    let mut fields = BTreeMap::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        fields.entry(key.into_owned()).or_insert_with(|| value.into_owned());
    }
    WebhookForm { fields, hmac: String::new() }.payment_ref()
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 48 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The provider code of an error body. HitPay's shape is not documented; a Laravel-style
/// `{"message": …, "errors": {"<field>": [..]}}` gives `invalid_<field>` (the first field), else an
/// identifier-like `code`/`error_code`. Messages are never used: they may echo customer data.
pub fn error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(field) = value.get("errors").and_then(|e| e.as_object()).and_then(|e| e.keys().next())
        && identifier(field)
    {
        return Some(format!("invalid_{field}"));
    }
    ["code", "error_code"]
        .iter()
        .filter_map(|k| value.get(*k).and_then(|c| c.as_str()))
        .find(|c| identifier(c))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::checkout::{CheckoutInput, Customer};

    fn checkout(methods: &[&str], ttl: Option<(i64, i32)>, currency: &str, minor: i64) -> NewCheckout {
        NewCheckout::parse(CheckoutInput {
            provider: "hitpay".into(),
            merchant_reference: "order-9".into(),
            amount: Some((minor, currency.into())),
            customer: Customer {
                name: "Tan Ah Kow".into(),
                email: "tan@example.sg".into(),
                phone: "+6591234567".into(),
            },
            payment_methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            description: "FIFA 16".into(),
            ttl,
            ..Default::default()
        })
        .unwrap()
    }

    const PARAMS: CreateParams<'static> = CreateParams {
        payment_id: "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        redirect_url: "https://pay.example/return/hitpay/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        webhook: "https://pay.example/callbacks/hitpay/default",
    };

    #[test]
    fn form_body_matches_the_documented_example_shape() {
        let body = CreatePaymentRequest::new(&checkout(&["card", "paynow_online"], None, "SGD", 250_000), PARAMS);
        assert_eq!(
            body.to_form(),
            "amount=2500.00&currency=SGD&reference_number=pay_01ARZ3NDEKTSV4RRFFQ69G5FAV\
             &redirect_url=https%3A%2F%2Fpay.example%2Freturn%2Fhitpay%2Fpay_01ARZ3NDEKTSV4RRFFQ69G5FAV\
             &webhook=https%3A%2F%2Fpay.example%2Fcallbacks%2Fhitpay%2Fdefault\
             &email=tan%40example.sg&name=Tan+Ah+Kow&phone=%2B6591234567&purpose=FIFA+16\
             &payment_methods%5B%5D=card&payment_methods%5B%5D=paynow_online&allow_repeated_payments=false"
        );
        assert!(!format!("{body:?}").contains("tan@example.sg"));
    }

    #[test]
    fn json_body_carries_the_same_fields() {
        let body = CreatePaymentRequest::new(&checkout(&["paynow_online"], Some((1800, 0)), "SGD", 1), PARAMS);
        assert_eq!(
            body.to_json(),
            serde_json::json!({
                "amount": "0.01", "currency": "SGD", "reference_number": "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
                "redirect_url": "https://pay.example/return/hitpay/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV",
                "webhook": "https://pay.example/callbacks/hitpay/default",
                "email": "tan@example.sg", "name": "Tan Ah Kow", "phone": "+6591234567", "purpose": "FIFA 16",
                "expires_after": "30 mins", "payment_methods": ["paynow_online"],
                "allow_repeated_payments": false, "generate_qr": true,
            })
        );
        assert!(body.to_form().ends_with("&allow_repeated_payments=false&generate_qr=true"));
    }

    #[test]
    fn amounts_and_expiry_formats() {
        for (minor, currency, text) in [(1, "SGD", "0.01"), (250_000, "SGD", "2500.00"), (1234, "JPY", "1234")] {
            let body = CreatePaymentRequest::new(&checkout(&[], None, currency, minor), PARAMS);
            assert_eq!(body.amount, text);
            assert!(body.payment_methods.is_empty() && !body.generate_qr && body.expires_after.is_none());
        }
        for (secs, text) in [(60, "1 mins"), (119, "1 mins"), (5400, "90 mins"), (7200, "2 hours"), (604_800, "7 days")]
        {
            assert_eq!(expires_after(Duration::from_secs(secs)), text, "{secs}");
        }
    }

    #[test]
    fn parses_amounts_exactly_with_thousands_separators() {
        for (text, exp, minor) in [
            ("10.00", 2, 1000),
            ("900,000.00", 2, 90_000_000),
            ("1,234,567.5", 2, 123_456_750),
            ("2500", 2, 250_000),
            ("1,234", 0, 1234),
            ("12.00", 0, 12),
        ] {
            assert_eq!(parse_amount(text, exp), Some(minor), "{text}");
        }
        for bad in ["1,23.00", ",123.00", "1234,567.00", "12.345", "-1.00", "1e3", "", "1.2.3", "12,", "１２"] {
            assert_eq!(parse_amount(bad, 2), None, "{bad}");
        }
        assert_eq!(parse_money("2,500.00", "sgd"), Some((250_000, "SGD".into())));
        assert_eq!(parse_money("10.00", "xyz"), None);
        assert_eq!(parse_money("10.5", "jpy"), None);
    }

    #[test]
    fn statuses_map_and_unknown_is_explicit() {
        let s = |raw| -> Option<PaymentStatus> { (&HitpayStatus::from(raw)).into() };
        assert_eq!(s("pending"), Some(PaymentStatus::Pending));
        assert_eq!(s("completed"), Some(PaymentStatus::Succeeded));
        assert_eq!(s("failed"), Some(PaymentStatus::Failed));
        assert_eq!(s("expired"), Some(PaymentStatus::Expired));
        assert_eq!(s("canceled"), Some(PaymentStatus::Cancelled));
        assert_eq!(s("cancelled"), Some(PaymentStatus::Cancelled));
        assert_eq!(HitpayStatus::from("refunded"), HitpayStatus::Unknown("refunded".into()));
        assert_eq!(s("COMPLETED"), None);
    }

    fn object(json: serde_json::Value) -> PaymentRequestObject {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn create_answer_with_and_without_qr() {
        let sent = CreatePaymentRequest::new(&checkout(&["paynow_online"], None, "SGD", 1000), PARAMS);
        let answer = serde_json::json!({
            "id": "9ef68e2e-3569-4f69-9f68-04c7e4bb007c", "amount": "10.00", "currency": "sgd", "status": "pending",
            "reference_number": "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", "url": "https://securecheckout.sandbox.hit-pay.com/x",
            "qr_code_data": { "qr_code": "00020101021226...6304ABCD", "qr_code_expiry": null },
        });
        let opened = object(answer.clone()).opened(&sent, 1000).unwrap();
        assert_eq!(opened.id, "9ef68e2e-3569-4f69-9f68-04c7e4bb007c");
        assert_eq!(opened.paynow_qr.as_deref(), Some("00020101021226...6304ABCD"));
        assert_eq!(object(answer.clone()).opened(&sent, 1001), Err(RequestProblem::Other));
        let mut other_ref = answer.clone();
        other_ref["reference_number"] = "pay_other".into();
        assert_eq!(object(other_ref).opened(&sent, 1000), Err(RequestProblem::Other));
        let mut no_url = answer;
        no_url["url"] = serde_json::Value::Null;
        assert_eq!(object(no_url).opened(&sent, 1000), Err(RequestProblem::MissingCheckout));
    }

    #[test]
    fn lookup_reports_amounts_charges_and_refuses_others() {
        let o = object(serde_json::json!({
            "id": "r1", "status": "completed", "amount": "1,000.00", "currency": "sgd",
            "reference_number": "pay_1",
            "payments": [
                { "id": "c0", "status": "failed", "payment_type": "card" },
                { "id": "c1", "status": "succeeded", "payment_type": "paynow_online", "amount": "1000.00" },
            ],
        }));
        let r = o.clone().into_report("r1", "pay_1").unwrap();
        assert_eq!(r.status, Some(PaymentStatus::Succeeded));
        assert_eq!(r.amount, Some((100_000, "SGD".into())));
        assert_eq!(
            (r.provider_payment_id.as_deref(), r.payment_method.as_deref()),
            (Some("c1"), Some("paynow_online"))
        );
        assert_eq!(o.clone().into_report("r2", "pay_1"), Err(RequestProblem::Other));
        assert_eq!(o.into_report("r1", "pay_2"), Err(RequestProblem::Other));
        let unpriced = object(serde_json::json!({ "id": "r1", "status": "completed" }));
        assert_eq!(unpriced.into_report("r1", "pay_1"), Err(RequestProblem::MissingAmount));
        let unknown = object(serde_json::json!({ "id": "r1", "status": "refunded", "amount": 10, "currency": "SGD" }));
        let r = unknown.into_report("r1", "pay_1").unwrap();
        assert_eq!(
            (r.status, r.provider_status.as_deref(), r.amount),
            (None, Some("refunded"), Some((1000, "SGD".into())))
        );
        let bad = object(serde_json::json!({ "id": "r1", "status": "pending", "amount": "10.001", "currency": "SGD" }));
        assert_eq!(bad.into_report("r1", "pay_1"), Err(RequestProblem::BadAmount));
    }

    /// The note's self-made vector (Python 3):
    ///   hmac.new(b"salt_test", b"amount10.00currencySGDpayment_idp1payment_request_idr1phone"
    ///            b"reference_numberORD1statuscompleted", hashlib.sha256).hexdigest()
    const NOTE_FORM: &str = "payment_id=p1&payment_request_id=r1&phone=&amount=10.00&currency=SGD&status=completed&reference_number=ORD1&hmac=dcb253cf1b727e8a8e7c95997b389366cbbe9f53fcb99b73960951dc45713992";

    #[test]
    fn signed_message_sorts_keys_and_drops_hmac() {
        let form = WebhookForm::parse(NOTE_FORM.as_bytes()).unwrap();
        assert_eq!(
            form.signed_message(),
            "amount10.00currencySGDpayment_idp1payment_request_idr1phonereference_numberORD1statuscompleted"
        );
        assert_eq!(form.hmac, "dcb253cf1b727e8a8e7c95997b389366cbbe9f53fcb99b73960951dc45713992");
        assert_eq!(WebhookForm::parse(b"a=1&a=2&hmac=x"), Err(FormProblem::Ambiguous));
        assert_eq!(WebhookForm::parse(b"a=1&hmac=x&hmac=x"), Err(FormProblem::Ambiguous));
        assert_eq!(WebhookForm::parse(b"a=1"), Err(FormProblem::Unsigned));
    }

    #[test]
    fn webhook_events() {
        let e = WebhookForm::parse(NOTE_FORM.as_bytes()).unwrap().into_event().unwrap();
        assert_eq!(e.key, "p1:completed");
        assert_eq!(e.payment, PaymentRef::Both { id: "ORD1".into(), checkout_id: "r1".into() }, "both ids");
        assert_eq!(e.report.status, Some(PaymentStatus::Succeeded));
        assert_eq!(e.report.amount, Some((1000, "SGD".into())));
        assert_eq!(e.report.provider_payment_id.as_deref(), Some("p1"));
        let by_request =
            WebhookForm::parse(b"payment_id=p2&payment_request_id=r2&amount=1&currency=sgd&status=failed&hmac=x")
                .unwrap()
                .into_event()
                .unwrap();
        assert_eq!(by_request.payment, PaymentRef::CheckoutId("r2".into()));
        assert_eq!(by_request.report.status, Some(PaymentStatus::Failed));
        assert_eq!(by_request.report.failure_message.as_deref(), Some("HitPay reported failed"));
        for (body, field) in [
            (&b"payment_id=p&amount=1&currency=SGD&status=completed&hmac=x"[..], "reference_number"),
            (b"reference_number=o&amount=1&currency=SGD&status=completed&hmac=x", "payment_id"),
            (b"reference_number=o&payment_id=p&amount=1&currency=SGD&hmac=x", "status"),
            (b"reference_number=o&payment_id=p&amount=1.001&currency=SGD&status=completed&hmac=x", "amount"),
            (b"reference_number=o&payment_id=p&amount=1&status=completed&hmac=x", "amount"),
        ] {
            let got = WebhookForm::parse(body).unwrap().into_event();
            assert_eq!(got, Err(malformed(field)), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn hints_and_error_codes() {
        assert_eq!(
            hint(b"reference_number=pay_1&payment_request_id=r"),
            Some(PaymentRef::Both { id: "pay_1".into(), checkout_id: "r".into() })
        );
        assert_eq!(hint(b"reference_number=pay_1"), Some(PaymentRef::Id("pay_1".into())));
        assert_eq!(hint(b"payment_request_id=r"), Some(PaymentRef::CheckoutId("r".into())));
        assert_eq!(hint(b"garbage"), None);
        assert_eq!(
            error_code(br#"{"message":"The given data was invalid.","errors":{"amount":["too small"],"email":["x"]}}"#)
                .as_deref(),
            Some("invalid_amount")
        );
        assert_eq!(
            error_code(br#"{"code":"invalid_business_api_key","message":"m"}"#).as_deref(),
            Some("invalid_business_api_key")
        );
        assert_eq!(error_code(br#"{"message":"Invalid email tan@example.sg"}"#), None);
        assert_eq!(error_code(br#"{"errors":{"bad field name":["x"]}}"#), None);
        assert_eq!(error_code(b"<html>"), None);
    }
}
