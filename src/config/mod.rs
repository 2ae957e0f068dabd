//! Configuration: one typed struct, loaded from defaults < TOML file < `DATABASE_URL` < `PAYGATE_*` env.

mod lenient;
mod load;
mod secret;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use load::{ConfigError, load, load_from};
pub use secret::{REDACTED, Secret};

/// The whole service configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub providers: ProvidersConfig,
    pub events: EventsConfig,
    pub reconciler: ReconcilerConfig,
    pub telemetry: TelemetryConfig,
}

/// The durable provider-check queue: when open payments are checked at their provider, how
/// failures back off, and how hard each provider account may be asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcilerConfig {
    /// Checks of an open payment, in seconds after its creation; then hourly until `expires_at`.
    #[serde(deserialize_with = "lenient::list_of")]
    pub schedule_secs: Vec<u64>,
    /// First retry delay after a failed check; doubles per failure, with jitter.
    #[serde(deserialize_with = "lenient::parse")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    #[serde(deserialize_with = "lenient::parse")]
    pub backoff_max_secs: u64,
    /// How long past `expires_at` a payment the provider reports as processing (or that cannot
    /// be looked up) stays open before it is EXPIRED with `RECONCILIATION_FAILED`.
    #[serde(deserialize_with = "lenient::parse")]
    pub grace_secs: u64,
    /// Checks in flight at once per provider account, per replica.
    #[serde(deserialize_with = "lenient::parse")]
    pub check_concurrency: u32,
    /// Checks started per second per provider account, per replica.
    #[serde(deserialize_with = "lenient::parse")]
    pub check_rate_per_sec: u32,
    /// How long a worker holds a claimed check; past it (the worker died) the check is due again.
    #[serde(deserialize_with = "lenient::parse")]
    pub lease_secs: u64,
    /// How often each replica looks for due checks (new local needs wake it at once).
    #[serde(deserialize_with = "lenient::parse")]
    pub poll_interval_ms: u64,
    /// Checks caused by untrusted triggers (shopper returns, unsigned callbacks) are deferred to
    /// at least this long after the payment's previous check.
    #[serde(deserialize_with = "lenient::parse")]
    pub untrusted_min_interval_secs: u64,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            schedule_secs: vec![60, 300, 900, 3600],
            backoff_initial_ms: 1000,
            backoff_max_secs: 300,
            grace_secs: 86_400,
            check_concurrency: 4,
            check_rate_per_sec: 5,
            lease_secs: 60,
            poll_interval_ms: 1000,
            untrusted_min_interval_secs: 10,
        }
    }
}

/// The payment event log and its status streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// How long events are kept for `WatchPayments` replays, in days.
    #[serde(deserialize_with = "lenient::parse")]
    pub retention_days: u64,
    /// How often the retention job runs, in seconds.
    #[serde(deserialize_with = "lenient::parse")]
    pub prune_interval_secs: u64,
    /// Events each replica keeps in memory for live subscribers; one that falls further behind
    /// catches up from the table.
    #[serde(deserialize_with = "lenient::parse")]
    pub stream_buffer: usize,
    /// Connections of the streams' own pool (listener, reads, replays), apart from `database`'s.
    #[serde(deserialize_with = "lenient::parse")]
    pub stream_pool_size: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { retention_days: 7, prune_interval_secs: 3600, stream_buffer: 4096, stream_pool_size: 4 }
    }
}

/// Listen addresses and the externally visible URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub grpc_addr: String,
    pub http_addr: String,
    /// Base of checkout, callback and return URLs; empty = `http://` + the bound HTTP address.
    pub public_base_url: String,
    /// How long shutdown waits for in-flight requests, in seconds.
    #[serde(deserialize_with = "lenient::parse")]
    pub shutdown_grace_secs: u64,
    /// HTTP/2 streams one gRPC connection may carry at once (each WatchPayments is one).
    #[serde(deserialize_with = "lenient::parse")]
    pub http2_max_concurrent_streams: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: "0.0.0.0:50051".into(),
            http_addr: "0.0.0.0:8080".into(),
            public_base_url: String::new(),
            shutdown_grace_secs: 20,
            http2_max_concurrent_streams: 1024,
        }
    }
}

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    #[serde(deserialize_with = "lenient::parse")]
    pub max_connections: u32,
    /// Create the database when it does not exist (needs CREATEDB on the server).
    #[serde(deserialize_with = "lenient::parse")]
    pub create_if_missing: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: "postgres://postgres@127.0.0.1:5432/paygate".into(), max_connections: 10, create_if_missing: true }
    }
}

