//! The provider registry: which providers and accounts exist, built once from configuration.

use std::collections::HashMap;
use std::sync::Arc;

use super::Provider;

/// Why a (provider, account) pair could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Unknown name, disabled, not built yet or without accounts.
    #[error("provider not found")]
    ProviderNotFound,
    #[error("account not found")]
    AccountNotFound,
}

/// Every usable (provider, account).
#[derive(Debug, Default, Clone)]
pub struct Registry {
    providers: HashMap<String, HashMap<String, Arc<dyn Provider>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an account of any provider, of the list or an embedder's own: it resolves by its
    /// [`Provider::name`].
    pub fn add(&mut self, provider: Arc<dyn Provider>) {
        let name = provider.name().to_owned();
        self.providers.entry(name).or_default().insert(provider.account().to_owned(), provider);
    }

    /// Resolves a provider account; an empty account means `default`.
    pub fn resolve(&self, provider: &str, account: &str) -> Result<Arc<dyn Provider>, LookupError> {
        let accounts = self.providers.get(provider).filter(|a| !a.is_empty()).ok_or(LookupError::ProviderNotFound)?;
        let account = if account.is_empty() { "default" } else { account };
        accounts.get(account).cloned().ok_or(LookupError::AccountNotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_distinguishes_not_found_kinds() {
        let mut r = Registry::new();
        r.add(Arc::new(crate::providers::sandbox::Sandbox::new("default".into(), "s".into(), 300, "http://x".into())));
        assert_eq!(r.resolve("sandbox", "").unwrap().account(), "default");
        assert_eq!(r.resolve("sandbox", "default").unwrap().name(), "sandbox");
        assert_eq!(r.resolve("sandbox", "shop-2").unwrap_err(), LookupError::AccountNotFound);
        assert_eq!(r.resolve("xpay", "default").unwrap_err(), LookupError::ProviderNotFound);
        assert_eq!(r.resolve("paypal", "").unwrap_err(), LookupError::ProviderNotFound);
    }
}
