//! What an entry of the payment event log records: its kind and where it came from.

/// The kind of a `payment_events` row (stored as [`EventKind::as_str`]). Kinds of applied rows
/// change the payment; the others record what was received and not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The payment was created (version 1).
    Created,
    /// The provider opened the checkout.
    CheckoutOpened,
    /// The provider refused the create.
    ProviderRejected,
    /// The create's outcome is unknown; the payment is checked at the provider (not applied).
    CreateOutcomeUnknown,
    /// The provider did not process the create (connect failure, 429, 503); a retry with the
    /// same key may send it again (not applied).
    CreateNotProcessed,
    /// A report moved the payment to another status.
    StatusChanged,
    /// A reported amount or currency differs from the payment.
    AmountMismatch,
    /// A status value we do not know (not applied).
    UnknownStatus,
    /// SUCCEEDED without an amount (not applied).
    MissingAmount,
    /// The payment already has this status (not applied).
    SameStatus,
    /// The state machine forbids the transition (not applied).
    TransitionRejected,
    /// A callback that only asks for a lookup (not applied).
    LookUp,
    /// A verified callback gave a payment that had none its provider checkout id.
    CheckoutAdopted,
    /// A callback seen before (not applied).
    Duplicate,
}

impl EventKind {
    /// Name as stored in `payment_events.kind` and `callback_receipts.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::CheckoutOpened => "checkout_opened",
            Self::ProviderRejected => "provider_rejected",
            Self::CreateOutcomeUnknown => "create_outcome_unknown",
            Self::CreateNotProcessed => "create_not_processed",
            Self::StatusChanged => "status_changed",
            Self::AmountMismatch => "amount_mismatch",
            Self::UnknownStatus => "unknown_status",
            Self::MissingAmount => "missing_amount",
            Self::SameStatus => "same_status",
            Self::TransitionRejected => "transition_rejected",
            Self::LookUp => "look_up",
            Self::CheckoutAdopted => "checkout_adopted",
            Self::Duplicate => "duplicate",
        }
    }
}

/// What caused an event (`payment_events.source`, `PaymentEvent.source` in the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventSource {
    /// CreateCheckout.
    #[default]
    Create,
    /// A provider callback (HTTP ingress or VerifyCallback).
    Callback,
    /// GetPaymentStatus with `refresh = true`.
    Refresh,
    /// A queued provider check.
    Reconciler,
    /// The EXPIRED transition itself.
    Expiry,
    /// CancelCheckout (the CANCELLED transition and what the cancel learned at the provider).
    Cancel,
}

impl EventSource {
    /// Name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Callback => "callback",
            Self::Refresh => "refresh",
            Self::Reconciler => "reconciler",
            Self::Expiry => "expiry",
            Self::Cancel => "cancel",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_the_ones_the_schema_and_clients_know() {
        let sources = [
            EventSource::Create,
            EventSource::Callback,
            EventSource::Refresh,
            EventSource::Reconciler,
            EventSource::Expiry,
            EventSource::Cancel,
        ];
        let names: Vec<&str> = sources.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["create", "callback", "refresh", "reconciler", "expiry", "cancel"]);
        assert_eq!(EventKind::LookUp.as_str(), "look_up");
        assert_eq!(EventKind::AmountMismatch.as_str(), "amount_mismatch");
    }
}
