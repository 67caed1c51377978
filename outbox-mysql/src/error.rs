//! sqlx errors mapped onto the outbox [`Error`].

use outbox_core::Error;
use sqlx::mysql::MySqlDatabaseError;

/// Server error numbers after which the same call may succeed.
const TRANSIENT_ERRORS: &[u16] = &[
    1205, // ER_LOCK_WAIT_TIMEOUT: a lock was held longer than innodb_lock_wait_timeout
    1213, // ER_LOCK_DEADLOCK: this transaction was rolled back to break a deadlock
    1040, // ER_CON_COUNT_ERROR: too many connections
    1053, // ER_SERVER_SHUTDOWN: the server is shutting down
    1317, // ER_QUERY_INTERRUPTED: KILL QUERY
    1927, // ER_CONNECTION_KILLED (MariaDB): KILL CONNECTION
    1615, // ER_NEED_REPREPARE: a table changed under a prepared statement
    1290, // ER_OPTION_PREVENTS_STATEMENT: --read-only, as during a fail-over
    1836, // ER_READ_ONLY_MODE: super_read_only, as during a fail-over
    1969, // ER_STATEMENT_TIMEOUT (MariaDB): max_statement_time exceeded
    3024, // ER_QUERY_TIMEOUT (MySQL): max_execution_time exceeded
    4031, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8.0.24+): idle connection closed
];

/// ER_DUP_ENTRY: the only unique key a store insert can hit is the message id.
pub(crate) const DUPLICATE_ENTRY: u16 = 1062;

/// The server's error number, if `err` came from the server.
pub(crate) fn error_number(err: &sqlx::Error) -> Option<u16> {
    match err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// Whether `err` may go away if the call is repeated.
pub(crate) fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(_) => {
            error_number(err).is_some_and(|n| TRANSIENT_ERRORS.contains(&n))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_transient_and_bad_sql_is_not() {
        let io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(is_transient(&io));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
