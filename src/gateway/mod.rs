//! The application layer: what each API operation does, shared by gRPC and HTTP. It combines the
//! domain rules, the store and the provider adapters; every state change is one transaction
//! together with its event.

mod callbacks;
mod cancel;
mod checks;
mod create;
mod list;
mod reconciler;
mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

pub use callbacks::CallbackOutcome;
pub use cancel::{CancelRequest, MAX_CANCEL_REASON_CHARS};
pub use list::{DEFAULT_PAGE_SIZE, ListPage, ListRequest, MAX_PAGE_SIZE};
pub use reconciler::{next_scheduled, run_check_worker};
pub use status::PaymentLookup;

use crate::config::ReconcilerConfig;
use crate::domain::ValidationError;
use crate::domain::{Payment, PaymentStatus};
use crate::error::ApiError;
pub use crate::metrics::Metrics;
use crate::metrics::{Event, Operation};
use crate::providers::registry::LookupError;
use crate::providers::{CallbackError, Provider, ProviderError, Registry};
use crate::store::Store;

/// The payments application: cheap to clone.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    registry: Registry,
    metrics: Metrics,
    idempotency_wait: Duration,
    reconciler: ReconcilerConfig,
    /// Wakes this replica's check worker when a check became due now.
    check_wake: tokio::sync::Notify,
    /// Per provider account: the check worker's concurrency and rate limits.
    check_limits: Mutex<BTreeMap<(String, String), Arc<reconciler::AccountLimiter>>>,
}

impl Gateway {
    /// Builds the application from its parts.
    pub fn new(store: Store, registry: Registry, reconciler: ReconcilerConfig) -> Self {
        let metrics = Metrics::new();
        metrics.register_store(store.acquire_wait());
        Self {
            inner: Arc::new(Inner {
                store,
                registry,
                metrics,
                idempotency_wait: Duration::from_secs(60),
                reconciler,
                check_wake: tokio::sync::Notify::new(),
                check_limits: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The provider-check settings.
    pub fn reconciler_config(&self) -> &ReconcilerConfig {
        &self.inner.reconciler
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Calls a provider adapter: in a `provider.call` span, counted and timed by provider,
    /// account, operation and outcome.
    pub(crate) async fn call_provider<T>(
        &self,
        provider: &dyn Provider,
        operation: Operation,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let span = tracing::info_span!(
            "provider.call",
            otel.name = format!("provider {} {}", provider.name(), operation.as_str()),
            provider = provider.name(),
            account = provider.account(),
            operation = operation.as_str(),
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = call.instrument(span.clone()).await;
        let outcome = crate::metrics::call_outcome(&result);
        span.record("outcome", outcome);
        self.metrics().provider_call(provider.name(), provider.account(), operation, outcome, started.elapsed());
        result
    }

    /// After a committed change of `before` into `after`: counts a status transition, and says
    /// loudly when a success arrived after the payment was EXPIRED or CANCELLED (money was taken
    /// for an order the caller may have given up on; applied all the same).
    pub(crate) fn note_applied(&self, before: &Payment, after: &Payment) {
        if before.status != after.status {
            self.metrics().transition(&after.provider, before.status.as_str(), after.status.as_str());
        }
        let closed = matches!(before.status, PaymentStatus::Expired | PaymentStatus::Cancelled);
        if closed && after.status == PaymentStatus::Succeeded {
            self.metrics().count(&after.provider, Event::LateSuccess);
            tracing::warn!(
                payment_id = %after.id,
                provider = %after.provider,
                previous_status = %before.status,
                "payment succeeded after it was closed; a refund may be needed"
            );
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::InvalidField { field: e.field, message: e.reason.to_owned() }
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::ProviderNotFound => ApiError::ProviderNotFound,
            LookupError::AccountNotFound => ApiError::AccountNotFound,
        }
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Rejected { code, .. } => ApiError::ProviderRejected { provider_code: code },
            ProviderError::Unavailable(detail) => {
                tracing::warn!(%detail, "provider unavailable");
                ApiError::ProviderUnavailable
            }
            ProviderError::OutcomeUnknown(detail) => {
                tracing::warn!(%detail, "provider answer unusable");
                ApiError::ProviderUnavailable
            }
            ProviderError::Timeout => ApiError::ProviderTimeout,
            ProviderError::Unsupported => ApiError::Unimplemented,
        }
    }
}

impl From<CallbackError> for ApiError {
    fn from(e: CallbackError) -> Self {
        match e {
            CallbackError::SignatureInvalid => ApiError::SignatureInvalid,
            CallbackError::SignatureExpired => ApiError::SignatureExpired,
            CallbackError::Malformed { field } => ApiError::invalid(field, "malformed callback"),
        }
    }
}
