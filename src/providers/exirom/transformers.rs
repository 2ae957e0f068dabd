//! Exirom's wire format and its conversions to and from our domain: the auth exchange, the APM
//! payment request and response, the transaction info object (status lookup and callback body),
//! checksums' signed text, and error bodies. Everything Exirom puts on the wire is in this file.
//!
//! Money: requests carry a decimal string in major units (`"100.00"`); responses and callbacks
//! carry JSON numbers (`orderAmount: 100.0`, a Java `Double`). Those are read through their raw
//! token text and converted exactly (never through a float), `1.0E7` included.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::domain::money::{Currency, format_minor, parse_decimal_minor};
use crate::domain::{PaymentStatus, StatusReport};
use crate::providers::CallbackError;

/// Most decimals Exirom keeps in a request amount (more are rounded by Exirom: refused here).
pub const MAX_AMOUNT_EXPONENT: u32 = 2;
/// Longest provider value copied into a payment (ids, codes, rates).
const MAX_COPIED_CHARS: usize = 64;

// ---------------------------------------------------------------------------------------------
// Auth: POST {base}/v1/auth
// ---------------------------------------------------------------------------------------------

/// `{"merchantKey": …, "merchantSecret": …}`. Both are credentials: never logged.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthRequest<'a> {
    pub merchant_key: &'a str,
    pub merchant_secret: &'a str,
}

impl std::fmt::Debug for AuthRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthRequest(<redacted>)")
    }
}

/// The token in an auth answer: a plain-text body, a JSON string, or a JSON object holding it
/// under `token` (as one guide shows), `accessToken` or `access_token`.
pub fn parse_auth_token(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let token = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(map)) => ["token", "accessToken", "access_token"]
            .iter()
            .find_map(|k| map.get(*k).and_then(|v| v.as_str()))?
            .to_owned(),
        Ok(_) => return None,
        Err(_) => text.to_owned(),
    };
    let token = token.trim().to_owned();
    // A bearer token is one visible-ASCII word; anything else (an HTML page, prose) is not one.
    let plausible = !token.is_empty() && token.len() <= 8192 && token.bytes().all(|b| b.is_ascii_graphic());
    plausible.then_some(token)
}

/// The `exp` claim (unix seconds) of a JWT, when the token is one. The token is not verified:
/// this only decides when to ask for a new one.
pub fn jwt_expiry(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    exp.as_i64().or_else(|| exp.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

// ---------------------------------------------------------------------------------------------
// Create: POST {base}/v1/payments/apm
// ---------------------------------------------------------------------------------------------

/// `apmPayload`: which APM, from the account's `methods` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApmPayload {
    pub payment_method: String,
    pub payment_type: String,
}

/// The APM payment request. No customer data is sent (the documented minimum).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePaymentRequest {
    /// Our payment id: Exirom answers a repeated `requestId` with the original transaction.
    pub request_id: String,
    pub account_id: String,
    /// Major units, exactly the currency's decimals (`"100.00"`, `"1234"` for JPY).
    pub amount: String,
    pub currency: String,
    pub apm_payload: ApmPayload,
    pub callback_url: String,
    pub success_redirect_url: String,
    pub failure_redirect_url: String,
    /// Base64 HMAC-SHA256 over [`request_signed_text`].
    pub checksum: String,
}

/// What a create request needs besides the account's values.
#[derive(Debug, Clone, Copy)]
pub struct CreateParams<'a> {
    pub payment_id: &'a str,
    pub account_id: &'a str,
    pub minor: i64,
    pub currency: Currency,
    pub apm_payload: &'a ApmPayload,
    pub callback_url: &'a str,
    /// `{public_base_url}/return/exirom/{payment_id}`.
    pub return_url: &'a str,
}

/// The request amount: major units with the currency's decimals, or `None` for a currency with
/// more decimals than Exirom keeps.
pub fn request_amount(minor: i64, currency: Currency) -> Option<String> {
    (currency.exponent() <= MAX_AMOUNT_EXPONENT).then(|| format_minor(minor, currency.exponent()))
}

