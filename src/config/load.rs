//! Layering: defaults < TOML file (`PAYGATE_CONFIG`) < `DATABASE_URL` < `PAYGATE_*` env.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::Config;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("{key}: cannot read {path}: {source}")]
    ReadSecretFile { key: String, path: String, source: std::io::Error },
    #[error("{0}: both the key and its `_file` variant are set")]
    BothKeyAndFile(String),
    #[error("environment variable {0}: not a valid config path")]
    BadEnvKey(String),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{}", .0.join("; "))]
    Rules(Vec<String>),
}

const ENV_PREFIX: &str = "PAYGATE_";
const CONFIG_PATH_VAR: &str = "PAYGATE_CONFIG";

/// Which command the configuration is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `serve` and `check-config`: every section is read and every rule applies.
    Serve,
    /// `migrate`: only `[database]` and `[telemetry]` are read and checked. The other sections
    /// must still be known section names, but their contents (provider credentials, their
    /// `_file`s, listen addresses) are neither read nor checked: migrating needs none of them.
    Migrate,
}

/// Sections `paygate migrate` reads.
const MIGRATE_SECTIONS: &[&str] = &["database", "telemetry"];

/// Loads the configuration from the process environment and the file it names.
pub fn load() -> Result<Config, ConfigError> {
    load_scoped(Scope::Serve)
}

/// Loads what `paygate migrate` needs from the same sources as [`load`]: the `[database]` and
/// `[telemetry]` sections, checked as strictly as for `serve`; the other sections' contents are
/// ignored (so a migration job needs no provider credentials).
pub fn load_for_migrate() -> Result<Config, ConfigError> {
    load_scoped(Scope::Migrate)
}

fn load_scoped(scope: Scope) -> Result<Config, ConfigError> {
    let file = std::env::var_os(CONFIG_PATH_VAR).map(PathBuf::from);
    let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    load_layers(file.as_deref(), env, scope)
}

/// Loads from an explicit file path and set of environment variables.
pub fn load_from(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
    load_layers(file, env, Scope::Serve)
}

/// [`load_for_migrate`] from an explicit file path and set of environment variables.
pub fn load_from_for_migrate(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    load_layers(file, env, Scope::Migrate)
}

fn load_layers(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    scope: Scope,
) -> Result<Config, ConfigError> {
    let mut tree = Value::Object(Map::new());
    if let Some(path) = file {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.into(), source })?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::ParseFile { path: path.into(), message: e.message().to_owned() })?;
        let mut layer = serde_json::to_value(table)
            .map_err(|e| ConfigError::ParseFile { path: path.into(), message: e.to_string() })?;
        narrow(&mut layer, scope);
        resolve_files(&mut layer, "")?;
        merge(&mut tree, layer);
    }

    let mut env_layer = Value::Object(Map::new());
    let mut database_url = None;
    for (key, value) in env {
        if key == "DATABASE_URL" {
            database_url = Some(value);
            continue;
        }
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else { continue };
        if key == CONFIG_PATH_VAR {
            continue;
        }
        let path = env_path(rest).ok_or_else(|| ConfigError::BadEnvKey(key.clone()))?;
        insert_path(&mut env_layer, &path, value).map_err(|()| ConfigError::BadEnvKey(key.clone()))?;
    }
    if let Some(url) = database_url {
        let layer = serde_json::json!({ "database": { "url": url } });
        merge(&mut tree, layer);
    }
    narrow(&mut env_layer, scope);
    resolve_files(&mut env_layer, "")?;
    merge(&mut tree, env_layer);

    let mut config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
        let path = e.path().to_string();
        // serde's messages quote the offending value: `Secret` fields never do; the database URL
        // may carry a password.
        let secret = path == "database.url";
        let message = if secret { "invalid value (not shown: secret)".to_owned() } else { e.inner().to_string() };
        ConfigError::Invalid { path, message }
    })?;
    if scope == Scope::Migrate {
        let problems = config.database.problems();
        return if problems.is_empty() { Ok(config) } else { Err(ConfigError::Rules(problems)) };
    }
    if config.providers.sandbox.enabled {
        config.providers.sandbox.accounts.entry("default".into()).or_default();
    }
    config.validate().map_err(ConfigError::Rules)?;
    Ok(config)
}

