//! The one HTTP path every adapter uses to call its provider: a shared `reqwest` client with
//! timeouts, and a single mapping from transport and HTTP outcomes to [`ProviderError`].

use reqwest::{RequestBuilder, StatusCode};
use tracing::Instrument;

use super::ProviderError;

/// A provider's answer with a 2xx status.
#[derive(Debug, Clone)]
pub struct Success {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

/// Sends `request` and maps the outcome:
/// - no answer in time → [`ProviderError::Timeout`];
/// - connection failure before the request was written (refused, DNS, TLS) → `Unavailable`;
///   any later transport failure (reset, read error) → `OutcomeUnknown`;
/// - 2xx → `Ok` with the raw body;
/// - 401/403 (our credentials), 408, 429 and 503 → `Unavailable`: not processed, safe to resend;
/// - 500, 502, 504 and other 5xx → `OutcomeUnknown`: the provider may have acted on it;
/// - other 4xx → `Rejected`, with the code `error_code` finds in the body (or `http_<status>`).
///
/// Bodies are never logged or put in messages: providers echo customer data in errors.
///
/// Each call is a client span (method and host only: paths and queries carry ids) whose W3C
/// `traceparent`/`tracestate` go out with the request.
pub async fn send(
    request: RequestBuilder,
    error_code: impl Fn(&[u8]) -> Option<String>,
) -> Result<Success, ProviderError> {
    let (client, request) = request.build_split();
    let mut request = request.map_err(transport_error)?;
    let host = request.url().host_str().unwrap_or("").to_owned();
    let span = tracing::info_span!(
        "provider.http",
        otel.name = format!("{} {host}", request.method()),
        otel.kind = "client",
        http.request.method = %request.method(),
        server.address = %host,
        http.response.status_code = tracing::field::Empty,
    );
    async {
        crate::telemetry::inject_current_context(request.headers_mut());
        let response = client.execute(request).await.map_err(transport_error)?;
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        let body = response.bytes().await.map_err(transport_error)?.to_vec();
        classify(status, body, error_code)
    }
    .instrument(span)
    .await
}

/// The status/body half of [`send`], separate for testing.
pub fn classify(
    status: StatusCode,
    body: Vec<u8>,
    error_code: impl Fn(&[u8]) -> Option<String>,
) -> Result<Success, ProviderError> {
    if status.is_success() {
        return Ok(Success { status, body });
    }
    let not_processed = matches!(
        status,
        StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
    );
    if not_processed {
        return Err(ProviderError::Unavailable(format!("HTTP {}", status.as_u16())));
    }
    if status.is_server_error() {
        return Err(ProviderError::OutcomeUnknown(format!("HTTP {}", status.as_u16())));
    }
    let code = error_code(&body).filter(|c| !c.is_empty()).unwrap_or_else(|| format!("http_{}", status.as_u16()));
    Err(ProviderError::Rejected { code: truncate(&code, 64), message: format!("HTTP {}", status.as_u16()) })
}

fn transport_error(e: reqwest::Error) -> ProviderError {
    // A connect timeout is also a timeout to reqwest, but nothing was sent: not processed.
    if e.is_connect() {
        ProviderError::Unavailable(without_url(&e))
    } else if e.is_timeout() {
        ProviderError::Timeout
    } else {
        ProviderError::OutcomeUnknown(without_url(&e))
    }
}

/// The error text without the request URL (it may carry ids or credentials in the query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "transport"
    };
    format!("{kind} error")
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// A provider's error code as it may become our `provider_code`: kept only when it is a short
/// identifier (1–64 ASCII letters, digits, `_`, `-`, `.`). Free text could echo customer data.
pub fn sanitize_code(code: &str) -> Option<String> {
    let identifier = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    identifier.then(|| code.to_owned())
}

/// Parses a successful JSON body into `T`. A body of another shape means the provider answered
/// but not as documented: it may have acted on the request, so the outcome is unknown. The error
/// names the position only (serde's message can quote the provider's values).
pub fn json<T: serde::de::DeserializeOwned>(success: &Success) -> Result<T, ProviderError> {
    serde_json::from_slice(&success.body).map_err(|e| {
        ProviderError::OutcomeUnknown(format!(
            "unexpected response shape ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &[u8]) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(body).ok()?.get("code")?.as_str().map(String::from)
    }

    #[test]
    fn maps_statuses() {
        assert!(classify(StatusCode::CREATED, b"{}".to_vec(), code).is_ok());
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, br#"{"code":"invalid_amount"}"#.to_vec(), code).unwrap_err(),
            ProviderError::Rejected { code: "invalid_amount".into(), message: "HTTP 400".into() }
        );
        assert_eq!(
            classify(StatusCode::UNPROCESSABLE_ENTITY, b"<html>".to_vec(), code).unwrap_err(),
            ProviderError::Rejected { code: "http_422".into(), message: "HTTP 422".into() }
        );
        for status in [
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert!(matches!(classify(status, Vec::new(), code), Err(ProviderError::Unavailable(_))), "{status}");
        }
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::GATEWAY_TIMEOUT,
            StatusCode::NOT_IMPLEMENTED,
        ] {
            assert!(matches!(classify(status, Vec::new(), code), Err(ProviderError::OutcomeUnknown(_))), "{status}");
        }
    }

    #[test]
    fn only_identifier_codes_survive_sanitising() {
        for ok in ["ERR_AUTH_000", "parameter_invalid", "card-declined", "v1.bad"] {
            assert_eq!(sanitize_code(ok).as_deref(), Some(ok));
        }
        for bad in ["", "bad email mona@example.com", "x<y", "ünicode", &"a".repeat(65)] {
            assert_eq!(sanitize_code(bad), None, "{bad}");
        }
        assert!(sanitize_code(&"a".repeat(64)).is_some());
    }
}