/// `accountId|amount|currency|requestId`, the amount exactly as sent.
pub fn request_signed_text(account_id: &str, amount: &str, currency: &str, request_id: &str) -> String {
    format!("{account_id}|{amount}|{currency}|{request_id}")
}

/// Standard padded Base64 of a MAC.
pub fn encode_checksum(mac: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac)
}

/// A received checksum's bytes: standard Base64 first, then unpadded and URL-safe variants.
pub fn decode_checksum(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].iter().find_map(|e| e.decode(text).ok())
}

impl CreatePaymentRequest {
    /// The body, with `checksum` computed by `sign` over the signed text. `None` when the
    /// currency has more decimals than Exirom keeps.
    pub fn build(p: CreateParams<'_>, sign: impl Fn(&str) -> String) -> Option<Self> {
        let amount = request_amount(p.minor, p.currency)?;
        let currency = p.currency.code().to_owned();
        let checksum = sign(&request_signed_text(p.account_id, &amount, &currency, p.payment_id));
        Some(Self {
            request_id: p.payment_id.to_owned(),
            account_id: p.account_id.to_owned(),
            amount,
            currency,
            apm_payload: p.apm_payload.clone(),
            callback_url: p.callback_url.to_owned(),
            success_redirect_url: format!("{}?outcome=success", p.return_url),
            failure_redirect_url: format!("{}?outcome=failure", p.return_url),
            checksum,
        })
    }
}

/// The create answer (only the fields we use).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePaymentResponse {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub transaction_id: Option<String>,
    #[serde(default)]
    pub transaction_status: Option<String>,
    #[serde(default)]
    pub decline_code: Option<serde_json::Value>,
    #[serde(default)]
    pub apm_response_data: Option<ApmResponseData>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApmResponseData {
    #[serde(default)]
    pub redirect_url: Option<String>,
    #[serde(default)]
    pub iframe_url: Option<String>,
}

/// A transaction Exirom opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedTransaction {
    pub transaction_id: String,
    /// `redirectUrl`, else `iframeUrl`, else empty (a server-to-server method: wait for the callback).
    pub checkout_url: String,
}

/// Why a 2xx create answer is not an open transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateProblem {
    /// No `transactionId`, or an answer for another `requestId`.
    Shape,
    /// Declined or failed at once: the code to report.
    Declined(String),
}

impl CreatePaymentResponse {
    pub fn into_opened(self, payment_id: &str) -> Result<OpenedTransaction, CreateProblem> {
        if self.request_id.as_deref().is_some_and(|r| r != payment_id) {
            return Err(CreateProblem::Shape);
        }
        let transaction_id = self.transaction_id.filter(|t| !t.is_empty()).ok_or(CreateProblem::Shape)?;
        if let Some(raw) = self.transaction_status.as_deref()
            && TxStatus::parse(raw).to_status() == Some(PaymentStatus::Failed)
        {
            let code = self.decline_code.as_ref().and_then(decline_code_text);
            return Err(CreateProblem::Declined(failure_code(raw, code.as_deref())));
        }
        let data = self.apm_response_data;
        let url = |u: Option<String>| u.filter(|u| u.starts_with("https://") || u.starts_with("http://"));
        let checkout_url =
            data.map(|d| url(d.redirect_url).or_else(|| url(d.iframe_url)).unwrap_or_default()).unwrap_or_default();
        Ok(OpenedTransaction { transaction_id, checkout_url })
    }
}

// ---------------------------------------------------------------------------------------------
// Status values (TxStatus)
// ---------------------------------------------------------------------------------------------

/// `transactionStatus`. Unknown values are kept, never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    New,
    Pending,
    CustomerVerification,
    Processing,
    Completed,
    Declined,
    Failed,
    Expired,
    /// Not in Exirom's list; mapped as the note assumes in case it is ever sent.
    Cancelled,
    /// A refund is out of checkout scope: left unchanged (and counted).
    Refunded,
    Unknown(String),
}

