//! `paygate-bench`: throughput and latency of paygate's four RPCs next to their baselines.
//!
//! Starts the `paygate` binary next to this one on a fresh database (or targets a running
//! server), sweeps clients over CreateCheckout (sandbox, and XPay against an instant local mock),
//! GetPaymentStatus and VerifyCallback, and subscribers over WatchPayments delivery. In the same
//! process it runs the baselines: the store's SQL for each operation issued directly at the same
//! concurrency, and an empty unary RPC (`grpc.health.v1.Health/Check`) on the same server. Prints
//! one Markdown table and the issue's targets, and writes them as JSON under `target/bench/`.
//! Nothing is asserted: the exit status is 0 whenever the benchmark ran.
//!
//! ```sh
//! cargo build --release --bins && $CARGO_TARGET_DIR/release/paygate-bench           # full, ~4 min
//! $CARGO_TARGET_DIR/debug/paygate-bench --quick                                     # CI, < 60 s
//! ```

mod load;
mod mock;
mod ops;
mod report;
mod server;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use paygate::domain::PaymentId;
use paygate::pb::payment_service_client::PaymentServiceClient;
use tonic_health::pb::health_client::HealthClient;

use load::{Op, Window};
use report::Row;
use server::{Probe, Server, Spawn};

/// Sandbox webhook secret of a server this process starts.
const SANDBOX_SECRET: &str = "whsec_bench";
/// Payments per client (at the largest client count) for VerifyCallback and its baseline.
const PAYMENTS_PER_CLIENT: usize = 4;

#[derive(Parser, Debug)]
#[command(about = "paygate throughput and latency against SQL and empty-RPC baselines")]
struct Args {
    /// CI mode: 1 and 8 clients, 1 and 100 subscribers, ~1 s per point, under a minute.
    #[arg(long)]
    quick: bool,
    /// Client counts (default 1,8,32,128; quick 1,8).
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// WatchPayments subscriber counts (default 1,1000,10000; quick 1,100).
    #[arg(long, value_delimiter = ',')]
    subscribers: Option<Vec<usize>>,
    /// Operations to run: create, xpay, status, verify, watch (baselines come with them).
    #[arg(long, value_delimiter = ',', default_value = "create,xpay,status,verify,watch")]
    ops: Vec<String>,
    /// Warm-up per point, ms (default 1000; quick 300).
    #[arg(long)]
    warmup_ms: Option<u64>,
    /// Measured time per point, ms (default 4000; quick 1000).
    #[arg(long)]
    duration_ms: Option<u64>,
    /// HTTP/2 connections the subscribers are spread over.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Payment changes per WatchPayments point (default 200; quick 20).
    #[arg(long)]
    watch_events: Option<usize>,
    /// Payment changes per second during a WatchPayments point.
    #[arg(long, default_value_t = 20)]
    watch_rate: u64,
    /// Largest pool of a SQL baseline (Postgres allows 100 connections by default).
    #[arg(long, default_value_t = 64)]
    baseline_max_connections: u32,
    /// Postgres server on which a fresh database is created for the run (and dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database: String,
    /// The `paygate` binary to start (default: the one next to this executable).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Target a running server at this gRPC URL instead of starting one (needs --target-database).
    #[arg(long, requires = "target_database")]
    target_grpc: Option<String>,
    /// The running server's database, for the SQL baselines.
    #[arg(long)]
    target_database: Option<String>,
    /// The running server's pid, for its CPU and RSS.
    #[arg(long)]
    target_pid: Option<u32>,
    /// The running server's sandbox webhook secret (default: the generated one in its database).
    #[arg(long)]
    sandbox_secret: Option<String>,
    /// Where the JSON goes (default `$CARGO_TARGET_DIR/bench`, else `target/bench`).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

/// Everything a run needs, resolved from the arguments.
struct Plan {
    clients: Vec<usize>,
    subscribers: Vec<usize>,
    window: Window,
    watch_events: usize,
    ops: Vec<String>,
}

impl Plan {
    fn from(args: &Args) -> Self {
        let (clients, subscribers, warmup, measure, events) = if args.quick {
            (vec![1, 8], vec![1, 100], 300, 1000, 20)
        } else {
            (vec![1, 8, 32, 128], vec![1, 1000, 10_000], 1000, 4000, 200)
        };
        Self {
            clients: args.clients.clone().unwrap_or(clients),
            subscribers: args.subscribers.clone().unwrap_or(subscribers),
            window: Window {
                warmup: Duration::from_millis(args.warmup_ms.unwrap_or(warmup)),
                measure: Duration::from_millis(args.duration_ms.unwrap_or(measure)),
            },
            watch_events: args.watch_events.unwrap_or(events),
            ops: args.ops.clone(),
        }
    }

