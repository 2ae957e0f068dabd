//! Traces and logs of a real `paygate` process: a local OTLP collector (the trace service of
//! `opentelemetry-proto` on tonic) receives the spans of one CreateCheckout against a HitPay mock
//! under the caller's trace id; the mock sees a `traceparent` of that trace; JSON logs carry
//! `trace_id`/`span_id`; text logs written to a pipe have no ANSI colour codes.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use paygate::pb;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::common::{fresh_database_url, spawn_process, spawn_process_piped};
use crate::hitpay::{API_KEY, Encoding, RequestCreated, SALT};

/// The caller's trace: W3C ids the test makes up.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";
const CALLBACK_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// Everything the collector was sent.
#[derive(Clone, Default)]
struct Collector {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// A span as received, with its resource's attributes.
#[derive(Debug, Clone)]
struct Received {
    span: Span,
    resource: Vec<(String, String)>,
}

impl Received {
    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }

    fn span_id(&self) -> String {
        hex::encode(&self.span.span_id)
    }

    fn parent_id(&self) -> String {
        hex::encode(&self.span.parent_span_id)
    }

    fn attribute(&self, key: &str) -> Option<String> {
        self.span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| string(kv.value.as_ref()?))
    }
}

fn string(value: &opentelemetry_proto::tonic::common::v1::AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Collector {
    /// Serves on 127.0.0.1 until `stop`; returns the endpoint URL.
    async fn start(&self, stop: CancellationToken) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(paygate::listener::grpc_incoming(listener), stop.cancelled_owned()),
        );
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Received> {
        let requests = self.requests.lock().unwrap();
        let mut out = Vec::new();
        for request in requests.iter() {
            for rs in &request.resource_spans {
                let resource = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .filter_map(|kv| Some((kv.key.clone(), string(kv.value.as_ref()?)?)))
                    .collect::<Vec<_>>();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push(Received { span: span.clone(), resource: resource.clone() });
                    }
                }
            }
        }
        out
    }

    /// Waits (up to 15 s) until `done` holds for the spans received so far.
    async fn wait_for(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        for _ in 0..150 {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let spans = self.spans();
        let names: Vec<_> = spans.iter().map(|s| (s.span.name.clone(), s.trace_id())).collect();
        panic!("spans never arrived; got {names:?}");
    }
}

/// A HitPay double that opens payment requests.
async fn hitpay_mock() -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment-requests"))
        .respond_with(RequestCreated { encoding: Encoding::Form })
        .mount(&mock)
        .await;
    mock
}

fn hitpay_env(mock: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("PAYGATE_PROVIDERS__HITPAY__ACCOUNTS__DEFAULT__BASE_URL", format!("{}/v1", mock.uri())),
        ("PAYGATE_PROVIDERS__HITPAY__ACCOUNTS__DEFAULT__API_KEY", API_KEY.to_owned()),
        ("PAYGATE_PROVIDERS__HITPAY__ACCOUNTS__DEFAULT__SALT", SALT.to_owned()),
    ]
}

