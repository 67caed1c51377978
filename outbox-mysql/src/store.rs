//! The relay side: [`Store`] over a MySQL or MariaDB table.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use outbox_core::{
    Backlog, Claim, ClaimOptions, DeadLetter, Error, Lease, LeaseToken, Result, SettleAction,
    SettleReport, Settlement, Store, StoreCapabilities, add_duration,
};
use sqlx::mysql::{MySqlPoolOptions, MySqlRow};
use sqlx::{MySql, MySqlConnection, MySqlPool, Row, Transaction};

use crate::claim::{Head, KeyRow, Plan, add_runs, choose_heads, per_leader};
use crate::config::MySqlConfig;
use crate::enqueue::key_hash;
use crate::error::store_error;
use crate::row::{optional_text, optional_utc, read_message, read_message_lenient, utc};
use crate::schema::migrate;
use crate::sql::{BEGIN_READ_COMMITTED, HEAD, PURGE_CHUNK, Sql, bind_padded};
use crate::version::{ServerVersion, check_server};

/// Values per `IN (...)` list; longer lists are split into several statements.
const MAX_LIST: usize = 1_000;
/// Keys per statement that looks up each key's oldest message.
const MAX_KEYS: usize = 256;
/// Rounds of a claim (see [`MySqlStore::plan_round`]).
const MAX_ROUNDS: usize = 16;

/// What one round of a claim found.
struct Round {
    /// The database's clock.
    now: DateTime<Utc>,
    plan: Plan,
    /// The due rows read, with all their columns, by id.
    rows: HashMap<i64, MySqlRow>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: MySqlConfig,
    pub(crate) sql: Sql,
    pub(crate) pool: MySqlPool,
}

/// An outbox in a MySQL (8.0 and later) or MariaDB (10.6 and later) table.
///
/// Create it with [`MySqlStore::connect`] or [`MySqlStore::new`], run
/// [`migrate`](Self::migrate) once at start (it also refuses servers that are too old),
/// enqueue with [`enqueue`](Self::enqueue) in your own sqlx transaction, and hand the
/// store to a [`Relay`](outbox_core::Relay). Any number of relays, in any number of
/// processes, can share the table. Clones share the pool. `Debug` output never contains
/// the connection string.
///
/// ```no_run
/// # async fn demo() -> outbox_core::Result<()> {
/// use outbox_mysql::{MySqlConfig, MySqlStore};
///
/// let store = MySqlStore::connect("mysql://app:secret@127.0.0.1:3306/shop", MySqlConfig::default()).await?;
/// store.migrate().await?;
/// assert!(!format!("{store:?}").contains("secret"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MySqlStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlStore")
            .field("table", &self.inner.config.table)
            .finish_non_exhaustive()
    }
}

/// The latest time a `DATETIME` column holds.
fn datetime_max() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc())
}