/// Tracing and OpenTelemetry export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `tracing` filter directive, e.g. `info,paygate=debug`.
    pub log_filter: String,
    /// `text` or `json`.
    pub log_format: String,
    /// OTLP/gRPC endpoint for traces; empty disables export.
    pub otlp_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log_filter: "info".into(), log_format: "text".into(), otlp_endpoint: String::new() }
    }
}

/// Per-provider sections. Every provider is known here even before its adapter exists, so a
/// typo in a key is a startup error rather than a silently ignored setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    pub sandbox: ProviderSection<SandboxAccount>,
    pub eximpe: ProviderSection<EximpeAccount>,
    pub xpay: ProviderSection<XpayAccount>,
    pub hitpay: ProviderSection<HitpayAccount>,
    pub xstak: ProviderSection<XstakAccount>,
    pub exirom: ProviderSection<ExiromAccount>,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        let mut sandbox = ProviderSection::default();
        sandbox.accounts.insert("default".into(), SandboxAccount::default());
        Self {
            sandbox,
            eximpe: ProviderSection::default(),
            xpay: ProviderSection::default(),
            hitpay: ProviderSection::default(),
            xstak: ProviderSection::default(),
            exirom: ProviderSection::default(),
        }
    }
}

/// One provider: whether it is enabled and its merchant accounts by name (`[a-z0-9-]+`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderSection<A> {
    #[serde(deserialize_with = "lenient::parse")]
    pub enabled: bool,
    pub accounts: BTreeMap<String, A>,
}

impl<A> Default for ProviderSection<A> {
    fn default() -> Self {
        Self { enabled: true, accounts: BTreeMap::new() }
    }
}

/// The built-in sandbox provider's account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxAccount {
    /// Signs the page's callbacks; generated once and stored in Postgres when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<Secret>,
    #[serde(deserialize_with = "lenient::parse")]
    pub webhook_tolerance_secs: u64,
}

impl Default for SandboxAccount {
    fn default() -> Self {
        Self { webhook_secret: None, webhook_tolerance_secs: 300 }
    }
}

/// EximPe (India) account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EximpeAccount {
    pub base_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub callback_key: Secret,
    pub merchant_id: String,
    pub hs_code: String,
    #[serde(deserialize_with = "lenient::parse_opt", skip_serializing_if = "Option::is_none")]
    pub session_ttl_secs: Option<u64>,
    /// `X-API-Version` header; empty = not sent.
    pub api_version: String,
    /// Mode of EximPe's JS SDK on our checkout page: `sandbox` | `production`; empty = `production`
    /// when `base_url` is `https://api.eximpe.com`, else `sandbox`.
    pub sdk_mode: String,
}

impl EximpeAccount {
    /// What makes this account unusable, each as `key: reason`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_base_url(&mut problems, &self.base_url, Required::Yes);
        check_set(
            &mut problems,
            &[
                ("client_id", &self.client_id),
                ("client_secret", self.client_secret.expose()),
                ("callback_key", self.callback_key.expose()),
                ("hs_code", &self.hs_code),
            ],
        );
        if !matches!(self.sdk_mode.as_str(), "" | "sandbox" | "production") {
            problems.push("sdk_mode: must be `sandbox` or `production`".to_owned());
        }
        if self.session_ttl_secs.is_some_and(|t| !(60..=86_400).contains(&t)) {
            problems.push("session_ttl_secs: must be between 60 and 86400".to_owned());
        }
        problems
    }
}

