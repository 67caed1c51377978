//! Migrations, tracked in the outbox's own table (never the application's
//! `_sqlx_migrations`), safe when several processes migrate at once.

use outbox_core::{Error, Result};
use sqlx::{Connection, Executor, MySqlPool, Row};

use crate::error::store_error;
use crate::row::optional_text;
use crate::version::{ServerVersion, check_server};

/// The statements of each schema version, in order; `{t}` is the validated table name.
/// MySQL commits after every DDL statement, so each one is idempotent (`IF NOT EXISTS`,
/// `INSERT IGNORE`): a migration cut short is completed by the next run. Never edit a
/// released entry: add a new one.
const MIGRATIONS: &[&[&str]] = &[
    // 1: the messages table. status: 0 unsettled, 1 published (kept only with
    // keep_published), 2 dead. Times are UTC.
    //
    // The head of each key (its oldest unsettled message) and unkeyed messages are due at
    // `available_at` (not-before or retry time). A key's later messages `wait` behind the
    // head and are promoted when it is settled; meanwhile their `available_at` is only
    // when to look at them again (in case their head was settled before they committed),
    // at doubling intervals. So the `due` range holds about one row per key, and a claim
    // never walks over messages blocked behind their key. Keys are told apart by
    // `key_hash` (FNV-1a of the key's bytes). A row holds a lease token only while it is
    // unsettled, so the `lease` index covers the questions about leases.
    &[
        "CREATE TABLE IF NOT EXISTS `{t}` (
            id           BIGINT       NOT NULL AUTO_INCREMENT,
            message_id   BINARY(16)   NOT NULL,
            topic        TEXT         NOT NULL,
            key_hash     BIGINT,
            msg_key      TEXT,
            payload      LONGBLOB     NOT NULL,
            headers      JSON         NOT NULL,
            created_at   DATETIME(6)  NOT NULL,
            not_before   DATETIME(6),
            available_at DATETIME(6)  NOT NULL,
            waits        TINYINT      NOT NULL DEFAULT 0,
            attempts     INT          NOT NULL DEFAULT 0,
            status       TINYINT      NOT NULL DEFAULT 0,
            lease_token  BINARY(16),
            lease_until  DATETIME(6),
            last_error   MEDIUMTEXT,
            settled_at   DATETIME(6),
            PRIMARY KEY (id),
            UNIQUE KEY message_id (message_id),
            KEY due (status, available_at, id),
            KEY key_order (key_hash, status, id),
            KEY lease (lease_token, lease_until, key_hash)
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
        "CREATE TABLE IF NOT EXISTS `{t}_lock` (
            name VARCHAR(16) NOT NULL PRIMARY KEY
        ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
        "INSERT IGNORE INTO `{t}_lock` (name) VALUES ('claim')",
    ],
];

/// How long a migrator waits for another one to finish.
const LOCK_WAIT_SECONDS: i32 = 60;

/// The GET_LOCK name for migrating `database.table`: names are server-wide and at most
/// 64 characters, so long ones are hashed.
fn lock_name(database: &str, table: &str) -> String {
    let readable = format!("outbox migrate {database}.{table}");
    if readable.len() <= 64 {
        return readable;
    }
    let hash = crate::enqueue::key_hash(&format!("{database}.{table}"));
    format!("outbox migrate {hash:016x}")
}

/// Checks the server version, then brings the schema to the latest version while holding
/// a named lock (`GET_LOCK`) for this table, so concurrent migrators wait for each other.
///
/// DDL commits implicitly, so no transaction can hold a lock across the migration: the
/// named lock lives on a connection taken out of the pool and closed afterwards (also if
/// this future is dropped half-way), which releases the lock.
pub(crate) async fn migrate(pool: &MySqlPool, table: &str) -> Result<ServerVersion> {
    let err = |e| store_error("migrate", e);
    let mut conn = pool.acquire().await.map_err(err)?.detach();
    let version = check_server(&mut conn).await?;
    let row = sqlx::query("SELECT DATABASE()")
        .fetch_one(&mut conn)
        .await
        .map_err(err)?;
    let database = optional_text(&row, 0, "migrate")?.ok_or_else(|| {
        Error::invalid_config(
            "the connection has no current database; name one in the URL \
             (mysql://user@host:3306/database), the outbox table is created there",
        )
    })?;
    let lock = lock_name(&database, table);
    let locked: Option<i64> = sqlx::query("SELECT GET_LOCK(?, ?)")
        .bind(&lock)
        .bind(LOCK_WAIT_SECONDS)
        .fetch_one(&mut conn)
        .await
        .map_err(err)?
        .try_get(0)
        .map_err(err)?;
    if locked != Some(1) {
        return Err(Error::store(
            "migrate",
            true,
            format!(
                "another process has held the migration lock {lock:?} for {LOCK_WAIT_SECONDS} s"
            ),
        ));
    }
    let applied = apply(&mut conn, table).await;
    let released = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(&lock)
        .execute(&mut conn)
        .await;
    // Closing the connection releases the lock anyway; a failure here changes nothing.
    let _ = conn.close().await;
    applied?;
    released.map_err(err)?;
    Ok(version)
}

async fn apply(conn: &mut sqlx::MySqlConnection, table: &str) -> Result<()> {
    let err = |e| store_error("migrate", e);
    // SQL text lives in locals, not in temporaries held across an await: that keeps the
    // future `Send` for any lifetime, so callers can spawn `migrate()`.
    let bootstrap = format!(
        "CREATE TABLE IF NOT EXISTS `{table}_migrations` (
             version    INT         NOT NULL PRIMARY KEY,
             applied_at DATETIME(6) NOT NULL
         ) ENGINE = InnoDB"
    );
    conn.execute(bootstrap.as_str()).await.map_err(err)?;
    let current_sql =
        format!("SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) FROM `{table}_migrations`");
    let current: i64 = sqlx::query_scalar(&current_sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
    let record_sql = format!(
        "INSERT INTO `{table}_migrations` (version, applied_at) VALUES (?, UTC_TIMESTAMP(6))"
    );
    for (index, statements) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        for statement in *statements {
            let statement = statement.replace("{t}", table);
            conn.execute(statement.as_str()).await.map_err(err)?;
        }
        sqlx::query(&record_sql)
            .bind(version)
            .execute(&mut *conn)
            .await
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::lock_name;

    #[test]
    fn lock_names_fit_in_64_characters() {
        assert_eq!(lock_name("test", "outbox"), "outbox migrate test.outbox");
        let long = lock_name(&"d".repeat(64), &"t".repeat(53));
        assert!(long.len() <= 64, "{long}");
        assert_ne!(long, lock_name(&"d".repeat(64), &"u".repeat(53)));
    }
}
