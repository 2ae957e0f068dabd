//! `paygate watch`: prints a payment status stream, resuming after the last printed sequence when
//! the connection drops (so a restart or failover of the server loses nothing).

use std::time::Duration;

use super::ConnectArgs;
use crate::pb;

/// Options of `paygate watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub connection: ConnectArgs,
    /// Replay stored events after this sequence first (default: only new events).
    #[arg(long)]
    pub after: Option<i64>,
    /// Only these payments (repeatable).
    #[arg(long = "payment-id")]
    pub payment_ids: Vec<String>,
    /// Only these providers (repeatable).
    #[arg(long = "provider")]
    pub providers: Vec<String>,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    pub limit: Option<u64>,
}

/// One line per event.
pub fn format_event(e: &pb::PaymentEvent) -> String {
    let p = e.payment.clone().unwrap_or_default();
    let amount = p.amount.clone().unwrap_or_default();
    let at = e.occurred_at.map(|t| t.to_string()).unwrap_or_default();
    format!(
        "seq={} at={} source={} payment={} provider={} account={} ref={:?} amount={} {} status={} previous={} version={}",
        e.sequence,
        at,
        e.source,
        p.id,
        p.provider,
        p.account,
        p.merchant_reference,
        amount.amount_minor,
        amount.currency,
        p.status().as_str_name().trim_start_matches("PAYMENT_STATUS_"),
        e.previous_status().as_str_name().trim_start_matches("PAYMENT_STATUS_"),
        p.version,
    )
}

/// Runs the watch loop, printing to stdout.
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut after = args.after;
    let mut printed = 0_u64;
    let mut backoff = Duration::from_millis(200);
    // A missing or unreadable token file is an error at once, not a reconnect loop.
    args.connection.credentials()?;
    loop {
        let result = async {
            let mut client = args.connection.connect().await?;
            let request = pb::WatchPaymentsRequest {
                payment_ids: args.payment_ids.clone(),
                providers: args.providers.clone(),
                after_sequence: after,
            };
            let mut stream = client.watch_payments(request).await?.into_inner();
            while let Some(event) = stream.message().await? {
                println!("{}", format_event(&event));
                after = Some(event.sequence);
                printed += 1;
                backoff = Duration::from_millis(200);
                if args.limit.is_some_and(|l| printed >= l) {
                    return Ok(true);
                }
            }
            anyhow::Ok(false)
        }
        .await;
        match result {
            Ok(true) => return Ok(()),
            Ok(false) => eprintln!("stream ended; reconnecting after sequence {after:?}"),
            Err(e) => {
                if let Some(status) = e.downcast_ref::<tonic::Status>()
                    && matches!(
                        status.code(),
                        tonic::Code::OutOfRange
                            | tonic::Code::InvalidArgument
                            | tonic::Code::Unauthenticated
                            | tonic::Code::PermissionDenied
                    )
                {
                    return Err(anyhow::anyhow!("{}", status.message()));
                }
                eprintln!("watch interrupted ({e}); reconnecting after sequence {after:?}");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
