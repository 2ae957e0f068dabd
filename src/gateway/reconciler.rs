//! The provider-check worker: claims due rows of `provider_checks`, asks the provider with no
//! transaction open, applies the answer through the state machine and event log, then deletes
//! or reschedules the row. One worker runs on every replica; leases keep them apart.
//!
//! What a check does depends on the payment, not on why it was asked for:
//! - SUCCEEDED: nothing (the row goes).
//! - open, before `expires_at`: a status lookup; then the next point of the schedule.
//! - open, at or past `expires_at`: cancel at the provider where it can (a refusal is fine),
//!   then a final lookup. EXPIRED unless the provider reports success or processing; processing
//!   keeps it open and checked until `grace_secs` past `expires_at`, then EXPIRED with
//!   `RECONCILIATION_FAILED` (so does a lookup that keeps failing). No lookup possible: local
//!   expiry, counted.
//! - CANCELLED or EXPIRED (a late trigger): one lookup, so a late success is applied. A CANCELLED
//!   payment before `expires_at` is first cancelled at the provider where it can be; where it
//!   cannot (a local cancel), it is looked up on the schedule until `expires_at`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::domain::{EventSource, Payment, PaymentStatus, StatusReport};
use crate::error::ApiError;
use crate::metrics::{Event, Operation};
use crate::providers::{Provider, ProviderError};
use crate::store::checks::{self, Claimed};

/// Checks one replica runs at once, over all accounts.
const MAX_IN_FLIGHT: usize = 64;
/// Longest a claimed check waits for its account's rate limit before it is postponed instead.
const MAX_RATE_WAIT: Duration = Duration::from_secs(2);
/// `failure_code` of a payment expired without a provider answer after the grace period.
pub const RECONCILIATION_FAILED: &str = "RECONCILIATION_FAILED";

/// One provider account's limits on this replica.
#[derive(Debug)]
pub(super) struct AccountLimiter {
    slots: Arc<Semaphore>,
    rate: DefaultDirectRateLimiter,
}

/// What asking a provider to cancel a checkout did.
#[derive(Debug)]
pub(super) enum ProviderCancel {
    /// The provider closed the checkout (or had none to close).
    Closed,
    /// The provider refused: the session is no longer open (paid, expired or deleted).
    NotOpen,
    /// The provider cannot cancel: the session stays payable until it ends.
    Unsupported,
    /// No usable answer: the session may still be open.
    Failed(ProviderError),
}

/// What a check decided.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// Nothing more to ask: the row goes.
    Done,
    /// The payment is closed (CANCELLED, EXPIRED): the row stays, not due, so that it keeps the
    /// time of the last check (later untrusted triggers are deferred after it).
    Park,
    /// Ask again at this time.
    Next(DateTime<Utc>),
    /// The account's concurrency or rate limit is reached: due again shortly, no failure.
    Postpone,
    /// The provider could not answer: back off.
    Retry(String),
}

/// The first point of `schedule` (seconds after `anchor`) later than `now`; past the last
/// point, the next whole hour after it.
pub fn next_scheduled(anchor: DateTime<Utc>, now: DateTime<Utc>, schedule: &[u64]) -> DateTime<Utc> {
    let at = |secs: u64| anchor + TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2_000));
    if let Some(t) = schedule.iter().map(|s| at(*s)).find(|t| *t > now) {
        return t;
    }
    let last = at(schedule.last().copied().unwrap_or(0));
    let hours = (now - last).num_seconds().div_euclid(3600) + 1;
    last + TimeDelta::hours(hours.max(1))
}

/// Jittered exponential backoff after `attempts` consecutive failures (≥ 1): the delay doubles
/// from `initial_ms` up to `max_secs`, and a random half of it is taken off.
pub fn backoff(attempts: i32, initial_ms: u64, max_secs: u64) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(30);
    let ceiling = Duration::from_millis(initial_ms.saturating_mul(1u64 << exp)).min(Duration::from_secs(max_secs));
    let half = ceiling / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

