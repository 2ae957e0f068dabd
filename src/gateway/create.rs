//! CreateCheckout: validation, idempotency, the provider call and recording its outcome.

use std::sync::Arc;
use std::time::Instant;

use super::Gateway;
use crate::domain::checkout::CheckoutInput;
use crate::domain::fingerprint::fingerprint;
use crate::domain::{NewCheckout, Outcome, Payment, PaymentId, PaymentStatus, StatusReport};
use crate::error::ApiError;
use crate::providers::{CheckoutContext, Provider, ProviderError};
use crate::store::idempotency::{self, Existing, StoredError};
use crate::store::payments::{self, EventInfo, NewPaymentRow};

type Scope<'a> = (&'a str, &'a str, &'a str);

impl Gateway {
    /// Creates a payment and opens its checkout. Returns the payment and whether this answer
    /// replays an earlier request with the same idempotency key.
    #[tracing::instrument(skip_all, fields(provider = %input.provider, payment_id))]
    pub async fn create_checkout(&self, input: CheckoutInput) -> Result<(Payment, bool), ApiError> {
        let checkout = NewCheckout::parse(input)?;
        let provider = self.registry().resolve(&checkout.provider, &checkout.account)?;
        provider.validate(&checkout)?;
        match checkout.idempotency_key.clone() {
            None => {
                let payment = self.insert_payment(&checkout).await?;
                tracing::Span::current().record("payment_id", payment.id.as_str());
                self.open_checkout(&provider, &checkout, payment, None).await.map(|p| (p, false))
            }
            Some(key) => self.create_idempotent(&provider, &checkout, &key).await,
        }
    }

    async fn insert_payment(&self, checkout: &NewCheckout) -> Result<Payment, ApiError> {
        let id = PaymentId::new();
        let mut tx = self.store().begin().await?;
        let payment = payments::insert(&mut tx, &row(&id, checkout)).await?;
        tx.commit().await?;
        Ok(payment)
    }

    async fn create_idempotent(
        &self,
        provider: &Arc<dyn Provider>,
        checkout: &NewCheckout,
        key: &str,
    ) -> Result<(Payment, bool), ApiError> {
        let fp = fingerprint(checkout);
        let scope: Scope<'_> = (&checkout.provider, &checkout.account, key);
        let deadline = Instant::now() + self.inner.idempotency_wait;
        loop {
            let mut tx = self.store().begin().await?;
            let id = PaymentId::new();
            if idempotency::try_insert(&mut tx, scope, &fp, id.as_str()).await? {
                let payment = payments::insert(&mut tx, &row(&id, checkout)).await?;
                tx.commit().await?;
                tracing::Span::current().record("payment_id", payment.id.as_str());
                return self.open_checkout(provider, checkout, payment, Some(scope)).await.map(|p| (p, false));
            }
            match idempotency::inspect_or_take_over(&mut tx, scope, &fp).await? {
                None => tx.rollback().await?,
                Some(Existing::Mismatch { payment_id }) => return Err(ApiError::IdempotencyKeyReused { payment_id }),
                Some(Existing::Completed { payment_id, error }) => {
                    tx.commit().await?;
                    if let Some(e) = error {
                        return Err(ApiError::ProviderRejected { provider_code: e.provider_code, message: e.message });
                    }
                    let payment = self.load(&payment_id).await?;
                    return Ok((payment, true));
                }
                Some(Existing::TakenOver { payment_id }) => {
                    tx.commit().await?;
                    let payment = self.load(&payment_id).await?;
                    return self.open_checkout(provider, checkout, payment, Some(scope)).await.map(|p| (p, false));
                }
                Some(Existing::InProgress) => {
                    tx.rollback().await?;
                    if Instant::now() > deadline {
                        return Err(ApiError::IdempotencyInProgress);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }

    pub(super) async fn load(&self, id: &str) -> Result<Payment, ApiError> {
        let mut conn = self.store().pool().acquire().await?;
        payments::get(&mut conn, id).await?.ok_or(ApiError::PaymentNotFound)
    }

    /// Calls the provider for a committed PENDING payment and records the outcome.
    async fn open_checkout(
        &self,
        provider: &Arc<dyn Provider>,
        checkout: &NewCheckout,
        payment: Payment,
        scope: Option<Scope<'_>>,
    ) -> Result<Payment, ApiError> {
        self.metrics().count_call(provider.name(), "create");
        let ctx = CheckoutContext { payment_id: &payment.id, checkout, created_at: payment.created_at };
        let result = provider.create_checkout(ctx).await;

        let mut tx = self.store().begin().await?;
        let before = payments::lock(&mut tx, &payment.id).await?.ok_or(ApiError::PaymentNotFound)?;
        let info = |kind| EventInfo { kind, source: "create", ..Default::default() };
        match result {
            Ok(created) => {
                let mut after = before.clone();
                after.checkout_url = Some(created.checkout_url);
                after.provider_checkout_id = created.provider_checkout_id;
                if created.provider_payment_id.is_some() {
                    after.provider_payment_id = created.provider_payment_id;
                }
                after.expires_at = created.expires_at;
                after.metadata.extend(created.metadata);
                let written = if after == before {
                    before
                } else {
                    payments::update(&mut tx, &before, &after, &info("checkout_opened")).await?
                };
                if let Some(scope) = scope {
                    idempotency::complete(&mut tx, scope, None).await?;
                }
                tx.commit().await?;
                Ok(written)
            }
            Err(ProviderError::Rejected { code, message }) => {
                let report = StatusReport {
                    status: Some(PaymentStatus::Failed),
                    failure_code: Some("PROVIDER_REJECTED".into()),
                    failure_message: Some(message.clone()),
                    ..Default::default()
                };
                match before.apply(&report) {
                    Outcome::Change { after, .. } => {
                        payments::update(&mut tx, &before, &after, &info("provider_rejected")).await?;
                    }
                    Outcome::Ignore { kind } => payments::record_not_applied(&mut tx, &before, &info(kind)).await?,
                }
                if let Some(scope) = scope {
                    let stored = StoredError { provider_code: code.clone(), message: message.clone() };
                    idempotency::complete(&mut tx, scope, Some(&stored)).await?;
                }
                tx.commit().await?;
                Err(ApiError::ProviderRejected { provider_code: code, message })
            }
            Err(transient) => {
                if let Some(scope) = scope {
                    idempotency::release(&mut tx, scope).await?;
                }
                tx.commit().await?;
                Err(transient.into())
            }
        }
    }
}

fn row<'a>(id: &'a PaymentId, c: &'a NewCheckout) -> NewPaymentRow<'a> {
    NewPaymentRow {
        id: id.as_str(),
        provider: &c.provider,
        account: &c.account,
        merchant_reference: &c.merchant_reference,
        amount_minor: c.amount.minor,
        currency: c.amount.currency.code(),
        return_url: &c.return_url,
        cancel_url: &c.cancel_url,
        metadata: &c.metadata,
    }
}
