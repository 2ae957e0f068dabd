//! Migrations outside the server: with `database.migrate_on_start = false` the server applies
//! none and waits; `paygate migrate`, configured by environment variables only and without
//! provider credentials, applies them.

use std::process::{Command, Output};
use std::time::Duration;

use paygate::startup::Application;
use paygate::store::Store;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::common;

/// Runs the `paygate` binary with exactly `env` (inherited `PAYGATE_*` and `DATABASE_URL` removed).
fn paygate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paygate"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PAYGATE_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "warn").envs(env.iter().copied()).output().expect("run paygate")
}

#[tokio::test]
async fn without_migrate_on_start_the_server_waits_until_paygate_migrate_has_run() {
    let url = common::fresh_database_url().await;
    let mut config = common::test_config(&url);
    config.database.migrate_on_start = false;
    // create_if_missing stays on: the server creates the database but must not migrate it.
    let build = tokio::spawn(Application::build(config));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let db = loop {
        if let Ok(pool) = PgPoolOptions::new().max_connections(1).connect(&url).await {
            break pool;
        }
        assert!(tokio::time::Instant::now() < deadline, "the server did not create the database");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!build.is_finished(), "the server must not start on a database without the schema");
    let table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text").fetch_one(&db).await.unwrap();
    assert_eq!(table, None, "migrate_on_start = false must not apply migrations");
    assert!(!Store::from_pool(db.clone()).ready().await, "not ready before the schema is current");

    // The migration job's configuration: environment only, no config file, no provider
    // credentials; an account `serve` would refuse (an unreadable credential file) is not read.
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PAYGATE_DATABASE__CREATE_IF_MISSING", "false"),
        ("PAYGATE_DATABASE__MAX_CONNECTIONS", "1"),
        ("PAYGATE_TELEMETRY__LOG_FORMAT", "json"),
        ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__EG_SHOP__SECRET_KEY_FILE", "/nonexistent/paygate/secret_key"),
    ];
    let out = paygate(&["migrate"], &env);
    assert!(out.status.success(), "paygate migrate failed: {}", String::from_utf8_lossy(&out.stderr));
    // The serve path's validation is unchanged: the same sources are refused there.
    let out = paygate(&["check-config"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret_key"));

    let app = tokio::time::timeout(Duration::from_secs(15), build)
        .await
        .expect("the server starts once the schema is current")
        .expect("build task")
        .expect("application builds");
    let shutdown = CancellationToken::new();
    let http = format!("http://{}", app.http_addr());
    let running = tokio::spawn(app.run(shutdown.clone()));
    let ready = reqwest::get(format!("{http}/readyz")).await.expect("GET /readyz");
    assert_eq!(ready.status(), 200);
    assert!(Store::from_pool(db.clone()).ready().await);
    shutdown.cancel();
    running.await.expect("server task").expect("server stops cleanly");
    db.close().await;
}

#[tokio::test]
async fn paygate_migrate_refuses_an_unknown_database_key() {
    let url = common::fresh_database_url().await;
    let out = paygate(&["migrate"], &[("DATABASE_URL", url.as_str()), ("PAYGATE_DATABASE__MIGRATE_ON_STRAT", "false")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("migrate_on_strat"));
}
