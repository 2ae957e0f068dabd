//! Caller authentication and scoping (issue 12): tokens, permissions, provider grants, per-caller
//! payments, idempotency keys and streams, the relay rule of VerifyCallback, and mTLS.

use std::time::Duration;

use paygate::config::{CallerConfig, Config};
use paygate::pb;
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::Request;

use crate::common::{self, TestApp, error_info, sandbox_body, spawn_app_with};

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn caller(tokens: &[&str], permissions: &[&str], providers: Option<&[&str]>) -> CallerConfig {
    CallerConfig {
        token_sha256: tokens.iter().map(|t| digest(t)).collect(),
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        providers: providers.map(|p| p.iter().map(|s| (*s).to_owned()).collect()),
    }
}

const ALL: &[&str] = &["create", "read", "watch", "verify", "cancel", "list"];

/// web and shop create and read their own; ops reads everything; relay only verifies; narrow reads only.
fn callers(config: &mut Config) {
    let c = &mut config.auth.callers;
    c.insert("web".into(), caller(&["web-token"], ALL, Some(&["sandbox"])));
    c.insert("shop".into(), caller(&["shop-old", "shop-new"], &["create", "read", "watch", "verify"], None));
    c.insert("ops".into(), caller(&["ops-token"], &["read_all", "list"], None));
    c.insert("relay".into(), caller(&["relay-token"], &["verify"], Some(&["sandbox"])));
    c.insert("narrow".into(), caller(&["narrow-token"], &["read"], Some(&["xpay"])));
}

fn as_caller<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata value"));
    request
}

async fn create(app: &TestApp, token: &str, reference: &str) -> Result<pb::Payment, tonic::Status> {
    let request = as_caller(app.checkout_request(reference, 1234, "USD"), token);
    app.grpc.clone().create_checkout(request).await.map(|r| r.into_inner().payment.expect("payment"))
}

async fn get(app: &TestApp, token: &str, id: &str, reference: &str) -> Result<pb::Payment, tonic::Status> {
    let message =
        pb::GetPaymentStatusRequest { payment_id: id.into(), merchant_reference: reference.into(), refresh: false };
    app.grpc
        .clone()
        .get_payment_status(as_caller(message, token))
        .await
        .map(|r| r.into_inner().payment.expect("payment"))
}

fn assert_reason(status: &tonic::Status, code: tonic::Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(error_info(status).0, reason, "{status:?}");
}

#[tokio::test]
async fn missing_or_unknown_tokens_are_unauthenticated_and_write_nothing() {
    let app = spawn_app_with(callers, Vec::new()).await;
    let unsigned = app.grpc.clone().create_checkout(app.checkout_request("r1", 1234, "USD")).await.unwrap_err();
    assert_reason(&unsigned, tonic::Code::Unauthenticated, "UNAUTHENTICATED");
    for token in ["nope", "web-toke", "WEB-TOKEN"] {
        let status = create(&app, token, "r1").await.unwrap_err();
        assert_reason(&status, tonic::Code::Unauthenticated, "UNAUTHENTICATED");
    }
    let mut basic = Request::new(app.checkout_request("r1", 1234, "USD"));
    basic.metadata_mut().insert("authorization", "Basic d2ViLXRva2Vu".parse().unwrap());
    assert_reason(
        &app.grpc.clone().create_checkout(basic).await.unwrap_err(),
        tonic::Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    let watch = app.grpc.clone().watch_payments(pb::WatchPaymentsRequest::default()).await.unwrap_err();
    assert_reason(&watch, tonic::Code::Unauthenticated, "UNAUTHENTICATED");
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 0);

    // Health stays open.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(answer.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

#[tokio::test]
async fn permissions_and_provider_grants_are_enforced_before_anything_is_written() {
    let app = spawn_app_with(callers, Vec::new()).await;
    // ops may not create; relay may not read; narrow may not create.
    for token in ["ops-token", "narrow-token", "relay-token"] {
        let status = create(&app, token, "r1").await.unwrap_err();
        assert_reason(&status, tonic::Code::PermissionDenied, "CALLER_NOT_ALLOWED");
    }
    // web may create, but only with the sandbox.
    let mut other = app.checkout_request("r2", 1234, "USD");
    other.provider = "xpay".into();
    let status = app.grpc.clone().create_checkout(as_caller(other, "web-token")).await.unwrap_err();
    assert_reason(&status, tonic::Code::PermissionDenied, "CALLER_NOT_ALLOWED");
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 0);

    let payment = create(&app, "web-token", "r3").await.unwrap();
    let status = get(&app, "relay-token", &payment.id, "").await.unwrap_err();
    assert_reason(&status, tonic::Code::PermissionDenied, "CALLER_NOT_ALLOWED");
    let mut client = app.grpc.clone();
    let watch = client.watch_payments(as_caller(pb::WatchPaymentsRequest::default(), "narrow-token")).await;
    assert_reason(&watch.unwrap_err(), tonic::Code::PermissionDenied, "CALLER_NOT_ALLOWED");
}

