//! Test harness: the real server on ephemeral ports against a fresh Postgres database per test.
#![allow(dead_code)]

pub mod private_pg;

use std::sync::{Arc, Once};
use std::time::Duration;

use paygate::config::Config;
use paygate::gateway::Gateway;
use paygate::pb;
use paygate::pb::payment_service_client::PaymentServiceClient;
use paygate::providers::Provider;
use paygate::providers::sandbox::SandboxAccount;
use paygate::providers::signature::sign_timestamped;
use paygate::startup::Application;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The sandbox secret the test config sets, so tests can sign callbacks like a provider.
pub const SANDBOX_SECRET: &str = "whsec_test_sandbox_secret";

/// Server URL of the Postgres the tests use (any database on it; each test creates its own).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn database_url(name: &str) -> String {
    let mut url = url::Url::parse(&server_url()).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Drops test databases left behind by earlier runs: any more than 15 minutes old (their names
/// carry a ULID; no single test runs that long, and each test uses its own database).
async fn sweep_old_databases() {
    static ONCE: Once = Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let Ok(pool) = PgPoolOptions::new().max_connections(1).connect(&server_url()).await else { return };
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'paygate\\_t\\_%'")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    let cutoff = std::time::SystemTime::now() - Duration::from_secs(15 * 60);
    for name in names {
        let Some(ulid) = name.strip_prefix("paygate_t_").and_then(|u| ulid::Ulid::from_string(&u.to_uppercase()).ok())
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

/// The configuration every test starts from.
pub fn test_config(db_url: &str) -> Config {
    let mut config = Config::default();
    config.server.grpc_addr = "127.0.0.1:0".into();
    config.server.http_addr = "127.0.0.1:0".into();
    config.server.metrics_addr = "127.0.0.1:0".into();
    config.server.shutdown_grace_secs = 5;
    config.database.url = db_url.into();
    config.database.max_connections = 5;
    config
        .providers
        .sandbox
        .accounts
        .insert("default".into(), SandboxAccount { webhook_secret: Some(SANDBOX_SECRET.into()), ..Default::default() });
    config
}

/// A running server.
pub struct TestApp {
    pub config: Config,
    pub grpc: PaymentServiceClient<Channel>,
    pub grpc_addr: std::net::SocketAddr,
    /// `http://` + the bound HTTP address (usually also `public_base_url`).
    pub http: String,
    /// `http://` + the bound metrics address (`server.metrics_addr`), unless it is off.
    pub metrics: Option<String>,
    pub gateway: Gateway,
    pub hub: paygate::watch::Hub,
    /// A small pool on the test's database, for assertions.
    pub db: PgPool,
    pub client: reqwest::Client,
    extra: Vec<Arc<dyn Provider>>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// Starts the server on a fresh database with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, Vec::new()).await
}

/// Starts the server on a fresh database, after `adjust` edits the configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config), extra: Vec<Arc<dyn Provider>>) -> TestApp {
    sweep_old_databases().await;
    let name = format!("paygate_t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut config = test_config(&database_url(&name));
    adjust(&mut config);
    start(config, extra).await
}

async fn start(config: Config, extra: Vec<Arc<dyn Provider>>) -> TestApp {
    let app = Application::build_with(config.clone(), extra.clone()).await.expect("application builds");
    let grpc_addr = app.grpc_addr();
    let http = format!("http://{}", app.http_addr());
    let metrics = app.metrics_addr().map(|a| format!("http://{a}"));
    let gateway = app.gateway().clone();
    let hub = app.hub().clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run(shutdown.clone()));
    let grpc = connect(grpc_addr).await;
    let db = PgPoolOptions::new().max_connections(2).connect(&config.database.url).await.expect("test pool");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    TestApp { config, grpc, grpc_addr, http, metrics, gateway, hub, db, client, extra, shutdown, handle }
}

async fn connect(addr: std::net::SocketAddr) -> PaymentServiceClient<Channel> {
    for _ in 0..50 {
        if let Ok(client) = PaymentServiceClient::connect(format!("http://{addr}")).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gRPC server did not come up on {addr}");
}

impl TestApp {
    /// Stops the server gracefully and waits for it.
    pub async fn stop(self) -> (Config, Vec<Arc<dyn Provider>>) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(15), self.handle).await;
        let result = result.expect("server stops in time").expect("server task does not panic");
        result.expect("server exits cleanly");
        self.db.close().await;
        (self.config, self.extra)
    }

    /// Another replica: a new server on the same database and configuration (new ports).
    pub async fn another_instance(&self) -> TestApp {
        start(self.config.clone(), self.extra.clone()).await
    }

    /// Stops the server and starts a new one on the same database, after `adjust` edits the
    /// configuration.
    pub async fn restart_with(self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let (mut config, extra) = self.stop().await;
        adjust(&mut config);
        start(config, extra).await
    }

    /// Stops the server and starts a new one on the same database and configuration.
    pub async fn restart(self) -> TestApp {
        let (config, extra) = self.stop().await;
        start(config, extra).await
    }

    /// A minimal valid sandbox request.
    pub fn checkout_request(&self, reference: &str, amount_minor: i64, currency: &str) -> pb::CreateCheckoutRequest {
        pb::CreateCheckoutRequest {
            provider: "sandbox".into(),
            merchant_reference: reference.into(),
            amount: Some(pb::Money { amount_minor, currency: currency.into() }),
            return_url: "https://shop.example/return?order=1".into(),
            cancel_url: "https://shop.example/cancel".into(),
            ..Default::default()
        }
    }

    /// Creates a sandbox payment of 12.34 USD.
    pub async fn create_payment(&self, reference: &str) -> pb::Payment {
        let request = self.checkout_request(reference, 1234, "USD");
        self.grpc
            .clone()
            .create_checkout(request)
            .await
            .expect("create checkout")
            .into_inner()
            .payment
            .expect("payment")
    }

    pub async fn get_payment(&self, id: &str) -> pb::Payment {
        let request = pb::GetPaymentStatusRequest { payment_id: id.into(), ..Default::default() };
        self.grpc.clone().get_payment_status(request).await.expect("get status").into_inner().payment.expect("payment")
    }

    /// POSTs a sandbox callback signed now with the test secret to the HTTP ingress.
    pub async fn post_sandbox_callback(&self, body: &str) -> reqwest::Response {
        let header = sign_timestamped(SANDBOX_SECRET.as_bytes(), chrono::Utc::now().timestamp(), body.as_bytes());
        self.post_callback("sandbox/default", body, &header).await
    }

    /// POSTs a callback with an explicit signature header.
    pub async fn post_callback(&self, path: &str, body: &str, signature: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/callbacks/{path}", self.http))
            .header("content-type", "application/json")
            .header("Paygate-Sandbox-Signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("callback request")
    }

    /// Waits (up to 5 s) until the payment has `status` (changed in the background, e.g. by a
    /// scheduled lookup); returns it as last read, for the caller to assert on.
    pub async fn wait_for_status(&self, id: &str, status: pb::PaymentStatus) -> pb::Payment {
        let mut payment = self.get_payment(id).await;
        for _ in 0..100 {
            if payment.status() == status {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            payment = self.get_payment(id).await;
        }
        payment
    }

    /// POSTs a callback body with `headers` to `/callbacks/{path}` (`provider/account`).
    pub async fn post_raw_callback(&self, path: &str, headers: &[(&str, &str)], body: &str) -> reqwest::Response {
        let mut request = self.client.post(format!("{}/callbacks/{path}", self.http)).body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("callback POST")
    }

    /// VerifyCallback for `provider`'s default account with `headers` (names as given) and `body`.
    pub async fn verify_raw(
        &self,
        provider: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<pb::VerifyCallbackResponse, tonic::Status> {
        let request = pb::VerifyCallbackRequest {
            provider: provider.into(),
            account: "default".into(),
            body: body.as_bytes().to_vec(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            query: String::new(),
        };
        self.grpc.clone().verify_callback(request).await.map(tonic::Response::into_inner)
    }

    /// GetPaymentStatus with `refresh`: the provider is asked now.
    pub async fn refresh(&self, id: &str) -> Result<pb::Payment, tonic::Status> {
        let request = pb::GetPaymentStatusRequest { payment_id: id.into(), refresh: true, ..Default::default() };
        self.grpc.clone().get_payment_status(request).await.map(|r| r.into_inner().payment.expect("payment"))
    }

    /// Kinds of the events recorded for `id` from `source` (`callback`, `reconciler`, …), oldest first.
    pub async fn event_kinds(&self, id: &str, source: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT kind FROM payment_events WHERE payment_id = $1 AND source = $2 ORDER BY sequence")
            .bind(id)
            .bind(source)
            .fetch_all(&self.db)
            .await
            .expect("event kinds")
    }

    /// (status, source) of the applied events of `id`, oldest first.
    pub async fn applied(&self, id: &str) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT status, source FROM payment_events WHERE payment_id = $1 AND version IS NOT NULL ORDER BY sequence",
        )
        .bind(id)
        .fetch_all(&self.db)
        .await
        .expect("applied events")
    }

    /// Moves `id` `secs` seconds past its `expires_at` and makes its check due, instead of waiting.
    pub async fn expire_now(&self, id: &str, secs: f64) {
        sqlx::query("UPDATE payments SET expires_at = now() - make_interval(secs => $2) WHERE id = $1")
            .bind(id)
            .bind(secs)
            .execute(&self.db)
            .await
            .expect("expire the payment");
        sqlx::query("UPDATE provider_checks SET due_at = now() WHERE payment_id = $1")
            .bind(id)
            .execute(&self.db)
            .await
            .expect("make its check due");
    }

    /// Number of rows in a table (assertions on audit and event logs).
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&self.db).await.expect("count query")
    }
}

/// A sandbox callback body.
pub fn sandbox_body(event_id: &str, payment_id: &str, status: &str, amount_minor: i64, currency: &str) -> String {
    serde_json::json!({
        "event_id": event_id,
        "payment_id": payment_id,
        "status": status,
        "amount": { "amount_minor": amount_minor, "currency": currency },
        "occurred_at": "2026-11-23T10:00:00Z",
    })
    .to_string()
}

/// A timestamp as (seconds, nanos), for exact comparisons.
pub fn seconds(ts: &Option<prost_types::Timestamp>) -> (i64, i32) {
    let ts = ts.as_ref().expect("timestamp");
    (ts.seconds, ts.nanos)
}

/// The `ErrorInfo` (reason, metadata) of a gRPC error, checking the domain.
pub fn error_info(status: &tonic::Status) -> (String, std::collections::HashMap<String, String>) {
    use tonic_types::StatusExt;
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "paygate.v1");
    (info.reason, info.metadata)
}