/// `at + duration`, saturating at the latest `DATETIME`.
fn later(at: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    add_duration(at, duration).min(datetime_max())
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl MySqlStore {
    /// A store on an existing pool (share your application's pool, or give the relay its
    /// own). Fails if the configured table name is not a plain identifier.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use outbox_mysql::{MySqlConfig, MySqlStore, sqlx};
    ///
    /// let pool = sqlx::mysql::MySqlPoolOptions::new()
    ///     .max_connections(16)
    ///     .connect("mysql://root@127.0.0.1:3306/test")
    ///     .await?;
    /// let store = MySqlStore::new(pool, MySqlConfig::default())?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub fn new(pool: MySqlPool, config: MySqlConfig) -> Result<Self> {
        config.validate()?;
        let sql = Sql::new(&config.table, config.recheck_micros());
        Ok(MySqlStore {
            inner: Arc::new(Inner { config, sql, pool }),
        })
    }

    /// Connects a pool of up to 8 connections to `url`, checks the server version (see
    /// [`ServerVersion::check`]) and creates the store on it. The URL (and its password)
    /// appears in no log and no error.
    ///
    /// ```no_run
    /// # async fn demo() -> outbox_core::Result<()> {
    /// let store = outbox_mysql::MySqlStore::connect(
    ///     "mysql://root@127.0.0.1:3306/test",
    ///     outbox_mysql::MySqlConfig::default(),
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str, config: MySqlConfig) -> Result<Self> {
        config.validate()?;
        let pool = MySqlPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| store_error("connect", e))?;
        let store = Self::new(pool, config)?;
        store.server_version().await?;
        Ok(store)
    }

    /// Checks the server version, then creates or upgrades the outbox tables. Tracked in
    /// `<table>_migrations` (never the application's `_sqlx_migrations`); safe when
    /// several processes run it at once (they take turns on a `GET_LOCK` named after the
    /// database and table).
    ///
    /// ```no_run
    /// # async fn demo(store: outbox_mysql::MySqlStore) -> outbox_core::Result<()> {
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<()> {
        migrate(&self.inner.pool, &self.inner.config.table).await?;
        Ok(())
    }

    /// The server's version; an [`Error::InvalidConfig`] naming the version found and the
    /// one needed if the server is too old (MySQL before 8.0, MariaDB before 10.6).
    ///
    /// ```no_run
    /// # async fn demo(store: outbox_mysql::MySqlStore) -> outbox_core::Result<()> {
    /// println!("outbox on {}", store.server_version().await?);
    /// # Ok(()) }
    /// ```
    pub async fn server_version(&self) -> Result<ServerVersion> {
        let mut conn = self
            .inner
            .pool
            .acquire()
            .await
            .map_err(|e| store_error("version", e))?;
        check_server(&mut conn).await
    }

    /// The pool.
    ///
    /// ```no_run
    /// # async fn demo(store: outbox_mysql::MySqlStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin().await?;
    /// # tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn pool(&self) -> &MySqlPool {
        &self.inner.pool
    }

    /// The settings.
    ///
    /// ```no_run
    /// # fn demo(store: outbox_mysql::MySqlStore) {
    /// assert_eq!(store.config().table, "outbox_messages");
    /// # }
    /// ```
    pub fn config(&self) -> &MySqlConfig {
        &self.inner.config
    }

    /// A READ COMMITTED transaction of the store's own (see [`BEGIN_READ_COMMITTED`]).
    async fn begin(&self, operation: &'static str) -> Result<Transaction<'static, MySql>> {
        self.inner
            .pool
            .begin_with(BEGIN_READ_COMMITTED)
            .await
            .map_err(|e| store_error(operation, e))
    }

    /// The oldest unsettled row of each of `keys` (key hashes).
    async fn oldest(
        &self,
        conn: &mut MySqlConnection,
        operation: &'static str,
        keys: &[i64],
    ) -> Result<HashMap<i64, i64>> {
        let err = |e| store_error(operation, e);
        let mut oldest = HashMap::new();
        for keys in keys.chunks(MAX_KEYS) {
            let sql = self.inner.sql.oldest(keys.len());
            let row = bind_padded(sqlx::query(&sql), keys)
                .fetch_one(&mut *conn)
                .await
                .map_err(err)?;
            for (index, key) in keys.iter().enumerate() {
                if let Some(id) = row.try_get::<Option<i64>, _>(index).map_err(err)? {
                    oldest.insert(*key, id);
                }
            }
        }
        Ok(oldest)
    }

    /// Which of `keys` (key hashes) have a message under an unexpired lease.
    async fn held_keys(&self, conn: &mut MySqlConnection, keys: &[i64]) -> Result<HashSet<i64>> {
        let err = |e| store_error("claim", e);
        let mut held = HashSet::new();
        for keys in keys.chunks(MAX_LIST) {
            let sql = self.inner.sql.held_keys(keys.len());
            for row in &bind_padded(sqlx::query(&sql), keys)
                .fetch_all(&mut *conn)
                .await
                .map_err(err)?
            {
                held.insert(row.try_get(0).map_err(err)?);
            }
        }
        Ok(held)
    }

    /// The rows behind each leader (a head's id and key hash), up to `limit` each.
    async fn runs(
        &self,
        conn: &mut MySqlConnection,
        leaders: &[(i64, i64)],
        limit: usize,
    ) -> Result<HashMap<i64, Vec<KeyRow>>> {
        let err = |e| store_error("claim", e);
        let mut runs: HashMap<i64, Vec<KeyRow>> = HashMap::new();
        if leaders.is_empty() || limit == 0 {
            return Ok(runs);
        }
        let sql = self.inner.sql.runs(leaders.len());
        let mut query = sqlx::query(&sql);
        for index in 0..crate::sql::padded(leaders.len()) {
            let (head, key) = leaders[index.min(leaders.len() - 1)];
            query = query
                .bind(key)
                .bind(head)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        for row in &query.fetch_all(&mut *conn).await.map_err(err)? {
            let index: i64 = row.try_get(0).map_err(err)?;
            let Some((head, _)) = usize::try_from(index).ok().and_then(|i| leaders.get(i)) else {
                continue;
            };
            let flag =
                |i: usize| -> Result<bool> { Ok(row.try_get::<i64, _>(i).map_err(err)? != 0) };
            runs.entry(*head).or_default().push(KeyRow {
                id: row.try_get(1).map_err(err)?,
                waits: row.try_get::<i64, _>(2).map_err(err)? != 0,
                ripe: flag(3)?,
                held: flag(4)?,
            });
        }
        for rows in runs.values_mut() {
            rows.sort_by_key(|row| row.id);
            rows.dedup_by_key(|row| row.id);
        }
        Ok(runs)
    }

    /// After messages of `keys` (key hashes) left (published, dead) or were released,
    /// each key's oldest unsettled message becomes its head if it was waiting, due at its
    /// not-before time or `now`.
    async fn promote(
        &self,
        conn: &mut MySqlConnection,
        operation: &'static str,
        keys: &HashSet<i64>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<i64> = keys.iter().copied().collect();
        let oldest: Vec<i64> = self
            .oldest(conn, operation, &keys)
            .await?
            .into_values()
            .collect();
        for ids in oldest.chunks(MAX_LIST) {
            let sql = self.inner.sql.promote(ids.len());
            let query = sqlx::query(&sql)
                .bind(now.naive_utc())
                .bind(now.naive_utc());
            bind_padded(query, ids)
                .execute(&mut *conn)
                .await
                .map_err(|e| store_error(operation, e))?;
        }
        Ok(())
    }

    /// One round of a claim: reads up to `limit` due rows, promotes and demotes what
    /// needs it, and returns the plan; `None` when nothing is due.
    async fn plan_round(&self, conn: &mut MySqlConnection, limit: usize) -> Result<Option<Round>> {
        let err = |e| store_error("claim", e);
        let sql = &self.inner.sql;
        let rows = sqlx::query(&sql.heads)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *conn)
            .await
            .map_err(err)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let now = utc(first, 10, "claim")?;
        let mut heads = Vec::with_capacity(rows.len());
        for row in &rows {
            heads.push(Head {
                id: row.try_get(0).map_err(err)?,
                key: row.try_get(9).map_err(err)?,
                attempts: row.try_get::<i32, _>(6).map_err(err)?.into(),
                verified: row.try_get::<i8, _>(8).map_err(err)? == HEAD,
            });
        }
        // Only unverified heads need their key's oldest message looked up.
        let mut unverified: Vec<i64> = heads
            .iter()
            .filter(|h| !h.verified)
            .filter_map(|h| h.key)
            .collect();
        unverified.sort_unstable();
        unverified.dedup();
        let mut keys: Vec<i64> = heads.iter().filter_map(|h| h.key).collect();
        keys.sort_unstable();
        keys.dedup();
        let oldest = if unverified.is_empty() {
            HashMap::new()
        } else {
            self.oldest(conn, "claim", &unverified).await?
        };
        let held = if keys.is_empty() {
            HashSet::new()
        } else {
            self.held_keys(conn, &keys).await?
        };
        let mut plan = choose_heads(&heads, &oldest, &held, limit);
        let leaders: Vec<(i64, i64)> = plan
            .leaders
            .iter()
            .filter_map(|id| heads.iter().find(|h| h.id == *id))
            .filter_map(|h| h.key.map(|key| (h.id, key)))
            .collect();
        // One more row than a run may take, to see where it ends.
        let runs = self
            .runs(conn, &leaders, per_leader(&plan, limit) + 1)
            .await?;
        add_runs(&mut plan, &runs, limit);
        let demote = self.still_behind(conn, &plan.demote).await?;
        for (ids, statement) in [
            (&plan.promote, Sql::promote as fn(&Sql, usize) -> String),
            (&demote, Sql::demote),
        ] {
            for ids in ids.chunks(MAX_LIST) {
                let statement = statement(sql, ids.len());
                let query = sqlx::query(&statement)
                    .bind(now.naive_utc())
                    .bind(now.naive_utc());
                bind_padded(query, ids)
                    .execute(&mut *conn)
                    .await
                    .map_err(err)?;
            }
        }
        let rows = heads.iter().map(|h| h.id).zip(rows).collect();
        Ok(Some(Round { now, plan, rows }))
    }

    /// The rows of `demote` (each with the older row it waits behind) whose older row is
    /// still unsettled, share-locking those older rows until the claim commits. A settle
    /// that removes one of them then promotes after the claim made its row wait, never
    /// before: no row is left waiting behind one that is gone.
    async fn still_behind(
        &self,
        conn: &mut MySqlConnection,
        demote: &[(i64, i64)],
    ) -> Result<Vec<i64>> {
        let err = |e| store_error("claim", e);
        let mut older: Vec<i64> = demote.iter().map(|(_, older)| *older).collect();
        older.sort_unstable();
        older.dedup();
        let mut unsettled = HashSet::new();
        for ids in older.chunks(MAX_LIST) {
            let statement = self.inner.sql.lock_unsettled(ids.len());
            for row in &bind_padded(sqlx::query(&statement), ids)
                .fetch_all(&mut *conn)
                .await
                .map_err(err)?
            {
                unsettled.insert(row.try_get::<i64, _>(0).map_err(err)?);
            }
        }
        Ok(demote
            .iter()
            .filter(|(_, older)| unsettled.contains(older))
            .map(|(row, _)| *row)
            .collect())
    }

    /// Takes the table's claim lock for the rest of the transaction: claims (and requeues,
    /// which change which message is a key's oldest) run one at a time per table.
    async fn lock_claims(&self, conn: &mut MySqlConnection, operation: &'static str) -> Result<()> {
        sqlx::query(&self.inner.sql.claim_lock)
            .fetch_optional(conn)
            .await
            .map_err(|e| store_error(operation, e))?;
        Ok(())
    }

    /// The database's clock.
    async fn db_now(
        &self,
        conn: &mut MySqlConnection,
        operation: &'static str,
    ) -> Result<DateTime<Utc>> {
        let row = sqlx::query(self.inner.sql.now)
            .fetch_one(conn)
            .await
            .map_err(|e| store_error(operation, e))?;
        utc(&row, 0, operation)
    }

    /// Runs a settle statement over `ids` (bound after `before`, then the token) in
    /// chunks; returns the rows it changed.
    async fn settle_ids(
        conn: &mut MySqlConnection,
        sql: impl Fn(usize) -> String,
        ids: &[i64],
        token: uuid::Uuid,
    ) -> Result<u64> {
        let mut changed = 0;
        for ids in ids.chunks(MAX_LIST) {
            let sql = sql(ids.len());
            changed += bind_padded(sqlx::query(&sql), ids)
                .bind(token)
                .execute(&mut *conn)
                .await
                .map_err(|e| store_error("settle", e))?
                .rows_affected();
        }
        Ok(changed)
    }
}

