//! GetPaymentStatus, provider status refreshes and the one path that applies a trusted report.

use super::Gateway;
use crate::domain::{EventKind, EventSource, Payment, PaymentId, PaymentStatus, StatusReport};
use crate::error::ApiError;
use crate::store::payments::{self, EventInfo};

impl Gateway {
    /// Looks a payment up by id, or the newest by merchant reference; `refresh` asks the provider.
    pub async fn get_status(
        &self,
        payment_id: &str,
        merchant_reference: &str,
        refresh: bool,
    ) -> Result<Payment, ApiError> {
        let mut conn = self.store().pool().acquire().await?;
        let payment = match (payment_id.is_empty(), merchant_reference.is_empty()) {
            (false, true) => {
                let id = PaymentId::parse(payment_id).ok_or(ApiError::PaymentNotFound)?;
                payments::get(&mut conn, id.as_str()).await?
            }
            (true, false) => payments::newest_by_reference(&mut conn, merchant_reference).await?,
            _ => {
                return Err(ApiError::invalid(
                    "payment_id",
                    "exactly one of payment_id and merchant_reference is required",
                ));
            }
        }
        .ok_or(ApiError::PaymentNotFound)?;
        drop(conn);
        if refresh && payment.status != PaymentStatus::Succeeded {
            return self.refresh(payment, EventSource::Refresh).await;
        }
        Ok(payment)
    }

    /// Asks the payment's provider for its status and applies what it says. A provider failure
    /// is returned, never hidden behind stale data.
    pub async fn refresh(&self, payment: Payment, source: EventSource) -> Result<Payment, ApiError> {
        let provider = self.registry().resolve(&payment.provider, &payment.account)?;
        self.metrics().count_call(provider.name(), "status");
        let Some(report) = provider.fetch_status(&payment).await? else {
            return Ok(payment);
        };
        self.apply_report(&payment.id, &report, source).await
    }

    /// A provider status value we do not know leaves the payment alone: say so, loudly.
    pub(super) fn note_unknown_status(&self, provider: &str, report: &StatusReport, kind: EventKind) {
        if kind == EventKind::UnknownStatus {
            self.metrics().count_unknown_status(provider);
            let value = report.provider_status.as_deref().unwrap_or("");
            tracing::warn!(provider, provider_status = %value, "unknown provider status; payment left unchanged");
        }
    }

    /// Applies a trusted status report in one transaction with the payment locked.
    pub(super) async fn apply_report(
        &self,
        id: &str,
        report: &StatusReport,
        source: EventSource,
    ) -> Result<Payment, ApiError> {
        let applied = self.apply_report_if(id, report, source, |_| true).await?;
        applied.ok_or(ApiError::PaymentNotFound)
    }

    /// Like [`Gateway::apply_report`], only when `guard` holds for the locked row; `None` otherwise.
    pub(super) async fn apply_report_if(
        &self,
        id: &str,
        report: &StatusReport,
        source: EventSource,
        guard: impl Fn(&Payment) -> bool,
    ) -> Result<Option<Payment>, ApiError> {
        let mut tx = self.store().begin().await?;
        let before = payments::lock(&mut tx, id).await?.ok_or(ApiError::PaymentNotFound)?;
        if !guard(&before) {
            tx.rollback().await?;
            return Ok(None);
        }
        let outcome = before.apply(report);
        self.note_unknown_status(&before.provider, report, outcome.kind());
        let info = EventInfo { provider_occurred_at: report.occurred_at, ..EventInfo::new(outcome.kind(), source) };
        let after = payments::record(&mut tx, &before, outcome, info).await?;
        tx.commit().await?;
        self.note_late_success(&before, &after);
        Ok(Some(after))
    }

    /// A success learned after the payment was EXPIRED or CANCELLED: the shopper paid for an
    /// order the caller may have given up on. Applied (money was taken), and said loudly.
    pub(super) fn note_late_success(&self, before: &Payment, after: &Payment) {
        let closed = matches!(before.status, PaymentStatus::Expired | PaymentStatus::Cancelled);
        if closed && after.status == PaymentStatus::Succeeded {
            self.metrics().count(&after.provider, "late_success");
            tracing::warn!(
                payment_id = %after.id,
                provider = %after.provider,
                previous_status = %before.status,
                "payment succeeded after it was closed; a refund may be needed"
            );
        }
    }
}