/// Form-POSTs an action to the sandbox page.
pub async fn press(app: &TestApp, payment_id: &str, action: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/sandbox/checkout/{payment_id}", app.http))
        .form(&[("action", action)])
        .send()
        .await
        .expect("page POST")
}

/// How many `method path` requests a mock provider received.
pub async fn requests_to(mock: &wiremock::MockServer, method: &str, path: &str) -> usize {
    let requests = mock.received_requests().await.unwrap_or_default();
    requests.iter().filter(|r| r.method.as_str() == method && r.url.path() == path).count()
}

/// Waits (up to 5 s) until a mock provider received at least `n` `method path` requests.
pub async fn wait_for_requests(mock: &wiremock::MockServer, method: &str, path: &str, n: usize) {
    for _ in 0..100 {
        if requests_to(mock, method, path).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {n} {method} {path} requests, got {}", requests_to(mock, method, path).await);
}

/// A provider context whose HTTP client gives up after 300 ms, for create-timeout tests (the
/// shared client waits 15 s); pass the adapter built with it to [`spawn_app_with`].
pub fn short_timeout_context() -> paygate::providers::ProviderContext {
    paygate::providers::ProviderContext {
        public_base_url: "http://127.0.0.1:9".into(),
        client: reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client"),
    }
}

/// For a provider that cannot dedupe creates: a create that times out answers UNAVAILABLE
/// `PROVIDER_OUTCOME_UNKNOWN` naming the payment, which gets a queued provider check; a retry
/// with the same key replays that answer and never sends create again (no second checkout).
/// Returns the payment id.
pub async fn assert_create_outcome_unknown(
    app: &TestApp,
    mock: &wiremock::MockServer,
    create_path: &str,
    mut request: pb::CreateCheckoutRequest,
) -> String {
    request.idempotency_key = "create-timeout-key".into();
    let started = std::time::Instant::now();
    let status = app.grpc.clone().create_checkout(request.clone()).await.expect_err("create must time out");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "PROVIDER_OUTCOME_UNKNOWN");
    let payment_id = metadata.get("payment_id").cloned().expect("the error names the payment");
    let retry = app.grpc.clone().create_checkout(request).await.expect_err("the retry replays the outcome");
    assert_eq!(error_info(&retry).0, "PROVIDER_OUTCOME_UNKNOWN");
    assert_eq!(error_info(&retry).1.get("payment_id"), Some(&payment_id));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(requests_to(mock, "POST", create_path).await, 1, "create is never sent twice");
    let reason: String = sqlx::query_scalar("SELECT reason FROM provider_checks WHERE payment_id = $1")
        .bind(&payment_id)
        .fetch_one(&app.db)
        .await
        .expect("the payment has a queued check");
    assert_eq!(reason, "create_outcome_unknown");
    payment_id
}

