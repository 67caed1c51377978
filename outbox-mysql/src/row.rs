//! Reading outbox rows back into [`Message`]s.

use chrono::{DateTime, NaiveDateTime, Utc};
use outbox_core::{Headers, Message, MessageId, Result};
use sqlx::Row;
use sqlx::mysql::MySqlRow;

use crate::error::{corrupt_row, store_error};

/// A text column. Decoded without sqlx's type check, which refuses MySQL 8's `JSON` type
/// and columns with a binary collation (both are UTF-8 text here); the bytes are still
/// checked to be UTF-8.
pub(crate) fn text(row: &MySqlRow, index: usize, operation: &'static str) -> Result<String> {
    row.try_get_unchecked::<String, _>(index)
        .map_err(|e| store_error(operation, e))
}

/// A nullable text column; see [`text`].
pub(crate) fn optional_text(
    row: &MySqlRow,
    index: usize,
    operation: &'static str,
) -> Result<Option<String>> {
    row.try_get_unchecked::<Option<String>, _>(index)
        .map_err(|e| store_error(operation, e))
}

/// A `DATETIME(6)` column, which holds UTC.
pub(crate) fn utc(row: &MySqlRow, index: usize, operation: &'static str) -> Result<DateTime<Utc>> {
    let naive: NaiveDateTime = row.try_get(index).map_err(|e| store_error(operation, e))?;
    Ok(naive.and_utc())
}

/// A nullable `DATETIME(6)` column, which holds UTC.
pub(crate) fn optional_utc(
    row: &MySqlRow,
    index: usize,
    operation: &'static str,
) -> Result<Option<DateTime<Utc>>> {
    let naive: Option<NaiveDateTime> = row.try_get(index).map_err(|e| store_error(operation, e))?;
    Ok(naive.map(|n| n.and_utc()))
}

/// Decodes the columns of [`crate::sql::MESSAGE_COLUMNS`] (in that order).
pub(crate) fn read_message(row: &MySqlRow, operation: &'static str) -> Result<Message> {
    let err = |e| store_error(operation, e);
    let id: i64 = row.try_get(0).map_err(err)?;
    let message_id: uuid::Uuid = row.try_get(1).map_err(err)?;
    let headers: Headers = serde_json::from_str(&text(row, 5, operation)?)
        .map_err(|e| corrupt_row(operation, id, format!("headers: {e}")))?;
    let attempts: i32 = row.try_get(6).map_err(err)?;
    Ok(Message {
        id,
        message_id: MessageId::from_uuid(message_id),
        topic: text(row, 2, operation)?,
        key: optional_text(row, 3, operation)?,
        payload: row.try_get(4).map_err(err)?,
        headers,
        attempts: u32::try_from(attempts)
            .map_err(|e| corrupt_row(operation, id, format!("attempts: {e}")))?,
        created_at: utc(row, 7, operation)?,
    })
}

/// Decodes what can be decoded, for listing dead letters (which may be dead because they
/// were unreadable): unreadable headers become none, an unreadable id the nil UUID.
pub(crate) fn read_message_lenient(row: &MySqlRow, operation: &'static str) -> Result<Message> {
    if let Ok(message) = read_message(row, operation) {
        return Ok(message);
    }
    let err = |e| store_error(operation, e);
    let id: i64 = row.try_get(0).map_err(err)?;
    let attempts: i32 = row.try_get(6).unwrap_or(0);
    Ok(Message {
        id,
        message_id: MessageId::from_uuid(row.try_get(1).unwrap_or_else(|_| uuid::Uuid::nil())),
        topic: text(row, 2, operation).unwrap_or_default(),
        key: optional_text(row, 3, operation).unwrap_or_default(),
        payload: row.try_get(4).unwrap_or_default(),
        headers: text(row, 5, operation)
            .ok()
            .and_then(|h| serde_json::from_str(&h).ok())
            .unwrap_or_default(),
        attempts: u32::try_from(attempts).unwrap_or(0),
        created_at: utc(row, 7, operation)?,
    })
}
