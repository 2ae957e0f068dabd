//! The provider conformance suite: what every hosted-checkout provider must do, each behaviour
//! written once and run against every provider's double (a `wiremock` provider on 127.0.0.1 that
//! enforces the documented API). Each provider module implements [`ProviderDouble`] once for its
//! harness and keeps beside it only what is its own: signature vectors, format quirks, special
//! flows. The tests are `conformance::<provider>::<behaviour>`.

use std::sync::Arc;
use std::time::Duration;

use paygate::config::Config;
use paygate::pb::{self, PaymentStatus};
use paygate::providers::{Provider, ProviderContext};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

use crate::common::{self, TestApp, error_info, spawn_app_with};

/// What the provider answers when the gateway asks about a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still open (EximPe: `payment_pending`, which the gateway reads as PROCESSING).
    Pending,
    Paid,
    /// A status value the provider never documented.
    Unknown,
}

/// The provider's status value for each [`Outcome`], as its lookup answers it.
pub struct Statuses {
    pub pending: &'static str,
    pub paid: &'static str,
    pub unknown: &'static str,
}

impl Statuses {
    pub fn of(&self, outcome: Outcome) -> &'static str {
        match outcome {
            Outcome::Pending => self.pending,
            Outcome::Paid => self.paid,
            Outcome::Unknown => self.unknown,
        }
    }
}

/// Who told the gateway that a payment was paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Callback,
    Lookup,
}

/// A callback as the provider (or, for EximPe, the shopper's browser) delivers it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// The query of the callback URL (EximPe's return URL names our payment).
    pub query: String,
}

