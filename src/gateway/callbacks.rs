//! Provider callbacks: verify, find the payment, deduplicate, apply, in that order.

use chrono::Utc;

use super::Gateway;
use crate::domain::{EventKind, EventSource, Outcome, Payment, PaymentId, PaymentStatus, StatusReport};
use crate::error::ApiError;
use crate::metrics::Verdict;
use crate::providers::signature::sha256_hex;
use crate::providers::{CallbackReport, CallbackTransport, PaymentRef, Provider, RawCallback};
use crate::store::callbacks;
use crate::store::checks::CheckReason;
use crate::store::payments::{self, EventInfo};

/// The result of an accepted callback, shared by VerifyCallback and the HTTP ingress (each maps
/// it its own way: an amount mismatch is FAILED_PRECONDITION over gRPC and 200 over HTTP).
#[derive(Debug, Clone)]
pub struct CallbackOutcome {
    pub payment: Payment,
    pub event_id: String,
    pub duplicate: bool,
    pub status_changed: bool,
    /// The callback's amount differed from the payment; recorded, status unchanged.
    pub amount_mismatch: bool,
    pub transport: CallbackTransport,
}

impl Gateway {
    /// Handles a callback exactly as delivered for `provider`/`account` (empty = `default`), and
    /// counts its verdict (for a configured provider account only: the path is anyone's to make up).
    /// `relay` is the authenticated caller that delivered it over VerifyCallback, if any.
    #[tracing::instrument(skip_all, fields(provider, account, payment_id))]
    pub async fn handle_callback(
        &self,
        provider: &str,
        account: &str,
        raw: &RawCallback,
        relay: Option<&str>,
    ) -> Result<CallbackOutcome, ApiError> {
        let account = if account.is_empty() { "default" } else { account };
        tracing::Span::current().record("provider", provider).record("account", account);
        let adapter = self.registry().resolve(provider, account)?;
        let result = self.process_callback(&*adapter, provider, account, raw, relay).await;
        self.metrics().callback(adapter.name(), verdict(&result));
        result
    }

    async fn process_callback(
        &self,
        adapter: &dyn Provider,
        provider: &str,
        account: &str,
        raw: &RawCallback,
        relay: Option<&str>,
    ) -> Result<CallbackOutcome, ApiError> {
        let digest = sha256_hex(&raw.body);

        let verified = match adapter.verify_callback(raw, Utc::now()) {
            Ok(v) => v,
            Err(e) => {
                let err = ApiError::from(e);
                self.audit_rejected(provider, account, err.reason(), &digest, None).await;
                if let Some(hint) = adapter.unverified_payment_hint(raw) {
                    self.check_unverified_hint(provider, account, &hint).await;
                }
                return Err(err);
            }
        };

        let mut tx = self.store().begin().await?;
        let mut adopt = None;
        let mut unsigned_match = false;
        let found = match &verified.payment {
            PaymentRef::Id(id) => lock_by_id(&mut tx, id).await?,
            PaymentRef::CheckoutId(checkout_id) => {
                payments::lock_by_checkout_id(&mut tx, provider, checkout_id).await?
            }
            PaymentRef::Both { id, checkout_id } => {
                match payments::lock_by_checkout_id(&mut tx, provider, checkout_id).await? {
                    Some(p) => Some(p),
                    // A payment whose create never returned the checkout id adopts the one the
                    // signed callback names; one with another checkout id is not this callback's.
                    None => match lock_by_id(&mut tx, id).await? {
                        // Adopted only from a report the provider signed whole (our id included);
                        // a look-up whose id is unsigned (Exirom's `requestId`) only queues a
                        // deferred lookup of the payment's own checkout, trusting nothing.
                        Some(p) if p.provider_checkout_id.is_none() => {
                            match &verified.report {
                                CallbackReport::Apply(_) => adopt = Some(checkout_id.clone()),
                                CallbackReport::LookUp { .. } => unsigned_match = true,
                            }
                            Some(p)
                        }
                        _ => None,
                    },
                }
            }
        };
        let payment = match found {
            Some(p) if p.provider == provider && p.account == account && query_agrees(adapter, raw, &p) => p,
            other => {
                tx.rollback().await?;
                let id = other.map(|p| p.id);
                let id = id.as_ref().map(PaymentId::as_str);
                self.audit_rejected(provider, account, "PAYMENT_NOT_FOUND", &digest, id).await;
                return Err(ApiError::PaymentNotFound);
            }
        };
        tracing::Span::current().record("payment_id", payment.id.as_str());

        let occurred_at = match &verified.report {
            CallbackReport::Apply(report) => report.occurred_at,
            CallbackReport::LookUp { .. } => None,
        };
        let info = |kind| EventInfo {
            kind,
            source: EventSource::Callback,
            provider_event_id: Some(&verified.event_id),
            provider_occurred_at: occurred_at,
            detail: Some(serde_json::json!({ "body_sha256": digest })),
            caller: relay,
        };
        // The adopted checkout id is part of whatever this callback writes.
        let base = match &adopt {
            Some(checkout_id) => {
                tracing::info!("payment adopts the checkout id a verified callback names");
                let mut p = payment.clone();
                p.provider_checkout_id = Some(checkout_id.clone());
                p
            }
            None => payment.clone(),
        };
        let (outcome, look_up) = if unsigned_match {
            (Outcome::Ignore { kind: EventKind::LookUp }, true)
        } else {
            decide(&base, &verified.report)
        };
        let outcome = match outcome {
            Outcome::Ignore { .. } if adopt.is_some() => {
                Outcome::Change { after: Box::new(base), kind: EventKind::CheckoutAdopted, status_changed: false }
            }
            other => other,
        };
        let outcome_kind = outcome.kind();
        if let CallbackReport::Apply(report) = &verified.report {
            self.note_unknown_status(provider, report, outcome_kind);
        }
        let fresh = callbacks::insert_receipt(
            &mut tx,
            provider,
            account,
            &verified.dedupe_key,
            payment.id.as_str(),
            &verified.event_id,
            outcome_kind.as_str(),
        )
        .await?;
        let result = |payment, duplicate, status_changed, amount_mismatch| CallbackOutcome {
            payment,
            event_id: verified.event_id.clone(),
            duplicate,
            status_changed,
            amount_mismatch,
            transport: adapter.callback_transport(),
        };
        if !fresh {
            payments::record_not_applied(&mut tx, &payment, &info(EventKind::Duplicate)).await?;
            tx.commit().await?;
            return Ok(result(payment, true, false, false));
        }
        let mismatch = outcome_kind == EventKind::AmountMismatch;
        // The check is queued in this transaction: a crash after the 200 cannot lose it.
        let look_up = look_up && payment.status != PaymentStatus::Succeeded;
        if look_up {
            let reason = if unsigned_match { CheckReason::UnverifiedCallback } else { CheckReason::Callback };
            self.request_check_in(&mut tx, &payment.id, reason, 0.0).await?;
        }
        let status_changed = matches!(outcome, Outcome::Change { status_changed: true, .. });
        let written = payments::record(&mut tx, &payment, outcome, info(outcome_kind)).await?;
        let outcome = result(written, false, status_changed, mismatch);
        tx.commit().await?;
        self.note_applied(&payment, &outcome.payment);
        if look_up {
            self.wake_checks();
        }
        if mismatch {
            tracing::warn!("callback amount differs from the payment; status left unchanged");
        }
        Ok(outcome)
    }

