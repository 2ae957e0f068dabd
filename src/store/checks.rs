//! The durable provider-check queue (`provider_checks`): one row per payment that needs its
//! provider asked. See the migration for the column semantics.
//!
//! Life of a row: [`request`] creates it or moves `due_at` earlier; [`claim`] leases due rows
//! (and rows whose lease ran out: their worker died) and clears `due_at`; the worker calls the
//! provider with no transaction open, then [`finish`] deletes it or [`reschedule`] sets the next
//! `due_at`. Both are fenced by the lease: a worker that lost its lease changes nothing. A need
//! recorded while a worker holds the row sets `due_at` again, so finishing keeps the row due.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::PaymentId;

/// Why a check was asked for (stored for operators; the worker decides what to do from the
/// payment itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckReason {
    /// The reconciliation schedule of an open payment.
    Scheduled,
    /// A verified callback that only says "look this payment up".
    Callback,
    /// A callback that failed verification named this payment.
    UnverifiedCallback,
    /// The shopper came back from the provider's page.
    ShopperReturn,
    /// A create whose outcome is unknown (timeout, 5xx after sending).
    CreateOutcomeUnknown,
    /// CancelCheckout could not close the session at the provider: it stays payable until it
    /// ends, so the payment is looked up until then.
    LocalCancel,
}

impl CheckReason {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Callback => "callback",
            Self::UnverifiedCallback => "unverified_callback",
            Self::ShopperReturn => "shopper_return",
            Self::CreateOutcomeUnknown => "create_outcome_unknown",
            Self::LocalCancel => "local_cancel",
        }
    }

    /// Whether anyone on the internet can cause this need: then it is deferred to at least the
    /// minimum interval after the payment's last check (rate limiting postpones, never drops).
    pub fn untrusted(self) -> bool {
        matches!(self, Self::UnverifiedCallback | Self::ShopperReturn)
    }
}

/// Records a need to check `payment_id` in `delay_secs` (0 = now). An existing row only moves
/// earlier. `min_interval_secs` defers the need to that long after the last check started.
pub async fn request(
    conn: &mut PgConnection,
    payment_id: &PaymentId,
    reason: CheckReason,
    delay_secs: f64,
    min_interval_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO provider_checks (payment_id, due_at, reason) \
         VALUES ($1, clock_timestamp() + make_interval(secs => $3), $2) \
         ON CONFLICT (payment_id) DO UPDATE SET \
             due_at = LEAST(provider_checks.due_at, \
                 GREATEST(EXCLUDED.due_at, provider_checks.last_checked_at + make_interval(secs => $4))), \
             reason = CASE WHEN provider_checks.due_at IS NULL OR EXCLUDED.due_at < provider_checks.due_at \
                 THEN EXCLUDED.reason ELSE provider_checks.reason END",
    )
    .bind(payment_id.as_str())
    .bind(reason.as_str())
    .bind(delay_secs)
    .bind(min_interval_secs)
    .execute(conn)
    .await?;
    Ok(())
}

/// A row leased by this worker.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimed {
    pub payment_id: String,
    pub reason: String,
    /// Consecutive failures before this attempt.
    pub attempts: i32,
    /// The lease, also the fencing token of [`finish`] and [`reschedule`].
    pub leased_until: DateTime<Utc>,
    pub provider: String,
    pub account: String,
}

/// Leases up to `limit` due rows (oldest first) for `lease_secs`. Rows whose lease expired are
/// due again.
pub async fn claim(conn: &mut PgConnection, limit: i64, lease_secs: f64) -> Result<Vec<Claimed>, sqlx::Error> {
    // Two index range scans (due rows; rows whose lease ran out), oldest first. No row locks
    // here: the UPDATE re-checks the condition under the row lock, so when two workers pick the
    // same row only the first claims it (the second finds it leased and skips it).
    sqlx::query_as(
        "WITH candidates AS ( \
             (SELECT payment_id, due_at AS since FROM provider_checks \
              WHERE leased_until IS NULL AND due_at <= clock_timestamp() ORDER BY due_at LIMIT $1) \
             UNION ALL \
             (SELECT payment_id, leased_until FROM provider_checks \
              WHERE leased_until <= clock_timestamp() ORDER BY leased_until LIMIT $1)), \
         due AS (SELECT payment_id FROM candidates ORDER BY since LIMIT $1) \
         UPDATE provider_checks c SET leased_until = date_trunc('milliseconds', clock_timestamp()) \
                 + make_interval(secs => $2), due_at = NULL, last_checked_at = clock_timestamp() \
         FROM due, payments p \
         WHERE c.payment_id = due.payment_id AND p.id = c.payment_id \
           AND ((c.leased_until IS NULL AND c.due_at <= clock_timestamp()) OR c.leased_until <= clock_timestamp()) \
         RETURNING c.payment_id, c.reason, c.attempts, c.leased_until, p.provider, p.account",
    )
    .bind(limit)
    .bind(lease_secs)
    .fetch_all(conn)
    .await
}

