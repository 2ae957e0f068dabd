//! Idempotent CreateCheckout: replay, key reuse, concurrency, and provider failures.

use crate::common;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::common::{error_info, spawn_app, spawn_app_with};
use chrono::{DateTime, Utc};
use paygate::domain::{Payment, StatusReport};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::{
    CallbackError, CallbackReport, CheckoutContext, CheckoutCreated, PaymentRef, Provider, ProviderError, RawCallback,
    VerifiedCallback,
};

/// A provider double registered as `xpay`: answers create calls from a script, counts them, can
/// hold its first call until released, and accepts form callbacks `payment_id=…&status=…&sig=good`.
#[derive(Debug, Default)]
struct Scripted {
    script: Mutex<VecDeque<Result<(), ProviderError>>>,
    calls: Mutex<u32>,
    hold_first: AtomicBool,
    release: Notify,
}

#[async_trait::async_trait]
impl Provider for Scripted {
    fn name(&self) -> &'static str {
        "xpay"
    }
    fn account(&self) -> &str {
        "default"
    }
    async fn create_checkout(&self, ctx: CheckoutContext<'_>) -> Result<CheckoutCreated, ProviderError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        if self.hold_first.swap(false, Ordering::SeqCst) {
            self.release.notified().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let next = self.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
        next.map(|()| CheckoutCreated {
            checkout_url: format!("https://pay.example/{}?call={call}", ctx.payment_id),
            provider_checkout_id: Some(format!("cs_{}", ctx.payment_id)),
            ..Default::default()
        })
    }
    async fn fetch_status(&self, _payment: &Payment) -> Result<Option<StatusReport>, ProviderError> {
        Err(ProviderError::Unavailable("scripted".into()))
    }
    fn verify_callback(&self, raw: &RawCallback, _now: DateTime<Utc>) -> Result<VerifiedCallback, CallbackError> {
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(&raw.body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        if form.get("sig").map(String::as_str) != Some("good") {
            return Err(CallbackError::SignatureInvalid);
        }
        Ok(VerifiedCallback {
            dedupe_key: format!("{}:{}", form["payment_id"], form["status"]),
            event_id: "scripted".into(),
            payment: PaymentRef::Id(form["payment_id"].clone()),
            report: CallbackReport::Apply(StatusReport {
                status: form["status"].parse().ok(),
                amount: Some((1234, "USD".into())),
                ..Default::default()
            }),
        })
    }
}

fn calls(provider: &Scripted) -> u32 {
    *provider.calls.lock().unwrap()
}

