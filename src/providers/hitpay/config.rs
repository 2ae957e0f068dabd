//! The `[providers.hitpay]` account configuration.

use crate::config::Secret;
use crate::providers::account::{Required, check_base_url, check_set};
use serde::{Deserialize, Serialize};

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

impl crate::providers::AccountConfig for HitpayAccount {
    /// What makes this account unusable, each as `key: reason` (never a value).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_base_url(&mut problems, &self.base_url, Required::Yes);
        check_set(&mut problems, &[("api_key", self.api_key.expose()), ("salt", self.salt.expose())]);
        if !matches!(self.create_content_type.as_str(), "" | "form" | "json") {
            problems.push("create_content_type: must be `form` or `json`".to_owned());
        }
        problems
    }
}