/// The check is done: the row goes, unless a new need arrived meanwhile (then it stays due).
/// `false` when the lease was lost.
pub async fn finish(conn: &mut PgConnection, claimed: &Claimed) -> Result<bool, sqlx::Error> {
    let deleted =
        sqlx::query("DELETE FROM provider_checks WHERE payment_id = $1 AND leased_until = $2 AND due_at IS NULL")
            .bind(&claimed.payment_id)
            .bind(claimed.leased_until)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if deleted == 1 {
        return Ok(true);
    }
    let kept = sqlx::query(
        "UPDATE provider_checks SET leased_until = NULL, attempts = 0, last_error = NULL \
         WHERE payment_id = $1 AND leased_until = $2",
    )
    .bind(&claimed.payment_id)
    .bind(claimed.leased_until)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(kept == 1)
}

/// Keeps the row of a closed payment, not due (year 9999) unless a need arrived meanwhile, so
/// it remembers the last check. `false` when the lease was lost.
pub async fn park(conn: &mut PgConnection, claimed: &Claimed) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE provider_checks SET due_at = COALESCE(due_at, '9999-01-01 00:00:00+00'), leased_until = NULL, attempts = 0, \
             last_error = NULL \
         WHERE payment_id = $1 AND leased_until = $2",
    )
    .bind(&claimed.payment_id)
    .bind(claimed.leased_until)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Releases the row to be due at `due_at` (or earlier, if a need arrived meanwhile), with the
/// failure count and last error. `false` when the lease was lost.
pub async fn reschedule(
    conn: &mut PgConnection,
    claimed: &Claimed,
    due_at: DateTime<Utc>,
    attempts: i32,
    last_error: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE provider_checks SET due_at = LEAST(due_at, $3), leased_until = NULL, attempts = $4, last_error = $5 \
         WHERE payment_id = $1 AND leased_until = $2",
    )
    .bind(&claimed.payment_id)
    .bind(claimed.leased_until)
    .bind(due_at)
    .bind(attempts)
    .bind(last_error)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Releases the row unchanged but for `due_at` (rate limiting: not a failure). `false` when the
/// lease was lost.
pub async fn postpone(conn: &mut PgConnection, claimed: &Claimed, due_at: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE provider_checks SET due_at = LEAST(due_at, $3), leased_until = NULL          WHERE payment_id = $1 AND leased_until = $2",
    )
    .bind(&claimed.payment_id)
    .bind(claimed.leased_until)
    .bind(due_at)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// The queue as metrics see it (all replicas).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueueStats {
    /// Rows due now and not claimed.
    pub due: i64,
    /// Rows claimed by a worker whose lease has not run out.
    pub leased: i64,
    /// How long the oldest due, unclaimed row has been due; 0 when none.
    pub oldest_due_age_secs: f64,
}

/// Reads [`QueueStats`]: index range scans on `due_at` and `leased_until`.
pub async fn queue_stats(conn: &mut PgConnection) -> Result<QueueStats, sqlx::Error> {
    let (due, leased, oldest): (i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT \
             (SELECT count(*) FROM provider_checks WHERE leased_until IS NULL AND due_at <= clock_timestamp()), \
             (SELECT count(*) FROM provider_checks WHERE leased_until > clock_timestamp()), \
             (SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(due_at))::float8 FROM provider_checks \
              WHERE leased_until IS NULL AND due_at <= clock_timestamp())",
    )
    .fetch_one(conn)
    .await?;
    Ok(QueueStats { due, leased, oldest_due_age_secs: oldest.unwrap_or(0.0).max(0.0) })
}