impl Delivery {
    pub fn new(body: impl Into<String>, headers: &[(&'static str, &str)]) -> Self {
        let headers = headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        Self { headers, body: body.into(), query: String::new() }
    }

    pub fn with_query(self, query: impl Into<String>) -> Self {
        Self { query: query.into(), ..self }
    }
}

/// How long a checkout created without `ttl` stays open.
#[derive(Clone, Copy, Debug)]
pub enum Lifetime {
    /// The provider's: exactly this many seconds after `created_at`.
    Provider(i64),
    /// The gateway's default, 24 h; its `expires_at` is taken in the database next to
    /// `created_at`, so the two may be a microsecond further apart.
    GatewayDefault,
}

/// A delivery the gateway must refuse, with the reason it must give.
pub struct Refused {
    pub delivery: Delivery,
    pub reason: &'static str,
}

impl Refused {
    pub fn invalid(delivery: Delivery) -> Self {
        Self { delivery, reason: "SIGNATURE_INVALID" }
    }

    pub fn expired(delivery: Delivery) -> Self {
        Self { delivery, reason: "SIGNATURE_EXPIRED" }
    }
}

/// One row of a provider's create error table: its answer and the gRPC error it must become.
pub struct CreateError {
    pub response: ResponseTemplate,
    pub code: tonic::Code,
    pub reason: &'static str,
    pub provider_code: Option<&'static str>,
}

impl CreateError {
    /// INVALID_ARGUMENT `PROVIDER_REJECTED` with `provider_code`: the payment fails.
    pub fn rejected(response: ResponseTemplate, provider_code: &'static str) -> Self {
        Self {
            response,
            code: tonic::Code::InvalidArgument,
            reason: "PROVIDER_REJECTED",
            provider_code: Some(provider_code),
        }
    }

    /// UNAVAILABLE `PROVIDER_UNAVAILABLE`: not processed, safe to retry.
    pub fn unavailable(response: ResponseTemplate) -> Self {
        Self { response, code: tonic::Code::Unavailable, reason: "PROVIDER_UNAVAILABLE", provider_code: None }
    }

    /// UNAVAILABLE `PROVIDER_OUTCOME_UNKNOWN`: the provider may have opened a checkout.
    pub fn outcome_unknown(response: ResponseTemplate) -> Self {
        Self { response, code: tonic::Code::Unavailable, reason: "PROVIDER_OUTCOME_UNKNOWN", provider_code: None }
    }
}

/// Where [`checkout_request`] sends the shopper back.
pub const RETURN_URL: &str = "https://shop.example/return?order=1";
pub const CANCEL_URL: &str = "https://shop.example/cancel";

/// The customer a double's requests name.
pub struct Shopper {
    pub name: &'static str,
    pub email: &'static str,
    pub phone: &'static str,
}

/// A create request for `amount_minor` `currency` from `shopper`, back to the shop's return and
/// cancel pages.
pub fn checkout_request(
    provider: &str,
    reference: &str,
    amount_minor: i64,
    currency: &str,
    shopper: &Shopper,
) -> pb::CreateCheckoutRequest {
    let &Shopper { name, email, phone } = shopper;
    pb::CreateCheckoutRequest {
        provider: provider.into(),
        merchant_reference: reference.into(),
        amount: Some(pb::Money { amount_minor, currency: currency.into() }),
        return_url: RETURN_URL.into(),
        cancel_url: CANCEL_URL.into(),
        customer: Some(pb::Customer { name: name.into(), email: email.into(), phone: phone.into() }),
        ..Default::default()
    }
}

/// What a double checks in a request it accepts (wrap it in [`Checked`] to match with it).
pub trait RequestCheck: Send + Sync + 'static {
    /// The double, for the explanation (`XPay`).
    const DOUBLE: &'static str;
    fn check(&self, request: &wiremock::Request) -> Result<(), String>;
}

/// A request matcher that prints why its check refused (wiremock itself only reports that
/// nothing matched).
pub struct Checked<C>(pub C);

impl<C: RequestCheck> wiremock::Match for Checked<C> {
    fn matches(&self, request: &wiremock::Request) -> bool {
        let checked = self.0.check(request);
        if let Err(e) = &checked {
            eprintln!("{} double refused the request: {e}", C::DOUBLE);
        }
        checked.is_ok()
    }
}

/// The JSON body of `request`, or why it is none.
pub fn json_body(request: &wiremock::Request) -> Result<Value, String> {
    serde_json::from_slice(&request.body).map_err(|e| format!("not JSON: {e}"))
}

/// The top-level field names of a JSON object, sorted.
pub fn field_names(body: &Value) -> Result<Vec<&str>, String> {
    let object = body.as_object().ok_or("body is not an object")?;
    let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
    names.sort_unstable();
    Ok(names)
}

/// A JSON answer with HTTP `status`.
pub fn answer(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

/// A provider's double: the gateway running against a `wiremock` provider that enforces the
/// documented API, and how that provider signs, answers and redirects.
#[async_trait::async_trait]
pub trait ProviderDouble: Sized + Send + Sync + 'static {
    /// Currencies the provider cannot take: refused before any call.
    const UNSUPPORTED_CURRENCIES: &'static [&'static str];
    /// Path of the create endpoint.
    const CREATE_PATH: &'static str;
    /// How long a checkout created without `ttl` stays open.
    const LIFETIME: Lifetime;
    /// Credentials and the request's customer data: never in any answer or error text.
    const SECRETS: &'static [&'static str];
    /// The status a payment has once the provider said [`Outcome::Pending`].
    const OPEN_STATUS: PaymentStatus = PaymentStatus::Pending;
    /// Callbacks come from the shopper's browser and are answered with a redirect (303), not JSON.
    const BROWSER_DELIVERY: bool = false;
    /// A genuine paid callback only queues a lookup; the lookup's answer pays.
    const TRIGGER_ONLY: bool = false;
    /// The provider dedupes creates on our id, so a create whose outcome is unknown may be re-sent.
    const CREATE_IS_IDEMPOTENT: bool = false;

    /// The gateway on a fresh database with one `default` account at a fresh double.
    async fn start() -> Self;
    /// The gateway and the double.
    fn parts(&self) -> (&TestApp, &MockServer);
    /// Mounts on `mock` what every call needs besides its own endpoint (Exirom's auth).
    async fn mount_auth(_mock: &MockServer) {}
    /// An adapter of an account at `mock` with `ctx` (the short-timeout client).
    fn adapter(mock: &MockServer, ctx: &ProviderContext) -> Arc<dyn Provider>;

    /// A complete, valid create request for this provider.
    fn request(reference: &str) -> pb::CreateCheckoutRequest;
    /// `endpoint` requiring the provider's auth headers.
    fn authorized(&self, endpoint: MockBuilder) -> MockBuilder;
    /// [`ProviderDouble::create_endpoint`] enforcing the documented body of
    /// [`ProviderDouble::request`], answering as the provider does.
    fn create_mock(&self) -> Mock;
    /// The `provider_checkout_id` and `checkout_url` the created `payment` must have.
    fn checkout(&self, payment: &pb::Payment) -> (String, String);
    /// The provider's error answers to a create and what each must become.
    fn create_errors() -> Vec<CreateError>;

    /// Path of `payment`'s status lookup.
    fn lookup_path(payment: &pb::Payment) -> String;
    /// The provider's words for the outcomes of a lookup.
    const STATUSES: Statuses;
    /// The lookup's answer: the provider's `status` for `amount_minor` of the request's currency.
    fn lookup_answer(&self, payment: &pb::Payment, status: &str, amount_minor: i64) -> ResponseTemplate;
    /// `provider_payment_id` and `payment_method` of `payment` once paid `via`.
    fn paid_as(payment: &pb::Payment, via: Via) -> (String, &'static str);

    /// The genuine callback saying `payment` was paid.
    fn paid_callback(&self, payment: &pb::Payment) -> Delivery;
    /// The event id the gateway reports for `delivery` about `payment`.
    fn event_id(&self, payment: &pb::Payment, delivery: &Delivery) -> String;
    /// Paid callbacks about `payment` that must be refused: forged first, then unsigned and the like.
    fn refused_callbacks(&self, payment: &pb::Payment) -> Vec<Refused>;
    /// A correctly signed paid callback for another amount or currency; `None` where the
    /// provider's callbacks carry no signed amount.
    fn callback_with_amount(&self, payment: &pb::Payment, amount_minor: i64, currency: &str) -> Option<Delivery>;
    /// A genuine callback that only asks for a lookup; `None` where every callback reports.
    fn lookup_trigger(&self, payment: &pb::Payment) -> Option<Delivery>;
    /// The queries of the shopper's returns to us from the provider's page, each with where it
    /// must redirect.
    fn returns(&self, payment: &pb::Payment) -> Vec<(String, &'static str)>;
    /// Adds a broken account to `config`: its name and the keys its problems must name.
    fn misconfigure(config: &mut Config) -> (&'static str, Vec<&'static str>);

    /// Name in the API and in callback URLs: [`ProviderDouble::request`]'s.
    fn provider() -> String {
        Self::request("").provider
    }

    /// The amount of [`ProviderDouble::request`].
    fn amount() -> pb::Money {
        Self::request("").amount.expect("an amount")
    }

    fn app(&self) -> &TestApp {
        self.parts().0
    }

    fn mock(&self) -> &MockServer {
        self.parts().1
    }

    /// [`ProviderDouble::start`], then [`ProviderDouble::and_payment`].
    async fn with_payment(reference: &str) -> (Self, pb::Payment) {
        Self::start().await.and_payment(reference).await
    }

    /// Mounts the create endpoint and creates one payment.
    async fn and_payment(self, reference: &str) -> (Self, pb::Payment) {
        self.mount_create().await;
        let payment = self.create(reference).await;
        (self, payment)
    }

    /// The create endpoint: `POST` [`ProviderDouble::CREATE_PATH`], authorized.
    fn create_endpoint(&self) -> MockBuilder {
        self.authorized(Mock::given(method("POST")).and(path(Self::CREATE_PATH)))
    }

    /// The lookup endpoint of `payment`: `GET` [`ProviderDouble::lookup_path`], authorized.
    fn lookup_endpoint(&self, payment: &pb::Payment) -> MockBuilder {
        self.authorized(Mock::given(method("GET")).and(path(Self::lookup_path(payment))))
    }

    async fn mount_create(&self) {
        self.create_mock().mount(self.mock()).await;
    }

    async fn create(&self, reference: &str) -> pb::Payment {
        let response = self.app().grpc.clone().create_checkout(Self::request(reference)).await.expect("create");
        response.into_inner().payment.expect("payment")
    }

    async fn mount_lookup(&self, payment: &pb::Payment, outcome: Outcome) {
        self.mount_status(payment, Self::STATUSES.of(outcome)).await;
    }

    /// The lookup of `payment` answering the provider's `status` for the request's amount.
    async fn mount_status(&self, payment: &pb::Payment, status: &str) {
        self.mount_status_amount(payment, status, Self::amount().amount_minor).await;
    }

    async fn mount_status_amount(&self, payment: &pb::Payment, status: &str, amount_minor: i64) {
        let answer = self.lookup_answer(payment, status, amount_minor);
        self.lookup_endpoint(payment).respond_with(answer).mount(self.mock()).await;
    }

    /// Forgets every mock and request, then mounts [`ProviderDouble::mount_auth`] again.
    async fn reset(&self) {
        self.mock().reset().await;
        Self::mount_auth(self.mock()).await;
    }

    /// Status lookups of `payment` the provider received.
    async fn lookups(&self, payment: &pb::Payment) -> usize {
        common::requests_to(self.mock(), "GET", &Self::lookup_path(payment)).await
    }

    /// Waits (up to 5 s) until the provider received `n` lookups of `payment`.
    async fn wait_for_lookups(&self, payment: &pb::Payment, n: usize) {
        common::wait_for_requests(self.mock(), "GET", &Self::lookup_path(payment), n).await;
    }

    async fn wait_for_status(&self, id: &str, status: PaymentStatus) -> pb::Payment {
        self.app().wait_for_status(id, status).await
    }

    async fn refresh(&self, id: &str) -> Result<pb::Payment, tonic::Status> {
        self.app().refresh(id).await
    }

    /// The shopper's browser coming back to `/return/{provider}/{payment}` with `query`.
    async fn shopper_returns(&self, payment: &pb::Payment, query: &str) -> reqwest::Response {
        let mut url = format!("{}/return/{}/{}", self.app().http, Self::provider(), payment.id);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        self.app().client.get(url).send().await.expect("return GET")
    }

    /// POSTs `delivery` to the HTTP ingress.
    async fn deliver(&self, delivery: &Delivery) -> reqwest::Response {
        deliver(self.app(), &Self::provider(), delivery).await
    }

    /// Hands `delivery` to VerifyCallback.
    async fn verify(&self, delivery: &Delivery) -> Result<pb::VerifyCallbackResponse, tonic::Status> {
        verify(self.app(), &Self::provider(), delivery).await
    }
}

/// POSTs `delivery` to `/callbacks/{provider}/default` of `app`.
pub async fn deliver(app: &TestApp, provider: &str, delivery: &Delivery) -> reqwest::Response {
    let mut url = format!("{}/callbacks/{provider}/default", app.http);
    if !delivery.query.is_empty() {
        url = format!("{url}?{}", delivery.query);
    }
    let mut request = app.client.post(url).body(delivery.body.clone());
    for (name, value) in &delivery.headers {
        request = request.header(*name, value);
    }
    request.send().await.expect("callback POST")
}

/// Hands `delivery` to VerifyCallback of `app` for `provider`'s default account, header names in
/// upper case (they are case-insensitive, as over HTTP).
pub async fn verify(
    app: &TestApp,
    provider: &str,
    delivery: &Delivery,
) -> Result<pb::VerifyCallbackResponse, tonic::Status> {
    let request = pb::VerifyCallbackRequest {
        provider: provider.into(),
        account: "default".into(),
        body: delivery.body.clone().into_bytes(),
        headers: delivery.headers.iter().map(|(k, v)| (k.to_uppercase(), v.clone())).collect(),
        query: delivery.query.clone(),
    };
    app.grpc.clone().verify_callback(request).await.map(tonic::Response::into_inner)
}

fn assert_no_secret<D: ProviderDouble>(text: &str) {
    for secret in D::SECRETS {
        assert!(!text.contains(secret), "{secret} leaks: {text}");
    }
}

/// The `location` of a redirect, empty for none.
pub fn location(r: &reqwest::Response) -> &str {
    r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Checks the ingress's answer to an accepted delivery: the redirect back to the caller's page
/// for a browser, else 200 and the JSON, returned.
async fn accepted<D: ProviderDouble>(r: reqwest::Response) -> Option<Value> {
    if D::BROWSER_DELIVERY {
        assert_eq!((r.status().as_u16(), location(&r)), (303, D::request("").return_url.as_str()));
        return None;
    }
    assert_eq!(r.status(), 200);
    Some(r.json().await.expect("JSON answer"))
}

/// Checks the ingress's answer to a refused delivery: the browser is still sent back to the
/// caller's page; a server gets 401 with the reason and no secret.
async fn refused<D: ProviderDouble>(r: reqwest::Response, reason: &str) {
    if D::BROWSER_DELIVERY {
        assert_eq!((r.status().as_u16(), location(&r)), (303, D::request("").return_url.as_str()));
        return;
    }
    assert_eq!(r.status(), 401);
    let text = r.text().await.expect("body");
    assert_no_secret::<D>(&text);
    let json: Value = serde_json::from_str(&text).expect("JSON error");
    assert_eq!(json["code"], reason, "{json}");
}

/// Waits for a paid payment when the lookup pays; reads it at once when the callback did.
async fn paid_payment<D: ProviderDouble>(h: &D, id: &str) -> pb::Payment {
    let paid = if D::TRIGGER_ONLY {
        h.wait_for_status(id, PaymentStatus::Succeeded).await
    } else {
        h.app().get_payment(id).await
    };
    assert_eq!(paid.status(), PaymentStatus::Succeeded);
    paid
}

// ---------------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------------

/// Create sends the documented request once (the create mock enforces it) and returns a PENDING
/// payment with the provider's checkout, its lifetime and nothing secret.
pub async fn create_sends_the_documented_request<D: ProviderDouble>() {
    let h = D::start().await;
    h.create_mock().expect(1).named("create").mount(h.mock()).await;
    let payment = h.create("conf-create").await;
    assert_eq!(payment.status(), PaymentStatus::Pending);
    let (checkout_id, checkout_url) = h.checkout(&payment);
    assert_eq!(payment.provider_checkout_id, checkout_id);
    assert_eq!(payment.checkout_url, checkout_url);
    let (created, nanos) = common::seconds(&payment.created_at);
    let (expires, expires_nanos) = common::seconds(&payment.expires_at);
    match D::LIFETIME {
        Lifetime::Provider(secs) => assert_eq!((expires, expires_nanos), (created + secs, nanos)),
        Lifetime::GatewayDefault => {
            let lifetime = (expires - created) * 1_000_000_000 + i64::from(expires_nanos - nanos);
            assert!((lifetime - 86_400 * 1_000_000_000).abs() < 1_000_000, "{lifetime} ns");
        }
    }
    assert!(payment.metadata.is_empty(), "{:?}", payment.metadata);
    assert_no_secret::<D>(&format!("{payment:?}"));
    assert_eq!(common::requests_to(h.mock(), "POST", D::CREATE_PATH).await, 1);
    let stored = h.app().get_payment(&payment.id).await;
    assert_eq!((stored.version, stored.checkout_url), (payment.version, payment.checkout_url));
    h.mock().verify().await;
}

/// The provider's error answers map to the error table; no error text holds a secret or the
/// customer's data; only rejections fail the payment.
pub async fn create_errors_map_to_the_error_table<D: ProviderDouble>() {
    let h = D::start().await;
    let cases = D::create_errors();
    let rejections = cases.iter().filter(|c| c.reason == "PROVIDER_REJECTED").count();
    for (i, case) in cases.into_iter().enumerate() {
        h.reset().await;
        h.create_endpoint().respond_with(case.response).expect(1).mount(h.mock()).await;
        let status = h.app().grpc.clone().create_checkout(D::request(&format!("conf-err-{i}"))).await.unwrap_err();
        assert_eq!(status.code(), case.code, "case {i}");
        let (reason, metadata) = error_info(&status);
        assert_eq!(reason, case.reason, "case {i}");
        assert_eq!(metadata.get("provider_code").map(String::as_str), case.provider_code, "case {i}");
        assert_no_secret::<D>(&format!("{status:?}"));
        h.mock().verify().await;
    }
    let failed = "SELECT COUNT(*) FROM payments WHERE status = 'failed' AND failure_code = 'PROVIDER_REJECTED'";
    assert_eq!(h.app().count(failed).await, i64::try_from(rejections).unwrap());
}

/// A currency the provider cannot take is INVALID_ARGUMENT before anything is sent or written.
pub async fn other_currencies_are_refused_before_any_call<D: ProviderDouble>() {
    let h = D::start().await;
    for currency in D::UNSUPPORTED_CURRENCIES {
        let mut request = D::request(&format!("conf-{currency}"));
        request.amount = Some(pb::Money { amount_minor: 1234, currency: (*currency).into() });
        let status = h.app().grpc.clone().create_checkout(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{currency}");
        let (reason, metadata) = error_info(&status);
        assert_eq!((reason.as_str(), metadata["field"].as_str()), ("INVALID_FIELD", "amount.currency"));
    }
    assert!(h.mock().received_requests().await.unwrap().is_empty(), "not a single call");
    assert_eq!(h.app().count("SELECT COUNT(*) FROM payments").await, 0);
}

/// The gateway with an adapter whose client gives up after 300 ms, at a double whose create
/// answers after 5 s (the shared client waits 15 s; this shows the same mapping fast).
async fn spawn_with_slow_create<D: ProviderDouble>() -> (TestApp, MockServer) {
    let mock = MockServer::start().await;
    D::mount_auth(&mock).await;
    Mock::given(method("POST"))
        .and(path(D::CREATE_PATH))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&mock)
        .await;
    let adapter = D::adapter(&mock, &common::short_timeout_context());
    let app = spawn_app_with(|_| {}, vec![adapter]).await;
    (app, mock)
}

/// For a provider that cannot dedupe creates: a create that timed out (see
/// [`common::assert_create_outcome_unknown`]). Returns the gateway and the payment's id.
pub async fn create_outcome_unknown<D: ProviderDouble>() -> (TestApp, String) {
    let (app, mock) = spawn_with_slow_create::<D>().await;
    let payment_id =
        common::assert_create_outcome_unknown(&app, &mock, D::CREATE_PATH, D::request("conf-timeout")).await;
    (app, payment_id)
}

/// A create that times out never opens a second checkout: it is never sent again, or, where
/// the provider dedupes on our id, only the very same request is, for the same payment.
pub async fn a_create_that_times_out_is_never_sent_twice<D: ProviderDouble>() {
    if !D::CREATE_IS_IDEMPOTENT {
        create_outcome_unknown::<D>().await;
        return;
    }
    let (app, mock) = spawn_with_slow_create::<D>().await;
    // The key stays retryable (PROVIDER_TIMEOUT): a retry re-sends the same create.
    let mut request = D::request("conf-timeout");
    request.idempotency_key = "conf-timeout-key".into();
    for attempt in 1..=2 {
        let started = std::time::Instant::now();
        let status = app.grpc.clone().create_checkout(request.clone()).await.expect_err("create must time out");
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(error_info(&status).0, "PROVIDER_TIMEOUT");
        common::wait_for_requests(&mock, "POST", D::CREATE_PATH, attempt).await;
    }
    let sent = mock.received_requests().await.unwrap();
    let creates: Vec<&[u8]> =
        sent.iter().filter(|r| r.url.path() == D::CREATE_PATH).map(|r| r.body.as_slice()).collect();
    assert_eq!(creates.len(), 2);
    assert_eq!(creates[0], creates[1], "the same request for the same payment: the provider answers the same");
    assert_eq!(app.count("SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM provider_checks WHERE reason = 'create_outcome_unknown'").await, 1);
}

// ---------------------------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------------------------

/// A genuine paid callback ends SUCCEEDED (directly, or through the one lookup it queues); the
/// same delivery again, over HTTP and VerifyCallback, is a duplicate that changes nothing.
pub async fn a_paid_callback_pays_once_and_duplicates_change_nothing<D: ProviderDouble>() {
    let (h, payment) = D::with_payment("conf-paid").await;
    let callback = h.paid_callback(&payment);
    let event_id = h.event_id(&payment, &callback);
    if D::TRIGGER_ONLY {
        // The provider confirms a little later, so the callback's own effect shows first.
        let confirmed =
            h.lookup_answer(&payment, D::STATUSES.paid, D::amount().amount_minor).set_delay(Duration::from_millis(700));
        h.lookup_endpoint(&payment).respond_with(confirmed).mount(h.mock()).await;
    }

    if let Some(json) = accepted::<D>(h.deliver(&callback).await).await {
        let want = json!({ "payment_id": payment.id, "event_id": event_id, "duplicate": false,
            "status_changed": !D::TRIGGER_ONLY });
        assert_eq!(json, want);
    }
    let first_kind = if D::TRIGGER_ONLY {
        let p = h.app().get_payment(&payment.id).await;
        assert_eq!(
            (p.status(), p.version),
            (PaymentStatus::Pending, payment.version),
            "the callback alone pays nothing"
        );
        "look_up"
    } else {
        "status_changed"
    };
    // The provider (or the browser) delivers it again.
    if let Some(json) = accepted::<D>(h.deliver(&callback).await).await {
        assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(true), Some(false)));
    }
    assert_eq!(h.app().event_kinds(&payment.id, "callback").await, [first_kind, "duplicate"]);

    let paid = paid_payment(&h, &payment.id).await;
    let via = if D::TRIGGER_ONLY { Via::Lookup } else { Via::Callback };
    let (provider_payment_id, method) = D::paid_as(&payment, via);
    assert_eq!(
        (paid.provider_payment_id.as_str(), paid.payment_method.as_str()),
        (provider_payment_id.as_str(), method)
    );
    assert_eq!((paid.version, paid.failure_code.as_str()), (payment.version + 1, ""));
    assert_eq!(paid.metadata, payment.metadata, "nothing added");

    let response = h.verify(&callback).await.unwrap();
    assert!(response.duplicate && !response.status_changed);
    assert_eq!(response.event_id, event_id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.app().get_payment(&payment.id).await.version, paid.version);
    let want = usize::from(D::TRIGGER_ONLY);
    assert_eq!(h.lookups(&payment).await, want, "a verified report needs no lookup; duplicates queue none");
}

