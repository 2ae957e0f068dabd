//! The retention job's deletes: completed idempotency keys, callback receipts and the audit of
//! rejected callbacks past their configured age, in bounded batches (each its own statement, so
//! no long transaction and no long lock).

use sqlx::PgPool;

/// Rows deleted per statement.
pub const BATCH: i64 = 10_000;
/// Longest retention honoured, in days (larger values keep rows this long): keeps the cutoff
/// arithmetic inside Postgres's timestamp range.
const MAX_DAYS: u64 = 100_000;

/// A table the job prunes: the rows past the cutoff and the column that ages them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// `idempotency_keys` with `state = 'completed'`, by completion time.
    CompletedIdempotencyKeys,
    /// `callback_receipts`, by receipt time.
    CallbackReceipts,
    /// `rejected_callbacks`, by receipt time.
    RejectedCallbacks,
}

impl Kept {
    /// One batch: deletes up to `limit` rows older than `days` days.
    fn statement(self) -> &'static str {
        match self {
            Self::CompletedIdempotencyKeys => {
                "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys \
                 WHERE state = 'completed' AND updated_at < now() - make_interval(days => $1) LIMIT $2)"
            }
            Self::CallbackReceipts => {
                "DELETE FROM callback_receipts WHERE ctid IN (SELECT ctid FROM callback_receipts \
                 WHERE received_at < now() - make_interval(days => $1) LIMIT $2)"
            }
            Self::RejectedCallbacks => {
                "DELETE FROM rejected_callbacks WHERE ctid IN (SELECT ctid FROM rejected_callbacks \
                 WHERE received_at < now() - make_interval(days => $1) LIMIT $2)"
            }
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            Self::CompletedIdempotencyKeys => "idempotency_keys",
            Self::CallbackReceipts => "callback_receipts",
            Self::RejectedCallbacks => "rejected_callbacks",
        }
    }
}

/// Deletes every `kept` row older than `days` days, `batch` rows per statement, until none is
/// left. Returns the number deleted.
pub async fn delete_older(pool: &PgPool, kept: Kept, days: u64, batch: i64) -> Result<u64, sqlx::Error> {
    let days = i32::try_from(days.min(MAX_DAYS)).unwrap_or(i32::MAX);
    let batch = batch.max(1);
    let mut total = 0;
    loop {
        let n = sqlx::query(kept.statement()).bind(days).bind(batch).execute(pool).await?.rows_affected();
        total += n;
        if n < u64::try_from(batch).unwrap_or(0) {
            return Ok(total);
        }
    }
}
