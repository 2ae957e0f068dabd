//! Callbacks through the HTTP ingress and VerifyCallback: dedupe, forgery, staleness, amount
//! tampering, unknown payments and the JSON bodies.

use std::collections::HashMap;

use crate::common::{SANDBOX_SECRET, TestApp, error_info, sandbox_body, spawn_app, spawn_app_with};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::signature::sign_timestamped;

fn signed_now(body: &str) -> String {
    sign_timestamped(SANDBOX_SECRET.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes())
}

fn verify_request(body: &str, signature: &str) -> pb::VerifyCallbackRequest {
    let mut headers = HashMap::new();
    headers.insert("paygate-SANDBOX-signature".to_owned(), signature.to_owned());
    headers.insert("Content-Type".to_owned(), "application/json".to_owned());
    pb::VerifyCallbackRequest {
        provider: "sandbox".into(),
        account: String::new(),
        body: body.as_bytes().to_vec(),
        headers,
        query: String::new(),
    }
}

async fn rejected(app: &TestApp, reason: &str) -> i64 {
    app.count(&format!("SELECT COUNT(*) FROM rejected_callbacks WHERE reason = '{reason}'")).await
}

#[tokio::test]
async fn accepted_then_duplicate_over_http() {
    let app = spawn_app().await;
    let payment = app.create_payment("cb-1").await;
    let body = sandbox_body("evt_a", &payment.id, "succeeded", 1234, "USD");

    let first = app.post_sandbox_callback(&body).await;
    assert_eq!(first.status(), 200);
    let json: serde_json::Value = first.json().await.unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "payment_id": payment.id, "event_id": "evt_a", "duplicate": false, "status_changed": true })
    );
    let after = app.get_payment(&payment.id).await;
    assert_eq!(after.status(), PaymentStatus::Succeeded);

    let again = app.post_sandbox_callback(&body).await;
    assert_eq!(again.status(), 200);
    let json: serde_json::Value = again.json().await.unwrap();
    assert_eq!(json["duplicate"], true);
    assert_eq!(json["status_changed"], false);
    assert_eq!(app.get_payment(&payment.id).await.version, after.version);

    // The same event through VerifyCallback is a duplicate too.
    let response =
        app.grpc.clone().verify_callback(verify_request(&body, &signed_now(&body))).await.unwrap().into_inner();
    assert!(response.duplicate && !response.status_changed);
    assert_eq!(response.event_id, "evt_a");
    assert_eq!(response.payment.unwrap().version, after.version);
}

#[tokio::test]
async fn concurrent_duplicates_apply_once_and_never_500() {
    let app = spawn_app().await;
    let payment = app.create_payment("cb-race").await;
    let body = sandbox_body("evt_race", &payment.id, "succeeded", 1234, "USD");
    let responses = futures::future::join_all((0..8).map(|_| app.post_sandbox_callback(&body))).await;
    let mut changed = 0;
    let mut duplicates = 0;
    for r in responses {
        assert_eq!(r.status(), 200);
        let json: serde_json::Value = r.json().await.unwrap();
        changed += usize::from(json["status_changed"] == true);
        duplicates += usize::from(json["duplicate"] == true);
    }
    assert_eq!((changed, duplicates), (1, 7));
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM payment_events WHERE payment_id = $1 AND source = 'callback'")
            .bind(&payment.id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(kinds.iter().filter(|k| *k == "status_changed").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "duplicate").count(), 7);
}

#[tokio::test]
async fn forged_and_stale_callbacks_change_nothing_and_are_audited() {
    let app = spawn_app().await;
    let payment = app.create_payment("cb-forged").await;
    let body = sandbox_body("evt_f", &payment.id, "succeeded", 1234, "USD");
    let now = chrono::Utc::now().timestamp();

    let forged = sign_timestamped(b"not-the-secret", now, body.as_bytes());
    let r = app.post_callback("sandbox/default", &body, &forged).await;
    assert_eq!(r.status(), 401);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!(json["code"], "SIGNATURE_INVALID");
    assert!(!json["message"].as_str().unwrap().contains(SANDBOX_SECRET));

    for header in ["", "garbage", "t=abc,v1=00", &format!("t={now}")] {
        assert_eq!(app.post_callback("sandbox/default", &body, header).await.status(), 401, "{header:?}");
    }
    let tampered = signed_now(&body).replace("1234", "1");
    assert_eq!(app.post_callback("sandbox/default", &body.replace("1234", "1"), &tampered).await.status(), 401);

    let stale = sign_timestamped(SANDBOX_SECRET.as_bytes(), now - 301, body.as_bytes());
    let r = app.post_callback("sandbox/default", &body, &stale).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], "SIGNATURE_EXPIRED");
    let future = sign_timestamped(SANDBOX_SECRET.as_bytes(), now + 400, body.as_bytes());
    assert_eq!(app.post_callback("sandbox/default", &body, &future).await.status(), 401);

    let status = app.grpc.clone().verify_callback(verify_request(&body, &forged)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(error_info(&status).0, "SIGNATURE_INVALID");
    let status = app.grpc.clone().verify_callback(verify_request(&body, &stale)).await.unwrap_err();
    assert_eq!(error_info(&status).0, "SIGNATURE_EXPIRED");

    let unchanged = app.get_payment(&payment.id).await;
    assert_eq!(unchanged.status(), PaymentStatus::Pending);
    assert_eq!(unchanged.version, payment.version);
    assert_eq!(rejected(&app, "SIGNATURE_INVALID").await, 7);
    assert_eq!(rejected(&app, "SIGNATURE_EXPIRED").await, 3);
    assert_eq!(app.count("SELECT COUNT(*) FROM callback_receipts").await, 0);

    // The genuine event still goes through afterwards: nothing was marked seen.
    assert_eq!(app.post_sandbox_callback(&body).await.status(), 200);
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
}