/// Refused callbacks (forged, unsigned, stale) change nothing and mark nothing seen; the first
/// queues one lookup of the payment it claims to be about, whose answer decides; the rest,
/// untrusted triggers too, are deferred. The genuine callback still goes through afterwards.
pub async fn refused_callbacks_change_nothing_and_queue_one_lookup<D: ProviderDouble>() {
    let (h, payment) = D::with_payment("conf-forged").await;
    h.mount_lookup(&payment, Outcome::Pending).await;
    let refusals = h.refused_callbacks(&payment);

    let first = &refusals[0];
    refused::<D>(h.deliver(&first.delivery).await, first.reason).await;
    h.wait_for_lookups(&payment, 1).await;
    // Again, and every other variant, over HTTP and VerifyCallback: refused, no further lookup.
    for refusal in &refusals {
        refused::<D>(h.deliver(&refusal.delivery).await, refusal.reason).await;
        let status = h.verify(&refusal.delivery).await.unwrap_err();
        assert_eq!((status.code(), error_info(&status).0.as_str()), (tonic::Code::PermissionDenied, refusal.reason));
        assert_no_secret::<D>(&format!("{status:?}"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.lookups(&payment).await, 1);

    let unchanged = h.app().get_payment(&payment.id).await;
    assert_eq!(unchanged.status(), D::OPEN_STATUS, "the lookup's answer, never the body's");
    if D::OPEN_STATUS == PaymentStatus::Pending {
        assert_eq!(unchanged.version, payment.version);
    }
    assert_eq!(h.app().count("SELECT COUNT(*) FROM callback_receipts").await, 0);
    for reason in ["SIGNATURE_INVALID", "SIGNATURE_EXPIRED"] {
        let deliveries =
            refusals.iter().filter(|r| r.reason == reason).count() * 2 + usize::from(first.reason == reason);
        let sql = format!("SELECT COUNT(*) FROM rejected_callbacks WHERE reason = '{reason}'");
        assert_eq!(h.app().count(&sql).await, i64::try_from(deliveries).unwrap(), "{reason}");
    }

    // The genuine callback still goes through: nothing was marked seen.
    h.reset().await;
    h.mount_lookup(&payment, Outcome::Paid).await;
    if let Some(json) = accepted::<D>(h.deliver(&h.paid_callback(&payment)).await).await {
        assert_eq!(
            (json["duplicate"].as_bool(), json["status_changed"].as_bool()),
            (Some(false), Some(!D::TRIGGER_ONLY))
        );
    }
    paid_payment(&h, &payment.id).await;
}

/// Whatever a refused callback claims, the lookup it queues decides: a payment the provider
/// reports paid ends SUCCEEDED with the lookup's data, after exactly one lookup.
pub async fn a_refused_callback_is_answered_by_the_lookup<D: ProviderDouble>() {
    let h = D::start().await;
    h.mount_create().await;
    let placeholder = pb::Payment { id: "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV".into(), ..Default::default() };
    let variants = h.refused_callbacks(&placeholder).len();
    let mut payments = Vec::new();
    for i in 0..variants {
        let payment = h.create(&format!("conf-refused-{i}")).await;
        h.mount_lookup(&payment, Outcome::Paid).await;
        let refusal = h.refused_callbacks(&payment).swap_remove(i);
        refused::<D>(h.deliver(&refusal.delivery).await, refusal.reason).await;
        payments.push(payment);
    }
    for payment in &payments {
        let paid = h.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
        assert_eq!(paid.status(), PaymentStatus::Succeeded, "the lookup pays");
        let (provider_payment_id, method) = D::paid_as(payment, Via::Lookup);
        assert_eq!(
            (paid.provider_payment_id.as_str(), paid.payment_method.as_str()),
            (provider_payment_id.as_str(), method)
        );
        assert_eq!(h.lookups(payment).await, 1);
    }
    assert_eq!(h.app().count("SELECT COUNT(*) FROM callback_receipts").await, 0);
}

/// A correctly signed callback for another amount or currency is recorded (AMOUNT_MISMATCH)
/// but never pays and queues no lookup; the genuine one for the right amount still pays.
pub async fn a_signed_callback_with_another_amount_never_pays<D: ProviderDouble>() {
    let (h, payment) = D::with_payment("conf-amount").await;
    let pb::Money { amount_minor, currency } = D::amount();
    let other_currency = if currency == "USD" { "EUR" } else { "USD" };

    // Over HTTP: 200 so the provider stops resending, status unchanged, the failure recorded.
    let cheap = h.callback_with_amount(&payment, amount_minor / 100, &currency).expect("a signed amount");
    let json = accepted::<D>(h.deliver(&cheap).await).await.expect("server-to-server");
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(false)));
    let p = h.app().get_payment(&payment.id).await;
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Pending, "AMOUNT_MISMATCH"));
    assert_eq!(p.version, payment.version + 1);

    // Another currency, over gRPC: FAILED_PRECONDITION after commit; again, a duplicate.
    let foreign = h.callback_with_amount(&payment, amount_minor, other_currency).expect("a signed currency");
    let status = h.verify(&foreign).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let (reason, metadata) = error_info(&status);
    assert_eq!((reason.as_str(), metadata["payment_id"].as_str()), ("AMOUNT_MISMATCH", payment.id.as_str()));
    let duplicate = h.verify(&foreign).await.unwrap();
    assert!(duplicate.duplicate && !duplicate.status_changed);
    assert_eq!(h.app().get_payment(&payment.id).await.status(), PaymentStatus::Pending);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.lookups(&payment).await, 0, "a mismatch queues no lookup");

    // The genuine success for the right amount is no duplicate of either: it pays.
    if D::TRIGGER_ONLY {
        h.mount_lookup(&payment, Outcome::Paid).await;
    }
    let json = accepted::<D>(h.deliver(&h.paid_callback(&payment)).await).await.expect("server-to-server");
    assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(!D::TRIGGER_ONLY)));
    let paid = paid_payment(&h, &payment.id).await;
    assert_eq!(paid.failure_code, "", "success clears the mismatch");
}

