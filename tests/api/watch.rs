//! WatchPayments: exact, ordered, resumable streams across replicas, restarts and slow consumers.

use crate::common;
use std::collections::HashMap;
use std::time::Duration;

use crate::common::{SANDBOX_SECRET, TestApp, error_info, sandbox_body, spawn_app, spawn_app_with};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::signature::sign_timestamped;
use tokio_stream::StreamExt;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(15);

async fn watch(app: &TestApp, after: Option<i64>, ids: &[&str], providers: &[&str]) -> Streaming<pb::PaymentEvent> {
    let request = pb::WatchPaymentsRequest {
        payment_ids: ids.iter().map(|s| s.to_string()).collect(),
        providers: providers.iter().map(|s| s.to_string()).collect(),
        after_sequence: after,
    };
    app.grpc.clone().watch_payments(request).await.expect("watch starts").into_inner()
}

async fn next(stream: &mut Streaming<pb::PaymentEvent>) -> pb::PaymentEvent {
    tokio::time::timeout(WAIT, stream.message()).await.expect("event in time").expect("stream ok").expect("stream open")
}

async fn take(stream: &mut Streaming<pb::PaymentEvent>, n: usize) -> Vec<pb::PaymentEvent> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next(stream).await);
    }
    out
}

/// Sends a signed sandbox callback through VerifyCallback.
async fn callback(app: &TestApp, event_id: &str, payment_id: &str, status: &str) -> bool {
    let body = sandbox_body(event_id, payment_id, status, 1234, "USD");
    let signature = sign_timestamped(SANDBOX_SECRET.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes());
    let request = pb::VerifyCallbackRequest {
        provider: "sandbox".into(),
        body: body.into_bytes(),
        headers: HashMap::from([("paygate-sandbox-signature".to_owned(), signature)]),
        ..Default::default()
    };
    app.grpc.clone().verify_callback(request).await.expect("callback").into_inner().status_changed
}

