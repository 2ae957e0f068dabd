//! Shared property tests of callback verification: arbitrary bodies, headers and queries never
//! panic a provider's parser or verifier and never verify without the key. Each provider's
//! tests call [`never_verifies_without_the_key`] with its adapter and the header it reads.

use chrono::Utc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use super::{Provider, RawCallback};

/// Cases per property: `PROPTEST_CASES` when set, else a bound that keeps CI quick.
pub(crate) fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Field names callbacks of our providers carry, so generated JSON reaches past the first lookup.
const FIELDS: &[&str] = &[
    "id",
    "event_id",
    "payment_id",
    "status",
    "amount",
    "amount_minor",
    "currency",
    "type",
    "data",
    "object",
    "metadata",
    "paygate_payment_id",
    "reference_number",
    "payment_request_id",
    "hmac",
    "hash",
    "order_id",
    "requestId",
    "orderAmount",
    "accountId",
    "payment_intent_id",
    "occurred_at",
    "created",
    "transactionId",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
        prop::sample::select(vec!["succeeded", "completed", "complete", "paid", "SUCCESS", "failed", "USD", "EGP"])
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        json().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), ".{0,20}", 0..8).prop_map(|m| {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in m {
                form.append_pair(k, &v);
            }
            form.finish().into_bytes()
        }),
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        "[0-9a-fA-F]{64}",
        (any::<i64>(), "[0-9a-f]{64}").prop_map(|(t, h)| format!("t={t},v1={h}")),
        "[0-9a-f]{64}".prop_map(|h| format!("t={},v1={h}", Utc::now().timestamp())),
    ]
}

/// Arbitrary callbacks for `adapter` (its own `signature_headers` among random ones) never
/// verify, and neither verification nor the unverified-payment hint panics.
pub(crate) fn never_verifies_without_the_key(adapter: &dyn Provider, signature_headers: &[&str]) {
    let mut names: Vec<String> = signature_headers.iter().map(|s| s.to_string()).collect();
    names.extend(["content-type".to_owned(), "x-random".to_owned()]);
    let headers = prop::collection::vec((prop::sample::select(names), header_value()), 0..4);
    let query = prop_oneof![Just(String::new()), "[a-z_]{1,10}=[A-Za-z0-9_]{0,30}".prop_map(|s| s)];
    let mut runner = TestRunner::new(config());
    runner
        .run(&(headers, body(), query), |(headers, body, query)| {
            let raw = RawCallback::new(headers, body, query);
            let verified = adapter.verify_callback(&raw, Utc::now());
            let _ = adapter.unverified_payment_hint(&raw);
            prop_assert!(verified.is_err(), "verified without the key: {raw:?}");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", adapter.name()));
}