impl TxStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "NEW" => Self::New,
            "PENDING" => Self::Pending,
            "CUSTOMER_VERIFICATION" => Self::CustomerVerification,
            "PROCESSING" => Self::Processing,
            "COMPLETED" => Self::Completed,
            "DECLINED" => Self::Declined,
            "FAILED" => Self::Failed,
            "EXPIRED" => Self::Expired,
            "CANCELLED" | "CANCELED" => Self::Cancelled,
            "REFUNDED" => Self::Refunded,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// NEW/PENDING/CUSTOMER_VERIFICATION → PENDING, PROCESSING → PROCESSING, COMPLETED →
    /// SUCCEEDED, DECLINED/FAILED → FAILED, EXPIRED → EXPIRED, CANCELLED → CANCELLED; REFUNDED
    /// and anything unknown → `None` (status left unchanged).
    pub fn to_status(&self) -> Option<PaymentStatus> {
        match self {
            Self::New | Self::Pending | Self::CustomerVerification => Some(PaymentStatus::Pending),
            Self::Processing => Some(PaymentStatus::Processing),
            Self::Completed => Some(PaymentStatus::Succeeded),
            Self::Declined | Self::Failed => Some(PaymentStatus::Failed),
            Self::Expired => Some(PaymentStatus::Expired),
            Self::Cancelled => Some(PaymentStatus::Cancelled),
            Self::Refunded | Self::Unknown(_) => None,
        }
    }
}

/// `declineCode` as text: an integer, or a short identifier-like string.
fn decline_code_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        serde_json::Value::String(s) => identifier(s, 32).then(|| s.clone()),
        _ => None,
    }
}

/// `EXIROM_DECLINE_<code>` when a decline code is given, else `EXIROM_<STATUS>`.
fn failure_code(raw_status: &str, decline_code: Option<&str>) -> String {
    match decline_code {
        Some(code) => format!("EXIROM_DECLINE_{code}"),
        None if identifier(raw_status, 32) => format!("EXIROM_{raw_status}"),
        None => "EXIROM_DECLINED".to_owned(),
    }
}

/// Short, identifier-like text (`[A-Za-z0-9_.-]`) that cannot carry an email or a phone number.
fn identifier(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `declineSubReason` when it is short reason text: letters, spaces and `_ - . ,` only (no
/// digits, `@` or `+`: nothing that could be a phone number, card or email). Else `None`.
fn safe_reason(s: &str) -> Option<String> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.chars().count() <= 120
        && s.bytes().all(|b| b.is_ascii_alphabetic() || matches!(b, b' ' | b'_' | b'-' | b'.' | b','));
    ok.then(|| s.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Transaction info (GET {base}/v1/payments/apm/info/{id}, and the callback body)
// ---------------------------------------------------------------------------------------------

/// How the callback checksum writes `orderAmount`; tried in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountFormat {
    /// The JSON token exactly as received (`100.0`).
    RawToken,
    /// Exactly two decimals (`100.00`).
    TwoDp,
    /// Integer minor units (`10000`).
    Minor,
}

impl AmountFormat {
    /// The documented order when none is configured.
    pub const DEFAULT: [Self; 3] = [Self::RawToken, Self::TwoDp, Self::Minor];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "raw_token" => Some(Self::RawToken),
            "2dp" => Some(Self::TwoDp),
            "minor" => Some(Self::Minor),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RawToken => "raw_token",
            Self::TwoDp => "2dp",
            Self::Minor => "minor",
        }
    }
}

