//! The `[providers.sandbox]` account configuration.

use crate::config::Secret;
use serde::{Deserialize, Serialize};

/// The built-in sandbox provider's account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxAccount {
    /// Signs the page's callbacks; generated once and stored in Postgres when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<Secret>,
    #[serde(deserialize_with = "crate::config::lenient::parse")]
    pub webhook_tolerance_secs: u64,
}

impl Default for SandboxAccount {
    fn default() -> Self {
        Self { webhook_secret: None, webhook_tolerance_secs: 300 }
    }
}

impl crate::providers::AccountConfig for SandboxAccount {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.webhook_secret.as_ref().is_some_and(|s| s.expose().trim().is_empty()) {
            problems.push("webhook_secret: must not be blank (leave it unset to generate one)".to_owned());
        }
        if self.webhook_tolerance_secs == 0 {
            problems.push("webhook_tolerance_secs: must be at least 1".to_owned());
        }
        problems
    }
}