#[tokio::test]
async fn payments_belong_to_their_caller() {
    let app = spawn_app_with(callers, Vec::new()).await;
    let web = create(&app, "web-token", "order-1").await.unwrap();
    let shop = create(&app, "shop-old", "order-1").await.unwrap();
    assert_ne!(web.id, shop.id);

    // Each sees its own, by id and by reference; the other's id is NOT_FOUND (ids do not leak).
    assert_eq!(get(&app, "web-token", &web.id, "").await.unwrap().id, web.id);
    assert_eq!(get(&app, "web-token", "", "order-1").await.unwrap().id, web.id);
    assert_eq!(get(&app, "shop-new", "", "order-1").await.unwrap().id, shop.id);
    let status = get(&app, "shop-new", &web.id, "").await.unwrap_err();
    assert_reason(&status, tonic::Code::NotFound, "PAYMENT_NOT_FOUND");
    let status = get(&app, "web-token", &shop.id, "").await.unwrap_err();
    assert_reason(&status, tonic::Code::NotFound, "PAYMENT_NOT_FOUND");
    // read_all sees both; the newest by reference is shop's.
    assert_eq!(get(&app, "ops-token", &web.id, "").await.unwrap().id, web.id);
    assert_eq!(get(&app, "ops-token", "", "order-1").await.unwrap().id, shop.id);

    // The caller is stored on the payment and on the events it caused.
    let owner: Option<String> =
        sqlx::query_scalar("SELECT caller FROM payments WHERE id = $1").bind(&web.id).fetch_one(&app.db).await.unwrap();
    assert_eq!(owner.as_deref(), Some("web"));
    let event_callers: Vec<Option<String>> =
        sqlx::query_scalar("SELECT caller FROM payment_events WHERE payment_id = $1 ORDER BY sequence")
            .bind(&shop.id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(!event_callers.is_empty());
    assert!(event_callers.iter().all(|c| c.as_deref() == Some("shop")), "{event_callers:?}");
}

#[tokio::test]
async fn idempotency_keys_are_scoped_by_caller_and_rotated_tokens_both_work() {
    let app = spawn_app_with(callers, Vec::new()).await;
    let mut request = app.checkout_request("same", 1234, "USD");
    request.idempotency_key = "key-1".into();
    let send = |token: &'static str| {
        let request = as_caller(request.clone(), token);
        let mut client = app.grpc.clone();
        async move { client.create_checkout(request).await.unwrap().into_inner() }
    };
    let web = send("web-token").await;
    let shop = send("shop-old").await;
    let shop_again = send("shop-new").await;
    assert!(!web.replayed && !shop.replayed);
    assert!(shop_again.replayed, "the same caller (either token) replays its own key");
    assert_ne!(web.payment.as_ref().unwrap().id, shop.payment.as_ref().unwrap().id);
    assert_eq!(shop.payment.unwrap().id, shop_again.payment.unwrap().id);
}

/// Events of a stream read for a while (ended by the timeout).
async fn drain(app: &TestApp, token: &str) -> Vec<String> {
    let request = as_caller(pb::WatchPaymentsRequest { after_sequence: Some(0), ..Default::default() }, token);
    let mut stream = app.grpc.clone().watch_payments(request).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await {
        ids.push(item.unwrap().payment.unwrap().id);
    }
    ids
}

