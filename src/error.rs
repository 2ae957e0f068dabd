//! The service's error type and its two mappings: to `tonic::Status` (with `google.rpc.ErrorInfo`)
//! and to an HTTP status plus JSON body. Messages never carry secrets or customer data.

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// `ErrorInfo.domain` of every error.
pub const ERROR_DOMAIN: &str = "paygate.v1";

/// Every error the API can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid field `{field}`: {message}")]
    InvalidField { field: String, message: String },
    #[error("payment not found")]
    PaymentNotFound,
    #[error("provider not found or not enabled")]
    ProviderNotFound,
    #[error("account not found for this provider")]
    AccountNotFound,
    #[error("idempotency key was already used with different parameters")]
    IdempotencyKeyReused { payment_id: String },
    #[error("callback signature is invalid")]
    SignatureInvalid,
    #[error("callback signature is outside its time window")]
    SignatureExpired,
    #[error("callback amount or currency differs from the payment")]
    AmountMismatch { payment_id: String },
    /// The provider's own text stays out: providers echo request fields (emails, phones) in errors.
    #[error("provider rejected the request")]
    ProviderRejected { provider_code: String },
    #[error("provider is unavailable")]
    ProviderUnavailable,
    #[error("provider timed out")]
    ProviderTimeout,
    /// A create the provider may have acted on: the payment is checked at the provider and the
    /// idempotency key keeps this answer; a new attempt needs a new key.
    #[error("the provider may have opened a checkout; the payment is being checked; retry with a new idempotency key")]
    ProviderOutcomeUnknown { payment_id: String },
    #[error("another request with this idempotency key is still in progress")]
    IdempotencyInProgress,
    #[error("after_sequence is older than the retained events")]
    SequenceExpired { oldest_sequence: i64 },
    #[error("after_sequence is newer than any committed event")]
    SequenceAhead { newest_sequence: i64 },
    #[error("server is shutting down; reconnect with after_sequence")]
    ShuttingDown,
    #[error("missing or unknown caller credentials")]
    Unauthenticated,
    #[error("the caller's grant does not allow this")]
    CallerNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// Refunds are a separate capability: a paid payment cannot be cancelled.
    #[error("the payment already succeeded")]
    PaymentAlreadySucceeded,
    #[error("the payment is final")]
    PaymentFinal,
    /// The database cannot be reached (down, restarting, unreachable, pool exhausted for longer
    /// than `database.acquire_timeout_ms`): retry later; nothing was decided.
    #[error("the database is unavailable; retry later")]
    DatabaseUnavailable,
    #[error("not implemented yet")]
    Unimplemented,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// Shorthand for [`ApiError::InvalidField`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField { field: field.into(), message: message.into() }
    }

    /// The machine-readable reason (`ErrorInfo.reason`, HTTP body `code`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidField { .. } => "INVALID_FIELD",
            Self::PaymentNotFound => "PAYMENT_NOT_FOUND",
            Self::ProviderNotFound => "PROVIDER_NOT_FOUND",
            Self::AccountNotFound => "ACCOUNT_NOT_FOUND",
            Self::IdempotencyKeyReused { .. } => "IDEMPOTENCY_KEY_REUSED",
            Self::SignatureInvalid => "SIGNATURE_INVALID",
            Self::SignatureExpired => "SIGNATURE_EXPIRED",
            Self::AmountMismatch { .. } => "AMOUNT_MISMATCH",
            Self::ProviderRejected { .. } => "PROVIDER_REJECTED",
            Self::ProviderUnavailable => "PROVIDER_UNAVAILABLE",
            Self::ProviderTimeout => "PROVIDER_TIMEOUT",
            Self::ProviderOutcomeUnknown { .. } => "PROVIDER_OUTCOME_UNKNOWN",
            Self::IdempotencyInProgress => "IDEMPOTENCY_IN_PROGRESS",
            Self::SequenceExpired { .. } => "SEQUENCE_EXPIRED",
            Self::SequenceAhead { .. } => "SEQUENCE_AHEAD",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::CallerNotAllowed => "CALLER_NOT_ALLOWED",
            Self::BodyTooLarge { .. } => "BODY_TOO_LARGE",
            Self::PaymentAlreadySucceeded => "PAYMENT_ALREADY_SUCCEEDED",
            Self::PaymentFinal => "PAYMENT_FINAL",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::InvalidField { .. } | Self::ProviderRejected { .. } => Code::InvalidArgument,
            Self::PaymentNotFound | Self::ProviderNotFound | Self::AccountNotFound => Code::NotFound,
            Self::IdempotencyKeyReused { .. } => Code::AlreadyExists,
            Self::SignatureInvalid | Self::SignatureExpired => Code::PermissionDenied,
            Self::AmountMismatch { .. } | Self::PaymentAlreadySucceeded | Self::PaymentFinal => {
                Code::FailedPrecondition
            }
            Self::ProviderUnavailable | Self::ProviderOutcomeUnknown { .. } => Code::Unavailable,
            Self::ProviderTimeout => Code::DeadlineExceeded,
            Self::IdempotencyInProgress => Code::Aborted,
            Self::SequenceExpired { .. } | Self::SequenceAhead { .. } => Code::OutOfRange,
            Self::ShuttingDown | Self::DatabaseUnavailable => Code::Unavailable,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::CallerNotAllowed => Code::PermissionDenied,
            Self::BodyTooLarge { .. } => Code::ResourceExhausted,
            Self::Unimplemented => Code::Unimplemented,
            Self::Internal(_) => Code::Internal,
        }
    }

    fn metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::InvalidField { field, .. } => vec![("field", field.clone())],
            Self::IdempotencyKeyReused { payment_id }
            | Self::AmountMismatch { payment_id }
            | Self::ProviderOutcomeUnknown { payment_id } => {
                vec![("payment_id", payment_id.clone())]
            }
            Self::ProviderRejected { provider_code, .. } => vec![("provider_code", provider_code.clone())],
            Self::SequenceExpired { oldest_sequence } => vec![("oldest_sequence", oldest_sequence.to_string())],
            Self::SequenceAhead { newest_sequence } => vec![("newest_sequence", newest_sequence.to_string())],
            _ => Vec::new(),
        }
    }

    /// The HTTP status for the callback ingress and pages.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidField { .. } => 400,
            Self::SignatureInvalid | Self::SignatureExpired => 401,
            Self::PaymentNotFound | Self::ProviderNotFound | Self::AccountNotFound => 404,
            Self::IdempotencyKeyReused { .. }
            | Self::IdempotencyInProgress
            | Self::PaymentAlreadySucceeded
            | Self::PaymentFinal => 409,
            Self::SequenceExpired { .. } | Self::SequenceAhead { .. } => 416,
            // 503 makes providers retry the callback later.
            Self::ShuttingDown | Self::DatabaseUnavailable => 503,
            // An amount mismatch is recorded and answered 200 by the ingress itself.
            Self::AmountMismatch { .. } => 200,
            Self::ProviderRejected { .. } => 422,
            Self::ProviderUnavailable | Self::ProviderOutcomeUnknown { .. } => 503,
            Self::ProviderTimeout => 504,
            Self::Unauthenticated => 401,
            Self::CallerNotAllowed => 403,
            Self::BodyTooLarge { .. } => 413,
            Self::Unimplemented => 501,
            Self::Internal(_) => 500,
        }
    }

    /// The JSON error body `{"code", "message"}`.
    pub fn http_body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.reason(), "message": self.to_string() })
    }
}

