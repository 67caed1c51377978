//! The write side: enqueue inside the application's own rusqlite transaction.

use outbox_core::{MessageId, NewMessage, Result};
use rusqlite::{Transaction, params};

use crate::SqliteStore;
use crate::error::store_error;
use crate::row::to_millis;

impl SqliteStore {
    /// Enqueues `message` in the caller's transaction: it is published if and only if the
    /// transaction commits.
    ///
    /// The message is validated first; an invalid one returns
    /// [`Error::InvalidMessage`](outbox_core::Error::InvalidMessage) without touching the
    /// transaction, so the caller's other work in it can still commit.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use outbox_core::NewMessage;
    /// use outbox_sqlite::SqliteStore;
    ///
    /// let store = SqliteStore::open("app.db").await?;
    /// let mut conn = rusqlite::Connection::open("app.db")?;
    /// let tx = conn.transaction()?;
    /// tx.execute("INSERT INTO orders (id) VALUES (?1)", [42])?;
    /// store.enqueue(&tx, &NewMessage::new("orders.placed", br#"{"id":42}"#.to_vec()).with_key("42"))?;
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn enqueue(&self, tx: &Transaction<'_>, message: &NewMessage) -> Result<MessageId> {
        self.enqueue_batch(tx, std::slice::from_ref(message))
            .map(|ids| ids[0])
    }

    /// Enqueues several messages in the caller's transaction, in order. All are validated
    /// before any is written.
    pub fn enqueue_batch(
        &self,
        tx: &Transaction<'_>,
        messages: &[NewMessage],
    ) -> Result<Vec<MessageId>> {
        let inner = &self.inner;
        for message in messages {
            message.validate(&inner.config.limits)?;
        }
        ensure_open(tx)?;
        tx.execute_batch("SAVEPOINT outbox_enqueue")
            .map_err(|e| store_error("enqueue", e))?;
        let inserted = self.insert_all(tx, messages);
        if inserted.is_err() && tx.is_autocommit() {
            // SQLite itself rolled the whole transaction back (disk full, I/O error): report
            // that cause, and touch nothing, so no message can commit on its own.
            return inserted;
        }
        // All or none of the batch: undo a partial insert, keep the caller's other work.
        let end = if inserted.is_ok() {
            "RELEASE outbox_enqueue"
        } else {
            "ROLLBACK TO outbox_enqueue; RELEASE outbox_enqueue"
        };
        tx.execute_batch(end)
            .map_err(|e| store_error("enqueue", e))?;
        inserted
    }

    fn insert_all(&self, tx: &Transaction<'_>, messages: &[NewMessage]) -> Result<Vec<MessageId>> {
        let inner = &self.inner;
        let now = inner.config.clock.now();
        let mut insert = tx
            .prepare_cached(&inner.sql.insert)
            .map_err(|e| store_error("enqueue", e))?;
        let mut ids = Vec::with_capacity(messages.len());
        for message in messages {
            let headers = serde_json::to_string(message.headers())
                .map_err(|source| outbox_core::Error::Serialize { source })?;
            insert
                .execute(params![
                    message.message_id().to_string(),
                    message.topic(),
                    message.key(),
                    message.payload(),
                    headers,
                    to_millis(now),
                    message.not_before().map(to_millis),
                ])
                .map_err(|e| match e.sqlite_error() {
                    // The table's only UNIQUE constraint besides the row id.
                    Some(err) if err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => {
                        outbox_core::Error::store(
                            "enqueue",
                            false,
                            format!(
                                "message id {} is already in the outbox; nothing of this batch was enqueued",
                                message.message_id()
                            ),
                        )
                    }
                    _ => store_error("enqueue", e),
                })?;
            ids.push(message.message_id());
        }
        Ok(ids)
    }
}

/// Refuses to enqueue outside a transaction: after SQLite rolled a transaction back by
/// itself, the connection is in autocommit mode, and a message written then would commit
/// without the business data it describes.
fn ensure_open(tx: &Transaction<'_>) -> Result<()> {
    if tx.is_autocommit() {
        return Err(outbox_core::Error::store(
            "enqueue",
            false,
            "the transaction is no longer open (SQLite rolled it back after an earlier error); \
             nothing was enqueued: roll back and redo the whole unit of work",
        ));
    }
    Ok(())
}
