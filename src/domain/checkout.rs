//! Validation of a checkout request: parse, don't validate. A [`NewCheckout`] is always valid.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ids::IdempotencyKey;
use super::money::{Currency, Money};

/// The raw request as the caller sent it (mirrors `CreateCheckoutRequest`).
#[derive(Debug, Clone, Default)]
pub struct CheckoutInput {
    pub provider: String,
    pub account: String,
    pub merchant_reference: String,
    /// `None` when the caller sent no `amount` message.
    pub amount: Option<(i64, String)>,
    pub customer: Customer,
    pub return_url: String,
    pub cancel_url: String,
    pub payment_methods: Vec<String>,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
    pub idempotency_key: String,
    pub shipping_address: Option<Address>,
    pub line_items: Vec<LineItem>,
    /// Seconds and nanoseconds, as in `google.protobuf.Duration`.
    pub ttl: Option<(i64, i32)>,
}

/// The shopper, as given by the caller. Personal data: never logged.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Customer {
    pub name: String,
    pub email: String,
    pub phone: String,
}

/// A postal address.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Address {
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    pub country: String,
}

/// One line of the order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LineItem {
    pub name: String,
    pub unit_amount_minor: i64,
    pub quantity: u32,
}

/// A validated checkout request.
#[derive(Debug, Clone)]
pub struct NewCheckout {
    pub provider: String,
    /// Never empty: an empty request account reads as `default`.
    pub account: String,
    pub merchant_reference: String,
    pub amount: Money,
    pub customer: Customer,
    pub return_url: String,
    pub cancel_url: String,
    pub payment_methods: Vec<String>,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub shipping_address: Option<Address>,
    pub line_items: Vec<LineItem>,
    pub ttl: Option<Duration>,
}

/// The first invalid field, as its proto path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field `{field}`: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: &'static str,
}

fn invalid(field: impl Into<String>, reason: &'static str) -> ValidationError {
    ValidationError { field: field.into(), reason }
}

/// Limits from the public contract.
pub const MAX_REFERENCE_CHARS: usize = 64;
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
pub const MAX_METADATA_ENTRIES: usize = 50;
pub const MAX_METADATA_KEY_CHARS: usize = 40;
pub const MAX_METADATA_VALUE_CHARS: usize = 500;
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The account name requests with an empty `account` use.
pub const DEFAULT_ACCOUNT: &str = "default";

impl NewCheckout {
    /// Validates `input`, reporting the first bad field in the contract's order.
    pub fn parse(input: CheckoutInput) -> Result<Self, ValidationError> {
        if input.provider.is_empty() {
            return Err(invalid("provider", "is required"));
        }
        let reference_chars = input.merchant_reference.chars().count();
        if reference_chars == 0 || reference_chars > MAX_REFERENCE_CHARS {
            return Err(invalid("merchant_reference", "must be 1 to 64 characters"));
        }
        if input.merchant_reference.chars().any(char::is_control) {
            return Err(invalid("merchant_reference", "must not contain control characters"));
        }
        let Some((minor, code)) = input.amount else {
            return Err(invalid("amount", "is required"));
        };
        if minor <= 0 {
            return Err(invalid("amount.amount_minor", "must be greater than zero"));
        }
        let currency = Currency::parse(&code)
            .ok_or_else(|| invalid("amount.currency", "must be an active upper-case ISO 4217 code"))?;
        let amount = Money { minor, currency };

        validate_line_items(&input.line_items, minor)?;
        let ttl = match input.ttl {
            None => None,
            Some((secs, nanos)) => Some(parse_ttl(secs, nanos)?),
        };
        validate_metadata(&input.metadata)?;
        let idempotency_key = match input.idempotency_key.as_str() {
            "" => None,
            key => Some(
                IdempotencyKey::parse(key)
                    .ok_or_else(|| invalid("idempotency_key", "must be at most 255 printable ASCII characters"))?,
            ),
        };
        for (field, url) in [("return_url", &input.return_url), ("cancel_url", &input.cancel_url)] {
            if !url.is_empty() && !is_http_url(url) {
                return Err(invalid(field, "must be an absolute http(s) URL"));
            }
        }
        Ok(Self {
            provider: input.provider,
            account: if input.account.is_empty() { DEFAULT_ACCOUNT.to_owned() } else { input.account },
            merchant_reference: input.merchant_reference,
            amount,
            customer: input.customer,
            return_url: input.return_url,
            cancel_url: input.cancel_url,
            payment_methods: input.payment_methods,
            description: input.description,
            metadata: input.metadata,
            idempotency_key,
            shipping_address: input.shipping_address,
            line_items: input.line_items,
            ttl,
        })
    }
}

