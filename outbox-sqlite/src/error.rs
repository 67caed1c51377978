//! rusqlite errors mapped onto the outbox [`Error`].

use outbox_core::Error;
use rusqlite::ErrorCode;

/// Busy and locked databases are transient (another process holds the write lock past the
/// busy timeout); everything else is not.
pub(crate) fn store_error(operation: &'static str, err: rusqlite::Error) -> Error {
    let transient = matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    );
    Error::store(operation, transient, err)
}

/// A stored row that cannot be read back (edited by hand, or written by another program).
pub(crate) fn corrupt_row(operation: &'static str, id: i64, what: String) -> Error {
    Error::store(
        operation,
        false,
        format!("outbox row {id} is unreadable: {what}"),
    )
}

/// The blocking task running a store call panicked or was cancelled.
pub(crate) fn task_error(operation: &'static str, err: tokio::task::JoinError) -> Error {
    Error::store(operation, false, err)
}
