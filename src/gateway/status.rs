//! GetPaymentStatus, provider status refreshes and the one path that applies a trusted report.

use super::Gateway;
use crate::auth::ReadScope;
use crate::domain::{EventKind, EventSource, Payment, PaymentId, PaymentStatus, StatusReport};
use crate::error::ApiError;
use crate::metrics::Operation;
use crate::store::payments::{self, EventInfo};

/// How GetPaymentStatus names a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentLookup {
    Id(PaymentId),
    /// The newest payment with this merchant reference (`created_at` DESC, then id DESC).
    MerchantReference(String),
}

impl PaymentLookup {
    /// From the request's two fields: exactly one must be set (`INVALID_FIELD` `payment_id`
    /// otherwise); a malformed id is `PAYMENT_NOT_FOUND`.
    pub fn from_request(payment_id: &str, merchant_reference: &str) -> Result<Self, ApiError> {
        match (payment_id.is_empty(), merchant_reference.is_empty()) {
            (false, true) => PaymentId::parse(payment_id).map(Self::Id).ok_or(ApiError::PaymentNotFound),
            (true, false) => Ok(Self::MerchantReference(merchant_reference.to_owned())),
            _ => Err(ApiError::invalid("payment_id", "exactly one of payment_id and merchant_reference is required")),
        }
    }
}

impl Gateway {
    /// Looks a payment up among those `scope` may see (others are `PAYMENT_NOT_FOUND`, so ids
    /// do not leak); `refresh` asks the provider, on behalf of `caller`.
    pub async fn get_status(
        &self,
        lookup: &PaymentLookup,
        refresh: bool,
        scope: &ReadScope,
        caller: Option<&str>,
    ) -> Result<Payment, ApiError> {
        let payment = self.find_in(lookup, scope).await?;
        if refresh && payment.status != PaymentStatus::Succeeded {
            return self.refresh(payment, EventSource::Refresh, caller).await;
        }
        Ok(payment)
    }

    /// The payment `lookup` names, as stored, whoever owns it.
    pub async fn find(&self, lookup: &PaymentLookup) -> Result<Payment, ApiError> {
        self.find_in(lookup, &ReadScope::All).await
    }

    /// The payment `lookup` names among those `scope` may see.
    pub async fn find_in(&self, lookup: &PaymentLookup, scope: &ReadScope) -> Result<Payment, ApiError> {
        let mut conn = self.store().pool().acquire().await?;
        let payment = match lookup {
            PaymentLookup::Id(id) => payments::get(&mut conn, id).await?,
            PaymentLookup::MerchantReference(reference) => {
                payments::newest_by_reference(&mut conn, reference, scope.owner()).await?
            }
        };
        payment.filter(|p| scope.sees(p.caller.as_deref())).ok_or(ApiError::PaymentNotFound)
    }

    /// Whether the provider may be asked about `payment`. Not when it has no checkout and its
    /// last create was one the provider did not process: a provider that dedupes creates answers
    /// a lookup by re-sending the create (Exirom), which would open a checkout the caller gave up
    /// on. Every other case (an answer lost, a crash mid-call) is looked up.
    pub(super) async fn lookup_allowed(&self, payment: &Payment) -> Result<bool, ApiError> {
        if payment.provider_checkout_id.is_some() || payment.checkout_url.is_some() {
            return Ok(true);
        }
        let mut conn = self.store().pool().acquire().await?;
        Ok(!payments::last_create_not_processed(&mut conn, &payment.id).await?)
    }

    /// Asks the payment's provider for its status and applies what it says, on behalf of
    /// `caller` (named on the event). A provider failure is returned, never hidden behind stale data.
    pub async fn refresh(
        &self,
        payment: Payment,
        source: EventSource,
        caller: Option<&str>,
    ) -> Result<Payment, ApiError> {
        if !self.lookup_allowed(&payment).await? {
            return Ok(payment);
        }
        let provider = self.registry().resolve(&payment.provider, &payment.account)?;
        let Some(report) = self.call_provider(&*provider, Operation::Status, provider.fetch_status(&payment)).await?
        else {
            return Ok(payment);
        };
        self.apply_report(&payment.id, &report, source, caller).await
    }

    /// A provider status value we do not know leaves the payment alone: say so, loudly.
    pub(super) fn note_unknown_status(&self, provider: &str, report: &StatusReport, kind: EventKind) {
        if kind == EventKind::UnknownStatus {
            self.metrics().count_unknown_status(provider);
            let value = report.provider_status.as_deref().unwrap_or("");
            tracing::warn!(provider, provider_status = %value, "unknown provider status; payment left unchanged");
        }
    }

    /// Applies a trusted status report in one transaction with the payment locked; `caller` is
    /// the authenticated caller whose request caused it, if any.
    pub(super) async fn apply_report(
        &self,
        id: &PaymentId,
        report: &StatusReport,
        source: EventSource,
        caller: Option<&str>,
    ) -> Result<Payment, ApiError> {
        let applied = self.apply_report_if(id, report, source, caller, |_| true).await?;
        applied.ok_or(ApiError::PaymentNotFound)
    }

    /// Like [`Gateway::apply_report`], only when `guard` holds for the locked row; `None` otherwise.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.operation = "apply_report"))]
    pub(super) async fn apply_report_if(
        &self,
        id: &PaymentId,
        report: &StatusReport,
        source: EventSource,
        caller: Option<&str>,
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
        let info =
            EventInfo { provider_occurred_at: report.occurred_at, ..EventInfo::new(outcome.kind(), source).by(caller) };
        let after = payments::record(&mut tx, &before, outcome, info).await?;
        tx.commit().await?;
        self.note_applied(&before, &after);
        Ok(Some(after))
    }
}