#[tokio::test]
async fn amount_tampering_is_recorded_but_never_pays() {
    let app = spawn_app().await;
    let payment = app.create_payment("cb-amount").await;

    // Over HTTP: 200 so the provider stops retrying, status unchanged, failure recorded.
    let body = sandbox_body("evt_m1", &payment.id, "succeeded", 1, "USD");
    let r = app.post_sandbox_callback(&body).await;
    assert_eq!(r.status(), 200);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(false)));
    let p = app.get_payment(&payment.id).await;
    assert_eq!(p.status(), PaymentStatus::Pending);
    assert_eq!(p.failure_code, "AMOUNT_MISMATCH");
    assert_eq!(p.version, payment.version + 1);

    // Over gRPC: FAILED_PRECONDITION after commit; a duplicate of it is OK with duplicate = true.
    let body = sandbox_body("evt_m2", &payment.id, "succeeded", 1234, "EUR");
    let status = app.grpc.clone().verify_callback(verify_request(&body, &signed_now(&body))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "AMOUNT_MISMATCH");
    assert_eq!(metadata["payment_id"], payment.id);
    let dup = app.grpc.clone().verify_callback(verify_request(&body, &signed_now(&body))).await.unwrap().into_inner();
    assert!(dup.duplicate);
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);

    // The right amount then pays and clears the failure fields.
    let good = sandbox_body("evt_ok", &payment.id, "succeeded", 1234, "USD");
    let ok = app.grpc.clone().verify_callback(verify_request(&good, &signed_now(&good))).await.unwrap().into_inner();
    assert!(ok.status_changed);
    let paid = ok.payment.unwrap();
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    assert_eq!(paid.failure_code, "");
}

#[tokio::test]
async fn unknown_payment_or_wrong_account_is_404_and_not_marked_seen() {
    let app = spawn_app_with(
        |c| {
            c.providers.sandbox.accounts.insert(
                "shop-2".into(),
                paygate::providers::sandbox::SandboxAccount {
                    webhook_secret: Some("whsec_shop_2".into()),
                    ..Default::default()
                },
            );
        },
        Vec::new(),
    )
    .await;
    let payment = app.create_payment("cb-404").await;

    let unknown = sandbox_body("evt_u", "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", "succeeded", 1234, "USD");
    let r = app.post_sandbox_callback(&unknown).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], "PAYMENT_NOT_FOUND");
    let garbage_id = sandbox_body("evt_g", "nope", "succeeded", 1234, "USD");
    assert_eq!(app.post_sandbox_callback(&garbage_id).await.status(), 404);
    let status = app.grpc.clone().verify_callback(verify_request(&unknown, &signed_now(&unknown))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(error_info(&status).0, "PAYMENT_NOT_FOUND");
    assert_eq!(rejected(&app, "PAYMENT_NOT_FOUND").await, 3);

    // Unknown provider or account in the path → 404; other methods → 405.
    let body = sandbox_body("evt_p", &payment.id, "succeeded", 1234, "USD");
    for path in ["sandbox/no-such-shop", "paypal/default", "xpay"] {
        let r = app.post_callback(path, &body, &signed_now(&body)).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = app.client.get(format!("{}/callbacks/sandbox/default", app.http)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], "METHOD_NOT_ALLOWED");
    assert_eq!(app.client.put(format!("{}/callbacks/sandbox", app.http)).send().await.unwrap().status(), 405);

    // A correctly signed callback from another configured account is not about its payments:
    // 404, and the event is not marked seen, so the right account's delivery still applies.
    let other = sign_timestamped(b"whsec_shop_2", chrono::Utc::now().timestamp(), body.as_bytes());
    let r = app.post_callback("sandbox/shop-2", &body, &other).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], "PAYMENT_NOT_FOUND");
    assert_eq!(app.count("SELECT COUNT(*) FROM callback_receipts").await, 0);

    // The account-less route is the default account; the same event id now applies.
    let r = app.post_callback("sandbox", &body, &signed_now(&body)).await;
    assert_eq!(r.status(), 200);
    let json: serde_json::Value = r.json().await.unwrap();
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(true)));
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
}

#[tokio::test]
async fn malformed_signed_bodies_are_400() {
    let app = spawn_app().await;
    let payment = app.create_payment("cb-400").await;
    let bodies = [
        "not json".to_owned(),
        sandbox_body("evt_x", &payment.id, "paid", 1234, "USD"),
        sandbox_body("evt_x", &payment.id, "succeeded", 1234, "USD")
            .replace("\"occurred_at\":\"2026-11-23T10:00:00Z\"", "\"occurred_at\":\"soon\""),
        sandbox_body("evt_x", &payment.id, "succeeded", 1234, "USD").replace("1234", "12.34"),
        serde_json::json!({ "event_id": "e", "payment_id": payment.id, "status": "succeeded" }).to_string(),
    ];
    for body in &bodies {
        let r = app.post_sandbox_callback(body).await;
        assert_eq!(r.status(), 400, "{body}");
        let json: serde_json::Value = r.json().await.unwrap();
        assert_eq!(json["code"], "INVALID_FIELD");
    }
    let status =
        app.grpc.clone().verify_callback(verify_request(&bodies[0], &signed_now(&bodies[0]))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_info(&status).1["field"], "body");
    assert_eq!(app.get_payment(&payment.id).await.version, payment.version);
}
