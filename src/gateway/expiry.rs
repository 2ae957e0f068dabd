//! Moves open payments past their `expires_at` to EXPIRED.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Gateway;
use crate::domain::{Payment, PaymentStatus, StatusReport};
use crate::error::ApiError;
use crate::store::payments;

fn is_due(p: &Payment) -> bool {
    p.status.is_open() && p.expires_at.is_some_and(|t| t < Utc::now())
}

impl Gateway {
    /// Expires every due payment once; returns how many changed. Each payment is re-checked under
    /// its row lock, so a callback that won the race (or a moved `expires_at`) is respected.
    pub async fn expire_due(&self) -> Result<usize, ApiError> {
        let ids = {
            let mut conn = self.store().pool().acquire().await?;
            payments::due_for_expiry(&mut conn, 500).await?
        };
        let report = StatusReport { status: Some(PaymentStatus::Expired), ..Default::default() };
        let mut changed = 0;
        for id in ids {
            match self.apply_report_if(&id, &report, "expiry", is_due).await {
                Ok(Some(_)) => changed += 1,
                Ok(None) => {}
                Err(e) => tracing::warn!(payment_id = %id, error = %e, "cannot expire payment"),
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
