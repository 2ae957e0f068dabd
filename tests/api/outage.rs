//! Database outages, black box: a real `paygate` process on a private Postgres cluster that the
//! test stops and starts while the service runs (the shared server is never touched). During
//! the outage every answer is a fast, retryable `DATABASE_UNAVAILABLE`; afterwards the same
//! process serves again, and a resumed WatchPayments stream loses and repeats nothing.

use std::time::{Duration, Instant};

use crate::common::private_pg::PrivatePg;
use crate::common::{Process, SANDBOX_SECRET, error_info, sandbox_body, spawn_process};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::signature::sign_timestamped;
use tonic::Streaming;

/// The bound for an RPC during an outage (the acquire timeout is 2 s).
const RPC_BOUND: Duration = Duration::from_secs(3);
/// `/readyz` answers within 1 s; the margin covers the HTTP round trip on a loaded machine.
const READY_BOUND: Duration = Duration::from_millis(1500);

fn request(reference: &str) -> pb::CreateCheckoutRequest {
    pb::CreateCheckoutRequest {
        provider: "sandbox".into(),
        merchant_reference: reference.into(),
        amount: Some(pb::Money { amount_minor: 1234, currency: "USD".into() }),
        return_url: "https://shop.example/return".into(),
        ..Default::default()
    }
}

async fn post_callback(process: &Process, body: &str) -> reqwest::Response {
    let signature = sign_timestamped(SANDBOX_SECRET.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes());
    reqwest::Client::new()
        .post(format!("{}/callbacks/sandbox/default", process.http))
        .header("content-type", "application/json")
        .header("Paygate-Sandbox-Signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("callback POST")
}

async fn readyz(process: &Process) -> (u16, Duration) {
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{}/readyz", process.http))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/readyz answers");
    (response.status().as_u16(), started.elapsed())
}

/// Asserts a gRPC result is UNAVAILABLE / `DATABASE_UNAVAILABLE` and came within [`RPC_BOUND`].
fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>, took: Duration) {
    let status = result.expect_err(&format!("{what} must fail while the database is down"));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{what}: {status:?}");
    assert_eq!(error_info(&status).0, "DATABASE_UNAVAILABLE", "{what}: {status:?}");
    assert!(took <= RPC_BOUND, "{what} answered after {took:?} (bound {RPC_BOUND:?})");
}

async fn watch(process: &Process, after: i64) -> Result<Streaming<pb::PaymentEvent>, tonic::Status> {
    let request = pb::WatchPaymentsRequest { after_sequence: Some(after), ..Default::default() };
    process.grpc.clone().watch_payments(request).await.map(tonic::Response::into_inner)
}

/// (sequence, payment id, version) of the next `n` events.
async fn take(stream: &mut Streaming<pb::PaymentEvent>, n: usize) -> Vec<(i64, String, i64)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let event = tokio::time::timeout(Duration::from_secs(15), stream.message())
            .await
            .expect("event in time")
            .expect("stream ok")
            .expect("stream open");
        let p = event.payment.expect("payment");
        out.push((event.sequence, p.id, p.version));
    }
    out
}

