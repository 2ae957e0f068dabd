//! Idempotency keys: claim, replay, release.

use sqlx::{PgConnection, Row};

/// How long a claim stays exclusive before another request may take it over (crash recovery).
pub const LEASE_SECS: f64 = 120.0;

/// The state of a key that another request already holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Existing {
    /// Same key, different request.
    Mismatch { payment_id: String },
    /// Definitive outcome: replay the payment, or the stored error.
    Completed { payment_id: String, error: Option<StoredError> },
    /// Another request is working on it right now.
    InProgress,
    /// We took it over (after a transient failure or an expired lease).
    TakenOver { payment_id: String },
}

/// A definitive provider error kept for replay.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredError {
    pub provider_code: String,
    pub message: String,
}

/// Claims a fresh key for `payment_id`. `false` when the key already exists.
pub async fn try_insert(
    conn: &mut PgConnection,
    scope: (&str, &str, &str),
    fingerprint: &[u8],
    payment_id: &str,
) -> Result<bool, sqlx::Error> {
    let (provider, account, key) = scope;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (provider, account, key, fingerprint, payment_id, state, locked_until) \
         VALUES ($1, $2, $3, $4, $5, 'in_progress', clock_timestamp() + make_interval(secs => $6)) \
         ON CONFLICT DO NOTHING",
    )
    .bind(provider)
    .bind(account)
    .bind(key)
    .bind(fingerprint)
    .bind(payment_id)
    .bind(LEASE_SECS)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Inspects an existing key under a row lock and takes it over when it may be retried.
pub async fn inspect_or_take_over(
    conn: &mut PgConnection,
    scope: (&str, &str, &str),
    fingerprint: &[u8],
) -> Result<Option<Existing>, sqlx::Error> {
    let (provider, account, key) = scope;
    let Some(row) = sqlx::query(
        "SELECT fingerprint, payment_id, state, error, locked_until < clock_timestamp() AS lease_expired \
         FROM idempotency_keys WHERE provider = $1 AND account = $2 AND key = $3 FOR UPDATE",
    )
    .bind(provider)
    .bind(account)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let stored: Vec<u8> = row.try_get("fingerprint")?;
    let payment_id: String = row.try_get("payment_id")?;
    if stored != fingerprint {
        return Ok(Some(Existing::Mismatch { payment_id }));
    }
    let state: String = row.try_get("state")?;
    let lease_expired: Option<bool> = row.try_get("lease_expired")?;
    Ok(Some(match state.as_str() {
        "completed" => {
            let error: Option<sqlx::types::Json<StoredError>> = row.try_get("error")?;
            Existing::Completed { payment_id, error: error.map(|e| e.0) }
        }
        "in_progress" if lease_expired != Some(true) => Existing::InProgress,
        _ => {
            sqlx::query(
                "UPDATE idempotency_keys SET state = 'in_progress', updated_at = clock_timestamp(), \
                     locked_until = clock_timestamp() + make_interval(secs => $4) \
                 WHERE provider = $1 AND account = $2 AND key = $3",
            )
            .bind(provider)
            .bind(account)
            .bind(key)
            .bind(LEASE_SECS)
            .execute(&mut *conn)
            .await?;
            Existing::TakenOver { payment_id }
        }
    }))
}

/// Marks the key's outcome as definitive (optionally with an error to replay).
pub async fn complete(
    conn: &mut PgConnection,
    scope: (&str, &str, &str),
    error: Option<&StoredError>,
) -> Result<(), sqlx::Error> {
    set_state(conn, scope, "completed", error).await
}

/// Releases the key after a transient failure so that a retry may call the provider again.
pub async fn release(conn: &mut PgConnection, scope: (&str, &str, &str)) -> Result<(), sqlx::Error> {
    set_state(conn, scope, "retryable", None).await
}

async fn set_state(
    conn: &mut PgConnection,
    (provider, account, key): (&str, &str, &str),
    state: &str,
    error: Option<&StoredError>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET state = $4, error = $5, locked_until = NULL, updated_at = clock_timestamp() \
         WHERE provider = $1 AND account = $2 AND key = $3",
    )
    .bind(provider)
    .bind(account)
    .bind(key)
    .bind(state)
    .bind(error.map(sqlx::types::Json))
    .execute(conn)
    .await?;
    Ok(())
}
