//! Every error the API answers with for the sandbox, with its gRPC code and ErrorInfo; none of
//! them changes anything.

use crate::common::{TestApp, error_info, spawn_app};
use paygate::pb;
use tonic::Code;

async fn create_err(app: &TestApp, edit: impl FnOnce(&mut pb::CreateCheckoutRequest)) -> tonic::Status {
    let mut request = app.checkout_request("err-order", 1234, "USD");
    edit(&mut request);
    app.grpc.clone().create_checkout(request).await.expect_err("request must fail")
}

async fn assert_invalid(app: &TestApp, field: &str, edit: impl FnOnce(&mut pb::CreateCheckoutRequest)) {
    let status = create_err(app, edit).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "INVALID_FIELD");
    assert_eq!(metadata.get("field").map(String::as_str), Some(field), "{status:?}");
}

fn item(unit: i64, quantity: u32) -> pb::LineItem {
    pb::LineItem { name: "thing".into(), unit_amount_minor: unit, quantity }
}

#[tokio::test]
async fn invalid_fields_name_the_first_bad_field() {
    let app = spawn_app().await;
    assert_invalid(&app, "provider", |r| r.provider.clear()).await;
    assert_invalid(&app, "merchant_reference", |r| r.merchant_reference.clear()).await;
    assert_invalid(&app, "merchant_reference", |r| r.merchant_reference = "x".repeat(65)).await;
    assert_invalid(&app, "merchant_reference", |r| r.merchant_reference = "a\nb".into()).await;
    assert_invalid(&app, "amount", |r| r.amount = None).await;
    assert_invalid(&app, "amount.amount_minor", |r| r.amount.as_mut().unwrap().amount_minor = 0).await;
    assert_invalid(&app, "amount.amount_minor", |r| r.amount.as_mut().unwrap().amount_minor = -5).await;
    for currency in ["usd", "XXX", "XTS", "XAU", "ABC", ""] {
        assert_invalid(&app, "amount.currency", |r| r.amount.as_mut().unwrap().currency = currency.into()).await;
    }
    assert_invalid(&app, "line_items", |r| r.line_items = vec![item(1000, 1)]).await;
    assert_invalid(&app, "line_items", |r| r.line_items = vec![item(i64::MAX, 2)]).await;
    assert_invalid(&app, "line_items[1].quantity", |r| r.line_items = vec![item(1234, 1), item(0, 0)]).await;
    assert_invalid(&app, "line_items[0].unit_amount_minor", |r| r.line_items = vec![item(-1, 1)]).await;
    assert_invalid(&app, "ttl", |r| r.ttl = Some(prost_types::Duration { seconds: 59, nanos: 0 })).await;
    assert_invalid(&app, "ttl", |r| r.ttl = Some(prost_types::Duration { seconds: 7 * 86400 + 1, nanos: 0 })).await;
    assert_invalid(&app, "metadata", |r| r.metadata = (0..51).map(|i| (format!("k{i}"), "v".into())).collect()).await;
    assert_invalid(&app, "metadata", |r| {
        r.metadata.insert("k".repeat(41), "v".into());
    })
    .await;
    assert_invalid(&app, "idempotency_key", |r| r.idempotency_key = "k".repeat(256)).await;
    assert_invalid(&app, "idempotency_key", |r| r.idempotency_key = "é".into()).await;
    // Several bad fields: the first in contract order wins.
    assert_invalid(&app, "merchant_reference", |r| {
        r.merchant_reference.clear();
        r.amount = None;
        r.ttl = Some(prost_types::Duration { seconds: 1, nanos: 0 });
    })
    .await;
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 0, "no invalid request writes anything");
    assert_eq!(app.count("SELECT COUNT(*) FROM idempotency_keys").await, 0);

    // The limits themselves are accepted.
    let mut ok = app.checkout_request(&"é".repeat(64), 1234, "USD");
    ok.line_items = vec![item(1000, 1), item(117, 2)];
    ok.ttl = Some(prost_types::Duration { seconds: 60, nanos: 0 });
    ok.idempotency_key = "k".repeat(255);
    let payment = app.grpc.clone().create_checkout(ok).await.unwrap().into_inner().payment.unwrap();
    let lifetime = payment.expires_at.unwrap().seconds - payment.created_at.unwrap().seconds;
    assert!((59..=61).contains(&lifetime), "ttl honoured: {lifetime}");
}

#[tokio::test]
async fn unknown_providers_and_accounts() {
    let app = spawn_app().await;
    for provider in ["paypal", "xpay", "eximpe", "hitpay", "xstak", "exirom", "SANDBOX"] {
        let status = create_err(&app, |r| r.provider = provider.into()).await;
        assert_eq!(status.code(), Code::NotFound, "{provider}");
        assert_eq!(error_info(&status).0, "PROVIDER_NOT_FOUND", "{provider}");
    }
    let status = create_err(&app, |r| r.account = "no-such-shop".into()).await;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_info(&status).0, "ACCOUNT_NOT_FOUND");

    let verify = |provider: &str, account: &str| pb::VerifyCallbackRequest {
        provider: provider.into(),
        account: account.into(),
        body: b"{}".to_vec(),
        ..Default::default()
    };
    let status = app.grpc.clone().verify_callback(verify("", "")).await.unwrap_err();
    assert_eq!((status.code(), error_info(&status).1["field"].clone()), (Code::InvalidArgument, "provider".into()));
    let status = app.grpc.clone().verify_callback(verify("paypal", "")).await.unwrap_err();
    assert_eq!(error_info(&status).0, "PROVIDER_NOT_FOUND");
    let status = app.grpc.clone().verify_callback(verify("sandbox", "nope")).await.unwrap_err();
    assert_eq!(error_info(&status).0, "ACCOUNT_NOT_FOUND");
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 0);
}

#[tokio::test]
async fn payment_lookups() {
    let app = spawn_app().await;
    let get = |payment_id: &str, reference: &str| pb::GetPaymentStatusRequest {
        payment_id: payment_id.into(),
        merchant_reference: reference.into(),
        refresh: false,
    };
    for (id, reference) in [("", ""), ("pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", "ref")] {
        let status = app.grpc.clone().get_payment_status(get(id, reference)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(error_info(&status).1["field"], "payment_id");
    }
    for (id, reference) in
        [("pay_01ARZ3NDEKTSV4RRFFQ69G5FAV", ""), ("garbage", ""), ("pay_lower", ""), ("", "no-such-ref")]
    {
        let status = app.grpc.clone().get_payment_status(get(id, reference)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id} {reference}");
        assert_eq!(error_info(&status).0, "PAYMENT_NOT_FOUND");
    }
}
