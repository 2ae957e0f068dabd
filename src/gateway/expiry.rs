//! Moves open payments past their `expires_at` to EXPIRED.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::domain::{PaymentStatus, StatusReport};
use crate::error::ApiError;
use crate::store::payments;

impl Gateway {
    /// Expires every due payment once; returns how many changed.
    pub async fn expire_due(&self) -> Result<usize, ApiError> {
        let ids = {
            let mut conn = self.store().pool().acquire().await?;
            payments::due_for_expiry(&mut conn, 500).await?
        };
        let report = StatusReport { status: Some(PaymentStatus::Expired), ..Default::default() };
        let mut changed = 0;
        for id in ids {
            // Re-checked under the row lock: a callback may have won the race.
            let before = self.load(&id).await?;
            if before.status.is_open() && before.expires_at.is_some_and(|t| t < chrono::Utc::now()) {
                let after = self.apply_report(&id, &report, "expiry").await?;
                changed += usize::from(after.version != before.version);
            }
        }
        Ok(changed)
    }
}

/// Runs [`Gateway::expire_due`] every `interval` until cancelled.
pub async fn run_expiry_sweeper(gateway: Gateway, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                match gateway.expire_due().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "expired payments"),
                    Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
                }
            }
        }
    }
}
