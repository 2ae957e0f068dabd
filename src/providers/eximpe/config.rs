//! The `[providers.eximpe]` account configuration.

use crate::config::Secret;
use crate::providers::account::{Required, check_base_url, check_set};
use serde::{Deserialize, Serialize};

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
    #[serde(deserialize_with = "crate::config::lenient::parse_opt", skip_serializing_if = "Option::is_none")]
    pub session_ttl_secs: Option<u64>,
    /// `X-API-Version` header; empty = not sent.
    pub api_version: String,
    /// Mode of EximPe's JS SDK on our checkout page: `sandbox` | `production`; empty = `production`
    /// when `base_url` is `https://api.eximpe.com`, else `sandbox`.
    pub sdk_mode: String,
}

impl crate::providers::AccountConfig for EximpeAccount {
    /// What makes this account unusable, each as `key: reason`.
    fn problems(&self) -> Vec<String> {
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
