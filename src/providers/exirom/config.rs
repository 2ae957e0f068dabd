//! The `[providers.exirom]` account configuration.

use std::collections::BTreeMap;

use crate::config::Secret;
use crate::providers::account::{Required, check_base_url, check_set};
use serde::{Deserialize, Serialize};

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
    #[serde(deserialize_with = "crate::config::lenient::list")]
    pub callback_amount_formats: Vec<String>,
    /// Lifetime assumed for an auth token whose JWT carries no `exp`; unset = 30 days (documented).
    #[serde(deserialize_with = "crate::config::lenient::parse_opt", skip_serializing_if = "Option::is_none")]
    pub token_lifetime_secs: Option<u64>,
}

impl crate::providers::AccountConfig for ExiromAccount {
    /// What makes this account unusable, each as `key: reason` (never a value).
    fn problems(&self) -> Vec<String> {
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
