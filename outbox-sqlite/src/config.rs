//! Settings of a [`SqliteStore`](crate::SqliteStore).

use std::sync::Arc;
use std::time::Duration;

use outbox_core::{Clock, MessageLimits, SystemClock};

/// How a [`SqliteStore`](crate::SqliteStore) opens its database and keeps its table.
///
/// ```
/// use std::time::Duration;
///
/// let mut config = outbox_sqlite::SqliteConfig::default();
/// config.table = "order_events".into();
/// config.busy_timeout = Duration::from_secs(10);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The outbox table (default `outbox_messages`); its migrations are tracked in
    /// `<table>_migrations`. Must be a plain identifier.
    pub table: String,
    /// How long a call waits for another connection's write lock (default 5 s).
    pub busy_timeout: Duration,
    /// Enqueue limits (default: 1 MiB payloads).
    pub limits: MessageLimits,
    /// Keep published rows (marked with their publish time) for
    /// [`purge_published`](outbox_core::Store::purge_published) instead of deleting them at
    /// once (default `false`).
    pub keep_published: bool,
    /// The clock for leases and retry times (default: the system clock).
    pub clock: Arc<dyn Clock>,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            table: "outbox_messages".into(),
            busy_timeout: Duration::from_secs(5),
            limits: MessageLimits::default(),
            keep_published: false,
            clock: Arc::new(SystemClock),
        }
    }
}
