//! Reading outbox rows back into [`Message`]s.

use chrono::{DateTime, Utc};
use outbox_core::{Headers, Message, MessageId};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::{corrupt_row, store_error};

/// Decodes the columns of [`crate::sql::MESSAGE_COLUMNS`] (in that order).
pub(crate) fn read_message(row: &PgRow, operation: &'static str) -> outbox_core::Result<Message> {
    let err = |e| store_error(operation, e);
    let id: i64 = row.try_get(0).map_err(err)?;
    let headers: serde_json::Value = row.try_get(5).map_err(err)?;
    let headers: Headers = serde_json::from_value(headers)
        .map_err(|e| corrupt_row(operation, id, format!("headers: {e}")))?;
    let attempts: i32 = row.try_get(6).map_err(err)?;
    let created_at: DateTime<Utc> = row.try_get(7).map_err(err)?;
    Ok(Message {
        id,
        message_id: MessageId::from_uuid(row.try_get(1).map_err(err)?),
        topic: row.try_get(2).map_err(err)?,
        key: row.try_get(3).map_err(err)?,
        payload: row.try_get(4).map_err(err)?,
        headers,
        attempts: u32::try_from(attempts)
            .map_err(|e| corrupt_row(operation, id, format!("attempts: {e}")))?,
        created_at,
    })
}
