//! Every allowed and disallowed status transition, driven by signed callbacks through VerifyCallback.

use std::collections::HashMap;

use crate::common::{SANDBOX_SECRET, TestApp, sandbox_body, spawn_app};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::signature::sign_timestamped;

const STATUSES: [&str; 6] = ["pending", "processing", "succeeded", "failed", "cancelled", "expired"];

async fn callback(app: &TestApp, event_id: &str, payment_id: &str, status: &str) -> pb::VerifyCallbackResponse {
    let body = sandbox_body(event_id, payment_id, status, 1234, "USD");
    let signature = sign_timestamped(SANDBOX_SECRET.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes());
    let request = pb::VerifyCallbackRequest {
        provider: "sandbox".into(),
        body: body.into_bytes(),
        headers: HashMap::from([("Paygate-Sandbox-Signature".to_owned(), signature)]),
        ..Default::default()
    };
    app.grpc.clone().verify_callback(request).await.expect("callback accepted").into_inner()
}

fn allowed(from: &str, to: &str) -> bool {
    from != to
        && match from {
            "pending" | "processing" | "failed" => true,
            "cancelled" | "expired" => to == "succeeded",
            _ => false,
        }
}

fn pb_status(s: &str) -> PaymentStatus {
    PaymentStatus::from_str_name(&format!("PAYMENT_STATUS_{}", s.to_uppercase())).expect("known status")
}

#[tokio::test]
async fn full_transition_matrix() {
    let app = spawn_app().await;
    for from in STATUSES {
        for to in STATUSES {
            let payment = app.create_payment(&format!("{from}-{to}")).await;
            if from != "pending" {
                let setup = callback(&app, &format!("setup-{from}-{to}"), &payment.id, from).await;
                assert!(setup.status_changed, "reaching {from}");
            }
            let before = app.get_payment(&payment.id).await;
            assert_eq!(before.status(), pb_status(from));

            let response = callback(&app, &format!("evt-{from}-{to}"), &payment.id, to).await;
            let after = app.get_payment(&payment.id).await;
            let expect = allowed(from, to);
            assert_eq!(response.status_changed, expect, "{from} -> {to}");
            assert!(!response.duplicate);
            if expect {
                assert_eq!(after.status(), pb_status(to), "{from} -> {to}");
                assert_eq!(after.version, before.version + 1, "{from} -> {to}");
                let (a, b) = (after.updated_at.unwrap(), before.updated_at.unwrap());
                assert!((a.seconds, a.nanos) > (b.seconds, b.nanos));
            } else {
                assert_eq!(after, before, "{from} -> {to}: the row must not change at all");
            }
            // Either way the callback is in the log; only applied ones carry a version.
            let (kind, version): (String, Option<i64>) = sqlx::query_as(
                "SELECT kind, version FROM payment_events WHERE payment_id = $1 AND provider_event_id = $2",
            )
            .bind(&payment.id)
            .bind(format!("evt-{from}-{to}"))
            .fetch_one(&app.db)
            .await
            .unwrap();
            match (expect, from == to) {
                (true, _) => assert_eq!((kind.as_str(), version), ("status_changed", Some(after.version))),
                (false, true) => assert_eq!((kind.as_str(), version), ("same_status", None)),
                (false, false) => assert_eq!((kind.as_str(), version), ("transition_rejected", None)),
            }
        }
    }
}

#[tokio::test]
async fn versions_and_events_agree() {
    let app = spawn_app().await;
    let payment = app.create_payment("events").await;
    for (n, status) in ["processing", "failed", "pending", "succeeded", "failed"].iter().enumerate() {
        callback(&app, &format!("e{n}"), &payment.id, status).await;
    }
    let last = app.get_payment(&payment.id).await;
    assert_eq!(last.status(), PaymentStatus::Succeeded);
    // One applied event per version, 1..=version, in sequence order.
    let versions: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM payment_events WHERE payment_id = $1 AND version IS NOT NULL ORDER BY sequence",
    )
    .bind(&payment.id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(versions, (1..=last.version).collect::<Vec<_>>());
    let snapshot_status: String =
        sqlx::query_scalar("SELECT snapshot->>'status' FROM payment_events WHERE payment_id = $1 AND version = $2")
            .bind(&payment.id)
            .bind(last.version)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(snapshot_status, "succeeded");
    // The log is append-only: no UPDATE, DELETE (outside the retention job) or TRUNCATE.
    for sql in ["UPDATE payment_events SET kind = 'x'", "DELETE FROM payment_events", "TRUNCATE payment_events CASCADE"]
    {
        assert!(sqlx::query(sql).execute(&app.db).await.is_err(), "{sql}");
    }
    let versions_after: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM payment_events WHERE payment_id = $1 AND version IS NOT NULL")
            .bind(&payment.id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(versions_after, last.version);
}

#[tokio::test]
async fn expiry_sweep_expires_open_payments_only() {
    let app = spawn_app().await;
    let open = app.create_payment("exp-open").await;
    let paid = app.create_payment("exp-paid").await;
    callback(&app, "paid", &paid.id, "succeeded").await;
    sqlx::query("UPDATE payments SET expires_at = now() - interval '1 minute'").execute(&app.db).await.unwrap();
    sqlx::query("UPDATE provider_checks SET due_at = now()").execute(&app.db).await.unwrap();

    // The sandbox has no lookup: its expiry check expires locally; the paid one's check ends.
    app.gateway.run_due_checks().await.unwrap();
    let expired = app.get_payment(&open.id).await;
    assert_eq!(expired.status(), PaymentStatus::Expired);
    assert_eq!(app.get_payment(&paid.id).await.status(), PaymentStatus::Succeeded);
    let source: String = sqlx::query_scalar("SELECT source FROM payment_events WHERE payment_id = $1 AND version = $2")
        .bind(&open.id)
        .bind(expired.version)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(source, "expiry");
    assert_eq!(app.gateway.metrics().events("sandbox", "local_expiry"), 1);
    // Nothing left to check: the paid payment's row went, the expired one's is parked (not due,
    // keeping its last check time for later untrusted triggers).
    let due =
        "SELECT COUNT(*) FROM provider_checks WHERE due_at < now() + interval '1 year' OR leased_until IS NOT NULL";
    assert_eq!(app.count(due).await, 0, "nothing left to check");
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_checks").await, 1, "the expired payment's row is parked");
    assert_eq!(app.gateway.run_due_checks().await.unwrap(), 0);
    // A verified late success still wins over expiry.
    assert!(callback(&app, "late", &open.id, "succeeded").await.status_changed);
}
