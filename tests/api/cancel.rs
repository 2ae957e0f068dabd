//! CancelCheckout: local cancels (sandbox, and XStak with its lookup), cancels at the provider
//! (XPay expire, HitPay delete; written once over [`CancelDouble`] and run for each), refusals,
//! idempotency, provider failures, the late-success race and the cancel-during-create race.

use std::time::Duration;

use paygate::pb::{self, PaymentStatus};
use tokio_stream::StreamExt;
use wiremock::{Mock, MockBuilder, ResponseTemplate};

use crate::common::{self, TestApp, error_info, sandbox_body, spawn_app};
use crate::conformance::{Outcome, ProviderDouble};

/// A provider that can cancel its checkout: how its double answers a cancel.
pub trait CancelDouble: ProviderDouble {
    /// The cancel endpoint of `payment`, authorized.
    fn cancel_endpoint(&self, payment: &pb::Payment) -> MockBuilder;
    /// The provider's answer to a successful cancel.
    fn cancelled(&self, payment: &pb::Payment) -> ResponseTemplate;
    /// The provider's refusal because the session is no longer open.
    fn not_open() -> ResponseTemplate;
    /// The provider's closed-but-unpaid status in a lookup.
    const CLOSED_STATUS: &'static str;
    /// The create endpoint answering as [`ProviderDouble::create_mock`] does, after `delay`.
    fn slow_create(&self, delay: Duration) -> Mock;
}

pub async fn cancel(app: &TestApp, id: &str, reason: &str) -> Result<pb::Payment, tonic::Status> {
    let request = pb::CancelCheckoutRequest { payment_id: id.into(), reason: reason.into() };
    app.grpc.clone().cancel_checkout(request).await.map(|r| r.into_inner().payment.expect("payment"))
}

/// (source, detail) of the applied CANCELLED event of `id`.
async fn cancel_event(app: &TestApp, id: &str) -> (String, serde_json::Value) {
    sqlx::query_as(
        "SELECT source, detail FROM payment_events WHERE payment_id = $1 AND version IS NOT NULL \
         AND status = 'cancelled' AND previous_status <> 'cancelled'",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .expect("one CANCELLED event")
}

/// Whether the payment has a provider check due on the schedule before its `expires_at` (its
/// `reason` is `local_cancel`, or `scheduled` when the schedule already had it due as early).
async fn checked_until_expiry(app: &TestApp, id: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM provider_checks c JOIN payments p ON p.id = c.payment_id \
         WHERE c.payment_id = $1 AND c.due_at > now() AND c.due_at <= p.expires_at \
         AND c.reason IN ('local_cancel', 'scheduled'))",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .expect("check row")
}