    fn runs(&self, op: &str) -> bool {
        self.ops.iter().any(|o| o == op)
    }

    /// The client counts, or none when the operation is not run.
    fn sweep(&self, enabled: bool) -> &[usize] {
        if enabled { &self.clients } else { &[] }
    }
}

/// The server under test and its database.
struct Env {
    server: Server,
    database_url: String,
    secret: Arc<String>,
    /// A database this run created: (admin URL, name), dropped at the end.
    fresh: Option<(String, String)>,
    xpay: bool,
    /// One connection to the database, for the CPU probe.
    probe_db: Option<sqlx::PgPool>,
}

impl Env {
    async fn setup(args: &Args) -> anyhow::Result<Self> {
        if let (Some(grpc), Some(db)) = (&args.target_grpc, &args.target_database) {
            let secret = match &args.sandbox_secret {
                Some(s) => s.clone(),
                None => {
                    let pool = sqlx::PgPool::connect(db).await.context("target database")?;
                    let secret: Option<String> =
                        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'sandbox.webhook_secret.default'")
                            .fetch_optional(&pool)
                            .await?;
                    pool.close().await;
                    secret
                        .ok_or_else(|| anyhow!("no generated sandbox secret in the database: pass --sandbox-secret"))?
                }
            };
            return Ok(Self {
                server: Server::external(grpc.clone(), args.target_pid),
                database_url: db.clone(),
                secret: Arc::new(secret),
                fresh: None,
                xpay: false,
                probe_db: probe_pool(db).await,
            });
        }
        sweep_old_databases(&args.database).await;
        let name = format!("paygate_bench_{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut url = url::Url::parse(&args.database)?;
        url.set_path(&format!("/{name}"));
        let exe = match &args.server_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.with_file_name("paygate"),
        };
        let xpay_url = mock::start().await?;
        let env = vec![
            ("PAYGATE_PROVIDERS__SANDBOX__ACCOUNTS__DEFAULT__WEBHOOK_SECRET".to_owned(), SANDBOX_SECRET.to_owned()),
            ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__DEFAULT__BASE_URL".to_owned(), xpay_url),
            ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__DEFAULT__SECRET_KEY".to_owned(), mock::SECRET_KEY.to_owned()),
            ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__DEFAULT__WEBHOOK_SECRETS".to_owned(), mock::WEBHOOK_SECRET.to_owned()),
        ];
        let fresh = Some((args.database.clone(), name));
        let spawn = Spawn { exe, database_url: url.to_string(), env };
        match Server::start(spawn).await {
            Ok(server) => Ok(Self {
                server,
                database_url: url.to_string(),
                secret: Arc::new(SANDBOX_SECRET.to_owned()),
                fresh,
                xpay: true,
                probe_db: probe_pool(url.as_str()).await,
            }),
            Err(e) => {
                drop_database(fresh.as_ref()).await;
                Err(e)
            }
        }
    }

    async fn teardown(mut self) {
        if let Some(pool) = self.probe_db.take() {
            pool.close().await;
        }
        self.server.stop();
        drop_database(self.fresh.as_ref()).await;
    }

    fn probe(&self) -> Probe {
        Probe { server_pid: self.server.pid(), db: self.probe_db.clone() }
    }
}

async fn probe_pool(url: &str) -> Option<sqlx::PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url).await;
    pool.map_err(|e| eprintln!("no CPU attribution by database: {e}")).ok()
}

