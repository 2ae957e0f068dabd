//! PostgreSQL access. Every SQL statement of the service lives in this module tree.

pub mod callbacks;
pub mod checks;
pub mod events;
pub mod idempotency;
pub mod listing;
pub mod payments;
pub mod retention;
pub mod settings;

use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres, Transaction};

use crate::config::DatabaseConfig;

/// Embedded migrations from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A transaction on the payments database.
pub type Tx = Transaction<'static, Postgres>;

/// Handle to the database: a pool plus the operations on it.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// Time to get a connection and begin a transaction ([`Store::begin`]), exported as a metric.
    acquire_wait: prometheus_client::metrics::histogram::Histogram,
}

impl Store {
    /// Connects (creating the database first when configured to) and makes sure the schema is
    /// current: applies pending migrations when `database.migrate_on_start`, else waits until
    /// `paygate migrate` has applied them (see [`Store::wait_for_schema`]).
    pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<Self> {
        let store = Self::open(cfg).await?;
        if cfg.migrate_on_start {
            store.migrate().await?;
        } else {
            store.wait_for_schema().await;
        }
        Ok(store)
    }

    /// Connects (creating the database first when configured to); leaves the schema alone.
    pub async fn open(cfg: &DatabaseConfig) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(&cfg.url).context("database.url is not a valid Postgres URL")?;
        if cfg.create_if_missing {
            create_database_if_missing(&options).await?;
        }
        let pool = pool_options(cfg.max_connections, cfg.acquire_timeout())
            .connect_with(options)
            .await
            .context("cannot connect to the database")?;
        Ok(Self::from_pool(pool))
    }

    /// Waits until every embedded migration is applied (by `paygate migrate`, a migration job or
    /// a replica that migrates on start), polling; logs while it waits.
    pub async fn wait_for_schema(&self) {
        let mut last_log: Option<std::time::Instant> = None;
        while !self.ready().await {
            if last_log.is_none_or(|t| t.elapsed() >= SCHEMA_WAIT_LOG_EVERY) {
                tracing::warn!(
                    latest_migration = latest_migration(),
                    "database.migrate_on_start is false and the database schema is not at the latest migration \
                     (or the database does not answer): waiting for `paygate migrate`"
                );
                last_log = Some(std::time::Instant::now());
            }
            tokio::time::sleep(SCHEMA_POLL).await;
        }
    }

    /// Wraps an existing pool (migrations are not run).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool, acquire_wait: crate::metrics::latency_histogram() }
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await.context("running migrations")?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts a transaction. The wait for a pooled connection (and `BEGIN`) is measured here,
    /// the one place every transaction starts.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let started = std::time::Instant::now();
        let tx = self.pool.begin().await;
        self.acquire_wait.observe(started.elapsed().as_secs_f64());
        tx
    }

    /// The histogram [`Store::begin`] records into.
    pub fn acquire_wait(&self) -> &prometheus_client::metrics::histogram::Histogram {
        &self.acquire_wait
    }

    /// How long an acquire waits (`database.acquire_timeout_ms`); other pools on this database
    /// use the same bound.
    pub fn acquire_timeout(&self) -> Duration {
        self.pool.options().get_acquire_timeout()
    }

    /// Readiness: the database answers and every embedded migration is applied. Callers bound
    /// it in time (an unreachable database fails it only after the acquire timeout).
    pub async fn ready(&self) -> bool {
        let latest = latest_migration();
        let applied: Result<Option<i64>, _> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success").fetch_one(&self.pool).await;
        matches!(applied, Ok(Some(v)) if v >= latest)
    }
}

/// Version of the newest embedded migration.
fn latest_migration() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// How often a server that does not migrate checks whether the schema is current.
const SCHEMA_POLL: Duration = Duration::from_millis(500);
/// How often it says that it is still waiting.
const SCHEMA_WAIT_LOG_EVERY: Duration = Duration::from_secs(30);

/// Pool settings shared by every pool of the service. sqlx pings a connection on every
/// acquire by default: one more round trip per transaction. A connection idle for less than
/// [`PING_AFTER_IDLE`] is handed out without it (a broken one fails its query, the pool drops
/// it, and the next acquire gets another), unless the database was seen unreachable since it
/// went idle (after an outage every idle connection is checked once, so the first requests
/// after a database restart do not fail on connections the restart closed).
///
/// `acquire_timeout` bounds the wait for a connection, connecting included: with the database
/// down, requests fail with `DATABASE_UNAVAILABLE` after it instead of hanging.
pub fn pool_options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE || unreachable_within(meta.idle_for) {
                    // A failed ping closes this connection; the pool opens another.
                    return Ok(sqlx::Connection::ping(conn).await.is_ok());
                }
                Ok(true)
            })
        })
}

/// Milliseconds after [`clock_start`] at which the database was last seen unreachable (0: never).
static UNREACHABLE_AT_MS: AtomicU64 = AtomicU64::new(0);

fn clock_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Records that a database operation failed because the database could not be reached.
pub fn note_unreachable() {
    let ms = u64::try_from(clock_start().elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
    UNREACHABLE_AT_MS.fetch_max(ms, Ordering::Relaxed);
}

/// Whether the database was seen unreachable within the last `window`.
fn unreachable_within(window: Duration) -> bool {
    let at = UNREACHABLE_AT_MS.load(Ordering::Relaxed);
    at != 0 && clock_start().elapsed().saturating_sub(Duration::from_millis(at)) <= window
}

/// Idle time after which a pooled connection is checked before use.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(30);

/// Creates the target database through the `postgres` maintenance database when it is missing.
/// Concurrent replicas racing to create it are fine: "already exists" counts as success.
async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else { return Ok(()) };
    let admin = options.clone().database("postgres").log_statements(tracing::log::LevelFilter::Debug);
    let mut conn = match admin.connect().await {
        Ok(conn) => conn,
        // No access to the maintenance database: assume the target exists and let connect report.
        Err(e) => {
            tracing::debug!(error = %e, "cannot reach the maintenance database; skipping create");
            return Ok(());
        }
    };
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}"))).execute(&mut conn).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("cannot create the database"),
        }
    }
    conn.close().await.ok();
    Ok(())
}
