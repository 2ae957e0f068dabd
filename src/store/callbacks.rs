//! Callback receipts (deduplication) and the audit of rejected callbacks.

use sqlx::PgConnection;

/// Records an accepted callback; `false` when the same (provider, dedupe key) was seen before.
pub async fn insert_receipt(
    conn: &mut PgConnection,
    provider: &str,
    account: &str,
    dedupe_key: &str,
    payment_id: &str,
    event_id: &str,
    outcome: &str,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "INSERT INTO callback_receipts (provider, dedupe_key, account, payment_id, event_id, outcome) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(provider)
    .bind(dedupe_key)
    .bind(account)
    .bind(payment_id)
    .bind(event_id)
    .bind(outcome)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Audits a refused callback: provider, reason and a digest of the body; never the body or secrets.
pub async fn record_rejected(
    conn: &mut PgConnection,
    provider: &str,
    account: &str,
    reason: &str,
    body_sha256: &str,
    payment_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rejected_callbacks (provider, account, reason, body_sha256, payment_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(provider)
    .bind(account)
    .bind(reason)
    .bind(body_sha256)
    .bind(payment_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Number of audited rejections with `reason` (for operators and tests).
pub async fn count_rejected(conn: &mut PgConnection, reason: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM rejected_callbacks WHERE reason = $1").bind(reason).fetch_one(conn).await
}
