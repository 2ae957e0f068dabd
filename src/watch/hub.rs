//! The per-replica shared reader of the event log.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::domain::{Payment, PaymentStatus};
use crate::metrics::StreamMetrics;
use crate::store::Store;
use crate::store::events::{self, EventFilter, LogEvent, NOTIFY_CHANNEL};

/// Rows read per query.
pub(super) const PAGE: i64 = 500;
/// Poll interval when no notification arrives (lost connection, missed notify).
const SAFETY_POLL: Duration = Duration::from_secs(1);

/// One change of one payment, as streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub sequence: i64,
    pub payment: Payment,
    pub previous_status: Option<PaymentStatus>,
    pub occurred_at: DateTime<Utc>,
    pub source: String,
}

impl WatchEvent {
    /// The streamable form of a log row; `None` for records that changed nothing.
    pub(super) fn from_log(e: LogEvent) -> Option<Self> {
        Some(Self {
            sequence: e.sequence,
            payment: e.payment?,
            previous_status: e.previous_status.and_then(|s| s.parse().ok()),
            occurred_at: e.occurred_at,
            source: e.source,
        })
    }
}

/// The shared reader: the newest sequence it has read, and the broadcast ring.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The streams' own small pool (listener, hub reads, replays), so that a burst of catching-up
    /// subscribers never starves payment writes, nor the writes the hub.
    pool: PgPool,
    sender: broadcast::Sender<Arc<WatchEvent>>,
    last_read: AtomicI64,
    shutdown: CancellationToken,
    metrics: StreamMetrics,
}

impl Hub {
    /// A hub whose ring holds `buffer` events, reading through its own pool of `pool_size`
    /// connections to the payments database; starts at the current end of the log.
    pub async fn start(
        store: &Store,
        pool_size: u32,
        buffer: usize,
        shutdown: CancellationToken,
    ) -> Result<Self, sqlx::Error> {
        let options = (*store.pool().connect_options()).clone();
        // One connection is the listener's; at least one more for reads.
        let pool = crate::store::pool_options(pool_size.max(2), store.acquire_timeout()).connect_with(options).await?;
        let mut conn = pool.acquire().await?;
        let start = events::max_sequence(&mut conn).await?;
        drop(conn);
        let (sender, _) = broadcast::channel(buffer.max(1));
        let hub = Self {
            inner: Arc::new(Inner {
                pool,
                sender,
                last_read: AtomicI64::new(start),
                shutdown,
                metrics: StreamMetrics::default(),
            }),
        };
        tokio::spawn(hub.clone().run());
        Ok(hub)
    }

    /// A hub with a lazy pool and no reader task, for size and unit tests.
    #[cfg(test)]
    pub(super) fn detached_for_tests() -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://127.0.0.1:1/none")
            .unwrap_or_else(|e| panic!("{e}"));
        let (sender, _) = broadcast::channel(1);
        Self {
            inner: Arc::new(Inner {
                pool,
                sender,
                last_read: AtomicI64::new(0),
                shutdown: CancellationToken::new(),
                metrics: StreamMetrics::default(),
            }),
        }
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The streams' own pool (for its size metrics).
    pub fn stream_pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The stream counters and lag histogram this hub and its subscribers update.
    pub fn metrics(&self) -> &StreamMetrics {
        &self.inner.metrics
    }

    /// Events held in the ring right now (never more than its capacity).
    pub fn buffered(&self) -> usize {
        self.inner.sender.len()
    }

    pub(super) fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// A receiver of everything broadcast from now on.
    pub(super) fn receiver(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.inner.sender.subscribe()
    }

    /// The newest sequence read from the log.
    pub fn last_read(&self) -> i64 {
        self.inner.last_read.load(Ordering::Acquire)
    }

    /// How many times a subscriber fell behind the ring and caught up from the table.
    pub fn catch_ups(&self) -> u64 {
        self.inner.metrics.catch_ups.get()
    }

    pub(super) fn count_catch_up(&self) {
        self.inner.metrics.catch_ups.inc();
    }

    /// Records how far behind the newest read event `event` was when a stream sent it.
    pub(super) fn note_sent(&self, event: &WatchEvent) {
        let behind = self.last_read().saturating_sub(event.sequence).max(0);
        self.inner.metrics.lag.observe(behind as f64);
    }

    /// Number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.inner.sender.receiver_count()
    }

    async fn run(self) {
        let shutdown = self.inner.shutdown.clone();
        while !shutdown.is_cancelled() {
            let mut listener = match PgListener::connect_with(&self.inner.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "event listener cannot connect; polling until it can");
                    self.poll_logged().await;
                    tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(SAFETY_POLL) => continue }
                }
            };
            if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
                tracing::warn!(error = %e, "cannot LISTEN for events");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(SAFETY_POLL) => continue }
            }
            // Anything committed while we were not listening.
            self.poll_logged().await;
            let mut tick = tokio::time::interval(SAFETY_POLL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => self.poll_logged().await,
                    // `try_recv` waits for a notification; `Ok(None)` means the connection was lost
                    // and re-established (notifications may have been missed): read at once.
                    received = listener.try_recv() => match received {
                        Ok(_) => {
                            // Coalesce notifications already buffered into one read.
                            while listener.next_buffered().is_some() {}
                            self.poll_logged().await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "event listener lost its connection; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    }

    async fn poll_logged(&self) {
        if let Err(e) = self.poll().await {
            tracing::warn!(error = %e, "cannot read the event log");
        }
    }

    /// Reads every committed event after `last_read` and broadcasts the applied ones.
    async fn poll(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.inner.pool.acquire().await?;
        loop {
            let after = self.last_read();
            let rows = events::read_after(&mut conn, after, PAGE, &EventFilter::default()).await?;
            let Some(last) = rows.last().map(|r| r.sequence) else { return Ok(()) };
            let full = rows.len() as i64 == PAGE;
            for row in rows {
                if let Some(event) = WatchEvent::from_log(row) {
                    // No receivers is fine: nobody is watching.
                    let _ = self.inner.sender.send(Arc::new(event));
                }
            }
            self.inner.last_read.store(last, Ordering::Release);
            if !full {
                return Ok(());
            }
        }
    }
}
