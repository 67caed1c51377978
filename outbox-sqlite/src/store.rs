//! The relay side: [`Store`] over a SQLite file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use outbox_core::{
    Backlog, Claim, ClaimOptions, DeadLetter, Error, Lease, LeaseToken, Result, SettleAction,
    SettleReport, Settlement, Store, StoreCapabilities, add_duration, validate_identifier,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::config::SqliteConfig;
use crate::error::{store_error, task_error};
use crate::row::{MESSAGE_COLUMNS, from_millis, read_raw, to_millis};
use crate::schema::migrate;

/// SQL text built once from the validated table name.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) insert: String,
    claim: String,
    publish_delete: String,
    publish_keep: String,
    retry: String,
    push_followers: String,
    dead: String,
    release: String,
    renew: String,
    backlog: String,
    dead_letters: String,
    requeue: String,
    purge: String,
}

impl Sql {
    fn new(t: &str) -> Self {
        let held = "id = :id AND lease_token = :token AND status = 0";
        Sql {
            // Never due before the key's last unsettled message (keeps available_at
            // non-decreasing along the key).
            insert: format!(
                "INSERT INTO {t} (message_id, topic, msg_key, payload, headers, created_at, available_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, max(?7, coalesce(
                   (SELECT available_at FROM {t} WHERE status = 0 AND msg_key = ?3 ORDER BY id DESC LIMIT 1),
                   ?7)))"
            ),
            // Candidates: the first `window` due, unleased rows in (available_at, id) order,
            // so the claim's cost does not grow with the backlog. Because available_at
            // never decreases along a key, a key's earlier rows come first in this order
            // and none of them is still waiting; a keyed candidate is then taken unless an
            // earlier row of its key is leased (looked up in the small leased index), and
            // the LIMIT keeps each key's run a prefix.
            claim: format!(
                "UPDATE {t} SET lease_token = :token, lease_until = :until
                 WHERE id IN (
                   SELECT m.id FROM (
                     SELECT id, msg_key, available_at FROM {t}
                     WHERE status = 0 AND available_at <= :now AND coalesce(lease_until, 0) <= :now
                     ORDER BY available_at, id LIMIT :window) m
                   WHERE m.msg_key IS NULL OR NOT EXISTS (
                     SELECT 1 FROM {t} e
                     WHERE e.status = 0 AND e.lease_token IS NOT NULL AND e.msg_key = m.msg_key
                       AND e.id < m.id AND e.lease_until > :now)
                   ORDER BY m.available_at, m.id LIMIT :limit)
                 RETURNING {MESSAGE_COLUMNS}"
            ),
            publish_delete: format!("DELETE FROM {t} WHERE {held}"),
            publish_keep: format!(
                "UPDATE {t} SET status = 1, settled_at = :now, lease_token = NULL, lease_until = NULL
                 WHERE {held}"
            ),
            retry: format!(
                "UPDATE {t} SET attempts = attempts + 1, available_at = :at, last_error = :error,
                   lease_token = NULL, lease_until = NULL
                 WHERE {held}"
            ),
            dead: format!(
                "UPDATE {t} SET status = 2, attempts = attempts + 1, last_error = :error,
                   settled_at = :now, lease_token = NULL, lease_until = NULL
                 WHERE {held}"
            ),
            // A retried message's later messages of its key become due no earlier than it.
            push_followers: format!(
                "UPDATE {t} SET available_at = max(available_at, :at)
                 WHERE status = 0 AND id > :id
                   AND msg_key = (SELECT msg_key FROM {t} WHERE id = :id)"
            ),
            release: format!(
                "UPDATE {t} SET lease_token = NULL, lease_until = NULL WHERE {held}"
            ),
            renew: format!(
                "UPDATE {t} SET lease_until = :until WHERE lease_token = :token AND status = 0"
            ),
            backlog: format!(
                "SELECT
                   count(*) FILTER (WHERE status = 0),
                   count(*) FILTER (WHERE status = 0 AND lease_until > :now),
                   count(*) FILTER (WHERE status = 2),
                   min(created_at) FILTER (WHERE status = 0)
                 FROM {t}"
            ),
            dead_letters: format!(
                "SELECT {MESSAGE_COLUMNS}, coalesce(last_error, '') FROM {t}
                 WHERE status = 2 ORDER BY id LIMIT :limit"
            ),
            // Due now, but not before the earlier unsettled messages of its key.
            requeue: format!(
                "UPDATE {t} SET status = 0, attempts = 0, last_error = NULL, settled_at = NULL,
                   available_at = max(:now, coalesce((SELECT max(e.available_at) FROM {t} e
                     WHERE e.status = 0 AND e.msg_key = {t}.msg_key AND e.id < {t}.id), :now))
                 WHERE id = :id AND status = 2
                 RETURNING available_at"
            ),
            purge: format!("DELETE FROM {t} WHERE status = 1 AND settled_at <= :before"),
        }
    }
}

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

/// Keeps `available_at` non-decreasing along a key after message `id` became due at `at`.
fn push_followers(conn: &Connection, inner: &Inner, id: i64, at: i64) -> Result<()> {
    conn.prepare_cached(&inner.sql.push_followers)
        .and_then(|mut stmt| stmt.execute(rusqlite::named_params! {":id": id, ":at": at}))
        .map_err(|e| store_error("settle", e))?;
    Ok(())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store for SqliteStore {
    fn capabilities(&self) -> StoreCapabilities {
        // One writer at a time: ids are handed out and committed in the same order.
        StoreCapabilities::default()
    }

    async fn claim(&self, options: &ClaimOptions) -> Result<Claim> {
        let limit = i64::try_from(options.batch_size).unwrap_or(i64::MAX);
        let lease_duration = options.lease_duration;
        self.with_conn("claim", move |conn, inner| {
            let now = inner.config.clock.now();
            let lease = Lease {
                token: LeaseToken::new(),
                expires_at: add_duration(now, lease_duration),
            };
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| store_error("claim", e))?;
            let raws = {
                let mut stmt = tx
                    .prepare_cached(&inner.sql.claim)
                    .map_err(|e| store_error("claim", e))?;
                let rows = stmt
                    .query_map(
                        rusqlite::named_params! {
                            ":token": lease.token.to_string(),
                            ":until": to_millis(lease.expires_at),
                            ":now": to_millis(now),
                            ":limit": limit,
                            ":window": limit.saturating_mul(2).max(200),
                        },
                        read_raw,
                    )
                    .map_err(|e| store_error("claim", e))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(|e| store_error("claim", e))?
            };
            tx.commit().map_err(|e| store_error("claim", e))?;
            let mut messages = raws
                .into_iter()
                .map(|raw| raw.decode("claim"))
                .collect::<Result<Vec<_>>>()?;
            messages.sort_by_key(|m| m.id);
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
            let mut retried = Vec::new();
            for settlement in &settlements {
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
                        retried.push((id, at));
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
                    retried.retain(|(retried_id, _)| *retried_id != id);
                }
            }
            // After all rows, so that a run released in this settlement is pushed too.
            for (id, at) in retried {
                push_followers(&tx, inner, id, at)?;
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
                    message: raw.decode("dead_letters")?,
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
                    let due: Option<i64> = stmt
                        .query_row(rusqlite::named_params! {":id": id, ":now": now}, |row| {
                            row.get(0)
                        })
                        .optional()
                        .map_err(|e| store_error("requeue_dead", e))?;
                    if let Some(at) = due {
                        push_followers(&tx, inner, id, at)?;
                        requeued += 1;
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