/// A database URL on the test server under a fresh name, not created yet (a `paygate` process
/// creates it and runs the migrations when it starts).
pub async fn fresh_database_url() -> String {
    sweep_old_databases().await;
    database_url(&format!("paygate_t_{}", ulid::Ulid::new().to_string().to_lowercase()))
}

/// A small pool on `db_url` for assertions.
pub async fn small_pool(db_url: &str) -> PgPool {
    PgPoolOptions::new().max_connections(2).connect(db_url).await.expect("test pool")
}

/// A real `paygate` process (the built binary, as a child), so that it can be SIGTERMed like a
/// pod being rolled or SIGKILLed like a crashed one. Dropping it kills it.
pub struct Process {
    pub child: std::process::Child,
    pub grpc: PaymentServiceClient<Channel>,
    /// `http://` + the HTTP address.
    pub http: String,
    /// Everything written to standard output and error so far, when started by
    /// [`spawn_process_captured`].
    pub output: Option<Captured>,
}

/// Standard output and error of a child, read as it writes (so a chatty process never blocks
/// on a full pipe), both into one buffer.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn read_from(&self, mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<()> {
        let buffer = self.0.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buffer.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        })
    }

    /// What was written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Sends SIGTERM (as Kubernetes does before stopping a pod).
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Sends SIGKILL and reaps the process.
    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL paygate");
        let _ = self.child.wait();
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the process binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts the `paygate` binary on `db_url` (created and migrated if missing) with the sandbox
/// test secret, a 5 s shutdown grace and `extra_env` (applied last, so it can override), on
/// fresh loopback ports; returns once it answers gRPC. Inherited `PAYGATE_*` variables are
/// removed so the developer's environment cannot change the test.
pub async fn spawn_process(db_url: &str, extra_env: &[(&str, &str)]) -> Process {
    spawn_process_with(db_url, extra_env, Output::Null).await
}

