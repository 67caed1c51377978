//! Migrations, tracked in the outbox's own table (never the application's).

use rusqlite::{Connection, TransactionBehavior};

use crate::error::store_error;

/// The SQL of each schema version, in order; `{t}` is the configured table name (validated).
const MIGRATIONS: &[&str] = &[
    // 1: the messages table. Times are Unix milliseconds. status: 0 unsettled, 1 published
    // (kept only with `keep_published`), 2 dead.
    //
    // Only the head of each key (its oldest unsettled message) and unkeyed messages have an
    // `available_at` (not-before or retry time); the key's later messages wait with NULL
    // and are promoted when the head is settled. So the `due` index holds one row per key
    // and a claim never walks over messages that are blocked behind their key.
    "CREATE TABLE {t} (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id    TEXT    NOT NULL UNIQUE,
        topic         TEXT    NOT NULL,
        msg_key       TEXT,
        payload       BLOB    NOT NULL,
        headers       TEXT    NOT NULL,
        created_at    INTEGER NOT NULL,
        not_before    INTEGER,
        available_at  INTEGER,
        attempts      INTEGER NOT NULL DEFAULT 0,
        status        INTEGER NOT NULL DEFAULT 0,
        lease_token   TEXT,
        lease_until   INTEGER,
        last_error    TEXT,
        settled_at    INTEGER
    );
    CREATE INDEX {t}_due ON {t} (available_at, id) WHERE status = 0 AND available_at IS NOT NULL;
    CREATE INDEX {t}_key_order ON {t} (msg_key, id) WHERE status = 0 AND msg_key IS NOT NULL;
    CREATE INDEX {t}_dead ON {t} (id) WHERE status = 2;
    CREATE INDEX {t}_published ON {t} (settled_at) WHERE status = 1;",
];

/// Brings the schema to the latest version. Safe when several processes start at once:
/// the check and the migration run in one `BEGIN IMMEDIATE` transaction.
pub(crate) fn migrate(conn: &mut Connection, table: &str) -> outbox_core::Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| store_error("migrate", e))?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table}_migrations (
            version INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL
        )"
    ))
    .map_err(|e| store_error("migrate", e))?;
    let current: i64 = tx
        .query_row(
            &format!("SELECT coalesce(max(version), 0) FROM {table}_migrations"),
            [],
            |row| row.get(0),
        )
        .map_err(|e| store_error("migrate", e))?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        tx.execute_batch(&sql.replace("{t}", table))
            .map_err(|e| store_error("migrate", e))?;
        tx.execute(
            &format!(
                "INSERT INTO {table}_migrations (version, applied_at) VALUES (?1, unixepoch())"
            ),
            [version],
        )
        .map_err(|e| store_error("migrate", e))?;
    }
    tx.commit().map_err(|e| store_error("migrate", e))
}
