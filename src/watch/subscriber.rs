//! One stream: replay from the table, then live from the hub, then catch up again if it lags.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
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

/// Items a stream yields: events, or one final error before it ends.
pub type Item = Result<Arc<WatchEvent>, ApiError>;

/// Outgoing queue per stream; a slow consumer fills it, then falls behind the ring and catches up
/// from the table, so memory per stream stays bounded.
const QUEUE: usize = 64;

/// Starts a stream. Fails with `SEQUENCE_EXPIRED` when `after_sequence` is older than retention,
/// and `SEQUENCE_AHEAD` when it is newer than anything committed (e.g. after a database restore).
/// On server shutdown the stream stops at once and ends with `SHUTTING_DOWN` (UNAVAILABLE), even
/// when the client has stopped reading.
pub async fn subscribe(hub: &Hub, request: WatchRequest) -> Result<BoxStream<'static, Item>, ApiError> {
    if request.after_sequence.is_some_and(|after| after < 0) {
        return Err(ApiError::invalid("after_sequence", "must not be negative"));
    }
    // Join the ring before reading the table, so nothing falls between the two.
    let receiver = hub.receiver();
    let mut conn = hub.pool().acquire().await?;
    let pruned = events::pruned_through(&mut conn).await?;
    // The log may be empty after pruning: what was pruned was committed too.
    let newest = events::max_sequence(&mut conn).await?.max(pruned);
    let start = match request.after_sequence {
        Some(after) => {
            if after < pruned {
                return Err(ApiError::SequenceExpired { oldest_sequence: pruned + 1 });
            }
            if after > newest {
                return Err(ApiError::SequenceAhead { newest_sequence: newest });
            }
            after
        }
        // "From now": after everything committed at this moment, whether or not the hub has
        // broadcast it yet.
        None => newest,
    };
    drop(conn);
    let (tx, rx) = mpsc::channel(QUEUE);
    // Replays are boxed inside `run`, so each idle subscriber's task stays small.
    tokio::spawn(run(hub.clone(), request, receiver, start, tx));

    let stop = hub.shutdown().clone();
    let stopped = stop.clone();
    let events = ReceiverStream::new(rx).take_until(stop.cancelled_owned());
    let farewell = futures::stream::once(async move { stopped.is_cancelled().then_some(Err(ApiError::ShuttingDown)) })
        .filter_map(std::future::ready);
    Ok(events.chain(farewell).boxed())
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
        match Box::pin(catch_up(&hub, &filter, last, &tx)).await {
            Some(l) => last = l,
            None => return,
        }
    }
    loop {
        let received = tokio::select! {
            biased;
            _ = hub.shutdown().cancelled() => return,
            _ = tx.closed() => return,
            received = receiver.recv() => received,
        };
        match received {
            Ok(event) => {
                if event.sequence <= last {
                    continue;
                }
                last = event.sequence;
                if matches(&filter, &event) && !send(&hub, &tx, Ok(event)).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                hub.count_catch_up();
                receiver = hub.receiver();
                match Box::pin(catch_up(&hub, &filter, last, &tx)).await {
                    Some(l) => last = l,
                    None => return,
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Queues one item, waiting for room unless the server shuts down. `false`: the stream is over.
async fn send(hub: &Hub, tx: &mpsc::Sender<Item>, item: Item) -> bool {
    tokio::select! {
        biased;
        _ = hub.shutdown().cancelled() => false,
        permit = tx.reserve() => match permit {
            Ok(permit) => {
                permit.send(item);
                true
            }
            Err(_) => false,
        },
    }
}

/// Sends every stored event after `after` (filtered) at the consumer's pace. Each page is read
/// together with the pruning watermark in one snapshot, so events pruned while a long replay runs
/// end the stream with `SEQUENCE_EXPIRED` instead of being skipped silently. Returns the last
/// sequence read, or `None` when the stream is over.
async fn catch_up(hub: &Hub, filter: &EventFilter, mut after: i64, tx: &mpsc::Sender<Item>) -> Option<i64> {
    loop {
        let page = async {
            let mut db = hub.pool().begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *db).await?;
            let pruned = events::pruned_through(&mut db).await?;
            let rows = events::read_after(&mut db, after, PAGE, filter).await?;
            db.commit().await?;
            Ok::<_, sqlx::Error>((pruned, rows))
        }
        .await;
        let rows = match page {
            Ok((pruned, _)) if after < pruned => {
                send(hub, tx, Err(ApiError::SequenceExpired { oldest_sequence: pruned + 1 })).await;
                return None;
            }
            Ok((_, rows)) => rows,
            Err(e) => {
                send(hub, tx, Err(ApiError::from(e))).await;
                return None;
            }
        };
        let full = rows.len() as i64 == PAGE;
        for row in rows {
            after = row.sequence;
            if let Some(event) = WatchEvent::from_log(row)
                && !send(hub, tx, Ok(Arc::new(event))).await
            {
                return None;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_subscriber_task_is_small() {
        // Thousands of subscribers each keep one `run` future alive; replays are boxed so that
        // the database futures do not inflate every one of them.
        let (hub_future_size, limit) = (std::mem::size_of_val(&run_size_probe()), 1024);
        assert!(hub_future_size <= limit, "run() future is {hub_future_size} bytes");
    }

    fn run_size_probe() -> impl std::future::Future<Output = ()> {
        let (tx, _rx) = mpsc::channel(1);
        let (_sender, receiver) = broadcast::channel(1);
        run(Hub::detached_for_tests(), WatchRequest::default(), receiver, 0, tx)
    }
}