/// Makes the payment's queued check due now and runs it.
async fn run_check_now(app: &TestApp, id: &str) {
    sqlx::query("UPDATE provider_checks SET due_at = now() WHERE payment_id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .expect("make the check due");
    app.gateway.run_due_checks().await.expect("run due checks");
}

fn assert_error(status: &tonic::Status, code: tonic::Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(error_info(status).0, reason, "{status:?}");
}

// ---------------------------------------------------------------------------------------------
// Sandbox: local cancel
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_sandbox_cancel_is_local_recorded_with_its_reason_and_idempotent() {
    let app = spawn_app().await;
    let payment = app.create_payment("cancel-1").await;
    let reason = "order 1 cancelled by Mona Lisa, +20 100 000 0000";

    let cancelled = cancel(&app, &payment.id, reason).await.unwrap();
    assert_eq!(cancelled.status(), PaymentStatus::Cancelled);
    assert_eq!(cancelled.version, payment.version + 1);
    let (source, detail) = cancel_event(&app, &payment.id).await;
    assert_eq!(source, "cancel");
    assert_eq!(detail, serde_json::json!({ "reason": reason, "closed_at_provider": false }));
    // Local: the payment stays in the check queue until its session ends.
    assert!(checked_until_expiry(&app, &payment.id).await);

    // Again: unchanged, no new event.
    let again = cancel(&app, &payment.id, "another reason").await.unwrap();
    assert_eq!((again.status(), again.version), (PaymentStatus::Cancelled, cancelled.version));
    assert_eq!(app.applied(&payment.id).await.len() as i64, cancelled.version);
    // The hosted page no longer takes a payment.
    assert_eq!(common::press(&app, &payment.id, "pay").await.status(), 409);
}

#[tokio::test]
async fn pending_and_failed_payments_cancel_succeeded_and_expired_do_not() {
    let app = spawn_app().await;
    let failed = app.create_payment("cancel-failed").await;
    let body = sandbox_body("evt_f", &failed.id, "failed", 1234, "USD");
    assert_eq!(app.post_sandbox_callback(&body).await.status(), 200);
    assert_eq!(app.get_payment(&failed.id).await.status(), PaymentStatus::Failed);
    assert_eq!(cancel(&app, &failed.id, "").await.unwrap().status(), PaymentStatus::Cancelled);

    let paid = app.create_payment("cancel-paid").await;
    let body = sandbox_body("evt_p", &paid.id, "succeeded", 1234, "USD");
    assert_eq!(app.post_sandbox_callback(&body).await.status(), 200);
    let err = cancel(&app, &paid.id, "too late").await.unwrap_err();
    assert_error(&err, tonic::Code::FailedPrecondition, "PAYMENT_ALREADY_SUCCEEDED");
    assert_eq!(app.get_payment(&paid.id).await.status(), PaymentStatus::Succeeded);

    let expired = app.create_payment("cancel-expired").await;
    app.expire_now(&expired.id, 1.0).await;
    app.gateway.run_due_checks().await.unwrap();
    assert_eq!(app.get_payment(&expired.id).await.status(), PaymentStatus::Expired);
    let err = cancel(&app, &expired.id, "").await.unwrap_err();
    assert_error(&err, tonic::Code::FailedPrecondition, "PAYMENT_FINAL");
    assert_eq!(app.get_payment(&expired.id).await.status(), PaymentStatus::Expired);
}

#[tokio::test]
async fn unknown_or_malformed_ids_are_not_found_and_long_reasons_invalid() {
    let app = spawn_app().await;
    for id in ["", "pay_nope", "PAY_01ARZ3NDEKTSV4RRFFQ69G5FAV", "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV"] {
        let err = cancel(&app, id, "").await.unwrap_err();
        assert_error(&err, tonic::Code::NotFound, "PAYMENT_NOT_FOUND");
    }
    let payment = app.create_payment("cancel-long").await;
    let err = cancel(&app, &payment.id, &"é".repeat(501)).await.unwrap_err();
    assert_error(&err, tonic::Code::InvalidArgument, "INVALID_FIELD");
    assert_eq!(error_info(&err).1.get("field").map(String::as_str), Some("reason"));
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Pending);
    // 500 characters (1000 bytes) are fine.
    assert_eq!(cancel(&app, &payment.id, &"é".repeat(500)).await.unwrap().status(), PaymentStatus::Cancelled);
}

#[tokio::test]
async fn a_success_after_a_cancel_is_applied_and_streamed_after_it() {
    let app = spawn_app().await;
    let payment = app.create_payment("cancel-late").await;
    let request = pb::WatchPaymentsRequest {
        payment_ids: vec![payment.id.clone()],
        after_sequence: Some(0),
        ..Default::default()
    };
    let mut stream = app.grpc.clone().watch_payments(request).await.unwrap().into_inner();

    cancel(&app, &payment.id, "shopper chose another provider").await.unwrap();
    // The shopper paid anyway (money was taken): SUCCEEDED.
    let body = sandbox_body("evt_late", &payment.id, "succeeded", 1234, "USD");
    assert_eq!(app.post_sandbox_callback(&body).await.status(), 200);
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
    assert_eq!(app.gateway.metrics().events("sandbox", "late_success"), 1);

    let mut seen = Vec::new();
    while seen.last().map(|(s, _, _)| *s) != Some(PaymentStatus::Succeeded) {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("event").unwrap().unwrap();
        seen.push((event.payment.as_ref().unwrap().status(), event.previous_status(), event.source.clone()));
    }
    let tail = &seen[seen.len() - 2..];
    assert_eq!(tail[0], (PaymentStatus::Cancelled, PaymentStatus::Pending, "cancel".to_owned()), "{seen:?}");
    assert_eq!(tail[1], (PaymentStatus::Succeeded, PaymentStatus::Cancelled, "callback".to_owned()), "{seen:?}");
}

