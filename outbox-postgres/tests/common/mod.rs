//! Shared set-up of the PostgreSQL tests: a server from `OUTBOX_TEST_POSTGRES_URL` and a
//! fresh schema per test, so tests run in parallel.
#![allow(dead_code, unreachable_pub)]

use outbox_postgres::{PostgresConfig, PostgresStore, sqlx};
use outbox_testkit::services::{unavailable, url_from_env};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn url() -> String {
    url_from_env("OUTBOX_TEST_POSTGRES_URL", DEFAULT_URL)
}

/// A pool on the test server, or `None` (after the skip/fail rule) if it is unreachable.
pub async fn pool() -> Option<sqlx::PgPool> {
    let url = url();
    match sqlx::postgres::PgPoolOptions::new()
        .max_connections(6)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&url)
        .await
    {
        Ok(pool) => Some(pool),
        Err(err) => {
            unavailable("PostgreSQL", &url, &err);
            None
        }
    }
}

/// A migrated store in a schema of its own.
pub async fn fresh_store(configure: impl FnOnce(&mut PostgresConfig)) -> Option<PostgresStore> {
    let pool = pool().await?;
    let mut config = PostgresConfig::default();
    config.schema = format!("outbox_test_{}", uuid::Uuid::new_v4().simple());
    configure(&mut config);
    let store = PostgresStore::new(pool, config).expect("config");
    store.migrate().await.expect("migrate");
    Some(store)
}
