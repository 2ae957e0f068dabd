//! 100 concurrent requests, black box (in process, a 10-connection pool so requests queue):
//! identical creates call the provider once, identical callbacks change the payment once, and
//! different callbacks for one payment leave a chain of changes the state machine allows.

use std::time::Duration;

use futures::future::join_all;

use crate::common::{self, TestApp, sandbox_body, spawn_app_with};
use crate::xpay::session_created;
use paygate::domain::PaymentStatus as Domain;
use paygate::domain::status::Transition;
use paygate::pb;
use paygate::providers::xpay::XpayAccount;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request};

const N: usize = 100;

async fn app(adjust: impl FnOnce(&mut paygate::config::Config)) -> TestApp {
    spawn_app_with(
        |config| {
            config.database.max_connections = 10;
            adjust(config);
        },
        Vec::new(),
    )
    .await
}

#[tokio::test]
async fn a_hundred_identical_creates_make_one_provider_call() {
    let mock = MockServer::start().await;
    // Slow enough that all hundred arrive while the first create is at the provider.
    Mock::given(method("POST"))
        .and(path("/checkout/sessions"))
        .respond_with(|r: &Request| session_created(r).set_delay(Duration::from_millis(500)))
        .mount(&mock)
        .await;
    let base_url = mock.uri();
    let app = app(|config| {
        config.providers.xpay.accounts.insert(
            "default".into(),
            XpayAccount {
                base_url,
                secret_key: "sk_test_51PaygateConcurrency".into(),
                webhook_secrets: vec!["whsec_test".into()],
                ..Default::default()
            },
        );
    })
    .await;
    let request = pb::CreateCheckoutRequest {
        provider: "xpay".into(),
        merchant_reference: "concurrent-create".into(),
        amount: Some(pb::Money { amount_minor: 149_900, currency: "EGP".into() }),
        description: "Test product".into(),
        return_url: "https://shop.example/return".into(),
        cancel_url: "https://shop.example/cancel".into(),
        idempotency_key: "one-key-for-all".into(),
        ..Default::default()
    };
    let calls = (0..N).map(|_| {
        let mut grpc = app.grpc.clone();
        let request = request.clone();
        async move { grpc.create_checkout(request).await.map(tonic::Response::into_inner) }
    });
    let answers = join_all(calls).await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.expect("every duplicate is answered")).collect();
    let first: Vec<_> = answers.iter().filter(|a| !a.replayed).collect();
    assert_eq!(first.len(), 1, "exactly one answer is not a replay");
    let id = &first[0].payment.as_ref().unwrap().id;
    assert!(answers.iter().all(|a| &a.payment.as_ref().unwrap().id == id), "one payment for one key");
    assert_eq!(common::requests_to(&mock, "POST", "/checkout/sessions").await, 1, "one provider call");
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_hundred_identical_callbacks_change_the_payment_once() {
    let app = app(|_| {}).await;
    let payment = app.create_payment("concurrent-callbacks").await;
    let body = sandbox_body("evt_same", &payment.id, "succeeded", 1234, "USD");
    let answers = join_all((0..N).map(|_| app.post_sandbox_callback(&body))).await;
    let mut changed = 0;
    let mut duplicates = 0;
    for answer in answers {
        assert_eq!(answer.status().as_u16(), 200, "never 5xx, never a conflict");
        let json: serde_json::Value = answer.json().await.unwrap();
        changed += usize::from(json["status_changed"] == true);
        duplicates += usize::from(json["duplicate"] == true);
    }
    assert_eq!((changed, duplicates), (1, N - 1));
    let applied = app.applied(&payment.id).await;
    assert_eq!(applied.iter().filter(|(_, source)| source == "callback").count(), 1, "one applied change: {applied:?}");
    let kinds = app.event_kinds(&payment.id, "callback").await;
    assert_eq!(kinds.iter().filter(|k| *k == "duplicate").count(), N - 1, "{kinds:?}");
    assert_eq!(app.get_payment(&payment.id).await.status(), pb::PaymentStatus::Succeeded);
    app.stop().await;
}

#[tokio::test]
async fn a_hundred_different_callbacks_for_one_payment_end_in_an_allowed_state() {
    let app = app(|_| {}).await;
    let payment = app.create_payment("concurrent-different").await;
    let statuses = ["pending", "processing", "succeeded", "failed", "cancelled", "expired"];
    let bodies: Vec<String> = (0..N)
        .map(|i| sandbox_body(&format!("evt_{i}"), &payment.id, statuses[i % statuses.len()], 1234, "USD"))
        .collect();
    let answers = join_all(bodies.iter().map(|body| app.post_sandbox_callback(body))).await;
    for answer in answers {
        assert_eq!(answer.status().as_u16(), 200, "never 5xx");
    }
    // Every applied change follows the state machine from the status before it, versions
    // go up by one, and the payment is what the last change made it.
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT version, status, previous_status FROM payment_events \
         WHERE payment_id = $1 AND version IS NOT NULL ORDER BY sequence",
    )
    .bind(&payment.id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let mut current: Option<Domain> = None;
    for (i, (version, status, previous)) in rows.iter().enumerate() {
        assert_eq!(*version, i as i64 + 1, "versions: {rows:?}");
        let to: Domain = status.parse().unwrap_or_else(|_| panic!("status {status}"));
        if let Some(from) = current {
            assert_eq!(previous.as_deref(), Some(from.as_str()), "{rows:?}");
            if from != to {
                assert_eq!(from.transition(to), Transition::Apply, "{from:?} → {to:?} is not allowed: {rows:?}");
            }
        }
        current = Some(to);
    }
    let last = current.expect("events");
    let now = app.get_payment(&payment.id).await;
    assert_eq!(now.version, rows.len() as i64);
    assert_eq!(
        pb::PaymentStatus::try_from(now.status).unwrap().as_str_name().to_lowercase(),
        format!("payment_status_{}", last.as_str())
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM callback_receipts").await, N as i64, "each event recorded once");
    app.stop().await;
}
