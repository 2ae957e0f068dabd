//! Payment rows and their append-only event log.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::domain::{Currency, EventKind, EventSource, Money, Outcome, Payment, PaymentId, PaymentStatus};

/// The payment columns, as a literal so that every query stays a static string.
macro_rules! columns {
    () => {
        "id, provider, account, merchant_reference, amount_minor, currency, status, checkout_url, \
         provider_checkout_id, provider_payment_id, payment_method, failure_code, failure_message, return_url, \
         cancel_url, metadata, provider_data, created_at, updated_at, expires_at, version, caller"
    };
}

pub(super) use columns;

pub(super) fn from_row(row: &PgRow) -> Result<Payment, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let metadata: sqlx::types::Json<BTreeMap<String, String>> = row.try_get("metadata")?;
    let currency: String = row.try_get("currency")?;
    let id: String = row.try_get("id")?;
    let decode = |what: &str| sqlx::Error::Decode(format!("stored {what} is not valid").into());
    Ok(Payment {
        id: PaymentId::parse(&id).ok_or_else(|| decode("payment id"))?,
        provider: row.try_get("provider")?,
        account: row.try_get("account")?,
        merchant_reference: row.try_get("merchant_reference")?,
        amount: Money {
            minor: row.try_get("amount_minor")?,
            currency: Currency::parse(currency.trim()).ok_or_else(|| decode("currency"))?,
        },
        status: status.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        checkout_url: row.try_get("checkout_url")?,
        provider_checkout_id: row.try_get("provider_checkout_id")?,
        provider_payment_id: row.try_get("provider_payment_id")?,
        payment_method: row.try_get("payment_method")?,
        failure_code: row.try_get("failure_code")?,
        failure_message: row.try_get("failure_message")?,
        return_url: row.try_get("return_url")?,
        cancel_url: row.try_get("cancel_url")?,
        metadata: metadata.0,
        provider_data: row.try_get("provider_data")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
        version: row.try_get("version")?,
        caller: row.try_get("caller")?,
    })
}

/// Fields of a payment at creation.
#[derive(Debug, Clone)]
pub struct NewPaymentRow<'a> {
    pub id: &'a str,
    pub provider: &'a str,
    pub account: &'a str,
    pub merchant_reference: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub return_url: &'a str,
    pub cancel_url: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
    /// Provisional lifetime: `expires_at` = creation time + `ttl` until the provider says otherwise.
    pub ttl: std::time::Duration,
    /// The authenticated caller that creates it (its owner); `None` while authentication is off.
    pub caller: Option<&'a str>,
}

/// What an event row records besides the payment itself.
#[derive(Debug, Clone)]
pub struct EventInfo<'a> {
    pub kind: EventKind,
    pub source: EventSource,
    pub provider_event_id: Option<&'a str>,
    pub provider_occurred_at: Option<DateTime<Utc>>,
    pub detail: Option<serde_json::Value>,
    /// The authenticated caller whose request caused the event, if any.
    pub caller: Option<&'a str>,
}

impl<'a> EventInfo<'a> {
    /// An event with no provider event id, time, detail or caller.
    pub fn new(kind: EventKind, source: EventSource) -> Self {
        Self { kind, source, provider_event_id: None, provider_occurred_at: None, detail: None, caller: None }
    }

    /// The same event, caused by `caller`'s request.
    pub fn by(self, caller: Option<&'a str>) -> Self {
        Self { caller, ..self }
    }
}

/// Records what applying a report decided about the locked row `before`: the change with its
/// event, or a not-applied event (`info.kind` is taken from the outcome). Returns the payment
/// as it is now.
pub async fn record(
    conn: &mut PgConnection,
    before: &Payment,
    outcome: Outcome,
    info: EventInfo<'_>,
) -> Result<Payment, sqlx::Error> {
    let info = EventInfo { kind: outcome.kind(), ..info };
    match outcome {
        Outcome::Change { after, .. } => update(conn, before, &after, &info).await,
        Outcome::Ignore { .. } => {
            record_not_applied(conn, before, &info).await?;
            Ok(before.clone())
        }
    }
}