// ---------------------------------------------------------------------------------------------
// Lookups and returns
// ---------------------------------------------------------------------------------------------

/// GetPaymentStatus(refresh) maps the provider's answer: open stays open, an undocumented status
/// changes nothing and is counted, another amount never pays, paid pays (and is not asked
/// again), provider trouble is returned.
pub async fn refresh_maps_the_lookup_and_reads_amounts_exactly<D: ProviderDouble>() {
    let (h, payment) = D::with_payment("conf-refresh").await;

    h.mount_lookup(&payment, Outcome::Pending).await;
    let open = h.refresh(&payment.id).await.unwrap();
    assert_eq!(open.status(), D::OPEN_STATUS);
    if D::OPEN_STATUS == PaymentStatus::Pending {
        assert_eq!(open.version, payment.version);
    }

    h.reset().await;
    h.mount_lookup(&payment, Outcome::Unknown).await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.version), (open.status(), open.version));
    assert_eq!(h.app().gateway.metrics().unknown_statuses(&D::provider()), 1);

    h.reset().await;
    h.mount_status_amount(&payment, D::STATUSES.paid, D::amount().amount_minor + 1).await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.failure_code.as_str()), (open.status(), "AMOUNT_MISMATCH"));

    h.reset().await;
    h.mount_lookup(&payment, Outcome::Paid).await;
    let p = h.refresh(&payment.id).await.unwrap();
    assert_eq!((p.status(), p.failure_code.as_str()), (PaymentStatus::Succeeded, ""));
    let (provider_payment_id, method) = D::paid_as(&payment, Via::Lookup);
    assert_eq!((p.provider_payment_id.as_str(), p.payment_method.as_str()), (provider_payment_id.as_str(), method));
    h.refresh(&payment.id).await.unwrap();
    assert_eq!(h.lookups(&payment).await, 1, "SUCCEEDED is not looked up again");

    h.mount_create().await;
    let other = h.create("conf-refresh-2").await;
    h.lookup_endpoint(&other).respond_with(ResponseTemplate::new(502)).mount(h.mock()).await;
    let status = h.refresh(&other.id).await.unwrap_err();
    assert_eq!(error_info(&status).0, "PROVIDER_UNAVAILABLE");
}

