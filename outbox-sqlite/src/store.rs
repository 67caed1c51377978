//! The relay side: [`Store`] over a SQLite file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use outbox_core::{
    Backlog, Claim, ClaimOptions, DeadLetter, Error, Lease, LeaseToken, Result, SettleAction,
    SettleReport, Settlement, Store, StoreCapabilities, add_duration, validate_identifier,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::claim::claim_in;
use crate::config::SqliteConfig;
use crate::error::{store_error, task_error};
use crate::row::{from_millis, read_raw, to_millis};
use crate::schema::migrate;
use crate::sql::Sql;

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: SqliteConfig,
    pub(crate) sql: Sql,
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// An outbox in a SQLite database file.
///
/// Open it with [`SqliteStore::open`]; enqueue with [`SqliteStore::enqueue`] inside your
/// own `rusqlite` transaction; hand it to a [`Relay`](outbox_core::Relay). Several relay
/// processes may share one file: claims run in `BEGIN IMMEDIATE` transactions and every
/// settlement checks its lease token. The store's own connection runs in WAL mode with a
/// busy timeout, and its calls run on Tokio's blocking pool, never on the async executor.
/// Clones share the connection.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) inner: Arc<Inner>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default settings and brings
    /// the outbox schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteConfig::default()).await
    }

    /// Opens the database at `path` with `config` and brings the outbox schema up to date.
    pub async fn open_with(path: impl AsRef<Path>, config: SqliteConfig) -> Result<Self> {
        validate_identifier("table", &config.table)?;
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut conn = Connection::open(&path).map_err(|e| store_error("open", e))?;
            Self::prepare_connection(&conn, config.busy_timeout)?;
            // The relay's own writes only decide duplicates after a power loss, never loss.
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| store_error("open", e))?;
            migrate(&mut conn, &config.table)?;
            let sql = Sql::new(&config.table);
            Ok(SqliteStore {
                inner: Arc::new(Inner {
                    config,
                    sql,
                    path,
                    conn: Mutex::new(conn),
                }),
            })
        })
        .await
        .map_err(|e| task_error("open", e))?
    }

    /// Sets WAL mode and a busy timeout on a connection. Call it on your application's
    /// connections to the same file, so that they wait for the relay's short write
    /// transactions instead of failing with "database is locked".
    pub fn prepare_connection(conn: &Connection, busy_timeout: Duration) -> Result<()> {
        conn.busy_timeout(busy_timeout)
            .map_err(|e| store_error("open", e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| store_error("open", e))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            tracing::warn!(%mode, "SQLite did not switch to WAL mode; relays and writers will block each other more");
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The settings.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    /// Runs `f` with the store's connection on the blocking pool.
    async fn with_conn<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Connection, &Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &inner)
        })
        .await
        .map_err(|e| task_error(operation, e))?
    }
}

/// The key of message `id`, if it has one (and exists).
fn key_of(conn: &Connection, inner: &Inner, id: i64) -> Result<Option<String>> {
    conn.prepare_cached(&inner.sql.key_of)
        .and_then(|mut stmt| {
            stmt.query_row(rusqlite::named_params! {":id": id}, |row| row.get(0))
                .optional()
        })
        .map(Option::flatten)
        .map_err(|e| store_error("settle", e))
}

