//! `paygate` binary: `serve` (default), `migrate`, `check-config`, and the client commands
//! `watch`, `list`, `cancel`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use paygate::config;
use paygate::startup::{Application, shutdown_signal};
use paygate::store::Store;

#[derive(Parser)]
#[command(name = "paygate", version, about = "Payments gateway: hosted-checkout providers behind one gRPC API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC and HTTP servers (creates the database if configured and applies pending
    /// migrations first; with `database.migrate_on_start = false` waits for `paygate migrate`).
    Serve,
    /// Create the database if configured, apply pending migrations and exit. Reads only the
    /// `[database]` and `[telemetry]` configuration (no provider credentials needed).
    Migrate,
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// Print payment status events from a running paygate (WatchPayments), resuming on reconnect.
    Watch(paygate::cli::watch::WatchArgs),
    /// List payments of a running paygate (ListPayments) as a table.
    List(paygate::cli::list::ListArgs),
    /// Cancel an open payment's checkout (CancelCheckout).
    Cancel(paygate::cli::cancel::CancelArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Client commands talk to a running server: no configuration of their own.
    let (name, result) = match cli.command {
        Some(Command::Watch(args)) => ("watch", paygate::cli::watch::run(args).await),
        Some(Command::List(args)) => ("list", paygate::cli::list::run(args).await),
        Some(Command::Cancel(args)) => ("cancel", paygate::cli::cancel::run(args).await),
        command => return server(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name} failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `serve` (also when no command is given), `migrate`, `check-config`.
async fn server(command: Option<Command>) -> ExitCode {
    let command = command.unwrap_or(Command::Serve);
    let loaded = match command {
        Command::Migrate => config::load_for_migrate(),
        _ => config::load(),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::CheckConfig => {
            print!("{}", config.to_redacted_toml());
            ExitCode::SUCCESS
        }
        command => {
            let _guard = match paygate::telemetry::init(&config.telemetry) {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("cannot start telemetry: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = match command {
                Command::Migrate => migrate(&config.database).await,
                _ => serve(config).await,
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "paygate stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Applies pending migrations, whatever `database.migrate_on_start` says.
async fn migrate(database: &config::DatabaseConfig) -> anyhow::Result<()> {
    Store::open(database).await?.migrate().await?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve(config: config::Config) -> anyhow::Result<()> {
    // Listen for SIGTERM/SIGINT first: a signal while the database is awaited or migrations run
    // is a clean stop (exit 0) too.
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    let app = tokio::select! {
        app = Application::build(config) => app?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    app.run(shutdown).await
}
