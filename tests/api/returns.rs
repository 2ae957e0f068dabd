//! Shopper returns and browser-delivered callbacks: redirects to the caller's pages, provider
//! checks queued (untrusted triggers deferred, never dropped), and nothing changed by an
//! untrusted browser post.

use crate::common;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::spawn_app_with;
use chrono::{DateTime, Utc};
use paygate::domain::{Payment, PaymentStatus as Status, StatusReport};
use paygate::pb::PaymentStatus;
use paygate::providers::{
    CallbackError, CallbackReport, CallbackTransport, CheckoutContext, CheckoutCreated, PaymentRef, Provider,
    ProviderError, RawCallback, VerifiedCallback,
};

/// A browser-transport provider double registered as `eximpe`: a form post `payment_id=…&status=…`
/// is genuine when its `sig` field is `good`; status lookups report PROCESSING and are counted.
#[derive(Debug, Default)]
struct BrowserDouble {
    lookups: AtomicU32,
}

#[async_trait::async_trait]
impl Provider for BrowserDouble {
    fn name(&self) -> &'static str {
        "eximpe"
    }
    fn account(&self) -> &str {
        "default"
    }
    async fn create_checkout(&self, ctx: CheckoutContext<'_>) -> Result<CheckoutCreated, ProviderError> {
        Ok(CheckoutCreated { checkout_url: format!("https://pay.example/{}", ctx.payment_id), ..Default::default() })
    }
    async fn fetch_status(&self, _payment: &Payment) -> Result<Option<StatusReport>, ProviderError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(Some(StatusReport { status: Some(Status::Processing), ..Default::default() }))
    }
    fn verify_callback(&self, raw: &RawCallback, _now: DateTime<Utc>) -> Result<VerifiedCallback, CallbackError> {
        let form: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(&raw.body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        if form.get("sig").map(String::as_str) != Some("good") {
            return Err(CallbackError::SignatureInvalid);
        }
        let status = form.get("status").and_then(|s| s.parse().ok());
        Ok(VerifiedCallback {
            dedupe_key: format!("{}:{}", form["payment_id"], form["status"]),
            event_id: "browser".into(),
            payment: PaymentRef::Id(form["payment_id"].clone()),
            report: CallbackReport::Apply(StatusReport { status, ..Default::default() }),
        })
    }
    fn callback_transport(&self) -> CallbackTransport {
        CallbackTransport::Browser
    }
}

/// The payment's check is queued about 10 s after its last lookup started (not leased, not dropped).
async fn assert_deferred(app: &common::TestApp, payment_id: &str) {
    let (due_in, leased): (f64, bool) = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM due_at - last_checked_at)::float8, leased_until IS NOT NULL          FROM provider_checks WHERE payment_id = $1",
    )
    .bind(payment_id)
    .fetch_one(&app.db)
    .await
    .expect("a queued check");
    assert!(!leased);
    assert!((9.0..=10.5).contains(&due_in), "due {due_in} s after the last check");
}

async fn wait_for(mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached in time");
}

#[tokio::test]
async fn browser_callbacks_redirect_and_never_trust_a_bad_post() {
    let double = Arc::new(BrowserDouble::default());
    let app = spawn_app_with(|_| {}, vec![double.clone()]).await;
    let mut request = app.checkout_request("browser-1", 1000, "INR");
    request.provider = "eximpe".into();
    let payment = app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    let post = |body: String| {
        app.client
            .post(format!("{}/callbacks/eximpe/default?payment_id={}", app.http, payment.id))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };

    // Forged: 303 back to the caller all the same, nothing changed, one lookup scheduled.
    let r = post(format!("payment_id={}&status=succeeded&sig=bad", payment.id)).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://shop.example/return?order=1");
    wait_for(async || double.lookups.load(Ordering::SeqCst) == 1).await;
    wait_for(async || app.get_payment(&payment.id).await.status() == PaymentStatus::Processing).await;
    assert_ne!(app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
    // A second forged post right after the lookup is deferred to 10 s after it: queued, not run now.
    assert_eq!(post(format!("payment_id={}&status=succeeded&sig=bad", payment.id)).await.unwrap().status(), 303);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(double.lookups.load(Ordering::SeqCst), 1);
    assert_deferred(&app, &payment.id).await;

    // Genuine cancel: applied, then 303 to cancel_url.
    let r = post(format!("payment_id={}&status=cancelled&sig=good", payment.id)).await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://shop.example/cancel");
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Cancelled);

    // A refused post naming no known payment: 404 page.
    let r = app
        .client
        .post(format!("{}/callbacks/eximpe/default?payment_id=pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", app.http))
        .body("sig=bad")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn shopper_return_redirects_and_schedules_a_refresh() {
    let double = Arc::new(BrowserDouble::default());
    let app = spawn_app_with(|_| {}, vec![double.clone()]).await;
    let mut request = app.checkout_request("return-1", 1000, "INR");
    request.provider = "eximpe".into();
    let payment = app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap();

    let r = app.client.get(format!("{}/return/eximpe/{}", app.http, payment.id)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://shop.example/return?order=1");
    let r = app.client.get(format!("{}/return/eximpe/{}?outcome=cancel", app.http, payment.id)).send().await.unwrap();
    assert_eq!(r.headers()["location"], "https://shop.example/cancel");
    wait_for(async || app.get_payment(&payment.id).await.status() == PaymentStatus::Processing).await;
    // One more return right after the lookup: deferred (queued for 10 s after it), not dropped.
    let r = app.client.get(format!("{}/return/eximpe/{}", app.http, payment.id)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(double.lookups.load(Ordering::SeqCst), 1, "one lookup now");
    assert_deferred(&app, &payment.id).await;

    for url in [
        format!("{}/return/sandbox/{}", app.http, payment.id),
        format!("{}/return/eximpe/pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", app.http),
        format!("{}/return/eximpe/garbage", app.http),
    ] {
        assert_eq!(app.client.get(&url).send().await.unwrap().status(), 404, "{url}");
    }

    // A sandbox return asks the sandbox too, which has nothing to report: nothing changes.
    let sandbox = app.create_payment("return-sbx").await;
    let r = app.client.get(format!("{}/return/sandbox/{}", app.http, sandbox.id)).send().await.unwrap();
    assert_eq!(r.status(), 303);
    wait_for(async || app.gateway.metrics().provider_calls("sandbox", "status") == 1).await;
    assert_eq!(app.get_payment(&sandbox.id).await.version, sandbox.version);
}