/// Every applied event in position order, once the sequencer has positioned all of them.
async fn positioned(db: &sqlx::PgPool) -> Vec<(i64, String, i64)> {
    for _ in 0..500 {
        let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_queue").fetch_one(db).await.unwrap();
        if queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query_as(
        "SELECT p.position, e.payment_id, e.version FROM event_positions p \
         JOIN payment_events e ON e.sequence = p.event_sequence ORDER BY p.position",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_database_outage_answers_unavailable_fast_and_the_service_recovers_by_itself() {
    let pg = PrivatePg::start();
    let db_url = pg.url("paygate");
    let process = spawn_process(&db_url, &[("PAYGATE_RECONCILER__POLL_INTERVAL_MS", "200")]).await;
    let mut grpc = process.grpc.clone();

    // Before: a payment, and a watcher that has seen its events.
    let first = grpc.create_checkout(request("outage-1")).await.expect("create").into_inner().payment.unwrap();
    let mut stream = watch(&process, 0).await.expect("watch starts");
    let seen = take(&mut stream, 2).await;
    assert_eq!(
        seen.iter().map(|e| (e.1.as_str(), e.2)).collect::<Vec<_>>(),
        [(first.id.as_str(), 1), (first.id.as_str(), 2)]
    );
    let last_seen = seen[1].0;
    assert_eq!(readyz(&process).await.0, 200);

    pg.stop();
    drop(stream);

    // During: every path answers fast and retryably, several times over (stale pooled
    // connections first, then connection attempts refused until the acquire timeout).
    for round in 0..2 {
        let started = Instant::now();
        let result = grpc.create_checkout(request(&format!("outage-during-{round}"))).await;
        assert_unavailable("CreateCheckout", result, started.elapsed());

        let started = Instant::now();
        let lookup = pb::GetPaymentStatusRequest { payment_id: first.id.clone(), ..Default::default() };
        let result = grpc.get_payment_status(lookup).await;
        assert_unavailable("GetPaymentStatus", result, started.elapsed());

        let started = Instant::now();
        let body = sandbox_body(&format!("evt_outage_{round}"), &first.id, "succeeded", 1234, "USD");
        let response = post_callback(&process, &body).await;
        let took = started.elapsed();
        assert_eq!(response.status().as_u16(), 503, "a callback during the outage is 503 (the provider retries)");
        let json: serde_json::Value = response.json().await.expect("JSON error body");
        assert_eq!(json["code"], "DATABASE_UNAVAILABLE", "{json}");
        assert!(took <= RPC_BOUND, "callback answered after {took:?}");

        let (status, took) = readyz(&process).await;
        assert_eq!(status, 503, "/readyz during the outage");
        assert!(took <= READY_BOUND, "/readyz answered after {took:?}");

        let started = Instant::now();
        let result = watch(&process, last_seen).await.map(|_| ());
        assert_unavailable("WatchPayments", result, started.elapsed());
    }
    assert!(process.child.id() > 0);

    pg.start_again();

    // After: the same process serves again, with no restart.
    let started = Instant::now();
    loop {
        let lookup = pb::GetPaymentStatusRequest { payment_id: first.id.clone(), ..Default::default() };
        match grpc.get_payment_status(lookup).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(error_info(&status).0, "DATABASE_UNAVAILABLE", "{status:?}");
                assert!(started.elapsed() < Duration::from_secs(20), "not recovered 20 s after the database came back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!("recovered {:?} after the database came back", started.elapsed());
    // From then on, every request succeeds (stale connections were checked, not handed out).
    let second =
        grpc.create_checkout(request("outage-after")).await.expect("create after").into_inner().payment.unwrap();
    let body = sandbox_body("evt_after", &first.id, "succeeded", 1234, "USD");
    let response = post_callback(&process, &body).await;
    assert_eq!(response.status().as_u16(), 200, "the provider's retry after the outage is applied");
    let again = post_callback(&process, &body).await.json::<serde_json::Value>().await.unwrap();
    assert_eq!(again["duplicate"], true, "{again}");
    for _ in 0..10 {
        let lookup = pb::GetPaymentStatusRequest { payment_id: first.id.clone(), ..Default::default() };
        let payment = grpc.get_payment_status(lookup).await.expect("status after").into_inner().payment.unwrap();
        assert_eq!(payment.status(), PaymentStatus::Succeeded);
    }
    assert_eq!(readyz(&process).await.0, 200);

    // The watcher resumes where it was: exactly the events after it, each once, in order.
    let db = crate::common::small_pool(&db_url).await;
    let table = positioned(&db).await;
    let expected: Vec<_> = table.into_iter().filter(|e| e.0 > last_seen).collect();
    assert_eq!(
        expected.iter().map(|e| (e.1.clone(), e.2)).collect::<Vec<_>>(),
        [(second.id.clone(), 1), (second.id.clone(), 2), (first.id.clone(), 3)],
        "the table holds one event per change"
    );
    let mut resumed = watch(&process, last_seen).await.expect("watch resumes");
    let got = take(&mut resumed, expected.len()).await;
    assert_eq!(got, expected, "resumed stream: no gap, no repeat");
    let third = grpc.create_checkout(request("outage-live")).await.expect("create live").into_inner().payment.unwrap();
    let live = take(&mut resumed, 1).await;
    assert_eq!((live[0].0, live[0].1.as_str(), live[0].2), (expected.last().unwrap().0 + 1, third.id.as_str(), 1));
    db.close().await;
}
