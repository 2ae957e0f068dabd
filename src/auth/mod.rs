//! Caller authentication and authorization for the gRPC API.
//!
//! A caller is a configured calling service (`[auth.callers.<name>]`). It proves who it is with a
//! bearer token (compared by SHA-256 digest in constant time) and/or a client certificate (mTLS:
//! the subject CN or first DNS SAN names the caller); both, when present, must name the same
//! caller. Its grant is a set of [`Permission`]s and optionally a list of providers. With no
//! caller configured, authentication is off and every call is [`Access::Open`].

mod cert;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, CallerConfig, TlsConfig};
use crate::error::ApiError;

pub use cert::{certificate_name, server_tls_config};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    Create,
    Read,
    Watch,
    Verify,
    Cancel,
    List,
    /// Read, watch and list every payment, not only the caller's own.
    ReadAll,
}

impl Permission {
    const ALL: [Permission; 7] = [
        Permission::Create,
        Permission::Read,
        Permission::Watch,
        Permission::Verify,
        Permission::Cancel,
        Permission::List,
        Permission::ReadAll,
    ];

    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Create => "create",
            Permission::Read => "read",
            Permission::Watch => "watch",
            Permission::Verify => "verify",
            Permission::Cancel => "cancel",
            Permission::List => "list",
            Permission::ReadAll => "read_all",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// A configured caller's identity and grant.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    name: String,
    permissions: BTreeSet<Permission>,
    /// `None` = every provider.
    providers: Option<BTreeSet<String>>,
    token_digests: Vec<[u8; 32]>,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Digests stay out of debug output too.
        f.debug_struct("Grant")
            .field("name", &self.name)
            .field("permissions", &self.permissions)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl Grant {
    /// The caller's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    fn allows_provider(&self, provider: &str) -> bool {
        self.providers.as_ref().is_none_or(|p| p.contains(provider))
    }
}

/// Who is calling, as far as one request is concerned.
#[derive(Debug, Clone)]
pub enum Access {
    /// Authentication is off: everything is allowed, payments have no owner.
    Open,
    /// An authenticated caller.
    Caller(Arc<Grant>),
}

/// Which payments a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadScope {
    /// Every payment (authentication off, or `read_all`).
    All,
    /// Only payments created by this caller.
    Owner(String),
}

impl ReadScope {
    /// Whether a payment owned by `owner` (`None`: created while authentication was off) is visible.
    pub fn sees(&self, owner: Option<&str>) -> bool {
        match self {
            ReadScope::All => true,
            ReadScope::Owner(name) => owner == Some(name.as_str()),
        }
    }

    /// The owner to filter on, `None` for every payment.
    pub fn owner(&self) -> Option<&str> {
        match self {
            ReadScope::All => None,
            ReadScope::Owner(name) => Some(name),
        }
    }
}

impl Access {
    /// The caller's name (`None` when authentication is off).
    pub fn caller(&self) -> Option<&str> {
        match self {
            Access::Open => None,
            Access::Caller(grant) => Some(grant.name()),
        }
    }

    /// `PERMISSION_DENIED` / `CALLER_NOT_ALLOWED` unless the caller holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        match self {
            Access::Caller(grant) if !grant.has(permission) => Err(ApiError::CallerNotAllowed),
            _ => Ok(()),
        }
    }

    /// Like [`Access::require`] for reads: `permission` or `read_all` passes.
    pub fn require_read(&self, permission: Permission) -> Result<(), ApiError> {
        match self {
            Access::Caller(grant) if !grant.has(permission) && !grant.has(Permission::ReadAll) => {
                Err(ApiError::CallerNotAllowed)
            }
            _ => Ok(()),
        }
    }

    /// `PERMISSION_DENIED` / `CALLER_NOT_ALLOWED` unless `provider` is in the caller's grant.
    pub fn require_provider(&self, provider: &str) -> Result<(), ApiError> {
        match self {
            Access::Caller(grant) if !grant.allows_provider(provider) => Err(ApiError::CallerNotAllowed),
            _ => Ok(()),
        }
    }

    /// The payments this caller may read, watch and list.
    pub fn read_scope(&self) -> ReadScope {
        match self {
            Access::Caller(grant) if !grant.has(Permission::ReadAll) => ReadScope::Owner(grant.name.clone()),
            _ => ReadScope::All,
        }
    }

    /// Whether the caller may read a payment owned by `owner` of `provider`.
    pub fn may_read(&self, owner: Option<&str>, provider: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Caller(grant) => {
                grant.has(Permission::ReadAll)
                    || (grant.has(Permission::Read) && owner == Some(grant.name()) && grant.allows_provider(provider))
            }
        }
    }
}

