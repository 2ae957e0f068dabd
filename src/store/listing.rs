//! ListPayments: filtered, newest-first (`created_at` DESC, id DESC) keyset pages of payments.
//!
//! Each filter that is set adds one condition; a single status or provider is an equality, so
//! the common shapes (no filter, one status, one provider, a merchant reference, each with a
//! creation-time range) are one range scan of one index in the requested order (the indexes are
//! in `migrations/20261205000001_cancel_and_list.sql`). [`list_sql`] is the one SQL builder: the
//! `EXPLAIN` test plans exactly the text [`list`] runs.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use super::payments::{columns, from_row};
use crate::domain::{Payment, PaymentStatus};

/// Which payments to list (every set field must match). A caller's scope joins it here (one
/// more condition and one more index prefix) once caller authentication exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only payments created by this caller (`None`: every payment).
    pub owner: Option<String>,
    /// Any of these (empty: all).
    pub statuses: Vec<PaymentStatus>,
    /// Any of these (empty: all).
    pub providers: Vec<String>,
    pub merchant_reference: Option<String>,
    /// Inclusive.
    pub created_after: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_before: Option<DateTime<Utc>>,
}

/// The last payment of the previous page: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

/// The SQL [`list`] runs for `filter`, with or without a cursor. Parameters in this order: the
/// owner, the statuses, the providers, the reference, `created_after`, `created_before`, the cursor's
/// (`created_at`, id), the limit; each only when used.
pub fn list_sql(filter: &ListFilter, with_cursor: bool) -> String {
    let mut conditions = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    if filter.owner.is_some() {
        conditions.push(format!("caller = ${}", next()));
    }
    match filter.statuses.len() {
        0 => {}
        1 => conditions.push(format!("status = ${}", next())),
        _ => conditions.push(format!("status = ANY(${})", next())),
    }
    match filter.providers.len() {
        0 => {}
        1 => conditions.push(format!("provider = ${}", next())),
        _ => conditions.push(format!("provider = ANY(${})", next())),
    }
    if filter.merchant_reference.is_some() {
        conditions.push(format!("merchant_reference = ${}", next()));
    }
    if filter.created_after.is_some() {
        conditions.push(format!("created_at >= ${}", next()));
    }
    if filter.created_before.is_some() {
        conditions.push(format!("created_at < ${}", next()));
    }
    if with_cursor {
        let (at, id) = (next(), next());
        conditions.push(format!("(created_at, id) < (${at}, ${id})"));
    }
    let limit = next();
    let mut sql = format!("SELECT {} FROM payments", columns!());
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT ${limit}"));
    sql
}

/// `sql` (from [`list_sql`]) with the parameters bound in its order.
fn bind<'q>(
    sql: String,
    filter: &'q ListFilter,
    after: Option<&'q Cursor>,
    limit: i64,
) -> Query<'q, Postgres, PgArguments> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(owner) = &filter.owner {
        query = query.bind(owner.as_str());
    }
    match filter.statuses.as_slice() {
        [] => {}
        [one] => query = query.bind(one.as_str()),
        many => query = query.bind(many.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
    }
    match filter.providers.as_slice() {
        [] => {}
        [one] => query = query.bind(one.as_str()),
        many => query = query.bind(many),
    }
    if let Some(reference) = &filter.merchant_reference {
        query = query.bind(reference.as_str());
    }
    if let Some(t) = filter.created_after {
        query = query.bind(t);
    }
    if let Some(t) = filter.created_before {
        query = query.bind(t);
    }
    if let Some(c) = after {
        query = query.bind(c.created_at).bind(c.id.as_str());
    }
    query.bind(limit)
}

/// Up to `limit` payments matching `filter`, newest first, after `after`.
pub async fn list(
    conn: &mut PgConnection,
    filter: &ListFilter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Payment>, sqlx::Error> {
    let rows: Vec<PgRow> = bind(list_sql(filter, after.is_some()), filter, after, limit).fetch_all(conn).await?;
    rows.iter().map(from_row).collect()
}

/// The plan of exactly what [`list`] runs (`EXPLAIN`, text format), for tests and operators.
pub async fn explain_list(
    conn: &mut PgConnection,
    filter: &ListFilter,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<String, sqlx::Error> {
    let sql = format!("EXPLAIN {}", list_sql(filter, after.is_some()));
    let rows = bind(sql, filter, after, limit).fetch_all(conn).await?;
    let lines: Result<Vec<String>, _> = rows.iter().map(|r| r.try_get::<String, _>(0)).collect();
    Ok(lines?.join("\n"))
}