/// The shopper's returns redirect to the caller's pages and queue one lookup (untrusted, so
/// deferred after it): whatever the URL hints, only the provider's answer changes the payment.
pub async fn shopper_returns_redirect_and_only_the_lookup_decides<D: ProviderDouble>() {
    let (h, open) = D::with_payment("conf-return-open").await;
    h.mount_lookup(&open, Outcome::Pending).await;
    for (query, want) in h.returns(&open) {
        let r = h.shopper_returns(&open, &query).await;
        assert_eq!((r.status().as_u16(), location(&r)), (303, want));
    }
    h.wait_for_lookups(&open, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.lookups(&open).await, 1, "later returns are deferred");
    assert_eq!(h.app().get_payment(&open.id).await.status(), D::OPEN_STATUS, "the URL is only a hint");

    let paid = h.create("conf-return-paid").await;
    h.mount_lookup(&paid, Outcome::Paid).await;
    let (query, want) = h.returns(&paid).swap_remove(0);
    let r = h.shopper_returns(&paid, &query).await;
    assert_eq!((r.status().as_u16(), location(&r)), (303, want));
    let p = h.wait_for_status(&paid.id, PaymentStatus::Succeeded).await;
    assert_eq!(p.status(), PaymentStatus::Succeeded, "the lookup, not the browser, paid it");
    assert_eq!(h.lookups(&paid).await, 1);
}

