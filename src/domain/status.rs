//! The payment status state machine: the one place transitions are decided.

use std::fmt;
use std::str::FromStr;

/// Lifecycle status of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    Pending,
    Processing,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 6] =
        [Self::Pending, Self::Processing, Self::Succeeded, Self::Failed, Self::Cancelled, Self::Expired];

    /// Lower-case name as stored in the database and used by the sandbox callback.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Whether a shopper can still pay (the hosted page shows its form).
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Processing | Self::Failed)
    }

    /// Decides whether moving from `self` to `to` is allowed.
    ///
    /// PENDING, PROCESSING and FAILED may move to any other status (a shopper may retry after a
    /// failure); CANCELLED and EXPIRED only to SUCCEEDED (a verified source says money was taken);
    /// SUCCEEDED is terminal. Moving to the same status is never a change.
    pub fn transition(self, to: PaymentStatus) -> Transition {
        use PaymentStatus::*;
        if self == to {
            return Transition::Unchanged;
        }
        let allowed = match self {
            Pending | Processing | Failed => true,
            Cancelled | Expired => to == Succeeded,
            Succeeded => false,
        };
        if allowed { Transition::Apply } else { Transition::Disallowed }
    }
}

/// Outcome of [`PaymentStatus::transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The change is allowed and must be applied.
    Apply,
    /// Same status: nothing to change.
    Unchanged,
    /// The state machine forbids it: nothing changes, the attempt is only recorded.
    Disallowed,
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown status name.
#[derive(Debug, thiserror::Error)]
#[error("unknown payment status")]
pub struct UnknownStatus;

impl FromStr for PaymentStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or(UnknownStatus)
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    #[test]
    fn full_transition_matrix() {
        // Rows: from; columns: to, in ALL order (Pending, Processing, Succeeded, Failed, Cancelled, Expired).
        // A = apply, U = unchanged, D = disallowed.
        let expected = [
            (Pending, "UAAAAA"),
            (Processing, "AUAAAA"),
            (Succeeded, "DDUDDD"),
            (Failed, "AAAUAA"),
            (Cancelled, "DDADUD"),
            (Expired, "DDADDU"),
        ];
        for (from, row) in expected {
            for (to, want) in PaymentStatus::ALL.into_iter().zip(row.chars()) {
                let want = match want {
                    'A' => Transition::Apply,
                    'U' => Transition::Unchanged,
                    _ => Transition::Disallowed,
                };
                assert_eq!(from.transition(to), want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in PaymentStatus::ALL {
            assert_eq!(s.as_str().parse::<PaymentStatus>().unwrap(), s);
        }
        assert!("complete".parse::<PaymentStatus>().is_err());
    }
}