impl ApiError {
    /// An internal error, or [`ApiError::DatabaseUnavailable`] when its cause (anywhere in the
    /// chain) is that the database cannot be reached. Every unexpected error goes through here.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        if e.chain().any(|cause| cause.downcast_ref::<sqlx::Error>().is_some_and(is_database_unreachable)) {
            tracing::warn!(error = format!("{e:#}"), "database unavailable");
            crate::store::note_unreachable();
            Self::DatabaseUnavailable
        } else {
            Self::Internal(e)
        }
    }

    /// This error as the API answers it: an [`ApiError::Internal`] built directly whose cause is
    /// an unreachable database becomes [`ApiError::DatabaseUnavailable`].
    pub fn answered(self) -> Self {
        match self {
            Self::Internal(e) => Self::internal(e),
            other => other,
        }
    }
}

/// Whether `e` means the database cannot be reached now (as opposed to a bug or a constraint):
/// pool timeouts, I/O and TLS failures, a closed pool, a connection dropped mid-protocol, and
/// the server's "shutting down / starting up / connection failure" SQLSTATEs (57P01–57P03, 08xxx).
pub fn is_database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(message) => {
            let m = message.to_ascii_lowercase();
            ["connection", "closed", "reset", "eof", "broken pipe", "refused"].iter().any(|w| m.contains(w))
        }
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(e)
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let e = e.answered();
        if let ApiError::Internal(source) = &e {
            tracing::error!(error = format!("{source:#}"), "internal error");
        }
        let metadata: std::collections::HashMap<String, String> =
            e.metadata().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let details = ErrorDetails::with_error_info(e.reason(), ERROR_DOMAIN, metadata);
        tonic::Status::with_error_details(e.code(), e.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_error_info() {
        let status: tonic::Status = ApiError::invalid("amount.currency", "bad").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "INVALID_FIELD");
        assert_eq!(info.domain, "paygate.v1");
        assert_eq!(info.metadata.get("field").map(String::as_str), Some("amount.currency"));
    }

    #[test]
    fn table_of_codes() {
        let rows: Vec<(ApiError, Code, u16)> = vec![
            (ApiError::PaymentNotFound, Code::NotFound, 404),
            (ApiError::ProviderNotFound, Code::NotFound, 404),
            (ApiError::AccountNotFound, Code::NotFound, 404),
            (ApiError::IdempotencyKeyReused { payment_id: "p".into() }, Code::AlreadyExists, 409),
            (ApiError::SignatureInvalid, Code::PermissionDenied, 401),
            (ApiError::SignatureExpired, Code::PermissionDenied, 401),
            (ApiError::AmountMismatch { payment_id: "p".into() }, Code::FailedPrecondition, 200),
            (ApiError::ProviderRejected { provider_code: "c".into() }, Code::InvalidArgument, 422),
            (ApiError::ProviderUnavailable, Code::Unavailable, 503),
            (ApiError::ProviderTimeout, Code::DeadlineExceeded, 504),
            (ApiError::ProviderOutcomeUnknown { payment_id: "p".into() }, Code::Unavailable, 503),
            (ApiError::Unauthenticated, Code::Unauthenticated, 401),
            (ApiError::CallerNotAllowed, Code::PermissionDenied, 403),
            (ApiError::BodyTooLarge { limit: 1 }, Code::ResourceExhausted, 413),
            (ApiError::PaymentAlreadySucceeded, Code::FailedPrecondition, 409),
            (ApiError::PaymentFinal, Code::FailedPrecondition, 409),
            (ApiError::DatabaseUnavailable, Code::Unavailable, 503),
        ];
        for (e, code, http) in rows {
            assert_eq!(e.http_status(), http, "{e:?}");
            assert_eq!(tonic::Status::from(e).code(), code);
        }
    }

    #[test]
    fn an_unreachable_database_is_unavailable_never_internal() {
        let refused = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        for e in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed, refused()] {
            assert!(matches!(ApiError::from(e), ApiError::DatabaseUnavailable));
        }
        // Wrapped in anyhow with context, built directly as Internal: still unavailable.
        let wrapped = anyhow::Error::from(refused()).context("loading the payment");
        let status = tonic::Status::from(ApiError::Internal(wrapped));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.get_details_error_info().unwrap().reason, "DATABASE_UNAVAILABLE");
        // Other database errors stay internal.
        assert!(matches!(ApiError::from(sqlx::Error::RowNotFound), ApiError::Internal(_)));
        let status = tonic::Status::from(ApiError::Internal(anyhow::anyhow!("bug")));
        assert_eq!(status.code(), Code::Internal);
    }
}