async fn wait_for_calls(provider: &Scripted, n: u32) {
    for _ in 0..250 {
        if calls(provider) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("provider never reached {n} calls");
}

async fn scripted_callback(app: &common::TestApp, payment_id: &str, status: &str) -> pb::VerifyCallbackResponse {
    let request = pb::VerifyCallbackRequest {
        provider: "xpay".into(),
        body: format!("payment_id={payment_id}&status={status}&sig=good").into_bytes(),
        ..Default::default()
    };
    app.grpc.clone().verify_callback(request).await.expect("callback accepted").into_inner()
}

fn xpay_keyed(app: &common::TestApp, key: &str) -> pb::CreateCheckoutRequest {
    let mut request = keyed(app, key);
    request.provider = "xpay".into();
    request
}

fn keyed(app: &common::TestApp, key: &str) -> pb::CreateCheckoutRequest {
    let mut r = app.checkout_request("idem-order", 1234, "USD");
    r.idempotency_key = key.into();
    r.metadata.insert("a".into(), "1".into());
    r.metadata.insert("b".into(), "2".into());
    r
}

#[tokio::test]
async fn replay_returns_the_payment_as_it_is_now() {
    let app = spawn_app().await;
    let first = app.grpc.clone().create_checkout(keyed(&app, "k-1")).await.unwrap().into_inner();
    assert!(!first.replayed);
    let payment = first.payment.unwrap();
    common::press(&app, &payment.id, "pay").await;

    let replay = app.grpc.clone().create_checkout(keyed(&app, "k-1")).await.unwrap().into_inner();
    assert!(replay.replayed);
    let replayed = replay.payment.unwrap();
    assert_eq!(replayed.id, payment.id);
    assert_eq!(replayed.status(), PaymentStatus::Succeeded);
    assert_eq!(replayed.version, payment.version + 1);
    assert_eq!(app.gateway.metrics().provider_calls("sandbox", "create"), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 1);

    // No key: a new payment every call.
    let mut unkeyed = keyed(&app, "");
    unkeyed.idempotency_key.clear();
    let a = app.grpc.clone().create_checkout(unkeyed.clone()).await.unwrap().into_inner();
    let b = app.grpc.clone().create_checkout(unkeyed).await.unwrap().into_inner();
    assert_ne!(a.payment.unwrap().id, b.payment.unwrap().id);
    assert!(!a.replayed && !b.replayed);
}

#[tokio::test]
async fn reused_key_with_other_parameters_is_already_exists() {
    let app = spawn_app().await;
    let payment = app.grpc.clone().create_checkout(keyed(&app, "k-2")).await.unwrap().into_inner().payment.unwrap();

    let mut different = keyed(&app, "k-2");
    different.amount = Some(pb::Money { amount_minor: 1235, currency: "USD".into() });
    let status = app.grpc.clone().create_checkout(different).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(metadata["payment_id"], payment.id);

    // Same parameters with the account spelled out as "default" and maps rebuilt: a replay.
    let mut same = keyed(&app, "k-2");
    same.account = "default".into();
    same.metadata = [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())].into_iter().collect();
    let replay = app.grpc.clone().create_checkout(same).await.unwrap().into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.payment.unwrap().id, payment.id);

    // Validation errors are not stored: a bad request with the key does not burn it.
    let mut invalid = keyed(&app, "k-3");
    invalid.amount = None;
    assert_eq!(app.grpc.clone().create_checkout(invalid).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let fresh = app.grpc.clone().create_checkout(keyed(&app, "k-3")).await.unwrap().into_inner();
    assert!(!fresh.replayed);
}

#[tokio::test]
async fn same_key_under_another_account_is_unrelated() {
    let app = spawn_app_with(
        |c| {
            c.providers.sandbox.accounts.insert(
                "shop-2".into(),
                paygate::providers::sandbox::SandboxAccount {
                    webhook_secret: Some("other".into()),
                    ..Default::default()
                },
            );
        },
        Vec::new(),
    )
    .await;
    let a = app.grpc.clone().create_checkout(keyed(&app, "shared")).await.unwrap().into_inner();
    let mut other = keyed(&app, "shared");
    other.account = "shop-2".into();
    let b = app.grpc.clone().create_checkout(other).await.unwrap().into_inner();
    assert!(!a.replayed && !b.replayed);
    let (a, b) = (a.payment.unwrap(), b.payment.unwrap());
    assert_ne!(a.id, b.id);
    assert_eq!(b.account, "shop-2");
    assert!(b.checkout_url.ends_with(&b.id));
}