fn validate_line_items(items: &[LineItem], amount_minor: i64) -> Result<(), ValidationError> {
    if items.is_empty() {
        return Ok(());
    }
    if items.len() > crate::limits::MAX_LINE_ITEMS {
        return Err(invalid("line_items", "at most 100 items"));
    }
    // Each item first (the most specific field), then the total.
    for (i, item) in items.iter().enumerate() {
        if item.quantity < 1 {
            return Err(invalid(format!("line_items[{i}].quantity"), "must be at least 1"));
        }
        if item.unit_amount_minor < 0 {
            return Err(invalid(format!("line_items[{i}].unit_amount_minor"), "must not be negative"));
        }
    }
    let total = items
        .iter()
        .try_fold(0_i64, |sum, item| item.unit_amount_minor.checked_mul(i64::from(item.quantity))?.checked_add(sum))
        .ok_or_else(|| invalid("line_items", "total overflows"))?;
    if total != amount_minor {
        return Err(invalid("line_items", "must sum to amount"));
    }
    Ok(())
}

fn parse_ttl(secs: i64, nanos: i32) -> Result<Duration, ValidationError> {
    let bad = || invalid("ttl", "must be between 60 seconds and 7 days");
    if secs < 0 || !(0..1_000_000_000).contains(&nanos) {
        return Err(bad());
    }
    let ttl = Duration::new(secs.unsigned_abs(), nanos.unsigned_abs());
    if ttl < MIN_TTL || ttl > MAX_TTL {
        return Err(bad());
    }
    Ok(ttl)
}

fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(invalid("metadata", "at most 50 entries"));
    }
    for (k, v) in metadata {
        if k.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(invalid("metadata", "keys must be at most 40 characters"));
        }
        if v.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(invalid("metadata", "values must be at most 500 characters"));
        }
    }
    Ok(())
}

