//! `GET /metrics` on `server.metrics_addr`: scraped after a sandbox payment and a forged
//! callback, parsed with a real Prometheus text parser (`prometheus-parse`).

use std::collections::HashMap;

use prometheus_parse::{Scrape, Value};

use crate::common::{press, sandbox_body, spawn_app, spawn_app_with};

/// Scrapes `/metrics` and parses it.
async fn scrape(app: &crate::common::TestApp) -> Scrape {
    let url = format!("{}/metrics", app.metrics.as_deref().expect("metrics listener on"));
    let response = reqwest::get(&url).await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics exposition ends with # EOF");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the exposition parses")
}

/// The sum of the samples named `name` whose labels include `labels` (counters, gauges; the
/// `_count` of a histogram).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => panic!("{name} is not a plain sample"),
        })
        .sum()
}

fn has(scrape: &Scrape, name: &str) -> bool {
    scrape.samples.iter().any(|s| s.metric == name)
}

#[tokio::test]
async fn metrics_move_after_a_sandbox_payment_and_a_forged_callback() {
    let app = spawn_app().await;
    let before = scrape(&app).await;
    assert_eq!(value(&before, "paygate_callbacks_total", &[]), 0.0);

    let payment = app.create_payment("order-metrics-1").await;
    assert_eq!(press(&app, &payment.id, "pay").await.status(), 303);
    let forged = sandbox_body("evt_forged", &payment.id, "succeeded", 1234, "USD");
    let refused = app.post_callback("sandbox/default", &forged, "t=1,v1=00").await;
    assert_eq!(refused.status(), 401);
    app.get_payment(&payment.id).await;

    let s = scrape(&app).await;
    let rpc = |method, code| value(&s, "paygate_grpc_requests_total", &[("method", method), ("code", code)]);
    assert_eq!(rpc("CreateCheckout", "OK"), 1.0);
    assert!(rpc("GetPaymentStatus", "OK") >= 1.0);
    assert_eq!(
        value(
            &s,
            "paygate_grpc_request_duration_seconds_count",
            &[("service", "paygate.v1.PaymentService"), ("method", "CreateCheckout")]
        ),
        1.0
    );
    let create = [("provider", "sandbox"), ("account", "default"), ("operation", "create"), ("outcome", "ok")];
    assert_eq!(value(&s, "paygate_provider_calls_total", &create), 1.0);
    assert_eq!(value(&s, "paygate_provider_call_duration_seconds_count", &create[..3]), 1.0);
    let verdict = |v| value(&s, "paygate_callbacks_total", &[("provider", "sandbox"), ("verdict", v)]);
    assert_eq!(verdict("applied"), 1.0, "the page's signed callback");
    assert_eq!(verdict("forged"), 1.0);
    assert_eq!(verdict("duplicate"), 0.0);
    let transition = [("provider", "sandbox"), ("from", "pending"), ("to", "succeeded")];
    assert_eq!(value(&s, "paygate_status_transitions_total", &transition), 1.0);
    assert!(value(&s, "paygate_db_acquire_wait_seconds_count", &[]) >= 2.0);
    assert!(value(&s, "paygate_db_pool_connections", &[("pool", "main")]) >= 1.0);
    assert_eq!(value(&s, "paygate_db_pool_max", &[("pool", "main")]), 5.0);
    assert!(value(&s, "paygate_db_pool_connections", &[("pool", "streams")]) >= 1.0);
    assert_eq!(value(&s, "paygate_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    // The payment's scheduled check is not due yet; the queue gauges are read all the same.
    assert_eq!(value(&s, "paygate_provider_checks_due", &[]), 0.0);
    assert!(has(&s, "paygate_provider_checks_oldest_due_age_seconds"));
    assert!(has(&s, "paygate_stream_subscribers"));
    assert!(has(&s, "paygate_stream_catch_ups_total"));
    // Bounded labels: never a payment id or a merchant reference.
    for sample in &s.samples {
        for (k, v) in sample.labels.iter() {
            assert!(!v.contains("pay_") && !v.contains("order-metrics"), "{} has {k}={v}", sample.metric);
        }
    }
    // The in-process accessors read the same registry.
    assert_eq!(app.gateway.metrics().provider_calls("sandbox", "create"), 1);

    // The public HTTP port does not expose metrics.
    let public = reqwest::get(format!("{}/metrics", app.http)).await.expect("public port");
    assert_eq!(public.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn callback_verdicts_and_unknown_paths_have_bounded_labels() {
    let app = spawn_app().await;
    let payment = app.create_payment("order-metrics-2").await;
    let body = sandbox_body("evt_1", &payment.id, "succeeded", 1234, "USD");
    assert_eq!(app.post_sandbox_callback(&body).await.status(), 200);
    assert_eq!(app.post_sandbox_callback(&body).await.status(), 200);
    let stale = paygate::providers::signature::sign_timestamped(
        crate::common::SANDBOX_SECRET.as_bytes(),
        chrono::Utc::now().timestamp() - 3600,
        body.as_bytes(),
    );
    assert_eq!(app.post_callback("sandbox/default", &body, &stale).await.status(), 401);
    let unknown = sandbox_body("evt_2", "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", "succeeded", 1234, "USD");
    assert_eq!(app.post_sandbox_callback(&unknown).await.status(), 404);
    let other = app.create_payment("order-metrics-3").await;
    let mismatch = sandbox_body("evt_3", &other.id, "succeeded", 999, "USD");
    assert_eq!(app.post_sandbox_callback(&mismatch).await.status(), 200);
    assert_eq!(app.post_sandbox_callback("{not json").await.status(), 400);
    // A provider name nobody configured is not a label value.
    assert_eq!(app.post_callback("no-such-provider/default", &body, "t=1,v1=00").await.status(), 404);
    // Nor is a gRPC path the server does not serve.
    let mut channel = tonic::client::Grpc::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr)).unwrap().connect().await.unwrap(),
    );
    channel.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = http::uri::PathAndQuery::from_static("/evil.Service/Method_12345");
    let answer = channel.unary(tonic::Request::new(()), path, codec).await;
    assert_eq!(answer.unwrap_err().code(), tonic::Code::Unimplemented);

    let s = scrape(&app).await;
    let verdicts: HashMap<String, f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == "paygate_callbacks_total")
        .map(|x| {
            let label = |k| x.labels.get(k).unwrap_or("").to_owned();
            (
                format!("{}/{}", label("provider"), label("verdict")),
                value(&s, &x.metric, &[("provider", &label("provider")), ("verdict", &label("verdict"))]),
            )
        })
        .collect();
    let expected: HashMap<String, f64> = [
        ("sandbox/applied", 1.0),
        ("sandbox/duplicate", 1.0),
        ("sandbox/stale", 1.0),
        ("sandbox/unknown_payment", 1.0),
        ("sandbox/amount_mismatch", 1.0),
        ("sandbox/malformed", 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(verdicts, expected);
    assert_eq!(value(&s, "paygate_grpc_requests_total", &[("method", "unknown"), ("code", "UNIMPLEMENTED")]), 1.0);
    assert!(!s.samples.iter().any(|x| x.labels.values().any(|v| v.contains("evil") || v.contains("no-such"))));
    app.stop().await;
}

#[tokio::test]
async fn an_empty_metrics_addr_turns_the_listener_off() {
    let app = spawn_app_with(|c| c.server.metrics_addr = String::new(), Vec::new()).await;
    assert!(app.metrics.is_none());
    app.stop().await;
}