/// XPay (Egypt) account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XpayAccount {
    /// Empty: `https://api.xpay.app` (the same host for test and live keys).
    pub base_url: String,
    pub secret_key: Secret,
    #[serde(deserialize_with = "lenient::list_of")]
    pub webhook_secrets: Vec<Secret>,
    #[serde(deserialize_with = "lenient::parse_opt", skip_serializing_if = "Option::is_none")]
    pub webhook_tolerance_secs: Option<u64>,
    /// Top-level session field that carries the customer's email; empty: the email is not sent.
    pub customer_email_field: String,
    /// Currencies this account accepts (ISO 4217); only EGP is verified with XPay.
    #[serde(deserialize_with = "lenient::list")]
    pub currencies: Vec<String>,
}

impl XpayAccount {
    /// Value formats, each as `key: reason` (never a value).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_base_url(&mut problems, &self.base_url, Required::No);
        if self.webhook_secrets.iter().any(|s| s.expose().is_empty()) {
            problems.push("webhook_secrets: secrets must not be empty".to_owned());
        }
        if self.currencies.is_empty()
            || self.currencies.iter().any(|c| crate::domain::money::Currency::parse(c).is_none())
        {
            problems.push("currencies: one or more active upper-case ISO 4217 codes".to_owned());
        }
        problems
    }
}

impl Default for XpayAccount {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            secret_key: Secret::default(),
            webhook_secrets: Vec::new(),
            webhook_tolerance_secs: None,
            customer_email_field: String::new(),
            currencies: vec!["EGP".into()],
        }
    }
}

/// HitPay (Singapore) account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HitpayAccount {
    /// API base ending in `/v1`, e.g. `https://api.sandbox.hit-pay.com/v1`; required.
    pub base_url: String,
    /// `X-BUSINESS-API-KEY`; required.
    pub api_key: Secret,
    /// The dashboard's webhook salt: HMAC-SHA256 key of the webhook `hmac`; required.
    pub salt: Secret,
    /// Body encoding of the create call: `form` (empty = `form`, as the seed document says) or `json`.
    pub create_content_type: String,
}

impl HitpayAccount {
    /// Value formats (the required keys are checked when the adapter is built at startup).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_base_url(&mut problems, &self.base_url, Required::No);
        if !matches!(self.create_content_type.as_str(), "" | "form" | "json") {
            problems.push("create_content_type: must be `form` or `json`".to_owned());
        }
        problems
    }
}

/// XStak XPay (Pakistan) account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XstakAccount {
    /// Empty: `https://xstak-pay.xstak.com` (production host from unofficial code; staging is
    /// `https://xstak-pay-stg.xstak.com`).
    pub base_url: String,
    /// `x-api-key` (the secret key from the XAP portal).
    pub api_key: Secret,
    /// `x-account-id`.
    pub account_id: String,
    /// `hmac_sc_api`: signs our requests (`x-signature`).
    pub hmac_secret: Secret,
    /// The webhook HMAC secret.
    pub webhook_secret: Secret,
    /// Header carrying the webhook signature (the document does not name it).
    pub webhook_signature_header: String,
    /// Status lookups via the undocumented `GET {base}/public/v1/payment/intent/{id}`.
    #[serde(deserialize_with = "lenient::parse")]
    pub status_lookup: bool,
    /// Unit of `amount` on the wire: `major` (default, the document's `5` PKR) or `minor` (paisa).
    pub amount_unit: String,
    /// Local checkout lifetime (XStak documents none); the request's `ttl` wins when given.
    #[serde(deserialize_with = "lenient::parse_opt", skip_serializing_if = "Option::is_none")]
    pub checkout_ttl_secs: Option<u64>,
}

impl Default for XstakAccount {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            api_key: Secret::default(),
            account_id: String::new(),
            hmac_secret: Secret::default(),
            webhook_secret: Secret::default(),
            webhook_signature_header: "x-signature".into(),
            status_lookup: false,
            amount_unit: "major".into(),
            checkout_ttl_secs: None,
        }
    }
}

impl XstakAccount {
    /// What makes this account unusable, each as `key: reason`. Never includes a value.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_base_url(&mut problems, &self.base_url, Required::No);
        check_set(
            &mut problems,
            &[
                ("api_key", self.api_key.expose()),
                ("account_id", &self.account_id),
                ("hmac_secret", self.hmac_secret.expose()),
                ("webhook_secret", self.webhook_secret.expose()),
            ],
        );
        if reqwest::header::HeaderName::from_bytes(self.webhook_signature_header.as_bytes()).is_err() {
            problems.push("webhook_signature_header: must be a valid HTTP header name".to_owned());
        }
        if !matches!(self.amount_unit.as_str(), "major" | "minor") {
            problems.push("amount_unit: must be `major` or `minor`".to_owned());
        }
        if self.checkout_ttl_secs.is_some_and(|t| !(60..=7 * 86_400).contains(&t)) {
            problems.push("checkout_ttl_secs: must be between 60 and 604800".to_owned());
        }
        problems
    }
}

