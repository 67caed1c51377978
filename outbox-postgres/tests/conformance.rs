//! The store conformance suite against a real PostgreSQL server.

mod common;

use std::time::Duration;

use futures::future::BoxFuture;
use outbox_core::{NewMessage, Result};
use outbox_postgres::{PostgresStore, sqlx};
use outbox_testkit::{HeldTransaction, StoreHarness};

struct PgHarness {
    store: PostgresStore,
}

impl PgHarness {
    async fn connect(durable_relay_commits: bool) -> Option<Self> {
        let configure = |c: &mut outbox_postgres::PostgresConfig| {
            c.durable_relay_commits = durable_relay_commits;
        };
        Some(PgHarness {
            store: common::fresh_store(configure).await?,
        })
    }

    async fn begin_with(
        &self,
        messages: &[NewMessage],
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.store.pool().begin().await.expect("begin");
        self.store.enqueue_batch(&mut *tx, messages).await?;
        Ok(tx)
    }
}

struct Held(sqlx::Transaction<'static, sqlx::Postgres>);

impl HeldTransaction for Held {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            self.0
                .commit()
                .await
                .map_err(|e| outbox_core::Error::store("commit", false, e))
        })
    }
}

impl StoreHarness for PgHarness {
    type Store = PostgresStore;

    fn store(&self) -> &PostgresStore {
        &self.store
    }

    async fn enqueue(&self, messages: Vec<NewMessage>) -> Result<()> {
        self.begin_with(&messages)
            .await?
            .commit()
            .await
            .expect("commit");
        Ok(())
    }

    async fn enqueue_rolled_back(&self, messages: Vec<NewMessage>) -> Result<()> {
        self.begin_with(&messages)
            .await?
            .rollback()
            .await
            .expect("rollback");
        Ok(())
    }

    async fn enqueue_held(&self, message: NewMessage) -> Result<Box<dyn HeldTransaction>> {
        Ok(Box::new(Held(self.begin_with(&[message]).await?)))
    }

    /// Leases and retry times come from the database clock: let it pass.
    async fn advance(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

// The default: the relay's bookkeeping commits without waiting for the WAL flush.
outbox_testkit::store_conformance!(optional PgHarness::connect(false));

/// The same behaviours with every bookkeeping commit waiting for the flush.
mod durable_relay_commits {
    use super::PgHarness;
    outbox_testkit::store_conformance!(optional PgHarness::connect(true));
}