// ---------------------------------------------------------------------------------------------
// XStak: a provider that cannot cancel but can be looked up
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_local_cancel_is_looked_up_until_the_session_ends_and_learns_a_success() {
    let (h, payment) = crate::xstak::Harness::with_payment("xs-cancel").await;
    let cancelled = cancel(h.app(), &payment.id, "cart changed").await.unwrap();
    assert_eq!(cancelled.status(), PaymentStatus::Cancelled);
    assert!(checked_until_expiry(h.app(), &payment.id).await);

    // Still open at XStak: looked up and kept queued, CANCELLED stays.
    h.mount_lookup(&payment, Outcome::Pending).await;
    run_check_now(h.app(), &payment.id).await;
    assert_eq!(h.lookups(&payment).await, 1);
    assert_eq!(h.app().get_payment(&payment.id).await.status(), PaymentStatus::Cancelled);
    assert!(checked_until_expiry(h.app(), &payment.id).await, "still queued before expiry");

    // The shopper pays anyway: the next check learns it.
    h.reset().await;
    h.mount_lookup(&payment, Outcome::Paid).await;
    run_check_now(h.app(), &payment.id).await;
    assert_eq!(h.app().get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
    let applied = h.app().applied(&payment.id).await;
    assert_eq!(
        applied[applied.len() - 2..],
        [("cancelled".to_owned(), "cancel".to_owned()), ("succeeded".to_owned(), "reconciler".to_owned())]
    );
    assert_eq!(h.app().gateway.metrics().events("xstak", "late_success"), 1);
}

// ---------------------------------------------------------------------------------------------
// Providers that cancel at the provider
// ---------------------------------------------------------------------------------------------

pub async fn cancels_at_the_provider<D: CancelDouble>() {
    let (h, payment) = D::with_payment("cancel-at-provider").await;
    h.cancel_endpoint(&payment).respond_with(h.cancelled(&payment)).expect(1).mount(h.mock()).await;
    let cancelled = cancel(h.app(), &payment.id, "order cancelled").await.unwrap();
    assert_eq!(cancelled.status(), PaymentStatus::Cancelled);
    let (source, detail) = cancel_event(h.app(), &payment.id).await;
    assert_eq!(source, "cancel");
    assert_eq!(detail, serde_json::json!({ "reason": "order cancelled", "closed_at_provider": true }));
    // Idempotent: the provider is not asked again.
    assert_eq!(cancel(h.app(), &payment.id, "").await.unwrap().version, cancelled.version);
    h.mock().verify().await;
}

pub async fn a_refusal_for_a_paid_session_answers_already_succeeded<D: CancelDouble>() {
    let (h, payment) = D::with_payment("cancel-paid").await;
    h.cancel_endpoint(&payment).respond_with(D::not_open()).expect(1).mount(h.mock()).await;
    h.mount_lookup(&payment, Outcome::Paid).await;
    let err = cancel(h.app(), &payment.id, "").await.unwrap_err();
    assert_error(&err, tonic::Code::FailedPrecondition, "PAYMENT_ALREADY_SUCCEEDED");
    assert_eq!(h.app().get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);
    let statuses: Vec<String> = h.app().applied(&payment.id).await.into_iter().map(|(s, _)| s).collect();
    assert!(!statuses.contains(&"cancelled".to_owned()), "never CANCELLED: {statuses:?}");
    h.mock().verify().await;
}

pub async fn a_refusal_for_an_unpaid_session_cancels_locally<D: CancelDouble>() {
    let (h, payment) = D::with_payment("cancel-closed").await;
    h.cancel_endpoint(&payment).respond_with(D::not_open()).expect(1).mount(h.mock()).await;
    h.mount_status(&payment, D::CLOSED_STATUS).await;
    let cancelled = cancel(h.app(), &payment.id, "").await.unwrap();
    assert_eq!(cancelled.status(), PaymentStatus::Cancelled);
    assert_eq!(cancel_event(h.app(), &payment.id).await.1["closed_at_provider"], false);
    assert!(checked_until_expiry(h.app(), &payment.id).await);
    h.mock().verify().await;
}

pub async fn a_provider_failure_leaves_the_payment_open_for_a_retry<D: CancelDouble>() {
    let (h, payment) = D::with_payment("cancel-flaky").await;
    h.cancel_endpoint(&payment).respond_with(ResponseTemplate::new(503)).up_to_n_times(1).mount(h.mock()).await;
    let err = cancel(h.app(), &payment.id, "").await.unwrap_err();
    assert_error(&err, tonic::Code::Unavailable, "PROVIDER_UNAVAILABLE");
    let now = h.app().get_payment(&payment.id).await;
    assert_eq!((now.status(), now.version), (D::OPEN_STATUS, payment.version));

    h.cancel_endpoint(&payment).respond_with(h.cancelled(&payment)).mount(h.mock()).await;
    assert_eq!(cancel(h.app(), &payment.id, "").await.unwrap().status(), PaymentStatus::Cancelled);
}

pub async fn a_success_callback_after_a_cancel_wins<D: CancelDouble>() {
    let (h, payment) = D::with_payment("cancel-then-paid").await;
    h.cancel_endpoint(&payment).respond_with(h.cancelled(&payment)).mount(h.mock()).await;
    cancel(h.app(), &payment.id, "").await.unwrap();
    // A payment that completed just before the cancel reached the provider.
    h.mount_lookup(&payment, Outcome::Paid).await;
    let delivered = h.deliver(&h.paid_callback(&payment)).await;
    assert!(delivered.status().is_success() || delivered.status().is_redirection(), "{}", delivered.status());
    let paid = h.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    let statuses: Vec<String> = h.app().applied(&payment.id).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses[statuses.len() - 2..], ["cancelled".to_owned(), "succeeded".to_owned()]);
}

