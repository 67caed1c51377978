//! Names of the metrics the relay records through the [`metrics`] facade.
//!
//! Install any `metrics` recorder (Prometheus, StatsD, ...) to collect them; without one
//! they cost next to nothing.

/// Counter: messages the broker acknowledged.
pub const PUBLISHED: &str = "outbox_published_total";
/// Counter: failed attempts scheduled for a retry.
pub const RETRIED: &str = "outbox_retried_total";
/// Counter: messages settled as dead.
pub const DEAD: &str = "outbox_dead_total";
/// Counter: settlements refused because the lease was lost.
pub const LEASES_LOST: &str = "outbox_leases_lost_total";
/// Counter: store operations that failed.
pub const STORE_ERRORS: &str = "outbox_store_errors_total";
/// Histogram: messages per non-empty claim.
pub const BATCH_SIZE: &str = "outbox_batch_size";
/// Histogram: seconds per claim.
pub const CLAIM_SECONDS: &str = "outbox_claim_seconds";
/// Histogram: seconds per publish call.
pub const PUBLISH_SECONDS: &str = "outbox_publish_seconds";
/// Gauge: unsettled messages.
pub const BACKLOG: &str = "outbox_backlog";
/// Gauge: dead letters.
pub const DEAD_LETTERS: &str = "outbox_dead_letters";
/// Gauge: age in seconds of the oldest unsettled message.
pub const OLDEST_PENDING_SECONDS: &str = "outbox_oldest_pending_seconds";
