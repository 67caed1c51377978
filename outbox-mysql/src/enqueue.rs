//! The write side: enqueue inside the application's own sqlx transaction.

use std::collections::HashSet;
use std::future::Future;

use chrono::NaiveDateTime;
use outbox_core::{Error, MessageId, NewMessage, Result};
use sqlx::{Acquire, MySql, MySqlConnection};

use crate::MySqlStore;
use crate::error::{DUPLICATE_ENTRY, error_number, store_error};
use crate::sql::{HEAD, TENTATIVE, WAITING, bind_padded};

/// Messages per INSERT statement.
const MAX_ROWS_PER_INSERT: usize = 1_000;
/// Bytes of payload (and headers) per INSERT statement, well under the 16 MiB
/// `max_allowed_packet` of a default MariaDB; a larger message goes alone.
const MAX_BYTES_PER_INSERT: usize = 4 * 1024 * 1024;

/// The index of a key: 64-bit FNV-1a of its UTF-8 bytes, stable across processes and
/// releases. Rows are found by hash and then compared by the full key, so a collision
/// costs nothing but a row read.
pub(crate) fn key_hash(key: &str) -> i64 {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// One message, ready to bind.
struct Pending<'m> {
    message: &'m NewMessage,
    headers: String,
    not_before: Option<NaiveDateTime>,
    /// [`HEAD`], [`WAITING`] or [`TENTATIVE`].
    waits: i8,
}

impl MySqlStore {
    /// Enqueues `message` through `conn`, normally the caller's transaction (`&mut *tx`):
    /// it is published if and only if that transaction commits.
    ///
    /// The message is validated first; an invalid one returns
    /// [`Error::InvalidMessage`] without sending anything. A refused message (invalid, or
    /// a message id already in the outbox) leaves the caller's transaction usable: MySQL
    /// rolls back only the failed statement.
    ///
    /// `conn` is anything sqlx can take a connection from: `&mut *tx` or `&mut tx` for a
    /// transaction, `&mut *conn` for a connection, or `&pool` (then the insert commits on
    /// its own).
    ///
    /// ```no_run
    /// # async fn demo(pool: sqlx::MySqlPool, store: outbox_mysql::MySqlStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use outbox_core::NewMessage;
    ///
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES (?)").bind(42_i64).execute(&mut *tx).await?;
    /// store.enqueue(&mut *tx, &NewMessage::new("orders.placed", br#"{"id":42}"#.to_vec()).with_key("42")).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    // Not an `async fn`: spelled out, the future is `Send` for every `A` (see the "not
    // general enough" note on `sqlx::Acquire`), so callers can spawn it.
    #[allow(clippy::manual_async_fn)]
    pub fn enqueue<'a, 'c, A>(
        &'a self,
        conn: A,
        message: &'a NewMessage,
    ) -> impl Future<Output = Result<MessageId>> + Send + 'a
    where
        A: Acquire<'c, Database = MySql> + Send + 'a,
    {
        async move {
            self.enqueue_batch(conn, std::slice::from_ref(message))
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| Error::store("enqueue", false, "the insert returned no id"))
        }
    }

    /// Enqueues several messages, in order, through `conn` (see
    /// [`enqueue`](Self::enqueue)). All are validated before anything is sent.
    ///
    /// One round trip per 1,000 messages (or 4 MiB of payload). Enqueue reads no other
    /// rows and takes no locks but on the rows it inserts, so producers never wait for
    /// each other or for relays, whatever their isolation level. A batch that fits in one
    /// statement is inserted all or none; a larger one is checked for known message ids
    /// first, so a duplicate id is refused before anything is inserted.
    ///
    /// ```no_run
    /// # async fn demo(pool: sqlx::MySqlPool, store: outbox_mysql::MySqlStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use outbox_core::NewMessage;
    ///
    /// let events: Vec<NewMessage> = (0..3)
    ///     .map(|n| NewMessage::new("orders.line-added", vec![n]).with_key("order-42"))
    ///     .collect();
    /// let mut tx = pool.begin().await?;
    /// let ids = store.enqueue_batch(&mut *tx, &events).await?;
    /// tx.commit().await?;
    /// assert_eq!(ids.len(), 3);
    /// # Ok(()) }
    /// ```
    // Not an `async fn`, as `enqueue`.
    #[allow(clippy::manual_async_fn)]
    pub fn enqueue_batch<'a, 'c, A>(
        &'a self,
        conn: A,
        messages: &'a [NewMessage],
    ) -> impl Future<Output = Result<Vec<MessageId>>> + Send + 'a
    where
        A: Acquire<'c, Database = MySql> + Send + 'a,
    {
        async move {
            let mut conn = conn
                .acquire()
                .await
                .map_err(|e| store_error("enqueue", e))?;
            self.enqueue_on(&mut conn, messages).await
        }
    }

    async fn enqueue_on(
        &self,
        conn: &mut MySqlConnection,
        messages: &[NewMessage],
    ) -> Result<Vec<MessageId>> {
        let config = &self.inner.config;
        for message in messages {
            message.validate(&config.limits)?;
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut distinct = HashSet::with_capacity(messages.len());
        if let Some(dup) = messages.iter().find(|m| !distinct.insert(m.message_id())) {
            return Err(Error::store(
                "enqueue",
                false,
                format!(
                    "message id {} appears twice in the batch; nothing was enqueued",
                    dup.message_id()
                ),
            ));
        }
        let mut rows = Vec::with_capacity(messages.len());
        for message in messages {
            rows.push(Pending {
                message,
                headers: serde_json::to_string(message.headers())
                    .map_err(|source| Error::Serialize { source })?,
                not_before: message.not_before().map(|at| at.naive_utc()),
                waits: HEAD,
            });
        }
        // The first message of each key in the batch is a tentative head: due at its
        // not-before time; if its key already has unsettled messages, the next claim sees
        // that it is not the key's oldest and makes it wait. The batch's later messages of
        // the key wait behind it. So enqueue reads nothing and locks nothing but its own
        // rows.
        let mut keys = HashSet::new();
        for row in &mut rows {
            if let Some(key) = row.message.key() {
                row.waits = if keys.insert(key) { TENTATIVE } else { WAITING };
            }
        }
        let chunks = chunk(&rows);
        if chunks.len() > 1 {
            self.refuse_known_ids(conn, messages).await?;
        }
        for rows in chunks {
            self.insert(conn, rows).await?;
        }
        Ok(messages.iter().map(NewMessage::message_id).collect())
    }

    /// Refuses the batch if one of its ids is already stored, before a multi-statement
    /// insert has written anything.
    async fn refuse_known_ids(
        &self,
        conn: &mut MySqlConnection,
        messages: &[NewMessage],
    ) -> Result<()> {
        let ids: Vec<uuid::Uuid> = messages.iter().map(|m| m.message_id().as_uuid()).collect();
        for ids in ids.chunks(MAX_ROWS_PER_INSERT) {
            let sql = self.inner.sql.known_ids(ids.len());
            let known = bind_padded(sqlx::query(&sql), ids)
                .fetch_optional(&mut *conn)
                .await
                .map_err(|e| store_error("enqueue", e))?;
            if known.is_some() {
                return Err(duplicate_in_outbox());
            }
        }
        Ok(())
    }

    async fn insert(&self, conn: &mut MySqlConnection, rows: &[Pending<'_>]) -> Result<()> {
        let sql = self.inner.sql.insert(rows.len());
        let mut query = sqlx::query(&sql);
        for row in rows {
            let message = row.message;
            query = query
                .bind(message.message_id().as_uuid())
                .bind(message.topic())
                .bind(message.key().map(key_hash))
                .bind(message.key())
                .bind(message.payload())
                .bind(row.headers.as_str())
                .bind(row.not_before)
                .bind(row.waits)
                .bind(row.waits)
                .bind(row.not_before);
        }
        match query.execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(e) if error_number(&e) == Some(DUPLICATE_ENTRY) => Err(duplicate_in_outbox()),
            Err(e) => Err(store_error("enqueue", e)),
        }
    }
}

