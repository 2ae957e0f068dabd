//! Restarts, health, reflection and the database bootstrap.

use crate::common::{press, spawn_app, spawn_app_with};
use paygate::pb::PaymentStatus;

#[tokio::test]
async fn restart_keeps_every_payment_and_the_generated_sandbox_secret() {
    // No configured secret: one is generated and stored in Postgres.
    let app =
        spawn_app_with(|c| c.providers.sandbox.accounts.get_mut("default").unwrap().webhook_secret = None, Vec::new())
            .await;
    let mut before = Vec::new();
    for n in 0..6 {
        let payment = app.create_payment(&format!("restart-{n}")).await;
        match n % 3 {
            0 => assert_eq!(press(&app, &payment.id, "pay").await.status(), 303),
            1 => assert_eq!(press(&app, &payment.id, "cancel").await.status(), 303),
            _ => {}
        }
        before.push(app.get_payment(&payment.id).await);
    }
    let secret_rows = app.count("SELECT COUNT(*) FROM settings WHERE key LIKE 'sandbox.webhook_secret.%'").await;
    assert_eq!(secret_rows, 1);

    let app = app.restart().await;
    for payment in &before {
        assert_eq!(&app.get_payment(&payment.id).await, payment);
    }
    // The page still works after the restart: the callback is signed and verified with the stored secret.
    let open = before.iter().find(|p| p.status() == PaymentStatus::Pending).unwrap();
    assert_eq!(press(&app, &open.id, "pay").await.status(), 303);
    assert_eq!(app.get_payment(&open.id).await.status(), PaymentStatus::Succeeded);
    assert_eq!(app.count("SELECT COUNT(*) FROM settings").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_grpc_health() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let r = app.client.get(format!("{}{path}", app.http)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest { service: "paygate.v1.PaymentService".into() };
    let response = health.check(request).await.unwrap().into_inner();
    assert_eq!(response.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);

    // Readiness follows the migrations: an unapplied one makes it 503.
    sqlx::query("DELETE FROM _sqlx_migrations").execute(&app.db).await.unwrap();
    let r = app.client.get(format!("{}/readyz", app.http)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    app.stop().await;
}