/// Makes the oldest waiting message of `key` its head, if the key has no head.
pub(crate) fn promote(
    conn: &Connection,
    inner: &Inner,
    key: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    conn.prepare_cached(&inner.sql.promote)
        .and_then(|mut stmt| {
            stmt.execute(rusqlite::named_params! {":key": key, ":now": to_millis(now)})
        })
        .map_err(|e| store_error("settle", e))?;
    Ok(())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    fn capabilities(&self) -> StoreCapabilities {
        // One writer at a time: ids are handed out and committed in the same order. Only
        // key heads are due, so claims never wade through a busy key's queue.
        let mut capabilities = StoreCapabilities::default();
        capabilities.skips_busy_keys = true;
        capabilities
    }

    async fn claim(&self, options: &ClaimOptions) -> Result<Claim> {
        let options = options.clone();
        self.with_conn("claim", move |conn, inner| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| store_error("claim", e))?;
            // After BEGIN IMMEDIATE: waiting for the write lock must not shorten the lease.
            let now = inner.config.clock.now();
            let lease = Lease {
                token: LeaseToken::new(),
                expires_at: add_duration(now, options.lease_duration),
            };
            let messages = claim_in(&tx, inner, &options, now, &lease)?;
            tx.commit().map_err(|e| store_error("claim", e))?;
            Ok(Claim { lease, messages })
        })
        .await
    }

    async fn settle(&self, lease: &Lease, settlements: &[Settlement]) -> Result<SettleReport> {
        let token = lease.token.to_string();
        let settlements = settlements.to_vec();
        self.with_conn("settle", move |conn, inner| {
            let now = inner.config.clock.now();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| store_error("settle", e))?;
            let mut report = SettleReport::default();
            let mut keys = std::collections::BTreeSet::new();
            for settlement in &settlements {
                if matches!(settlement.action, SettleAction::Published | SettleAction::Dead { .. } | SettleAction::Release)
                    && let Some(key) = key_of(&tx, inner, settlement.id)? {
                        keys.insert(key);
                    }
                let id = settlement.id;
                let changed = match &settlement.action {
                    SettleAction::Published => {
                        let sql = if inner.config.keep_published {
                            &inner.sql.publish_keep
                        } else {
                            &inner.sql.publish_delete
                        };
                        let mut stmt = tx.prepare_cached(sql).map_err(|e| store_error("settle", e))?;
                        if inner.config.keep_published {
                            stmt.execute(rusqlite::named_params! {":id": id, ":token": token, ":now": to_millis(now)})
                        } else {
                            stmt.execute(rusqlite::named_params! {":id": id, ":token": token})
                        }
                    }
                    SettleAction::Retry { delay, error } => {
                        let at = to_millis(now).saturating_add(millis(*delay));
                        tx.prepare_cached(&inner.sql.retry).and_then(|mut stmt| {
                            stmt.execute(rusqlite::named_params! {
                                ":id": id, ":token": token, ":error": error, ":at": at,
                            })
                        })
                    }
                    SettleAction::Dead { reason } => tx
                        .prepare_cached(&inner.sql.dead)
                        .and_then(|mut stmt| {
                            stmt.execute(rusqlite::named_params! {
                                ":id": id, ":token": token, ":error": reason, ":now": to_millis(now),
                            })
                        }),
                    SettleAction::Release => tx
                        .prepare_cached(&inner.sql.release)
                        .and_then(|mut stmt| {
                            stmt.execute(rusqlite::named_params! {":id": id, ":token": token})
                        }),
                }
                .map_err(|e| store_error("settle", e))?;
                if changed == 1 {
                    report.applied += 1;
                } else {
                    report.lost += 1;
                }
            }
            // After all rows: a key whose head left gets its next message as head.
            for key in keys {
                promote(&tx, inner, &key, now)?;
            }
            tx.commit().map_err(|e| store_error("settle", e))?;
            Ok(report)
        })
        .await
    }

    async fn renew(&self, lease: &Lease, duration: Duration) -> Result<Lease> {
        let token = lease.token;
        self.with_conn("renew", move |conn, inner| {
            let expires_at = add_duration(inner.config.clock.now(), duration);
            let renewed = conn
                .prepare_cached(&inner.sql.renew)
                .and_then(|mut stmt| {
                    stmt.execute(rusqlite::named_params! {
                        ":until": to_millis(expires_at), ":token": token.to_string(),
                    })
                })
                .map_err(|e| store_error("renew", e))?;
            if renewed == 0 {
                return Err(Error::LeaseLost { token });
            }
            Ok(Lease { token, expires_at })
        })
        .await
    }

    async fn backlog(&self) -> Result<Backlog> {
        self.with_conn("backlog", move |conn, inner| {
            let now = to_millis(inner.config.clock.now());
            let (pending, leased, dead, oldest): (i64, i64, i64, Option<i64>) = conn
                .query_row(
                    &inner.sql.backlog,
                    rusqlite::named_params! {":now": now},
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )
                .map_err(|e| store_error("backlog", e))?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(Backlog {
                pending: count(pending),
                leased: count(leased),
                dead: count(dead),
                oldest_pending_at: oldest.map(from_millis),
            })
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn("dead_letters", move |conn, inner| {
            let mut stmt = conn
                .prepare_cached(&inner.sql.dead_letters)
                .map_err(|e| store_error("dead_letters", e))?;
            let rows = stmt
                .query_map(rusqlite::named_params! {":limit": limit}, |row| {
                    Ok((read_raw(row)?, row.get::<_, String>(8)?))
                })
                .map_err(|e| store_error("dead_letters", e))?;
            let mut dead = Vec::new();
            for row in rows {
                let (raw, reason) = row.map_err(|e| store_error("dead_letters", e))?;
                dead.push(DeadLetter {
                    message: raw.decode_lenient(),
                    reason,
                });
            }
            Ok(dead)
        })
        .await
    }

    async fn requeue_dead(&self, ids: &[i64]) -> Result<u64> {
        let ids = ids.to_vec();
        self.with_conn("requeue_dead", move |conn, inner| {
            let now = to_millis(inner.config.clock.now());
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| store_error("requeue_dead", e))?;
            let mut requeued = 0u64;
            {
                let mut stmt = tx
                    .prepare_cached(&inner.sql.requeue)
                    .map_err(|e| store_error("requeue_dead", e))?;
                for id in ids {
                    let requeued_key: Option<Option<String>> = stmt
                        .query_row(rusqlite::named_params! {":id": id, ":now": now}, |row| {
                            row.get(0)
                        })
                        .optional()
                        .map_err(|e| store_error("requeue_dead", e))?;
                    let Some(key) = requeued_key else { continue };
                    requeued += 1;
                    if let Some(key) = key {
                        tx.prepare_cached(&inner.sql.demote_later_heads)
                            .and_then(|mut demote| {
                                demote.execute(rusqlite::named_params! {
                                    ":key": key, ":id": id, ":now": now,
                                })
                            })
                            .map_err(|e| store_error("requeue_dead", e))?;
                    }
                }
            }
            tx.commit().map_err(|e| store_error("requeue_dead", e))?;
            Ok(requeued)
        })
        .await
    }

    async fn purge_published(&self, older_than: Duration) -> Result<u64> {
        self.with_conn("purge_published", move |conn, inner| {
            let before = to_millis(inner.config.clock.now()).saturating_sub(millis(older_than));
            let purged = conn
                .execute(
                    &inner.sql.purge,
                    rusqlite::named_params! {":before": before},
                )
                .map_err(|e| store_error("purge_published", e))?;
            Ok(purged as u64)
        })
        .await
    }
}