/// The failure the durable check queue fixes: a shopper's return looks the payment up (still
/// open), and a trigger-only callback arrives within the old 10 s in-memory window that used to
/// drop its lookup. Its check is queued and runs: SUCCEEDED with no further request.
pub async fn a_trigger_right_after_a_return_lookup_is_not_lost<D: ProviderDouble>() {
    let (h, payment) = D::with_payment("conf-lost").await;
    h.mount_lookup(&payment, Outcome::Pending).await;
    let (query, _) = h.returns(&payment).swap_remove(0);
    assert_eq!(h.shopper_returns(&payment, &query).await.status(), 303);
    h.wait_for_lookups(&payment, 1).await;
    assert_eq!(h.wait_for_status(&payment.id, D::OPEN_STATUS).await.status(), D::OPEN_STATUS);

    h.reset().await;
    h.mount_lookup(&payment, Outcome::Paid).await;
    let trigger = h.lookup_trigger(&payment).expect("a trigger-only callback");
    if let Some(json) = accepted::<D>(h.deliver(&trigger).await).await {
        assert_eq!((json["duplicate"].as_bool(), json["status_changed"].as_bool()), (Some(false), Some(false)));
    }
    let paid = h.wait_for_status(&payment.id, PaymentStatus::Succeeded).await;
    assert_eq!(paid.status(), PaymentStatus::Succeeded, "the queued check ran with no further request");
    let last = h.app().applied(&payment.id).await.pop().unwrap();
    assert_eq!(last, ("succeeded".to_owned(), "reconciler".to_owned()));
    assert_eq!(h.lookups(&payment).await, 1, "one lookup after the callback");
    assert_eq!(h.app().count("SELECT COUNT(*) FROM provider_checks").await, 0, "nothing left to check");
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A broken account's problems name each key, and neither they nor the redacted configuration
/// show a secret.
pub fn config_problems_name_the_key_and_leak_no_secret<D: ProviderDouble>() {
    let mut config = Config::default();
    let (account, keys) = D::misconfigure(&mut config);
    let errors = config.validate().unwrap_err().join("\n");
    for key in keys {
        assert!(errors.contains(&format!("providers.{}.accounts.{account}.{key}", D::provider())), "{key}: {errors}");
    }
    assert_no_secret::<D>(&errors);
    assert_no_secret::<D>(&config.to_redacted_toml());
}

// ---------------------------------------------------------------------------------------------
// The suite, per provider
// ---------------------------------------------------------------------------------------------

macro_rules! conformance {
    (@async $double:ty: $($behaviour:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $behaviour() {
            super::$behaviour::<$double>().await;
        }
    )*};
    ($($provider:ident => $double:ty { $($extra:ident),* $(,)? }),+ $(,)?) => {$(
        mod $provider {
            conformance!(@async $double:
                create_sends_the_documented_request,
                create_errors_map_to_the_error_table,
                other_currencies_are_refused_before_any_call,
                a_create_that_times_out_is_never_sent_twice,
                a_paid_callback_pays_once_and_duplicates_change_nothing,
                refused_callbacks_change_nothing_and_queue_one_lookup,
                a_refused_callback_is_answered_by_the_lookup,
                refresh_maps_the_lookup_and_reads_amounts_exactly,
                shopper_returns_redirect_and_only_the_lookup_decides,
                $($extra),*
            );

            #[test]
            fn config_problems_name_the_key_and_leak_no_secret() {
                super::config_problems_name_the_key_and_leak_no_secret::<$double>();
            }
        }
    )+};
}

conformance! {
    xpay => crate::xpay::Harness {
        a_signed_callback_with_another_amount_never_pays,
        a_trigger_right_after_a_return_lookup_is_not_lost,
    },
    hitpay => crate::hitpay::Harness { a_signed_callback_with_another_amount_never_pays },
    xstak => crate::xstak::Harness { a_signed_callback_with_another_amount_never_pays },
    exirom => crate::exirom::Harness {
        a_signed_callback_with_another_amount_never_pays,
        a_trigger_right_after_a_return_lookup_is_not_lost,
    },
    eximpe => crate::eximpe::Harness { a_trigger_right_after_a_return_lookup_is_not_lost },
}