impl Gateway {
    fn limiter(&self, provider: &str, account: &str) -> Arc<AccountLimiter> {
        let cfg = self.reconciler_config();
        let build = || {
            let per_sec = NonZeroU32::new(cfg.check_rate_per_sec).unwrap_or(NonZeroU32::MIN);
            Arc::new(AccountLimiter {
                slots: Arc::new(Semaphore::new(cfg.check_concurrency.max(1) as usize)),
                rate: RateLimiter::direct(Quota::per_second(per_sec)),
            })
        };
        match self.inner.check_limits.lock() {
            Ok(mut map) => map.entry((provider.to_owned(), account.to_owned())).or_insert_with(build).clone(),
            Err(_) => build(),
        }
    }

    /// A slot and a rate token of the account, each awaited at most [`MAX_RATE_WAIT`].
    async fn call_permit(&self, provider: &str, account: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let limiter = self.limiter(provider, account);
        let slot = tokio::time::timeout(MAX_RATE_WAIT, limiter.slots.clone().acquire_owned()).await.ok()?.ok()?;
        tokio::time::timeout(MAX_RATE_WAIT, limiter.rate.until_ready()).await.ok()?;
        Some(slot)
    }

    /// Claims up to `limit` due checks for this replica.
    async fn claim_checks(&self, limit: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        let mut conn = self.store().pool().acquire().await?;
        let lease = self.reconciler_config().lease_secs as f64;
        checks::claim(&mut conn, i64::try_from(limit).unwrap_or(i64::MAX), lease).await
    }