/// Waits until the sequencer has positioned every committed event (positions are given a few
/// milliseconds after commit; "from now" means after the newest position).
async fn settle(app: &TestApp) {
    for _ in 0..500 {
        if app.count("SELECT COUNT(*) FROM event_queue").await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("events were not positioned in time");
}

/// The applied events in position order, once every committed one is positioned:
/// (position, payment id, version).
async fn table(app: &TestApp) -> Vec<(i64, String, i64)> {
    settle(app).await;
    sqlx::query_as(
        "SELECT p.position, e.payment_id, e.version FROM event_positions p \
         JOIN payment_events e ON e.sequence = p.event_sequence ORDER BY p.position",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

fn keys(events: &[pb::PaymentEvent]) -> Vec<(i64, String, i64)> {
    events
        .iter()
        .map(|e| {
            let p = e.payment.as_ref().unwrap();
            (e.sequence, p.id.clone(), p.version)
        })
        .collect()
}

#[tokio::test]
async fn changes_made_on_one_replica_stream_from_another() {
    let a = spawn_app().await;
    let b = a.another_instance().await;
    let mut stream = watch(&a, None, &[], &[]).await;

    let payment = b.create_payment("replicas").await;
    assert_eq!(common::press(&b, &payment.id, "pay").await.status(), 303);

    let events = take(&mut stream, 3).await;
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.payment.as_ref().unwrap().version,
                e.payment.as_ref().unwrap().status(),
                e.previous_status(),
                e.source.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, PaymentStatus::Pending, PaymentStatus::Unspecified, "create"),
            (2, PaymentStatus::Pending, PaymentStatus::Pending, "create"),
            (3, PaymentStatus::Succeeded, PaymentStatus::Pending, "callback"),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert_eq!(keys(&events), table(&a).await);
    let last = events[2].payment.as_ref().unwrap();
    assert_eq!(last.provider_payment_id.len(), 30);
    assert!(events[2].occurred_at.is_some());
    b.stop().await;
}

#[tokio::test]
async fn replay_from_a_sequence_then_live_without_gap_or_duplicate() {
    let app = spawn_app().await;
    let first = app.create_payment("replay-1").await;
    callback(&app, "r1", &first.id, "processing").await;
    let stored = table(&app).await;
    assert_eq!(stored.len(), 3);

    // From 0: everything stored, then live.
    let mut all = watch(&app, Some(0), &[], &[]).await;
    // From the middle: only what came after.
    let mut tail = watch(&app, Some(stored[0].0), &[], &[]).await;
    assert_eq!(keys(&take(&mut all, 3).await), stored);
    assert_eq!(keys(&take(&mut tail, 2).await), stored[1..].to_vec());

    let second = app.create_payment("replay-2").await;
    callback(&app, "r2", &second.id, "failed").await;
    let now = table(&app).await;
    assert_eq!(keys(&take(&mut all, 3).await), now[3..].to_vec());
    assert_eq!(keys(&take(&mut tail, 3).await), now[3..].to_vec());
    // Nothing more: no duplicates at the seam.
    assert!(tokio::time::timeout(Duration::from_millis(300), all.message()).await.is_err());

    // A replay from the newest sequence is empty until something new happens.
    let mut fresh = watch(&app, Some(now.last().unwrap().0), &[], &[]).await;
    callback(&app, "r3", &second.id, "succeeded").await;
    assert_eq!(next(&mut fresh).await.payment.unwrap().status(), PaymentStatus::Succeeded);
}

#[tokio::test]
async fn resume_after_the_serving_replica_dies_yields_exactly_the_missed_events() {
    let b = spawn_app().await;
    let mut a = common::spawn_process(&b.config.database.url, &[]).await;
    let payment = b.create_payment("resume").await;
    let request = pb::WatchPaymentsRequest { after_sequence: Some(0), ..Default::default() };
    let mut stream = a.grpc.watch_payments(request).await.unwrap().into_inner();
    let seen = take(&mut stream, 2).await;
    let last_seen = seen.last().unwrap().sequence;

    a.child.kill().expect("SIGKILL the serving replica");
    let broke = tokio::time::timeout(WAIT, async { while let Ok(Some(_)) = stream.message().await {} }).await;
    assert!(broke.is_ok(), "the stream of a killed server ends");
    // Meanwhile the other replica keeps changing payments.
    callback(&b, "m1", &payment.id, "processing").await;
    callback(&b, "m2", &payment.id, "succeeded").await;
    let other = b.create_payment("resume-2").await;

    let mut resumed = watch(&b, Some(last_seen), &[], &[]).await;
    let missed = take(&mut resumed, 4).await;
    let stored = table(&b).await;
    assert_eq!(keys(&missed), stored[2..].to_vec());
    assert_eq!(missed[3].payment.as_ref().unwrap().id, other.id);
    assert!(tokio::time::timeout(Duration::from_millis(300), resumed.message()).await.is_err(), "no extra events");
}

#[tokio::test]
async fn concurrent_writers_never_produce_a_gap_or_reorder() {
    let app = spawn_app().await;
    let mut live = watch(&app, None, &[], &[]).await;
    let mut replay = watch(&app, Some(0), &[], &[]).await;

    let mut payments = Vec::new();
    for n in 0..12 {
        payments.push(app.create_payment(&format!("concurrent-{n}")).await.id);
    }
    // Many tasks flip many payments between PROCESSING and PENDING at once.
    let writers = payments.iter().enumerate().map(|(n, id)| {
        let grpc_app = &app;
        async move {
            for round in 0..6 {
                let status = if round % 2 == 0 { "processing" } else { "pending" };
                assert!(callback(grpc_app, &format!("w{n}-{round}"), id, status).await);
            }
        }
    });
    futures::future::join_all(writers).await;

    let stored = table(&app).await;
    assert_eq!(stored.len(), 12 * 2 + 12 * 6);
    let from_replay = keys(&take(&mut replay, stored.len()).await);
    assert_eq!(from_replay, stored, "replay stream equals the table, in order");
    let created = 12 * 2;
    let from_live = keys(&take(&mut live, stored.len()).await);
    assert_eq!(from_live, stored, "live stream equals the table, in order ({created} from creates)");
    // Per payment, versions arrive 1, 2, 3, … in order.
    let mut versions: HashMap<String, i64> = HashMap::new();
    for (_, id, version) in &from_live {
        let previous = versions.insert(id.clone(), *version).unwrap_or(0);
        assert_eq!(*version, previous + 1);
    }
}

#[tokio::test]
async fn a_slow_subscriber_catches_up_from_the_table_with_bounded_memory() {
    let app = spawn_app_with(|c| c.events.stream_buffer = 8, Vec::new()).await;
    let payment = app.create_payment("slow").await;
    settle(&app).await;
    // Subscribe in-process and do not read: the 8-slot ring overflows.
    let request = paygate::watch::WatchRequest { after_sequence: None, ..Default::default() };
    let mut slow = paygate::watch::subscribe(&app.hub, request).await.unwrap();
    let mut fast = watch(&app, None, &[], &[]).await;
    for round in 0..120 {
        let status = if round % 2 == 0 { "processing" } else { "pending" };
        callback(&app, &format!("s{round}"), &payment.id, status).await;
    }
    // The fast subscriber was not held back, and the ring never held more than its capacity.
    assert_eq!(take(&mut fast, 120).await.last().unwrap().payment.as_ref().unwrap().version, 122);
    assert!(app.hub.buffered() <= 8, "ring is bounded: {}", app.hub.buffered());

    let mut got = Vec::new();
    while got.len() < 120 {
        let event = tokio::time::timeout(WAIT, slow.next()).await.expect("in time").expect("open").expect("ok");
        got.push((event.sequence, event.payment.version));
    }
    let expected: Vec<(i64, i64)> = table(&app).await.into_iter().skip(2).map(|(s, _, v)| (s, v)).collect();
    assert_eq!(got, expected, "complete and in order after falling behind");
    assert!(app.hub.catch_ups() >= 1, "it fell behind the ring and caught up from the table");
}

#[tokio::test]
async fn filters_are_anded() {
    let app = spawn_app().await;
    let one = app.create_payment("filter-1").await;
    let two = app.create_payment("filter-2").await;
    let mut by_id = watch(&app, Some(0), &[&two.id], &[]).await;
    let mut by_both = watch(&app, Some(0), &[&one.id], &["sandbox"]).await;
    let mut none = watch(&app, Some(0), &[&one.id], &["xpay"]).await;
    callback(&app, "f1", &one.id, "processing").await;
    callback(&app, "f2", &two.id, "processing").await;

    let ids: Vec<String> = take(&mut by_id, 3).await.into_iter().map(|e| e.payment.unwrap().id).collect();
    assert_eq!(ids, vec![two.id.clone(); 3]);
    let versions: Vec<i64> = take(&mut by_both, 3).await.into_iter().map(|e| e.payment.unwrap().version).collect();
    assert_eq!(versions, vec![1, 2, 3]);
    assert!(tokio::time::timeout(Duration::from_millis(300), none.message()).await.is_err());
}

#[tokio::test]
async fn pruned_sequences_are_out_of_range_and_shutdown_ends_streams() {
    let app = spawn_app().await;
    app.create_payment("prune").await;
    let max: i64 = sqlx::query_scalar("SELECT MAX(sequence) FROM payment_events").fetch_one(&app.db).await.unwrap();
    let mut tx = app.db.begin().await.unwrap();
    let deleted =
        paygate::store::events::prune(&mut tx, chrono::Utc::now() + chrono::Duration::seconds(1)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(deleted, 2);

    let request = pb::WatchPaymentsRequest { after_sequence: Some(0), ..Default::default() };
    let status = app.grpc.clone().watch_payments(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "SEQUENCE_EXPIRED");
    assert_eq!(metadata["oldest_sequence"], (max + 1).to_string());
    let bad = pb::WatchPaymentsRequest { after_sequence: Some(-1), ..Default::default() };
    assert_eq!(app.grpc.clone().watch_payments(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    // Newer than anything committed (e.g. a client of a restored database): refused, not skipped.
    let ahead = pb::WatchPaymentsRequest { after_sequence: Some(max + 10), ..Default::default() };
    let status = app.grpc.clone().watch_payments(ahead).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "SEQUENCE_AHEAD");
    assert_eq!(metadata["newest_sequence"], max.to_string());

    // From the pruning point on, streams work; shutdown ends them with UNAVAILABLE.
    let mut stream = watch(&app, Some(max), &[], &[]).await;
    let grpc = app.grpc.clone();
    app.stop().await;
    let end = tokio::time::timeout(WAIT, stream.message()).await.expect("stream ends in time");
    match end {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert_eq!(error_info(&status).0, "SHUTTING_DOWN");
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    drop(grpc);
}

#[tokio::test]
async fn no_writer_waits_for_another_and_positions_follow_commits() {
    let app = spawn_app().await;
    let first = app.create_payment("order-1").await;
    let second = app.create_payment("order-2").await;
    settle(&app).await;
    let mut stream = watch(&app, None, &[], &[]).await;

    // Transaction 1 appends an event and stays open.
    let mut tx = app.db.begin().await.unwrap();
    let id = paygate::domain::PaymentId::parse(&first.id).unwrap();
    let before = paygate::store::payments::lock(&mut tx, &id).await.unwrap().unwrap();
    let mut after = before.clone();
    after.status = paygate::domain::PaymentStatus::Processing;
    let info = paygate::store::payments::EventInfo::new(
        paygate::domain::EventKind::StatusChanged,
        paygate::domain::EventSource::Reconciler,
    );
    paygate::store::payments::update(&mut tx, &before, &after, &info).await.unwrap();

    // Transaction 2 (a callback on another payment) commits while transaction 1 is open: no
    // writer waits for another (the bound only turns a hang into a failure).
    let changed = tokio::time::timeout(WAIT, callback(&app, "c2", &second.id, "processing")).await;
    assert!(changed.expect("the second writer does not wait for the first"));
    // Its event streams; transaction 1's does not exist for readers yet.
    let e2 = next(&mut stream).await;
    assert_eq!(e2.payment.as_ref().unwrap().id, second.id);
    assert!(tokio::time::timeout(Duration::from_millis(200), stream.message()).await.is_err());

    // Once committed, transaction 1's event gets the next position: nothing is skipped.
    tx.commit().await.unwrap();
    let e1 = next(&mut stream).await;
    assert_eq!(e1.payment.as_ref().unwrap().id, first.id);
    assert!(e1.sequence > e2.sequence);
    assert_eq!(e1.source, "reconciler");
}

#[tokio::test]
async fn a_resuming_client_gets_every_event_exactly_once_under_concurrent_writers_on_two_replicas() {
    let a = spawn_app().await;
    let b = a.another_instance().await;
    let mut payments = Vec::new();
    for n in 0..10 {
        payments.push(a.create_payment(&format!("resume-{n}")).await.id);
    }
    // Writers on both replicas (each runs a sequencer; one leads) while a client reads in short
    // sessions, resuming from the last position it saw each time.
    let writers = payments.iter().enumerate().map(|(n, id)| {
        let app = if n % 2 == 0 { &a } else { &b };
        async move {
            for round in 0..8 {
                let status = if round % 2 == 0 { "processing" } else { "pending" };
                assert!(callback(app, &format!("r{n}-{round}"), id, status).await);
            }
        }
    });
    let expected = payments.len() * (2 + 8);
    let reader = async {
        let mut seen: Vec<(i64, String, i64)> = Vec::new();
        let mut last = 0;
        while seen.len() < expected {
            let app = if seen.len().is_multiple_of(2) { &a } else { &b };
            let mut stream = watch(app, Some(last), &[], &[]).await;
            for event in take(&mut stream, (expected - seen.len()).min(7)).await {
                last = event.sequence;
                seen.extend(keys(&[event]));
            }
        }
        seen
    };
    let (_, seen) = tokio::join!(futures::future::join_all(writers), reader);

    let mut distinct = std::collections::HashSet::new();
    assert!(seen.iter().all(|(_, id, version)| distinct.insert((id.clone(), *version))), "no event twice");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "positions increase");
    let mut versions: HashMap<String, i64> = HashMap::new();
    for (_, id, version) in &seen {
        let previous = versions.insert(id.clone(), *version).unwrap_or(0);
        assert_eq!(*version, previous + 1, "each payment's versions in order");
    }
    assert_eq!(seen, table(&a).await, "exactly the stored events");
}

#[tokio::test]
async fn events_pruned_during_a_long_replay_end_it_with_sequence_expired() {
    let app = spawn_app().await;
    app.create_payment("long-replay").await;
    // 600 more events (more than one replay page), copied from the checkout event.
    sqlx::query(
        "INSERT INTO payment_events (payment_id, version, kind, source, status, snapshot) \
         SELECT payment_id, 1000 + g, 'copy', 'callback', status, snapshot \
         FROM payment_events, generate_series(1, 600) AS g WHERE sequence = 2",
    )
    .execute(&app.db)
    .await
    .unwrap();
    settle(&app).await;
    let request = paygate::watch::WatchRequest { after_sequence: Some(0), ..Default::default() };
    let mut stream = paygate::watch::subscribe(&app.hub, request).await.unwrap();
    // The replay reads its first page, then everything is pruned.
    let first = tokio::time::timeout(WAIT, stream.next()).await.expect("in time").expect("open");
    assert!(first.is_ok());
    let mut tx = app.db.begin().await.unwrap();
    paygate::store::events::prune(&mut tx, chrono::Utc::now() + chrono::Duration::seconds(1)).await.unwrap();
    tx.commit().await.unwrap();

    let mut delivered = 1;
    let end = loop {
        match tokio::time::timeout(WAIT, stream.next()).await.expect("in time") {
            Some(Ok(_)) => delivered += 1,
            Some(Err(e)) => break e,
            None => panic!("stream ended without an error"),
        }
    };
    assert!(matches!(end, paygate::error::ApiError::SequenceExpired { .. }), "{end:?}");
    assert_eq!(delivered, 500, "exactly the page read before pruning, then the error");
}

#[tokio::test]
async fn positions_continue_above_everything_pruned_even_when_the_log_was_emptied() {
    let app = spawn_app().await;
    app.create_payment("before-prune").await;
    let newest_before = table(&app).await.last().unwrap().0;
    // Retention removes every event (a quiet period longer than `retention_days`).
    let mut tx = app.db.begin().await.unwrap();
    paygate::store::events::prune(&mut tx, chrono::Utc::now() + chrono::Duration::seconds(1)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(app.count("SELECT COUNT(*) FROM event_positions").await, 0);

    // New events get positions above the pruned ones, and a client resuming at the pruned
    // position receives them.
    let mut stream = watch(&app, Some(newest_before), &[], &[]).await;
    let payment = app.create_payment("after-prune").await;
    let events = take(&mut stream, 2).await;
    assert!(events.iter().all(|e| e.sequence > newest_before), "{events:?}");
    assert_eq!(events[1].payment.as_ref().unwrap().id, payment.id);
}
