//! Configuration: one typed struct, loaded from defaults < TOML file < `DATABASE_URL` < `PAYGATE_*` env.

mod lenient;
mod load;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use load::{ConfigError, load, load_from};

/// The whole service configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub providers: ProvidersConfig,
    pub events: EventsConfig,
    pub telemetry: TelemetryConfig,
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
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { retention_days: 7, prune_interval_secs: 3600, stream_buffer: 4096 }
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: "0.0.0.0:50051".into(),
            http_addr: "0.0.0.0:8080".into(),
            public_base_url: String::new(),
            shutdown_grace_secs: 20,
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
    pub webhook_secret: Option<String>,
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
    pub client_secret: String,
    pub callback_key: String,
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
        match url::Url::parse(&self.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => problems.push("base_url: must be an absolute http(s) URL".to_owned()),
        }
        for (key, value) in [
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("callback_key", &self.callback_key),
            ("hs_code", &self.hs_code),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("{key}: must be set"));
            }
        }
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
    pub secret_key: String,
    #[serde(deserialize_with = "lenient::list")]
    pub webhook_secrets: Vec<String>,
    #[serde(deserialize_with = "lenient::parse_opt", skip_serializing_if = "Option::is_none")]
    pub webhook_tolerance_secs: Option<u64>,
    /// Top-level session field that carries the customer's email; empty: the email is not sent.
    pub customer_email_field: String,
    /// Currencies this account accepts (ISO 4217); only EGP is verified with XPay.
    #[serde(deserialize_with = "lenient::list")]
    pub currencies: Vec<String>,
}

impl Default for XpayAccount {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            secret_key: String::new(),
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
    pub base_url: String,
    pub api_key: String,
    pub salt: String,
    pub create_content_type: String,
}

/// XStak XPay (Pakistan) account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XstakAccount {
    pub base_url: String,
    pub api_key: String,
    pub account_id: String,
    pub hmac_secret: String,
    pub webhook_secret: String,
    pub webhook_signature_header: String,
    #[serde(deserialize_with = "lenient::parse")]
    pub status_lookup: bool,
}

/// Exirom (APMs) account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExiromAccount {
    pub base_url: String,
    pub merchant_key: String,
    pub merchant_secret: String,
    pub account_id: String,
    pub methods: BTreeMap<String, ExiromMethod>,
    #[serde(deserialize_with = "lenient::list")]
    pub callback_amount_formats: Vec<String>,
}

/// How one of our payment method names maps onto Exirom's APM payload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExiromMethod {
    pub payment_method: String,
    pub payment_type: String,
}

/// Keys whose values are secrets: redacted by `check-config`, never logged.
pub const SECRET_KEYS: &[&str] = &[
    "webhook_secret",
    "webhook_secrets",
    "client_secret",
    "callback_key",
    "secret_key",
    "api_key",
    "salt",
    "hmac_secret",
    "merchant_key",
    "merchant_secret",
];

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
        for (provider, accounts) in self.account_names() {
            for name in accounts {
                if !is_account_name(&name) {
                    errors.push(format!("providers.{provider}.accounts.{name}: account names are [a-z0-9-]+"));
                }
            }
        }
        // XPay: value formats here; the required keys (secret_key, webhook_secrets) are checked
        // when the adapter is built at startup.
        for (name, account) in &self.providers.xpay.accounts {
            let key = |k: &str| format!("providers.xpay.accounts.{name}.{k}");
            let base = &account.base_url;
            if !base.is_empty() && !url::Url::parse(base).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                errors.push(format!("{}: must be an absolute http(s) URL", key("base_url")));
            }
            if account.webhook_secrets.iter().any(String::is_empty) {
                errors.push(format!("{}: secrets must not be empty", key("webhook_secrets")));
            }
            if account.currencies.is_empty()
                || account.currencies.iter().any(|c| crate::domain::money::Currency::parse(c).is_none())
            {
                errors.push(format!("{}: one or more active upper-case ISO 4217 codes", key("currencies")));
            }
        }
        if self.providers.eximpe.enabled {
            for (name, account) in &self.providers.eximpe.accounts {
                errors.extend(account.problems().into_iter().map(|p| format!("providers.eximpe.accounts.{name}.{p}")));
            }
        }
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

/// Whether `name` is a valid account name.
pub fn is_account_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn redact(value: &mut serde_json::Value) {
    use serde_json::Value;
    if let Value::Object(map) = value {
        for (k, v) in map.iter_mut() {
            if SECRET_KEYS.contains(&k.as_str()) {
                *v = match v {
                    Value::Array(items) => Value::Array(items.iter().map(|_| Value::from("<redacted>")).collect()),
                    Value::String(s) if s.is_empty() => Value::from(""),
                    _ => Value::from("<redacted>"),
                };
            } else if k == "url" {
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
