//! Closed-loop load: N clients, each issuing one request after the other for a fixed time after a
//! warm-up, every request's latency recorded.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::server::{CpuUse, Probe};

/// One client's request, repeated.
pub trait Op: Send + 'static {
    fn call(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Warm-up, then the measured interval.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one point measured.
#[derive(Debug, Default)]
pub struct Sample {
    /// Latencies of the successful requests, µs, sorted.
    pub latencies_us: Vec<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the end of the warm-up to the last completion.
    pub secs: f64,
    pub cpu: CpuUse,
}

impl Sample {
    pub fn per_sec(&self) -> f64 {
        self.latencies_us.len() as f64 / self.secs.max(1e-3)
    }

    /// Percentile `p` (0–100) in ms; `None` without samples.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        percentile_ms(&self.latencies_us, p)
    }
}

/// Nearest-rank percentile of sorted µs values, in ms.
pub fn percentile_ms(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0)
}

/// Runs every op as its own task for `window` and collects the measured requests.
pub async fn run<O: Op>(ops: Vec<O>, window: Window, probe: Probe) -> Sample {
    let start = Instant::now();
    let from = start + window.warmup;
    let until = from + window.measure;
    let tasks: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut errors, mut first_error, mut last) = (0u64, None, from);
                loop {
                    let began = Instant::now();
                    if began >= until {
                        break;
                    }
                    let result = op.call().await;
                    let done = Instant::now();
                    let measured = began >= from;
                    if measured {
                        last = done;
                    }
                    match result {
                        Ok(()) if measured => {
                            latencies.push(u64::try_from(done.duration_since(began).as_micros()).unwrap_or(u64::MAX));
                        }
                        Ok(()) => {}
                        Err(e) => {
                            if measured {
                                errors += 1;
                                first_error.get_or_insert_with(|| format!("{e:#}"));
                            }
                            // No hot loop against a failing server.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (latencies, errors, first_error, last)
            })
        })
        .collect();
    tokio::time::sleep_until(from.into()).await;
    let before = probe.snapshot().await;
    let mut sample = Sample::default();
    let mut last = from;
    for task in tasks {
        match task.await {
            Ok((latencies, errors, first_error, done)) => {
                sample.latencies_us.extend(latencies);
                sample.errors += errors;
                if sample.first_error.is_none() {
                    sample.first_error = first_error;
                }
                last = last.max(done);
            }
            Err(e) => {
                sample.errors += 1;
                sample.first_error.get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    sample.cpu = before.until(&probe.snapshot().await);
    sample.secs = last.duration_since(from).as_secs_f64();
    sample.latencies_us.sort_unstable();
    sample
}

/// No requests at all for `window`: what the server and Postgres do in the background.
pub async fn idle(window: Window, probe: Probe) -> Sample {
    tokio::time::sleep(window.warmup).await;
    let before = probe.snapshot().await;
    tokio::time::sleep(window.measure).await;
    Sample { secs: window.measure.as_secs_f64(), cpu: before.until(&probe.snapshot().await), ..Default::default() }
}