/// Exirom (APMs) account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExiromAccount {
    pub base_url: String,
    pub merchant_key: Secret,
    pub merchant_secret: Secret,
    pub account_id: String,
    pub methods: BTreeMap<String, ExiromMethod>,
    /// How the callback checksum's amount is written, tried in order: `raw_token`, `2dp`, `minor`;
    /// empty = all three in that order.
    #[serde(deserialize_with = "lenient::list")]
    pub callback_amount_formats: Vec<String>,
    /// Lifetime assumed for an auth token whose JWT carries no `exp`; unset = 30 days (documented).
    #[serde(deserialize_with = "lenient::parse_opt", skip_serializing_if = "Option::is_none")]
    pub token_lifetime_secs: Option<u64>,
}

impl ExiromAccount {
    /// What makes this account unusable, each as `key: reason` (never a value).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_base_url(&mut problems, &self.base_url, Required::Yes);
        check_set(
            &mut problems,
            &[
                ("merchant_key", self.merchant_key.expose()),
                ("merchant_secret", self.merchant_secret.expose()),
                ("account_id", &self.account_id),
            ],
        );
        if self.account_id.contains('|') {
            problems.push("account_id: must not contain `|` (it is part of the signed text)".to_owned());
        }
        if self.methods.is_empty() {
            problems.push("methods: at least one payment method is required".to_owned());
        }
        for (name, method) in &self.methods {
            if method.payment_method.trim().is_empty() || method.payment_type.trim().is_empty() {
                problems.push(format!("methods.{name}: payment_method and payment_type must be set"));
            }
        }
        for format in &self.callback_amount_formats {
            if !matches!(format.as_str(), "raw_token" | "2dp" | "minor") {
                problems.push(format!("callback_amount_formats: `{format}` is not raw_token, 2dp or minor"));
            }
        }
        if self.token_lifetime_secs.is_some_and(|t| t < 60) {
            problems.push("token_lifetime_secs: must be at least 60".to_owned());
        }
        problems
    }
}

/// How one of our payment method names maps onto Exirom's APM payload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExiromMethod {
    pub payment_method: String,
    pub payment_type: String,
}