/// The configured callers; decides who a request comes from.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    callers: BTreeMap<String, Arc<Grant>>,
}

impl Authenticator {
    /// Builds from validated configuration (see [`config_problems`]).
    pub fn new(config: &AuthConfig) -> Self {
        let callers = config.callers.iter().map(|(name, c)| (name.clone(), Arc::new(grant(name, c)))).collect();
        Self { callers }
    }

    /// Whether any caller is configured.
    pub fn enabled(&self) -> bool {
        !self.callers.is_empty()
    }

    /// Identifies the caller of a request from its `authorization` metadata value and the name its
    /// client certificate carries. `UNAUTHENTICATED` when neither names a configured caller, when
    /// a token is malformed or unknown, or when token and certificate name different callers.
    pub fn authenticate(&self, authorization: Option<&[u8]>, certificate: Option<&str>) -> Result<Access, ApiError> {
        if !self.enabled() {
            return Ok(Access::Open);
        }
        let grant = match (authorization, certificate) {
            (Some(value), _) => self.by_token(value).ok_or(ApiError::Unauthenticated)?,
            // A certificate signed by our client CA that names no configured caller is not
            // enough on its own.
            (None, Some(name)) => self.callers.get(name).cloned().ok_or(ApiError::Unauthenticated)?,
            (None, None) => return Err(ApiError::Unauthenticated),
        };
        // A certificate never stands for another caller than the token's.
        if certificate.is_some_and(|name| name != grant.name) {
            return Err(ApiError::Unauthenticated);
        }
        Ok(Access::Caller(grant))
    }

    /// The caller whose token digest matches `Bearer <token>`. Every digest of every caller is
    /// compared (constant time each), so timing does not tell which caller or digest matched.
    fn by_token(&self, authorization: &[u8]) -> Option<Arc<Grant>> {
        let value = std::str::from_utf8(authorization).ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for grant in self.callers.values() {
            for candidate in &grant.token_digests {
                if bool::from(candidate.ct_eq(&digest)) {
                    found = Some(grant.clone());
                }
            }
        }
        found
    }
}

fn grant(name: &str, c: &CallerConfig) -> Grant {
    Grant {
        name: name.to_owned(),
        permissions: c.permissions.iter().filter_map(|p| Permission::parse(p)).collect(),
        providers: c.providers.as_ref().map(|p| p.iter().cloned().collect()),
        token_digests: c.token_sha256.iter().filter_map(|h| parse_digest(h)).collect(),
    }
}

fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digest.trim()).ok()?;
    bytes.try_into().ok()
}