#[tokio::test]
async fn fifty_concurrent_duplicates_make_one_payment_and_one_provider_call() {
    let app = spawn_app().await;
    let calls = (0..50).map(|_| {
        let mut grpc = app.grpc.clone();
        let request = keyed(&app, "k-concurrent");
        async move { grpc.create_checkout(request).await }
    });
    let responses = futures::future::join_all(calls).await;
    let mut ids = std::collections::HashSet::new();
    let mut fresh = 0;
    for response in responses {
        let response = response.expect("every duplicate succeeds").into_inner();
        fresh += usize::from(!response.replayed);
        ids.insert(response.payment.unwrap().id);
    }
    assert_eq!(fresh, 1, "exactly one response is not a replay");
    assert_eq!(ids.len(), 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(app.gateway.metrics().provider_calls("sandbox", "create"), 1);
}

#[tokio::test]
async fn failures_that_were_not_processed_are_retried_with_the_same_payment() {
    let provider = Arc::new(Scripted::default());
    provider
        .script
        .lock()
        .unwrap()
        .extend([Err(ProviderError::Unavailable("down".into())), Err(ProviderError::Unavailable("HTTP 429".into()))]);
    let app = spawn_app_with(|_| {}, vec![provider.clone()]).await;
    let mut request = keyed(&app, "k-transient");
    request.provider = "xpay".into();

    for _ in 0..2 {
        let status = app.grpc.clone().create_checkout(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");
        assert!(!status.message().contains("down"), "no provider detail leaks: {}", status.message());
    }

    let ok = app.grpc.clone().create_checkout(request.clone()).await.unwrap().into_inner();
    let payment = ok.payment.unwrap();
    assert_eq!(payment.checkout_url, format!("https://pay.example/{}?call=3", payment.id));
    assert_eq!(payment.provider_checkout_id, format!("cs_{}", payment.id));
    assert_eq!(*provider.calls.lock().unwrap(), 3);
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 1, "every retry reused one payment");

    let replay = app.grpc.clone().create_checkout(request).await.unwrap().into_inner();
    assert!(replay.replayed);
    assert_eq!(*provider.calls.lock().unwrap(), 3);

    // Refresh surfaces a provider failure instead of stale data.
    let refresh = pb::GetPaymentStatusRequest { payment_id: payment.id.clone(), refresh: true, ..Default::default() };
    let status = app.grpc.clone().get_payment_status(refresh).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn a_rejection_is_definitive_and_replayed_as_the_error() {
    let provider = Arc::new(Scripted::default());
    provider.script.lock().unwrap().push_back(Err(ProviderError::Rejected {
        code: "invalid_currency".into(),
        message: "currency not supported".into(),
    }));
    let app = spawn_app_with(|_| {}, vec![provider.clone()]).await;
    let mut request = keyed(&app, "k-rejected");
    request.provider = "xpay".into();

    for _ in 0..2 {
        let status = app.grpc.clone().create_checkout(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let (reason, metadata) = error_info(&status);
        assert_eq!(reason, "PROVIDER_REJECTED");
        assert_eq!(metadata["provider_code"], "invalid_currency");
        assert!(!status.message().contains("currency not supported"), "provider text stays out: {}", status.message());
    }
    assert_eq!(*provider.calls.lock().unwrap(), 1);
    let failed: String = sqlx::query_scalar("SELECT status FROM payments").fetch_one(&app.db).await.unwrap();
    assert_eq!(failed, "failed");

    // Without a key, a rejection is still recorded on the payment.
    request.idempotency_key.clear();
    provider.script.lock().unwrap().push_back(Err(ProviderError::Rejected { code: "c".into(), message: "m".into() }));
    assert_eq!(app.grpc.clone().create_checkout(request).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(app.count("SELECT COUNT(*) FROM payments WHERE failure_code = 'PROVIDER_REJECTED'").await, 2);
}

#[tokio::test]
async fn a_callback_during_the_provider_call_finds_the_committed_payment() {
    let provider = Arc::new(Scripted::default());
    provider.hold_first.store(true, Ordering::SeqCst);
    let app = spawn_app_with(|_| {}, vec![provider.clone()]).await;
    let create = tokio::spawn({
        let mut grpc = app.grpc.clone();
        let request = xpay_keyed(&app, "k-inflight");
        async move { grpc.create_checkout(request).await }
    });
    wait_for_calls(&provider, 1).await;
    let id: String = sqlx::query_scalar("SELECT id FROM payments").fetch_one(&app.db).await.unwrap();
    let response = scripted_callback(&app, &id, "succeeded").await;
    assert!(response.status_changed, "the PENDING row was committed before the provider call");

    provider.release.notify_one();
    let created = create.await.unwrap().unwrap().into_inner();
    assert!(!created.replayed);
    let payment = created.payment.unwrap();
    assert_eq!(payment.status(), PaymentStatus::Succeeded);
    assert_eq!(payment.checkout_url, format!("https://pay.example/{id}?call=1"));
    assert_eq!(payment.version, 3, "created, paid, checkout recorded");
}

#[tokio::test]
async fn a_holder_whose_lease_was_taken_over_cannot_record_its_outcome() {
    let provider = Arc::new(Scripted::default());
    provider.hold_first.store(true, Ordering::SeqCst);
    let app = spawn_app_with(|_| {}, vec![provider.clone()]).await;
    let first = tokio::spawn({
        let mut grpc = app.grpc.clone();
        let request = xpay_keyed(&app, "k-lease");
        async move { grpc.create_checkout(request).await }
    });
    wait_for_calls(&provider, 1).await;
    // Simulate a holder that outlived its lease (e.g. a stalled process).
    sqlx::query("UPDATE idempotency_keys SET locked_until = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();

    // The holder may have died mid-call: the key is taken over but create is not sent again.
    let second = app.grpc.clone().create_checkout(xpay_keyed(&app, "k-lease")).await.unwrap_err();
    assert_eq!(second.code(), tonic::Code::Unavailable);
    let (reason, metadata) = error_info(&second);
    assert_eq!(reason, "PROVIDER_OUTCOME_UNKNOWN");
    let id = metadata["payment_id"].clone();
    assert_eq!(calls(&provider), 1, "never a second checkout");
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_checks WHERE reason = 'create_outcome_unknown'").await, 1);

    provider.release.notify_one();
    let first = first.await.unwrap().unwrap().into_inner();
    assert!(first.replayed, "the fenced-out holder does not record its outcome on the key");
    let replayed = first.payment.unwrap();
    assert_eq!(replayed.id, id);
    assert!(
        replayed.checkout_url.ends_with("?call=1"),
        "the checkout it did open is recorded: {}",
        replayed.checkout_url
    );
    let opened = app.count("SELECT COUNT(*) FROM payment_events WHERE kind = 'checkout_opened'").await;
    assert_eq!(opened, 1);
    // The key keeps its answer.
    let again = app.grpc.clone().create_checkout(xpay_keyed(&app, "k-lease")).await.unwrap_err();
    assert_eq!(error_info(&again).0, "PROVIDER_OUTCOME_UNKNOWN");
    assert_eq!(calls(&provider), 1);
}

#[tokio::test]
async fn an_outcome_unknown_create_is_never_sent_again_for_its_key() {
    for (i, failure) in
        [ProviderError::Timeout, ProviderError::OutcomeUnknown("HTTP 502".into())].into_iter().enumerate()
    {
        let provider = Arc::new(Scripted::default());
        provider.script.lock().unwrap().push_back(Err(failure));
        let app = spawn_app_with(|_| {}, vec![provider.clone()]).await;
        let request = xpay_keyed(&app, &format!("k-unknown-{i}"));
        for _ in 0..3 {
            let status = app.grpc.clone().create_checkout(request.clone()).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert_eq!(error_info(&status).0, "PROVIDER_OUTCOME_UNKNOWN");
        }
        assert_eq!(calls(&provider), 1, "case {i}: one create for the key");
        assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM provider_checks").await, 1, "the payment is checked");
        // A new key is a new attempt.
        let fresh = app.grpc.clone().create_checkout(xpay_keyed(&app, &format!("k-new-{i}"))).await.unwrap();
        assert!(!fresh.into_inner().replayed);
        assert_eq!(calls(&provider), 2);
    }
}

#[tokio::test]
async fn a_retry_after_a_timeout_does_not_reopen_a_payment_that_moved_on() {
    let provider = Arc::new(Scripted::default());
    provider.script.lock().unwrap().push_back(Err(ProviderError::Timeout));
    let app = spawn_app_with(|_| {}, vec![provider.clone()]).await;
    let request = xpay_keyed(&app, "k-moved-on");
    let status = app.grpc.clone().create_checkout(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(error_info(&status).0, "PROVIDER_OUTCOME_UNKNOWN");

    // The provider had in fact opened the checkout, and the shopper paid.
    let id: String = sqlx::query_scalar("SELECT id FROM payments").fetch_one(&app.db).await.unwrap();
    assert!(scripted_callback(&app, &id, "succeeded").await.status_changed);

    // The key keeps its answer (naming the payment, which the caller can read).
    let retry = app.grpc.clone().create_checkout(request).await.unwrap_err();
    assert_eq!(error_info(&retry).1["payment_id"], id);
    assert_eq!(app.get_payment(&id).await.status(), PaymentStatus::Succeeded);
    assert_eq!(calls(&provider), 1, "no second provider call");
}