/// [`spawn_process`] with its standard output piped (`child.stdout`), to read its logs.
pub async fn spawn_process_piped(db_url: &str, extra_env: &[(&str, &str)]) -> Process {
    spawn_process_with(db_url, extra_env, Output::PipedStdout).await
}

/// [`spawn_process`] with the process's stdout (its log) appended to `log` when given.
pub async fn spawn_process_logging_to(
    db_url: &str,
    extra_env: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> Process {
    let output = log.map_or(Output::Null, |path| Output::LogFile(path.to_owned()));
    spawn_process_with(db_url, extra_env, output).await
}

/// [`spawn_process`] with its standard output and error read from the start into
/// [`Process::output`] (including those of attempts that failed to start).
pub async fn spawn_process_captured(db_url: &str, extra_env: &[(&str, &str)]) -> Process {
    spawn_process_with(db_url, extra_env, Output::Captured(Captured::default())).await
}

/// Where a child's standard output and error go.
#[derive(Clone)]
enum Output {
    /// Output discarded, errors inherited.
    Null,
    /// Output piped to `child.stdout`, errors inherited.
    PipedStdout,
    /// Both read into the buffer.
    Captured(Captured),
    /// Output appended to this file, errors inherited.
    LogFile(std::path::PathBuf),
}

async fn spawn_process_with(db_url: &str, extra_env: &[(&str, &str)], output: Output) -> Process {
    // A port taken between `free_port` and the bind makes the process exit: try new ports.
    for _ in 0..3 {
        if let Some(process) = try_spawn_process(db_url, extra_env, output.clone()).await {
            return process;
        }
    }
    panic!("paygate process did not start");
}

async fn try_spawn_process(db_url: &str, extra_env: &[(&str, &str)], output: Output) -> Option<Process> {
    let (grpc_port, http_port) = (free_port(), free_port());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_paygate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PAYGATE_") || k.starts_with("OTEL_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.env("PAYGATE_DATABASE__URL", db_url)
        .env("PAYGATE_DATABASE__MAX_CONNECTIONS", "4")
        .env("PAYGATE_SERVER__GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("PAYGATE_SERVER__HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("PAYGATE_SERVER__METRICS_ADDR", "")
        .env("PAYGATE_SERVER__SHUTDOWN_GRACE_SECS", "5")
        .env("PAYGATE_PROVIDERS__SANDBOX__ACCOUNTS__DEFAULT__WEBHOOK_SECRET", SANDBOX_SECRET)
        .env("RUST_LOG", "warn")
        .envs(extra_env.iter().copied())
        .stdin(std::process::Stdio::null());
    match &output {
        Output::Null => cmd.stdout(std::process::Stdio::null()),
        Output::PipedStdout => cmd.stdout(std::process::Stdio::piped()),
        Output::LogFile(path) => {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("log file");
            cmd.stdout(std::process::Stdio::from(file))
        }
        Output::Captured(_) => cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()),
    };
    let mut child = cmd.spawn().expect("start paygate");
    let captured = match output {
        Output::Captured(captured) => {
            captured.read_from(child.stdout.take().expect("piped stdout"));
            captured.read_from(child.stderr.take().expect("piped stderr"));
            Some(captured)
        }
        _ => None,
    };
    // Killed if it does not come up (or this panics) before it is handed over as a `Process`.
    let mut starting = Starting(Some(child));
    let url = format!("http://127.0.0.1:{grpc_port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if starting.0.as_mut().and_then(|c| c.try_wait().ok()).flatten().is_some() {
            return None;
        }
        let Ok(mut grpc) = PaymentServiceClient::connect(url.clone()).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        // Accepting a connection is not serving yet: any answer from the service is.
        let probe = pb::GetPaymentStatusRequest { payment_id: "pay_probe".into(), ..Default::default() };
        match tokio::time::timeout(Duration::from_secs(5), grpc.get_payment_status(probe)).await {
            Ok(Err(status)) if matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) => {
                let child = starting.0.take().expect("child");
                return Some(Process { child, grpc, http: format!("http://127.0.0.1:{http_port}"), output: captured });
            }
            Err(_) => {}
        }
    }
    panic!("paygate process did not serve gRPC on {url} within 15 s");
}

/// A child not yet handed over: killed on drop.
struct Starting(Option<std::process::Child>);

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
