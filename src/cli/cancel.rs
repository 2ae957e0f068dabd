//! `paygate cancel ID --reason …`: CancelCheckout for operators.

use super::ConnectArgs;
use crate::pb;

/// Options of `paygate cancel`.
#[derive(Debug, Clone, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub connection: ConnectArgs,
    /// The payment to cancel.
    pub payment_id: String,
    /// Why (at most 500 characters; stored with the event, never logged).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Cancels and prints the payment as a one-row table.
pub async fn run(args: CancelArgs) -> anyhow::Result<()> {
    let mut client = args.connection.connect().await?;
    let request = pb::CancelCheckoutRequest { payment_id: args.payment_id, reason: args.reason };
    let response = client.cancel_checkout(request).await.map_err(|s| {
        use tonic_types::StatusExt;
        let reason = s.get_details_error_info().map(|i| i.reason).unwrap_or_default();
        anyhow::anyhow!("{reason}: {}", s.message())
    })?;
    let payment = response.into_inner().payment.unwrap_or_default();
    print!("{}", super::list::table(std::slice::from_ref(&payment)));
    Ok(())
}
