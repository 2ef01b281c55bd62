//! What the events need to be emitted without flooding: replaced as a whole by every reconcile
//! that settles (the pure settle step computes it).

use crate::decide::IssuedEvents;

/// The event bookkeeping of one client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventLedger {
    /// The last `TokenIssued` event, and the tokens issued since without one.
    pub issued: Option<IssuedEvents>,
    /// The spec generation a `ShortRenewMargin` event was emitted for.
    pub margin_warned: Option<i64>,
}