impl Config {
    /// Checks what types alone cannot: addresses, account names.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for (key, addr) in [("server.grpc_addr", &self.server.grpc_addr), ("server.http_addr", &self.server.http_addr)]
        {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                errors.push(format!("{key}: not a socket address (host:port)"));
            }
        }
        let base = &self.server.public_base_url;
        if !base.is_empty() {
            match url::Url::parse(base) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && !base.ends_with('/') => {}
                _ => {
                    errors.push("server.public_base_url: must be an absolute http(s) URL without a trailing `/`".into())
                }
            }
        }
        if self.database.url.is_empty() {
            errors.push("database.url: must be set".into());
        }
        if self.database.max_connections == 0 {
            errors.push("database.max_connections: must be at least 1".into());
        }
        let r = &self.reconciler;
        if r.schedule_secs.is_empty() || r.schedule_secs.windows(2).any(|w| w[0] >= w[1]) {
            errors.push("reconciler.schedule_secs: one or more increasing numbers of seconds".into());
        }
        for (key, value) in [
            ("reconciler.backoff_initial_ms", r.backoff_initial_ms),
            ("reconciler.backoff_max_secs", r.backoff_max_secs),
            ("reconciler.check_concurrency", u64::from(r.check_concurrency)),
            ("reconciler.check_rate_per_sec", u64::from(r.check_rate_per_sec)),
            ("reconciler.lease_secs", r.lease_secs),
            ("reconciler.poll_interval_ms", r.poll_interval_ms),
        ] {
            if value == 0 {
                errors.push(format!("{key}: must be at least 1"));
            }
        }
        for (provider, accounts) in self.account_names() {
            for name in accounts {
                if !is_account_name(&name) {
                    errors.push(format!("providers.{provider}.accounts.{name}: account names are [a-z0-9-]+"));
                }
            }
        }
        // Per-account value checks (XPay's even while disabled; the required XPay keys are
        // checked when its adapter is built at startup).
        let p = &self.providers;
        errors.extend(account_problems("xpay", &p.xpay, true, XpayAccount::problems));
        errors.extend(account_problems("eximpe", &p.eximpe, p.eximpe.enabled, EximpeAccount::problems));
        errors.extend(account_problems("exirom", &p.exirom, p.exirom.enabled, ExiromAccount::problems));
        errors.extend(account_problems("xstak", &p.xstak, p.xstak.enabled, XstakAccount::problems));
        errors.extend(account_problems("hitpay", &p.hitpay, p.hitpay.enabled, HitpayAccount::problems));
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    fn account_names(&self) -> Vec<(&'static str, Vec<String>)> {
        let p = &self.providers;
        vec![
            ("sandbox", p.sandbox.accounts.keys().cloned().collect()),
            ("eximpe", p.eximpe.accounts.keys().cloned().collect()),
            ("xpay", p.xpay.accounts.keys().cloned().collect()),
            ("hitpay", p.hitpay.accounts.keys().cloned().collect()),
            ("xstak", p.xstak.accounts.keys().cloned().collect()),
            ("exirom", p.exirom.accounts.keys().cloned().collect()),
        ]
    }

    /// The effective configuration as TOML with every secret replaced by `"<redacted>"`.
    pub fn to_redacted_toml(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        redact(&mut value);
        match toml::to_string_pretty(&value) {
            Ok(s) => s,
            Err(e) => format!("# cannot render config: {e}\n"),
        }
    }
}

/// Every problem of every account of one provider section, as `providers.<p>.accounts.<name>.<key>: …`.
fn account_problems<A>(
    provider: &str,
    section: &ProviderSection<A>,
    check: bool,
    problems: impl Fn(&A) -> Vec<String>,
) -> Vec<String> {
    if !check {
        return Vec::new();
    }
    section
        .accounts
        .iter()
        .flat_map(|(name, account)| {
            problems(account).into_iter().map(move |p| format!("providers.{provider}.accounts.{name}.{p}"))
        })
        .collect()
}

/// Whether a provider account's `base_url` must be given (else empty means the provider's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Required {
    Yes,
    No,
}

/// `base_url: …` when `url` is not an absolute http(s) URL (an empty one is fine unless required).
fn check_base_url(problems: &mut Vec<String>, url: &str, required: Required) {
    if url.is_empty() && required == Required::No {
        return;
    }
    if !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some()) {
        problems.push("base_url: must be an absolute http(s) URL".to_owned());
    }
}

/// `<key>: must be set` for each blank value (never the value itself: most are secrets).
fn check_set(problems: &mut Vec<String>, fields: &[(&str, &str)]) {
    for (key, value) in fields {
        if value.trim().is_empty() {
            problems.push(format!("{key}: must be set"));
        }
    }
}

/// Whether `name` is a valid account name.
pub fn is_account_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn redact(value: &mut serde_json::Value) {
    use serde_json::Value;
    if let Value::Object(map) = value {
        for (k, v) in map.iter_mut() {
            // Secrets serialize as `<redacted>` themselves; URLs may carry a password.
            if k == "url" {
                if let Value::String(s) = v {
                    *s = redact_url_password(s);
                }
            } else {
                redact(v);
            }
        }
    }
}

/// Query parameters of a Postgres URL that carry credentials.
const URL_SECRET_PARAMS: &[&str] = &["password", "sslpassword"];

/// A URL (e.g. the database URL) as printable: `"<redacted>"` when it carries a credential (a
/// password in the userinfo or a password query parameter) or cannot be parsed.
pub fn redact_url_password(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(u) if u.password().is_none() && !u.query_pairs().any(|(k, _)| URL_SECRET_PARAMS.contains(&k.as_ref())) => {
            raw.to_owned()
        }
        _ => "<redacted>".to_owned(),
    }
}