async fn drop_database(fresh: Option<&(String, String)>) {
    let Some((admin, name)) = fresh else { return };
    let result = async {
        let pool = sqlx::PgPool::connect(admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
            .execute(&pool)
            .await?;
        pool.close().await;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("cannot drop database {name}: {e:#}");
    }
}

/// Drops `paygate_bench_*` databases more than an hour old (left by a killed run).
async fn sweep_old_databases(admin: &str) {
    let Ok(pool) = sqlx::PgPool::connect(admin).await else { return };
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'paygate_bench_%'")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    let cutoff = std::time::SystemTime::now() - Duration::from_secs(3600);
    for name in names {
        let Some(ulid) =
            name.strip_prefix("paygate_bench_").and_then(|u| ulid::Ulid::from_string(&u.to_uppercase()).ok())
        else {
            continue;
        };
        if ulid.datetime() < cutoff {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                .execute(&pool)
                .await;
        }
    }
    pool.close().await;
}

/// Runs one point and prints a progress line.
async fn point<O: Op>(env: &Env, plan: &Plan, operation: &str, role: &'static str, ops: Vec<O>) -> Row {
    let clients = ops.len();
    let sample = load::run(ops, plan.window, env.probe()).await;
    let row = Row::from_sample(operation, role, clients, &sample, env.server.rss_mib());
    eprintln!(
        "  {operation} × {clients}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        row.req_per_sec,
        row.p50_ms.unwrap_or(f64::NAN),
        row.p99_ms.unwrap_or(f64::NAN),
        row.errors
    );
    row
}

async fn clients(grpc: &str, n: usize) -> anyhow::Result<Vec<PaymentServiceClient<tonic::transport::Channel>>> {
    Ok(ops::channels(grpc, n).await?.into_iter().map(PaymentServiceClient::new).collect())
}

/// Measures the background CPU of the server and Postgres with no requests.
async fn idle_point(env: &Env, plan: &Plan, when: &str) -> Row {
    let sample = load::idle(plan.window, env.probe()).await;
    let mut row = Row::from_sample(report::IDLE, "baseline", 0, &sample, env.server.rss_mib());
    row.notes = when.to_owned();
    eprintln!("  idle {when}: server {:.0} %, db {:.0} % CPU", row.server_cpu_pct.unwrap_or(f64::NAN), row.db_cpu_pct);
    row
}

/// Runs a SQL baseline point on its own pool of `min(clients, --baseline-max-connections)`.
async fn sql_point<O: Op>(
    env: &Env,
    plan: &Plan,
    args: &Args,
    operation: &str,
    clients: usize,
    make: impl Fn(sqlx::PgPool, usize) -> O,
) -> Row {
    let size = u32::try_from(clients).unwrap_or(u32::MAX).min(args.baseline_max_connections).max(1);
    let mut row = match ops::baseline_pool(&env.database_url, size).await {
        Ok(pool) => {
            let ops = (0..clients).map(|i| make(pool.clone(), i)).collect();
            let row = point(env, plan, operation, "baseline", ops).await;
            pool.close().await;
            row
        }
        Err(e) => {
            eprintln!("  {operation} × {clients} failed: {e:#}");
            Row {
                operation: operation.to_owned(),
                role: "baseline",
                clients,
                errors: 1,
                first_error: Some(format!("{e:#}")),
                ..Default::default()
            }
        }
    };
    row.db_connections = Some(size);
    row
}

/// Every point of the run, in order.
async fn bench(args: &Args, plan: &Plan, env: &mut Env) -> anyhow::Result<Vec<Row>> {
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let grpc = env.server.grpc.clone();
    let mut rows = Vec::new();
    let max_clients = plan.clients.iter().copied().max().unwrap_or(1);

    // Payments for the status reads and the callbacks: one set for paygate, one for the SQL baseline.
    let per_set = (max_clients * PAYMENTS_PER_CLIENT).max(8);
    let setup = Instant::now();
    let verify_ids = ops::create_payments(&grpc, per_set, 16).await.context("creating payments")?;
    let sql_verify_ids = ops::create_payments(&grpc, per_set, 16).await.context("creating payments")?;
    eprintln!("setup: {} payments in {:.1} s", 2 * per_set, setup.elapsed().as_secs_f64());
    let tracker: ops::Tracker = Arc::new((0..per_set).map(|_| AtomicBool::new(false)).collect());
    let status_ids: Arc<Vec<String>> = Arc::new(verify_ids.iter().chain(&sql_verify_ids).cloned().collect());
    let parse = |ids: &[String]| -> anyhow::Result<Vec<PaymentId>> {
        ids.iter().map(|id| PaymentId::parse(id).ok_or_else(|| anyhow!("bad payment id {id}"))).collect()
    };
    let sql_status_ids = Arc::new(parse(&status_ids)?);
    let sql_verify_ids = parse(&sql_verify_ids)?;

    rows.push(idle_point(env, plan, "after setup").await);
    // Each paygate point is followed by its baselines at the same clients, so the ratios compare
    // measurements taken close together on a machine whose background load drifts.
    let (create, xpay) = (plan.runs("create"), plan.runs("xpay") && env.xpay);
    if plan.runs("xpay") && !env.xpay {
        eprintln!(
            "skipping {}: needs a server this process starts (its XPay account is the mock)",
            report::CREATE_XPAY
        );
    }
    for &c in plan.sweep(create || xpay) {
        if create {
            let ops = clients(&grpc, c).await?.into_iter().enumerate();
            let ops = ops.map(|(i, client)| ops::Create {
                client,
                provider: "sandbox",
                tag: format!("{run}-c{c}-{i}"),
                n: 0,
            });
            rows.push(point(env, plan, report::CREATE, "paygate", ops.collect()).await);
        }
        if xpay {
            let ops = clients(&grpc, c).await?.into_iter().enumerate();
            let ops =
                ops.map(|(i, client)| ops::Create { client, provider: "xpay", tag: format!("{run}-x{c}-{i}"), n: 0 });
            rows.push(point(env, plan, report::CREATE_XPAY, "paygate", ops.collect()).await);
        }
        let make = |pool, i| ops::SqlCreate { pool, tag: format!("{run}-s{c}-{i}"), n: 0 };
        rows.push(sql_point(env, plan, args, report::SQL_CREATE, c, make).await);
    }
    for &c in plan.sweep(plan.runs("status")) {
        let ops = clients(&grpc, c).await?.into_iter().enumerate();
        let ops = ops.map(|(i, client)| ops::Status { client, ids: status_ids.clone(), next: i, stride: c });
        rows.push(point(env, plan, report::STATUS, "paygate", ops.collect()).await);
        let make = |pool, i| ops::SqlStatus { pool, ids: sql_status_ids.clone(), next: i, stride: c };
        rows.push(sql_point(env, plan, args, report::SQL_STATUS, c, make).await);
        let ops = ops::channels(&grpc, c).await?.into_iter().map(|ch| ops::Health { client: HealthClient::new(ch) });
        rows.push(point(env, plan, report::HEALTH, "baseline", ops.collect()).await);
    }
    for &c in plan.sweep(plan.runs("verify")) {
        let ops = clients(&grpc, c).await?.into_iter().enumerate();
        let ops = ops.map(|(i, client)| ops::Verify {
            client,
            secret: env.secret.clone(),
            payments: (i..per_set).step_by(c).map(|j| (verify_ids[j].clone(), j)).collect(),
            tracker: tracker.clone(),
            tag: format!("{run}-v{c}-{i}"),
            n: 0,
        });
        rows.push(point(env, plan, report::VERIFY, "paygate", ops.collect()).await);
        let make = |pool, i: usize| ops::SqlVerify {
            pool,
            payments: (i..per_set).step_by(c).map(|j| sql_verify_ids[j].clone()).collect(),
            tag: format!("{run}-sv{c}-{i}"),
            n: 0,
        };
        rows.push(sql_point(env, plan, args, report::SQL_VERIFY, c, make).await);
    }
    rows.push(idle_point(env, plan, "after the request points").await);
    if plan.runs("watch") {
        for &s in &plan.subscribers {
            let watch_plan = watch::Plan {
                subscribers: s,
                connections: args.connections,
                events: plan.watch_events,
                rate: args.watch_rate,
            };
            match watch::run(&mut env.server, env.probe_db.clone(), &env.secret, watch_plan).await {
                Ok(d) => {
                    let row = Row::from_delivery(d);
                    eprintln!(
                        "  {} × {s}: {} delivered, p99 {:.1} ms, peak RSS {:.0} MiB",
                        report::WATCH,
                        row.requests,
                        row.p99_ms.unwrap_or(f64::NAN),
                        row.server_rss_mib.unwrap_or(f64::NAN)
                    );
                    rows.push(row);
                }
                Err(e) => {
                    eprintln!("  {} × {s} failed: {e:#}", report::WATCH);
                    rows.push(Row {
                        operation: report::WATCH.into(),
                        role: "paygate",
                        clients: s,
                        errors: 1,
                        first_error: Some(format!("{e:#}")),
                        ..Default::default()
                    });
                }
            }
        }
    }
    Ok(rows)
}

/// Machine, date and versions, for the header and the JSON.
fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|v| v.trim_start_matches([' ', '\t', ':']));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model.unwrap_or("unknown"),
        "memory_gib": (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

fn out_dir(args: &Args) -> PathBuf {
    if let Some(dir) = &args.out_dir {
        return dir.clone();
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("bench"),
        _ => PathBuf::from("target/bench"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.target_grpc.is_none() && (args.target_database.is_some() || args.target_pid.is_some()) {
        bail!("--target-database and --target-pid go with --target-grpc");
    }
    let plan = Plan::from(&args);
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let mut env = Env::setup(&args).await?;
    let server_label = if env.server.owned() {
        args.server_bin
            .clone()
            .unwrap_or_else(|| std::env::current_exe().unwrap_or_default().with_file_name("paygate"))
            .display()
            .to_string()
    } else {
        env.server.grpc.clone()
    };
    eprintln!("paygate-bench{}: server {server_label}", if args.quick { " --quick" } else { "" });
    let result = tokio::select! {
        r = bench(&args, &plan, &mut env) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    env.teardown().await;
    let mut rows = result?;
    report::sort(&mut rows);
    report::fill_ratios(&mut rows);
    let targets = report::targets(&rows);
    let machine = machine();

    println!(
        "\npaygate-bench{} — {} — {} × {}, {} GiB — server {server_label} — {:.0} s per point after {:.1} s warm-up — total {:.0} s\n",
        if args.quick { " --quick" } else { "" },
        started.format("%Y-%m-%d %H:%M UTC"),
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["memory_gib"],
        plan.window.measure.as_secs_f64(),
        plan.window.warmup.as_secs_f64(),
        clock.elapsed().as_secs_f64(),
    );
    println!("{}", report::table(&rows));
    println!("Targets (reported, not asserted):\n{}", report::targets_text(&targets));

    let dir = out_dir(&args);
    let path = dir.join(format!("paygate-bench-{}.json", started.timestamp()));
    let json = serde_json::json!({
        "tool": "paygate-bench",
        "mode": if args.quick { "quick" } else { "full" },
        "started_at": started.to_rfc3339(),
        "total_secs": clock.elapsed().as_secs_f64(),
        "machine": machine,
        "server": server_label,
        "settings": {
            "warmup_ms": plan.window.warmup.as_millis() as u64,
            "measure_ms": plan.window.measure.as_millis() as u64,
            "clients": plan.clients,
            "subscribers": plan.subscribers,
            "watch_events": plan.watch_events,
            "watch_rate": args.watch_rate,
            "connections": args.connections,
            "baseline_max_connections": args.baseline_max_connections,
        },
        "rows": rows,
        "targets": targets,
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?).with_context(|| format!("writing {}", path.display()))?;
    println!("JSON: {}", path.display());
    Ok(())
}
