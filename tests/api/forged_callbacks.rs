//! Arbitrary callbacks, black box: bodies and headers generated with proptest (bounded by
//! `PROPTEST_CASES`, default 48 per provider), posted to each server-to-server provider's
//! callback route, naming a real payment. Every answer is a 4xx (never 5xx) and the payment and
//! its event log are unchanged.

use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::common::{TestApp, spawn_app_with};
use paygate::providers::hitpay::HitpayAccount;
use paygate::providers::xpay::XpayAccount;
use paygate::providers::xstak::XstakAccount;

fn cases() -> usize {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

/// A body that names `payment_id` the ways our providers do, with arbitrary other fields; or
/// arbitrary bytes.
fn body(payment_id: String) -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        prop::sample::select(vec!["succeeded", "completed", "complete", "paid", "SUCCESS"]).prop_map(Value::from),
    ];
    let id = payment_id.clone();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (value.clone(), value.clone(), ".{0,12}").prop_map(move |(status, amount, event)| {
            json!({
                "id": event, "event_id": event, "payment_id": id, "status": status,
                "amount": { "amount_minor": amount, "currency": "USD" }, "occurred_at": "2026-11-23T10:00:00Z",
                "type": "checkout.session.completed", "reference_number": id,
                "data": { "object": { "metadata": { "paygate_payment_id": id }, "status": status } },
            })
            .to_string()
            .into_bytes()
        }),
        (value, ".{0,64}").prop_map(move |(status, hmac)| {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("reference_number", &payment_id).append_pair("status", &status.to_string());
            form.append_pair("hmac", &hmac);
            form.finish().into_bytes()
        }),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop::sample::select(vec![
        "paygate-sandbox-signature",
        "xpay-signature",
        "x-signature",
        "hitpay-signature",
        "x-random",
    ]);
    let value = prop_oneof![
        "[ -~]{0,80}",
        "[0-9a-f]{64}",
        "[0-9a-f]{64}".prop_map(|h| format!("t={},v1={h}", chrono::Utc::now().timestamp())),
    ];
    prop::collection::vec((name.prop_map(str::to_owned), value), 0..3)
}

async fn snapshot(app: &TestApp, id: &str) -> (String, i64, String, i64) {
    sqlx::query_as(
        "SELECT status, version, updated_at::text, (SELECT COUNT(*) FROM payment_events WHERE payment_id = $1) \
         FROM payments WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn arbitrary_callbacks_never_change_a_payment_and_never_answer_5xx() {
    let app = spawn_app_with(
        |config| {
            let base_url = "http://127.0.0.1:9".to_owned();
            config.providers.xpay.accounts.insert(
                "default".into(),
                XpayAccount {
                    base_url: base_url.clone(),
                    secret_key: "sk_test_forged".into(),
                    webhook_secrets: vec!["whsec_forged".into()],
                    ..Default::default()
                },
            );
            config.providers.hitpay.accounts.insert(
                "default".into(),
                HitpayAccount {
                    base_url: format!("{base_url}/v1"),
                    api_key: "k".into(),
                    salt: "salt".into(),
                    ..Default::default()
                },
            );
            config.providers.xstak.accounts.insert(
                "default".into(),
                XstakAccount {
                    base_url: base_url.clone(),
                    api_key: "k".into(),
                    account_id: "acc".into(),
                    hmac_secret: "h".into(),
                    webhook_secret: "w".into(),
                    ..Default::default()
                },
            );
        },
        Vec::new(),
    )
    .await;
    let payment = app.create_payment("forged-callbacks").await;
    let before = snapshot(&app, &payment.id).await;
    let mut runner = TestRunner::deterministic();
    let strategy = (headers(), body(payment.id.clone()));
    for provider in ["sandbox", "xpay", "hitpay", "xstak"] {
        for _ in 0..cases() {
            let (headers, body) = strategy.new_tree(&mut runner).expect("case").current();
            let mut request = app.client.post(format!("{}/callbacks/{provider}/default", app.http)).body(body.clone());
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let response = request.timeout(Duration::from_secs(10)).send().await.expect("an answer");
            let status = response.status().as_u16();
            assert!(
                (400..500).contains(&status),
                "{provider}: {status} for headers {headers:?} body {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    assert_eq!(snapshot(&app, &payment.id).await, before, "the payment and its events are unchanged");
    app.stop().await;
}
