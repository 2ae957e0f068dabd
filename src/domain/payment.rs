//! The payment record and the rule for applying a provider's status report to it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::checkout::MAX_METADATA_ENTRIES;
use super::event::EventKind;
use super::ids::PaymentId;
use super::money::Money;
use super::status::{PaymentStatus, Transition};

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    pub provider: String,
    pub account: String,
    pub merchant_reference: String,
    #[serde(flatten)]
    pub amount: Money,
    pub status: PaymentStatus,
    pub checkout_url: Option<String>,
    pub provider_checkout_id: Option<String>,
    pub provider_payment_id: Option<String>,
    pub payment_method: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub return_url: String,
    pub cancel_url: String,
    pub metadata: BTreeMap<String, String>,
    /// Provider-private data (never shown to callers or copied into events).
    #[serde(skip_serializing, default)]
    pub provider_data: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub version: i64,
    /// The authenticated caller that created it (its owner); `None` when created while
    /// authentication was off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
}

#[cfg(test)]
impl Payment {
    /// A PENDING payment of `provider` for `amount_minor` `currency`, version 1, with no
    /// provider ids (unit tests set the fields they need with struct update syntax).
    pub fn fixture(provider: &str, amount_minor: i64, currency: &str) -> Self {
        let now = Utc::now();
        let currency = super::Currency::parse(currency).expect("fixture currency");
        Self {
            id: PaymentId::parse("pay_01ARZ3NDEKTSV4RRFFQ69G5FAV").expect("fixture id"),
            provider: provider.into(),
            account: "default".into(),
            merchant_reference: "r".into(),
            amount: Money { minor: amount_minor, currency },
            status: PaymentStatus::Pending,
            checkout_url: None,
            provider_checkout_id: None,
            provider_payment_id: None,
            payment_method: None,
            failure_code: None,
            failure_message: None,
            return_url: String::new(),
            cancel_url: String::new(),
            metadata: BTreeMap::new(),
            provider_data: serde_json::Value::Null,
            created_at: now,
            updated_at: now,
            expires_at: None,
            version: 1,
            caller: None,
        }
    }
}

/// What a verified source (callback body or status lookup) says about a payment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusReport {
    /// `None` when the provider's value is unknown to us: the status is left alone.
    pub status: Option<PaymentStatus>,
    /// The provider's own status value, as received (logged when it is unknown).
    pub provider_status: Option<String>,
    /// Amount and currency as the provider reports them, when it does.
    pub amount: Option<(i64, String)>,
    pub provider_payment_id: Option<String>,
    pub payment_method: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    /// The provider's own timestamp: stored, never used for ordering.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Entries merged into the payment's metadata when the report changes the status (e.g. the
    /// amount a provider actually processed after a currency conversion).
    pub metadata: BTreeMap<String, String>,
}

/// Failure code recorded when a report's amount or currency differs from the payment.
pub const AMOUNT_MISMATCH: &str = "AMOUNT_MISMATCH";

/// Adds provider-supplied entries to a payment's metadata without ever overwriting an existing
/// key (the caller's own entries win) and without growing past [`MAX_METADATA_ENTRIES`].
pub fn merge_provider_metadata(metadata: &mut BTreeMap<String, String>, from_provider: &BTreeMap<String, String>) {
    for (k, v) in from_provider {
        if metadata.len() >= MAX_METADATA_ENTRIES {
            break;
        }
        metadata.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// What applying a report does.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The row changes to `after`; `status_changed` says whether the status moved.
    Change { after: Box<Payment>, kind: EventKind, status_changed: bool },
    /// Nothing changes; the report is recorded under `kind` as not applied.
    Ignore { kind: EventKind },
}

impl Outcome {
    /// The event kind this outcome is recorded under.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Change { kind, .. } | Self::Ignore { kind } => *kind,
        }
    }
}

impl Payment {
    /// Whether a reported amount and currency differ from the payment's.
    pub fn amount_differs(&self, (minor, currency): &(i64, String)) -> bool {
        *minor != self.amount.minor || currency != self.amount.currency.code()
    }

