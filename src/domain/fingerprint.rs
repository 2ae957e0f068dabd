//! Request fingerprints for idempotency: SHA-256 over a canonical encoding of every request field
//! except the idempotency key, so map order on the client never matters.

use sha2::{Digest, Sha256};

use super::checkout::NewCheckout;

/// Computes the fingerprint of a validated request.
pub fn fingerprint(c: &NewCheckout) -> [u8; 32] {
    // serde_json writes struct fields in declaration order and BTreeMaps sorted by key, so this
    // encoding is canonical for a given request.
    let canonical = serde_json::json!({
        "provider": c.provider,
        "account": c.account,
        "merchant_reference": c.merchant_reference,
        "amount": { "amount_minor": c.amount.minor, "currency": c.amount.currency.code() },
        "customer": c.customer,
        "return_url": c.return_url,
        "cancel_url": c.cancel_url,
        "payment_methods": c.payment_methods,
        "description": c.description,
        "metadata": c.metadata,
        "shipping_address": c.shipping_address,
        "line_items": c.line_items,
        "ttl": c.ttl.map(|t| (t.as_secs(), t.subsec_nanos())),
    });
    Sha256::digest(canonical.to_string().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::checkout::CheckoutInput;

    fn parse(i: CheckoutInput) -> NewCheckout {
        NewCheckout::parse(i).unwrap()
    }

    fn base() -> CheckoutInput {
        CheckoutInput {
            provider: "sandbox".into(),
            merchant_reference: "order-1".into(),
            amount: Some((1234, "USD".into())),
            idempotency_key: "k1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn ignores_key_and_map_order_and_default_account() {
        let mut a = base();
        a.metadata.insert("b".into(), "2".into());
        a.metadata.insert("a".into(), "1".into());
        let mut b = base();
        b.idempotency_key = "other".into();
        b.account = "default".into();
        b.metadata.insert("a".into(), "1".into());
        b.metadata.insert("b".into(), "2".into());
        assert_eq!(fingerprint(&parse(a)), fingerprint(&parse(b)));
    }

    #[test]
    fn changes_with_any_field() {
        let fp = fingerprint(&parse(base()));
        let variants: Vec<fn(&mut CheckoutInput)> = vec![
            |i| i.account = "other".into(),
            |i| i.merchant_reference = "order-2".into(),
            |i| i.amount = Some((1235, "USD".into())),
            |i| i.amount = Some((1234, "EUR".into())),
            |i| i.customer.email = "a@example.com".into(),
            |i| i.return_url = "https://example.com/r".into(),
            |i| i.cancel_url = "https://example.com/c".into(),
            |i| i.payment_methods = vec!["card".into()],
            |i| i.description = "d".into(),
            |i| {
                i.metadata.insert("k".into(), "v".into());
            },
            |i| i.shipping_address = Some(Default::default()),
            |i| i.ttl = Some((600, 0)),
            |i| i.provider = "xpay".into(),
        ];
        for (n, change) in variants.iter().enumerate() {
            let mut i = base();
            change(&mut i);
            assert_ne!(fingerprint(&parse(i)), fp, "variant {n}");
        }
    }
}