#[tokio::test]
async fn streams_carry_only_the_callers_payments_unless_read_all() {
    let app = spawn_app_with(
        |c| {
            callers(c);
            c.auth.callers.get_mut("ops").unwrap().permissions.push("watch".into());
        },
        Vec::new(),
    )
    .await;
    let web = create(&app, "web-token", "w").await.unwrap();
    let shop = create(&app, "shop-old", "s").await.unwrap();
    let web_sees = drain(&app, "web-token").await;
    let shop_sees = drain(&app, "shop-new").await;
    let ops_sees = drain(&app, "ops-token").await;
    assert!(!web_sees.is_empty() && web_sees.iter().all(|id| *id == web.id), "{web_sees:?}");
    assert!(!shop_sees.is_empty() && shop_sees.iter().all(|id| *id == shop.id), "{shop_sees:?}");
    assert!(ops_sees.contains(&web.id) && ops_sees.contains(&shop.id), "{ops_sees:?}");
}

#[tokio::test]
async fn a_relay_applies_verified_callbacks_but_sees_only_what_it_may_read() {
    let app = spawn_app_with(callers, Vec::new()).await;
    let payment = create(&app, "web-token", "relayed").await.unwrap();
    let body = sandbox_body("evt_relay_1", &payment.id, "succeeded", 1234, "USD");
    let header = paygate::providers::signature::sign_timestamped(
        common::SANDBOX_SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    );
    let message = pb::VerifyCallbackRequest {
        provider: "sandbox".into(),
        account: "default".into(),
        body: body.clone().into_bytes(),
        headers: [("Paygate-Sandbox-Signature".to_owned(), header.clone())].into(),
        query: String::new(),
    };
    let answer =
        app.grpc.clone().verify_callback(as_caller(message.clone(), "relay-token")).await.unwrap().into_inner();
    assert!(answer.status_changed);
    assert!(answer.payment.is_none(), "the relay may not read web's payment");
    assert_eq!(get(&app, "web-token", &payment.id, "").await.unwrap().status, pb::PaymentStatus::Succeeded as i32);
    let relay: Option<String> = sqlx::query_scalar(
        "SELECT caller FROM payment_events WHERE payment_id = $1 AND source = 'callback' AND version IS NOT NULL",
    )
    .bind(&payment.id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(relay.as_deref(), Some("relay"));

    // The owner relaying the same callback sees its payment (a duplicate).
    let again = app.grpc.clone().verify_callback(as_caller(message.clone(), "web-token")).await.unwrap().into_inner();
    assert!(again.duplicate);
    assert_eq!(again.payment.unwrap().id, payment.id);

    // A provider outside the relay's grant, or no verify permission: refused.
    let mut xpay = message.clone();
    xpay.provider = "xpay".into();
    let status = app.grpc.clone().verify_callback(as_caller(xpay, "relay-token")).await.unwrap_err();
    assert_reason(&status, tonic::Code::PermissionDenied, "CALLER_NOT_ALLOWED");
    let status = app.grpc.clone().verify_callback(as_caller(message, "ops-token")).await.unwrap_err();
    assert_reason(&status, tonic::Code::PermissionDenied, "CALLER_NOT_ALLOWED");
}

#[tokio::test]
async fn payments_from_before_authentication_are_visible_only_with_read_all() {
    let app = spawn_app_with(|_| {}, Vec::new()).await;
    // Off: no token needed.
    let old = app.create_payment("legacy").await;
    let app = app.restart_with(callers).await;
    let status = get(&app, "web-token", &old.id, "").await.unwrap_err();
    assert_reason(&status, tonic::Code::NotFound, "PAYMENT_NOT_FOUND");
    let status = get(&app, "web-token", "", "legacy").await.unwrap_err();
    assert_reason(&status, tonic::Code::NotFound, "PAYMENT_NOT_FOUND");
    assert_eq!(get(&app, "ops-token", &old.id, "").await.unwrap().id, old.id);
}

#[tokio::test]
async fn cancel_and_list_respect_ownership_and_permissions() {
    let app = spawn_app_with(
        |c| {
            callers(c);
            c.auth.callers.get_mut("shop").unwrap().permissions.extend(["cancel".into(), "list".into()]);
        },
        Vec::new(),
    )
    .await;
    let web = create(&app, "web-token", "c1").await.unwrap();
    let web2 = create(&app, "web-token", "c2").await.unwrap();
    let shop = create(&app, "shop-old", "c3").await.unwrap();
    let cancel = |id: &str, token: &str| {
        let message = pb::CancelCheckoutRequest { payment_id: id.into(), reason: "changed mind".into() };
        let request = as_caller(message, token);
        let mut client = app.grpc.clone();
        async move { client.cancel_checkout(request).await.map(|r| r.into_inner().payment.unwrap()) }
    };
    // Another caller's payment is not found; read_all does not allow cancelling.
    assert_reason(&cancel(&web.id, "shop-old").await.unwrap_err(), tonic::Code::NotFound, "PAYMENT_NOT_FOUND");
    assert_reason(
        &cancel(&web.id, "ops-token").await.unwrap_err(),
        tonic::Code::PermissionDenied,
        "CALLER_NOT_ALLOWED",
    );
    assert_eq!(cancel(&web.id, "web-token").await.unwrap().status, pb::PaymentStatus::Cancelled as i32);
    let by: Option<String> =
        sqlx::query_scalar("SELECT caller FROM payment_events WHERE payment_id = $1 AND source = 'cancel'")
            .bind(&web.id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(by.as_deref(), Some("web"));

    let list = |token: &str, page_size: i32, page_token: String| {
        let request = as_caller(pb::ListPaymentsRequest { page_size, page_token, ..Default::default() }, token);
        let mut client = app.grpc.clone();
        async move { client.list_payments(request).await.map(|r| r.into_inner()) }
    };
    let ids = |page: &pb::ListPaymentsResponse| page.payments.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&list("web-token", 0, String::new()).await.unwrap()), vec![web2.id.clone(), web.id.clone()]);
    assert_eq!(ids(&list("shop-new", 0, String::new()).await.unwrap()), vec![shop.id.clone()]);
    assert_eq!(list("ops-token", 0, String::new()).await.unwrap().payments.len(), 3);
    assert_reason(
        &list("relay-token", 0, String::new()).await.unwrap_err(),
        tonic::Code::PermissionDenied,
        "CALLER_NOT_ALLOWED",
    );
    // A page token is bound to its caller.
    let first = list("web-token", 1, String::new()).await.unwrap();
    assert!(!first.next_page_token.is_empty());
    let status = list("shop-new", 1, first.next_page_token.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_info(&status).1.get("field").map(String::as_str), Some("page_token"));
    assert_eq!(ids(&list("web-token", 1, first.next_page_token).await.unwrap()), vec![web.id.clone()]);
}

