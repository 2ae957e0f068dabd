//! The result table (printed as Markdown), the targets of the throughput issue, and the JSON file.

use serde::Serialize;

use crate::load::{Sample, percentile_ms};
use crate::watch::Delivery;

pub const IDLE: &str = "idle (no requests)";
pub const CREATE: &str = "CreateCheckout sandbox";
pub const CREATE_XPAY: &str = "CreateCheckout xpay (HTTP mock)";
pub const SQL_CREATE: &str = "SQL: CreateCheckout";
pub const STATUS: &str = "GetPaymentStatus";
pub const SQL_STATUS: &str = "SQL: GetPaymentStatus";
pub const HEALTH: &str = "empty RPC (Health/Check)";
pub const VERIFY: &str = "VerifyCallback";
pub const SQL_VERIFY: &str = "SQL: VerifyCallback";
pub const WATCH: &str = "WatchPayments delivery";

/// One line of the table.
#[derive(Debug, Default, Serialize)]
pub struct Row {
    pub operation: String,
    /// `paygate` or `baseline`.
    pub role: &'static str,
    /// Clients, or subscribers for WatchPayments.
    pub clients: usize,
    /// Successful requests (delivered messages for WatchPayments).
    pub requests: u64,
    pub secs: f64,
    pub req_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub errors: u64,
    pub first_error: Option<String>,
    /// The baseline the ratio is taken against.
    pub baseline: Option<String>,
    /// This row's req/s ÷ the baseline's req/s at the same clients.
    pub ratio: Option<f64>,
    /// Percent of one core.
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mib: Option<f64>,
    pub bench_cpu_pct: f64,
    /// All Postgres processes of the cluster.
    pub db_cpu_pct: f64,
    /// Everything else on the machine.
    pub other_cpu_pct: f64,
    /// Connections of the baseline's own pool.
    pub db_connections: Option<u32>,
    pub notes: String,
    pub delivery: Option<Delivery>,
}

impl Row {
    pub fn from_sample(operation: &str, role: &'static str, clients: usize, s: &Sample, rss: Option<f64>) -> Self {
        Self {
            operation: operation.to_owned(),
            role,
            clients,
            requests: s.latencies_us.len() as u64,
            secs: s.secs,
            req_per_sec: s.per_sec(),
            p50_ms: s.percentile_ms(50.0),
            p99_ms: s.percentile_ms(99.0),
            p999_ms: s.percentile_ms(99.9),
            max_ms: s.percentile_ms(100.0),
            errors: s.errors,
            first_error: s.first_error.clone(),
            server_cpu_pct: s.cpu.server,
            server_rss_mib: rss,
            bench_cpu_pct: s.cpu.bench,
            db_cpu_pct: s.cpu.db,
            other_cpu_pct: s.cpu.other,
            ..Default::default()
        }
    }

    pub fn from_delivery(d: Delivery) -> Self {
        let errors = (d.expected - d.delivered.min(d.expected)) as u64;
        let rss = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
        let notes = format!(
            "{} changes at {}/s over {} conns; delivered {}/{}; max {} ms; RSS idle {} → subscribed {} → peak {} MiB; subscribe {:.1} s",
            d.events,
            d.rate_per_sec,
            d.connections,
            d.delivered,
            d.expected,
            ms(d.max_ms),
            rss(d.rss_idle_mib),
            rss(d.rss_subscribed_mib),
            rss(d.rss_peak_mib),
            d.subscribe_secs,
        );
        Self {
            operation: WATCH.to_owned(),
            role: "paygate",
            clients: d.subscribers,
            requests: d.delivered as u64,
            secs: d.secs,
            req_per_sec: d.delivered as f64 / d.secs.max(1e-3),
            p50_ms: percentile_ms(&d.latencies_us, 50.0),
            p99_ms: percentile_ms(&d.latencies_us, 99.0),
            p999_ms: percentile_ms(&d.latencies_us, 99.9),
            max_ms: d.max_ms,
            errors,
            first_error: d.first_error.clone(),
            server_cpu_pct: d.cpu.server,
            server_rss_mib: d.rss_peak_mib,
            bench_cpu_pct: d.cpu.bench,
            db_cpu_pct: d.cpu.db,
            other_cpu_pct: d.cpu.other,
            notes,
            delivery: Some(d),
            ..Default::default()
        }
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.1}"),
        None => "–".to_owned(),
    }
}