/// For [`Scope::Migrate`], empties every section of a layer that `migrate` does not read, before
/// its `_file`s are resolved. Section names stay, so an unknown one is still an error.
fn narrow(layer: &mut Value, scope: Scope) {
    if scope != Scope::Migrate {
        return;
    }
    if let Value::Object(sections) = layer {
        for (name, section) in sections.iter_mut() {
            if !MIGRATE_SECTIONS.contains(&name.as_str()) && section.is_object() {
                *section = Value::Object(Map::new());
            }
        }
    }
}

/// `SERVER__GRPC_ADDR` → `["server", "grpc_addr"]`; in an account-name segment `_` stands for `-`.
fn env_path(rest: &str) -> Option<Vec<String>> {
    let mut segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if segments.iter().any(String::is_empty) {
        return None;
    }
    if segments.len() > 3 && segments[0] == "providers" && segments[2] == "accounts" {
        segments[3] = segments[3].replace('_', "-");
    }
    if segments.len() > 2 && segments[0] == "auth" && segments[1] == "callers" {
        segments[2] = segments[2].replace('_', "-");
    }
    Some(segments)
}

fn insert_path(root: &mut Value, path: &[String], value: String) -> Result<(), ()> {
    let mut node = root;
    for (i, seg) in path.iter().enumerate() {
        let map = node.as_object_mut().ok_or(())?;
        if i + 1 == path.len() {
            if map.contains_key(seg) {
                return Err(());
            }
            map.insert(seg.clone(), Value::String(value));
            return Ok(());
        }
        node = map.entry(seg.clone()).or_insert_with(|| Value::Object(Map::new()));
    }
    Err(())
}

/// Deep merge: values in `top` win; tables merge key by key.
fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

