//! Reading outbox rows back into [`Message`]s.

use chrono::{DateTime, Utc};
use outbox_core::{Headers, Message, MessageId};
use rusqlite::Row;

use crate::error::corrupt_row;

/// The columns [`read_message`] expects, in order.
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, message_id, topic, msg_key, payload, headers, attempts, created_at";

/// Raw column values; decoding happens outside rusqlite's row callback so that a bad row
/// gives an outbox error naming the row.
pub(crate) struct RawMessage {
    id: i64,
    message_id: String,
    topic: String,
    key: Option<String>,
    payload: Vec<u8>,
    headers: String,
    attempts: i64,
    created_at: i64,
}

pub(crate) fn read_raw(row: &Row<'_>) -> rusqlite::Result<RawMessage> {
    Ok(RawMessage {
        id: row.get(0)?,
        message_id: row.get(1)?,
        topic: row.get(2)?,
        key: row.get(3)?,
        payload: row.get(4)?,
        headers: row.get(5)?,
        attempts: row.get(6)?,
        created_at: row.get(7)?,
    })
}

impl RawMessage {
    /// The row id, readable even when the rest is not.
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// The key as stored.
    pub(crate) fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Decodes what can be decoded, for listing dead letters (which may be dead because
    /// they were unreadable): an unreadable id becomes the nil UUID, unreadable headers none.
    pub(crate) fn decode_lenient(self) -> Message {
        Message {
            id: self.id,
            message_id: self
                .message_id
                .parse()
                .unwrap_or_else(|_| MessageId::from_uuid(uuid::Uuid::nil())),
            topic: self.topic,
            key: self.key,
            payload: self.payload,
            headers: serde_json::from_str(&self.headers).unwrap_or_default(),
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            created_at: from_millis(self.created_at),
        }
    }

    pub(crate) fn decode(self, operation: &'static str) -> outbox_core::Result<Message> {
        let id = self.id;
        let bad = |what: String| corrupt_row(operation, id, what);
        let message_id: MessageId = self
            .message_id
            .parse()
            .map_err(|e| bad(format!("message_id: {e}")))?;
        let headers: Headers =
            serde_json::from_str(&self.headers).map_err(|e| bad(format!("headers: {e}")))?;
        Ok(Message {
            id,
            message_id,
            topic: self.topic,
            key: self.key,
            payload: self.payload,
            headers,
            attempts: u32::try_from(self.attempts).map_err(|e| bad(format!("attempts: {e}")))?,
            created_at: from_millis(self.created_at),
        })
    }
}

/// Milliseconds since the Unix epoch, as stored.
pub(crate) fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_millis(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or(DateTime::<Utc>::MIN_UTC)
}