    /// Decides what `report` does to this payment. A report whose amount differs never changes
    /// the status: it records `AMOUNT_MISMATCH` in the failure fields instead.
    pub fn apply(&self, report: &StatusReport) -> Outcome {
        if let Some(amount) = &report.amount
            && self.amount_differs(amount)
        {
            let mut after = self.clone();
            after.failure_code = Some(AMOUNT_MISMATCH.into());
            after.failure_message = Some("reported amount or currency differs from the payment".into());
            return if after == *self {
                Outcome::Ignore { kind: EventKind::AmountMismatch }
            } else {
                Outcome::Change { after: Box::new(after), kind: EventKind::AmountMismatch, status_changed: false }
            };
        }
        let Some(to) = report.status else {
            return Outcome::Ignore { kind: EventKind::UnknownStatus };
        };
        // Money is only ever marked taken with the amount it was taken for.
        if to == PaymentStatus::Succeeded && report.amount.is_none() {
            return Outcome::Ignore { kind: EventKind::MissingAmount };
        }
        match self.status.transition(to) {
            Transition::Unchanged => Outcome::Ignore { kind: EventKind::SameStatus },
            Transition::Disallowed => Outcome::Ignore { kind: EventKind::TransitionRejected },
            Transition::Apply => {
                let mut after = self.clone();
                after.status = to;
                if report.provider_payment_id.is_some() {
                    after.provider_payment_id.clone_from(&report.provider_payment_id);
                }
                if report.payment_method.is_some() {
                    after.payment_method.clone_from(&report.payment_method);
                }
                merge_provider_metadata(&mut after.metadata, &report.metadata);
                match to {
                    PaymentStatus::Succeeded => {
                        after.failure_code = None;
                        after.failure_message = None;
                    }
                    PaymentStatus::Failed => {
                        after.failure_code = report.failure_code.clone().or_else(|| Some("PROVIDER_DECLINED".into()));
                        after.failure_message.clone_from(&report.failure_message);
                    }
                    // E.g. RECONCILIATION_FAILED: expired without a provider answer.
                    PaymentStatus::Expired if report.failure_code.is_some() => {
                        after.failure_code.clone_from(&report.failure_code);
                        after.failure_message.clone_from(&report.failure_message);
                    }
                    _ => {}
                }
                Outcome::Change { after: Box::new(after), kind: EventKind::StatusChanged, status_changed: true }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `payment_events.snapshot` exactly as paygate has written it since the first release:
    /// the stored log and the stream's SQL filters (`snapshot->>'provider'`) rely on this shape.
    const STORED_SNAPSHOT: &str = r#"{"id":"pay_01ARZ3NDEKTSV4RRFFQ69G5FAV","provider":"xpay","account":"default","merchant_reference":"order-1","amount_minor":149900,"currency":"EGP","status":"succeeded","checkout_url":"https://checkout.xpay.app/cs_test_1","provider_checkout_id":"cs_test_1","provider_payment_id":"pi_1","payment_method":"card","failure_code":null,"failure_message":null,"return_url":"https://shop.example/thanks","cancel_url":"","metadata":{"order":"1"},"created_at":"2026-11-23T10:00:00.123456Z","updated_at":"2026-11-23T10:01:00.654321Z","expires_at":"2026-11-24T10:00:00.123456Z","version":3}"#;

    #[test]
    fn stored_snapshots_decode_and_encode_to_the_same_shape() {
        let p: Payment = serde_json::from_str(STORED_SNAPSHOT).unwrap();
        assert_eq!(p.id.to_string(), "pay_01ARZ3NDEKTSV4RRFFQ69G5FAV");
        assert_eq!((p.amount.minor, p.amount.currency.code()), (149_900, "EGP"));
        assert_eq!(p.status, PaymentStatus::Succeeded);
        assert_eq!(p.version, 3);
        let again = serde_json::to_value(&p).unwrap();
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(STORED_SNAPSHOT).unwrap());
    }

    fn payment(status: PaymentStatus) -> Payment {
        Payment {
            status,
            failure_code: Some("OLD".into()),
            failure_message: Some("old".into()),
            version: 2,
            ..Payment::fixture("sandbox", 1234, "USD")
        }
    }

    fn report(status: PaymentStatus) -> StatusReport {
        StatusReport { status: Some(status), amount: Some((1234, "USD".into())), ..Default::default() }
    }

    #[test]
    fn success_clears_failure_fields_and_records_ids() {
        let mut r = report(PaymentStatus::Succeeded);
        r.provider_payment_id = Some("sbx_1".into());
        r.payment_method = Some("sandbox".into());
        let Outcome::Change { after, status_changed: true, .. } = payment(PaymentStatus::Failed).apply(&r) else {
            panic!("expected a change")
        };
        assert_eq!(after.status, PaymentStatus::Succeeded);
        assert_eq!(after.failure_code, None);
        assert_eq!(after.provider_payment_id.as_deref(), Some("sbx_1"));
    }

    #[test]
    fn amount_mismatch_never_changes_status() {
        for amount in [(1235, "USD"), (1234, "EUR")] {
            let mut r = report(PaymentStatus::Succeeded);
            r.amount = Some((amount.0, amount.1.into()));
            let Outcome::Change { after, kind, status_changed } = payment(PaymentStatus::Pending).apply(&r) else {
                panic!("expected a recorded mismatch")
            };
            assert_eq!((kind, status_changed), (EventKind::AmountMismatch, false));
            assert_eq!(after.status, PaymentStatus::Pending);
            assert_eq!(after.failure_code.as_deref(), Some(AMOUNT_MISMATCH));
            // A second identical mismatch changes nothing more.
            assert_eq!(after.apply(&r), Outcome::Ignore { kind: EventKind::AmountMismatch });
        }
    }

    #[test]
    fn disallowed_and_same_status_are_ignored() {
        let p = payment(PaymentStatus::Succeeded);
        assert_eq!(p.apply(&report(PaymentStatus::Failed)), Outcome::Ignore { kind: EventKind::TransitionRejected });
        assert_eq!(p.apply(&report(PaymentStatus::Succeeded)), Outcome::Ignore { kind: EventKind::SameStatus });
        let unknown = StatusReport { status: None, ..Default::default() };
        assert_eq!(p.apply(&unknown), Outcome::Ignore { kind: EventKind::UnknownStatus });
    }

    #[test]
    fn success_needs_an_amount() {
        let r = StatusReport { status: Some(PaymentStatus::Succeeded), ..Default::default() };
        assert_eq!(payment(PaymentStatus::Pending).apply(&r), Outcome::Ignore { kind: EventKind::MissingAmount });
    }

    #[test]
    fn provider_metadata_never_overwrites_and_is_capped() {
        let mut p = payment(PaymentStatus::Pending);
        p.metadata.insert("paynow_qr".into(), "caller's".into());
        let mut r = report(PaymentStatus::Succeeded);
        r.metadata.insert("paynow_qr".into(), "provider's".into());
        r.metadata.insert("exirom_rate".into(), "1.1".into());
        let Outcome::Change { after, .. } = p.apply(&r) else { panic!() };
        assert_eq!(after.metadata["paynow_qr"], "caller's");
        assert_eq!(after.metadata["exirom_rate"], "1.1");

        let mut full: BTreeMap<String, String> = (0..50).map(|i| (format!("k{i}"), "v".into())).collect();
        merge_provider_metadata(&mut full, &r.metadata);
        assert_eq!(full.len(), 50);
    }

    #[test]
    fn expiry_records_a_failure_code_only_when_given() {
        let plain = StatusReport { status: Some(PaymentStatus::Expired), ..Default::default() };
        let Outcome::Change { after, .. } = payment(PaymentStatus::Pending).apply(&plain) else { panic!() };
        assert_eq!(after.failure_code.as_deref(), Some("OLD"));
        let failed = StatusReport {
            status: Some(PaymentStatus::Expired),
            failure_code: Some("RECONCILIATION_FAILED".into()),
            ..Default::default()
        };
        let Outcome::Change { after, .. } = payment(PaymentStatus::Pending).apply(&failed) else { panic!() };
        assert_eq!(after.failure_code.as_deref(), Some("RECONCILIATION_FAILED"));
    }

    #[test]
    fn failure_records_code_with_default() {
        let Outcome::Change { after, .. } = payment(PaymentStatus::Pending).apply(&report(PaymentStatus::Failed))
        else {
            panic!()
        };
        assert_eq!(after.failure_code.as_deref(), Some("PROVIDER_DECLINED"));
    }
}