/// An absolute http(s) URL written in printable ASCII only (it is sent back verbatim as a
/// `Location` header, which cannot carry anything else).
fn is_http_url(s: &str) -> bool {
    s.bytes().all(|b| (0x21..=0x7e).contains(&b))
        && url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> CheckoutInput {
        CheckoutInput {
            provider: "sandbox".into(),
            merchant_reference: "order-1".into(),
            amount: Some((1234, "USD".into())),
            ..Default::default()
        }
    }

    fn field_of(input: CheckoutInput) -> String {
        NewCheckout::parse(input).unwrap_err().field
    }

    #[test]
    fn accepts_minimal_request_and_defaults_account() {
        let c = NewCheckout::parse(valid()).unwrap();
        assert_eq!(c.account, "default");
        assert_eq!(c.idempotency_key, None);
        assert_eq!(c.amount.minor, 1234);
    }

    #[test]
    fn reports_fields_in_contract_order() {
        let mut i = valid();
        i.provider.clear();
        i.merchant_reference.clear();
        assert_eq!(field_of(i), "provider");

        let mut i = valid();
        i.merchant_reference = "x".repeat(65);
        i.amount = None;
        assert_eq!(field_of(i), "merchant_reference");

        let mut i = valid();
        i.merchant_reference = "a\u{7}b".into();
        assert_eq!(field_of(i), "merchant_reference");

        let mut i = valid();
        i.amount = None;
        assert_eq!(field_of(i), "amount");

        let mut i = valid();
        i.amount = Some((0, "usd".into()));
        assert_eq!(field_of(i), "amount.amount_minor");

        let mut i = valid();
        i.amount = Some((10, "usd".into()));
        assert_eq!(field_of(i), "amount.currency");
    }

    #[test]
    fn unicode_reference_counts_characters() {
        let mut i = valid();
        i.merchant_reference = "é".repeat(64);
        assert!(NewCheckout::parse(i).is_ok());
    }

    #[test]
    fn line_items_must_sum_and_be_sane() {
        let item = |unit, quantity| LineItem { name: "x".into(), unit_amount_minor: unit, quantity };
        let mut i = valid();
        i.line_items = vec![item(1000, 1), item(117, 2)];
        assert!(NewCheckout::parse(i.clone()).is_ok());
        i.line_items = vec![item(1000, 1)];
        assert_eq!(field_of(i.clone()), "line_items");
        i.line_items = vec![item(1234, 1), item(0, 0)];
        assert_eq!(field_of(i.clone()), "line_items[1].quantity");
        i.line_items = vec![item(-1, 1)];
        assert_eq!(field_of(i.clone()), "line_items[0].unit_amount_minor");
        i.line_items = vec![item(i64::MAX, 2)];
        assert_eq!(field_of(i.clone()), "line_items");
        i.line_items = vec![item(i64::MAX, 2), item(0, 0)];
        assert_eq!(field_of(i), "line_items[1].quantity", "items are checked before the total");
    }

    #[test]
    fn ttl_bounds_are_inclusive() {
        let with = |ttl| CheckoutInput { ttl: Some(ttl), ..valid() };
        assert!(NewCheckout::parse(with((60, 0))).is_ok());
        assert!(NewCheckout::parse(with((7 * 86400, 0))).is_ok());
        assert_eq!(field_of(with((59, 999_999_999))), "ttl");
        assert_eq!(field_of(with((7 * 86400, 1))), "ttl");
        assert_eq!(field_of(with((-1, 0))), "ttl");
    }

    #[test]
    fn metadata_and_key_limits() {
        let mut i = valid();
        i.metadata = (0..51).map(|n| (format!("k{n}"), "v".into())).collect();
        assert_eq!(field_of(i), "metadata");
        let mut i = valid();
        i.metadata.insert("k".repeat(41), "v".into());
        assert_eq!(field_of(i), "metadata");
        let mut i = valid();
        i.metadata.insert("k".into(), "v".repeat(501));
        assert_eq!(field_of(i), "metadata");
        let mut i = valid();
        i.idempotency_key = "k".repeat(256);
        assert_eq!(field_of(i), "idempotency_key");
        let mut i = valid();
        i.idempotency_key = "tab\there".into();
        assert_eq!(field_of(i), "idempotency_key");
        let mut i = valid();
        i.idempotency_key = "k".repeat(255);
        assert!(NewCheckout::parse(i).is_ok());
    }

    #[test]
    fn urls_must_be_absolute_http() {
        let mut i = valid();
        i.return_url = "javascript:alert(1)".into();
        assert_eq!(field_of(i), "return_url");
        let mut i = valid();
        i.cancel_url = "/relative".into();
        assert_eq!(field_of(i), "cancel_url");
        for bad in ["https://shop.example/caf\u{e9}", "https://shop.example/a b", "https://shop.example/\n"] {
            let mut i = valid();
            i.return_url = bad.into();
            assert_eq!(field_of(i), "return_url", "{bad}");
        }
        let mut i = valid();
        i.return_url = "https://shop.example/done?order=1&x=%C3%A9#top".into();
        assert!(NewCheckout::parse(i).is_ok());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![".{0,80}", "[ -~]{0,300}", Just(String::new()), "[A-Z]{3}"]
        }

        fn input() -> impl Strategy<Value = CheckoutInput> {
            let amount = prop::option::of((any::<i64>(), prop_oneof!["[A-Za-z]{3}", ".{0,5}"]));
            let items = prop::collection::vec(
                (text(), any::<i64>(), any::<u32>()).prop_map(|(name, unit_amount_minor, quantity)| LineItem {
                    name,
                    unit_amount_minor,
                    quantity,
                }),
                0..4,
            );
            let metadata = prop::collection::btree_map(".{0,45}", ".{0,510}", 0..3);
            let ttl = prop::option::of((any::<i64>(), any::<i32>()));
            (text(), text(), amount, items, metadata, ttl, text(), prop::collection::vec(text(), 0..3)).prop_map(
                |(merchant_reference, idempotency_key, amount, line_items, metadata, ttl, account, payment_methods)| {
                    CheckoutInput {
                        provider: "sandbox".into(),
                        account,
                        merchant_reference,
                        amount,
                        payment_methods,
                        metadata,
                        idempotency_key,
                        line_items,
                        ttl,
                        ..Default::default()
                    }
                },
            )
        }

        proptest! {
            #![proptest_config(crate::providers::proptests::config())]

            /// Any field values: parse never panics, and what it accepts keeps the contract's limits.
            #[test]
            fn parse_never_panics_and_accepts_only_valid_requests(input in input()) {
                if let Ok(c) = NewCheckout::parse(input.clone()) {
                    prop_assert!(c.amount.minor > 0);
                    let chars = c.merchant_reference.chars().count();
                    prop_assert!((1..=MAX_REFERENCE_CHARS).contains(&chars));
                    prop_assert!(!c.merchant_reference.chars().any(char::is_control));
                    prop_assert!(c.metadata.len() <= MAX_METADATA_ENTRIES);
                    if let Some(key) = &c.idempotency_key {
                        prop_assert!(key.as_str().len() <= MAX_IDEMPOTENCY_KEY);
                        prop_assert!(key.as_str().bytes().all(|b| b.is_ascii_graphic() || b == b' '));
                    }
                    if let Some(ttl) = c.ttl {
                        prop_assert!((MIN_TTL..=MAX_TTL).contains(&ttl));
                    }
                    if !c.line_items.is_empty() {
                        let sum: i128 = c.line_items.iter()
                            .map(|i| i128::from(i.unit_amount_minor) * i128::from(i.quantity)).sum();
                        prop_assert_eq!(sum, i128::from(c.amount.minor));
                    }
                }
            }

            /// A valid request with one arbitrary reference or key: accepted or refused naming that field.
            #[test]
            fn one_bad_field_is_named(reference in ".{0,80}", key in ".{0,300}") {
                let mut input = valid();
                input.merchant_reference = reference;
                input.idempotency_key = key;
                if let Err(e) = NewCheckout::parse(input) {
                    prop_assert!(e.field == "merchant_reference" || e.field == "idempotency_key", "{e}");
                }
            }
        }
    }
}
