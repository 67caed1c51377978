//! Migrations, tracked in the outbox's own table (never the application's
//! `_sqlx_migrations`), safe when several processes migrate at once.

use sqlx::{Executor, PgPool};

use crate::error::store_error;

/// The SQL of each schema version, in order; `{s}` / `{t}` are the validated schema and
/// table names. Never edit a released entry: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the messages table. status: 0 unsettled, 1 published (kept only with
    // keep_published), 2 dead. `available_at` is when the message is due (not-before, retry);
    // along one key's unsettled rows it never decreases, so claims walk the `due` index in
    // (available_at, id) order and meet a key's messages in id order. No index covers the
    // lease columns and the table leaves free space in its pages, so a claim's lease
    // update is a HOT update (no index writes).
    "CREATE TABLE {s}.{t} (
        id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id   UUID        NOT NULL UNIQUE,
        topic        TEXT        NOT NULL,
        msg_key      TEXT,
        payload      BYTEA       NOT NULL,
        headers      JSONB       NOT NULL,
        created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
        available_at TIMESTAMPTZ NOT NULL,
        attempts     INTEGER     NOT NULL DEFAULT 0,
        status       SMALLINT    NOT NULL DEFAULT 0,
        lease_token  UUID,
        lease_until  TIMESTAMPTZ,
        last_error   TEXT,
        settled_at   TIMESTAMPTZ
    ) WITH (fillfactor = 80);
    CREATE INDEX {t}_due ON {s}.{t} (available_at, id) WHERE status = 0;
    CREATE INDEX {t}_key_order ON {s}.{t} (msg_key, id) WHERE status = 0 AND msg_key IS NOT NULL;
    CREATE INDEX {t}_dead ON {s}.{t} (id) WHERE status = 2;
    CREATE INDEX {t}_published ON {s}.{t} (settled_at) WHERE status = 1;",
    // 2: a claim leases consecutive rows, so every row of a page gets its new version at
    // once; only with half of each page free do they all fit there and stay HOT updates
    // (at fillfactor 80, 60% of the leases of 1 KiB messages wrote every index).
    "ALTER TABLE {s}.{t} SET (fillfactor = 50);",
];

/// Brings the schema to the latest version inside one transaction that holds an advisory
/// lock named after the table, so concurrent migrators wait for each other.
pub(crate) async fn migrate(
    pool: PgPool,
    schema: String,
    table: String,
) -> outbox_core::Result<()> {
    let err = |e| store_error("migrate", e);
    let mut tx = pool.begin().await.map_err(err)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("outbox migrate {schema}.{table}"))
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    // SQL text lives in locals, not temporaries held across an await: that keeps the
    // future `Send` for any lifetime, so callers can spawn `migrate()`.
    let bootstrap = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.{table}_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    );
    (&mut *tx).execute(bootstrap.as_str()).await.map_err(err)?;
    let current_sql = format!("SELECT coalesce(max(version), 0) FROM {schema}.{table}_migrations");
    let current: i32 = sqlx::query_scalar(&current_sql)
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
    let record_sql = format!("INSERT INTO {schema}.{table}_migrations (version) VALUES ($1)");
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        if version <= current {
            continue;
        }
        let migration = sql.replace("{s}", &schema).replace("{t}", &table);
        (&mut *tx).execute(migration.as_str()).await.map_err(err)?;
        sqlx::query(&record_sql)
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}
