//! One stream: replay from the table, then live from the hub, then catch up again if it lags.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::hub::{Hub, PAGE, WatchEvent};
use crate::error::ApiError;
use crate::store::events::{self, EventFilter};

/// What a subscriber asks for.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    pub filter: EventFilter,
    /// `None`: only new events; `Some(n)`: every stored event after `n`, then live.
    pub after_sequence: Option<i64>,
}

/// Items a stream yields: events, or one final error (shutdown) before it ends.
pub type Item = Result<Arc<WatchEvent>, ApiError>;

/// Outgoing queue per stream; a slow consumer fills it, then falls behind the ring and catches up
/// from the table, so memory per stream stays bounded.
const QUEUE: usize = 64;

/// Starts a stream. Fails with `SEQUENCE_EXPIRED` when `after_sequence` is older than retention.
pub async fn subscribe(hub: &Hub, request: WatchRequest) -> Result<ReceiverStream<Item>, ApiError> {
    if request.after_sequence.is_some_and(|after| after < 0) {
        return Err(ApiError::invalid("after_sequence", "must not be negative"));
    }
    // Subscribe to the ring before reading the table, so nothing falls between the two.
    let receiver = hub.receiver();
    let mut conn = hub.store().pool().acquire().await?;
    let start = match request.after_sequence {
        Some(after) => {
            let pruned = events::pruned_through(&mut conn).await?;
            if after < pruned {
                return Err(ApiError::SequenceExpired { oldest_sequence: pruned + 1 });
            }
            after
        }
        // "From now": after everything committed at this moment, whether or not the hub has
        // broadcast it yet.
        None => events::max_sequence(&mut conn).await?,
    };
    drop(conn);
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(hub.clone(), request, receiver, start, tx));
    Ok(ReceiverStream::new(rx))
}

async fn run(
    hub: Hub,
    request: WatchRequest,
    mut receiver: broadcast::Receiver<Arc<WatchEvent>>,
    start: i64,
    tx: mpsc::Sender<Item>,
) {
    let filter = request.filter;
    let mut last = start;
    if request.after_sequence.is_some() {
        match catch_up(&hub, &filter, last, &tx).await {
            Some(l) => last = l,
            None => return,
        }
    }
    loop {
        tokio::select! {
            _ = hub.shutdown().cancelled() => {
                let _ = tx.send(Err(ApiError::ShuttingDown)).await;
                return;
            }
            _ = tx.closed() => return,
            received = receiver.recv() => match received {
                Ok(event) => {
                    if event.sequence <= last {
                        continue;
                    }
                    last = event.sequence;
                    if matches(&filter, &event) && tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    hub.count_catch_up();
                    receiver = hub.receiver();
                    match catch_up(&hub, &filter, last, &tx).await {
                        Some(l) => last = l,
                        None => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// Sends every stored event after `after` (filtered) at the consumer's pace. Returns the last
/// sequence read, or `None` when the stream is over (client gone, shutdown, database error).
async fn catch_up(hub: &Hub, filter: &EventFilter, mut after: i64, tx: &mpsc::Sender<Item>) -> Option<i64> {
    loop {
        let rows = async {
            let mut conn = hub.store().pool().acquire().await?;
            events::read_after(&mut conn, after, PAGE, filter).await
        }
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                let _ = tx.send(Err(ApiError::from(e))).await;
                return None;
            }
        };
        let full = rows.len() as i64 == PAGE;
        for row in rows {
            after = row.sequence;
            if let Some(event) = WatchEvent::from_log(row) {
                tokio::select! {
                    _ = hub.shutdown().cancelled() => {
                        let _ = tx.send(Err(ApiError::ShuttingDown)).await;
                        return None;
                    }
                    sent = tx.send(Ok(Arc::new(event))) => if sent.is_err() { return None },
                }
            }
        }
        if !full {
            return Some(after);
        }
    }
}

fn matches(filter: &EventFilter, event: &WatchEvent) -> bool {
    (filter.payment_ids.is_empty() || filter.payment_ids.contains(&event.payment.id))
        && (filter.providers.is_empty() || filter.providers.contains(&event.payment.provider))
}
