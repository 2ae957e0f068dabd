//! Process-level recovery, black box: real `paygate` processes on real Postgres, stopped with
//! SIGTERM (a rolling deploy) or SIGKILL (a crash), and the durable provider checks they leave.

use crate::common;
use std::time::{Duration, Instant};

use crate::common::{Process, spawn_app_with, spawn_process};
use crate::xpay::{session, session_created, session_id_for};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::xpay::XpayAccount;
use sqlx::PgPool;
use wiremock::matchers::{header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SECRET_KEY: &str = "sk_test_51PaygateRecoveryKey";
const WEBHOOK_SECRET: &str = "whsec_test";
const AMOUNT: i64 = 149_900;
/// Longer than the 2 s lease: a lookup in flight outlives its lease.
const LOOKUP_DELAY: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// SIGTERM
// ---------------------------------------------------------------------------------------------

fn sandbox_request(reference: &str) -> pb::CreateCheckoutRequest {
    pb::CreateCheckoutRequest {
        provider: "sandbox".into(),
        merchant_reference: reference.into(),
        amount: Some(pb::Money { amount_minor: 1234, currency: "USD".into() }),
        return_url: "https://shop.example/return?order=1".into(),
        cancel_url: "https://shop.example/cancel".into(),
        ..Default::default()
    }
}

/// A rolling deploy stops every pod with SIGTERM; each stop must exit 0 (a non-zero exit is
/// reported as a crash and restarts or alerts). Every run serves real requests first.
#[tokio::test]
async fn fifty_sigterms_in_a_row_all_exit_zero() {
    let db_url = common::fresh_database_url().await;
    let started = Instant::now();
    let mut slowest_stop = Duration::ZERO;
    for run in 0..50 {
        let mut process = spawn_process(&db_url, &[]).await;
        let created = process.grpc.create_checkout(sandbox_request(&format!("sigterm-{run}"))).await;
        let payment = created.expect("create checkout").into_inner().payment.expect("payment");
        let request = pb::GetPaymentStatusRequest { payment_id: payment.id.clone(), ..Default::default() };
        let read = process.grpc.get_payment_status(request).await.expect("get status").into_inner().payment;
        assert_eq!(read.expect("payment").id, payment.id);

        let stopping = Instant::now();
        process.sigterm();
        let status = process.wait_exit(Duration::from_secs(20)).await;
        let status = status.unwrap_or_else(|| panic!("run {run}: still running 20 s after SIGTERM"));
        assert_eq!(status.code(), Some(0), "run {run}: SIGTERM must exit 0, got {status}");
        slowest_stop = slowest_stop.max(stopping.elapsed());
    }
    eprintln!("50 start/serve/SIGTERM cycles in {:?}; slowest stop {slowest_stop:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// SIGKILL with provider checks queued and in flight
// ---------------------------------------------------------------------------------------------

// The XPay double's sessions are tests/api/xpay.rs's: one open session per payment, derived from
// its id.

/// `GET /checkout/sessions/{id}`: complete, with the right amount, after [`LOOKUP_DELAY`].
struct SlowComplete;

impl Respond for SlowComplete {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let id = request.url.path().rsplit('/').next().unwrap_or_default();
        let payment_id = format!("pay_{}", id.strip_prefix("cs_test_").unwrap_or(id));
        ResponseTemplate::new(200)
            .set_body_json(session(id, &payment_id, "complete", AMOUNT, "EGP"))
            .set_delay(LOOKUP_DELAY)
    }
}

async fn xpay_double() -> MockServer {
    let mock = MockServer::start().await;
    assert!(mock.uri().starts_with("http://127.0.0.1:"), "{}", mock.uri());
    Mock::given(method("POST"))
        .and(path("/checkout/sessions"))
        .and(header("authorization", format!("Bearer {SECRET_KEY}").as_str()))
        .respond_with(session_created)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/checkout/sessions/cs_test_[0-9A-Za-z]+$"))
        .and(header("authorization", format!("Bearer {SECRET_KEY}").as_str()))
        .respond_with(SlowComplete)
        .mount(&mock)
        .await;
    mock
}

/// The child's environment: the XPay account on the double, 2 s leases, a 100 ms poll and one
/// check at a time (so one is in flight while the others wait, claimed).
fn child_env(mock: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__DEFAULT__BASE_URL", mock.uri()),
        ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__DEFAULT__SECRET_KEY", SECRET_KEY.into()),
        ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__DEFAULT__WEBHOOK_SECRETS", WEBHOOK_SECRET.into()),
        ("PAYGATE_RECONCILER__LEASE_SECS", "2".into()),
        ("PAYGATE_RECONCILER__POLL_INTERVAL_MS", "100".into()),
        ("PAYGATE_RECONCILER__CHECK_CONCURRENCY", "1".into()),
    ]
}

async fn spawn_child(db_url: &str, env: &[(&'static str, String)]) -> Process {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_process(db_url, &env).await
}

/// Creates three XPay payments through `grpc` (each gets a scheduled check) and makes their
/// checks due now.
async fn three_xpay_payments(
    grpc: &mut pb::payment_service_client::PaymentServiceClient<tonic::transport::Channel>,
    db: &PgPool,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..3 {
        let request = pb::CreateCheckoutRequest {
            provider: "xpay".into(),
            merchant_reference: format!("recovery-{n}"),
            amount: Some(pb::Money { amount_minor: AMOUNT, currency: "EGP".into() }),
            description: "Test product".into(),
            return_url: "https://shop.example/return?order=1".into(),
            cancel_url: "https://shop.example/cancel".into(),
            ..Default::default()
        };
        let payment = grpc.create_checkout(request).await.expect("create").into_inner().payment.expect("payment");
        assert_eq!(payment.status(), PaymentStatus::Pending);
        assert_eq!(payment.provider_checkout_id, session_id_for(&payment.id));
        ids.push(payment.id);
    }
    let due = sqlx::query("UPDATE provider_checks SET due_at = now() WHERE payment_id = ANY($1)")
        .bind(&ids)
        .execute(db)
        .await
        .expect("make the checks due")
        .rows_affected();
    assert_eq!(due, 3, "every new payment has a queued check");
    ids
}

/// Status lookups the double received so far.
async fn lookups(mock: &MockServer) -> usize {
    let requests = mock.received_requests().await.unwrap_or_default();
    requests.iter().filter(|r| r.method.as_str() == "GET" && r.url.path().starts_with("/checkout/sessions/")).count()
}

/// Waits (up to 10 s) until a status lookup is in flight at the double.
async fn wait_for_a_lookup(mock: &MockServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lookups(mock).await == 0 {
        assert!(Instant::now() < deadline, "no status lookup reached XPay within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn succeeded(db: &PgPool, ids: &[String]) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE id = ANY($1) AND status = 'succeeded'")
        .bind(ids)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn queued_checks(db: &PgPool, ids: &[String]) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM provider_checks WHERE payment_id = ANY($1)")
        .bind(ids)
        .fetch_one(db)
        .await
        .unwrap()
}

/// Right after the kill: nothing paid yet, and every check still queued.
async fn assert_nothing_lost_yet(db: &PgPool, ids: &[String]) {
    assert_eq!(succeeded(db, ids).await, 0, "the lookups take 3 s: nothing can have been applied");
    assert_eq!(queued_checks(db, ids).await, 3, "the killed worker's checks are still queued");
}

/// Waits (up to 30 s) until every payment is SUCCEEDED and its check is gone; then each has
/// exactly one applied success, by the reconciler.
async fn assert_all_completed_once(db: &PgPool, ids: &[String]) -> Duration {
    let started = Instant::now();
    loop {
        if succeeded(db, ids).await == 3 && queued_checks(db, ids).await == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "after 30 s: {} of 3 succeeded, {} checks queued",
            succeeded(db, ids).await,
            queued_checks(db, ids).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in ids {
        let sources: Vec<String> = sqlx::query_scalar(
            "SELECT source FROM payment_events WHERE payment_id = $1 AND version IS NOT NULL AND status = 'succeeded'",
        )
        .bind(id)
        .fetch_all(db)
        .await
        .unwrap();
        assert_eq!(sources, vec!["reconciler".to_owned()], "{id}: exactly one applied success, by the reconciler");
    }
    started.elapsed()
}

#[tokio::test]
async fn queued_and_in_flight_checks_survive_sigkill_and_a_restart_completes_them() {
    let mock = xpay_double().await;
    let env = child_env(&mock);
    let db_url = common::fresh_database_url().await;
    let mut first = spawn_child(&db_url, &env).await;
    let db = common::small_pool(&db_url).await;
    let ids = three_xpay_payments(&mut first.grpc, &db).await;

    wait_for_a_lookup(&mock).await;
    first.sigkill();
    assert_nothing_lost_yet(&db, &ids).await;

    let _second = spawn_child(&db_url, &env).await;
    let took = assert_all_completed_once(&db, &ids).await;
    eprintln!("the restarted process completed the checks in {took:?}; {} lookups in all", lookups(&mock).await);
    db.close().await;
}

#[tokio::test]
async fn a_second_instance_completes_the_checks_of_a_killed_one() {
    let mock = xpay_double().await;
    let base_url = mock.uri();
    // B polls only every 3 s, so the checks made due below go to A (polling every 100 ms).
    let b = spawn_app_with(
        |config| {
            config.providers.xpay.accounts.insert(
                "default".into(),
                XpayAccount {
                    base_url,
                    secret_key: SECRET_KEY.into(),
                    webhook_secrets: vec![WEBHOOK_SECRET.into()],
                    ..Default::default()
                },
            );
            config.reconciler.lease_secs = 2;
            config.reconciler.poll_interval_ms = 3000;
        },
        Vec::new(),
    )
    .await;
    let mut a = spawn_child(&b.config.database.url, &child_env(&mock)).await;
    let ids = three_xpay_payments(&mut a.grpc, &b.db).await;

    wait_for_a_lookup(&mock).await;
    a.sigkill();
    assert_nothing_lost_yet(&b.db, &ids).await;

    let took = assert_all_completed_once(&b.db, &ids).await;
    eprintln!("the surviving instance completed the checks in {took:?}; {} lookups in all", lookups(&mock).await);
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// SIGKILL in the middle of a create and of a callback
// ---------------------------------------------------------------------------------------------

/// A signed XPay `checkout.session.completed` webhook for `payment_id`'s session.
fn xpay_completed_webhook(event_id: &str, payment_id: &str) -> (String, String) {
    let object = session(&session_id_for(payment_id), payment_id, "complete", AMOUNT, "EGP");
    let body = serde_json::json!({
        "id": event_id, "object": "event", "type": "checkout.session.completed",
        "created": chrono::Utc::now().timestamp(), "data": { "object": object },
    })
    .to_string();
    let signature = paygate::providers::signature::sign_timestamped(
        WEBHOOK_SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    );
    (body, signature)
}

async fn deliver(
    http: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut request = reqwest::Client::new().post(format!("{http}/callbacks/{path}")).body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.timeout(Duration::from_secs(10)).send().await
}

/// (status, source) of `id`'s applied events whose status is `status`.
async fn applied_with_status(db: &PgPool, id: &str, status: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT source FROM payment_events WHERE payment_id = $1 AND version IS NOT NULL AND status = $2",
    )
    .bind(id)
    .bind(status)
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_create_killed_at_the_provider_ends_correct_after_a_restart_and_the_webhook_retry_applies_once() {
    let mock = MockServer::start().await;
    // The provider opens the session but answers only after 3 s: the server dies before that.
    Mock::given(method("POST"))
        .and(path("/checkout/sessions"))
        .respond_with(|r: &Request| session_created(r).set_delay(Duration::from_secs(3)))
        .mount(&mock)
        .await;
    let env = child_env(&mock);
    let db_url = common::fresh_database_url().await;
    let mut first = spawn_child(&db_url, &env).await;
    let db = common::small_pool(&db_url).await;
    let request = pb::CreateCheckoutRequest {
        provider: "xpay".into(),
        merchant_reference: "killed-create".into(),
        amount: Some(pb::Money { amount_minor: AMOUNT, currency: "EGP".into() }),
        description: "Test product".into(),
        return_url: "https://shop.example/return".into(),
        cancel_url: "https://shop.example/cancel".into(),
        idempotency_key: "killed-create-key".into(),
        ..Default::default()
    };
    let mut grpc = first.grpc.clone();
    let in_flight = tokio::spawn(async move { grpc.create_checkout(request).await });
    common::wait_for_requests(&mock, "POST", "/checkout/sessions", 1).await;
    let sent = mock.received_requests().await.unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    let payment_id = sent["metadata"]["paygate_payment_id"].as_str().expect("our id in the create").to_owned();
    first.sigkill();
    assert!(in_flight.await.unwrap().is_err(), "the caller saw the server die");

    // What the crash left: the payment committed PENDING before the call, no checkout, its key
    // still held (never re-sent, see idempotency.rs), and a queued check.
    let (status, checkout): (String, Option<String>) =
        sqlx::query_as("SELECT status, checkout_url FROM payments WHERE id = $1")
            .bind(&payment_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), checkout), ("pending", None));
    assert_eq!(queued_checks(&db, std::slice::from_ref(&payment_id)).await, 1);

    // The provider's webhook reaches the dead server (refused), then its retry the restarted one.
    let (body, signature) = xpay_completed_webhook("evt_killed_create", &payment_id);
    let headers = [("content-type", "application/json"), ("XPay-Signature", signature.as_str())];
    assert!(deliver(&first.http, "xpay", &headers, &body).await.is_err(), "nothing listens after the kill");
    let second = spawn_child(&db_url, &env).await;
    let answer: serde_json::Value = deliver(&second.http, "xpay", &headers, &body).await.unwrap().json().await.unwrap();
    assert_eq!(
        (answer["status_changed"].as_bool(), answer["duplicate"].as_bool()),
        (Some(true), Some(false)),
        "{answer}"
    );
    let again: serde_json::Value = deliver(&second.http, "xpay", &headers, &body).await.unwrap().json().await.unwrap();
    assert_eq!((again["status_changed"].as_bool(), again["duplicate"].as_bool()), (Some(false), Some(true)), "{again}");

    let (status, checkout_id): (String, Option<String>) =
        sqlx::query_as("SELECT status, provider_checkout_id FROM payments WHERE id = $1")
            .bind(&payment_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(status, "succeeded");
    assert_eq!(
        checkout_id.as_deref(),
        Some(session_id_for(&payment_id).as_str()),
        "the session the webhook names is adopted"
    );
    assert_eq!(applied_with_status(&db, &payment_id, "succeeded").await, ["callback"], "exactly one applied success");
    assert_eq!(common::requests_to(&mock, "POST", "/checkout/sessions").await, 1, "create was never sent again");
    db.close().await;
}

#[tokio::test]
async fn a_callback_killed_mid_transaction_is_applied_exactly_once_on_the_providers_retry() {
    let db_url = common::fresh_database_url().await;
    let mut first = spawn_process(&db_url, &[]).await;
    let db = common::small_pool(&db_url).await;
    let payment =
        first.grpc.create_checkout(sandbox_request("killed-callback")).await.unwrap().into_inner().payment.unwrap();
    let body = common::sandbox_body("evt_killed", &payment.id, "succeeded", 1234, "USD");
    let signature = paygate::providers::signature::sign_timestamped(
        common::SANDBOX_SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    );
    let headers = [("content-type", "application/json"), ("Paygate-Sandbox-Signature", signature.as_str())];

    // Hold the payment's row lock, so the callback's transaction stops half way (verified,
    // inside its transaction, waiting for the row); kill the server there.
    let mut holder = db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM payments WHERE id = $1 FOR UPDATE")
        .bind(&payment.id)
        .execute(&mut *holder)
        .await
        .unwrap();
    let (http, owned_body, owned_sig) = (first.http.clone(), body.clone(), signature.clone());
    let delivery = tokio::spawn(async move {
        let headers = [("content-type", "application/json"), ("Paygate-Sandbox-Signature", owned_sig.as_str())];
        deliver(&http, "sandbox", &headers, &owned_body).await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the callback never reached the row lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.sigkill();
    assert!(delivery.await.unwrap().is_err(), "the provider got no answer");
    holder.rollback().await.unwrap();

    // The killed transaction left nothing: no receipt (so the retry is not a "duplicate"), no change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let receipts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM callback_receipts").fetch_one(&db).await.unwrap();
    assert_eq!(receipts, 0);
    assert!(applied_with_status(&db, &payment.id, "succeeded").await.is_empty());

    let second = spawn_process(&db_url, &[]).await;
    let answer: serde_json::Value =
        deliver(&second.http, "sandbox", &headers, &body).await.unwrap().json().await.unwrap();
    assert_eq!(
        (answer["status_changed"].as_bool(), answer["duplicate"].as_bool()),
        (Some(true), Some(false)),
        "{answer}"
    );
    let again: serde_json::Value =
        deliver(&second.http, "sandbox", &headers, &body).await.unwrap().json().await.unwrap();
    assert_eq!(again["duplicate"].as_bool(), Some(true), "{again}");
    assert_eq!(applied_with_status(&db, &payment.id, "succeeded").await, ["callback"], "applied exactly once");
    db.close().await;
}
