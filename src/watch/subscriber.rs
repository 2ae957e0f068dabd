//! One stream: replay from the table, then live from the hub, then catch up again if it lags.
//!
//! A stream is a plain state machine polled by the gRPC response itself (no task or queue per
//! subscriber): when the client does not read, HTTP/2 flow control stops polling, the stream falls
//! behind the hub's ring, and on its next poll it catches up from the table page by page. Memory
//! per stream is therefore bounded by one page, whatever the client does.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

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

    let state = State {
        hub: hub.clone(),
        filter: request.filter,
        receiver,
        last: start,
        pending: VecDeque::new(),
        replaying: request.after_sequence.is_some(),
        done: false,
    };
    let stop = hub.shutdown().clone();
    let stopped = stop.clone();
    let events = futures::stream::unfold(state, next).take_until(stop.cancelled_owned());
    let farewell = futures::stream::once(async move { stopped.is_cancelled().then_some(Err(ApiError::ShuttingDown)) })
        .filter_map(std::future::ready);
    Ok(events.chain(farewell).boxed())
}

/// A stream's position and what it still has to send.
struct State {
    hub: Hub,
    filter: EventFilter,
    receiver: broadcast::Receiver<Arc<WatchEvent>>,
    /// Everything up to this sequence has been sent or skipped.
    last: i64,
    /// Events read from the table and not yet sent (at most one page).
    pending: VecDeque<Arc<WatchEvent>>,
    /// Reading the table (replay or catch-up) rather than the ring.
    replaying: bool,
    done: bool,
}

/// The next item of a stream.
async fn next(mut s: State) -> Option<(Item, State)> {
    loop {
        if s.done {
            return None;
        }
        if let Some(event) = s.pending.pop_front() {
            s.hub.note_sent(&event);
            return Some((Ok(event), s));
        }
        if s.replaying {
            // Boxed: the database future is large and only a replaying stream needs it.
            match Box::pin(read_page(&s.hub, &s.filter, s.last)).await {
                Ok((rows, full)) => {
                    for row in rows {
                        s.last = row.sequence;
                        if let Some(event) = WatchEvent::from_log(row) {
                            s.pending.push_back(Arc::new(event));
                        }
                    }
                    s.replaying = full;
                }
                Err(e) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
            }
            continue;
        }
        match s.receiver.recv().await {
            Ok(event) => {
                if event.sequence <= s.last {
                    continue;
                }
                s.last = event.sequence;
                if matches(&s.filter, &event) {
                    s.hub.note_sent(&event);
                    return Some((Ok(event), s));
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Fell behind the ring: rejoin it, then catch up from the table.
                s.hub.count_catch_up();
                s.receiver = s.hub.receiver();
                s.replaying = true;
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// One page of stored events after `after` (filtered), read together with the pruning watermark
/// in one snapshot: events pruned while a long replay runs end the stream with `SEQUENCE_EXPIRED`
/// instead of being skipped silently. Returns the rows and whether the page was full.
async fn read_page(hub: &Hub, filter: &EventFilter, after: i64) -> Result<(Vec<events::LogEvent>, bool), ApiError> {
    let mut db = hub.pool().begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *db).await?;
    let pruned = events::pruned_through(&mut db).await?;
    if after < pruned {
        return Err(ApiError::SequenceExpired { oldest_sequence: pruned + 1 });
    }
    let rows = events::read_after(&mut db, after, PAGE, filter).await?;
    db.commit().await?;
    hub.metrics().table_reads.inc();
    let full = rows.len() as i64 == PAGE;
    Ok((rows, full))
}

fn matches(filter: &EventFilter, event: &WatchEvent) -> bool {
    (filter.payment_ids.is_empty() || filter.payment_ids.iter().any(|id| event.payment.id == *id))
        && (filter.providers.is_empty() || filter.providers.contains(&event.payment.provider))
        && filter.owner.as_ref().is_none_or(|owner| event.payment.caller.as_ref() == Some(owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_stream_is_small() {
        // Thousands of subscribers each keep one pending `next` future; replays are boxed so that
        // the database futures do not inflate every one of them.
        let (_sender, receiver) = broadcast::channel(1);
        let state = State {
            hub: Hub::detached_for_tests(),
            filter: EventFilter::default(),
            receiver,
            last: 0,
            pending: VecDeque::new(),
            replaying: false,
            done: false,
        };
        let size = std::mem::size_of_val(&next(state));
        assert!(size <= 1024, "next() future is {size} bytes");
    }
}
