//! The relay side: [`Store`] over a PostgreSQL table.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use outbox_core::{
    Backlog, Claim, ClaimOptions, DeadLetter, Error, Lease, LeaseToken, Result, SettleAction,
    SettleReport, Settlement, Store, StoreCapabilities, validate_identifier,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool, Row};

use crate::config::PostgresConfig;
use crate::error::store_error;
use crate::row::read_message;
use crate::schema::migrate;
use crate::sql::Sql;

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: PostgresConfig,
    pub(crate) sql: Sql,
    pub(crate) pool: PgPool,
}

/// An outbox in a PostgreSQL table (PostgreSQL 13 and later).
///
/// Create it with [`PostgresStore::connect`] or [`PostgresStore::new`], run
/// [`migrate`](Self::migrate) once at start, enqueue with
/// [`enqueue`](Self::enqueue) in your own sqlx transaction, and hand the store to a
/// [`Relay`](outbox_core::Relay). Any number of relays, in any number of processes, can
/// share the table. Clones share the pool. `Debug` output never contains the connection
/// string.
#[derive(Clone)]
pub struct PostgresStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.config.schema)
            .field("table", &self.inner.config.table)
            .finish_non_exhaustive()
    }
}

/// A message that became due at a time its key's later messages must not precede:
/// `(id, key, available_at)`.
type Due = (i64, Option<String>, DateTime<Utc>);

/// The [`Due`] rows returned by the retry and requeue statements, for
/// [`PostgresStore::push_followers`].
fn due_rows(rows: &[sqlx::postgres::PgRow], operation: &'static str) -> Result<Vec<Due>> {
    let err = |e| store_error(operation, e);
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0).map_err(err)?,
                row.try_get(1).map_err(err)?,
                row.try_get(2).map_err(err)?,
            ))
        })
        .collect()
}

/// Seconds as PostgreSQL's `make_interval` takes them.
fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl PostgresStore {
    /// A store on an existing pool (share your application's pool, or give the relay its
    /// own). Fails if a configured name is not a plain identifier.
    pub fn new(pool: PgPool, config: PostgresConfig) -> Result<Self> {
        validate_identifier("schema", &config.schema)?;
        validate_identifier("table", &config.table)?;
        let sql = Sql::new(&config.schema, &config.table, config.durable_relay_commits);
        Ok(PostgresStore {
            inner: Arc::new(Inner { config, sql, pool }),
        })
    }

    /// Connects a pool of up to 8 connections to `url` and creates the store on it.
    /// The URL (and its password) appears in no log and no error.
    pub async fn connect(url: &str, config: PostgresConfig) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| store_error("connect", e))?;
        Self::new(pool, config)
    }

    /// Creates or upgrades the outbox schema. Tracked in `<table>_migrations` (never in
    /// the application's `_sqlx_migrations`); safe when several processes run it at once.
    pub fn migrate(&self) -> futures::future::BoxFuture<'static, Result<()>> {
        // Owned arguments, so the future can be spawned.
        let config = &self.inner.config;
        Box::pin(migrate(
            self.inner.pool.clone(),
            config.schema.clone(),
            config.table.clone(),
        ))
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The settings.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// Runs one statement of the settle, counting the rows it changed.
    async fn apply(
        tx: &mut sqlx::PgConnection,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<u64> {
        Ok(query
            .execute(tx)
            .await
            .map_err(|e| store_error("settle", e))?
            .rows_affected())
    }

    /// Runs the statements of one settle on `conn`, counting the rows they changed.
    async fn apply_settle(
        &self,
        conn: &mut sqlx::PgConnection,
        lease: &Lease,
        groups: &SettleGroups<'_>,
    ) -> Result<u64> {
        let sql = &self.inner.sql;
        let token = lease.token.as_uuid();
        let mut applied = 0;
        if !groups.published.is_empty() {
            let statement = if self.inner.config.keep_published {
                &sql.publish_keep
            } else {
                &sql.publish_delete
            };
            let query = sqlx::query(statement).bind(&groups.published).bind(token);
            applied += Self::apply(conn, query).await?;
        }
        if !groups.released.is_empty() {
            let query = sqlx::query(&sql.release).bind(&groups.released).bind(token);
            applied += Self::apply(conn, query).await?;
        }
        if !groups.dead_ids.is_empty() {
            let query = sqlx::query(&sql.dead)
                .bind(&groups.dead_ids)
                .bind(token)
                .bind(&groups.dead_reasons);
            applied += Self::apply(conn, query).await?;
        }
        if !groups.retry_ids.is_empty() {
            let rows = sqlx::query(&sql.retry)
                .bind(&groups.retry_ids)
                .bind(token)
                .bind(&groups.retry_delays)
                .bind(&groups.retry_errors)
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| store_error("settle", e))?;
            applied += rows.len() as u64;
            // After the releases above, so a run released in this settlement is pushed too.
            self.push_followers(conn, due_rows(&rows, "settle")?)
                .await?;
        }
        Ok(applied)
    }

    /// Pushes the later messages of each key to be due no earlier than `(id, key, at)`.
    async fn push_followers(&self, conn: &mut sqlx::PgConnection, due: Vec<Due>) -> Result<()> {
        let keyed: Vec<_> = due
            .into_iter()
            .filter(|(_, key, _)| key.is_some())
            .collect();
        if keyed.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = keyed.iter().map(|(id, _, _)| *id).collect();
        let keys: Vec<Option<String>> = keyed.iter().map(|(_, key, _)| key.clone()).collect();
        let ats: Vec<DateTime<Utc>> = keyed.iter().map(|(_, _, at)| *at).collect();
        sqlx::query(&self.inner.sql.push_followers)
            .bind(ids)
            .bind(keys)
            .bind(ats)
            .execute(conn)
            .await
            .map_err(|e| store_error("settle", e))?;
        Ok(())
    }
}

