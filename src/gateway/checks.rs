//! Recording needs to ask a provider: each is a row in `provider_checks` (see `store::checks`),
//! written in the transaction of whatever caused it where there is one.

use super::Gateway;
use crate::domain::{Payment, PaymentId};
use crate::error::ApiError;
use crate::store::Tx;
use crate::store::checks::{self, CheckReason};

impl Gateway {
    /// Records, inside `tx`, that `payment_id` needs a check `delay_secs` from now.
    pub(super) async fn request_check_in(
        &self,
        tx: &mut Tx,
        payment_id: &PaymentId,
        reason: CheckReason,
        delay_secs: f64,
    ) -> Result<(), sqlx::Error> {
        let min_interval =
            if reason.untrusted() { self.reconciler_config().untrusted_min_interval_secs as f64 } else { 0.0 };
        checks::request(tx, payment_id, reason, delay_secs, min_interval).await
    }

    /// Records that `payment` needs a check now (deferred for untrusted reasons) and wakes this
    /// replica's worker. A SUCCEEDED payment needs none.
    pub async fn request_check(&self, payment: &Payment, reason: CheckReason) -> Result<(), ApiError> {
        if payment.status == crate::domain::PaymentStatus::Succeeded {
            return Ok(());
        }
        let mut tx = self.store().begin().await?;
        self.request_check_in(&mut tx, &payment.id, reason, 0.0).await?;
        tx.commit().await?;
        self.wake_checks();
        Ok(())
    }

    /// Tells this replica's check worker that a check may be due now.
    pub(super) fn wake_checks(&self) {
        self.inner.check_wake.notify_one();
    }
}