pub async fn a_cancel_during_create_closes_the_new_checkout<D: CancelDouble>() {
    let h = D::start().await;
    h.slow_create(Duration::from_millis(800)).mount(h.mock()).await;
    let app = h.app();
    let mut grpc = app.grpc.clone();
    let creating = tokio::spawn(async move { grpc.create_checkout(D::request("cancel-race")).await });

    // The payment row is committed before the provider is called.
    let mut id = None;
    for _ in 0..100 {
        id = sqlx::query_scalar("SELECT id FROM payments WHERE merchant_reference = 'cancel-race'")
            .fetch_optional(&app.db)
            .await
            .unwrap();
        if id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id: String = id.expect("the payment exists while its create runs");
    let cancelled = cancel(app, &id, "changed my mind").await.unwrap();
    assert_eq!(cancelled.status(), PaymentStatus::Cancelled);

    let created = creating.await.unwrap().expect("the create completes").into_inner().payment.unwrap();
    assert_eq!(created.status(), PaymentStatus::Cancelled);
    let (checkout_id, _) = h.checkout(&created);
    assert_eq!(created.provider_checkout_id, checkout_id, "the checkout opened is recorded");
    // ... and closed at the provider: no live session behind a CANCELLED payment.
    let closes: Vec<_> = h
        .mock()
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() != "GET" && r.url.path() != D::CREATE_PATH)
        .collect();
    assert_eq!(closes.len(), 1, "one cancel at the provider: {closes:?}");
    assert_eq!(app.get_payment(&id).await.status(), PaymentStatus::Cancelled);
}

