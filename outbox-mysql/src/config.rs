//! Settings of a [`MySqlStore`](crate::MySqlStore).

use std::time::Duration;

use outbox_core::{Error, MessageLimits, Result, validate_identifier};

/// Longest table name: MySQL names are at most 64 characters, and the store adds
/// `_migrations` for its bookkeeping table.
pub(crate) const MAX_TABLE_NAME: usize = 64 - "_migrations".len();

/// Where the outbox table lives and how it behaves.
///
/// The table is created in the connection's current database (the one in the URL).
///
/// ```
/// let mut config = outbox_mysql::MySqlConfig::default();
/// config.table = "order_events".into();
/// config.keep_published = true;
/// config.validate()?;
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MySqlConfig {
    /// The outbox table (default `outbox_messages`). A plain identifier of at most 53
    /// characters; the store also creates `<table>_migrations` (applied schema versions)
    /// and `<table>_lock` (the row that serialises claims).
    pub table: String,
    /// Enqueue limits (default: 1 MiB payloads). Keep `max_payload_bytes` below the
    /// server's `max_allowed_packet` (16 MiB on MariaDB, 64 MiB on MySQL 8 by default).
    pub limits: MessageLimits,
    /// Keep published rows, marked with their publish time, for
    /// [`purge_published`](outbox_core::Store::purge_published), instead of deleting them
    /// at once (default `false`).
    pub keep_published: bool,
    /// When a message that waits behind its key is looked at again (default 5 min), then
    /// at doubling intervals while it waits: a safety net.
    ///
    /// A waiting message is made due when the message before it is settled, and the
    /// claim that makes a message wait locks the row it waits behind, so that promotion
    /// is never missed. This
    /// recheck guards against what that reasoning might have missed (a server restored from
    /// a backup taken mid-way, rows edited by hand): a waiting message whose key has
    /// nothing older unsettled is made due at the latest this long after it began to wait.
    /// Each recheck of a message that still waits costs one row update.
    pub recheck_waiting: Duration,
}

impl Default for MySqlConfig {
    fn default() -> Self {
        MySqlConfig {
            table: "outbox_messages".into(),
            limits: MessageLimits::default(),
            keep_published: false,
            recheck_waiting: Duration::from_secs(300),
        }
    }
}

impl MySqlConfig {
    /// Checks that the table name is a plain identifier short enough for the tables the
    /// store derives from it. [`MySqlStore::new`](crate::MySqlStore::new) calls it.
    ///
    /// ```
    /// let mut config = outbox_mysql::MySqlConfig::default();
    /// config.table = "events; DROP TABLE orders".into();
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        validate_identifier("table", &self.table)?;
        if self.table.len() > MAX_TABLE_NAME {
            return Err(Error::invalid_config(format!(
                "table name {:?} is {} characters long; MySQL names are at most 64 characters \
                 and the store adds `_migrations`, so use at most {MAX_TABLE_NAME}",
                self.table,
                self.table.len()
            )));
        }
        if self.recheck_waiting < Duration::from_millis(1)
            || self.recheck_waiting > Duration::from_secs(24 * 3600)
        {
            return Err(Error::invalid_config(format!(
                "recheck_waiting is {:?}; use between 1 ms and a day (default 5 min)",
                self.recheck_waiting
            )));
        }
        Ok(())
    }

    /// [`recheck_waiting`](Self::recheck_waiting) in microseconds.
    pub(crate) fn recheck_micros(&self) -> i64 {
        i64::try_from(self.recheck_waiting.as_micros()).unwrap_or(i64::MAX)
    }
}
