//! Retention, black box: the periodic job (every second here) deletes completed idempotency
//! keys, callback receipts and rejected-callback audit rows past their configured age, in
//! batches, and keeps newer rows and every key still in progress.

use std::time::Duration;

use crate::common::{TestApp, sandbox_body, spawn_app_with};

async fn app() -> TestApp {
    spawn_app_with(
        |config| {
            config.retention.interval_secs = 1;
            // The defaults, spelled out: what the assertions below are about.
            config.retention.idempotency_days = 30;
            config.retention.callback_receipts_days = 30;
            config.retention.rejected_callbacks_days = 7;
        },
        Vec::new(),
    )
    .await
}

async fn exec(app: &TestApp, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&app.db).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn keys(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT key FROM idempotency_keys ORDER BY key").fetch_all(&app.db).await.unwrap()
}

/// Waits (up to 10 s) until `sql` counts `n`.
async fn wait_count(app: &TestApp, sql: &str, n: i64) {
    for _ in 0..200 {
        if app.count(sql).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{sql}: expected {n}, got {}", app.count(sql).await);
}

#[tokio::test]
async fn rows_past_retention_are_deleted_and_newer_and_in_progress_ones_kept() {
    let app = app().await;
    // Four keyed payments, each with an accepted callback; their keys completed now.
    let mut ids = Vec::new();
    for name in ["old", "new", "leased", "retryable"] {
        let mut request = app.checkout_request(&format!("retention-{name}"), 1234, "USD");
        request.idempotency_key = format!("key-{name}");
        let payment = app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
        let body = sandbox_body(&format!("evt_{name}"), &payment.id, "processing", 1234, "USD");
        assert_eq!(app.post_sandbox_callback(&body).await.status().as_u16(), 200);
        ids.push(payment.id);
    }
    assert_eq!(keys(&app).await, ["key-leased", "key-new", "key-old", "key-retryable"]);
    // Ages: one day past the limit for the "old" rows, one day inside it for the "new" ones.
    exec(&app, "UPDATE idempotency_keys SET updated_at = now() - interval '31 days' WHERE key = 'key-old'").await;
    exec(&app, "UPDATE idempotency_keys SET updated_at = now() - interval '29 days' WHERE key = 'key-new'").await;
    exec(
        &app,
        "UPDATE idempotency_keys SET state = 'in_progress', locked_until = now() + interval '1 minute', \
         updated_at = now() - interval '90 days', created_at = now() - interval '90 days' WHERE key = 'key-leased'",
    )
    .await;
    exec(
        &app,
        "UPDATE idempotency_keys SET state = 'retryable', updated_at = now() - interval '90 days' WHERE key = 'key-retryable'",
    )
    .await;
    exec(
        &app,
        &format!(
            "UPDATE callback_receipts SET received_at = now() - interval '31 days' WHERE payment_id = '{}'",
            ids[0]
        ),
    )
    .await;
    exec(
        &app,
        &format!(
            "UPDATE callback_receipts SET received_at = now() - interval '29 days' WHERE payment_id = '{}'",
            ids[1]
        ),
    )
    .await;
    // A flood of forged callbacks: audited, and aged past 7 days (more rows than one batch),
    // next to a few recent ones.
    for i in 0..3 {
        let response = app.post_callback("sandbox/default", &format!("{{\"forged\":{i}}}"), "t=1,v1=00").await;
        assert_eq!(response.status().as_u16(), 401);
    }
    exec(
        &app,
        "INSERT INTO rejected_callbacks (provider, account, reason, body_sha256, received_at) \
         SELECT 'sandbox', 'default', 'SIGNATURE_INVALID', md5(g::text), now() - interval '8 days' \
         FROM generate_series(1, 25000) g",
    )
    .await;
    exec(
        &app,
        "INSERT INTO rejected_callbacks (provider, account, reason, body_sha256, received_at) \
         VALUES ('sandbox', 'default', 'SIGNATURE_INVALID', 'six-days', now() - interval '6 days')",
    )
    .await;

    wait_count(&app, "SELECT COUNT(*) FROM rejected_callbacks", 4).await;
    wait_count(&app, "SELECT COUNT(*) FROM callback_receipts", 3).await;
    wait_count(&app, "SELECT COUNT(*) FROM idempotency_keys", 3).await;
    // Another run changes nothing more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(keys(&app).await, ["key-leased", "key-new", "key-retryable"], "completed and old: gone; the rest kept");
    let receipts: Vec<String> = sqlx::query_scalar("SELECT payment_id FROM callback_receipts ORDER BY payment_id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    let mut kept = ids[1..].to_vec();
    kept.sort();
    assert_eq!(receipts, kept);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM rejected_callbacks WHERE received_at < now() - interval '7 days'").await,
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM rejected_callbacks").await,
        4,
        "three recent forgeries and the 6-day row"
    );
    // Payments and their events are not this job's: all still there.
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 4);
    // A deleted key is gone for good: the same key now makes a new payment.
    let mut request = app.checkout_request("retention-old", 1234, "USD");
    request.idempotency_key = "key-old".into();
    let again = app.grpc.clone().create_checkout(request).await.unwrap().into_inner();
    assert!(!again.replayed);
    assert_ne!(again.payment.unwrap().id, ids[0]);
    app.stop().await;
}
