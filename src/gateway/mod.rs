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
use std::time::Duration;

pub use callbacks::CallbackOutcome;
pub use cancel::{CancelRequest, MAX_CANCEL_REASON_CHARS};
pub use list::{DEFAULT_PAGE_SIZE, ListPage, ListRequest, MAX_PAGE_SIZE};
pub use reconciler::{next_scheduled, run_check_worker};
pub use status::PaymentLookup;

use crate::config::ReconcilerConfig;
use crate::domain::ValidationError;
use crate::error::ApiError;
use crate::providers::registry::LookupError;
use crate::providers::{CallbackError, ProviderError, Registry};
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
        Self {
            inner: Arc::new(Inner {
                store,
                registry,
                metrics: Metrics::default(),
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
}

/// In-process counters (provider calls by provider and operation, unknown provider statuses,
/// reconciler outcomes, late successes, local expiries).
#[derive(Debug, Default)]
pub struct Metrics {
    provider_calls: Mutex<BTreeMap<(String, &'static str), u64>>,
    unknown_statuses: Mutex<BTreeMap<String, u64>>,
    /// (provider, event): `late_success`, `local_expiry`, and `check_<outcome>` of the reconciler.
    events: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Metrics {
    fn count(&self, provider: &str, event: &'static str) {
        if let Ok(mut counts) = self.events.lock() {
            *counts.entry((provider.to_owned(), event)).or_default() += 1;
        }
    }

    /// How often `event` happened for `provider`: `late_success` (a success learned after
    /// EXPIRED or CANCELLED: a refund may be needed), `local_expiry` (expired with no provider
    /// lookup possible), `check_done`, `check_rescheduled`, `check_failed`, `check_postponed`,
    /// `check_lease_lost`, `reconciliation_failed`.
    pub fn events(&self, provider: &str, event: &str) -> u64 {
        self.events
            .lock()
            .map(|c| c.iter().filter(|((p, e), _)| p == provider && *e == event).map(|(_, n)| n).sum())
            .unwrap_or(0)
    }
    fn count_unknown_status(&self, provider: &str) {
        if let Ok(mut counts) = self.unknown_statuses.lock() {
            *counts.entry(provider.to_owned()).or_default() += 1;
        }
    }

    /// How many reports from `provider` carried a status value we do not know.
    pub fn unknown_statuses(&self, provider: &str) -> u64 {
        self.unknown_statuses.lock().map(|c| c.get(provider).copied().unwrap_or(0)).unwrap_or(0)
    }

    fn count_call(&self, provider: &str, operation: &'static str) {
        if let Ok(mut calls) = self.provider_calls.lock() {
            *calls.entry((provider.to_owned(), operation)).or_default() += 1;
        }
    }

    /// How many times `operation` (`create`, `status`) was called on `provider`'s adapters.
    pub fn provider_calls(&self, provider: &str, operation: &str) -> u64 {
        self.provider_calls
            .lock()
            .map(|calls| calls.iter().filter(|((p, o), _)| p == provider && *o == operation).map(|(_, n)| n).sum())
            .unwrap_or(0)
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
