//! Identifiers minted by paygate.

use std::fmt;
use ulid::Ulid;

/// A payment id: `pay_` followed by a 26-character upper-case ULID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentId(String);

const PREFIX: &str = "pay_";

impl PaymentId {
    /// Mints a new, time-ordered payment id.
    pub fn new() -> Self {
        Self(format!("{PREFIX}{}", Ulid::new()))
    }

    /// Parses an id; `None` when it is not of the `pay_<ULID>` form.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(PREFIX)?;
        if rest.len() != 26 || !rest.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) {
            return None;
        }
        Ulid::from_string(rest).ok()?;
        Some(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PaymentId {
    fn default() -> Self {
        Self::new()
    }
}

impl serde::Serialize for PaymentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for PaymentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("not a payment id (pay_ + ULID)"))
    }
}

impl PartialEq<String> for PaymentId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A caller's idempotency key: at most 255 printable ASCII characters, checked by
/// [`crate::domain::NewCheckout::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key when it is 1–255 printable ASCII characters.
    pub fn parse(s: &str) -> Option<Self> {
        let valid = !s.is_empty()
            && s.len() <= crate::domain::checkout::MAX_IDEMPOTENCY_KEY
            && s.bytes().all(|b| (0x20..=0x7e).contains(&b));
        valid.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A fresh prefixed ULID, e.g. `evt_01J…` for event ids.
pub fn prefixed_ulid(prefix: &str) -> String {
    format!("{prefix}{}", Ulid::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_round_trip() {
        let id = PaymentId::new();
        assert_eq!(id.as_str().len(), 30);
        assert_eq!(PaymentId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "pay_",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "pay_01arz3ndektsv4rrffq69g5fav",
            "pay_01ARZ3NDEKTSV4RRFFQ69G5FA",
            "pay_01ARZ3NDEKTSV4RRFFQ69G5FAVX",
            "pay_01ARZ3NDEKTSV4RRFFQ69G5FAU", // U is not Crockford base32
            "pi_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        ] {
            assert!(PaymentId::parse(bad).is_none(), "{bad}");
        }
        assert!(PaymentId::parse("pay_01ARZ3NDEKTSV4RRFFQ69G5FAV").is_some());
    }
}
