//! Logging and tracing: `tracing` with text or JSON output, OpenTelemetry spans exported over
//! OTLP/gRPC when an endpoint is configured, and W3C trace-context propagation.
//!
//! - Export endpoint: `telemetry.otlp_endpoint`; when empty, the standard
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then `OTEL_EXPORTER_OTLP_ENDPOINT`; none = no export.
//! - Resource: `OTEL_SERVICE_NAME` (default `paygate`) and `OTEL_RESOURCE_ATTRIBUTES`.
//! - Sampling: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, and the batch exporter's
//!   `OTEL_BSP_*`, read by the OpenTelemetry SDK itself (default `parentbased_always_on`).
//! - Spans get trace ids even without export, so JSON logs carry the caller's `trace_id` and
//!   outgoing provider calls carry its `traceparent`.
//! - Text logs have ANSI colours only when standard output is a terminal; JSON never has.

use std::io::IsTerminal;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::TelemetryConfig;

/// Service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "paygate";

/// Spans of these targets never reach OpenTelemetry (transport internals and the exporter's own).
const OTEL_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,opentelemetry=off,\
                           opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Keeps the tracer provider alive; flushes and shuts the exporter down on drop.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {e}");
        }
    }
}

/// The OTLP endpoint traces go to: the config key wins, then the standard variables.
pub fn otlp_endpoint(configured: &str, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    set(Some(configured.to_owned()))
        .or_else(|| set(env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")))
        .or_else(|| set(env("OTEL_EXPORTER_OTLP_ENDPOINT")))
}

/// `service.name`: `OTEL_SERVICE_NAME`, else a `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else
/// [`DEFAULT_SERVICE_NAME`].
pub fn service_name(env: impl Fn(&str) -> Option<String>) -> String {
    let from_attributes = || {
        env("OTEL_RESOURCE_ATTRIBUTES")?
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| k.trim() == "service.name")
            .map(|(_, v)| v.trim().to_owned())
    };
    env("OTEL_SERVICE_NAME")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(from_attributes)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Installs the global subscriber and the W3C trace-context propagator. `RUST_LOG`, when set,
/// overrides `telemetry.log_filter` (for logs; spans sent to OpenTelemetry are `info` and up).
pub fn init(cfg: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&cfg.log_filter))?;
    let fmt = if cfg.log_format == "json" {
        let format = tracing_subscriber::fmt::format().json().with_current_span(false);
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .event_format(WithTraceIds(format))
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_ansi(std::io::stdout().is_terminal()).with_filter(filter).boxed()
    };

    // SDK defaults read OTEL_TRACES_SAMPLER(_ARG), OTEL_RESOURCE_ATTRIBUTES and OTEL_BSP_*.
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name(env_var)).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint(&cfg.otlp_endpoint, env_var) {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(DEFAULT_SERVICE_NAME))
        .with_filter(EnvFilter::try_new(OTEL_FILTER)?);
    tracing_subscriber::registry().with(fmt).with(otel).try_init()?;
    Ok(TelemetryGuard { provider: Some(provider) })
}

/// The trace context a request's headers carry (`traceparent`, `tracestate`), by the global
/// propagator; an empty context when there is none.
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes the current span's trace context into outgoing request headers.
pub fn inject_current_context(headers: &mut http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

/// A JSON event format with the OpenTelemetry `trace_id` and `span_id` of the event's span added.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = current_trace_ids();
        let parsed = ids.and_then(|ids| {
            Some((ids, serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line).ok()?))
        });
        match parsed {
            Some(((trace_id, span_id), mut object)) => {
                object.insert("trace_id".into(), trace_id.into());
                object.insert("span_id".into(), span_id.into());
                writeln!(writer, "{}", serde_json::Value::Object(object))
            }
            None => writer.write_str(&line),
        }
    }
}

/// The (trace id, span id) in hex of the innermost current span that OpenTelemetry knows. Read
/// through the registry rather than the formatter's context: with per-layer filters, that context
/// only sees spans the log filter enables (none at `warn`), while OpenTelemetry sees `info` spans.
fn current_trace_ids() -> Option<(String, String)> {
    use tracing_subscriber::registry::LookupSpan as _;
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(current.id()?)?;
        span.scope().find_map(|span| {
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), dispatch)?;
            let otel = cx.span();
            let sc = otel.span_context();
            sc.is_valid().then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn config_key_wins_over_the_standard_variables() {
        let both = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")];
        assert_eq!(otlp_endpoint("http://mine:4317", env(&both)).as_deref(), Some("http://mine:4317"));
        assert_eq!(otlp_endpoint("", env(&both)).as_deref(), Some("http://collector:4317"));
        let traces =
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4317")];
        assert_eq!(otlp_endpoint("", env(&traces)).as_deref(), Some("http://t:4317"));
        assert_eq!(otlp_endpoint("", env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])), None);
        assert_eq!(otlp_endpoint("", env(&[])), None);
    }

    #[test]
    fn service_name_from_the_standard_variables() {
        assert_eq!(service_name(env(&[])), "paygate");
        assert_eq!(service_name(env(&[("OTEL_SERVICE_NAME", "pay-eu")])), "pay-eu");
        let attrs = [("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod, service.name = pay-attr")];
        assert_eq!(service_name(env(&attrs)), "pay-attr");
        let both = [("OTEL_RESOURCE_ATTRIBUTES", "service.name=pay-attr"), ("OTEL_SERVICE_NAME", "pay-eu")];
        assert_eq!(service_name(env(&both)), "pay-eu", "OTEL_SERVICE_NAME wins");
        assert_eq!(service_name(env(&[("OTEL_SERVICE_NAME", "")])), "paygate");
    }

    #[test]
    fn trace_context_round_trips_through_headers() {
        let propagator = TraceContextPropagator::new();
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
        headers.insert("tracestate", "vendor=x".parse().unwrap());
        use opentelemetry::propagation::TextMapPropagator;
        let cx = propagator.extract(&HeaderExtractor(&headers));
        assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut out = http::HeaderMap::new();
        propagator.inject_context(&cx, &mut HeaderInjector(&mut out));
        assert_eq!(out["traceparent"], headers["traceparent"]);
        assert_eq!(out["tracestate"], "vendor=x");
    }
}