impl Store for PostgresStore {
    fn capabilities(&self) -> StoreCapabilities {
        let mut capabilities = StoreCapabilities::default();
        capabilities.concurrent_writers = true;
        capabilities.notify_on_enqueue = self.inner.config.notify_on_enqueue;
        // A bounded window: see the README's "known limit".
        capabilities.skips_busy_keys = false;
        capabilities
    }

    async fn claim(&self, options: &ClaimOptions) -> Result<Claim> {
        let err = |e| store_error("claim", e);
        let limit = i64::try_from(options.batch_size).unwrap_or(i64::MAX);
        let window = limit.saturating_mul(2).max(200);
        let token = LeaseToken::new();
        let rows = sqlx::query(&self.inner.sql.claim)
            .bind(token.as_uuid())
            .bind(seconds(options.lease_duration))
            .bind(window)
            .bind(limit)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(err)?;
        let mut messages = Vec::with_capacity(rows.len());
        let mut expires_at = None;
        for row in &rows {
            messages.push(read_message(row, "claim")?);
            let until: DateTime<Utc> = row.try_get(8).map_err(err)?;
            expires_at = Some(until);
        }
        messages.sort_by_key(|m| m.id);
        let expires_at = match expires_at {
            Some(at) => at,
            None => {
                Utc::now() + chrono::Duration::from_std(options.lease_duration).unwrap_or_default()
            }
        };
        Ok(Claim {
            lease: Lease { token, expires_at },
            messages,
        })
    }

    async fn settle(&self, lease: &Lease, settlements: &[Settlement]) -> Result<SettleReport> {
        let err = |e| store_error("settle", e);
        let groups = SettleGroups::new(settlements);
        let mut conn = self.inner.pool.acquire().await.map_err(err)?;
        // One statement commits by itself; a transaction would cost two more round trips.
        let applied = if groups.statements() <= 1 {
            self.apply_settle(&mut conn, lease, &groups).await?
        } else {
            let mut tx = conn.begin().await.map_err(err)?;
            let applied = self.apply_settle(&mut tx, lease, &groups).await?;
            tx.commit().await.map_err(err)?;
            applied
        };
        let applied = usize::try_from(applied).unwrap_or(usize::MAX);
        Ok(SettleReport {
            applied,
            lost: settlements.len().saturating_sub(applied),
        })
    }

    async fn renew(&self, lease: &Lease, duration: Duration) -> Result<Lease> {
        let until: Option<DateTime<Utc>> = sqlx::query_scalar(&self.inner.sql.renew)
            .bind(lease.token.as_uuid())
            .bind(seconds(duration))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| store_error("renew", e))?
            .into_iter()
            .max();
        match until {
            Some(expires_at) => Ok(Lease {
                token: lease.token,
                expires_at,
            }),
            None => Err(Error::LeaseLost { token: lease.token }),
        }
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
            oldest_pending_at: row.try_get(3).map_err(err)?,
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let err = |e| store_error("dead_letters", e);
        let rows = sqlx::query(&self.inner.sql.dead_letters)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(err)?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    message: read_message(row, "dead_letters")?,
                    reason: row.try_get(8).map_err(err)?,
                })
            })
            .collect()
    }

    async fn requeue_dead(&self, ids: &[i64]) -> Result<u64> {
        let err = |e| store_error("requeue_dead", e);
        let mut tx = self.inner.pool.begin().await.map_err(err)?;
        let rows = sqlx::query(&self.inner.sql.requeue)
            .bind(ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
        self.push_followers(&mut tx, due_rows(&rows, "requeue_dead")?)
            .await?;
        tx.commit().await.map_err(err)?;
        Ok(rows.len() as u64)
    }

    async fn purge_published(&self, older_than: Duration) -> Result<u64> {
        Ok(sqlx::query(&self.inner.sql.purge)
            .bind(seconds(older_than))
            .execute(&self.inner.pool)
            .await
            .map_err(|e| store_error("purge_published", e))?
            .rows_affected())
    }
}

/// A settlement's messages, grouped by the statement that settles them.
#[derive(Default)]
struct SettleGroups<'a> {
    published: Vec<i64>,
    released: Vec<i64>,
    retry_ids: Vec<i64>,
    retry_delays: Vec<f64>,
    retry_errors: Vec<&'a str>,
    dead_ids: Vec<i64>,
    dead_reasons: Vec<&'a str>,
}

impl<'a> SettleGroups<'a> {
    fn new(settlements: &'a [Settlement]) -> Self {
        let mut groups = Self::default();
        for settlement in settlements {
            match &settlement.action {
                SettleAction::Published => groups.published.push(settlement.id),
                SettleAction::Release => groups.released.push(settlement.id),
                SettleAction::Retry { delay, error } => {
                    groups.retry_ids.push(settlement.id);
                    groups.retry_delays.push(seconds(*delay));
                    groups.retry_errors.push(error.as_str());
                }
                SettleAction::Dead { reason } => {
                    groups.dead_ids.push(settlement.id);
                    groups.dead_reasons.push(reason.as_str());
                }
            }
        }
        groups
    }

    /// How many statements the settle runs (a retry runs two: it also pushes followers).
    fn statements(&self) -> usize {
        let retry = if self.retry_ids.is_empty() { 0 } else { 2 };
        [&self.published, &self.released, &self.dead_ids]
            .iter()
            .filter(|ids| !ids.is_empty())
            .count()
            + retry
    }
}
