//! The sequencer: gives committed events their stream positions ([`events::assign_positions`]).
//! Every replica runs one; the holder of a session advisory lock on its own connection is the
//! leader and the others stand by, so a leader that dies (its connection closes, the lock goes)
//! is replaced within a second.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::store::events::{self, SEQUENCER_LOCK_KEY};

/// Events positioned per batch (one transaction, one NOTIFY).
const BATCH: i64 = 1000;
/// How often a standby tries to become the leader, and how long to wait after an error.
const STANDBY: Duration = Duration::from_secs(1);
/// Longest wait for the sequencer's own connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `shutdown`: tries to lead; while leading, positions queued events as they commit,
/// polling every `poll` when the queue is empty.
pub async fn run_sequencer(options: PgConnectOptions, poll: Duration, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match lead(&options, poll, &shutdown).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "event sequencer stopped; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(STANDBY) => {}
        }
    }
}

/// One connection's turn: returns when it is not the leader (after trying), or on shutdown.
async fn lead(options: &PgConnectOptions, poll: Duration, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
    // Bounded: an unreachable (not refusing) database must not hold the standby loop forever.
    let options = options.clone().log_statements(tracing::log::LevelFilter::Trace);
    let mut conn: PgConnection =
        tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await.map_err(|_| sqlx::Error::PoolTimedOut)??;
    loop {
        let leader: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(SEQUENCER_LOCK_KEY).fetch_one(&mut conn).await?;
        if leader {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(STANDBY) => {}
        }
    }
    tracing::info!("this replica is the event sequencer");
    while !shutdown.is_cancelled() {
        if events::assign_positions(&mut conn, BATCH).await? < BATCH as u64 {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
    // Closing the connection releases the lock for a standby.
    sqlx::Connection::close(conn).await
}
