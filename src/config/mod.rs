//! Configuration: one typed struct, loaded from defaults < TOML file < `DATABASE_URL` < `PAYGATE_*` env.

pub(crate) mod lenient;
mod load;
mod secret;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use load::{ConfigError, load, load_for_migrate, load_from, load_from_for_migrate};
pub use secret::{REDACTED, Secret};

/// The whole service configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub providers: crate::providers::ProvidersConfig,
    pub events: EventsConfig,
    pub reconciler: ReconcilerConfig,
    pub retention: RetentionConfig,
    pub telemetry: TelemetryConfig,
    pub auth: AuthConfig,
}

/// Caller authentication: who may call the gRPC API and what each caller may do. No caller
/// configured = authentication off (every call allowed; a warning at startup).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Calling services by name (`[a-z0-9-]+`).
    pub callers: BTreeMap<String, CallerConfig>,
}

/// One calling service's credentials and grant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallerConfig {
    /// Hex SHA-256 digests of the caller's bearer tokens; any match passes (two during a rotation).
    #[serde(deserialize_with = "lenient::list")]
    pub token_sha256: Vec<String>,
    /// `create`, `read`, `watch`, `verify`, `cancel`, `list`, `read_all`.
    #[serde(deserialize_with = "lenient::list")]
    pub permissions: Vec<String>,
    /// Providers the caller may use; absent = all.
    #[serde(deserialize_with = "lenient::list_opt", skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
}

/// TLS on the gRPC listener; with `client_ca`, client certificates (mTLS) name callers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Server certificate chain, PEM text (or `cert_file`).
    pub cert: String,
    /// Server private key, PEM text (or `key_file`).
    pub key: Secret,
    /// CA certificates that sign client certificates, PEM text (or `client_ca_file`); empty = no mTLS.
    pub client_ca: String,
}

/// How long rows that only serve deduplication and audit are kept (the retention job).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Completed idempotency keys, in days after completion (in-progress keys are never deleted).
    #[serde(deserialize_with = "lenient::parse")]
    pub idempotency_days: u64,
    /// Accepted-callback receipts (deduplication), in days after receipt.
    #[serde(deserialize_with = "lenient::parse")]
    pub callback_receipts_days: u64,
    /// Audit rows of refused callbacks, in days after receipt.
    #[serde(deserialize_with = "lenient::parse")]
    pub rejected_callbacks_days: u64,
    /// How often the retention job runs, in seconds.
    #[serde(deserialize_with = "lenient::parse")]
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { idempotency_days: 30, callback_receipts_days: 30, rejected_callbacks_days: 7, interval_secs: 3600 }
    }
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
    /// How often the sequencer looks for newly committed events when it found none, in ms.
    #[serde(deserialize_with = "lenient::parse")]
    pub sequencer_poll_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention_days: 7,
            prune_interval_secs: 3600,
            stream_buffer: 4096,
            stream_pool_size: 4,
            sequencer_poll_ms: 5,
        }
    }
}

/// Listen addresses and the externally visible URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub grpc_addr: String,
    pub http_addr: String,
    /// Prometheus `GET /metrics` listen address, apart from the public HTTP port; empty = off.
    pub metrics_addr: String,
    /// Base of checkout, callback and return URLs; empty = `http://` + the bound HTTP address.
    pub public_base_url: String,
    /// How long shutdown waits for in-flight requests, in seconds.
    #[serde(deserialize_with = "lenient::parse")]
    pub shutdown_grace_secs: u64,
    /// HTTP/2 streams one gRPC connection may carry at once (each WatchPayments is one).
    #[serde(deserialize_with = "lenient::parse")]
    pub http2_max_concurrent_streams: u32,
    /// TLS for the gRPC listener (off when `cert` is empty).
    pub tls: TlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: "0.0.0.0:50051".into(),
            http_addr: "0.0.0.0:8080".into(),
            metrics_addr: "0.0.0.0:9090".into(),
            public_base_url: String::new(),
            shutdown_grace_secs: 20,
            http2_max_concurrent_streams: 1024,
            tls: TlsConfig::default(),
        }
    }
}

