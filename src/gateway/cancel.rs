//! CancelCheckout: withdraws an open checkout. The payment moves to CANCELLED (source `cancel`),
//! closed at the provider where it can be (XPay expire, HitPay delete), else locally; a local
//! cancel keeps the payment in the provider-check queue until its session ends, so a success that
//! happens anyway is learned. The caller's `reason` is kept in the event's detail and never logged.

use chrono::Utc;

use super::Gateway;
use super::reconciler::{ProviderCancel, next_scheduled};
use crate::domain::{EventSource, Payment, PaymentId, PaymentStatus, StatusReport};
use crate::error::ApiError;
use crate::providers::Provider;
use crate::store::checks::CheckReason;
use crate::store::payments::{self, EventInfo};

/// Longest `reason`, in characters.
pub const MAX_CANCEL_REASON_CHARS: usize = 500;

/// A CancelCheckout request as the application takes it (the caller's identity and scope join
/// it here once caller authentication exists).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelRequest {
    pub payment_id: String,
    /// Free text, may hold personal data: stored in the event detail only, never logged.
    pub reason: String,
    /// The authenticated caller: only its own payments can be cancelled (others are
    /// `PAYMENT_NOT_FOUND`). `None` while authentication is off.
    pub caller: Option<String>,
}

/// The answer for a payment that is no longer open: CANCELLED as it is (idempotent), SUCCEEDED
/// and EXPIRED refused. `None`: open, to be cancelled.
fn settled(payment: &Payment) -> Result<Option<Payment>, ApiError> {
    match payment.status {
        PaymentStatus::Cancelled => Ok(Some(payment.clone())),
        PaymentStatus::Succeeded => Err(ApiError::PaymentAlreadySucceeded),
        PaymentStatus::Expired => Err(ApiError::PaymentFinal),
        PaymentStatus::Pending | PaymentStatus::Processing | PaymentStatus::Failed => Ok(None),
    }
}

impl Gateway {
    /// Cancels an open payment; returns it CANCELLED (or as it was, when already CANCELLED).
    #[tracing::instrument(skip_all, fields(payment_id))]
    pub async fn cancel_checkout(&self, request: CancelRequest) -> Result<Payment, ApiError> {
        let id = PaymentId::parse(&request.payment_id).ok_or(ApiError::PaymentNotFound)?;
        if request.reason.chars().count() > MAX_CANCEL_REASON_CHARS {
            return Err(ApiError::invalid("reason", "at most 500 characters"));
        }
        tracing::Span::current().record("payment_id", id.as_str());
        let payment = self.load(&id).await?;
        if request.caller.is_some() && payment.caller != request.caller {
            return Err(ApiError::PaymentNotFound);
        }
        if let Some(done) = settled(&payment)? {
            return Ok(done);
        }
        let closed_at_provider = match self.registry().resolve(&payment.provider, &payment.account) {
            Ok(provider) => self.close_at_provider(&*provider, &payment).await?,
            // The account is no longer configured: nothing to ask.
            Err(_) => false,
        };
        self.record_cancel(&payment, &request.reason, closed_at_provider, request.caller.as_deref()).await
    }

    /// Closes the checkout at the provider where it can. `true`: closed there; `false`: cancel
    /// locally. A provider that refuses because the session is no longer open is asked what
    /// became of it: a success is applied and answered `PAYMENT_ALREADY_SUCCEEDED`. A transient
    /// failure leaves the payment open and is returned.
    async fn close_at_provider(&self, provider: &dyn Provider, payment: &Payment) -> Result<bool, ApiError> {
        match self.cancel_at_provider(provider, payment).await {
            ProviderCancel::Closed => Ok(payment.provider_checkout_id.is_some()),
            ProviderCancel::Unsupported => Ok(false),
            ProviderCancel::Failed(e) => Err(e.into()),
            ProviderCancel::NotOpen => {
                let report = self.fetch(provider, payment).await?;
                if let Some(report) = report.filter(|r| r.status == Some(PaymentStatus::Succeeded)) {
                    let after = self.apply_report(&payment.id, &report, EventSource::Cancel, None).await?;
                    if after.status == PaymentStatus::Succeeded {
                        return Err(ApiError::PaymentAlreadySucceeded);
                    }
                }
                Ok(false)
            }
        }
    }

    /// CANCELLED with its event, unless the payment closed meanwhile. A payment not closed at the
    /// provider keeps a queued check until its session ends (at once when a checkout appeared
    /// after the provider was asked: a create that raced this cancel).
    async fn record_cancel(
        &self,
        seen: &Payment,
        reason: &str,
        closed_at_provider: bool,
        caller: Option<&str>,
    ) -> Result<Payment, ApiError> {
        let mut tx = self.store().begin().await?;
        let before = payments::lock(&mut tx, &seen.id).await?.ok_or(ApiError::PaymentNotFound)?;
        if let Some(done) = settled(&before)? {
            tx.rollback().await?;
            return Ok(done);
        }
        let report = StatusReport { status: Some(PaymentStatus::Cancelled), ..Default::default() };
        let outcome = before.apply(&report);
        let detail = serde_json::json!({ "reason": reason, "closed_at_provider": closed_at_provider });
        let info = EventInfo { detail: Some(detail), ..EventInfo::new(outcome.kind(), EventSource::Cancel).by(caller) };
        let after = payments::record(&mut tx, &before, outcome, info).await?;
        let checkout_appeared = before.provider_checkout_id != seen.provider_checkout_id;
        if checkout_appeared || !closed_at_provider {
            let now = Utc::now();
            let next = next_scheduled(after.created_at, now, &self.reconciler_config().schedule_secs);
            let next = after.expires_at.map_or(next, |t| next.min(t));
            let delay = if checkout_appeared { 0.0 } else { (next - now).as_seconds_f64().max(0.0) };
            self.request_check_in(&mut tx, &after.id, CheckReason::LocalCancel, delay).await?;
        }
        tx.commit().await?;
        if checkout_appeared {
            self.wake_checks();
        }
        tracing::info!(closed_at_provider, "checkout cancelled");
        Ok(after)
    }

    /// A create that finds its payment CANCELLED (a cancel ran while the provider was opening
    /// the checkout) closes the checkout it just opened, so a CANCELLED payment never keeps a
    /// live session; where the provider cannot (or does not answer), a check runs now and keeps
    /// looking until the session ends.
    pub(super) async fn close_cancelled_checkout(
        &self,
        provider: &dyn Provider,
        payment: &Payment,
    ) -> Result<(), ApiError> {
        tracing::info!(payment_id = %payment.id, "payment cancelled during its create; closing the new checkout");
        match self.cancel_at_provider(provider, payment).await {
            ProviderCancel::Closed => Ok(()),
            ProviderCancel::NotOpen | ProviderCancel::Unsupported | ProviderCancel::Failed(_) => {
                self.request_check(payment, CheckReason::LocalCancel).await
            }
        }
    }
}
