//! The measured requests: the four RPCs against paygate, and their baselines (the store's SQL
//! issued directly, and an empty unary RPC on the same server).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use chrono::Utc;
use paygate::domain::ids::{IdempotencyKey, prefixed_ulid};
use paygate::domain::{EventKind, EventSource, PaymentId, PaymentStatus, StatusReport};
use paygate::pb;
use paygate::pb::payment_service_client::PaymentServiceClient;
use paygate::providers::signature::sign_timestamped;
use paygate::store::callbacks;
use paygate::store::checks::{self, CheckReason};
use paygate::store::idempotency::{self, Scope};
use paygate::store::payments::{self, EventInfo, NewPaymentRow};
use sqlx::PgPool;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::load::Op;

/// Amount of every benchmark payment (sandbox and the status/callback sets).
pub const AMOUNT_MINOR: i64 = 1000;

/// `n` HTTP/2 connections to the server.
pub async fn channels(grpc: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Endpoint::from_shared(grpc.to_owned())?.tcp_nodelay(true).connect().await?);
    }
    Ok(out)
}

/// Creates `count` sandbox payments (PENDING, checkout opened) with `concurrency` requests in
/// flight; returns their ids.
pub async fn create_payments(grpc: &str, count: usize, concurrency: usize) -> anyhow::Result<Vec<String>> {
    let concurrency = concurrency.clamp(1, count.max(1));
    let mut tasks = Vec::new();
    for (i, channel) in channels(grpc, concurrency).await?.into_iter().enumerate() {
        let mut client = PaymentServiceClient::new(channel);
        let mine = (i..count).step_by(concurrency).collect::<Vec<_>>();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(mine.len());
            for n in mine {
                let request = sandbox_request(format!("bench-setup-{n}"), String::new());
                let payment = client.create_checkout(request).await?.into_inner().payment.unwrap_or_default();
                ids.push(payment.id);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::with_capacity(count);
    for task in tasks {
        ids.extend(task.await??);
    }
    Ok(ids)
}

fn sandbox_request(reference: String, idempotency_key: String) -> pb::CreateCheckoutRequest {
    pb::CreateCheckoutRequest {
        provider: "sandbox".into(),
        merchant_reference: reference,
        amount: Some(pb::Money { amount_minor: AMOUNT_MINOR, currency: "USD".into() }),
        idempotency_key,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// paygate
// ---------------------------------------------------------------------------------------------

/// CreateCheckout with a fresh idempotency key each time.
pub struct Create {
    pub client: PaymentServiceClient<Channel>,
    /// `sandbox`, or `xpay` (EGP, against the local mock).
    pub provider: &'static str,
    /// Unique per client and point.
    pub tag: String,
    pub n: u64,
}

impl Op for Create {
    async fn call(&mut self) -> anyhow::Result<()> {
        self.n += 1;
        let key = format!("{}-{}", self.tag, self.n);
        let mut request = sandbox_request(key.clone(), key);
        if self.provider != "sandbox" {
            request.provider = self.provider.into();
            request.amount = Some(pb::Money { amount_minor: AMOUNT_MINOR, currency: "EGP".into() });
        }
        let payment = self.client.create_checkout(request).await?.into_inner().payment.unwrap_or_default();
        ensure!(payment.status == pb::PaymentStatus::Pending as i32, "status {} after create", payment.status);
        ensure!(!payment.checkout_url.is_empty(), "no checkout url");
        Ok(())
    }
}

/// GetPaymentStatus by id, walking a set of existing payments.
pub struct Status {
    pub client: PaymentServiceClient<Channel>,
    pub ids: Arc<Vec<String>>,
    /// Next index; advances by `stride` (the number of clients), so clients read different rows.
    pub next: usize,
    pub stride: usize,
}

impl Op for Status {
    async fn call(&mut self) -> anyhow::Result<()> {
        let id = self.ids[self.next % self.ids.len()].clone();
        self.next = self.next.wrapping_add(self.stride);
        let request = pb::GetPaymentStatusRequest { payment_id: id.clone(), ..Default::default() };
        let payment = self.client.get_payment_status(request).await?.into_inner().payment.unwrap_or_default();
        ensure!(payment.id == id, "answered for another payment");
        Ok(())
    }
}

/// The status each VerifyCallback payment has now (true = PROCESSING), shared across points.
pub type Tracker = Arc<Vec<AtomicBool>>;

/// VerifyCallback with a signed, unique sandbox event that flips a payment between PROCESSING
/// and PENDING (so every event changes the status).
pub struct Verify {
    pub client: PaymentServiceClient<Channel>,
    pub secret: Arc<String>,
    /// This client's payments: (id, index in `tracker`).
    pub payments: Vec<(String, usize)>,
    pub tracker: Tracker,
    pub tag: String,
    pub n: u64,
}

/// A signed sandbox callback for `payment_id` reporting `status`: (body, signature header).
pub fn signed_callback(secret: &str, event_id: &str, payment_id: &str, status: &str) -> (Vec<u8>, String) {
    let now = Utc::now();
    let body = serde_json::json!({
        "event_id": event_id,
        "payment_id": payment_id,
        "status": status,
        "amount": { "amount_minor": AMOUNT_MINOR, "currency": "USD" },
        "occurred_at": now.to_rfc3339(),
    })
    .to_string()
    .into_bytes();
    let signature = sign_timestamped(secret.as_bytes(), now.timestamp(), &body);
    (body, signature)
}

pub fn verify_request(body: Vec<u8>, signature: String) -> pb::VerifyCallbackRequest {
    pb::VerifyCallbackRequest {
        provider: "sandbox".into(),
        body,
        headers: HashMap::from([("paygate-sandbox-signature".to_owned(), signature)]),
        ..Default::default()
    }
}

impl Op for Verify {
    async fn call(&mut self) -> anyhow::Result<()> {
        self.n += 1;
        let (id, slot) = &self.payments[usize::try_from(self.n).unwrap_or(0) % self.payments.len()];
        let processing = self.tracker[*slot].load(Ordering::Relaxed);
        let to = if processing { "pending" } else { "processing" };
        let (body, signature) = signed_callback(&self.secret, &format!("{}-{}", self.tag, self.n), id, to);
        let response = self.client.verify_callback(verify_request(body, signature)).await?.into_inner();
        let status = response.payment.map(|p| p.status).unwrap_or_default();
        self.tracker[*slot].store(status == pb::PaymentStatus::Processing as i32, Ordering::Relaxed);
        ensure!(!response.duplicate && response.status_changed, "the event did not change the status");
        Ok(())
    }
}

/// `grpc.health.v1.Health/Check`: an empty unary RPC on the same server and settings.
pub struct Health {
    pub client: HealthClient<Channel>,
}

impl Op for Health {
    async fn call(&mut self) -> anyhow::Result<()> {
        let status = self.client.check(HealthCheckRequest { service: String::new() }).await?.into_inner().status;
        ensure!(status == ServingStatus::Serving as i32, "health status {status}");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// SQL baselines: the store's own statements (`paygate::store`), issued directly on a pool
// ---------------------------------------------------------------------------------------------

/// A pool for a baseline point: `size` connections, all opened before the point starts.
pub async fn baseline_pool(database_url: &str, size: u32) -> anyhow::Result<PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        .acquire_timeout(Duration::from_secs(30))
        .connect(database_url)
        .await
        .context("baseline pool")?;
    // Open every connection now rather than during the measurement.
    let mut held = Vec::new();
    for _ in 0..size {
        held.push(pool.acquire().await?);
    }
    drop(held);
    Ok(pool)
}

/// What CreateCheckout (sandbox, with an idempotency key) writes: claim the key, insert the
/// payment with its `created` event and first provider check, commit; then complete the key,
/// lock the payment, record the opened checkout with its event, commit.
pub struct SqlCreate {
    pub pool: PgPool,
    pub tag: String,
    pub n: u64,
}

/// A stand-in request fingerprint (the real one is a SHA-256).
const FINGERPRINT: [u8; 32] = [7; 32];
/// The first scheduled provider check of a new payment (`reconciler.schedule_secs[0]`).
const FIRST_CHECK_SECS: f64 = 60.0;

impl Op for SqlCreate {
    async fn call(&mut self) -> anyhow::Result<()> {
        self.n += 1;
        let reference = format!("{}-{}", self.tag, self.n);
        let key = IdempotencyKey::parse(&reference).ok_or_else(|| anyhow!("bad key"))?;
        let scope = Scope { caller: "", provider: "sandbox", account: "default", key: &key };
        let token = prefixed_ulid("lease_");
        let id = PaymentId::new();
        let metadata = BTreeMap::new();
        let row = NewPaymentRow {
            id: id.as_str(),
            provider: "sandbox",
            account: "default",
            merchant_reference: &reference,
            amount_minor: AMOUNT_MINOR,
            currency: "USD",
            return_url: "",
            cancel_url: "",
            metadata: &metadata,
            ttl: Duration::from_secs(24 * 3600),
            caller: None,
        };
        let mut tx = self.pool.begin().await?;
        ensure!(idempotency::try_insert(&mut tx, scope, &FINGERPRINT, id.as_str(), &token).await?, "key exists");
        let payment = payments::insert(&mut tx, &row).await?;
        checks::request(&mut tx, &payment.id, CheckReason::Scheduled, FIRST_CHECK_SECS, 0.0).await?;
        tx.commit().await?;

        let mut tx = self.pool.begin().await?;
        ensure!(idempotency::complete(&mut tx, scope, &token, None).await?, "lease lost");
        let before = payments::lock(&mut tx, &payment.id).await?.ok_or_else(|| anyhow!("payment vanished"))?;
        let mut after = before.clone();
        after.checkout_url = Some(format!("http://127.0.0.1:8080/sandbox/checkout/{}", id.as_str()));
        after.provider_checkout_id = Some(id.as_str().to_owned());
        after.expires_at = Some(before.created_at + chrono::Duration::hours(24));
        payments::update(&mut tx, &before, &after, &EventInfo::new(EventKind::CheckoutOpened, EventSource::Create))
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// What GetPaymentStatus reads: one payment by primary key.
pub struct SqlStatus {
    pub pool: PgPool,
    pub ids: Arc<Vec<PaymentId>>,
    pub next: usize,
    pub stride: usize,
}

impl Op for SqlStatus {
    async fn call(&mut self) -> anyhow::Result<()> {
        let id = &self.ids[self.next % self.ids.len()];
        self.next = self.next.wrapping_add(self.stride);
        let mut conn = self.pool.acquire().await?;
        payments::get(&mut conn, id).await?.ok_or_else(|| anyhow!("payment not found"))?;
        Ok(())
    }
}

/// What VerifyCallback writes for a status-changing event: lock the payment, insert the
/// receipt, update the payment and append its event, in one transaction.
pub struct SqlVerify {
    pub pool: PgPool,
    pub payments: Vec<PaymentId>,
    pub tag: String,
    pub n: u64,
}

/// A stand-in body digest (the real one is the SHA-256 of the body).
const BODY_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Op for SqlVerify {
    async fn call(&mut self) -> anyhow::Result<()> {
        self.n += 1;
        let id = &self.payments[usize::try_from(self.n).unwrap_or(0) % self.payments.len()];
        let event_id = format!("{}-{}", self.tag, self.n);
        let mut tx = self.pool.begin().await?;
        let before = payments::lock(&mut tx, id).await?.ok_or_else(|| anyhow!("payment not found"))?;
        let to =
            if before.status == PaymentStatus::Processing { PaymentStatus::Pending } else { PaymentStatus::Processing };
        let report = StatusReport {
            status: Some(to),
            provider_status: Some(to.as_str().to_owned()),
            amount: Some((before.amount.minor, before.amount.currency.code().to_owned())),
            occurred_at: Some(Utc::now()),
            ..Default::default()
        };
        let outcome = before.apply(&report);
        let kind = outcome.kind();
        if kind != EventKind::StatusChanged {
            bail!("the SQL baseline's event would not change the status ({})", kind.as_str());
        }
        let fresh =
            callbacks::insert_receipt(&mut tx, "sandbox", "default", &event_id, id.as_str(), &event_id, kind.as_str())
                .await?;
        ensure!(fresh, "duplicate receipt");
        let info = EventInfo {
            kind,
            source: EventSource::Callback,
            provider_event_id: Some(&event_id),
            provider_occurred_at: report.occurred_at,
            detail: Some(serde_json::json!({ "body_sha256": BODY_SHA256 })),
            caller: None,
        };
        payments::record(&mut tx, &before, outcome, info).await?;
        tx.commit().await?;
        Ok(())
    }
}