/// Groups the rows by operation (in the table's order), keeping the run order within each.
pub fn sort(rows: &mut [Row]) {
    const ORDER: [&str; 10] =
        [IDLE, CREATE, CREATE_XPAY, SQL_CREATE, STATUS, SQL_STATUS, HEALTH, VERIFY, SQL_VERIFY, WATCH];
    rows.sort_by_key(|r| ORDER.iter().position(|o| *o == r.operation).unwrap_or(ORDER.len()));
}

fn find<'a>(rows: &'a [Row], operation: &str, clients: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.operation == operation && r.clients == clients && r.requests > 0)
}

/// Fills `baseline` and `ratio`: creates against the SQL create, callbacks against the SQL
/// callback, status reads against the slower of the empty RPC and the SQL read.
pub fn fill_ratios(rows: &mut [Row]) {
    let mut ratios = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let candidates: &[&str] = match row.operation.as_str() {
            CREATE | CREATE_XPAY => &[SQL_CREATE],
            VERIFY => &[SQL_VERIFY],
            STATUS => &[HEALTH, SQL_STATUS],
            _ => &[],
        };
        let slowest = candidates
            .iter()
            .filter_map(|op| find(rows, op, row.clients))
            .min_by(|a, b| a.req_per_sec.total_cmp(&b.req_per_sec));
        if let Some(base) = slowest {
            ratios.push((i, base.operation.clone(), row.req_per_sec / base.req_per_sec));
        }
    }
    for (i, baseline, ratio) in ratios {
        rows[i].baseline = Some(baseline);
        rows[i].ratio = Some(ratio);
    }
}

fn short_baseline(name: &str) -> &'static str {
    if name == HEALTH { "RPC" } else { "SQL" }
}

/// The table, as Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| operation | clients | req/s | p50 ms | p99 ms | p99.9 ms | errors | vs baseline | server CPU % | server RSS MiB | bench CPU % | db CPU % | other CPU % | notes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let opt = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
    for r in rows {
        let ratio = match (&r.baseline, r.ratio) {
            (Some(b), Some(x)) => format!("{x:.2}× {}", short_baseline(b)),
            _ => "–".to_owned(),
        };
        let mut notes = r.notes.clone();
        if let Some(n) = r.db_connections {
            notes = format!("pool {n}{}{notes}", if notes.is_empty() { "" } else { "; " });
        }
        if let Some(e) = &r.first_error {
            let e: String = e.chars().take(120).collect();
            notes = format!("{notes}{}first error: {}", if notes.is_empty() { "" } else { "; " }, e.replace('|', "/"));
        }
        let rate =
            if r.req_per_sec >= 100.0 { format!("{:.0}", r.req_per_sec) } else { format!("{:.1}", r.req_per_sec) };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} |\n",
            r.operation,
            r.clients,
            rate,
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.p999_ms),
            r.errors,
            ratio,
            opt(r.server_cpu_pct),
            opt(r.server_rss_mib),
            r.bench_cpu_pct,
            r.db_cpu_pct,
            r.other_cpu_pct,
            notes,
        ));
    }
    out
}

/// One target of the throughput issue with the measured figure.
#[derive(Debug, Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    /// `None` when this run did not measure it (e.g. `--quick`).
    pub met: Option<bool>,
}

