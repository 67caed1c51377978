//! The write side: enqueue inside the application's own sqlx transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use outbox_core::{Error, MessageId, NewMessage, Result};
use sqlx::{PgExecutor, Row};

use crate::PostgresStore;
use crate::error::store_error;

impl PostgresStore {
    /// Enqueues `message` through `executor`, normally the caller's transaction
    /// (`&mut *tx`): it is published if and only if that transaction commits.
    ///
    /// The message is validated first; an invalid one returns
    /// [`Error::InvalidMessage`] without sending anything, so the caller's transaction is
    /// untouched and can still commit.
    ///
    /// ```no_run
    /// # async fn demo(pool: sqlx::PgPool, store: outbox_postgres::PostgresStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use outbox_core::NewMessage;
    ///
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind(42_i64).execute(&mut *tx).await?;
    /// store.enqueue(&mut *tx, &NewMessage::new("orders.placed", br#"{"id":42}"#.to_vec()).with_key("42")).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue<'e, E: PgExecutor<'e>>(
        &self,
        executor: E,
        message: &NewMessage,
    ) -> Result<MessageId> {
        self.enqueue_batch(executor, std::slice::from_ref(message))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::store("enqueue", false, "the insert returned no id"))
    }

    /// Enqueues several messages in one round trip, in order. All are validated before any
    /// is sent; the insert is one statement, so it applies all or none.
    pub async fn enqueue_batch<'e, E: PgExecutor<'e>>(
        &self,
        executor: E,
        messages: &[NewMessage],
    ) -> Result<Vec<MessageId>> {
        let config = &self.inner.config;
        for message in messages {
            message.validate(&config.limits)?;
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut distinct = std::collections::HashSet::with_capacity(messages.len());
        if let Some(dup) = messages.iter().find(|m| !distinct.insert(m.message_id())) {
            return Err(duplicate_id(dup.message_id()));
        }
        let mut ids = Vec::with_capacity(messages.len());
        let mut topics = Vec::with_capacity(messages.len());
        let mut keys = Vec::with_capacity(messages.len());
        let mut payloads = Vec::with_capacity(messages.len());
        let mut headers = Vec::with_capacity(messages.len());
        let mut not_before: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(messages.len());
        // Within the batch, a key's message is not due before the key's previous one.
        let mut key_due: HashMap<&str, DateTime<Utc>> = HashMap::new();
        for message in messages {
            ids.push(message.message_id().as_uuid());
            topics.push(message.topic());
            keys.push(message.key());
            payloads.push(message.payload());
            headers.push(
                serde_json::to_value(message.headers())
                    .map_err(|source| Error::Serialize { source })?,
            );
            let mut due = message.not_before();
            if let Some(key) = message.key() {
                let previous = key_due.get(key).copied();
                due = due.max(previous);
                if let Some(due) = due {
                    key_due.insert(key, due);
                }
            }
            not_before.push(due);
        }
        let sql = if config.notify_on_enqueue {
            &self.inner.sql.insert_and_notify
        } else {
            &self.inner.sql.insert
        };
        let mut query = sqlx::query(sql)
            .bind(&ids)
            .bind(&topics)
            .bind(&keys)
            .bind(&payloads)
            .bind(&headers)
            .bind(&not_before);
        if config.notify_on_enqueue {
            query = query.bind(config.channel());
        }
        let inserted: i64 = query
            .fetch_one(executor)
            .await
            .map_err(|e| store_error("enqueue", e))?
            .try_get(0)
            .map_err(|e| store_error("enqueue", e))?;
        if usize::try_from(inserted).ok() != Some(messages.len()) {
            return Err(Error::store(
                "enqueue",
                false,
                "a message id of this batch is already in the outbox; nothing was enqueued \
                 (use fresh ids, or drop the message if it was enqueued before)",
            ));
        }
        Ok(messages.iter().map(NewMessage::message_id).collect())
    }
}

fn duplicate_id(id: MessageId) -> Error {
    Error::store(
        "enqueue",
        false,
        format!("message id {id} appears twice in the batch; nothing was enqueued"),
    )
}