/// PostgreSQL connection settings. `Debug` shows the URL as [`redact_url_password`] does.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
    #[serde(deserialize_with = "lenient::parse")]
    pub max_connections: u32,
    /// Create the database when it does not exist (needs CREATEDB on the server).
    #[serde(deserialize_with = "lenient::parse")]
    pub create_if_missing: bool,
    /// Apply pending migrations when `serve` starts. When false, `serve` applies none and waits
    /// until `paygate migrate` (e.g. a deployment's migration job) has brought the schema up to date.
    #[serde(deserialize_with = "lenient::parse")]
    pub migrate_on_start: bool,
    /// How long a request waits for a pooled connection (including connecting) before it
    /// answers `DATABASE_UNAVAILABLE`, in ms.
    #[serde(deserialize_with = "lenient::parse")]
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/paygate".into(),
            max_connections: 10,
            create_if_missing: true,
            migrate_on_start: true,
            acquire_timeout_ms: 2000,
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("create_if_missing", &self.create_if_missing)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl DatabaseConfig {
    /// What makes these settings unusable, each as `database.<key>: reason` (never a value).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.url.is_empty() {
            problems.push("database.url: must be set".into());
        }
        if self.max_connections == 0 {
            problems.push("database.max_connections: must be at least 1".into());
        }
        if self.acquire_timeout_ms == 0 {
            problems.push("database.acquire_timeout_ms: must be at least 1".into());
        }
        problems
    }

    /// [`DatabaseConfig::acquire_timeout_ms`] as a duration.
    pub fn acquire_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.acquire_timeout_ms.max(1))
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
    /// OTLP/gRPC endpoint for traces; empty = `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` when set, else no export.
    pub otlp_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { log_filter: "info".into(), log_format: "text".into(), otlp_endpoint: String::new() }
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
        let metrics = &self.server.metrics_addr;
        if !metrics.is_empty() && metrics.parse::<std::net::SocketAddr>().is_err() {
            errors
                .push("server.metrics_addr: not a socket address (host:port), or empty for no metrics listener".into());
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
        errors.extend(self.database.problems());
        let t = &self.retention;
        for (key, value) in [
            ("retention.idempotency_days", t.idempotency_days),
            ("retention.callback_receipts_days", t.callback_receipts_days),
            ("retention.rejected_callbacks_days", t.rejected_callbacks_days),
            ("retention.interval_secs", t.interval_secs),
        ] {
            if value == 0 {
                errors.push(format!("{key}: must be at least 1"));
            }
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
        for (provider, accounts) in self.providers.account_names() {
            for name in accounts {
                if !is_account_name(&name) {
                    errors.push(format!("providers.{provider}.accounts.{name}: account names are [a-z0-9-]+"));
                }
            }
        }
        // Every account of every enabled provider, checked as startup will build it.
        errors.extend(self.providers.problems());
        errors.extend(crate::auth::config_problems(&self.auth, &self.server.tls));
        if errors.is_empty() { Ok(()) } else { Err(errors) }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every credential field of the configuration, set: neither `Debug` nor `check-config`'s
    /// TOML shows one.
    #[test]
    fn no_credential_shows_in_debug_or_check_config() {
        let mut config = Config::default();
        config.database.url = "postgres://u:canary-db@127.0.0.1/p".into();
        config.server.tls.key = "canary-tls-key".into();
        let providers = &mut config.providers;
        providers.sandbox.accounts.insert(
            "a".into(),
            crate::providers::sandbox::SandboxAccount {
                webhook_secret: Some("canary-sbx".into()),
                ..Default::default()
            },
        );
        let mut xpay = crate::providers::xpay::XpayAccount::default();
        (xpay.secret_key, xpay.webhook_secrets) = ("canary-xpay".into(), vec!["canary-xpay-wh".into()]);
        providers.xpay.accounts.insert("a".into(), xpay);
        let mut eximpe = crate::providers::eximpe::EximpeAccount::default();
        (eximpe.client_secret, eximpe.callback_key) = ("canary-exi-cs".into(), "canary-exi-cb".into());
        providers.eximpe.accounts.insert("a".into(), eximpe);
        let mut hitpay = crate::providers::hitpay::HitpayAccount::default();
        (hitpay.api_key, hitpay.salt) = ("canary-hp-key".into(), "canary-hp-salt".into());
        providers.hitpay.accounts.insert("a".into(), hitpay);
        let mut xstak = crate::providers::xstak::XstakAccount::default();
        (xstak.api_key, xstak.hmac_secret, xstak.webhook_secret) =
            ("canary-xs-key".into(), "canary-xs-hmac".into(), "canary-xs-wh".into());
        providers.xstak.accounts.insert("a".into(), xstak);
        let mut exirom = crate::providers::exirom::ExiromAccount::default();
        (exirom.merchant_key, exirom.merchant_secret) = ("canary-ex-key".into(), "canary-ex-secret".into());
        providers.exirom.accounts.insert("a".into(), exirom);
        for text in [format!("{config:?}"), config.to_redacted_toml()] {
            assert!(!text.contains("canary"), "{text}");
            assert!(text.contains(REDACTED), "{text}");
        }
    }
}
