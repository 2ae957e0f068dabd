//! The `[providers.xpay]` account configuration.

use crate::config::Secret;
use crate::providers::account::{Required, check_base_url, check_set};
use serde::{Deserialize, Serialize};

/// XPay (Egypt) account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XpayAccount {
    /// Empty: `https://api.xpay.app` (the same host for test and live keys).
    pub base_url: String,
    pub secret_key: Secret,
    #[serde(deserialize_with = "crate::config::lenient::list_of")]
    pub webhook_secrets: Vec<Secret>,
    #[serde(deserialize_with = "crate::config::lenient::parse_opt", skip_serializing_if = "Option::is_none")]
    pub webhook_tolerance_secs: Option<u64>,
    /// Top-level session field that carries the customer's email; empty: the email is not sent.
    pub customer_email_field: String,
    /// Currencies this account accepts (ISO 4217); only EGP is verified with XPay.
    #[serde(deserialize_with = "crate::config::lenient::list")]
    pub currencies: Vec<String>,
}

impl crate::providers::AccountConfig for XpayAccount {
    /// What makes this account unusable, each as `key: reason` (never a value).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_base_url(&mut problems, &self.base_url, Required::No);
        check_set(&mut problems, &[("secret_key", self.secret_key.expose())]);
        if self.webhook_secrets.is_empty() || self.webhook_secrets.iter().any(|s| s.expose().is_empty()) {
            problems.push("webhook_secrets: at least one, none empty".to_owned());
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