/// Configuration problems of `[auth]` and `server.tls`, for `check-config` and startup.
pub fn config_problems(auth: &AuthConfig, tls: &TlsConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, caller) in &auth.callers {
        let key = format!("auth.callers.{name}");
        if !crate::config::is_account_name(name) {
            problems.push(format!("{key}: caller names are [a-z0-9-]+"));
        }
        if caller.token_sha256.iter().any(|h| parse_digest(h).is_none()) {
            problems.push(format!("{key}.token_sha256: each entry must be 64 hex digits (a SHA-256 digest)"));
        }
        if caller.token_sha256.is_empty() && tls.client_ca.is_empty() {
            problems.push(format!("{key}.token_sha256: at least one token digest (or mTLS with server.tls.client_ca)"));
        }
        for p in &caller.permissions {
            if Permission::parse(p).is_none() {
                let known: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
                problems.push(format!("{key}.permissions: unknown permission `{p}` (known: {})", known.join(", ")));
            }
        }
        for provider in caller.providers.iter().flatten() {
            if !crate::providers::KNOWN_PROVIDERS.contains(&provider.as_str()) {
                problems.push(format!("{key}.providers: unknown provider `{provider}`"));
            }
        }
    }
    let (cert, key) = (!tls.cert.is_empty(), !tls.key.is_empty());
    if cert != key {
        problems.push("server.tls: `cert` and `key` are set together".into());
    }
    if !tls.client_ca.is_empty() && !cert {
        problems.push("server.tls.client_ca: needs server.tls.cert and server.tls.key".into());
    }
    if cert
        && key
        && let Err(e) = server_tls_config(tls)
    {
        problems.push(format!("server.tls: {e}"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    /// (name, tokens, permissions, providers)
    type CallerSpec<'a> = (&'a str, &'a [&'a str], &'a [&'a str], Option<&'a [&'a str]>);

    fn auth(callers: &[CallerSpec<'_>]) -> Authenticator {
        let mut config = AuthConfig::default();
        for (name, tokens, permissions, providers) in callers {
            config.callers.insert(
                (*name).into(),
                CallerConfig {
                    token_sha256: tokens.iter().map(|t| digest(t)).collect(),
                    permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
                    providers: providers.map(|p| p.iter().map(|s| (*s).to_owned()).collect()),
                },
            );
        }
        Authenticator::new(&config)
    }

    #[test]
    fn off_without_callers() {
        let a = Authenticator::new(&AuthConfig::default());
        assert!(matches!(a.authenticate(None, None), Ok(Access::Open)));
        assert!(matches!(a.authenticate(Some(b"Bearer x"), Some("web")), Ok(Access::Open)));
    }

    #[test]
    fn tokens_name_callers_and_every_digest_passes() {
        let a = auth(&[("web", &["old", "new"], &["create"], None), ("ops", &["ops-token"], &["read_all"], None)]);
        for token in ["old", "new"] {
            let header = format!("Bearer {token}");
            assert_eq!(a.authenticate(Some(header.as_bytes()), None).unwrap().caller(), Some("web"));
        }
        assert_eq!(a.authenticate(Some(b"bearer ops-token"), None).unwrap().caller(), Some("ops"));
        for bad in [&b"Bearer nope"[..], b"Basic old", b"Bearer ", b"old", b"Bearer \xff"] {
            assert!(matches!(a.authenticate(Some(bad), None), Err(ApiError::Unauthenticated)), "{bad:?}");
        }
        assert!(matches!(a.authenticate(None, None), Err(ApiError::Unauthenticated)));
    }

    #[test]
    fn certificate_and_token_must_agree() {
        let a = auth(&[("web", &["w"], &["create"], None), ("ops", &["o"], &["read"], None)]);
        assert_eq!(a.authenticate(None, Some("web")).unwrap().caller(), Some("web"));
        assert_eq!(a.authenticate(Some(b"Bearer w"), Some("web")).unwrap().caller(), Some("web"));
        assert!(matches!(a.authenticate(Some(b"Bearer o"), Some("web")), Err(ApiError::Unauthenticated)));
        assert!(matches!(a.authenticate(None, Some("stranger")), Err(ApiError::Unauthenticated)));
        assert!(matches!(a.authenticate(Some(b"Bearer w"), Some("stranger")), Err(ApiError::Unauthenticated)));
    }

    #[test]
    fn grants_limit_permissions_providers_and_reads() {
        let a = auth(&[("web", &["w"], &["create", "read"], Some(&["xpay"])), ("ops", &["o"], &["read_all"], None)]);
        let web = a.authenticate(Some(b"Bearer w"), None).unwrap();
        assert!(web.require(Permission::Create).is_ok());
        assert!(matches!(web.require(Permission::Watch), Err(ApiError::CallerNotAllowed)));
        assert!(web.require_provider("xpay").is_ok());
        assert!(matches!(web.require_provider("hitpay"), Err(ApiError::CallerNotAllowed)));
        assert_eq!(web.read_scope(), ReadScope::Owner("web".into()));
        assert!(web.may_read(Some("web"), "xpay"));
        assert!(!web.may_read(Some("ops"), "xpay"));
        assert!(!web.may_read(None, "xpay"));
        assert!(!web.may_read(Some("web"), "hitpay"));
        let ops = a.authenticate(Some(b"Bearer o"), None).unwrap();
        assert_eq!(ops.read_scope(), ReadScope::All);
        assert!(ops.require_read(Permission::Watch).is_ok());
        assert!(matches!(ops.require(Permission::Create), Err(ApiError::CallerNotAllowed)));
        assert!(ops.may_read(None, "hitpay"));
        assert!(ReadScope::All.sees(None));
        assert!(!ReadScope::Owner("web".into()).sees(None));
    }

    #[test]
    fn config_problems_are_named() {
        let mut config = AuthConfig::default();
        config.callers.insert(
            "Bad_Name".into(),
            CallerConfig {
                token_sha256: vec!["abc".into()],
                permissions: vec!["create".into(), "refund".into()],
                providers: Some(vec!["paypal".into()]),
            },
        );
        let problems = config_problems(&config, &TlsConfig::default()).join("\n");
        for needle in ["caller names", "64 hex digits", "unknown permission `refund`", "unknown provider `paypal`"] {
            assert!(problems.contains(needle), "{needle} missing from {problems}");
        }
        assert!(!problems.contains("abc"), "digests are not echoed: {problems}");
    }
}
