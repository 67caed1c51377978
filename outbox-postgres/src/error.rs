//! sqlx errors mapped onto the outbox [`Error`].

use outbox_core::Error;

/// SQLSTATEs after which the same call may succeed: serialization failure, deadlock,
/// lock not available, admin/crash shutdown, cannot connect now, too many connections.
const TRANSIENT_SQLSTATES: &[&str] = &[
    "40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300",
];

/// Whether `err` may go away if the call is repeated.
pub(crate) fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| TRANSIENT_SQLSTATES.contains(&code.as_ref())),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

pub(crate) fn store_error(operation: &'static str, err: sqlx::Error) -> Error {
    Error::store(operation, is_transient(&err), err)
}

/// A stored row that cannot be read back.
pub(crate) fn corrupt_row(operation: &'static str, id: i64, what: String) -> Error {
    Error::store(
        operation,
        false,
        format!("outbox row {id} is unreadable: {what}"),
    )
}
