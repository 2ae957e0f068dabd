//! Shared settings every replica must agree on.

use sqlx::PgConnection;

/// Returns the value under `key`, storing `candidate` first if there is none. Every replica and
/// every restart thus sees the same value, whoever wrote it first.
pub async fn get_or_insert(conn: &mut PgConnection, key: &str, candidate: &str) -> Result<String, sqlx::Error> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(key)
        .bind(candidate)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(key).fetch_one(conn).await
}