/// An `ApmPaymentTxInfoDto`, with the raw token text of its numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct TxInfo {
    pub transaction_id: String,
    pub request_id: Option<String>,
    /// `accountId` as text (a JSON number in callbacks, compared as a string).
    pub account_id: Option<String>,
    pub transaction_status: Option<String>,
    pub decline_code: Option<String>,
    pub decline_sub_reason: Option<String>,
    pub order_currency: Option<String>,
    /// The `orderAmount` token as received (`100.0`), or a JSON string's content.
    pub order_amount: Option<String>,
    pub processed_currency: Option<String>,
    pub processed_amount: Option<String>,
    pub conversion_rate: Option<String>,
    pub payment_method: Option<String>,
    pub provider_transaction_id: Option<String>,
}

fn malformed(field: &str) -> CallbackError {
    CallbackError::Malformed { field: field.to_owned() }
}

impl TxInfo {
    /// Parses a JSON object. `Err(field)` names what is wrong: the body (not one JSON object,
    /// or a top-level key given twice, which would let signed and parsed values differ) or
    /// `transactionId`.
    pub fn parse(body: &[u8]) -> Result<Self, CallbackError> {
        let text = std::str::from_utf8(body).map_err(|_| malformed("body"))?;
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| malformed("body"))?;
        let members = raw_members(text).ok_or_else(|| malformed("body"))?;
        let mut raw = BTreeMap::new();
        for (key, token) in members {
            if raw.insert(key, token).is_some() {
                return Err(malformed("body"));
            }
        }
        let string = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned).filter(|s| !s.is_empty());
        // A number as its token text; a string as its content.
        let scalar = |key: &str| match value.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()).filter(|s| !s.is_empty()),
            Some(serde_json::Value::Number(_)) => raw.get(key).map(|t| (*t).to_owned()),
            _ => None,
        };
        let transaction_id = string("transactionId").ok_or_else(|| malformed("transactionId"))?;
        let nested = |outer: &str, key: &str| {
            value.get(outer).and_then(|o| o.get(key)).and_then(|v| v.as_str()).map(str::to_owned)
        };
        Ok(Self {
            transaction_id,
            request_id: string("requestId"),
            account_id: scalar("accountId"),
            transaction_status: string("transactionStatus"),
            decline_code: value.get("declineCode").and_then(decline_code_text),
            decline_sub_reason: string("declineSubReason"),
            order_currency: string("orderCurrency"),
            order_amount: scalar("orderAmount"),
            processed_currency: string("processedCurrency"),
            processed_amount: scalar("processedAmount"),
            conversion_rate: scalar("conversionRate"),
            payment_method: nested("apmResponseData", "paymentMethod")
                .or_else(|| nested("apmRequestPayload", "paymentMethod"))
                .filter(|m| identifier(m, MAX_COPIED_CHARS)),
            provider_transaction_id: nested("apmResponseData", "providerTransactionId")
                .filter(|id| identifier(id, 128)),
        })
    }

    /// `orderAmount` in minor units of `orderCurrency`, exactly; `None` when either is missing,
    /// the currency is unknown, or the amount carries more precision than the currency.
    pub fn order_minor(&self) -> Option<(i64, Currency)> {
        let currency = Currency::parse(self.order_currency.as_deref()?)?;
        let minor = number_to_minor(self.order_amount.as_deref()?, currency.exponent())?;
        Some((minor, currency))
    }

    /// The callback checksum's signed text with the amount written as `format`:
    /// `accountId|orderAmount|orderCurrency|transactionId`. `None` when the fields needed are absent.
    pub fn callback_signed_text(&self, format: AmountFormat) -> Option<String> {
        let amount = match format {
            AmountFormat::RawToken => self.order_amount.clone()?,
            AmountFormat::TwoDp => {
                let (minor, currency) = self.order_minor()?;
                let scale = 10_i64.checked_pow(MAX_AMOUNT_EXPONENT.checked_sub(currency.exponent())?)?;
                format_minor(minor.checked_mul(scale)?, MAX_AMOUNT_EXPONENT)
            }
            AmountFormat::Minor => self.order_minor()?.0.to_string(),
        };
        Some(format!(
            "{}|{amount}|{}|{}",
            self.account_id.as_deref()?,
            self.order_currency.as_deref()?,
            self.transaction_id
        ))
    }

    /// The report this object makes. A COMPLETED transaction must carry an exact order amount;
    /// amounts travel with every report so the gateway catches a mismatch.
    pub fn to_report(&self) -> Result<StatusReport, CallbackError> {
        let raw = self.transaction_status.as_deref().ok_or_else(|| malformed("transactionStatus"))?;
        let tx_status = TxStatus::parse(raw);
        let status = tx_status.to_status();
        let amount = match (&self.order_amount, &self.order_currency) {
            (None, None) if status != Some(PaymentStatus::Succeeded) => None,
            _ => {
                let (minor, currency) = self.order_minor().ok_or_else(|| malformed("orderAmount"))?;
                Some((minor, currency.code().to_owned()))
            }
        };
        let failed = status == Some(PaymentStatus::Failed);
        Ok(StatusReport {
            status,
            provider_status: Some(raw.chars().take(MAX_COPIED_CHARS).collect()),
            amount,
            provider_payment_id: self.provider_transaction_id.clone(),
            payment_method: self.payment_method.clone(),
            failure_code: failed.then(|| failure_code(raw, self.decline_code.as_deref())),
            failure_message: if failed {
                Some(
                    self.decline_sub_reason
                        .as_deref()
                        .and_then(safe_reason)
                        .unwrap_or_else(|| format!("Exirom reported {}", failure_code(raw, None))),
                )
            } else {
                None
            },
            occurred_at: None,
            metadata: self.conversion_metadata(),
        })
    }

    /// When Exirom processed another currency or amount than the order's (a conversion), both
    /// sides are kept: `exirom_order_*`, `exirom_processed_*`, `exirom_conversion_rate`.
    pub fn conversion_metadata(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some((order_minor, order_currency)) = self.order_minor() else { return out };
        let processed_currency = self.processed_currency.as_deref().and_then(Currency::parse).unwrap_or(order_currency);
        let processed_amount = self.processed_amount.as_deref().and_then(|a| {
            let minor = number_to_minor(a, processed_currency.exponent())?;
            Some((minor, format_minor(minor, processed_currency.exponent())))
        });
        let same =
            processed_currency == order_currency && processed_amount.as_ref().is_none_or(|(m, _)| *m == order_minor);
        if same {
            return out;
        }
        out.insert("exirom_order_amount".into(), format_minor(order_minor, order_currency.exponent()));
        out.insert("exirom_order_currency".into(), order_currency.code().into());
        out.insert("exirom_processed_currency".into(), processed_currency.code().into());
        if let Some((_, text)) = processed_amount {
            out.insert("exirom_processed_amount".into(), text);
        }
        if let Some(rate) = self.conversion_rate.as_deref().filter(|r| is_plain_number(r)) {
            out.insert("exirom_conversion_rate".into(), rate.to_owned());
        }
        out
    }
}

