//! The binary's `check-config` subcommand: exit codes, redaction, and reasons.

use std::process::Command;

fn check_config(env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paygate"));
    cmd.arg("check-config");
    for (k, _) in std::env::vars() {
        if k.starts_with("PAYGATE_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run paygate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn valid_config_prints_redacted_toml() {
    let (code, stdout, _) = check_config(&[
        ("PAYGATE_PROVIDERS__SANDBOX__ACCOUNTS__DEFAULT__WEBHOOK_SECRET", "super-secret-value"),
        ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__EG_SHOP__SECRET_KEY", "sk_test_abc"),
        ("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__EG_SHOP__WEBHOOK_SECRETS", "whsec_one,whsec_two"),
        ("DATABASE_URL", "postgres://app:hunter2@db:5432/paygate"),
    ]);
    assert_eq!(code, 0);
    for secret in ["super-secret-value", "sk_test_abc", "hunter2", "whsec_one", "whsec_two"] {
        assert!(!stdout.contains(secret), "{secret} in {stdout}");
    }
    assert!(stdout.contains("<redacted>"));
    assert!(stdout.contains("[providers.xpay.accounts.eg-shop]"), "{stdout}");
    let parsed: toml::Table = toml::from_str(&stdout).expect("output is TOML");
    assert!(parsed.contains_key("server"));
}

#[test]
fn an_account_startup_would_refuse_is_refused_by_check_config_too() {
    let (code, _, stderr) = check_config(&[("PAYGATE_PROVIDERS__XPAY__ACCOUNTS__EG_SHOP__SECRET_KEY", "sk_test_abc")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("providers.xpay.accounts.eg-shop.webhook_secrets"), "{stderr}");
    assert!(!stderr.contains("sk_test_abc"), "{stderr}");
}

#[test]
fn invalid_config_exits_1_naming_the_key() {
    let (code, _, stderr) = check_config(&[("PAYGATE_SERVER__GRPC_ADRESS", "0.0.0.0:1")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("grpc_adress"), "{stderr}");
    let (code, _, stderr) = check_config(&[("PAYGATE_DATABASE__MAX_CONNECTIONS", "many")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("max_connections"), "{stderr}");
    let (code, _, stderr) = check_config(&[("PAYGATE_CONFIG", "/nonexistent/paygate.toml")]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/paygate.toml"), "{stderr}");
}
