//! How long QNP keeps what: the privacy policy's promises as constants, at the bottom of the crate so
//! configuration (which bounds `QNP_USAGE_RETENTION_DAYS` by them), the privacy page and the cleaner all
//! read the same numbers.

/// The longest usage rows are kept (the privacy policy's promise); `QNP_USAGE_RETENTION_DAYS` may
/// shorten it.
pub const USAGE_RETENTION_DAYS: i64 = 30;
/// A deleted account is gone within this many days (in practice by the next daily pass).
pub const ERASURE_DAYS: i64 = 30;
/// Processed Stripe event ids are forgotten after this many days (Stripe retries for three).
pub const STRIPE_EVENT_DAYS: i64 = 30;