fn duplicate_in_outbox() -> Error {
    Error::store(
        "enqueue",
        false,
        "a message id of this batch is already in the outbox; nothing was enqueued \
         (use fresh ids, or drop the message if it was enqueued before)",
    )
}

/// Splits rows into INSERT statements of at most [`MAX_ROWS_PER_INSERT`] rows and
/// [`MAX_BYTES_PER_INSERT`] bytes.
fn chunk<'r, 'm>(rows: &'r [Pending<'m>]) -> Vec<&'r [Pending<'m>]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, row) in rows.iter().enumerate() {
        let size = row.message.payload().len() + row.headers.len() + row.message.topic().len();
        let full = index - start >= MAX_ROWS_PER_INSERT || bytes + size > MAX_BYTES_PER_INSERT;
        if index > start && full {
            chunks.push(&rows[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    chunks.push(&rows[start..]);
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(
            key_hash(""),
            i64::from_ne_bytes(0xcbf2_9ce4_8422_2325_u64.to_ne_bytes())
        );
        assert_eq!(
            key_hash("a"),
            i64::from_ne_bytes(0xaf63_dc4c_8601_ec8c_u64.to_ne_bytes())
        );
        assert_ne!(key_hash("a"), key_hash("a "));
    }

    #[test]
    fn inserts_are_chunked_by_rows_and_bytes() {
        let small: Vec<NewMessage> = (0..2_500).map(|_| NewMessage::new("t", vec![1])).collect();
        let rows: Vec<Pending<'_>> = small
            .iter()
            .map(|message| Pending {
                message,
                headers: "{}".into(),
                not_before: None,
                waits: HEAD,
            })
            .collect();
        let sizes: Vec<usize> = chunk(&rows).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![1_000, 1_000, 500]);

        let big: Vec<NewMessage> = (0..3)
            .map(|_| NewMessage::new("t", vec![0; 3 << 20]))
            .collect();
        let rows: Vec<Pending<'_>> = big
            .iter()
            .map(|message| Pending {
                message,
                headers: "{}".into(),
                not_before: None,
                waits: HEAD,
            })
            .collect();
        let sizes: Vec<usize> = chunk(&rows).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }
}