    /// Runs every check due now on this replica and waits for them (tests and operators; the
    /// worker does the same continuously). Returns how many ran.
    pub async fn run_due_checks(&self) -> Result<usize, ApiError> {
        let mut ran = 0;
        loop {
            let claimed = self.claim_checks(MAX_IN_FLIGHT).await?;
            if claimed.is_empty() {
                return Ok(ran);
            }
            ran += claimed.len();
            let mut tasks = JoinSet::new();
            for c in claimed {
                tasks.spawn(self.clone().run_claimed(c));
            }
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Runs one claimed check, then records the step.
    async fn run_claimed(self, claimed: Claimed) {
        let step = match self.check(&claimed).await {
            Ok(step) => step,
            Err(e) => Step::Retry(format!("internal: {}", e.reason())),
        };
        let cfg = self.reconciler_config();
        match step {
            Step::Postpone => {
                // The account's limits postpone a check, never drop it.
                self.metrics().count(&claimed.provider, Event::CheckPostponed);
                let due = Utc::now() + TimeDelta::from_std(MAX_RATE_WAIT).unwrap_or_default();
                let result = async {
                    let mut conn = self.store().pool().acquire().await?;
                    checks::postpone(&mut conn, &claimed, due).await
                }
                .await;
                self.note_fence(&claimed, result);
            }
            Step::Done | Step::Park => {
                self.metrics().count(&claimed.provider, Event::CheckDone);
                let park = step == Step::Park;
                let finished = async {
                    let mut conn = self.store().pool().acquire().await?;
                    if park {
                        checks::park(&mut conn, &claimed).await
                    } else {
                        checks::finish(&mut conn, &claimed).await
                    }
                }
                .await;
                self.note_fence(&claimed, finished);
            }
            Step::Next(due) => {
                self.metrics().count(&claimed.provider, Event::CheckRescheduled);
                self.record_step(&claimed, due, 0, None).await;
            }
            Step::Retry(error) => {
                self.metrics().count(&claimed.provider, Event::CheckFailed);
                let attempts = claimed.attempts.saturating_add(1);
                let delay = backoff(attempts, cfg.backoff_initial_ms, cfg.backoff_max_secs);
                let due = Utc::now() + TimeDelta::from_std(delay).unwrap_or_default();
                tracing::info!(payment_id = %claimed.payment_id, provider = %claimed.provider, attempts, %error, "provider check failed; retrying later");
                self.record_step(&claimed, due, attempts, Some(error)).await;
            }
        }
    }

    async fn record_step(&self, claimed: &Claimed, due: DateTime<Utc>, attempts: i32, error: Option<String>) {
        let result = async {
            let mut conn = self.store().pool().acquire().await?;
            checks::reschedule(&mut conn, claimed, due, attempts, error.as_deref()).await
        }
        .await;
        self.note_fence(claimed, result);
    }

    /// A lost lease means another worker took the row over (this one was too slow): its result
    /// stands. A database error leaves the lease to expire, and the check runs again.
    fn note_fence(&self, claimed: &Claimed, result: Result<bool, sqlx::Error>) {
        match result {
            Ok(true) => {}
            Ok(false) => {
                self.metrics().count(&claimed.provider, Event::CheckLeaseLost);
                tracing::warn!(payment_id = %claimed.payment_id, "provider check lease lost; another worker has it");
            }
            Err(e) => tracing::warn!(payment_id = %claimed.payment_id, error = %e, "cannot record a provider check"),
        }
    }

    /// Decides and does one check.
    async fn check(&self, claimed: &Claimed) -> Result<Step, ApiError> {
        // A row is only ever written for one of our payment ids.
        let Some(id) = crate::domain::PaymentId::parse(&claimed.payment_id) else { return Ok(Step::Done) };
        let payment = match self.load(&id).await {
            Ok(p) => p,
            Err(ApiError::PaymentNotFound) => return Ok(Step::Done),
            Err(e) => return Err(e),
        };
        if payment.status == PaymentStatus::Succeeded {
            return Ok(Step::Done);
        }
        let cfg = self.reconciler_config();
        let grace = TimeDelta::seconds(i64::try_from(cfg.grace_secs).unwrap_or(i64::MAX / 2_000));
        let now = Utc::now();
        let provider = match self.registry().resolve(&payment.provider, &payment.account) {
            Ok(p) => p,
            Err(_) if payment.status.is_open() && payment.expires_at.is_some_and(|t| now >= t + grace) => {
                return self.expire_unreconciled(&payment, "the provider account is no longer configured").await;
            }
            Err(_) => return Ok(Step::Retry("provider account not configured".into())),
        };
        // Calls to a provider go through its account's limits; waiting is bounded, well inside
        // the lease, and past it the check is postponed (never dropped). Held to the end.
        let _permit = if provider.calls_out() {
            match self.call_permit(&claimed.provider, &claimed.account).await {
                Some(permit) => Some(permit),
                None => return Ok(Step::Postpone),
            }
        } else {
            None
        };
        if !payment.status.is_open() {
            return Ok(self.check_closed(&*provider, &payment, grace, now).await);
        }
        let Some(expires_at) = payment.expires_at else {
            return self.look_up_open(&*provider, &payment, None).await;
        };
        if now < expires_at {
            return self.look_up_open(&*provider, &payment, Some(expires_at)).await;
        }
        let last_chance = now >= expires_at + grace;
        match self.expire_at_provider(&*provider, &payment, expires_at, grace).await? {
            // Past the grace period, one last cancel and lookup ran; still unresolved: give up.
            Step::Next(_) | Step::Retry(_) if last_chance => {
                self.expire_unreconciled(&payment, "no final provider answer within the grace period").await
            }
            step => Ok(step),
        }
    }

    /// An open payment before its expiry: look it up, then wait for the next scheduled point.
    async fn look_up_open(
        &self,
        provider: &dyn Provider,
        payment: &Payment,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Step, ApiError> {
        let schedule = &self.reconciler_config().schedule_secs;
        let next = |now| {
            let at = next_scheduled(payment.created_at, now, schedule);
            expires_at.map_or(at, |e| at.min(e))
        };
        match self.look_up(provider, payment).await {
            Ok(Some(after)) if after.status == PaymentStatus::Succeeded => Ok(Step::Done),
            Ok(Some(_)) => Ok(Step::Next(next(Utc::now()))),
            // Nothing can be learned before expiry (no lookup, or no provider id yet).
            Ok(None) => Ok(expires_at.map_or(Step::Done, Step::Next)),
            Err(e) => Ok(Step::Retry(e.summary())),
        }
    }

    /// An open payment at or past `expires_at`: cancel the checkout at the provider where it can,
    /// then a final lookup decides. Success is applied; processing, an unknown status or a
    /// success the state machine refused (another amount) keep the payment open and checked;
    /// anything else expires it (source `expiry`) once the checkout is known to be closed. A
    /// cancel that failed leaves it open and retried: the session may still be payable.
    async fn expire_at_provider(
        &self,
        provider: &dyn Provider,
        payment: &Payment,
        expires_at: DateTime<Utc>,
        grace: TimeDelta,
    ) -> Result<Step, ApiError> {
        let cancel_failed = match self.cancel_at_provider(provider, payment).await {
            // Cancelled, refused (the session is no longer open) or not possible.
            ProviderCancel::Closed | ProviderCancel::NotOpen | ProviderCancel::Unsupported => None,
            ProviderCancel::Failed(e) => Some(e.summary()),
        };
        let report = match self.fetch(provider, payment).await {
            Ok(Some(report)) => report,
            Ok(None) if cancel_failed.is_none() => {
                self.metrics().count(provider.name(), Event::LocalExpiry);
                return self.expire(payment, None).await;
            }
            Ok(None) => return Ok(Step::Retry(cancel_failed.unwrap_or_default())),
            Err(e) => return Ok(Step::Retry(e.summary())),
        };
        let keep_open = |why: &str| {
            let schedule = &self.reconciler_config().schedule_secs;
            tracing::info!(payment_id = %payment.id, why, "payment kept open past its expiry");
            Step::Next(next_scheduled(expires_at, Utc::now(), schedule).min(expires_at + grace))
        };
        match report.status {
            Some(PaymentStatus::Succeeded) | Some(PaymentStatus::Processing) => {
                let after = self.apply_report(&payment.id, &report, EventSource::Reconciler, None).await?;
                if after.status == PaymentStatus::Succeeded {
                    Ok(Step::Done)
                } else if report.status == Some(PaymentStatus::Succeeded) {
                    Ok(keep_open("the provider reports a success the payment does not accept"))
                } else {
                    Ok(keep_open("the provider reports it processing"))
                }
            }
            None => Ok(keep_open("the provider reports an unknown status")),
            // Not paid. The provider's own closing status (a deleted request reads as cancelled)
            // is not applied: the EXPIRED transition is ours.
            Some(_) => match cancel_failed {
                None => self.expire(payment, None).await,
                Some(error) => Ok(Step::Retry(error)),
            },
        }
    }

    /// Asks the provider to cancel `payment`'s checkout (expiry and CancelCheckout).
    pub(super) async fn cancel_at_provider(&self, provider: &dyn Provider, payment: &Payment) -> ProviderCancel {
        match self.call_provider(provider, Operation::Cancel, provider.cancel(payment)).await {
            Ok(()) => ProviderCancel::Closed,
            Err(ProviderError::Rejected { .. }) => ProviderCancel::NotOpen,
            Err(ProviderError::Unsupported) => ProviderCancel::Unsupported,
            Err(e) => ProviderCancel::Failed(e),
        }
    }

    /// A CANCELLED or EXPIRED payment someone asked about: one lookup, so a late success is
    /// learned. Failures retry for the grace period after the payment closed.
    ///
    /// A CANCELLED payment before its `expires_at` may still be payable at the provider (it was
    /// cancelled locally, or a create racing the cancel could not close its checkout): it is
    /// cancelled at the provider where it can be; where it cannot, it is looked up on the
    /// schedule until `expires_at`, so a success that happens anyway is learned.
    async fn check_closed(
        &self,
        provider: &dyn Provider,
        payment: &Payment,
        grace: TimeDelta,
        now: DateTime<Utc>,
    ) -> Step {
        let payable_until = payment.expires_at.filter(|t| payment.status == PaymentStatus::Cancelled && now < *t);
        if let Some(expires_at) = payable_until {
            match self.cancel_at_provider(provider, payment).await {
                ProviderCancel::Closed | ProviderCancel::NotOpen => {}
                ProviderCancel::Failed(e) => return Step::Retry(e.summary()),
                ProviderCancel::Unsupported => {
                    let schedule = &self.reconciler_config().schedule_secs;
                    return match self.look_up(provider, payment).await {
                        Ok(Some(after)) if after.status == PaymentStatus::Succeeded => Step::Done,
                        Ok(_) => Step::Next(next_scheduled(payment.created_at, now, schedule).min(expires_at)),
                        Err(e) => Step::Retry(e.summary()),
                    };
                }
            }
        }
        match self.look_up(provider, payment).await {
            Ok(Some(after)) if after.status == PaymentStatus::Succeeded => Step::Done,
            Ok(_) => Step::Park,
            Err(_) if now >= payment.updated_at + grace => Step::Park,
            Err(e) => Step::Retry(e.summary()),
        }
    }

    /// The provider's answer about `payment`, when it may be asked (see
    /// [`Gateway::lookup_allowed`]). `None`: no lookup is possible.
    pub(super) async fn fetch(
        &self,
        provider: &dyn Provider,
        payment: &Payment,
    ) -> Result<Option<StatusReport>, ProviderError> {
        match self.lookup_allowed(payment).await {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(ProviderError::Unavailable(format!("database: {}", e.reason()))),
        }
        self.call_provider(provider, Operation::Status, provider.fetch_status(payment)).await
    }

    /// Asks the provider and applies the answer (`source` `reconciler`; `expiry` when the
    /// provider itself reports the session expired). Returns the payment after it; `None`: no
    /// lookup is possible.
    async fn look_up(&self, provider: &dyn Provider, payment: &Payment) -> Result<Option<Payment>, ProviderError> {
        let Some(report) = self.fetch(provider, payment).await? else { return Ok(None) };
        let source =
            if report.status == Some(PaymentStatus::Expired) { EventSource::Expiry } else { EventSource::Reconciler };
        match self.apply_report(&payment.id, &report, source, None).await {
            Ok(after) => Ok(Some(after)),
            Err(e) => Err(ProviderError::Unavailable(format!("cannot apply the answer: {}", e.reason()))),
        }
    }

    /// EXPIRED (source `expiry`), if the payment is still open and past its `expires_at`.
    async fn expire(&self, payment: &Payment, failure: Option<(&str, &str)>) -> Result<Step, ApiError> {
        let report = StatusReport {
            status: Some(PaymentStatus::Expired),
            failure_code: failure.map(|(code, _)| code.to_owned()),
            failure_message: failure.map(|(_, message)| message.to_owned()),
            ..Default::default()
        };
        let due = |p: &Payment| p.status.is_open() && p.expires_at.is_some_and(|t| t <= Utc::now());
        self.apply_report_if(&payment.id, &report, EventSource::Expiry, None, due).await?;
        Ok(Step::Park)
    }

    async fn expire_unreconciled(&self, payment: &Payment, why: &str) -> Result<Step, ApiError> {
        self.metrics().count(&payment.provider, Event::ReconciliationFailed);
        tracing::warn!(payment_id = %payment.id, provider = %payment.provider, why, "expiring a payment the provider never confirmed");
        self.expire(payment, Some((RECONCILIATION_FAILED, "expired without a provider answer after the grace period")))
            .await
    }
}

/// Runs this replica's check worker until `shutdown`: claims due checks (woken at once by local
/// needs, else every `poll_interval_ms`) and runs them, at most [`MAX_IN_FLIGHT`] at a time.
/// Checks still running at shutdown get a few seconds; any cut short keep their lease, which
/// expires, and the check runs again elsewhere.
pub async fn run_check_worker(gateway: Gateway, shutdown: CancellationToken) {
    let poll = Duration::from_millis(gateway.reconciler_config().poll_interval_ms.max(1));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let free = MAX_IN_FLIGHT.saturating_sub(tasks.len());
        let mut full_batch = false;
        if free > 0 && !shutdown.is_cancelled() {
            match gateway.claim_checks(free).await {
                Ok(claimed) => {
                    full_batch = claimed.len() == free;
                    for c in claimed {
                        tasks.spawn(gateway.clone().run_claimed(c));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim provider checks"),
            }
        }
        if full_batch {
            continue;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = gateway.inner.check_wake.notified() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() && free == 0 => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain).await.is_err() {
        tasks.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn schedule_points_then_hourly() {
        let s = [60, 300, 900, 3600];
        assert_eq!(next_scheduled(t(0), t(0), &s), t(60));
        assert_eq!(next_scheduled(t(0), t(60), &s), t(300));
        assert_eq!(next_scheduled(t(0), t(899), &s), t(900));
        assert_eq!(next_scheduled(t(0), t(900), &s), t(3600));
        assert_eq!(next_scheduled(t(0), t(3600), &s), t(7200));
        assert_eq!(next_scheduled(t(0), t(7199), &s), t(7200));
        assert_eq!(next_scheduled(t(0), t(7200), &s), t(10_800));
        assert_eq!(next_scheduled(t(0), t(-5), &s), t(60));
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        for _ in 0..100 {
            let d = backoff(1, 1000, 300);
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000), "{d:?}");
            let d = backoff(4, 1000, 300);
            assert!(d >= Duration::from_millis(4000) && d <= Duration::from_millis(8000), "{d:?}");
            let d = backoff(40, 1000, 300);
            assert!(d >= Duration::from_secs(150) && d <= Duration::from_secs(300), "{d:?}");
        }
    }
}