macro_rules! cancel_at_provider {
    ($($provider:ident => $double:ty),+ $(,)?) => {$(
        mod $provider {
            cancel_at_provider!(@tests $double:
                cancels_at_the_provider,
                a_refusal_for_a_paid_session_answers_already_succeeded,
                a_refusal_for_an_unpaid_session_cancels_locally,
                a_provider_failure_leaves_the_payment_open_for_a_retry,
                a_success_callback_after_a_cancel_wins,
                a_cancel_during_create_closes_the_new_checkout,
            );
        }
    )+};
    (@tests $double:ty: $($behaviour:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $behaviour() {
            super::$behaviour::<$double>().await;
        }
    )*};
}

cancel_at_provider! {
    xpay => crate::xpay::Harness,
    hitpay => crate::hitpay::Harness,
}

#[tokio::test]
async fn a_provider_timeout_is_deadline_exceeded_and_changes_nothing() {
    use wiremock::matchers::{method, path, path_regex};
    type XPay = crate::xpay::Harness;
    let mock = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(XPay::CREATE_PATH))
        .respond_with(crate::xpay::session_created)
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/checkout/sessions/[^/]+/expire$"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .mount(&mock)
        .await;
    let adapter = XPay::adapter(&mock, &common::short_timeout_context());
    let app = common::spawn_app_with(|_| {}, vec![adapter]).await;
    let payment = app.grpc.clone().create_checkout(XPay::request("cancel-timeout")).await.unwrap().into_inner();
    let payment = payment.payment.unwrap();

    let err = cancel(&app, &payment.id, "").await.unwrap_err();
    assert_error(&err, tonic::Code::DeadlineExceeded, "PROVIDER_TIMEOUT");
    let now = app.get_payment(&payment.id).await;
    assert_eq!((now.status(), now.version), (PaymentStatus::Pending, payment.version));
}

/// The reason is free text that may hold personal data: it is stored with the event, and appears
/// in no log line, even at `debug`, of a real `paygate` process.
#[tokio::test]
async fn the_reason_is_stored_but_never_logged() {
    let db_url = common::fresh_database_url().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut process = common::spawn_process_logging_to(&db_url, &[("RUST_LOG", "debug")], Some(log.path())).await;
    let request = pb::CreateCheckoutRequest {
        provider: "sandbox".into(),
        merchant_reference: "cancel-log".into(),
        amount: Some(pb::Money { amount_minor: 1234, currency: "USD".into() }),
        ..Default::default()
    };
    let payment = process.grpc.create_checkout(request).await.unwrap().into_inner().payment.unwrap();
    let reason = "Mona Lisa asked by phone +20 100 555 0199 to cancel";
    let cancel = pb::CancelCheckoutRequest { payment_id: payment.id.clone(), reason: reason.into() };
    let cancelled = process.grpc.cancel_checkout(cancel.clone()).await.unwrap().into_inner().payment.unwrap();
    assert_eq!(cancelled.status(), PaymentStatus::Cancelled);
    process.grpc.cancel_checkout(cancel).await.unwrap();
    let too_long =
        pb::CancelCheckoutRequest { payment_id: payment.id.clone(), reason: format!("{reason}{}", "x".repeat(500)) };
    process.grpc.cancel_checkout(too_long).await.unwrap_err();

    process.sigterm();
    assert!(process.wait_exit(Duration::from_secs(15)).await.is_some_and(|s| s.success()));
    let pool = common::small_pool(&db_url).await;
    let stored: String =
        sqlx::query_scalar("SELECT detail->>'reason' FROM payment_events WHERE payment_id = $1 AND source = 'cancel'")
            .bind(&payment.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, reason);
    let logged = std::fs::read_to_string(log.path()).unwrap();
    assert!(logged.contains("checkout cancelled") && logged.contains(&payment.id), "the log was captured: {logged}");
    for part in ["Mona", "+20 100"] {
        assert!(!logged.contains(part), "{part:?} logged:\n{logged}");
    }
}
