//! Prometheus metrics: one registry per application and one struct holding every metric family.
//! Served as OpenMetrics text on `server.metrics_addr` ([`server`]).
//!
//! Label values are bounded: provider names come from the provider list, accounts from the
//! configuration, gRPC methods from the services we serve (an unimplemented path is `unknown`),
//! and outcomes, verdicts and statuses are fixed enums. Never a payment id or merchant reference.

pub mod server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::providers::ProviderError;

/// Latency buckets in seconds: 1 ms to ~33 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

/// A latency histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// A histogram of event counts (positions behind the head): 1 to ~65,000.
pub fn count_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 9))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub service: String,
    pub method: String,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcMethodLabels {
    pub service: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderCallLabels {
    provider: &'static str,
    account: String,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderOpLabels {
    provider: &'static str,
    account: String,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallbackLabels {
    provider: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    provider: String,
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    provider: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

/// One call to a provider adapter (`create`, `status`, `cancel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Status,
    Cancel,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Status => "status",
            Self::Cancel => "cancel",
        }
    }
}

/// The outcome label of a provider call.
pub fn call_outcome<T>(result: &Result<T, ProviderError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ProviderError::Rejected { .. }) => "rejected",
        Err(ProviderError::Unavailable(_)) => "unavailable",
        Err(ProviderError::OutcomeUnknown(_)) => "outcome_unknown",
        Err(ProviderError::Timeout) => "timeout",
        Err(ProviderError::Unsupported) => "unsupported",
    }
}

/// What became of a callback (HTTP ingress and VerifyCallback alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Verified and recorded (a status change, a look-up, or a report the state machine ignored).
    Applied,
    Duplicate,
    /// Signature missing or wrong.
    Forged,
    /// Signed outside the time window.
    Stale,
    Malformed,
    UnknownPayment,
    AmountMismatch,
    /// Anything else (database errors).
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Forged => "forged",
            Self::Stale => "stale",
            Self::Malformed => "malformed",
            Self::UnknownPayment => "unknown_payment",
            Self::AmountMismatch => "amount_mismatch",
            Self::Error => "error",
        }
    }
}

/// Events of the provider-check worker and of payment truth, counted per provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A success learned after EXPIRED or CANCELLED: a refund may be needed.
    LateSuccess,
    /// Expired with no provider lookup possible.
    LocalExpiry,
    /// Expired with `RECONCILIATION_FAILED` after the grace period.
    ReconciliationFailed,
    CheckDone,
    CheckRescheduled,
    CheckFailed,
    CheckPostponed,
    CheckLeaseLost,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LateSuccess => "late_success",
            Self::LocalExpiry => "local_expiry",
            Self::ReconciliationFailed => "reconciliation_failed",
            Self::CheckDone => "check_done",
            Self::CheckRescheduled => "check_rescheduled",
            Self::CheckFailed => "check_failed",
            Self::CheckPostponed => "check_postponed",
            Self::CheckLeaseLost => "check_lease_lost",
        }
    }

    /// The reconciler outcome label (`done`, …) of a `check_*` event.
    fn check_outcome(self) -> Option<&'static str> {
        self.as_str().strip_prefix("check_")
    }
}

/// Metric objects owned by the stream hub (it updates them; the registry only reads them).
#[derive(Debug, Clone)]
pub struct StreamMetrics {
    /// Times a subscriber fell behind the ring and caught up from the table.
    pub catch_ups: Counter,
    /// Pages read from the event table by replaying or catching-up subscribers.
    pub table_reads: Counter,
    /// How many positions behind the newest read event each streamed event was when sent.
    pub lag: Histogram,
}

impl Default for StreamMetrics {
    fn default() -> Self {
        Self { catch_ups: Counter::default(), table_reads: Counter::default(), lag: count_histogram() }
    }
}

