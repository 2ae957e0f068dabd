//! A tower layer around every gRPC service: one server span per request (its parent is the
//! caller's W3C `traceparent`/`tracestate` from the request metadata), and request counts and
//! latency by service, method and status code. Generic over the service, so new RPCs are covered
//! without changes here.
//!
//! The status code is read where gRPC puts it: in the response headers for an error answered at
//! once, else in the trailers at the end of the body (so a stream is counted when it ends). A
//! body dropped before its trailers (the client went away) counts as `CANCELLED`. Labels stay
//! bounded: a path the server does not serve answers `UNIMPLEMENTED` and is labelled `unknown`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::Metrics;

/// Adds [`GrpcTelemetry`] to a service.
#[derive(Clone, Debug)]
pub struct GrpcTelemetryLayer {
    metrics: Metrics,
}

impl GrpcTelemetryLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcTelemetryLayer {
    type Service = GrpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTelemetry { inner, metrics: self.metrics.clone() }
    }
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct GrpcTelemetry<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcTelemetry<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = format!("{service}/{method}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        // Fails only without an OpenTelemetry layer (then there is nothing to parent).
        let _ = span.set_parent(crate::telemetry::extract_context(request.headers()));
        let started = Instant::now();
        let future = span.in_scope(|| self.inner.call(request)).instrument(span.clone());
        let done = Done { metrics: self.metrics.clone(), service, method, started, span };
        Box::pin(async move {
            match future.await {
                Ok(response) => {
                    let done = match header_code(response.headers()) {
                        Some(code) => {
                            done.finish(code);
                            None
                        }
                        None => Some(done),
                    };
                    Ok(response.map(|inner| MeteredBody { inner, done }))
                }
                Err(e) => {
                    done.finish(13);
                    Err(e)
                }
            }
        })
    }
}

/// What is recorded when the status is known.
struct Done {
    metrics: Metrics,
    service: String,
    method: String,
    started: Instant,
    span: tracing::Span,
}

impl Done {
    fn finish(self, code: i32) {
        let name = code_name(code);
        let (service, method) = if code == 12 { ("unknown", "unknown") } else { (&*self.service, &*self.method) };
        self.metrics.grpc_request(service, method, name, self.started.elapsed());
        self.span.record("rpc.grpc.status_code", code);
        if code != 0 {
            self.span.record("otel.status_code", "ERROR");
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the request when its trailers (or its end) pass.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        done: Option<Done>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(done) = this.project().done.take() {
                done.finish(1);
            }
        }
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|t| header_code(t).unwrap_or(0)),
            Poll::Ready(Some(Err(_))) => Some(13),
            Poll::Ready(None) => Some(0),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(done) = this.done.take()
        {
            done.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`); anything else is `unknown`.
fn split_path(path: &str) -> (String, String) {
    let valid = |s: &str| {
        !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    };
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) if valid(service) && valid(method) => (service.to_owned(), method.to_owned()),
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

/// The `grpc-status` of a header map (response headers or trailers).
fn header_code(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// The canonical name of a gRPC status code.
fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_bounded_labels() {
        assert_eq!(
            split_path("/paygate.v1.PaymentService/CreateCheckout"),
            ("paygate.v1.PaymentService".into(), "CreateCheckout".into())
        );
        for bad in ["", "/", "/x", "/a/b/c", "/a b/c", "no-slash"] {
            assert_eq!(split_path(bad), ("unknown".into(), "unknown".into()), "{bad}");
        }
    }

    #[test]
    fn codes_have_canonical_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
        assert_eq!(code_name(-1), "UNKNOWN");
    }
}
