//! Pure domain types and rules: money, identifiers, the status state machine and request validation.
//! Nothing here touches the network or the database.

pub mod checkout;
pub mod event;
pub mod fingerprint;
pub mod ids;
pub mod money;
pub mod payment;
pub mod status;

pub use checkout::{NewCheckout, ValidationError};
pub use event::{EventKind, EventSource};
pub use ids::PaymentId;
pub use money::{Currency, Money};
pub use payment::{Outcome, Payment, StatusReport};
pub use status::{PaymentStatus, Transition};
