//! CreateCheckout: validation, idempotency, the provider call and recording its outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Gateway;
use crate::domain::checkout::CheckoutInput;
use crate::domain::fingerprint::fingerprint;
use crate::domain::ids::IdempotencyKey;
use crate::domain::ids::prefixed_ulid;
use crate::domain::{EventKind, EventSource, NewCheckout, Outcome, Payment, PaymentId, PaymentStatus, StatusReport};
use crate::error::ApiError;
use crate::metrics::Operation;
use crate::providers::{CheckoutContext, CheckoutCreated, Provider, ProviderError};
use crate::store::Tx;
use crate::store::checks::CheckReason;
use crate::store::idempotency::{self, Existing, Scope, StoredError};
use crate::store::payments::{self, EventInfo, NewPaymentRow};

/// Upper bound on one provider create call, well inside the idempotency lease, so a slow
/// provider can never let a second request take the key over while the first still runs.
pub const PROVIDER_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// `expires_at` recorded at creation when the request gives no `ttl`; adapters may override it.
pub const PROVISIONAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the claim transaction found.
enum ClaimStep {
    /// The key was free: this request holds it, with this new payment.
    Inserted(Box<Payment>),
    /// Another request has (or had) the key.
    Existing(Option<Existing>),
}

/// An idempotency key held by this request.
struct Claim<'a> {
    scope: Scope<'a>,
    token: String,
}

impl Gateway {
    /// Creates a payment owned by `caller` (`None` while authentication is off) and opens its
    /// checkout. Returns the payment and whether this answer replays an earlier request with the
    /// same idempotency key (keys are scoped by caller).
    #[tracing::instrument(skip_all, fields(provider = %input.provider, payment_id))]
    pub async fn create_checkout(
        &self,
        input: CheckoutInput,
        caller: Option<&str>,
    ) -> Result<(Payment, bool), ApiError> {
        let checkout = NewCheckout::parse(input)?;
        let provider = self.registry().resolve(&checkout.provider, &checkout.account)?;
        provider.validate(&checkout)?;
        match checkout.idempotency_key.clone() {
            None => {
                let payment = self.insert_new(&checkout, caller).await?;
                tracing::Span::current().record("payment_id", payment.id.as_str());
                self.open_checkout(&provider, &checkout, payment, None).await
            }
            Some(key) => self.create_idempotent(&provider, &checkout, &key, caller).await,
        }
    }

