//! ListPayments: validation, page tokens and paging over `store::listing`.
//!
//! A page token is opaque to callers: base64url of a version byte, the last payment's
//! (`created_at` in microseconds, id) and a digest of the request's filters and that position.
//! It is only ever trusted as "continue after this (time, id) with exactly these filters": a
//! token used with other filters, altered, or one that does not decode, is `INVALID_FIELD`
//! `page_token`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::Gateway;
use crate::domain::{Payment, PaymentId, PaymentStatus};
use crate::error::ApiError;
use crate::providers::KNOWN_PROVIDERS;
use crate::store::listing::{self, Cursor, ListFilter};

/// Page size when the request gives 0.
pub const DEFAULT_PAGE_SIZE: i32 = 50;
/// Largest page size a request may ask for.
pub const MAX_PAGE_SIZE: i32 = 500;
const TOKEN_VERSION: u8 = 1;
const DIGEST_LEN: usize = 16;

/// A ListPayments request as the application takes it (transport-neutral, not yet validated).
/// The caller's identity and scope join it here once caller authentication exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// `None` for `PAYMENT_STATUS_UNSPECIFIED` or a value this server does not know.
    pub statuses: Vec<Option<PaymentStatus>>,
    pub providers: Vec<String>,
    pub merchant_reference: String,
    /// (seconds, nanos) as in `google.protobuf.Timestamp`.
    pub created_after: Option<(i64, i32)>,
    pub created_before: Option<(i64, i32)>,
    pub page_size: i32,
    pub page_token: String,
    /// Only this caller's payments (`None`: every payment: authentication off, or `read_all`).
    pub owner: Option<String>,
}

/// One page of payments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListPage {
    pub payments: Vec<Payment>,
    /// Empty on the last page.
    pub next_page_token: String,
}

fn timestamp(field: &str, value: Option<(i64, i32)>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some((secs, nanos)) = value else { return Ok(None) };
    let nanos = u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000);
    nanos
        .and_then(|n| DateTime::from_timestamp(secs, n))
        .map(Some)
        .ok_or_else(|| ApiError::invalid(field, "not a valid timestamp"))
}

impl ListRequest {
    /// The filter, page size and cursor; the first bad field in proto order is the error.
    fn parse(self) -> Result<(ListFilter, i64, Option<Cursor>), ApiError> {
        let mut statuses = Vec::with_capacity(self.statuses.len());
        for status in self.statuses {
            statuses.push(status.ok_or_else(|| ApiError::invalid("statuses", "a status must be specified"))?);
        }
        statuses.sort_by_key(|s| s.as_str());
        statuses.dedup();
        let mut providers = self.providers;
        if providers.iter().any(|p| !KNOWN_PROVIDERS.contains(&p.as_str())) {
            return Err(ApiError::invalid("providers", "unknown provider"));
        }
        providers.sort();
        providers.dedup();
        let filter = ListFilter {
            owner: self.owner,
            statuses,
            providers,
            merchant_reference: Some(self.merchant_reference).filter(|r| !r.is_empty()),
            created_after: timestamp("created_after", self.created_after)?,
            created_before: timestamp("created_before", self.created_before)?,
        };
        let page_size = match self.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => return Err(ApiError::invalid("page_size", "must be 0 (default 50) to 500")),
        };
        let cursor =
            if self.page_token.is_empty() {
                None
            } else {
                Some(decode_token(&self.page_token, &filter).ok_or_else(|| {
                    ApiError::invalid("page_token", "not a page token of a request with these filters")
                })?)
            };
        Ok((filter, i64::from(page_size), cursor))
    }
}

/// Digest of the (normalized) filters and the position a token is bound to.
fn token_digest(filter: &ListFilter, position: (i64, &str)) -> [u8; DIGEST_LEN] {
    let micros = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros());
    let canonical = serde_json::json!([
        position.0,
        position.1,
        filter.owner,
        filter.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        filter.providers,
        filter.merchant_reference,
        micros(filter.created_after),
        micros(filter.created_before),
    ]);
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    let mut out = [0; DIGEST_LEN];
    out.copy_from_slice(&digest[..DIGEST_LEN]);
    out
}

fn encode_token(last: &Payment, filter: &ListFilter) -> String {
    let mut bytes = vec![TOKEN_VERSION];
    let micros = last.created_at.timestamp_micros();
    bytes.extend_from_slice(&micros.to_be_bytes());
    bytes.extend_from_slice(&token_digest(filter, (micros, last.id.as_str())));
    bytes.extend_from_slice(last.id.as_str().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_token(token: &str, filter: &ListFilter) -> Option<Cursor> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let (&version, rest) = bytes.split_first()?;
    if version != TOKEN_VERSION || rest.len() < 8 + DIGEST_LEN {
        return None;
    }
    let (micros, rest) = rest.split_at(8);
    let (digest, id) = rest.split_at(DIGEST_LEN);
    let micros = i64::from_be_bytes(micros.try_into().ok()?);
    let id = std::str::from_utf8(id).ok()?;
    if digest != token_digest(filter, (micros, id)) {
        return None;
    }
    let created_at = DateTime::from_timestamp_micros(micros)?;
    let id = PaymentId::parse(id)?;
    Some(Cursor { created_at, id: id.as_str().to_owned() })
}

impl Gateway {
    /// One page of payments, newest first.
    pub async fn list_payments(&self, request: ListRequest) -> Result<ListPage, ApiError> {
        let (filter, page_size, cursor) = request.parse()?;
        let mut conn = self.store().pool().acquire().await?;
        // One more than a page: whether another page follows (every page but the last is full).
        let mut payments = listing::list(&mut conn, &filter, cursor.as_ref(), page_size + 1).await?;
        let more = payments.len() as i64 > page_size;
        payments.truncate(usize::try_from(page_size).unwrap_or(usize::MAX));
        let next_page_token = match payments.last() {
            Some(last) if more => encode_token(last, &filter),
            _ => String::new(),
        };
        Ok(ListPage { payments, next_page_token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ListRequest {
        ListRequest { providers: vec!["sandbox".into()], ..Default::default() }
    }

    #[test]
    fn tokens_round_trip_only_with_the_same_filters() {
        let (filter, _, _) = request().parse().unwrap();
        let last = crate::domain::Payment::fixture("sandbox", 1, "USD");
        let token = encode_token(&last, &filter);
        let cursor = decode_token(&token, &filter).unwrap();
        assert_eq!(
            (cursor.created_at.timestamp_micros(), cursor.id.as_str()),
            (last.created_at.timestamp_micros(), last.id.as_str())
        );
        let other = ListFilter { providers: vec!["xpay".into()], ..filter.clone() };
        assert_eq!(decode_token(&token, &other), None);
        assert_eq!(decode_token("not a token", &filter), None);
        assert_eq!(decode_token(&token[..token.len() - 3], &filter), None);
    }

    #[test]
    fn status_and_provider_order_does_not_change_the_filter() {
        let a = ListRequest {
            statuses: vec![Some(PaymentStatus::Failed), Some(PaymentStatus::Pending)],
            providers: vec!["xpay".into(), "sandbox".into()],
            ..Default::default()
        };
        let b = ListRequest {
            statuses: vec![Some(PaymentStatus::Pending), Some(PaymentStatus::Failed), Some(PaymentStatus::Pending)],
            providers: vec!["sandbox".into(), "xpay".into()],
            ..Default::default()
        };
        let position = (1, "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV");
        assert_eq!(token_digest(&a.parse().unwrap().0, position), token_digest(&b.parse().unwrap().0, position));
    }
}
