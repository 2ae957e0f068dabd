//! Provider callbacks: verify, find the payment, deduplicate, apply, in that order.

use chrono::Utc;

use super::Gateway;
use crate::domain::{Outcome, Payment, PaymentId, StatusReport};
use crate::error::ApiError;
use crate::providers::signature::sha256_hex;
use crate::providers::{CallbackTransport, PaymentRef, RawCallback};
use crate::store::callbacks;
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
    /// Handles a callback exactly as delivered for `provider`/`account` (empty = `default`).
    #[tracing::instrument(skip_all, fields(provider, account, payment_id))]
    pub async fn handle_callback(
        &self,
        provider: &str,
        account: &str,
        raw: &RawCallback,
    ) -> Result<CallbackOutcome, ApiError> {
        let account = if account.is_empty() { "default" } else { account };
        tracing::Span::current().record("provider", provider).record("account", account);
        let adapter = self.registry().resolve(provider, account)?;
        let digest = sha256_hex(&raw.body);

        let verified = match adapter.verify_callback(raw, Utc::now()) {
            Ok(v) => v,
            Err(e) => {
                let err = ApiError::from(e);
                self.audit_rejected(provider, account, err.reason(), &digest, None).await;
                if let Some(hint) = adapter.unverified_payment_hint(raw) {
                    self.refresh_unverified_hint(provider, account, &hint).await;
                }
                return Err(err);
            }
        };

        let mut tx = self.store().begin().await?;
        let found = match &verified.payment {
            PaymentRef::Id(id) => match PaymentId::parse(id) {
                Some(id) => payments::lock(&mut tx, id.as_str()).await?,
                None => None,
            },
            PaymentRef::CheckoutId(checkout_id) => {
                payments::lock_by_checkout_id(&mut tx, provider, checkout_id).await?
            }
        };
        let payment = match found {
            Some(p) if p.provider == provider && p.account == account && query_agrees(&*adapter, raw, &p) => p,
            other => {
                tx.rollback().await?;
                let id = other.map(|p| p.id);
                self.audit_rejected(provider, account, "PAYMENT_NOT_FOUND", &digest, id.as_deref()).await;
                return Err(ApiError::PaymentNotFound);
            }
        };
        tracing::Span::current().record("payment_id", payment.id.as_str());

        let report = &verified.report;
        let info = |kind| EventInfo {
            kind,
            source: "callback",
            provider_event_id: Some(&verified.event_id),
            provider_occurred_at: report.occurred_at,
            detail: Some(serde_json::json!({ "body_sha256": digest })),
        };
        // A verified event that reports nothing (a type the adapter does not map) changes nothing;
        // the provider is asked once instead (rate-limited), after commit.
        let says_nothing = *report == StatusReport::default();
        let outcome = if says_nothing { Outcome::Ignore { kind: "no_status" } } else { payment.apply(report) };
        let outcome_kind = match &outcome {
            Outcome::Change { kind, .. } | Outcome::Ignore { kind } => *kind,
        };
        self.note_unknown_status(provider, report, outcome_kind);
        let fresh = callbacks::insert_receipt(
            &mut tx,
            provider,
            account,
            &verified.dedupe_key,
            &payment.id,
            &verified.event_id,
            outcome_kind,
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
            payments::record_not_applied(&mut tx, &payment, &info("duplicate")).await?;
            tx.commit().await?;
            return Ok(result(payment, true, false, false));
        }
        let mismatch = outcome_kind == "amount_mismatch";
        let outcome = match outcome {
            Outcome::Change { after, kind, status_changed } => {
                let written = payments::update(&mut tx, &payment, &after, &info(kind)).await?;
                result(written, false, status_changed, mismatch)
            }
            Outcome::Ignore { kind } => {
                payments::record_not_applied(&mut tx, &payment, &info(kind)).await?;
                result(payment, false, false, mismatch)
            }
        };
        tx.commit().await?;
        if mismatch {
            tracing::warn!("callback amount differs from the payment; status left unchanged");
        }
        if says_nothing {
            self.schedule_refresh(outcome.payment.clone());
        }
        Ok(outcome)
    }

    /// Schedules one rate-limited status lookup of the payment an unverified callback names,
    /// if it exists and belongs to this provider account. The body itself is never trusted.
    async fn refresh_unverified_hint(&self, provider: &str, account: &str, hint: &PaymentRef) {
        let found = async {
            let mut conn = self.store().pool().acquire().await?;
            match hint {
                PaymentRef::Id(id) => match PaymentId::parse(id) {
                    Some(id) => payments::get(&mut conn, id.as_str()).await,
                    None => Ok(None),
                },
                PaymentRef::CheckoutId(checkout_id) => {
                    payments::find_by_checkout_id(&mut conn, provider, checkout_id).await
                }
            }
        }
        .await;
        match found {
            Ok(Some(p)) if p.provider == provider && p.account == account => {
                self.schedule_refresh(p);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot look up the payment an unverified callback names"),
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

/// A browser-delivered callback arrives at the return URL we gave the provider, which names our
/// payment (`?payment_id=…`). The query is not signed, so it never selects the payment; but when
/// it names another payment than the signed body does, the callback is refused as not found.
fn query_agrees(adapter: &dyn crate::providers::Provider, raw: &RawCallback, payment: &Payment) -> bool {
    if adapter.callback_transport() != CallbackTransport::Browser {
        return true;
    }
    url::form_urlencoded::parse(raw.query.as_bytes()).filter(|(k, _)| k == "payment_id").all(|(_, v)| v == payment.id)
}
