//! `GET /metrics` on its own listener (`server.metrics_addr`), apart from the public HTTP port.
//!
//! Gauges that describe shared state (provider-check queue, pools, streams) are refreshed when
//! Prometheus scrapes: one cheap indexed query per scrape, bounded by a short timeout so a slow
//! database never stalls the scrape (the previous values are served then).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Metrics;
use crate::store::Store;
use crate::watch::Hub;

/// OpenMetrics text, which Prometheus scrapes natively.
pub const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Longest the scrape-time queue query may take.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// What a scrape reads.
#[derive(Clone, Debug)]
pub struct ScrapeState {
    pub metrics: Metrics,
    pub store: Store,
    pub hub: Hub,
}

/// The metrics listener's routes.
pub fn router(state: ScrapeState) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(state)
}

async fn scrape(State(state): State<ScrapeState>) -> Response {
    refresh(&state).await;
    ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], state.metrics.encode()).into_response()
}

/// Sets the scrape-time gauges.
pub async fn refresh(state: &ScrapeState) {
    let g = state.metrics.scrape_gauges();
    g.stream_subscribers.set(i64::try_from(state.hub.subscribers()).unwrap_or(i64::MAX));
    g.stream_head.set(state.hub.last_read());
    for (name, pool) in [("main", state.store.pool()), ("streams", state.hub.stream_pool())] {
        state.metrics.set_pool(name, pool.size(), pool.num_idle(), pool.options().get_max_connections());
    }
    let stats = async {
        let mut conn = state.store.pool().acquire().await?;
        crate::store::checks::queue_stats(&mut conn).await
    };
    match tokio::time::timeout(REFRESH_TIMEOUT, stats).await {
        Ok(Ok(stats)) => {
            g.checks_due.set(stats.due);
            g.checks_leased.set(stats.leased);
            g.checks_oldest_due_age.set(stats.oldest_due_age_secs);
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the provider-check queue for metrics"),
        Err(_) => tracing::debug!("reading the provider-check queue for metrics timed out"),
    }
}
