//! A provider that is not in paygate's list, registered by an embedder from outside the crate,
//! resolves like any other: create, callbacks over HTTP and gRPC, status.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use paygate::domain::{Payment, PaymentStatus as Status, StatusReport};
use paygate::pb::{self, PaymentStatus};
use paygate::providers::signature::{hex_matches, hmac_sha256};
use paygate::providers::{
    CallbackError, CallbackReport, CheckoutContext, CheckoutCreated, PaymentRef, Provider, ProviderError, RawCallback,
    VerifiedCallback,
};

use crate::common::{TestApp, error_info, spawn_app_with};

const SECRET: &str = "acme_secret";

/// "Acme Pay": hosted checkout at acme.example, callbacks `{"id","payment","status","amount","currency"}`
/// signed with hex HMAC-SHA256 in `Acme-Signature`.
#[derive(Debug)]
struct Acme;

#[async_trait::async_trait]
impl Provider for Acme {
    fn name(&self) -> &'static str {
        "acme"
    }
    fn account(&self) -> &str {
        "default"
    }
    async fn create_checkout(&self, ctx: CheckoutContext<'_>) -> Result<CheckoutCreated, ProviderError> {
        Ok(CheckoutCreated {
            checkout_url: format!("https://acme.example/pay/{}", ctx.payment_id),
            provider_checkout_id: Some(format!("acme_{}", ctx.payment_id)),
            ..Default::default()
        })
    }
    async fn fetch_status(&self, _payment: &Payment) -> Result<Option<StatusReport>, ProviderError> {
        Ok(None)
    }
    fn verify_callback(&self, raw: &RawCallback, _now: DateTime<Utc>) -> Result<VerifiedCallback, CallbackError> {
        let signature = raw.header("acme-signature").ok_or(CallbackError::SignatureInvalid)?;
        if !hex_matches(&hmac_sha256(SECRET.as_bytes(), &raw.body), signature) {
            return Err(CallbackError::SignatureInvalid);
        }
        let body: serde_json::Value =
            serde_json::from_slice(&raw.body).map_err(|_| CallbackError::Malformed { field: "body".into() })?;
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        let status = match text("status").as_str() {
            "paid" => Some(Status::Succeeded),
            "failed" => Some(Status::Failed),
            _ => None,
        };
        Ok(VerifiedCallback {
            dedupe_key: text("id"),
            event_id: text("id"),
            payment: PaymentRef::CheckoutId(text("payment")),
            report: CallbackReport::Apply(StatusReport {
                status,
                amount: body["amount"].as_i64().map(|a| (a, text("currency"))),
                ..Default::default()
            }),
        })
    }
}

fn signed_body(payment: &pb::Payment, id: &str, status: &str) -> (String, String) {
    let body = serde_json::json!({ "id": id, "payment": payment.provider_checkout_id, "status": status,
        "amount": 5000, "currency": "EUR" })
    .to_string();
    let signature = hex::encode(hmac_sha256(SECRET.as_bytes(), body.as_bytes()));
    (body, signature)
}

async fn create(app: &TestApp) -> pb::Payment {
    let mut request = app.checkout_request("acme-1", 5000, "EUR");
    request.provider = "acme".into();
    app.grpc.clone().create_checkout(request).await.unwrap().into_inner().payment.unwrap()
}

#[tokio::test]
async fn an_embedders_own_provider_completes_a_payment() {
    let app = spawn_app_with(|_| {}, vec![Arc::new(Acme)]).await;
    let payment = create(&app).await;
    assert_eq!(payment.provider, "acme");
    assert_eq!(payment.checkout_url, format!("https://acme.example/pay/{}", payment.id));

    // A forged callback is refused over HTTP; the genuine one pays.
    let (body, signature) = signed_body(&payment, "evt_1", "paid");
    let forged = app.post_raw_callback("acme/default", &[("acme-signature", "00")], &body).await;
    assert_eq!(forged.status(), 401);
    let r = app.post_raw_callback("acme/default", &[("acme-signature", &signature)], &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.get_payment(&payment.id).await.status(), PaymentStatus::Succeeded);

    // The same over VerifyCallback: a duplicate.
    let response = app.verify_raw("acme", &[("Acme-Signature", &signature)], &body).await.unwrap();
    assert!(response.duplicate);
}

#[tokio::test]
async fn an_unregistered_name_is_still_provider_not_found() {
    let app = spawn_app_with(|_| {}, vec![]).await;
    let mut request = app.checkout_request("acme-2", 5000, "EUR");
    request.provider = "acme".into();
    let status = app.grpc.clone().create_checkout(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(error_info(&status).0, "PROVIDER_NOT_FOUND");
}