/// Evaluates the targets against `rows` (reported, never asserted).
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let mut out = Vec::new();
    let missing = |target: &str| Target { target: target.to_owned(), measured: "not measured".into(), met: None };

    let t = "CreateCheckout ≥ 80 % of its SQL baseline at 32 clients";
    out.push(match (find(rows, CREATE, 32), find(rows, SQL_CREATE, 32)) {
        (Some(p), Some(b)) => {
            let x = p.req_per_sec / b.req_per_sec;
            Target {
                target: t.into(),
                measured: format!("{:.0} % ({:.0} vs {:.0} req/s)", 100.0 * x, p.req_per_sec, b.req_per_sec),
                met: Some(x >= 0.8),
            }
        }
        _ => missing(t),
    });
    let t = "CreateCheckout ≤ 1 ms above its SQL baseline at 1 client (p50)";
    out.push(match (find(rows, CREATE, 1), find(rows, SQL_CREATE, 1)) {
        (Some(Row { p50_ms: Some(p), .. }), Some(Row { p50_ms: Some(b), .. })) => Target {
            target: t.into(),
            measured: format!("+{:.2} ms ({p:.2} vs {b:.2} ms)", p - b),
            met: Some(p - b <= 1.0),
        },
        _ => missing(t),
    });
    let t = "VerifyCallback ≥ 70 % of its SQL baseline at 32 clients";
    out.push(match (find(rows, VERIFY, 32), find(rows, SQL_VERIFY, 32)) {
        (Some(p), Some(b)) => {
            let x = p.req_per_sec / b.req_per_sec;
            Target {
                target: t.into(),
                measured: format!("{:.0} % ({:.0} vs {:.0} req/s)", 100.0 * x, p.req_per_sec, b.req_per_sec),
                met: Some(x >= 0.7),
            }
        }
        _ => missing(t),
    });
    let t = "VerifyCallback p50 at 1 client ≤ 2× the SQL transaction";
    out.push(match (find(rows, VERIFY, 1), find(rows, SQL_VERIFY, 1)) {
        (Some(Row { p50_ms: Some(p), .. }), Some(Row { p50_ms: Some(b), .. })) => Target {
            target: t.into(),
            measured: format!("{:.2}× ({p:.2} vs {b:.2} ms)", p / b),
            met: Some(*p <= 2.0 * b),
        },
        _ => missing(t),
    });
    let t = "GetPaymentStatus ≥ 50 % of min(empty RPC, indexed read) at 32 clients";
    out.push(match (find(rows, STATUS, 32), find(rows, HEALTH, 32), find(rows, SQL_STATUS, 32)) {
        (Some(p), Some(h), Some(s)) => {
            let base = h.req_per_sec.min(s.req_per_sec);
            let x = p.req_per_sec / base;
            Target {
                target: t.into(),
                measured: format!(
                    "{:.0} % ({:.0} vs min({:.0} RPC, {:.0} SQL) req/s)",
                    100.0 * x,
                    p.req_per_sec,
                    h.req_per_sec,
                    s.req_per_sec
                ),
                met: Some(x >= 0.5),
            }
        }
        _ => missing(t),
    });
    let t = "WatchPayments 10,000 subscribers: p99 commit-to-delivery < 50 ms";
    out.push(match find(rows, WATCH, 10_000) {
        Some(Row { p99_ms: Some(p99), .. }) => {
            Target { target: t.into(), measured: format!("{p99:.1} ms"), met: Some(*p99 < 50.0) }
        }
        _ => missing(t),
    });
    let t = "WatchPayments 10,000 subscribers: server RSS < 200 MB";
    out.push(match find(rows, WATCH, 10_000) {
        Some(Row { server_rss_mib: Some(rss), .. }) => {
            let mb = rss * 1.048_576;
            Target { target: t.into(), measured: format!("{mb:.0} MB peak ({rss:.0} MiB)"), met: Some(mb < 200.0) }
        }
        _ => missing(t),
    });
    out
}

/// The targets, as a Markdown list.
pub fn targets_text(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "–",
            };
            format!("- {}: {} — {verdict}\n", t.target, t.measured)
        })
        .collect()
}