mod mtls {
    //! mTLS: a client certificate signed by `server.tls.client_ca` names the caller by its subject
    //! CN (or first DNS SAN); tokens still work without a certificate; the two must agree.

    use paygate::config::{Secret, TlsConfig};
    use paygate::pb::payment_service_client::PaymentServiceClient;
    use paygate::startup::Application;
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
    use tokio_util::sync::CancellationToken;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

    use super::*;

    struct Pki {
        ca: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Pki {
        fn new(name: &str) -> Self {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let ca = params.self_signed(&key).unwrap().pem();
            Self { ca, issuer: Issuer::new(params, key) }
        }

        /// (certificate PEM, key PEM) with this CN (or none) and these DNS SANs.
        fn issue(&self, cn: Option<&str>, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            if let Some(cn) = cn {
                params.distinguished_name.push(DnType::CommonName, cn);
            }
            params.subject_alt_names = sans.iter().map(|s| SanType::DnsName((*s).try_into().unwrap())).collect();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    struct TlsApp {
        addr: std::net::SocketAddr,
        ca: String,
        db: sqlx::PgPool,
        stop: CancellationToken,
    }

    async fn start(pki: &Pki) -> TlsApp {
        let url = common::fresh_database_url().await;
        let mut config = common::test_config(&url);
        callers(&mut config);
        let (cert, key) = pki.issue(None, &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        config.server.tls = TlsConfig { cert, key: Secret::new(key), client_ca: pki.ca.clone() };
        let app = Application::build(config).await.expect("builds with TLS");
        let addr = app.grpc_addr();
        let stop = CancellationToken::new();
        tokio::spawn(app.run(stop.clone()));
        TlsApp { addr, ca: pki.ca.clone(), db: common::small_pool(&url).await, stop }
    }

    async fn client(
        app: &TlsApp,
        identity: Option<&(String, String)>,
    ) -> Result<PaymentServiceClient<Channel>, String> {
        let mut tls = ClientTlsConfig::new().domain_name("localhost").ca_certificate(Certificate::from_pem(&app.ca));
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let endpoint = Endpoint::from_shared(format!("https://{}", app.addr)).unwrap().tls_config(tls).unwrap();
        let mut last = String::new();
        for _ in 0..50 {
            match endpoint.connect().await {
                Ok(channel) => return Ok(PaymentServiceClient::new(channel)),
                Err(e) => last = format!("{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }

    fn request(reference: &str) -> pb::CreateCheckoutRequest {
        pb::CreateCheckoutRequest {
            provider: "sandbox".into(),
            merchant_reference: reference.into(),
            amount: Some(pb::Money { amount_minor: 1234, currency: "USD".into() }),
            ..Default::default()
        }
    }

    async fn owner(db: &sqlx::PgPool, id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT caller FROM payments WHERE id = $1").bind(id).fetch_one(db).await.unwrap()
    }

    #[tokio::test]
    async fn client_certificates_name_callers_and_must_agree_with_tokens() {
        let pki = Pki::new("paygate test CA");
        let app = start(&pki).await;
        let web_cert = pki.issue(Some("web"), &[], ExtendedKeyUsagePurpose::ClientAuth);

        // The certificate alone authenticates web.
        let mut web = client(&app, Some(&web_cert)).await.unwrap();
        let payment = web.create_checkout(request("tls-1")).await.unwrap().into_inner().payment.unwrap();
        assert_eq!(owner(&app.db, &payment.id).await.as_deref(), Some("web"));
        // Its own token too; another caller's token → UNAUTHENTICATED.
        web.create_checkout(as_caller(request("tls-2"), "web-token")).await.unwrap();
        let status = web.create_checkout(as_caller(request("tls-3"), "shop-old")).await.unwrap_err();
        assert_reason(&status, tonic::Code::Unauthenticated, "UNAUTHENTICATED");

        // No certificate: a token works, nothing else does.
        let mut anonymous = client(&app, None).await.unwrap();
        let payment = anonymous.create_checkout(as_caller(request("tls-4"), "shop-new")).await.unwrap();
        assert_eq!(owner(&app.db, &payment.into_inner().payment.unwrap().id).await.as_deref(), Some("shop"));
        let status = anonymous.create_checkout(request("tls-5")).await.unwrap_err();
        assert_reason(&status, tonic::Code::Unauthenticated, "UNAUTHENTICATED");

        // A first DNS SAN names the caller when there is no CN.
        let san_cert = pki.issue(None, &["shop", "web"], ExtendedKeyUsagePurpose::ClientAuth);
        let mut shop = client(&app, Some(&san_cert)).await.unwrap();
        let payment = shop.create_checkout(request("tls-6")).await.unwrap().into_inner().payment.unwrap();
        assert_eq!(owner(&app.db, &payment.id).await.as_deref(), Some("shop"));

        // A certificate of our CA naming no configured caller is not enough, even with a token.
        let stranger = pki.issue(Some("stranger"), &[], ExtendedKeyUsagePurpose::ClientAuth);
        let mut stranger = client(&app, Some(&stranger)).await.unwrap();
        let status = stranger.create_checkout(request("tls-7")).await.unwrap_err();
        assert_reason(&status, tonic::Code::Unauthenticated, "UNAUTHENTICATED");
        let status = stranger.create_checkout(as_caller(request("tls-8"), "web-token")).await.unwrap_err();
        assert_reason(&status, tonic::Code::Unauthenticated, "UNAUTHENTICATED");

        // A certificate from another CA does not get through the handshake.
        let rogue = Pki::new("rogue CA").issue(Some("web"), &[], ExtendedKeyUsagePurpose::ClientAuth);
        let rogue_result = match client(&app, Some(&rogue)).await {
            Err(_) => true,
            Ok(mut c) => c.create_checkout(request("tls-9")).await.is_err(),
        };
        assert!(rogue_result, "a certificate of another CA must be refused");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments").fetch_one(&app.db).await.unwrap();
        assert_eq!(n, 4, "tls-1, tls-2, tls-4 and tls-6 only");
        app.stop.cancel();
    }
}
