//! `paygate` binary: `serve` (default), `migrate`, `check-config`.

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
    /// Run the gRPC and HTTP servers (creates the database and runs migrations first).
    Serve,
    /// Create the database if needed, apply migrations and exit.
    Migrate,
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// Print payment status events from a running paygate (WatchPayments), resuming on reconnect.
    Watch(paygate::cli_watch::WatchArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Watch(args)) = cli.command {
        return match paygate::cli_watch::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("watch failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
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
                Command::Migrate => {
                    Store::connect(&config.database).await.map(|_| tracing::info!("migrations applied"))
                }
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
