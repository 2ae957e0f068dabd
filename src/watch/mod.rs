//! Payment status streams: one shared log reader per replica fans committed events out to every
//! subscriber in memory.
//!
//! - Writers append events freely; the [`run_sequencer`] leader (one per database) gives
//!   committed events consecutive positions in batches and `NOTIFY`s the newest (see
//!   `store::events` for why resuming from a position is exact).
//! - The [`Hub`] LISTENs (plus a 1 s poll as a safety net), reads the new rows once, and
//!   broadcasts them on a bounded `tokio::sync::broadcast` ring: one query per wake-up for all
//!   subscribers, not one per subscriber.
//! - A [`subscribe`]r replays stored events after its `after_sequence` from the table, then goes
//!   live, deduplicating at the seam by sequence. If it falls behind the ring (a slow consumer), it
//!   re-subscribes and catches up from the table again, so memory stays bounded and nothing is
//!   lost or repeated.

mod hub;
mod sequencer;
mod subscriber;

pub use hub::{Hub, WatchEvent};
pub use sequencer::run_sequencer;
pub use subscriber::{WatchRequest, subscribe};