/// Inserts a new PENDING payment (version 1) and its `created` event.
pub async fn insert(conn: &mut PgConnection, new: &NewPaymentRow<'_>) -> Result<Payment, sqlx::Error> {
    let row = sqlx::query(concat!(
        "INSERT INTO payments (id, provider, account, merchant_reference, amount_minor, currency, status, \
             return_url, cancel_url, metadata, created_at, updated_at, expires_at, version, caller) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, clock_timestamp(), clock_timestamp(), \
             clock_timestamp() + make_interval(secs => $10), 1, $11) \
         RETURNING ",
        columns!()
    ))
    .bind(new.id)
    .bind(new.provider)
    .bind(new.account)
    .bind(new.merchant_reference)
    .bind(new.amount_minor)
    .bind(new.currency)
    .bind(new.return_url)
    .bind(new.cancel_url)
    .bind(sqlx::types::Json(new.metadata))
    .bind(new.ttl.as_secs_f64())
    .bind(new.caller)
    .fetch_one(&mut *conn)
    .await?;
    let payment = from_row(&row)?;
    let info = EventInfo::new(EventKind::Created, EventSource::Create).by(new.caller);
    insert_event(conn, &payment, None, Some(&payment), &info).await?;
    Ok(payment)
}

/// Reads a payment by id.
pub async fn get(conn: &mut PgConnection, id: &PaymentId) -> Result<Option<Payment>, sqlx::Error> {
    let row = sqlx::query(concat!("SELECT ", columns!(), " FROM payments WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The newest payment with a merchant reference (`created_at` DESC, then id DESC), among the
/// payments of `owner` when given.
pub async fn newest_by_reference(
    conn: &mut PgConnection,
    reference: &str,
    owner: Option<&str>,
) -> Result<Option<Payment>, sqlx::Error> {
    let row =
        match owner {
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM payments WHERE merchant_reference = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
                ))
                .bind(reference)
                .fetch_optional(conn)
                .await?
            }
            Some(owner) => sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM payments WHERE caller = $2 AND merchant_reference = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
            ))
            .bind(reference)
            .bind(owner)
            .fetch_optional(conn)
            .await?,
        };
    row.as_ref().map(from_row).transpose()
}

/// Locks a payment row for the rest of the transaction, by our id.
pub async fn lock(conn: &mut PgConnection, id: &PaymentId) -> Result<Option<Payment>, sqlx::Error> {
    let row = sqlx::query(concat!("SELECT ", columns!(), " FROM payments WHERE id = $1 FOR UPDATE"))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Locks a payment row by the provider's checkout id.
pub async fn lock_by_checkout_id(
    conn: &mut PgConnection,
    provider: &str,
    checkout_id: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM payments WHERE provider = $1 AND provider_checkout_id = $2 FOR UPDATE"
    ))
    .bind(provider)
    .bind(checkout_id)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Reads a payment by the provider's checkout id (no lock).
pub async fn find_by_checkout_id(
    conn: &mut PgConnection,
    provider: &str,
    checkout_id: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    let row =
        sqlx::query(concat!("SELECT ", columns!(), " FROM payments WHERE provider = $1 AND provider_checkout_id = $2"))
            .bind(provider)
            .bind(checkout_id)
            .fetch_optional(conn)
            .await?;
    row.as_ref().map(from_row).transpose()
}

