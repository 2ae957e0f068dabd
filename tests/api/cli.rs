//! The binary's `check-config` subcommand (exit codes, redaction, reasons) and the client
//! commands `list` and `cancel` against a running server.

use std::process::Command;

use paygate::pb;

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

/// Runs a client command of the binary against `app`; (exit code, stdout, stderr).
async fn client(app: &crate::common::TestApp, args: &[&str]) -> (i32, String, String) {
    let addr = format!("http://{}", app.grpc_addr);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_paygate"));
    cmd.args(args).args(["--addr", &addr]);
    let out = cmd.output().await.expect("run paygate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn list_and_cancel_commands_talk_to_the_server() {
    let app = crate::common::spawn_app().await;
    let first = app.create_payment("cli-1").await;
    let second = app.create_payment("cli-2").await;
    let mut token = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut token, b"tok_operator\n").unwrap();
    let token_path = token.path().to_str().unwrap().to_owned();

    let (code, stdout, stderr) =
        client(&app, &["cancel", &first.id, "--reason", "duplicate order", "--token-file", &token_path]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&first.id) && stdout.contains("CANCELLED"), "{stdout}");
    assert_eq!(app.get_payment(&first.id).await.status(), pb::PaymentStatus::Cancelled);

    let (code, stdout, stderr) = client(&app, &["list", "--page-size", "1", "--token-file", &token_path]).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("STATUS"), "{stdout}");
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[1].starts_with(&second.id), "newest first: {stdout}");
    assert!(stderr.contains("--page-token"), "{stderr}");

    let (code, stdout, _) = client(&app, &["list", "--status", "cancelled", "--provider", "sandbox", "--all"]).await;
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains(&first.id) && !stdout.contains(&second.id), "{stdout}");

    // Refusals and bad flags exit 1 with the reason; a missing token file is named, not guessed.
    let (code, _, stderr) = client(&app, &["cancel", "pay_nope"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("PAYMENT_NOT_FOUND"), "{stderr}");
    let (code, _, stderr) = client(&app, &["list", "--status", "paid"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("unknown status"), "{stderr}");
    let (code, _, stderr) = client(&app, &["list", "--token-file", "/nonexistent/token"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/token"), "{stderr}");
}
