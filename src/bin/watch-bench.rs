//! WatchPayments delivery benchmark: starts a real `paygate` server process on a fresh database,
//! opens many streams spread over many HTTP/2 connections, changes payments at a steady rate and
//! prints a table of commit-to-delivery latency (p50/p99/max) and the server's RSS.
//!
//! `cargo run --release --bin watch-bench -- --subscribers 100,1000,10000 --connections 100`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use paygate::pb;
use paygate::pb::payment_service_client::PaymentServiceClient;
use paygate::providers::signature::sign_timestamped;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

const SECRET: &str = "whsec_bench";

#[derive(Parser, Debug)]
#[command(about = "WatchPayments delivery latency and RSS benchmark")]
struct Args {
    /// Subscriber counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    subscribers: Vec<usize>,
    /// HTTP/2 connections the subscribers are spread over.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Payment changes per run.
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Payment changes per second.
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// Postgres server URL (a fresh database is created per run and dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database: String,
}

struct Server {
    child: std::process::Child,
    grpc: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// CPU seconds (user + system) the server has used so far.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_server(database_url: &str) -> anyhow::Result<Server> {
    let exe = std::env::current_exe()?.with_file_name("paygate");
    let (grpc_port, http_port) = (free_port()?, free_port()?);
    let mut cmd = std::process::Command::new(&exe);
    for (k, _) in std::env::vars() {
        if k.starts_with("PAYGATE_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.env("PAYGATE_DATABASE__URL", database_url)
        .env("PAYGATE_SERVER__GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("PAYGATE_SERVER__HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("PAYGATE_SERVER__HTTP2_MAX_CONCURRENT_STREAMS", "1000")
        .env("PAYGATE_PROVIDERS__SANDBOX__ACCOUNTS__DEFAULT__WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null());
    let child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start {}: {e} (build it first)", exe.display()))?;
    let server = Server { child, grpc: format!("http://127.0.0.1:{grpc_port}") };
    for _ in 0..300 {
        if PaymentServiceClient::connect(server.grpc.clone()).await.is_ok() {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("server did not start")
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

fn micros_since(ts: &prost_types::Timestamp) -> u64 {
    let sent = chrono::DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0)).unwrap_or_default();
    u64::try_from((chrono::Utc::now() - sent).num_microseconds().unwrap_or(0)).unwrap_or(0)
}

struct RunResult {
    subscribers: usize,
    delivered: usize,
    expected: usize,
    latencies_us: Vec<u64>,
    rss_idle: f64,
    rss_subscribed: f64,
    rss_peak: f64,
    subscribe_secs: f64,
    /// Server CPU use while the changes were made, in percent of one core.
    server_cpu_pct: f64,
}

async fn run(args: &Args, subscribers: usize) -> anyhow::Result<RunResult> {
    let db_name = format!("paygate_bench_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut url = url::Url::parse(&args.database)?;
    url.set_path(&format!("/{db_name}"));
    let server = start_server(url.as_str()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = server.rss_mib();

    let mut control = PaymentServiceClient::connect(server.grpc.clone()).await?;
    let mut payments = Vec::new();
    for n in 0..10 {
        let request = pb::CreateCheckoutRequest {
            provider: "sandbox".into(),
            merchant_reference: format!("bench-{n}"),
            amount: Some(pb::Money { amount_minor: 1000, currency: "USD".into() }),
            ..Default::default()
        };
        payments.push(control.create_checkout(request).await?.into_inner().payment.unwrap_or_default().id);
    }

    // Subscribers spread over `connections` HTTP/2 connections.
    let connections = args.connections.min(subscribers).max(1);
    let mut channels: Vec<Channel> = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(Endpoint::from_shared(server.grpc.clone())?.http2_adaptive_window(true).connect().await?);
    }
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(subscribers * args.events)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subscribers);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let mut client = PaymentServiceClient::new(channels[i % connections].clone());
        let latencies = latencies.clone();
        let ready = ready_tx.clone();
        let expected = args.events;
        tasks.push(tokio::spawn(async move {
            let mut stream = client.watch_payments(pb::WatchPaymentsRequest::default()).await?.into_inner();
            let _ = ready.send(()).await;
            let mut local = Vec::with_capacity(expected);
            while local.len() < expected {
                let Some(event) = stream.message().await? else { break };
                if let Some(ts) = &event.occurred_at {
                    local.push(micros_since(ts));
                }
            }
            let got = local.len();
            latencies.lock().await.extend(local);
            anyhow::Ok(got)
        }));
    }
    drop(ready_tx);
    for _ in 0..subscribers {
        ready_rx.recv().await;
    }
    let subscribe_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_subscribed = server.rss_mib();

    // Steady stream of changes: flip payments between PROCESSING and PENDING.
    let mut peak = rss_subscribed;
    let (cpu_before, wall_before) = (server.cpu_secs(), Instant::now());
    let interval = Duration::from_micros(1_000_000 / args.rate.max(1));
    let mut tick = tokio::time::interval(interval);
    let mut round: HashMap<usize, usize> = HashMap::new();
    for n in 0..args.events {
        tick.tick().await;
        let which = n % payments.len();
        let r = round.entry(which).or_default();
        let status = if r.is_multiple_of(2) { "processing" } else { "pending" };
        *r += 1;
        let body = serde_json::json!({
            "event_id": format!("bench-{n}"),
            "payment_id": payments[which],
            "status": status,
            "amount": { "amount_minor": 1000, "currency": "USD" },
            "occurred_at": chrono::Utc::now().to_rfc3339(),
        })
        .to_string();
        let signature = sign_timestamped(SECRET.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes());
        let request = pb::VerifyCallbackRequest {
            provider: "sandbox".into(),
            body: body.into_bytes(),
            headers: HashMap::from([("paygate-sandbox-signature".to_owned(), signature)]),
            ..Default::default()
        };
        control.verify_callback(request).await?;
        if n % 20 == 0 {
            peak = peak.max(server.rss_mib());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered = 0;
    for task in tasks {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok(Ok(n))) = tokio::time::timeout(remaining, task).await {
            delivered += n;
        }
    }
    peak = peak.max(server.rss_mib());
    let server_cpu_pct = 100.0 * (server.cpu_secs() - cpu_before) / wall_before.elapsed().as_secs_f64();
    drop(server);
    let admin = sqlx::PgPool::connect(&args.database).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)")))
        .execute(&admin)
        .await?;
    let mut latencies_us = std::mem::take(&mut *latencies.lock().await);
    latencies_us.sort_unstable();
    Ok(RunResult {
        subscribers,
        delivered,
        expected: subscribers * args.events,
        latencies_us,
        rss_idle,
        rss_subscribed,
        rss_peak: peak,
        subscribe_secs,
        server_cpu_pct,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "WatchPayments delivery: {} changes at {}/s, subscribers over up to {} HTTP/2 connections, server in its own process\n",
        args.events, args.rate, args.connections
    );
    println!(
        "| subscribers | delivered | p50 ms | p99 ms | max ms | server RSS idle MiB | subscribed MiB | peak MiB | subscribe s | server CPU % |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.subscribers {
        let r = run(&args, n).await?;
        println!(
            "| {} | {}/{} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} |",
            r.subscribers,
            r.delivered,
            r.expected,
            percentile(&r.latencies_us, 50.0),
            percentile(&r.latencies_us, 99.0),
            percentile(&r.latencies_us, 100.0),
            r.rss_idle,
            r.rss_subscribed,
            r.rss_peak,
            r.subscribe_secs,
            r.server_cpu_pct,
        );
    }
    Ok(())
}
