//! Stream positions of the payment event log, reading it for status streams, and pruning it.
//!
//! Writers append events freely: no global lock, no NOTIFY per transaction. A trigger queues
//! each applied event (`event_queue`) in the writer's transaction. One sequencer per database
//! (the holder of a session advisory lock, see `watch::sequencer`) runs [`assign_positions`]:
//! in one transaction it takes the queued events its snapshot can see (committed ones), gives
//! them the positions after the current maximum in identity order, and sends one NOTIFY.
//!
//! Why "everything after the last position I saw" is an exact resume point:
//! - A position exists only once its event committed (the queue row is visible only then), and
//!   positions become visible batch by batch, each batch in one transaction whose numbers are all
//!   above every earlier batch's (and above every pruned position: numbering starts after
//!   `MAX(position)` or `pruned_through`, whichever is higher, so a position is never reused). A batch can only commit after the one before it: it numbers
//!   from `MAX(position)`, and a concurrent batch with the same numbers fails on the primary key
//!   (so even two sequencers at once cannot interleave; the advisory lock just avoids the waste).
//!   A reader that saw every position up to N therefore never later finds a new one at or
//!   below N.
//! - Each payment's versions keep their order: version n+1 is appended only after version n
//!   committed (the row lock), so it has a higher identity and is visible no earlier; within a
//!   batch positions follow identity order.
//!
//! The identity column `sequence` is the event's row id; the API's `sequence` is the position.
//! Events written before positions existed kept their numbers as positions.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::Payment;

/// Session advisory lock key of the one sequencer per database ("paygate2").
pub const SEQUENCER_LOCK_KEY: i64 = 0x7061_7967_6174_6532;
/// `LISTEN`/`NOTIFY` channel; the payload is the newest position (data is read from the table).
pub const NOTIFY_CHANNEL: &str = "paygate_events";
const PRUNED_THROUGH_KEY: &str = "events.pruned_through";

/// Positions up to `limit` committed, queued events (see the module docs) and announces the
/// newest position, in one transaction. Returns how many were positioned.
pub async fn assign_positions(conn: &mut PgConnection, limit: i64) -> Result<u64, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let (count, newest): (i64, Option<i64>) = sqlx::query_as(
        "WITH batch AS ( \
             DELETE FROM event_queue WHERE event_sequence IN \
                 (SELECT event_sequence FROM event_queue ORDER BY event_sequence LIMIT $1) \
             RETURNING event_sequence), \
         base AS (SELECT GREATEST(COALESCE(MAX(position), 0), \
             COALESCE((SELECT value::bigint FROM settings WHERE key = $2), 0)) AS top FROM event_positions), \
         positioned AS ( \
             INSERT INTO event_positions (position, event_sequence) \
             SELECT base.top + ROW_NUMBER() OVER (ORDER BY batch.event_sequence), batch.event_sequence \
             FROM batch, base RETURNING position) \
         SELECT COUNT(*), MAX(position) FROM positioned",
    )
    .bind(limit)
    .bind(PRUNED_THROUGH_KEY)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(newest) = newest {
        sqlx::query("SELECT pg_notify($1, $2)").bind(NOTIFY_CHANNEL).bind(newest.to_string()).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// One row of the log as streams see it.
#[derive(Debug, Clone)]
pub struct LogEvent {
    /// The stream position.
    pub sequence: i64,
    /// The payment after the change.
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
    /// Only payments created by this caller (`None`: every payment).
    pub owner: Option<String>,
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
    // The unfiltered read (the shared live reader, most replays) has its own statement: a cached
    // generic plan of the filtered one cannot use the position index as well.
    let rows: Vec<LogRow> = if ids.is_none() && providers.is_none() && filter.owner.is_none() {
        sqlx::query_as(
            "SELECT p.position, e.snapshot, e.previous_status, e.source, e.created_at \
             FROM event_positions p JOIN payment_events e ON e.sequence = p.event_sequence \
             WHERE p.position > $1 ORDER BY p.position LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await?
    } else {
        sqlx::query_as(
            "SELECT p.position, e.snapshot, e.previous_status, e.source, e.created_at \
         FROM event_positions p JOIN payment_events e ON e.sequence = p.event_sequence \
         WHERE p.position > $1 \
           AND ($3::text[] IS NULL OR e.payment_id = ANY($3)) \
           AND ($4::text[] IS NULL OR e.snapshot->>'provider' = ANY($4)) \
           AND ($5::text IS NULL OR e.snapshot->>'caller' = $5) \
         ORDER BY p.position LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .bind(ids)
        .bind(providers)
        .bind(filter.owner.as_deref())
        .fetch_all(conn)
        .await?
    };
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

/// The newest position (0 when none).
pub async fn max_sequence(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM event_positions").fetch_one(conn).await?;
    Ok(max.unwrap_or(0))
}

/// Every position at or below this one may have been pruned (0 when nothing was).
pub async fn pruned_through(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let value: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(PRUNED_THROUGH_KEY)
        .fetch_optional(conn)
        .await?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Deletes events older than `older_than` (their positions and queue rows go with them) and
/// records the highest position deleted. Returns the number of events deleted.
pub async fn prune(conn: &mut PgConnection, older_than: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    sqlx::query("SET LOCAL paygate.allow_prune = 'on'").execute(&mut *conn).await?;
    let deleted: Option<(i64, i64)> = sqlx::query_as(
        "WITH gone AS (DELETE FROM payment_events WHERE created_at < $1 RETURNING sequence) \
         SELECT COUNT(*), COALESCE((SELECT MAX(p.position) FROM event_positions p \
             WHERE p.event_sequence IN (SELECT sequence FROM gone)), 0) \
         FROM gone HAVING COUNT(*) > 0",
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
