//! The store conformance suite on a real SQLite file.

use std::sync::Arc;
use std::time::Duration;

use outbox_core::{NewMessage, Result};
use outbox_sqlite::{SqliteConfig, SqliteStore};
use outbox_testkit::{HeldTransaction, ManualClock, StoreHarness};
use tempfile::TempDir;

struct SqliteHarness {
    store: SqliteStore,
    clock: ManualClock,
    _dir: TempDir,
}

impl SqliteHarness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = ManualClock::new();
        let mut config = SqliteConfig::default();
        config.clock = Arc::new(clock.clone());
        let store = SqliteStore::open_with(dir.path().join("outbox.db"), config)
            .await
            .expect("open store");
        SqliteHarness {
            store,
            clock,
            _dir: dir,
        }
    }

    fn write(&self, messages: Vec<NewMessage>, commit: bool) -> Result<()> {
        let mut conn = rusqlite::Connection::open(self.store.path()).expect("open connection");
        SqliteStore::prepare_connection(&conn, Duration::from_secs(5))?;
        let tx = conn.transaction().expect("begin");
        self.store.enqueue_batch(&tx, &messages)?;
        if commit {
            tx.commit().expect("commit");
        }
        Ok(())
    }
}

impl StoreHarness for SqliteHarness {
    type Store = SqliteStore;

    fn store(&self) -> &SqliteStore {
        &self.store
    }

    async fn enqueue(&self, messages: Vec<NewMessage>) -> Result<()> {
        self.write(messages, true)
    }

    async fn enqueue_rolled_back(&self, messages: Vec<NewMessage>) -> Result<()> {
        self.write(messages, false)
    }

    async fn enqueue_held(&self, _message: NewMessage) -> Result<Box<dyn HeldTransaction>> {
        unreachable!("SQLite has a single writer; the suite does not ask for a held transaction")
    }

    async fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }
}

outbox_testkit::store_conformance!(SqliteHarness::new());