/// Writes `after` over the locked row `before`, bumping `version` by one, and appends the event.
/// The caller has decided that something changed.
pub async fn update(
    conn: &mut PgConnection,
    before: &Payment,
    after: &Payment,
    info: &EventInfo<'_>,
) -> Result<Payment, sqlx::Error> {
    let row = sqlx::query(concat!(
        "UPDATE payments SET status = $3, checkout_url = $4, provider_checkout_id = $5, provider_payment_id = $6, \
             payment_method = $7, failure_code = $8, failure_message = $9, expires_at = $10, metadata = $11, provider_data = $12, \
             updated_at = clock_timestamp(), version = version + 1 \
         WHERE id = $1 AND version = $2 RETURNING ",
        columns!()
    ))
    .bind(before.id.as_str())
    .bind(before.version)
    .bind(after.status.as_str())
    .bind(&after.checkout_url)
    .bind(&after.provider_checkout_id)
    .bind(&after.provider_payment_id)
    .bind(&after.payment_method)
    .bind(&after.failure_code)
    .bind(&after.failure_message)
    .bind(after.expires_at)
    .bind(sqlx::types::Json(&after.metadata))
    .bind(&after.provider_data)
    .fetch_one(&mut *conn)
    .await?;
    let written = from_row(&row)?;
    insert_event(conn, &written, Some(before.status), Some(&written), info).await?;
    Ok(written)
}

/// Records something received about `payment` that did not change it.
pub async fn record_not_applied(
    conn: &mut PgConnection,
    payment: &Payment,
    info: &EventInfo<'_>,
) -> Result<(), sqlx::Error> {
    insert_event(conn, payment, Some(payment.status), None, info).await
}

async fn insert_event(
    conn: &mut PgConnection,
    payment: &Payment,
    previous: Option<PaymentStatus>,
    snapshot: Option<&Payment>,
    info: &EventInfo<'_>,
) -> Result<(), sqlx::Error> {
    // No lock and no NOTIFY: a trigger queues applied events for the sequencer (`store::events`).
    sqlx::query(
        "INSERT INTO payment_events (payment_id, version, kind, source, status, previous_status, provider_event_id, \
             provider_occurred_at, detail, snapshot, caller) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(payment.id.as_str())
    .bind(snapshot.map(|p| p.version))
    .bind(info.kind.as_str())
    .bind(info.source.as_str())
    .bind(payment.status.as_str())
    .bind(previous.map(PaymentStatus::as_str))
    .bind(info.provider_event_id)
    .bind(info.provider_occurred_at)
    .bind(sqlx::types::Json(info.detail.clone().unwrap_or_else(|| serde_json::json!({}))))
    .bind(snapshot.map(sqlx::types::Json))
    .bind(info.caller)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Ids of open payments whose `expires_at` has passed, oldest first.
pub async fn due_for_expiry(conn: &mut PgConnection, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM payments WHERE status IN ('pending', 'processing', 'failed') \
             AND expires_at < clock_timestamp() ORDER BY expires_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Whether the payment's last create attempt was one the provider did not process (and no
/// checkout or outcome-unknown attempt came after it).
pub async fn last_create_not_processed(conn: &mut PgConnection, id: &PaymentId) -> Result<bool, sqlx::Error> {
    let kind: Option<String> = sqlx::query_scalar(
        "SELECT kind FROM payment_events WHERE payment_id = $1 \
             AND kind IN ('create_not_processed', 'create_outcome_unknown', 'checkout_opened') \
         ORDER BY sequence DESC LIMIT 1",
    )
    .bind(id.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(kind.as_deref() == Some(EventKind::CreateNotProcessed.as_str()))
}

/// One event as recorded, for inspection and tests.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub sequence: i64,
    pub payment_id: String,
    pub version: Option<i64>,
    pub kind: String,
    pub source: String,
    pub status: String,
    pub previous_status: Option<String>,
}

/// Every event of a payment in order.
pub async fn events(conn: &mut PgConnection, payment_id: &str) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sequence, payment_id, version, kind, source, status, previous_status \
         FROM payment_events WHERE payment_id = $1 ORDER BY sequence",
    )
    .bind(payment_id)
    .fetch_all(conn)
    .await
}
