//! Shared set-up of the MySQL tests: a server from `OUTBOX_TEST_MYSQL_URL` and a fresh
//! table per test (dropped when the test ends), so tests run in parallel.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use outbox_mysql::sqlx::mysql::MySqlPoolOptions;
use outbox_mysql::{MySqlConfig, MySqlStore, sqlx};
use outbox_testkit::services::{unavailable, url_from_env};

pub const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";

pub fn url() -> String {
    url_from_env("OUTBOX_TEST_MYSQL_URL", DEFAULT_URL)
}

/// Pool settings for tests: few connections (tests run in parallel on one server).
pub fn pool_options() -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
}

/// A pool from `options` on the test server, or `None` (after the skip/fail rule) if it
/// is unreachable.
pub async fn pool_with(options: MySqlPoolOptions) -> Option<sqlx::MySqlPool> {
    let url = url();
    match options.connect(&url).await {
        Ok(pool) => Some(pool),
        Err(err) => {
            unavailable("MySQL", &url, &err);
            None
        }
    }
}

/// A pool on the test server, or `None` (after the skip/fail rule) if it is unreachable.
pub async fn pool() -> Option<sqlx::MySqlPool> {
    pool_with(pool_options()).await
}

/// A table name of its own for one test.
pub fn unique_table() -> String {
    format!("outbox_test_{}", uuid::Uuid::new_v4().simple())
}

/// Drops a test's tables when dropped.
pub struct DropTables {
    tables: Vec<String>,
}

impl DropTables {
    /// The outbox table `table` and its companions.
    pub fn outbox(table: &str) -> Self {
        DropTables {
            tables: vec![
                table.to_owned(),
                format!("{table}_migrations"),
                format!("{table}_lock"),
            ],
        }
    }

    /// Also drops `table` (e.g. a test's business table).
    pub fn and(mut self, table: impl Into<String>) -> Self {
        self.tables.push(table.into());
        self
    }
}

impl Drop for DropTables {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be busy right here: drop the
        // tables from a thread of its own, on a connection of its own.
        let (url, tables) = (url(), self.tables.join(", "));
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::MySqlConnection::connect(&url).await {
                    let _ = sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {tables}"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A migrated store in a table of its own on `pool`.
pub async fn store_on(
    pool: sqlx::MySqlPool,
    configure: impl FnOnce(&mut MySqlConfig),
) -> (MySqlStore, DropTables) {
    let mut config = MySqlConfig::default();
    config.table = unique_table();
    configure(&mut config);
    let cleanup = DropTables::outbox(&config.table);
    let store = MySqlStore::new(pool, config).expect("config");
    store.migrate().await.expect("migrate");
    (store, cleanup)
}

/// A migrated store in a table of its own, or `None` if the server is unreachable.
pub async fn fresh_store(
    configure: impl FnOnce(&mut MySqlConfig),
) -> Option<(MySqlStore, DropTables)> {
    Some(store_on(pool().await?, configure).await)
}