    /// Queues a status lookup of the payment an unverified callback names, if it exists and
    /// belongs to this provider account (deferred like every untrusted trigger). The body
    /// itself is never trusted.
    async fn check_unverified_hint(&self, provider: &str, account: &str, hint: &PaymentRef) {
        let found = async {
            let mut conn = self.store().pool().acquire().await?;
            let by_id = PaymentId::parse;
            match hint {
                PaymentRef::Id(id) => match by_id(id) {
                    Some(id) => payments::get(&mut conn, &id).await,
                    None => Ok(None),
                },
                PaymentRef::CheckoutId(checkout_id) | PaymentRef::Both { checkout_id, .. } => {
                    payments::find_by_checkout_id(&mut conn, provider, checkout_id).await
                }
            }
        }
        .await;
        let result = match found {
            Ok(Some(p)) if p.provider == provider && p.account == account => {
                self.request_check(&p, CheckReason::UnverifiedCallback).await
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot queue a check of the payment an unverified callback names");
        }
    }

    async fn audit_rejected(
        &self,
        provider: &str,
        account: &str,
        reason: &str,
        digest: &str,
        payment_id: Option<&str>,
    ) {
        tracing::warn!(provider, account, reason, "callback rejected");
        let result = async {
            let mut conn = self.store().pool().acquire().await?;
            callbacks::record_rejected(&mut conn, provider, account, reason, digest, payment_id).await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot audit a rejected callback");
        }
    }
}

/// The metrics verdict of a handled callback.
fn verdict(result: &Result<CallbackOutcome, ApiError>) -> Verdict {
    match result {
        Ok(o) if o.duplicate => Verdict::Duplicate,
        Ok(o) if o.amount_mismatch => Verdict::AmountMismatch,
        Ok(_) => Verdict::Applied,
        Err(ApiError::SignatureInvalid) => Verdict::Forged,
        Err(ApiError::SignatureExpired) => Verdict::Stale,
        Err(ApiError::InvalidField { .. }) => Verdict::Malformed,
        Err(ApiError::PaymentNotFound) => Verdict::UnknownPayment,
        Err(_) => Verdict::Error,
    }
}

/// Locks a payment by our id; an id of another shape finds nothing.
async fn lock_by_id(tx: &mut crate::store::Tx, id: &str) -> Result<Option<Payment>, sqlx::Error> {
    match PaymentId::parse(id) {
        Some(id) => payments::lock(tx, &id).await,
        None => Ok(None),
    }
}

/// What a verified callback does to `payment`, and whether the provider must be asked. A
/// look-up with a signed amount that differs from the payment records the mismatch instead.
fn decide(payment: &Payment, report: &CallbackReport) -> (Outcome, bool) {
    match report {
        CallbackReport::Apply(report) => (payment.apply(report), false),
        CallbackReport::LookUp { amount: Some(amount) } if payment.amount_differs(amount) => {
            (payment.apply(&StatusReport { amount: Some(amount.clone()), ..Default::default() }), false)
        }
        CallbackReport::LookUp { .. } => (Outcome::Ignore { kind: EventKind::LookUp }, true),
    }
}

/// A browser-delivered callback arrives at the return URL we gave the provider, which names our
/// payment (`?payment_id=…`). The query is not signed, so it never selects the payment; but when
/// it names another payment than the signed body does, the callback is refused as not found.
fn query_agrees(adapter: &dyn crate::providers::Provider, raw: &RawCallback, payment: &Payment) -> bool {
    if adapter.callback_transport() != CallbackTransport::Browser {
        return true;
    }
    url::form_urlencoded::parse(raw.query.as_bytes())
        .filter(|(k, _)| k == "payment_id")
        .all(|(_, v)| v == payment.id.as_str())
}