fn is_plain_number(s: &str) -> bool {
    s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
}

/// A JSON number's text (`100.0`, `1.0E7`, `19.99`, `"100.00"`'s content) as exact minor units for
/// `exponent` decimals; `None` if it is not a number or carries more precision.
pub fn number_to_minor(text: &str, exponent: u32) -> Option<i64> {
    let text = text.trim();
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].strip_prefix('+').unwrap_or(&text[i + 1..]).parse::<i32>().ok()?),
        None => (text, 0),
    };
    if exp == 0 {
        return parse_decimal_minor(mantissa, exponent);
    }
    if exp.unsigned_abs() > 40 {
        return None;
    }
    // Move the decimal point `exp` places in the digit string, exactly.
    let (neg, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let all = format!("{int}{frac}");
    let point = i32::try_from(int.len()).ok()? + exp;
    let shifted = if point <= 0 {
        format!("0.{}{all}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= all.len() {
        format!("{all}{}", "0".repeat(point as usize - all.len()))
    } else {
        format!("{}.{}", &all[..point as usize], &all[point as usize..])
    };
    let minor = parse_decimal_minor(&shifted, exponent)?;
    Some(if neg { -minor } else { minor })
}

/// The top-level members of a JSON object as `(key, raw value text)`, in order. Only called on
/// text that already parsed as JSON, so the scan can be simple; `None` if it is not an object.
pub fn raw_members(text: &str) -> Option<Vec<(String, &str)>> {
    let bytes = text.as_bytes();
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut out = Vec::new();
    loop {
        i = skip_ws(bytes, i);
        match bytes.get(i)? {
            b'}' => return Some(out),
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = string_end(bytes, i)?;
        let key: String = serde_json::from_str(&text[i..key_end]).ok()?;
        i = skip_ws(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(bytes, i + 1);
        let end = value_end(bytes, start)?;
        out.push((key, &text[start..end]));
        i = end;
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Index just past the string starting at `i` (which is `"`).
fn string_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Index just past the value starting at `i`.
fn value_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    match bytes.get(i)? {
        b'"' => string_end(bytes, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            while bytes.get(i).is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                i += 1;
            }
            Some(i)
        }
    }
}

/// For an unverified body: the transaction it claims to be about. Never trusted.
pub fn hint(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("transactionId")?.as_str().filter(|s| !s.is_empty() && s.len() <= 128).map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// Errors (schema not published: parsed leniently)
// ---------------------------------------------------------------------------------------------

/// A short identifier-like code from an error body: `code`, `errorCode`, `error.code` or an
/// `error` string. Free text is dropped: it may echo request data.
pub fn error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let candidates = [
        value.get("code"),
        value.get("errorCode"),
        value.pointer("/error/code"),
        value.get("error"),
        value.get("status").filter(|s| s.is_string()),
    ];
    candidates.into_iter().flatten().find_map(|v| match v {
        serde_json::Value::String(s) if identifier(s, 64) => Some(s.clone()),
        serde_json::Value::Number(n) if n.is_u64() => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document's sample callback (comments stripped).
    pub const DOC_CALLBACK: &str = r#"{"transactionId":"tx-987654321","requestId":"req-123456789","accountId":12345,
 "transactionStatus":"COMPLETED","declineCode":null,"declineSubReason":null,
 "orderCurrency":"USD","processedCurrency":"USD","orderAmount":100.0,"processedAmount":100.0,
 "conversionRate":1.0,
 "apmRequestPayload":{"paymentMethod":"ExPay","paymentType":"E_WALLET"},
 "apmResponseData":{"paymentMethod":"ExPay","paymentType":"E_WALLET",
   "redirectUrl":"https://pay.expay.example.com/checkout/tx-987654321",
   "providerTransactionId":"ExPay-tx-12345"},
 "callbackUrl":"https://merchant.example.com/callbacks/payments",
 "billingDetails":{},"order":{},"createdAt":"2023-01-01T12:00:00Z"}"#;

    #[test]
    fn parses_the_document_sample_with_raw_tokens() {
        let info = TxInfo::parse(DOC_CALLBACK.as_bytes()).unwrap();
        assert_eq!(info.transaction_id, "tx-987654321");
        assert_eq!(info.account_id.as_deref(), Some("12345"));
        assert_eq!(info.order_amount.as_deref(), Some("100.0"));
        assert_eq!(info.callback_signed_text(AmountFormat::RawToken).unwrap(), "12345|100.0|USD|tx-987654321");
        assert_eq!(info.callback_signed_text(AmountFormat::TwoDp).unwrap(), "12345|100.00|USD|tx-987654321");
        assert_eq!(info.callback_signed_text(AmountFormat::Minor).unwrap(), "12345|10000|USD|tx-987654321");
        let r = info.to_report().unwrap();
        assert_eq!(r.status, Some(PaymentStatus::Succeeded));
        assert_eq!(r.amount, Some((10_000, "USD".into())));
        assert_eq!(r.provider_payment_id.as_deref(), Some("ExPay-tx-12345"));
        assert_eq!(r.payment_method.as_deref(), Some("ExPay"));
        assert!(r.metadata.is_empty());
    }

    #[test]
    fn raw_members_keep_token_text_and_duplicates_are_refused() {
        let m = raw_members(r#" { "a" : 1.50 , "b\"c":{"x":[1,"}"]}, "d":"s\\"} "#).unwrap();
        assert_eq!(m, vec![("a".into(), "1.50"), ("b\"c".into(), r#"{"x":[1,"}"]}"#), ("d".into(), r#""s\\""#)]);
        assert_eq!(raw_members("[1]"), None);
        let dup = br#"{"transactionId":"t","orderAmount":1.0,"orderAmount":100.0}"#;
        assert_eq!(TxInfo::parse(dup), Err(malformed("body")));
        assert_eq!(TxInfo::parse(b"nope"), Err(malformed("body")));
        assert_eq!(TxInfo::parse(br#"{"transactionStatus":"COMPLETED"}"#), Err(malformed("transactionId")));
    }

    #[test]
    fn numbers_convert_exactly() {
        for (text, exp, want) in [
            ("100.0", 2, Some(10_000)),
            ("19.99", 2, Some(1_999)),
            ("1.0E7", 2, Some(1_000_000_000)),
            ("1.2345E2", 2, Some(12_345)),
            ("5.0E-2", 2, Some(5)),
            ("1.0E-4", 2, None),
            ("1234", 0, Some(1_234)),
            ("1234.5", 0, None),
            ("10.005", 2, None),
            ("1e400", 2, None),
            ("abc", 2, None),
        ] {
            assert_eq!(number_to_minor(text, exp), want, "{text}");
        }
    }

    #[test]
    fn statuses_map_per_the_note() {
        for (raw, want) in [
            ("NEW", Some(PaymentStatus::Pending)),
            ("PENDING", Some(PaymentStatus::Pending)),
            ("CUSTOMER_VERIFICATION", Some(PaymentStatus::Pending)),
            ("PROCESSING", Some(PaymentStatus::Processing)),
            ("COMPLETED", Some(PaymentStatus::Succeeded)),
            ("DECLINED", Some(PaymentStatus::Failed)),
            ("FAILED", Some(PaymentStatus::Failed)),
            ("EXPIRED", Some(PaymentStatus::Expired)),
            ("CANCELLED", Some(PaymentStatus::Cancelled)),
            ("REFUNDED", None),
            ("ON_HOLD", None),
        ] {
            assert_eq!(TxStatus::parse(raw).to_status(), want, "{raw}");
        }
    }

    #[test]
    fn declines_carry_short_safe_codes_and_reasons() {
        let body = |code: &str, reason: &str| {
            format!(
                r#"{{"transactionId":"t1","accountId":1,"transactionStatus":"DECLINED","declineCode":{code},
                "declineSubReason":{reason},"orderCurrency":"USD","orderAmount":1.0}}"#
            )
        };
        let r = TxInfo::parse(body("4051", r#""Insufficient funds""#).as_bytes()).unwrap().to_report().unwrap();
        assert_eq!(r.failure_code.as_deref(), Some("EXIROM_DECLINE_4051"));
        assert_eq!(r.failure_message.as_deref(), Some("Insufficient funds"));
        // Anything that could be personal data is replaced by a fixed text.
        for reason in [r#""wallet +971501234567 blocked""#, r#""user mona@example.com""#, "42"] {
            let r = TxInfo::parse(body("null", reason).as_bytes()).unwrap().to_report().unwrap();
            assert_eq!(r.failure_code.as_deref(), Some("EXIROM_DECLINED"));
            assert_eq!(r.failure_message.as_deref(), Some("Exirom reported EXIROM_DECLINED"), "{reason}");
        }
        let r = TxInfo::parse(body(r#""bad code with spaces""#, "null").as_bytes()).unwrap().to_report().unwrap();
        assert_eq!(r.failure_code.as_deref(), Some("EXIROM_DECLINED"));
    }

    #[test]
    fn conversions_keep_both_amounts() {
        let body = br#"{"transactionId":"t1","accountId":1,"transactionStatus":"COMPLETED","orderCurrency":"USD",
            "orderAmount":100.0,"processedCurrency":"EUR","processedAmount":92.5,"conversionRate":0.925}"#;
        let r = TxInfo::parse(body).unwrap().to_report().unwrap();
        assert_eq!(r.amount, Some((10_000, "USD".into())));
        assert_eq!(
            r.metadata,
            BTreeMap::from([
                ("exirom_conversion_rate".to_owned(), "0.925".to_owned()),
                ("exirom_order_amount".to_owned(), "100.00".to_owned()),
                ("exirom_order_currency".to_owned(), "USD".to_owned()),
                ("exirom_processed_amount".to_owned(), "92.50".to_owned()),
                ("exirom_processed_currency".to_owned(), "EUR".to_owned()),
            ])
        );
    }

    #[test]
    fn completed_needs_an_exact_amount() {
        let no_amount = br#"{"transactionId":"t1","transactionStatus":"COMPLETED"}"#;
        assert_eq!(TxInfo::parse(no_amount).unwrap().to_report(), Err(malformed("orderAmount")));
        let pending = br#"{"transactionId":"t1","transactionStatus":"PENDING"}"#;
        assert_eq!(TxInfo::parse(pending).unwrap().to_report().unwrap().amount, None);
        let too_precise =
            br#"{"transactionId":"t1","transactionStatus":"PENDING","orderCurrency":"USD","orderAmount":1.005}"#;
        assert_eq!(TxInfo::parse(too_precise).unwrap().to_report(), Err(malformed("orderAmount")));
    }

    #[test]
    fn auth_tokens_in_every_documented_shape() {
        assert_eq!(parse_auth_token(b"eyJ.a.b\n").as_deref(), Some("eyJ.a.b"));
        assert_eq!(parse_auth_token(br#""eyJ.a.b""#).as_deref(), Some("eyJ.a.b"));
        assert_eq!(parse_auth_token(br#"{"merchantKey":"mk","token":"eyJ.a.b"}"#).as_deref(), Some("eyJ.a.b"));
        assert_eq!(parse_auth_token(br#"{"accessToken":"t1"}"#).as_deref(), Some("t1"));
        assert_eq!(parse_auth_token(br#"{"merchantKey":"mk"}"#), None);
        assert_eq!(parse_auth_token(b"<html> error </html>"), None);
        assert_eq!(parse_auth_token(b""), None);
        // {"sub":"m","exp":1900000000} as the payload.
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"m","exp":1900000000}"#);
        assert_eq!(jwt_expiry(&format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig")), Some(1_900_000_000));
        assert_eq!(jwt_expiry("opaque-token"), None);
    }

    #[test]
    fn error_codes_are_identifiers_only() {
        assert_eq!(error_code(br#"{"code":"INVALID_AMOUNT","message":"x"}"#).as_deref(), Some("INVALID_AMOUNT"));
        assert_eq!(error_code(br#"{"errorCode":1001}"#).as_deref(), Some("1001"));
        assert_eq!(error_code(br#"{"error":{"code":"bad_request"}}"#).as_deref(), Some("bad_request"));
        assert_eq!(error_code(br#"{"error":"Bad Request","status":400}"#), None);
        assert_eq!(error_code(br#"{"code":"email mona@example.com invalid"}"#), None);
        assert_eq!(error_code(b"<html>"), None);
    }

    #[test]
    fn request_amounts_follow_the_currency_and_refuse_three_decimals() {
        let c = |code| Currency::parse(code).unwrap();
        assert_eq!(request_amount(10_000, c("USD")).as_deref(), Some("100.00"));
        assert_eq!(request_amount(1_234, c("JPY")).as_deref(), Some("1234"));
        assert_eq!(request_amount(1_234, c("KWD")), None);
    }
}