impl Store for MySqlStore {
    fn capabilities(&self) -> StoreCapabilities {
        let mut capabilities = StoreCapabilities::default();
        capabilities.concurrent_writers = true;
        capabilities
    }

    async fn claim(&self, options: &ClaimOptions) -> Result<Claim> {
        let err = |e| store_error("claim", e);
        let token = LeaseToken::new();
        let empty = |now: DateTime<Utc>| Claim {
            lease: Lease {
                token,
                expires_at: later(now, options.lease_duration),
            },
            messages: Vec::new(),
        };
        let limit = options.batch_size;
        if limit == 0 {
            return Ok(empty(Utc::now()));
        }
        let sql = &self.inner.sql;
        let mut tx = self.begin("claim").await?;
        self.lock_claims(&mut tx, "claim").await?;
        let mut ids: Vec<i64> = Vec::new();
        let mut read: HashMap<i64, MySqlRow> = HashMap::new();
        let mut expires_at = None;
        // Rows that were promoted or made to wait leave the due range, and taken rows are
        // leased at once, so a round that only promoted or demoted is followed by another:
        // a claim does not come back empty while messages are due.
        for _ in 0..MAX_ROUNDS {
            let Some(Round {
                now,
                plan,
                mut rows,
            }) = self.plan_round(&mut tx, limit - ids.len()).await?
            else {
                break;
            };
            let until = *expires_at.get_or_insert_with(|| later(now, options.lease_duration));
            for ids in plan.take.chunks(MAX_LIST) {
                let lease = sql.lease(ids.len());
                let query = sqlx::query(&lease)
                    .bind(token.as_uuid())
                    .bind(until.naive_utc());
                bind_padded(query, ids)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            ids.extend(&plan.take);
            read.extend(plan.take.iter().filter_map(|id| rows.remove_entry(id)));
            let progress = !plan.promote.is_empty() || !plan.demote.is_empty();
            if ids.len() >= limit || !progress {
                break;
            }
        }
        let Some(expires_at) = expires_at.filter(|_| !ids.is_empty()) else {
            tx.commit().await.map_err(err)?;
            return Ok(empty(Utc::now()));
        };
        // Heads came with their columns; read the runs behind them.
        let followers: Vec<i64> = ids
            .iter()
            .filter(|id| !read.contains_key(id))
            .copied()
            .collect();
        let mut rows: Vec<MySqlRow> = read.into_values().collect();
        for ids in followers.chunks(MAX_LIST) {
            let fetch = sql.fetch(ids.len());
            rows.extend(
                bind_padded(sqlx::query(&fetch), ids)
                    .bind(token.as_uuid())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(err)?,
            );
        }
        let mut messages = Vec::with_capacity(ids.len());
        let mut unreadable_keys = HashSet::new();
        for row in &rows {
            match read_message(row, "claim") {
                Ok(message) => messages.push(message),
                // A row that cannot be read back would stall its key for ever: make it
                // dead, with the reason, and let the rest of the key go on.
                Err(unreadable) => {
                    let id: i64 = row.try_get(0).map_err(err)?;
                    tracing::error!(id, error = %unreadable.report(), "unreadable outbox row made dead");
                    sqlx::query(&sql.mark_unreadable)
                        .bind(unreadable.report().to_string())
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                    if let Ok(Some(key)) = optional_text(row, 3, "claim") {
                        unreadable_keys.insert(key_hash(&key));
                    }
                }
            }
        }
        if !unreadable_keys.is_empty() {
            let now = self.db_now(&mut tx, "claim").await?;
            self.promote(&mut tx, "claim", &unreadable_keys, now)
                .await?;
        }
        tx.commit().await.map_err(err)?;
        messages.sort_by_key(|m| m.id);
        Ok(Claim {
            lease: Lease { token, expires_at },
            messages,
        })
    }

    async fn settle(&self, lease: &Lease, settlements: &[Settlement]) -> Result<SettleReport> {
        let err = |e| store_error("settle", e);
        if settlements.is_empty() {
            return Ok(SettleReport::default());
        }
        let token = lease.token.as_uuid();
        let sql = &self.inner.sql;
        let mut tx = self.begin("settle").await?;
        // Lock the rows this lease still holds; only those are settled.
        let mut all: Vec<i64> = settlements.iter().map(|s| s.id).collect();
        all.sort_unstable();
        all.dedup();
        let mut held: HashMap<i64, Option<i64>> = HashMap::new();
        let mut now = None;
        for ids in all.chunks(MAX_LIST) {
            let statement = sql.held_rows(ids.len());
            let rows = bind_padded(sqlx::query(&statement), ids)
                .bind(token)
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
            for row in &rows {
                held.insert(row.try_get(0).map_err(err)?, row.try_get(1).map_err(err)?);
                now = Some(utc(row, 2, "settle")?);
            }
        }
        let Some(now) = now else {
            tx.commit().await.map_err(err)?;
            return Ok(SettleReport {
                applied: 0,
                lost: settlements.len(),
            });
        };
        let mut published = Vec::new();
        let mut released = Vec::new();
        let mut dead: Vec<(i64, &str)> = Vec::new();
        let mut retries: Vec<(i64, &str, DateTime<Utc>)> = Vec::new();
        let mut promote = HashSet::new();
        let mut applied = 0;
        for settlement in settlements {
            let Some(key) = held.get(&settlement.id) else {
                continue;
            };
            applied += 1;
            let id = settlement.id;
            match &settlement.action {
                SettleAction::Published => published.push(id),
                SettleAction::Release => released.push(id),
                SettleAction::Dead { reason } => dead.push((id, reason.as_str())),
                SettleAction::Retry { delay, error } => {
                    retries.push((id, error.as_str(), later(now, *delay)));
                }
            }
            if !matches!(settlement.action, SettleAction::Retry { .. }) {
                promote.extend(*key);
            }
        }
        if !published.is_empty() {
            let statement = |n| {
                if self.inner.config.keep_published {
                    sql.publish_keep(n)
                } else {
                    sql.publish_delete(n)
                }
            };
            Self::settle_ids(&mut tx, statement, &published, token).await?;
        }
        if !released.is_empty() {
            Self::settle_ids(&mut tx, |n| sql.release(n), &released, token).await?;
        }
        for dead in dead.chunks(MAX_LIST) {
            let statement = sql.dead(dead.len());
            let mut query = sqlx::query(&statement);
            for index in 0..crate::sql::padded(dead.len()) {
                let (id, reason) = dead[index.min(dead.len() - 1)];
                query = query.bind(id).bind(reason);
            }
            let ids: Vec<i64> = dead.iter().map(|(id, _)| *id).collect();
            bind_padded(query, &ids)
                .bind(token)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        for retries in retries.chunks(MAX_LIST) {
            let statement = sql.retry(retries.len());
            let mut query = sqlx::query(&statement);
            let last = retries.len() - 1;
            for index in 0..crate::sql::padded(retries.len()) {
                let (id, error, _) = retries[index.min(last)];
                query = query.bind(id).bind(error);
            }
            for index in 0..crate::sql::padded(retries.len()) {
                let (id, _, at) = retries[index.min(last)];
                query = query.bind(id).bind(at.naive_utc());
            }
            let ids: Vec<i64> = retries.iter().map(|(id, ..)| *id).collect();
            bind_padded(query, &ids)
                .bind(token)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        self.promote(&mut tx, "settle", &promote, now).await?;
        tx.commit().await.map_err(err)?;
        Ok(SettleReport {
            applied,
            lost: settlements.len() - applied,
        })
    }

    async fn renew(&self, lease: &Lease, duration: Duration) -> Result<Lease> {
        let err = |e| store_error("renew", e);
        let pool = &self.inner.pool;
        let now = utc(
            &sqlx::query(self.inner.sql.now)
                .fetch_one(pool)
                .await
                .map_err(err)?,
            0,
            "renew",
        )?;
        let expires_at = later(now, duration);
        let renewed = sqlx::query(&self.inner.sql.renew)
            .bind(expires_at.naive_utc())
            .bind(lease.token.as_uuid())
            .execute(pool)
            .await
            .map_err(err)?
            .rows_affected();
        if renewed == 0 {
            return Err(Error::LeaseLost { token: lease.token });
        }
        Ok(Lease {
            token: lease.token,
            expires_at,
        })
    }

    async fn backlog(&self) -> Result<Backlog> {
        let err = |e| store_error("backlog", e);
        let row = sqlx::query(&self.inner.sql.backlog)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(err)?;
        let count = |i: usize| -> Result<u64> {
            let n: i64 = row.try_get(i).map_err(err)?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(Backlog {
            pending: count(0)?,
            leased: count(1)?,
            dead: count(2)?,
            oldest_pending_at: optional_utc(&row, 3, "backlog")?,
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(&self.inner.sql.dead_letters)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| store_error("dead_letters", e))?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    message: read_message_lenient(row, "dead_letters")?,
                    reason: optional_text(row, 8, "dead_letters")?.unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn requeue_dead(&self, ids: &[i64]) -> Result<u64> {
        let err = |e| store_error("requeue_dead", e);
        if ids.is_empty() {
            return Ok(0);
        }
        let sql = &self.inner.sql;
        let mut tx = self.begin("requeue_dead").await?;
        self.lock_claims(&mut tx, "requeue_dead").await?;
        let mut requeued = 0;
        for ids in ids.chunks(MAX_LIST) {
            let select = sql.dead_rows(ids.len());
            let dead = bind_padded(sqlx::query(&select), ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(err)?;
            let statement = sql.requeue(ids.len());
            requeued += bind_padded(sqlx::query(&statement), ids)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected();
            for row in &dead {
                let id: i64 = row.try_get(0).map_err(err)?;
                if let Some(key) = row.try_get::<Option<i64>, _>(1).map_err(err)? {
                    sqlx::query(&sql.unverify_later_heads)
                        .bind(key)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(requeued)
    }

    async fn purge_published(&self, older_than: Duration) -> Result<u64> {
        let mut purged = 0;
        loop {
            let deleted = sqlx::query(&self.inner.sql.purge)
                .bind(micros(older_than))
                .execute(&self.inner.pool)
                .await
                .map_err(|e| store_error("purge_published", e))?
                .rows_affected();
            purged += deleted;
            if deleted < PURGE_CHUNK {
                return Ok(purged);
            }
        }
    }
}
