//! The store conformance suite against a real MySQL or MariaDB server, each test in a
//! table of its own.

mod common;

use std::time::Duration;

use futures::future::BoxFuture;
use outbox_core::{NewMessage, Result};
use outbox_mysql::{MySqlStore, sqlx};
use outbox_testkit::{HeldTransaction, StoreHarness};

struct MySqlHarness {
    store: MySqlStore,
    _cleanup: common::DropTables,
}

impl MySqlHarness {
    async fn connect() -> Option<Self> {
        let (store, cleanup) = common::fresh_store(|_| {}).await?;
        Some(MySqlHarness {
            store,
            _cleanup: cleanup,
        })
    }

    async fn begin_with(
        &self,
        messages: &[NewMessage],
    ) -> Result<sqlx::Transaction<'static, sqlx::MySql>> {
        let mut tx = self.store.pool().begin().await.expect("begin");
        self.store.enqueue_batch(&mut *tx, messages).await?;
        Ok(tx)
    }
}

struct Held(sqlx::Transaction<'static, sqlx::MySql>);

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

impl StoreHarness for MySqlHarness {
    type Store = MySqlStore;

    fn store(&self) -> &MySqlStore {
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

outbox_testkit::store_conformance!(optional MySqlHarness::connect());
