//! Idempotency keys: claim, replay, release. Each claim carries a fencing token, so a holder
//! whose lease expired and was taken over can no longer record an outcome.

use sqlx::{PgConnection, Row};

use crate::domain::PaymentId;
use crate::domain::ids::IdempotencyKey;

/// How long a claim stays exclusive before another request may take it over (crash recovery).
pub const LEASE_SECS: f64 = 120.0;

/// What an idempotency key is scoped to: the same key under another caller, provider or account
/// is an unrelated payment.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The authenticated caller's name; empty while authentication is off.
    pub caller: &'a str,
    pub provider: &'a str,
    pub account: &'a str,
    pub key: &'a IdempotencyKey,
}

/// The state of a key that another request already holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Existing {
    /// Same key, different request.
    Mismatch { payment_id: PaymentId },
    /// Definitive outcome: replay the payment, or the stored error.
    Completed { payment_id: PaymentId, error: Option<StoredError> },
    /// Another request is working on it right now.
    InProgress,
    /// We took it over with our token: after a failure that was not processed, or after the
    /// holder's lease expired (`after_crash`: it may have died during the provider call).
    TakenOver { payment_id: PaymentId, after_crash: bool },
}

/// A definitive outcome kept for replay: the provider's rejection (`provider_code`), or a
/// create whose outcome is unknown (never sent again under this key).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct StoredError {
    #[serde(default)]
    pub provider_code: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outcome_unknown: bool,
}

/// Claims a fresh key for `payment_id` with fencing `token`. `false` when the key already exists.
pub async fn try_insert(
    conn: &mut PgConnection,
    Scope { caller, provider, account, key }: Scope<'_>,
    fingerprint: &[u8],
    payment_id: &str,
    token: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (provider, account, key, fingerprint, payment_id, state, locked_until, lease_token, caller) \
         VALUES ($1, $2, $3, $4, $5, 'in_progress', clock_timestamp() + make_interval(secs => $6), $7, $8) \
         ON CONFLICT DO NOTHING",
    )
    .bind(provider)
    .bind(account)
    .bind(key.as_str())
    .bind(fingerprint)
    .bind(payment_id)
    .bind(LEASE_SECS)
    .bind(token)
    .bind(caller)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Inspects an existing key under a row lock and takes it over with `token` when it may be retried.
pub async fn inspect_or_take_over(
    conn: &mut PgConnection,
    Scope { caller, provider, account, key }: Scope<'_>,
    fingerprint: &[u8],
    token: &str,
) -> Result<Option<Existing>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT fingerprint, payment_id, state, error, locked_until < clock_timestamp() AS lease_expired \
         FROM idempotency_keys WHERE provider = $1 AND account = $2 AND key = $3 AND caller = $4 FOR UPDATE",
    )
    .bind(provider)
    .bind(account)
    .bind(key.as_str())
    .bind(caller)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let stored: Vec<u8> = row.try_get("fingerprint")?;
    let payment_id: String = row.try_get("payment_id")?;
    let payment_id =
        PaymentId::parse(&payment_id).ok_or_else(|| sqlx::Error::Decode("stored payment id is not valid".into()))?;
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
                "UPDATE idempotency_keys SET state = 'in_progress', lease_token = $4, updated_at = clock_timestamp(), \
                     locked_until = clock_timestamp() + make_interval(secs => $5) \
                 WHERE provider = $1 AND account = $2 AND key = $3 AND caller = $6",
            )
            .bind(provider)
            .bind(account)
            .bind(key.as_str())
            .bind(token)
            .bind(LEASE_SECS)
            .bind(caller)
            .execute(&mut *conn)
            .await?;
            Existing::TakenOver { payment_id, after_crash: state == "in_progress" }
        }
    }))
}

/// Marks the outcome definitive (optionally with an error to replay). `false` when `token` no
/// longer holds the key: the caller lost its lease and must not record anything.
pub async fn complete(
    conn: &mut PgConnection,
    scope: Scope<'_>,
    token: &str,
    error: Option<&StoredError>,
) -> Result<bool, sqlx::Error> {
    set_state(conn, scope, token, "completed", error).await
}

/// Releases the key after a transient failure so that a retry may call the provider again.
pub async fn release(conn: &mut PgConnection, scope: Scope<'_>, token: &str) -> Result<bool, sqlx::Error> {
    set_state(conn, scope, token, "retryable", None).await
}

async fn set_state(
    conn: &mut PgConnection,
    Scope { caller, provider, account, key }: Scope<'_>,
    token: &str,
    state: &str,
    error: Option<&StoredError>,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE idempotency_keys SET state = $5, error = $6, locked_until = NULL, updated_at = clock_timestamp() \
         WHERE provider = $1 AND account = $2 AND key = $3 AND caller = $7 AND lease_token = $4 \
           AND state = 'in_progress'",
    )
    .bind(provider)
    .bind(account)
    .bind(key.as_str())
    .bind(token)
    .bind(state)
    .bind(error.map(sqlx::types::Json))
    .bind(caller)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}
