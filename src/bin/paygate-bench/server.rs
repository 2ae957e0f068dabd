//! The `paygate` server under test (a child process or one already running) and CPU/RSS
//! readings from `/proc`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use paygate::pb::payment_service_client::PaymentServiceClient;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// How to start a server: the binary, its database and extra environment.
pub struct Spawn {
    pub exe: PathBuf,
    pub database_url: String,
    pub env: Vec<(String, String)>,
}

/// The server under test.
pub struct Server {
    child: Option<Child>,
    spawn: Option<Spawn>,
    pid: Option<u32>,
    pub grpc: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// A server somebody else runs; `pid` (optional) for its CPU and RSS.
    pub fn external(grpc: String, pid: Option<u32>) -> Self {
        Self { child: None, spawn: None, pid, grpc }
    }

    /// Starts `paygate` as a child on fresh ports and waits until it answers.
    pub async fn start(spawn: Spawn) -> anyhow::Result<Self> {
        let mut server = Self { child: None, spawn: Some(spawn), pid: None, grpc: String::new() };
        server.launch().await?;
        Ok(server)
    }

    /// Whether this process started the server (and so may restart it).
    pub fn owned(&self) -> bool {
        self.spawn.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let Some(spawn) = &self.spawn else { anyhow::bail!("cannot start a server this process does not own") };
        let (grpc_port, http_port) = (free_port()?, free_port()?);
        let mut cmd = Command::new(&spawn.exe);
        for (k, _) in std::env::vars() {
            if k.starts_with("PAYGATE_") || k == "DATABASE_URL" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("PAYGATE_DATABASE__URL", &spawn.database_url)
            .env("PAYGATE_SERVER__GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
            .env("PAYGATE_SERVER__HTTP_ADDR", format!("127.0.0.1:{http_port}"))
            .env("PAYGATE_SERVER__METRICS_ADDR", "")
            .env("RUST_LOG", "warn")
            .envs(spawn.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child =
            cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start {}: {e} (build it first)", spawn.exe.display()))?;
        self.pid = Some(child.id());
        self.child = Some(child);
        self.grpc = format!("http://127.0.0.1:{grpc_port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if PaymentServiceClient::connect(self.grpc.clone()).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!("{} exited during startup: {status}", spawn.exe.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("{} did not answer on {} within 60 s", spawn.exe.display(), self.grpc)
    }

    /// Stops the child (if any) and starts a fresh process on the same database and new ports.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch().await
    }

    /// Kills the child, if this process started one.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Resident set size in MiB, when the server's pid is known.
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let kb: f64 =
            status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb / 1024.0)
    }
}

/// utime + stime of a process, in ticks.
fn process_ticks(pid: &str) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map(|(_, c)| c.to_owned())?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 0, utime field 11, stime field 12.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks))
}

/// CPU ticks of the Postgres processes that work for the benchmark's database: its backends and
/// the cluster's background processes (WAL writer, checkpointer, …), by pid. Backends of other
/// databases on the same cluster count as "other". Without a pool: every `postgres` process.
async fn postgres_ticks(db: Option<&sqlx::PgPool>) -> HashMap<u32, u64> {
    let ours: Option<Vec<i32>> = match db {
        Some(pool) => {
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database() OR datname IS NULL")
                .fetch_all(pool)
                .await
                .ok()
        }
        None => None,
    };
    let pids: Vec<String> = match ours {
        Some(pids) => pids.iter().map(i32::to_string).collect(),
        None => std::fs::read_dir("/proc")
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                    .collect()
            })
            .unwrap_or_default(),
    };
    pids.iter()
        .filter_map(|pid| {
            let (comm, ticks) = process_ticks(pid)?;
            (comm == "postgres").then(|| Some((pid.parse().ok()?, ticks))).flatten()
        })
        .collect()
}

/// Busy ticks of the whole machine (all cores), from `/proc/stat`.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else { return 0 };
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    total.saturating_sub(values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0))
}

/// One reading of every CPU counter.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    server: Option<u64>,
    bench: u64,
    postgres: HashMap<u32, u64>,
    machine: u64,
}

/// CPU use over an interval, in percent of one core.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuUse {
    pub server: Option<f64>,
    pub bench: f64,
    /// Postgres working for the benchmark's database (its backends and the background processes).
    pub db: f64,
    /// Everything else on the machine (other processes, interrupts).
    pub other: f64,
}

/// Takes CPU readings of the server, this process, Postgres and the machine.
#[derive(Debug, Clone)]
pub struct Probe {
    pub server_pid: Option<u32>,
    /// A connection to the benchmark's database, to tell its backends from other databases'.
    pub db: Option<sqlx::PgPool>,
}

impl Probe {
    pub async fn snapshot(&self) -> Snapshot {
        let postgres = postgres_ticks(self.db.as_ref()).await;
        Snapshot {
            at: Instant::now(),
            server: self.server_pid.and_then(|p| process_ticks(&p.to_string())).map(|(_, t)| t),
            bench: process_ticks("self").map_or(0, |(_, t)| t),
            postgres,
            machine: machine_busy_ticks(),
        }
    }
}

impl Snapshot {
    /// CPU use between `self` (earlier) and `later`.
    pub fn until(&self, later: &Snapshot) -> CpuUse {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let pct = |a: u64, b: u64| 100.0 * b.saturating_sub(a) as f64 / TICKS_PER_SEC / secs;
        let server = match (self.server, later.server) {
            (Some(a), Some(b)) => Some(pct(a, b)),
            _ => None,
        };
        let bench = pct(self.bench, later.bench);
        // A backend that started during the interval counts from zero; one that ended is lost.
        let db_ticks: u64 =
            later.postgres.iter().map(|(pid, &t)| t.saturating_sub(self.postgres.get(pid).copied().unwrap_or(0))).sum();
        let db = pct(0, db_ticks);
        let machine = pct(self.machine, later.machine);
        let other = (machine - server.unwrap_or(0.0) - bench - db).max(0.0);
        CpuUse { server, bench, db, other }
    }
}
