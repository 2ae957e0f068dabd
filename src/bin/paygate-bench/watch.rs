//! WatchPayments delivery: many streams over many HTTP/2 connections, payment changes at a steady
//! rate through VerifyCallback, commit-to-delivery latency of every message and the server's RSS.
//! (The measurements of the former `watch-bench`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use paygate::pb;
use paygate::pb::payment_service_client::PaymentServiceClient;
use tokio::sync::Mutex;

use crate::ops;
use crate::server::{CpuUse, Probe, Server};

/// Settings of one delivery point.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub subscribers: usize,
    pub connections: usize,
    pub events: usize,
    pub rate: u64,
}

/// What one delivery point measured.
#[derive(Debug, Default, serde::Serialize)]
pub struct Delivery {
    pub subscribers: usize,
    pub events: usize,
    pub rate_per_sec: u64,
    pub connections: usize,
    pub delivered: usize,
    pub expected: usize,
    /// Commit-to-delivery latencies (µs), sorted.
    #[serde(skip)]
    pub latencies_us: Vec<u64>,
    pub max_ms: Option<f64>,
    pub rss_idle_mib: Option<f64>,
    pub rss_subscribed_mib: Option<f64>,
    pub rss_peak_mib: Option<f64>,
    pub subscribe_secs: f64,
    /// From the first change to the last delivery (or the give-up deadline).
    pub secs: f64,
    /// While the changes were made and delivered.
    pub cpu: CpuUse,
    pub stream_errors: usize,
    pub first_error: Option<String>,
    /// Whether the server was restarted for this point (RSS idle is then a fresh process's).
    pub fresh_server: bool,
}

fn micros_since(ts: &prost_types::Timestamp) -> u64 {
    let sent = chrono::DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0)).unwrap_or_default();
    u64::try_from((chrono::Utc::now() - sent).num_microseconds().unwrap_or(0)).unwrap_or(0)
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Runs one delivery point. A server this process owns is restarted first, so RSS starts from
/// a fresh process as in the earlier `watch-bench` figures.
pub async fn run(server: &mut Server, db: Option<sqlx::PgPool>, secret: &str, plan: Plan) -> anyhow::Result<Delivery> {
    let fresh_server = server.owned();
    if fresh_server {
        server.restart().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let probe = Probe { server_pid: server.pid(), db };
    let rss_idle = server.rss_mib();
    let payments = ops::create_payments(&server.grpc, 10, 2).await?;
    // Let the creates' events get their positions before anyone subscribes "from now".
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut control = PaymentServiceClient::new(ops::channels(&server.grpc, 1).await?.remove(0));

    let connections = plan.connections.min(plan.subscribers).max(1);
    let channels = ops::channels(&server.grpc, connections).await?;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(plan.subscribers * plan.events)));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(plan.subscribers.max(1));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(plan.subscribers);
    for i in 0..plan.subscribers {
        let mut client = PaymentServiceClient::new(channels[i % connections].clone());
        let (latencies, errors, ready) = (latencies.clone(), errors.clone(), ready_tx.clone());
        let expected = plan.events;
        tasks.push(tokio::spawn(async move {
            let result = async {
                let mut stream = client.watch_payments(pb::WatchPaymentsRequest::default()).await?.into_inner();
                let _ = ready.send(()).await;
                let mut local = Vec::with_capacity(expected);
                while local.len() < expected {
                    let Some(event) = stream.message().await? else { break };
                    if let Some(ts) = &event.occurred_at {
                        local.push(micros_since(ts));
                    }
                }
                anyhow::Ok(local)
            }
            .await;
            match result {
                Ok(local) => {
                    let got = local.len();
                    latencies.lock().await.extend(local);
                    got
                }
                Err(e) => {
                    let _ = ready.send(()).await;
                    errors.lock().await.push(format!("{e:#}"));
                    0
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..plan.subscribers {
        ready_rx.recv().await;
    }
    let subscribe_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_subscribed = server.rss_mib();

    // A steady stream of changes: each payment flips between PROCESSING and PENDING.
    let mut peak = rss_subscribed;
    let before = probe.snapshot().await;
    let changes_started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / plan.rate.max(1)));
    let mut processing = vec![false; payments.len()];
    for n in 0..plan.events {
        tick.tick().await;
        let which = n % payments.len();
        let to = if processing[which] { "pending" } else { "processing" };
        processing[which] = !processing[which];
        let event_id = format!("watch-{}-{n}", ulid::Ulid::new());
        let (body, signature) = ops::signed_callback(secret, &event_id, &payments[which], to);
        control.verify_callback(ops::verify_request(body, signature)).await?;
        if n % 20 == 0 {
            peak = max_opt(peak, server.rss_mib());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered = 0;
    for mut task in tasks {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, &mut task).await {
            Ok(Ok(n)) => delivered += n,
            _ => task.abort(),
        }
    }
    let secs = changes_started.elapsed().as_secs_f64();
    let cpu = before.until(&probe.snapshot().await);
    peak = max_opt(peak, server.rss_mib());
    let mut latencies_us = std::mem::take(&mut *latencies.lock().await);
    latencies_us.sort_unstable();
    let errors = std::mem::take(&mut *errors.lock().await);
    Ok(Delivery {
        subscribers: plan.subscribers,
        events: plan.events,
        rate_per_sec: plan.rate,
        connections,
        delivered,
        expected: plan.subscribers * plan.events,
        max_ms: latencies_us.last().map(|&v| v as f64 / 1000.0),
        latencies_us,
        rss_idle_mib: rss_idle,
        rss_subscribed_mib: rss_subscribed,
        rss_peak_mib: peak,
        subscribe_secs,
        secs,
        cpu,
        stream_errors: errors.len(),
        first_error: errors.into_iter().next(),
        fresh_server,
    })
}