/// Replaces every `<key>_file = "path"` in one layer by `<key> = <file content>` (one trailing
/// newline removed). Both in the same layer is an error.
fn resolve_files(node: &mut Value, prefix: &str) -> Result<(), ConfigError> {
    let Value::Object(map) = node else { return Ok(()) };
    let file_keys: Vec<String> = map.keys().filter(|k| k.ends_with("_file") && k.len() > 5).cloned().collect();
    for file_key in file_keys {
        let key = file_key.trim_end_matches("_file").to_owned();
        let full = format!("{prefix}{key}");
        if map.contains_key(&key) {
            return Err(ConfigError::BothKeyAndFile(full));
        }
        let Some(Value::String(path)) = map.remove(&file_key) else {
            return Err(ConfigError::Invalid {
                path: format!("{prefix}{file_key}"),
                message: "must be a file path".into(),
            });
        };
        let mut content = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadSecretFile {
            key: full.clone(),
            path: path.clone(),
            source,
        })?;
        if content.ends_with('\n') {
            content.pop();
        }
        map.insert(key, Value::String(content));
    }
    for (k, v) in map.iter_mut() {
        resolve_files(v, &format!("{prefix}{k}."))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn file(content: &str) -> tempfile_like::TempFile {
        tempfile_like::TempFile::new(content)
    }

    /// A tiny temp-file helper (no extra crate needed for tests).
    mod tempfile_like {
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn new(content: &str) -> Self {
                let path = std::env::temp_dir().join(format!("paygate-cfg-{}", ulid::Ulid::new()));
                let mut f = std::fs::File::create(&path).expect("create temp file");
                std::io::Write::write_all(&mut f, content.as_bytes()).expect("write temp file");
                Self(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_have_the_sandbox_default_account() {
        let c = load_from(None, env(&[])).unwrap();
        assert_eq!(c.server.grpc_addr, "0.0.0.0:50051");
        assert_eq!(c.database.max_connections, 10);
        assert!(c.providers.sandbox.accounts.contains_key("default"));
    }

    #[test]
    fn precedence_env_over_database_url_over_file() {
        let f = file(
            "[database]\nurl = \"postgres://file/db\"\nmax_connections = 3\n[server]\nhttp_addr = \"127.0.0.1:1\"\n",
        );
        let c = load_from(Some(&f.0), env(&[("DATABASE_URL", "postgres://dburl/db")])).unwrap();
        assert_eq!(c.database.url, "postgres://dburl/db");
        assert_eq!(c.database.max_connections, 3);
        assert_eq!(c.server.http_addr, "127.0.0.1:1");
        let c = load_from(
            Some(&f.0),
            env(&[
                ("DATABASE_URL", "postgres://dburl/db"),
                ("PAYGATE_DATABASE__URL", "postgres://env/db"),
                ("PAYGATE_DATABASE__MAX_CONNECTIONS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(c.database.url, "postgres://env/db");
        assert_eq!(c.database.max_connections, 7);
    }

    #[test]
    fn env_creates_accounts_with_dashes_and_lists() {
        let c = load_from(
            None,
            env(&[
                ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__MY_SHOP__SECRET_KEY", "sk_test_1"),
                ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__MY_SHOP__WEBHOOK_SECRETS", " a , b ,c"),
                ("PAYGATE_PROVIDERS__SANDBOX__ENABLED", "false"),
            ]),
        )
        .unwrap();
        let acct = &c.providers.xpay.accounts["my-shop"];
        assert_eq!(acct.secret_key.expose(), "sk_test_1");
        assert_eq!(acct.webhook_secrets.iter().map(|s| s.expose()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(!c.providers.sandbox.enabled);
        assert!(c.providers.sandbox.accounts.is_empty());
    }

    #[test]
    fn reconciler_settings_from_file_and_env() {
        let f = file("[reconciler]\nschedule_secs = [30, 120]\ngrace_secs = 600\n");
        let c = load_from(Some(&f.0), env(&[("PAYGATE_RECONCILER__SCHEDULE_SECS", "10, 20,40")])).unwrap();
        assert_eq!(c.reconciler.schedule_secs, vec![10, 20, 40]);
        assert_eq!(c.reconciler.grace_secs, 600);
        assert_eq!(c.reconciler.check_concurrency, 4);
        assert_eq!(c.reconciler.check_rate_per_sec, 5);
        let bad = load_from(None, env(&[("PAYGATE_RECONCILER__SCHEDULE_SECS", "60,x")]));
        assert!(bad.unwrap_err().to_string().contains("schedule_secs"));
        let decreasing = load_from(None, env(&[("PAYGATE_RECONCILER__SCHEDULE_SECS", "60,30")]));
        assert!(decreasing.unwrap_err().to_string().contains("reconciler.schedule_secs"));
        let zero = load_from(None, env(&[("PAYGATE_RECONCILER__CHECK_RATE_PER_SEC", "0")]));
        assert!(zero.unwrap_err().to_string().contains("reconciler.check_rate_per_sec"));
    }

    #[test]
    fn database_timeout_and_retention_settings() {
        let c = load_from(None, env(&[])).unwrap();
        assert_eq!(c.database.acquire_timeout_ms, 2000);
        let r = &c.retention;
        assert_eq!(
            (r.idempotency_days, r.callback_receipts_days, r.rejected_callbacks_days, r.interval_secs),
            (30, 30, 7, 3600)
        );
        let f = file("[database]\nacquire_timeout_ms = 500\n[retention]\nidempotency_days = 10\n");
        let c = load_from(Some(&f.0), env(&[("PAYGATE_RETENTION__REJECTED_CALLBACKS_DAYS", "2")])).unwrap();
        assert_eq!(c.database.acquire_timeout_ms, 500);
        assert_eq!((c.retention.idempotency_days, c.retention.rejected_callbacks_days), (10, 2));
        for key in [
            "DATABASE__ACQUIRE_TIMEOUT_MS",
            "RETENTION__IDEMPOTENCY_DAYS",
            "RETENTION__CALLBACK_RECEIPTS_DAYS",
            "RETENTION__REJECTED_CALLBACKS_DAYS",
            "RETENTION__INTERVAL_SECS",
        ] {
            let e = load_from(None, env(&[(&format!("PAYGATE_{key}"), "0")])).unwrap_err().to_string();
            assert!(e.contains(&key.to_lowercase().replace("__", ".")) && e.contains("at least 1"), "{e}");
        }
        let e = load_from(None, env(&[("PAYGATE_RETENTION__KEEP_DAYS", "1")])).unwrap_err().to_string();
        assert!(e.contains("keep_days"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let f = file("[providers.sandbox.accounts.default]\nwebhook_secert = \"x\"\n");
        let e = load_from(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("webhook_secert"), "{e}");
        let e = load_from(None, env(&[("PAYGATE_SERVER__GRPC_ADRR", "x")])).unwrap_err().to_string();
        assert!(e.contains("grpc_adrr"), "{e}");
    }

    #[test]
    fn secret_files_strip_one_newline_and_conflict_with_the_key() {
        let secret = file("s3cret\n\n");
        let path = secret.0.display().to_string();
        let c = load_from(None, env(&[("PAYGATE_PROVIDERS__SANDBOX__ACCOUNTS__DEFAULT__WEBHOOK_SECRET_FILE", &path)]))
            .unwrap();
        assert_eq!(
            c.providers.sandbox.accounts["default"].webhook_secret.as_ref().map(|s| s.expose()),
            Some("s3cret\n")
        );
        let url = file("postgres://fromfile/db\n");
        let f = file(&format!("[database]\nurl_file = \"{}\"\n", url.0.display()));
        assert_eq!(load_from(Some(&f.0), env(&[])).unwrap().database.url, "postgres://fromfile/db");
        let both = file(&format!("[database]\nurl = \"x\"\nurl_file = \"{}\"\n", url.0.display()));
        assert!(
            matches!(load_from(Some(&both.0), env(&[])), Err(ConfigError::BothKeyAndFile(k)) if k == "database.url")
        );
    }

    #[test]
    fn redacts_secrets_in_check_config_output() {
        let c = load_from(
            None,
            env(&[
                ("PAYGATE_PROVIDERS__SANDBOX__ACCOUNTS__DEFAULT__WEBHOOK_SECRET", "topsecret"),
                ("PAYGATE_DATABASE__URL", "postgres://u:hunter2@h/db"),
            ]),
        )
        .unwrap();
        let out = c.to_redacted_toml();
        assert!(!out.contains("topsecret") && !out.contains("hunter2"), "{out}");
        assert!(out.contains("webhook_secret = \"<redacted>\""), "{out}");
    }

    #[test]
    fn rule_violations_are_reported() {
        let e = load_from(
            None,
            env(&[
                ("PAYGATE_SERVER__GRPC_ADDR", "nope"),
                ("PAYGATE_PROVIDERS__SANDBOX__ACCOUNTS__BAD!__WEBHOOK_SECRET", "x"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("server.grpc_addr"), "{e}");
        assert!(e.contains("providers.sandbox.accounts.bad!"), "{e}");
    }

    #[test]
    fn migrate_on_start_defaults_to_true_and_parses_from_env() {
        assert!(load_from(None, env(&[])).unwrap().database.migrate_on_start);
        let c = load_from(None, env(&[("PAYGATE_DATABASE__MIGRATE_ON_START", "false")])).unwrap();
        assert!(!c.database.migrate_on_start);
        let f = file("[database]\nmigrate_on_start = false\n");
        assert!(!load_from(Some(&f.0), env(&[])).unwrap().database.migrate_on_start);
    }

    #[test]
    fn migrate_reads_only_the_database_and_telemetry_sections() {
        // Provider credentials that are missing or unreadable, and serve-only rules, do not matter
        // to `migrate`; `serve` still refuses the same sources.
        let f = file(
            "[server]\ngrpc_addr = \"nope\"\n[providers.xpay.accounts.eg]\nsecret_key_file = \"/nonexistent/k\"\n",
        );
        let sources = env(&[
            ("DATABASE_URL", "postgres://db/paygate"),
            ("PAYGATE_PROVIDERS__HITPAY__ACCOUNTS__SG__API_KEY_FILE", "/nonexistent/api_key"),
            ("PAYGATE_DATABASE__MAX_CONNECTIONS", "1"),
            ("PAYGATE_TELEMETRY__LOG_FORMAT", "json"),
        ]);
        let c = load_from_for_migrate(Some(&f.0), sources.clone()).unwrap();
        assert_eq!(c.database.url, "postgres://db/paygate");
        assert_eq!(c.database.max_connections, 1);
        assert_eq!(c.telemetry.log_format, "json");
        assert!(c.providers.xpay.accounts.is_empty() && c.providers.hitpay.accounts.is_empty());
        assert!(load_from(Some(&f.0), sources).is_err());
        // Its own sections stay strict, and section names are still checked.
        let e = load_from_for_migrate(None, env(&[("PAYGATE_DATABASE__URL_FLIE", "/x")])).unwrap_err().to_string();
        assert!(e.contains("url_flie"), "{e}");
        let e =
            load_from_for_migrate(None, env(&[("PAYGATE_DATABSE__URL", "postgres://db/x")])).unwrap_err().to_string();
        assert!(e.contains("databse"), "{e}");
        let e =
            load_from_for_migrate(None, env(&[("PAYGATE_DATABASE__MAX_CONNECTIONS", "0")])).unwrap_err().to_string();
        assert!(e.contains("database.max_connections"), "{e}");
        let e = load_from_for_migrate(None, env(&[("PAYGATE_DATABASE__URL_FILE", "/nonexistent/url")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.url"), "{e}");
    }

    #[test]
    fn secret_values_never_appear_in_errors_or_output() {
        let f = file("[providers.xpay.accounts.default]\nsecret_key = 12345678\n");
        let e = load_from(Some(&f.0), env(&[])).unwrap_err().to_string();
        assert!(e.contains("secret_key") && !e.contains("12345678"), "{e}");
        for url in ["postgres://app:hunter2@db/paygate", "postgres://app@db/paygate?sslmode=require&password=hunter2"] {
            let c = load_from(None, env(&[("DATABASE_URL", url)])).unwrap();
            let out = c.to_redacted_toml();
            assert!(!out.contains("hunter2") && out.contains("url = \"<redacted>\""), "{out}");
        }
        let c = load_from(None, env(&[("DATABASE_URL", "postgres://app@db/paygate?sslmode=require")])).unwrap();
        assert!(c.to_redacted_toml().contains("postgres://app@db/paygate?sslmode=require"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        const KEYS: &[&str] = &[
            "PAYGATE_DATABASE__ACQUIRE_TIMEOUT_MS",
            "PAYGATE_DATABASE__MAX_CONNECTIONS",
            "PAYGATE_RETENTION__IDEMPOTENCY_DAYS",
            "PAYGATE_RETENTION__INTERVAL_SECS",
            "PAYGATE_RECONCILER__SCHEDULE_SECS",
            "PAYGATE_SERVER__GRPC_ADDR",
            "PAYGATE_PROVIDERS__SANDBOX__ENABLED",
            "PAYGATE_PROVIDERS__XPAY__ACCOUNTS__A__WEBHOOK_SECRETS",
            "PAYGATE_PROVIDERS__EXIROM__ACCOUNTS__B__METHODS",
            "PAYGATE_EVENTS__STREAM_BUFFER",
            "DATABASE_URL",
        ];

        fn var() -> impl Strategy<Value = (String, String)> {
            let key = prop_oneof![
                prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
                "PAYGATE_[A-Z_]{0,30}",
                "PAYGATE_[A-Z]{1,8}(__[A-Z_]{0,10}){0,4}",
            ];
            let value = prop_oneof![".{0,40}", "[0-9]{1,25}", "-[0-9]{1,5}", Just(String::new()), "[a-z0-9, ]{0,20}"];
            (key, value)
        }

        proptest! {
            #![proptest_config(crate::providers::proptests::config())]

            /// Arbitrary environments and files: the loader answers Ok or an error, never panics,
            /// and what it accepts passes validation.
            #[test]
            fn any_environment_loads_or_is_refused(vars in prop::collection::vec(var(), 0..6)) {
                if let Ok(c) = load_from(None, vars) {
                    prop_assert!(c.validate().is_ok());
                    prop_assert!(c.database.acquire_timeout_ms >= 1 && c.retention.interval_secs >= 1);
                }
            }

            #[test]
            fn any_file_loads_or_is_refused(text in prop_oneof![".{0,200}", "(\\[[a-z.]{1,20}\\]\n([a-z_]{1,20} = [0-9a-z\"]{1,8}\n){0,3}){0,3}"]) {
                let f = file(&text);
                let _ = load_from(Some(&f.0), Vec::new());
            }
        }
    }
}
