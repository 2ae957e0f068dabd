//! The `[providers.xstak]` account configuration.

use crate::config::Secret;
use crate::providers::account::{Required, check_base_url, check_set};
use serde::{Deserialize, Serialize};

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
    #[serde(deserialize_with = "crate::config::lenient::parse")]
    pub status_lookup: bool,
    /// Unit of `amount` on the wire: `major` (default, the document's `5` PKR) or `minor` (paisa).
    pub amount_unit: String,
    /// Local checkout lifetime (XStak documents none); the request's `ttl` wins when given.
    #[serde(deserialize_with = "crate::config::lenient::parse_opt", skip_serializing_if = "Option::is_none")]
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

impl crate::providers::AccountConfig for XstakAccount {
    /// What makes this account unusable, each as `key: reason`. Never includes a value.
    fn problems(&self) -> Vec<String> {
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