    async fn create_idempotent(
        &self,
        provider: &Arc<dyn Provider>,
        checkout: &NewCheckout,
        key: &IdempotencyKey,
        caller: Option<&str>,
    ) -> Result<(Payment, bool), ApiError> {
        let fp = fingerprint(checkout);
        let scope =
            Scope { caller: caller.unwrap_or(""), provider: &checkout.provider, account: &checkout.account, key };
        let deadline = Instant::now() + self.inner.idempotency_wait;
        loop {
            let claim = Claim { scope, token: prefixed_ulid("lease_") };
            let existing = match self.claim_key(scope, &fp, checkout, &claim.token).await? {
                ClaimStep::Inserted(payment) => {
                    tracing::Span::current().record("payment_id", payment.id.as_str());
                    return self.open_checkout(provider, checkout, *payment, Some(&claim)).await;
                }
                ClaimStep::Existing(existing) => existing,
            };
            match existing {
                None => {}
                Some(Existing::Mismatch { payment_id }) => {
                    return Err(ApiError::IdempotencyKeyReused { payment_id: payment_id.to_string() });
                }
                Some(Existing::Completed { payment_id, error }) => {
                    return match error {
                        Some(e) if e.outcome_unknown => {
                            Err(ApiError::ProviderOutcomeUnknown { payment_id: payment_id.to_string() })
                        }
                        Some(e) => Err(ApiError::ProviderRejected { provider_code: e.provider_code }),
                        None => Ok((self.load(&payment_id).await?, true)),
                    };
                }
                Some(Existing::TakenOver { payment_id, after_crash }) => {
                    let payment = self.load(&payment_id).await?;
                    // A callback may have moved the payment on, or the checkout was recorded:
                    // then there is nothing to retry.
                    if payment.status != PaymentStatus::Pending || payment.checkout_url.is_some() {
                        let mut tx = self.store().begin().await?;
                        idempotency::complete(&mut tx, scope, &claim.token, None).await?;
                        tx.commit().await?;
                        return Ok((payment, true));
                    }
                    // The holder died during its provider call: the provider may have opened a
                    // checkout, so create is not sent again (unless the provider dedupes it).
                    if after_crash && !provider.create_is_idempotent() {
                        let mut tx = self.store().begin().await?;
                        let stored = StoredError { outcome_unknown: true, ..Default::default() };
                        if idempotency::complete(&mut tx, scope, &claim.token, Some(&stored)).await? {
                            self.request_check_in(&mut tx, &payment.id, CheckReason::CreateOutcomeUnknown, 0.0).await?;
                        }
                        tx.commit().await?;
                        self.wake_checks();
                        return Err(ApiError::ProviderOutcomeUnknown { payment_id: payment.id.to_string() });
                    }
                    return self.open_checkout(provider, checkout, payment, Some(&claim)).await;
                }
                Some(Existing::InProgress) => {
                    if Instant::now() > deadline {
                        return Err(ApiError::IdempotencyInProgress);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Inserts a new PENDING payment (no idempotency key) in its own transaction.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.operation = "insert_payment"))]
    async fn insert_new(&self, checkout: &NewCheckout, caller: Option<&str>) -> Result<Payment, ApiError> {
        let id = PaymentId::new();
        let mut tx = self.store().begin().await?;
        let payment = self.insert_payment(&mut tx, &row(&id, checkout, caller)).await?;
        tx.commit().await?;
        Ok(payment)
    }

    /// One transaction on the idempotency key: claims it together with a new PENDING payment,
    /// or reads (and possibly takes over) the row that holds it. Committed or rolled back here.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.operation = "claim_idempotency_key"))]
    async fn claim_key(
        &self,
        scope: Scope<'_>,
        fp: &[u8],
        checkout: &NewCheckout,
        token: &str,
    ) -> Result<ClaimStep, ApiError> {
        let mut tx = self.store().begin().await?;
        let id = PaymentId::new();
        if idempotency::try_insert(&mut tx, scope, fp, id.as_str(), token).await? {
            let caller = (!scope.caller.is_empty()).then_some(scope.caller);
            let payment = self.insert_payment(&mut tx, &row(&id, checkout, caller)).await?;
            tx.commit().await?;
            return Ok(ClaimStep::Inserted(Box::new(payment)));
        }
        let existing = idempotency::inspect_or_take_over(&mut tx, scope, fp, token).await?;
        match existing {
            Some(Existing::Completed { .. } | Existing::TakenOver { .. }) => tx.commit().await?,
            _ => tx.rollback().await?,
        }
        Ok(ClaimStep::Existing(existing))
    }

    /// Inserts a new PENDING payment with its first scheduled provider check.
    async fn insert_payment(&self, tx: &mut Tx, new: &NewPaymentRow<'_>) -> Result<Payment, ApiError> {
        let payment = payments::insert(tx, new).await?;
        let first = self.reconciler_config().schedule_secs.first().copied().unwrap_or(60);
        let delay = (first as f64).min(new.ttl.as_secs_f64());
        self.request_check_in(tx, &payment.id, CheckReason::Scheduled, delay).await?;
        Ok(payment)
    }

    pub(super) async fn load(&self, id: &PaymentId) -> Result<Payment, ApiError> {
        let mut conn = self.store().pool().acquire().await?;
        payments::get(&mut conn, id).await?.ok_or(ApiError::PaymentNotFound)
    }

    /// Calls the provider for a committed PENDING payment and records the outcome. Returns the
    /// payment and whether it is a replay (when this request lost its idempotency lease).
    async fn open_checkout(
        &self,
        provider: &Arc<dyn Provider>,
        checkout: &NewCheckout,
        payment: Payment,
        claim: Option<&Claim<'_>>,
    ) -> Result<(Payment, bool), ApiError> {
        let ctx = CheckoutContext { payment_id: payment.id.as_str(), checkout, created_at: payment.created_at };
        let call = async {
            match tokio::time::timeout(PROVIDER_CALL_TIMEOUT, provider.create_checkout(ctx)).await {
                Ok(result) => result,
                Err(_) => Err(ProviderError::Timeout),
            }
        };
        let result = self.call_provider(&**provider, Operation::Create, call).await;
        self.record_create(&**provider, payment, claim, result).await
    }

    /// Records the outcome of a create call (and completes or releases the key) in one
    /// transaction; a second one records the checkout when the lease was lost meanwhile.
    #[tracing::instrument(name = "db.transaction", skip_all, fields(db.operation = "record_create"))]
    async fn record_create(
        &self,
        provider: &dyn Provider,
        payment: Payment,
        claim: Option<&Claim<'_>>,
        result: Result<CheckoutCreated, ProviderError>,
    ) -> Result<(Payment, bool), ApiError> {
        // Outcome unknown (timeout, 500/502/504, an unusable answer): never create again for
        // this payment, unless the provider dedupes creates on our reference.
        let never_resend = matches!(&result, Err(e) if e.outcome_unknown()) && !provider.create_is_idempotent();
        let mut tx = self.store().begin().await?;
        let fenced_in = match (&result, claim) {
            (_, None) => true,
            (Err(ProviderError::Rejected { code, .. }), Some(c)) => {
                let stored = StoredError { provider_code: code.clone(), ..Default::default() };
                idempotency::complete(&mut tx, c.scope, &c.token, Some(&stored)).await?
            }
            (Ok(_), Some(c)) => idempotency::complete(&mut tx, c.scope, &c.token, None).await?,
            (Err(_), Some(c)) if never_resend => {
                let stored = StoredError { outcome_unknown: true, ..Default::default() };
                idempotency::complete(&mut tx, c.scope, &c.token, Some(&stored)).await?
            }
            (Err(_), Some(c)) => idempotency::release(&mut tx, c.scope, &c.token).await?,
        };
        if !fenced_in {
            // Our lease expired and another request took the key over: its outcome stands. A
            // checkout we did open is still the truth about this payment: record it if the
            // payment has none (the other request never sends create again).
            tx.rollback().await?;
            tracing::warn!("idempotency lease lost while the provider call ran; replaying the current payment");
            if let Ok(created) = result {
                let mut tx = self.store().begin().await?;
                let before = payments::lock(&mut tx, &payment.id).await?.ok_or(ApiError::PaymentNotFound)?;
                let cancelled = before.status == PaymentStatus::Cancelled;
                if before.checkout_url.is_none() && (before.status.is_open() || cancelled) {
                    let after = with_checkout(&before, created);
                    let info =
                        EventInfo::new(EventKind::CheckoutOpened, EventSource::Create).by(payment.caller.as_deref());
                    let written = payments::update(&mut tx, &before, &after, &info).await?;
                    tx.commit().await?;
                    if cancelled {
                        self.close_cancelled_checkout(provider, &written).await?;
                    }
                } else {
                    tx.commit().await?;
                }
            }
            return Ok((self.load(&payment.id).await?, true));
        }
        let before = payments::lock(&mut tx, &payment.id).await?.ok_or(ApiError::PaymentNotFound)?;
        let info = |kind| EventInfo::new(kind, EventSource::Create).by(payment.caller.as_deref());
        match result {
            Ok(created) => {
                let after = with_checkout(&before, created);
                let written = if after == before {
                    before
                } else {
                    payments::update(&mut tx, &before, &after, &info(EventKind::CheckoutOpened)).await?
                };
                tx.commit().await?;
                if written.status == PaymentStatus::Cancelled {
                    self.close_cancelled_checkout(provider, &written).await?;
                }
                Ok((written, false))
            }
            Err(ProviderError::Rejected { code, .. }) => {
                tracing::info!(provider_code = %code, "provider rejected the checkout");
                let report = StatusReport {
                    status: Some(PaymentStatus::Failed),
                    failure_code: Some("PROVIDER_REJECTED".into()),
                    failure_message: Some(format!("provider code {code}")),
                    ..Default::default()
                };
                let outcome = match before.apply(&report) {
                    Outcome::Change { after, status_changed, .. } => {
                        Outcome::Change { after, kind: EventKind::ProviderRejected, status_changed }
                    }
                    ignored => ignored,
                };
                let after = payments::record(&mut tx, &before, outcome, info(EventKind::ProviderRejected)).await?;
                tx.commit().await?;
                self.note_applied(&before, &after);
                Err(ApiError::ProviderRejected { provider_code: code })
            }
            Err(e) if e.outcome_unknown() => {
                tracing::warn!(error = %e.summary(), "provider create outcome unknown; the payment will be checked");
                payments::record_not_applied(&mut tx, &before, &info(EventKind::CreateOutcomeUnknown)).await?;
                self.request_check_in(&mut tx, &before.id, CheckReason::CreateOutcomeUnknown, 0.0).await?;
                tx.commit().await?;
                self.wake_checks();
                if never_resend {
                    Err(ApiError::ProviderOutcomeUnknown { payment_id: before.id.to_string() })
                } else {
                    Err(e.into())
                }
            }
            Err(transient) => {
                payments::record_not_applied(&mut tx, &before, &info(EventKind::CreateNotProcessed)).await?;
                tx.commit().await?;
                Err(transient.into())
            }
        }
    }
}

/// The payment with the provider's checkout recorded on it.
fn with_checkout(before: &Payment, created: CheckoutCreated) -> Payment {
    let mut after = before.clone();
    after.checkout_url = Some(created.checkout_url);
    after.provider_checkout_id = created.provider_checkout_id;
    if created.provider_payment_id.is_some() {
        after.provider_payment_id = created.provider_payment_id;
    }
    if created.expires_at.is_some() {
        after.expires_at = created.expires_at;
    }
    crate::domain::payment::merge_provider_metadata(&mut after.metadata, &created.metadata);
    if let Some(data) = created.provider_data {
        after.provider_data = data;
    }
    after
}

fn row<'a>(id: &'a PaymentId, c: &'a NewCheckout, caller: Option<&'a str>) -> NewPaymentRow<'a> {
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
        ttl: c.ttl.unwrap_or(PROVISIONAL_TTL),
        caller,
    }
}