/// Every metric of one application. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Mutex<Registry>,
    grpc_requests: Family<GrpcLabels, Counter>,
    grpc_duration: HistogramFamily<GrpcMethodLabels>,
    provider_calls: Family<ProviderCallLabels, Counter>,
    provider_duration: HistogramFamily<ProviderOpLabels>,
    callbacks: Family<CallbackLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    unknown_statuses: Family<ProviderLabels, Counter>,
    late_successes: Family<ProviderLabels, Counter>,
    local_expiries: Family<ProviderLabels, Counter>,
    reconciliation_failures: Family<ProviderLabels, Counter>,
    checks: Family<CheckLabels, Counter>,
    /// Refreshed at scrape time ([`server`]).
    pub(crate) gauges: ScrapeGauges,
}

/// Gauges whose values are read when `/metrics` is scraped.
#[derive(Debug, Default)]
pub(crate) struct ScrapeGauges {
    pub stream_subscribers: Gauge,
    pub stream_head: Gauge,
    pub checks_due: Gauge,
    pub checks_leased: Gauge,
    pub checks_oldest_due_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pool_size: Family<PoolLabels, Gauge>,
    pool_in_use: Family<PoolLabels, Gauge>,
    pool_max: Family<PoolLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered (values start empty).
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("paygate");
        let new_hist: fn() -> Histogram = latency_histogram;
        let grpc_requests = Family::default();
        r.register("grpc_requests", "gRPC requests by service, method and status code", grpc_requests.clone());
        let grpc_duration = Family::new_with_constructor(new_hist);
        r.register_with_unit(
            "grpc_request_duration",
            "gRPC request latency until the status (streams: until they end)",
            prometheus_client::registry::Unit::Seconds,
            grpc_duration.clone(),
        );
        let provider_calls = Family::default();
        r.register(
            "provider_calls",
            "Calls to provider adapters by provider, account, operation and outcome",
            provider_calls.clone(),
        );
        let provider_duration = Family::new_with_constructor(new_hist);
        r.register_with_unit(
            "provider_call_duration",
            "Provider call latency by provider, account and operation",
            prometheus_client::registry::Unit::Seconds,
            provider_duration.clone(),
        );
        let callbacks = Family::default();
        r.register("callbacks", "Provider callbacks by provider and verdict", callbacks.clone());
        let transitions = Family::default();
        r.register("status_transitions", "Payment status transitions by provider, from and to", transitions.clone());
        let unknown_statuses = Family::default();
        r.register(
            "unknown_provider_statuses",
            "Provider reports with a status value paygate does not know (payment left unchanged)",
            unknown_statuses.clone(),
        );
        let late_successes = Family::default();
        r.register(
            "late_successes",
            "Successes learned after the payment was EXPIRED or CANCELLED (a refund may be needed)",
            late_successes.clone(),
        );
        let local_expiries = Family::default();
        r.register("local_expiries", "Payments expired with no provider lookup possible", local_expiries.clone());
        let reconciliation_failures = Family::default();
        r.register(
            "reconciliation_failures",
            "Payments expired with RECONCILIATION_FAILED after the grace period",
            reconciliation_failures.clone(),
        );
        let checks = Family::default();
        r.register(
            "provider_checks",
            "Provider checks run by this replica by provider and outcome \
             (done, rescheduled, failed, postponed, lease_lost)",
            checks.clone(),
        );
        let gauges = ScrapeGauges::default();
        r.register(
            "stream_subscribers",
            "Live WatchPayments streams on this replica",
            gauges.stream_subscribers.clone(),
        );
        r.register(
            "stream_head_sequence",
            "Newest event sequence this replica's stream hub has read",
            gauges.stream_head.clone(),
        );
        r.register(
            "provider_checks_due",
            "Provider checks due now and not claimed (all replicas; read at scrape time)",
            gauges.checks_due.clone(),
        );
        r.register(
            "provider_checks_leased",
            "Provider checks claimed by a worker right now (all replicas; read at scrape time)",
            gauges.checks_leased.clone(),
        );
        r.register_with_unit(
            "provider_checks_oldest_due_age",
            "How long the oldest due, unclaimed provider check has been due (0 when none)",
            prometheus_client::registry::Unit::Seconds,
            gauges.checks_oldest_due_age.clone(),
        );
        r.register("db_pool_connections", "Open connections of a database pool", gauges.pool_size.clone());
        r.register("db_pool_in_use", "Connections of a database pool in use", gauges.pool_in_use.clone());
        r.register("db_pool_max", "Configured maximum connections of a database pool", gauges.pool_max.clone());
        r.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION")), ("service", "paygate")]),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(r),
                grpc_requests,
                grpc_duration,
                provider_calls,
                provider_duration,
                callbacks,
                transitions,
                unknown_statuses,
                late_successes,
                local_expiries,
                reconciliation_failures,
                checks,
                gauges,
            }),
        }
    }

    /// Registers the database's acquire-wait histogram (owned by the store).
    pub fn register_store(&self, acquire_wait: &Histogram) {
        if let Ok(mut r) = self.inner.registry.lock() {
            r.register_with_unit(
                "db_acquire_wait",
                "Time to get a pooled connection and begin a transaction",
                prometheus_client::registry::Unit::Seconds,
                acquire_wait.clone(),
            );
        }
    }

    /// Registers the stream hub's counters and lag histogram (owned by the hub).
    pub fn register_streams(&self, streams: &StreamMetrics) {
        if let Ok(mut r) = self.inner.registry.lock() {
            r.register(
                "stream_catch_ups",
                "Times a stream fell behind the ring and caught up",
                streams.catch_ups.clone(),
            );
            r.register(
                "stream_table_reads",
                "Pages of events read from the table by replaying or catching-up streams",
                streams.table_reads.clone(),
            );
            r.register(
                "stream_lag_positions",
                "Positions behind the newest read event of each streamed event when sent",
                streams.lag.clone(),
            );
        }
    }

    pub(crate) fn scrape_gauges(&self) -> &ScrapeGauges {
        &self.inner.gauges
    }

    pub(crate) fn set_pool(&self, pool: &'static str, size: u32, idle: usize, max: u32) {
        let g = &self.inner.gauges;
        let labels = PoolLabels { pool };
        g.pool_size.get_or_create(&labels).set(i64::from(size));
        g.pool_in_use.get_or_create(&labels).set(i64::from(size).saturating_sub(idle as i64).max(0));
        g.pool_max.get_or_create(&labels).set(i64::from(max));
    }

    /// The whole registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.inner.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }

    /// One finished gRPC request.
    pub fn grpc_request(&self, service: &str, method: &str, code: &'static str, elapsed: Duration) {
        let (service, method) = (service.to_owned(), method.to_owned());
        self.inner
            .grpc_duration
            .get_or_create(&GrpcMethodLabels { service: service.clone(), method: method.clone() })
            .observe(elapsed.as_secs_f64());
        self.inner.grpc_requests.get_or_create(&GrpcLabels { service, method, code }).inc();
    }

    /// One finished provider adapter call.
    pub fn provider_call(
        &self,
        provider: &'static str,
        account: &str,
        operation: Operation,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        let operation = operation.as_str();
        let account = account.to_owned();
        self.inner
            .provider_duration
            .get_or_create(&ProviderOpLabels { provider, account: account.clone(), operation })
            .observe(elapsed.as_secs_f64());
        self.inner.provider_calls.get_or_create(&ProviderCallLabels { provider, account, operation, outcome }).inc();
    }

    pub fn callback(&self, provider: &'static str, verdict: Verdict) {
        self.inner.callbacks.get_or_create(&CallbackLabels { provider, verdict: verdict.as_str() }).inc();
    }

    /// A payment's status moved `from` → `to`.
    pub fn transition(&self, provider: &str, from: &'static str, to: &'static str) {
        self.inner.transitions.get_or_create(&TransitionLabels { provider: provider.to_owned(), from, to }).inc();
    }

    pub fn count_unknown_status(&self, provider: &str) {
        self.inner.unknown_statuses.get_or_create(&ProviderLabels { provider: provider.to_owned() }).inc();
    }

    /// Counts `event` for `provider` (a provider name from the registry or a stored payment's).
    pub fn count(&self, provider: &str, event: Event) {
        let labels = ProviderLabels { provider: provider.to_owned() };
        let inner = &self.inner;
        match event {
            Event::LateSuccess => inner.late_successes.get_or_create(&labels).inc(),
            Event::LocalExpiry => inner.local_expiries.get_or_create(&labels).inc(),
            Event::ReconciliationFailed => inner.reconciliation_failures.get_or_create(&labels).inc(),
            check => {
                let outcome = check.check_outcome().unwrap_or("other");
                inner.checks.get_or_create(&CheckLabels { provider: labels.provider, outcome }).inc()
            }
        };
    }

    /// The sum of every sample of `name` (as exposed, e.g. `paygate_callbacks_total`) whose labels
    /// include all of `labels`. For tests and operators' checks.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.encode();
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        text.lines()
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if metric != name {
                    return None;
                }
                let present: Vec<&str> = label_text.split(',').collect();
                wanted.iter().all(|w| present.contains(&w.as_str())).then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }

    /// How often `event` (`late_success`, `local_expiry`, `reconciliation_failed`, `check_done`,
    /// `check_rescheduled`, `check_failed`, `check_postponed`, `check_lease_lost`) happened for
    /// `provider`.
    pub fn events(&self, provider: &str, event: &str) -> u64 {
        let value = match event {
            "late_success" => self.sum("paygate_late_successes_total", &[("provider", provider)]),
            "local_expiry" => self.sum("paygate_local_expiries_total", &[("provider", provider)]),
            "reconciliation_failed" => self.sum("paygate_reconciliation_failures_total", &[("provider", provider)]),
            other => match other.strip_prefix("check_") {
                Some(outcome) => {
                    self.sum("paygate_provider_checks_total", &[("provider", provider), ("outcome", outcome)])
                }
                None => 0.0,
            },
        };
        value as u64
    }

    /// How many reports from `provider` carried a status value we do not know.
    pub fn unknown_statuses(&self, provider: &str) -> u64 {
        self.sum("paygate_unknown_provider_statuses_total", &[("provider", provider)]) as u64
    }

    /// How many times `operation` (`create`, `status`, `cancel`) was called on `provider`'s
    /// adapters, whatever the account and outcome.
    pub fn provider_calls(&self, provider: &str, operation: &str) -> u64 {
        self.sum("paygate_provider_calls_total", &[("provider", provider), ("operation", operation)]) as u64
    }

    /// Callbacks of `provider` with `verdict`.
    pub fn callbacks(&self, provider: &str, verdict: Verdict) -> u64 {
        self.sum("paygate_callbacks_total", &[("provider", provider), ("verdict", verdict.as_str())]) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sums_by_labels() {
        let m = Metrics::new();
        m.provider_call("sandbox", "default", Operation::Create, "ok", Duration::from_millis(3));
        m.provider_call("sandbox", "shop-2", Operation::Create, "timeout", Duration::from_millis(3));
        m.provider_call("sandbox", "default", Operation::Status, "ok", Duration::from_millis(3));
        m.count("xpay", Event::LateSuccess);
        m.count("xpay", Event::CheckDone);
        m.count("xpay", Event::CheckDone);
        m.count_unknown_status("hitpay");
        m.callback("sandbox", Verdict::Forged);
        assert_eq!(m.provider_calls("sandbox", "create"), 2);
        assert_eq!(m.provider_calls("sandbox", "status"), 1);
        assert_eq!(m.provider_calls("xpay", "create"), 0);
        assert_eq!(m.events("xpay", "late_success"), 1);
        assert_eq!(m.events("xpay", "check_done"), 2);
        assert_eq!(m.events("sandbox", "check_done"), 0);
        assert_eq!(m.unknown_statuses("hitpay"), 1);
        assert_eq!(m.callbacks("sandbox", Verdict::Forged), 1);
        let text = m.encode();
        assert!(text.contains("paygate_build_info{"), "{text}");
        assert!(text.contains("paygate_provider_call_duration_seconds_bucket{"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn check_events_map_to_outcomes() {
        assert_eq!(Event::CheckLeaseLost.check_outcome(), Some("lease_lost"));
        assert_eq!(Event::LateSuccess.check_outcome(), None);
    }
}
