//! `paygate list`: ListPayments as a table, filters as flags.

use chrono::{DateTime, Utc};

use super::ConnectArgs;
use crate::domain::PaymentStatus;
use crate::pb;

/// Options of `paygate list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub connection: ConnectArgs,
    /// Only this status (repeatable): pending, processing, succeeded, failed, cancelled, expired.
    #[arg(long = "status")]
    pub statuses: Vec<String>,
    /// Only this provider (repeatable).
    #[arg(long = "provider")]
    pub providers: Vec<String>,
    /// Only this merchant reference.
    #[arg(long)]
    pub reference: Option<String>,
    /// Created at or after this time (RFC 3339).
    #[arg(long)]
    pub created_after: Option<DateTime<Utc>>,
    /// Created before this time (RFC 3339).
    #[arg(long)]
    pub created_before: Option<DateTime<Utc>>,
    /// Payments per page (1 to 500).
    #[arg(long, default_value_t = 50)]
    pub page_size: i32,
    /// Continue a listing (the token the previous page printed).
    #[arg(long)]
    pub page_token: Option<String>,
    /// Follow the pages to the end.
    #[arg(long)]
    pub all: bool,
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos().try_into().unwrap_or(0) }
}

impl ListArgs {
    /// The first page's request.
    pub fn request(&self) -> anyhow::Result<pb::ListPaymentsRequest> {
        let mut statuses = Vec::new();
        for name in &self.statuses {
            let status: PaymentStatus =
                name.to_lowercase().parse().map_err(|_| anyhow::anyhow!("unknown status {name:?}"))?;
            statuses.push(crate::grpc::status_to_pb(status).into());
        }
        Ok(pb::ListPaymentsRequest {
            statuses,
            providers: self.providers.clone(),
            merchant_reference: self.reference.clone().unwrap_or_default(),
            created_after: self.created_after.map(timestamp),
            created_before: self.created_before.map(timestamp),
            page_size: self.page_size,
            page_token: self.page_token.clone().unwrap_or_default(),
        })
    }
}

const HEADER: [&str; 8] = ["ID", "STATUS", "PROVIDER", "ACCOUNT", "AMOUNT", "REFERENCE", "CREATED", "VERSION"];

/// One table row per payment.
pub fn row(p: &pb::Payment) -> [String; 8] {
    let amount = p.amount.clone().unwrap_or_default();
    let created = p
        .created_at
        .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    [
        p.id.clone(),
        p.status().as_str_name().trim_start_matches("PAYMENT_STATUS_").to_owned(),
        p.provider.clone(),
        p.account.clone(),
        format!("{} {}", amount.amount_minor, amount.currency),
        format!("{:?}", p.merchant_reference),
        created,
        p.version.to_string(),
    ]
}

/// The table: a header and one line per payment, columns padded to their widest cell.
pub fn table(payments: &[pb::Payment]) -> String {
    let rows: Vec<[String; 8]> = std::iter::once(HEADER.map(str::to_owned)).chain(payments.iter().map(row)).collect();
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Prints the table (every page with `--all`); the next page's token goes to stderr.
pub async fn run(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.connection.connect().await?;
    let mut request = args.request()?;
    let mut payments = Vec::new();
    let next = loop {
        let page = client.list_payments(request.clone()).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        let page = page.into_inner();
        payments.extend(page.payments);
        if !args.all || page.next_page_token.is_empty() {
            break page.next_page_token;
        }
        request.page_token = page.next_page_token;
    };
    print!("{}", table(&payments));
    if !next.is_empty() {
        eprintln!("more: --page-token {next}");
    }
    Ok(())
}