fn checkout_request() -> pb::CreateCheckoutRequest {
    pb::CreateCheckoutRequest {
        provider: "hitpay".into(),
        merchant_reference: "order-traced-1".into(),
        amount: Some(pb::Money { amount_minor: 250_000, currency: "SGD".into() }),
        return_url: "https://shop.example/return".into(),
        cancel_url: "https://shop.example/cancel".into(),
        idempotency_key: "traced-key-1".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn one_create_checkout_is_one_trace_under_the_callers_trace_id() {
    let stop = CancellationToken::new();
    let collector = Collector::default();
    let endpoint = collector.start(stop.clone()).await;
    let mock = hitpay_mock().await;
    let db_url = fresh_database_url().await;
    let mut env = hitpay_env(&mock);
    env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_SERVICE_NAME", "paygate-traced".to_owned()),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,service.name=overridden".to_owned()),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("PAYGATE_TELEMETRY__LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut process = spawn_process_piped(&db_url, &env).await;

    let mut request = tonic::Request::new(checkout_request());
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01");
    request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    request.metadata_mut().insert("tracestate", "caller=yes".parse().unwrap());
    let created = process.grpc.clone().create_checkout(request).await.expect("create checkout").into_inner();
    let payment = created.payment.expect("payment");

    // A forged callback traced by the provider: its trace id reaches the HTTP span and the log.
    let forged = reqwest::Client::new()
        .post(format!("{}/callbacks/hitpay/default", process.http))
        .header("traceparent", format!("00-{CALLBACK_TRACE_ID}-b7ad6b7169203331-01"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("payment_request_id=x&reference_number={}&status=completed&hmac=00", payment.id))
        .send()
        .await
        .expect("callback");
    assert_eq!(forged.status(), 401);

    let spans = collector
        .wait_for(|spans| {
            let in_trace = |name: &str| spans.iter().any(|s| s.trace_id() == TRACE_ID && s.span.name.starts_with(name));
            in_trace("paygate.v1.PaymentService/CreateCheckout")
                && in_trace("provider hitpay create")
                && in_trace("POST ")
                && spans.iter().filter(|s| s.trace_id() == TRACE_ID && s.span.name == "db.transaction").count() >= 2
                && spans.iter().any(|s| s.trace_id() == CALLBACK_TRACE_ID && s.span.name.starts_with("POST /callbacks"))
        })
        .await;
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.trace_id() == TRACE_ID && s.span.name.starts_with(name))
            .unwrap_or_else(|| panic!("no span {name}"))
            .clone()
    };
    let rpc = named("paygate.v1.PaymentService/CreateCheckout");
    assert_eq!(rpc.parent_id(), CALLER_SPAN_ID, "the RPC span's parent is the caller's span");
    assert_eq!(rpc.attribute("rpc.method").as_deref(), Some("CreateCheckout"));
    assert_eq!(rpc.attribute("rpc.grpc.status_code").as_deref(), Some("0"));
    let call = named("provider hitpay create");
    assert_eq!(call.attribute("outcome").as_deref(), Some("ok"));
    let http = named("POST ");
    assert_eq!(http.parent_id(), call.span_id(), "the HTTP call is inside the provider call");
    let operations: Vec<String> = spans
        .iter()
        .filter(|s| s.trace_id() == TRACE_ID && s.span.name == "db.transaction")
        .filter_map(|s| s.attribute("db.operation"))
        .collect();
    assert!(operations.contains(&"claim_idempotency_key".to_owned()), "{operations:?}");
    assert!(operations.contains(&"record_create".to_owned()), "{operations:?}");
    let resource = &rpc.resource;
    assert!(resource.contains(&("service.name".into(), "paygate-traced".into())), "{resource:?}");
    assert!(resource.contains(&("deployment.environment".into(), "ci".into())), "{resource:?}");
    // The callback's server span is named by its route, never by the path (which names accounts).
    let callback = spans
        .iter()
        .find(|s| s.trace_id() == CALLBACK_TRACE_ID && s.span.name == "POST /callbacks/{provider}/{account}")
        .expect("callback span");
    assert_eq!(callback.parent_id(), "b7ad6b7169203331");
    assert_eq!(callback.attribute("http.response.status_code").as_deref(), Some("401"));

    // The provider received the trace: same trace id, parent = the HTTP client span.
    let received = mock.received_requests().await.unwrap_or_default();
    let create = received.iter().find(|r| r.url.path() == "/v1/payment-requests").expect("create sent");
    let sent = create.headers.get("traceparent").expect("traceparent sent").to_str().unwrap();
    assert_eq!(sent, format!("00-{TRACE_ID}-{}-01", http.span_id()));
    assert_eq!(create.headers.get("tracestate").map(|v| v.to_str().unwrap()), Some("caller=yes"));

    // JSON logs: the refused callback's warning carries the callback's trace id.
    process.sigterm();
    assert!(process.wait_exit(Duration::from_secs(15)).await.is_some_and(|s| s.success()));
    let mut logs = String::new();
    process.child.stdout.take().expect("piped stdout").read_to_string(&mut logs).unwrap();
    let rejected: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "callback rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{logs}");
    assert_eq!(rejected[0]["trace_id"], CALLBACK_TRACE_ID, "{logs}");
    assert_eq!(rejected[0]["span_id"].as_str().map(str::len), Some(16), "{logs}");
    assert!(!logs.contains('\u{1b}'), "no ANSI codes in JSON logs");
    stop.cancel();
}

#[tokio::test]
async fn text_logs_into_a_pipe_have_no_colour_codes() {
    let db_url = fresh_database_url().await;
    let mut process = spawn_process_piped(&db_url, &[("RUST_LOG", "info")]).await;
    process.sigterm();
    assert!(process.wait_exit(Duration::from_secs(15)).await.is_some_and(|s| s.success()));
    let mut logs = String::new();
    process.child.stdout.take().expect("piped stdout").read_to_string(&mut logs).unwrap();
    assert!(logs.contains("paygate listening"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escape in piped logs: {logs:?}");
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_calls_still_carry_the_trace() {
    // No OTEL_* endpoint and no telemetry.otlp_endpoint: the process serves, and the caller's
    // trace still reaches the provider.
    let mock = hitpay_mock().await;
    let db_url = fresh_database_url().await;
    let env = hitpay_env(&mock);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let process = spawn_process(&db_url, &env).await;
    let mut request = tonic::Request::new(checkout_request());
    request.metadata_mut().insert("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01").parse().unwrap());
    process.grpc.clone().create_checkout(request).await.expect("create checkout");
    let received = mock.received_requests().await.unwrap_or_default();
    let sent = received[0].headers.get("traceparent").expect("traceparent sent").to_str().unwrap().to_owned();
    assert!(sent.starts_with(&format!("00-{TRACE_ID}-")) && !sent.contains(CALLER_SPAN_ID), "{sent}");
    process.sigterm();
}
