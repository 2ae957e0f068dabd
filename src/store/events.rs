//! Reading the payment event log for status streams, and pruning it.
//!
//! Sequences are assigned in commit order: every transaction that appends an event first takes
//! one transaction-scoped advisory lock ([`lock_appends`]) and holds it until it commits. So while
//! an event with sequence N is uncommitted no other event can be appended, and a reader that has
//! seen every committed event up to N can never later find a committed event below N. That makes
//! "everything after the last sequence I saw" an exact resume point for streams, at the cost of
//! serializing the short tail of writing transactions (the append is their last statement).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::Payment;

/// Advisory lock key serializing event appends ("paygate1").
const APPEND_LOCK_KEY: i64 = 0x7061_7967_6174_6531;
/// `LISTEN`/`NOTIFY` channel; the payload is the sequence only (data is read from the table).
pub const NOTIFY_CHANNEL: &str = "paygate_events";
const PRUNED_THROUGH_KEY: &str = "events.pruned_through";

/// Takes the append lock for the rest of the transaction (re-entrant within it).
pub async fn lock_appends(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(APPEND_LOCK_KEY).execute(conn).await?;
    Ok(())
}

/// Announces a committed-to-be event; delivered to listeners at commit, in commit order.
pub async fn notify(conn: &mut PgConnection, sequence: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(NOTIFY_CHANNEL).bind(sequence.to_string()).execute(conn).await?;
    Ok(())
}

/// One row of the log as streams see it.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub sequence: i64,
    /// The payment after the change; `None` for records that changed nothing.
    pub payment: Option<Payment>,
    pub previous_status: Option<String>,
    pub source: String,
    pub occurred_at: DateTime<Utc>,
}

/// (sequence, snapshot, previous_status, source, created_at).
type LogRow = (i64, Option<sqlx::types::Json<Payment>>, Option<String>, String, DateTime<Utc>);

/// Filters of a stream (ANDed; empty = everything).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub payment_ids: Vec<String>,
    pub providers: Vec<String>,
}

/// Events after `after` in sequence order, at most `limit`, including records that changed
/// nothing (their `payment` is `None`) so that a cursor can move past them.
pub async fn read_after(
    conn: &mut PgConnection,
    after: i64,
    limit: i64,
    filter: &EventFilter,
) -> Result<Vec<LogEvent>, sqlx::Error> {
    let ids = (!filter.payment_ids.is_empty()).then_some(&filter.payment_ids);
    let providers = (!filter.providers.is_empty()).then_some(&filter.providers);
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT e.sequence, e.snapshot, e.previous_status, e.source, e.created_at FROM payment_events e \
         WHERE e.sequence > $1 \
           AND ($3::text[] IS NULL OR (e.version IS NOT NULL AND e.payment_id = ANY($3))) \
           AND ($4::text[] IS NULL OR (e.version IS NOT NULL AND e.snapshot->>'provider' = ANY($4))) \
         ORDER BY e.sequence LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .bind(ids)
    .bind(providers)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sequence, snapshot, previous_status, source, occurred_at)| LogEvent {
            sequence,
            payment: snapshot.map(|s| s.0),
            previous_status,
            source,
            occurred_at,
        })
        .collect())
}

/// The newest sequence in the log (0 when empty).
pub async fn max_sequence(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(sequence) FROM payment_events").fetch_one(conn).await?;
    Ok(max.unwrap_or(0))
}

/// Every sequence at or below this one may have been pruned (0 when nothing was).
pub async fn pruned_through(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let value: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(PRUNED_THROUGH_KEY)
        .fetch_optional(conn)
        .await?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Deletes events older than `older_than` and records how far the log was pruned. Returns the
/// number of rows deleted.
pub async fn prune(conn: &mut PgConnection, older_than: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    sqlx::query("SET LOCAL paygate.allow_prune = 'on'").execute(&mut *conn).await?;
    let deleted: Option<(i64, i64)> = sqlx::query_as(
        "WITH gone AS (DELETE FROM payment_events WHERE created_at < $1 RETURNING sequence) \
         SELECT COUNT(*), MAX(sequence) FROM gone HAVING COUNT(*) > 0",
    )
    .bind(older_than)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((count, max)) = deleted else { return Ok(0) };
    sqlx::query(
        "INSERT INTO settings (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = GREATEST(settings.value::bigint, EXCLUDED.value::bigint)::text",
    )
    .bind(PRUNED_THROUGH_KEY)
    .bind(max.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}
